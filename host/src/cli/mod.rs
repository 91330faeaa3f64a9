//! The `paddock` command line. This is the composition root: it picks the
//! concrete state, runtime settings and output format.

mod invoke;
mod render;
mod schema;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use invoke::InvokeArgs;
pub use serve::ServeArgs;

/// Exit code for a run whose outcome was an error (retry, fail, trap, ...).
pub const EXIT_OUTCOME_ERROR: u8 = 1;
/// Exit code for unusable input (bad file, bad manifest, bad config).
pub const EXIT_BAD_INPUT: u8 = 2;

/// Paddock: run sandboxed WebAssembly IoT apps, once per event.
#[derive(Debug, Parser)]
#[command(name = "paddock", version, about, long_about = None)]
pub struct Cli {
    /// Log filter for Paddock's own diagnostics (e.g. `info`, `paddock=debug`).
    #[arg(long, global = true, default_value = "warn", env = "PADDOCK_LOG")]
    pub log: String,
    /// Log format: `human` or `json` (one object per line).
    #[arg(long, global = true, default_value = "human", env = "PADDOCK_LOG_FORMAT", value_parser = ["human", "json"])]
    pub log_format: String,
    /// Where compiled components are cached [default: $XDG_CACHE_HOME/paddock
    /// or ~/.cache/paddock].
    #[arg(long, global = true, env = "PADDOCK_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile every component afresh; write no cache.
    #[arg(long, global = true)]
    pub no_cache: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one event through an app against in-memory state and print what
    /// it would do: outcome, effects, logs, fuel and duration.
    ///
    /// Nothing is written anywhere. Exit code 0 on success or skip, 1 when
    /// the outcome is an error, 2 when an input file is unusable.
    Invoke(InvokeArgs),
    /// Print the JSON Schema an app exports for its config, or write it to
    /// the file its manifest names (`config_schema_file`).
    Schema {
        /// The app directory (with paddock.toml).
        app: PathBuf,
        /// Write the schema file instead of printing it.
        #[arg(long)]
        write: bool,
    },
    /// Run the server: the HTTP API, the plugins directory (loaded and
    /// watched), the durable event engine.
    ///
    /// Stops gracefully on SIGINT or SIGTERM: it stops accepting requests,
    /// lets in-flight invocations finish and commit, and flushes the store.
    /// On first start without an operator token it generates one and
    /// prints it once.
    Serve(ServeArgs),
}

/// Parse arguments and run; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log, &cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("paddock: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = runtime_config(&cli);
    let result = runtime.block_on(async {
        match cli.command {
            Command::Invoke(args) => invoke::run(args, config).await,
            Command::Schema { app, write } => schema::run(&app, write, config).await,
            Command::Serve(args) => serve::run(args, config).await,
        }
    });
    // A blocking task wedged on a failing disk must not keep the process
    // from exiting (the store reports it; nothing acknowledged depends on it).
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("paddock: {e:#}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

/// Write `text` to standard output. A reader that went away (`| head`) is
/// not an error: what it wanted, it read; the command ends quietly.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn runtime_config(cli: &Cli) -> crate::runtime::RuntimeConfig {
    let default_dir = || {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("paddock"))
    };
    let cache_dir = if cli.no_cache { None } else { cli.cache_dir.clone().or_else(default_dir) };
    crate::runtime::RuntimeConfig { cache_dir, ..Default::default() }
}

fn init_tracing(filter: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if format == "json" { builder.json().try_init() } else { builder.try_init() };
}
