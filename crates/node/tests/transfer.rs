//! End-to-end transfers between in-process nodes over duplex pipes.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use shoal_core::Kind;
use shoal_node::{BoxStream, NodeConfig};
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_from_one_seeder_to_one_leecher_is_identical() {
    timeout(TEST_TIMEOUT, async {
        let seeder = TestNode::new(1);
        let data = random_bytes(8 << 20, 1);
        let share = seeder.share_bytes("src.bin", &data);
        let leecher = TestNode::new(2);
        let out = leecher.path("out");
        let conn = PipeConnector::new(leecher.id, &[&seeder]);
        let mut h = leecher
            .node
            .download(share.id, Kind::File, &out, Some("file.bin"), conn);
        let path = h.result().await.expect("download");
        assert_eq!(path, out.join("file.bin"));
        assert!(std::fs::read(&path).expect("read") == data, "bytes differ");
        let p = h.progress().borrow().clone();
        assert_eq!(p.pieces_done, 32);
        assert_eq!(p.done_bytes, 8 << 20);
    })
    .await
    .expect("timed out");
}

fn tree(root: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    fn walk(base: &std::path::Path, dir: &std::path::Path, out: &mut Vec<(String, Vec<u8>)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p
                .strip_prefix(base)
                .expect("prefix")
                .to_string_lossy()
                .into_owned();
            if p.is_dir() {
                out.push((format!("{rel}/"), Vec::new()));
                walk(base, &p, out);
            } else {
                out.push((rel, std::fs::read(&p).expect("read")));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folder_from_one_seeder_to_one_leecher_is_identical() {
    timeout(TEST_TIMEOUT, async {
        let seeder = TestNode::new(1);
        let src = seeder.path("src");
        std::fs::create_dir_all(src.join("sub/deep")).expect("mkdir");
        std::fs::create_dir_all(src.join("ünïcødé 目录")).expect("mkdir");
        std::fs::write(src.join("a.txt"), b"hello").expect("write");
        std::fs::write(src.join("empty"), b"").expect("write");
        std::fs::write(
            src.join("sub/deep/big.bin"),
            random_bytes(3 << 20 | 12345, 7),
        )
        .expect("write");
        std::fs::write(src.join("ünïcødé 目录/ファイル.txt"), "データ".repeat(1000))
            .expect("write");
        let share = seeder.share(&src);
        assert_eq!(share.kind, Kind::Collection);

        let leecher = TestNode::new(2);
        let out = leecher.path("out");
        let conn = PipeConnector::new(leecher.id, &[&seeder]);
        let mut h = leecher
            .node
            .download(share.id, Kind::Collection, &out, Some("tree"), conn);
        let root = h.result().await.expect("download");
        assert_eq!(root, out.join("tree"));
        let got = tree(&root);
        let want = tree(&src);
        assert_eq!(got.len(), want.len());
        assert!(got == want, "trees differ");
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_seeder_six_leechers_all_complete_and_leechers_trade() {
    timeout(Duration::from_secs(120), async {
        let seeder = TestNode::new(0);
        let data = random_bytes(16 << 20, 3);
        let share = seeder.share_bytes("src.bin", &data);
        let leechers: Vec<TestNode> = (1..=6).map(TestNode::new).collect();
        let mut handles = Vec::new();
        for (i, l) in leechers.iter().enumerate() {
            let targets = mesh(&seeder, &leechers, i);
            let conn = PipeConnector::new(l.id, &targets);
            let out = l.path("out");
            handles.push(l.node.download(share.id, Kind::File, &out, Some("f"), conn));
        }
        let mut from_leechers = 0u64;
        for h in handles.iter_mut() {
            let p = h.result().await.expect("download");
            assert!(std::fs::read(&p).expect("read") == data, "bytes differ");
        }
        // A download publishes its final progress before its result.
        for h in &handles {
            let p = h.progress().borrow().clone();
            assert!(p.complete);
            from_leechers += p
                .peers
                .iter()
                .filter(|e| e.peer != seeder.id)
                .map(|e| e.downloaded)
                .sum::<u64>();
        }
        assert!(from_leechers > 0, "leechers never uploaded to each other");
        eprintln!(
            "bytes received from leechers: {from_leechers} of {}",
            6 * data.len()
        );
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_serving_corrupt_pieces_is_banned_and_result_is_correct() {
    timeout(TEST_TIMEOUT, async {
        let data = random_bytes(8 << 20, 5);
        let good = TestNode::new(1);
        let bad = TestNode::new(2);
        let share = good.share_bytes("src.bin", &data);
        bad.share_bytes("src.bin", &data);
        let leecher = TestNode::new(3);
        let log = Arc::new(Mutex::new(TapLog::default()));
        let bad_id = bad.id;
        let l2 = log.clone();
        let wrap: Wrap = Arc::new(move |peer, s| {
            if peer == bad_id {
                Box::new(Tap::new(s, true, l2.clone())) as BoxStream
            } else {
                Box::new(s) as BoxStream
            }
        });
        let conn = PipeConnector::wrapped(leecher.id, &[&bad, &good], wrap);
        let out = leecher.path("out");
        let mut h = leecher
            .node
            .download(share.id, Kind::File, &out, Some("f"), conn);
        let p = h.result().await.expect("download");
        assert!(std::fs::read(&p).expect("read") == data, "bytes differ");
        let l = log.lock().expect("log");
        let corrupted = l.received.iter().filter(|(t, _)| *t == 0x0c).count();
        // If the bad peer delivered pieces, each one was corrupt: the leecher must
        // have closed it with BadData (15) once the ban threshold was reached.
        if corrupted >= 2 {
            let closes: Vec<u8> = l
                .sent
                .iter()
                .filter(|(t, _)| *t == 0x12)
                .filter_map(|(_, b)| b.first().copied())
                .collect();
            assert_eq!(closes, vec![15], "the corrupting peer was not banned");
        }
        let from_bad = h
            .progress()
            .borrow()
            .peers
            .iter()
            .filter(|e| e.peer == bad_id)
            .map(|e| e.downloaded)
            .sum::<u64>();
        assert_eq!(from_bad, 0, "a corrupt piece was counted as verified");
        // The user is told: pieces that failed, and who was banned.
        let last = h.progress().borrow().clone();
        assert!(
            last.pieces_failed <= corrupted as u64
                && last.pieces_failed >= (corrupted as u64).min(2),
            "{} pieces counted as failed, {corrupted} corrupt received",
            last.pieces_failed
        );
        let banned: Vec<_> = last
            .peers
            .iter()
            .filter(|e| e.banned)
            .map(|e| e.peer)
            .collect();
        if corrupted >= 2 {
            assert_eq!(banned, vec![bad_id], "the ban is not shown");
        } else {
            assert!(banned.is_empty(), "{banned:?}");
        }
        eprintln!("corrupt pieces received: {corrupted}");
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_download_refetches_at_most_one_verified_piece() {
    timeout(TEST_TIMEOUT, async {
        let data = random_bytes(16 << 20, 9);
        let seeder = TestNode::new(1);
        let share = seeder.share_bytes("src.bin", &data);
        let leecher = TestNode::new(2);
        let out = leecher.path("out");
        let run = |log: Arc<Mutex<TapLog>>| {
            let wrap: Wrap = Arc::new(move |_, s| {
                Box::new(Tap::new(s, false, log.clone()).with_read_delay(Duration::from_millis(15)))
                    as BoxStream
            });
            PipeConnector::wrapped(leecher.id, &[&seeder], wrap)
        };
        let log1 = Arc::new(Mutex::new(TapLog::default()));
        let h = leecher
            .node
            .download(share.id, Kind::File, &out, Some("f"), run(log1.clone()));
        let mut prog = h.progress();
        while prog.borrow().pieces_done < 16 {
            prog.changed().await.expect("progress");
        }
        h.stop().await;
        let verified: std::collections::BTreeSet<u32> = log1
            .lock()
            .expect("log")
            .sent_pieces(0x05)
            .into_iter()
            .collect();
        assert!(
            verified.len() >= 16 && verified.len() < 64,
            "{}",
            verified.len()
        );
        assert!(!out.join("f").exists());

        let log2 = Arc::new(Mutex::new(TapLog::default()));
        let mut h = leecher
            .node
            .download(share.id, Kind::File, &out, Some("f"), run(log2.clone()));
        let p = h.result().await.expect("download");
        assert!(std::fs::read(&p).expect("read") == data, "bytes differ");
        let again: Vec<u32> = log2
            .lock()
            .expect("log")
            .sent_pieces(0x0a)
            .into_iter()
            .filter(|p| verified.contains(p))
            .collect();
        assert!(again.len() <= 1, "re-requested verified pieces {again:?}");
        eprintln!(
            "verified before the stop: {}, requested again: {again:?}",
            verified.len()
        );
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_collection_files_are_skipped_on_a_second_run() {
    timeout(TEST_TIMEOUT, async {
        let seeder = TestNode::new(1);
        let src = seeder.path("src");
        std::fs::create_dir_all(src.join("d")).expect("mkdir");
        std::fs::write(src.join("d/one.bin"), random_bytes(700_000, 1)).expect("write");
        std::fs::write(src.join("two.txt"), b"two").expect("write");
        std::fs::write(src.join("zero"), b"").expect("write");
        let share = seeder.share(&src);
        let leecher = TestNode::new(2);
        let out = leecher.path("out");
        let conn = PipeConnector::new(leecher.id, &[&seeder]);
        let mut h = leecher
            .node
            .download(share.id, Kind::Collection, &out, None, conn);
        let root = h.result().await.expect("first run");
        drop(h);
        // The second run has no peer at all: it can only succeed from what is on disk.
        let nobody = PipeConnector::new(leecher.id, &[]);
        let mut h = leecher
            .node
            .download(share.id, Kind::Collection, &out, None, nobody);
        assert_eq!(h.result().await.expect("second run"), root);
        assert!(tree(&root) == tree(&src), "trees differ");
    })
    .await
    .expect("timed out");
}

/// A collection's manifest is cached in the store's `manifests/` folder; a
/// damaged copy there (cut short, overwritten) is fetched again instead of
/// blocking every later download of that collection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_cached_manifest_is_fetched_again() {
    timeout(TEST_TIMEOUT, async {
        let seeder = TestNode::new(1);
        let src = seeder.path("src");
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::write(src.join("one.bin"), random_bytes(300_000, 3)).expect("write");
        std::fs::write(src.join("two.txt"), b"two").expect("write");
        let share = seeder.share(&src);
        let leecher = TestNode::new(2);
        let out = leecher.path("out");
        let conn = PipeConnector::new(leecher.id, &[&seeder]);
        let mut h =
            leecher
                .node
                .download(share.id, Kind::Collection, &out, Some("a"), conn.clone());
        h.result().await.expect("first run");
        drop(h);

        let cached = leecher.path("data/manifests").join(share.id.to_hex());
        let good = std::fs::read(&cached).expect("the manifest is cached");
        for damaged in [good[..good.len() / 2].to_vec(), vec![0u8; good.len()]] {
            std::fs::write(&cached, &damaged).expect("damage");
            let name = format!("b{}", damaged.len());
            let mut h =
                leecher
                    .node
                    .download(share.id, Kind::Collection, &out, Some(&name), conn.clone());
            let root = h.result().await.expect("with a damaged cached manifest");
            assert!(tree(&root) == tree(&src), "trees differ");
            assert_eq!(std::fs::read(&cached).expect("cached again"), good);
        }
    })
    .await
    .expect("timed out");
}

/// Files of a folder that its peers do not have (here the sharer lost
/// them after sharing) are fetched from peers that share those files alone,
/// found by each file's own id: a whole file once no folder peer has it, a
/// larger one from the start. The folder completes byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_no_folder_peer_has_come_from_providers_of_those_files_alone() {
    timeout(TEST_TIMEOUT, async {
        let sharer = TestNode::new(1);
        let other = TestNode::new(2);
        let dir = sharer.path("album");
        std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("a.txt", random_bytes(5_000, 1)),
            ("sub/b.txt", random_bytes(70_000, 2)),
            ("sub/c.txt", random_bytes(900, 3)),
            ("big.bin", random_bytes(2_500_000, 4)),
        ];
        for (rel, bytes) in &files {
            std::fs::write(dir.join(rel), bytes).expect("write");
        }
        let share = sharer.share(&dir);
        // The sharer loses b.txt and big.bin; the other peer shares each of
        // them alone (not the folder).
        for (rel, bytes) in &files[1..] {
            if *rel == "sub/c.txt" {
                continue;
            }
            std::fs::remove_file(dir.join(rel)).expect("remove");
            let name = rel.replace('/', "-");
            other.share_bytes(&name, bytes);
        }
        let leecher = TestNode::new(3);
        let conn = PipeConnector::with_elsewhere(leecher.id, &[&sharer], &[&other]);
        let out = leecher.path("out");
        let mut h = leecher
            .node
            .download(share.id, Kind::Collection, &out, Some("album"), conn);
        let root = h.result().await.expect("download");
        for (rel, bytes) in &files {
            assert!(
                std::fs::read(root.join(rel)).expect(rel) == *bytes,
                "{rel} differs"
            );
        }
        let last = h.progress().borrow().clone();
        let from = |peer| -> u64 {
            last.peers
                .iter()
                .filter(|p| p.peer == peer)
                .map(|p| p.downloaded)
                .sum()
        };
        assert_eq!(
            from(other.id),
            70_000 + 2_500_000,
            "the lost files came from elsewhere: {last:?}"
        );
        assert_eq!(from(sharer.id), 5_000 + 900, "{last:?}");
        assert_eq!(last.done_bytes, last.total_bytes.expect("a total"));
    })
    .await
    .expect("timed out");
}

/// A folder's small files travel whole over folder sessions (§6.5): a peer
/// whose every file is damaged on the way is closed with `BadData` at its
/// first bad file and banned for the folder, nothing it sent counts or is
/// written, and the folder completes byte for byte from the good peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_session_peer_sending_damaged_files_is_banned_and_the_folder_is_right() {
    timeout(TEST_TIMEOUT, async {
        let good = TestNode::new(1);
        let bad = TestNode::new(2);
        let mut files = Vec::new();
        for (k, node) in [&good, &bad].into_iter().enumerate() {
            let dir = node.path("album");
            std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
            for i in 0..60usize {
                let rel = if i % 2 == 0 {
                    format!("f{i:02}")
                } else {
                    format!("sub/g{i:02}")
                };
                let bytes = random_bytes(100 + i * 337, i as u64 + 40);
                std::fs::write(dir.join(&rel), &bytes).expect("write");
                if k == 0 {
                    files.push((rel, bytes));
                }
            }
        }
        let share = good.share(&good.path("album"));
        assert_eq!(bad.share(&bad.path("album")).id, share.id);
        let leecher = TestNode::new(3);
        let log = Arc::new(Mutex::new(TapLog::default()));
        let bad_id = bad.id;
        let l2 = log.clone();
        let wrap: Wrap = Arc::new(move |peer, s| {
            if peer == bad_id {
                Box::new(Tap::new(s, true, l2.clone())) as BoxStream
            } else {
                Box::new(s) as BoxStream
            }
        });
        let conn = PipeConnector::wrapped(leecher.id, &[&bad, &good], wrap);
        let out = leecher.path("out");
        let mut h = leecher
            .node
            .download(share.id, Kind::Collection, &out, Some("album"), conn);
        let root = h.result().await.expect("download");
        for (rel, bytes) in &files {
            assert!(
                std::fs::read(root.join(rel)).expect("read") == *bytes,
                "{rel} differs"
            );
        }
        let last = h.progress().borrow().clone();
        let from_bad: u64 = last
            .peers
            .iter()
            .filter(|p| p.peer == bad_id)
            .map(|p| p.downloaded)
            .sum();
        assert_eq!(from_bad, 0, "a damaged file was counted: {last:?}");
        let l = log.lock().expect("log");
        let damaged = l.received.iter().filter(|(t, _)| *t == 0x0c).count();
        let closes: Vec<u8> = l
            .sent
            .iter()
            .filter(|(t, _)| *t == 0x12)
            .filter_map(|(_, b)| b.first().copied())
            .collect();
        if damaged > 0 {
            assert!(
                closes.contains(&15),
                "the damaging peer was not closed with BadData: {closes:?}"
            );
            assert!(
                last.peers.iter().any(|p| p.peer == bad_id && p.banned),
                "the ban is not shown: {last:?}"
            );
        }
        eprintln!("damaged pieces or files received from the bad peer: {damaged}");
    })
    .await
    .expect("timed out");
}

/// Folders on disk stay honest: unicode names (CJK, emoji, accents, spaces),
/// a tree 40 folders deep, empty files and files of every size class (whole
/// over the folder session, and larger than a folder session carries) arrive
/// byte for byte under the same names; a second download of the same folder
/// into the same place fetches nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_names_deep_trees_empty_files_and_empty_folders_arrive_as_they_are() {
    timeout(TEST_TIMEOUT, async {
        let seeder = TestNode::new(1);
        let dir = seeder.path("tree");
        let deep: String = (0..40).map(|i| format!("d{i}/")).collect();
        let files: Vec<(String, Vec<u8>)> = vec![
            ("音楽/曲 01.flac".to_owned(), random_bytes(70_000, 1)),
            ("émoji 🎵/naïve café.txt".to_owned(), random_bytes(3_000, 2)),
            ("empty".to_owned(), Vec::new()),
            ("sub/also empty".to_owned(), Vec::new()),
            (format!("{deep}bottom.bin"), random_bytes(1_500_000, 3)),
            (format!("{deep}small"), random_bytes(10, 4)),
            ("Ω/ω".to_owned(), random_bytes(1 << 20, 5)),
        ];
        for (rel, bytes) in &files {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).expect("mkdir");
            std::fs::write(&p, bytes).expect("write");
        }
        // Empty folders: at the top, deep, beside files, and one holding
        // only an empty folder (implied by it).
        let empty_folders = [
            "vide".to_owned(),
            format!("{deep}空"),
            "sub/nothing/here".to_owned(),
        ];
        for rel in &empty_folders {
            std::fs::create_dir_all(dir.join(rel)).expect("mkdir");
        }
        let share = seeder.share(&dir);
        let leecher = TestNode::new(2);
        let out = leecher.path("out");
        for run in 0..2 {
            let conn = PipeConnector::new(leecher.id, &[&seeder]);
            let mut h = leecher
                .node
                .download(share.id, Kind::Collection, &out, Some("tree"), conn);
            let root = h.result().await.expect("download");
            for (rel, bytes) in &files {
                assert!(
                    std::fs::read(root.join(rel)).expect(rel) == *bytes,
                    "{rel} differs"
                );
            }
            for rel in &empty_folders {
                let p = root.join(rel);
                assert!(p.is_dir(), "the empty folder {rel} was not made");
                assert_eq!(std::fs::read_dir(&p).expect(rel).count(), 0, "{rel}");
            }
            let fetched: u64 = h
                .progress()
                .borrow()
                .peers
                .iter()
                .map(|p| p.downloaded)
                .sum();
            if run == 1 {
                assert_eq!(fetched, 0, "the second download fetched again");
            }
        }
    })
    .await
    .expect("timed out");
}

/// A seeding task with no peer ends after `seed_idle` (a node that served a
/// folder of many files keeps no task per file), and a later download of the
/// same content starts a new one and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_seeding_task_ends_and_a_later_download_starts_a_new_one() {
    timeout(TEST_TIMEOUT, async {
        let cfg = shoal_node::NodeConfig {
            seed_idle: Duration::from_millis(200),
            ..Default::default()
        };
        let seeder = TestNode::with_config(1, cfg);
        let data = random_bytes(600_000, 7);
        let share = seeder.share_bytes("src.bin", &data);
        assert_eq!(seeder.node.content_tasks(), 0, "no task before any stream");
        for round in 0..2u8 {
            let leecher = TestNode::new(2 + round);
            let out = leecher.path("out");
            let conn = PipeConnector::new(leecher.id, &[&seeder]);
            let mut h = leecher
                .node
                .download(share.id, Kind::File, &out, Some("f.bin"), conn);
            let path = h.result().await.expect("download");
            assert!(
                std::fs::read(&path).expect("read") == data,
                "round {round}: bytes differ"
            );
            drop(h);
            drop(leecher);
            // The session ends with the leecher; the seeding task follows
            // after its idle time (checked on its 1 s tick).
            let mut waited = 0;
            while seeder.node.content_tasks() != 0 {
                assert!(
                    waited < 100,
                    "round {round}: the idle seeding task did not end within 10 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                waited += 1;
            }
        }
        let up = seeder.node.uploads_of(&share.id).expect("uploads recorded");
        assert_eq!(up.uploaded, 2 * data.len() as u64, "both uploads counted");
    })
    .await
    .expect("timed out");
}

/// Writes `files` (relative path, bytes) under `dir`.
/// Full mesh: leecher `i` dials the seeder and every other leecher (of two
/// streams between the same pair, one is kept).
fn mesh<'a>(seeder: &'a TestNode, leechers: &'a [TestNode], i: usize) -> Vec<&'a TestNode> {
    let mut targets = vec![seeder];
    targets.extend(
        leechers
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, l)| l),
    );
    targets
}

/// Verified bytes the downloads received from peers other than the seeder.
fn bytes_from_others(handles: &[shoal_node::DownloadHandle], seeder: &TestNode) -> u64 {
    handles
        .iter()
        .flat_map(|h| h.progress().borrow().peers.clone())
        .filter(|p| p.peer != seeder.id)
        .map(|p| p.downloaded)
        .sum()
}

fn write_tree(dir: &std::path::Path, files: &[(String, Vec<u8>)]) {
    for (rel, bytes) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, bytes).expect("write");
    }
}

/// A folder's larger files (over 1 MiB, up to 64 MiB) travel piece by piece
/// in the folder sessions (§6.5 parts): no swarm of their own (the seeders
/// start no task per file), every byte right, and a peer that sends damaged
/// pieces is closed with BadData and banned while the folder completes from
/// the honest one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_files_travel_in_folder_sessions_and_a_damaging_peer_is_banned() {
    timeout(TEST_TIMEOUT, async {
        let good = TestNode::new(1);
        let bad = TestNode::new(2);
        // Part files only: a damaged whole file would get the peer banned
        // before any piece is asked of it.
        let mut files: Vec<(String, Vec<u8>)> = vec![
            ("just-over.bin".into(), random_bytes((1 << 20) + 1, 2)),
            ("photos/a.jpg".into(), random_bytes((5 << 19) + 777, 3)),
            ("photos/b.jpg".into(), random_bytes(5 << 20, 4)),
        ];
        files.push(("photos/c.jpg".into(), random_bytes(3 << 20, 5)));
        for node in [&good, &bad] {
            write_tree(&node.path("album"), &files);
        }
        let share = good.share(&good.path("album"));
        assert_eq!(bad.share(&bad.path("album")).id, share.id);
        let leecher = TestNode::new(3);
        let log = Arc::new(Mutex::new(TapLog::default()));
        let bad_id = bad.id;
        let l2 = log.clone();
        // The honest peer is slow, so the damaging one is asked for pieces.
        let wrap: Wrap = Arc::new(move |peer, s| {
            if peer == bad_id {
                Box::new(Tap::new(s, true, l2.clone())) as BoxStream
            } else {
                let log = Arc::new(Mutex::new(TapLog::default()));
                Box::new(Tap::new(s, false, log).with_read_delay(Duration::from_millis(5)))
                    as BoxStream
            }
        });
        let conn = PipeConnector::wrapped(leecher.id, &[&bad, &good], wrap);
        let out = leecher.path("out");
        let mut h = leecher
            .node
            .download(share.id, Kind::Collection, &out, Some("album"), conn);
        let root = h.result().await.expect("download");
        for (rel, bytes) in &files {
            assert!(
                std::fs::read(root.join(rel)).expect("read") == *bytes,
                "{rel} differs"
            );
        }
        // Nothing but the final names (no partial or temporary file left).
        let mut names: Vec<String> = walkdir(&root);
        names.sort();
        let mut want: Vec<String> = files.iter().map(|(r, _)| r.clone()).collect();
        want.sort();
        assert_eq!(names, want);
        // At most the manifest's task on each seeder: no file had a swarm.
        let tasks = good.node.content_tasks() + bad.node.content_tasks();
        assert!(
            tasks <= 2,
            "{tasks} content tasks: larger files had swarms of their own"
        );
        let last = h.progress().borrow().clone();
        let total: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
        assert_eq!(last.done_bytes, total);
        let from_bad: u64 = last
            .peers
            .iter()
            .filter(|p| p.peer == bad_id)
            .map(|p| p.downloaded)
            .sum();
        let l = log.lock().expect("log");
        let parts_from_bad = l.received.iter().filter(|(t, _)| *t == 0x17).count();
        let closes: Vec<u8> = l
            .sent
            .iter()
            .filter(|(t, _)| *t == 0x12)
            .filter_map(|(_, b)| b.first().copied())
            .collect();
        eprintln!(
            "parts from the damaging peer: {parts_from_bad}, bytes counted from it: {from_bad}"
        );
        assert!(
            parts_from_bad > 0,
            "the damaging peer was never asked for a piece"
        );
        // The tap damages byte 100 of a frame: the 1-byte last piece of
        // just-over.bin reaches us intact, and counts.
        assert!(from_bad <= 1, "damaged bytes were counted: {from_bad}");
        assert!(closes.contains(&15), "not closed with BadData: {closes:?}");
        assert!(last.peers.iter().any(|p| p.peer == bad_id && p.banned));
        assert!(last.pieces_failed > 0, "the damaged piece is not counted");
    })
    .await
    .expect("timed out");
}

fn walkdir(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).expect("under root");
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out
}

/// A folder download stopped while a part file is half in resumes it: no
/// piece received before the stop is asked for again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_file_resumes_without_asking_again_for_pieces_it_has() {
    timeout(TEST_TIMEOUT, async {
        let seeder = TestNode::new(1);
        let files: Vec<(String, Vec<u8>)> = vec![
            ("a.txt".into(), random_bytes(3000, 1)),
            ("movie.bin".into(), random_bytes(12 << 20, 2)),
        ];
        write_tree(&seeder.path("src"), &files);
        let share = seeder.share(&seeder.path("src"));
        let leecher = TestNode::new(2);
        let out = leecher.path("out");
        let run = |log: Arc<Mutex<TapLog>>| {
            let wrap: Wrap = Arc::new(move |_, s| {
                Box::new(Tap::new(s, false, log.clone()).with_read_delay(Duration::from_millis(15)))
                    as BoxStream
            });
            PipeConnector::wrapped(leecher.id, &[&seeder], wrap)
        };
        let log1 = Arc::new(Mutex::new(TapLog::default()));
        let h = leecher.node.download(
            share.id,
            Kind::Collection,
            &out,
            Some("f"),
            run(log1.clone()),
        );
        let mut prog = h.progress();
        while prog.borrow().done_bytes < (4 << 20) {
            prog.changed().await.expect("progress");
        }
        h.stop().await;
        assert!(!out.join("f/movie.bin").exists(), "placed before complete");

        let log2 = Arc::new(Mutex::new(TapLog::default()));
        let mut h = leecher.node.download(
            share.id,
            Kind::Collection,
            &out,
            Some("f"),
            run(log2.clone()),
        );
        let root = h.result().await.expect("download");
        for (rel, bytes) in &files {
            assert!(
                std::fs::read(root.join(rel)).expect("read") == *bytes,
                "{rel} differs"
            );
        }
        // Read now: a piece still arriving when the stop returned counts.
        let received: std::collections::BTreeSet<(u32, u32)> = log1
            .lock()
            .expect("log")
            .received
            .iter()
            .filter(|(t, _)| *t == 0x17)
            .filter_map(|(_, b)| file_piece(b))
            .collect();
        assert!(
            received.len() >= 16 && received.len() < 48,
            "{} pieces before the stop",
            received.len()
        );
        let asked: Vec<(u32, u32)> = log2
            .lock()
            .expect("log")
            .sent_frames(0x16)
            .into_iter()
            .filter_map(|b| file_piece(&b))
            .collect();
        let again: Vec<_> = asked.iter().filter(|p| received.contains(p)).collect();
        assert!(again.len() <= 1, "asked again for pieces it had: {again:?}");
        let mut all: std::collections::BTreeSet<(u32, u32)> = asked.iter().copied().collect();
        all.extend(received.iter().copied());
        assert_eq!(all.len(), 48, "every piece once");
    })
    .await
    .expect("timed out");
}

/// Three leechers of a folder of part files from one slow seeder: all
/// complete, and they serve each other the files they have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leechers_of_a_folder_of_part_files_trade_them() {
    timeout(Duration::from_secs(120), async {
        let seeder = TestNode::new(0);
        let files: Vec<(String, Vec<u8>)> = (0..8)
            .map(|i| (format!("p{i}.raw"), random_bytes(2 << 20, 50 + i)))
            .collect();
        write_tree(&seeder.path("src"), &files);
        let share = seeder.share(&seeder.path("src"));
        seeder.node.set_limits(shoal_node::Limits {
            upload: Some(8 << 20),
            download: None,
        });
        let leechers: Vec<TestNode> = (1..=3).map(TestNode::new).collect();
        let mut handles = Vec::new();
        for (i, l) in leechers.iter().enumerate() {
            let targets = mesh(&seeder, &leechers, i);
            let conn = PipeConnector::new(l.id, &targets);
            handles.push(l.node.download(
                share.id,
                Kind::Collection,
                &l.path("out"),
                Some("f"),
                conn,
            ));
        }
        for h in handles.iter_mut() {
            let root = h.result().await.expect("download");
            for (rel, bytes) in &files {
                assert!(
                    std::fs::read(root.join(rel)).expect("read") == *bytes,
                    "{rel} differs"
                );
            }
        }
        let from_leechers = bytes_from_others(&handles, &seeder);
        eprintln!(
            "bytes from leechers: {from_leechers} of {}",
            3 * 8 * (2 << 20)
        );
        assert!(from_leechers > 0, "leechers never served each other");
    })
    .await
    .expect("timed out");
}

/// A part file set to skip while its pieces arrive is never created, and
/// one set to high is complete before any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_file_set_to_skip_mid_download_is_never_created() {
    timeout(TEST_TIMEOUT, async {
        let seeder = TestNode::new(1);
        let files: Vec<(String, Vec<u8>)> = (0..6)
            .map(|i| (format!("v{i}.bin"), random_bytes(6 << 20, 70 + i)))
            .collect();
        write_tree(&seeder.path("src"), &files);
        let share = seeder.share(&seeder.path("src"));
        let leecher = TestNode::new(2);
        let wrap: Wrap = Arc::new(move |_, s| {
            let log = Arc::new(Mutex::new(TapLog::default()));
            Box::new(Tap::new(s, false, log).with_read_delay(Duration::from_millis(10)))
                as BoxStream
        });
        let conn = PipeConnector::wrapped(leecher.id, &[&seeder], wrap);
        let out = leecher.path("out");
        let mut h = leecher
            .node
            .download(share.id, Kind::Collection, &out, Some("f"), conn);
        h.set_priority(vec!["v5.bin".into()], shoal_node::FilePriority::High);
        // Skip whichever other file has pieces in first; the high one is
        // complete whenever any file is.
        let full = 6u64 << 20;
        let mut prog = h.progress();
        let mut skipped = None;
        let mut first_done = false;
        while skipped.is_none() || !first_done {
            prog.changed().await.expect("progress");
            let p = prog.borrow().clone();
            let Some(fb) = p.files.as_ref() else { continue };
            if !first_done && (0..6).any(|i| fb.get(i) == Some(full)) {
                assert_eq!(fb.get(5), Some(full), "a file finished before the high one");
                first_done = true;
            }
            if skipped.is_none() {
                if let Some(i) = (0..5).find(|&i| fb.get(i).is_some_and(|b| b > 0 && b < full)) {
                    h.set_priority(vec![format!("v{i}.bin")], shoal_node::FilePriority::Skip);
                    skipped = Some(i);
                }
            }
        }
        let name = format!("v{}.bin", skipped.expect("skipped"));
        let root = h.result().await.expect("download");
        assert!(
            !root.join(&name).exists(),
            "{name} was set to skip and was created"
        );
        for (rel, bytes) in files.iter().filter(|(r, _)| *r != name) {
            assert!(
                std::fs::read(root.join(rel)).expect("read") == *bytes,
                "{rel} differs"
            );
        }
        let done = h.progress().borrow().clone();
        assert_eq!(
            done.total_bytes,
            Some(5 * (6 << 20)),
            "the total leaves the skipped file out"
        );
    })
    .await
    .expect("timed out");
}

/// Six leechers of a folder, each with one regular and one optimistic
/// upload slot and rounds of 300 ms, so that every leecher chokes some of
/// its five peers and the choice moves while they download: all complete
/// byte-identical, they served each other, and chokes and unchokes crossed
/// the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leechers_of_a_folder_with_few_upload_slots_choke_each_other_and_all_complete() {
    timeout(Duration::from_secs(120), async {
        let seeder = TestNode::new(0);
        let mut files: Vec<(String, Vec<u8>)> = (0..300)
            .map(|i| (format!("s/{i:03}.txt"), random_bytes(8 << 10, 900 + i)))
            .collect();
        files.push(("big/p.raw".into(), random_bytes(3 << 20, 1)));
        write_tree(&seeder.path("src"), &files);
        let share = seeder.share(&seeder.path("src"));
        seeder.node.set_limits(shoal_node::Limits {
            upload: Some(4 << 20),
            download: None,
        });
        let cfg = NodeConfig {
            swarm: shoal_swarm::Config {
                regular_slots: 1,
                optimistic_slots: 1,
                rechoke_interval: Duration::from_millis(300),
                optimistic_interval: Duration::from_millis(600),
                ..Default::default()
            },
            ..Default::default()
        };
        let leechers: Vec<TestNode> = (1..=6)
            .map(|i| TestNode::with_config(i, cfg.clone()))
            .collect();
        // One log per stream: the order of its frames matters.
        let logs: Arc<Mutex<Vec<Arc<Mutex<TapLog>>>>> = Arc::default();
        let mut handles = Vec::new();
        for (i, l) in leechers.iter().enumerate() {
            let targets = mesh(&seeder, &leechers, i);
            let logs = logs.clone();
            let wrap: Wrap = Arc::new(move |_, s| {
                let log = Arc::new(Mutex::new(TapLog::default()));
                logs.lock().expect("logs").push(log.clone());
                Box::new(Tap::new(s, false, log)) as BoxStream
            });
            let conn = PipeConnector::wrapped(l.id, &targets, wrap);
            handles.push(l.node.download(
                share.id,
                Kind::Collection,
                &l.path("out"),
                Some("f"),
                conn,
            ));
        }
        for h in handles.iter_mut() {
            let root = h.result().await.expect("download");
            for (rel, bytes) in &files {
                assert!(
                    std::fs::read(root.join(rel)).expect("read") == *bytes,
                    "{rel} differs"
                );
            }
        }
        let from_leechers = bytes_from_others(&handles, &seeder);
        // A peer is also choked when it says it wants nothing: count the
        // chokes of a peer whose last word was that it wants files (it
        // starts so), seen from either end of each stream.
        let (chokes, unchokes) = logs.lock().expect("logs").iter().fold((0, 0), |acc, l| {
            let l = l.lock().expect("log");
            // Folder sessions only (the manifest comes over a content's).
            if !l.order.contains(&(true, 0x13)) {
                return acc;
            }
            // Whether each side (this end, the other) last said it is interested.
            let mut interested = [true, true];
            let (mut chokes, mut unchokes) = acc;
            for &(ours, ty) in &l.order {
                // The other side's flag when we choke it, ours when it chokes us.
                let target = usize::from(ours);
                match ty {
                    0x06 | 0x07 => interested[usize::from(!ours)] = ty == 0x06,
                    0x08 if interested[target] => chokes += 1,
                    0x09 => unchokes += 1,
                    _ => {}
                }
            }
            (chokes, unchokes)
        });
        eprintln!(
            "bytes from leechers: {from_leechers}; chokes of interested peers {chokes}, \
             unchokes {unchokes}"
        );
        assert!(from_leechers > 0, "leechers never served each other");
        assert!(chokes > 0, "no peer that wanted files was choked");
        assert!(unchokes > 0, "no choked peer was ever unchoked");
    })
    .await
    .expect("timed out");
}

/// A folder of 70 part files (over 1 MiB each) from a slowed seeder: at most
/// `OPEN_PARTS` (4) of them are open at once on the downloader (each open one
/// is a hidden partial file), and 4 are; the seeder serves more part files
/// than it keeps open (`SOURCES_KEPT`, 64); every file arrives intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_four_part_files_are_open_at_once_and_a_seeder_serves_more_than_it_keeps() {
    timeout(Duration::from_secs(120), async {
        let seeder = TestNode::new(1);
        let files: Vec<(String, Vec<u8>)> = (0..70)
            .map(|i| {
                (
                    format!("p{i:02}.raw"),
                    random_bytes((1 << 20) + 1 + i, 300 + i as u64),
                )
            })
            .collect();
        write_tree(&seeder.path("src"), &files);
        let share = seeder.share(&seeder.path("src"));
        seeder.node.set_limits(shoal_node::Limits {
            upload: Some(16 << 20),
            download: None,
        });
        let leecher = TestNode::new(2);
        let out = leecher.path("out");
        let conn = PipeConnector::new(leecher.id, &[&seeder]);
        let mut h = leecher
            .node
            .download(share.id, Kind::Collection, &out, Some("f"), conn);
        let root = out.join("f");
        let open_now = |root: &std::path::Path| {
            std::fs::read_dir(root).map_or(0, |d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with(".shoal-"))
                    .count()
            })
        };
        // Sampled beside the download, every 5 ms, until it ends.
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let (root, done) = (root.clone(), done.clone());
            tokio::spawn(async move {
                let mut most = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    most = most.max(open_now(&root));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                most
            })
        };
        let res = h.result().await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let most = sampler.await.expect("sampler");
        res.expect("download");
        eprintln!("most part files open at once: {most}");
        assert_eq!(most, 4, "open part files at once");
        assert_eq!(open_now(&root), 0, "a partial file was left");
        for (rel, bytes) in &files {
            assert!(
                std::fs::read(root.join(rel)).expect("read") == *bytes,
                "{rel} differs"
            );
        }
    })
    .await
    .expect("timed out");
}

/// Three leechers of a folder holding one part file (16 MiB, 64 pieces)
/// from a slowed seeder: none has the file complete before the end, so every
/// byte they give each other is a piece of a file still downloading,
/// announced with `PartHave` and read back from the giver's partial file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leechers_trade_the_pieces_of_a_part_file_none_has_complete() {
    timeout(Duration::from_secs(120), async {
        let seeder = TestNode::new(0);
        let files = vec![("v.raw".to_string(), random_bytes(16 << 20, 77))];
        write_tree(&seeder.path("src"), &files);
        let share = seeder.share(&seeder.path("src"));
        seeder.node.set_limits(shoal_node::Limits {
            upload: Some(8 << 20),
            download: None,
        });
        let leechers: Vec<TestNode> = (1..=3).map(TestNode::new).collect();
        let mut handles = Vec::new();
        for (i, l) in leechers.iter().enumerate() {
            let targets = mesh(&seeder, &leechers, i);
            let conn = PipeConnector::new(l.id, &targets);
            handles.push(l.node.download(
                share.id,
                Kind::Collection,
                &l.path("out"),
                Some("f"),
                conn,
            ));
        }
        for h in handles.iter_mut() {
            let root = h.result().await.expect("download");
            assert!(
                std::fs::read(root.join("v.raw")).expect("read") == files[0].1,
                "v.raw differs"
            );
        }
        let from_leechers = bytes_from_others(&handles, &seeder);
        eprintln!("bytes from leechers: {from_leechers} of {}", 3 * (16 << 20));
        assert!(
            from_leechers >= 12 << 20,
            "leechers gave each other only {from_leechers} bytes of a file none had complete"
        );
    })
    .await
    .expect("timed out");
}
