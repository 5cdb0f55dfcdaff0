//! The web UI end to end: two real `shoal daemon` processes on 127.0.0.1 (mDNS
//! and UPnP off), driven through their web pages by headless Chromium
//! (`e2e/ui.mjs`, playwright-core). A's page shares a generated file, B's page
//! downloads it from the ticket shown on A's page; this test then checks the
//! download byte for byte and that the screenshot was saved.
//!
//! Needs node 20+, `e2e/node_modules/playwright-core` (`npm ci --prefix e2e`) and
//! `/usr/bin/chromium` (`apt-get install chromium`). Without them the test fails
//! and says so, unless `SHOAL_SKIP_BROWSER_TESTS=1`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const DAEMON_START: Duration = Duration::from_secs(60);
/// The browser script bounds itself at 170 s; this is the backstop.
const SCRIPT_LIMIT: Duration = Duration::from_secs(200);
const CHROMIUM: &str = "/usr/bin/chromium";

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
            .env_remove("SHOAL_CONFIG")
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

    fn ui_url(&self) -> String {
        format!("http://{}/#token={}", self.api, self.token)
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

/// `None` if the browser tools are there; the reason otherwise.
fn missing_browser_tools(e2e: &Path) -> Option<String> {
    let node = Command::new("node").arg("--version").output();
    let mut missing = Vec::new();
    match node {
        Ok(o) if o.status.success() => {
            let v = String::from_utf8_lossy(&o.stdout);
            let major: u32 = v
                .trim()
                .trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            if major < 20 {
                missing.push(format!("node 20 or newer (found {})", v.trim()));
            }
        }
        _ => missing.push("node (apt-get install nodejs npm)".to_owned()),
    }
    if !e2e
        .join("node_modules/playwright-core/package.json")
        .is_file()
    {
        missing.push(format!(
            "playwright-core ({} is missing: run `npm ci --prefix e2e` at the repository root)",
            e2e.join("node_modules/playwright-core").display()
        ));
    }
    if !Path::new(CHROMIUM).is_file() {
        missing.push(format!("{CHROMIUM} (apt-get install chromium)"));
    }
    if missing.is_empty() {
        None
    } else {
        Some(format!(
            "the web UI test needs {}; install them (as .ci/run does) or set SHOAL_SKIP_BROWSER_TESTS=1 to skip this test",
            missing.join(", ")
        ))
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), so that no two pieces are alike.
fn sample_bytes(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

#[test]
fn web_ui_shares_on_one_daemon_and_downloads_on_another_in_headless_chromium() {
    if std::env::var("SHOAL_SKIP_BROWSER_TESTS").as_deref() == Ok("1") {
        eprintln!("skipped: SHOAL_SKIP_BROWSER_TESTS=1");
        return;
    }
    let e2e = repo_root().join("e2e");
    if let Some(why) = missing_browser_tools(&e2e) {
        panic!("{why}");
    }

    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    let file = root.join("ui-sample.bin");
    let content = sample_bytes(3 * 1024 * 1024 + 12_345);
    std::fs::write(&file, &content).expect("write the sample file");
    let output = root.join("b-downloads");
    std::fs::create_dir_all(&output).expect("create output dir");
    let artifacts = std::env::var_os("SHOAL_E2E_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-web-ui"));
    let screenshot = artifacts.join("transfers-b.png");
    let _ = std::fs::remove_file(&screenshot);

    let a = Daemon::start(root, "a");
    let b = Daemon::start(root, "b");

    let mut node = Command::new("node");
    node.arg(e2e.join("ui.mjs"))
        .current_dir(&e2e)
        .env("SHOAL_UI_A", a.ui_url())
        .env("SHOAL_UI_B", b.ui_url())
        .env("SHOAL_E2E_FILE", &file)
        .env("SHOAL_E2E_OUTPUT", &output)
        .env("SHOAL_E2E_ARTIFACTS", &artifacts)
        .env("CHROMIUM", CHROMIUM);
    let (status, log) = run_bounded(node, &root.join("ui.log"), SCRIPT_LIMIT);
    println!("{log}");
    let explain = || {
        format!(
            "browser test log:\n{log}\n--- daemon A:\n{}\n--- daemon B:\n{}\nscreenshots in {}",
            a.output(),
            b.output(),
            artifacts.display()
        )
    };
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!("e2e/ui.mjs failed ({s}); {}", explain()),
        None => panic!(
            "e2e/ui.mjs did not finish within {SCRIPT_LIMIT:?}; {}",
            explain()
        ),
    }

    let downloaded = output.join("ui-sample.bin");
    let got = std::fs::read(&downloaded).unwrap_or_else(|e| {
        let listing: Vec<_> = std::fs::read_dir(&output)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        panic!(
            "the UI showed the download complete but {} cannot be read ({e}); {} holds {listing:?}; {}",
            downloaded.display(),
            output.display(),
            explain()
        )
    });
    assert!(
        got == content,
        "the downloaded file differs from the shared one ({} bytes, expected {})",
        got.len(),
        content.len()
    );
    let shot = std::fs::metadata(&screenshot)
        .unwrap_or_else(|e| panic!("no screenshot at {}: {e}", screenshot.display()));
    assert!(
        shot.len() > 1000,
        "the screenshot {} is empty",
        screenshot.display()
    );
}
