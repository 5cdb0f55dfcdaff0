//! Decodes frames from arbitrary bytes, as a stream: every frame that decodes must
//! re-encode to exactly its own bytes (the encoding is canonical) and decode again to
//! an equal message. The decoded messages are also fed to a responder's
//! `ConnectionState`, which must never panic. Errors and "need more bytes" end the
//! stream.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shoal_core::proto::{
    decode_frame, decode_header, decode_piece_prefix, encode, ConnectionState, Hello, Message,
    MessageType, Received, Role, MIN_PIECE_SIZE,
};

fuzz_target!(|data: &[u8]| {
    // The early piece decoder (the node reads piece data into place with it)
    // agrees with the whole-frame decoder on every complete Piece frame.
    if let Ok(Some(h)) = decode_header(data) {
        if h.kind == MessageType::Piece && data.len() >= h.frame_len {
            match decode_frame(data) {
                Ok(Some((Message::Piece { piece, data: d }, _))) => {
                    let p = decode_piece_prefix(data)
                        .expect("a valid piece frame has a valid prefix")
                        .expect("a whole frame holds its prefix");
                    assert_eq!((p.piece, p.data_len), (piece, d.len()));
                }
                Err(_) => assert!(decode_piece_prefix(data).is_err()),
                _ => {}
            }
        }
    }
    let mut rest = data;
    let mut conn = ConnectionState::new(Role::Responder);
    let mut conn_ok = true;
    while let Ok(Some((msg, used))) = decode_frame(rest) {
        assert!(used > 0 && used <= rest.len());
        let mut again = Vec::new();
        encode(&msg, &mut again).expect("a decoded message must encode");
        assert_eq!(&again[..], &rest[..used], "encoding is not canonical");
        let (back, n) = decode_frame(&again)
            .expect("re-encoded frame must decode")
            .expect("re-encoded frame is complete");
        assert_eq!(n, again.len());
        assert_eq!(back, msg);
        if conn_ok {
            match conn.on_recv(&msg) {
                // Accept with a small layout (the hello's, when it gave one) so that
                // the rules after the handshake get exercised too.
                Ok(Received::Hello) => {
                    if let Message::Hello(h) = &msg {
                        let reply = Hello {
                            piece_size: h.piece_size.or(Some(MIN_PIECE_SIZE)),
                            content_len: h.content_len.or(Some(10 * u64::from(MIN_PIECE_SIZE))),
                            ..Hello::new(h.content)
                        };
                        let _ = conn.on_send(&Message::Hello(reply));
                        let _ = conn.on_send(&Message::HaveAll);
                        let _ = conn.on_send(&Message::Unchoke);
                    }
                }
                Ok(_) => {}
                Err(_) => conn_ok = false,
            }
        }
        rest = &rest[used..];
    }
});
