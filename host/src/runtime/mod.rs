//! The sandboxed per-event runtime.
//!
//! One [`Runtime`] holds the wasmtime `Engine`, the linker (paddock world
//! plus deny-by-default WASI) and the epoch ticker. Apps are compiled once
//! into a [`LoadedApp`] (an `InstancePre` plus the hooks it declared); every
//! event then gets a fresh `Store` and instance, dropped afterwards.
//!
//! Apps reach the network only through `wasi:http/outgoing-handler`, under
//! the policy in [`OutboundConfig`] and their manifest's `allowed_hosts`.
//!
//! The runtime returns a [`Report`] (outcome, effects, logs, fuel,
//! duration) and never writes any store: the engine commits.

mod app;
mod bindings;
mod config;
mod invoke;
mod limiter;
mod outbound;
mod outcome;
mod stdio;
mod ticker;

pub use app::{LoadError, LoadedApp};
pub use config::{Allocator, EPOCH_TICK, FUEL_PER_MS, HOSTCALL_FUEL, MAX_WASM_STACK, RuntimeConfig, TIMEOUT_GRACE};
pub use invoke::Invocation;
pub use limiter::{MAX_INSTANCES, MAX_MEMORIES, MAX_TABLE_ELEMENTS, MAX_TABLES, MemoryLimiter};
pub use outbound::{OutboundConfig, is_public};
pub(crate) use outbound::{connect_guarded, server_name_of, tls_connector};
pub use outcome::{Outcome, Report};

use wasmtime::Engine;
use wasmtime::component::Linker;

use bindings::Sandbox;

/// The runtime could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the wasm runtime: {0}")]
pub struct RuntimeError(String);

/// The sandboxed wasm runtime.
pub struct Runtime {
    engine: Engine,
    linker: Linker<Sandbox>,
    allocator: Allocator,
    config: RuntimeConfig,
    outbound: std::sync::Arc<outbound::Outbound>,
    _ticker: ticker::EpochTicker,
}

impl Runtime {
    /// Build the engine (pooling if the address space allows) and linker.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let (engine, allocator) = config::build_engine(&config).map_err(|e| RuntimeError(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        bindings::link(&mut linker).map_err(|e| RuntimeError(e.to_string()))?;
        let outbound = outbound::Outbound::new(config.outbound.clone())
            .map_err(|e| RuntimeError(format!("outbound TLS setup: {e}")))?;
        let ticker = ticker::EpochTicker::start(engine.clone(), EPOCH_TICK);
        Ok(Self { engine, linker, allocator, config, outbound: std::sync::Arc::new(outbound), _ticker: ticker })
    }

    /// Which instance allocator is in use.
    pub fn allocator(&self) -> Allocator {
        self.allocator
    }

    /// The wasmtime engine, for benchmarks and tools that compare raw
    /// wasmtime against the runtime in the same process.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The settings this runtime was built with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }
}
