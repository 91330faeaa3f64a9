//! Raw wasmtime bindings of the paddock world with no-op capabilities:
//! the baselines the benchmarks compare Paddock with (the same guest, the
//! same instantiate + `handle`, none of Paddock's own work).
#![allow(dead_code, reason = "shared by the benches, each using a part")]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "paddock:app/app",
    exports: { default: async },
});

use self::paddock::app::{agents, channels, connection, logging, notifications, tags, types, ui};

pub struct Stub {
    pub wasi: wasmtime_wasi::WasiCtx,
    pub table: wasmtime::component::ResourceTable,
    pub http: NoHttp,
}

impl wasmtime_wasi::WasiView for Stub {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl wasmtime_wasi_http::WasiHttpView for Stub {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        let (ctx, hooks) = (&mut self.http.ctx, &mut self.http.hooks);
        wasmtime_wasi_http::WasiHttpCtxView { ctx, table: &mut self.table, hooks }
    }
}

type R<T> = Result<T, types::Error>;
impl types::Host for Stub {}
impl tags::Host for Stub {
    fn get(&mut self, _: String) -> R<Option<String>> {
        Ok(None)
    }
    fn get_from(&mut self, _: String, _: String) -> R<Option<String>> {
        Ok(None)
    }
    fn set(&mut self, _: String, _: String, _: bool) -> R<()> {
        Ok(())
    }
    fn delete(&mut self, _: String) -> R<()> {
        Ok(())
    }
}
impl channels::Host for Stub {
    fn create_message(&mut self, _: channels::NewMessage) -> R<u64> {
        Ok(1)
    }
    fn update_aggregate(&mut self, _: String, _: Option<u64>, _: String, _: channels::WriteMode) -> R<()> {
        Ok(())
    }
    fn fetch_aggregate(&mut self, _: String, _: Option<u64>) -> R<Option<types::Aggregate>> {
        Ok(None)
    }
    fn list_messages(&mut self, _: String, _: Option<u64>, _: Option<u64>, _: u32) -> R<Vec<types::Message>> {
        Ok(Vec::new())
    }
    fn fetch_message(&mut self, _: String, _: Option<u64>, _: u64) -> R<Option<types::Message>> {
        Ok(None)
    }
}
impl ui::Host for Stub {
    fn publish_schema(&mut self, _: String) -> R<()> {
        Ok(())
    }
    fn commands(&mut self) -> R<String> {
        Ok("{}".into())
    }
}
impl connection::Host for Stub {
    fn ping(
        &mut self,
        _: Option<u64>,
        _: connection::ConnectionStatus,
        _: Option<u64>,
    ) -> R<connection::Determination> {
        Ok(connection::Determination::Online)
    }
}
impl notifications::Host for Stub {
    fn send(&mut self, _: notifications::Notification) -> R<u64> {
        Ok(1)
    }
}
impl agents::Host for Stub {
    fn list(&mut self) -> R<Vec<agents::Agent>> {
        Ok(Vec::new())
    }
    fn get(&mut self, _: u64) -> R<Option<agents::Agent>> {
        Ok(None)
    }
    fn find_by_serial(&mut self, _: String) -> R<Option<agents::Agent>> {
        Ok(None)
    }
}
impl logging::Host for Stub {
    fn log(&mut self, _: logging::Level, _: String) {}
}

/// The same context and event Paddock builds for the tank example.
#[allow(dead_code, reason = "each bench uses the inputs of its own guest")]
pub fn inputs() -> (types::Context, types::Event) {
    let config =
        r#"{"empty_distance_mm":2000.0,"full_distance_mm":200.0,"low_level_percent":20.0,"rearm_margin_percent":5.0}"#;
    let (mut ctx, event) = message_inputs("tank_level", config, "sensor_data", r#"{"distance_mm":1100}"#);
    ctx.app_display_name = "North Tank".into();
    ctx.tags = r#"{"last_level":35.0,"min_level":30.0,"max_level":80.0,"readings":12}"#.into();
    (ctx, event)
}

/// `wasi:http` for the raw baselines: linked (the guests import it, like
/// every guest of the SDK), never used by the tank app, refusing if it were.
#[derive(Default)]
pub struct NoHttp {
    ctx: wasmtime_wasi_http::WasiHttpCtx,
    hooks: RefuseAll,
}

#[derive(Default)]
pub struct RefuseAll;

type SendResult = Result<
    (
        http::Response<wasmtime_wasi_http::WasiBody>,
        Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ),
    wasmtime_wasi_http::Error,
>;

impl wasmtime_wasi_http::WasiHttpHooks for RefuseAll {
    fn send_request(
        &mut self,
        _: http::Request<wasmtime_wasi_http::WasiBody>,
        _: Option<wasmtime_wasi_http::RequestOptions>,
        _: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<dyn std::future::Future<Output = SendResult> + Send> {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// A linker with WASI, wasi:http (refusing) and the no-op capabilities.
pub fn linker(engine: &wasmtime::Engine) -> wasmtime::component::Linker<Stub> {
    let mut linker = wasmtime::component::Linker::<Stub>::new(engine);
    let linked = wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
        .and_then(|()| App::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s));
    if let Err(e) = linked {
        panic!("linking the stub world: {e}");
    }
    linker
}

/// A fresh store with fuel and an epoch deadline armed, as Paddock's are.
pub fn store(engine: &wasmtime::Engine) -> wasmtime::Store<Stub> {
    let wasi = wasmtime_wasi::WasiCtxBuilder::new().build();
    let stub = Stub { wasi, table: wasmtime::component::ResourceTable::new(), http: NoHttp::default() };
    let mut store = wasmtime::Store::new(engine, stub);
    let _ = store.set_fuel(u64::MAX / 2);
    store.set_epoch_deadline(1000);
    store
}

/// A message-create event with `data` on `channel`, and the context of an
/// installation `app_key` with `config` and no tags.
pub fn message_inputs(app_key: &str, config: &str, channel: &str, data: &str) -> (types::Context, types::Event) {
    let ctx = types::Context {
        event_id: 1,
        attempt: 1,
        deadline: u64::MAX,
        organisation_id: 7001,
        agent_id: 7002,
        app_id: 1,
        install_id: 2,
        app_key: app_key.into(),
        app_display_name: app_key.into(),
        deployment_config: config.into(),
        tags: "{}".into(),
        connection: None,
        invoking_channel: Some(channel.into()),
        oauth: None,
    };
    let event = types::Event::MessageCreate(types::MessageCreate {
        organisation_id: 7001,
        message: types::Message {
            id: 1,
            author_id: 7002,
            channel: types::ChannelRef { agent_id: 7002, name: channel.into() },
            data: data.into(),
            timestamp: 1,
        },
    });
    (ctx, event)
}
