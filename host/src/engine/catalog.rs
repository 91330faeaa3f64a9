//! Apps and installations: the registry of loaded app versions (swapped
//! atomically on upgrade) and the durable installations that run them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::Serialize;
use serde_json::Value;

use super::{Engine, EngineError, Installation};
use crate::manifest::AppKind;
use crate::model::{AgentId, EventId, InstallId, OrgId, now_ms};
use crate::runtime::LoadedApp;
use crate::store::InstallRecord;

/// What the engine knows of an app name: the version serving, and the
/// last load error if a newer version failed (the previous one keeps serving).
#[derive(Debug, Clone, Default)]
pub struct AppSlot {
    /// The version serving now, if any loaded.
    pub current: Option<Arc<LoadedApp>>,
    /// Why the latest version could not be loaded, if it could not.
    pub error: Option<String>,
}

/// An app's status as the API reports it.
#[derive(Debug, Clone, Serialize)]
pub struct AppStatus {
    /// The app's name.
    pub name: String,
    /// `ok`, `broken` (a newer version failed; the previous one serves) or
    /// `failed` (no version loaded).
    pub status: &'static str,
    /// SHA-256 of the serving component.
    pub digest: Option<String>,
    /// `PRO` or `INT`.
    pub kind: Option<String>,
    /// The manifest's display name.
    pub display_name: Option<String>,
    /// The hooks the serving component handles.
    pub hooks: Vec<&'static str>,
    /// The last load error.
    pub error: Option<String>,
}

/// The catalog's state: the serving version of each app name, and the
/// active installations (each holding the app version it runs).
#[derive(Default)]
pub(super) struct Catalog {
    installs: RwLock<Installs>,
    apps: RwLock<BTreeMap<String, AppSlot>>,
}

/// The active installations, by id and by what they can hear: routing
/// looks up the few installations a write can concern instead of testing
/// every installation of every organisation against it.
#[derive(Default)]
pub(super) struct Installs {
    by_id: BTreeMap<InstallId, Arc<Installation>>,
    /// Processors by the agent they are installed on (they hear only it).
    on_agent: HashMap<(OrgId, AgentId), Vec<Arc<Installation>>>,
    /// Integrations by organisation (they hear every agent of it).
    on_org: HashMap<OrgId, Vec<Arc<Installation>>>,
}

impl Installs {
    /// The installation `id`.
    pub fn get(&self, id: &InstallId) -> Option<&Arc<Installation>> {
        self.by_id.get(id)
    }

    /// Add `inst`, replacing the installation with its id.
    pub fn insert(&mut self, inst: Arc<Installation>) {
        self.remove(inst.id);
        let hearers = self.hearers(&inst);
        let at = hearers.partition_point(|i| i.id < inst.id);
        hearers.insert(at, Arc::clone(&inst));
        self.by_id.insert(inst.id, inst);
    }

    /// Remove the installation `id`, if active.
    pub fn remove(&mut self, id: InstallId) -> Option<Arc<Installation>> {
        let inst = self.by_id.remove(&id)?;
        let (org, agent) = (inst.organisation_id, inst.agent_id);
        let hearers = self.hearers(&inst);
        hearers.retain(|i| i.id != id);
        if hearers.is_empty() {
            match inst.app.manifest.kind {
                AppKind::Integration => self.on_org.remove(&org),
                _ => self.on_agent.remove(&(org, agent)),
            };
        }
        Some(inst)
    }

    /// Keep only the installations for which `keep` holds.
    pub fn retain(&mut self, keep: impl Fn(&Installation) -> bool) {
        let gone: Vec<InstallId> = self.by_id.values().filter(|i| !keep(i)).map(|i| i.id).collect();
        for id in gone {
            self.remove(id);
        }
    }

    /// The installations that may hear a write on `agent` of `org`: the
    /// processors installed on it, then the organisation's integrations,
    /// each in id order. (Whether one does depends on its subscriptions and
    /// hooks: see `routing`.)
    pub fn hearing(&self, org: OrgId, agent: AgentId) -> impl Iterator<Item = &Arc<Installation>> {
        let processors = self.on_agent.get(&(org, agent)).into_iter().flatten();
        processors.chain(self.on_org.get(&org).into_iter().flatten())
    }

    fn hearers(&mut self, inst: &Installation) -> &mut Vec<Arc<Installation>> {
        match inst.app.manifest.kind {
            AppKind::Integration => self.on_org.entry(inst.organisation_id).or_default(),
            _ => self.on_agent.entry((inst.organisation_id, inst.agent_id)).or_default(),
        }
    }
}

impl Catalog {
    /// The active installations.
    pub fn installs(&self) -> RwLockReadGuard<'_, Installs> {
        self.installs.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The active installations, to change.
    pub fn installs_mut(&self) -> RwLockWriteGuard<'_, Installs> {
        self.installs.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The apps by name.
    pub fn apps(&self) -> RwLockReadGuard<'_, BTreeMap<String, AppSlot>> {
        self.apps.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The apps by name, to change.
    pub fn apps_mut(&self) -> RwLockWriteGuard<'_, BTreeMap<String, AppSlot>> {
        self.apps.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl Engine {
    /// Serve `app` for its name: new events of its installations run it;
    /// events in flight finish on the version they started with. Each
    /// installation of an upgraded app gets a deployment event.
    pub async fn put_app(&self, app: Arc<LoadedApp>) -> Result<Vec<EventId>, EngineError> {
        let name = app.manifest.name.clone();
        let previous = {
            let mut apps = self.catalog.apps_mut();
            let slot = apps.entry(name.clone()).or_default();
            slot.error = None;
            slot.current.replace(Arc::clone(&app))
        };
        if previous.as_ref().is_some_and(|p| p.digest == app.digest) {
            return Ok(Vec::new());
        }
        tracing::info!(app = %name, digest = %app.digest, "app serving");
        let mut deployed = Vec::new();
        for rec in self.store.installs()?.into_iter().filter(|r| r.app == name) {
            if let Some(id) = self.activate(&rec, Arc::clone(&app)).await? {
                deployed.push(id);
            }
        }
        Ok(deployed)
    }

    /// Record that the latest version of `name` failed to load. The version
    /// serving (if any) keeps serving.
    pub fn app_failed(&self, name: &str, error: String) {
        tracing::error!(app = %name, %error, "app failed to load; the previous version (if any) keeps serving");
        let mut apps = self.catalog.apps_mut();
        apps.entry(name.to_owned()).or_default().error = Some(error);
    }

    /// Stop serving `name` (its files were removed). Its installations stay
    /// stored but receive nothing until the app comes back.
    pub fn remove_app(&self, name: &str) {
        self.catalog.apps_mut().remove(name);
        let mut installs = self.catalog.installs_mut();
        installs.retain(|i| i.app.manifest.name != name);
        tracing::info!(app = %name, "app removed");
    }

    /// The serving version of `name`.
    pub fn app(&self, name: &str) -> Option<Arc<LoadedApp>> {
        self.catalog.apps().get(name).and_then(|s| s.current.clone())
    }

    /// Every app's status, by name.
    pub fn app_statuses(&self) -> Vec<AppStatus> {
        let apps = self.catalog.apps();
        apps.iter()
            .map(|(name, slot)| {
                let app = slot.current.as_deref();
                AppStatus {
                    name: name.clone(),
                    status: match (app, &slot.error) {
                        (Some(_), None) => "ok",
                        (Some(_), Some(_)) => "broken",
                        (None, _) => "failed",
                    },
                    digest: app.map(|a| a.digest.clone()),
                    kind: app.map(|a| a.manifest.kind.code().to_owned()),
                    display_name: app.map(|a| a.manifest.display_name.clone()),
                    hooks: app.map(|a| a.hooks.iter().map(|h| h.op()).collect()).unwrap_or_default(),
                    error: slot.error.clone(),
                }
            })
            .collect()
    }

    /// Create or update an installation: the app must be serving, the
    /// config is validated against its schema (every violation listed),
    /// the app key must be free on the agent. The record is stored, the
    /// installation activated and, if its app handles deployments, a
    /// deployment event queued. Returns the deployment event's id.
    pub async fn put_installation(&self, rec: &InstallRecord) -> Result<Option<EventId>, EngineError> {
        let app = self.app(&rec.app).ok_or_else(|| EngineError::UnknownApp(rec.app.clone()))?;
        app.manifest.validate_config(&rec.config).map_err(EngineError::InvalidConfig)?;
        if self.store.agent_org(rec.agent_id)? != Some(rec.organisation_id) {
            return Err(EngineError::UnknownAgent(rec.agent_id));
        }
        let stored = rec.clone();
        self.writer.apply(rec.organisation_id, true, move |store| store.put_install(&stored)).await?;
        self.activate(rec, app).await
    }

    /// Delete an installation, stored or only active; false if there was
    /// none. Its queued events are dead-lettered when they come up
    /// (reason: no installation).
    pub async fn delete_installation(&self, id: InstallId) -> Result<bool, EngineError> {
        let org = self.installation(id).map_or(crate::model::OrgId::from(0), |inst| inst.organisation_id);
        let stored = self.writer.apply(org, true, move |store| store.delete_install(id)).await?;
        let active = self.catalog.installs_mut().remove(id).is_some();
        Ok(stored || active)
    }

    /// A stored installation.
    pub fn installation_record(&self, id: InstallId) -> Result<Option<InstallRecord>, EngineError> {
        Ok(self.store.install(id)?)
    }

    /// Activate every stored installation whose app is serving (at start,
    /// after the apps are loaded). Returns how many were activated; the
    /// others wait for their app.
    pub async fn restore(&self) -> Result<usize, EngineError> {
        let mut active = 0;
        for rec in self.store.installs()? {
            let Some(app) = self.app(&rec.app) else {
                tracing::warn!(install = %rec.id, app = %rec.app, "installation waits for its app");
                continue;
            };
            match installation(&rec, app) {
                Ok(inst) => {
                    let inst = Arc::new(inst);
                    self.register_schedules(&inst).await?;
                    self.catalog.installs_mut().insert(inst);
                    active += 1;
                }
                Err(errors) => tracing::error!(install = %rec.id, ?errors, "installation config no longer valid"),
            }
        }
        Ok(active)
    }

    /// Run `rec` on `app` from now on (with a deployment event).
    async fn activate(&self, rec: &InstallRecord, app: Arc<LoadedApp>) -> Result<Option<EventId>, EngineError> {
        let inst = installation(rec, app).map_err(EngineError::InvalidConfig)?;
        self.install(inst).await
    }
}

/// The runnable installation of a record on an app version.
fn installation(rec: &InstallRecord, app: Arc<LoadedApp>) -> Result<Installation, Vec<String>> {
    let config = app.manifest.validate_config(&rec.config)?.to_string().into();
    let subscriptions = app.manifest.subscriptions.clone();
    Ok(Installation {
        id: rec.id,
        organisation_id: rec.organisation_id,
        agent_id: rec.agent_id,
        app_key: rec.app_key.clone(),
        display_name: rec.display_name.clone(),
        config,
        subscriptions,
        app,
    })
}

/// A new installation record (id and creation time filled in).
pub fn new_record(
    app: &str,
    organisation_id: crate::model::OrgId,
    agent_id: crate::model::AgentId,
    app_key: &str,
    display_name: &str,
    config: Value,
) -> InstallRecord {
    InstallRecord {
        id: InstallId::generate(),
        app: app.to_owned(),
        organisation_id,
        agent_id,
        app_key: app_key.to_owned(),
        display_name: display_name.to_owned(),
        config,
        created_ms: now_ms(),
    }
}
