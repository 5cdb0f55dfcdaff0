//! Invites: signed, expiring, revocable capabilities to fetch private content.
//!
//! An invite is a statement signed by the sharing node's identity key: "the
//! holder (or only `recipient`) may fetch `content` until `expires_at`, at most
//! `max_uses` distinct peers". It travels in a ticket's capability slot and in
//! the transfer protocol's hello; the serving node checks it before any data
//! moves (see `docs/protocol.md`, "Capabilities"). A folder's invite covers
//! every file the folder lists.
//!
//! # Encoding (version 1)
//!
//! ```text
//! magic        4 bytes "SHIV"
//! version      1 byte, 1
//! invite id    16 bytes (random; names the invite for revocation and use counts)
//! issuer key   varint length + bytes, at most 64: the issuer's public key,
//!              libp2p protobuf encoding (Ed25519 only)
//! content      32 bytes
//! kind         1 byte (0 file, 1 collection)
//! recipient    1 byte flag (0 anyone, 1 present), then varint length + PeerId bytes (≤ 64)
//! issued at    varint, Unix seconds
//! expires at   1 byte flag (0 never, 1 present), then varint Unix seconds (> issued at)
//! max uses     1 byte flag (0 unlimited, 1 present), then varint, 1..=MAX_USES
//! signature    varint length (64) + bytes: Ed25519 over
//!              "shoal-invite-v1\0" || every byte above
//! ```
//!
//! Decoding is canonical: flags other than 0/1, trailing bytes, a signature of
//! the wrong length, an unknown kind or a zero use count are refused. Decoding
//! only checks form; [`Invite::verify_signature`] checks the signature.

use std::fmt;

use data_encoding::HEXLOWER;
use libp2p_identity::{Keypair, PeerId, PublicKey};

use crate::id::{ContentId, Kind, ID_LEN};
use crate::wire::{Reader, WireError, Writer};

/// What every encoded invite starts with.
pub const MAGIC: &[u8; 4] = b"SHIV";
/// The encoding version this code reads and writes.
pub const VERSION: u8 = 1;
/// Longest encoded invite. Fits the ticket's and the hello's capability slot.
pub const MAX_INVITE_LEN: usize = 512;
/// Largest use count an invite may carry.
pub const MAX_USES: u64 = 1_000_000;
/// Bytes of an invite id.
pub const INVITE_ID_LEN: usize = 16;
/// The domain separator the signature covers first.
const SIGNING_DOMAIN: &[u8] = b"shoal-invite-v1\0";
const MAX_KEY_LEN: usize = 64;
const MAX_PEER_LEN: usize = 64;
const SIGNATURE_LEN: usize = 64;

/// An invite's id: 16 random bytes, shown as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InviteId(pub [u8; INVITE_ID_LEN]);

impl InviteId {
    pub fn to_hex(&self) -> String {
        HEXLOWER.encode(&self.0)
    }

    /// Parses 32 hex digits (either case).
    pub fn parse(s: &str) -> Result<InviteId, InviteError> {
        let s = s.trim().to_ascii_lowercase();
        let bytes = HEXLOWER
            .decode(s.as_bytes())
            .map_err(|_| InviteError::BadId(s.clone()))?;
        let arr: [u8; INVITE_ID_LEN] = bytes.try_into().map_err(|_| InviteError::BadId(s))?;
        Ok(InviteId(arr))
    }
}

impl fmt::Display for InviteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for InviteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InviteId({})", self.to_hex())
    }
}

/// Why an invite could not be decoded or signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InviteError {
    #[error("the invite is {0} bytes, more than the limit of {MAX_INVITE_LEN}")]
    TooLong(usize),
    #[error("not an invite (wrong magic)")]
    BadMagic,
    #[error("invite version {0} is not supported by this version of shoal")]
    Version(u8),
    #[error("the invite is malformed: {0}")]
    Wire(#[from] WireError),
    #[error("the invite is malformed: {0}")]
    Malformed(&'static str),
    #[error("'{0}' is not an invite id (32 hex digits)")]
    BadId(String),
    #[error("cannot sign the invite: {0}")]
    Sign(String),
}

/// The signed content of an invite.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Invite {
    pub id: InviteId,
    /// The issuer's public key; the issuer's peer id is derived from it.
    pub issuer: PublicKey,
    pub content: ContentId,
    pub kind: Kind,
    /// Only this peer may use the invite; `None`: whoever holds it.
    pub recipient: Option<PeerId>,
    /// Unix seconds.
    pub issued_at: u64,
    /// Unix seconds after which the invite is refused; `None`: never expires.
    pub expires_at: Option<u64>,
    /// How many distinct peers may use it; `None`: unlimited.
    pub max_uses: Option<u64>,
    /// Ed25519 signature by `issuer` over the domain and the body.
    pub signature: Vec<u8>,
}

impl Invite {
    /// Makes and signs an invite with `keypair` (the issuing node's identity).
    #[allow(clippy::too_many_arguments)]
    pub fn issue(
        keypair: &Keypair,
        id: InviteId,
        content: ContentId,
        kind: Kind,
        recipient: Option<PeerId>,
        issued_at: u64,
        expires_at: Option<u64>,
        max_uses: Option<u64>,
    ) -> Result<Invite, InviteError> {
        if let Some(e) = expires_at {
            if e <= issued_at {
                return Err(InviteError::Malformed("expiry is not after the issue time"));
            }
        }
        if let Some(u) = max_uses {
            if u == 0 || u > MAX_USES {
                return Err(InviteError::Malformed("use count out of range"));
            }
        }
        let mut invite = Invite {
            id,
            issuer: keypair.public(),
            content,
            kind,
            recipient,
            issued_at,
            expires_at,
            max_uses,
            signature: Vec::new(),
        };
        let signed = invite.signed_bytes();
        invite.signature = keypair
            .sign(&signed)
            .map_err(|e| InviteError::Sign(e.to_string()))?;
        Ok(invite)
    }

    /// The peer id of the node that issued (and alone can honour) the invite.
    pub fn issuer_peer(&self) -> PeerId {
        self.issuer.to_peer_id()
    }

    /// True when the signature is the issuer's over this exact body.
    pub fn verify_signature(&self) -> bool {
        self.signature.len() == SIGNATURE_LEN
            && self.issuer.verify(&self.signed_bytes(), &self.signature)
    }

    /// True when the invite has expired at `now` (Unix seconds).
    pub fn expired_at(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|e| now >= e)
    }

    fn body(&self) -> Writer {
        let mut w = Writer::with_capacity(200);
        w.raw(MAGIC).u8(VERSION).raw(&self.id.0);
        w.bytes(&self.issuer.encode_protobuf());
        w.raw(self.content.as_bytes()).u8(self.kind.code());
        match &self.recipient {
            None => w.u8(0),
            Some(p) => w.u8(1).bytes(&p.to_bytes()),
        };
        w.varint(self.issued_at);
        match self.expires_at {
            None => w.u8(0),
            Some(e) => w.u8(1).varint(e),
        };
        match self.max_uses {
            None => w.u8(0),
            Some(u) => w.u8(1).varint(u),
        };
        w
    }

    fn signed_bytes(&self) -> Vec<u8> {
        let body = self.body();
        let mut out = Vec::with_capacity(SIGNING_DOMAIN.len() + body.as_slice().len());
        out.extend_from_slice(SIGNING_DOMAIN);
        out.extend_from_slice(body.as_slice());
        out
    }

    /// The canonical encoding (what goes in a ticket and a hello).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = self.body();
        w.bytes(&self.signature);
        w.into_vec()
    }

    /// Decodes an invite, checking its form but not its signature.
    pub fn decode(bytes: &[u8]) -> Result<Invite, InviteError> {
        if bytes.len() > MAX_INVITE_LEN {
            return Err(InviteError::TooLong(bytes.len()));
        }
        let mut r = Reader::new(bytes);
        if r.take(MAGIC.len(), "magic")
            .map_err(|_| InviteError::BadMagic)?
            != MAGIC
        {
            return Err(InviteError::BadMagic);
        }
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(InviteError::Version(version));
        }
        let id = InviteId(r.array::<INVITE_ID_LEN>("invite id")?);
        let key = r.bytes(MAX_KEY_LEN, "issuer key")?;
        let issuer = PublicKey::try_decode_protobuf(key)
            .map_err(|_| InviteError::Malformed("issuer key is not a public key"))?;
        if issuer.encode_protobuf() != key {
            return Err(InviteError::Malformed("issuer key is not canonical"));
        }
        let content = ContentId::from_bytes(r.array::<ID_LEN>("content id")?);
        let kind =
            Kind::from_code(r.u8("kind")?).ok_or(InviteError::Malformed("unknown content kind"))?;
        let recipient = match r.u8("recipient flag")? {
            0 => None,
            1 => {
                let b = r.bytes(MAX_PEER_LEN, "recipient")?;
                Some(
                    PeerId::from_bytes(b)
                        .map_err(|_| InviteError::Malformed("recipient is not a peer id"))?,
                )
            }
            _ => return Err(InviteError::Malformed("recipient flag is not 0 or 1")),
        };
        let issued_at = r.varint("issued at")?;
        let expires_at = match r.u8("expiry flag")? {
            0 => None,
            1 => {
                let e = r.varint("expires at")?;
                if e <= issued_at {
                    return Err(InviteError::Malformed("expiry is not after the issue time"));
                }
                Some(e)
            }
            _ => return Err(InviteError::Malformed("expiry flag is not 0 or 1")),
        };
        let max_uses = match r.u8("uses flag")? {
            0 => None,
            1 => {
                let u = r.varint("max uses")?;
                if u == 0 || u > MAX_USES {
                    return Err(InviteError::Malformed("use count out of range"));
                }
                Some(u)
            }
            _ => return Err(InviteError::Malformed("uses flag is not 0 or 1")),
        };
        let signature = r.bytes(SIGNATURE_LEN, "signature")?;
        if signature.len() != SIGNATURE_LEN {
            return Err(InviteError::Malformed("signature is not 64 bytes"));
        }
        let signature = signature.to_vec();
        r.finish()?;
        Ok(Invite {
            id,
            issuer,
            content,
            kind,
            recipient,
            issued_at,
            expires_at,
            max_uses,
            signature,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_key(n: u8) -> Keypair {
        Keypair::ed25519_from_bytes([n; 32]).expect("32 bytes make a key")
    }

    fn invite(kp: &Keypair) -> Invite {
        Invite::issue(
            kp,
            InviteId([7; 16]),
            ContentId::from_bytes([3; 32]),
            Kind::File,
            Some(test_key(8).public().to_peer_id()),
            1_000,
            Some(2_000),
            Some(3),
        )
        .unwrap()
    }

    #[test]
    fn round_trips_and_verifies() {
        let kp = test_key(1);
        let inv = invite(&kp);
        let bytes = inv.encode();
        assert!(bytes.len() <= MAX_INVITE_LEN, "{}", bytes.len());
        let back = Invite::decode(&bytes).unwrap();
        assert_eq!(back, inv);
        assert!(back.verify_signature());
        assert_eq!(back.issuer_peer(), kp.public().to_peer_id());
        let bare = Invite::issue(
            &kp,
            InviteId([1; 16]),
            ContentId::from_bytes([3; 32]),
            Kind::Collection,
            None,
            5,
            None,
            None,
        )
        .unwrap();
        let back = Invite::decode(&bare.encode()).unwrap();
        assert!(back.verify_signature());
        assert_eq!(back.max_uses, None);
    }

    #[test]
    fn every_flipped_bit_is_refused_or_fails_the_signature() {
        let kp = test_key(2);
        let bytes = invite(&kp).encode();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            if let Ok(inv) = Invite::decode(&b) {
                assert!(!inv.verify_signature(), "bit {i} flipped still verifies");
            }
        }
    }

    #[test]
    fn another_keys_signature_does_not_verify() {
        let kp = test_key(3);
        let other = test_key(4);
        let mut inv = invite(&kp);
        let forged = invite(&other);
        inv.signature = forged.signature.clone();
        assert!(!Invite::decode(&inv.encode()).unwrap().verify_signature());
        // Re-issuing under another key changes the issuer, which the server checks.
        assert_ne!(forged.issuer_peer(), kp.public().to_peer_id());
    }

    #[test]
    fn malformed_inputs_are_refused() {
        let kp = test_key(5);
        let bytes = invite(&kp).encode();
        assert_eq!(Invite::decode(b"SHI"), Err(InviteError::BadMagic));
        assert!(Invite::decode(&[0u8; 600]).is_err());
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Invite::decode(&trailing).is_err());
        for n in 0..bytes.len() {
            assert!(Invite::decode(&bytes[..n]).is_err(), "prefix {n} decoded");
        }
        let mut v = bytes.clone();
        v[4] = 2;
        assert_eq!(Invite::decode(&v), Err(InviteError::Version(2)));
    }

    #[test]
    fn issue_refuses_nonsense() {
        let kp = test_key(6);
        let c = ContentId::from_bytes([0; 32]);
        let id = InviteId([0; 16]);
        assert!(Invite::issue(&kp, id, c, Kind::File, None, 10, Some(10), None).is_err());
        assert!(Invite::issue(&kp, id, c, Kind::File, None, 10, None, Some(0)).is_err());
    }

    #[test]
    fn expiry_is_inclusive_of_the_expiry_second() {
        let kp = test_key(7);
        let inv = invite(&kp);
        assert!(!inv.expired_at(1_999));
        assert!(inv.expired_at(2_000));
    }

    #[test]
    fn invite_ids_parse_from_hex() {
        let id = InviteId([0xab; 16]);
        assert_eq!(InviteId::parse(&id.to_hex().to_uppercase()).unwrap(), id);
        assert!(InviteId::parse("abc").is_err());
        assert!(InviteId::parse(&"zz".repeat(16)).is_err());
    }
}
