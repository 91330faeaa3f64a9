//! An in-process `paddock serve` on a real listener (port 0) for
//! end-to-end tests, with a private data directory and plugins directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use paddock::runtime::RuntimeConfig;
use paddock::serve::ServeConfig;
use serde_json::Value;

use crate::http::{Response, request};

/// The operator token every test server uses.
pub const OPERATOR: &str = "pdo_test_operator_token";

/// A running server; stopped (gracefully) when dropped.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its monitor push listener listens.
    pub push: Option<SocketAddr>,
    /// Where its TLS monitor push listener listens, if configured.
    pub push_tls: Option<SocketAddr>,
    /// Its plugins directory.
    pub plugins: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// A fresh plugins directory holding copies of the named example apps.
pub fn plugins_with(apps: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for app in apps {
        copy_app(&crate::app_dir(app), &dir.path().join(app));
    }
    dir
}

/// Copy an app's manifest, schema and component (not its sources).
pub fn copy_app(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "paddock.toml" || name.ends_with(".wasm") || name == "config.schema.json" {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
    assert!(to.join("paddock.toml").exists(), "{} has no manifest (run `make plugins`)", from.display());
}

impl Server {
    /// Start a server over `plugins` (a directory of apps), letting
    /// `tweak` adjust the config first.
    pub fn start(plugins: tempfile::TempDir, tweak: impl FnOnce(&mut ServeConfig)) -> Server {
        let data = tempfile::tempdir().unwrap();
        let mut config = ServeConfig {
            data: data.path().to_path_buf(),
            plugins: plugins.path().to_path_buf(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            operator_token: Some(OPERATOR.into()),
            shutdown_grace_s: 2,
            push_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..ServeConfig::default()
        };
        tweak(&mut config);
        let runtime =
            RuntimeConfig { cache_dir: Some(std::env::temp_dir().join("paddock-test-cache")), ..Default::default() };
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let stop = async move {
                    let _ = stop_rx.await;
                };
                if let Err(e) = paddock::serve::run(config, runtime, stop, Some(ready_tx)).await {
                    panic!("server failed: {e:#}");
                }
            });
        });
        let bound = ready_rx.blocking_recv().expect("the server did not start");
        let (addr, push, push_tls) = (bound.api, bound.push, bound.push_tls);
        let plugins_path = plugins.path().to_path_buf();
        Server {
            addr,
            push,
            push_tls,
            plugins: plugins_path,
            stop: Some(stop_tx),
            thread: Some(thread),
            _dirs: (data, plugins),
        }
    }

    /// Call the API. `token` is sent as a bearer token; `body` as JSON.
    pub fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Response {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        let body = body.map(|b| serde_json::to_vec(b).unwrap()).unwrap_or_default();
        request(self.addr, method, path, &headers, &body).unwrap()
    }

    /// Call as the operator; assert the status.
    pub fn op(&self, method: &str, path: &str, body: Option<&Value>, status: u16) -> Value {
        let r = self.call(method, path, Some(OPERATOR), body);
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        r.json()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Poll `check` until it returns `Some`, for at most `secs` seconds.
pub fn eventually<T>(secs: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}
