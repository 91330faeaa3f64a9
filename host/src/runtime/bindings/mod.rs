//! The only module that sees `bindgen!`'s generated names. It turns WIT
//! calls into [`Session`](crate::caps::Session) calls and converts types at
//! the boundary; the rest of the host speaks domain types.

mod convert;
mod host;

use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::caps::Session;
use crate::runtime::limiter::MemoryLimiter;
use crate::runtime::outbound::OutboundHooks;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "paddock:app/app",
    // Host calls are in-memory buffer operations: synchronous is cheaper
    // (RUNTIME-NOTES: ~105 ns per call). The export is async so that a
    // tokio timeout can drop a running invocation.
    exports: { default: async },
    // Imports may trap: a host failure (a state read) must stop the
    // invocation, not reach the guest as a capability error.
    imports: { default: trappable },
});

pub(crate) use convert::{context_to_wit, event_to_wit, hook_from_wit};
pub(crate) use exports::paddock::app::handler::AppError;

/// The per-event store data: the capability session plus the sandbox
/// plumbing wasmtime needs.
pub(crate) struct Sandbox {
    /// Capabilities, effects and logs of this invocation.
    pub session: Session,
    /// The memory and table accountant.
    pub limiter: MemoryLimiter,
    /// Outbound HTTP policy and this invocation's request count.
    pub outbound: OutboundHooks,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

/// Most WASI resources (streams, pollables) a guest may hold at once. A Rust
/// guest uses a handful for stdio; the cap stops a handle flood.
const MAX_RESOURCES: usize = 1024;

impl Sandbox {
    pub fn new(session: Session, limiter: MemoryLimiter, wasi: WasiCtx, outbound: OutboundHooks) -> Self {
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Self { session, limiter, outbound, wasi, http: WasiHttpCtx::new(), table }
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for Sandbox {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.outbound }
    }
}

/// Link the paddock world, deny-by-default WASI and policed outbound HTTP
/// (`wasi:http/types` and `outgoing-handler`) into `linker`.
pub(crate) fn link(linker: &mut wasmtime::component::Linker<Sandbox>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    App::add_to_linker::<Sandbox, wasmtime::component::HasSelf<Sandbox>>(linker, |s| s)
}
