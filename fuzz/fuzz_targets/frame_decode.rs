//! Decodes frames from arbitrary bytes, as a stream: every frame that decodes must
//! re-encode to exactly its own bytes (the encoding is canonical) and decode again to
//! an equal message; errors and "need more bytes" end the stream. Never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shoal_core::proto::{decode_frame, encode};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
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
        rest = &rest[used..];
    }
});
