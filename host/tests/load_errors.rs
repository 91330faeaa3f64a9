//! Components that cannot be loaded get a typed error naming why. Inline
//! WAT, so no guest toolchain is needed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: failures should stop loudly"
)]

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
