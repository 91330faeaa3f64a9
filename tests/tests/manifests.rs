//! Golden manifest tests: each directory under `tests/fixtures/manifests`
//! holds a manifest and `expected.txt`, the exact error (file path shown as
//! `<dir>`) or, for a valid manifest, a summary of what was parsed.
//! Regenerate with `PADDOCK_UPDATE_GOLDEN=1 cargo test --test manifests`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: failures should stop loudly")]

use std::path::Path;

use paddock::manifest::Manifest;

fn describe(dir: &Path) -> String {
    match Manifest::load_dir(dir) {
        Ok(m) => format!(
            "ok: name={} display_name={:?} kind={:?} timeout={:?} memory={} MiB schema={} component={}\n",
            m.name,
            m.display_name,
            m.kind,
            m.limits.timeout,
            m.limits.memory_bytes >> 20,
            m.config_schema.is_some(),
            m.component.file_name().and_then(|f| f.to_str()).unwrap_or("?"),
        ),
        Err(e) => format!("{}\n", e.to_string().replace(&dir.display().to_string(), "<dir>")),
    }
}

#[test]
fn manifest_errors_name_the_file_the_field_and_the_reason() {
    let root = paddock_tests::repo().join("tests/fixtures/manifests");
    let update = std::env::var_os("PADDOCK_UPDATE_GOLDEN").is_some();
    let mut dirs: Vec<_> =
        std::fs::read_dir(&root).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    dirs.sort();
    assert!(dirs.len() >= 13, "fixtures missing under {}", root.display());
    let mut mismatches = Vec::new();
    for dir in dirs {
        let got = describe(&dir);
        let expected_file = dir.join("expected.txt");
        if update {
            std::fs::write(&expected_file, &got).unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        let want = std::fs::read_to_string(&expected_file).unwrap_or_default();
        if got != want {
            mismatches.push(format!("{}:\n  got:  {got}  want: {want}", dir.display()));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn doover_config_carries_over_limits_and_schema_and_validates_config() {
    let dir = paddock_tests::repo().join("tests/fixtures/manifests/doover-ok");
    let m = paddock_tests::must(Manifest::load_dir(&dir));
    assert_eq!(m.limits.timeout.as_secs(), 30);
    assert_eq!(m.limits.memory_bytes, 256 << 20);
    assert_eq!(
        paddock_tests::must(m.validate_config(&serde_json::json!({}))),
        serde_json::json!({"max_runtime_min": 30})
    );
    let errors = m.validate_config(&serde_json::json!({"max_runtime_min": 0, "extra": true})).unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
}
