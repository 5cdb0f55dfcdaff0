//! Content ids.
//!
//! A [`ContentId`] is the BLAKE3-256 hash of a file's bytes, exactly what `b3sum`
//! prints, or of a collection's canonical manifest (see [`crate::manifest`]). It is
//! shown and parsed as 64 lowercase hexadecimal digits; parsing also accepts upper
//! case so that a pasted id never fails for its case.

use std::fmt;
use std::str::FromStr;

/// Length of a content id in bytes.
pub const ID_LEN: usize = 32;

/// The BLAKE3-256 hash of some content: a file's bytes, or a collection's manifest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentId([u8; ID_LEN]);

impl ContentId {
    /// Wraps raw hash bytes.
    pub const fn from_bytes(bytes: [u8; ID_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw hash bytes.
    pub const fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// The id of `data`: its BLAKE3-256 hash (single-threaded; for large files use
    /// the store's multi-threaded hasher).
    pub fn of(data: &[u8]) -> Self {
        Self(*blake3::hash(data).as_bytes())
    }

    /// The 64-digit lowercase hex form, as `b3sum` prints it.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

impl From<blake3::Hash> for ContentId {
    fn from(h: blake3::Hash) -> Self {
        Self(*h.as_bytes())
    }
}

impl From<ContentId> for blake3::Hash {
    fn from(id: ContentId) -> Self {
        blake3::Hash::from_bytes(id.0)
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; ID_LEN * 2];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = HEX[(b >> 4) as usize];
            out[2 * i + 1] = HEX[(b & 0xf) as usize];
        }
        // The buffer holds only ASCII hex digits.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({self})")
    }
}

/// Why a string is not a content id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseIdError {
    #[error("a content id has 64 hex digits, this has {0} characters")]
    Length(usize),
    #[error("a content id has only hex digits (0-9, a-f); found {found:?} at position {pos}")]
    Digit { pos: usize, found: char },
}

impl FromStr for ContentId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.len() != ID_LEN * 2 {
            return Err(ParseIdError::Length(s.chars().count()));
        }
        let digit = |pos: usize, c: u8| -> Result<u8, ParseIdError> {
            match c {
                b'0'..=b'9' => Ok(c - b'0'),
                b'a'..=b'f' => Ok(c - b'a' + 10),
                b'A'..=b'F' => Ok(c - b'A' + 10),
                _ => Err(ParseIdError::Digit {
                    pos,
                    found: s[pos..].chars().next().unwrap_or('?'),
                }),
            }
        };
        let bytes = s.as_bytes();
        let mut out = [0u8; ID_LEN];
        for (i, o) in out.iter_mut().enumerate() {
            *o = (digit(2 * i, bytes[2 * i])? << 4) | digit(2 * i + 1, bytes[2 * i + 1])?;
        }
        Ok(Self(out))
    }
}

impl serde::Serialize for ContentId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ContentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a content id names. Users see "file" and "folder" (also in JSON);
/// "collection", the word of earlier versions, is still read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A single file; the id is the BLAKE3 of its bytes.
    File,
    /// A folder; the id is the BLAKE3 of its canonical manifest.
    #[serde(rename = "folder", alias = "collection")]
    Collection,
}

impl Kind {
    /// The wire code of this kind.
    pub const fn code(self) -> u8 {
        match self {
            Kind::File => 0,
            Kind::Collection => 1,
        }
    }

    /// The kind for a wire code, if known.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Kind::File),
            1 => Some(Kind::Collection),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::File => "file",
            Kind::Collection => "folder",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_called_a_folder_and_the_old_word_is_still_read() {
        assert_eq!(Kind::Collection.to_string(), "folder");
        assert_eq!(
            serde_json::to_string(&Kind::Collection).unwrap(),
            "\"folder\""
        );
        for text in ["\"folder\"", "\"collection\""] {
            assert_eq!(
                serde_json::from_str::<Kind>(text).unwrap(),
                Kind::Collection
            );
        }
    }

    #[test]
    fn empty_input_matches_b3sum_constant() {
        // `b3sum` of the empty file.
        assert_eq!(
            ContentId::of(b"").to_string(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn hex_round_trips_and_accepts_upper_case() {
        let id = ContentId::of(b"shoal");
        let hex = id.to_string();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex.parse::<ContentId>().unwrap(), id);
        assert_eq!(hex.to_uppercase().parse::<ContentId>().unwrap(), id);
    }

    #[test]
    fn bad_hex_says_why() {
        assert_eq!("abc".parse::<ContentId>(), Err(ParseIdError::Length(3)));
        let mut s = ContentId::of(b"x").to_string();
        s.replace_range(5..6, "g");
        assert_eq!(
            s.parse::<ContentId>(),
            Err(ParseIdError::Digit { pos: 5, found: 'g' })
        );
        // Multi-byte characters must not cause a panic on slicing.
        let s = "é".repeat(32);
        assert!(s.parse::<ContentId>().is_err());
    }
}
