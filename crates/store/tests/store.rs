//! The Store facade and the database: indexing, listing, search, removal, reopening.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use shoal_core::manifest::Manifest;
use shoal_core::{ContentId, Kind};
use shoal_store::db::{Db, SCHEMA_VERSION};
use shoal_store::hash::hash_file_with_piece_size;
use shoal_store::walk::SkipReason;
use shoal_store::{hash_path, Blob, Hashed, Store, StoreError, Visibility};

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// A folder with nested dirs, empty files, unicode names and spaces, plus a
/// multi-piece file. Returns (relative path, contents), sorted by path.
fn sample_folder(root: &Path) -> Vec<(String, Vec<u8>)> {
    let big: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    let mut files = vec![
        (
            "ñandú/日本語.txt".to_string(),
            "こんにちは".as_bytes().to_vec(),
        ),
        ("a b/c d/e f.txt".to_string(), b"spaces".to_vec()),
        ("a b/empty".to_string(), Vec::new()),
        ("top.bin".to_string(), big),
        (
            "deep/er/and/deeper/holiday photos.jpg".to_string(),
            vec![7u8; 5000],
        ),
        ("z-empty-too".to_string(), Vec::new()),
    ];
    for (rel, data) in &files {
        write(root, rel, data);
    }
    std::fs::create_dir_all(root.join("empty dir/inner")).unwrap();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

#[test]
fn folder_is_indexed_with_paths_sizes_and_ids_and_survives_reopen() {
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let root = src.path().join("my folder");
    let files = sample_folder(&root);
    for (rel, _) in &files {
        age(&root.join(rel), 3600);
    }

    let store = Store::open(data.path()).unwrap();
    let share = store.add(&root, None, &|_| {}).unwrap();
    assert_eq!(share.kind, Kind::Collection);
    assert_eq!(share.name, "my folder");
    assert_eq!(share.path, root.canonicalize().unwrap());
    assert_eq!(share.files, files.len() as u64);
    assert_eq!(
        share.size,
        files.iter().map(|(_, d)| d.len() as u64).sum::<u64>()
    );
    assert_eq!(share.visibility, Visibility::Unlisted);

    // The collection id is the BLAKE3 of the manifest of these files.
    let manifest = Manifest::decode(&store.manifest(&share.id).unwrap().unwrap()).unwrap();
    assert_eq!(manifest.id(), share.id);
    assert_eq!(ContentId::of(&manifest.encode()), share.id);
    // Only the innermost empty folder is listed; "empty dir" is implied.
    assert_eq!(
        manifest.empty_folders().collect::<Vec<_>>(),
        ["empty dir/inner"]
    );

    let check = |store: &Store| {
        let listed = store.share_files(&share.id).unwrap();
        assert_eq!(listed.len(), files.len());
        for (f, (rel, bytes)) in listed.iter().zip(&files) {
            assert_eq!(&f.path, rel);
            assert_eq!(f.size, bytes.len() as u64);
            assert_eq!(f.id, ContentId::of(bytes), "{rel}");
            // Written an hour ago: old enough to be trusted by the next add.
            assert!(f.mtime_ns.is_some());
            let ob = store.outboard(&f.id).unwrap().unwrap();
            assert_eq!(ob.root(), f.id);
            // Every file can be served from its source.
            let src_path = store.source_of(&f.id).unwrap().unwrap();
            assert_eq!(std::fs::read(src_path).unwrap(), *bytes);
        }
        assert_eq!(store.shares().unwrap(), vec![share.clone()]);
        assert_eq!(store.share(&share.id).unwrap().as_ref(), Some(&share));
        assert!(store.outboard(&share.id).unwrap().is_some());
        // The collection is served as its manifest, each file from its source.
        let Some(Blob::Manifest(bytes)) = store.blob(&share.id).unwrap() else {
            panic!("a collection is served as its manifest");
        };
        assert_eq!(ContentId::of(&bytes), share.id);
        let top = ContentId::of(&files.iter().find(|f| f.0 == "top.bin").unwrap().1);
        assert_eq!(
            store.blob(&top).unwrap(),
            Some(Blob::File(share.path.join("top.bin")))
        );
        assert_eq!(store.blob(&ContentId::of(b"unknown")).unwrap(), None);
    };
    check(&store);
    drop(store);
    let store = Store::open(data.path()).unwrap();
    check(&store);
    // Outboard files exist only for multi-piece contents (top.bin).
    let obao: Vec<_> = std::fs::read_dir(data.path().join("outboards"))
        .unwrap()
        .collect();
    assert_eq!(obao.len(), 1);
}

#[test]
fn adding_the_same_content_again_returns_the_existing_share() {
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    write(src.path(), "a.txt", b"hello");
    write(src.path(), "copy.txt", b"hello");
    let store = Store::open(data.path()).unwrap();
    let first = store.add(&src.path().join("a.txt"), None, &|_| {}).unwrap();
    let again = store
        .add_with_report(&src.path().join("copy.txt"), Some("other"), &|_| {})
        .unwrap();
    assert!(again.existed);
    assert_eq!(again.share, first);
    assert_eq!(store.shares().unwrap().len(), 1);
    assert_eq!(first.id, ContentId::of(b"hello"));
    assert_eq!(first.kind, Kind::File);
    assert_eq!(first.files, 1);
}

#[test]
fn data_dir_is_private() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("shoal-data");
    Store::open(&dir).unwrap();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert!(dir.join("shoal.db").is_file());
    assert!(dir.join("outboards").is_dir());
}

#[test]
fn search_finds_files_by_a_word_and_survives_hostile_queries() {
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let root = src.path().join("Vacation 2026");
    sample_folder(&root);
    let store = Store::open(data.path()).unwrap();
    let share = store.add(&root, None, &|_| {}).unwrap();

    let hits = store.search("holiday").unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(
        hits[0].path.as_deref(),
        Some("deep/er/and/deeper/holiday photos.jpg")
    );
    assert_eq!(hits[0].share, share.id);
    assert_eq!(hits[0].id, ContentId::of(&[7u8; 5000]));
    assert_eq!(hits[0].size, 5000);

    // A word of the share's name finds the share itself.
    let hits = store.search("vacation").unwrap();
    assert!(hits.iter().any(|h| h.path.is_none() && h.id == share.id));
    // Prefixes, case and diacritics are forgiving.
    assert!(!store.search("HOLI").unwrap().is_empty());
    assert!(!store.search("nandu").unwrap().is_empty());
    assert!(!store.search("日本語").unwrap().is_empty());
    // Several words must all match.
    assert_eq!(store.search("holiday photos").unwrap().len(), 1);
    assert!(store.search("holiday nothere").unwrap().is_empty());

    for hostile in [
        "\"",
        "AND (",
        "OR",
        "NOT",
        "*",
        "\"holiday",
        "holiday\"",
        "a:b",
        "NEAR(",
        "^",
        "((((",
        "-",
        "col:holiday",
        "'; DROP TABLE shares; --",
        "",
    ] {
        let res = store.search(hostile);
        assert!(res.is_ok(), "query {hostile:?} failed: {res:?}");
    }
    assert_eq!(store.search("\"holiday").unwrap().len(), 1);
    // Operators are plain words: "and" is a folder name in the path, "not" is not.
    assert_eq!(store.search("AND holiday").unwrap().len(), 1);
    assert_eq!(store.search("NOT holiday").unwrap().len(), 0);
    assert_eq!(store.shares().unwrap().len(), 1);
}

#[test]
fn remove_deletes_index_and_unreferenced_outboards_but_never_source_files() {
    let data = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let root = src.path().join("photos");
    let files = sample_folder(&root);
    // A separate file share with the same big content as a file in the folder:
    // its outboard stays referenced after the folder is removed.
    let big = files
        .iter()
        .find(|(p, _)| p == "top.bin")
        .unwrap()
        .1
        .clone();
    write(src.path(), "big-copy.bin", &big);

    let store = Store::open(data.path()).unwrap();
    let folder = store.add(&root, None, &|_| {}).unwrap();
    let single = store
        .add(&src.path().join("big-copy.bin"), None, &|_| {})
        .unwrap();
    assert_eq!(store.shares().unwrap().len(), 2);

    assert!(store.remove(&folder.id).unwrap());
    assert!(!store.remove(&folder.id).unwrap());
    assert!(store.share(&folder.id).unwrap().is_none());
    assert!(store.share_files(&folder.id).unwrap().is_empty());
    assert!(store.search("holiday").unwrap().is_empty());
    assert!(store.outboard(&folder.id).unwrap().is_none());
    assert!(store
        .outboard(&ContentId::of(&[7u8; 5000]))
        .unwrap()
        .is_none());
    // Still referenced by the single-file share.
    assert!(store.outboard(&single.id).unwrap().is_some());
    for (rel, bytes) in &files {
        assert_eq!(&std::fs::read(root.join(rel)).unwrap(), bytes, "{rel}");
    }

    assert!(store.remove(&single.id).unwrap());
    assert!(store.outboard(&single.id).unwrap().is_none());
    assert_eq!(
        std::fs::read_dir(data.path().join("outboards"))
            .unwrap()
            .count(),
        0
    );
    assert!(src.path().join("big-copy.bin").is_file());
    assert!(store.shares().unwrap().is_empty());
}

#[test]
fn migrations_run_once_and_a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let db = Db::open(&path).unwrap();
    assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
    db.upsert_peer("12D3KooWpeer", &["/ip4/127.0.0.1/tcp/1".into()], 5)
        .unwrap();
    drop(db);
    // Re-running 0001 would fail on CREATE TABLE; reopening must not.
    let db = Db::open(&path).unwrap();
    assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
    let peers = db.peers().unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].addrs, vec!["/ip4/127.0.0.1/tcp/1".to_string()]);
    drop(db);

    let conn = rusqlite_set_version(&path, SCHEMA_VERSION + 1);
    drop(conn);
    match Db::open(&path) {
        Err(StoreError::SchemaTooNew { found, known }) => {
            assert_eq!((found, known), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

fn rusqlite_set_version(path: &Path, v: i64) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(&format!("PRAGMA user_version = {v}"))
        .unwrap();
    conn
}

#[test]
fn symlinks_and_fifos_are_skipped_and_reported() {
    let src = tempfile::tempdir().unwrap();
    let root = src.path().join("f");
    write(&root, "real.txt", b"real");
    std::os::unix::fs::symlink(root.join("real.txt"), root.join("link.txt")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("etc-link")).unwrap();
    let fifo = root.join("pipe");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let Hashed::Folder(d) = hash_path(&root, &|_| {}).unwrap() else {
        panic!("expected a folder");
    };
    assert_eq!(d.files.len(), 1);
    assert_eq!(d.files[0].path, "real.txt");
    let reasons: Vec<_> = d.skipped.iter().map(|s| s.reason).collect();
    assert_eq!(
        reasons
            .iter()
            .filter(|r| **r == SkipReason::Symlink)
            .count(),
        2
    );
    if ok {
        assert!(reasons.contains(&SkipReason::Fifo));
    }
}

#[test]
fn non_utf8_name_is_an_error_naming_the_path() {
    use std::os::unix::ffi::OsStrExt;
    let src = tempfile::tempdir().unwrap();
    let root = src.path().join("f");
    std::fs::create_dir_all(&root).unwrap();
    let bad = root.join(std::ffi::OsStr::from_bytes(b"bad\xffname"));
    std::fs::write(&bad, b"x").unwrap();
    let err = hash_path(&root, &|_| {}).unwrap_err();
    assert!(matches!(err, StoreError::NonUtf8Name { .. }), "{err:?}");
    assert!(err.to_string().contains("bad"), "{err}");
}

#[test]
fn ten_thousand_tiny_files_are_indexed() {
    let src = tempfile::tempdir().unwrap();
    let root = src.path().join("many");
    for d in 0..100 {
        let dir = root.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            std::fs::write(dir.join(format!("f{f:03}")), format!("{d}-{f}")).unwrap();
        }
    }
    let start = std::time::Instant::now();
    let h = hash_path(&root, &|_| {}).unwrap();
    let took = start.elapsed();
    let Hashed::Folder(d) = h else {
        panic!("expected a folder")
    };
    assert_eq!(d.files.len(), 10_000);
    assert_eq!(d.files[123].path, "d001/f023");
    assert_eq!(d.files[123].id, ContentId::of(b"1-23"));
    println!("hashed 10,000 tiny files in {took:?}");
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(data.path()).unwrap();
    let start = std::time::Instant::now();
    let added = store.add_hashed(&Hashed::Folder(d), None).unwrap();
    println!("recorded them in {:?}", start.elapsed());
    assert_eq!(added.share.files, 10_000);
    let all = store.share_files(&added.share.id).unwrap();
    assert_eq!(all.len(), 10_000);
    // Pages of the list: the same files in the same order, with the totals.
    let (count, bytes, page) = store.share_files_page(&added.share.id, 9_990, 50).unwrap();
    assert_eq!(count, 10_000);
    assert_eq!(bytes, all.iter().map(|f| f.size).sum::<u64>());
    assert_eq!(page, all[9_990..]);
    let (_, _, none) = store
        .share_files_page(&added.share.id, u64::MAX, 10)
        .unwrap();
    assert!(none.is_empty());
    let (count, _, _) = store
        .share_files_page(&ContentId::of(b"no such share"), 0, 10)
        .unwrap();
    assert_eq!(count, 0);
}

#[test]
fn sharing_a_folder_that_holds_the_data_dir_leaves_it_and_partial_downloads_out() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path().canonicalize().unwrap();
    write(&home, "notes.txt", b"notes");
    write(&home, "movie.mkv.shoal-part", b"half a movie");
    let store = Store::open(&home.join(".local/share/shoal")).unwrap();
    let added = store.add_with_report(&home, None, &|_| {}).unwrap();
    assert_eq!(added.share.files, 1);
    let files = store.share_files(&added.share.id).unwrap();
    assert_eq!(files[0].path, "notes.txt");
    let reasons: Vec<_> = added.skipped.iter().map(|s| s.reason).collect();
    assert!(
        reasons.contains(&SkipReason::PartialDownload),
        "{reasons:?}"
    );
    // `.local` itself is walked; the data dir below it is skipped.
    assert!(added
        .skipped
        .iter()
        .any(|s| s.reason == SkipReason::DataDir && s.path.ends_with(".local/share/shoal")));
}

#[test]
fn a_folder_whose_own_path_is_not_utf8_is_stored_exactly_and_lists_as_json() {
    use std::os::unix::ffi::OsStrExt;
    let src = tempfile::tempdir().unwrap();
    let root = src
        .path()
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9 folder"));
    write(&root, "inside.txt", b"inside");
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(data.path()).unwrap();
    let share = store.add(&root, None, &|_| {}).unwrap();
    let store = Store::open(data.path()).unwrap();
    let listed = store.share(&share.id).unwrap().unwrap();
    assert_eq!(listed.path, root.canonicalize().unwrap());
    assert_eq!(
        store.source_of(&ContentId::of(b"inside")).unwrap().unwrap(),
        root.canonicalize().unwrap().join("inside.txt")
    );
    let json = serde_json::to_value(&listed).unwrap();
    assert!(json["path"]
        .as_str()
        .unwrap()
        .ends_with("caf\u{fffd} folder"));
    assert_eq!(json["visibility"], "unlisted");
    assert_eq!(json["kind"], "folder");
    assert_eq!(json["id"], share.id.to_string());
}

#[test]
fn visibility_of_content_is_the_most_open_share_holding_it() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("data")).unwrap();
    let folder = tmp.path().join("secret");
    write(&folder, "plans.txt", b"the plans");
    let plans = ContentId::of(b"the plans");
    let share = store.add(&folder, None, &|_| {}).unwrap();
    store
        .set_visibility(&share.id, Visibility::Private)
        .unwrap();

    // A file inside a private folder is private, and so is the folder itself.
    assert_eq!(
        store.db().visibility_of(&plans).unwrap(),
        Some(Visibility::Private)
    );
    assert_eq!(
        store.db().visibility_of(&share.id).unwrap(),
        Some(Visibility::Private)
    );
    // Unknown content has no visibility.
    assert_eq!(
        store.db().visibility_of(&ContentId::of(b"nope")).unwrap(),
        None
    );

    // The same bytes shared again on their own, unlisted: the most open wins.
    let copy = tmp.path().join("copy.txt");
    std::fs::write(&copy, b"the plans").unwrap();
    store.add(&copy, None, &|_| {}).unwrap();
    assert_eq!(
        store.db().visibility_of(&plans).unwrap(),
        Some(Visibility::Unlisted)
    );
    store.set_visibility(&plans, Visibility::Public).unwrap();
    assert_eq!(
        store.db().visibility_of(&plans).unwrap(),
        Some(Visibility::Public)
    );
    // The private folder stays private.
    assert_eq!(
        store.db().visibility_of(&share.id).unwrap(),
        Some(Visibility::Private)
    );
}

/// Sets a file's modification time `secs` seconds into the past.
fn age(path: &Path, secs: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(secs))
        .unwrap();
}

/// Sharing a folder again reads only what changed: files with the size and
/// modification time an earlier share of the same path recorded are taken from
/// that record, a changed file is hashed again, and the new share is exactly
/// what hashing everything would have given.
#[test]
fn sharing_a_folder_again_hashes_only_the_files_that_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("docs");
    let files = sample_folder(&root);
    for (rel, _) in &files {
        age(&root.join(rel), 3600);
    }
    let store = Store::open(&tmp.path().join("data")).unwrap();
    let total: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();

    let first = store.add_with_report(&root, None, &|_| {}).unwrap();
    assert!(!first.existed);
    assert_eq!(first.reused_bytes, 0);

    let seen = std::sync::atomic::AtomicU64::new(0);
    let again = store
        .add_with_report(&root, None, &|n| {
            seen.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        })
        .unwrap();
    assert!(again.existed);
    assert_eq!(again.share.id, first.share.id);
    assert_eq!(again.reused_bytes, total, "nothing was read again");
    assert_eq!(seen.into_inner(), total, "progress still covers every byte");

    // One file changes (new bytes, new time): only it is hashed again.
    let changed = root.join("top.bin");
    std::fs::write(&changed, vec![9u8; 700_000]).unwrap();
    age(&changed, 1800);
    let third = store.add_with_report(&root, None, &|_| {}).unwrap();
    assert!(!third.existed);
    assert_eq!(third.reused_bytes, total - 700_000);
    let Hashed::Folder(full) = hash_path(&root, &|_| {}).unwrap() else {
        panic!("a folder");
    };
    assert_eq!(third.share.id, full.id, "same id as hashing everything");
    assert_eq!(
        store.manifest(&third.share.id).unwrap().unwrap(),
        full.manifest.encode()
    );

    // Same size, same time, other bytes (a time set back by hand): the record is
    // trusted at indexing, and serving, which re-verifies every piece, refuses
    // the changed file's pieces instead of sending them.
    let mut bytes = std::fs::read(&changed).unwrap();
    bytes[0] ^= 1;
    let t = std::fs::metadata(&changed).unwrap().modified().unwrap();
    std::fs::write(&changed, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&changed)
        .unwrap()
        .set_modified(t)
        .unwrap();
    let fourth = store.add_with_report(&root, None, &|_| {}).unwrap();
    assert_eq!(fourth.share.id, third.share.id);
    let id = ContentId::of(&vec![9u8; 700_000]);
    let ob = store.outboard(&id).unwrap().unwrap();
    let mut buf = Vec::new();
    assert!(matches!(
        shoal_store::read_piece(&changed, &ob, 0, &mut buf),
        Err(StoreError::SourceChanged { .. })
    ));
}

/// A file modified just before it is shared gets no recorded time (a write in
/// the same timestamp tick would not change it), so the next share hashes it
/// again; once its time is old enough the record is kept and used.
#[test]
fn a_freshly_written_file_is_hashed_again_until_its_time_can_be_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("new.bin");
    std::fs::write(&file, vec![5u8; 300_000]).unwrap();
    let store = Store::open(&tmp.path().join("data")).unwrap();

    let first = store.add_with_report(&file, None, &|_| {}).unwrap();
    assert_eq!(first.share.kind, Kind::File);
    let again = store.add_with_report(&file, None, &|_| {}).unwrap();
    assert!(again.existed);
    assert_eq!(again.reused_bytes, 0, "a fresh time is not trusted");

    age(&file, 60);
    let aged = store.add_with_report(&file, None, &|_| {}).unwrap();
    assert_eq!(
        aged.reused_bytes, 0,
        "hashed once more, and its time recorded"
    );
    let last = store.add_with_report(&file, None, &|_| {}).unwrap();
    assert_eq!(last.reused_bytes, 300_000);
    assert_eq!(last.share.id, first.share.id);

    // Another size: hashed again, a new share.
    std::fs::write(&file, vec![5u8; 300_001]).unwrap();
    age(&file, 60);
    let grown = store.add_with_report(&file, None, &|_| {}).unwrap();
    assert!(!grown.existed);
    assert_eq!(grown.reused_bytes, 0);
    assert_eq!(grown.share.id, ContentId::of(&vec![5u8; 300_001]));
}

/// A content keeps the first outboard recorded for it: an outboard of the same
/// bytes cut at another piece size (an older version's default, or what a
/// provider chose for a download of content this node already shares) is not
/// written over it, so the share goes on serving. Sharing the file again reuses
/// that outboard instead of hashing the file at today's default each time.
#[test]
fn an_outboard_of_another_piece_size_never_replaces_the_one_a_share_serves_from() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("big.bin");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    age(&file, 3600);
    let id = ContentId::of(&data);
    let store = Store::open(&tmp.path().join("data")).unwrap();

    // Shared at 64 KiB pieces (46 of them), not today's default of 256 KiB.
    let old = hash_file_with_piece_size(&file, 64 * 1024, &|_| {}).unwrap();
    store.put_outboard(&old).unwrap();
    let first = store.add_with_report(&file, None, &|_| {}).unwrap();
    assert!(!first.existed);
    assert_eq!(first.share.id, id);
    let served = store.outboard(&id).unwrap().unwrap();
    assert_eq!(served.layout().piece_size(), 64 * 1024);
    assert_eq!(served.encode(), old.encode());

    // A download of the same content offered at 1 MiB pieces keeps its outboard
    // in memory; the stored one stays whole and readable.
    let other = hash_file_with_piece_size(&file, 1024 * 1024, &|_| {}).unwrap();
    store.put_outboard(&other).unwrap();
    let dest = tmp.path().join("again.bin");
    let mut partial = store.open_download(other, &dest, None).unwrap();
    for (i, piece) in data.chunks(1024 * 1024).enumerate() {
        partial.write_piece(i as u32, piece).unwrap();
    }
    assert_eq!(partial.finish().unwrap(), dest);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    let still = store.outboard(&id).unwrap().unwrap();
    assert_eq!(still.encode(), old.encode());
    let mut buf = Vec::new();
    for i in 0..still.layout().num_pieces() {
        shoal_store::read_piece(&file, &still, i, &mut buf).unwrap();
    }

    // Shared again: the recorded outboard stands for the unchanged file.
    let again = store.add_with_report(&file, None, &|_| {}).unwrap();
    assert!(again.existed);
    assert_eq!(again.reused_bytes, data.len() as u64);
    assert_eq!(store.outboard(&id).unwrap().unwrap().encode(), old.encode());
}
