//! A hostile seeder against the real `shoal get`: a collection whose manifest
//! bytes hash to the ticket's id but name a path escaping the download folder.
//! The downloader must refuse the manifest with a clear error and write nothing,
//! neither outside `-o` nor inside it.
//!
//! The seeder is an in-process `shoal_node` peer on 127.0.0.1 (mDNS, UPnP and
//! relays off: `NetConfig::default()`). No honest `shoal share` can produce
//! such a manifest (`Manifest::new` refuses the paths), so the test records the
//! share row itself through the store's public `Db::insert_share`, which stores
//! manifest bytes as given: the node serves a collection's manifest straight
//! from that row. The downloader is the real binary in its own process, killed
//! by PID if it outlives the bound.

mod support;

use std::path::Path;
use std::time::Duration;

use shoal_core::{ContentId, Kind};
use shoal_node::host::{Host, HostConfig};
use shoal_store::db::NewShare;
use shoal_store::{Share, Visibility};
use support::{files_under, shoal, Proc};

/// Bound on the peer's start and on the downloader's whole run.
const WAIT: Duration = Duration::from_secs(60);

/// A version 1 manifest (crates/core/src/manifest.rs) listing one 5-byte file
/// at `path`, encoded by hand because `Manifest::new` refuses such paths.
fn manifest_naming(path: &str) -> Vec<u8> {
    let mut bytes = b"shoal-manifest".to_vec();
    bytes.push(1); // version
    bytes.push(1); // one entry
    let len = u8::try_from(path.len()).expect("the test's paths fit a one-byte varint");
    assert!(len < 0x80, "a one-byte varint holds at most 127");
    bytes.push(len);
    bytes.extend_from_slice(path.as_bytes());
    bytes.push(5); // size
    bytes.extend_from_slice(ContentId::of(b"owned").as_bytes());
    bytes
}

/// Serves `manifest` as collection content from an in-process peer on
/// loopback, runs `shoal get TICKET -o OUT --name c` against it, and checks
/// that the download fails within [`WAIT`] saying the manifest is refused
/// (with `why`, the manifest check's own words), that none of `escapes`
/// exists afterwards, and that OUT holds nothing.
fn assert_refused(root: &Path, manifest: &[u8], why: &str, escapes: &[&Path]) {
    let id = ContentId::of(manifest);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let seeder = rt
        .block_on(async {
            tokio::time::timeout(
                WAIT,
                Host::start(&root.join("seeder"), HostConfig::default()),
            )
            .await
        })
        .expect("the seeder starts in time")
        .expect("the seeder starts");
    let share = Share {
        id,
        kind: Kind::Collection,
        name: "c".to_owned(),
        path: root.join("nowhere"),
        size: 5,
        files: 1,
        visibility: Visibility::Unlisted,
        added_at: 0,
    };
    let recorded = seeder
        .store()
        .db()
        .insert_share(&NewShare {
            share: &share,
            manifest: Some(manifest),
            files: &[],
            outboards: &[],
            mtime_ns: None,
        })
        .expect("the store records the share");
    assert!(recorded, "a new share");
    let ticket = seeder.ticket(&share);
    assert!(
        !ticket.providers.is_empty() && !ticket.providers[0].addrs.is_empty(),
        "the ticket names the seeder's loopback addresses: {ticket:?}"
    );

    let out = root.join("dl").join("out");
    let mut cmd = shoal(&root.join("leecher"));
    cmd.arg("--no-daemon")
        .arg("get")
        .arg(ticket.to_string())
        .arg("-o")
        .arg(&out)
        .args(["--name", "c"]);
    let (status, _, stderr) = Proc::spawn(cmd, WAIT).finish_status();
    // The seeder's tasks run on the runtime's workers; stop them now.
    drop(seeder);
    drop(rt);

    assert!(
        !status.success(),
        "a hostile manifest was accepted: {stderr}"
    );
    assert!(
        stderr.contains(&format!("the manifest of collection {id} is refused")),
        "the error should say the manifest is refused: {stderr}"
    );
    assert!(
        stderr.contains(why),
        "the error should say why ({why}): {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    for p in escapes {
        assert!(!p.exists(), "{} was created", p.display());
    }
    // `get` creates OUT itself; nothing may appear in it for a refused manifest.
    let inside: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(inside.is_empty(), "written under OUT: {inside:?}");
    assert!(files_under(&root.join("dl")).is_empty());
}

#[test]
fn manifest_with_dotdot_paths_is_refused_by_get_and_nothing_is_written() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    // Relative to the collection's folder OUT/c: "../x" is OUT/x (outside the
    // collection), "../../x" is OUT/../x (outside OUT).
    for (case, path) in [("one", "../x"), ("two", "../../x")] {
        let dir = root.join(case);
        let out = dir.join("dl").join("out");
        assert_refused(
            &dir,
            &manifest_naming(path),
            "has a '..' component",
            &[&out.join("x"), &dir.join("dl").join("x"), &out.join("c")],
        );
    }
}

#[test]
fn manifest_with_an_absolute_path_is_refused_by_get_and_nothing_is_written() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path();
    // An absolute path into the test's own temp dir, so that the check below
    // sees whether anything was written there.
    let target = root.join("abs").join("x");
    let path = target.to_str().expect("a UTF-8 temp path");
    assert_refused(
        root,
        &manifest_naming(path),
        "is absolute",
        &[&target, &root.join("dl/out/c")],
    );
}

// The manifest format has no symbolic links (every entry is a regular file),
// so a hostile seeder cannot name one; a symlink already in the way on the
// downloader's side is the node's `UnsafeDestination` case, tested in
// crates/node/tests/protocol.rs (`symlinked_folder_in_the_destination_is_refused`).
