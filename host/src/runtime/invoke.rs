//! One invocation: a fresh store, the call under fuel, epoch and tokio
//! deadlines, and the classification of how it ended.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap, WasmBacktrace};
use wasmtime_wasi::WasiCtxBuilder;

use super::bindings::{AppError, Sandbox, context_to_wit, event_to_wit};
use super::config::{EPOCH_TICK, FUEL_YIELD_INTERVAL, HOSTCALL_FUEL, TIMEOUT_GRACE};
use super::limiter::MemoryLimiter;
use super::outbound::OutboundHooks;
use super::stdio::BoundedSink;
use super::{LoadedApp, Outcome, Report, Runtime};
use crate::caps::{Grant, LogLevel, Reach, ReadError, Session, StateView};
use crate::manifest::AppLimits;
use crate::model::{Event, EventId, now_ms, well_known};

/// Most guest frames kept in a trap's backtrace.
const MAX_BACKTRACE_FRAMES: usize = 32;

/// One event to run for one installation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The event's id; stable across retries.
    pub event_id: EventId,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The event.
    pub event: Event,
    /// Who runs it and what it may touch.
    pub grant: Grant,
}

/// What the host tells the guest about the invocation; the state it
/// reads as JSON text, as the guest receives it.
pub(crate) struct ContextInfo<'a> {
    pub event_id: EventId,
    pub attempt: u32,
    pub deadline: u64,
    pub grant: &'a Grant,
    pub tags: String,
    pub connection: Option<String>,
}

/// Where a failure happened: instantiation failures that are not traps are
/// the host's (pool exhausted), call failures that are not traps are the
/// guest's (bad output).
pub(crate) enum Failure {
    Instantiate(wasmtime::Error),
    Call(wasmtime::Error),
}

/// A store ready for one call, plus its captured stdio.
pub(crate) struct Prepared {
    store: Store<Sandbox>,
    stdout: BoundedSink,
    stderr: BoundedSink,
    fuel: u64,
    started: Instant,
}

impl Runtime {
    /// Run one event. Events whose hook the app lacks are skipped without
    /// instantiating anything.
    pub async fn invoke(&self, app: &LoadedApp, inv: Invocation, view: Arc<dyn StateView>) -> Report {
        let started = Instant::now();
        let invoked = std::panic::AssertUnwindSafe(self.invoke_unguarded(app, inv, view));
        match futures_util::FutureExt::catch_unwind(invoked).await {
            Ok(report) => report,
            // A bug in the host's own code (a capability, a state read) is
            // not the event's fault: a host error, retried like any other,
            // rather than a task that dies with its event's line held.
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".to_owned());
                tracing::error!(panic = %what, "the host panicked during an invocation");
                Report::nothing(Outcome::HostError { reason: format!("the host panicked: {what}") }, started.elapsed())
            }
        }
    }

    async fn invoke_unguarded(&self, app: &LoadedApp, inv: Invocation, view: Arc<dyn StateView>) -> Report {
        let hook = inv.event.hook();
        if !app.hooks.contains(&hook) {
            return Report::skipped(hook);
        }
        let mut grant = inv.grant;
        grant.invoking_channel = inv.event.invoking_channel().cloned();
        let limits = app.manifest.limits;
        let mut run = self.prepare(app, grant, view);
        let ctx = match run.context(inv.event_id, inv.attempt, &limits) {
            Ok(ctx) => context_to_wit(ctx),
            // The guest is never run on state that could not be read.
            Err(e) => return run.finish(Outcome::HostError { reason: e.to_string() }),
        };
        let event = event_to_wit(&inv.event);
        let pre = &app.pre;
        let result = run
            .call(&limits, async |store| {
                let instance = pre.instantiate_async(&mut *store).await.map_err(Failure::Instantiate)?;
                let handler = instance.paddock_app_handler();
                handler.call_handle(&mut *store, &ctx, &event).await.map_err(Failure::Call)
            })
            .await;
        let outcome = match result {
            Ok(Ok(())) => Outcome::Ok,
            Ok(Err(AppError::Retry(reason))) => Outcome::Retry { reason },
            Ok(Err(AppError::Fail(reason))) => Outcome::Fail { reason },
            Err(outcome) => outcome,
        };
        run.finish(outcome)
    }

    /// A fresh store for `app` with its limits armed (except the epoch
    /// deadline, which [`Prepared::call`] arms right before the call).
    pub(crate) fn prepare(&self, app: &LoadedApp, grant: Grant, view: Arc<dyn StateView>) -> Prepared {
        let limits = app.manifest.limits;
        let (stdout, stderr) = (BoundedSink::default(), BoundedSink::default());
        // Deny by default: no preopened directories, no environment, no
        // arguments, no network (wasmtime-wasi denies sockets and name
        // lookups unless allowed). Clocks and random work.
        let wasi = WasiCtxBuilder::new().stdout(stdout.clone()).stderr(stderr.clone()).build();
        let outbound = OutboundHooks::new(self.outbound.clone(), app.outbound_hosts.clone());
        let sandbox = Sandbox::new(Session::new(grant, view), MemoryLimiter::new(limits.memory_bytes), wasi, outbound);
        let mut store = Store::new(&self.engine, sandbox);
        store.limiter(|s| &mut s.limiter);
        store.set_hostcall_fuel(HOSTCALL_FUEL);
        store.epoch_deadline_trap();
        let per_ms = self.config.fuel_per_ms.max(1);
        let fuel = if self.config.fuel { fuel_for(&limits, per_ms) } else { 0 };
        // Yield (and so save the fuel counter) every FUEL_YIELD_INTERVAL:
        // see its docs for why.
        if self.config.fuel
            && let Err(e) =
                store.set_fuel(fuel).and_then(|()| store.fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL)))
        {
            tracing::error!(error = %e, "cannot set fuel on a fuel-enabled engine");
        }
        Prepared { store, stdout, stderr, fuel, started: Instant::now() }
    }
}

/// The fuel budget for a timeout at `per_ms` fuel per millisecond.
pub fn fuel_for(limits: &AppLimits, per_ms: u64) -> u64 {
    u64::try_from(limits.timeout.as_millis()).unwrap_or(u64::MAX).saturating_mul(per_ms)
}

impl Prepared {
    pub(crate) fn context(
        &self,
        event_id: EventId,
        attempt: u32,
        limits: &AppLimits,
    ) -> Result<ContextInfo<'_>, ReadError> {
        let session = &self.store.data().session;
        let deadline = now_ms() + u64::try_from(limits.timeout.as_millis()).unwrap_or(u64::MAX);
        let connection =
            session.with_aggregate(&session.own(well_known::CONNECTION), |a| a.map(|a| a.data.to_string()))?;
        Ok(ContextInfo {
            event_id,
            attempt,
            deadline,
            grant: session.grant(),
            tags: session.tags_snapshot()?,
            connection,
        })
    }

    /// Run `f` under the epoch deadline and the tokio timeout.
    pub(crate) async fn call<T>(
        &mut self,
        limits: &AppLimits,
        f: impl AsyncFnOnce(&mut Store<Sandbox>) -> Result<T, Failure>,
    ) -> Result<T, Outcome> {
        let ticks = u64::try_from(limits.timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos())).unwrap_or(u64::MAX);
        self.store.set_epoch_deadline(ticks.saturating_add(1));
        match tokio::time::timeout(limits.timeout + TIMEOUT_GRACE, f(&mut self.store)).await {
            Err(_elapsed) => Err(Outcome::Timeout { limit: limits.timeout }),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.classify(e, limits)),
        }
    }

    fn classify(&self, failure: Failure, limits: &AppLimits) -> Outcome {
        let limiter = &self.store.data().limiter;
        if let Some(requested) = limiter.refused() {
            return Outcome::MemoryLimit { requested, limit: limiter.limit() };
        }
        let (err, instantiating) = match &failure {
            Failure::Instantiate(e) => (e, true),
            Failure::Call(e) => (e, false),
        };
        // A state read failed inside a host call (which trapped the guest).
        if let Some(read) = err.downcast_ref::<ReadError>() {
            return Outcome::HostError { reason: read.to_string() };
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => Outcome::FuelExhausted { fuel: self.fuel },
            Some(Trap::Interrupt) => Outcome::Timeout { limit: limits.timeout },
            Some(trap) => Outcome::Trap {
                code: snake_case(&format!("{trap:?}")),
                message: panic_message(&self.stderr),
                backtrace: backtrace(err),
            },
            // The root cause alone: the full chain repeats the backtrace.
            None if instantiating => Outcome::HostError { reason: err.root_cause().to_string() },
            None => Outcome::InvalidOutput { reason: err.root_cause().to_string() },
        }
    }

    /// Collect effects (only for `ok`), logs, fuel and duration.
    pub(crate) fn finish(self, outcome: Outcome) -> Report {
        let fuel_consumed = self.store.get_fuel().map(|left| self.fuel.saturating_sub(left)).unwrap_or(0);
        let memory_peak = self.store.data().limiter.used();
        let duration = self.started.elapsed();
        let sandbox = self.store.into_data();
        let refusals = sandbox.outbound.take_refusals();
        let (effects, mut logs) = sandbox.session.finish();
        for refusal in &refusals {
            logs.push(LogLevel::Warn, "http", refusal);
        }
        for (sink, source, level) in
            [(&self.stdout, "stdout", LogLevel::Info), (&self.stderr, "stderr", LogLevel::Error)]
        {
            let (bytes, dropped) = sink.take();
            logs.push_stream(level, source, &bytes);
            logs.truncated |= dropped > 0;
        }
        let effects = if outcome.is_ok() { effects } else { Default::default() };
        Report { outcome, effects, logs, fuel_consumed, duration, memory_peak }
    }
}

impl Report {
    fn skipped(hook: crate::model::Hook) -> Report {
        Report::nothing(Outcome::Skipped { hook }, Duration::ZERO)
    }

    /// An invocation that ended as `outcome` after `duration` having
    /// produced nothing: no effects, no logs, no fuel (also what the
    /// engine reports for an attempt the host failed before the app ran).
    pub fn nothing(outcome: Outcome, duration: Duration) -> Report {
        Report {
            outcome,
            effects: Default::default(),
            logs: Default::default(),
            fuel_consumed: 0,
            duration,
            memory_peak: 0,
        }
    }
}

/// The grant used to probe `hooks()` at load time: no agent, no reach.
pub(crate) fn probe_grant() -> Grant {
    Grant {
        organisation_id: 0.into(),
        agent_id: 0.into(),
        app_id: 0.into(),
        install_id: 0.into(),
        app_key: "probe".into(),
        display_name: "probe".into(),
        config: "{}".into(),
        reach: Reach::OwnAgent,
        invoking_channel: None,
        allow_invoking_channel: false,
        oauth: None,
    }
}

fn snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The message of a Rust panic, from the captured stderr:
/// `thread '...' panicked at src/lib.rs:1:2:\n<message>\nnote: ...`.
fn panic_message(stderr: &BoundedSink) -> Option<String> {
    let text = String::from_utf8_lossy(&stderr.contents()).into_owned();
    let after = text.split_once("panicked at ")?.1;
    let (_location, rest) = after.split_once('\n')?;
    let message: Vec<&str> = rest.lines().take_while(|l| !l.starts_with("note: ")).collect();
    Some(message.join("\n")).filter(|m| !m.is_empty())
}

fn backtrace(err: &wasmtime::Error) -> Vec<String> {
    let Some(bt) = err.downcast_ref::<WasmBacktrace>() else {
        return Vec::new();
    };
    bt.frames()
        .iter()
        .take(MAX_BACKTRACE_FRAMES)
        .map(|f| {
            let module = f.module().name().unwrap_or("?");
            match f.func_name() {
                Some(name) => format!("{module}!{:#}", rustc_demangle::demangle(name)),
                None => format!("{module}!<func {}>", f.func_index()),
            }
        })
        .collect()
}
