//! App manifests: `paddock.toml` (native) or Doover's `doover_config.json`,
//! parsed into validated types. Every error names the file, the field and
//! the reason.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::model::{ChannelName, is_valid_key};

/// File name of a native manifest inside an app directory.
pub const MANIFEST_FILE: &str = "paddock.toml";
/// File name of a Doover manifest inside an app directory.
pub const DOOVER_MANIFEST_FILE: &str = "doover_config.json";

/// Lambda's default timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Lambda's maximum timeout.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(900);
/// Shortest timeout accepted: below it, instantiation alone could time out.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Lambda's default memory size.
pub const DEFAULT_MEMORY_MB: u32 = 128;
/// wasm32 linear memory tops out at 4 GiB, so larger budgets mean nothing.
pub const MAX_MEMORY_MB: u32 = 4096;
/// Smallest memory budget: one 64 KiB page stack plus data needs ~1 MiB.
pub const MIN_MEMORY_MB: u32 = 1;

/// Processor (on an agent) or integration (on an organisation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum AppKind {
    /// `PRO`: installed on an agent, reacts to its channels.
    #[serde(rename = "PRO")]
    Processor,
    /// `INT`: installed on an organisation, reaches its agents.
    #[serde(rename = "INT")]
    Integration,
}

impl<'de> Deserialize<'de> for AppKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        match code.as_str() {
            "PRO" => Ok(AppKind::Processor),
            "INT" => Ok(AppKind::Integration),
            // Doover's device apps (docker containers on the device) have
            // no place in a cloud host: say so, not "unknown variant".
            "DEV" => Err(serde::de::Error::custom(
                "\"DEV\" is a device app: it runs on the device itself, not in Paddock; \
                 Paddock runs processors (\"PRO\") and integrations (\"INT\")",
            )),
            other => Err(serde::de::Error::custom(format!(
                "unknown app type {other:?}: use \"PRO\" (a processor) or \"INT\" (an integration)"
            ))),
        }
    }
}

/// Doover exports unset fields as `null`: read `null` as the default.
fn null_as_default<'de, D: serde::Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl AppKind {
    /// Doover's code: `PRO` or `INT`.
    pub fn code(self) -> &'static str {
        match self {
            AppKind::Processor => "PRO",
            AppKind::Integration => "INT",
        }
    }
}

/// Resource limits of one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppLimits {
    /// Wall-clock budget; also the source of the fuel budget.
    pub timeout: Duration,
    /// Linear memory budget summed over all the component's memories.
    pub memory_bytes: u64,
}

impl Default for AppLimits {
    fn default() -> Self {
        Self { timeout: DEFAULT_TIMEOUT, memory_bytes: u64::from(DEFAULT_MEMORY_MB) << 20 }
    }
}

/// A declared schedule (its grammar is checked by the engine's scheduler).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Name, unique within the app.
    pub name: String,
    /// `rate(...)` or `cron(...)`.
    pub expression: String,
    /// IANA time zone for cron expressions; UTC if absent.
    #[serde(default)]
    pub timezone: Option<String>,
    /// A disabled schedule never fires.
    #[serde(default)]
    pub disabled: bool,
}

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Machine name, `[a-z0-9_-]`, unique in a plugins directory.
    pub name: String,
    /// Human name.
    pub display_name: String,
    /// One-line description.
    pub description: String,
    /// Processor or integration.
    pub kind: AppKind,
    /// The component file, resolved against the manifest's directory.
    pub component: PathBuf,
    /// Limits per invocation.
    pub limits: AppLimits,
    /// JSON Schema 2020-12 of the installation config (checked to be a valid schema).
    pub config_schema: Option<Value>,
    /// Default channel subscriptions on the installation's agent.
    pub subscriptions: Vec<ChannelName>,
    /// Default schedules.
    pub schedules: Vec<ScheduleSpec>,
    /// Hosts outbound HTTP may reach ([`HostPattern`](crate::model::HostPattern)
    /// syntax: `name`, `name:port`, `*.suffix`, `[ipv6]`). Empty: none.
    pub allowed_hosts: Vec<String>,
    /// Whether the app may write to the channel that invoked it.
    pub allow_invoking_channel: bool,
}

/// What is wrong with a manifest.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {field}: {reason}")]
pub struct ManifestError {
    /// The manifest file.
    pub file: PathBuf,
    /// The field (dotted path), or `-` for the whole file.
    pub field: String,
    /// Why.
    pub reason: String,
}

/// The native manifest as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    display_name: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(rename = "type")]
    kind: AppKind,
    component: Option<String>,
    #[serde(default)]
    limits: RawLimits,
    config_schema: Option<Value>,
    config_schema_file: Option<String>,
    #[serde(default)]
    subscriptions: Vec<ChannelName>,
    #[serde(default)]
    schedules: Vec<ScheduleSpec>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
    #[serde(default)]
    allow_invoking_channel: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    timeout_ms: Option<u64>,
    memory_mb: Option<u32>,
}

/// Doover's per-app entry in `doover_config.json`.
#[derive(Deserialize)]
struct DooverApp {
    name: String,
    display_name: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    description: String,
    #[serde(rename = "type", default = "default_kind", deserialize_with = "kind_or_default")]
    kind: AppKind,
    #[serde(default, deserialize_with = "null_as_default")]
    lambda_config: DooverLambda,
    config_schema: Option<Value>,
    component: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    subscriptions: Vec<ChannelName>,
}

#[derive(Deserialize, Default)]
struct DooverLambda {
    #[serde(rename = "Timeout")]
    timeout: Option<u64>,
    #[serde(rename = "MemorySize")]
    memory_size: Option<u32>,
}

fn default_kind() -> AppKind {
    AppKind::Processor
}

fn kind_or_default<'de, D: serde::Deserializer<'de>>(d: D) -> Result<AppKind, D::Error> {
    Ok(Option::<AppKind>::deserialize(d)?.unwrap_or_else(default_kind))
}

impl Manifest {
    /// Load the manifest of the app in `dir` (`paddock.toml`, else `doover_config.json`).
    pub fn load_dir(dir: &Path) -> Result<Manifest, ManifestError> {
        let native = dir.join(MANIFEST_FILE);
        if native.exists() {
            return Manifest::load(&native);
        }
        let doover = dir.join(DOOVER_MANIFEST_FILE);
        if doover.exists() {
            return Manifest::load(&doover);
        }
        Err(ManifestError {
            file: dir.to_path_buf(),
            field: "-".into(),
            reason: format!("no {MANIFEST_FILE} or {DOOVER_MANIFEST_FILE} in this directory"),
        })
    }

    /// A manifest with every default, for a bare component file: named
    /// after the file, a processor, default limits, no config schema.
    pub fn for_component(component: PathBuf) -> Manifest {
        let stem = component.file_stem().and_then(|s| s.to_str()).unwrap_or("app");
        let name: String =
            stem.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
        Manifest {
            display_name: name.clone(),
            name,
            description: String::new(),
            kind: AppKind::Processor,
            component,
            limits: AppLimits::default(),
            config_schema: None,
            subscriptions: Vec::new(),
            schedules: Vec::new(),
            allowed_hosts: Vec::new(),
            allow_invoking_channel: false,
        }
    }

    /// Load one manifest file; the format follows the file's extension.
    pub fn load(file: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(file).map_err(|e| ManifestError {
            file: file.to_path_buf(),
            field: "-".into(),
            reason: format!("cannot read: {e}"),
        })?;
        Manifest::parse(&text, file)
    }

    /// Parse manifest `text` as if it were `file` (whose extension picks
    /// the format and whose directory is the app's). Files it names
    /// (component, schema) must lie inside that directory.
    pub fn parse(text: &str, file: &Path) -> Result<Manifest, ManifestError> {
        let err = |field: &str, reason: String| ManifestError { file: file.to_path_buf(), field: field.into(), reason };
        let dir = file.parent().unwrap_or(Path::new("."));
        if file.extension().is_some_and(|e| e == "json") {
            let value: Value = serde_json::from_str(text).map_err(|e| err("-", format!("not JSON: {e}")))?;
            Manifest::from_doover(value, dir).map_err(|(f, r)| err(&f, r))
        } else {
            let value: Value = toml::from_str(text).map_err(|e| {
                let line = e.span().map_or(0, |s| text[..s.start.min(text.len())].lines().count().max(1));
                err("-", format!("not TOML (line {line}): {}", e.message()))
            })?;
            Manifest::from_native(value, dir).map_err(|(f, r)| err(&f, r))
        }
    }

    fn from_native(value: Value, dir: &Path) -> Result<Manifest, (String, String)> {
        let raw: RawManifest = typed(value)?;
        let schema = match (raw.config_schema, raw.config_schema_file) {
            (Some(_), Some(_)) => {
                return Err(("config_schema_file".into(), "give config_schema or config_schema_file, not both".into()));
            }
            (Some(s), None) => Some(s),
            (None, Some(f)) => Some(read_schema_file(&app_file(dir, &f, "config_schema_file")?, &f)?),
            (None, None) => None,
        };
        let limits = limits(
            raw.limits.timeout_ms.map(Duration::from_millis),
            raw.limits.memory_mb,
            "limits.timeout_ms",
            "limits.memory_mb",
        )?;
        let component = raw.component.unwrap_or_else(|| default_component(&raw.name));
        Manifest {
            display_name: raw.display_name.unwrap_or_else(|| raw.name.clone()),
            name: raw.name,
            description: raw.description,
            kind: raw.kind,
            component: app_file(dir, &component, "component")?,
            limits,
            config_schema: schema,
            subscriptions: raw.subscriptions,
            schedules: raw.schedules,
            allowed_hosts: raw.allowed_hosts,
            allow_invoking_channel: raw.allow_invoking_channel,
        }
        .validated()
    }

    /// Doover's file is `{app_name: {...}}` (one or more apps, the first with
    /// a `lambda_config` or `type` is used) or the app object itself.
    fn from_doover(value: Value, dir: &Path) -> Result<Manifest, (String, String)> {
        let is_app =
            |v: &Value| v.get("name").is_some() && (v.get("lambda_config").is_some() || v.get("type").is_some());
        let (prefix, app) = if is_app(&value) {
            (String::new(), value)
        } else {
            let Value::Object(map) = value else {
                return Err(("-".into(), "expected a JSON object".into()));
            };
            map.into_iter()
                .find(|(_, v)| is_app(v))
                .map(|(k, v)| (format!("{k}."), v))
                .ok_or_else(|| ("-".to_string(), "no app entry with a name and lambda_config or type".to_string()))?
        };
        let raw: DooverApp = typed(app).map_err(|(f, r)| (format!("{prefix}{f}"), r))?;
        let timeout = raw.lambda_config.timeout.map(Duration::from_secs);
        let limits =
            limits(timeout, raw.lambda_config.memory_size, "lambda_config.Timeout", "lambda_config.MemorySize")
                .map_err(|(f, r)| (format!("{prefix}{f}"), r))?;
        let component = raw.component.unwrap_or_else(|| default_component(&raw.name));
        let component = app_file(dir, &component, "component").map_err(|(f, r)| (format!("{prefix}{f}"), r))?;
        Manifest {
            display_name: raw.display_name.unwrap_or_else(|| raw.name.clone()),
            name: raw.name,
            description: raw.description,
            kind: raw.kind,
            component,
            limits,
            config_schema: raw.config_schema,
            subscriptions: raw.subscriptions,
            schedules: Vec::new(),
            allowed_hosts: Vec::new(),
            allow_invoking_channel: false,
        }
        .validated()
        .map_err(|(f, r)| (format!("{prefix}{f}"), r))
    }

    fn validated(self) -> Result<Manifest, (String, String)> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(("name".into(), format!("{:?} must be 1-64 characters from [a-z0-9_-]", self.name)));
        }
        if let Some(schema) = &self.config_schema {
            check_schema(schema)?;
        }
        for (i, s) in self.schedules.iter().enumerate() {
            if !is_valid_key(&s.name) {
                return Err((format!("schedules[{i}].name"), format!("{:?} must match [a-zA-Z0-9_-]+", s.name)));
            }
            if let Err(e) = crate::model::ScheduleExpr::parse(&s.expression, s.timezone.as_deref()) {
                let field = if e.reason.starts_with("unknown time zone") { "timezone" } else { "expression" };
                return Err((format!("schedules[{i}].{field}"), e.reason));
            }
        }
        for (i, h) in self.allowed_hosts.iter().enumerate() {
            if let Err(e) = crate::model::HostPattern::parse(h) {
                return Err((format!("allowed_hosts[{i}]"), e.to_string()));
            }
        }
        Ok(self)
    }

    /// Validate an installation config against the schema, filling in
    /// top-level `default`s first. Returns every violation.
    pub fn validate_config(&self, config: &Value) -> Result<Value, Vec<String>> {
        let mut config = config.clone();
        let Some(schema) = &self.config_schema else {
            return if config.is_object() { Ok(config) } else { Err(vec!["config must be a JSON object".into()]) };
        };
        apply_defaults(schema, &mut config);
        let validator = jsonschema::draft202012::new(schema).map_err(|e| vec![format!("schema: {e}")])?;
        let errors: Vec<String> = validator
            .iter_errors(&config)
            .map(|e| {
                let path = e.instance_path().to_string();
                format!("{}: {e}", if path.is_empty() { "/" } else { &path })
            })
            .collect();
        if errors.is_empty() { Ok(config) } else { Err(errors) }
    }
}

/// The component file an app named `name` ships when the manifest names
/// none: what `cargo build` produces for a crate of that name.
pub fn default_component(name: &str) -> String {
    format!("{}.wasm", name.replace('-', "_"))
}

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let reason = e.into_inner().to_string();
        // serde reports a missing field at its parent; name the field itself.
        let missing = reason.strip_prefix("missing field `").and_then(|r| r.strip_suffix('`'));
        let field = match (path.as_str(), missing) {
            (".", Some(name)) => name.to_owned(),
            (".", None) => "-".to_owned(),
            (parent, Some(name)) => format!("{parent}.{name}"),
            (parent, None) => parent.to_owned(),
        };
        (field, reason)
    })
}

fn limits(
    timeout: Option<Duration>,
    memory_mb: Option<u32>,
    timeout_field: &str,
    memory_field: &str,
) -> Result<AppLimits, (String, String)> {
    let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
    if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&timeout) {
        return Err((timeout_field.into(), format!("{timeout:?} is outside {MIN_TIMEOUT:?}..={MAX_TIMEOUT:?}")));
    }
    let memory_mb = memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
    if !(MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&memory_mb) {
        return Err((memory_field.into(), format!("{memory_mb} MB is outside {MIN_MEMORY_MB}..={MAX_MEMORY_MB} MB")));
    }
    Ok(AppLimits { timeout, memory_bytes: u64::from(memory_mb) << 20 })
}

/// `name` (a file the manifest names) inside the app directory `dir`: a
/// relative path of plain components, none of them a symlink, so an app
/// can neither read nor overwrite anything outside its own directory.
fn app_file(dir: &Path, name: &str, field: &str) -> Result<PathBuf, (String, String)> {
    let bad = |why: &str| Err((field.to_owned(), format!("{name:?} {why}; name a file inside the app's directory")));
    let rel = Path::new(name);
    if name.is_empty() || !rel.components().all(|c| matches!(c, std::path::Component::Normal(_))) {
        return bad(if rel.is_absolute() { "is an absolute path" } else { "leaves the app's directory" });
    }
    let mut path = dir.to_path_buf();
    for part in rel.components() {
        path.push(part);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return bad("is (or passes through) a symbolic link");
        }
    }
    Ok(path)
}

fn read_schema_file(path: &Path, name: &str) -> Result<Value, (String, String)> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        // The kind only: the OS message could name the server's path.
        let why = if e.kind() == std::io::ErrorKind::NotFound { "no such file".into() } else { e.kind().to_string() };
        ("config_schema_file".to_string(), format!("cannot read {name:?}: {why}"))
    })?;
    serde_json::from_str(&text).map_err(|e| ("config_schema_file".to_string(), format!("{name:?} is not JSON: {e}")))
}

fn check_schema(schema: &Value) -> Result<(), (String, String)> {
    if !schema.is_object() {
        return Err(("config_schema".into(), "must be a JSON Schema object".into()));
    }
    jsonschema::draft202012::new(schema)
        .map(|_| ())
        .map_err(|e| ("config_schema".into(), format!("not a valid JSON Schema: {e}")))
}

/// Fill missing top-level properties from their schema `default`.
fn apply_defaults(schema: &Value, config: &mut Value) {
    let (Some(props), Value::Object(cfg)) = (schema.get("properties").and_then(Value::as_object), config) else {
        return;
    };
    for (key, prop) in props {
        if let (false, Some(default)) = (cfg.contains_key(key), prop.get("default")) {
            cfg.insert(key.clone(), default.clone());
        }
    }
}
