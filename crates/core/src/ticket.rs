//! Tickets: everything needed to fetch some content, as one line of text.
//!
//! A ticket names the content (its id and kind), lists peers that provide it
//! with addresses to reach them, and may carry a capability (an opaque
//! credential for private shares). Its text form is
//!
//! ```text
//! shoal1 <base32 of (body || checksum)>
//! ```
//!
//! in lowercase RFC 4648 base32 without padding. Parsing accepts either case and
//! ignores whitespace anywhere, so a ticket broken across lines by a mail
//! client or a chat window still parses. The checksum catches typos and
//! truncation before anything else is looked at.
//!
//! # Body (version 1)
//!
//! ```text
//! version          1 byte, 1
//! id               32 bytes
//! kind             1 byte (0 file, 1 collection)
//! provider count   varint, at most MAX_PROVIDERS
//! each provider:
//!   peer id        varint length + bytes (libp2p PeerId)
//!   addr count     varint, at most MAX_ADDRS_PER_PROVIDER
//!   each addr      varint length + bytes (multiaddr)
//! capability       1 byte flag (0 none, 1 present), then if present
//!                  varint length + bytes, at most MAX_CAPABILITY_LEN
//! name             optional: absent (the body ends), or varint length +
//!                  UTF-8, one plain file name of at most MAX_NAME_LEN bytes
//! ```
//!
//! The name is what the sharer called the file or folder: `shoal get` saves
//! the content under it unless told otherwise. It must be a single plain path
//! component (no `/`, `\`, NUL or control characters, not `.` or `..`); a
//! ticket with any other name is refused as a whole. Tickets without a name
//! (the body ends after the capability) remain valid.
//!
//! followed by the checksum: the first 4 bytes of
//! BLAKE3(`"shoal-ticket"` || body).

use std::fmt;
use std::str::FromStr;

use data_encoding::{BASE32_NOPAD, HEXLOWER};
use libp2p_identity::PeerId;
use multiaddr::Multiaddr;

use crate::id::{ContentId, Kind, ID_LEN};
use crate::wire::{Reader, WireError, Writer};

/// What every ticket starts with.
pub const PREFIX: &str = "shoal1";

/// The ticket body version this code reads and writes.
pub const VERSION: u8 = 1;

/// Longest ticket text, in characters, prefix included and whitespace not
/// counted. Checked before anything is decoded; it is the limit that binds in
/// practice (the per-field limits below would allow more together).
pub const MAX_TICKET_CHARS: usize = 4096;

/// Most providers one ticket may list.
pub const MAX_PROVIDERS: usize = 16;

/// Most addresses one provider may list.
pub const MAX_ADDRS_PER_PROVIDER: usize = 8;

/// Longest encoded multiaddr, in bytes.
pub const MAX_ADDR_LEN: usize = 128;

/// Longest encoded peer id, in bytes (an ed25519 peer id takes 38).
pub const MAX_PEER_ID_LEN: usize = 64;

/// Largest capability, in bytes.
pub const MAX_CAPABILITY_LEN: usize = 1024;

/// Longest name, in bytes (a file name's limit on common file systems).
pub const MAX_NAME_LEN: usize = crate::manifest::MAX_COMPONENT_LEN;

/// Length of the checksum that ends the binary form.
pub const CHECKSUM_LEN: usize = 4;

/// Domain separation for the checksum hash.
const CHECKSUM_DOMAIN: &[u8] = b"shoal-ticket";

/// Smallest body: version, id, kind, zero providers, no capability.
const MIN_BODY_LEN: usize = 1 + ID_LEN + 1 + 1 + 1;

/// Characters of base32 needed for the smallest body and its checksum.
const MIN_DATA_CHARS: usize = ((MIN_BODY_LEN + CHECKSUM_LEN) * 8).div_ceil(5);

/// A peer that provides the content, and where to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provider {
    pub peer: PeerId,
    pub addrs: Vec<Multiaddr>,
}

/// What to fetch, from whom, and with which credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The content: a file's BLAKE3 or a collection's manifest id.
    pub id: ContentId,
    /// Whether `id` names a file or a collection.
    pub kind: Kind,
    /// Peers known to provide the content; may be empty (then the content is
    /// looked up by id).
    pub providers: Vec<Provider>,
    /// An opaque credential for private shares.
    pub capability: Option<Vec<u8>>,
    /// What the sharer called the file or folder: one plain file name (see
    /// [`crate::manifest::is_plain_name`]), at most [`MAX_NAME_LEN`] bytes.
    pub name: Option<String>,
}

/// Why a string is not a usable ticket. Each message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("not a shoal ticket: it should start with {PREFIX}")]
    NotATicket,
    #[error("the ticket has an invalid character {ch:?} at position {pos} (counting from 1); tickets use only the letters a-z and the digits 2-7: copy it again")]
    InvalidChar { ch: char, pos: usize },
    #[error("the ticket is longer than {MAX_TICKET_CHARS} characters; copy only the ticket")]
    TooLong,
    #[error("the ticket is too short ({chars} characters after {PREFIX}, at least {MIN_DATA_CHARS} needed): it was cut off; copy all of it")]
    TooShort { chars: usize },
    #[error("the ticket's checksum does not match: it was mistyped or cut off; copy it again")]
    Checksum,
    #[error("ticket version {0} is not supported by this shoal (it reads version {VERSION}); upgrade shoal")]
    UnsupportedVersion(u8),
    #[error("the ticket names an unknown kind of content (code {0}); upgrade shoal")]
    UnknownKind(u8),
    #[error("the ticket lists {count} providers, more than the limit of {MAX_PROVIDERS}; make a ticket with fewer")]
    TooManyProviders { count: u64 },
    #[error("a provider in the ticket has {count} addresses, more than the limit of {MAX_ADDRS_PER_PROVIDER}; make a ticket with fewer")]
    TooManyAddrs { count: u64 },
    #[error("the ticket's capability is {len} bytes, more than the limit of {MAX_CAPABILITY_LEN}; ask the sharer for a new ticket")]
    CapabilityTooLarge { len: u64 },
    #[error("the ticket holds an invalid peer id ({0}); ask the sharer for a new ticket")]
    BadPeerId(String),
    #[error("the ticket holds an invalid address ({0}); ask the sharer for a new ticket")]
    BadMultiaddr(String),
    #[error("the ticket's capability flag is {0}, not 0 or 1; ask the sharer for a new ticket")]
    BadCapabilityFlag(u8),
    #[error("the ticket's name {0:?} is not one plain file name (no '/', '\\', '..' or control characters, at most {MAX_NAME_LEN} bytes); ask the sharer for a new ticket")]
    BadName(String),
    #[error("the ticket is malformed ({0}); ask the sharer for a new ticket")]
    Malformed(#[from] WireError),
}

fn checksum(body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut h = blake3::Hasher::new();
    h.update(CHECKSUM_DOMAIN);
    h.update(body);
    let mut out = [0u8; CHECKSUM_LEN];
    out.copy_from_slice(&h.finalize().as_bytes()[..CHECKSUM_LEN]);
    out
}

/// Refuses a name that is not one plain file name of at most [`MAX_NAME_LEN`] bytes.
fn check_name(name: &str) -> Result<(), TicketError> {
    if name.len() <= MAX_NAME_LEN && crate::manifest::is_plain_name(name) {
        Ok(())
    } else {
        Err(TicketError::BadName(name.chars().take(80).collect()))
    }
}

impl Ticket {
    /// The binary body (everything but the prefix and the checksum).
    pub fn to_body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(VERSION)
            .raw(self.id.as_bytes())
            .u8(self.kind.code())
            .varint(self.providers.len() as u64);
        for p in &self.providers {
            w.bytes(&p.peer.to_bytes()).varint(p.addrs.len() as u64);
            for a in &p.addrs {
                w.bytes(a.as_ref());
            }
        }
        match &self.capability {
            None => w.u8(0),
            Some(c) => w.u8(1).bytes(c),
        };
        if let Some(n) = &self.name {
            w.bytes(n.as_bytes());
        }
        w.into_vec()
    }

    /// Decodes a binary body (no prefix, no checksum), checking its version,
    /// structure and every limit. Never panics; allocates at most the limits.
    pub fn from_body(body: &[u8]) -> Result<Ticket, TicketError> {
        let mut r = Reader::new(body);
        let version = r.u8("ticket version")?;
        if version != VERSION {
            return Err(TicketError::UnsupportedVersion(version));
        }
        let id = ContentId::from_bytes(r.array::<ID_LEN>("content id")?);
        let code = r.u8("content kind")?;
        let kind = Kind::from_code(code).ok_or(TicketError::UnknownKind(code))?;
        let count = r.varint("provider count")?;
        if count > MAX_PROVIDERS as u64 {
            return Err(TicketError::TooManyProviders { count });
        }
        let mut providers = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let raw = r.bytes(MAX_PEER_ID_LEN, "peer id")?;
            let peer =
                PeerId::from_bytes(raw).map_err(|e| TicketError::BadPeerId(e.to_string()))?;
            let n = r.varint("address count")?;
            if n > MAX_ADDRS_PER_PROVIDER as u64 {
                return Err(TicketError::TooManyAddrs { count: n });
            }
            let mut addrs = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let raw = r.bytes(MAX_ADDR_LEN, "address")?;
                let addr = Multiaddr::try_from(raw.to_vec())
                    .map_err(|e| TicketError::BadMultiaddr(e.to_string()))?;
                addrs.push(addr);
            }
            providers.push(Provider { peer, addrs });
        }
        let capability = match r.u8("capability flag")? {
            0 => None,
            1 => {
                let len = r.varint("capability length")?;
                if len > MAX_CAPABILITY_LEN as u64 {
                    return Err(TicketError::CapabilityTooLarge { len });
                }
                // len <= MAX_CAPABILITY_LEN, and take() checks what is left.
                Some(r.take(len as usize, "capability")?.to_vec())
            }
            flag => return Err(TicketError::BadCapabilityFlag(flag)),
        };
        let name = if r.remaining() == 0 {
            None
        } else {
            let raw = r.bytes(MAX_NAME_LEN, "name")?;
            let name = std::str::from_utf8(raw)
                .map_err(|_| TicketError::BadName(String::from_utf8_lossy(raw).into_owned()))?;
            check_name(name)?;
            Some(name.to_owned())
        };
        r.finish()?;
        Ok(Ticket {
            id,
            kind,
            providers,
            capability,
            name,
        })
    }

    /// Checks that this ticket's text would parse back: every field within its
    /// limit and the whole within [`MAX_TICKET_CHARS`]. [`fmt::Display`] writes
    /// any ticket; call this before handing the text to someone.
    pub fn validate(&self) -> Result<(), TicketError> {
        if self.providers.len() > MAX_PROVIDERS {
            return Err(TicketError::TooManyProviders {
                count: self.providers.len() as u64,
            });
        }
        for p in &self.providers {
            if p.peer.to_bytes().len() > MAX_PEER_ID_LEN {
                return Err(TicketError::BadPeerId(format!(
                    "longer than {MAX_PEER_ID_LEN} bytes"
                )));
            }
            if p.addrs.len() > MAX_ADDRS_PER_PROVIDER {
                return Err(TicketError::TooManyAddrs {
                    count: p.addrs.len() as u64,
                });
            }
            if let Some(a) = p.addrs.iter().find(|a| a.len() > MAX_ADDR_LEN) {
                return Err(TicketError::Malformed(WireError::TooLong {
                    what: "address",
                    len: a.len() as u64,
                    max: MAX_ADDR_LEN as u64,
                }));
            }
        }
        if let Some(c) = &self.capability {
            if c.len() > MAX_CAPABILITY_LEN {
                return Err(TicketError::CapabilityTooLarge {
                    len: c.len() as u64,
                });
            }
        }
        if let Some(n) = &self.name {
            check_name(n)?;
        }
        if self.text_len() > MAX_TICKET_CHARS {
            return Err(TicketError::TooLong);
        }
        Ok(())
    }

    /// Drops what does not fit so that [`Ticket::validate`] passes: addresses
    /// and peer ids over their length limits, providers and addresses beyond
    /// their count limits, then, while the text is too long, the last address
    /// of the provider with the most, and when each has one, the last provider.
    /// Put the best providers and addresses first: they are the ones kept.
    ///
    /// Fails only if the capability is over its limit, which cannot be trimmed.
    pub fn shrink_to_fit(&mut self) -> Result<(), TicketError> {
        if let Some(c) = &self.capability {
            if c.len() > MAX_CAPABILITY_LEN {
                return Err(TicketError::CapabilityTooLarge {
                    len: c.len() as u64,
                });
            }
        }
        self.providers
            .retain(|p| p.peer.to_bytes().len() <= MAX_PEER_ID_LEN);
        self.providers.truncate(MAX_PROVIDERS);
        for p in &mut self.providers {
            p.addrs.retain(|a| a.len() <= MAX_ADDR_LEN);
            p.addrs.truncate(MAX_ADDRS_PER_PROVIDER);
        }
        while self.text_len() > MAX_TICKET_CHARS {
            let most = self
                .providers
                .iter_mut()
                // On ties max_by_key takes the last, so earlier providers keep more.
                .max_by_key(|p| p.addrs.len())
                .filter(|p| p.addrs.len() > 1);
            if let Some(p) = most {
                p.addrs.pop();
            } else if self.providers.pop().is_none() {
                // Unreachable within the limits: the largest capability alone fits.
                return Err(TicketError::TooLong);
            }
        }
        Ok(())
    }

    /// Characters of the text form.
    fn text_len(&self) -> usize {
        PREFIX.len() + ((self.to_body().len() + CHECKSUM_LEN) * 8).div_ceil(5)
    }

    /// A plain view of the ticket for JSON output (`shoal ticket inspect
    /// --json`): `version`, `id` (hex), `kind`, `providers` (`peer` in base58,
    /// `addrs` as strings), `capability` (hex or null) and `name` (or null).
    pub fn view(&self) -> TicketView {
        TicketView {
            version: VERSION,
            id: self.id,
            kind: self.kind,
            providers: self
                .providers
                .iter()
                .map(|p| ProviderView {
                    peer: p.peer.to_base58(),
                    addrs: p.addrs.iter().map(ToString::to_string).collect(),
                })
                .collect(),
            capability: self.capability.as_deref().map(|c| HEXLOWER.encode(c)),
            name: self.name.clone(),
        }
    }
}

/// What a user names to fetch: a ticket (`shoal1…`) or a bare content id
/// (64 hex digits), which carries no kind, providers or name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub id: ContentId,
    /// From a ticket; `None` for a bare id.
    pub kind: Option<Kind>,
    pub providers: Vec<Provider>,
    pub name: Option<String>,
    /// The ticket's capability (an invite), if any.
    pub capability: Option<Vec<u8>>,
}

impl FromStr for Target {
    type Err = String;

    /// Parses a ticket or a content id (surrounding whitespace ignored); the
    /// error says which it looked like and what is wrong.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        // A ticket is case-insensitive (base32): `SHOAL1…` is one too.
        if s.len() >= PREFIX.len()
            && s.is_char_boundary(PREFIX.len())
            && s[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
        {
            let t: Ticket = s.parse().map_err(|e| format!("not a valid ticket: {e}"))?;
            return Ok(Target {
                id: t.id,
                kind: Some(t.kind),
                providers: t.providers,
                name: t.name,
                capability: t.capability,
            });
        }
        match s.parse::<ContentId>() {
            Ok(id) => Ok(Target {
                id,
                kind: None,
                providers: Vec::new(),
                name: None,
                capability: None,
            }),
            Err(_) => Err(format!(
                "{s:?} is neither a ticket (starting with {PREFIX}) nor a content id (64 hex digits); paste the whole ticket"
            )),
        }
    }
}

/// The JSON shape of a ticket; see [`Ticket::view`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TicketView {
    pub version: u8,
    pub id: ContentId,
    pub kind: Kind,
    pub providers: Vec<ProviderView>,
    pub capability: Option<String>,
    pub name: Option<String>,
}

/// The JSON shape of a provider; see [`Ticket::view`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProviderView {
    pub peer: String,
    pub addrs: Vec<String>,
}

impl serde::Serialize for Ticket {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.view().serialize(s)
    }
}

impl fmt::Display for Ticket {
    /// The text form: `shoal1` then lowercase base32 of body and checksum.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut data = self.to_body();
        data.extend_from_slice(&checksum(&data));
        f.write_str(PREFIX)?;
        f.write_str(&BASE32_NOPAD.encode(&data).to_ascii_lowercase())
    }
}

/// Characters that copying and pasting can insert into a ticket: line breaks,
/// spaces (including the non-breaking ones some chat apps use) and the
/// invisible zero-width space and byte-order mark.
fn is_ignored(ch: char) -> bool {
    ch.is_whitespace() || matches!(ch, '\u{200b}' | '\u{feff}')
}

impl FromStr for Ticket {
    type Err = TicketError;

    /// Parses the text form, in this order: prefix, characters and length,
    /// checksum, version, then structure; so a typo anywhere, even in the
    /// version, is reported as a typo.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let prefix = PREFIX.as_bytes();
        // Upper-case symbols as BASE32_NOPAD reads them; at most
        // MAX_TICKET_CHARS of them whatever the input's length.
        let mut symbols: Vec<u8> = Vec::new();
        let mut seen = 0usize;
        for (i, ch) in s.chars().enumerate() {
            if is_ignored(ch) {
                continue;
            }
            if seen < prefix.len() {
                if !prefix
                    .get(seen)
                    .is_some_and(|&p| ch.eq_ignore_ascii_case(&char::from(p)))
                {
                    return Err(TicketError::NotATicket);
                }
            } else {
                if seen >= MAX_TICKET_CHARS {
                    return Err(TicketError::TooLong);
                }
                let up = ch.to_ascii_uppercase();
                if !matches!(up, 'A'..='Z' | '2'..='7') {
                    return Err(TicketError::InvalidChar { ch, pos: i + 1 });
                }
                // An ASCII character, so the cast is exact.
                symbols.push(up as u8);
            }
            seen += 1;
        }
        if seen < prefix.len() {
            return Err(TicketError::NotATicket);
        }
        if symbols.len() < MIN_DATA_CHARS {
            return Err(TicketError::TooShort {
                chars: symbols.len(),
            });
        }
        // With only valid symbols, decoding fails for an impossible length (a
        // character lost or added) or for non-zero unused bits in the last
        // character (a typo there): both are what the checksum would catch.
        let data = BASE32_NOPAD
            .decode(&symbols)
            .map_err(|_| TicketError::Checksum)?;
        let split = data
            .len()
            .checked_sub(CHECKSUM_LEN)
            .ok_or(TicketError::Checksum)?;
        let (body, sum) = data.split_at(split);
        if checksum(body) != sum {
            return Err(TicketError::Checksum);
        }
        Ticket::from_body(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_ticket_in_upper_case_is_a_ticket() {
        let t = ticket(1, None);
        let text = t.to_string().to_uppercase();
        let target: Target = text.parse().expect("an upper-case ticket");
        assert_eq!(target.id, t.id);
        assert_eq!(target.kind, Some(t.kind));
        assert!(format!("  {text}\n").parse::<Target>().is_ok());
    }
    use libp2p_identity::Keypair;
    use proptest::prelude::*;

    fn peer(seed: u8) -> PeerId {
        Keypair::ed25519_from_bytes([seed; 32])
            .unwrap()
            .public()
            .to_peer_id()
    }

    fn ticket(providers: usize, capability: Option<Vec<u8>>) -> Ticket {
        Ticket {
            id: ContentId::of(b"hello"),
            kind: Kind::Collection,
            providers: (0..providers)
                .map(|i| Provider {
                    peer: peer(i as u8),
                    addrs: (0..i)
                        .map(|j| {
                            format!("/ip4/192.168.1.{j}/udp/{}/quic-v1", 4000 + i)
                                .parse()
                                .unwrap()
                        })
                        .collect(),
                })
                .collect(),
            capability,
            name: None,
        }
    }

    /// A ticket's text for an arbitrary body, with a correct checksum.
    fn text_of_body(body: &[u8]) -> String {
        let mut data = body.to_vec();
        data.extend_from_slice(&checksum(body));
        format!(
            "{PREFIX}{}",
            BASE32_NOPAD.encode(&data).to_ascii_lowercase()
        )
    }

    #[test]
    fn round_trips_with_zero_one_and_several_providers() {
        for (n, cap) in [
            (0, None),
            (1, None),
            (3, None),
            (0, Some(vec![])),
            (1, Some(vec![1, 2, 3])),
            (4, Some(vec![9; MAX_CAPABILITY_LEN])),
        ] {
            let t = ticket(n, cap);
            t.validate().unwrap();
            let text = t.to_string();
            assert!(text.starts_with("shoal1"), "{text}");
            assert!(
                text[PREFIX.len()..]
                    .chars()
                    .all(|c| matches!(c, 'a'..='z' | '2'..='7')),
                "{text}"
            );
            assert_eq!(text.parse::<Ticket>().unwrap(), t);
        }
    }

    #[test]
    fn smallest_ticket_is_64_characters_after_the_prefix() {
        let text = ticket(0, None).to_string();
        assert_eq!(text.len(), PREFIX.len() + MIN_DATA_CHARS);
        assert_eq!(MIN_DATA_CHARS, 64);
    }

    #[test]
    fn every_single_character_flip_is_a_checksum_error() {
        let text = ticket(2, Some(b"cap".to_vec())).to_string();
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
        for pos in PREFIX.len()..text.len() {
            let mut bytes = text.clone().into_bytes();
            let at = ALPHABET.iter().position(|&c| c == bytes[pos]).unwrap();
            for step in [1, 16] {
                bytes[pos] = ALPHABET[(at + step) % ALPHABET.len()];
                let flipped = String::from_utf8(bytes.clone()).unwrap();
                assert_eq!(
                    flipped.parse::<Ticket>(),
                    Err(TicketError::Checksum),
                    "flip at {pos} by {step}"
                );
            }
        }
    }

    #[test]
    fn dropped_or_added_character_is_a_checksum_error() {
        let text = ticket(1, None).to_string();
        for pos in [PREFIX.len(), text.len() / 2, text.len() - 1] {
            let mut dropped = text.clone();
            dropped.remove(pos);
            assert_eq!(dropped.parse::<Ticket>(), Err(TicketError::Checksum));
            let mut added = text.clone();
            added.insert(pos, 'q');
            assert_eq!(added.parse::<Ticket>(), Err(TicketError::Checksum));
        }
    }

    #[test]
    fn upper_case_ticket_parses() {
        let t = ticket(2, Some(vec![7]));
        assert_eq!(t.to_string().to_uppercase().parse::<Ticket>().unwrap(), t);
    }

    #[test]
    fn ticket_broken_across_lines_parses() {
        let t = ticket(3, None);
        let text = t.to_string();
        let mut broken = String::from("  \n");
        for (i, c) in text.chars().enumerate() {
            broken.push(c);
            match i % 13 {
                2 => broken.push_str("\r\n"),
                7 => broken.push(' '),
                11 => broken.push('\t'),
                _ => {}
            }
        }
        broken.push('\n');
        assert_eq!(broken.parse::<Ticket>().unwrap(), t);
    }

    #[test]
    fn pasted_invisible_characters_are_ignored() {
        let t = ticket(1, None);
        let text = t.to_string();
        let pasted = format!(
            "\u{feff}{}\u{a0}{}\u{200b}{}\u{2028}",
            &text[..3],
            &text[3..40],
            &text[40..]
        );
        assert_eq!(pasted.parse::<Ticket>().unwrap(), t);
        // Positions count the ignored characters, as the user sees them.
        let bad = format!("\u{a0}\u{a0}{}1", &text[..10]);
        assert_eq!(
            bad.parse::<Ticket>(),
            Err(TicketError::InvalidChar { ch: '1', pos: 13 })
        );
    }

    #[test]
    fn unknown_version_with_correct_checksum_is_a_version_error() {
        let mut body = ticket(1, None).to_body();
        body[0] = 2;
        let err = text_of_body(&body).parse::<Ticket>().unwrap_err();
        assert_eq!(err, TicketError::UnsupportedVersion(2));
        assert_eq!(
            err.to_string(),
            "ticket version 2 is not supported by this shoal (it reads version 1); upgrade shoal"
        );
    }

    #[test]
    fn wrong_prefix_is_not_a_ticket() {
        let text = ticket(0, None).to_string();
        for bad in [
            String::new(),
            "shoa".into(),
            format!("shoal2{}", &text[PREFIX.len()..]),
            format!("x{text}"),
            text[PREFIX.len()..].to_owned(),
            "https://example.com".into(),
        ] {
            let err = bad.parse::<Ticket>().unwrap_err();
            assert_eq!(err, TicketError::NotATicket, "{bad:?}");
            assert_eq!(
                err.to_string(),
                "not a shoal ticket: it should start with shoal1"
            );
        }
    }

    #[test]
    fn invalid_character_is_named_with_its_position() {
        let text = ticket(0, None).to_string();
        // '1', '8', '0' and '=' look plausible but are not in the alphabet.
        for bad_char in ['1', '8', '0', '=', 'é'] {
            let mut bad = String::from(" ");
            bad.push_str(&text[..10]);
            bad.push(bad_char);
            bad.push_str(&text[11..]);
            let err = bad.parse::<Ticket>().unwrap_err();
            assert_eq!(
                err,
                TicketError::InvalidChar {
                    ch: bad_char,
                    pos: 12
                }
            );
            assert!(err.to_string().contains("at position 12"), "{err}");
        }
    }

    #[test]
    fn too_short_ticket_is_reported_as_cut_off() {
        let text = ticket(0, None).to_string();
        let cut = &text[..text.len() - 1];
        assert_eq!(
            cut.parse::<Ticket>(),
            Err(TicketError::TooShort { chars: 63 })
        );
        assert_eq!(
            "shoal1".parse::<Ticket>(),
            Err(TicketError::TooShort { chars: 0 })
        );
    }

    #[test]
    fn too_long_ticket_is_rejected_before_decoding() {
        let long = format!("shoal1{}", "a".repeat(MAX_TICKET_CHARS));
        assert_eq!(long.parse::<Ticket>(), Err(TicketError::TooLong));
        // Whitespace does not count towards the limit.
        let text = ticket(1, None).to_string();
        let padded = format!("{}{text}", " ".repeat(MAX_TICKET_CHARS * 2));
        assert!(padded.parse::<Ticket>().is_ok());
    }

    #[test]
    fn structural_errors_after_a_good_checksum_are_reported() {
        let good = ticket(1, Some(vec![1])).to_body();
        // Layout of `good`: version, id, kind, count=1, peer id len, ...
        let kind_at = 1 + ID_LEN;
        let mut body = good.clone();
        body[kind_at] = 9;
        assert_eq!(
            text_of_body(&body).parse::<Ticket>(),
            Err(TicketError::UnknownKind(9))
        );

        let mut body = good.clone();
        body[kind_at + 1] = (MAX_PROVIDERS + 1) as u8;
        assert_eq!(
            text_of_body(&body).parse::<Ticket>(),
            Err(TicketError::TooManyProviders { count: 17 })
        );

        let mut body = good.clone();
        body[kind_at + 3] ^= 0xff; // inside the peer id's multihash code
        assert!(matches!(
            text_of_body(&body).parse::<Ticket>(),
            Err(TicketError::BadPeerId(_))
        ));

        // After the capability comes the optional name: an empty one is refused,
        // and so is anything after a name.
        let mut body = good.clone();
        body.push(0);
        assert_eq!(
            text_of_body(&body).parse::<Ticket>(),
            Err(TicketError::BadName(String::new()))
        );
        let mut body = good.clone();
        body.extend_from_slice(&[1, b'a', 0]);
        assert_eq!(
            text_of_body(&body).parse::<Ticket>(),
            Err(TicketError::Malformed(WireError::Trailing(1)))
        );

        let mut body = good.clone();
        let flag_at = body.len() - 3; // flag, len=1, byte
        body[flag_at] = 5;
        assert_eq!(
            text_of_body(&body).parse::<Ticket>(),
            Err(TicketError::BadCapabilityFlag(5))
        );

        // One provider with too many addresses / an invalid address.
        let p = peer(1).to_bytes();
        let mut w = Writer::new();
        w.u8(VERSION).raw(&[0; 32]).u8(0).varint(1).bytes(&p);
        let prefix = w.into_vec();
        let mut body = prefix.clone();
        body.push(MAX_ADDRS_PER_PROVIDER as u8 + 1);
        assert_eq!(
            text_of_body(&body).parse::<Ticket>(),
            Err(TicketError::TooManyAddrs { count: 9 })
        );
        let mut body = prefix.clone();
        body.extend_from_slice(&[1, 3, 0xff, 0xff, 0xff, 0]);
        assert!(matches!(
            text_of_body(&body).parse::<Ticket>(),
            Err(TicketError::BadMultiaddr(_))
        ));
        let mut w = Writer::new();
        w.raw(&prefix)
            .varint(0)
            .u8(1)
            .varint(MAX_CAPABILITY_LEN as u64 + 1);
        assert_eq!(
            Ticket::from_body(w.as_slice()),
            Err(TicketError::CapabilityTooLarge { len: 1025 })
        );
    }

    #[test]
    fn validate_catches_tickets_that_would_not_parse() {
        let mut t = ticket(0, None);
        t.providers = (0..=MAX_PROVIDERS)
            .map(|_| ticket(1, None).providers[0].clone())
            .collect();
        assert!(matches!(
            t.validate(),
            Err(TicketError::TooManyProviders { .. })
        ));
        // Within every per-field limit, but too long as text.
        let mut t = ticket(0, Some(vec![0; MAX_CAPABILITY_LEN]));
        let addr: Multiaddr = "/dns/a-rather-long-host-name.example.org/tcp/4001"
            .parse()
            .unwrap();
        t.providers = (0..MAX_PROVIDERS as u8)
            .map(|i| Provider {
                peer: peer(i),
                addrs: vec![addr.clone(); MAX_ADDRS_PER_PROVIDER],
            })
            .collect();
        assert_eq!(t.validate(), Err(TicketError::TooLong));
        assert_eq!(t.to_string().parse::<Ticket>(), Err(TicketError::TooLong));
    }

    #[test]
    fn shrink_to_fit_keeps_the_first_providers_and_addresses() {
        let addr = |i: usize| -> Multiaddr {
            format!("/dns/host-number-{i:03}.a-rather-long-domain.example.org/tcp/4001")
                .parse()
                .unwrap()
        };
        let long_addr: Multiaddr = format!("/dns/{}/tcp/1", "x".repeat(MAX_ADDR_LEN))
            .parse()
            .unwrap();
        let mut t = ticket(0, Some(vec![0; 512]));
        t.providers = (0..MAX_PROVIDERS + 4)
            .map(|i| Provider {
                peer: peer(i as u8),
                addrs: std::iter::once(long_addr.clone())
                    .chain((0..MAX_ADDRS_PER_PROVIDER + 2).map(|j| addr(100 * i + j)))
                    .collect(),
            })
            .collect();
        let original = t.clone();
        assert!(t.validate().is_err());
        t.shrink_to_fit().unwrap();
        t.validate().unwrap();
        assert_eq!(t.to_string().parse::<Ticket>().unwrap(), t);
        assert!(
            t.to_string().len() > MAX_TICKET_CHARS - 200,
            "trimmed too much"
        );
        // What is kept is a prefix of what was given, minus the over-long address.
        assert!(!t.providers.is_empty());
        for (kept, given) in t.providers.iter().zip(&original.providers) {
            assert_eq!(kept.peer, given.peer);
            assert!(!kept.addrs.is_empty());
            assert_eq!(kept.addrs[..], given.addrs[1..=kept.addrs.len()]);
        }
        assert_eq!(t.capability, original.capability);
        let counts: Vec<usize> = t.providers.iter().map(|p| p.addrs.len()).collect();
        assert!(counts.windows(2).all(|w| w[0] >= w[1]), "{counts:?}");

        // A ticket that fits is left alone.
        let mut small = ticket(3, Some(vec![1]));
        small.shrink_to_fit().unwrap();
        assert_eq!(small, ticket(3, Some(vec![1])));

        let mut huge_cap = ticket(1, Some(vec![0; MAX_CAPABILITY_LEN + 1]));
        assert_eq!(
            huge_cap.shrink_to_fit(),
            Err(TicketError::CapabilityTooLarge { len: 1025 })
        );
    }

    #[test]
    fn json_view_has_the_documented_fields() {
        let t = ticket(2, Some(vec![0xab, 0x01]));
        let v: serde_json::Value = serde_json::to_value(&t).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["id"], ContentId::of(b"hello").to_hex());
        assert_eq!(v["kind"], "folder");
        assert_eq!(v["capability"], "ab01");
        assert_eq!(v["providers"][1]["peer"], peer(1).to_base58());
        assert_eq!(
            v["providers"][1]["addrs"][0],
            "/ip4/192.168.1.0/udp/4001/quic-v1"
        );
        assert_eq!(v["providers"][0]["addrs"], serde_json::json!([]));
        let v = serde_json::to_value(ticket(0, None)).unwrap();
        assert!(v["capability"].is_null());
        assert_eq!(v["providers"], serde_json::json!([]));
    }

    fn arb_addr() -> impl Strategy<Value = Multiaddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| format!("/ip4/{}/tcp/{port}", std::net::Ipv4Addr::from(ip))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| format!(
                "/ip6/{}/udp/{port}/quic-v1",
                std::net::Ipv6Addr::from(ip)
            )),
            ("[a-z]{1,20}\\.example", any::<u16>())
                .prop_map(|(host, port)| format!("/dns4/{host}/tcp/{port}")),
        ]
        .prop_map(|s| s.parse().unwrap())
    }

    fn arb_ticket() -> impl Strategy<Value = Ticket> {
        let provider = (any::<[u8; 32]>(), prop::collection::vec(arb_addr(), 0..4)).prop_map(
            |(seed, addrs)| Provider {
                peer: Keypair::ed25519_from_bytes(seed)
                    .unwrap()
                    .public()
                    .to_peer_id(),
                addrs,
            },
        );
        (
            any::<[u8; 32]>(),
            any::<bool>(),
            prop::collection::vec(provider, 0..5),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..200)),
            prop::option::of(
                "[a-zA-Z0-9 ._ñ日-]{1,40}"
                    .prop_filter("a plain name", |n| crate::manifest::is_plain_name(n)),
            ),
        )
            .prop_map(|(id, file, providers, capability, name)| Ticket {
                id: ContentId::from_bytes(id),
                kind: if file { Kind::File } else { Kind::Collection },
                providers,
                capability,
                name,
            })
    }

    #[test]
    fn a_target_is_a_ticket_or_a_bare_id() {
        let named = Ticket {
            name: Some("a.bin".into()),
            ..ticket(1, None)
        };
        let t: Target = format!("  {named}\n").parse().unwrap();
        assert_eq!(t.id, named.id);
        assert_eq!(t.kind, Some(named.kind));
        assert_eq!(t.providers, named.providers);
        assert_eq!(t.name.as_deref(), Some("a.bin"));
        let t: Target = named.id.to_string().parse().unwrap();
        assert_eq!(
            (t.id, t.kind, t.providers.len(), t.name),
            (named.id, None, 0, None)
        );
        let e = "shoal1zzzz".parse::<Target>().unwrap_err();
        assert!(e.starts_with("not a valid ticket: "), "{e}");
        let e = "../etc/passwd".parse::<Target>().unwrap_err();
        assert!(e.contains("neither a ticket"), "{e}");
    }

    #[test]
    fn a_name_round_trips_and_old_tickets_without_one_still_parse() {
        let plain = ticket(1, None);
        assert_eq!(plain.to_string().parse::<Ticket>(), Ok(plain.clone()));
        let named = Ticket {
            name: Some("holiday photos 日本.tar".into()),
            ..plain.clone()
        };
        assert!(named.validate().is_ok());
        let back: Ticket = named.to_string().parse().unwrap();
        assert_eq!(back.name.as_deref(), Some("holiday photos 日本.tar"));
        assert_eq!(back, named);
        assert_eq!(
            serde_json::to_value(&back).unwrap()["name"],
            "holiday photos 日本.tar"
        );
        // The body without a name is byte for byte the body before names existed.
        assert_eq!(
            named.to_body()[..plain.to_body().len()],
            plain.to_body()[..]
        );
    }

    #[test]
    fn a_ticket_naming_anything_but_one_plain_file_name_is_refused() {
        let long = "x".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/etc/passwd",
            "a\\b",
            "a\0b",
            "new\nline",
            "c1\u{85}control",
            &long,
        ] {
            let t = Ticket {
                name: Some(bad.to_string()),
                ..ticket(1, None)
            };
            assert!(
                matches!(t.validate(), Err(TicketError::BadName(_))),
                "{bad:?} passes validate"
            );
            // Written anyway (Display writes any ticket), it does not parse back.
            let err = t.to_string().parse::<Ticket>().unwrap_err();
            assert!(
                matches!(err, TicketError::BadName(_) | TicketError::Malformed(_)),
                "{bad:?}: {err:?}"
            );
            if !matches!(err, TicketError::Malformed(_)) {
                assert!(err.to_string().contains("not one plain file name"), "{err}");
            }
        }
        // Not UTF-8.
        let mut body = ticket(1, None).to_body();
        body.extend_from_slice(&[2, 0xff, 0xfe]);
        assert!(matches!(
            text_of_body(&body).parse::<Ticket>(),
            Err(TicketError::BadName(_))
        ));
    }

    proptest! {
        #[test]
        fn random_tickets_round_trip(t in arb_ticket()) {
            prop_assert!(t.validate().is_ok());
            let text = t.to_string();
            prop_assert_eq!(text.parse::<Ticket>().unwrap(), t.clone());
            prop_assert_eq!(Ticket::from_body(&t.to_body()).unwrap(), t);
        }

        #[test]
        fn parsing_random_text_never_panics(s in "\\PC{0,200}") {
            let _ = s.parse::<Ticket>();
        }

        #[test]
        fn decoding_random_bodies_never_panics(body in prop::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(t) = Ticket::from_body(&body) {
                prop_assert_eq!(Ticket::from_body(&t.to_body()).unwrap(), t);
            }
        }
    }
}
