//! Property-based API testing with schemathesis against the real binary: JumpCloud's own
//! reference specs (a copy in `tests/reference/`, as a JumpCloud client would call Cairn) and Cairn's
//! `/api/openapi.json`. No generated request may get a server error. Needs `schemathesis`
//! (installed by `.ci/run`); without it the test says it is skipped.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Db, Server, KEY};

fn reference(name: &str) -> Option<PathBuf> {
    // A copy lives with the tests (MIT, from JumpCloud's public SDK specs; see its LICENSE),
    // so a clone anywhere runs them.
    Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference").join(name)).filter(|p| p.exists())
}

fn run(schema: &str, base: &str) {
    // Its example database goes to a directory of its own, not the source tree.
    let scratch = tempfile::tempdir().unwrap();
    let out = Command::new("schemathesis")
        .current_dir(scratch.path())
        .args(["run", schema, "--url", base, "-H", &format!("x-api-key: {KEY}")])
        .args(["-c", "not_a_server_error", "-n", "10", "--generation-deterministic", "--request-timeout", "10"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .output()
        .expect("run schemathesis");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures for {schema}:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn jumpcloud_reference_specs_and_cairns_own_document_get_no_server_error() {
    if Command::new("schemathesis").arg("--version").output().is_err() {
        cairn_store::testing::skip("schemathesis runs", "schemathesis is not installed (pip install schemathesis)");
        return;
    }
    for db in Db::all("schemathesis on PostgreSQL") {
        let s = Server::start(&db);
        for (spec, base) in [
            ("jumpcloud-v1-subset.json", "/api"),
            ("jumpcloud-v1-resources.json", "/api"),
            ("jumpcloud-v2-subset.json", "/api/v2"),
            ("jumpcloud-v2-resources.json", "/api/v2"),
        ] {
            match reference(spec) {
                Some(p) => run(p.to_str().unwrap(), &format!("{}{base}", s.base)),
                None => cairn_store::testing::skip(
                    "schemathesis with JumpCloud's specs",
                    "crates/cairn/tests/reference lacks the spec",
                ),
            }
        }
        run(&format!("{}/api/openapi.json", s.base), &format!("{}/api", s.base));
    }
}
