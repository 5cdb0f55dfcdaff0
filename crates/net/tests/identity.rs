//! The node identity file: created private, stable, and refused when exposed.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use shoal_net::identity::{load_or_create, IDENTITY_FILE};
use shoal_net::NetError;

#[test]
fn identity_is_created_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    load_or_create(dir.path()).unwrap();
    let meta = fs::metadata(dir.path().join(IDENTITY_FILE)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // No temporary file is left behind.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(IDENTITY_FILE)]);
}

#[test]
fn peer_id_is_stable_across_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let first = load_or_create(dir.path()).unwrap().public().to_peer_id();
    let bytes = fs::read(dir.path().join(IDENTITY_FILE)).unwrap();
    for _ in 0..3 {
        let again = load_or_create(dir.path()).unwrap().public().to_peer_id();
        assert_eq!(again, first);
    }
    // Loading never rewrites the key.
    assert_eq!(fs::read(dir.path().join(IDENTITY_FILE)).unwrap(), bytes);
}

#[test]
fn group_readable_identity_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    load_or_create(dir.path()).unwrap();
    let path = dir.path().join(IDENTITY_FILE);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let err = load_or_create(dir.path()).unwrap_err();
    assert!(
        matches!(err, NetError::IdentityPermissions { mode: 0o644, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("chmod 600"), "{msg}");
}

#[test]
fn non_ed25519_and_garbage_keys_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(IDENTITY_FILE);
    // A protobuf Keypair of type secp256k1 (KeyType 2) with 32 key bytes.
    let mut secp = vec![0x08, 0x02, 0x12, 0x20];
    secp.extend_from_slice(&[7u8; 32]);
    fs::write(&path, secp).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let err = load_or_create(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            NetError::IdentityNotEd25519 { .. } | NetError::IdentityInvalid { .. }
        ),
        "{err:?}"
    );

    fs::write(&path, b"not a key").unwrap();
    let err = load_or_create(dir.path()).unwrap_err();
    assert!(matches!(err, NetError::IdentityInvalid { .. }), "{err:?}");
}
