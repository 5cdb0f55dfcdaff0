//! Framing: encoding messages into frames and decoding frames from a stream buffer.

use super::message::{check_bitfield, check_outboard_range, check_piece_data, check_piece_index};
use super::{
    num_pieces, CloseCode, DenyReason, Hello, Message, MessageType, PexPeer, ProtoError,
    RejectReason, CV_LEN, HELLO_MAGIC, LEN_PREFIX, MAX_ADDR_LEN, MAX_CAPABILITY_LEN,
    MAX_CONTENT_LEN, MAX_FRAME_LEN, MAX_OUTBOARD_CVS, MAX_PEER_ID_LEN, MAX_PEX_ADDED,
    MAX_PEX_ADDRS, MAX_PEX_DROPPED, MAX_PIECES, MAX_PIECE_SIZE, MAX_TEXT_LEN, MIN_PIECE_SIZE,
    PIECE_HEADER_MAX, PROTOCOL_VERSION,
};
use crate::id::ContentId;
use crate::wire::{varint_len, Reader, WireError};

/// Hello flag: a content length follows.
const FLAG_CONTENT_LEN: u8 = 0x01;

/// What the first bytes of a frame say: its type and its total size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: MessageType,
    /// The whole frame, length prefix included.
    pub frame_len: usize,
}

impl FrameHeader {
    /// Bytes of the header (length prefix and type byte); the body follows.
    pub const LEN: usize = LEN_PREFIX + 1;

    /// Bytes of the body.
    pub fn body_len(&self) -> usize {
        self.frame_len.saturating_sub(Self::LEN)
    }
}

/// Reads a frame header from the start of `buf`.
///
/// `Ok(None)` means more bytes are needed. An empty frame or a length over
/// [`MAX_FRAME_LEN`] is an error as soon as the 4 length bytes are in `buf`; an unknown
/// type, or a length over that type's own limit, as soon as the type byte is. A
/// driver reading from a socket can read [`FrameHeader::LEN`] bytes, call this, and
/// then read exactly [`FrameHeader::body_len`] bytes.
pub fn decode_header(buf: &[u8]) -> Result<Option<FrameHeader>, ProtoError> {
    let Some(prefix) = buf.first_chunk::<LEN_PREFIX>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len == 0 {
        return Err(ProtoError::EmptyFrame);
    }
    if len > MAX_FRAME_LEN {
        return Err(ProtoError::FrameTooLarge {
            what: "any frame",
            len: len as u64,
            max: MAX_FRAME_LEN as u64,
        });
    }
    let Some(&ty) = buf.get(LEN_PREFIX) else {
        return Ok(None);
    };
    let kind = MessageType::from_u8(ty).ok_or(ProtoError::UnknownType(ty))?;
    let max = kind.max_frame_len();
    if len > max {
        return Err(ProtoError::FrameTooLarge {
            what: kind.name(),
            len: len as u64,
            max: max as u64,
        });
    }
    Ok(Some(FrameHeader {
        kind,
        frame_len: LEN_PREFIX + len,
    }))
}

/// Decodes one frame from the start of `buf`.
///
/// Returns the message and the number of bytes it took, or `Ok(None)` when `buf`
/// holds only part of a frame (then read more and call again with the longer
/// buffer). Rejects oversized lengths before the body arrives (see
/// [`decode_header`]). Never panics, never copies piece data, and allocates only the
/// small bounded lists of a `PeerExchange`.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Message<'_>, usize)>, ProtoError> {
    let Some(header) = decode_header(buf)? else {
        return Ok(None);
    };
    let Some(frame) = buf.get(..header.frame_len) else {
        return Ok(None);
    };
    let body = &frame[FrameHeader::LEN..];
    Ok(Some((decode_message(header.kind, body)?, header.frame_len)))
}

/// The start of a `Piece` frame: its index and where its data begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PiecePrefix {
    pub piece: u32,
    /// Offset of the data from the start of the frame (length prefix included).
    pub data_offset: usize,
    /// Bytes of data (the frame's length minus the prefix and index).
    pub data_len: usize,
}

/// Decodes the start of a `Piece` frame at the start of `buf` as soon as the
/// piece index is in it, so a reader can put the data straight where it
/// belongs instead of buffering the whole frame. Checks what
/// [`decode_frame`] would check of a `Piece` (frame size, index, data size);
/// the data itself is checked by [`ConnectionState`](super::ConnectionState)
/// when it has arrived. `Ok(None)`: more bytes are needed. A frame of another
/// type is an error (call this only after [`decode_header`] said `Piece`).
pub fn decode_piece_prefix(buf: &[u8]) -> Result<Option<PiecePrefix>, ProtoError> {
    let Some(header) = decode_header(buf)? else {
        return Ok(None);
    };
    if header.kind != MessageType::Piece {
        return Err(ProtoError::Unexpected {
            msg: header.kind.name(),
            when: "where a Piece was expected",
        });
    }
    let end = buf.len().min(header.frame_len);
    let body = &buf[FrameHeader::LEN..end];
    let mut r = Reader::new(body);
    let piece = match read_piece(&mut r, "Piece") {
        // The index is cut short by what has arrived, not by the frame: wait.
        Err(ProtoError::Malformed {
            source: WireError::Truncated { .. },
            ..
        }) if end < header.frame_len => return Ok(None),
        res => res?,
    };
    let data_offset = FrameHeader::LEN + (body.len() - r.remaining());
    let data_len = header.frame_len - data_offset;
    check_piece_data(data_len)?;
    Ok(Some(PiecePrefix {
        piece,
        data_offset,
        data_len,
    }))
}

fn malformed(msg: &'static str) -> impl Fn(WireError) -> ProtoError {
    move |source| ProtoError::Malformed { msg, source }
}

/// Decodes the body of a message of type `kind` (the bytes after the type byte).
pub fn decode_message(kind: MessageType, body: &[u8]) -> Result<Message<'_>, ProtoError> {
    let name = kind.name();
    let m = malformed(name);
    let mut r = Reader::new(body);
    let msg = match kind {
        MessageType::Hello => Message::Hello(decode_hello(&mut r)?),
        MessageType::Deny => Message::Deny {
            reason: DenyReason::from_u8(r.u8("deny reason").map_err(&m)?),
            text: r.str(MAX_TEXT_LEN, "deny text").map_err(&m)?,
        },
        MessageType::Close => Message::Close {
            code: CloseCode::from_u8(r.u8("close code").map_err(&m)?),
            text: r.str(MAX_TEXT_LEN, "close text").map_err(&m)?,
        },
        MessageType::Bitfield => {
            let n = r
                .varint_max(u64::from(MAX_PIECES), "bitfield piece count")
                .map_err(|_| ProtoError::BadBitfield("piece count malformed or over the limit"))?;
            // n <= MAX_PIECES, so it fits in u32.
            let num_pieces = n as u32;
            let bits = r.take(r.remaining(), "bitfield").map_err(&m)?;
            check_bitfield(num_pieces, bits)?;
            Message::Bitfield { num_pieces, bits }
        }
        MessageType::FileBitfield => {
            let n = r
                .varint_max(u64::from(MAX_PIECES), "file count")
                .map_err(|_| ProtoError::BadBitfield("file count malformed or over the limit"))?;
            // n <= MAX_PIECES, so it fits in u32.
            let num_files = n as u32;
            let bits = r.take(r.remaining(), "file bitfield").map_err(&m)?;
            check_bitfield(num_files, bits)?;
            Message::FileBitfield { num_files, bits }
        }
        MessageType::HaveAll => Message::HaveAll,
        MessageType::HaveNone => Message::HaveNone,
        MessageType::Interested => Message::Interested,
        MessageType::NotInterested => Message::NotInterested,
        MessageType::Choke => Message::Choke,
        MessageType::Unchoke => Message::Unchoke,
        MessageType::KeepAlive => Message::KeepAlive,
        MessageType::Have => Message::Have {
            piece: read_piece(&mut r, name)?,
        },
        MessageType::Request => Message::Request {
            piece: read_piece(&mut r, name)?,
        },
        MessageType::Cancel => Message::Cancel {
            piece: read_piece(&mut r, name)?,
        },
        MessageType::Reject => Message::Reject {
            piece: read_piece(&mut r, name)?,
            reason: RejectReason::from_u8(r.u8("reject reason").map_err(&m)?),
        },
        MessageType::Piece => {
            let piece = read_piece(&mut r, name)?;
            let data = r.take(r.remaining(), "piece data").map_err(&m)?;
            check_piece_data(data.len())?;
            Message::Piece { piece, data }
        }
        MessageType::OutboardRequest => {
            let first = read_u32(&mut r, "outboard first", name)?;
            let count = r
                .varint_max(u64::from(MAX_OUTBOARD_CVS), "outboard count")
                .map_err(&m)?;
            if count == 0 {
                return Err(ProtoError::Invalid {
                    msg: name,
                    why: "count is zero",
                });
            }
            check_outboard_range(first, count)?;
            Message::OutboardRequest {
                first,
                count: count as u32,
            }
        }
        MessageType::OutboardResponse => {
            let first = read_u32(&mut r, "outboard first", name)?;
            let cvs = r.take(r.remaining(), "chaining values").map_err(&m)?;
            if cvs.len() % CV_LEN != 0 {
                return Err(ProtoError::Invalid {
                    msg: name,
                    why: "not a whole number of 32-byte chaining values",
                });
            }
            check_outboard_range(first, (cvs.len() / CV_LEN) as u64)?;
            Message::OutboardResponse { first, cvs }
        }
        MessageType::PeerExchange => decode_pex(&mut r)?,
        MessageType::FileOutboardRequest => Message::FileOutboardRequest {
            file: read_piece(&mut r, name)?,
        },
        MessageType::FileOutboard => {
            let file = read_piece(&mut r, name)?;
            let cvs = r.take(r.remaining(), "chaining values").map_err(&m)?;
            super::message::check_file_outboard(cvs)?;
            Message::FileOutboard { file, cvs }
        }
        MessageType::PartRequest => Message::PartRequest {
            file: read_piece(&mut r, name)?,
            piece: read_piece(&mut r, name)?,
        },
        MessageType::PartHave => Message::PartHave {
            file: read_piece(&mut r, name)?,
            piece: read_piece(&mut r, name)?,
        },
        MessageType::PartReject => Message::PartReject {
            file: read_piece(&mut r, name)?,
            piece: read_piece(&mut r, name)?,
            reason: RejectReason::from_u8(r.u8("reject reason").map_err(&m)?),
        },
        MessageType::Part => {
            let file = read_piece(&mut r, name)?;
            let piece = read_piece(&mut r, name)?;
            let data = r.take(r.remaining(), "piece data").map_err(&m)?;
            check_piece_data(data.len())?;
            Message::Part { file, piece, data }
        }
    };
    r.finish().map_err(&m)?;
    Ok(msg)
}

fn read_u32(r: &mut Reader<'_>, what: &'static str, msg: &'static str) -> Result<u32, ProtoError> {
    let v = r.varint(what).map_err(malformed(msg))?;
    u32::try_from(v).map_err(|_| ProtoError::PieceIndexTooLarge {
        piece: v,
        max: MAX_PIECES,
    })
}

fn read_piece(r: &mut Reader<'_>, msg: &'static str) -> Result<u32, ProtoError> {
    let v = r.varint("piece index").map_err(malformed(msg))?;
    check_piece_index(v)
}

fn decode_hello<'a>(r: &mut Reader<'a>) -> Result<Hello<'a>, ProtoError> {
    let m = malformed("Hello");
    let magic = r.array::<4>("hello magic").map_err(&m)?;
    if magic != HELLO_MAGIC {
        return Err(ProtoError::BadMagic(magic));
    }
    // The version comes right after the magic in every version, so that an
    // unsupported one is reported as such rather than as a malformed body.
    let version = r.u8("protocol version").map_err(&m)?;
    if version != PROTOCOL_VERSION {
        return Err(ProtoError::UnsupportedVersion(version));
    }
    let content = ContentId::from_bytes(r.array::<32>("content id").map_err(&m)?);
    let log2 = r.u8("piece size").map_err(&m)?;
    let piece_size = match log2 {
        0 => None,
        l if (MIN_PIECE_SIZE.trailing_zeros()..=MAX_PIECE_SIZE.trailing_zeros())
            .contains(&u32::from(l)) =>
        {
            Some(1u32 << l)
        }
        _ => {
            return Err(ProtoError::Invalid {
                msg: "Hello",
                why: "piece size out of range",
            })
        }
    };
    let flags = r.u8("hello flags").map_err(&m)?;
    if flags & !FLAG_CONTENT_LEN != 0 {
        return Err(ProtoError::Invalid {
            msg: "Hello",
            why: "unknown flag bits set",
        });
    }
    let content_len = if flags & FLAG_CONTENT_LEN != 0 {
        Some(
            r.varint_max(MAX_CONTENT_LEN, "content length")
                .map_err(&m)?,
        )
    } else {
        None
    };
    let capability = r.bytes(MAX_CAPABILITY_LEN, "capability").map_err(&m)?;
    if let (Some(len), Some(p)) = (content_len, piece_size) {
        if num_pieces(len, p) > u64::from(MAX_PIECES) {
            return Err(ProtoError::Invalid {
                msg: "Hello",
                why: "more pieces than the limit",
            });
        }
    }
    Ok(Hello {
        version,
        content,
        piece_size,
        content_len,
        capability,
    })
}

fn decode_pex<'a>(r: &mut Reader<'a>) -> Result<Message<'a>, ProtoError> {
    let m = malformed("PeerExchange");
    let n_added = r
        .varint_max(MAX_PEX_ADDED as u64, "added peer count")
        .map_err(&m)? as usize;
    // Bounded by MAX_PEX_ADDED (and the frame limit bounds the bytes behind it).
    let mut added = Vec::with_capacity(n_added);
    for _ in 0..n_added {
        let peer = read_peer_id(r)?;
        let n_addrs = r
            .varint_max(MAX_PEX_ADDRS as u64, "address count")
            .map_err(&m)? as usize;
        let mut addrs = Vec::with_capacity(n_addrs);
        for _ in 0..n_addrs {
            let a = r.bytes(MAX_ADDR_LEN, "address").map_err(&m)?;
            if a.is_empty() {
                return Err(ProtoError::Invalid {
                    msg: "PeerExchange",
                    why: "empty address",
                });
            }
            addrs.push(a);
        }
        added.push(PexPeer { peer, addrs });
    }
    let n_dropped = r
        .varint_max(MAX_PEX_DROPPED as u64, "dropped peer count")
        .map_err(&m)? as usize;
    let mut dropped = Vec::with_capacity(n_dropped);
    for _ in 0..n_dropped {
        dropped.push(read_peer_id(r)?);
    }
    Ok(Message::PeerExchange { added, dropped })
}

fn read_peer_id<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], ProtoError> {
    let p = r
        .bytes(MAX_PEER_ID_LEN, "peer id")
        .map_err(malformed("PeerExchange"))?;
    if p.is_empty() {
        return Err(ProtoError::Invalid {
            msg: "PeerExchange",
            why: "empty peer id",
        });
    }
    Ok(p)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Appends one whole frame carrying `msg` to `out`, and returns its length.
///
/// Fails (leaving `out` unchanged) when `msg` breaks a limit the decoder enforces,
/// so every frame this writes decodes back to an equal message.
pub fn encode(msg: &Message<'_>, out: &mut Vec<u8>) -> Result<usize, ProtoError> {
    msg.validate()?;
    let start = out.len();
    out.extend_from_slice(&[0; LEN_PREFIX]);
    out.push(msg.message_type().to_u8());
    match msg {
        Message::Hello(h) => {
            out.extend_from_slice(&HELLO_MAGIC);
            out.push(h.version);
            out.extend_from_slice(h.content.as_bytes());
            out.push(h.piece_size.map_or(0, |p| p.trailing_zeros() as u8));
            match h.content_len {
                Some(len) => {
                    out.push(FLAG_CONTENT_LEN);
                    put_varint(out, len);
                }
                None => out.push(0),
            }
            put_bytes(out, h.capability);
        }
        Message::Deny { reason, text } => {
            out.push(reason.to_u8());
            put_bytes(out, text.as_bytes());
        }
        Message::Close { code, text } => {
            out.push(code.to_u8());
            put_bytes(out, text.as_bytes());
        }
        Message::Bitfield {
            num_pieces: n,
            bits,
        }
        | Message::FileBitfield { num_files: n, bits } => {
            put_varint(out, u64::from(*n));
            out.extend_from_slice(bits);
        }
        Message::HaveAll
        | Message::HaveNone
        | Message::Interested
        | Message::NotInterested
        | Message::Choke
        | Message::Unchoke
        | Message::KeepAlive => {}
        Message::Have { piece } | Message::Request { piece } | Message::Cancel { piece } => {
            put_varint(out, u64::from(*piece));
        }
        Message::Reject { piece, reason } => {
            put_varint(out, u64::from(*piece));
            out.push(reason.to_u8());
        }
        Message::Piece { piece, data } => {
            put_varint(out, u64::from(*piece));
            out.extend_from_slice(data);
        }
        Message::OutboardRequest { first, count } => {
            put_varint(out, u64::from(*first));
            put_varint(out, u64::from(*count));
        }
        Message::OutboardResponse { first, cvs } => {
            put_varint(out, u64::from(*first));
            out.extend_from_slice(cvs);
        }
        Message::FileOutboardRequest { file } => put_varint(out, u64::from(*file)),
        Message::FileOutboard { file, cvs } => {
            put_varint(out, u64::from(*file));
            out.extend_from_slice(cvs);
        }
        Message::PartRequest { file, piece } | Message::PartHave { file, piece } => {
            put_varint(out, u64::from(*file));
            put_varint(out, u64::from(*piece));
        }
        Message::PartReject {
            file,
            piece,
            reason,
        } => {
            put_varint(out, u64::from(*file));
            put_varint(out, u64::from(*piece));
            out.push(reason.to_u8());
        }
        Message::Part { file, piece, data } => {
            put_varint(out, u64::from(*file));
            put_varint(out, u64::from(*piece));
            out.extend_from_slice(data);
        }
        Message::PeerExchange { added, dropped } => {
            put_varint(out, added.len() as u64);
            for p in added {
                put_bytes(out, p.peer);
                put_varint(out, p.addrs.len() as u64);
                for a in &p.addrs {
                    put_bytes(out, a);
                }
            }
            put_varint(out, dropped.len() as u64);
            for p in dropped {
                put_bytes(out, p);
            }
        }
    }
    let frame_len = out.len() - start;
    let len = frame_len - LEN_PREFIX;
    // validate() keeps every field within limits that add up to less than the type's
    // frame limit; checked anyway so a future limit change cannot emit a bad frame.
    let max = msg.message_type().max_frame_len();
    if len > max {
        out.truncate(start);
        return Err(ProtoError::FrameTooLarge {
            what: msg.message_type().name(),
            len: len as u64,
            max: max as u64,
        });
    }
    out[start..start + LEN_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(frame_len)
}

/// Appends the start of a `Part` frame to `out`: length prefix, type, `file`
/// and `piece`, for `data_len` bytes of piece data that the caller appends
/// right after (so a sender can read a piece straight into its frame). The
/// frame is then exactly what [`encode`] makes of the `Part`.
pub fn encode_part_header(
    file: u32,
    piece: u32,
    data_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), ProtoError> {
    check_piece_index(u64::from(file))?;
    check_piece_index(u64::from(piece))?;
    check_piece_data(data_len)?;
    let len = 1 + varint_len(u64::from(file)) + varint_len(u64::from(piece)) + data_len;
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.push(MessageType::Part.to_u8());
    put_varint(out, u64::from(file));
    put_varint(out, u64::from(piece));
    Ok(())
}

/// Writes the header of a `Piece` frame for `piece` with `data_len` bytes of data into
/// `out` and returns the header bytes; the sender writes the data right after them
/// (straight from its read buffer, without copying it into a frame).
pub fn encode_piece_header(
    piece: u32,
    data_len: usize,
    out: &mut [u8; PIECE_HEADER_MAX],
) -> Result<&[u8], ProtoError> {
    check_piece_index(u64::from(piece))?;
    check_piece_data(data_len)?;
    let idx_len = varint_len(u64::from(piece));
    let frame_len = 1 + idx_len + data_len;
    // data_len <= MAX_PIECE_SIZE and idx_len <= 3 keep this under MAX_FRAME_LEN.
    out[..LEN_PREFIX].copy_from_slice(&(frame_len as u32).to_be_bytes());
    out[LEN_PREFIX] = MessageType::Piece.to_u8();
    let mut v = piece;
    let mut i = LEN_PREFIX + 1;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out[i] = byte;
            i += 1;
            break;
        }
        out[i] = byte | 0x80;
        i += 1;
    }
    Ok(&out[..i])
}
