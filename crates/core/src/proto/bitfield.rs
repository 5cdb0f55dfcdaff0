//! A fixed-length bit vector of pieces, in the protocol's byte layout.

use super::message::check_bitfield;
use super::{Message, ProtoError, MAX_PIECES};

/// Which of `len` pieces are present. Bit `i` is bit `7 - i % 8` of byte `i / 8`
/// (most significant bit first, as on the wire); the spare low bits of the last byte
/// are always zero. Holds at most [`MAX_PIECES`] bits (128 KiB).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Bitfield {
    bytes: Vec<u8>,
    len: u32,
    ones: u32,
}

impl Bitfield {
    /// A bitfield of `len` pieces, none present. Fails when `len > MAX_PIECES`.
    pub fn new(len: u32) -> Result<Self, ProtoError> {
        if len > MAX_PIECES {
            return Err(ProtoError::BadBitfield(
                "more pieces than the protocol allows",
            ));
        }
        Ok(Self {
            bytes: vec![0; (len as usize).div_ceil(8)],
            len,
            ones: 0,
        })
    }

    /// A bitfield of `len` pieces, all present. Fails when `len > MAX_PIECES`.
    pub fn full(len: u32) -> Result<Self, ProtoError> {
        let mut b = Self::new(len)?;
        b.bytes.fill(0xff);
        let spare = (8 - len % 8) % 8;
        if let Some(last) = b.bytes.last_mut() {
            *last &= 0xffu8 << spare;
        }
        b.ones = len;
        Ok(b)
    }

    /// Decodes `len` bits from their wire bytes; rejects a byte length other than
    /// `len.div_ceil(8)`, spare bits set, and `len > MAX_PIECES`.
    pub fn from_bytes(len: u32, bytes: &[u8]) -> Result<Self, ProtoError> {
        check_bitfield(len, bytes)?;
        Ok(Self {
            bytes: bytes.to_vec(),
            len,
            ones: bytes.iter().map(|b| b.count_ones()).sum(),
        })
    }

    /// Decodes a received `Bitfield` message for content of `expected_len` pieces.
    /// Fails on any other message, or a bitfield of another length.
    pub fn from_message(msg: &Message<'_>, expected_len: u32) -> Result<Self, ProtoError> {
        match msg {
            Message::Bitfield { num_pieces, bits } if *num_pieces == expected_len => {
                Self::from_bytes(*num_pieces, bits)
            }
            Message::Bitfield { .. } => Err(ProtoError::BadBitfield(
                "its piece count is not the content's piece count",
            )),
            _ => Err(ProtoError::Unexpected {
                msg: "a message other than Bitfield",
                when: "where a bitfield is decoded",
            }),
        }
    }

    /// The `Bitfield` message announcing this bitfield (borrowing its bytes).
    pub fn to_message(&self) -> Message<'_> {
        Message::Bitfield {
            num_pieces: self.len,
            bits: &self.bytes,
        }
    }

    /// The wire bytes (`len().div_ceil(8)` of them).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Number of pieces (bits).
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the bitfield has zero pieces (not whether none is set: see
    /// [`Bitfield::count_ones`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether piece `i` is present (`false` when `i` is out of range).
    pub fn get(&self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        self.bytes
            .get((i / 8) as usize)
            .is_some_and(|b| b & mask(i) != 0)
    }

    /// Marks piece `i` present. Returns whether it was absent before; an
    /// out-of-range `i` changes nothing and returns `false`.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        match self.bytes.get_mut((i / 8) as usize) {
            Some(b) if *b & mask(i) == 0 => {
                *b |= mask(i);
                self.ones += 1;
                true
            }
            _ => false,
        }
    }

    /// Marks piece `i` absent. Returns whether it was present before.
    pub fn clear(&mut self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        match self.bytes.get_mut((i / 8) as usize) {
            Some(b) if *b & mask(i) != 0 => {
                *b &= !mask(i);
                self.ones -= 1;
                true
            }
            _ => false,
        }
    }

    /// Number of pieces present.
    pub fn count_ones(&self) -> u32 {
        self.ones
    }

    /// Whether every piece is present (true for zero pieces).
    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }

    /// The indices of the present pieces, in order.
    pub fn iter_ones(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(move |&i| self.get(i))
    }
}

fn mask(i: u32) -> u8 {
    0x80 >> (i % 8)
}
