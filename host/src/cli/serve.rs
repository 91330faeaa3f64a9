//! `paddock serve`: run the server.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::runtime::RuntimeConfig;
use crate::serve::ServeConfig;

/// Arguments of `paddock serve`. Flags override the config file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML config file (every key optional; see docs/operations.md).
    #[arg(long, env = "PADDOCK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory [default: $PADDOCK_DATA, else ~/.local/share/paddock].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Plugins directory: one sub-directory per app, watched for changes
    /// [default: ./plugins].
    #[arg(long)]
    pub plugins: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080; port 0 picks one].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// A bootstrap file creating organisations, agents, installations and
    /// tokens at start (idempotent).
    #[arg(long)]
    pub bootstrap: Option<PathBuf>,
    /// The base URL clients reach this server on.
    #[arg(long)]
    pub public_url: Option<String>,
    /// Where Device Cloud clients connect for TCP monitor pushes
    /// [default: 127.0.0.1:3200; port 0 picks one; `off` disables it].
    #[arg(long, value_parser = parse_push_listen)]
    pub push_listen: Option<PushListen>,
}

/// `--push-listen`: an address, or `off`.
#[derive(Debug, Clone, Copy)]
pub struct PushListen(Option<SocketAddr>);

fn parse_push_listen(s: &str) -> Result<PushListen, String> {
    if s == "off" {
        return Ok(PushListen(None));
    }
    s.parse().map(|a| PushListen(Some(a))).map_err(|e| format!("{s:?}: {e} (an address like 127.0.0.1:3200, or off)"))
}

pub(super) async fn run(args: ServeArgs, runtime: RuntimeConfig) -> anyhow::Result<u8> {
    let mut config = match &args.config {
        Some(file) => ServeConfig::load(file)?,
        None => ServeConfig::default(),
    };
    if let Some(d) = args.data {
        config.data = d;
    }
    if let Some(p) = args.plugins {
        config.plugins = p;
    }
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(b) = args.bootstrap {
        config.bootstrap = Some(b);
    }
    if let Some(u) = args.public_url {
        config.public_url = Some(u);
    }
    if let Some(PushListen(p)) = args.push_listen {
        config.push_listen = p;
    }
    crate::serve::run(config, runtime, std::future::pending(), None).await?;
    Ok(0)
}
