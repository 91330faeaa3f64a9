//! Engine configuration: Cranelift, fuel, epochs, and the pooling allocator
//! when the machine's address space allows it.

use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Fuel granted per millisecond of timeout. Measured with the `hostile`
/// fixture's spin loop on this machine kind (2 vCPU): the per_event bench's
/// `fuel-rate` line reports fuel burned per ms of guest execution (~6.5M,
/// see docs/benchmarks.md). Fuel is the deterministic CPU budget: a
/// timeout's worth of fuel lets a CPU-bound guest run about as long as its
/// wall-clock budget here, and exactly as far on any machine.
pub const FUEL_PER_MS: u64 = 6_000_000;
/// Fuel between cooperative yields of a running guest: ~0.1-0.17 ms of
/// CPU here; a yield costs ~1 us, so about 1% for a CPU-bound guest.
///
/// Two reasons. wasmtime 48 keeps the fuel counter in a register and, unlike
/// the out-of-fuel path, the epoch-deadline path does not write it back
/// before trapping: a guest stopped by the epoch deadline reported only the
/// fuel of its last save (measured: 3.9k instead of ~1.2G). Each yield goes
/// through the out-of-fuel path, which saves the counter, so metering stays
/// exact to within one interval. And a long guest yields the executor
/// thread, so the tokio timeout can fire even inside a busy loop.
pub const FUEL_YIELD_INTERVAL: u64 = 1_000_000;
/// Epoch tick. 10 ms bounds how late a timeout fires while keeping the
/// ticker thread's wake-ups negligible.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Extra wall-clock time the tokio timeout allows beyond the epoch deadline,
/// so that the epoch trap (which yields a precise outcome) normally wins.
pub const TIMEOUT_GRACE: Duration = Duration::from_millis(250);
/// Guest stack; wasmtime's default. Deep recursion traps with
/// `stack_overflow` instead of touching the host stack.
pub const MAX_WASM_STACK: usize = 512 * 1024;
/// Bytes a guest may pass to the host in one call (strings, lists). The
/// largest legitimate argument is one payload (256 KiB); 1 MiB leaves room.
pub const HOSTCALL_FUEL: usize = 1024 * 1024;

/// Runtime settings chosen by the composition root.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Meter fuel (deterministic CPU budget, per-invocation metering).
    /// Off only for benchmarks comparing epoch-only interruption.
    pub fuel: bool,
    /// Fuel per millisecond of timeout; [`FUEL_PER_MS`] unless the host's
    /// CPU is calibrated differently.
    pub fuel_per_ms: u64,
    /// Concurrent instances the pooling allocator is sized for.
    pub pool_slots: u32,
    /// Where compiled components are cached; none disables the cache.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Outbound HTTP limits and the private ranges apps may reach.
    pub outbound: super::OutboundConfig,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            fuel: true,
            fuel_per_ms: FUEL_PER_MS,
            pool_slots: 64,
            cache_dir: None,
            outbound: super::OutboundConfig::default(),
        }
    }
}

/// Which allocator the engine ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    /// Pre-reserved slots, copy-on-write memory init.
    Pooling,
    /// Allocate per instance (fallback when the address space is too small).
    OnDemand,
}

/// Build the engine, trying pooling first.
pub(crate) fn build_engine(cfg: &RuntimeConfig) -> wasmtime::Result<(Engine, Allocator)> {
    let mut pooled = base_config(cfg);
    pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pool(cfg.pool_slots)));
    match Engine::new(&pooled) {
        Ok(engine) => Ok((engine, Allocator::Pooling)),
        Err(err) => {
            tracing::warn!(error = %err, "pooling allocator unavailable; using on-demand allocation");
            Ok((Engine::new(&base_config(cfg))?, Allocator::OnDemand))
        }
    }
}

fn base_config(cfg: &RuntimeConfig) -> Config {
    let mut c = Config::new();
    c.consume_fuel(cfg.fuel);
    c.epoch_interruption(true);
    c.max_wasm_stack(MAX_WASM_STACK);
    c.memory_init_cow(true);
    c
}

fn pool(slots: u32) -> PoolingAllocationConfig {
    let mut p = PoolingAllocationConfig::default();
    p.total_component_instances(slots);
    p.total_core_instances(slots * 16);
    p.max_core_instances_per_component(64);
    p.total_memories(slots * 2);
    p.max_memories_per_component(8);
    p.total_tables(slots * 8);
    p.total_stacks(slots);
    // Measured in RUNTIME-NOTES: pagemap_scan + keeping 1 MiB resident cut a
    // fresh-instance event from ~31 us to 11-14 us. keep_resident without
    // pagemap_scan made it worse, so Auto falls back cleanly.
    p.pagemap_scan(Enabled::Auto);
    p.linear_memory_keep_resident(1 << 20);
    // Reset tables and async stacks in place (memset) instead of returning
    // their pages to the kernel: each `madvise` on a freed slot costs a
    // TLB shootdown across cores. Measured with the engine bench's raw
    // ceiling (instantiate + handle of the counter guest): 19,004 -> 107,244
    // events/s on 2 threads, 30,761 -> 56,052 on 1 (docs/benchmarks.md);
    // tables alone gave most of it. Decommit batching (16, 64) added
    // nothing on top. Cost: at most 64 KiB resident per table and per stack
    // slot (~36 MiB with the default 64 slots).
    p.table_keep_resident(KEEP_RESIDENT);
    p.async_stack_keep_resident(KEEP_RESIDENT);
    p
}

/// Bytes of each pooled table and async stack reset in place and kept
/// resident between instances (see `pool`).
const KEEP_RESIDENT: usize = 64 * 1024;
