//! Hashing files into outboards and verifying pieces against them.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_core::ContentId;
use shoal_store::hash::{hash_bytes_with_layout, hash_file_with, hash_file_with_piece_size};
use shoal_store::{hash_file, verify_piece_with_proof, Outboard, PieceLayout, VerifyError};

const K: usize = 1024;

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

fn write_file(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).unwrap();
    f.write_all(data).unwrap();
    p
}

/// What `b3sum` prints for `path`; `None` when it is not installed (the
/// comparison is skipped and reported, see `shoal_testkit::can_run`).
fn b3sum(path: &Path) -> Option<String> {
    if !shoal_testkit::can_run(
        "hash_file_matches_blake3_and_b3sum_and_verifier_is_exact (its b3sum comparison)",
        shoal_testkit::program("b3sum", "apt-get install b3sum; ./test.sh does"),
    ) {
        return None;
    }
    let out = Command::new("b3sum")
        .arg("--no-names")
        .arg(path)
        .output()
        .expect("b3sum runs");
    assert!(out.status.success(), "b3sum failed on {}", path.display());
    Some(String::from_utf8(out.stdout).unwrap().trim().to_string())
}

fn piece<'a>(layout: &PieceLayout, data: &'a [u8], i: u32) -> &'a [u8] {
    let r = layout.piece_range(i);
    &data[r.start as usize..r.end as usize]
}

/// Every correct piece verifies (directly and with its proof); a flipped bit, a
/// truncated piece, a piece offered for the wrong index, and a tampered proof fail.
fn check_verifier(ob: &Outboard, data: &[u8]) {
    let layout = ob.layout();
    let n = layout.num_pieces();
    for i in 0..n {
        let p = piece(&layout, data, i);
        ob.verify_piece(i, p).unwrap();
        let proof = ob.proof(i);
        verify_piece_with_proof(ob.root(), &layout, i, p, &proof).unwrap();

        let mut flipped = p.to_vec();
        let bit = (i as usize * 7919) % (flipped.len() * 8);
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(
            ob.verify_piece(i, &flipped),
            Err(VerifyError::HashMismatch { index: i })
        );
        assert!(verify_piece_with_proof(ob.root(), &layout, i, &flipped, &proof).is_err());

        assert!(matches!(
            ob.verify_piece(i, &p[..p.len() - 1]),
            Err(VerifyError::WrongLength { .. })
        ));

        if n > 1 {
            let other = (i + 1) % n;
            let res = ob.verify_piece(other, p);
            assert!(
                matches!(
                    res,
                    Err(VerifyError::HashMismatch { .. }) | Err(VerifyError::WrongLength { .. })
                ),
                "piece {i} accepted as piece {other}"
            );
            assert!(
                verify_piece_with_proof(ob.root(), &layout, other, p, &ob.proof(other)).is_err()
            );
        }
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let last = bad.len() - 1;
            bad[last][31] ^= 0x01;
            assert!(verify_piece_with_proof(ob.root(), &layout, i, p, &bad).is_err());
        }
    }
    assert!(matches!(
        ob.verify_piece(n, b"x"),
        Err(VerifyError::IndexOutOfRange { .. })
    ));
}

fn sizes() -> Vec<usize> {
    vec![
        0,
        1,
        1023,
        1024,
        1025,
        16 * K - 1,
        16 * K,
        16 * K + 1,
        256 * K - 1,
        256 * K,
        256 * K + 1,
        1024 * K + 7,
    ]
}

#[test]
fn hash_file_matches_blake3_and_b3sum_and_verifier_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    for (n, len) in sizes().into_iter().enumerate() {
        let data = random_bytes(len, n as u64);
        let path = write_file(dir.path(), &format!("f{len}"), &data);
        let seen = AtomicU64::new(0);
        let ob = hash_file(&path, &|b| {
            seen.fetch_add(b, Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!(ob.root(), ContentId::of(&data), "len {len}");
        assert_eq!(
            seen.load(Ordering::Relaxed),
            len as u64,
            "progress for {len}"
        );
        if let Some(hex) = b3sum(&path) {
            assert_eq!(ob.root().to_string(), hex, "b3sum of len {len}");
        }
        check_verifier(&ob, &data);

        // Multi-level trees on small files.
        for ps in [1024u32, 4096] {
            let ob = hash_file_with_piece_size(&path, ps, &|_| {}).unwrap();
            assert_eq!(ob.root(), ContentId::of(&data), "len {len} ps {ps}");
            check_verifier(&ob, &data);
        }
    }
}

#[test]
fn twenty_mib_random_file_matches_blake3_and_b3sum_with_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = random_bytes(20 * 1024 * K + 12_345, 2026);
    let path = write_file(dir.path(), "big", &data);
    let expected = ContentId::of(&data);
    for threads in [1, 2, 3] {
        let ob = hash_file_with(&path, None, threads, &|_| {}).unwrap();
        assert_eq!(ob.root(), expected, "{threads} threads");
    }
    let ob = hash_file(&path, &|_| {}).unwrap();
    match b3sum(&path) {
        Some(hex) => assert_eq!(ob.root().to_string(), hex),
        None => println!("note: b3sum is not installed; compared with blake3::hash only"),
    }
    check_verifier(&ob, &data);
    // And with small pieces (many levels, 20k+ leaves).
    let ob = hash_file_with_piece_size(&path, 1024, &|_| {}).unwrap();
    assert_eq!(ob.root(), expected);
    let layout = ob.layout();
    for i in [0, 1, 777, layout.num_pieces() - 1] {
        let p = piece(&layout, &data, i);
        verify_piece_with_proof(expected, &layout, i, p, &ob.proof(i)).unwrap();
    }
}

#[test]
fn outboard_round_trips_and_rejects_a_tampered_copy() {
    let data = random_bytes(100 * K + 3, 9);
    let layout = PieceLayout::with_piece_size(data.len() as u64, 4096).unwrap();
    let ob = hash_bytes_with_layout(layout, &data).unwrap();
    let enc = ob.encode();
    assert_eq!(enc.len(), 32 * layout.num_pieces() as usize);
    let back = Outboard::decode(ContentId::of(&data), layout, &enc).unwrap();
    assert_eq!(back, ob);
    let mut bad = enc;
    bad[5 * 32 + 3] ^= 0x10;
    assert!(matches!(
        Outboard::decode(ContentId::of(&data), layout, &bad),
        Err(VerifyError::RootMismatch { .. })
    ));
    assert!(matches!(
        Outboard::from_leaves(ContentId::of(&data), layout, ob.leaves()[1..].to_vec()),
        Err(VerifyError::WrongLeafCount { .. })
    ));
}

#[test]
fn missing_file_error_names_the_path_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nope.bin");
    let err = hash_file(&p, &|_| {}).unwrap_err().to_string();
    assert!(err.contains("nope.bin"), "{err}");
    assert!(err.contains("check that the path exists"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn root_from_leaves_equals_blake3(len in 0usize..200_000, shift in 0u32..6, seed: u64) {
        let data = random_bytes(len, seed);
        let layout = PieceLayout::with_piece_size(len as u64, 1024u64 << shift).unwrap();
        let ob = hash_bytes_with_layout(layout, &data).unwrap();
        prop_assert_eq!(ob.root(), ContentId::of(&data));
        let rebuilt = Outboard::from_leaves(ContentId::of(&data), layout, ob.leaves().to_vec());
        prop_assert!(rebuilt.is_ok());
        if layout.num_pieces() > 0 {
            let i = (seed % u64::from(layout.num_pieces())) as u32;
            let p = piece(&layout, &data, i);
            prop_assert!(verify_piece_with_proof(ob.root(), &layout, i, p, &ob.proof(i)).is_ok());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Hostile outboards and proofs are rejected, never a panic or an acceptance.
    #[test]
    fn arbitrary_outboards_and_proofs_are_rejected_without_panic(
        len in 0u64..100_000,
        shift in 0u32..4,
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        index in 0u32..200,
        proof in proptest::collection::vec(any::<[u8; 32]>(), 0..20),
    ) {
        let layout = PieceLayout::with_piece_size(len, 1024u64 << shift).unwrap();
        let root = ContentId::of(&bytes);
        prop_assert!(Outboard::decode(root, layout, &bytes).is_err() || layout.num_pieces() <= 1);
        let piece_len = layout.piece_len(index);
        let data = vec![0xa5u8; piece_len];
        prop_assert!(verify_piece_with_proof(root, &layout, index, &data, &proof).is_err());
    }
}
