//! The HTTP API against its own OpenAPI document: schemathesis generates
//! requests for every route of `GET /api/v1/openapi.json` (valid and invalid
//! bodies, ids and parameters) against a real `shoal daemon` on 127.0.0.1, and
//! fails on any 5xx answer or broken connection (`--checks not_a_server_error`).
//!
//! The daemon's data dir is a temp dir; absolute paths in generated bodies are
//! moved into a sandbox folder by `e2e/schemathesis_hooks.py`, so the fuzzer
//! cannot make the daemon index or write outside the test's folders.
//!
//! Needs `schemathesis` (`pip install schemathesis==4.32.5`); without it the test
//! fails and says so, unless `SHOAL_SKIP_SCHEMATHESIS=1`.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{repo_root, run_bounded, Daemon};

/// schemathesis is given 60 s (`--max-time`); this is the backstop.
const FUZZ_LIMIT: Duration = Duration::from_secs(120);
const SCHEMATHESIS_VERSION: &str = "4.32.5";

#[test]
fn api_answers_schemathesis_generated_requests_without_server_errors() {
    let install = format!("pip install schemathesis=={SCHEMATHESIS_VERSION}; ./test.sh does");
    if !shoal_testkit::can_run(
        "api_answers_schemathesis_generated_requests_without_server_errors",
        shoal_testkit::skip_requested("SHOAL_SKIP_SCHEMATHESIS")
            .or_else(|| shoal_testkit::program("schemathesis", &install)),
    ) {
        return;
    }
    let hooks = repo_root().join("e2e/schemathesis_hooks.py");
    assert!(hooks.is_file(), "{} is missing", hooks.display());

    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    // What generated absolute paths point into: a file and a small folder, so
    // that some generated shares and downloads succeed.
    let sandbox = root.join("sandbox");
    std::fs::create_dir_all(sandbox.join("folder")).expect("create sandbox");
    std::fs::write(sandbox.join("file.txt"), b"shoal fuzz sample\n").expect("write sample");
    std::fs::write(sandbox.join("folder/inner.txt"), b"inner\n").expect("write sample");

    let daemon = Daemon::start(&root.join("d"), &[]);

    let mut st = Command::new("schemathesis");
    st.arg("run")
        .arg(format!("http://{}/api/v1/openapi.json", daemon.api))
        .args([
            "--header",
            &format!("Authorization: Bearer {}", daemon.token),
        ])
        .args(["--checks", "not_a_server_error"])
        // The event stream never ends by design: a request to it cannot finish.
        .args(["--exclude-path", "/api/v1/events"])
        .args(["--max-examples", "30"])
        .args(["--max-time", "60"])
        // Slow generation on a loaded machine is not a finding about the API.
        .args(["--suppress-health-check", "too_slow,filter_too_much"])
        .args(["--request-timeout", "20"])
        .args(["--workers", "1"])
        .args(["--seed", "20261122"])
        .current_dir(root)
        .env("SCHEMATHESIS_HOOKS", &hooks)
        .env("SHOAL_FUZZ_SANDBOX", &sandbox)
        .env("NO_COLOR", "1");
    let (status, log) = run_bounded(st, &root.join("schemathesis.log"), FUZZ_LIMIT);
    println!("{log}");
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!(
            "schemathesis found server errors or could not run ({s}); its report is above; the daemon's output:\n{}",
            daemon.output()
        ),
        None => panic!(
            "schemathesis did not finish within {FUZZ_LIMIT:?}; the daemon's output:\n{}",
            daemon.output()
        ),
    }
    // The daemon survived the whole run.
    let mut daemon = daemon;
    assert!(
        daemon.is_running(),
        "the daemon exited during the run; its output:\n{}",
        daemon.output()
    );
}
