//! A fixed-length set of piece indices, stored as 64-bit words.

/// A fixed-length bit set over piece indices `0..len`.
///
/// Out-of-range indices are never set: `get` answers `false` and `set`/`clear`
/// do nothing, so a hostile index cannot grow or corrupt the set.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Bitfield {
    words: Vec<u64>,
    len: u32,
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitfield({}/{})", self.count_ones(), self.len)
    }
}

impl Bitfield {
    /// An empty set able to hold indices `0..len`.
    pub fn new(len: u32) -> Self {
        Bitfield {
            words: vec![0; len.div_ceil(64) as usize],
            len,
        }
    }

    /// A set holding every index in `0..len`.
    pub fn full(len: u32) -> Self {
        let mut b = Bitfield::new(len);
        for w in b.words.iter_mut() {
            *w = u64::MAX;
        }
        b.trim();
        b
    }

    /// Builds a set from raw words (bit `i` of word `w` is index `64*w + i`).
    /// Returns `None` when the word count does not match `len`; bits past
    /// `len` are cleared.
    pub fn from_words(words: Vec<u64>, len: u32) -> Option<Self> {
        if words.len() != len.div_ceil(64) as usize {
            return None;
        }
        let mut b = Bitfield { words, len };
        b.trim();
        Some(b)
    }

    fn trim(&mut self) {
        let rem = self.len % 64;
        if rem != 0 {
            if let Some(last) = self.words.last_mut() {
                *last &= (1u64 << rem) - 1;
            }
        }
    }

    /// Number of indices this set ranges over (not the number set).
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True when the set ranges over no index at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The raw words, bit `i` of word `w` being index `64*w + i`.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Whether `i` is in the set (`false` when out of range).
    pub fn get(&self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        self.words[(i / 64) as usize] & (1u64 << (i % 64)) != 0
    }

    /// Adds `i`; returns true when it was not there before. Out of range: no-op, false.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        let w = &mut self.words[(i / 64) as usize];
        let bit = 1u64 << (i % 64);
        let was = *w & bit != 0;
        *w |= bit;
        !was
    }

    /// Removes `i`; returns true when it was there before.
    pub fn clear(&mut self, i: u32) -> bool {
        if i >= self.len {
            return false;
        }
        let w = &mut self.words[(i / 64) as usize];
        let bit = 1u64 << (i % 64);
        let was = *w & bit != 0;
        *w &= !bit;
        was
    }

    /// Number of indices in the set.
    pub fn count_ones(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }

    /// True when every index in `0..len` is set.
    pub fn is_full(&self) -> bool {
        self.count_ones() == self.len
    }

    /// The indices in the set, ascending.
    pub fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| BitIter {
            word: w,
            base: wi as u32 * 64,
        })
    }
}

/// Iterates the set bits of one word.
pub(crate) struct BitIter {
    pub(crate) word: u64,
    pub(crate) base: u32,
}

impl Iterator for BitIter {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        if self.word == 0 {
            return None;
        }
        let tz = self.word.trailing_zeros();
        self.word &= self.word - 1;
        Some(self.base + tz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_clear_and_bounds() {
        let mut b = Bitfield::new(70);
        assert!(b.set(0));
        assert!(!b.set(0));
        assert!(b.set(69));
        assert!(!b.set(70));
        assert!(!b.get(70));
        assert_eq!(b.ones().collect::<Vec<_>>(), vec![0, 69]);
        assert!(b.clear(0));
        assert_eq!(b.count_ones(), 1);
        assert!(Bitfield::full(70).is_full());
        assert_eq!(Bitfield::full(70).count_ones(), 70);
    }

    #[test]
    fn from_words_rejects_wrong_length_and_trims() {
        assert!(Bitfield::from_words(vec![0; 3], 70).is_none());
        let b = Bitfield::from_words(vec![u64::MAX, u64::MAX], 70).unwrap();
        assert_eq!(b.count_ones(), 70);
    }
}
