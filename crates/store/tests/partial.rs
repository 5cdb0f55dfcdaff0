//! Partial downloads: verified writes, resume after reopening, finishing safely;
//! verified reads for serving.

use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_core::ContentId;
use shoal_store::hash::hash_bytes_with_layout;
use shoal_store::partial::{part_path_for, read_piece};
use shoal_store::{hash_file, Outboard, PieceLayout, Store, StoreError, VerifyError};

fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

fn outboard(data: &[u8], piece_size: u64) -> Outboard {
    let layout = PieceLayout::with_piece_size(data.len() as u64, piece_size).unwrap();
    hash_bytes_with_layout(layout, data).unwrap()
}

fn piece(ob: &Outboard, data: &[u8], i: u32) -> Vec<u8> {
    let r = ob.layout().piece_range(i);
    data[r.start as usize..r.end as usize].to_vec()
}

#[test]
fn pieces_in_random_order_resume_after_reopen_and_finish_identical() {
    let data_dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let data = content(100 * 1024 + 17, 1);
    let ob = outboard(&data, 4096);
    let n = ob.layout().num_pieces();
    let dest = out.path().join("sub/dir/file.bin");
    let mut order: Vec<u32> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(7));
    let (first, rest) = order.split_at(order.len() / 2);

    {
        let store = Store::open(data_dir.path()).unwrap();
        let mut part = store.open_download(ob.clone(), &dest, None).unwrap();
        assert_eq!(part.part(), part_path_for(&dest));
        for &i in first {
            part.write_piece(i, &piece(&ob, &data, i)).unwrap();
        }
        part.flush().unwrap();
        // Written but never flushed, then a crash (no destructor runs): its
        // bytes verify after the restart, so it is present without a refetch.
        part.write_piece(rest[0], &piece(&ob, &data, rest[0]))
            .unwrap();
        // Also written unflushed, then damaged on disk: it must not count.
        part.write_piece(rest[1], &piece(&ob, &data, rest[1]))
            .unwrap();
        assert!(!part.is_complete());
        let damaged = ob.layout().piece_offset(rest[1]);
        std::mem::forget(part);
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(part_path_for(&dest))
            .unwrap();
        f.write_all_at(b"not the piece", damaged).unwrap();
    }

    // A new Store (new database connection) resumes from the persisted bits.
    let store = Store::open(data_dir.path()).unwrap();
    let ob2 = store.outboard(&ob.root()).unwrap().unwrap();
    assert_eq!(ob2, ob);
    let mut part = store.open_download(ob2, &dest, None).unwrap();
    for &i in first {
        assert!(part.has(i), "piece {i} lost after reopen");
    }
    assert!(
        part.has(rest[0]),
        "an unflushed piece that verifies is kept"
    );
    assert!(
        !part.has(rest[1]),
        "a damaged unflushed piece is fetched again"
    );
    assert_eq!(part.present(), first.len() as u32 + 1);
    let missing = part.missing();
    assert_eq!(missing.len(), rest.len() - 1);
    for i in missing {
        part.write_piece(i, &piece(&ob, &data, i)).unwrap();
    }
    assert!(part.is_complete());
    let key = part.key();
    let placed = part.finish().unwrap();
    assert_eq!(placed, dest);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    assert!(!part_path_for(&dest).exists());
    let dl = store
        .db()
        .downloads()
        .unwrap()
        .into_iter()
        .find(|d| d.key == key)
        .unwrap();
    assert_eq!(dl.state, shoal_store::db::DownloadState::Complete);
}

#[test]
fn bad_piece_is_rejected_and_nothing_is_written() {
    let data_dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let data = content(20_000, 2);
    let ob = outboard(&data, 4096);
    let dest = out.path().join("f");
    let store = Store::open(data_dir.path()).unwrap();
    let mut part = store.open_download(ob.clone(), &dest, None).unwrap();

    let mut bad = piece(&ob, &data, 2);
    bad[100] ^= 0x04;
    let err = part.write_piece(2, &bad).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Verify {
                source: VerifyError::HashMismatch { index: 2 },
                ..
            }
        ),
        "{err:?}"
    );
    // A correct piece for another index is refused too.
    assert!(part.write_piece(3, &piece(&ob, &data, 2)).is_err());
    assert!(part.write_piece(99, &piece(&ob, &data, 2)).is_err());
    assert!(!part.has(2) && !part.has(3));
    part.flush().unwrap();
    let on_disk = std::fs::read(part.part()).unwrap();
    assert_eq!(on_disk.len(), data.len());
    assert!(on_disk.iter().all(|&b| b == 0), "bytes were written");
}

#[test]
fn finish_refuses_when_incomplete() {
    let data_dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let data = content(10_000, 3);
    let ob = outboard(&data, 1024);
    let dest = out.path().join("f");
    let store = Store::open(data_dir.path()).unwrap();
    let mut part = store.open_download(ob.clone(), &dest, None).unwrap();
    part.write_piece(0, &piece(&ob, &data, 0)).unwrap();
    match part.finish() {
        Err(StoreError::Incomplete { missing, total, .. }) => {
            assert_eq!((missing, total), (9, 10));
        }
        other => panic!("expected Incomplete, got {other:?}"),
    }
    assert!(!dest.exists());
}

#[test]
fn finish_never_clobbers_a_different_file_but_accepts_an_identical_one() {
    let data_dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let data = content(5000, 4);
    let ob = outboard(&data, 1024);
    let store = Store::open(data_dir.path()).unwrap();
    let fill = |dest: &std::path::Path| {
        let mut part = store.open_download(ob.clone(), dest, None).unwrap();
        for i in 0..ob.layout().num_pieces() {
            part.write_piece(i, &piece(&ob, &data, i)).unwrap();
        }
        part
    };

    // Of the content's length, so only finishing can tell it differs (another
    // length is refused when the download opens).
    let dest = out.path().join("taken");
    let precious = vec![7u8; data.len()];
    std::fs::write(&dest, &precious).unwrap();
    let err = fill(&dest).finish().unwrap_err();
    assert!(matches!(err, StoreError::DestinationExists { .. }), "{err}");
    assert!(err.to_string().contains("taken"));
    assert_eq!(std::fs::read(&dest).unwrap(), precious);

    let same = out.path().join("same");
    std::fs::write(&same, &data).unwrap();
    fill(&same).finish().unwrap();
    assert_eq!(std::fs::read(&same).unwrap(), data);
    assert!(!part_path_for(&same).exists());
}

#[test]
fn empty_content_downloads_to_an_empty_file() {
    let data_dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let layout = PieceLayout::for_len(0).unwrap();
    let ob = Outboard::trivial(ContentId::of(b""), layout).unwrap();
    let store = Store::open(data_dir.path()).unwrap();
    let dest = out.path().join("empty");
    let part = store.open_download(ob, &dest, None).unwrap();
    assert!(part.is_complete());
    assert!(part.missing().is_empty());
    part.finish().unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"");
}

#[test]
fn serving_reverifies_and_reports_a_changed_source() {
    let dir = tempfile::tempdir().unwrap();
    let data = content(3 * 256 * 1024 + 5, 5);
    let path = dir.path().join("shared.bin");
    std::fs::write(&path, &data).unwrap();
    let ob = hash_file(&path, &|_| {}).unwrap();
    let mut buf = Vec::new();
    for i in 0..ob.layout().num_pieces() {
        read_piece(&path, &ob, i, &mut buf).unwrap();
        assert_eq!(buf, piece(&ob, &data, i));
    }
    // Modify one byte in piece 1.
    let mut changed = data.clone();
    changed[256 * 1024 + 10] ^= 1;
    std::fs::write(&path, &changed).unwrap();
    read_piece(&path, &ob, 0, &mut buf).unwrap();
    let err = read_piece(&path, &ob, 1, &mut buf).unwrap_err();
    assert!(
        matches!(err, StoreError::SourceChanged { piece: 1, .. }),
        "{err:?}"
    );
    // Truncated: the last piece is short now.
    std::fs::write(&path, &data[..data.len() - 1]).unwrap();
    let last = ob.layout().num_pieces() - 1;
    assert!(matches!(
        read_piece(&path, &ob, last, &mut buf),
        Err(StoreError::SourceChanged { .. })
    ));
}

#[test]
fn a_partial_file_that_lost_its_bytes_starts_over() {
    let data_dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let data = content(8192, 6);
    let ob = outboard(&data, 1024);
    let dest = out.path().join("f");
    let store = Store::open(data_dir.path()).unwrap();
    let mut part = store.open_download(ob.clone(), &dest, None).unwrap();
    for i in 0..4 {
        part.write_piece(i, &piece(&ob, &data, i)).unwrap();
    }
    part.flush().unwrap();
    let part_path = part.part().to_path_buf();
    drop(part);
    std::fs::remove_file(&part_path).unwrap();
    let part = store.open_download(ob, &dest, None).unwrap();
    assert_eq!(part.present(), 0);
}

/// A download resumed with an outboard cut at another piece size (another
/// provider answered first) keeps the bytes it had: every piece that verifies
/// under the new layout is present, the rest is fetched.
#[test]
fn a_download_resumed_at_another_piece_size_keeps_the_pieces_that_verify() {
    let data_dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let data = content(64 * 1024 + 100, 8);
    let small = outboard(&data, 1024);
    let large = outboard(&data, 4096);
    let dest = out.path().join("f");
    let store = Store::open(data_dir.path()).unwrap();
    let mut part = store.open_download(small.clone(), &dest, None).unwrap();
    // The first 10 KiB and one 1 KiB piece in the middle of a 4 KiB piece.
    for i in (0..10).chain([21]) {
        part.write_piece(i, &piece(&small, &data, i)).unwrap();
    }
    drop(part);

    let mut part = store.open_download(large.clone(), &dest, None).unwrap();
    let have: Vec<u32> = (0..large.layout().num_pieces())
        .filter(|&i| part.has(i))
        .collect();
    assert_eq!(
        have,
        [0, 1],
        "the 4 KiB pieces wholly written, and only those"
    );
    for i in part.missing() {
        part.write_piece(i, &piece(&large, &data, i)).unwrap();
    }
    assert_eq!(part.finish().unwrap(), dest);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
}

/// Two contents saved under one name (two tickets naming `f.bin`, say) never
/// share a partial file: the second is refused while the first is unfinished,
/// and the first's bytes and progress are untouched. Once the first is done,
/// the name's partial file is free again.
#[test]
fn a_partial_file_holding_another_download_is_refused_and_left_alone() {
    let data_dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let a = content(16 * 1024, 10);
    let b = content(16 * 1024, 11);
    let (oa, ob) = (outboard(&a, 1024), outboard(&b, 1024));
    let dest = out.path().join("f.bin");
    let store = Store::open(data_dir.path()).unwrap();
    let mut first = store.open_download(oa.clone(), &dest, None).unwrap();
    for i in 0..5 {
        first.write_piece(i, &piece(&oa, &a, i)).unwrap();
    }
    first.flush().unwrap();
    let bytes_before = std::fs::read(first.part()).unwrap();

    let err = store.open_download(ob.clone(), &dest, None).unwrap_err();
    assert!(
        matches!(&err, StoreError::PartInUse { owner: Some(id), .. } if *id == oa.root()),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&oa.root().to_hex()) && msg.contains("another name"),
        "{msg}"
    );
    assert_eq!(std::fs::read(first.part()).unwrap(), bytes_before);
    drop(first);
    // Still refused after the first stopped unfinished; its progress survives.
    assert!(matches!(
        store.open_download(ob.clone(), &dest, None),
        Err(StoreError::PartInUse { .. })
    ));
    let mut first = store.open_download(oa.clone(), &dest, None).unwrap();
    assert_eq!(first.present(), 5);
    for i in first.missing() {
        first.write_piece(i, &piece(&oa, &a, i)).unwrap();
    }
    first.finish().unwrap();

    // Done and placed: the second now only meets the finished file.
    std::fs::rename(&dest, out.path().join("a.bin")).unwrap();
    let mut second = store.open_download(ob.clone(), &dest, None).unwrap();
    for i in 0..ob.layout().num_pieces() {
        second.write_piece(i, &piece(&ob, &b, i)).unwrap();
    }
    second.finish().unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b);
}

/// A file that merely has a partial file's name, unknown to the database, is
/// not truncated; and an existing destination that cannot be the content is
/// refused before anything is fetched.
#[test]
fn unknown_partial_files_and_mismatched_destinations_are_refused_up_front() {
    let data_dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let data = content(8192, 12);
    let ob = outboard(&data, 1024);
    let store = Store::open(data_dir.path()).unwrap();

    let dest = out.path().join("g.bin");
    std::fs::write(part_path_for(&dest), b"someone's bytes").unwrap();
    assert!(matches!(
        store.open_download(ob.clone(), &dest, None),
        Err(StoreError::PartInUse { owner: None, .. })
    ));
    assert_eq!(
        std::fs::read(part_path_for(&dest)).unwrap(),
        b"someone's bytes"
    );

    let taken = out.path().join("h.bin");
    std::fs::write(&taken, b"another file").unwrap();
    assert!(matches!(
        store.open_download(ob.clone(), &taken, None),
        Err(StoreError::DestinationExists { .. })
    ));
    assert!(!part_path_for(&taken).exists(), "nothing was started");
    assert_eq!(std::fs::read(&taken).unwrap(), b"another file");
}

#[derive(Debug, Clone)]
enum Op {
    Write {
        piece: u32,
        corrupt: bool,
    },
    Flush,
    /// Drop the partial file (which flushes) and open it again.
    Reopen,
    /// Lose the partial file without running its destructor, as in a crash.
    Crash,
}

fn op(max_piece: u32) -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        6 => (0..max_piece, proptest::bool::weighted(0.2))
            .prop_map(|(piece, corrupt)| Op::Write { piece, corrupt }),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// Model check: a piece is present exactly when it was written correctly,
    /// across flushes, clean reopens and crashes (a crash keeps the file's
    /// bytes, and reopening verifies the pieces written after the last flush);
    /// corrupt pieces are never present; finishing after filling the gaps
    /// always yields the original bytes.
    #[test]
    fn partial_file_matches_model_across_writes_flushes_and_reopens(
        len in 1usize..40_000,
        seed: u64,
        ops in proptest::collection::vec(op(40), 0..60),
    ) {
        use std::collections::BTreeSet;
        let data_dir = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let data = content(len, seed);
        let ob = outboard(&data, 1024);
        let n = ob.layout().num_pieces();
        let dest = out.path().join("f");
        let store = Store::open(data_dir.path()).unwrap();
        let mut part = store.open_download(ob.clone(), &dest, None).unwrap();
        let mut written = BTreeSet::new();
        for o in ops {
            match o {
                Op::Write { piece: i, corrupt } => {
                    let i = i % n;
                    let mut p = piece(&ob, &data, i);
                    if corrupt {
                        p[0] ^= 0xff;
                        proptest::prop_assert!(part.write_piece(i, &p).is_err());
                    } else {
                        part.write_piece(i, &p).unwrap();
                        written.insert(i);
                    }
                }
                Op::Flush => part.flush().unwrap(),
                Op::Reopen => {
                    drop(part);
                    let store = Store::open(data_dir.path()).unwrap();
                    part = store.open_download(ob.clone(), &dest, None).unwrap();
                }
                Op::Crash => {
                    std::mem::forget(part);
                    let store = Store::open(data_dir.path()).unwrap();
                    part = store.open_download(ob.clone(), &dest, None).unwrap();
                }
            }
            for i in 0..n {
                proptest::prop_assert_eq!(part.has(i), written.contains(&i), "piece {}", i);
            }
        }
        for i in part.missing() {
            part.write_piece(i, &piece(&ob, &data, i)).unwrap();
        }
        part.finish().unwrap();
        proptest::prop_assert_eq!(std::fs::read(&dest).unwrap(), data);
    }
}

fn stored_bits(store: &Store, key: i64) -> Vec<u8> {
    store
        .db()
        .downloads()
        .unwrap()
        .into_iter()
        .find(|d| d.key == key)
        .unwrap()
        .bitfield
}

#[test]
fn pending_flushes_run_one_at_a_time_and_never_store_less_than_before() {
    let data_dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let data = content(8 * 1024, 5);
    let ob = outboard(&data, 1024);
    let store = Store::open(data_dir.path()).unwrap();
    let mut part = store
        .open_download(ob.clone(), &out.path().join("f"), None)
        .unwrap();
    let key = part.key();
    assert!(part.start_flush().is_none(), "nothing written yet");
    for i in [0, 1] {
        part.write_piece(i, &piece(&ob, &data, i)).unwrap();
    }
    let first = part.start_flush().expect("two pieces to flush");
    part.write_piece(2, &piece(&ob, &data, 2)).unwrap();
    assert!(part.start_flush().is_none(), "one pending flush at a time");
    // A synchronous flush overtakes the pending one...
    part.flush().unwrap();
    assert_eq!(stored_bits(&store, key), vec![0b1110_0000]);
    // ...which, finishing later with its older bitfield, stores no less.
    first.run().unwrap();
    assert_eq!(stored_bits(&store, key), vec![0b1110_0000]);
    part.write_piece(5, &piece(&ob, &data, 5)).unwrap();
    let next = part.start_flush().expect("the first one is done");
    // Written after the flush started: not recorded by it.
    part.write_piece(7, &piece(&ob, &data, 7)).unwrap();
    next.run().unwrap();
    assert_eq!(stored_bits(&store, key), vec![0b1110_0100]);
    drop(part);
    assert_eq!(stored_bits(&store, key), vec![0b1110_0101]);
}

#[test]
fn a_piece_verified_for_other_content_is_not_written() {
    let data_dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let a = content(4096, 6);
    let b = content(4096, 7);
    let (oa, obb) = (outboard(&a, 1024), outboard(&b, 1024));
    let store = Store::open(data_dir.path()).unwrap();
    let pa = store
        .open_download(oa.clone(), &out.path().join("a"), None)
        .unwrap();
    let mut pb = store
        .open_download(obb, &out.path().join("b"), None)
        .unwrap();
    let verifier = pa.verifier();
    let bytes = piece(&oa, &a, 0);
    assert!(verifier.verify(1, &bytes).is_err(), "wrong index");
    let ok = verifier.verify(0, &bytes).unwrap();
    let err = pb.write_verified(ok).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(!pb.has(0));
    pb.flush().unwrap();
    assert!(std::fs::read(pb.part()).unwrap().iter().all(|&x| x == 0));
}
