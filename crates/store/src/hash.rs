//! Hashing files into outboards: multi-threaded, streaming, bounded memory.
//!
//! Each worker thread takes the next batch of whole pieces, reads it with one
//! positioned read into its own buffer of [`BATCH_BYTES`] (no mmap: a file
//! truncated under a mapping kills the process with SIGBUS), and hashes each piece
//! as a BLAKE3 subtree (SIMD across the piece's chunks). Memory is one buffer per
//! worker plus 32 bytes per piece, whatever the file size.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use crate::error::StoreError;
use crate::layout::{LayoutError, PieceLayout};
use crate::tree::{piece_cv_unchecked, Cv, Outboard, VerifyError};

/// Bytes each worker reads and hashes at a time (rounded to whole pieces, at least
/// one piece). Small enough to stay in a core's L2 cache between the read and the
/// hash, large enough to amortize the system call.
pub const BATCH_BYTES: usize = 1024 * 1024;

/// A progress callback: called with the number of bytes just hashed.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// The number of hashing threads to use: one per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Hashes the file at `path` with shoal's default piece layout, using one thread
/// per core. `progress` is called with each increment of bytes hashed. Fails with
/// [`StoreError::FileChanged`] if the file's size changes while it is read.
pub fn hash_file(path: &Path, progress: Progress<'_>) -> Result<Outboard, StoreError> {
    hash_file_with(path, None, default_threads(), progress)
}

/// [`hash_file`] with an explicit piece size (a power of two, 1 KiB to 4 MiB).
pub fn hash_file_with_piece_size(
    path: &Path,
    piece_size: u32,
    progress: Progress<'_>,
) -> Result<Outboard, StoreError> {
    hash_file_with(path, Some(piece_size), default_threads(), progress)
}

/// [`hash_file`] with every knob: piece size (default layout if `None`) and number
/// of worker threads (at least one is used).
pub fn hash_file_with(
    path: &Path,
    piece_size: Option<u32>,
    threads: usize,
    progress: Progress<'_>,
) -> Result<Outboard, StoreError> {
    let file = File::open(path).map_err(StoreError::io("open", path))?;
    let len = file
        .metadata()
        .map_err(StoreError::io("read the metadata of", path))?
        .len();
    let layout = match piece_size {
        None => PieceLayout::for_len(len),
        Some(ps) => PieceLayout::with_piece_size(len, u64::from(ps)),
    }
    .map_err(|source| StoreError::Layout {
        path: path.to_path_buf(),
        source,
    })?;
    hash_open_file(&file, path, layout, threads, progress)
}

/// Hashes an already open file whose length was read as `layout.len()`.
pub(crate) fn hash_open_file(
    file: &File,
    path: &Path,
    layout: PieceLayout,
    threads: usize,
    progress: Progress<'_>,
) -> Result<Outboard, StoreError> {
    let n = layout.num_pieces();
    let changed = |file: &File| -> StoreError {
        match file.metadata() {
            Ok(m) => StoreError::FileChanged {
                path: path.to_path_buf(),
                expected: layout.len(),
                actual: m.len(),
            },
            Err(e) => StoreError::io("read the metadata of", path)(e),
        }
    };
    let read_at = |buf: &mut [u8], offset: u64| -> Result<(), StoreError> {
        file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                changed(file)
            } else {
                StoreError::io("read", path)(e)
            }
        })
    };

    let leaves: Vec<Cv> = if n <= 1 {
        // At most one piece (≤ 4 MiB): hashed as a root, like b3sum does.
        let mut buf = vec![0u8; layout.piece_len(0)];
        read_at(&mut buf, 0)?;
        progress(buf.len() as u64);
        if n == 1 {
            vec![piece_cv_unchecked(&layout, 0, &buf)]
        } else {
            Vec::new()
        }
    } else {
        let ps = layout.piece_size() as usize;
        let per_batch = (BATCH_BYTES / ps).max(1) as u32;
        let batches = n.div_ceil(per_batch);
        let workers = threads.clamp(1, batches as usize);
        let next = AtomicU32::new(0);
        let stop = AtomicBool::new(false);
        let first_error: Mutex<Option<StoreError>> = Mutex::new(None);
        let mut leaves = vec![[0u8; 32]; n as usize];

        let work = || {
            let mut done = Vec::new();
            let mut buf = vec![0u8; per_batch as usize * ps];
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    break;
                }
                let first = b * per_batch;
                let last = (first + per_batch).min(n);
                let start = layout.piece_offset(first);
                let end = layout.piece_range(last - 1).end;
                let bytes = &mut buf[..(end - start) as usize];
                if let Err(e) = read_at(bytes, start) {
                    stop.store(true, Ordering::Relaxed);
                    if let Ok(mut slot) = first_error.lock() {
                        slot.get_or_insert(e);
                    }
                    break;
                }
                let cvs = (first..last)
                    .map(|i| {
                        let r = layout.piece_range(i);
                        let piece = &bytes[(r.start - start) as usize..(r.end - start) as usize];
                        piece_cv_unchecked(&layout, i, piece)
                    })
                    .collect();
                done.push((first, cvs));
                progress(end - start);
            }
            done
        };
        let results: Vec<Vec<(u32, Vec<Cv>)>> = if workers == 1 {
            // No thread to spawn: many small files are hashed this way in parallel
            // by the folder walker.
            vec![work()]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..workers).map(|_| s.spawn(work)).collect();
                handles
                    .into_iter()
                    // A worker only panics on a bug; its batches then stay missing
                    // and are caught by the completeness check below.
                    .filter_map(|h| h.join().ok())
                    .collect()
            })
        };
        if let Some(e) = first_error.into_inner().ok().flatten() {
            return Err(e);
        }
        let mut filled = 0u64;
        for (first, cvs) in results.into_iter().flatten() {
            let first = first as usize;
            filled += cvs.len() as u64;
            leaves[first..first + cvs.len()].copy_from_slice(&cvs);
        }
        if filled != u64::from(n) {
            return Err(StoreError::Io {
                action: "hash",
                path: path.to_path_buf(),
                source: io::Error::other("a hashing thread failed"),
            });
        }
        leaves
    };

    // A file that grew (or shrank and grew back) while being read is refused, so
    // the id always describes bytes that were there from start to end.
    let now = file
        .metadata()
        .map_err(StoreError::io("read the metadata of", path))?
        .len();
    if now != layout.len() {
        return Err(changed(file));
    }
    // Every leaf was filled above, so the count matches and this cannot fail.
    Outboard::build(layout, leaves).map_err(|e| StoreError::Io {
        action: "hash",
        path: path.to_path_buf(),
        source: io::Error::other(e.to_string()),
    })
}

/// Hashes bytes in memory with shoal's default layout (single-threaded).
pub fn hash_bytes(data: &[u8]) -> Result<Outboard, LayoutError> {
    let layout = PieceLayout::for_len(data.len() as u64)?;
    // The layout was made for this length, so the lengths agree.
    hash_bytes_with_layout(layout, data).map_err(|_| LayoutError::TooLarge {
        len: data.len() as u64,
    })
}

/// Hashes bytes in memory with a given layout, which must have `data`'s length.
pub fn hash_bytes_with_layout(layout: PieceLayout, data: &[u8]) -> Result<Outboard, VerifyError> {
    if layout.len() != data.len() as u64 {
        return Err(VerifyError::WrongLength {
            index: 0,
            expected: layout.len() as usize,
            actual: data.len(),
        });
    }
    let leaves = (0..layout.num_pieces())
        .map(|i| {
            let r = layout.piece_range(i);
            piece_cv_unchecked(&layout, i, &data[r.start as usize..r.end as usize])
        })
        .collect();
    Outboard::build(layout, leaves)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file whose size differs from the length read when hashing started (it
    /// was truncated or appended to meanwhile) is refused, whatever the path taken.
    #[test]
    fn file_that_changed_size_during_hashing_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![5u8; 3 * 1024 * 1024 + 3]).unwrap();
        let file = File::open(&path).unwrap();
        let real = file.metadata().unwrap().len();
        for (claimed, threads) in [
            (real + 1, 2),               // shrank: the last read hits EOF
            (real - 1, 2),               // grew after the length was read
            (real + 5 * 1024 * 1024, 1), // shrank a lot
            (1000, 1),                   // single piece, grew
        ] {
            let layout = PieceLayout::with_piece_size(claimed, 256 * 1024).unwrap();
            let err = hash_open_file(&file, &path, layout, threads, &|_| {}).unwrap_err();
            assert!(
                matches!(err, StoreError::FileChanged { expected, actual, .. }
                    if expected == claimed && actual == real),
                "claimed {claimed}: {err:?}"
            );
            assert!(err
                .to_string()
                .contains("changed while it was being hashed"));
        }
    }
}
