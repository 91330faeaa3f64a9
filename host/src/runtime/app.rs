//! Loading an app: manifest, compile (or load the cached artefact), link
//! into an `InstancePre`, and ask the component which hooks it implements.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::bindings::{AppPre, hook_from_wit};
use super::invoke::Failure;
use super::{Outcome, Runtime};
use crate::caps::MemoryState;
use crate::manifest::{Manifest, ManifestError};
use crate::model::{Hook, HostPattern};

/// An app ready to run: compiled, linked, hooks known.
pub struct LoadedApp {
    /// The validated manifest.
    pub manifest: Manifest,
    /// SHA-256 of the component bytes (hex): the app version.
    pub digest: String,
    /// The hooks the component declared.
    pub hooks: BTreeSet<Hook>,
    /// The JSON Schema the component exports for its config, if any.
    pub exported_schema: Option<String>,
    /// The manifest's `allowed_hosts`, parsed.
    pub(super) outbound_hosts: Arc<[HostPattern]>,
    pub(super) pre: AppPre<super::bindings::Sandbox>,
}

impl std::fmt::Debug for LoadedApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedApp").field("name", &self.manifest.name).field("digest", &self.digest).finish()
    }
}

/// Why an app could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The manifest is wrong.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The component file cannot be read.
    #[error("{path}: cannot read the component: {reason}")]
    Read {
        /// The component path.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The bytes are not a valid component.
    #[error("{path}: not a valid wasm component: {reason}")]
    Compile {
        /// The component path.
        path: PathBuf,
        /// wasmtime's complaint.
        reason: String,
    },
    /// The component imports something Paddock does not provide, or does
    /// not export the handler.
    #[error("{path}: does not fit the paddock:app@0.1.0 world: {reason}")]
    Link {
        /// The component path.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// `hooks()` did not return cleanly.
    #[error("{path}: hooks() failed: {outcome:?}")]
    Hooks {
        /// The component path.
        path: PathBuf,
        /// How it failed.
        outcome: Box<Outcome>,
    },
}

impl Runtime {
    /// Load the app in `dir` (manifest + component).
    pub async fn load_dir(&self, dir: &Path) -> Result<LoadedApp, LoadError> {
        let manifest = Manifest::load_dir(dir)?;
        self.load_manifest(manifest).await
    }

    /// Load the component a manifest names.
    pub async fn load_manifest(&self, manifest: Manifest) -> Result<LoadedApp, LoadError> {
        let path = manifest.component.clone();
        let bytes = std::fs::read(&path).map_err(|e| LoadError::Read { path: path.clone(), reason: e.to_string() })?;
        self.load(manifest, &bytes).await
    }

    /// Compile (or fetch from cache), link and probe a component.
    pub async fn load(&self, manifest: Manifest, bytes: &[u8]) -> Result<LoadedApp, LoadError> {
        let path = manifest.component.clone();
        let digest = hex::encode(Sha256::digest(bytes));
        let component = self
            .compile_cached(bytes, &digest)
            .map_err(|e| LoadError::Compile { path: path.clone(), reason: format!("{e:#}") })?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(AppPre::new)
            .map_err(|e| LoadError::Link { path: path.clone(), reason: format!("{e:#}") })?;
        // The manifest was validated, so every entry parses.
        let outbound_hosts = manifest.allowed_hosts.iter().filter_map(|h| HostPattern::parse(h).ok()).collect();
        let mut app =
            LoadedApp { manifest, digest, hooks: BTreeSet::new(), exported_schema: None, outbound_hosts, pre };
        let (hooks, schema) =
            self.probe(&app).await.map_err(|outcome| LoadError::Hooks { path, outcome: Box::new(outcome) })?;
        app.hooks = hooks;
        app.exported_schema = schema;
        Ok(app)
    }

    /// Run `hooks()` and `config-schema()` once, under the app's limits.
    async fn probe(&self, app: &LoadedApp) -> Result<(BTreeSet<Hook>, Option<String>), Outcome> {
        let mut run = self.prepare(app, super::invoke::probe_grant(), Arc::new(MemoryState::default()));
        let pre = &app.pre;
        run.call(&app.manifest.limits, async |store| {
            let instance = pre.instantiate_async(&mut *store).await.map_err(Failure::Instantiate)?;
            let handler = instance.paddock_app_handler();
            let hooks = handler.call_hooks(&mut *store).await.map_err(Failure::Call)?;
            let schema = handler.call_config_schema(&mut *store).await.map_err(Failure::Call)?;
            Ok((hook_from_wit(hooks), schema))
        })
        .await
    }

    fn compile_cached(&self, bytes: &[u8], digest: &str) -> wasmtime::Result<Component> {
        let Some(dir) = &self.config.cache_dir else {
            return Component::new(&self.engine, bytes);
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let file = dir.join(format!("{digest}-{:016x}.cwasm", h.finish()));
        // Read the artefact into memory rather than mmap it
        // (`deserialize_file`): a file truncated under a live mapping would
        // SIGBUS the whole host.
        if let Ok(cached) = std::fs::read(&file) {
            // SAFETY: the bytes come from the host's own cache directory,
            // written by this function under the source digest and the
            // engine's compatibility hash; wasmtime also checks the
            // artefact's header and version before using it.
            match unsafe { Component::deserialize(&self.engine, &cached) } {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "unusable compile cache entry; recompiling")
                }
            }
        }
        let component = Component::new(&self.engine, bytes)?;
        if let Err(e) = write_atomic(dir, &file, &component.serialize()?) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot write the compile cache");
        }
        Ok(component)
    }
}

fn write_atomic(dir: &Path, file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file)
}
