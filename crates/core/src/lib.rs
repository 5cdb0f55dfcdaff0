//! shoal's core types. Nothing here does I/O: no files, sockets or clocks.
//!
//! - [`id`]: content ids (BLAKE3-256, shown as `b3sum` shows them).
//! - [`wire`]: the bounded binary reader and writer every decoder is built on.
//! - [`manifest`]: the canonical manifest of a collection (a folder).
//! - [`invite`]: signed, expiring, revocable invites to private content.
//! - [`ticket`]: the copy-paste-safe `shoal1...` ticket.
//! - [`proto`]: the transfer protocol's messages and their codec.

pub mod id;
pub mod invite;
pub mod manifest;
pub mod proto;
pub mod size;
pub mod ticket;
pub mod wire;

pub use id::{ContentId, Kind};
pub use invite::{Invite, InviteError, InviteId};
pub use manifest::{Entry, Manifest, ManifestError};
pub use size::{parse_duration, parse_size};
pub use ticket::{Provider, Ticket, TicketError};
