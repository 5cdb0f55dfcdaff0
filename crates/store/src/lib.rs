//! shoal's store: verified pieces, outboards, partial files and the SQLite database.
//!
//! - [`layout`]: how a content is cut into pieces.
//! - [`tree`]: BLAKE3 verified streaming at piece granularity (pure, no I/O).
//! - [`hash`]: multi-threaded, bounded-memory hashing of files into outboards.
//! - [`error`]: [`StoreError`].

pub mod error;
pub mod hash;
pub mod layout;
pub mod tree;

pub use error::StoreError;
pub use hash::{hash_bytes, hash_file};
pub use layout::{LayoutError, PieceLayout, DEFAULT_PIECE_SIZE, MAX_PIECE_SIZE};
pub use tree::{verify_piece_with_proof, Cv, Outboard, VerifyError};
