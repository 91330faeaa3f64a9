//! Components that cannot be loaded get a typed error naming why. Inline
//! WAT, so no guest toolchain is needed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: failures should stop loudly")]

use std::path::PathBuf;

use paddock::manifest::Manifest;
use paddock::runtime::{LoadError, Runtime, RuntimeConfig};

fn manifest() -> Manifest {
    Manifest::for_component(PathBuf::from("inline.wasm"))
}

fn rt() -> Runtime {
    Runtime::new(RuntimeConfig::default()).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn garbage_and_core_modules_are_not_components() {
    let err = rt().load(manifest(), b"not wasm at all").await.unwrap_err();
    assert!(matches!(err, LoadError::Compile { .. }), "{err}");
    let core = wat::parse_str("(module (func (export \"run\")))").unwrap_or_else(|e| panic!("{e}"));
    let err = rt().load(manifest(), &core).await.unwrap_err();
    assert!(matches!(err, LoadError::Compile { .. }), "{err}");
}

#[tokio::test]
async fn a_component_without_the_handler_export_does_not_fit_the_world() {
    let component = wat::parse_str(
        r#"(component
            (core module $m (func (export "run")))
            (core instance $i (instantiate $m))
            (func (export "run") (canon lift (core func $i "run"))))"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = rt().load(manifest(), &component).await.unwrap_err();
    match err {
        LoadError::Link { reason, .. } => {
            assert!(reason.contains("paddock:app/handler"), "{reason}")
        }
        other => panic!("expected a link error, got {other}"),
    }
}

#[tokio::test]
async fn a_component_importing_something_unknown_is_refused() {
    let component = wat::parse_str(
        r#"(component
            (import "evil:net/raw-socket" (instance (export "open" (func))))
        )"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = rt().load(manifest(), &component).await.unwrap_err();
    match err {
        LoadError::Link { reason, .. } => {
            assert!(reason.contains("evil:net/raw-socket"), "{reason}")
        }
        other => panic!("expected a link error, got {other}"),
    }
}

#[tokio::test]
async fn compiled_components_are_cached_by_digest_and_engine() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = RuntimeConfig { cache_dir: Some(dir.path().to_path_buf()), ..RuntimeConfig::default() };
    let rt = Runtime::new(config).unwrap_or_else(|e| panic!("{e}"));
    let app = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/tank-level");
    let first = rt.load_dir(&app).await.unwrap_or_else(|e| panic!("{e}"));
    let cached: Vec<_> = std::fs::read_dir(dir.path()).unwrap_or_else(|e| panic!("{e}")).flatten().collect();
    assert_eq!(cached.len(), 1, "one artefact per component");
    let name = cached[0].file_name().to_string_lossy().into_owned();
    assert!(name.starts_with(&first.digest) && name.ends_with(".cwasm"), "{name}");
    let second = rt.load_dir(&app).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.hooks, second.hooks);

    // A corrupt artefact is detected and replaced, not trusted.
    std::fs::write(cached[0].path(), b"garbage").unwrap_or_else(|e| panic!("{e}"));
    let third = rt.load_dir(&app).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.hooks, third.hooks);
    assert!(std::fs::metadata(cached[0].path()).map(|m| m.len() > 1000).unwrap_or(false));
}
