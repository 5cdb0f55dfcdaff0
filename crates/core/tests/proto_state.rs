//! The connection rules (spec §7 to §9, the "driver" rows of §11) as checked by
//! `ConnectionState`, on two peers talking through the real codec.

use shoal_core::proto::{
    decode_frame, encode, Bitfield, CloseCode, ConnectionState, DenyReason, Hello, Layout, Message,
    ProtoError, Received, RejectReason, Role, CV_LEN, MAX_OUTSTANDING_OUTBOARD_REQUESTS,
    MAX_OUTSTANDING_REQUESTS, MIN_PIECE_SIZE,
};
use shoal_core::ContentId;

const PIECE: u32 = MIN_PIECE_SIZE;
/// 10 pieces, the last one 100 bytes.
const LEN: u64 = 9 * PIECE as u64 + 100;

fn id() -> ContentId {
    ContentId::of(b"the content")
}

fn responder_hello() -> Hello<'static> {
    Hello {
        piece_size: Some(PIECE),
        content_len: Some(LEN),
        ..Hello::new(id())
    }
}

/// Sends `msg` from `from` to `to` through the codec; returns what `to` made of it.
fn deliver(
    from: &mut ConnectionState,
    to: &mut ConnectionState,
    msg: &Message<'_>,
) -> Result<Received, ProtoError> {
    from.on_send(msg).expect("the sender follows the rules");
    recv(to, msg)
}

/// Receives `msg` (as the peer's bytes) without checking the sender.
fn recv(to: &mut ConnectionState, msg: &Message<'_>) -> Result<Received, ProtoError> {
    let mut buf = Vec::new();
    encode(msg, &mut buf).unwrap();
    let (decoded, _) = decode_frame(&buf).unwrap().unwrap();
    to.on_recv(&decoded)
}

fn code(r: Result<Received, ProtoError>) -> CloseCode {
    r.expect_err("a violation").close_code()
}

/// An initiator that knows only the id (downloader) and a responder with every piece,
/// established, with the downloader interested and unchoked.
fn established() -> (ConnectionState, ConnectionState) {
    let mut d = ConnectionState::new(Role::Initiator);
    let mut s = ConnectionState::new(Role::Responder);
    assert_eq!(
        deliver(&mut d, &mut s, &Message::Hello(Hello::new(id()))),
        Ok(Received::Hello)
    );
    assert_eq!(
        deliver(&mut d, &mut s, &Message::HaveNone),
        Ok(Received::Ok)
    );
    assert_eq!(
        deliver(&mut s, &mut d, &Message::Hello(responder_hello())),
        Ok(Received::Hello)
    );
    assert_eq!(
        deliver(&mut s, &mut d, &Message::HaveAll),
        Ok(Received::Established)
    );
    assert!(d.is_established() && s.is_established());
    assert_eq!(d.layout(), Some(Layout::new(LEN, PIECE).unwrap()));
    deliver(&mut d, &mut s, &Message::Interested).unwrap();
    deliver(&mut s, &mut d, &Message::Unchoke).unwrap();
    (d, s)
}

#[test]
fn a_whole_transfer_follows_the_rules() {
    let (mut d, mut s) = established();
    let data = vec![7u8; PIECE as usize];
    let last = vec![7u8; 100];
    for piece in 0..10 {
        deliver(&mut d, &mut s, &Message::Request { piece }).unwrap();
    }
    assert_eq!(d.our_requests().count(), 10);
    assert_eq!(s.peer_requests().count(), 10);
    for piece in 0..9 {
        deliver(&mut s, &mut d, &Message::Piece { piece, data: &data }).unwrap();
    }
    deliver(
        &mut s,
        &mut d,
        &Message::Piece {
            piece: 9,
            data: &last,
        },
    )
    .unwrap();
    assert_eq!(d.our_requests().count(), 0);
    assert_eq!(s.peer_requests().count(), 0);
    deliver(&mut d, &mut s, &Message::NotInterested).unwrap();
    assert_eq!(
        deliver(
            &mut d,
            &mut s,
            &Message::Close {
                code: CloseCode::Normal,
                text: "done"
            }
        ),
        Ok(Received::Closed)
    );
    assert!(d.is_closed() && s.is_closed());
    assert_eq!(recv(&mut s, &Message::KeepAlive), Ok(Received::Ignored));
}

#[test]
fn deny_ends_the_connection() {
    let mut d = ConnectionState::new(Role::Initiator);
    let mut s = ConnectionState::new(Role::Responder);
    deliver(&mut d, &mut s, &Message::Hello(Hello::new(id()))).unwrap();
    deliver(&mut d, &mut s, &Message::HaveNone).unwrap();
    let deny = Message::Deny {
        reason: DenyReason::NotFound,
        text: "",
    };
    assert_eq!(deliver(&mut s, &mut d, &deny), Ok(Received::Denied));
    assert!(d.is_closed() && s.is_closed());
}

#[test]
fn first_message_other_than_hello_is_unexpected() {
    let mut s = ConnectionState::new(Role::Responder);
    assert_eq!(
        code(recv(&mut s, &Message::Interested)),
        CloseCode::UnexpectedMessage
    );
    let mut s = ConnectionState::new(Role::Responder);
    let deny = Message::Deny {
        reason: DenyReason::Busy,
        text: "",
    };
    assert_eq!(code(recv(&mut s, &deny)), CloseCode::UnexpectedMessage);
}

#[test]
fn second_hello_is_unexpected() {
    let (mut d, mut s) = established();
    assert_eq!(
        code(recv(&mut s, &Message::Hello(Hello::new(id())))),
        CloseCode::UnexpectedMessage
    );
    assert_eq!(
        code(recv(&mut d, &Message::Hello(responder_hello()))),
        CloseCode::UnexpectedMessage
    );
}

#[test]
fn availability_must_follow_hello_and_nowhere_else() {
    let mut s = ConnectionState::new(Role::Responder);
    recv(&mut s, &Message::Hello(Hello::new(id()))).unwrap();
    assert_eq!(
        code(recv(&mut s, &Message::Interested)),
        CloseCode::UnexpectedMessage
    );
    let (mut d, _) = established();
    assert_eq!(
        code(recv(&mut d, &Message::HaveAll)),
        CloseCode::UnexpectedMessage
    );
    let bf = Bitfield::new(10).unwrap();
    assert_eq!(
        code(recv(&mut d, &bf.to_message())),
        CloseCode::UnexpectedMessage
    );
}

#[test]
fn bitfield_of_the_wrong_length_is_rejected() {
    let mut d = ConnectionState::new(Role::Initiator);
    d.on_send(&Message::Hello(Hello::new(id()))).unwrap();
    d.on_send(&Message::HaveNone).unwrap();
    recv(&mut d, &Message::Hello(responder_hello())).unwrap();
    let bf = Bitfield::full(11).unwrap();
    assert_eq!(code(recv(&mut d, &bf.to_message())), CloseCode::BadBitfield);
}

#[test]
fn pieces_announced_without_a_layout_are_a_bad_bitfield() {
    let mut s = ConnectionState::new(Role::Responder);
    recv(&mut s, &Message::Hello(Hello::new(id()))).unwrap();
    assert_eq!(
        code(recv(&mut s, &Message::HaveAll)),
        CloseCode::BadBitfield
    );
}

#[test]
fn initiator_bitfield_is_checked_against_its_hello_layout() {
    let mut s = ConnectionState::new(Role::Responder);
    recv(&mut s, &Message::Hello(responder_hello())).unwrap();
    let mut bf = Bitfield::new(10).unwrap();
    bf.set(3);
    assert_eq!(recv(&mut s, &bf.to_message()), Ok(Received::Ok));
    s.on_send(&Message::Hello(responder_hello())).unwrap();
    s.on_send(&Message::HaveAll).unwrap();
    assert!(s.is_established());
}

#[test]
fn responder_hello_that_does_not_match_is_a_bad_hello() {
    let wrong = [
        Hello {
            content: ContentId::of(b"other"),
            ..responder_hello()
        },
        Hello::new(id()),
        Hello {
            capability: b"cap",
            ..responder_hello()
        },
    ];
    for h in wrong {
        let mut d = ConnectionState::new(Role::Initiator);
        d.on_send(&Message::Hello(Hello::new(id()))).unwrap();
        d.on_send(&Message::HaveNone).unwrap();
        assert_eq!(
            code(recv(&mut d, &Message::Hello(h.clone()))),
            CloseCode::BadHello,
            "{h:?}"
        );
    }
    // The initiator gave a layout; the responder's contradicts it.
    let mut d = ConnectionState::new(Role::Initiator);
    let with_layout = Hello {
        content_len: Some(LEN + 1),
        ..responder_hello()
    };
    d.on_send(&Message::Hello(with_layout)).unwrap();
    d.on_send(&Message::HaveNone).unwrap();
    assert_eq!(
        code(recv(&mut d, &Message::Hello(responder_hello()))),
        CloseCode::BadHello
    );
}

#[test]
fn initiator_must_wait_for_the_responder_hello() {
    let mut s = ConnectionState::new(Role::Responder);
    recv(&mut s, &Message::Hello(Hello::new(id()))).unwrap();
    recv(&mut s, &Message::HaveNone).unwrap();
    assert_eq!(
        code(recv(&mut s, &Message::Interested)),
        CloseCode::UnexpectedMessage
    );
}

#[test]
fn piece_indices_beyond_the_content_are_out_of_range() {
    let (mut d, s) = established();
    for msg in [
        Message::Request { piece: 10 },
        Message::Have { piece: 10 },
        Message::Cancel { piece: 10 },
        Message::OutboardRequest { first: 8, count: 3 },
    ] {
        assert_eq!(
            code(recv(&mut s.clone(), &msg)),
            CloseCode::PieceOutOfRange,
            "{msg:?}"
        );
    }
    let data = [0u8; 1];
    assert_eq!(
        code(recv(
            &mut d,
            &Message::Piece {
                piece: 10,
                data: &data
            }
        )),
        CloseCode::PieceOutOfRange
    );
}

#[test]
fn piece_data_of_the_wrong_length_is_rejected() {
    let (mut d, mut s) = established();
    deliver(&mut d, &mut s, &Message::Request { piece: 9 }).unwrap();
    deliver(&mut d, &mut s, &Message::Request { piece: 0 }).unwrap();
    let full = vec![0u8; PIECE as usize];
    // The last piece is 100 bytes, not a whole piece.
    assert_eq!(
        code(recv(
            &mut d.clone(),
            &Message::Piece {
                piece: 9,
                data: &full
            }
        )),
        CloseCode::WrongPieceLength
    );
    assert_eq!(
        code(recv(
            &mut d,
            &Message::Piece {
                piece: 0,
                data: &full[1..]
            }
        )),
        CloseCode::WrongPieceLength
    );
}

#[test]
fn piece_or_reject_that_was_not_requested_is_rejected() {
    let (mut d, _) = established();
    let data = vec![0u8; PIECE as usize];
    assert_eq!(
        code(recv(
            &mut d.clone(),
            &Message::Piece {
                piece: 1,
                data: &data
            }
        )),
        CloseCode::UnrequestedPiece
    );
    let reject = Message::Reject {
        piece: 1,
        reason: RejectReason::Choked,
    };
    assert_eq!(code(recv(&mut d, &reject)), CloseCode::UnrequestedPiece);
}

#[test]
fn a_piece_answered_twice_is_unrequested_the_second_time() {
    let (mut d, mut s) = established();
    deliver(&mut d, &mut s, &Message::Request { piece: 2 }).unwrap();
    let data = vec![0u8; PIECE as usize];
    let piece = Message::Piece {
        piece: 2,
        data: &data,
    };
    deliver(&mut s, &mut d, &piece).unwrap();
    assert_eq!(code(recv(&mut d, &piece)), CloseCode::UnrequestedPiece);
}

#[test]
fn cancelled_request_is_still_answered_once() {
    let (mut d, mut s) = established();
    deliver(&mut d, &mut s, &Message::Request { piece: 4 }).unwrap();
    deliver(&mut d, &mut s, &Message::Cancel { piece: 4 }).unwrap();
    assert_eq!(s.peer_requests().collect::<Vec<_>>(), [4]);
    let data = vec![0u8; PIECE as usize];
    // The piece was already on its way: it is the answer.
    deliver(
        &mut s,
        &mut d,
        &Message::Piece {
            piece: 4,
            data: &data,
        },
    )
    .unwrap();
    // A cancel for a piece with no outstanding request is ignored.
    assert_eq!(
        deliver(&mut d, &mut s, &Message::Cancel { piece: 4 }),
        Ok(Received::Ok)
    );
}

#[test]
fn more_than_the_maximum_outstanding_requests_is_too_many() {
    let layout_len = u64::from(MAX_OUTSTANDING_REQUESTS + 5) * u64::from(PIECE);
    let hello = Hello {
        piece_size: Some(PIECE),
        content_len: Some(layout_len),
        ..Hello::new(id())
    };
    let mut s = ConnectionState::new(Role::Responder);
    recv(&mut s, &Message::Hello(Hello::new(id()))).unwrap();
    recv(&mut s, &Message::HaveNone).unwrap();
    s.on_send(&Message::Hello(hello)).unwrap();
    s.on_send(&Message::HaveAll).unwrap();
    s.on_send(&Message::Unchoke).unwrap();
    for piece in 0..MAX_OUTSTANDING_REQUESTS {
        assert_eq!(recv(&mut s, &Message::Request { piece }), Ok(Received::Ok));
    }
    assert_eq!(
        code(recv(
            &mut s,
            &Message::Request {
                piece: MAX_OUTSTANDING_REQUESTS
            }
        )),
        CloseCode::TooManyRequests
    );
}

#[test]
fn duplicate_request_is_a_protocol_violation() {
    let (_, mut s) = established();
    recv(&mut s, &Message::Request { piece: 1 }).unwrap();
    assert_eq!(
        code(recv(&mut s, &Message::Request { piece: 1 })),
        CloseCode::ProtocolViolation
    );
}

#[test]
fn request_while_choking_is_answered_with_reject_not_a_close() {
    let (mut d, mut s) = established();
    deliver(&mut d, &mut s, &Message::Request { piece: 0 }).unwrap();
    // The choke crosses a second request on the wire.
    s.on_send(&Message::Choke).unwrap();
    d.on_send(&Message::Request { piece: 1 }).unwrap();
    recv(&mut d, &Message::Choke).unwrap();
    assert_eq!(
        recv(&mut s, &Message::Request { piece: 1 }),
        Ok(Received::RequestWhileChoking)
    );
    for piece in s.peer_requests().collect::<Vec<_>>() {
        let reject = Message::Reject {
            piece,
            reason: RejectReason::Choked,
        };
        deliver(&mut s, &mut d, &reject).unwrap();
    }
    assert_eq!(d.our_requests().count(), 0);
    // And the choked side may not request any more.
    assert!(d.on_send(&Message::Request { piece: 2 }).is_err());
}

#[test]
fn outboard_requests_are_bounded_and_matched() {
    let (mut d, mut s) = established();
    for _ in 0..MAX_OUTSTANDING_OUTBOARD_REQUESTS {
        deliver(
            &mut d,
            &mut s,
            &Message::OutboardRequest {
                first: 0,
                count: 10,
            },
        )
        .unwrap();
    }
    assert!(d
        .on_send(&Message::OutboardRequest { first: 0, count: 1 })
        .is_err());
    assert_eq!(
        code(recv(
            &mut s.clone(),
            &Message::OutboardRequest { first: 0, count: 1 }
        )),
        CloseCode::TooManyRequests
    );
    let cvs = vec![1u8; 10 * CV_LEN];
    deliver(
        &mut s,
        &mut d,
        &Message::OutboardResponse {
            first: 0,
            cvs: &cvs,
        },
    )
    .unwrap();
    // "Cannot give them now" answers a request too.
    deliver(
        &mut s,
        &mut d,
        &Message::OutboardResponse { first: 0, cvs: &[] },
    )
    .unwrap();
    // A response of another size matches no request.
    assert_eq!(
        code(recv(
            &mut d,
            &Message::OutboardResponse {
                first: 0,
                cvs: &cvs[..CV_LEN]
            }
        )),
        CloseCode::UnexpectedMessage
    );
}

#[test]
fn layout_gives_piece_lengths() {
    let l = Layout::new(LEN, PIECE).unwrap();
    assert_eq!(l.num_pieces(), 10);
    assert_eq!(l.piece_len(0), Some(u64::from(PIECE)));
    assert_eq!(l.piece_len(9), Some(100));
    assert_eq!(l.piece_len(10), None);
    assert_eq!(Layout::new(0, PIECE).unwrap().num_pieces(), 0);
    assert!(Layout::new(LEN, 3000).is_err());
    assert!(Layout::new(u64::MAX, PIECE).is_err());
}

mod random {
    use super::*;
    use proptest::prelude::*;

    static DATA: [u8; PIECE as usize + 1] = [0; PIECE as usize + 1];

    fn message() -> impl Strategy<Value = Message<'static>> {
        let data = &DATA[..];
        let piece = 0..12u32;
        prop_oneof![
            piece.clone().prop_map(|piece| Message::Request { piece }),
            piece.clone().prop_map(|piece| Message::Cancel { piece }),
            piece.clone().prop_map(|piece| Message::Have { piece }),
            (piece.clone(), 0..=data.len()).prop_map(move |(piece, n)| Message::Piece {
                piece,
                data: &data[..n.max(1)],
            }),
            piece.prop_map(|piece| Message::Reject {
                piece,
                reason: RejectReason::Choked
            }),
            Just(Message::Choke),
            Just(Message::Unchoke),
            Just(Message::Interested),
            Just(Message::HaveAll),
            Just(Message::Hello(Hello::new(id()))),
            (0..12u32, 0..4u32).prop_map(|(first, count)| Message::OutboardRequest {
                first,
                count: count.max(1)
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Whatever a peer sends, the checker never panics, stops at the first
        /// violation with a close code, and never tracks more than the limits allow.
        #[test]
        fn random_peer_messages_are_checked_without_panics(
            seq in proptest::collection::vec(message(), 0..300),
        ) {
            let (_, mut s) = established();
            for msg in &seq {
                match s.on_recv(msg) {
                    Ok(_) => {
                        prop_assert!(s.peer_requests().count() as u32 <= MAX_OUTSTANDING_REQUESTS);
                    }
                    Err(e) => {
                        prop_assert_ne!(e.close_code(), CloseCode::Normal);
                        break;
                    }
                }
            }
        }
    }
}
