//! The canonical manifest of a collection.
//!
//! A shared folder is a *collection*: a manifest listing every file in it (its
//! path relative to the folder, with `/` separators, its size and its content id),
//! sorted by path in byte order. The manifest has exactly one encoding, and the
//! BLAKE3 of that encoding is the collection's id, so the same folder gives the
//! same id on every machine, whatever order its directory listing came in.
//!
//! # Encoding (version 1)
//!
//! ```text
//! "shoal-manifest"   14 bytes, the magic
//! 0x01               1 byte, the version
//! count              varint, number of entries
//! count times:
//!   path             varint length, then that many bytes of UTF-8
//!   size             varint, the file's size in bytes
//!   id               32 bytes, the file's BLAKE3-256
//! ```
//!
//! Varints are canonical LEB128 (see [`crate::wire`]). Entries are strictly
//! increasing by path bytes and nothing may follow the last one, so
//! `encode(decode(b)) == b` whenever `decode(b)` succeeds.
//!
//! # Hostile input
//!
//! Manifests come from other peers and their paths become files on disk, so both
//! [`Manifest::new`] and [`Manifest::decode`] refuse any path that could escape
//! the download folder or mean different things on different systems (`..`, `.`,
//! absolute paths, empty components, NUL, backslashes, control characters), any
//! path that is listed twice or is both a file and a folder, and anything beyond
//! the limits below. Decoding never panics and allocates less than four times
//! the length of its input.

use std::fmt;

use crate::id::{ContentId, ID_LEN};
use crate::wire::{varint_len, Reader, WireError, Writer};

/// The bytes every encoded manifest starts with.
pub const MAGIC: &[u8; 14] = b"shoal-manifest";

/// The manifest encoding version this code reads and writes.
pub const VERSION: u8 = 1;

/// Most entries (files) one manifest may list: about a million.
pub const MAX_ENTRIES: usize = 1 << 20;

/// Longest path, in bytes of UTF-8 (Linux's `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;

/// Longest path component (file or folder name), in bytes of UTF-8 (the
/// `NAME_MAX` of common file systems).
pub const MAX_COMPONENT_LEN: usize = 255;

/// Largest sum of the sizes of all files in one manifest: 1 PiB.
pub const MAX_TOTAL_SIZE: u64 = 1 << 50;

/// Largest encoded manifest: 256 MiB.
///
/// This is below `MAX_ENTRIES` times the largest possible entry (about 4 KiB),
/// deliberately: a manifest with [`MAX_ENTRIES`] files fits as long as its paths
/// average under about 210 bytes, and no peer can make us hold more than this
/// (and about twice as much again while decoding) for one manifest.
pub const MAX_ENCODED_LEN: usize = 1 << 28;

/// Bytes taken by the smallest encoded entry decoding can read before it can
/// tell the entry is invalid: a one-byte path length (an empty path is read,
/// then rejected by name), a one-byte size, and the id.
pub const MIN_ENTRY_LEN: usize = 1 + 1 + ID_LEN;

/// Length of the magic and version that start every encoding.
const HEADER_LEN: usize = MAGIC.len() + 1;

/// How much of a long path error messages show.
const SHOWN_PATH_BYTES: usize = 120;

/// One file of a collection.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// Path relative to the collection's folder, components separated by `/`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3-256 of the file's bytes.
    pub id: ContentId,
}

impl Entry {
    /// Bytes this entry takes in the encoding.
    fn encoded_len(&self) -> u64 {
        let path_len = self.path.len() as u64;
        (varint_len(path_len) + varint_len(self.size) + ID_LEN) as u64 + path_len
    }
}

/// A valid, canonical manifest: every path checked, sorted by path bytes, no
/// duplicates, no path both a file and a folder, within every limit.
///
/// The only ways to get one are [`Manifest::new`] and [`Manifest::decode`], both
/// of which check all of this, so holding a `Manifest` proves it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "Vec<Entry>", into = "Vec<Entry>")]
pub struct Manifest {
    entries: Vec<Entry>,
    total_size: u64,
}

/// Why a list of entries or some bytes are not a valid manifest.
///
/// Errors about one path name it (shortened if very long, with control
/// characters escaped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("malformed manifest: {0}")]
    Wire(#[from] WireError),
    #[error("not a shoal manifest: it does not start with the \"shoal-manifest\" header")]
    NotAManifest,
    #[error(
        "manifest version {0} is not supported (this shoal reads version {VERSION}); upgrade shoal"
    )]
    UnsupportedVersion(u8),
    #[error("the manifest is {len} bytes, more than the limit of {MAX_ENCODED_LEN}; share fewer files at once or use shorter paths")]
    TooLarge { len: u64 },
    #[error("the manifest lists {count} files, more than the limit of {MAX_ENTRIES}; share fewer files at once")]
    TooManyEntries { count: u64 },
    #[error("the files add up to more than the limit of {MAX_TOTAL_SIZE} bytes (reached at {}); share fewer files at once", Shown(.path))]
    TotalSizeTooLarge { path: String },
    #[error("path {} is not valid UTF-8", Shown(.path))]
    NotUtf8 { path: String },
    #[error("path {} is empty or has an empty component (a doubled or trailing '/')", Shown(.path))]
    EmptyComponent { path: String },
    #[error("path {} has a '.' component; manifest paths must be normalized", Shown(.path))]
    DotComponent { path: String },
    #[error("path {} has a '..' component, which could escape the collection's folder", Shown(.path))]
    DotDotComponent { path: String },
    #[error("path {} is absolute (starts with '/'); manifest paths are relative to the collection's folder", Shown(.path))]
    AbsolutePath { path: String },
    #[error("path {} contains a NUL byte", Shown(.path))]
    Nul { path: String },
    #[error("path {} contains a backslash, which is a separator on some systems; rename the file", Shown(.path))]
    Backslash { path: String },
    #[error("path {} contains the control character {byte:#04x}; rename the file", Shown(.path))]
    ControlChar { path: String, byte: u8 },
    #[error("path {} has a component of {len} bytes, more than the limit of {MAX_COMPONENT_LEN}", Shown(.path))]
    ComponentTooLong { path: String, len: usize },
    #[error("path {} is {len} bytes, more than the limit of {MAX_PATH_LEN}", Shown(.path))]
    PathTooLong { path: String, len: usize },
    #[error("path {} is listed twice", Shown(.path))]
    Duplicate { path: String },
    #[error("{} is both a file and a folder (the folder holds {})", Shown(.file), Shown(.inside))]
    FileFolderConflict { file: String, inside: String },
    #[error("manifest entries are not in canonical order: {} comes after {}", Shown(.path), Shown(.previous))]
    NotSorted { path: String, previous: String },
}

/// Shows a path in an error message: quoted, escaped, and cut short if long, so
/// a hostile path can neither flood nor control the user's terminal.
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s.len() <= SHOWN_PATH_BYTES {
            return write!(f, "{s:?}");
        }
        let mut end = SHOWN_PATH_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{:?}... ({} bytes)", &s[..end], s.len())
    }
}

/// Whether `name` is one plain file name: a valid path (see [`check_path`])
/// of exactly one component, so a folder joined with it stays that folder's
/// direct child, and without Unicode control characters either (U+0080 to
/// U+009F pass `check_path`), since such a name is shown to people.
pub fn is_plain_name(name: &str) -> bool {
    !name.contains('/') && check_path(name).is_ok() && !name.chars().any(char::is_control)
}

/// Checks one path against every rule of the format (not against other paths).
///
/// Accepts exactly the non-empty `/`-separated relative paths whose components
/// are non-empty, not `.` or `..`, at most [`MAX_COMPONENT_LEN`] bytes, free of
/// NUL, `\` and ASCII control characters, and at most [`MAX_PATH_LEN`] bytes in
/// all.
pub fn check_path(path: &str) -> Result<(), ManifestError> {
    if path.len() > MAX_PATH_LEN {
        // Keep only a prefix: the whole path can be as large as the input.
        let mut end = SHOWN_PATH_BYTES.min(path.len());
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        return Err(ManifestError::PathTooLong {
            path: path[..end].to_owned(),
            len: path.len(),
        });
    }
    let owned = || path.to_owned();
    if path.starts_with('/') {
        return Err(ManifestError::AbsolutePath { path: owned() });
    }
    for byte in path.bytes() {
        match byte {
            0 => return Err(ManifestError::Nul { path: owned() }),
            b'\\' => return Err(ManifestError::Backslash { path: owned() }),
            0x01..=0x1f | 0x7f => {
                return Err(ManifestError::ControlChar {
                    path: owned(),
                    byte,
                })
            }
            _ => {}
        }
    }
    // `split` yields one empty component for an empty path, so that is covered.
    for component in path.split('/') {
        match component {
            "" => return Err(ManifestError::EmptyComponent { path: owned() }),
            "." => return Err(ManifestError::DotComponent { path: owned() }),
            ".." => return Err(ManifestError::DotDotComponent { path: owned() }),
            c if c.len() > MAX_COMPONENT_LEN => {
                return Err(ManifestError::ComponentTooLong {
                    path: owned(),
                    len: c.len(),
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// Finds a path that is both a file and a folder: some `p` in `sorted_paths`
/// such that another path starts with `p/`. Returns `(p, that other path)`.
///
/// `sorted_paths` must be sorted in byte order (as manifests are); the result
/// is then exact, in one pass, O(total length of the paths).
///
/// A neighbour check is not enough: `a-b` and `a.c` sort between `a` and
/// `a/b`, because `-` and `.` are below `/`. All paths starting with `p` do sit
/// together right after `p`, though, so it suffices to keep a stack of the
/// earlier paths that are prefixes of the current one.
pub fn find_file_folder_conflict<'a>(
    sorted_paths: impl IntoIterator<Item = &'a str>,
) -> Option<(&'a str, &'a str)> {
    // Each element is a byte prefix of the one above it.
    let mut stack: Vec<&'a str> = Vec::new();
    for path in sorted_paths {
        // A path that is not a prefix of `path` is not a prefix of anything
        // after it either: the paths it prefixes have all gone by.
        while let Some(top) = stack.last() {
            if path.as_bytes().starts_with(top.as_bytes()) {
                break;
            }
            stack.pop();
        }
        // Only the top can conflict: if `path` extended a lower element with
        // `/`, so would the top, which would have been reported already.
        if let Some(top) = stack.last() {
            if path.as_bytes().get(top.len()) == Some(&b'/') {
                return Some((top, path));
            }
        }
        stack.push(path);
    }
    None
}

/// The name a case-insensitive or normalising file system (macOS's, Windows')
/// sees in `path`: Unicode NFC, then lower case.
fn folded(path: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    path.nfc().collect::<String>().to_lowercase()
}

/// Two paths of a folder that name the same place on a case-insensitive or
/// normalising file system (`Readme` and `README`, `é` composed and
/// decomposed, a file `a` and a folder `A/`): written there, one would
/// overwrite or block the other. Folders that only differ so are no
/// conflict (they merge); the files in them are compared by their full
/// paths. Returns the first pair found, in the order given.
pub fn find_case_collision<'a>(
    paths: impl IntoIterator<Item = &'a str>,
) -> Option<(String, String)> {
    let mut files: std::collections::HashMap<String, &'a str> = std::collections::HashMap::new();
    let mut folders: std::collections::HashMap<String, &'a str> = std::collections::HashMap::new();
    for path in paths {
        let key = folded(path);
        if let Some(other) = files.get(&key) {
            return Some(((*other).to_owned(), path.to_owned()));
        }
        if let Some(folder) = folders.get(&key) {
            return Some(((*folder).to_owned(), path.to_owned()));
        }
        files.insert(key, path);
        for (i, _) in path.match_indices('/') {
            let prefix = &path[..i];
            let key = folded(prefix);
            if let Some(file) = files.get(&key) {
                return Some(((*file).to_owned(), prefix.to_owned()));
            }
            folders.entry(key).or_insert(prefix);
        }
    }
    None
}

impl Manifest {
    /// Two of its paths that collide on a case-insensitive or normalising
    /// file system (see [`find_case_collision`]).
    pub fn case_collision(&self) -> Option<(String, String)> {
        find_case_collision(self.entries.iter().map(|e| e.path.as_str()))
    }

    /// Builds the canonical manifest of `entries`, given in any order.
    ///
    /// Fails if any path breaks a rule of [`check_path`], if a path is listed
    /// twice or is both a file and a folder, or if the manifest would exceed
    /// [`MAX_ENTRIES`], [`MAX_TOTAL_SIZE`] or [`MAX_ENCODED_LEN`].
    pub fn new(entries: Vec<Entry>) -> Result<Manifest, ManifestError> {
        Self::new_with_limit(entries, MAX_ENCODED_LEN)
    }

    /// [`Manifest::new`] with a lower size limit, so that tests can reach it.
    fn new_with_limit(
        mut entries: Vec<Entry>,
        max_encoded_len: usize,
    ) -> Result<Manifest, ManifestError> {
        if entries.len() > MAX_ENTRIES {
            return Err(ManifestError::TooManyEntries {
                count: entries.len() as u64,
            });
        }
        let mut total_size: u64 = 0;
        let mut encoded_len = (HEADER_LEN + varint_len(entries.len() as u64)) as u64;
        for entry in &entries {
            check_path(&entry.path)?;
            total_size = add_size(total_size, entry.size, &entry.path)?;
            encoded_len += entry.encoded_len();
        }
        // Stable order for the same set whatever order it came in; String's Ord
        // is byte order, which is what the encoding requires.
        entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        if let Some(pair) = entries.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(ManifestError::Duplicate {
                path: pair[0].path.clone(),
            });
        }
        check_conflicts(&entries)?;
        if encoded_len > max_encoded_len as u64 {
            return Err(ManifestError::TooLarge { len: encoded_len });
        }
        Ok(Manifest {
            entries,
            total_size,
        })
    }

    /// The canonical encoding; its BLAKE3 is [`Manifest::id`].
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.encoded_len());
        w.raw(MAGIC).u8(VERSION).varint(self.entries.len() as u64);
        for e in &self.entries {
            w.str(&e.path).varint(e.size).raw(e.id.as_bytes());
        }
        w.into_vec()
    }

    /// Length of [`Manifest::encode`]'s output, without encoding.
    pub fn encoded_len(&self) -> usize {
        // A valid manifest's encoding is at most MAX_ENCODED_LEN, so this fits.
        let body: u64 = self.entries.iter().map(Entry::encoded_len).sum();
        HEADER_LEN + varint_len(self.entries.len() as u64) + body as usize
    }

    /// Decodes and checks a manifest.
    ///
    /// Accepts exactly the outputs of [`Manifest::encode`]: anything else (a
    /// non-canonical varint, entries out of order, trailing bytes, a bad path,
    /// a limit exceeded) is an error. Never panics; allocates less than four
    /// times `bytes.len()` (itself at most [`MAX_ENCODED_LEN`]): an entry of at
    /// least [`MIN_ENTRY_LEN`] bytes becomes a 64-byte [`Entry`] plus a copy of its
    /// path, and the file/folder check keeps at most one reference per entry.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_ENCODED_LEN {
            return Err(ManifestError::TooLarge {
                len: bytes.len() as u64,
            });
        }
        let mut r = Reader::new(bytes);
        match r.take(MAGIC.len(), "manifest header") {
            Ok(magic) if magic == MAGIC => {}
            _ => return Err(ManifestError::NotAManifest),
        }
        let version = r.u8("manifest version")?;
        if version != VERSION {
            return Err(ManifestError::UnsupportedVersion(version));
        }
        let count = r.varint("manifest entry count")?;
        if count > MAX_ENTRIES as u64 {
            return Err(ManifestError::TooManyEntries { count });
        }
        // count <= 2^20, so this cannot overflow; checking it against what is
        // left bounds the allocation below by the input's length.
        let needed = count * MIN_ENTRY_LEN as u64;
        if needed > r.remaining() as u64 {
            return Err(WireError::Truncated {
                what: "manifest entries",
                needed,
                left: r.remaining(),
            }
            .into());
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(count as usize);
        let mut total_size: u64 = 0;
        for _ in 0..count {
            // The length is bounded by what is left; the path's own limit is
            // checked after, so that the error can name it.
            let raw = r.bytes(MAX_ENCODED_LEN, "manifest path")?;
            let path = std::str::from_utf8(raw).map_err(|_| ManifestError::NotUtf8 {
                path: String::from_utf8_lossy(&raw[..raw.len().min(SHOWN_PATH_BYTES)]).into_owned(),
            })?;
            check_path(path)?;
            if let Some(prev) = entries.last() {
                match prev.path.as_str().cmp(path) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => {
                        return Err(ManifestError::Duplicate {
                            path: path.to_owned(),
                        })
                    }
                    std::cmp::Ordering::Greater => {
                        return Err(ManifestError::NotSorted {
                            path: path.to_owned(),
                            previous: prev.path.clone(),
                        })
                    }
                }
            }
            let size = r.varint("file size")?;
            total_size = add_size(total_size, size, path)?;
            let id = ContentId::from_bytes(r.array::<ID_LEN>("file id")?);
            entries.push(Entry {
                path: path.to_owned(),
                size,
                id,
            });
        }
        r.finish()?;
        check_conflicts(&entries)?;
        Ok(Manifest {
            entries,
            total_size,
        })
    }

    /// The collection id: the BLAKE3-256 of [`Manifest::encode`].
    pub fn id(&self) -> ContentId {
        ContentId::of(&self.encode())
    }

    /// The entries, sorted by path in byte order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entries, sorted by path in byte order.
    pub fn into_entries(self) -> Vec<Entry> {
        self.entries
    }

    /// The entry for `path`, if listed.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
            .and_then(|i| self.entries.get(i))
    }

    /// Sum of the sizes of all files; at most [`MAX_TOTAL_SIZE`].
    pub fn total_size(&self) -> u64 {
        self.total_size
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the collection has no files.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl TryFrom<Vec<Entry>> for Manifest {
    type Error = ManifestError;

    fn try_from(entries: Vec<Entry>) -> Result<Self, Self::Error> {
        Manifest::new(entries)
    }
}

impl From<Manifest> for Vec<Entry> {
    fn from(m: Manifest) -> Self {
        m.entries
    }
}

fn add_size(total: u64, size: u64, path: &str) -> Result<u64, ManifestError> {
    total
        .checked_add(size)
        .filter(|&t| t <= MAX_TOTAL_SIZE)
        .ok_or_else(|| ManifestError::TotalSizeTooLarge {
            path: path.to_owned(),
        })
}

fn check_conflicts(sorted: &[Entry]) -> Result<(), ManifestError> {
    match find_file_folder_conflict(sorted.iter().map(|e| e.path.as_str())) {
        Some((file, inside)) => Err(ManifestError::FileFolderConflict {
            file: file.to_owned(),
            inside: inside.to_owned(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_that_one_file_system_would_merge_are_found() {
        let found = |paths: &[&str]| find_case_collision(paths.iter().copied());
        assert_eq!(
            found(&["README.md", "Readme.md"]),
            Some(("README.md".into(), "Readme.md".into()))
        );
        // é composed (U+00E9) and decomposed (e + U+0301).
        assert_eq!(
            found(&["caf\u{e9}.txt", "cafe\u{301}.txt"]),
            Some(("caf\u{e9}.txt".into(), "cafe\u{301}.txt".into()))
        );
        // A file and a folder, either order.
        assert_eq!(found(&["A", "a/x"]), Some(("A".into(), "a".into())));
        assert_eq!(found(&["a/x", "A"]), Some(("a".into(), "A".into())));
        assert_eq!(
            found(&["d/ÄB/f", "d/äb"]),
            Some(("d/ÄB".into(), "d/äb".into()))
        );
        // Folders that only differ in case merge: no conflict unless their
        // files do.
        assert_eq!(found(&["A/x", "a/y"]), None);
        assert_eq!(found(&["A/x", "a/X"]), Some(("A/x".into(), "a/X".into())));
        assert_eq!(found(&["a", "b", "sub/c", "sub/d/e"]), None);
    }

    fn entry(path: &str, size: u64) -> Entry {
        Entry {
            path: path.to_owned(),
            size,
            id: ContentId::of(path.as_bytes()),
        }
    }

    /// Encodes entries exactly as given, with no checks: how a hostile peer would.
    fn raw_encode(entries: &[(&str, u64)]) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(MAGIC).u8(VERSION).varint(entries.len() as u64);
        for (path, size) in entries {
            w.str(path)
                .varint(*size)
                .raw(ContentId::of(path.as_bytes()).as_bytes());
        }
        w.into_vec()
    }

    fn sample() -> Manifest {
        Manifest::new(vec![
            entry("photos/b.jpg", 200),
            entry("readme.txt", 0),
            entry("photos/a.jpg", 100),
            entry("photos-old/a.jpg", 7),
            entry("été/ü.txt", 3),
        ])
        .unwrap()
    }

    #[test]
    fn round_trips_through_encode_and_decode() {
        let m = sample();
        let bytes = m.encode();
        assert_eq!(bytes.len(), m.encoded_len());
        let back = Manifest::decode(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.encode(), bytes);
        assert_eq!(back.id(), m.id());
        assert_eq!(m.id(), ContentId::of(&bytes));
        assert_eq!(m.total_size(), 310);
        assert_eq!(m.len(), 5);
        let paths: Vec<_> = m.entries().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "photos-old/a.jpg",
                "photos/a.jpg",
                "photos/b.jpg",
                "readme.txt",
                "été/ü.txt"
            ]
        );
        assert_eq!(m.get("photos/b.jpg").map(|e| e.size), Some(200));
        assert!(m.get("photos").is_none());
    }

    #[test]
    fn encoding_is_pinned() {
        // Changing this breaks every collection id ever shared: bump VERSION instead.
        let m = Manifest::new(vec![Entry {
            path: "a".into(),
            size: 300,
            id: ContentId::from_bytes([7; 32]),
        }])
        .unwrap();
        let mut expected = b"shoal-manifest\x01\x01\x01a\xac\x02".to_vec();
        expected.extend_from_slice(&[7; 32]);
        assert_eq!(m.encode(), expected);
    }

    #[test]
    fn empty_manifest_is_valid_and_round_trips() {
        let m = Manifest::new(vec![]).unwrap();
        assert!(m.is_empty());
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn serde_validates_through_new() {
        let m = sample();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Manifest>(&json).unwrap(), m);
        let bad = r#"[{"path":"../x","size":1,"id":"af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"}]"#;
        assert!(serde_json::from_str::<Manifest>(bad).is_err());
    }

    /// Checks that `path` (alone, or with `others` around it) is rejected the
    /// same way by `new` and by `decode`, and that the message names it.
    fn assert_rejected(paths: &[&str], expect: fn(&ManifestError) -> bool, named: &str) {
        let entries: Vec<Entry> = paths.iter().map(|p| entry(p, 1)).collect();
        let err = Manifest::new(entries).unwrap_err();
        assert!(expect(&err), "new: unexpected error {err:?}");
        assert!(
            err.to_string().contains(named),
            "new: message {err} does not name {named}"
        );
        let mut sorted = paths.to_vec();
        sorted.sort_unstable();
        let raw: Vec<(&str, u64)> = sorted.iter().map(|p| (*p, 1)).collect();
        let err = Manifest::decode(&raw_encode(&raw)).unwrap_err();
        assert!(expect(&err), "decode: unexpected error {err:?}");
        assert!(
            err.to_string().contains(named),
            "decode: message {err} does not name {named}"
        );
    }

    #[test]
    fn dotdot_component_is_rejected() {
        for p in ["..", "../etc/passwd", "a/../../b", "a/.."] {
            assert_rejected(
                &[p],
                |e| matches!(e, ManifestError::DotDotComponent { .. }),
                p,
            );
        }
    }

    #[test]
    fn dot_component_is_rejected() {
        for p in [".", "./a", "a/./b", "a/."] {
            assert_rejected(&[p], |e| matches!(e, ManifestError::DotComponent { .. }), p);
        }
        // Names that merely start with dots are fine.
        Manifest::new(vec![
            entry(".hidden", 1),
            entry("...", 1),
            entry("a/..b", 1),
        ])
        .unwrap();
    }

    #[test]
    fn absolute_path_is_rejected() {
        for p in ["/etc/passwd", "/", "//a"] {
            assert_rejected(&[p], |e| matches!(e, ManifestError::AbsolutePath { .. }), p);
        }
    }

    #[test]
    fn empty_component_is_rejected() {
        for p in ["a//b", "a/", ""] {
            assert_rejected(
                &[p],
                |e| matches!(e, ManifestError::EmptyComponent { .. }),
                &format!("{p:?}"),
            );
        }
    }

    #[test]
    fn nul_byte_is_rejected() {
        assert_rejected(
            &["a\0b"],
            |e| matches!(e, ManifestError::Nul { .. }),
            r#""a\0b""#,
        );
    }

    #[test]
    fn backslash_is_rejected() {
        assert_rejected(
            &["a\\..\\b"],
            |e| matches!(e, ManifestError::Backslash { .. }),
            r#""a\\..\\b""#,
        );
    }

    #[test]
    fn control_character_is_rejected() {
        for (p, shown) in [
            ("a\nb", r#""a\nb""#),
            ("a\x1b[31m", r#""a\u{1b}[31m""#),
            ("del\x7f", r#""del\u{7f}""#),
            ("tab\there", r#""tab\there""#),
        ] {
            assert_rejected(
                &[p],
                |e| matches!(e, ManifestError::ControlChar { .. }),
                shown,
            );
        }
    }

    #[test]
    fn over_long_component_is_rejected() {
        let ok = "x".repeat(MAX_COMPONENT_LEN);
        Manifest::new(vec![entry(&ok, 1)]).unwrap();
        let long = format!("dir/{}", "x".repeat(MAX_COMPONENT_LEN + 1));
        assert_rejected(
            &[&long],
            |e| matches!(e, ManifestError::ComponentTooLong { len: 256, .. }),
            "dir/xxx",
        );
    }

    #[test]
    fn over_long_path_is_rejected() {
        let component = "y".repeat(99);
        let ok = vec![component.as_str(); 41].join("/"); // 41 * 100 - 1 = 4099
        let ok = &ok[..MAX_PATH_LEN];
        assert!(!ok.ends_with('/'));
        Manifest::new(vec![entry(ok, 1)]).unwrap();
        let long = format!("{ok}z");
        assert_rejected(
            &[&long],
            |e| matches!(e, ManifestError::PathTooLong { len: 4097, .. }),
            "\"yyyy",
        );
    }

    #[test]
    fn duplicate_path_is_rejected() {
        assert_rejected(
            &["x", "dup/a", "dup/a"],
            |e| matches!(e, ManifestError::Duplicate { .. }),
            "\"dup/a\"",
        );
    }

    #[test]
    fn file_and_folder_with_the_same_path_is_rejected() {
        assert_rejected(
            &["a", "a/b"],
            |e| matches!(e, ManifestError::FileFolderConflict { .. }),
            "\"a\" is both a file and a folder",
        );
    }

    #[test]
    fn file_folder_conflict_is_found_past_paths_sorting_between() {
        // '-' and '.' sort below '/', so these sit between "a" and "a/b".
        assert_rejected(
            &["a", "a-b", "a.c", "a-c/x", "a/b"],
            |e| matches!(e, ManifestError::FileFolderConflict { .. }),
            "(the folder holds \"a/b\")",
        );
        assert_eq!(
            find_file_folder_conflict(["a", "a-b", "a-c/x", "a.c", "a/b"]),
            Some(("a", "a/b"))
        );
        // Near misses are not conflicts.
        assert_eq!(find_file_folder_conflict(["a", "a-b/c", "ab/c"]), None);
        assert_eq!(find_file_folder_conflict(["a-b", "a/b", "ab"]), None);
    }

    #[test]
    fn not_sorted_entries_are_rejected_by_decode() {
        let err = Manifest::decode(&raw_encode(&[("b", 1), ("a", 1)])).unwrap_err();
        assert!(
            matches!(&err, ManifestError::NotSorted { path, previous } if path == "a" && previous == "b"),
            "{err:?}"
        );
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = sample().encode();
        bytes.push(0);
        assert_eq!(
            Manifest::decode(&bytes),
            Err(ManifestError::Wire(WireError::Trailing(1)))
        );
    }

    #[test]
    fn non_canonical_varint_is_rejected() {
        // Size 1 written as two bytes.
        let mut bytes = raw_encode(&[("a", 1)]);
        let at = HEADER_LEN + 1 + 2;
        assert_eq!(bytes[at], 1);
        bytes.splice(at..at + 1, [0x81, 0x00]);
        assert!(matches!(
            Manifest::decode(&bytes),
            Err(ManifestError::Wire(WireError::BadVarint { .. }))
        ));
    }

    #[test]
    fn non_utf8_path_is_rejected() {
        let mut w = Writer::new();
        w.raw(MAGIC).u8(VERSION).varint(1);
        w.bytes(b"a\xffb").varint(1).raw(&[0; 32]);
        let err = Manifest::decode(w.as_slice()).unwrap_err();
        assert!(matches!(err, ManifestError::NotUtf8 { .. }), "{err:?}");
        assert!(err.to_string().contains("a\u{fffd}b"), "{err}");
    }

    #[test]
    fn unknown_version_has_its_own_error() {
        let mut bytes = sample().encode();
        bytes[MAGIC.len()] = 7;
        let err = Manifest::decode(&bytes).unwrap_err();
        assert_eq!(err, ManifestError::UnsupportedVersion(7));
        assert_eq!(
            err.to_string(),
            "manifest version 7 is not supported (this shoal reads version 1); upgrade shoal"
        );
    }

    #[test]
    fn wrong_magic_is_not_a_manifest() {
        assert_eq!(Manifest::decode(b""), Err(ManifestError::NotAManifest));
        assert_eq!(
            Manifest::decode(b"shoal-manifes"),
            Err(ManifestError::NotAManifest)
        );
        let mut bytes = sample().encode();
        bytes[0] = b'S';
        assert_eq!(Manifest::decode(&bytes), Err(ManifestError::NotAManifest));
    }

    #[test]
    fn too_many_entries_is_rejected() {
        let mut w = Writer::new();
        w.raw(MAGIC).u8(VERSION).varint(MAX_ENTRIES as u64 + 1);
        assert_eq!(
            Manifest::decode(w.as_slice()),
            Err(ManifestError::TooManyEntries {
                count: MAX_ENTRIES as u64 + 1
            })
        );
        let many: Vec<Entry> = (0..=MAX_ENTRIES)
            .map(|_| Entry {
                // The count is checked first, so the paths need not be valid.
                path: String::new(),
                size: 0,
                id: ContentId::from_bytes([0; 32]),
            })
            .collect();
        assert!(matches!(
            Manifest::new(many),
            Err(ManifestError::TooManyEntries { .. })
        ));
    }

    #[test]
    fn huge_declared_count_with_tiny_input_fails_before_allocating() {
        for count in [MAX_ENTRIES as u64, 1000] {
            let mut w = Writer::new();
            w.raw(MAGIC).u8(VERSION).varint(count);
            w.raw(&[1; 40]);
            // The error reports the bytes the count would need: proof that it was
            // checked against the input before any entry was read or reserved.
            assert_eq!(
                Manifest::decode(w.as_slice()),
                Err(ManifestError::Wire(WireError::Truncated {
                    what: "manifest entries",
                    needed: count * MIN_ENTRY_LEN as u64,
                    left: 40
                }))
            );
        }
    }

    #[test]
    fn entry_size_matches_the_documented_allocation_bound() {
        // `decode`'s allocation bound assumes this (on 64-bit targets).
        if cfg!(target_pointer_width = "64") {
            assert_eq!(std::mem::size_of::<Entry>(), 64);
        }
    }

    #[test]
    fn total_size_beyond_limit_is_rejected() {
        let half = MAX_TOTAL_SIZE / 2 + 1;
        let err = Manifest::new(vec![entry("a", half), entry("b", half)]).unwrap_err();
        assert!(
            matches!(err, ManifestError::TotalSizeTooLarge { .. }),
            "{err:?}"
        );
        let err = Manifest::decode(&raw_encode(&[("a", half), ("b", half)])).unwrap_err();
        assert!(
            matches!(err, ManifestError::TotalSizeTooLarge { .. }),
            "{err:?}"
        );
        // Sums that overflow u64 are caught too.
        let err = Manifest::decode(&raw_encode(&[("a", u64::MAX), ("b", u64::MAX)])).unwrap_err();
        assert!(
            matches!(err, ManifestError::TotalSizeTooLarge { .. }),
            "{err:?}"
        );
        Manifest::new(vec![entry("a", MAX_TOTAL_SIZE)]).unwrap();
    }

    #[test]
    fn encoded_manifest_beyond_limit_is_rejected() {
        assert!(matches!(
            Manifest::decode(&vec![0; MAX_ENCODED_LEN + 1]),
            Err(ManifestError::TooLarge { .. })
        ));
        // Reaching the real limit through `new` takes over 256 MiB of paths, so
        // the same check is exercised with a lower limit.
        let entries = vec![entry("a", 1), entry("b", 1)];
        let len = Manifest::new(entries.clone()).unwrap().encoded_len();
        assert_eq!(len, HEADER_LEN + 1 + 2 * (1 + 1 + 1 + 32));
        Manifest::new_with_limit(entries.clone(), len).unwrap();
        assert_eq!(
            Manifest::new_with_limit(entries, len - 1),
            Err(ManifestError::TooLarge { len: len as u64 })
        );
    }

    #[test]
    fn long_paths_are_shortened_in_messages() {
        let long = format!("{}/x\x07", "a".repeat(1000));
        let msg = Manifest::new(vec![entry(&long, 1)])
            .unwrap_err()
            .to_string();
        assert!(msg.len() < 300, "{msg}");
        assert!(msg.contains("(1003 bytes)"), "{msg}");
    }

    /// Brute force: a file `p` with another path starting with `p/`.
    fn has_conflict_slow(paths: &[String]) -> bool {
        paths
            .iter()
            .any(|p| paths.iter().any(|q| q.starts_with(&format!("{p}/"))))
    }

    /// Valid path components, over a small alphabet that includes bytes sorting
    /// below and above '/' so that orderings are interesting.
    fn component() -> impl Strategy<Value = String> {
        "[ab.\\-_ é0]{1,3}".prop_filter("not . or ..", |c| c != "." && c != "..")
    }

    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec(component(), 1..4).prop_map(|c| c.join("/"))
    }

    /// Sets of paths with no duplicates and no file/folder conflicts.
    fn valid_entries() -> impl Strategy<Value = Vec<Entry>> {
        prop::collection::btree_set(path(), 0..40).prop_flat_map(|set| {
            let paths: Vec<String> = set.into_iter().collect();
            let kept: Vec<String> = paths
                .iter()
                .filter(|p| !paths.iter().any(|q| q.starts_with(&format!("{p}/"))))
                .cloned()
                .collect();
            let n = kept.len();
            (
                Just(kept),
                prop::collection::vec(any::<u64>().prop_map(|s| s % (1 << 40)), n),
                prop::collection::vec(any::<[u8; 32]>(), n),
            )
                .prop_map(|(paths, sizes, ids)| {
                    paths
                        .into_iter()
                        .zip(sizes)
                        .zip(ids)
                        .map(|((path, size), id)| Entry {
                            path,
                            size,
                            id: ContentId::from_bytes(id),
                        })
                        .collect()
                })
        })
    }

    proptest! {
        #[test]
        fn valid_entry_sets_round_trip(entries in valid_entries()) {
            let m = Manifest::new(entries.clone()).unwrap();
            let bytes = m.encode();
            let back = Manifest::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &m);
            prop_assert_eq!(back.encode(), bytes);
            prop_assert_eq!(m.len(), entries.len());
        }

        #[test]
        fn input_order_does_not_change_the_id(
            (entries, shuffled) in valid_entries().prop_flat_map(|e| {
                (Just(e.clone()), Just(e).prop_shuffle())
            })
        ) {
            let a = Manifest::new(entries).unwrap();
            let b = Manifest::new(shuffled).unwrap();
            prop_assert_eq!(a.id(), b.id());
            prop_assert_eq!(a, b);
        }

        #[test]
        fn conflict_check_matches_brute_force(
            set in prop::collection::btree_set("[ab\\-./]{1,5}", 0..12)
        ) {
            let paths: Vec<String> = set.into_iter().collect();
            let fast = find_file_folder_conflict(paths.iter().map(String::as_str));
            prop_assert_eq!(fast.is_some(), has_conflict_slow(&paths));
            if let Some((file, inside)) = fast {
                let folder = format!("{file}/");
                prop_assert!(inside.starts_with(&folder));
            }
        }

        #[test]
        fn decoding_random_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(m) = Manifest::decode(&bytes) {
                prop_assert_eq!(m.encode(), bytes);
            }
        }

        #[test]
        fn decoding_mutated_manifests_never_panics_and_stays_canonical(
            entries in valid_entries(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = Manifest::new(entries).unwrap().encode();
            for (at, byte) in edits {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            if let Ok(m) = Manifest::decode(&bytes) {
                prop_assert_eq!(m.encode(), bytes);
            }
        }
    }
}
