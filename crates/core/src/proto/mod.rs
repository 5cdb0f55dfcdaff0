//! The transfer protocol: messages, limits, and their codec.
//!
//! `docs/protocol.md` is the normative specification; this module implements its
//! framing and message encodings, and every constant here appears there with the
//! same value. The codec is stateless: it checks everything a single frame can
//! violate (sizes, encodings, absolute ranges). Rules that need the connection's
//! state (ordering, outstanding requests, the content's piece count) belong to the
//! connection driver, which reports them with the same [`ProtoError`] variants so
//! every violation maps to one [`CloseCode`].
//!
//! Frames: a 4-byte big-endian length `L`, then `L` bytes: a message type byte and
//! the message body. [`decode_frame`] rejects a length over [`MAX_FRAME_LEN`] as soon
//! as the 4 length bytes are seen, and a length over the type's own limit as soon as
//! the type byte is seen, so a peer can never make us buffer more than one frame of
//! the size its type allows.
//!
//! Decoding never copies payloads: [`Message`] borrows piece data, bitfield bytes,
//! outboard chaining values, text and capability bytes from the input buffer.

mod bitfield;
mod codec;
mod codes;
mod error;
mod folder;
mod message;
mod state;

use std::time::Duration;

pub use bitfield::Bitfield;
pub use codec::{
    decode_frame, decode_header, decode_message, decode_piece_prefix, encode, encode_part_header,
    encode_piece_header, FrameHeader, PiecePrefix,
};
pub use codes::{CloseCode, DenyReason, RejectReason};
pub use error::ProtoError;
pub use folder::{is_part_file, is_whole_file, part_layout, FolderState};
pub use message::{Hello, Message, MessageType, PexPeer};
pub use state::{ConnectionState, Layout, Received, Role};

/// The libp2p protocol id of the transfer protocol (version 1).
pub const PROTOCOL_ID: &str = "/shoal/xfer/1";
/// The TLS ALPN identifier of the direct TCP + TLS 1.3 fast path (version 1).
pub const ALPN: &[u8] = b"shoal-xfer/1";
/// The protocol version carried in [`Hello`]; it matches the `/1` of [`PROTOCOL_ID`].
pub const PROTOCOL_VERSION: u8 = 1;
/// The first bytes of every [`Hello`] body: "SHXF" (shoal transfer).
pub const HELLO_MAGIC: [u8; 4] = *b"SHXF";

/// Smallest allowed piece size (one BLAKE3 chunk).
pub const MIN_PIECE_SIZE: u32 = 1024;
/// Largest allowed piece size: 4 MiB.
pub const MAX_PIECE_SIZE: u32 = 4 * 1024 * 1024;
/// The piece size of any content up to `DEFAULT_PIECE_SIZE * SMALL_TARGET_PIECES`
/// (256 MiB); the smallest piece size [`default_piece_size`] gives.
pub const DEFAULT_PIECE_SIZE: u32 = 256 * 1024;
/// The default piece-size rule first grows the piece size, up to [`LARGE_PIECE_SIZE`],
/// to keep the piece count at or below this.
pub const SMALL_TARGET_PIECES: u64 = 1 << 10;
/// The piece size of any content from 512 MiB to `LARGE_PIECE_SIZE * TARGET_PIECES`
/// (64 GiB).
pub const LARGE_PIECE_SIZE: u32 = 1024 * 1024;
/// Beyond [`LARGE_PIECE_SIZE`], the default piece-size rule grows the piece size (up
/// to [`MAX_PIECE_SIZE`]) to keep the piece count at or below this.
pub const TARGET_PIECES: u64 = 1 << 16;
/// Largest allowed number of pieces of one content.
pub const MAX_PIECES: u32 = 1 << 20;
/// Largest content the protocol can describe: `MAX_PIECES * MAX_PIECE_SIZE` (4 TiB).
pub const MAX_CONTENT_LEN: u64 = MAX_PIECES as u64 * MAX_PIECE_SIZE as u64;
/// Length of a BLAKE3 chaining value in an outboard.
pub const CV_LEN: usize = 32;

/// Largest capability carried in a [`Hello`].
pub const MAX_CAPABILITY_LEN: usize = 1024;
/// Largest UTF-8 text in `Deny` and `Close`, in bytes.
pub const MAX_TEXT_LEN: usize = 256;
/// Most chaining values in one `OutboardRequest` / `OutboardResponse`.
pub const MAX_OUTBOARD_CVS: u32 = 2048;
/// Most peers in the `added` list of one `PeerExchange`.
pub const MAX_PEX_ADDED: usize = 32;
/// Most peer ids in the `dropped` list of one `PeerExchange`.
pub const MAX_PEX_DROPPED: usize = 32;
/// Largest peer id (a libp2p `PeerId` in its binary multihash form).
pub const MAX_PEER_ID_LEN: usize = 64;
/// Most addresses given for one peer in a `PeerExchange`.
pub const MAX_PEX_ADDRS: usize = 4;
/// Largest address (a binary multiaddr) in a `PeerExchange`.
pub const MAX_ADDR_LEN: usize = 128;

/// Bytes of the frame length prefix.
pub const LEN_PREFIX: usize = 4;
/// Largest frame length (the value of the prefix: type byte + body) of any frame; only
/// `Piece` frames may be this large. Checked as soon as the prefix is read.
pub const MAX_FRAME_LEN: usize = MAX_PIECE_SIZE as usize + 16;
/// Largest frame length of every message without its own limit below.
pub const MAX_CONTROL_FRAME_LEN: usize = 2048;
/// Largest frame length of a `Bitfield` (a bitfield of [`MAX_PIECES`] bits plus header).
pub const MAX_BITFIELD_FRAME_LEN: usize = MAX_PIECES as usize / 8 + 16;
/// Largest frame length of an `OutboardResponse` ([`MAX_OUTBOARD_CVS`] CVs plus header).
pub const MAX_OUTBOARD_FRAME_LEN: usize = MAX_OUTBOARD_CVS as usize * CV_LEN + 16;
/// Largest frame length of a `PeerExchange`.
pub const MAX_PEX_FRAME_LEN: usize = 32 * 1024;
/// Bytes of buffer [`encode_piece_header`] needs: length prefix, type, piece index
/// (a varint below [`MAX_PIECES`] takes at most 3 bytes).
pub const PIECE_HEADER_MAX: usize = LEN_PREFIX + 1 + 3;

/// Requests (`Request` not yet answered by `Piece` or `Reject`) a peer may have
/// outstanding with another; a receiver MUST accept this many and closes with
/// [`CloseCode::TooManyRequests`] beyond it.
pub const MAX_OUTSTANDING_REQUESTS: u32 = 128;
/// The largest file a folder session carries whole, in one `Piece` (§6.5).
pub const MAX_WHOLE_FILE: u32 = 1024 * 1024;
/// The largest file a folder session carries piece by piece, in `Part`s
/// (§6.5); larger files are fetched in sessions of their own.
pub const MAX_PART_FILE: u64 = 64 * 1024 * 1024;
/// Requests (of whole files, outboards and parts together) one side of a
/// folder session may have outstanding (§6.5); a
/// receiver MUST accept this many and closes with
/// [`CloseCode::TooManyRequests`] beyond it.
pub const MAX_OUTSTANDING_FILE_REQUESTS: u32 = 64;
/// Unanswered `OutboardRequest`s a peer may have outstanding with another.
pub const MAX_OUTSTANDING_OUTBOARD_REQUESTS: u32 = 8;
/// Send a `KeepAlive` when nothing was sent for this long.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Close with [`CloseCode::Timeout`] when nothing was received for this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Close with [`CloseCode::Timeout`] when the peer's `Hello` (or `Deny`) has not
/// arrived this long after the stream opened.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The number of pieces of `content_len` bytes cut at `piece_size` (0 for empty
/// content; the last piece may be short). `piece_size` 0 gives 0.
pub const fn num_pieces(content_len: u64, piece_size: u32) -> u64 {
    if piece_size == 0 {
        return 0;
    }
    content_len.div_ceil(piece_size as u64)
}

/// The normative default piece size for `content_len` bytes: start at
/// [`DEFAULT_PIECE_SIZE`]; double it while the piece count is above
/// [`SMALL_TARGET_PIECES`] and the size below [`LARGE_PIECE_SIZE`]; then double it
/// while the count is above [`TARGET_PIECES`] and the size below [`MAX_PIECE_SIZE`].
/// So 256 KiB up to 256 MiB, 512 KiB up to 512 MiB, 1 MiB up to 64 GiB, 2 MiB up to
/// 128 GiB and 4 MiB beyond. `None` when the content is larger than
/// [`MAX_CONTENT_LEN`].
///
/// Why two steps: every piece costs a request, a frame header, a scheduling decision
/// and a hand-off to the thread that verifies it, so a 1 GiB content moves with a
/// fifth less CPU on each side in 1 MiB pieces than in 256 KiB ones
/// (docs/benchmarks.md, "Transfer"); a thousand pieces still leave rarest-first plenty
/// to choose from, and pieces of at most 1 MiB up to 64 GiB keep the memory a piece in
/// flight takes small.
pub const fn default_piece_size(content_len: u64) -> Option<u32> {
    if content_len > MAX_CONTENT_LEN {
        return None;
    }
    let mut size = DEFAULT_PIECE_SIZE;
    while size < LARGE_PIECE_SIZE && num_pieces(content_len, size) > SMALL_TARGET_PIECES {
        size *= 2;
    }
    while size < MAX_PIECE_SIZE && num_pieces(content_len, size) > TARGET_PIECES {
        size *= 2;
    }
    Some(size)
}

/// Whether `piece_size` is a valid piece size: a power of two in
/// [`MIN_PIECE_SIZE`]`..=`[`MAX_PIECE_SIZE`].
pub const fn is_valid_piece_size(piece_size: u32) -> bool {
    piece_size.is_power_of_two() && piece_size >= MIN_PIECE_SIZE && piece_size <= MAX_PIECE_SIZE
}

#[cfg(test)]
mod tests;
