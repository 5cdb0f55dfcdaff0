//! The canonical manifest of a collection.
//!
//! A shared folder is a *collection*: a manifest listing every file in it (its
//! path relative to the folder, with `/` separators, its size and its content id),
//! sorted by path in byte order. The manifest has exactly one encoding, and the
//! BLAKE3 of that encoding is the collection's id, so the same folder gives the
//! same id on every machine, whatever order its directory listing came in.
//!
//! A folder can also hold empty folders, which no file path names; they are
//! listed after the files, by path, and only the innermost ones (an empty
//! folder holding only empty folders is implied by them).
//!
//! # Encoding (versions 1 and 2)
//!
//! ```text
//! "shoal-manifest"   14 bytes, the magic
//! version            1 byte: 0x01 without empty folders, 0x02 with
//! count              varint, number of entries
//! count times:
//!   path             varint length, then that many bytes of UTF-8
//!   size             varint, the file's size in bytes
//!   id               32 bytes, the file's BLAKE3-256
//! version 2 only:
//! folders            varint, number of empty folders, at least 1
//! folders times:
//!   path             varint length, then that many bytes of UTF-8
//! ```
//!
//! Varints are canonical LEB128 (see [`crate::wire`]). Entries, and empty
//! folders, are strictly increasing by path bytes and nothing may follow the
//! last one, so `encode(decode(b)) == b` whenever `decode(b)` succeeds. A
//! folder without empty folders is encoded as version 1, so its id is the
//! same as before version 2 existed.
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

/// The manifest encoding version of a folder without empty folders.
pub const VERSION: u8 = 1;

/// The manifest encoding version of a folder with empty folders.
pub const VERSION_WITH_FOLDERS: u8 = 2;

/// Most entries (files and empty folders) one manifest may list: about a
/// million.
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
#[serde(try_from = "Repr", into = "Repr")]
pub struct Manifest {
    entries: Vec<Entry>,
    /// The empty folders' paths, sorted, each followed by a NUL (which no
    /// path holds): one allocation the size of their encoding, so decoding
    /// stays within its memory bound however many there are.
    folders: String,
    folder_count: usize,
    total_size: u64,
}

/// How a [`Manifest`] is serialized with serde.
#[derive(serde::Serialize, serde::Deserialize)]
struct Repr {
    entries: Vec<Entry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    empty_folders: Vec<String>,
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
        "manifest version {0} is not supported (this shoal reads versions {VERSION} and {VERSION_WITH_FOLDERS}); upgrade shoal"
    )]
    UnsupportedVersion(u8),
    #[error("the manifest is {len} bytes, more than the limit of {MAX_ENCODED_LEN}; share fewer files at once or use shorter paths")]
    TooLarge { len: u64 },
    #[error("the manifest lists {count} files and empty folders, more than the limit of {MAX_ENTRIES}; share fewer files at once")]
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
    #[error("{} is listed as an empty folder but holds {}", Shown(.folder), Shown(.inside))]
    FolderNotEmpty { folder: String, inside: String },
    #[error("a version 2 manifest lists no empty folder; it must be encoded as version 1")]
    NoFolders,
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
    find_case_collision_with_folders(paths, std::iter::empty())
}

/// [`find_case_collision`] over a folder's files and its empty folders.
///
/// Empty folders that only differ in case merge with each other and with
/// other folders (no conflict); one that folds to the same name as a file,
/// or whose own folders do, collides with it.
pub fn find_case_collision_with_folders<'a>(
    files: impl IntoIterator<Item = &'a str>,
    empty_folders: impl IntoIterator<Item = &'a str>,
) -> Option<(String, String)> {
    let mut folded_files: std::collections::HashMap<String, &'a str> =
        std::collections::HashMap::new();
    let mut folders: std::collections::HashMap<String, &'a str> = std::collections::HashMap::new();
    for path in files {
        let key = folded(path);
        if let Some(other) = folded_files.get(&key) {
            return Some(((*other).to_owned(), path.to_owned()));
        }
        if let Some(folder) = folders.get(&key) {
            return Some(((*folder).to_owned(), path.to_owned()));
        }
        folded_files.insert(key, path);
        for (i, _) in path.match_indices('/') {
            let prefix = &path[..i];
            let key = folded(prefix);
            if let Some(file) = folded_files.get(&key) {
                return Some(((*file).to_owned(), prefix.to_owned()));
            }
            folders.entry(key).or_insert(prefix);
        }
    }
    // Every file is known now, so each folder (and each folder above it) only
    // has to be looked up among them.
    for folder in empty_folders {
        let whole = std::iter::once(folder.len());
        for end in folder.match_indices('/').map(|(i, _)| i).chain(whole) {
            let prefix = &folder[..end];
            if let Some(file) = folded_files.get(&folded(prefix)) {
                return Some(((*file).to_owned(), prefix.to_owned()));
            }
        }
    }
    None
}

impl Manifest {
    /// Two of its paths that collide on a case-insensitive or normalising
    /// file system (see [`find_case_collision_with_folders`]).
    pub fn case_collision(&self) -> Option<(String, String)> {
        find_case_collision_with_folders(
            self.entries.iter().map(|e| e.path.as_str()),
            self.empty_folders(),
        )
    }

    /// Builds the canonical manifest of `entries`, given in any order.
    ///
    /// Fails if any path breaks a rule of [`check_path`], if a path is listed
    /// twice or is both a file and a folder, or if the manifest would exceed
    /// [`MAX_ENTRIES`], [`MAX_TOTAL_SIZE`] or [`MAX_ENCODED_LEN`].
    pub fn new(entries: Vec<Entry>) -> Result<Manifest, ManifestError> {
        Self::with_empty_folders(entries, Vec::new())
    }

    /// [`Manifest::new`] for a folder that also holds the empty folders
    /// `empty_folders` (paths relative to it, in any order).
    ///
    /// Fails as [`Manifest::new`] does, and if an empty folder breaks a rule
    /// of [`check_path`], is listed twice or as a file too, lies inside a
    /// file, or holds a file or another listed folder (only the innermost
    /// empty folders are listed).
    pub fn with_empty_folders(
        entries: Vec<Entry>,
        empty_folders: Vec<String>,
    ) -> Result<Manifest, ManifestError> {
        Self::new_with_limit(entries, empty_folders, MAX_ENCODED_LEN)
    }

    /// [`Manifest::with_empty_folders`] with a lower size limit, so that
    /// tests can reach it.
    fn new_with_limit(
        mut entries: Vec<Entry>,
        mut empty_folders: Vec<String>,
        max_encoded_len: usize,
    ) -> Result<Manifest, ManifestError> {
        let count = entries.len() as u64 + empty_folders.len() as u64;
        if count > MAX_ENTRIES as u64 {
            return Err(ManifestError::TooManyEntries { count });
        }
        let mut total_size: u64 = 0;
        let mut encoded_len = (HEADER_LEN + varint_len(entries.len() as u64)) as u64;
        for entry in &entries {
            check_path(&entry.path)?;
            total_size = add_size(total_size, entry.size, &entry.path)?;
            encoded_len += entry.encoded_len();
        }
        if !empty_folders.is_empty() {
            encoded_len += varint_len(empty_folders.len() as u64) as u64;
        }
        for folder in &empty_folders {
            check_path(folder)?;
            encoded_len += (varint_len(folder.len() as u64) + folder.len()) as u64;
        }
        // Stable order for the same set whatever order it came in; String's Ord
        // is byte order, which is what the encoding requires.
        entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        empty_folders.sort_unstable();
        if let Some(pair) = entries.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(ManifestError::Duplicate {
                path: pair[0].path.clone(),
            });
        }
        if let Some(pair) = empty_folders.windows(2).find(|w| w[0] == w[1]) {
            return Err(ManifestError::Duplicate {
                path: pair[0].clone(),
            });
        }
        let mut folders = String::with_capacity(empty_folders.iter().map(|f| f.len() + 1).sum());
        for folder in &empty_folders {
            folders.push_str(folder);
            folders.push('\0');
        }
        check_conflicts(&entries, &folders)?;
        if encoded_len > max_encoded_len as u64 {
            return Err(ManifestError::TooLarge { len: encoded_len });
        }
        Ok(Manifest {
            entries,
            folders,
            folder_count: empty_folders.len(),
            total_size,
        })
    }

    /// The canonical encoding; its BLAKE3 is [`Manifest::id`].
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.encoded_len());
        let version = if self.folder_count == 0 {
            VERSION
        } else {
            VERSION_WITH_FOLDERS
        };
        w.raw(MAGIC).u8(version).varint(self.entries.len() as u64);
        for e in &self.entries {
            w.str(&e.path).varint(e.size).raw(e.id.as_bytes());
        }
        if self.folder_count > 0 {
            w.varint(self.folder_count as u64);
            for folder in self.empty_folders() {
                w.str(folder);
            }
        }
        w.into_vec()
    }

    /// Length of [`Manifest::encode`]'s output, without encoding.
    pub fn encoded_len(&self) -> usize {
        // A valid manifest's encoding is at most MAX_ENCODED_LEN, so this fits.
        let body: u64 = self.entries.iter().map(Entry::encoded_len).sum();
        let folders: usize = if self.folder_count == 0 {
            0
        } else {
            varint_len(self.folder_count as u64)
                + self
                    .empty_folders()
                    .map(|f| varint_len(f.len() as u64) + f.len())
                    .sum::<usize>()
        };
        HEADER_LEN + varint_len(self.entries.len() as u64) + body as usize + folders
    }

    /// Decodes and checks a manifest.
    ///
    /// Accepts exactly the outputs of [`Manifest::encode`]: anything else (a
    /// non-canonical varint, entries out of order, trailing bytes, a bad path,
    /// a limit exceeded) is an error. Never panics; allocates less than four
    /// times `bytes.len()` (itself at most [`MAX_ENCODED_LEN`]): an entry of at
    /// least [`MIN_ENTRY_LEN`] bytes becomes a 64-byte [`Entry`] plus a copy of its
    /// path, an empty folder becomes a copy of its path and one byte, and the
    /// file/folder check keeps at most one reference per entry.
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
        if version != VERSION && version != VERSION_WITH_FOLDERS {
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
            let path = read_path(&mut r, entries.last().map(|e| e.path.as_str()))?;
            let size = r.varint("file size")?;
            total_size = add_size(total_size, size, path)?;
            let id = ContentId::from_bytes(r.array::<ID_LEN>("file id")?);
            entries.push(Entry {
                path: path.to_owned(),
                size,
                id,
            });
        }
        let mut folders = String::new();
        let mut folder_count = 0usize;
        if version == VERSION_WITH_FOLDERS {
            let n = r.varint("empty folder count")?;
            if n == 0 {
                return Err(ManifestError::NoFolders);
            }
            if count + n > MAX_ENTRIES as u64 {
                return Err(ManifestError::TooManyEntries { count: count + n });
            }
            let mut previous: Option<(usize, usize)> = None;
            for _ in 0..n {
                let last = previous.map(|(a, b)| &folders[a..b]);
                let path = read_path(&mut r, last)?;
                let start = folders.len();
                folders.push_str(path);
                previous = Some((start, folders.len()));
                folders.push('\0');
                folder_count += 1;
            }
        }
        r.finish()?;
        check_conflicts(&entries, &folders)?;
        Ok(Manifest {
            entries,
            folders,
            folder_count,
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

    /// The empty folders' paths, sorted in byte order.
    pub fn empty_folders(&self) -> impl Iterator<Item = &str> + Clone + '_ {
        self.folders.split_terminator('\0')
    }

    /// Number of empty folders.
    pub fn empty_folder_count(&self) -> usize {
        self.folder_count
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

/// Reads one path of an encoded manifest, checks it, and checks that it
/// comes after `previous` in byte order.
fn read_path<'a>(r: &mut Reader<'a>, previous: Option<&str>) -> Result<&'a str, ManifestError> {
    // The length is bounded by what is left; the path's own limit is
    // checked after, so that the error can name it.
    let raw = r.bytes(MAX_ENCODED_LEN, "manifest path")?;
    let path = std::str::from_utf8(raw).map_err(|_| ManifestError::NotUtf8 {
        path: String::from_utf8_lossy(&raw[..raw.len().min(SHOWN_PATH_BYTES)]).into_owned(),
    })?;
    check_path(path)?;
    if let Some(prev) = previous {
        match prev.cmp(path) {
            std::cmp::Ordering::Less => {}
            std::cmp::Ordering::Equal => {
                return Err(ManifestError::Duplicate {
                    path: path.to_owned(),
                })
            }
            std::cmp::Ordering::Greater => {
                return Err(ManifestError::NotSorted {
                    path: path.to_owned(),
                    previous: prev.to_owned(),
                })
            }
        }
    }
    Ok(path)
}

impl TryFrom<Repr> for Manifest {
    type Error = ManifestError;

    fn try_from(r: Repr) -> Result<Self, Self::Error> {
        Manifest::with_empty_folders(r.entries, r.empty_folders)
    }
}

impl From<Manifest> for Repr {
    fn from(m: Manifest) -> Self {
        Repr {
            empty_folders: m.empty_folders().map(str::to_owned).collect(),
            entries: m.entries,
        }
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

/// Checks the file/folder rules over the sorted files and the sorted,
/// NUL-terminated empty folders: no path is both a file and a folder (or
/// listed both as a file and as an empty folder), and no empty folder holds
/// anything listed.
fn check_conflicts(sorted: &[Entry], folders: &str) -> Result<(), ManifestError> {
    let mut files = sorted.iter().map(|e| e.path.as_str()).peekable();
    let mut dirs = folders.split_terminator('\0').peekable();
    // Both lists merged in byte order, without allocating.
    let mut previous: Option<&str> = None;
    let mut duplicate: Option<&str> = None;
    let merged = std::iter::from_fn(|| {
        let next = match (files.peek(), dirs.peek()) {
            (Some(f), Some(d)) if d < f => dirs.next(),
            (Some(_), _) => files.next(),
            (None, _) => dirs.next(),
        }?;
        if previous == Some(next) && duplicate.is_none() {
            duplicate = Some(next);
        }
        previous = Some(next);
        Some(next)
    });
    let conflict = find_file_folder_conflict(merged);
    if let Some(path) = duplicate {
        return Err(ManifestError::Duplicate {
            path: path.to_owned(),
        });
    }
    match conflict {
        Some((outer, inside)) => {
            if folders.split_terminator('\0').any(|d| d == outer) {
                Err(ManifestError::FolderNotEmpty {
                    folder: outer.to_owned(),
                    inside: inside.to_owned(),
                })
            } else {
                Err(ManifestError::FileFolderConflict {
                    file: outer.to_owned(),
                    inside: inside.to_owned(),
                })
            }
        }
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

    fn with_folders() -> Manifest {
        Manifest::with_empty_folders(
            vec![entry("docs/a.txt", 3), entry("b", 1)],
            vec!["src/empty".into(), "docs/old".into(), "été vide".into()],
        )
        .unwrap()
    }

    /// Encodes entries and empty folders exactly as given, with no checks,
    /// as version 2.
    fn raw_encode_v2(entries: &[(&str, u64)], folders: &[&str]) -> Vec<u8> {
        let mut bytes = raw_encode(entries);
        bytes[MAGIC.len()] = VERSION_WITH_FOLDERS;
        let mut w = Writer::new();
        w.varint(folders.len() as u64);
        for f in folders {
            w.str(f);
        }
        bytes.extend_from_slice(&w.into_vec());
        bytes
    }

    #[test]
    fn empty_folders_round_trip_as_version_2() {
        let m = with_folders();
        let bytes = m.encode();
        assert_eq!(bytes[MAGIC.len()], VERSION_WITH_FOLDERS);
        assert_eq!(bytes.len(), m.encoded_len());
        let back = Manifest::decode(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.encode(), bytes);
        assert_eq!(
            back.empty_folders().collect::<Vec<_>>(),
            ["docs/old", "src/empty", "été vide"]
        );
        assert_eq!(back.empty_folder_count(), 3);
        assert_eq!(back.len(), 2);
        // The same files without the folders are another collection, encoded
        // as version 1.
        let files_only = Manifest::new(m.entries().to_vec()).unwrap();
        assert_eq!(files_only.encode()[MAGIC.len()], VERSION);
        assert_ne!(files_only.id(), m.id());
        // Only empty folders, no file: a valid folder too.
        let only = Manifest::with_empty_folders(vec![], vec!["x".into()]).unwrap();
        assert!(only.is_empty());
        assert_eq!(Manifest::decode(&only.encode()).unwrap(), only);
    }

    #[test]
    fn version_2_encoding_is_pinned() {
        let m = Manifest::with_empty_folders(
            vec![Entry {
                path: "a".into(),
                size: 300,
                id: ContentId::from_bytes([7; 32]),
            }],
            vec!["d".into()],
        )
        .unwrap();
        let mut expected = b"shoal-manifest\x02\x01\x01a\xac\x02".to_vec();
        expected.extend_from_slice(&[7; 32]);
        expected.extend_from_slice(b"\x01\x01d");
        assert_eq!(m.encode(), expected);
    }

    #[test]
    fn empty_folders_that_are_not_empty_or_clash_are_refused() {
        let both = |files: &[&str], folders: &[&str]| {
            let entries: Vec<Entry> = files.iter().map(|p| entry(p, 1)).collect();
            let dirs: Vec<String> = folders.iter().map(|f| f.to_string()).collect();
            let new = Manifest::with_empty_folders(entries, dirs).unwrap_err();
            let mut fs = files.to_vec();
            fs.sort_unstable();
            let mut ds = folders.to_vec();
            ds.sort_unstable();
            let raw: Vec<(&str, u64)> = fs.iter().map(|p| (*p, 1)).collect();
            let decoded = Manifest::decode(&raw_encode_v2(&raw, &ds)).unwrap_err();
            assert_eq!(new, decoded, "new and decode disagree");
            new
        };
        // A listed empty folder that holds a file or another listed folder.
        assert!(matches!(
            both(&["a/x"], &["a"]),
            ManifestError::FolderNotEmpty { folder, inside } if folder == "a" && inside == "a/x"
        ));
        assert!(matches!(
            both(&[], &["a", "a/b"]),
            ManifestError::FolderNotEmpty { folder, .. } if folder == "a"
        ));
        // Past paths sorting between ('-' and '.' sort below '/').
        assert!(matches!(
            both(&["a-b", "a.c", "a/z"], &["a"]),
            ManifestError::FolderNotEmpty { .. }
        ));
        // A folder inside a file, and a path that is both.
        assert!(matches!(
            both(&["a"], &["a/b"]),
            ManifestError::FileFolderConflict { file, .. } if file == "a"
        ));
        assert!(matches!(
            both(&["a"], &["a"]),
            ManifestError::Duplicate { path } if path == "a"
        ));
        assert!(matches!(
            both(&[], &["x", "x"]),
            ManifestError::Duplicate { .. }
        ));
        // Paths follow the same rules as files'.
        assert!(matches!(
            both(&[], &["../up"]),
            ManifestError::DotDotComponent { .. }
        ));
        assert!(matches!(
            both(&[], &["/abs"]),
            ManifestError::AbsolutePath { .. }
        ));
    }

    #[test]
    fn version_2_decoding_is_strict() {
        // Version 2 with no folder is not canonical.
        assert_eq!(
            Manifest::decode(&raw_encode_v2(&[("a", 1)], &[])).unwrap_err(),
            ManifestError::NoFolders
        );
        assert!(matches!(
            Manifest::decode(&raw_encode_v2(&[], &["b", "a"])).unwrap_err(),
            ManifestError::NotSorted { .. }
        ));
        let mut trailing = raw_encode_v2(&[], &["a"]);
        trailing.push(0);
        assert!(matches!(
            Manifest::decode(&trailing).unwrap_err(),
            ManifestError::Wire(_)
        ));
        // Files and folders together count against the limit.
        let mut w = Writer::new();
        w.raw(MAGIC)
            .u8(VERSION_WITH_FOLDERS)
            .varint(0)
            .varint(MAX_ENTRIES as u64 + 1);
        assert!(matches!(
            Manifest::decode(&w.into_vec()).unwrap_err(),
            ManifestError::TooManyEntries { .. }
        ));
    }

    #[test]
    fn empty_folders_collide_with_files_not_with_folders() {
        let m = |files: &[&str], folders: &[&str]| {
            Manifest::with_empty_folders(
                files.iter().map(|p| entry(p, 1)).collect(),
                folders.iter().map(|f| f.to_string()).collect(),
            )
            .unwrap()
            .case_collision()
        };
        assert_eq!(m(&["A"], &["a"]), Some(("A".into(), "a".into())));
        assert_eq!(m(&["A"], &["a/b"]), Some(("A".into(), "a".into())));
        assert_eq!(m(&["x/A"], &["X/a"]), Some(("x/A".into(), "X/a".into())));
        // Folders that differ only in case merge.
        assert_eq!(m(&["A/f"], &["a/g", "b", "B"]), None);
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
        let bad = r#"{"entries":[{"path":"../x","size":1,"id":"af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"}]}"#;
        let err = serde_json::from_str::<Manifest>(bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("'..' component"), "{err}");
        let with = with_folders();
        let json = serde_json::to_string(&with).unwrap();
        assert!(json.contains(r#""empty_folders":["#), "{json}");
        assert_eq!(serde_json::from_str::<Manifest>(&json).unwrap(), with);
        let bad = r#"{"entries":[],"empty_folders":["a","a/b"]}"#;
        let err = serde_json::from_str::<Manifest>(bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("listed as an empty folder but holds"), "{err}");
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
            "manifest version 7 is not supported (this shoal reads versions 1 and 2); upgrade shoal"
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
        Manifest::new_with_limit(entries.clone(), Vec::new(), len).unwrap();
        assert_eq!(
            Manifest::new_with_limit(entries, Vec::new(), len - 1),
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
        fn valid_sets_with_empty_folders_round_trip(
            entries in valid_entries(),
            folders in prop::collection::btree_set(path(), 1..8),
        ) {
            // Keep the folders that are empty and innermost: no file or other
            // folder at or below them, and no file at or above them.
            let files: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
            let all: Vec<&String> = folders.iter().collect();
            let kept: Vec<String> = folders
                .iter()
                .filter(|d| {
                    let below = format!("{d}/");
                    !files.iter().any(|f| *f == d.as_str() || f.starts_with(&below)
                        || d.starts_with(&format!("{f}/")))
                        && !all.iter().any(|o| o.starts_with(&below))
                })
                .cloned()
                .collect();
            let m = Manifest::with_empty_folders(entries, kept.clone()).unwrap();
            let bytes = m.encode();
            let back = Manifest::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &m);
            prop_assert_eq!(back.encode(), bytes);
            prop_assert_eq!(back.empty_folders().collect::<Vec<_>>(), kept.iter().map(String::as_str).collect::<Vec<_>>());
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
