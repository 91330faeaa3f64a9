//! Doover's golden aggregate-merge cases (`../shared/conformance/doover/diffs.json`,
//! 616 cases generated from pydoover). The file holds two record shapes:
//! `{old, new, diff, do_delete, applied}` (392) and `{op: "apply", data, diff,
//! do_delete, result}` (224). Either way, merging `diff` into the old state
//! with `do_delete` must give the expected state. (`new` is the input of the
//! inverse operation, diff generation, which Paddock does not implement.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: failures should stop loudly")]

use paddock::model::{apply_diff_in_place, apply_diff_with};
use serde_json::Value;

#[test]
fn every_doover_merge_case_passes() {
    let path = paddock_tests::repo().join("../shared/conformance/doover/diffs.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cases.len(), 616, "the golden file changed");
    let mut checked = 0;
    let failures: Vec<String> = cases
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let (old, want) = match c.get("op").and_then(Value::as_str) {
                None => (&c["old"], &c["applied"]),
                Some("apply") => (&c["data"], &c["result"]),
                Some(op) => return Some(format!("case {i}: unknown op {op:?}")),
            };
            let do_delete = c["do_delete"].as_bool().unwrap_or(true);
            checked += 1;
            let got = apply_diff_with(old, &c["diff"], do_delete);
            if &got != want {
                return Some(format!(
                    "case {i}: old {old} diff {} (do_delete {do_delete}) -> {got}, want {want}",
                    c["diff"]
                ));
            }
            // The in-place merge the runtime uses for its overlays (delete mode).
            let mut in_place = old.clone();
            apply_diff_in_place(&mut in_place, &c["diff"]);
            (do_delete && &in_place != want).then(|| format!("case {i}: in-place merge gives {in_place}, want {want}"))
        })
        .collect();
    assert!(failures.is_empty(), "{} of 616 cases fail:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(checked, 616);
}
