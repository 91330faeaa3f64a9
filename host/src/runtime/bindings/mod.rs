//! The only module that sees `bindgen!`'s generated names. It turns WIT
//! calls into [`Session`](crate::caps::Session) calls and converts types at
//! the boundary; the rest of the host speaks domain types.

mod convert;
mod host;

use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

use crate::caps::Session;
use crate::runtime::limiter::MemoryLimiter;

wasmtime::component::bindgen!({
    path: "../wit",
    world: "paddock:app/app",
    // Host calls are in-memory buffer operations: synchronous is cheaper
    // (RUNTIME-NOTES: ~105 ns per call). The export is async so that a
    // tokio timeout can drop a running invocation.
    exports: { default: async },
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
    wasi: WasiCtx,
    table: ResourceTable,
}

/// Most WASI resources (streams, pollables) a guest may hold at once. A Rust
/// guest uses a handful for stdio; the cap stops a handle flood.
const MAX_RESOURCES: usize = 1024;

impl Sandbox {
    pub fn new(session: Session, limiter: MemoryLimiter, wasi: WasiCtx) -> Self {
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Self { session, limiter, wasi, table }
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Link the paddock world and deny-by-default WASI into `linker`.
pub(crate) fn link(linker: &mut wasmtime::component::Linker<Sandbox>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    App::add_to_linker::<Sandbox, wasmtime::component::HasSelf<Sandbox>>(linker, |s| s)
}
