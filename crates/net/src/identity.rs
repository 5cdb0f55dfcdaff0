//! The node's persistent ed25519 identity (docs/net-design.md §3).
//!
//! `DATA_DIR/identity.key` holds `Keypair::to_protobuf_encoding()` (the format
//! go-libp2p and kubo use). It is created once, atomically, readable only by the
//! user, and never rewritten. Loading refuses a key that other users can read or
//! that is not ed25519, like ssh does, so a copied-around key gets noticed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

use crate::error::{NetError, Result};

/// File name of the identity inside the data directory.
pub const IDENTITY_FILE: &str = "identity.key";

/// A protobuf-encoded ed25519 keypair is 68 bytes; anything much larger is not ours.
const MAX_KEY_FILE: u64 = 4096;

/// Loads `data_dir/identity.key`, creating it (mode 0600) with a fresh ed25519
/// key if it does not exist. `data_dir` must exist.
///
/// Fails if the file is group- or other-accessible (`mode & 0o077 != 0`), is not
/// a libp2p protobuf key, or holds a non-ed25519 key.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair> {
    let path = data_dir.join(IDENTITY_FILE);
    match fs::symlink_metadata(&path) {
        Ok(_) => load(&path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => create(data_dir, &path),
        Err(e) => Err(io_err("read", &path, e)),
    }
}

/// Loads an existing identity file with the checks of [`load_or_create`].
pub fn load(path: &Path) -> Result<Keypair> {
    let mut file = File::open(path).map_err(|e| io_err("open", path, e))?;
    let meta = file.metadata().map_err(|e| io_err("inspect", path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(NetError::IdentityPermissions {
            path: path.to_owned(),
            mode,
        });
    }
    if !meta.is_file() || meta.len() > MAX_KEY_FILE {
        return Err(NetError::IdentityInvalid {
            path: path.to_owned(),
            reason: format!("not a regular file of at most {MAX_KEY_FILE} bytes"),
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut file)
        .take(MAX_KEY_FILE)
        .read_to_end(&mut bytes)
        .map_err(|e| io_err("read", path, e))?;
    let keypair =
        Keypair::from_protobuf_encoding(&bytes).map_err(|e| NetError::IdentityInvalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    let key_type = keypair.key_type();
    match keypair.try_into_ed25519() {
        Ok(ed) => Ok(Keypair::from(ed)),
        Err(_) => Err(NetError::IdentityNotEd25519 {
            path: path.to_owned(),
            key_type: format!("{key_type:?}"),
        }),
    }
}

fn create(data_dir: &Path, path: &Path) -> Result<Keypair> {
    let keypair = Keypair::generate_ed25519();
    let bytes = keypair
        .to_protobuf_encoding()
        .map_err(|e| NetError::IdentityInvalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    let tmp = data_dir.join(format!("{IDENTITY_FILE}.tmp"));
    // A leftover from a crash before the rename never held a key in use: replace it.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove the stale", &tmp, e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_err("create", &tmp, e))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_err("write", &tmp, e))?;
    drop(file);
    // hard_link fails if the target exists, so a concurrent creator cannot be
    // overwritten; the winner's key is then loaded by both.
    match fs::hard_link(&tmp, path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let _ = fs::remove_file(&tmp);
            return load(path);
        }
        Err(e) => return Err(io_err("create", path, e)),
    }
    fs::remove_file(&tmp).map_err(|e| io_err("remove", &tmp, e))?;
    File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("sync the directory of", path, e))?;
    Ok(keypair)
}

fn io_err(action: &'static str, path: &Path, source: io::Error) -> NetError {
    NetError::IdentityIo {
        action,
        path: PathBuf::from(path),
        source,
    }
}
