//! A bounded binary reader and writer.
//!
//! Every decoder in shoal (manifests, tickets, protocol frames) reads through
//! [`Reader`], which never panics and never allocates more than the caller's
//! explicit bound: lengths read from the input are checked against both the bound
//! and the bytes actually left before anything is allocated.
//!
//! Encoding: unsigned integers are LEB128 varints (at most 10 bytes, canonical:
//! no redundant trailing zero groups), byte strings are a varint length then the
//! bytes, fixed-size values are raw bytes.

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("input ends early: {what} needs {needed} more bytes, {left} left")]
    Truncated {
        what: &'static str,
        needed: u64,
        left: usize,
    },
    #[error("{what} is {len} bytes, more than the limit of {max}")]
    TooLong {
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("{what}: malformed or non-canonical varint")]
    BadVarint { what: &'static str },
    #[error("{what} is not valid UTF-8")]
    BadUtf8 { what: &'static str },
    #[error("{0} trailing bytes after the end of the message")]
    Trailing(usize),
}

/// Reads values from a byte slice, bounds-checking everything.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Fails unless every byte was read.
    pub fn finish(self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing(self.buf.len()))
        }
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Takes exactly `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if n > self.buf.len() {
            return Err(WireError::Truncated {
                what,
                needed: n as u64,
                left: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// A canonical LEB128 varint.
    pub fn varint(&mut self, what: &'static str) -> Result<u64, WireError> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let byte = self.u8(what)?;
            let part = u64::from(byte & 0x7f);
            if i == 9 && part > 1 {
                return Err(WireError::BadVarint { what });
            }
            value |= part << (7 * i);
            if byte & 0x80 == 0 {
                if i > 0 && byte == 0 {
                    return Err(WireError::BadVarint { what });
                }
                return Ok(value);
            }
        }
        Err(WireError::BadVarint { what })
    }

    /// A varint no larger than `max`.
    pub fn varint_max(&mut self, max: u64, what: &'static str) -> Result<u64, WireError> {
        let v = self.varint(what)?;
        if v > max {
            return Err(WireError::TooLong { what, len: v, max });
        }
        Ok(v)
    }

    /// A length-prefixed byte string of at most `max` bytes, borrowed.
    pub fn bytes(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let len = self.varint_max(max as u64, what)?;
        // len <= max <= usize::MAX, and take() checks it against what is left.
        self.take(len as usize, what)
    }

    /// A length-prefixed UTF-8 string of at most `max` bytes, borrowed.
    pub fn str(&mut self, max: usize, what: &'static str) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes(max, what)?).map_err(|_| WireError::BadUtf8 { what })
    }
}

/// Appends values to a byte vector in the encoding [`Reader`] reads.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }

    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    pub fn varint(&mut self, mut v: u64) -> &mut Self {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.buf.push(byte);
                return self;
            }
            self.buf.push(byte | 0x80);
        }
    }

    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.varint(bytes.len() as u64).raw(bytes)
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }
}

/// Number of bytes `v` takes as a varint.
pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX - 1, u64::MAX] {
            let mut w = Writer::new();
            w.varint(v);
            assert_eq!(w.as_slice().len(), varint_len(v), "len of {v}");
            let mut r = Reader::new(w.as_slice());
            assert_eq!(r.varint("v").unwrap(), v);
            r.finish().unwrap();
        }
    }

    #[test]
    fn non_canonical_and_overlong_varints_are_rejected() {
        // 0 encoded in two bytes.
        assert!(Reader::new(&[0x80, 0x00]).varint("v").is_err());
        // 11 bytes.
        assert!(Reader::new(&[0xff; 11]).varint("v").is_err());
        // 10th byte carrying more than one bit overflows u64.
        let mut over = [0xffu8; 10];
        over[9] = 0x02;
        assert!(Reader::new(&over).varint("v").is_err());
    }

    #[test]
    fn lengths_are_checked_before_allocation() {
        let mut w = Writer::new();
        w.varint(u64::MAX);
        let mut r = Reader::new(w.as_slice());
        assert!(matches!(
            r.bytes(1024, "name"),
            Err(WireError::TooLong { .. })
        ));
        let mut w = Writer::new();
        w.varint(100);
        let mut r = Reader::new(w.as_slice());
        assert!(matches!(
            r.bytes(1024, "name"),
            Err(WireError::Truncated { .. })
        ));
    }
}
