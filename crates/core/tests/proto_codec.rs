//! Property tests of the transfer protocol codec over arbitrary messages and bytes.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use shoal_core::proto::{
    decode_frame, decode_header, decode_piece_prefix, encode, CloseCode, DenyReason, Hello,
    Message, MessageType, PexPeer, ProtoError, RejectReason, CV_LEN, MAX_ADDR_LEN,
    MAX_CAPABILITY_LEN, MAX_CONTENT_LEN, MAX_FRAME_LEN, MAX_OUTBOARD_CVS, MAX_PEER_ID_LEN,
    MAX_PEX_ADDRS, MAX_PIECES, MAX_TEXT_LEN, PROTOCOL_VERSION,
};
use shoal_core::wire::Writer;
use shoal_core::ContentId;

/// The owned data behind one message, so strategies can produce borrowed messages.
#[derive(Debug, Clone)]
enum Owned {
    Hello {
        id: [u8; 32],
        log2: Option<u8>,
        len: Option<u64>,
        cap: Vec<u8>,
    },
    Deny(u8, String),
    Close(u8, String),
    Bitfield(u32, Vec<u8>),
    Simple(u8),
    Have(u32),
    Request(u32),
    Cancel(u32),
    Piece(u32, Vec<u8>),
    Reject(u32, u8),
    OutboardRequest(u32, u32),
    OutboardResponse(u32, Vec<u8>),
    Pex(Vec<(Vec<u8>, Vec<Vec<u8>>)>, Vec<Vec<u8>>),
}

impl Owned {
    fn message(&self) -> Message<'_> {
        match self {
            Owned::Hello { id, log2, len, cap } => Message::Hello(Hello {
                version: PROTOCOL_VERSION,
                content: ContentId::from_bytes(*id),
                piece_size: log2.map(|l| 1u32 << l),
                content_len: *len,
                capability: cap,
            }),
            Owned::Deny(r, t) => Message::Deny {
                reason: DenyReason::from_u8(*r),
                text: t,
            },
            Owned::Close(c, t) => Message::Close {
                code: CloseCode::from_u8(*c),
                text: t,
            },
            Owned::Bitfield(n, bits) => Message::Bitfield {
                num_pieces: *n,
                bits,
            },
            Owned::Simple(k) => match k % 7 {
                0 => Message::HaveAll,
                1 => Message::HaveNone,
                2 => Message::Interested,
                3 => Message::NotInterested,
                4 => Message::Choke,
                5 => Message::Unchoke,
                _ => Message::KeepAlive,
            },
            Owned::Have(p) => Message::Have { piece: *p },
            Owned::Request(p) => Message::Request { piece: *p },
            Owned::Cancel(p) => Message::Cancel { piece: *p },
            Owned::Piece(p, d) => Message::Piece { piece: *p, data: d },
            Owned::Reject(p, r) => Message::Reject {
                piece: *p,
                reason: RejectReason::from_u8(*r),
            },
            Owned::OutboardRequest(first, count) => Message::OutboardRequest {
                first: *first,
                count: *count,
            },
            Owned::OutboardResponse(first, cvs) => Message::OutboardResponse { first: *first, cvs },
            Owned::Pex(added, dropped) => Message::PeerExchange {
                added: added
                    .iter()
                    .map(|(p, a)| PexPeer {
                        peer: p,
                        addrs: a.iter().map(Vec::as_slice).collect(),
                    })
                    .collect(),
                dropped: dropped.iter().map(Vec::as_slice).collect(),
            },
        }
    }
}

fn piece() -> impl Strategy<Value = u32> {
    prop_oneof![0..200u32, 0..MAX_PIECES]
}

fn text() -> impl Strategy<Value = String> {
    // Up to 64 chars of up to 4 bytes: always within MAX_TEXT_LEN.
    "\\PC{0,64}".prop_filter("text fits", |s| s.len() <= MAX_TEXT_LEN)
}

fn bitfield() -> impl Strategy<Value = Owned> {
    (0..3000u32).prop_flat_map(|n| {
        vec(any::<u8>(), (n as usize).div_ceil(8)).prop_map(move |mut bits| {
            let spare = (8 - n % 8) % 8;
            if let Some(last) = bits.last_mut() {
                *last &= 0xffu8 << spare;
            }
            Owned::Bitfield(n, bits)
        })
    })
}

fn hello() -> impl Strategy<Value = Owned> {
    (
        any::<[u8; 32]>(),
        proptest::option::of(10u8..=22),
        proptest::option::of(prop_oneof![0..10_000_000u64, 0..=MAX_CONTENT_LEN]),
        vec(any::<u8>(), 0..=MAX_CAPABILITY_LEN),
    )
        .prop_map(|(id, log2, len, cap)| Owned::Hello { id, log2, len, cap })
        // Only layouts within MAX_PIECES pieces are valid.
        .prop_filter("layout within MAX_PIECES", |h| match h {
            Owned::Hello {
                log2: Some(l),
                len: Some(n),
                ..
            } => n.div_ceil(1u64 << l) <= u64::from(MAX_PIECES),
            _ => true,
        })
}

fn pex() -> impl Strategy<Value = Owned> {
    let id = || vec(any::<u8>(), 1..=MAX_PEER_ID_LEN);
    (
        vec(
            (
                id(),
                vec(vec(any::<u8>(), 1..=MAX_ADDR_LEN), 0..=MAX_PEX_ADDRS),
            ),
            0..=8,
        ),
        vec(id(), 0..=8),
    )
        .prop_map(|(a, d)| Owned::Pex(a, d))
}

fn owned_message() -> impl Strategy<Value = Owned> {
    prop_oneof![
        hello(),
        (any::<u8>(), text()).prop_map(|(r, t)| Owned::Deny(r, t)),
        (any::<u8>(), text()).prop_map(|(c, t)| Owned::Close(c, t)),
        bitfield(),
        any::<u8>().prop_map(Owned::Simple),
        piece().prop_map(Owned::Have),
        piece().prop_map(Owned::Request),
        piece().prop_map(Owned::Cancel),
        (piece(), vec(any::<u8>(), 1..5000)).prop_map(|(p, d)| Owned::Piece(p, d)),
        (piece(), any::<u8>()).prop_map(|(p, r)| Owned::Reject(p, r)),
        (0..MAX_PIECES, 1..=MAX_OUTBOARD_CVS)
            .prop_map(|(f, c)| Owned::OutboardRequest(f.min(MAX_PIECES - c), c)),
        (0..MAX_PIECES, 0..64usize).prop_flat_map(|(f, n)| {
            vec(any::<u8>(), n * CV_LEN)
                .prop_map(move |cvs| Owned::OutboardResponse(f.min(MAX_PIECES - n as u32), cvs))
        }),
        pex(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_messages_round_trip(owned in owned_message()) {
        let msg = owned.message();
        let mut buf = Vec::new();
        let n = encode(&msg, &mut buf).unwrap();
        prop_assert_eq!(n, buf.len());
        let (back, used) = decode_frame(&buf).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(back, msg);
    }

    #[test]
    fn piece_prefix_agrees_with_the_whole_frame_from_the_first_bytes_that_hold_the_index(
        index in piece(),
        len in prop_oneof![1usize..64, 1usize..=(1 << 20)],
    ) {
        let data = vec![7u8; len];
        let mut buf = Vec::new();
        encode(&Message::Piece { piece: index, data: &data }, &mut buf).unwrap();
        let Some((Message::Piece { piece, data: whole }, _)) = decode_frame(&buf).unwrap() else {
            return Err(TestCaseError::fail("not a piece"));
        };
        let mut first = None;
        for end in 0..=buf.len().min(16) {
            match decode_piece_prefix(&buf[..end]).unwrap() {
                None => prop_assert!(first.is_none(), "None after Some at {} bytes", end),
                Some(p) => {
                    first.get_or_insert(end);
                    prop_assert_eq!(p.piece, piece);
                    prop_assert_eq!(p.data_len, whole.len());
                    prop_assert_eq!(&buf[p.data_offset..], whole);
                    prop_assert!(end >= p.data_offset, "decided before the index arrived");
                }
            }
        }
        prop_assert_eq!(first, Some(buf.len().min(16).min(
            decode_piece_prefix(&buf).unwrap().unwrap().data_offset
        )));
    }

    #[test]
    fn every_strict_prefix_of_a_frame_needs_more_bytes(owned in owned_message()) {
        let mut buf = Vec::new();
        encode(&owned.message(), &mut buf).unwrap();
        for end in 0..buf.len() {
            prop_assert!(decode_frame(&buf[..end]).unwrap().is_none(), "prefix of {} bytes", end);
        }
    }

    #[test]
    fn message_streams_decode_the_same_in_any_chunking(
        owned in vec(owned_message(), 1..8),
        cuts in vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let msgs: Vec<Message<'_>> = owned.iter().map(Owned::message).collect();
        let mut stream = Vec::new();
        for m in &msgs {
            encode(m, &mut stream).unwrap();
        }
        // Deliver the stream in arbitrary chunks into a growing receive buffer.
        let mut cut_points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cut_points.push(stream.len());
        cut_points.sort_unstable();
        let mut decoded = Vec::new();
        let mut start = 0;
        for end in cut_points {
            while let Some((m, n)) = decode_frame(&stream[start..end]).unwrap() {
                decoded.push(m);
                start += n;
            }
        }
        prop_assert_eq!(start, stream.len());
        prop_assert_eq!(decoded, msgs);
    }

    #[test]
    fn random_bytes_never_panic_and_decoded_frames_re_encode_identically(
        bytes in vec(any::<u8>(), 0..600),
    ) {
        check_canonical(&bytes)?;
    }

    #[test]
    fn random_bodies_behind_a_valid_header_never_panic(
        ty in 0u8..0x14,
        body in vec(any::<u8>(), 0..600),
    ) {
        let mut f = ((body.len() + 1) as u32).to_be_bytes().to_vec();
        f.push(ty);
        f.extend_from_slice(&body);
        check_canonical(&f)?;
    }

    #[test]
    fn mutated_frames_never_panic_and_decoded_frames_re_encode_identically(
        owned in owned_message(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut f = Vec::new();
        encode(&owned.message(), &mut f).unwrap();
        for (at, byte) in &edits {
            let i = at.index(f.len());
            f[i] = *byte;
        }
        // Keep the length prefix plausible half of the time so bodies get decoded.
        if cut.index(2) == 0 {
            let len = (f.len() - 4) as u32;
            f[..4].copy_from_slice(&len.to_be_bytes());
        }
        check_canonical(&f)?;
        let end = cut.index(f.len() + 1);
        check_canonical(&f[..end])?;
    }

    #[test]
    fn length_prefixes_over_the_limit_are_rejected_from_four_bytes(
        len in (MAX_FRAME_LEN as u32 + 1)..=u32::MAX,
    ) {
        let prefix = len.to_be_bytes();
        prop_assert!(
            matches!(decode_header(&prefix), Err(ProtoError::FrameTooLarge { .. })),
            "prefix accepted"
        );
    }
}

/// Decoding `bytes` never panics; when a frame decodes, encoding the message gives
/// back exactly the frame's bytes (the encoding is canonical).
fn check_canonical(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(Some((msg, used))) = decode_frame(bytes) {
        let mut again = Vec::new();
        encode(&msg, &mut again).unwrap();
        prop_assert_eq!(&again[..], &bytes[..used]);
    }
    Ok(())
}

#[test]
fn piece_prefix_refuses_what_decode_frame_refuses() {
    // Another type.
    let mut have = Vec::new();
    encode(&Message::Have { piece: 3 }, &mut have).unwrap();
    assert!(decode_piece_prefix(&have).is_err());
    // An index at the limit, and a piece without data.
    for (index, data_len) in [(MAX_PIECES, 1usize), (1, 0)] {
        let mut body = Writer::new();
        body.u8(MessageType::Piece.to_u8())
            .varint(u64::from(index))
            .raw(&vec![0u8; data_len]);
        let body = body.into_vec();
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&body);
        assert!(decode_frame(&f).is_err(), "{index} {data_len}");
        assert!(decode_piece_prefix(&f).is_err(), "{index} {data_len}");
    }
}
