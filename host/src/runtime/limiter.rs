//! Memory and table accounting across every memory and table of a component.
//!
//! wasmtime's stock `StoreLimits` caps each memory on its own; a component
//! has several core instances, so the budget is summed here. A refused grow
//! is recorded: a Rust guest aborts (`unreachable`) when allocation fails,
//! which would otherwise be indistinguishable from a panic (RUNTIME-NOTES).

use wasmtime::ResourceLimiter;

/// Most table elements across a component. Rust guests use a few hundred
/// for their indirect-call tables; 100k bounds a hostile table grow.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Most core instances per component. The Rust wasip2 guests we build use
/// fewer than 10; componentize-py needs ~64 (RUNTIME-NOTES).
pub const MAX_INSTANCES: usize = 64;
/// Most tables per component.
pub const MAX_TABLES: usize = 64;
/// Most linear memories per component.
pub const MAX_MEMORIES: usize = 8;

/// Budget and record of one invocation's memory use.
#[derive(Debug, Clone)]
pub struct MemoryLimiter {
    limit: usize,
    used: usize,
    table_elements: usize,
    refused: Option<usize>,
}

impl MemoryLimiter {
    /// A limiter allowing `limit` bytes of linear memory in total.
    pub fn new(limit: u64) -> Self {
        Self { limit: usize::try_from(limit).unwrap_or(usize::MAX), used: 0, table_elements: 0, refused: None }
    }

    /// The size of the first refused grow request, if any (the total the
    /// guest asked to reach).
    pub fn refused(&self) -> Option<usize> {
        self.refused
    }

    /// The budget in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Peak bytes of linear memory in use.
    pub fn used(&self) -> usize {
        self.used
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.limit {
            self.refused.get_or_insert(total);
            return Ok(false);
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.table_elements.saturating_sub(current).saturating_add(desired);
        if total > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        self.table_elements = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_memories_and_records_the_refusal() {
        let mut l = MemoryLimiter::new(10 << 20);
        assert!(l.memory_growing(0, 6 << 20, None).unwrap());
        assert!(l.memory_growing(0, 4 << 20, None).unwrap(), "a second memory shares the budget");
        assert_eq!(l.refused(), None);
        assert!(!l.memory_growing(4 << 20, 5 << 20, None).unwrap());
        assert_eq!(l.refused(), Some(11 << 20));
        assert_eq!(l.used(), 10 << 20);
    }
}
