//! How clients find a running daemon: the lock `daemon.lock` (held for the
//! daemon's life, holds its pid), the token file `api.token` (mode 0600, kept
//! across restarts so that open web pages and bookmarks keep working; deleting
//! it makes the next start write a new one) and `daemon.json` (pid, API address, version; written once the
//! API listens, removed on a clean exit).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::DaemonError;

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "daemon.lock";
/// The token file's name in the data directory.
pub const TOKEN_FILE: &str = "api.token";
/// The discovery file's name in the data directory.
pub const INFO_FILE: &str = "daemon.json";

/// The content of `daemon.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub api: SocketAddr,
    pub version: String,
}

/// The exclusive lock on a data directory; released when dropped.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError {
    let path = path.to_path_buf();
    move |source| DaemonError::Io { what, path, source }
}

/// Takes the lock of `data_dir`, or says which daemon holds it.
pub fn lock(data_dir: &Path) -> Result<DirLock, DaemonError> {
    let path = data_dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_err("open the lock file", &path))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(DaemonError::AlreadyRunning {
                pid: text.trim().parse().ok(),
                data_dir: data_dir.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(DaemonError::Io {
                what: "lock",
                path,
                source: e.into(),
            })
        }
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .and_then(|()| file.flush())
        .map_err(io_err("write the lock file", &path))?;
    Ok(DirLock { _file: file })
}

/// [`shoal_store::write_atomic`], with the daemon's error.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), DaemonError> {
    shoal_store::write_atomic(path, contents, mode).map_err(|source| DaemonError::Io {
        what: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// The API token: the one in `api.token` if that file is a regular file only
/// its owner can read or write (mode 0600) holding 64 hex digits; otherwise
/// (missing, damaged, or readable by others, so possibly seen by someone
/// else) a new one, written in its place.
pub fn load_or_create_token(data_dir: &Path) -> Result<String, DaemonError> {
    use std::os::unix::fs::PermissionsExt;
    let path = data_dir.join(TOKEN_FILE);
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        let private = meta.is_file() && meta.permissions().mode() & 0o077 == 0;
        if private && meta.len() <= 128 {
            if let Ok(text) = std::fs::read_to_string(&path) {
                let t = text.trim();
                if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Ok(t.to_ascii_lowercase());
                }
            }
        }
        if !private {
            tracing::warn!(path = %path.display(), "the API token file could be read by others: writing a new token");
        }
    }
    new_token(data_dir)
}

/// A new random 256-bit token, written hex-encoded to `api.token` (mode 0600).
pub fn new_token(data_dir: &Path) -> Result<String, DaemonError> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_atomic(&data_dir.join(TOKEN_FILE), token.as_bytes(), 0o600)?;
    Ok(token)
}

/// Writes `daemon.json`.
pub fn write_info(data_dir: &Path, info: &DaemonInfo) -> Result<(), DaemonError> {
    let text = serde_json::to_vec_pretty(info).unwrap_or_default();
    write_atomic(&data_dir.join(INFO_FILE), &text, 0o600)
}

/// Reads `daemon.json` if a daemon is running for `data_dir`: the file exists
/// and its lock is held. A stale file (lock free) means no daemon.
pub fn running(data_dir: &Path) -> Option<DaemonInfo> {
    let info: DaemonInfo =
        serde_json::from_slice(&std::fs::read(data_dir.join(INFO_FILE)).ok()?).ok()?;
    let f = File::open(data_dir.join(LOCK_FILE)).ok()?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockShared) {
        // We could take it: nobody holds the lock.
        Ok(()) => None,
        Err(_) => Some(info),
    }
}
