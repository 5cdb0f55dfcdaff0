//! The scheduler's vocabulary: peer handles, messages, input events and output actions.
//!
//! Message names match the transfer protocol's messages one to one, so the
//! networking layer maps them without translation. Payload bytes never enter
//! the scheduler: a received piece is only its index.

use crate::bitfield::Bitfield;
use std::time::Duration;

/// A point on the driver's clock: time since an arbitrary origin chosen by the
/// driver. The scheduler never reads a clock; it only compares values passed in.
pub type Time = Duration;

/// A small handle for one connected peer, chosen by the driver.
///
/// A key may be reused after `PeerDisconnected` for a new connection.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey(pub u32);

/// A control message exchanged with one peer (payload-free).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// Nothing; keeps an idle connection alive.
    KeepAlive,
    /// The pieces the sender has. May be sent more than once; each adds to
    /// what the receiver knows (pieces are never un-had).
    Bitfield(Bitfield),
    /// The sender has (verified) this piece.
    Have {
        /// Piece index.
        piece: u32,
    },
    /// The sender wants pieces the receiver has.
    Interested,
    /// The sender wants nothing from the receiver.
    NotInterested,
    /// The sender will not serve new requests. Requests already queued are
    /// answered with `Reject` (choke never drops requests silently).
    Choke,
    /// The sender will serve requests.
    Unchoke,
    /// Asks for one whole piece.
    Request {
        /// Piece index.
        piece: u32,
    },
    /// Withdraws a request (not yet served).
    Cancel {
        /// Piece index.
        piece: u32,
    },
    /// One whole piece arrived (its bytes stay with the driver).
    Piece {
        /// Piece index.
        piece: u32,
    },
    /// A request will not be served.
    Reject {
        /// Piece index.
        piece: u32,
    },
    /// Addresses of other peers; handled by the driver, ignored by the scheduler.
    PeerExchange,
}

/// Why the scheduler asks the driver to close a connection.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The peer sent data that failed verification too often.
    Banned,
    /// The peer broke the protocol (index out of range, wrong bitfield length).
    ProtocolViolation,
    /// Both sides have every piece; the connection is useless.
    BothComplete,
    /// The peer set is full.
    TooManyPeers,
}

/// An input to the scheduler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A connection to `peer` is ready for messages.
    PeerConnected {
        /// The driver's handle for the peer.
        peer: PeerKey,
        /// True when we dialed.
        outbound: bool,
    },
    /// The connection to `peer` is gone; all its state is dropped.
    PeerDisconnected {
        /// The peer.
        peer: PeerKey,
    },
    /// A control message from `peer`.
    Message {
        /// The sender.
        peer: PeerKey,
        /// The message.
        msg: Msg,
    },
    /// The driver verified and stored `piece`, received from `from`.
    PieceVerified {
        /// Piece index.
        piece: u32,
        /// Who sent it.
        from: PeerKey,
    },
    /// `piece` from `from` failed verification and was discarded.
    PieceFailed {
        /// Piece index.
        piece: u32,
        /// Who sent it.
        from: PeerKey,
    },
    /// The time returned by `poll_timeout` was reached.
    Tick,
    /// Switch streaming (sequential window) mode on or off.
    SetSequential(bool),
    /// The driver finished sending `piece` to `peer` (after `Action::SendPiece`).
    UploadDone {
        /// The receiver.
        peer: PeerKey,
        /// Piece index.
        piece: u32,
    },
}

/// An output of the scheduler, drained with `Swarm::poll_action`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a control message.
    Send {
        /// The receiver.
        peer: PeerKey,
        /// The message.
        msg: Msg,
    },
    /// Read `piece` from storage and send it to `peer`; report `Event::UploadDone`.
    SendPiece {
        /// The receiver.
        peer: PeerKey,
        /// Piece index.
        piece: u32,
    },
    /// Verify the bytes of `piece` received from `from`, store them when good,
    /// and report `PieceVerified` or `PieceFailed`. Bytes of a piece not named
    /// in this action must be discarded.
    VerifyAndStore {
        /// Piece index.
        piece: u32,
        /// Who sent it.
        from: PeerKey,
    },
    /// Never connect to this peer again for this content.
    Ban {
        /// The peer.
        peer: PeerKey,
    },
    /// Close the connection. The scheduler has already forgotten the peer; a
    /// later `PeerDisconnected` for it is ignored.
    Disconnect {
        /// The peer.
        peer: PeerKey,
        /// Why.
        reason: DisconnectReason,
    },
    /// The peer set is small; connect to up to `n` more peers.
    WantPeers {
        /// How many more would be welcome.
        n: u32,
    },
    /// Every piece is verified and stored.
    Complete,
}
