//! Downloads in progress: verified positioned writes into a partial file, with a
//! per-download bitfield persisted in the database; and verified reads for serving.
//!
//! Crash model (see `DESIGN.md`): a piece only ever goes from absent to
//! verified-present. [`PartialFile::flush`] first `fdatasync`s the partial file,
//! then stores the bitfield, so a bit recorded as present implies its bytes are
//! durable. A crash loses at most the pieces written since the last flush, which
//! are fetched again; it never makes a missing or corrupt piece look present.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use shoal_core::Kind;

use crate::db::{Db, DownloadState};
use crate::error::StoreError;
use crate::hash::hash_file;
use crate::tree::{Outboard, VerifyError};

/// The suffix of a partial file next to its destination.
pub const PART_SUFFIX: &str = ".shoal-part";

/// Held while [`PartialFile::open`] decides whose a partial file is and records
/// it, so two downloads in this process never both take the same one.
static OPENING: Mutex<()> = Mutex::new(());

/// A bit per piece, most significant bit first (BitTorrent order).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Bits {
    bytes: Vec<u8>,
    len: u32,
}

impl Bits {
    fn new(len: u32) -> Self {
        Self {
            bytes: vec![0; (len as usize).div_ceil(8)],
            len,
        }
    }

    /// Parses stored bits; `None` if the length is wrong or a spare bit is set.
    fn from_bytes(bytes: &[u8], len: u32) -> Option<Self> {
        if bytes.len() != (len as usize).div_ceil(8) {
            return None;
        }
        let spare = (bytes.len() * 8) as u32 - len;
        if spare > 0 {
            let last = *bytes.last()?;
            if last & ((1u8 << spare) - 1) != 0 {
                return None;
            }
        }
        Some(Self {
            bytes: bytes.to_vec(),
            len,
        })
    }

    fn get(&self, i: u32) -> bool {
        i < self.len && self.bytes[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    fn set(&mut self, i: u32) {
        if i < self.len {
            self.bytes[(i / 8) as usize] |= 0x80 >> (i % 8);
        }
    }

    fn count(&self) -> u32 {
        self.bytes.iter().map(|b| b.count_ones()).sum()
    }
}

/// The partial file path for `dest`: `dest` with [`PART_SUFFIX`] appended.
pub fn part_path_for(dest: &Path) -> PathBuf {
    let mut s: OsString = dest.as_os_str().to_owned();
    s.push(PART_SUFFIX);
    PathBuf::from(s)
}

/// One file being downloaded: verified pieces are written in place, at their
/// offset, into a partial file that is renamed to its destination when complete.
///
/// Callers that share one `PartialFile` between threads behind a lock keep
/// the slow parts outside it: [`PieceVerifier`] checks a piece's bytes with
/// no access to the file, and [`PartialFile::start_flush`] hands the
/// `fdatasync` to a [`PendingFlush`] that runs unlocked.
#[derive(Debug)]
pub struct PartialFile {
    db: Db,
    key: i64,
    outboard: Arc<Outboard>,
    dest: PathBuf,
    part: PathBuf,
    file: Arc<File>,
    bits: Bits,
    /// Pieces written since the last flush.
    unflushed: u32,
    /// A [`PendingFlush`] of this file exists.
    flushing: Arc<AtomicBool>,
    /// The bitfield last stored in the database. Flushes store under this
    /// lock and only ever add bits to it, so a flush that started earlier
    /// but finishes later cannot store less than one before it.
    stored: Arc<Mutex<Vec<u8>>>,
}

/// Checks pieces of one download against its outboard, on any thread and
/// without the [`PartialFile`]: only bytes it accepted can be written.
#[derive(Clone, Debug)]
pub struct PieceVerifier {
    outboard: Arc<Outboard>,
}

/// Bytes that [`PieceVerifier::verify`] found to be piece `index` of the
/// content; the only way to hand data to [`PartialFile::write_verified`].
#[derive(Debug)]
pub struct VerifiedPiece<'a> {
    outboard: &'a Arc<Outboard>,
    index: u32,
    data: &'a [u8],
}

impl PieceVerifier {
    /// Verifies `data` as piece `index`; the error says why it does not match.
    pub fn verify<'a>(
        &'a self,
        index: u32,
        data: &'a [u8],
    ) -> Result<VerifiedPiece<'a>, StoreError> {
        self.outboard
            .verify_piece(index, data)
            .map_err(|source| StoreError::Verify {
                id: self.outboard.root(),
                source,
            })?;
        Ok(VerifiedPiece {
            outboard: &self.outboard,
            index,
            data,
        })
    }
}

/// The durable half of a flush, taken out of the [`PartialFile`] by
/// [`PartialFile::start_flush`] so the `fdatasync` does not hold up writers:
/// it syncs the file, then stores the bitfield as it was when the flush
/// started. Every piece in that bitfield was written before the flush began,
/// so the sync covers it; pieces written meanwhile wait for the next flush.
#[derive(Debug)]
#[must_use = "a pending flush does nothing until run"]
pub struct PendingFlush {
    db: Db,
    key: i64,
    file: Arc<File>,
    part: PathBuf,
    bits: Vec<u8>,
    flushing: Arc<AtomicBool>,
    stored: Arc<Mutex<Vec<u8>>>,
}

impl PendingFlush {
    /// Syncs the partial file's data, then records the pieces as present.
    pub fn run(self) -> Result<(), StoreError> {
        self.file
            .sync_data()
            .map_err(StoreError::io("sync the partial file", &self.part))?;
        store_union(&self.db, self.key, &self.stored, &self.bits)
    }
}

/// Stores `bits` ∪ what was stored before, under the `stored` lock.
fn store_union(db: &Db, key: i64, stored: &Mutex<Vec<u8>>, bits: &[u8]) -> Result<(), StoreError> {
    let mut last = stored.lock().unwrap_or_else(|p| p.into_inner());
    let union: Vec<u8> = if last.len() == bits.len() {
        last.iter().zip(bits).map(|(a, b)| a | b).collect()
    } else {
        bits.to_vec()
    };
    if union != *last {
        db.set_download_bitfield(key, &union)?;
        *last = union;
    }
    Ok(())
}

impl Drop for PendingFlush {
    fn drop(&mut self) {
        self.flushing.store(false, Ordering::Release);
    }
}

impl PartialFile {
    /// Opens the download of the content `outboard` describes to `dest`, through
    /// the partial file `part` (default: [`part_path_for`]`(dest)`). If the
    /// database has a download for that partial file, of the same content, and
    /// the partial file still has the content's length, it resumes from the
    /// persisted bitfield plus every other piece whose bytes in the partial file
    /// verify (pieces written after the last flush, before a crash). If that
    /// download cut the content at another piece size (a provider with another
    /// layout answered first this time), its bytes are kept and every piece that
    /// verifies under the new layout counts as present. Otherwise it starts over
    /// with an empty partial file.
    ///
    /// Nothing of anyone else's is overwritten: a partial file holding another
    /// content's unfinished download, or bytes with no record at all, is refused
    /// with [`StoreError::PartInUse`]; an existing `dest` that cannot be this
    /// content (another length, or not a regular file) with
    /// [`StoreError::DestinationExists`], before anything is downloaded.
    pub fn open(
        db: &Db,
        outboard: Outboard,
        dest: &Path,
        part: Option<&Path>,
    ) -> Result<Self, StoreError> {
        let part = part
            .map(Path::to_path_buf)
            .unwrap_or_else(|| part_path_for(dest));
        let layout = outboard.layout();
        let n = layout.num_pieces();
        match std::fs::symlink_metadata(dest) {
            Ok(m) if !(m.is_file() && m.len() == layout.len()) => {
                return Err(StoreError::DestinationExists {
                    path: dest.to_path_buf(),
                })
            }
            _ => {}
        }
        if let Some(parent) = part.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(StoreError::io("create the folder", parent))?;
        }
        let opening = OPENING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part)
            .map_err(StoreError::io("open the partial file", &part))?;
        let file_len = file
            .metadata()
            .map_err(StoreError::io("read the metadata of", &part))?
            .len();
        let record = db.download_by_part(&part)?;
        if file_len > 0 {
            let owner = match &record {
                None => Some(None),
                Some(d) if d.id != outboard.root() && d.state != DownloadState::Complete => {
                    Some(Some(d.id))
                }
                Some(_) => None,
            };
            if let Some(owner) = owner {
                return Err(StoreError::PartInUse { part, owner });
            }
        }

        // The bytes of an earlier download of the same content at the same
        // length are worth verifying again; its bits only under the same layout.
        let earlier = record.filter(|d| {
            d.id == outboard.root() && d.length == layout.len() && file_len == layout.len()
        });
        let keep_bytes = earlier.is_some();
        let resumed = earlier.and_then(|d| {
            (d.piece_size == layout.piece_size())
                .then(|| Bits::from_bytes(&d.bitfield, n).map(|bits| (d.key, bits)))
                .flatten()
        });
        let (key, bits) = match resumed {
            Some(r) => r,
            None => {
                // Recorded before the file is sized: a partial file with bytes
                // and no record is never one of ours.
                let bits = Bits::new(n);
                let key = db.start_download(
                    &outboard.root(),
                    Kind::File,
                    dest,
                    &part,
                    layout.piece_size(),
                    layout.len(),
                    &bits.bytes,
                )?;
                if !keep_bytes {
                    // Start over: whatever the file held is not trusted.
                    file.set_len(0)
                        .and_then(|()| file.set_len(layout.len()))
                        .map_err(StoreError::io("size the partial file", &part))?;
                }
                (key, bits)
            }
        };
        drop(opening);
        let mut me = Self {
            db: db.clone(),
            key,
            outboard: Arc::new(outboard),
            dest: dest.to_path_buf(),
            part,
            file: Arc::new(file),
            stored: Arc::new(Mutex::new(bits.bytes.clone())),
            bits,
            unflushed: 0,
            flushing: Arc::new(AtomicBool::new(false)),
        };
        if keep_bytes {
            me.recover_unflushed()?;
        }
        Ok(me)
    }

    /// Marks present every missing piece whose bytes in the partial file verify
    /// against the outboard: pieces written but not yet flushed when the last
    /// run was killed, or written under another layout. Verification makes them
    /// as trustworthy as any piece received, so they are not fetched again.
    /// Holes read as zeros and fail.
    fn recover_unflushed(&mut self) -> Result<(), StoreError> {
        let layout = self.outboard.layout();
        let mut buf = Vec::new();
        for index in 0..layout.num_pieces() {
            if self.bits.get(index) {
                continue;
            }
            buf.resize(layout.piece_len(index), 0);
            self.file
                .read_exact_at(&mut buf, layout.piece_offset(index))
                .map_err(StoreError::io("read the partial file", &self.part))?;
            if self.outboard.verify_piece(index, &buf).is_ok() {
                self.bits.set(index);
                self.unflushed += 1;
            }
        }
        Ok(())
    }

    /// The content's outboard.
    pub fn outboard(&self) -> &Outboard {
        &self.outboard
    }

    /// The final destination.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The partial file.
    pub fn part(&self) -> &Path {
        &self.part
    }

    /// The download's key in the database.
    pub fn key(&self) -> i64 {
        self.key
    }

    /// Verifies `data` as piece `index` and, only if it matches, writes it at its
    /// offset. A piece already present is not written again. On a verification
    /// failure nothing is written and the error says why.
    pub fn write_piece(&mut self, index: u32, data: &[u8]) -> Result<(), StoreError> {
        let verifier = self.verifier();
        let piece = verifier.verify(index, data)?;
        self.write_verified(piece)
    }

    /// A verifier of this download's pieces, usable without this file.
    pub fn verifier(&self) -> PieceVerifier {
        PieceVerifier {
            outboard: self.outboard.clone(),
        }
    }

    /// Writes a piece [`PieceVerifier::verify`] accepted, at its offset. A
    /// piece already present is not written again. A piece verified against
    /// other content is refused.
    pub fn write_verified(&mut self, piece: VerifiedPiece<'_>) -> Result<(), StoreError> {
        let VerifiedPiece {
            outboard,
            index,
            data,
        } = piece;
        if !Arc::ptr_eq(outboard, &self.outboard) && **outboard != *self.outboard {
            return Err(StoreError::Corrupt {
                what: format!(
                    "piece {index} was verified against {}, not {}",
                    outboard.root(),
                    self.outboard.root()
                ),
            });
        }
        if self.bits.get(index) {
            return Ok(());
        }
        let offset = self.outboard.layout().piece_offset(index);
        self.file
            .write_all_at(data, offset)
            .map_err(StoreError::io("write to the partial file", &self.part))?;
        self.bits.set(index);
        self.unflushed += 1;
        Ok(())
    }

    /// Whether piece `index` is present (verified and written; durable after the
    /// next [`flush`](Self::flush)).
    pub fn has(&self, index: u32) -> bool {
        self.bits.get(index)
    }

    /// The pieces still missing, in order.
    pub fn missing(&self) -> Vec<u32> {
        (0..self.bits.len).filter(|&i| !self.bits.get(i)).collect()
    }

    /// How many pieces are present.
    pub fn present(&self) -> u32 {
        self.bits.count()
    }

    /// Whether every piece is present.
    pub fn is_complete(&self) -> bool {
        self.bits.count() == self.bits.len
    }

    /// The bitfield, one bit per piece, most significant bit first.
    pub fn bitfield(&self) -> &[u8] {
        &self.bits.bytes
    }

    /// Pieces written since the last flush (the caller may flush every N).
    pub fn unflushed(&self) -> u32 {
        self.unflushed
    }

    /// Makes every written piece durable, then records them as present: data is
    /// synced before the bits are stored, never the other way round.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if self.unflushed == 0 {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(StoreError::io("sync the partial file", &self.part))?;
        store_union(&self.db, self.key, &self.stored, &self.bits.bytes)?;
        self.unflushed = 0;
        Ok(())
    }

    /// Starts a flush to finish with [`PendingFlush::run`] outside any lock
    /// around this file. `None` when nothing was written since the last
    /// flush, or while another pending flush of this file exists (one at a
    /// time, so an older bitfield is never stored after a newer one). If the
    /// pending flush fails, the pieces it covered stay on disk unrecorded: a
    /// later open finds them by verification, so nothing is lost or trusted
    /// that should not be.
    pub fn start_flush(&mut self) -> Option<PendingFlush> {
        if self.unflushed == 0 || self.flushing.swap(true, Ordering::AcqRel) {
            return None;
        }
        self.unflushed = 0;
        Some(PendingFlush {
            db: self.db.clone(),
            key: self.key,
            file: self.file.clone(),
            part: self.part.clone(),
            bits: self.bits.bytes.clone(),
            flushing: self.flushing.clone(),
            stored: self.stored.clone(),
        })
    }

    /// Completes the download: checks every piece is present, syncs, and moves the
    /// partial file to its destination without ever replacing an existing file.
    /// If the destination already holds exactly this content, the partial file is
    /// dropped and that is success. Returns the destination.
    pub fn finish(mut self) -> Result<PathBuf, StoreError> {
        if !self.is_complete() {
            return Err(StoreError::Incomplete {
                path: self.dest.clone(),
                missing: self.bits.len - self.bits.count(),
                total: self.bits.len,
            });
        }
        self.file
            .sync_all()
            .map_err(StoreError::io("sync the partial file", &self.part))?;
        self.unflushed = self.unflushed.max(1);
        self.flush()?;
        self.place()?;
        if let Some(parent) = self.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        self.db
            .set_download_state(self.key, DownloadState::Complete)?;
        Ok(std::mem::take(&mut self.dest))
    }

    /// Moves the partial file to `dest` unless `dest` exists: a hard link fails
    /// atomically if the destination exists, then the partial name is removed.
    fn place(&self) -> Result<(), StoreError> {
        match std::fs::hard_link(&self.part, &self.dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return self.already_there(),
            Err(_) => {
                // Some file systems have no hard links: fall back to a checked
                // rename (a race with another writer is then possible, though
                // unlikely).
                if std::fs::symlink_metadata(&self.dest).is_ok() {
                    return self.already_there();
                }
                return std::fs::rename(&self.part, &self.dest).map_err(StoreError::io(
                    "move the download into place at",
                    &self.dest,
                ));
            }
        }
        std::fs::remove_file(&self.part).map_err(StoreError::io("remove", &self.part))
    }

    /// The destination exists: fine if it is exactly this content.
    fn already_there(&self) -> Result<(), StoreError> {
        let same = std::fs::symlink_metadata(&self.dest)
            .map(|m| m.is_file() && m.len() == self.outboard.layout().len())
            .unwrap_or(false)
            && hash_file(&self.dest, &|_| {})
                .map(|ob| ob.root() == self.outboard.root())
                .unwrap_or(false);
        if !same {
            return Err(StoreError::DestinationExists {
                path: self.dest.clone(),
            });
        }
        std::fs::remove_file(&self.part).map_err(StoreError::io("remove", &self.part))
    }
}

impl Drop for PartialFile {
    /// Best effort: persist what was written, so a download that is simply
    /// dropped (not crashed) resumes where it stopped. Errors are ignored here;
    /// call [`PartialFile::flush`] to see them.
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("sync the folder", dir))
}

/// Reads piece `index` of `source` into `buf` (resized to the piece's length) and
/// re-verifies it against `outboard`, so bytes that no longer match the id are
/// never served: a modified or truncated source gives
/// [`StoreError::SourceChanged`].
pub fn read_piece(
    source: &Path,
    outboard: &Outboard,
    index: u32,
    buf: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let file = File::open(source).map_err(StoreError::io("open", source))?;
    read_piece_from(&file, source, outboard, index, buf)
}

/// [`read_piece`] from an already open file (`source` names it in errors).
pub fn read_piece_from(
    file: &File,
    source: &Path,
    outboard: &Outboard,
    index: u32,
    buf: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let layout = outboard.layout();
    if index >= layout.num_pieces() {
        return Err(StoreError::Verify {
            id: outboard.root(),
            source: VerifyError::IndexOutOfRange {
                index,
                num_pieces: layout.num_pieces(),
            },
        });
    }
    let changed = || StoreError::SourceChanged {
        path: source.to_path_buf(),
        id: outboard.root(),
        piece: index,
    };
    buf.resize(layout.piece_len(index), 0);
    match file.read_exact_at(buf, layout.piece_offset(index)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(changed()),
        Err(e) => return Err(StoreError::io("read", source)(e)),
    }
    outboard.verify_piece(index, buf).map_err(|_| changed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_reject_wrong_length_and_spare_bits() {
        let mut b = Bits::new(10);
        b.set(0);
        b.set(9);
        assert!(b.get(0) && b.get(9) && !b.get(5) && !b.get(10));
        assert_eq!(b.bytes, vec![0x80, 0x40]);
        assert_eq!(Bits::from_bytes(&b.bytes, 10), Some(b.clone()));
        assert_eq!(Bits::from_bytes(&[0x80, 0x41], 10), None);
        assert_eq!(Bits::from_bytes(&[0x80], 10), None);
        assert_eq!(Bits::from_bytes(&[], 0), Some(Bits::new(0)));
    }
}
