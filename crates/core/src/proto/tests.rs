use super::*;
use crate::id::ContentId;

/// A raw frame: length prefix, type byte, body.
fn frame(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut f = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    f.push(ty);
    f.extend_from_slice(body);
    f
}

fn decode_err(buf: &[u8]) -> ProtoError {
    match decode_frame(buf) {
        Err(e) => e,
        Ok(r) => panic!("expected an error, got {r:?}"),
    }
}

fn hello_body(version: u8, log2: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut b = HELLO_MAGIC.to_vec();
    b.push(version);
    b.extend_from_slice(&[7; 32]);
    b.push(log2);
    b.push(flags);
    b.extend_from_slice(rest);
    b
}

fn sample_messages() -> Vec<Message<'static>> {
    static CVS: [u8; 64] = [9; 64];
    static DATA: [u8; 1000] = [0xab; 1000];
    vec![
        Message::Hello(Hello::new(ContentId::of(b"x"))),
        Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            content: ContentId::of(b"y"),
            piece_size: Some(DEFAULT_PIECE_SIZE),
            content_len: Some(123_456_789),
            capability: b"cap",
        }),
        Message::Deny {
            reason: DenyReason::AccessDenied,
            text: "private share",
        },
        Message::Bitfield {
            num_pieces: 10,
            bits: &[0xff, 0xc0],
        },
        Message::HaveAll,
        Message::HaveNone,
        Message::Have { piece: 5 },
        Message::Interested,
        Message::NotInterested,
        Message::Choke,
        Message::Unchoke,
        Message::Request { piece: 300 },
        Message::Cancel { piece: 300 },
        Message::Piece {
            piece: MAX_PIECES - 1,
            data: &DATA,
        },
        Message::Reject {
            piece: 1,
            reason: RejectReason::Choked,
        },
        Message::OutboardRequest {
            first: 0,
            count: MAX_OUTBOARD_CVS,
        },
        Message::OutboardResponse {
            first: 4,
            cvs: &CVS,
        },
        Message::OutboardResponse { first: 4, cvs: &[] },
        Message::PeerExchange {
            added: vec![PexPeer {
                peer: b"peer-a",
                addrs: vec![b"addr-1", b"addr-2"],
            }],
            dropped: vec![b"peer-b"],
        },
        Message::KeepAlive,
        Message::Close {
            code: CloseCode::Normal,
            text: "done",
        },
        Message::FileBitfield {
            num_files: 12,
            bits: &[0x80, 0x10],
        },
        Message::FileOutboardRequest { file: 70_000 },
        Message::FileOutboard { file: 3, cvs: &CVS },
        Message::FileOutboard { file: 3, cvs: &[] },
        Message::PartRequest {
            file: 2,
            piece: 255,
        },
        Message::PartHave {
            file: 70_000,
            piece: 3,
        },
        Message::Part {
            file: MAX_PIECES - 1,
            piece: 7,
            data: &DATA,
        },
        Message::PartReject {
            file: 9,
            piece: 0,
            reason: RejectReason::NotAvailable,
        },
    ]
}

#[test]
fn every_message_type_round_trips() {
    let msgs = sample_messages();
    let mut seen = std::collections::HashSet::new();
    for msg in &msgs {
        let mut buf = Vec::new();
        let n = encode(msg, &mut buf).unwrap();
        assert_eq!(n, buf.len());
        assert_eq!(buf[LEN_PREFIX], msg.message_type().to_u8());
        let (back, used) = decode_frame(&buf).unwrap().unwrap();
        assert_eq!(&back, msg);
        assert_eq!(used, buf.len());
        seen.insert(msg.message_type());
    }
    assert_eq!(seen.len(), MessageType::ALL.len(), "a type has no sample");
}

#[test]
fn type_bytes_are_the_specified_ones() {
    for (i, t) in MessageType::ALL.iter().enumerate() {
        assert_eq!(usize::from(t.to_u8()), i);
        assert_eq!(MessageType::from_u8(t.to_u8()), Some(*t));
    }
    assert_eq!(MessageType::Piece.to_u8(), 0x0c);
    assert_eq!(MessageType::FileBitfield.to_u8(), 0x13);
    assert_eq!(MessageType::PartReject.to_u8(), 0x18);
    assert_eq!(MessageType::PartHave.to_u8(), 0x19);
    assert_eq!(MessageType::from_u8(0x1a), None);
}

#[test]
fn frames_fed_one_byte_at_a_time_decode_like_all_at_once() {
    let mut stream = Vec::new();
    for msg in sample_messages() {
        encode(&msg, &mut stream).unwrap();
    }
    let mut whole = Vec::new();
    let mut rest = &stream[..];
    while let Some((m, n)) = decode_frame(rest).unwrap() {
        whole.push(m);
        rest = &rest[n..];
    }
    assert!(rest.is_empty());

    let mut trickled = Vec::new();
    let mut start = 0;
    for end in 1..=stream.len() {
        if let Some((m, n)) = decode_frame(&stream[start..end]).unwrap() {
            assert_eq!(start + n, end, "a frame ended before all its bytes arrived");
            trickled.push(m);
            start = end;
        }
    }
    assert_eq!(trickled, whole);
    assert_eq!(whole, sample_messages());
}

#[test]
fn oversized_length_prefix_is_rejected_from_the_four_length_bytes() {
    let len = (MAX_FRAME_LEN as u32 + 1).to_be_bytes();
    assert!(matches!(
        decode_frame(&len),
        Err(ProtoError::FrameTooLarge { .. })
    ));
    assert!(decode_frame(&len[..3]).unwrap().is_none());
    assert_eq!(
        decode_err(&u32::MAX.to_be_bytes()).close_code(),
        CloseCode::FrameTooLarge
    );
}

#[test]
fn control_frame_over_its_type_limit_is_rejected_at_the_type_byte() {
    let mut buf = ((MAX_CONTROL_FRAME_LEN + 1) as u32).to_be_bytes().to_vec();
    assert!(
        decode_frame(&buf).unwrap().is_none(),
        "legal for a piece frame"
    );
    buf.push(MessageType::Request.to_u8());
    assert!(matches!(
        decode_err(&buf),
        ProtoError::FrameTooLarge {
            what: "Request",
            ..
        }
    ));
    // A bitfield may be larger than a control frame, not larger than its own limit.
    let mut bf = ((MAX_BITFIELD_FRAME_LEN + 1) as u32).to_be_bytes().to_vec();
    bf.push(MessageType::Bitfield.to_u8());
    assert_eq!(decode_err(&bf).close_code(), CloseCode::FrameTooLarge);
    let mut piece = (MAX_FRAME_LEN as u32).to_be_bytes().to_vec();
    piece.push(MessageType::Piece.to_u8());
    assert!(decode_frame(&piece).unwrap().is_none());
}

#[test]
fn empty_frame_is_malformed() {
    let e = decode_err(&[0, 0, 0, 0]);
    assert_eq!(e, ProtoError::EmptyFrame);
    assert_eq!(e.close_code(), CloseCode::MalformedMessage);
}

#[test]
fn unknown_message_type_is_rejected_before_its_body() {
    let e = decode_err(&[0, 0, 0, 100, 0x1a]);
    assert_eq!(e, ProtoError::UnknownType(0x1a));
    assert_eq!(e.close_code(), CloseCode::UnknownMessage);
}

#[test]
fn hello_with_wrong_magic_is_not_a_shoal_stream() {
    let mut body = hello_body(1, 0, 0, &[0]);
    body[0] = b'X';
    let e = decode_err(&frame(0, &body));
    assert!(matches!(e, ProtoError::BadMagic(_)));
    assert_eq!(e.close_code(), CloseCode::BadHello);
}

#[test]
fn hello_with_unsupported_version_is_denied_as_such() {
    // A future version may change everything after the version byte.
    let mut body = HELLO_MAGIC.to_vec();
    body.extend_from_slice(&[2, 0xff, 0xff]);
    let e = decode_err(&frame(0, &body));
    assert_eq!(e, ProtoError::UnsupportedVersion(2));
    assert_eq!(e.close_code(), CloseCode::VersionUnsupported);
    assert_eq!(e.deny_reason(), DenyReason::VersionUnsupported);
}

#[test]
fn hello_field_violations_are_rejected() {
    // Piece size 2^9 (below 1 KiB) and 2^23 (above 4 MiB).
    for log2 in [9u8, 23, 255] {
        let e = decode_err(&frame(0, &hello_body(1, log2, 0, &[0])));
        assert_eq!(e.close_code(), CloseCode::MalformedMessage, "log2 {log2}");
    }
    // Unknown flag bit.
    assert!(matches!(
        decode_err(&frame(0, &hello_body(1, 18, 0x02, &[0]))),
        ProtoError::Invalid { .. }
    ));
    // 1 KiB pieces of 4 TiB is far more than MAX_PIECES.
    let mut rest = Vec::new();
    put_varint(&mut rest, MAX_CONTENT_LEN);
    rest.push(0);
    assert!(matches!(
        decode_err(&frame(0, &hello_body(1, 10, 1, &rest))),
        ProtoError::Invalid { .. }
    ));
    // Content length over MAX_CONTENT_LEN.
    let mut rest = Vec::new();
    put_varint(&mut rest, MAX_CONTENT_LEN + 1);
    rest.push(0);
    assert!(matches!(
        decode_err(&frame(0, &hello_body(1, 0, 1, &rest))),
        ProtoError::Malformed { .. }
    ));
    // Capability one byte over the limit.
    let mut rest = Vec::new();
    put_varint(&mut rest, MAX_CAPABILITY_LEN as u64 + 1);
    rest.resize(rest.len() + MAX_CAPABILITY_LEN + 1, 0);
    assert!(matches!(
        decode_err(&frame(0, &hello_body(1, 0, 0, &rest))),
        ProtoError::Malformed { .. }
    ));
    // Truncated (no capability length).
    assert!(matches!(
        decode_err(&frame(0, &hello_body(1, 0, 0, &[]))),
        ProtoError::Malformed { .. }
    ));
}

fn put_varint(out: &mut Vec<u8>, v: u64) {
    let mut w = crate::wire::Writer::new();
    w.varint(v);
    out.extend_from_slice(w.as_slice());
}

#[test]
fn bitfield_with_spare_bits_set_is_rejected() {
    // 10 pieces: the low 6 bits of the second byte are spare.
    let e = decode_err(&frame(2, &[10, 0xff, 0xc1]));
    assert!(matches!(e, ProtoError::BadBitfield(_)));
    assert_eq!(e.close_code(), CloseCode::BadBitfield);
}

#[test]
fn bitfield_of_wrong_byte_length_is_rejected() {
    for body in [&[10u8, 0xff][..], &[10, 0xff, 0xc0, 0], &[0, 0], &[9]] {
        assert_eq!(
            decode_err(&frame(2, body)).close_code(),
            CloseCode::BadBitfield,
            "{body:?}"
        );
    }
}

#[test]
fn bitfield_with_more_than_max_pieces_is_rejected() {
    let mut body = Vec::new();
    put_varint(&mut body, u64::from(MAX_PIECES) + 1);
    body.resize(body.len() + (MAX_PIECES as usize + 8) / 8, 0);
    assert_eq!(
        decode_err(&frame(2, &body)).close_code(),
        CloseCode::BadBitfield
    );
}

#[test]
fn piece_index_beyond_the_protocol_limit_is_out_of_range() {
    for ty in [MessageType::Have, MessageType::Request, MessageType::Cancel] {
        let mut body = Vec::new();
        put_varint(&mut body, u64::from(MAX_PIECES));
        let e = decode_err(&frame(ty.to_u8(), &body));
        assert_eq!(e.close_code(), CloseCode::PieceOutOfRange, "{ty:?}");
    }
    let mut body = Vec::new();
    put_varint(&mut body, u64::MAX);
    body.push(1);
    assert_eq!(
        decode_err(&frame(MessageType::Piece.to_u8(), &body)).close_code(),
        CloseCode::PieceOutOfRange
    );
}

#[test]
fn piece_without_data_has_the_wrong_length() {
    let e = decode_err(&frame(MessageType::Piece.to_u8(), &[3]));
    assert_eq!(e.close_code(), CloseCode::WrongPieceLength);
}

#[test]
fn piece_data_over_the_max_piece_size_has_the_wrong_length() {
    let mut body = vec![0u8];
    body.resize(1 + MAX_PIECE_SIZE as usize + 1, 7);
    let e = decode_err(&frame(MessageType::Piece.to_u8(), &body));
    assert_eq!(e.close_code(), CloseCode::WrongPieceLength);
}

#[test]
fn trailing_bytes_and_non_canonical_varints_are_malformed() {
    for body in [
        &[5u8, 0][..],     // Have with a trailing byte
        &[0x85, 0x00][..], // 5 in two bytes
        &[][..],           // no piece index
    ] {
        let e = decode_err(&frame(MessageType::Have.to_u8(), body));
        assert_eq!(e.close_code(), CloseCode::MalformedMessage, "{body:?}");
    }
    let e = decode_err(&frame(MessageType::KeepAlive.to_u8(), &[0]));
    assert_eq!(e.close_code(), CloseCode::MalformedMessage);
}

#[test]
fn outboard_ranges_are_bounded() {
    let req = |first: u64, count: u64| {
        let mut b = Vec::new();
        put_varint(&mut b, first);
        put_varint(&mut b, count);
        frame(MessageType::OutboardRequest.to_u8(), &b)
    };
    assert!(decode_frame(&req(0, 1)).unwrap().is_some());
    assert_eq!(
        decode_err(&req(0, 0)).close_code(),
        CloseCode::MalformedMessage
    );
    assert_eq!(
        decode_err(&req(0, u64::from(MAX_OUTBOARD_CVS) + 1)).close_code(),
        CloseCode::MalformedMessage
    );
    assert_eq!(
        decode_err(&req(u64::from(MAX_PIECES) - 1, 2)).close_code(),
        CloseCode::PieceOutOfRange
    );
    // Chaining values must come in whole 32-byte units.
    let mut b = vec![0u8];
    b.extend_from_slice(&[1; 33]);
    assert_eq!(
        decode_err(&frame(MessageType::OutboardResponse.to_u8(), &b)).close_code(),
        CloseCode::MalformedMessage
    );
}

#[test]
fn peer_exchange_lists_are_bounded() {
    let mut b = Vec::new();
    put_varint(&mut b, MAX_PEX_ADDED as u64 + 1);
    assert_eq!(
        decode_err(&frame(MessageType::PeerExchange.to_u8(), &b)).close_code(),
        CloseCode::MalformedMessage
    );
    // One added peer with an empty id.
    assert_eq!(
        decode_err(&frame(MessageType::PeerExchange.to_u8(), &[1, 0, 0, 0])).close_code(),
        CloseCode::MalformedMessage
    );
    // One added peer with five addresses.
    let mut b = vec![1, 1, b'p', 5];
    for _ in 0..5 {
        b.extend_from_slice(&[1, b'a']);
    }
    b.push(0);
    assert_eq!(
        decode_err(&frame(MessageType::PeerExchange.to_u8(), &b)).close_code(),
        CloseCode::MalformedMessage
    );
}

#[test]
fn text_must_be_short_utf8() {
    let e = decode_err(&frame(MessageType::Close.to_u8(), &[0, 2, 0xff, 0xfe]));
    assert_eq!(e.close_code(), CloseCode::MalformedMessage);
    let mut b = vec![0u8];
    put_varint(&mut b, MAX_TEXT_LEN as u64 + 1);
    b.resize(b.len() + MAX_TEXT_LEN + 1, b'a');
    let e = decode_err(&frame(MessageType::Deny.to_u8(), &b));
    assert_eq!(e.close_code(), CloseCode::MalformedMessage);
}

#[test]
fn unknown_reason_codes_decode_as_unknown() {
    let f = frame(MessageType::Deny.to_u8(), &[200, 0]);
    let (m, _) = decode_frame(&f).unwrap().unwrap();
    assert_eq!(
        m,
        Message::Deny {
            reason: DenyReason::Unknown(200),
            text: ""
        }
    );
    let f = frame(MessageType::Close.to_u8(), &[99, 0]);
    let (m, _) = decode_frame(&f).unwrap().unwrap();
    assert_eq!(
        m,
        Message::Close {
            code: CloseCode::Unknown(99),
            text: ""
        }
    );
    let f = frame(MessageType::Reject.to_u8(), &[1, 77]);
    let (m, _) = decode_frame(&f).unwrap().unwrap();
    assert_eq!(
        m,
        Message::Reject {
            piece: 1,
            reason: RejectReason::Unknown(77)
        }
    );
    for c in CloseCode::KNOWN {
        assert_eq!(CloseCode::from_u8(c.to_u8()), *c);
    }
}

#[test]
fn piece_header_plus_data_is_the_encoded_piece_frame() {
    let data = vec![0x5au8; 70_000];
    for piece in [0, 127, 128, 16_383, 16_384, MAX_PIECES - 1] {
        let mut hdr = [0u8; PIECE_HEADER_MAX];
        let mut zero_copy = encode_piece_header(piece, data.len(), &mut hdr)
            .unwrap()
            .to_vec();
        zero_copy.extend_from_slice(&data);
        let mut whole = Vec::new();
        encode(&Message::Piece { piece, data: &data }, &mut whole).unwrap();
        assert_eq!(zero_copy, whole, "piece {piece}");
    }
    let mut hdr = [0u8; PIECE_HEADER_MAX];
    assert!(encode_piece_header(MAX_PIECES, 1, &mut hdr).is_err());
    assert!(encode_piece_header(0, 0, &mut hdr).is_err());
    assert!(encode_piece_header(0, MAX_PIECE_SIZE as usize + 1, &mut hdr).is_err());
    assert!(encode_piece_header(MAX_PIECES - 1, MAX_PIECE_SIZE as usize, &mut hdr).is_ok());
}

#[test]
fn encoding_an_invalid_message_fails_and_writes_nothing() {
    let long = "x".repeat(MAX_TEXT_LEN + 1);
    let bad = [
        Message::Close {
            code: CloseCode::Normal,
            text: &long,
        },
        Message::Bitfield {
            num_pieces: 9,
            bits: &[0],
        },
        Message::Have { piece: MAX_PIECES },
        Message::Piece {
            piece: 0,
            data: &[],
        },
        Message::OutboardRequest { first: 0, count: 0 },
        Message::OutboardResponse {
            first: 0,
            cvs: &[0; 31],
        },
        Message::Hello(Hello {
            piece_size: Some(3000),
            ..Hello::new(ContentId::of(b""))
        }),
        Message::Hello(Hello {
            version: 2,
            ..Hello::new(ContentId::of(b""))
        }),
    ];
    for msg in &bad {
        let mut buf = vec![1, 2, 3];
        assert!(encode(msg, &mut buf).is_err(), "{msg:?}");
        assert_eq!(buf, [1, 2, 3]);
    }
}

#[test]
fn largest_valid_messages_fit_their_frame_limits() {
    let cap = vec![0u8; MAX_CAPABILITY_LEN];
    let text = "é".repeat(MAX_TEXT_LEN / 2);
    let bits = vec![0xffu8; MAX_PIECES as usize / 8];
    let cvs = vec![1u8; MAX_OUTBOARD_CVS as usize * CV_LEN];
    let data = vec![2u8; MAX_PIECE_SIZE as usize];
    let id = [3u8; MAX_PEER_ID_LEN];
    let addr = [4u8; MAX_ADDR_LEN];
    let big = [
        Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            content: ContentId::of(b"z"),
            piece_size: Some(MAX_PIECE_SIZE),
            content_len: Some(MAX_CONTENT_LEN),
            capability: &cap,
        }),
        Message::Deny {
            reason: DenyReason::Busy,
            text: &text,
        },
        Message::Close {
            code: CloseCode::Shutdown,
            text: &text,
        },
        Message::Bitfield {
            num_pieces: MAX_PIECES,
            bits: &bits,
        },
        Message::OutboardResponse {
            first: MAX_PIECES - MAX_OUTBOARD_CVS,
            cvs: &cvs,
        },
        Message::Piece {
            piece: MAX_PIECES - 1,
            data: &data,
        },
        Message::PeerExchange {
            added: vec![
                PexPeer {
                    peer: &id,
                    addrs: vec![&addr; MAX_PEX_ADDRS]
                };
                MAX_PEX_ADDED
            ],
            dropped: vec![&id; MAX_PEX_DROPPED],
        },
    ];
    for msg in &big {
        let mut buf = Vec::new();
        encode(msg, &mut buf).unwrap();
        let (back, _) = decode_frame(&buf).unwrap().unwrap();
        assert_eq!(&back, msg);
    }
}

#[test]
fn default_piece_size_follows_the_rule() {
    const K: u32 = 1024;
    assert_eq!(default_piece_size(0), Some(DEFAULT_PIECE_SIZE));
    assert_eq!(default_piece_size(1), Some(DEFAULT_PIECE_SIZE));
    assert_eq!(default_piece_size(256 << 20), Some(DEFAULT_PIECE_SIZE));
    assert_eq!(default_piece_size((256 << 20) + 1), Some(512 * K));
    assert_eq!(default_piece_size(512 << 20), Some(512 * K));
    assert_eq!(default_piece_size((512 << 20) + 1), Some(LARGE_PIECE_SIZE));
    assert_eq!(default_piece_size(1 << 30), Some(LARGE_PIECE_SIZE));
    assert_eq!(default_piece_size(64 << 30), Some(LARGE_PIECE_SIZE));
    assert_eq!(default_piece_size((64 << 30) + 1), Some(2 * K * K));
    assert_eq!(default_piece_size(128 << 30), Some(2 * K * K));
    assert_eq!(default_piece_size((128 << 30) + 1), Some(MAX_PIECE_SIZE));
    assert_eq!(default_piece_size(256 << 30), Some(MAX_PIECE_SIZE));
    assert_eq!(default_piece_size(MAX_CONTENT_LEN), Some(MAX_PIECE_SIZE));
    assert_eq!(default_piece_size(MAX_CONTENT_LEN + 1), None);
    assert_eq!(num_pieces(0, DEFAULT_PIECE_SIZE), 0);
    assert_eq!(num_pieces(1, DEFAULT_PIECE_SIZE), 1);
    assert_eq!(
        num_pieces(MAX_CONTENT_LEN, MAX_PIECE_SIZE),
        u64::from(MAX_PIECES)
    );
}

#[test]
fn reply_hello_must_match_and_carry_the_layout() {
    let id = ContentId::of(b"content");
    let sent = Hello::new(id);
    let reply = Hello {
        piece_size: Some(DEFAULT_PIECE_SIZE),
        content_len: Some(DEFAULT_PIECE_SIZE as u64 * 3 + 1),
        ..Hello::new(id)
    };
    assert_eq!(
        reply.check_reply(&sent),
        Ok((DEFAULT_PIECE_SIZE, DEFAULT_PIECE_SIZE as u64 * 3 + 1, 4))
    );
    let other = Hello::new(ContentId::of(b"other"));
    assert_eq!(
        reply.check_reply(&other).unwrap_err().close_code(),
        CloseCode::BadHello
    );
    assert!(Hello::new(id).check_reply(&sent).is_err());
    let sent_other_size = Hello {
        piece_size: Some(MIN_PIECE_SIZE),
        ..Hello::new(id)
    };
    assert!(reply.check_reply(&sent_other_size).is_err());
    let with_cap = Hello {
        capability: b"c",
        ..reply.clone()
    };
    assert!(with_cap.check_reply(&sent).is_err());
}

#[test]
fn bitfield_tracks_bits_and_count() {
    let mut b = Bitfield::new(10).unwrap();
    assert_eq!(b.as_bytes(), [0, 0]);
    assert!(b.set(0));
    assert!(!b.set(0));
    assert!(b.set(9));
    assert!(!b.set(10), "out of range changes nothing");
    assert_eq!(b.as_bytes(), [0x80, 0x40]);
    assert!(b.get(9) && !b.get(8) && !b.get(10));
    assert_eq!(b.count_ones(), 2);
    assert_eq!(b.iter_ones().collect::<Vec<_>>(), [0, 9]);
    assert!(b.clear(0));
    assert!(!b.clear(0));
    assert_eq!(b.count_ones(), 1);
    assert!(!b.is_full());
    let full = Bitfield::full(10).unwrap();
    assert!(full.is_full());
    assert_eq!(full.as_bytes(), [0xff, 0xc0]);
    assert!(Bitfield::full(0).unwrap().is_full());
    assert!(Bitfield::new(MAX_PIECES + 1).is_err());
}

#[test]
fn bitfield_decoding_rejects_spare_bits_and_wrong_lengths() {
    assert!(Bitfield::from_bytes(10, &[0xff, 0xc0]).unwrap().is_full());
    assert!(Bitfield::from_bytes(10, &[0xff, 0xe0]).is_err());
    assert!(Bitfield::from_bytes(10, &[0xff]).is_err());
    assert!(Bitfield::from_bytes(8, &[0xff, 0]).is_err());
    let b = Bitfield::from_bytes(12, &[0x12, 0x30]).unwrap();
    assert_eq!(b.count_ones(), 4);
    let mut buf = Vec::new();
    encode(&b.to_message(), &mut buf).unwrap();
    let (m, _) = decode_frame(&buf).unwrap().unwrap();
    assert_eq!(Bitfield::from_message(&m, 12).unwrap(), b);
    assert_eq!(
        Bitfield::from_message(&m, 13).unwrap_err().close_code(),
        CloseCode::BadBitfield
    );
}

#[test]
fn session_violations_map_to_their_close_codes() {
    let cases = [
        (
            ProtoError::Unexpected {
                msg: "Bitfield",
                when: "after the first message",
            },
            CloseCode::UnexpectedMessage,
        ),
        (
            ProtoError::PieceOutOfRange {
                piece: 10,
                num_pieces: 10,
            },
            CloseCode::PieceOutOfRange,
        ),
        (
            ProtoError::WrongPieceLength {
                piece: 1,
                len: 5,
                expected: 6,
            },
            CloseCode::WrongPieceLength,
        ),
        (
            ProtoError::Unrequested {
                msg: "Piece",
                piece: 3,
            },
            CloseCode::UnrequestedPiece,
        ),
        (
            ProtoError::TooManyRequests {
                what: "requests",
                max: MAX_OUTSTANDING_REQUESTS,
            },
            CloseCode::TooManyRequests,
        ),
        (ProtoError::Timeout { secs: 120 }, CloseCode::Timeout),
        (
            ProtoError::HelloMismatch("different content id"),
            CloseCode::BadHello,
        ),
    ];
    for (e, code) in cases {
        assert_eq!(e.close_code(), code, "{e}");
    }
}

#[test]
fn pex_entries_parse_into_peer_ids_and_multiaddrs() {
    let peer = libp2p_identity::Keypair::ed25519_from_bytes([7; 32])
        .unwrap()
        .public()
        .to_peer_id();
    let addr: multiaddr::Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
    let peer_bytes = peer.to_bytes();
    let addr_bytes = addr.to_vec();
    let msg = Message::PeerExchange {
        added: vec![
            PexPeer {
                peer: &peer_bytes,
                addrs: vec![&addr_bytes, b"\xff\xff not an address"],
            },
            PexPeer {
                peer: b"not a peer id",
                addrs: vec![&addr_bytes],
            },
        ],
        dropped: vec![],
    };
    let mut buf = Vec::new();
    encode(&msg, &mut buf).unwrap();
    let (Message::PeerExchange { added, .. }, _) = decode_frame(&buf).unwrap().unwrap() else {
        panic!("not a PeerExchange");
    };
    assert_eq!(added[0].parse(), Some((peer, vec![addr])));
    assert_eq!(added[1].parse(), None);
}

#[test]
fn a_part_header_and_its_data_are_the_encoded_part() {
    for (file, piece, len) in [
        (0u32, 0u32, 1usize),
        (200, 70_000, 4096),
        (MAX_PIECES - 1, 3, 262_144),
    ] {
        let data = vec![0x5a; len];
        let mut want = Vec::new();
        encode(
            &Message::Part {
                file,
                piece,
                data: &data,
            },
            &mut want,
        )
        .unwrap();
        let mut got = Vec::new();
        encode_part_header(file, piece, len, &mut got).unwrap();
        got.extend_from_slice(&data);
        assert_eq!(got, want);
    }
    let mut out = Vec::new();
    assert!(encode_part_header(0, 0, 0, &mut out).is_err());
    assert!(encode_part_header(MAX_PIECES, 0, 1, &mut out).is_err());
    assert!(encode_part_header(0, 0, MAX_PIECE_SIZE as usize + 1, &mut out).is_err());
    assert!(out.is_empty());
}
