//! Parses arbitrary input as a ticket, two ways: as text (everything from the
//! prefix to the structure), and as a bare binary body (past the checksum, which
//! random input almost never satisfies). Whatever parses must survive a round
//! trip unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shoal_core::ticket::Ticket;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(ticket) = text.parse::<Ticket>() {
            let again = ticket.to_string();
            assert_eq!(again.parse::<Ticket>().ok().as_ref(), Some(&ticket));
            assert!(ticket.validate().is_ok(), "a parsed ticket fails validate");
        }
    }
    if let Ok(ticket) = Ticket::from_body(data) {
        let body = ticket.to_body();
        assert_eq!(Ticket::from_body(&body).ok().as_ref(), Some(&ticket));
    }
});
