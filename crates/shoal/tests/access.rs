//! Access control as users meet it: real `shoal daemon` and foreground `shoal`
//! processes on 127.0.0.1 (mDNS and UPnP off), with temporary data dirs. Every
//! process is killed by PID when its guard drops; every wait is bounded.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{data, files_under, shoal, Daemon, Proc};

const WAIT: Duration = Duration::from_secs(90);

/// Runs a command to its end, bounded by [`WAIT`].
fn run(mut cmd: Command) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("the shoal binary starts");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT) {
        Ok(out) => out.expect("wait for shoal"),
        Err(_) => {
            // Our own child, by its PID.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{cmd:?} did not exit within {WAIT:?}");
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

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

/// `shoal get TICKET -o OUT` in the foreground on data dir `dir`.
fn get(dir: &Path, ticket: &str, out: &Path) -> Output {
    let mut cmd = shoal(dir);
    cmd.arg("get").arg(ticket).arg("-o").arg(out);
    run(cmd)
}

fn assert_refused(out: &Output, needle: &str) {
    let err = text(&out.stderr);
    assert!(!out.status.success(), "expected a refusal: {err}");
    assert!(err.contains(needle), "{err:?} should say {needle:?}");
    assert!(!err.contains("panicked"), "{err}");
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The peer id of the newest access-log row of `dir`'s daemon with `allowed`.
fn logged_peer(dir: &Path, allowed: bool) -> String {
    let log = json(dir, &["access-log", "--json"]);
    log.as_array()
        .expect("array")
        .iter()
        .find(|r| r["allowed"] == allowed)
        .unwrap_or_else(|| panic!("no {allowed} row in {log}"))["peer_id"]
        .as_str()
        .expect("peer id")
        .to_owned()
}

#[test]
fn a_removed_share_stops_being_served_at_once() {
    let t = tempfile::tempdir().expect("tempdir");
    let a_dir = t.path().join("a");
    let a = Daemon::start(&a_dir, &[]);
    let bytes = data(3 << 20, 21);
    let src = t.path().join("report.bin");
    std::fs::write(&src, &bytes).expect("write");
    let ticket = ok(&a_dir, &["share", path(&src)])
        .lines()
        .next()
        .expect("ticket")
        .to_owned();
    let shares = json(&a_dir, &["shares", "--json"]);
    assert_eq!(shares[0]["visibility"], "unlisted", "{shares}");
    let id = shares[0]["id"].as_str().expect("id").to_owned();

    // B fetches it (A's seed task for it now exists).
    let b_out = t.path().join("b-out");
    let out = get(&t.path().join("b"), &ticket, &b_out);
    assert!(out.status.success(), "B: {}", text(&out.stderr));
    assert_eq!(
        std::fs::read(b_out.join("report.bin")).expect("B's copy"),
        bytes
    );

    ok(&a_dir, &["rm", &id]);
    // C, with the old ticket, is refused and receives nothing.
    let c_out = t.path().join("c-out");
    let out = get(&t.path().join("c"), &ticket, &c_out);
    assert_refused(&out, "the sharer no longer shares this content");
    assert!(files_under(&c_out).is_empty(), "{:?}", files_under(&c_out));
    let log = json(&a_dir, &["access-log", "--json"]);
    let rows = log.as_array().expect("array");
    assert!(
        rows.iter()
            .any(|r| r["allowed"] == false
                && r["reason"].as_str().unwrap_or("").contains("NotFound")),
        "{log}\ndaemon: {}",
        a.output()
    );
}

#[test]
fn making_a_share_private_closes_a_running_download_which_resumes_once_allowed() {
    let t = tempfile::tempdir().expect("tempdir");
    let a_dir = t.path().join("a");
    // 2 MiB/s: the 24 MiB download is caught in the middle.
    let _a = Daemon::start(&a_dir, &[("SHOAL_UPLOAD_LIMIT", "2MiB")]);
    let bytes = data(24 << 20, 22);
    let src = t.path().join("film.bin");
    std::fs::write(&src, &bytes).expect("write");
    let ticket = ok(&a_dir, &["share", path(&src)])
        .lines()
        .next()
        .expect("ticket")
        .to_owned();
    let id = json(&a_dir, &["shares", "--json"])[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let c_dir = t.path().join("c");
    let c_out = t.path().join("c-out");
    let mut cmd = shoal(&c_dir);
    cmd.arg("get")
        .arg(&ticket)
        .arg("-o")
        .arg(&c_out)
        .arg("--json");
    let mut c = Proc::spawn(cmd, WAIT);
    c.wait_progress(1 << 20);
    let made_private = Instant::now();
    let v = json(&a_dir, &["visibility", &id, "private", "--json"]);
    assert_eq!(v["visibility"], "private", "{v}");
    let status = c.wait_exit();
    let took = made_private.elapsed();
    let err = c.drain_err();
    assert!(
        !status.success(),
        "C finished although the share became private"
    );
    assert!(err.contains("no longer allows this download"), "{err}");
    // The session closes within 1 s; the process then reports and exits.
    assert!(
        took < Duration::from_secs(3),
        "C stopped {took:?} after the change"
    );
    let partial: Vec<PathBuf> = files_under(&c_out);
    assert_eq!(partial.len(), 1, "the partial download stays: {partial:?}");

    // Allowed now (its peer id is in A's access log), C resumes and completes.
    let c_peer = logged_peer(&a_dir, true);
    ok(&a_dir, &["allow", &id, &c_peer]);
    let access = json(&a_dir, &["access", &id, "--json"]);
    assert_eq!(access["allow"][0], c_peer.as_str(), "{access}");
    let out = get(&c_dir, &ticket, &c_out);
    assert!(out.status.success(), "C again: {}", text(&out.stderr));
    assert_eq!(
        std::fs::read(c_out.join("film.bin")).expect("C's copy"),
        bytes
    );

    // Off the allowlist again: a new fetch is refused, and logged.
    ok(&a_dir, &["deny", &id, &c_peer]);
    let out = get(&c_dir, &ticket, &t.path().join("c-out2"));
    assert_refused(&out, "this share is private");
}

#[test]
fn invites_allow_private_content_until_used_up_expired_or_revoked() {
    let t = tempfile::tempdir().expect("tempdir");
    let a_dir = t.path().join("a");
    let _a = Daemon::start(&a_dir, &[]);
    let bytes = data(1 << 20, 23);
    let src = t.path().join("secret.bin");
    std::fs::write(&src, &bytes).expect("write");
    let shared = json(&a_dir, &["share", "--private", "--json", path(&src)]);
    assert_eq!(shared["visibility"], "private", "{shared}");
    let plain = shared["ticket"].as_str().expect("ticket").to_owned();
    let id = shared["id"].as_str().expect("id").to_owned();

    let out = get(&t.path().join("c"), &plain, &t.path().join("c-out"));
    assert_refused(&out, "this share is private");

    // One use.
    let inv = json(&a_dir, &["invite", &id, "--uses", "1", "--json"]);
    assert_eq!(inv["state"], "active", "{inv}");
    let ticket = inv["ticket"].as_str().expect("invite ticket").to_owned();
    let inspected = ok(&a_dir, &["ticket", "inspect", &ticket]);
    assert!(inspected.contains("capability"), "{inspected}");
    let d_out = t.path().join("d-out");
    let out = get(&t.path().join("d"), &ticket, &d_out);
    assert!(out.status.success(), "D: {}", text(&out.stderr));
    assert_eq!(
        std::fs::read(d_out.join("secret.bin")).expect("D's copy"),
        bytes
    );
    let out = get(&t.path().join("e"), &ticket, &t.path().join("e-out"));
    assert_refused(
        &out,
        "this invite has been used by as many peers as it allows",
    );
    let list = json(&a_dir, &["invites", &id, "--json"]);
    assert_eq!(list[0]["uses"], 1, "{list}");
    assert_eq!(list[0]["state"], "used_up", "{list}");

    // A short expiry.
    let inv = json(&a_dir, &["invite", &id, "--expires", "1s", "--json"]);
    let exp = inv["expires_at"].as_i64().expect("expiry");
    let ticket = inv["ticket"].as_str().expect("ticket").to_owned();
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
        <= exp
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = get(&t.path().join("f"), &ticket, &t.path().join("f-out"));
    assert_refused(&out, "this invite expired at ");
    assert_refused(&out, "ask the sharer for a new one");

    // Revoked.
    let inv = json(&a_dir, &["invite", &id, "--json"]);
    let iid = inv["id"].as_str().expect("invite id").to_owned();
    let ticket = inv["ticket"].as_str().expect("ticket").to_owned();
    let revoked = json(&a_dir, &["revoke", &iid, "--json"]);
    assert_eq!(revoked["state"], "revoked", "{revoked}");
    let out = get(&t.path().join("g"), &ticket, &t.path().join("g-out"));
    assert_refused(&out, "this invite was revoked");

    // The access log tells who was refused and why, in a table too.
    let table = ok(&a_dir, &["access-log", &id]);
    assert!(
        table.contains("denied") && table.contains("allowed"),
        "{table}"
    );
    assert!(table.contains("CapabilityUsedUp"), "{table}");
}

/// Runs `shoal ARGS` on `dir` and returns its JSON, through whatever the data
/// dir has (a daemon or nothing).
fn both(dir: &Path, args: &[&str]) -> Value {
    json(dir, args)
}

/// Removes what differs by nature between two nodes: ids, tickets, peer ids,
/// times, paths.
fn shape(mut v: Value) -> Value {
    fn scrub(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    match k.as_str() {
                        "id" | "ticket" | "share" | "path" | "content" | "peer_id" | "at"
                        | "created_at" | "expires_at" | "revoked_at" | "recipient" | "addr"
                        | "reason" | "peer" | "addrs" => *x = Value::Null,
                        _ => scrub(x),
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(scrub),
            _ => {}
        }
    }
    scrub(&mut v);
    v
}

#[test]
fn the_cli_gives_the_same_answers_through_the_daemon_and_without_it() {
    let t = tempfile::tempdir().expect("tempdir");
    let src = t.path().join("same.bin");
    std::fs::write(&src, data(1000, 25)).expect("write");
    // A provider both modes fetch from.
    let bytes = data(2 << 20, 24);
    let remote = t.path().join("remote.bin");
    std::fs::write(&remote, &bytes).expect("write");
    let s_dir = t.path().join("s");
    let _s = Daemon::start(&s_dir, &[]);
    let ticket = ok(&s_dir, &["share", path(&remote)])
        .lines()
        .next()
        .expect("ticket")
        .to_owned();
    let ticket_id = json(&s_dir, &["shares", "--json"])[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // Any valid peer id will do as the friend allowed: the provider's.
    let friend_id = json(&s_dir, &["status", "--json"])["peer_id"]
        .as_str()
        .expect("peer id")
        .to_owned();
    let friend = friend_id.as_str();

    let mut results = Vec::new();
    for mode in ["daemon", "foreground"] {
        let dir = t.path().join(mode);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let daemon = (mode == "daemon").then(|| Daemon::start(&dir, &[]));
        let mut r = Vec::new();
        // share --private --allow (the foreground serves for a moment).
        let mut args = vec!["share", "--private", "--allow", friend, "--json"];
        if daemon.is_none() {
            args.extend(["--for", "1s"]);
        }
        args.push(path(&src));
        let shared = both(&dir, &args);
        let id = shared["id"].as_str().expect("id").to_owned();
        r.push(shape(shared));
        r.push(shape(both(&dir, &["access", &id, "--json"])));
        r.push(shape(both(
            &dir,
            &["visibility", &id, "unlisted", "--json"],
        )));
        r.push(shape(both(&dir, &["deny", &id, friend, "--json"])));
        r.push(shape(both(&dir, &["allow", &id, friend, "--json"])));
        let inv = both(
            &dir,
            &[
                "invite",
                &id,
                "--uses",
                "2",
                "--expires",
                "1h",
                "--to",
                friend,
                "--json",
            ],
        );
        assert!(
            inv["ticket"]
                .as_str()
                .is_some_and(|t| t.starts_with("shoal1")),
            "{inv}"
        );
        let iid = inv["id"].as_str().expect("invite id").to_owned();
        r.push(shape(inv));
        r.push(shape(both(&dir, &["invites", "--json"])));
        r.push(shape(both(&dir, &["revoke", &iid, "--json"])));

        // get with -o, --name and --download-limit: same place, same bytes.
        let out = t.path().join(format!("{mode}-out"));
        let mut cmd = shoal(&dir);
        cmd.arg("get").arg(&ticket).arg("-o").arg(&out).args([
            "--name",
            "named.bin",
            "--download-limit",
            "64MiB",
        ]);
        let o = run(cmd);
        assert!(o.status.success(), "{mode} get: {}", text(&o.stderr));
        assert_eq!(PathBuf::from(text(&o.stdout).trim()), out.join("named.bin"));
        assert_eq!(std::fs::read(out.join("named.bin")).expect("copy"), bytes);
        if daemon.is_some() {
            // The limit is the transfer's.
            let list = json(&dir, &["transfers", "--json"]);
            assert!(
                list.as_array()
                    .expect("array")
                    .iter()
                    .any(|t| t["download_limit"] == 64u64 << 20),
                "{list}"
            );
            // What only a foreground node can do is refused, saying why.
            let mut cmd = shoal(&dir);
            cmd.args(["get", &ticket, "--upload-limit", "1MiB"]);
            assert_refused(
                &run(cmd),
                "--upload-limit cannot apply through the shoal daemon",
            );
            let mut cmd = shoal(&dir);
            cmd.args(["share", "--for", "5s", path(&src)]);
            assert_refused(&run(cmd), "--for cannot apply through the shoal daemon");
        }
        // pause, resume and cancel act on the daemon's managed transfers; in
        // the foreground (where Ctrl-C pauses and running `get` again
        // resumes) they are refused, saying why.
        let tid = ticket_id.as_str();
        for act in ["pause", "resume", "cancel"] {
            let mut cmd = shoal(&dir);
            cmd.args([act, tid, "--json"]);
            let o = run(cmd);
            if daemon.is_some() {
                assert!(o.status.success(), "{act}: {}", text(&o.stderr));
            } else {
                assert_refused(&o, "no shoal daemon runs for");
                assert_refused(&o, "start one with `shoal daemon`");
            }
        }
        if daemon.is_some() {
            let list = json(&dir, &["transfers", "--json"]);
            assert_eq!(list, serde_json::json!([]), "cancel forgets the transfer");
            // The cancelled download's complete file stays.
            assert_eq!(std::fs::read(out.join("named.bin")).expect("copy"), bytes);
        }
        results.push(r);
    }
    assert_eq!(
        results[0], results[1],
        "the daemon and the foreground differ"
    );
}
