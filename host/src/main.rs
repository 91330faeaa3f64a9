//! The `paddock` binary: the composition root.

fn main() -> std::process::ExitCode {
    paddock::cli::main()
}
