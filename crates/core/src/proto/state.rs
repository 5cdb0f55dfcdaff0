//! The rules of one connection that need its state (spec §7 to §9 and the "driver"
//! rows of §11), as a sans-IO checker the connection driver feeds every message it
//! sends and receives.
//!
//! [`ConnectionState`] does not decide anything (the scheduler does); it only checks
//! that both sides follow the protocol and keeps the little state that needs:
//! handshake progress, the layout, choke and interest flags, and the outstanding
//! requests of both sides (bounded by the protocol's limits).

use std::collections::{BTreeSet, VecDeque};

use super::{
    num_pieces, Bitfield, Hello, Message, ProtoError, CV_LEN, MAX_CONTENT_LEN,
    MAX_OUTSTANDING_OUTBOARD_REQUESTS, MAX_OUTSTANDING_REQUESTS, MAX_PIECES,
};
use crate::id::ContentId;

/// How a content is cut into pieces: its length and piece size, validated against the
/// protocol's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    content_len: u64,
    piece_size: u32,
    num_pieces: u32,
}

impl Layout {
    /// Fails unless `piece_size` is a valid piece size and the content has at most
    /// [`MAX_PIECES`] pieces.
    pub fn new(content_len: u64, piece_size: u32) -> Result<Self, ProtoError> {
        if !super::is_valid_piece_size(piece_size) || content_len > MAX_CONTENT_LEN {
            return Err(ProtoError::Invalid {
                msg: "layout",
                why: "piece size or content length out of range",
            });
        }
        let n = num_pieces(content_len, piece_size);
        match u32::try_from(n) {
            Ok(num_pieces) if num_pieces <= MAX_PIECES => Ok(Self {
                content_len,
                piece_size,
                num_pieces,
            }),
            _ => Err(ProtoError::Invalid {
                msg: "layout",
                why: "more pieces than the limit",
            }),
        }
    }

    pub fn content_len(&self) -> u64 {
        self.content_len
    }

    pub fn piece_size(&self) -> u32 {
        self.piece_size
    }

    pub fn num_pieces(&self) -> u32 {
        self.num_pieces
    }

    /// Length in bytes of piece `i`, `None` when out of range.
    pub fn piece_len(&self, i: u32) -> Option<u64> {
        if i >= self.num_pieces {
            return None;
        }
        let start = u64::from(i) * u64::from(self.piece_size);
        Some((self.content_len - start).min(u64::from(self.piece_size)))
    }

    fn check_piece(&self, piece: u32) -> Result<(), ProtoError> {
        if piece >= self.num_pieces {
            return Err(ProtoError::PieceOutOfRange {
                piece: u64::from(piece),
                num_pieces: self.num_pieces,
            });
        }
        Ok(())
    }

    fn check_range(&self, first: u32, count: u64) -> Result<(), ProtoError> {
        if u64::from(first) + count > u64::from(self.num_pieces) {
            return Err(ProtoError::PieceOutOfRange {
                piece: u64::from(first) + count,
                num_pieces: self.num_pieces,
            });
        }
        Ok(())
    }
}

/// Which end of the stream this side is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opened the stream; sends the first hello.
    Initiator,
    /// Accepted the stream; answers the hello with its own or with `Deny`.
    Responder,
}

/// The handshake progress of one direction (what one side has sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Nothing,
    Hello,
    Availability,
}

/// What a received message means for the driver, beyond "it was allowed".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Nothing to do but what the message says (and hand it to the scheduler).
    Ok,
    /// The responder refused (a `Deny`): close the stream.
    Denied,
    /// The peer's hello arrived; as responder, admit or deny it now (its layout,
    /// if any, is in the message).
    Hello,
    /// The handshake is complete on both sides.
    Established,
    /// A request arrived while this side chokes the peer: answer `Reject { Choked }`.
    RequestWhileChoking,
    /// The peer closed the connection.
    Closed,
    /// A message after the connection closed; ignore it.
    Ignored,
}

/// The protocol's view of one connection, fed with every message sent and received.
///
/// `on_recv` returns the [`ProtoError`] of a violation by the peer (close with its
/// [`ProtoError::close_code`]); `on_send` returns one when this side is about to break
/// a rule (a bug in the caller: the message should not be sent).
#[derive(Debug, Clone)]
pub struct ConnectionState {
    role: Role,
    content: Option<ContentId>,
    /// The layout the peer's hello gave (the initiator's may be absent).
    peer_layout: Option<Layout>,
    layout: Option<Layout>,
    our_hello_layout: Option<(Option<u32>, Option<u64>)>,
    sent: Sent,
    received: Sent,
    closed: bool,
    am_choking: bool,
    peer_choking: bool,
    am_interested: bool,
    peer_interested: bool,
    /// Requests we sent that have no answer yet.
    our_requests: BTreeSet<u32>,
    /// Requests the peer sent that we have not answered yet.
    peer_requests: BTreeSet<u32>,
    our_outboard_requests: VecDeque<(u32, u32)>,
    peer_outboard_requests: u32,
}

impl ConnectionState {
    pub fn new(role: Role) -> Self {
        Self {
            role,
            content: None,
            peer_layout: None,
            layout: None,
            our_hello_layout: None,
            sent: Sent::Nothing,
            received: Sent::Nothing,
            closed: false,
            am_choking: true,
            peer_choking: true,
            am_interested: false,
            peer_interested: false,
            our_requests: BTreeSet::new(),
            peer_requests: BTreeSet::new(),
            our_outboard_requests: VecDeque::new(),
            peer_outboard_requests: 0,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The agreed layout, once the responder's hello has been sent or received.
    pub fn layout(&self) -> Option<Layout> {
        self.layout
    }

    /// Whether both sides have sent their hello and availability.
    pub fn is_established(&self) -> bool {
        self.sent == Sent::Availability && self.received == Sent::Availability && !self.closed
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether this side chokes the peer.
    pub fn am_choking(&self) -> bool {
        self.am_choking
    }

    /// Whether the peer chokes this side.
    pub fn peer_choking(&self) -> bool {
        self.peer_choking
    }

    pub fn am_interested(&self) -> bool {
        self.am_interested
    }

    pub fn peer_interested(&self) -> bool {
        self.peer_interested
    }

    /// Pieces the peer requested that this side has not answered yet (in index
    /// order); after sending `Choke`, each that will not be served gets
    /// `Reject { Choked }`.
    pub fn peer_requests(&self) -> impl Iterator<Item = u32> + '_ {
        self.peer_requests.iter().copied()
    }

    /// Pieces this side requested that have no answer yet.
    pub fn our_requests(&self) -> impl Iterator<Item = u32> + '_ {
        self.our_requests.iter().copied()
    }

    /// Number of requests this side may still send before reaching the limit.
    pub fn request_budget(&self) -> u32 {
        MAX_OUTSTANDING_REQUESTS.saturating_sub(self.our_requests.len() as u32)
    }

    /// Records that this side marks the connection closed without a `Close`
    /// (the stream ended or was reset).
    pub fn mark_closed(&mut self) {
        self.closed = true;
    }

    fn established_layout(&self, msg: &'static str) -> Result<Layout, ProtoError> {
        match (self.is_established(), self.layout) {
            (true, Some(l)) => Ok(l),
            _ => Err(ProtoError::Unexpected {
                msg,
                when: "before the handshake is complete",
            }),
        }
    }

    fn hello_layout(h: &Hello<'_>) -> Option<Layout> {
        Layout::new(h.content_len?, h.piece_size?).ok()
    }

    /// Checks an availability message against the layout of the hello before it.
    fn check_availability(msg: &Message<'_>, layout: Option<Layout>) -> Result<(), ProtoError> {
        match (msg, layout) {
            (Message::HaveNone, _) => Ok(()),
            (Message::Bitfield { .. }, Some(l)) => {
                Bitfield::from_message(msg, l.num_pieces()).map(|_| ())
            }
            (Message::HaveAll, Some(_)) => Ok(()),
            (Message::Bitfield { .. } | Message::HaveAll, None) => Err(ProtoError::BadBitfield(
                "pieces announced by a peer whose hello gave no layout",
            )),
            (other, _) => Err(ProtoError::Unexpected {
                msg: other.message_type().name(),
                when: "where the availability message (Bitfield, HaveAll, HaveNone) belongs",
            }),
        }
    }

    /// Checks and records a message received from the peer.
    pub fn on_recv(&mut self, msg: &Message<'_>) -> Result<Received, ProtoError> {
        if self.closed {
            return Ok(Received::Ignored);
        }
        if let Message::Close { .. } = msg {
            self.closed = true;
            return Ok(Received::Closed);
        }
        let name = msg.message_type().name();
        match self.received {
            Sent::Nothing => return self.recv_first(msg),
            Sent::Hello => {
                Self::check_availability(msg, self.peer_layout)?;
                self.received = Sent::Availability;
                return Ok(if self.is_established() {
                    Received::Established
                } else {
                    Received::Ok
                });
            }
            Sent::Availability => {}
        }
        // A responder has not replied yet: the initiator must wait for its hello.
        let layout = self.established_layout(name)?;
        match *msg {
            Message::Hello(_)
            | Message::Deny { .. }
            | Message::Bitfield { .. }
            | Message::HaveAll
            | Message::HaveNone => Err(ProtoError::Unexpected {
                msg: name,
                when: "after the handshake",
            }),
            Message::FileBitfield { .. } => Err(ProtoError::Unexpected {
                msg: name,
                when: "in a session of one content (only a folder session's first message)",
            }),
            Message::FileOutboardRequest { .. }
            | Message::FileOutboard { .. }
            | Message::PartRequest { .. }
            | Message::Part { .. }
            | Message::PartReject { .. }
            | Message::PartHave { .. } => Err(ProtoError::Unexpected {
                msg: name,
                when: "in a session of one content (only in a folder session)",
            }),
            Message::Have { piece } | Message::Cancel { piece } => {
                layout.check_piece(piece)?;
                Ok(Received::Ok)
            }
            Message::Interested => {
                self.peer_interested = true;
                Ok(Received::Ok)
            }
            Message::NotInterested => {
                self.peer_interested = false;
                Ok(Received::Ok)
            }
            Message::Choke => {
                self.peer_choking = true;
                Ok(Received::Ok)
            }
            Message::Unchoke => {
                self.peer_choking = false;
                Ok(Received::Ok)
            }
            Message::Request { piece } => {
                layout.check_piece(piece)?;
                if self.peer_requests.contains(&piece) {
                    return Err(ProtoError::DuplicateRequest { piece });
                }
                if self.peer_requests.len() as u32 >= MAX_OUTSTANDING_REQUESTS {
                    return Err(ProtoError::TooManyRequests {
                        what: "requests",
                        max: MAX_OUTSTANDING_REQUESTS,
                    });
                }
                self.peer_requests.insert(piece);
                Ok(if self.am_choking {
                    Received::RequestWhileChoking
                } else {
                    Received::Ok
                })
            }
            Message::Piece { piece, data } => {
                layout.check_piece(piece)?;
                if !self.our_requests.contains(&piece) {
                    return Err(ProtoError::Unrequested { msg: name, piece });
                }
                let expected = layout.piece_len(piece).unwrap_or(0);
                if data.len() as u64 != expected {
                    return Err(ProtoError::WrongPieceLength {
                        piece,
                        len: data.len() as u64,
                        expected,
                    });
                }
                self.our_requests.remove(&piece);
                Ok(Received::Ok)
            }
            Message::Reject { piece, .. } => {
                layout.check_piece(piece)?;
                if !self.our_requests.remove(&piece) {
                    return Err(ProtoError::Unrequested { msg: name, piece });
                }
                Ok(Received::Ok)
            }
            Message::OutboardRequest { first, count } => {
                layout.check_range(first, u64::from(count))?;
                if self.peer_outboard_requests >= MAX_OUTSTANDING_OUTBOARD_REQUESTS {
                    return Err(ProtoError::TooManyRequests {
                        what: "outboard requests",
                        max: MAX_OUTSTANDING_OUTBOARD_REQUESTS,
                    });
                }
                self.peer_outboard_requests += 1;
                Ok(Received::Ok)
            }
            Message::OutboardResponse { first, cvs } => {
                let n = (cvs.len() / CV_LEN) as u32;
                layout.check_range(first, u64::from(n))?;
                let pos = self
                    .our_outboard_requests
                    .iter()
                    .position(|&(f, c)| f == first && (n == 0 || n == c));
                match pos {
                    Some(i) => {
                        self.our_outboard_requests.remove(i);
                        Ok(Received::Ok)
                    }
                    None => Err(ProtoError::Unexpected {
                        msg: name,
                        when: "without a matching outstanding OutboardRequest",
                    }),
                }
            }
            Message::PeerExchange { .. } | Message::KeepAlive => Ok(Received::Ok),
            Message::Close { .. } => Ok(Received::Closed),
        }
    }

    fn recv_first(&mut self, msg: &Message<'_>) -> Result<Received, ProtoError> {
        match (self.role, msg) {
            (Role::Responder, Message::Hello(h)) => {
                self.content = Some(h.content);
                // A hello with only one of the two layout fields has no layout: its
                // sender may only announce HaveNone.
                self.peer_layout = Self::hello_layout(h);
                self.received = Sent::Hello;
                Ok(Received::Hello)
            }
            (Role::Initiator, Message::Hello(h)) => {
                let Some((piece_size, content_len)) = self.our_hello_layout else {
                    return Err(ProtoError::Unexpected {
                        msg: "Hello",
                        when: "before this side sent its hello",
                    });
                };
                let ours = Hello {
                    piece_size,
                    content_len,
                    ..Hello::new(self.content.unwrap_or(h.content))
                };
                let (piece_size, len, _) = h.check_reply(&ours)?;
                let layout = Layout::new(len, piece_size)?;
                self.layout = Some(layout);
                self.peer_layout = Some(layout);
                self.received = Sent::Hello;
                Ok(Received::Hello)
            }
            (Role::Initiator, Message::Deny { .. }) => {
                self.closed = true;
                Ok(Received::Denied)
            }
            (_, other) => Err(ProtoError::Unexpected {
                msg: other.message_type().name(),
                when: "as the first message (a Hello must come first)",
            }),
        }
    }

    /// Checks and records a message this side is about to send.
    pub fn on_send(&mut self, msg: &Message<'_>) -> Result<(), ProtoError> {
        let name = msg.message_type().name();
        if self.closed {
            return Err(ProtoError::Unexpected {
                msg: name,
                when: "after the connection closed",
            });
        }
        if let Message::Close { .. } = msg {
            self.closed = true;
            return Ok(());
        }
        match (self.sent, self.role, msg) {
            (Sent::Nothing, Role::Initiator, Message::Hello(h)) => {
                self.content = Some(h.content);
                self.our_hello_layout = Some((h.piece_size, h.content_len));
                self.sent = Sent::Hello;
                return Ok(());
            }
            (Sent::Nothing, Role::Responder, Message::Hello(h))
                if self.received != Sent::Nothing =>
            {
                if Some(h.content) != self.content {
                    return Err(ProtoError::HelloMismatch("different content id"));
                }
                let (Some(piece_size), Some(len)) = (h.piece_size, h.content_len) else {
                    return Err(ProtoError::HelloMismatch(
                        "the responder's hello lacks the piece size or the content length",
                    ));
                };
                let layout = Layout::new(len, piece_size)?;
                if self.peer_layout.is_some_and(|l| l != layout) {
                    return Err(ProtoError::HelloMismatch(
                        "the initiator's layout differs: deny instead",
                    ));
                }
                self.layout = Some(layout);
                self.sent = Sent::Hello;
                return Ok(());
            }
            (Sent::Nothing, Role::Responder, Message::Deny { .. })
                if self.received != Sent::Nothing =>
            {
                self.closed = true;
                return Ok(());
            }
            (Sent::Nothing, _, _) => {
                return Err(ProtoError::Unexpected {
                    msg: name,
                    when: "before this side's hello",
                })
            }
            (Sent::Hello, _, _) => {
                let layout = match self.role {
                    Role::Initiator => self
                        .our_hello_layout
                        .and_then(|(p, l)| Layout::new(l?, p?).ok()),
                    Role::Responder => self.layout,
                };
                Self::check_availability(msg, layout)?;
                self.sent = Sent::Availability;
                return Ok(());
            }
            (Sent::Availability, _, _) => {}
        }
        let layout = self.established_layout(name)?;
        match *msg {
            Message::Hello(_)
            | Message::Deny { .. }
            | Message::Bitfield { .. }
            | Message::HaveAll
            | Message::HaveNone
            | Message::FileBitfield { .. }
            | Message::FileOutboardRequest { .. }
            | Message::FileOutboard { .. }
            | Message::PartRequest { .. }
            | Message::Part { .. }
            | Message::PartReject { .. }
            | Message::PartHave { .. } => {
                return Err(ProtoError::Unexpected {
                    msg: name,
                    when: "after the handshake",
                })
            }
            Message::Have { piece } => layout.check_piece(piece)?,
            Message::Interested => self.am_interested = true,
            Message::NotInterested => self.am_interested = false,
            Message::Choke => self.am_choking = true,
            Message::Unchoke => self.am_choking = false,
            Message::Request { piece } => {
                layout.check_piece(piece)?;
                if !self.am_interested || self.peer_choking {
                    return Err(ProtoError::Unexpected {
                        msg: name,
                        when: "unless interested and unchoked",
                    });
                }
                if self.our_requests.contains(&piece) {
                    return Err(ProtoError::DuplicateRequest { piece });
                }
                if self.request_budget() == 0 {
                    return Err(ProtoError::TooManyRequests {
                        what: "requests",
                        max: MAX_OUTSTANDING_REQUESTS,
                    });
                }
                self.our_requests.insert(piece);
            }
            Message::Cancel { piece } => layout.check_piece(piece)?,
            Message::Piece { piece, data } => {
                layout.check_piece(piece)?;
                let expected = layout.piece_len(piece).unwrap_or(0);
                if data.len() as u64 != expected {
                    return Err(ProtoError::WrongPieceLength {
                        piece,
                        len: data.len() as u64,
                        expected,
                    });
                }
                if !self.peer_requests.remove(&piece) {
                    return Err(ProtoError::Unrequested { msg: name, piece });
                }
            }
            Message::Reject { piece, .. } => {
                if !self.peer_requests.remove(&piece) {
                    return Err(ProtoError::Unrequested { msg: name, piece });
                }
            }
            Message::OutboardRequest { first, count } => {
                layout.check_range(first, u64::from(count))?;
                if self.our_outboard_requests.len() as u32 >= MAX_OUTSTANDING_OUTBOARD_REQUESTS {
                    return Err(ProtoError::TooManyRequests {
                        what: "outboard requests",
                        max: MAX_OUTSTANDING_OUTBOARD_REQUESTS,
                    });
                }
                self.our_outboard_requests.push_back((first, count));
            }
            Message::OutboardResponse { first, cvs } => {
                layout.check_range(first, (cvs.len() / CV_LEN) as u64)?;
                if self.peer_outboard_requests == 0 {
                    return Err(ProtoError::Unexpected {
                        msg: name,
                        when: "without an outstanding OutboardRequest",
                    });
                }
                self.peer_outboard_requests -= 1;
            }
            Message::PeerExchange { .. } | Message::KeepAlive | Message::Close { .. } => {}
        }
        Ok(())
    }
}
