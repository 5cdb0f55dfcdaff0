//! shoal's store: verified pieces, outboards, partial files and the SQLite database.
//!
//! - [`layout`]: how a content is cut into pieces.
//! - [`tree`]: BLAKE3 verified streaming at piece granularity (pure, no I/O).
//! - [`hash`]: multi-threaded, bounded-memory hashing of files into outboards.
//! - [`walk`]: hashing a file or a whole folder into a collection.
//! - [`partial`]: downloads written piece by piece, verified first; verified reads
//!   for serving.
//! - [`db`]: the SQLite database, the only code that speaks SQL.
//! - [`store`]: the [`Store`] facade the node and CLI use.
//! - [`error`]: the error type, [`StoreError`].
//!
//! The crash model is described in `DESIGN.md` beside this crate.

pub mod access;
pub mod db;
pub mod error;
pub mod fsutil;
pub mod hash;
pub mod layout;
pub mod partial;
pub mod store;
pub mod tree;
pub mod walk;

pub use access::{AccessLogEntry, Grant, InviteRecord, InviteUse, NewAccessLog, Redeem};
pub use db::{Db, SearchHit, Share, ShareFile, Visibility};
pub use error::StoreError;
pub use fsutil::write_atomic;
pub use hash::{hash_bytes, hash_file};
pub use layout::{LayoutError, PieceLayout, DEFAULT_PIECE_SIZE, MAX_PIECE_SIZE};
pub use partial::{read_piece, PartialFile, PendingFlush, PieceVerifier, VerifiedPiece};
pub use store::{Added, Blob, Store};
pub use tree::{verify_piece_with_proof, Cv, Outboard, VerifyError};
pub use walk::{
    hash_path, hash_path_excluding, hash_path_reusing, Hashed, Reuse, SkipReason, Skipped,
};
