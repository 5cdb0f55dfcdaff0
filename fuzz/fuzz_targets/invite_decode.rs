//! Decodes arbitrary input as an invite. Whatever decodes must re-encode to the
//! same bytes (the encoding is canonical), and checking its signature must not
//! panic whatever the key and signature bytes are.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shoal_core::invite::Invite;

fuzz_target!(|data: &[u8]| {
    if let Ok(invite) = Invite::decode(data) {
        assert_eq!(invite.encode(), data, "decoding is not canonical");
        let _ = invite.verify_signature();
        let _ = invite.issuer_peer();
    }
});
