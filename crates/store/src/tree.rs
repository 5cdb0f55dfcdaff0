//! BLAKE3 verified streaming at piece granularity. Pure: no I/O.
//!
//! A piece of `2^k` chunks at an offset that is a multiple of its size is a complete
//! BLAKE3 subtree, so its chaining value (CV) is computed on its own, and the root
//! (the content id, equal to `b3sum`) is obtained by merging piece CVs following
//! BLAKE3's tree rule: over `n` nodes the left subtree holds the largest power of
//! two strictly less than `n`. That rule is the same as pairing nodes level by
//! level from the left and promoting an odd last node unchanged, which is how the
//! levels are built here.
//!
//! The **outboard** of a content is the list of its piece CVs (32 bytes each, in
//! piece order). It is checked against the root once; then each piece is checked
//! against its own leaf. Special cases, where BLAKE3 has no interior nodes: a
//! content of one piece has a single leaf equal to the root (`blake3::hash` of the
//! bytes), and an empty content has no leaves and the root `blake3::hash(b"")`.

use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, HasherExt, Mode};
use shoal_core::ContentId;

use crate::layout::PieceLayout;

/// A BLAKE3 chaining value: the non-root hash of a subtree.
pub type Cv = [u8; 32];

/// Why a piece, a proof or an outboard does not match a content id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("piece {index} does not exist: the content has {num_pieces} pieces")]
    IndexOutOfRange { index: u32, num_pieces: u32 },
    #[error("piece {index} is {actual} bytes, it should be {expected}")]
    WrongLength {
        index: u32,
        expected: usize,
        actual: usize,
    },
    #[error("piece {index} does not match its hash: the data is corrupt or not this piece")]
    HashMismatch { index: u32 },
    #[error("the proof for piece {index} has {actual} hashes, it should have {expected}")]
    WrongProofLength {
        index: u32,
        expected: usize,
        actual: usize,
    },
    #[error("the outboard has {actual} piece hashes, the content has {expected} pieces")]
    WrongLeafCount { expected: u64, actual: u64 },
    #[error("the outboard is {actual} bytes, it should be {expected} (32 bytes per piece)")]
    WrongOutboardLength { expected: u64, actual: u64 },
    #[error("the piece hashes do not add up to content id {root}: the outboard is corrupt")]
    RootMismatch { root: ContentId },
}

/// The CV of piece `index` of a content with layout `layout`, as stored in the
/// outboard. For a content of a single piece this is the root hash itself.
/// Checks that the index exists and that `data` has the piece's length.
pub fn piece_cv(layout: &PieceLayout, index: u32, data: &[u8]) -> Result<Cv, VerifyError> {
    let n = layout.num_pieces();
    if index >= n {
        return Err(VerifyError::IndexOutOfRange {
            index,
            num_pieces: n,
        });
    }
    let expected = layout.piece_len(index);
    if data.len() != expected {
        return Err(VerifyError::WrongLength {
            index,
            expected,
            actual: data.len(),
        });
    }
    Ok(piece_cv_unchecked(layout, index, data))
}

/// [`piece_cv`] for a caller that already checked the index and length (the
/// hasher); a wrong length here could make the BLAKE3 hasher panic.
pub(crate) fn piece_cv_unchecked(layout: &PieceLayout, index: u32, data: &[u8]) -> Cv {
    if layout.num_pieces() <= 1 {
        *blake3::hash(data).as_bytes()
    } else {
        blake3::Hasher::new()
            .set_input_offset(layout.piece_offset(index))
            .update(data)
            .finalize_non_root()
    }
}

fn merge(left: &Cv, right: &Cv, root: bool) -> Cv {
    if root {
        *merge_subtrees_root(left, right, Mode::Hash).as_bytes()
    } else {
        merge_subtrees_non_root(left, right, Mode::Hash)
    }
}

/// Builds the next level up: pairs merged, an odd last node promoted. The merge is
/// a root merge exactly when this level has two nodes.
fn next_level(level: &[Cv]) -> Vec<Cv> {
    let root = level.len() == 2;
    let mut out = Vec::with_capacity(level.len().div_ceil(2));
    let mut pairs = level.chunks_exact(2);
    for pair in &mut pairs {
        out.push(merge(&pair[0], &pair[1], root));
    }
    out.extend_from_slice(pairs.remainder());
    out
}

/// The root of a list of leaves, or the empty-content root for no leaves.
fn root_of(levels: &[Vec<Cv>]) -> ContentId {
    match levels.last().map(|l| l.as_slice()) {
        Some([root]) => ContentId::from_bytes(*root),
        _ => ContentId::of(b""),
    }
}

/// The verified piece hashes of one content, with its interior nodes so that
/// proofs are cheap to produce.
#[derive(Clone, PartialEq, Eq)]
pub struct Outboard {
    root: ContentId,
    layout: PieceLayout,
    /// `levels[0]` are the leaves (piece CVs); each next level is built by
    /// [`next_level`]; the last level holds the root alone (empty for no pieces).
    levels: Vec<Vec<Cv>>,
}

impl std::fmt::Debug for Outboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outboard")
            .field("root", &self.root)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl Outboard {
    /// Builds the tree over `leaves` and returns it with the root it gives. This is
    /// how a freshly hashed content gets its outboard; use [`Outboard::from_leaves`]
    /// for leaves that must match a known id.
    pub fn build(layout: PieceLayout, leaves: Vec<Cv>) -> Result<Self, VerifyError> {
        let expected = u64::from(layout.num_pieces());
        if leaves.len() as u64 != expected {
            return Err(VerifyError::WrongLeafCount {
                expected,
                actual: leaves.len() as u64,
            });
        }
        let mut levels = vec![leaves];
        while let Some(top) = levels.last() {
            if top.len() <= 1 {
                break;
            }
            let next = next_level(top);
            levels.push(next);
        }
        let root = root_of(&levels);
        Ok(Self {
            root,
            layout,
            levels,
        })
    }

    /// Checks `leaves` (e.g. received from a peer) against `root` and returns the
    /// outboard, or why they do not match.
    pub fn from_leaves(
        root: ContentId,
        layout: PieceLayout,
        leaves: Vec<Cv>,
    ) -> Result<Self, VerifyError> {
        let ob = Self::build(layout, leaves)?;
        if ob.root != root {
            return Err(VerifyError::RootMismatch { root });
        }
        Ok(ob)
    }

    /// The outboard of a content of at most one piece, which needs no data beyond
    /// its id: one leaf equal to the id, or none for an empty content. `None` if
    /// the layout has more than one piece, or is empty and `root` is not the hash
    /// of nothing.
    pub fn trivial(root: ContentId, layout: PieceLayout) -> Option<Self> {
        let leaves = match layout.num_pieces() {
            0 => Vec::new(),
            1 => vec![*root.as_bytes()],
            _ => return None,
        };
        Self::from_leaves(root, layout, leaves).ok()
    }

    /// The content id.
    pub fn root(&self) -> ContentId {
        self.root
    }

    /// The content's piece layout.
    pub fn layout(&self) -> PieceLayout {
        self.layout
    }

    /// The piece CVs, in piece order.
    pub fn leaves(&self) -> &[Cv] {
        self.levels.first().map(|l| l.as_slice()).unwrap_or(&[])
    }

    /// Checks that `data` is piece `index` of this content.
    pub fn verify_piece(&self, index: u32, data: &[u8]) -> Result<(), VerifyError> {
        let cv = piece_cv(&self.layout, index, data)?;
        match self.leaves().get(index as usize) {
            Some(leaf) if *leaf == cv => Ok(()),
            _ => Err(VerifyError::HashMismatch { index }),
        }
    }

    /// The sibling CVs on the path from piece `index` to the root, bottom up
    /// (levels where the node is promoted without a sibling contribute nothing).
    /// Empty for an out-of-range index or a content of at most one piece.
    pub fn proof(&self, index: u32) -> Vec<Cv> {
        let mut out = Vec::new();
        if index >= self.layout.num_pieces() {
            return out;
        }
        let mut idx = index as usize;
        for level in &self.levels {
            if level.len() <= 1 {
                break;
            }
            if let Some(sib) = level.get(idx ^ 1) {
                out.push(*sib);
            }
            idx >>= 1;
        }
        out
    }

    /// The outboard's serialized form: the piece CVs concatenated, 32 bytes each.
    pub fn encode(&self) -> Vec<u8> {
        self.leaves().concat()
    }

    /// Parses and verifies an encoded outboard for content `root` with `layout`.
    /// The input must be exactly `32 * num_pieces` bytes (at most 32 MiB), so
    /// nothing is allocated beyond what the layout allows.
    pub fn decode(root: ContentId, layout: PieceLayout, bytes: &[u8]) -> Result<Self, VerifyError> {
        let expected = u64::from(layout.num_pieces()) * 32;
        if bytes.len() as u64 != expected {
            return Err(VerifyError::WrongOutboardLength {
                expected,
                actual: bytes.len() as u64,
            });
        }
        let leaves = bytes
            .chunks_exact(32)
            .map(|c| {
                let mut cv = [0u8; 32];
                cv.copy_from_slice(c);
                cv
            })
            .collect();
        Self::from_leaves(root, layout, leaves)
    }
}

/// Checks piece `index` of content `root` with its `proof` (from
/// [`Outboard::proof`]) alone, without the whole outboard.
pub fn verify_piece_with_proof(
    root: ContentId,
    layout: &PieceLayout,
    index: u32,
    data: &[u8],
    proof: &[Cv],
) -> Result<(), VerifyError> {
    let mut cv = piece_cv(layout, index, data)?;
    let mut len = layout.num_pieces() as usize;
    let mut idx = index as usize;
    let mut used = 0usize;
    let mut expected = 0usize;
    // Count first, so that a short or long proof gets its own error.
    {
        let (mut l, mut i) = (len, idx);
        while l > 1 {
            if (i ^ 1) < l {
                expected += 1;
            }
            i >>= 1;
            l = l.div_ceil(2);
        }
    }
    if proof.len() != expected {
        return Err(VerifyError::WrongProofLength {
            index,
            expected,
            actual: proof.len(),
        });
    }
    while len > 1 {
        let root_merge = len == 2;
        if (idx ^ 1) < len {
            let Some(sib) = proof.get(used) else {
                return Err(VerifyError::HashMismatch { index });
            };
            used += 1;
            cv = if idx & 1 == 0 {
                merge(&cv, sib, root_merge)
            } else {
                merge(sib, &cv, root_merge)
            };
        }
        idx >>= 1;
        len = len.div_ceil(2);
    }
    if cv == *root.as_bytes() {
        Ok(())
    } else {
        Err(VerifyError::HashMismatch { index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn outboard(layout: PieceLayout, bytes: &[u8]) -> Outboard {
        let leaves = (0..layout.num_pieces())
            .map(|i| {
                let r = layout.piece_range(i);
                piece_cv(&layout, i, &bytes[r.start as usize..r.end as usize]).unwrap()
            })
            .collect();
        Outboard::build(layout, leaves).unwrap()
    }

    #[test]
    fn roots_match_blake3_for_many_shapes() {
        for len in [
            0usize,
            1,
            1024,
            1025,
            2048,
            3 * 1024 + 5,
            5 * 1024,
            7 * 4096 + 1,
        ] {
            let bytes = data(len);
            for ps in [1024u64, 2048, 4096] {
                let layout = PieceLayout::with_piece_size(len as u64, ps).unwrap();
                let ob = outboard(layout, &bytes);
                assert_eq!(ob.root(), ContentId::of(&bytes), "len {len} ps {ps}");
            }
        }
    }

    #[test]
    fn proofs_verify_for_every_piece_and_fail_when_tampered() {
        let bytes = data(13 * 1024 + 100);
        let layout = PieceLayout::with_piece_size(bytes.len() as u64, 1024).unwrap();
        let ob = outboard(layout, &bytes);
        for i in 0..layout.num_pieces() {
            let r = layout.piece_range(i);
            let piece = &bytes[r.start as usize..r.end as usize];
            let mut proof = ob.proof(i);
            verify_piece_with_proof(ob.root(), &layout, i, piece, &proof).unwrap();
            proof[0][0] ^= 1;
            assert_eq!(
                verify_piece_with_proof(ob.root(), &layout, i, piece, &proof),
                Err(VerifyError::HashMismatch { index: i })
            );
            proof.pop();
            assert!(matches!(
                verify_piece_with_proof(ob.root(), &layout, i, piece, &proof),
                Err(VerifyError::WrongProofLength { .. })
            ));
        }
    }

    #[test]
    fn decode_rejects_wrong_length_and_wrong_root() {
        let bytes = data(5000);
        let layout = PieceLayout::with_piece_size(5000, 1024).unwrap();
        let ob = outboard(layout, &bytes);
        let enc = ob.encode();
        assert_eq!(Outboard::decode(ob.root(), layout, &enc).unwrap(), ob);
        assert!(matches!(
            Outboard::decode(ob.root(), layout, &enc[1..]),
            Err(VerifyError::WrongOutboardLength { .. })
        ));
        let mut bad = enc.clone();
        bad[40] ^= 0x80;
        assert!(matches!(
            Outboard::decode(ob.root(), layout, &bad),
            Err(VerifyError::RootMismatch { .. })
        ));
        assert!(matches!(
            Outboard::decode(ContentId::of(b"other"), layout, &enc),
            Err(VerifyError::RootMismatch { .. })
        ));
    }

    #[test]
    fn trivial_outboards_for_empty_and_single_piece() {
        let empty = PieceLayout::for_len(0).unwrap();
        let ob = Outboard::trivial(ContentId::of(b""), empty).unwrap();
        assert!(ob.leaves().is_empty());
        assert!(Outboard::trivial(ContentId::of(b"x"), empty).is_none());
        let one = PieceLayout::for_len(3).unwrap();
        let ob = Outboard::trivial(ContentId::of(b"abc"), one).unwrap();
        ob.verify_piece(0, b"abc").unwrap();
        assert_eq!(
            ob.verify_piece(0, b"abd"),
            Err(VerifyError::HashMismatch { index: 0 })
        );
    }
}
