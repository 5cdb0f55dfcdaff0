//! The CLI as a client of `shoal daemon` (docs/api.md): real daemon processes
//! on 127.0.0.1 (port 0, mDNS and UPnP off) with temporary data dirs, driven by
//! the real `shoal` binary. Every daemon is killed by PID when its guard drops;
//! every wait is bounded.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{data, shoal, Daemon, Proc};

const WAIT: Duration = Duration::from_secs(60);

/// Runs a command to its end, bounded by [`WAIT`] (killed past it).
fn run(mut cmd: Command) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the shoal binary starts");
    let out = drain(child.stdout.take().expect("stdout"));
    let err = drain(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not exit within {WAIT:?}; stderr: {}",
                String::from_utf8_lossy(&err.recv().unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.recv_timeout(WAIT).unwrap_or_default(),
        stderr: err.recv_timeout(WAIT).unwrap_or_default(),
    }
}

fn drain<R: std::io::Read + Send + 'static>(mut r: R) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `shoal ARGS` on a data dir and expects success; returns stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let mut cmd = shoal(dir);
    cmd.args(args);
    let out = run(cmd);
    assert!(
        out.status.success(),
        "shoal {args:?} failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn json(dir: &Path, args: &[&str]) -> Value {
    let out = ok(dir, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("shoal {args:?} printed {out:?}: {e}"))
}

fn assert_fails_with(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected a failure, got {out:?}");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn commands_needing_a_daemon_fail_clearly_without_one() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("data");
    for args in [
        vec!["transfers"],
        vec!["peers"],
        vec!["status", "--json"],
        vec!["pause", "aaaaaaaa"],
        vec!["resume", "aaaaaaaa"],
        vec!["cancel", "aaaaaaaa"],
        vec!["ui"],
    ] {
        let mut cmd = shoal(&dir);
        cmd.args(&args);
        let out = run(cmd);
        assert_fails_with(
            &out,
            &format!(
                "no shoal daemon runs for {}; start one with `shoal daemon`",
                dir.display()
            ),
        );
        assert!(out.stdout.is_empty(), "{args:?} printed on stdout");
    }
}

#[test]
fn stale_daemon_file_falls_back_to_the_foreground() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("data");
    std::fs::create_dir_all(&dir).expect("mkdir");
    // The pid of a process that has exited: what a killed daemon leaves behind.
    let mut gone = Command::new("true").spawn().expect("spawn true");
    let pid = gone.id();
    gone.wait().expect("wait");
    std::fs::write(
        dir.join("daemon.json"),
        format!(r#"{{"pid": {pid}, "api": "127.0.0.1:9", "version": "0.1.0"}}"#),
    )
    .expect("write daemon.json");
    std::fs::write(dir.join("api.token"), "00").expect("write token");

    // `shares` reads the store as it does without a daemon.
    let shares = json(&dir, &["shares", "--json"]);
    assert_eq!(shares, Value::Array(vec![]));

    // `share` serves in the foreground: ticket first, then it serves until --for ends.
    let src = t.path().join("f.bin");
    std::fs::write(&src, data(64 << 10, 7)).expect("write");
    let mut cmd = shoal(&dir);
    cmd.arg("share").arg(&src).args(["--for", "1s"]);
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("shoal1"), "{out:?}");
    assert!(
        text(&out.stderr).contains("press Ctrl-C to stop"),
        "the foreground node served: {}",
        text(&out.stderr)
    );

    // And the commands that need a daemon say there is none.
    let mut cmd = shoal(&dir);
    cmd.arg("status");
    assert_fails_with(&run(cmd), "no shoal daemon runs for");
}

fn token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("api.token"))
        .expect("api.token")
        .trim()
        .to_owned()
}

/// Polls `shoal transfers --json` until the transfer `id` satisfies `pred`.
fn wait_transfer(dir: &Path, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let list = json(dir, &["transfers", "--json"]);
        if let Some(t) = list
            .as_array()
            .expect("transfers is an array")
            .iter()
            .find(|t| t["id"] == id)
        {
            if pred(t) {
                return t.clone();
            }
            assert!(
                Instant::now() < deadline,
                "transfer {id} never became {what}: {t}"
            );
        } else {
            assert!(Instant::now() < deadline, "transfer {id} never listed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn share_and_get_through_two_daemons() {
    let t = tempfile::tempdir().expect("tempdir");
    let (a_dir, b_dir) = (t.path().join("a"), t.path().join("b"));
    let a = Daemon::start(&a_dir, &[]);
    let b = Daemon::start(&b_dir, &[]);

    let bytes = data(4 << 20, 11);
    let src = t.path().join("movie.bin");
    std::fs::write(&src, &bytes).expect("write");

    // `share` through daemon A prints the ticket first and exits: A serves.
    let out = ok(&a_dir, &["share", src.to_str().expect("utf-8 path")]);
    let ticket = out.lines().next().expect("a ticket line").to_owned();
    assert!(ticket.starts_with("shoal1"), "{out}");
    let shares = json(&a_dir, &["shares", "--json"]);
    let shares: Vec<Value> = serde_json::from_value(shares).expect("array");
    assert_eq!(shares.len(), 1, "{shares:?}");
    assert_eq!(shares[0]["ticket"], ticket.as_str(), "{shares:?}");
    assert_eq!(
        shares[0]["public"], false,
        "unlisted by default: {shares:?}"
    );

    // `--json` has the foreground command's shape.
    let small = t.path().join("small.bin");
    std::fs::write(&small, data(1000, 5)).expect("write");
    let v = json(
        &a_dir,
        &[
            "share",
            "--json",
            "--public",
            small.to_str().expect("utf-8"),
        ],
    );
    let status = json(&a_dir, &["status", "--json"]);
    assert_eq!(v["peer"], status["peer_id"], "{v}");
    assert_eq!(v["addrs"], status["ticket_addresses"], "{v}");
    assert_eq!(v["public"], true, "{v}");
    assert_eq!(v["size"], 1000);
    assert!(v["ticket"]
        .as_str()
        .is_some_and(|t| t.starts_with("shoal1")));

    // `get` through daemon B: plain progress lines on a non-terminal stderr,
    // the result path on stdout.
    let dl = t.path().join("downloads");
    let mut cmd = shoal(&b_dir);
    cmd.arg("get")
        .arg(&ticket)
        .arg("-o")
        .arg(&dl)
        .args(["--name", "copy.bin"]);
    let out = run(cmd);
    let err = text(&out.stderr);
    assert!(
        out.status.success(),
        "get failed: {err}\ndaemon B: {}",
        b.output()
    );
    assert!(err.contains("progress "), "no progress lines: {err}");
    let path = PathBuf::from(text(&out.stdout).trim());
    assert_eq!(path, dl.join("copy.bin"));
    assert_eq!(std::fs::read(&path).expect("result file"), bytes);

    // B lists the finished transfer.
    let id = shares[0]["id"].as_str().expect("id").to_owned();
    let list = json(&b_dir, &["transfers", "--json"]);
    let tr = list
        .as_array()
        .expect("array")
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not in {list}"));
    assert!(
        tr["state"] == "seeding" || tr["state"] == "completed",
        "{tr}"
    );
    assert_eq!(tr["done_bytes"], bytes.len() as u64);
    // The table names it too.
    assert!(ok(&b_dir, &["transfers"]).contains(&id[..16]));

    // A counts what it sent: the whole file once (its task reports every second).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let sent = loop {
        let shares = json(&a_dir, &["shares", "--json"]);
        let movie = shares
            .as_array()
            .expect("array")
            .iter()
            .find(|s| s["id"] == id.as_str())
            .cloned()
            .expect("the movie share");
        if movie["uploaded_bytes"].as_u64() >= Some(bytes.len() as u64)
            || std::time::Instant::now() > deadline
        {
            break movie;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(
        sent["uploaded_bytes"].as_u64() >= Some(bytes.len() as u64),
        "{sent}"
    );
    let table = ok(&a_dir, &["shares"]);
    let head = table.lines().next().expect("a header");
    for col in ["SERVING", "UP", "SENT", "RATIO"] {
        assert!(head.contains(col), "no {col} column: {table}");
    }
    let row = table
        .lines()
        .find(|l| l.contains("movie.bin"))
        .unwrap_or_else(|| panic!("no movie.bin row: {table}"));
    assert!(row.contains("4.0 MiB") && row.contains("1.0"), "{table}");

    // `status --json` has B's peer id; `peers` answers.
    let status = json(&b_dir, &["status", "--json"]);
    assert!(
        status["peer_id"].as_str().is_some_and(|p| !p.is_empty()),
        "{status}"
    );
    assert!(ok(&b_dir, &["status"]).contains(status["peer_id"].as_str().expect("peer")));
    assert!(json(&b_dir, &["peers", "--json"]).is_array());

    // `ui` hands over the token of this start in the fragment.
    let url = ok(&b_dir, &["ui"]);
    let api = serde_json::from_str::<Value>(
        &std::fs::read_to_string(b_dir.join("daemon.json")).expect("daemon.json"),
    )
    .expect("daemon.json is JSON")["api"]
        .as_str()
        .expect("api")
        .to_owned();
    assert_eq!(url.trim(), format!("http://{api}/#token={}", token(&b_dir)));
    drop(a);
}

/// A ticket whose only provider does not exist: its transfer waits forever,
/// so states change only when we act.
fn unreachable_ticket(seed: u8) -> (String, String) {
    use shoal_core::{ContentId, Kind, Provider, Ticket};
    let peer = libp2p_identity::Keypair::ed25519_from_bytes([seed; 32])
        .expect("32 bytes make an ed25519 key")
        .public()
        .to_peer_id();
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port();
    let id = ContentId::of(&[seed; 100]);
    let ticket = Ticket {
        id,
        kind: Kind::File,
        providers: vec![Provider {
            peer,
            addrs: vec![format!("/ip4/127.0.0.1/tcp/{port}")
                .parse()
                .expect("multiaddr")],
        }],
        capability: None,
        name: None,
    };
    (ticket.to_string(), id.to_string())
}

/// Spawns `shoal get` following a transfer; stdout and stderr collected.
struct Follower {
    child: Proc,
    seen: Vec<String>,
}

impl Follower {
    fn spawn(dir: &Path, ticket: &str, out_dir: &Path) -> Follower {
        let mut cmd = shoal(dir);
        cmd.arg("get").arg(ticket).arg("-o").arg(out_dir);
        Follower {
            child: Proc::spawn(cmd, WAIT),
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a stderr line containing `needle`.
    fn wait_err(&mut self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let l =
                self.child.err.recv_timeout(left).unwrap_or_else(|_| {
                    panic!("get printed no {needle:?}: {}", self.seen.join("\n"))
                });
            let hit = l.contains(needle);
            self.seen.push(l);
            if hit {
                return;
            }
        }
    }

    /// Waits (bounded) for the exit; returns (exit code, stdout, stderr).
    fn finish(mut self) -> (Option<i32>, String, String) {
        let (status, out, err) = self.child.finish_status();
        self.seen.extend(err.lines().map(str::to_owned));
        (status.code(), out, self.seen.join("\n"))
    }
}

#[test]
fn pause_resume_and_cancel_change_the_transfer_state() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("b");
    let _b = Daemon::start(&dir, &[]);
    let (ticket, id) = unreachable_ticket(21);
    let dl = t.path().join("dl");
    let follower = Follower::spawn(&dir, &ticket, &dl);
    wait_transfer(&dir, &id, "listed", |_| true);

    let paused = json(&dir, &["pause", &id[..12], "--json"]);
    assert_eq!(paused["state"], "paused", "{paused}");
    assert_eq!(
        wait_transfer(&dir, &id, "paused", |t| t["state"] == "paused")["id"],
        id.as_str()
    );
    assert!(ok(&dir, &["transfers"]).contains("paused"));

    let resumed = json(&dir, &["resume", &id, "--json"]);
    assert_ne!(resumed["state"], "paused", "{resumed}");
    wait_transfer(&dir, &id, "running again", |t| t["state"] != "paused");

    // Cancel forgets it, and the `get` following it fails saying so.
    ok(&dir, &["cancel", &id]);
    let list = json(&dir, &["transfers", "--json"]);
    assert!(
        !list
            .as_array()
            .expect("array")
            .iter()
            .any(|t| t["id"] == id.as_str()),
        "{list}"
    );
    let (code, out, err) = follower.finish();
    assert_eq!(code, Some(1), "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("was cancelled"), "{err}");
    assert!(
        err.contains("paused"),
        "the follower showed the pause: {err}"
    );

    // An unknown id is a clear error.
    let mut cmd = shoal(&dir);
    cmd.args(["pause", &id]);
    assert_fails_with(&run(cmd), "no transfer id starts with");
}

#[test]
fn ctrl_c_leaves_the_transfer_running_in_the_daemon() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("b");
    let _b = Daemon::start(&dir, &[]);
    let (ticket, id) = unreachable_ticket(22);
    let mut follower = Follower::spawn(&dir, &ticket, &t.path().join("dl"));
    // This line comes once the transfer is added and Ctrl-C is handled.
    follower.wait_err("Ctrl-C stops watching");
    let pid = follower.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let (code, _, err) = follower.finish();
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("goes on in the shoal daemon"), "{err}");
    let t = wait_transfer(&dir, &id, "still there", |_| true);
    assert_ne!(t["state"], "paused");
}

#[test]
fn no_daemon_flag_and_env_bypass_a_running_daemon() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("a");
    let _d = Daemon::start(&dir, &[]);
    // Through the daemon: the API's share objects.
    assert!(json(&dir, &["shares", "--json"]).is_array());
    assert!(json(&dir, &["status", "--json"])["peer_id"].is_string());

    let mut cmd = shoal(&dir);
    cmd.args(["--no-daemon", "status"]);
    assert_fails_with(&run(cmd), "--no-daemon");
    let mut cmd = shoal(&dir);
    cmd.arg("transfers").env("SHOAL_NO_DAEMON", "1");
    assert_fails_with(&run(cmd), "--no-daemon");

    // `shares` reads the store directly: its JSON has the store's shape.
    let src = t.path().join("x.bin");
    std::fs::write(&src, data(1 << 16, 3)).expect("write");
    ok(&dir, &["--no-daemon", "add", src.to_str().expect("utf-8")]);
    let mut cmd = shoal(&dir);
    cmd.args(["shares", "--json"]).env("SHOAL_NO_DAEMON", "1");
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(v[0].get("visibility").is_some(), "store shape: {v}");
    assert!(v[0].get("ticket").is_none(), "not the API shape: {v}");
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let t = tempfile::tempdir().unwrap();
    let mut cmd = shoal(t.path());
    cmd.arg("--version");
    let out = run(cmd);
    assert!(out.status.success());
    let line = text(&out.stdout);
    let line = line.trim();
    let want = format!("shoal {} (", env!("CARGO_PKG_VERSION"));
    assert!(line.starts_with(&want), "{line}");
    // In a git checkout the commit is named; outside one it says so.
    let inside = line[want.len()..].trim_end_matches(')');
    let checkout = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.git")
        .exists();
    if !checkout {
        assert_eq!(inside, "unknown commit", "{line}");
        return;
    }
    let hex = inside
        .strip_prefix("commit ")
        .map(|c| c.trim_end_matches("-dirty"))
        .unwrap_or_else(|| panic!("no commit in {line:?}"));
    assert!(
        hex.len() == 12 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "{line}"
    );
}

#[test]
fn the_daemons_hint_names_its_data_dir_and_that_command_opens_the_ui() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("my data");
    let d = Daemon::start(&dir, &[]);
    // The hint follows daemon.json by a moment: wait for it (bounded).
    let deadline = Instant::now() + WAIT;
    let hint = loop {
        if let Some(l) = d.output().lines().find(|l| l.starts_with("web UI: run")) {
            break l.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no web UI hint in:\n{}",
            d.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let want = format!("shoal --data-dir '{}' ui --open", dir.display());
    assert!(hint.contains(&want), "{hint}");
    assert!(d.output().contains(&format!("data dir {}", dir.display())));
    // What the hint says (without --open) prints the address with the token,
    // with no SHOAL_DATA_DIR set.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.env_remove("SHOAL_DATA_DIR")
        .args(["--data-dir"])
        .arg(&dir)
        .arg("ui");
    let out = run(cmd);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), d.ui_url());
}

#[test]
fn seed_restarts_seeding_a_completed_download_and_refuses_an_unfinished_one() {
    let t = tempfile::tempdir().unwrap();
    let (adir, bdir) = (t.path().join("a"), t.path().join("b"));
    let _a = Daemon::start(&adir, &[]);
    let _b = Daemon::start(&bdir, &[]);
    let src = t.path().join("f.bin");
    std::fs::write(&src, data(2 << 20, 21)).unwrap();
    let share = json(&adir, &["share", src.to_str().unwrap(), "--json"]);
    let ticket = share["ticket"].as_str().expect("ticket").to_owned();
    let id = share["id"].as_str().expect("id").to_owned();
    let out = t.path().join("out");
    ok(
        &bdir,
        &["get", &ticket, "-o", out.to_str().unwrap(), "--json"],
    );
    let state = |dir: &Path| -> String {
        let list = json(dir, &["transfers", "--json"]);
        list.as_array().expect("a list")[0]["state"]
            .as_str()
            .unwrap_or("?")
            .to_owned()
    };
    assert_eq!(state(&bdir), "seeding");
    ok(&bdir, &["pause", &id]);
    assert_eq!(state(&bdir), "completed");
    let v = json(&bdir, &["seed", &id[..12], "--json"]);
    assert_eq!(v["id"], id.as_str());
    let deadline = Instant::now() + WAIT;
    while state(&bdir) != "seeding" {
        assert!(Instant::now() < deadline, "never seeding again");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Not for a transfer that has not finished: it says what to do instead.
    let (pending, pending_id) = unreachable_ticket(9);
    let follower = Follower::spawn(&bdir, &pending, &out);
    let deadline = Instant::now() + WAIT;
    while json(&bdir, &["transfers", "--json"])
        .as_array()
        .map_or(0, Vec::len)
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the second transfer was never added"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(follower);
    let mut cmd = shoal(&bdir);
    cmd.args(["seed", &pending_id]);
    let out = run(cmd);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("only a completed download can be seeded") && err.contains("shoal resume"),
        "{err}"
    );
}

/// `shoal get` through the daemon says what the daemon does while no
/// provider answers (the same text as the foreground command): its progress
/// lines carry `searching` with the attempts and the last failure, also in
/// the API's transfer.
#[test]
fn get_through_the_daemon_says_what_it_does_while_no_provider_answers() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("d");
    let _d = Daemon::start(&dir, &[]);
    let (ticket, id) = unreachable_ticket(41);
    let mut cmd = shoal(&dir);
    cmd.arg("get")
        .arg(&ticket)
        .arg("-o")
        .arg(t.path().join("out"))
        .arg("--json");
    let p = Proc::spawn(cmd, WAIT);
    let deadline = Instant::now() + WAIT;
    let line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let l = p
            .err
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no progress line saying what it does"));
        let Ok(v) = serde_json::from_str::<Value>(&l) else {
            continue;
        };
        if v["event"] == "progress"
            && v["searching"]
                .as_str()
                .is_some_and(|s| s.contains("connection attempt") && s.contains("last failure"))
        {
            break v;
        }
    };
    assert_eq!(line["state"], "queued", "{line}");
    let tr = json(&dir, &["transfers", "--json"]);
    let mine = tr
        .as_array()
        .expect("array")
        .iter()
        .find(|x| x["id"] == id.as_str())
        .cloned()
        .expect("the transfer");
    assert!(
        mine["searching"]
            .as_str()
            .is_some_and(|s| s.starts_with("looking for peers")),
        "{mine}"
    );
}

/// `shoal files`: a folder share's files through daemon A, and the same
/// folder downloaded by daemon B listed with each file complete; a unique
/// prefix names it; a file is refused with a reason.
#[test]
fn files_lists_a_folder_share_and_a_folder_download() {
    let t = tempfile::tempdir().expect("tempdir");
    let (a_dir, b_dir) = (t.path().join("a"), t.path().join("b"));
    let _a = Daemon::start(&a_dir, &[]);
    let b = Daemon::start(&b_dir, &[]);
    let folder = t.path().join("docs");
    std::fs::create_dir_all(folder.join("sub")).expect("mkdir");
    std::fs::write(folder.join("sub/z.txt"), data(70_000, 1)).expect("write");
    std::fs::write(folder.join("a.txt"), data(30_000, 2)).expect("write");
    std::fs::create_dir_all(folder.join("void")).expect("mkdir");
    let out = ok(&a_dir, &["share", folder.to_str().expect("utf-8")]);
    let ticket = out.lines().next().expect("a ticket").to_owned();
    let shares = json(&a_dir, &["shares", "--json"]);
    let id = shares[0]["id"].as_str().expect("id").to_owned();

    let l = json(&a_dir, &["files", &id[..10], "--json"]);
    let files = l["files"].as_array().expect("files");
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["a.txt", "sub/z.txt"], "{l}");
    assert_eq!(
        (l["total_files"].as_u64(), l["total_bytes"].as_u64()),
        (Some(2), Some(100_000))
    );
    assert!(files.iter().all(|f| f["done_bytes"] == f["size"]), "{l}");
    assert_eq!(l["empty_folders"], serde_json::json!(["void"]), "{l}");
    assert_eq!(l["total_empty_folders"], 1, "{l}");

    // `shoal ls` through daemon B: the folder's list, nothing downloaded.
    let l = json(&b_dir, &["ls", &ticket, "--json"]);
    let listed: Vec<&str> = l["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["a.txt", "sub/z.txt"], "{l}");
    assert_eq!(l["total_bytes"], 100_000, "{l}");
    assert_eq!(l["empty_folders"], serde_json::json!(["void"]), "{l}");
    let mut c = shoal(&b_dir);
    c.args(["ls", &ticket, "--bootstrap", "/ip4/127.0.0.1/tcp/1"]);
    assert_fails_with(&run(c), "cannot apply through the shoal daemon");
    // Choosing files through the daemon: only sub/z.txt, a.txt never made.
    // (Daemon C: B's transfer of the folder is the one it would follow.)
    let c_dir = t.path().join("c");
    let _c = Daemon::start(&c_dir, &[]);
    let chosen = t.path().join("chosen");
    let mut c = shoal(&c_dir);
    c.args(["get", &ticket, "--only", "sub/*", "--name", "part", "-o"])
        .arg(&chosen);
    let got = run(c);
    assert!(
        got.status.success(),
        "get --only failed: {}",
        text(&got.stderr)
    );
    assert_eq!(
        std::fs::read(chosen.join("part/sub/z.txt")).expect("the chosen file"),
        data(70_000, 1)
    );
    assert!(
        !chosen.join("part/a.txt").exists(),
        "a file not chosen was made"
    );
    assert!(
        !chosen.join("part/void").exists(),
        "an empty folder not chosen was made"
    );
    let mut c = shoal(&c_dir);
    c.args(["get", &ticket, "--exclude", "[", "--name", "bad"]);
    assert_fails_with(&run(c), "not a valid glob");

    let dl = t.path().join("dl");
    let mut cmd = shoal(&b_dir);
    cmd.arg("get").arg(&ticket).arg("-o").arg(&dl);
    let got = run(cmd);
    assert!(
        got.status.success(),
        "get failed: {}\n{}",
        text(&got.stderr),
        b.output()
    );
    let l = json(&b_dir, &["files", &id, "--json"]);
    assert_eq!(l["known"], true, "{l}");
    let here: Vec<(u64, u64)> = l["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            (
                f["done_bytes"].as_u64().unwrap(),
                f["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(here, [(30_000, 30_000), (70_000, 70_000)], "{l}");
    assert_eq!(l["empty_folders"], serde_json::json!(["void"]), "{l}");
    assert!(
        dl.join("docs/void").is_dir(),
        "the empty folder was not made"
    );
    let table = run({
        let mut c = shoal(&b_dir);
        c.args(["files", &id]);
        c
    });
    assert!(table.status.success(), "{}", text(&table.stderr));
    let out = text(&table.stdout);
    assert!(out.starts_with("PATH"), "{out}");
    assert!(out.contains("sub/z.txt") && out.contains("100%"), "{out}");
    assert!(
        text(&table.stderr).contains("2 files"),
        "{}",
        text(&table.stderr)
    );
    // A file's priority, set through the daemon, is kept and listed (the
    // download is complete here: the effect while a folder downloads is
    // tested through the API).
    let t_json = json(
        &b_dir,
        &[
            "priority",
            &id[..12],
            "--set",
            "high",
            "sub/z.txt",
            "--json",
        ],
    );
    assert_eq!(t_json["id"], id.as_str(), "{t_json}");
    let l = json(&b_dir, &["files", &id, "--json"]);
    let prio: Vec<(&str, &str)> = l["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["priority"].as_str().unwrap()))
        .collect();
    assert_eq!(prio, [("a.txt", "normal"), ("sub/z.txt", "high")], "{l}");
    let mut c = shoal(&b_dir);
    c.args(["priority", &id, "--set", "high", "nope.txt"]);
    assert_fails_with(&run(c), "not a chosen file of this folder");
    let mut c = shoal(&b_dir);
    c.args(["priority", &id, "--set", "urgent", "a.txt"]);
    let bad = run(c);
    assert!(
        !bad.status.success() && text(&bad.stderr).contains("skip, normal, high"),
        "{bad:?}"
    );
    let mut c = shoal(&t.path().join("nodaemon"));
    c.args(["priority", &id, "--set", "skip", "a.txt"]);
    assert_fails_with(&run(c), "daemon");

    // A file has no list; an unknown id says how to list ids.
    let single = t.path().join("one.bin");
    std::fs::write(&single, data(1000, 3)).expect("write");
    ok(&a_dir, &["share", single.to_str().expect("utf-8")]);
    let shares = json(&a_dir, &["shares", "--json"]);
    let file_id = shares
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "file")
        .and_then(|s| s["id"].as_str())
        .expect("the file share")
        .to_owned();
    let mut c = shoal(&a_dir);
    c.args(["files", &file_id]);
    assert_fails_with(&run(c), "is a file, not a folder");
    let mut c = shoal(&a_dir);
    c.args(["files", "abcdef0123"]);
    assert_fails_with(&run(c), "shoal shares");
}
