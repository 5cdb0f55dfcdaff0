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

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const DAEMON_START: Duration = Duration::from_secs(60);
/// schemathesis is given 90 s (`--max-time`); this is the backstop.
const FUZZ_LIMIT: Duration = Duration::from_secs(150);
const SCHEMATHESIS_VERSION: &str = "4.32.5";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A running `shoal daemon`: killed by PID when dropped, also when a test fails.
struct Daemon {
    child: Child,
    data_dir: PathBuf,
    log: PathBuf,
    /// `127.0.0.1:PORT` of its HTTP API, from `daemon.json`.
    api: String,
    token: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts a daemon on `data_dir` (API and libp2p on loopback ports chosen by
    /// the OS; no config file, mDNS, UPnP or bootstrap nodes) and waits, bounded,
    /// until it has written `daemon.json` and `api.token`.
    fn start(root: &Path, name: &str) -> Daemon {
        let data_dir = root.join(name);
        let config_home = root.join(format!("{name}-config"));
        std::fs::create_dir_all(&data_dir).expect("create data dir");
        std::fs::create_dir_all(&config_home).expect("create config dir");
        let log = root.join(format!("{name}.log"));
        let out = File::create(&log).expect("create daemon log");
        let err = out.try_clone().expect("clone log handle");
        let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["daemon", "--api", "127.0.0.1:0"])
            .current_dir(root)
            .env("SHOAL_DATA_DIR", &data_dir)
            // No user config file may change the daemon under test.
            .env("XDG_CONFIG_HOME", &config_home)
            .env("SHOAL_MDNS", "off")
            .env("SHOAL_UPNP", "off")
            .env("SHOAL_LISTEN", "127.0.0.1:0")
            .env("SHOAL_DHT_MODE", "server")
            .env_remove("SHOAL_BOOTSTRAP")
            .env_remove("SHOAL_API")
            .env_remove("SHOAL_UPLOAD_LIMIT")
            .env_remove("SHOAL_DOWNLOAD_LIMIT")
            .env_remove("SHOAL_MAX_CONNECTIONS")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("the shoal binary starts");
        let mut daemon = Daemon {
            child,
            data_dir,
            log,
            api: String::new(),
            token: String::new(),
        };
        daemon.wait_ready();
        daemon
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + DAEMON_START;
        let info_path = self.data_dir.join("daemon.json");
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "shoal daemon exited ({status}) before it was ready; its output:\n{}",
                    self.output()
                );
            }
            // daemon.json is written once the API listens; parse errors mean it
            // is being written right now.
            if let Some(api) = std::fs::read_to_string(&info_path)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| {
                    assert_eq!(
                        v["pid"].as_u64(),
                        Some(u64::from(self.child.id())),
                        "daemon.json names another process: {v}"
                    );
                    v["api"].as_str().map(str::to_owned)
                })
            {
                let token = std::fs::read_to_string(self.data_dir.join("api.token"))
                    .expect("api.token exists once daemon.json does");
                self.api = api;
                self.token = token.trim().to_owned();
                assert!(
                    self.api.starts_with("127.0.0.1:"),
                    "the API must listen on loopback, daemon.json says {}",
                    self.api
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "shoal daemon wrote no daemon.json in {} within {DAEMON_START:?}; its output:\n{}",
                self.data_dir.display(),
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Runs `cmd` with its output in `log`, killing it if it outlives `limit`.
fn run_bounded(mut cmd: Command, log: &Path, limit: Duration) -> (Option<ExitStatus>, String) {
    let out = File::create(log).expect("create log");
    let err = out.try_clone().expect("clone log handle");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait().expect("wait for child") {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    (status, std::fs::read_to_string(log).unwrap_or_default())
}

#[test]
fn api_answers_schemathesis_generated_requests_without_server_errors() {
    if std::env::var("SHOAL_SKIP_SCHEMATHESIS").as_deref() == Ok("1") {
        eprintln!("skipped: SHOAL_SKIP_SCHEMATHESIS=1");
        return;
    }
    match Command::new("schemathesis").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => panic!(
            "the API schema test needs schemathesis on PATH: run `pip install schemathesis=={SCHEMATHESIS_VERSION}` (as .ci/run does), or set SHOAL_SKIP_SCHEMATHESIS=1 to skip this test"
        ),
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

    let daemon = Daemon::start(root, "d");

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
        .args(["--max-time", "90"])
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
        daemon.child.try_wait().expect("wait for daemon").is_none(),
        "the daemon exited during the run; its output:\n{}",
        daemon.output()
    );
}
