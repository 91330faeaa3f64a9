//! Host trait impls: each is a one-line adapter onto a `Session` method.

use super::Sandbox;
use super::convert::{agent_to_wit, aggregate_to_wit, cap_err, message_to_wit, write_mode};
use super::paddock::app::{agents, channels, connection, logging, notifications, tags, types, ui};
use crate::caps::{self, LogLevel};

/// A host call's result: a guest-visible error, or a trap when the host
/// itself failed (a state read), which stops the invocation as a host
/// error instead of letting the guest act on a wrong "absent".
type R<T> = wasmtime::Result<Result<T, types::Error>>;

fn lift<T>(r: Result<T, caps::CapError>) -> R<T> {
    match r.map_err(cap_err) {
        Ok(v) => Ok(Ok(v)),
        Err(Ok(guest)) => Ok(Err(guest)),
        Err(Err(read)) => Err(wasmtime::Error::new(read)),
    }
}

impl types::Host for Sandbox {}

impl tags::Host for Sandbox {
    fn get(&mut self, key: String) -> R<Option<String>> {
        lift(self.session.tag_get(&key).map(|v| v.map(|v| v.to_string())))
    }
    fn get_from(&mut self, app_key: String, key: String) -> R<Option<String>> {
        lift(self.session.tag_get_from(&app_key, &key).map(|v| v.map(|v| v.to_string())))
    }
    fn set(&mut self, key: String, value: String, log: bool) -> R<()> {
        lift(self.session.tag_set(&key, &value, log))
    }
    fn delete(&mut self, key: String) -> R<()> {
        lift(self.session.tag_delete(&key))
    }
}

impl channels::Host for Sandbox {
    fn create_message(&mut self, msg: channels::NewMessage) -> R<u64> {
        let msg = caps::NewMessage {
            channel: msg.channel,
            agent_id: msg.agent_id,
            data: msg.data,
            timestamp: msg.timestamp,
            message_id: msg.message_id,
        };
        lift(self.session.create_message(msg).map(|id| id.get()))
    }
    fn update_aggregate(
        &mut self,
        channel: String,
        agent: Option<u64>,
        data: String,
        mode: channels::WriteMode,
    ) -> R<()> {
        lift(self.session.update_aggregate(&channel, agent, &data, write_mode(mode)))
    }
    fn fetch_aggregate(&mut self, channel: String, agent: Option<u64>) -> R<Option<types::Aggregate>> {
        lift(self.session.fetch_aggregate(&channel, agent).map(|a| a.map(aggregate_to_wit)))
    }
    fn list_messages(
        &mut self,
        channel: String,
        agent: Option<u64>,
        before: Option<u64>,
        limit: u32,
    ) -> R<Vec<types::Message>> {
        lift(self.session.list_messages(&channel, agent, before, limit).map(|m| m.iter().map(message_to_wit).collect()))
    }
    fn fetch_message(&mut self, channel: String, agent: Option<u64>, id: u64) -> R<Option<types::Message>> {
        lift(self.session.fetch_message(&channel, agent, id).map(|m| m.as_ref().map(message_to_wit)))
    }
}

impl ui::Host for Sandbox {
    fn publish_schema(&mut self, schema: String) -> R<()> {
        lift(self.session.ui_publish(&schema))
    }
    fn commands(&mut self) -> R<String> {
        lift(self.session.ui_commands().map(|v| v.to_string()))
    }
}

impl connection::Host for Sandbox {
    fn ping(
        &mut self,
        online_at: Option<u64>,
        status: connection::ConnectionStatus,
        offline_at: Option<u64>,
    ) -> R<connection::Determination> {
        use connection::ConnectionStatus as W;
        let status = match status {
            W::ContinuousOnline => caps::ConnectionStatus::ContinuousOnline,
            W::ContinuousOnlineNoPing => caps::ConnectionStatus::ContinuousOnlineNoPing,
            W::ContinuousPending => caps::ConnectionStatus::ContinuousPending,
            W::ContinuousOffline => caps::ConnectionStatus::ContinuousOffline,
            W::PeriodicUnknown => caps::ConnectionStatus::PeriodicUnknown,
        };
        lift(self.session.connection_ping(online_at, status, offline_at).map(|d| match d {
            caps::Determination::Online => connection::Determination::Online,
            caps::Determination::Offline => connection::Determination::Offline,
        }))
    }
}

impl notifications::Host for Sandbox {
    fn send(&mut self, n: notifications::Notification) -> R<u64> {
        let n = caps::Notification { message: n.message, title: n.title, severity: n.severity, topic: n.topic };
        lift(self.session.notify(n).map(|id| id.get()))
    }
}

impl agents::Host for Sandbox {
    fn list(&mut self) -> R<Vec<agents::Agent>> {
        lift(self.session.agents_list().map(|v| v.iter().map(agent_to_wit).collect()))
    }
    fn get(&mut self, id: u64) -> R<Option<agents::Agent>> {
        lift(self.session.agent_get(id).map(|a| a.as_ref().map(agent_to_wit)))
    }
    fn find_by_serial(&mut self, serial: String) -> R<Option<agents::Agent>> {
        lift(self.session.agent_by_serial(&serial).map(|a| a.as_ref().map(agent_to_wit)))
    }
}

impl logging::Host for Sandbox {
    fn log(&mut self, level: logging::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            logging::Level::Trace => LogLevel::Trace,
            logging::Level::Debug => LogLevel::Debug,
            logging::Level::Info => LogLevel::Info,
            logging::Level::Warn => LogLevel::Warn,
            logging::Level::Error => LogLevel::Error,
        };
        self.session.logs_mut().push(level, "log", &message);
        Ok(())
    }
}
