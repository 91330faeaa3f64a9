//! The plugins directory: one sub-directory per app (manifest + component).
//!
//! Every app is loaded at start; then the directory is watched (debounced)
//! and a created, modified or deleted app is loaded again off the hot
//! path (compilation runs on a blocking thread) and swapped in atomically:
//! events already running finish on the version they started with, new
//! events run the new one. An app that fails to load is reported (log and
//! `GET /v1/apps`) while its previous version keeps serving.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify_debouncer_mini::{DebounceEventResult, new_debouncer};

use crate::engine::Engine;
use crate::manifest::{DOOVER_MANIFEST_FILE, MANIFEST_FILE, Manifest};
use crate::runtime::{LoadError, LoadedApp, Runtime};

/// Quiet time before a burst of file changes is acted on.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// Why an upload or a directory scan failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The directory could not be read or written.
    #[error("{path}: {reason}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The app did not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The upload was refused; the reason names no server path.
    #[error("{0}")]
    Rejected(String),
    /// The upload's name and its manifest disagree.
    #[error("the manifest names the app {manifest:?}, the URL {url:?}")]
    NameMismatch {
        /// Name in the manifest.
        manifest: String,
        /// Name in the URL.
        url: String,
    },
}

fn io(path: &Path, e: impl std::fmt::Display) -> PluginError {
    PluginError::Io { path: path.to_path_buf(), reason: e.to_string() }
}

/// Whether `dir` holds an app.
fn is_app_dir(dir: &Path) -> bool {
    dir.join(MANIFEST_FILE).is_file() || dir.join(DOOVER_MANIFEST_FILE).is_file()
}

/// Load one app directory on a blocking thread (compilation is CPU-bound
/// and must not stall the executor serving requests and events).
pub async fn load_off_thread(runtime: Arc<Runtime>, dir: PathBuf) -> Result<LoadedApp, LoadError> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(runtime.load_dir(&dir))).await.unwrap_or_else(|e| {
        Err(LoadError::Read { path: PathBuf::from("-"), reason: format!("loader task failed: {e}") })
    })
}

/// The directory watcher and what it has loaded.
pub struct Plugins {
    engine: Arc<Engine>,
    dir: PathBuf,
    /// App name by sub-directory, for deletions.
    names: tokio::sync::Mutex<BTreeMap<PathBuf, String>>,
}

impl Plugins {
    /// The plugins directory `dir` for `engine`.
    pub fn new(engine: Arc<Engine>, dir: PathBuf) -> Arc<Self> {
        Arc::new(Self { engine, dir, names: tokio::sync::Mutex::default() })
    }

    /// Load every app in the directory. Returns (loaded, failed).
    pub async fn load_all(&self) -> Result<(usize, usize), PluginError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| io(&self.dir, e))?;
        let mut dirs: Vec<PathBuf> =
            entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| is_app_dir(p)).collect();
        dirs.sort();
        let (mut ok, mut failed) = (0, 0);
        for dir in dirs {
            if self.reload(&dir).await { ok += 1 } else { failed += 1 }
        }
        Ok((ok, failed))
    }

    /// Load (or unload) the app in `dir`; true if it is serving afterwards.
    pub async fn reload(&self, dir: &Path) -> bool {
        if !is_app_dir(dir) {
            if let Some(name) = self.names.lock().await.remove(dir) {
                self.engine.remove_app(&name);
            }
            return false;
        }
        let name = match Manifest::load_dir(dir) {
            Ok(m) => m.name,
            Err(e) => {
                let name = self.names.lock().await.get(dir).cloned().unwrap_or_else(|| dir_name(dir));
                self.engine.app_failed(&name, relative(&e.to_string(), &self.dir, ""));
                return false;
            }
        };
        match load_off_thread(Arc::clone(self.engine.runtime()), dir.to_path_buf()).await {
            Ok(app) => {
                self.names.lock().await.insert(dir.to_path_buf(), name);
                match self.engine.put_app(Arc::new(app)).await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::error!(dir = %dir.display(), error = %e, "app loaded but could not be deployed");
                        false
                    }
                }
            }
            Err(e) => {
                self.engine.app_failed(&name, relative(&e.to_string(), &self.dir, ""));
                false
            }
        }
    }

    /// Watch the directory until the returned guard is dropped. The root
    /// and each app sub-directory are watched (not recursively: build
    /// output such as `target/` is never watched); a new sub-directory is
    /// watched as soon as it appears.
    pub fn watch(self: &Arc<Self>) -> Result<Arc<std::sync::Mutex<impl Send + 'static>>, PluginError> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<BTreeSet<PathBuf>>();
        let root = self.dir.clone();
        let debouncer = new_debouncer(DEBOUNCE, move |result: DebounceEventResult| match result {
            Ok(events) => {
                let dirs = events.iter().filter_map(|e| app_dir_of(&root, &e.path)).collect::<BTreeSet<_>>();
                if !dirs.is_empty() {
                    let _ = tx.send(dirs);
                }
            }
            Err(e) => tracing::warn!(error = %e, "plugins directory watch error"),
        })
        .map_err(|e| io(&self.dir, e))?;
        let debouncer = Arc::new(std::sync::Mutex::new(debouncer));
        let watch = |path: &Path| {
            let mut d = debouncer.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = d.watcher().watch(path, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(path = %path.display(), error = %e, "cannot watch");
            }
        };
        watch(&self.dir);
        let subdirs = std::fs::read_dir(&self.dir).map_err(|e| io(&self.dir, e))?;
        for dir in subdirs.filter_map(Result::ok).map(|e| e.path()) {
            if app_dir_of(&self.dir, &dir).is_some() && dir.is_dir() {
                watch(&dir);
            }
        }
        let me = Arc::clone(self);
        let guard = Arc::clone(&debouncer);
        tokio::spawn(async move {
            while let Some(dirs) = rx.recv().await {
                for dir in dirs {
                    if dir.is_dir() {
                        let mut d = debouncer.lock().unwrap_or_else(|p| p.into_inner());
                        let _ = d.watcher().watch(&dir, notify::RecursiveMode::NonRecursive);
                    }
                    tracing::info!(dir = %dir.display(), "plugins directory changed; reloading");
                    me.reload(&dir).await;
                }
            }
        });
        Ok(guard)
    }
}

/// The app sub-directory a changed path belongs to (its first component
/// under `root`), ignoring upload staging directories.
fn app_dir_of(root: &Path, path: &Path) -> Option<PathBuf> {
    let rel = path.strip_prefix(root).ok()?;
    let first = rel.components().next()?;
    let name = first.as_os_str().to_str()?;
    if name.starts_with('.') || name == "target" {
        return None;
    }
    Some(root.join(name))
}

fn dir_name(dir: &Path) -> String {
    dir.file_name().and_then(|n| n.to_str()).unwrap_or("app").to_owned()
}

/// Accept an uploaded app. The manifest is parsed and checked before
/// anything is written (a file it names must lie inside the app's own
/// directory); then the app is staged in a hidden directory, loaded
/// there (a broken upload never reaches the plugins directory) and moved
/// into place by rename. Returns the loaded app (the caller deploys it).
/// Errors name paths relative to the plugins directory, never the
/// server's own.
pub async fn install_upload(
    runtime: &Arc<Runtime>,
    dir: &Path,
    name: &str,
    manifest_toml: &str,
    component: &[u8],
) -> Result<Arc<LoadedApp>, PluginError> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(io(Path::new(name), "app names are letters, digits, '-' and '_'"));
    }
    let nonce = crate::model::EventId::generate();
    let staging = dir.join(format!(".upload-{name}-{nonce}"));
    let public = |e: PluginError| PluginError::Rejected(relative(&relative(&e.to_string(), &staging, name), dir, ""));
    let manifest_path = staging.join(MANIFEST_FILE);
    let manifest = Manifest::parse(manifest_toml, &manifest_path).map_err(|e| public(LoadError::from(e).into()))?;
    if manifest.name != name {
        return Err(PluginError::NameMismatch { manifest: manifest.name, url: name.to_owned() });
    }
    // Each file reaches the disk before the rename that publishes it, so
    // that a machine crash leaves the old app or the new one, never an
    // empty file under the app's name.
    let write_synced = |path: &Path, bytes: &[u8]| -> Result<(), PluginError> {
        let mut file = std::fs::File::create(path).map_err(|e| io(path, e))?;
        std::io::Write::write_all(&mut file, bytes).and_then(|()| file.sync_all()).map_err(|e| io(path, e))
    };
    let write = || -> Result<(), PluginError> {
        std::fs::create_dir_all(&staging).map_err(|e| io(&staging, e))?;
        write_synced(&manifest_path, manifest_toml.as_bytes())?;
        // `component` is inside `staging`: `Manifest::parse` saw to that.
        write_synced(&manifest.component, component)
    };
    let loaded = match write() {
        Ok(()) => load_off_thread(Arc::clone(runtime), staging.clone()).await.map_err(PluginError::from),
        Err(e) => Err(e),
    };
    let app = match loaded {
        Ok(app) => app,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(public(e));
        }
    };
    // Swap directories: the old one aside, the new one in, the old one gone.
    let target = dir.join(name);
    let aside = dir.join(format!(".old-{name}-{nonce}"));
    if target.exists() {
        std::fs::rename(&target, &aside).map_err(|e| public(io(&target, e)))?;
    }
    std::fs::rename(&staging, &target).map_err(|e| public(io(&target, e)))?;
    // The rename itself is durable once the plugins directory is: only
    // then is the upload answered.
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| public(io(dir, e)))?;
    let _ = std::fs::remove_dir_all(&aside);
    // The staged manifest pointed into the staging directory: reload from
    // the final place so the serving app names real paths (cached compile).
    let app = match runtime.load_dir(&target).await {
        Ok(a) => a,
        Err(_) => app,
    };
    Ok(Arc::new(app))
}

/// `message` with the directory `root` written as `shown` (the plugins
/// directory as nothing, a staging directory as the app's name), so what
/// a client reads names no path of the server's.
pub fn relative(message: &str, root: &Path, shown: &str) -> String {
    let root = root.display().to_string();
    let with_slash = format!("{root}/");
    let replacement = if shown.is_empty() { String::new() } else { format!("{shown}/") };
    message.replace(&with_slash, &replacement).replace(&root, shown)
}
