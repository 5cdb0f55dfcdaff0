//! Helpers shared by the CLI's process tests: a hermetic `shoal` command, a
//! guard for child processes with line readers, a `shoal daemon` started in a
//! temporary data dir, a bounded runner for helper tools, and test data.
//!
//! Every child started here is killed (SIGKILL) by its own PID when its guard
//! drops, also when a test fails; every wait is bounded.

// Each test binary compiles this module with `mod support;` and uses only a
// subset of it; the rest would warn as dead code in that binary.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a `shoal daemon` may take to write `daemon.json`.
pub const DAEMON_START: Duration = Duration::from_secs(60);

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The `shoal` binary on data dir `data_dir`, isolated from the caller's
/// environment: loopback listeners on OS-chosen ports, mDNS and UPnP off, no
/// bootstrap nodes, no daemon API or rate limits from the environment, and the
/// user's own config file (~/.config/shoal/config.toml) replaced by an empty
/// config home beside the data dir. Stdin is closed.
pub fn shoal(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.env("SHOAL_DATA_DIR", data_dir)
        .env("SHOAL_MDNS", "off")
        .env("SHOAL_UPNP", "off")
        .env("SHOAL_LISTEN", "127.0.0.1:0")
        .env("SHOAL_DHT_MODE", "server")
        .env_remove("SHOAL_BOOTSTRAP")
        .env_remove("SHOAL_NO_DAEMON")
        .env_remove("SHOAL_API")
        .env_remove("SHOAL_UPLOAD_LIMIT")
        .env_remove("SHOAL_DOWNLOAD_LIMIT")
        .env_remove("SHOAL_MAX_CONNECTIONS")
        .env_remove("SHOAL_CONFIG")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null());
    if let Some(parent) = data_dir.parent() {
        cmd.env("XDG_CONFIG_HOME", parent.join("config"));
    }
    cmd
}

/// The lines read from `r`, on a channel (closed at end of input).
pub fn lines<R: std::io::Read + Send + 'static>(r: R) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { return };
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    rx
}

/// A running child: killed (SIGKILL) by PID when dropped. Its stdout and
/// stderr lines arrive on channels; every wait on it is bounded by `wait`.
pub struct Proc {
    child: Child,
    pub out: mpsc::Receiver<String>,
    pub err: mpsc::Receiver<String>,
    wait: Duration,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `cmd` with piped stdout and stderr; waits on it are bounded by `wait`.
    pub fn spawn(mut cmd: Command, wait: Duration) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{cmd:?} does not start: {e}"));
        let out = lines(child.stdout.take().expect("stdout"));
        let err = lines(child.stderr.take().expect("stderr"));
        Proc {
            child,
            out,
            err,
            wait,
        }
    }

    /// The child's PID.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line; panics (with the stderr so far) if none comes in time.
    pub fn line(&self) -> String {
        self.out.recv_timeout(self.wait).unwrap_or_else(|_| {
            panic!(
                "no stdout line within {:?}; stderr: {}",
                self.wait,
                self.drain_err()
            )
        })
    }

    /// The stderr lines that have arrived so far.
    pub fn drain_err(&self) -> String {
        self.err.try_iter().collect::<Vec<_>>().join("\n")
    }

    /// Waits for a stderr JSON progress line with `done >= at`.
    pub fn wait_progress(&self, at: u64) {
        let deadline = Instant::now() + self.wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = self
                .err
                .recv_timeout(left)
                .expect("progress reached the mark in time");
            if let Ok(v) = serde_json::from_str::<Value>(&l) {
                if v["event"] == "progress" && v["done"].as_u64().unwrap_or(0) >= at {
                    return;
                }
            }
        }
    }

    /// Waits (bounded) for the exit; panics with the stderr so far past the bound.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + self.wait;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit within {:?}; stderr: {}",
                self.wait,
                self.drain_err()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the exit (bounded) and returns (status, stdout, stderr): the
    /// lines not read yet, joined by newlines.
    pub fn finish_status(mut self) -> (ExitStatus, String, String) {
        let status = self.wait_exit();
        let out: Vec<String> = self.out.iter().collect();
        let err: Vec<String> = self.err.iter().collect();
        (status, out.join("\n"), err.join("\n"))
    }

    /// Waits for the exit (bounded) and returns (success, stdout, stderr).
    pub fn finish(self) -> (bool, String, String) {
        let (status, out, err) = self.finish_status();
        (status.success(), out, err)
    }
}

/// A running `shoal daemon` (API on 127.0.0.1, port chosen by the OS), killed
/// by PID when dropped, also when a test fails. Its stdout and stderr go to a
/// log file beside its data dir.
pub struct Daemon {
    child: Child,
    pub data_dir: PathBuf,
    log: PathBuf,
    /// `127.0.0.1:PORT` of its HTTP API, from `daemon.json`.
    pub api: String,
    /// The API's bearer token, from `api.token`.
    pub token: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts a daemon on `data_dir` (a [`shoal`] command, with `env` added;
    /// working directory and log `DATA_DIR.log` in the data dir's parent) and
    /// waits, bounded by [`DAEMON_START`], until it has written `daemon.json`
    /// naming its own PID and `api.token`.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_on(data_dir, "127.0.0.1:0", env)
    }

    /// [`Daemon::start`] with the API on `api` (`127.0.0.1:PORT`).
    pub fn start_on(data_dir: &Path, api: &str, env: &[(&str, &str)]) -> Daemon {
        std::fs::create_dir_all(data_dir).expect("create data dir");
        let parent = data_dir.parent().expect("the data dir has a parent");
        std::fs::create_dir_all(parent.join("config")).expect("create config dir");
        let log = data_dir.with_extension("log");
        let out = File::create(&log).expect("create daemon log");
        let err = out.try_clone().expect("clone log handle");
        let mut cmd = shoal(data_dir);
        cmd.args(["daemon", "--api", api])
            .current_dir(parent)
            .stdout(out)
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("the shoal binary starts");
        let mut daemon = Daemon {
            child,
            data_dir: data_dir.to_path_buf(),
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
            // is being written right now, and another pid that it is the one a
            // killed daemon left (this one writes its own once it listens).
            if let Some(api) = std::fs::read_to_string(&info_path)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .filter(|v| v["pid"].as_u64() == Some(u64::from(self.child.id())))
                .and_then(|v| v["api"].as_str().map(str::to_owned))
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

    /// The web UI's address with this start's token in the fragment.
    pub fn ui_url(&self) -> String {
        format!("http://{}/#token={}", self.api, self.token)
    }

    /// Whether the daemon process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("wait for daemon").is_none()
    }

    /// What the daemon has printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Runs `cmd` with its output in `log`, killing it if it outlives `limit`.
/// Returns its status (`None` if it was killed) and its output.
pub fn run_bounded(mut cmd: Command, log: &Path, limit: Duration) -> (Option<ExitStatus>, String) {
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

/// `len` pseudo-random bytes from the BLAKE3 XOF of `seed`: no two pieces alike.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof();
    let mut v = vec![0u8; len];
    x.fill(&mut v);
    v
}

/// Every file (not folder) below `dir`, recursively; empty if `dir` is missing.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                v.extend(files_under(&p));
            } else {
                v.push(p);
            }
        }
    }
    v
}

/// `len` deterministic pseudo-random bytes (xorshift64* from `seed`), so that
/// failures reproduce and no two pieces are alike.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}
