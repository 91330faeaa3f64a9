//! The `paddock` binary: the composition root.

/// mimalloc: most of an event's host work is small JSON allocations, which
/// it serves faster than glibc's malloc (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    paddock::cli::main()
}
