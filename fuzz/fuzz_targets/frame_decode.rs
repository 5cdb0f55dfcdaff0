//! Decodes frames from arbitrary bytes, as a stream: every frame that decodes must
//! re-encode to exactly its own bytes (the encoding is canonical) and decode again to
//! an equal message. The decoded messages are also fed to a responder's
//! `ConnectionState`, which must never panic, and to a folder session's
//! `FolderState` over a small manifest (the first frame's bytes choose its file
//! sizes), which must never panic either. Errors and "need more bytes" end the
//! stream.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shoal_core::proto::{
    decode_frame, decode_header, decode_piece_prefix, encode, part_layout, ConnectionState,
    FolderState, Hello, Message, MessageType, Received, Role, MAX_PART_FILE, MAX_WHOLE_FILE,
    MIN_PIECE_SIZE,
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
    // A folder of up to 16 files: empty, small, exactly whole, one byte over
    // (a part file of 5 pieces, the last of 1 byte), a part file of a few
    // pieces, the largest part file, one byte over that (no part file).
    let sizes: Vec<u64> = data
        .iter()
        .take(16)
        .map(|b| match b % 7 {
            0 => 0,
            1 => u64::from(*b),
            2 => u64::from(MAX_WHOLE_FILE),
            3 => u64::from(MAX_WHOLE_FILE) + 1,
            4 => 3 * u64::from(MAX_WHOLE_FILE) + u64::from(*b),
            5 => MAX_PART_FILE,
            _ => MAX_PART_FILE + 1,
        })
        .collect();
    let mut folder = FolderState::new(sizes.clone().into());
    let mut bits = vec![0xffu8; sizes.len().div_ceil(8)];
    if let Some(last) = bits.last_mut() {
        *last &= 0xffu8 << ((8 - sizes.len() % 8) % 8);
    }
    let _ = folder.on_send(&Message::FileBitfield {
        num_files: sizes.len() as u32,
        bits: &bits,
    });
    let mut folder_ok = true;
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
        if folder_ok {
            if folder.on_recv(&msg).is_err() {
                folder_ok = false;
            } else if let Message::Request { piece } = msg {
                // Answer as a driver would: the file's exact bytes.
                let len = sizes[piece as usize] as usize;
                let data = vec![0u8; len];
                folder
                    .on_send(&Message::Piece { piece, data: &data })
                    .expect("a checked request can be answered with the whole file");
            } else if let Message::FileOutboardRequest { file } = msg {
                // Every piece's chaining value, as a driver that has the file.
                let (_, n) = part_layout(sizes[file as usize]).expect("a part file has a layout");
                let cvs = vec![0u8; n as usize * 32];
                folder
                    .on_send(&Message::FileOutboard { file, cvs: &cvs })
                    .expect("a checked outboard request can be answered");
            } else if let Message::PartRequest { file, piece } = msg {
                let size = sizes[file as usize];
                let (ps, _) = part_layout(size).expect("a part file has a layout");
                let start = u64::from(piece) * u64::from(ps);
                let data = vec![0u8; (size - start).min(u64::from(ps)) as usize];
                folder
                    .on_send(&Message::Part { file, piece, data: &data })
                    .expect("a checked part request can be answered with the piece");
            }
        }
        rest = &rest[used..];
    }
});
