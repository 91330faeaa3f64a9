//! `paddock schema`: the config JSON Schema an app's component exports.

use std::path::Path;

use anyhow::{Context as _, bail};

use crate::manifest::{MANIFEST_FILE, Manifest};
use crate::runtime::{Runtime, RuntimeConfig};

pub(super) async fn run(app: &Path, write: bool, config: RuntimeConfig) -> anyhow::Result<u8> {
    let runtime = Runtime::new(config)?;
    let manifest_path = app.join(MANIFEST_FILE);
    let text =
        std::fs::read_to_string(&manifest_path).with_context(|| format!("reading {}", manifest_path.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {}", manifest_path.display()))?;
    // Only the component is needed: a missing or stale schema file must not
    // stop us from regenerating it.
    let name = table.get("name").and_then(|v| v.as_str()).unwrap_or("app");
    let default_component = crate::manifest::default_component(name);
    let component = table.get("component").and_then(|v| v.as_str()).unwrap_or(&default_component);
    let manifest = Manifest::for_component(app.join(component));
    let loaded = runtime.load_manifest(manifest).await?;
    let Some(schema) = loaded.exported_schema else { bail!("the component exports no config schema") };
    if !write {
        super::emit(&format!("{schema}\n"))?;
        return Ok(0);
    }
    let Some(file) = table.get("config_schema_file").and_then(|v| v.as_str()) else {
        bail!("{}: set config_schema_file = \"config.schema.json\" to say where to write", manifest_path.display());
    };
    let out = app.join(file);
    std::fs::write(&out, format!("{schema}\n")).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(0)
}
