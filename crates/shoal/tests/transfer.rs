//! End-to-end transfers between real `shoal` processes on 127.0.0.1 (mDNS and
//! UPnP off). Every child is killed by PID when its guard drops; readiness comes
//! from the lines the children print, never from sleeps; every wait is bounded.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use shoal_core::{ContentId, Kind, Provider, Ticket};
use support::{data, files_under, shoal, Proc};

const WAIT: Duration = Duration::from_secs(60);

/// A seeder sharing `path`; returns it with its `--json` share line.
fn seeder(dir: &Path, path: &Path, extra: &[&str]) -> (Proc, Value) {
    let mut cmd = shoal(dir);
    cmd.arg("share").arg(path).arg("--json").args(extra);
    let p = Proc::spawn(cmd, WAIT);
    let v: Value = serde_json::from_str(&p.line()).expect("share prints JSON");
    (p, v)
}

fn get(dir: &Path, target: &str, out: &Path, extra: &[&str]) -> Proc {
    let mut cmd = shoal(dir);
    cmd.arg("get")
        .arg(target)
        .arg("-o")
        .arg(out)
        .arg("--json")
        .args(extra);
    Proc::spawn(cmd, WAIT)
}

/// A `--bootstrap` value for the node that printed `share`.
fn boot_addr(share: &Value) -> String {
    let peer = share["peer"].as_str().expect("peer");
    let addr = share["addrs"]
        .as_array()
        .expect("addrs")
        .iter()
        .filter_map(Value::as_str)
        .find(|a| a.contains("/tcp/") && !a.ends_with("/tls"))
        .expect("a libp2p TCP address");
    format!("{addr}/p2p/{peer}")
}

#[test]
fn file_from_one_seeder_to_one_leecher() {
    let t = tempfile::tempdir().unwrap();
    let bytes = data(8 << 20, 1);
    let src = t.path().join("f.bin");
    std::fs::write(&src, &bytes).unwrap();
    let (_s, share) = seeder(&t.path().join("s"), &src, &[]);
    let out = t.path().join("out");
    let g = get(
        &t.path().join("l"),
        share["ticket"].as_str().unwrap(),
        &out,
        &["--name", "copy.bin"],
    );
    let (ok, stdout, stderr) = g.finish();
    assert!(ok, "get failed: {stderr}");
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["bytes"], bytes.len() as u64);
    assert_eq!(v["pieces_failed"], 0, "{v}");
    assert_eq!(v["banned_peers"], serde_json::json!([]), "{v}");
    assert_eq!(std::fs::read(out.join("copy.bin")).unwrap(), bytes);
    // The same command again: the file is there, so nothing is fetched.
    let g = get(
        &t.path().join("l"),
        share["ticket"].as_str().unwrap(),
        &out,
        &["--name", "copy.bin"],
    );
    let (ok, stdout, stderr) = g.finish();
    assert!(ok, "get again failed: {stderr}");
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        v["downloaded_bytes"], 0,
        "the second get fetched again: {v}"
    );
    assert_eq!(std::fs::read(out.join("copy.bin")).unwrap(), bytes);
    // Without --name the file gets the name the ticket gives: the shared file's.
    let out2 = t.path().join("out2");
    let g = get(
        &t.path().join("l2"),
        share["ticket"].as_str().unwrap(),
        &out2,
        &[],
    );
    let (ok, _, stderr) = g.finish();
    assert!(ok, "get failed: {stderr}");
    assert_eq!(std::fs::read(out2.join("f.bin")).unwrap(), bytes);
    assert_eq!(files_under(&out2).len(), 1);
}

#[test]
fn folder_from_one_seeder_to_one_leecher() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("album");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(src.join("sub/none")).unwrap();
    let files = [
        ("a.bin", data(3 << 20, 2)),
        ("sub/b.bin", data(1 << 20, 3)),
        ("sub/deeper/c.txt", b"hello".to_vec()),
        ("empty", Vec::new()),
    ];
    for (p, b) in &files {
        std::fs::write(src.join(p), b).unwrap();
    }
    let (_s, share) = seeder(&t.path().join("s"), &src, &[]);
    assert_eq!(share["kind"], "folder");
    // `shoal ls` fetches only the list: paths in byte order with each
    // file's own id; nothing is written where it runs.
    let cwd = t.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let mut ls = shoal(&t.path().join("lister"));
    ls.current_dir(&cwd)
        .args(["ls", share["ticket"].as_str().unwrap(), "--json"]);
    let (ok, stdout, stderr) = Proc::spawn(ls, WAIT).finish();
    assert!(ok, "ls failed: {stderr}");
    let l: Value = serde_json::from_str(&stdout).expect("ls prints JSON");
    let mut want: Vec<(&str, String)> = files
        .iter()
        .map(|(p, b)| (*p, shoal_core::ContentId::of(b).to_hex()))
        .collect();
    want.sort();
    let got: Vec<(&str, String)> = l["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap(),
                f["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(got, want, "{l}");
    assert_eq!(l["total_files"], 4, "{l}");
    assert_eq!(l["empty_folders"], serde_json::json!(["sub/none"]), "{l}");
    assert!(
        files_under(&cwd).is_empty(),
        "ls wrote {:?}",
        files_under(&cwd)
    );
    // A file's ticket has no list; a folder nobody serves gives up in time.
    let (_f, fshare) = seeder(&t.path().join("s2"), &src.join("a.bin"), &[]);
    let mut ls = shoal(&t.path().join("lister"));
    ls.args(["ls", fshare["ticket"].as_str().unwrap()]);
    let (ok, _, stderr) = Proc::spawn(ls, WAIT).finish();
    assert!(
        !ok && stderr.contains("is a file, not a folder"),
        "{stderr}"
    );
    let mut ls = shoal(&t.path().join("lister"));
    ls.args(["ls", &"dd".repeat(32), "--timeout", "1s"]);
    let (ok, _, stderr) = Proc::spawn(ls, WAIT).finish();
    assert!(!ok && stderr.contains("within 1 s"), "{stderr}");
    let out = t.path().join("out");
    let g = get(
        &t.path().join("l"),
        share["ticket"].as_str().unwrap(),
        &out,
        &["--name", "album"],
    );
    let (ok, stdout, stderr) = g.finish();
    assert!(ok, "get failed: {stderr}");
    for (p, b) in &files {
        assert_eq!(&std::fs::read(out.join("album").join(p)).unwrap(), b, "{p}");
    }
    assert_eq!(files_under(&out).len(), files.len());
    assert!(
        out.join("album/sub/none").is_dir(),
        "the empty folder is missing"
    );
    // The summary counts every file's bytes, per peer: all from the seeder.
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let total: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(v["bytes"], total, "{v}");
    assert_eq!(v["downloaded_bytes"], total, "{v}");
    let peers = v["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 1, "{v}");
    assert_eq!(peers[0]["peer"], share["peer"], "{v}");
    assert_eq!(peers[0]["downloaded"], total, "{v}");
}

/// `get --only/--exclude` fetches only the chosen files of a folder; the
/// others (and folders holding only them) are never created. A later `get`
/// of the whole folder fetches only what is missing. A bad glob, a choice of
/// nothing and a choice for a file are refused with a reason.
#[test]
fn only_and_exclude_fetch_the_chosen_files_and_nothing_else() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("album");
    let files = [
        ("a/01 intro.flac", data(200_000, 1)),
        ("a/02 theme.flac", data(300_000, 2)),
        ("b/03 outro.flac", data(250_000, 3)),
        ("cover.jpg", data(90_000, 4)),
        ("extras/notes.txt", data(5_000, 5)),
    ];
    for (p, b) in &files {
        std::fs::create_dir_all(src.join(p).parent().unwrap()).unwrap();
        std::fs::write(src.join(p), b).unwrap();
    }
    let (_s, share) = seeder(&t.path().join("s"), &src, &[]);
    let ticket = share["ticket"].as_str().unwrap();
    let out = t.path().join("out");
    let ldir = t.path().join("l");
    let g = get(
        &ldir,
        ticket,
        &out,
        &["--name", "album", "--only", "*.flac", "--exclude", "a/02*"],
    );
    let (ok, stdout, stderr) = g.finish();
    assert!(ok, "get --only failed: {stderr}");
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["bytes"], 450_000, "{v}");
    let mut got: Vec<String> = files_under(&out)
        .iter()
        .map(|p| {
            p.strip_prefix(out.join("album"))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    got.sort();
    assert_eq!(got, ["a/01 intro.flac", "b/03 outro.flac"]);
    assert!(
        !out.join("album/extras").exists(),
        "a folder of files not chosen was made"
    );
    for (p, b) in [&files[0], &files[2]] {
        assert_eq!(&std::fs::read(out.join("album").join(p)).unwrap(), b, "{p}");
    }
    // The whole folder later: only what is missing is fetched.
    let g = get(&ldir, ticket, &out, &["--name", "album"]);
    let (ok, stdout, stderr) = g.finish();
    assert!(ok, "get of the whole folder failed: {stderr}");
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["downloaded_bytes"], 395_000, "{v}");
    for (p, b) in &files {
        assert_eq!(&std::fs::read(out.join("album").join(p)).unwrap(), b, "{p}");
    }
    // Refusals.
    let fail = |extra: &[&str], needle: &str| {
        let g = get(&t.path().join("l2"), ticket, &t.path().join("out2"), extra);
        let (ok, _, stderr) = g.finish();
        assert!(!ok && stderr.contains(needle), "{extra:?}: {stderr}");
        assert!(
            files_under(&t.path().join("out2")).is_empty(),
            "{extra:?} wrote files"
        );
    };
    fail(&["--only", "a/[01"], "is not a valid glob");
    fail(&["--only", "*.wav"], "no file of folder");
    let (_f, fshare) = seeder(&t.path().join("s2"), &src.join("cover.jpg"), &[]);
    let g = get(
        &t.path().join("l3"),
        fshare["ticket"].as_str().unwrap(),
        &out,
        &["--only", "*"],
    );
    let (ok, _, stderr) = g.finish();
    assert!(!ok && stderr.contains("is a file"), "{stderr}");
}

/// A folder whose names one file system would merge (`Readme.md` and
/// `README.md` on macOS or Windows) is refused before anything is written,
/// with a message naming both.
#[test]
fn a_folder_with_names_that_differ_only_in_case_is_refused_before_any_write() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("docs");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("README.md"), b"upper").unwrap();
    std::fs::write(src.join("Readme.md"), b"mixed").unwrap();
    std::fs::write(src.join("notes.txt"), data(300_000, 9)).unwrap();
    let (_s, share) = seeder(&t.path().join("s"), &src, &[]);
    let out = t.path().join("out");
    let g = get(
        &t.path().join("l"),
        share["ticket"].as_str().unwrap(),
        &out,
        &["--name", "docs"],
    );
    let (ok, _, stderr) = g.finish();
    assert!(!ok, "the download of a colliding folder succeeded");
    assert!(
        stderr.contains("\"README.md\" and \"Readme.md\"")
            && stderr.contains("nothing was written"),
        "{stderr}"
    );
    assert!(
        files_under(&out).is_empty() && !out.join("docs").exists(),
        "{:?}",
        files_under(&out)
    );
    // Leaving one of the two out is fine.
    let g = get(
        &t.path().join("l"),
        share["ticket"].as_str().unwrap(),
        &out,
        &["--name", "docs", "--exclude", "Readme.md"],
    );
    let (ok, _, stderr) = g.finish();
    assert!(ok, "get --exclude of one colliding name failed: {stderr}");
    assert_eq!(std::fs::read(out.join("docs/README.md")).unwrap(), b"upper");
    assert!(!out.join("docs/Readme.md").exists());
}

#[test]
fn six_leechers_complete_and_upload_to_each_other() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
    cmd.args([
        "demo",
        "--peers",
        "6",
        "--size",
        "8MiB",
        "--demo-upload-limit",
        "8MiB",
        "--json",
    ]);
    let p = Proc::spawn(cmd, WAIT);
    let (ok, stdout, stderr) = p.finish();
    assert!(ok, "demo failed: {stderr}");
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["all_verified"], true);
    let rows = v["downloaders"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().all(|r| r["verified"] == true));
    assert!(
        v["from_peers"].as_u64().unwrap() > 0,
        "no bytes came from other leechers: {v}"
    );
}

/// `shoal demo`'s lower bound allows for what its rate limiters let through
/// at once (a saved-up burst per node), so no run reads faster than it.
#[test]
fn demo_never_beats_its_lower_bound() {
    for run in 0..5 {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
        cmd.args([
            "demo",
            "--peers",
            "4",
            "--size",
            "32MiB",
            "--demo-upload-limit",
            "16MiB",
            "--json",
        ]);
        let (ok, stdout, stderr) = Proc::spawn(cmd, WAIT).finish();
        assert!(ok, "demo failed: {stderr}");
        let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        let ratio = v["seconds"].as_f64().unwrap() / v["bound_seconds"].as_f64().unwrap();
        assert!(ratio >= 1.0, "run {run}: time / bound = {ratio:.3}: {v}");
    }
}

#[test]
fn get_by_id_through_the_dht_with_a_local_bootstrap() {
    let t = tempfile::tempdir().unwrap();
    let bytes = data(4 << 20, 4);
    let src = t.path().join("f.bin");
    std::fs::write(&src, &bytes).unwrap();
    let (_s, share) = seeder(&t.path().join("s"), &src, &["--public"]);
    let id = share["id"].as_str().unwrap().to_string();
    let out = t.path().join("out");
    let boot = boot_addr(&share);
    let g = get(
        &t.path().join("l"),
        &id,
        &out,
        &["--bootstrap", &boot, "--name", "x"],
    );
    let (ok, _, stderr) = g.finish();
    assert!(ok, "get by id failed: {stderr}");
    assert_eq!(std::fs::read(out.join("x")).unwrap(), bytes);
}

/// A folder's sharer lost some files after sharing: the leecher gets them
/// from a peer that shares those files alone (not the folder), found on the
/// DHT by each file's own id, and the folder completes byte for byte.
#[test]
fn files_a_folder_peer_lost_come_from_their_own_providers_over_the_dht() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("album");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let files = [
        ("a.txt", data(5_000, 1)),
        ("sub/b.txt", data(70_000, 2)),
        ("big.bin", data(3 << 20, 3)),
    ];
    for (p, b) in &files {
        std::fs::write(src.join(p), b).unwrap();
    }
    let (_a, share) = seeder(&t.path().join("a"), &src, &[]);
    let loose = t.path().join("loose");
    std::fs::create_dir_all(&loose).unwrap();
    for (p, b) in &files[1..] {
        std::fs::write(loose.join(p.replace('/', "-")), b).unwrap();
    }
    let mut cmd = shoal(&t.path().join("b"));
    cmd.arg("share")
        .arg(loose.join("sub-b.txt"))
        .arg(loose.join("big.bin"))
        .args(["--public", "--json"]);
    let b = Proc::spawn(cmd, WAIT);
    let b_share: Value = serde_json::from_str(&b.line()).expect("share prints JSON");
    let _second = b.line();
    for (p, _) in &files[1..] {
        std::fs::remove_file(src.join(p)).unwrap();
    }
    let out = t.path().join("out");
    let g = get(
        &t.path().join("l"),
        share["ticket"].as_str().unwrap(),
        &out,
        &["--bootstrap", &boot_addr(&b_share), "--name", "album"],
    );
    let (ok, stdout, stderr) = g.finish();
    assert!(ok, "get failed: {stderr}");
    for (p, b) in &files {
        assert_eq!(&std::fs::read(out.join("album").join(p)).unwrap(), b, "{p}");
    }
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let from = |peer: &Value| -> u64 {
        v["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .filter(|p| p["peer"] == *peer)
            .map(|p| p["downloaded"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(from(&b_share["peer"]), 70_000 + (3 << 20), "{v}");
    assert_eq!(from(&share["peer"]), 5_000, "{v}");
}

#[test]
fn killed_download_resumes_and_refetches_at_most_one_piece() {
    let t = tempfile::tempdir().unwrap();
    let bytes = data(16 << 20, 5);
    let src = t.path().join("f.bin");
    std::fs::write(&src, &bytes).unwrap();
    let (_s, share) = seeder(&t.path().join("s"), &src, &["--upload-limit", "8MiB"]);
    let ticket = share["ticket"].as_str().unwrap().to_string();
    let out = t.path().join("out");
    let ldir = t.path().join("l");
    let g = get(&ldir, &ticket, &out, &["--name", "f"]);
    g.wait_progress(bytes.len() as u64 / 2);
    drop(g); // SIGKILL half way
    let g = get(&ldir, &ticket, &out, &["--name", "f"]);
    let (ok, stdout, stderr) = g.finish();
    assert!(ok, "resumed get failed: {stderr}");
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let resumed = v["resumed_bytes"].as_u64().unwrap();
    assert!(
        resumed >= bytes.len() as u64 / 2 - (1 << 20),
        "resumed only {resumed}: {v}"
    );
    assert!(v["refetched_pieces"].as_u64().unwrap() <= 1, "{v}");
    assert_eq!(std::fs::read(out.join("f")).unwrap(), bytes);
}

/// A folder of 2,000 small files from one seeder (its upload limited, so that
/// trading pays) to 3 leechers started together: every copy is byte for byte
/// the folder, and the leechers sent each other files (they met through the
/// seeder's peer exchange in their folder sessions).
#[test]
fn a_folder_of_2000_small_files_to_3_leechers_who_trade_files() {
    const FILES: usize = 2000;
    const SIZE: usize = 4 << 10;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("many");
    for i in 0..FILES {
        let dir = src.join(format!("d{:02}", i / 100));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i:04}")), data(SIZE, i as u64 + 7)).unwrap();
    }
    let (_s, share) = seeder(&t.path().join("s"), &src, &["--upload-limit", "2MiB"]);
    let seed_peer = share["peer"].as_str().unwrap().to_string();
    let ticket = share["ticket"].as_str().unwrap().to_string();
    let gets: Vec<Proc> = (0..3)
        .map(|k| {
            get(
                &t.path().join(format!("l{k}")),
                &ticket,
                &t.path().join(format!("out{k}")),
                &["--name", "many"],
            )
        })
        .collect();
    let mut from_leechers = 0;
    let mut summaries = Vec::new();
    for (k, g) in gets.into_iter().enumerate() {
        let (ok, stdout, stderr) = g.finish();
        assert!(ok, "leecher {k} failed: {stderr}");
        let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(v["pieces_failed"], 0, "{v}");
        for p in v["peers"].as_array().unwrap() {
            if p["peer"] != seed_peer.as_str() {
                from_leechers += p["downloaded"].as_u64().unwrap();
            }
        }
        let out = t.path().join(format!("out{k}")).join("many");
        assert_eq!(files_under(&out).len(), FILES, "leecher {k}: stray files");
        for i in 0..FILES {
            let rel = format!("d{:02}/f{i:04}", i / 100);
            assert_eq!(
                std::fs::read(out.join(&rel)).unwrap(),
                data(SIZE, i as u64 + 7),
                "leecher {k}: {rel}"
            );
        }
        summaries.push(v);
    }
    eprintln!("bytes the leechers received from each other: {from_leechers}");
    assert!(
        from_leechers > 0,
        "no leecher received a file from another: {summaries:?}"
    );
}

/// A downloader that holds half of a folder (it chose half, and seeds on
/// with `--seed-for`) serves that half, the manifest and a larger file
/// among them, to a third peer after the original seeder is gone.
#[test]
fn a_peer_with_half_of_a_folder_serves_it_to_a_third_peer() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("album");
    let mut expect = Vec::new();
    for i in 0..400usize {
        let rel = format!("d{}/f{i:03}", i % 4);
        let size = if i == 10 {
            3 << 20
        } else {
            1 + (i * 97) % 9000
        };
        std::fs::create_dir_all(src.join(format!("d{}", i % 4))).unwrap();
        std::fs::write(src.join(&rel), data(size, i as u64)).unwrap();
        expect.push((rel, size, i as u64));
    }
    let (s, share) = seeder(&t.path().join("s"), &src, &[]);
    let half = ["--only", "d0/*", "--only", "d2/*"];
    let mut args = vec!["--name", "album", "--seed-for", "2m"];
    args.extend(half);
    let b = get(
        &t.path().join("b"),
        share["ticket"].as_str().unwrap(),
        &t.path().join("outb"),
        &args,
    );
    let summary: Value = serde_json::from_str(&b.line()).expect("a JSON summary");
    drop(s);
    let from_b = Ticket {
        id: share["id"].as_str().unwrap().parse::<ContentId>().unwrap(),
        kind: Kind::Collection,
        providers: vec![Provider {
            peer: summary["peer"].as_str().unwrap().parse().unwrap(),
            addrs: summary["addrs"]
                .as_array()
                .expect("the summary names where it serves")
                .iter()
                .map(|a| a.as_str().unwrap().parse().unwrap())
                .collect(),
        }],
        capability: None,
        name: None,
    };
    let mut args = vec!["--name", "album"];
    args.extend(half);
    let c = get(
        &t.path().join("c"),
        &from_b.to_string(),
        &t.path().join("outc"),
        &args,
    );
    let (ok, stdout, stderr) = c.finish();
    assert!(ok, "the third peer failed: {stderr}");
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let peers = v["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "{v}");
    assert_eq!(peers[0]["peer"], summary["peer"], "{v}");
    let chosen: Vec<_> = expect
        .iter()
        .filter(|(rel, _, _)| rel.starts_with("d0/") || rel.starts_with("d2/"))
        .collect();
    let bytes: u64 = chosen.iter().map(|(_, size, _)| *size as u64).sum();
    assert_eq!(peers[0]["downloaded"].as_u64(), Some(bytes), "{v}");
    let out = t.path().join("outc").join("album");
    assert_eq!(files_under(&out).len(), chosen.len());
    for (rel, size, seed) in chosen {
        assert_eq!(
            std::fs::read(out.join(rel)).unwrap(),
            data(*size, *seed),
            "{rel}"
        );
    }
}

/// A folder of 2,000 small files killed (SIGKILL) half way, with 4 files in
/// flight, and run again: it completes byte for byte, and no file that was
/// complete on disk at the kill is fetched again (the bytes downloaded by the
/// second run are at most those of the files not yet complete).
#[test]
fn killed_folder_download_resumes_without_fetching_complete_files_again() {
    const FILES: usize = 2000;
    const SIZE: usize = 8 << 10;
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("many");
    for i in 0..FILES {
        let dir = src.join(format!("d{:02}", i / 100));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i:04}")), data(SIZE, i as u64 + 100)).unwrap();
    }
    let total = (FILES * SIZE) as u64;
    let (_s, share) = seeder(&t.path().join("s"), &src, &["--upload-limit", "4MiB"]);
    let ticket = share["ticket"].as_str().unwrap().to_string();
    let out = t.path().join("out");
    let ldir = t.path().join("l");
    let g = get(&ldir, &ticket, &out, &["--name", "many"]);
    g.wait_progress(total / 2);
    drop(g); // SIGKILL half way
    let complete: u64 = files_under(&out.join("many"))
        .iter()
        .filter(|p| p.extension().is_none_or(|e| e != "shoal-part"))
        // A small file verified but not yet placed waits under a hidden
        // temporary name: not complete.
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".shoal-")
        })
        .filter_map(|p| std::fs::metadata(p).ok())
        .filter(|m| m.len() == SIZE as u64)
        .map(|m| m.len())
        .sum();
    assert!(
        complete >= total / 4,
        "only {complete} bytes complete after the kill"
    );
    let g = get(&ldir, &ticket, &out, &["--name", "many"]);
    let (ok, stdout, stderr) = g.finish();
    assert!(ok, "the resumed folder download failed: {stderr}");
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let downloaded = v["downloaded_bytes"].as_u64().unwrap();
    assert!(
        downloaded <= total - complete,
        "the second run downloaded {downloaded} bytes; {} were missing: {v}",
        total - complete
    );
    for i in 0..FILES {
        let rel = format!("d{:02}/f{i:04}", i / 100);
        assert_eq!(
            std::fs::read(out.join("many").join(&rel)).unwrap(),
            data(SIZE, i as u64 + 100),
            "{rel}"
        );
    }
    assert_eq!(
        files_under(&out.join("many")).len(),
        FILES,
        "left-over partial files"
    );
}

/// Over libp2p QUIC only (no fast path): a download killed half way and run
/// again at once resumes; the seeder's stale session for that peer id (QUIC
/// sends nothing when a process dies) is replaced by the new one instead of
/// answering `Busy`. Three kills in a row, as a user retrying would.
#[test]
fn restart_after_kill_over_quic_resumes_at_once() {
    let quic = [
        "--listen",
        "/ip4/127.0.0.1/udp/0/quic-v1",
        "--fast-listen",
        "off",
    ];
    let t = tempfile::tempdir().unwrap();
    let bytes = data(16 << 20, 15);
    let src = t.path().join("f.bin");
    std::fs::write(&src, &bytes).unwrap();
    let mut seed_args = quic.to_vec();
    seed_args.extend(["--upload-limit", "4MiB"]);
    let (_s, share) = seeder(&t.path().join("s"), &src, &seed_args);
    let ticket = share["ticket"].as_str().unwrap().to_string();
    let out = t.path().join("out");
    let ldir = t.path().join("l");
    let mut args = quic.to_vec();
    args.extend(["--name", "f"]);
    for round in 1..=3u64 {
        let g = get(&ldir, &ticket, &out, &args);
        g.wait_progress(round * (bytes.len() as u64) / 5);
        drop(g); // SIGKILL
    }
    let started = std::time::Instant::now();
    let g = get(&ldir, &ticket, &out, &args);
    let (ok, stdout, stderr) = g.finish();
    assert!(ok, "the get run right after a kill failed: {stderr}");
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(
        v["resumed_bytes"].as_u64().unwrap() >= 3 * bytes.len() as u64 / 5 - (1 << 20),
        "{v}"
    );
    let paths: Vec<&str> = v["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["downloaded"].as_u64().unwrap_or(0) > 0)
        .filter_map(|p| p["path"].as_str())
        .collect();
    assert_eq!(paths, vec!["direct"], "not over libp2p: {v}");
    // 6.4 MiB left at 4 MiB/s: seconds, not a stale session's timeout.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(std::fs::read(out.join("f")).unwrap(), bytes);
}

#[test]
fn late_second_seeder_found_through_the_dht_finishes_the_download() {
    let t = tempfile::tempdir().unwrap();
    let boot_file = t.path().join("boot.txt");
    std::fs::write(&boot_file, b"bootstrap").unwrap();
    let (_boot, bshare) = seeder(&t.path().join("b"), &boot_file, &[]);
    let boot = boot_addr(&bshare);
    let bytes = data(16 << 20, 6);
    let src = t.path().join("f.bin");
    std::fs::write(&src, &bytes).unwrap();
    let b = [
        "--public",
        "--bootstrap",
        boot.as_str(),
        "--upload-limit",
        "8MiB",
    ];
    let (s1, share) = seeder(&t.path().join("s1"), &src, &b);
    let id = share["id"].as_str().unwrap().to_string();
    let out = t.path().join("out");
    let g = get(
        &t.path().join("l"),
        &id,
        &out,
        &["--bootstrap", &boot, "--name", "f"],
    );
    g.wait_progress(bytes.len() as u64 / 2);
    drop(s1); // the only seeder dies half way
    let (_s2, _) = seeder(&t.path().join("s2"), &src, &b);
    let (ok, _, stderr) = g.finish();
    assert!(ok, "download did not finish from the late seeder: {stderr}");
    assert_eq!(std::fs::read(out.join("f")).unwrap(), bytes);
}

#[test]
fn hostile_or_broken_tickets_are_refused_and_nothing_is_written() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    for bad in ["shoal1notaticket", "zz", "../../etc/passwd"] {
        let g = get(&t.path().join("l"), bad, &out, &[]);
        let (ok, _, stderr) = g.finish();
        assert!(!ok);
        assert!(stderr.contains("error:"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // A valid ticket whose name would escape the output folder.
    let ticket = Ticket {
        id: ContentId::of(b"x"),
        kind: Kind::File,
        providers: vec![],
        capability: None,
        name: None,
    };
    let g = get(
        &t.path().join("l"),
        &ticket.to_string(),
        &out,
        &["--name", "../escape"],
    );
    let (ok, _, stderr) = g.finish();
    assert!(!ok, "{stderr}");
    assert!(files_under(t.path()).iter().all(|p| !p.ends_with("escape")));
    assert!(files_under(&out).is_empty());
    // A ticket that itself names a path instead of a file name is refused whole.
    for hostile in ["../escape", "/tmp/escape", "a/escape"] {
        let ticket = Ticket {
            name: Some(hostile.into()),
            ..ticket.clone()
        };
        let g = get(&t.path().join("l"), &ticket.to_string(), &out, &[]);
        let (ok, _, stderr) = g.finish();
        assert!(!ok, "{stderr}");
        assert!(
            stderr.contains("not a valid ticket") && stderr.contains("not one plain file name"),
            "{stderr}"
        );
        assert!(files_under(t.path()).iter().all(|p| !p.ends_with("escape")));
        assert!(files_under(&out).is_empty());
    }
}

#[test]
fn fast_path_peer_with_the_wrong_peer_id_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("f.bin");
    std::fs::write(&src, data(1 << 20, 7)).unwrap();
    let (_s, share) = seeder(&t.path().join("s"), &src, &[]);
    // The seeder's fast-path address, but claimed for another peer id.
    let fast: Vec<_> = share["addrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|a| a.ends_with("/tls"))
        .map(|a| a.parse().unwrap())
        .collect();
    assert!(!fast.is_empty());
    let other = shoal_net::Keypair::generate_ed25519().public().to_peer_id();
    let ticket = Ticket {
        id: share["id"].as_str().unwrap().parse().unwrap(),
        kind: Kind::File,
        providers: vec![Provider {
            peer: other,
            addrs: fast,
        }],
        capability: None,
        name: None,
    };
    let out = t.path().join("out");
    let g = get(&t.path().join("l"), &ticket.to_string(), &out, &[]);
    let (ok, _, stderr) = g.finish();
    assert!(!ok, "a download from an impostor succeeded: {stderr}");
    assert!(stderr.contains("error:"), "{stderr}");
    assert!(files_under(&out).is_empty());
}

#[test]
fn changed_source_file_is_not_served_and_get_fails_with_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("f.bin");
    std::fs::write(&src, data(2 << 20, 8)).unwrap();
    let (s, share) = seeder(&t.path().join("s"), &src, &[]);
    std::fs::write(&src, data(2 << 20, 9)).unwrap();
    let out = t.path().join("out");
    let g = get(
        &t.path().join("l"),
        share["ticket"].as_str().unwrap(),
        &out,
        &["--stall-timeout", "3s"],
    );
    let (ok, _, stderr) = g.finish();
    assert!(!ok, "a changed file was delivered: {stderr}");
    // Told why at once (it used to wait for the stall timeout, "made no
    // progress", while seeder and leecher looped Request/Reject).
    assert!(
        stderr.contains("the shared file no longer matches content it was shared as"),
        "{stderr}"
    );
    // Only the partial file (kept to resume) may exist, never the final name.
    assert!(!out.join("f.bin").exists());
    let part = out.join("f.bin.shoal-part");
    assert!(part.is_file(), "the partial file is kept to resume");
    let seeder_log = s.drain_err();
    assert!(
        seeder_log.contains("was modified after it was shared"),
        "the seeder should say why: {seeder_log}"
    );

    // Other content, also named f.bin by its ticket, into the same folder: it
    // must not take over the unfinished download's partial file, whether this
    // data dir knows that download or not.
    let kept = std::fs::read(&part).unwrap();
    let other = t.path().join("b").join("f.bin");
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    std::fs::write(&other, data(1 << 20, 10)).unwrap();
    let (_s2, share2) = seeder(&t.path().join("s2"), &other, &[]);
    for (data_dir, says) in [
        ("l", share["id"].as_str().unwrap()),
        ("l3", "has no record of"),
    ] {
        let g = get(
            &t.path().join(data_dir),
            share2["ticket"].as_str().unwrap(),
            &out,
            &["--stall-timeout", "20s"],
        );
        let (ok, _, stderr) = g.finish();
        assert!(
            !ok,
            "another download's partial file was taken over: {stderr}"
        );
        assert!(
            stderr.contains("f.bin.shoal-part") && stderr.contains(says),
            "{stderr}"
        );
        assert_eq!(
            std::fs::read(&part).unwrap(),
            kept,
            "the partial file changed"
        );
        assert!(!out.join("f.bin").exists());
    }
}

/// The `down_rate` values of a `get --json`'s progress lines, after `skip`
/// bytes were done.
/// The rates of the progress lines from `skip` bytes done until the last
/// byte arrived: once every byte is here the file is being written out
/// (synced and renamed, which a loaded disk can make take seconds) and the
/// window's rate decays to 0, which says nothing of the transfer's rate.
fn rates_after(lines: &[String], skip: u64) -> Vec<f64> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            let done = v["done"].as_u64().unwrap_or(0);
            v["event"] == "progress" && done >= skip && v["total"].as_u64() != Some(done)
        })
        .filter_map(|v| v["down_rate"].as_f64())
        .collect()
}

/// `done` and `down_rate` of each progress line, for failure messages.
fn progress_trace(lines: &[String]) -> Vec<(u64, f64)> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "progress")
        .map(|v| {
            (
                v["done"].as_u64().unwrap_or(0),
                v["down_rate"].as_f64().unwrap_or(0.0),
            )
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The rate shown for a download limited to 4 MiB/s is within 10 % of the
/// limit, also after a resume (the resumed bytes do not count as received).
#[test]
fn the_rate_shown_for_a_limited_download_is_the_limit_also_after_a_resume() {
    const LIMIT: f64 = 4.0 * 1024.0 * 1024.0;
    let t = tempfile::tempdir().unwrap();
    let bytes = data(24 << 20, 16);
    let src = t.path().join("f.bin");
    std::fs::write(&src, &bytes).unwrap();
    let (_s, share) = seeder(&t.path().join("s"), &src, &[]);
    let ticket = share["ticket"].as_str().unwrap().to_string();
    let out = t.path().join("out");
    let ldir = t.path().join("l");
    let args = ["--name", "f", "--download-limit", "4MiB"];
    // First run: to 10 MiB, then killed.
    let g = get(&ldir, &ticket, &out, &args);
    let mut first = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let l = g
            .err
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("progress lines in time");
        let done = serde_json::from_str::<Value>(&l)
            .ok()
            .and_then(|v| v["done"].as_u64())
            .unwrap_or(0);
        first.push(l);
        if done >= 10 << 20 {
            break;
        }
    }
    drop(g);
    // Steady state: past the first 2 MiB (start-up).
    let before = rates_after(&first, 2 << 20);
    assert!(before.len() >= 3, "too few progress lines: {first:?}");
    let m = median(before.clone());
    assert!(
        (m - LIMIT).abs() <= 0.1 * LIMIT,
        "rate {m:.0} B/s for a 4 MiB/s limit: {before:?}"
    );
    // Resumed: the bytes already there are not a burst of speed.
    let g = get(&ldir, &ticket, &out, &args);
    let (ok, _, stderr) = g.finish();
    assert!(ok, "resumed get failed: {stderr}");
    let lines: Vec<String> = stderr.lines().map(str::to_owned).collect();
    let after = rates_after(&lines, 0);
    assert!(after.len() >= 3, "too few progress lines: {stderr}");
    assert!(
        after.iter().all(|r| *r <= 1.5 * LIMIT),
        "a rate far over the limit after the resume: {after:?}"
    );
    let m = median(after.clone());
    assert!(
        (m - LIMIT).abs() <= 0.1 * LIMIT,
        "rate {m:.0} B/s after the resume; (done, rate) of each line: {:?}",
        progress_trace(&lines)
    );
    assert_eq!(std::fs::read(out.join("f")).unwrap(), bytes);
}

/// A `get` whose providers cannot be reached says what it is doing (how many
/// it knows, how many attempts, the last failure) instead of staying silent.
#[test]
fn get_says_what_it_does_while_no_provider_answers() {
    let t = tempfile::tempdir().unwrap();
    // A provider at a closed port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let ticket = shoal_core::Ticket {
        id: shoal_core::ContentId::of(b"nobody serves this"),
        kind: shoal_core::Kind::File,
        providers: vec![shoal_core::Provider {
            peer: libp2p_identity::Keypair::generate_ed25519()
                .public()
                .to_peer_id(),
            addrs: vec![format!("/ip4/127.0.0.1/tcp/{port}/tls").parse().unwrap()],
        }],
        capability: None,
        name: None,
    };
    let g = get(
        &t.path().join("l"),
        &ticket.to_string(),
        &t.path().join("out"),
        &["--stall-timeout", "30s"],
    );
    let deadline = std::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    let failure = loop {
        let l = g
            .err
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .unwrap_or_else(|_| panic!("no searching line with a failure: {seen:?}"));
        let v: Value = serde_json::from_str(&l).unwrap_or(Value::Null);
        seen.push(l);
        if v["event"] == "searching" {
            if let Some(e) = v["last_dial_error"].as_str() {
                assert_eq!(v["known_peers"], 1, "{v}");
                assert!(v["dials"].as_u64().unwrap_or(0) >= 1, "{v}");
                break e.to_owned();
            }
        }
    };
    eprintln!("last failure: {failure}");
    assert!(
        failure.contains(&port.to_string()) && failure.contains("refused"),
        "{failure}"
    );
    drop(g);
}

/// The foreground `shoal share --json` reports its uploads on stderr: an
/// `uploads` line each second they change, naming the peer served (its
/// address and path) and the bytes sent; at the end a `served` line with the
/// total and how many peers were served. The first stdout line stays the
/// ticket's.
#[test]
fn share_reports_who_it_serves_and_what_it_sent() {
    let t = tempfile::tempdir().unwrap();
    let size = 3usize << 20;
    let src = t.path().join("f.bin");
    std::fs::write(&src, data(size, 21)).unwrap();
    let (s, share) = seeder(&t.path().join("s"), &src, &[]);
    assert!(share["ticket"]
        .as_str()
        .is_some_and(|t| t.starts_with("shoal1")));
    let out = t.path().join("out");
    // At 1 MiB/s the download lasts about 3 s: the seeder sees it going on.
    let g = get(
        &t.path().join("l"),
        share["ticket"].as_str().unwrap(),
        &out,
        &["--download-limit", "1MiB"],
    );
    let (ok, _, stderr) = g.finish();
    assert!(ok, "get failed: {stderr}");
    // The seeder's uploads lines, up to the one with every byte sent.
    let deadline = std::time::Instant::now() + WAIT;
    let mut uploads = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let l = s.err.recv_timeout(left).unwrap_or_else(|_| {
            panic!("no uploads line with all {size} bytes sent in time: {uploads:?}")
        });
        let Ok(v) = serde_json::from_str::<Value>(&l) else {
            continue;
        };
        if v["event"] != "uploads" {
            continue;
        }
        uploads.push(v.clone());
        if v["uploaded"].as_u64() >= Some(size as u64) {
            break;
        }
    }
    let last = uploads.last().unwrap();
    assert_eq!(last["shares"][0]["id"], share["id"], "{last}");
    // While it ran, a line named the peer being served and where it came from.
    let serving = uploads
        .iter()
        .find(|v| v["peers"].as_array().is_some_and(|p| !p.is_empty()))
        .unwrap_or_else(|| panic!("no uploads line names a peer: {uploads:?}"));
    let p = &serving["peers"][0];
    assert!(
        p["peer"]
            .as_str()
            .is_some_and(|id| id.starts_with("12D3") && id != share["peer"].as_str().unwrap()),
        "{p}"
    );
    assert!(
        p["address"]
            .as_str()
            .is_some_and(|a| a.contains("127.0.0.1")),
        "{p}"
    );
    assert!(
        ["fast", "direct"].contains(&p["path"].as_str().unwrap_or("")),
        "{p}"
    );
    assert!(serving["up_rate"].as_f64().unwrap() > 0.0, "{serving}");
    // Stopped with SIGTERM, it says what it sent to how many peers.
    let pid = s.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let (status, _, err) = s.finish_status();
    assert!(status.success(), "{err}");
    let served = err
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "served")
        .unwrap_or_else(|| panic!("no served line: {err}"));
    assert!(served["uploaded"].as_u64() >= Some(size as u64), "{served}");
    assert_eq!(served["peers_served"], 1, "{served}");
}

/// `get --seed-ratio 1` keeps serving after the download until it has sent
/// the file once (here to a second leecher that can only get it from the
/// first), then exits by itself, saying so.
#[test]
fn get_seed_ratio_serves_until_the_ratio_is_reached_then_exits() {
    let t = tempfile::tempdir().unwrap();
    let size = 2usize << 20;
    let src = t.path().join("f.bin");
    std::fs::write(&src, data(size, 33)).unwrap();
    let (s, share) = seeder(&t.path().join("s"), &src, &[]);
    let first = get(
        &t.path().join("l1"),
        share["ticket"].as_str().unwrap(),
        &t.path().join("out1"),
        &["--seed-ratio", "1"],
    );
    // The first leecher's summary (its stdout) says it is done; then it seeds.
    let summary: Value = serde_json::from_str(&first.line()).expect("a JSON summary");
    assert_eq!(summary["bytes"], size as u64, "{summary}");
    // The seeder goes: the second leecher can only get it from the first.
    drop(s);
    let from_l1 = Ticket {
        id: share["id"].as_str().unwrap().parse::<ContentId>().unwrap(),
        kind: Kind::File,
        providers: vec![Provider {
            peer: summary["peer"].as_str().unwrap().parse().unwrap(),
            addrs: summary["addrs"]
                .as_array()
                .expect("the summary names where it serves")
                .iter()
                .map(|a| a.as_str().unwrap().parse().unwrap())
                .collect(),
        }],
        capability: None,
        name: None,
    };
    let second = get(
        &t.path().join("l2"),
        &from_l1.to_string(),
        &t.path().join("out2"),
        &[],
    );
    let (ok, _, stderr) = second.finish();
    assert!(ok, "the second leecher failed: {stderr}");
    // The first one then stops by itself.
    let (status, _, err) = first.finish_status();
    assert!(status.success(), "{err}");
    let seeded = err
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "seeded")
        .unwrap_or_else(|| panic!("no seeded line: {err}"));
    assert_eq!(seeded["why"], "ratio reached", "{seeded}");
    assert!(seeded["ratio"].as_f64().unwrap() >= 1.0, "{seeded}");
}

/// On a terminal (a pseudo-terminal made by `script`, from util-linux),
/// `shoal share` prints the ticket, the command to run on the other machine,
/// and a live status line of what it serves; at the end what it sent.
#[test]
fn share_on_a_terminal_shows_a_status_line() {
    if !shoal_testkit::can_run(
        "share_on_a_terminal_shows_a_status_line",
        shoal_testkit::program("script", "apt-get install util-linux"),
    ) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("f.bin");
    std::fs::write(&src, data(100_000, 5)).unwrap();
    let shoal_cmd = format!(
        "{} --data-dir {} share {} --for 3s --listen 127.0.0.1:0",
        env!("CARGO_BIN_EXE_shoal"),
        t.path().join("s").display(),
        src.display()
    );
    let mut cmd = Command::new("script");
    cmd.args(["-qfec", &shoal_cmd, "/dev/null"])
        .env("SHOAL_MDNS", "off")
        .env("SHOAL_UPNP", "off");
    let (ok, out, err) = Proc::spawn(cmd, WAIT).finish();
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("shoal1"), "no ticket: {out}");
    assert!(
        out.contains("on the other machine, run: shoal get"),
        "no hint: {out}"
    );
    assert!(out.contains("serving 0 peers"), "no status line: {out}");
    assert!(
        out.contains("sent 0 B to 0 peers this run"),
        "no last word: {out}"
    );
}
