//! `paddock serve`: the store, the runtime, the engine's dispatcher, the
//! plugins directory and the HTTP API in one process, with a graceful
//! shutdown (stop accepting, drain in-flight invocations, flush).

pub mod bootstrap;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;

use crate::api::{Api, ApiConfig, ConnectionLimits};
use crate::engine::{Engine, EngineConfig, OauthSigning, Retention};
use crate::model::StateSigner;
use crate::monitors::{MonitorConfig, Monitors};
use crate::plugins::Plugins;
use crate::runtime::{OutboundConfig, Runtime, RuntimeConfig};
use crate::store::Store;
use crate::tenants::{self, hash_secret};

/// Environment variable holding the operator token.
pub const OPERATOR_TOKEN_ENV: &str = "PADDOCK_OPERATOR_TOKEN";

/// Settings of `paddock serve` (a TOML file; flags override it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Data directory (the sled store and the host secret).
    pub data: PathBuf,
    /// Plugins directory.
    pub plugins: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Base URL clients use (default: `http://<listen>`).
    pub public_url: Option<String>,
    /// Operator token (else `PADDOCK_OPERATOR_TOKEN`, else generated once).
    pub operator_token: Option<String>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
    /// A bootstrap file applied at start.
    pub bootstrap: Option<PathBuf>,
    /// Concurrent invocations at most.
    pub concurrency: usize,
    /// Queued events at most before ingress answers `busy`.
    pub max_queue: usize,
    /// Queued events of one organisation at most before its ingress
    /// answers `429 tenant_busy`.
    pub max_queue_per_org: usize,
    /// Most writes the writer applies and makes durable per cycle (one
    /// atomic write, one flush), all organisations together.
    pub ingress_batch: usize,
    /// Messages kept per channel (oldest pruned).
    pub messages_per_channel: usize,
    /// Invocation summaries kept per installation (oldest pruned).
    pub invocations_per_installation: usize,
    /// Dead letters kept per organisation (oldest pruned).
    pub dead_letters_per_organisation: usize,
    /// Seconds open connections get to finish at shutdown.
    pub shutdown_grace_s: u64,
    /// Where Device Cloud clients connect for TCP monitor pushes (`None`:
    /// no push listener). Port 3200 is what python-devicecloud dials.
    pub push_listen: Option<SocketAddr>,
    /// Highest rate (requests/s) an ingestion endpoint may be given
    /// (default 30, Doover's maximum).
    pub max_ingest_rate: u32,
    /// Outbound HTTP limits (`[outbound]`).
    pub outbound: OutboundSettings,
    /// Limits on clients of the HTTP API (`[http]`).
    pub http: HttpSettings,
    /// The store (`[store]`).
    pub store: StoreSettings,
    /// Monitors (`[monitors]`).
    pub monitors: MonitorSettings,
}

/// The `[monitors]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorSettings {
    /// Most monitors per organisation.
    pub max_per_org: usize,
    /// Most live sessions (TCP push and HTTP runners) at once.
    pub max_sessions: usize,
    /// Feed entries kept per organisation for replay and history.
    pub retention_events: usize,
    /// Feed entries kept at most this many hours.
    pub retention_hours: u64,
    /// A write to a push client longer than this closes its session, ms.
    pub write_timeout_ms: u64,
    /// An HTTP monitor failing this long is disabled, seconds (24 h).
    pub disable_after_s: u64,
    /// PEM certificate chain for the TLS push listener.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for the TLS push listener.
    pub tls_key: Option<PathBuf>,
    /// Where the TLS push listener listens (default `127.0.0.1:3201`, the
    /// port python-devicecloud dials, once a certificate is configured).
    pub push_tls_listen: Option<SocketAddr>,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        let d = MonitorConfig::default();
        Self {
            max_per_org: d.max_per_org,
            max_sessions: d.max_sessions,
            retention_events: d.retention_events,
            retention_hours: d.retention.as_secs() / 3600,
            write_timeout_ms: millis(d.write_timeout),
            disable_after_s: d.disable_after.as_secs(),
            tls_cert: None,
            tls_key: None,
            push_tls_listen: None,
        }
    }
}

impl MonitorSettings {
    /// The TLS push listener's acceptor, if a certificate is configured.
    fn tls_acceptor(&self) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            _ => anyhow::bail!("[monitors] tls_cert and tls_key go together"),
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("{}: not a PEM certificate chain", cert.display()))?;
        let key =
            PrivateKeyDer::from_pem_file(key).with_context(|| format!("{}: not a PEM private key", key.display()))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("the push listener's certificate and key do not match")?;
        Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }

    /// The monitors' configuration, with the outbound guard's ranges.
    fn to_config(&self, allow_private: Vec<ipnet::IpNet>) -> MonitorConfig {
        MonitorConfig {
            max_per_org: self.max_per_org,
            max_sessions: self.max_sessions,
            retention_events: self.retention_events,
            retention: Duration::from_secs(self.retention_hours.saturating_mul(3600)),
            write_timeout: Duration::from_millis(self.write_timeout_ms.max(1)),
            disable_after: Duration::from_secs(self.disable_after_s),
            allow_private,
            ..MonitorConfig::default()
        }
    }
}

/// The `[store]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// Free space (MiB) kept on the data directory's filesystem: writes
    /// are refused with 507 below it, and resume by themselves above it.
    pub reserve_mb: u64,
    /// The store's page cache (MiB): most of the server's memory with a
    /// deep backlog.
    pub cache_mb: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self { reserve_mb: crate::store::DEFAULT_RESERVE >> 20, cache_mb: crate::store::DEFAULT_CACHE >> 20 }
    }
}

/// The `[http]` table: what one client of the API may hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Longest wait for a request head (also the idle limit of a kept-alive
    /// connection), milliseconds.
    pub header_timeout_ms: u64,
    /// Longest time a request body may take once its head has arrived,
    /// milliseconds.
    pub body_timeout_ms: u64,
    /// Connections open at once at most; lowered at start to stay below
    /// the process's descriptor limit.
    pub max_connections: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        let limits = ConnectionLimits::default();
        Self {
            header_timeout_ms: millis(limits.header_timeout),
            body_timeout_ms: millis(crate::api::DEFAULT_BODY_TIMEOUT),
            max_connections: limits.max_connections,
        }
    }
}

/// Descriptors kept for everything but client connections: the store's
/// files, the plugins watcher, outbound requests, the runtime's own.
const RESERVED_DESCRIPTORS: u64 = 128;

impl HttpSettings {
    /// The listener's limits: the soft descriptor limit is raised to the
    /// hard one where allowed, and the connection cap kept below it.
    fn limits(&self) -> ConnectionLimits {
        let descriptors = rlimit::increase_nofile_limit(u64::MAX).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read or raise the descriptor limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        });
        let room = usize::try_from(descriptors.saturating_sub(RESERVED_DESCRIPTORS).max(16)).unwrap_or(usize::MAX);
        let max_connections = self.max_connections.min(room);
        if max_connections < self.max_connections {
            tracing::warn!(descriptors, max_connections, "the descriptor limit lowers the connection cap");
        }
        ConnectionLimits { header_timeout: Duration::from_millis(self.header_timeout_ms.max(1)), max_connections }
    }
}

/// The `[outbound]` table: what apps' outbound HTTP may do. Which hosts an
/// app may reach is its manifest's `allowed_hosts`; these are the operator's
/// limits on top.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundSettings {
    /// Private, loopback or link-local CIDR ranges apps may reach anyway
    /// (default none: public addresses only).
    pub allow_private: Vec<String>,
    /// DNS + connect (+ TLS) timeout, milliseconds.
    pub connect_timeout_ms: u64,
    /// Time to the response head, milliseconds.
    pub first_byte_timeout_ms: u64,
    /// Longest pause inside the response body, milliseconds.
    pub between_bytes_timeout_ms: u64,
    /// Largest response body, bytes.
    pub max_response_bytes: u64,
    /// Requests per invocation at most.
    pub max_requests: u32,
}

/// A duration as the config file's milliseconds.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Default for OutboundSettings {
    fn default() -> Self {
        let d = OutboundConfig::default();
        Self {
            allow_private: Vec::new(),
            connect_timeout_ms: millis(d.connect_timeout),
            first_byte_timeout_ms: millis(d.first_byte_timeout),
            between_bytes_timeout_ms: millis(d.between_bytes_timeout),
            max_response_bytes: d.max_response_bytes,
            max_requests: d.max_requests,
        }
    }
}

impl OutboundSettings {
    /// The runtime's form; a bad CIDR is an error naming it.
    pub fn to_runtime(&self) -> anyhow::Result<OutboundConfig> {
        let allow_private = self
            .allow_private
            .iter()
            .map(|c| c.parse().with_context(|| format!("outbound.allow_private: {c:?} is not a CIDR range")))
            .collect::<anyhow::Result<_>>()?;
        Ok(OutboundConfig {
            allow_private,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            first_byte_timeout: Duration::from_millis(self.first_byte_timeout_ms),
            between_bytes_timeout: Duration::from_millis(self.between_bytes_timeout_ms),
            max_response_bytes: self.max_response_bytes,
            max_requests: self.max_requests,
        })
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        let engine = EngineConfig::default();
        Self {
            data: default_data_dir(),
            plugins: PathBuf::from("plugins"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            operator_token: None,
            trusted_proxies: Vec::new(),
            bootstrap: None,
            concurrency: engine.concurrency,
            max_queue: engine.max_queue,
            max_queue_per_org: engine.max_queue_per_org,
            ingress_batch: engine.ingress_batch,
            messages_per_channel: 10_000,
            invocations_per_installation: 1_000,
            dead_letters_per_organisation: 10_000,
            shutdown_grace_s: 10,
            push_listen: Some(SocketAddr::from(([127, 0, 0, 1], 3200))),
            max_ingest_rate: tenants::MAX_RATE,
            outbound: OutboundSettings::default(),
            http: HttpSettings::default(),
            store: StoreSettings::default(),
            monitors: MonitorSettings::default(),
        }
    }
}

/// `$PADDOCK_DATA`, else `$XDG_DATA_HOME/paddock`, else
/// `~/.local/share/paddock`, else `./paddock-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PADDOCK_DATA") {
        return PathBuf::from(d);
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .map_or_else(|| PathBuf::from("paddock-data"), |d| d.join("paddock"))
}

impl ServeConfig {
    /// Read a config file.
    pub fn load(file: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(file).with_context(|| format!("{}: cannot read", file.display()))?;
        toml::from_str(&text).with_context(|| format!("{}: invalid config", file.display()))
    }
}

/// Where a started server listens.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// The HTTP API.
    pub api: SocketAddr,
    /// The monitor push listener, if enabled.
    pub push: Option<SocketAddr>,
    /// The TLS monitor push listener, if a certificate is configured.
    pub push_tls: Option<SocketAddr>,
}

/// Bind a push listener, naming it on stderr with its bound address.
async fn bind_push(at: SocketAddr, what: &str) -> anyhow::Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener =
        tokio::net::TcpListener::bind(at).await.with_context(|| format!("cannot bind the {what} on {at}"))?;
    let bound = listener.local_addr()?;
    eprintln!("paddock: {what} on {bound}");
    Ok((listener, bound))
}

/// Run until SIGINT/SIGTERM (or `stop`), then shut down gracefully.
/// `ready` receives the bound addresses once the server accepts requests.
pub async fn run(
    config: ServeConfig,
    mut runtime_config: RuntimeConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    ready: Option<tokio::sync::oneshot::Sender<Bound>>,
) -> anyhow::Result<()> {
    runtime_config.outbound = config.outbound.to_runtime()?;
    let runtime_allow_private = runtime_config.outbound.allow_private.clone();
    std::fs::create_dir_all(&config.data).with_context(|| format!("{}: cannot create", config.data.display()))?;
    let reserve = config.store.reserve_mb.saturating_mul(1 << 20);
    let cache = config.store.cache_mb.max(1).saturating_mul(1 << 20);
    let store = Store::open_with(&config.data.join("store"), reserve, cache).context("opening the store")?;
    let signer = Arc::new(StateSigner::new(host_secret(&config.data)?));
    let runtime = Arc::new(Runtime::new(runtime_config).context("starting the runtime")?);
    // Bound before anything serves, so the public URL (and with it the
    // OAuth redirect URI apps are given) is known; connections wait in the
    // backlog until the API starts accepting.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{addr}"));
    let engine_config = EngineConfig {
        concurrency: config.concurrency,
        max_queue: config.max_queue,
        max_queue_per_org: config.max_queue_per_org,
        ingress_batch: config.ingress_batch,
        oauth: Some(OauthSigning { signer: Arc::clone(&signer), redirect_uri: Api::oauth_redirect_uri(&public_url) }),
        ..EngineConfig::default()
    };
    let engine = Engine::new(store.clone(), runtime, engine_config)?;
    let engine = Arc::new(engine);
    // Through the writer, durable before it is shown or used: a token shown
    // once and lost in a crash could never be used, and a replaced one
    // must stay replaced.
    let configured = config.operator_token.clone();
    let generated = engine
        .administer(crate::model::OrgId::default(), move |store| ensure_operator_token(store, configured))
        .await
        .context("storing the operator token")?;
    if let Some(secret) = generated {
        eprintln!("paddock: generated the operator token (shown once; set {OPERATOR_TOKEN_ENV} to choose your own):");
        eprintln!("    {secret}");
    }
    // Before anything is written: organisations with monitors are on the
    // feed from the first write (the bootstrap file's agents included).
    let monitors = Monitors::new(Arc::clone(&engine), config.monitors.to_config(runtime_allow_private)).await?;

    let plugins = Plugins::new(Arc::clone(&engine), config.plugins.clone());
    if config.plugins.is_dir() {
        let (ok, failed) = plugins.load_all().await?;
        tracing::info!(dir = %config.plugins.display(), ok, failed, "plugins loaded");
    } else {
        tracing::warn!(dir = %config.plugins.display(), "no plugins directory; no apps loaded");
    }
    let restored = engine.restore().await?;
    tracing::info!(restored, "installations restored");
    if let Some(file) = &config.bootstrap {
        bootstrap::apply(&engine, file, config.max_ingest_rate).await?;
    }
    let _watcher = if config.plugins.is_dir() { Some(plugins.watch()?) } else { None };

    let trusted = config
        .trusted_proxies
        .iter()
        .map(|c| c.parse().with_context(|| format!("trusted_proxies: {c:?} is not a CIDR block")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let api_config = ApiConfig {
        trusted_proxies: trusted,
        public_url,
        plugins_dir: config.plugins.is_dir().then(|| config.plugins.clone()),
        max_ingest_rate: config.max_ingest_rate,
        body_timeout: Duration::from_millis(config.http.body_timeout_ms.max(1)),
        ..ApiConfig::default()
    };
    let push = match config.push_listen {
        Some(at) => Some(bind_push(at, "monitor push listener").await?),
        None => None,
    };
    let tls = config.monitors.tls_acceptor()?;
    let push_tls = match (&tls, config.monitors.push_tls_listen) {
        (Some(acceptor), at) => {
            let at = at.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 3201)));
            let (listener, bound) = bind_push(at, "monitor push listener (TLS)").await?;
            Some((listener, bound, acceptor.clone()))
        }
        (None, Some(at)) => anyhow::bail!("[monitors] push_tls_listen = {at} needs tls_cert and tls_key"),
        (None, None) => None,
    };
    let api = Arc::new(Api::new(Arc::clone(&engine), api_config, signer, Arc::clone(&monitors)));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let dispatcher = tokio::spawn(Arc::clone(&engine).run(stopped(stop_rx.clone())));
    let maintenance =
        tokio::spawn(maintain(Arc::clone(&engine), Arc::clone(&monitors), config.clone(), stopped(stop_rx.clone())));
    let push_addr = push.as_ref().map(|(_, at)| *at);
    let pusher = push.map(|(listener, _)| {
        tokio::spawn(crate::monitors::tcp::serve(Arc::clone(&monitors), listener, None, stopped(stop_rx.clone())))
    });
    let push_tls_addr = push_tls.as_ref().map(|(_, at, _)| *at);
    let tls_pusher = push_tls.map(|(listener, _, acceptor)| {
        let stop = stopped(stop_rx.clone());
        tokio::spawn(crate::monitors::tcp::serve(Arc::clone(&monitors), listener, Some(acceptor), stop))
    });
    tracing::info!(%addr, data = %config.data.display(), "paddock serving");
    eprintln!("paddock: listening on http://{addr}");
    if let Some(ready) = ready {
        let _ = ready.send(Bound { api: addr, push: push_addr, push_tls: push_tls_addr });
    }
    let grace = Duration::from_secs(config.shutdown_grace_s);
    let limits = config.http.limits();
    tracing::info!(max_connections = limits.max_connections, header_timeout = ?limits.header_timeout, "http limits");
    crate::api::serve(listener, api, limits, shutdown_signal(stop), grace).await;
    tracing::info!("stopped accepting; draining in-flight invocations");
    let _ = stop_tx.send(true);
    let _ = dispatcher.await;
    let _ = maintenance.await;
    for pusher in [pusher, tls_pusher].into_iter().flatten() {
        let _ = pusher.await;
    }
    store.flush().await?;
    eprintln!("paddock: stopped");
    Ok(())
}

async fn shutdown_signal(stop: impl std::future::Future<Output = ()>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
        () = stop => {}
    }
}

/// Make sure an operator token exists: the configured one (stored by hash;
/// it replaces any other), or — on first start with none — a generated
/// one, returned to be shown once (after the caller's flush).
fn ensure_operator_token(store: &Store, configured: Option<String>) -> Result<Option<String>, tenants::AdminError> {
    let configured = configured.or_else(|| std::env::var(OPERATOR_TOKEN_ENV).ok()).filter(|t| !t.is_empty());
    if let Some(token) = configured {
        // The configured token is the only operator token: a replaced one
        // (or a generated one) stops working.
        let hash = hash_secret(&token);
        let id = format!("operator-{}", &hex::encode(hash)[..12]);
        for old in store.tokens(None)? {
            if old.id != id {
                store.revoke_token(None, &old.id)?;
            }
        }
        if store.token(&hash)?.is_none() {
            tenants::add_token(store, None, id, "operator", &token)?;
        }
        return Ok(None);
    }
    if !store.tokens(None)?.is_empty() {
        return Ok(None);
    }
    let secret = tenants::new_secret("pdo_")?;
    tenants::add_token(store, None, "operator-generated".into(), "operator", &secret.0)?;
    Ok(Some(secret.0))
}

/// The host secret (signs OAuth states): 32 random bytes in
/// `<data>/host.key`, created on first start, readable by the owner only.
fn host_secret(data: &Path) -> anyhow::Result<Vec<u8>> {
    let file = data.join("host.key");
    if let Ok(key) = std::fs::read(&file)
        && key.len() == 32
    {
        return Ok(key);
    }
    let mut key = vec![0u8; 32];
    getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no random numbers: {e}"))?;
    // Readable by the owner only from the moment it exists (not chmod-ed
    // after the write), and on disk before anything is signed with it.
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let written = options.open(&file).and_then(|mut f| {
        std::io::Write::write_all(&mut f, &key)?;
        f.sync_all()
    });
    written.with_context(|| format!("{}: cannot write", file.display()))?;
    Ok(key)
}

/// Retention: every minute, prune messages past the per-channel limit,
/// summaries past the per-installation limit, expired idempotency keys and
/// the monitor feed past its bounds, through the writer like every write.
async fn maintain(
    engine: Arc<Engine>,
    monitors: Arc<Monitors>,
    config: ServeConfig,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        let keep = Retention {
            messages_per_channel: config.messages_per_channel,
            summaries_per_installation: config.invocations_per_installation,
            dead_letters_per_organisation: config.dead_letters_per_organisation,
        };
        let pruned = match engine.prune(keep).await {
            Ok(n) => monitors.prune().await.map(|m| n + m),
            Err(e) => Err(e),
        };
        match pruned {
            Ok(n) if n > 0 => tracing::info!(removed = n, "retention pruned records"),
            Err(e) => tracing::error!(error = %e, "retention failed"),
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_operator_token_replaces_any_other_and_none_keeps_what_exists() {
        let store = Store::temporary().unwrap();
        let generated = ensure_operator_token(&store, None).unwrap().expect("generated on first start");
        assert!(store.token(&hash_secret(&generated)).unwrap().is_some(), "the token shown is the one stored");
        assert_eq!(store.tokens(None).unwrap().len(), 1);
        assert_eq!(ensure_operator_token(&store, Some("first".into())).unwrap(), None, "a configured one is not shown");
        assert!(store.token(&hash_secret("first")).unwrap().is_some());
        assert_eq!(store.tokens(None).unwrap().len(), 1, "the generated one is gone");
        ensure_operator_token(&store, Some("second".into())).unwrap();
        assert!(store.token(&hash_secret("first")).unwrap().is_none(), "a replaced token stops working");
        assert!(store.token(&hash_secret("second")).unwrap().is_some());
        assert_eq!(ensure_operator_token(&store, None).unwrap(), None, "nothing generated while one exists");
        assert_eq!(store.tokens(None).unwrap().len(), 1);
    }

    #[test]
    fn the_host_key_is_made_once_readable_by_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let key = host_secret(dir.path()).unwrap();
        assert_eq!(key.len(), 32);
        assert_eq!(host_secret(dir.path()).unwrap(), key, "kept across starts");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("host.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn the_outbound_table_parses_and_names_a_bad_range() {
        let config: ServeConfig =
            toml::from_str("[outbound]\nallow_private = [\"10.0.0.0/8\"]\nmax_requests = 4\nconnect_timeout_ms = 250")
                .unwrap();
        let outbound = config.outbound.to_runtime().unwrap();
        assert_eq!(outbound.allow_private, vec!["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap()]);
        assert_eq!(outbound.max_requests, 4);
        assert_eq!(outbound.connect_timeout, Duration::from_millis(250));
        assert_eq!(outbound.max_response_bytes, OutboundConfig::default().max_response_bytes);
        let bad: ServeConfig = toml::from_str("[outbound]\nallow_private = [\"10.0.0.300/8\"]").unwrap();
        let err = format!("{:#}", bad.outbound.to_runtime().unwrap_err());
        assert!(err.contains("outbound.allow_private: \"10.0.0.300/8\" is not a CIDR range"), "{err}");
        assert!(toml::from_str::<ServeConfig>("[outbound]\nallowed = 1").is_err(), "unknown keys are refused");
    }

    #[test]
    fn the_store_table_sets_the_cache_and_reserve_and_defaults_each() {
        let config: ServeConfig = toml::from_str("[store]\ncache_mb = 64").unwrap();
        assert_eq!(config.store.cache_mb, 64);
        assert_eq!(config.store.reserve_mb, crate::store::DEFAULT_RESERVE >> 20);
        let config: ServeConfig = toml::from_str("").unwrap();
        assert_eq!(config.store.cache_mb, crate::store::DEFAULT_CACHE >> 20);
        assert!(toml::from_str::<ServeConfig>("[store]\ncache = 1").is_err(), "unknown keys are refused");
    }
}
