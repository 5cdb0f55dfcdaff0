//! The messages of the transfer protocol, borrowing their payloads.

use super::{
    is_valid_piece_size, num_pieces, CloseCode, DenyReason, ProtoError, RejectReason, CV_LEN,
    MAX_ADDR_LEN, MAX_BITFIELD_FRAME_LEN, MAX_CAPABILITY_LEN, MAX_CONTENT_LEN,
    MAX_CONTROL_FRAME_LEN, MAX_FRAME_LEN, MAX_OUTBOARD_CVS, MAX_OUTBOARD_FRAME_LEN,
    MAX_PEER_ID_LEN, MAX_PEX_ADDED, MAX_PEX_ADDRS, MAX_PEX_DROPPED, MAX_PEX_FRAME_LEN, MAX_PIECES,
    MAX_PIECE_SIZE, MAX_TEXT_LEN, PROTOCOL_VERSION,
};
use crate::id::ContentId;

/// The message type byte that follows a frame's length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    Hello = 0x00,
    Deny = 0x01,
    Bitfield = 0x02,
    HaveAll = 0x03,
    HaveNone = 0x04,
    Have = 0x05,
    Interested = 0x06,
    NotInterested = 0x07,
    Choke = 0x08,
    Unchoke = 0x09,
    Request = 0x0a,
    Cancel = 0x0b,
    Piece = 0x0c,
    Reject = 0x0d,
    OutboardRequest = 0x0e,
    OutboardResponse = 0x0f,
    PeerExchange = 0x10,
    KeepAlive = 0x11,
    Close = 0x12,
    FileBitfield = 0x13,
    FileOutboardRequest = 0x14,
    FileOutboard = 0x15,
    PartRequest = 0x16,
    Part = 0x17,
    PartReject = 0x18,
    PartHave = 0x19,
}

impl MessageType {
    /// Every message type, in type-byte order.
    pub const ALL: [MessageType; 26] = [
        Self::Hello,
        Self::Deny,
        Self::Bitfield,
        Self::HaveAll,
        Self::HaveNone,
        Self::Have,
        Self::Interested,
        Self::NotInterested,
        Self::Choke,
        Self::Unchoke,
        Self::Request,
        Self::Cancel,
        Self::Piece,
        Self::Reject,
        Self::OutboardRequest,
        Self::OutboardResponse,
        Self::PeerExchange,
        Self::KeepAlive,
        Self::Close,
        Self::FileBitfield,
        Self::FileOutboardRequest,
        Self::FileOutboard,
        Self::PartRequest,
        Self::Part,
        Self::PartReject,
        Self::PartHave,
    ];

    /// The type for a type byte, `None` when unknown.
    pub fn from_u8(b: u8) -> Option<Self> {
        Self::ALL.get(usize::from(b)).copied()
    }

    /// The type byte.
    pub const fn to_u8(self) -> u8 {
        self as u8
    }

    /// The largest frame length (type byte + body) this type may have.
    pub const fn max_frame_len(self) -> usize {
        match self {
            Self::Piece | Self::Part => MAX_FRAME_LEN,
            Self::Bitfield | Self::FileBitfield => MAX_BITFIELD_FRAME_LEN,
            Self::OutboardResponse | Self::FileOutboard => MAX_OUTBOARD_FRAME_LEN,
            Self::PeerExchange => MAX_PEX_FRAME_LEN,
            _ => MAX_CONTROL_FRAME_LEN,
        }
    }

    /// The message's name as the spec writes it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Hello => "Hello",
            Self::Deny => "Deny",
            Self::Bitfield => "Bitfield",
            Self::HaveAll => "HaveAll",
            Self::HaveNone => "HaveNone",
            Self::Have => "Have",
            Self::Interested => "Interested",
            Self::NotInterested => "NotInterested",
            Self::Choke => "Choke",
            Self::Unchoke => "Unchoke",
            Self::Request => "Request",
            Self::Cancel => "Cancel",
            Self::Piece => "Piece",
            Self::Reject => "Reject",
            Self::OutboardRequest => "OutboardRequest",
            Self::OutboardResponse => "OutboardResponse",
            Self::PeerExchange => "PeerExchange",
            Self::KeepAlive => "KeepAlive",
            Self::Close => "Close",
            Self::FileBitfield => "FileBitfield",
            Self::FileOutboardRequest => "FileOutboardRequest",
            Self::FileOutboard => "FileOutboard",
            Self::PartRequest => "PartRequest",
            Self::Part => "Part",
            Self::PartReject => "PartReject",
            Self::PartHave => "PartHave",
        }
    }
}

/// The first message each side sends: which content this stream transfers, and how it
/// is cut into pieces.
///
/// The initiator's hello MAY leave `piece_size` and `content_len` unknown (it learns
/// them from the reply); the responder's hello MUST carry both (see
/// [`Hello::check_reply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello<'a> {
    /// Always [`PROTOCOL_VERSION`] when decoded (another version is an error).
    pub version: u8,
    /// The content this stream transfers (a file's id or a collection's manifest id).
    pub content: ContentId,
    /// A power of two in `MIN_PIECE_SIZE..=MAX_PIECE_SIZE`, or unknown.
    pub piece_size: Option<u32>,
    /// At most [`MAX_CONTENT_LEN`], or unknown.
    pub content_len: Option<u64>,
    /// An opaque capability (at most [`MAX_CAPABILITY_LEN`] bytes); empty when none.
    pub capability: &'a [u8],
}

impl<'a> Hello<'a> {
    /// A version-[`PROTOCOL_VERSION`] hello with no layout and no capability.
    pub fn new(content: ContentId) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            content,
            piece_size: None,
            content_len: None,
            capability: &[],
        }
    }

    /// The number of pieces, when both the piece size and the length are known.
    pub fn num_pieces(&self) -> Option<u32> {
        let n = num_pieces(self.content_len?, self.piece_size?);
        u32::try_from(n).ok()
    }

    /// Checks the responder's hello `self` against the initiator's hello `sent`: same
    /// version and content, piece size and length present and equal to those `sent`
    /// carried (when it carried them), no capability. Returns `(piece_size,
    /// content_len, num_pieces)`.
    pub fn check_reply(&self, sent: &Hello<'_>) -> Result<(u32, u64, u32), ProtoError> {
        if self.version != sent.version {
            return Err(ProtoError::HelloMismatch("different protocol version"));
        }
        if self.content != sent.content {
            return Err(ProtoError::HelloMismatch("different content id"));
        }
        let (Some(piece_size), Some(len)) = (self.piece_size, self.content_len) else {
            return Err(ProtoError::HelloMismatch(
                "the responder's hello lacks the piece size or the content length",
            ));
        };
        if sent.piece_size.is_some_and(|p| p != piece_size) {
            return Err(ProtoError::HelloMismatch("different piece size"));
        }
        if sent.content_len.is_some_and(|l| l != len) {
            return Err(ProtoError::HelloMismatch("different content length"));
        }
        if !self.capability.is_empty() {
            return Err(ProtoError::HelloMismatch(
                "the responder's hello carries a capability",
            ));
        }
        // The codec already bounded the layout to MAX_PIECES pieces.
        let n = self.num_pieces().ok_or(ProtoError::HelloMismatch(
            "the responder's layout has too many pieces",
        ))?;
        Ok((piece_size, len, n))
    }

    fn validate(&self) -> Result<(), ProtoError> {
        const MSG: &str = "Hello";
        if self.version != PROTOCOL_VERSION {
            return Err(ProtoError::UnsupportedVersion(self.version));
        }
        if let Some(p) = self.piece_size {
            if !is_valid_piece_size(p) {
                return Err(invalid(MSG, "piece size is not a power of two in range"));
            }
        }
        if let Some(len) = self.content_len {
            if len > MAX_CONTENT_LEN {
                return Err(invalid(MSG, "content length over the limit"));
            }
        }
        if let (Some(len), Some(p)) = (self.content_len, self.piece_size) {
            if num_pieces(len, p) > u64::from(MAX_PIECES) {
                return Err(invalid(MSG, "more pieces than the limit"));
            }
        }
        if self.capability.len() > MAX_CAPABILITY_LEN {
            return Err(invalid(MSG, "capability over the limit"));
        }
        Ok(())
    }
}

/// One peer offered in a `PeerExchange`: its peer id and addresses, as bytes
/// (a libp2p `PeerId`'s binary form and binary multiaddrs). The codec bounds the sizes;
/// the receiver parses them and ignores entries that do not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PexPeer<'a> {
    /// 1 to [`MAX_PEER_ID_LEN`] bytes.
    pub peer: &'a [u8],
    /// At most [`MAX_PEX_ADDRS`] addresses of 1 to [`MAX_ADDR_LEN`] bytes.
    pub addrs: Vec<&'a [u8]>,
}

impl PexPeer<'_> {
    /// The peer id and the addresses that parse (as the spec requires, an entry whose
    /// peer id does not parse is ignored: `None`; addresses that do not parse are
    /// dropped).
    pub fn parse(&self) -> Option<(libp2p_identity::PeerId, Vec<multiaddr::Multiaddr>)> {
        let peer = libp2p_identity::PeerId::from_bytes(self.peer).ok()?;
        let addrs = self
            .addrs
            .iter()
            .filter_map(|a| multiaddr::Multiaddr::try_from(a.to_vec()).ok())
            .collect();
        Some((peer, addrs))
    }
}

/// One message of the transfer protocol. Byte fields borrow from the decoded buffer.
///
/// Every value that [`super::encode`] accepts decodes back to an equal value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// The first message each side sends (the responder only when it accepts).
    Hello(Hello<'a>),
    /// The responder's refusal, instead of its hello; it then closes the stream.
    Deny {
        reason: DenyReason,
        /// UTF-8, at most [`MAX_TEXT_LEN`] bytes, for logs and users.
        text: &'a str,
    },
    /// The pieces the sender has: `num_pieces` bits, most significant bit of byte 0
    /// is piece 0, spare bits of the last byte zero. Only as the first message after
    /// the sender's hello.
    Bitfield {
        /// At most [`MAX_PIECES`].
        num_pieces: u32,
        /// Exactly `num_pieces.div_ceil(8)` bytes.
        bits: &'a [u8],
    },
    /// The sender has every piece. Only as the first message after its hello.
    HaveAll,
    /// The sender has no piece. Only as the first message after its hello.
    HaveNone,
    /// The sender has just verified `piece`.
    Have {
        piece: u32,
    },
    Interested,
    NotInterested,
    Choke,
    Unchoke,
    /// Asks for a whole piece.
    Request {
        piece: u32,
    },
    /// Withdraws a request; it is still answered (by `Piece` or `Reject`).
    Cancel {
        piece: u32,
    },
    /// A whole piece, answering a request. `data` is 1 to [`MAX_PIECE_SIZE`] bytes.
    Piece {
        piece: u32,
        data: &'a [u8],
    },
    /// Answers a request without data.
    Reject {
        piece: u32,
        reason: RejectReason,
    },
    /// Asks for the chaining values of pieces `first..first + count`; `count` is 1 to
    /// [`MAX_OUTBOARD_CVS`].
    OutboardRequest {
        first: u32,
        count: u32,
    },
    /// Chaining values of pieces `first..`, 32 bytes each (at most
    /// [`MAX_OUTBOARD_CVS`]); empty when the sender does not have them.
    OutboardResponse {
        first: u32,
        cvs: &'a [u8],
    },
    /// Other peers of this content the sender knows of, and ones it lost.
    PeerExchange {
        /// At most [`MAX_PEX_ADDED`].
        added: Vec<PexPeer<'a>>,
        /// Peer ids, at most [`MAX_PEX_DROPPED`].
        dropped: Vec<&'a [u8]>,
    },
    KeepAlive,
    /// The files of a collection the sender has, one bit per manifest entry
    /// (as `Bitfield` encodes pieces). Only as the first message after the
    /// sender's hello, and it makes the stream a folder session
    /// (`docs/protocol.md` §6.5): `Have`, `Request`, `Cancel`, `Piece` and
    /// `Reject` then name files by manifest index, and a `Piece` carries a
    /// whole file of at most [`super::MAX_WHOLE_FILE`] bytes.
    FileBitfield {
        /// The manifest's number of entries, at most [`MAX_PIECES`].
        num_files: u32,
        /// Exactly `num_files.div_ceil(8)` bytes.
        bits: &'a [u8],
    },
    /// Folder sessions only (§6.5): asks for the outboard of a larger file
    /// (one the session carries piece by piece), by manifest index.
    FileOutboardRequest {
        file: u32,
    },
    /// The piece chaining values of `file`, 32 bytes each, exactly its piece
    /// count (at most [`MAX_OUTBOARD_CVS`]); empty when the sender does not
    /// have the file.
    FileOutboard {
        file: u32,
        cvs: &'a [u8],
    },
    /// Folder sessions only: asks for piece `piece` of larger file `file`.
    PartRequest {
        file: u32,
        piece: u32,
    },
    /// Piece `piece` of larger file `file`, answering a `PartRequest`; 1 to
    /// [`MAX_PIECE_SIZE`] bytes.
    Part {
        file: u32,
        piece: u32,
        data: &'a [u8],
    },
    /// Answers a `PartRequest` without data.
    PartReject {
        file: u32,
        piece: u32,
        reason: RejectReason,
    },
    /// Folder sessions only: the sender has verified and stored piece
    /// `piece` of larger file `file`, which it does not have complete yet.
    PartHave {
        file: u32,
        piece: u32,
    },
    /// The sender closes the connection; nothing follows.
    Close {
        code: CloseCode,
        /// UTF-8, at most [`MAX_TEXT_LEN`] bytes.
        text: &'a str,
    },
}

fn invalid(msg: &'static str, why: &'static str) -> ProtoError {
    ProtoError::Invalid { msg, why }
}

pub(super) fn check_piece_index(piece: u64) -> Result<u32, ProtoError> {
    match u32::try_from(piece) {
        Ok(p) if p < MAX_PIECES => Ok(p),
        _ => Err(ProtoError::PieceIndexTooLarge {
            piece,
            max: MAX_PIECES,
        }),
    }
}

pub(super) fn check_bitfield(num_pieces: u32, bits: &[u8]) -> Result<(), ProtoError> {
    if num_pieces > MAX_PIECES {
        return Err(ProtoError::BadBitfield(
            "more pieces than the protocol allows",
        ));
    }
    if bits.len() != (num_pieces as usize).div_ceil(8) {
        return Err(ProtoError::BadBitfield(
            "its byte length does not match its piece count",
        ));
    }
    let spare = (8 - num_pieces % 8) % 8;
    if let Some(last) = bits.last() {
        // Spare bits are the low bits of the last byte (bits are MSB first).
        if spare > 0 && last & ((1u8 << spare) - 1) != 0 {
            return Err(ProtoError::BadBitfield("spare bits are set"));
        }
    }
    Ok(())
}

pub(super) fn check_outboard_range(first: u32, count: u64) -> Result<(), ProtoError> {
    if count > u64::from(MAX_OUTBOARD_CVS) {
        return Err(invalid("Outboard", "more chaining values than the limit"));
    }
    if u64::from(first) + count > u64::from(MAX_PIECES) {
        return Err(ProtoError::PieceIndexTooLarge {
            piece: u64::from(first) + count,
            max: MAX_PIECES,
        });
    }
    Ok(())
}

pub(super) fn check_file_outboard(cvs: &[u8]) -> Result<(), ProtoError> {
    if !cvs.len().is_multiple_of(CV_LEN) {
        return Err(invalid(
            "FileOutboard",
            "not a whole number of 32-byte chaining values",
        ));
    }
    if cvs.len() / CV_LEN > MAX_OUTBOARD_CVS as usize {
        return Err(invalid(
            "FileOutboard",
            "more chaining values than the limit",
        ));
    }
    Ok(())
}

fn check_text(msg: &'static str, text: &str) -> Result<(), ProtoError> {
    if text.len() > MAX_TEXT_LEN {
        return Err(invalid(msg, "text over the limit"));
    }
    Ok(())
}

impl Message<'_> {
    /// The message's type.
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::Hello(_) => MessageType::Hello,
            Self::Deny { .. } => MessageType::Deny,
            Self::Bitfield { .. } => MessageType::Bitfield,
            Self::HaveAll => MessageType::HaveAll,
            Self::HaveNone => MessageType::HaveNone,
            Self::Have { .. } => MessageType::Have,
            Self::Interested => MessageType::Interested,
            Self::NotInterested => MessageType::NotInterested,
            Self::Choke => MessageType::Choke,
            Self::Unchoke => MessageType::Unchoke,
            Self::Request { .. } => MessageType::Request,
            Self::Cancel { .. } => MessageType::Cancel,
            Self::Piece { .. } => MessageType::Piece,
            Self::Reject { .. } => MessageType::Reject,
            Self::OutboardRequest { .. } => MessageType::OutboardRequest,
            Self::OutboardResponse { .. } => MessageType::OutboardResponse,
            Self::PeerExchange { .. } => MessageType::PeerExchange,
            Self::KeepAlive => MessageType::KeepAlive,
            Self::Close { .. } => MessageType::Close,
            Self::FileBitfield { .. } => MessageType::FileBitfield,
            Self::FileOutboardRequest { .. } => MessageType::FileOutboardRequest,
            Self::FileOutboard { .. } => MessageType::FileOutboard,
            Self::PartRequest { .. } => MessageType::PartRequest,
            Self::Part { .. } => MessageType::Part,
            Self::PartReject { .. } => MessageType::PartReject,
            Self::PartHave { .. } => MessageType::PartHave,
        }
    }

    /// The piece index a piece-level message refers to.
    pub fn piece(&self) -> Option<u32> {
        match self {
            Self::Have { piece }
            | Self::Request { piece }
            | Self::Cancel { piece }
            | Self::Piece { piece, .. }
            | Self::Reject { piece, .. } => Some(*piece),
            _ => None,
        }
    }

    /// Checks every limit the decoder checks, so that what is encoded decodes.
    pub fn validate(&self) -> Result<(), ProtoError> {
        match self {
            Self::Hello(h) => h.validate(),
            Self::Deny { text, .. } => check_text("Deny", text),
            Self::Close { text, .. } => check_text("Close", text),
            Self::Bitfield { num_pieces, bits } => check_bitfield(*num_pieces, bits),
            Self::FileBitfield { num_files, bits } => check_bitfield(*num_files, bits),
            Self::HaveAll
            | Self::HaveNone
            | Self::Interested
            | Self::NotInterested
            | Self::Choke
            | Self::Unchoke
            | Self::KeepAlive => Ok(()),
            Self::Have { piece }
            | Self::Request { piece }
            | Self::Cancel { piece }
            | Self::Reject { piece, .. } => check_piece_index(u64::from(*piece)).map(|_| ()),
            Self::Piece { piece, data } => {
                check_piece_index(u64::from(*piece))?;
                check_piece_data(data.len())
            }
            Self::FileOutboardRequest { file } => check_piece_index(u64::from(*file)).map(|_| ()),
            Self::FileOutboard { file, cvs } => {
                check_piece_index(u64::from(*file))?;
                check_file_outboard(cvs)
            }
            Self::PartRequest { file, piece }
            | Self::PartReject { file, piece, .. }
            | Self::PartHave { file, piece } => {
                check_piece_index(u64::from(*file))?;
                check_piece_index(u64::from(*piece)).map(|_| ())
            }
            Self::Part { file, piece, data } => {
                check_piece_index(u64::from(*file))?;
                check_piece_index(u64::from(*piece))?;
                check_piece_data(data.len())
            }
            Self::OutboardRequest { first, count } => {
                if *count == 0 {
                    return Err(invalid("OutboardRequest", "count is zero"));
                }
                check_outboard_range(*first, u64::from(*count))
            }
            Self::OutboardResponse { first, cvs } => {
                if cvs.len() % CV_LEN != 0 {
                    return Err(invalid(
                        "OutboardResponse",
                        "not a whole number of 32-byte chaining values",
                    ));
                }
                check_outboard_range(*first, (cvs.len() / CV_LEN) as u64)
            }
            Self::PeerExchange { added, dropped } => {
                const MSG: &str = "PeerExchange";
                if added.len() > MAX_PEX_ADDED || dropped.len() > MAX_PEX_DROPPED {
                    return Err(invalid(MSG, "too many peers"));
                }
                let id_ok = |p: &[u8]| !p.is_empty() && p.len() <= MAX_PEER_ID_LEN;
                for p in added {
                    if !id_ok(p.peer) {
                        return Err(invalid(MSG, "peer id empty or over the limit"));
                    }
                    if p.addrs.len() > MAX_PEX_ADDRS {
                        return Err(invalid(MSG, "too many addresses for one peer"));
                    }
                    if p.addrs
                        .iter()
                        .any(|a| a.is_empty() || a.len() > MAX_ADDR_LEN)
                    {
                        return Err(invalid(MSG, "address empty or over the limit"));
                    }
                }
                if !dropped.iter().all(|p| id_ok(p)) {
                    return Err(invalid(MSG, "peer id empty or over the limit"));
                }
                Ok(())
            }
        }
    }
}

pub(super) fn check_piece_data(len: usize) -> Result<(), ProtoError> {
    if len == 0 || len > MAX_PIECE_SIZE as usize {
        return Err(ProtoError::PieceDataSize {
            len: len as u64,
            max: MAX_PIECE_SIZE,
        });
    }
    Ok(())
}
