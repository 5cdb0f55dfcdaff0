//! Protocol errors, each mapped to the close code the spec prescribes.

use super::{CloseCode, DenyReason, PROTOCOL_VERSION};
use crate::wire::WireError;

/// A violation of the transfer protocol by the peer (or, from the encoder, a message
/// this side must not send). [`ProtoError::close_code`] gives the code to close with.
///
/// The codec produces the variants up to [`ProtoError::BadBitfield`] and
/// [`ProtoError::PieceIndexTooLarge`]; the rest describe rules that need the
/// connection's state and are raised by the connection driver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("frame length {len} is over the {max}-byte limit for {what}")]
    FrameTooLarge {
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("empty frame: a frame holds at least its message type byte")]
    EmptyFrame,
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    #[error("malformed {msg} message: {source}")]
    Malformed {
        msg: &'static str,
        #[source]
        source: WireError,
    },
    #[error("invalid {msg} message: {why}")]
    Invalid {
        msg: &'static str,
        why: &'static str,
    },
    #[error("not a shoal transfer stream: the hello starts with {0:02x?}, not \"SHXF\"")]
    BadMagic([u8; 4]),
    #[error(
        "the peer speaks transfer protocol version {0}, this shoal speaks version \
         {PROTOCOL_VERSION}; one of the two needs an upgrade"
    )]
    UnsupportedVersion(u8),
    #[error("bad bitfield: {0}")]
    BadBitfield(&'static str),
    #[error("piece index {piece} is beyond the protocol's limit of {max} pieces")]
    PieceIndexTooLarge { piece: u64, max: u32 },
    #[error("piece data of {len} bytes: a piece has 1 to {max} bytes")]
    PieceDataSize { len: u64, max: u32 },

    #[error("{msg} is not allowed {when}")]
    Unexpected {
        msg: &'static str,
        when: &'static str,
    },
    #[error("the peer's hello does not match ours: {0}")]
    HelloMismatch(&'static str),
    #[error("piece {piece} is out of range: the content has {num_pieces} pieces")]
    PieceOutOfRange { piece: u64, num_pieces: u32 },
    #[error("piece {piece} has {len} bytes, expected {expected}")]
    WrongPieceLength { piece: u32, len: u64, expected: u64 },
    #[error("{msg} for piece {piece}, which has no outstanding request")]
    Unrequested { msg: &'static str, piece: u32 },
    #[error("a second request for piece {piece} while the first is outstanding")]
    DuplicateRequest { piece: u32 },
    #[error("more than {max} outstanding {what}")]
    TooManyRequests { what: &'static str, max: u32 },
    #[error("nothing received for {secs} s")]
    Timeout { secs: u64 },
}

impl ProtoError {
    /// The code a peer closes the connection with on this violation (spec §
    /// "Violations").
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::FrameTooLarge { .. } => CloseCode::FrameTooLarge,
            Self::EmptyFrame | Self::Malformed { .. } | Self::Invalid { .. } => {
                CloseCode::MalformedMessage
            }
            Self::UnknownType(_) => CloseCode::UnknownMessage,
            Self::BadMagic(_) | Self::HelloMismatch(_) => CloseCode::BadHello,
            Self::UnsupportedVersion(_) => CloseCode::VersionUnsupported,
            Self::BadBitfield(_) => CloseCode::BadBitfield,
            Self::PieceIndexTooLarge { .. } | Self::PieceOutOfRange { .. } => {
                CloseCode::PieceOutOfRange
            }
            Self::PieceDataSize { .. } | Self::WrongPieceLength { .. } => {
                CloseCode::WrongPieceLength
            }
            Self::Unexpected { .. } => CloseCode::UnexpectedMessage,
            Self::Unrequested { .. } => CloseCode::UnrequestedPiece,
            Self::TooManyRequests { .. } => CloseCode::TooManyRequests,
            Self::DuplicateRequest { .. } => CloseCode::ProtocolViolation,
            Self::Timeout { .. } => CloseCode::Timeout,
        }
    }

    /// For an error in the peer's *first* frame, which a responder answers with `Deny`
    /// instead of `Close`: the reason to deny with.
    pub fn deny_reason(&self) -> DenyReason {
        match self {
            Self::UnsupportedVersion(_) => DenyReason::VersionUnsupported,
            _ => DenyReason::BadHello,
        }
    }
}
