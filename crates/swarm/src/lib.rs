//! The shoal swarm scheduler: a sans-IO, deterministic state machine that
//! decides which pieces to request from whom (picker, pipelines, endgame), whom
//! to upload to (choker, initial seeding) and whom to ban.
//!
//! Inputs are [`Event`]s with the current time passed in; outputs are
//! [`Action`]s drained with [`Swarm::poll_action`]. No I/O, no clock reads;
//! randomness comes only from the seed given to [`Swarm::new`]. States and
//! failure transitions are documented in `STATE.md` beside this crate.

mod bitfield;
mod config;
pub mod picker;
mod rate;
mod swarm;
mod types;

pub use bitfield::Bitfield;
pub use config::{Config, PickerMode};
pub use rate::RateMeter;
pub use swarm::{Slot, Stats, Swarm, SwarmError};
pub use types::{Action, DisconnectReason, Event, Msg, PeerKey, Time};
