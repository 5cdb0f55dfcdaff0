//! How a content is cut into pieces.
//!
//! A piece is both the verification unit (one BLAKE3 subtree, see [`crate::tree`])
//! and the scheduling unit. The piece size is a power of two between 1 KiB (one
//! BLAKE3 chunk) and [`MAX_PIECE_SIZE`], so that every piece at an offset that is a
//! multiple of its size is a complete BLAKE3 subtree. The content id never depends
//! on the piece size.
//!
//! An empty content has **zero pieces**: there is nothing to fetch or verify piece
//! by piece, and the content is verified as a whole (its id is `blake3::hash(b"")`).

use std::ops::Range;

pub use shoal_core::proto::{
    DEFAULT_PIECE_SIZE, LARGE_PIECE_SIZE, MAX_CONTENT_LEN, MAX_PIECE_SIZE, MIN_PIECE_SIZE,
    SMALL_TARGET_PIECES, TARGET_PIECES,
};

/// The most pieces a content may have; with [`MAX_PIECE_SIZE`] this caps a content
/// at [`MAX_CONTENT_LEN`] bytes and an outboard at 32 MiB.
pub const MAX_PIECES: u64 = shoal_core::proto::MAX_PIECES as u64;

const _: () = assert!(MIN_PIECE_SIZE as usize == blake3::CHUNK_LEN);

/// Why a length and piece size do not make a valid layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "the content is {len} bytes, more than shoal's limit of {MAX_CONTENT_LEN} bytes (4 TiB); \
         split it into smaller files"
    )]
    TooLarge { len: u64 },
    #[error(
        "piece size {piece_size} is not a power of two between {MIN_PIECE_SIZE} and \
         {MAX_PIECE_SIZE} bytes"
    )]
    BadPieceSize { piece_size: u64 },
    #[error(
        "{len} bytes in pieces of {piece_size} bytes make {pieces} pieces, more than the \
         limit of {MAX_PIECES}; use a larger piece size"
    )]
    TooManyPieces {
        len: u64,
        piece_size: u32,
        pieces: u64,
    },
}

/// The piece geometry of one content: its length and piece size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PieceLayout {
    len: u64,
    piece_size: u32,
    num_pieces: u32,
}

impl PieceLayout {
    /// The layout shoal uses for a content of `len` bytes: its default piece size
    /// ([`shoal_core::proto::default_piece_size`]: 256 KiB up to 256 MiB, growing to
    /// 1 MiB by 1 GiB, to 4 MiB beyond 128 GiB). Fails for contents over
    /// [`MAX_CONTENT_LEN`].
    pub fn for_len(len: u64) -> Result<Self, LayoutError> {
        let piece_size =
            shoal_core::proto::default_piece_size(len).ok_or(LayoutError::TooLarge { len })?;
        Self::with_piece_size(len, u64::from(piece_size))
    }

    /// A layout with an explicit piece size, which must be a power of two in
    /// [[`MIN_PIECE_SIZE`], [`MAX_PIECE_SIZE`]] giving at most [`MAX_PIECES`] pieces.
    /// The piece size is a `u64` so that a value read from the network or the
    /// database is checked here rather than truncated by the caller.
    pub fn with_piece_size(len: u64, piece_size: u64) -> Result<Self, LayoutError> {
        if !piece_size.is_power_of_two()
            || piece_size < u64::from(MIN_PIECE_SIZE)
            || piece_size > u64::from(MAX_PIECE_SIZE)
        {
            return Err(LayoutError::BadPieceSize { piece_size });
        }
        if len > MAX_CONTENT_LEN {
            return Err(LayoutError::TooLarge { len });
        }
        let pieces = len.div_ceil(piece_size);
        // The range check above makes this conversion lossless.
        let piece_size = piece_size as u32;
        if pieces > MAX_PIECES {
            return Err(LayoutError::TooManyPieces {
                len,
                piece_size,
                pieces,
            });
        }
        Ok(Self {
            len,
            piece_size,
            num_pieces: pieces as u32,
        })
    }

    /// The content length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the content is empty (and so has no pieces).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The piece size in bytes (a power of two).
    pub fn piece_size(&self) -> u32 {
        self.piece_size
    }

    /// The number of pieces: `ceil(len / piece_size)`, so 0 for an empty content.
    pub fn num_pieces(&self) -> u32 {
        self.num_pieces
    }

    /// The byte range of piece `index`. Only the last piece may be shorter than the
    /// piece size. An out-of-range index gives the empty range `len..len`.
    pub fn piece_range(&self, index: u32) -> Range<u64> {
        if index >= self.num_pieces {
            return self.len..self.len;
        }
        let start = u64::from(index) * u64::from(self.piece_size);
        let end = (start + u64::from(self.piece_size)).min(self.len);
        start..end
    }

    /// The length of piece `index` in bytes (0 for an out-of-range index).
    pub fn piece_len(&self, index: u32) -> usize {
        let r = self.piece_range(index);
        // A piece is at most MAX_PIECE_SIZE bytes, which fits any usize we build for.
        (r.end - r.start) as usize
    }

    /// The byte offset of piece `index` (`len` for an out-of-range index).
    pub fn piece_offset(&self, index: u32) -> u64 {
        self.piece_range(index).start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_content_has_zero_pieces() {
        let l = PieceLayout::for_len(0).unwrap();
        assert_eq!(l.num_pieces(), 0);
        assert_eq!(l.piece_size(), DEFAULT_PIECE_SIZE);
        assert_eq!(l.piece_range(0), 0..0);
    }

    #[test]
    fn layouts_follow_the_protocol_default_piece_size() {
        let k = 1024u64;
        let m = k * k;
        let g = k * m;
        for (len, size, pieces) in [
            (1, DEFAULT_PIECE_SIZE, 1),
            (256 * m, DEFAULT_PIECE_SIZE, 1024),
            (256 * m + 1, 512 * 1024, 513),
            (g, LARGE_PIECE_SIZE, 1024),
            (64 * g, LARGE_PIECE_SIZE, 65_536),
            (64 * g + 1, 2 * LARGE_PIECE_SIZE, 32_769),
            (1024 * g, MAX_PIECE_SIZE, 262_144),
            (MAX_CONTENT_LEN, MAX_PIECE_SIZE, MAX_PIECES as u32),
        ] {
            let l = PieceLayout::for_len(len).unwrap();
            assert_eq!(
                (l.piece_size(), l.num_pieces()),
                (size, pieces),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn content_over_4_tib_is_refused() {
        assert_eq!(
            PieceLayout::for_len(MAX_CONTENT_LEN + 1),
            Err(LayoutError::TooLarge {
                len: MAX_CONTENT_LEN + 1
            })
        );
    }

    #[test]
    fn bad_piece_sizes_are_refused() {
        for ps in [0, 512, 1000, 3 * 1024, 8 * 1024 * 1024, u64::MAX] {
            assert!(matches!(
                PieceLayout::with_piece_size(10, ps),
                Err(LayoutError::BadPieceSize { .. })
            ));
        }
        assert!(matches!(
            PieceLayout::with_piece_size(MAX_PIECES * 1024 + 1, 1024),
            Err(LayoutError::TooManyPieces { .. })
        ));
    }

    #[test]
    fn last_piece_is_short_and_ranges_tile_the_content() {
        let l = PieceLayout::with_piece_size(10_000, 4096).unwrap();
        assert_eq!(l.num_pieces(), 3);
        assert_eq!(l.piece_range(0), 0..4096);
        assert_eq!(l.piece_range(2), 8192..10_000);
        assert_eq!(l.piece_len(2), 10_000 - 8192);
        assert_eq!(l.piece_len(3), 0);
    }
}
