//! The one-byte reason and close codes. An unknown code decodes as `Unknown(code)`
//! so that a newer peer's code is logged and passed on instead of failing the frame.

macro_rules! code_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $var:ident = $val:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $var, )*
            /// A code this version does not know. Decoding never yields `Unknown(c)` for a
            /// known `c`.
            Unknown(u8),
        }

        impl $name {
            /// Every known code, in code order.
            pub const KNOWN: &'static [$name] = &[$($name::$var),*];

            /// The code for byte `b` (`Unknown(b)` when it has no name).
            pub const fn from_u8(b: u8) -> Self {
                match b {
                    $( $val => Self::$var, )*
                    other => Self::Unknown(other),
                }
            }

            /// The byte on the wire.
            pub const fn to_u8(self) -> u8 {
                match self {
                    $( Self::$var => $val, )*
                    Self::Unknown(b) => b,
                }
            }
        }

        impl From<u8> for $name {
            fn from(b: u8) -> Self {
                Self::from_u8(b)
            }
        }

        impl From<$name> for u8 {
            fn from(c: $name) -> u8 {
                c.to_u8()
            }
        }
    };
}

code_enum! {
    /// Why a responder refuses a transfer (the `Deny` reply to a `Hello`).
    pub enum DenyReason {
        /// The responder does not have this content (not shared, or not known).
        NotFound = 1,
        /// The content is private and this peer is neither listed nor holds a capability.
        AccessDenied = 2,
        /// The capability in the hello has expired.
        CapabilityExpired = 3,
        /// The capability is malformed, or not signed by the responder's own key.
        CapabilityInvalid = 4,
        /// The hello's protocol version is not spoken by the responder.
        VersionUnsupported = 5,
        /// The responder serves too many peers or transfers right now; retry later.
        Busy = 6,
        /// The hello's piece size differs from the one the responder serves.
        PieceSizeMismatch = 7,
        /// The hello's content length differs from the responder's.
        LengthMismatch = 8,
        /// The responder has banned this peer for this content.
        Banned = 9,
        /// The hello is malformed or inconsistent in another way.
        BadHello = 10,
        /// The capability was revoked by its issuer (or is not known to it).
        CapabilityRevoked = 11,
        /// The capability's uses are all taken by other peers.
        CapabilityUsedUp = 12,
        /// The capability names another recipient than the authenticated peer.
        CapabilityWrongPeer = 13,
        /// The capability is for other content than the hello names.
        CapabilityWrongContent = 14,
    }
}

code_enum! {
    /// Why a `Request` is answered with `Reject` instead of `Piece`.
    pub enum RejectReason {
        /// The uploader is choking the requester.
        Choked = 1,
        /// The uploader does not have the piece (or can no longer read it).
        NotAvailable = 2,
        /// The requester cancelled the request before the piece was sent.
        Cancelled = 3,
        /// The uploader is shedding load (e.g. disk or upload queue full).
        Overloaded = 4,
    }
}

code_enum! {
    /// Why a connection is closed (the `Close` message, and the code a peer closes with
    /// on a protocol violation; see [`super::ProtoError::close_code`]).
    pub enum CloseCode {
        /// Nothing wrong: the transfer is complete or no longer wanted.
        Normal = 0,
        /// The sender is shutting down.
        Shutdown = 1,
        /// Nothing received for longer than the idle timeout (or no hello in time).
        Timeout = 2,
        /// A rule of the protocol not covered by a more precise code was broken.
        ProtocolViolation = 3,
        /// A message type this version does not know.
        UnknownMessage = 4,
        /// A frame length over the limit for its type.
        FrameTooLarge = 5,
        /// A message body that does not decode, or has bytes left over.
        MalformedMessage = 6,
        /// A message that is not allowed in the current state (e.g. a second hello, a
        /// bitfield that is not the first message after hello).
        UnexpectedMessage = 7,
        /// The hello has the wrong magic or contradicts the one sent.
        BadHello = 8,
        /// The peer speaks a protocol version this one does not.
        VersionUnsupported = 9,
        /// A piece index (or outboard range) beyond the content's pieces.
        PieceOutOfRange = 10,
        /// Piece data whose length is not the piece's length.
        WrongPieceLength = 11,
        /// A `Piece` or `Reject` for a piece with no outstanding request.
        UnrequestedPiece = 12,
        /// A bitfield of the wrong length or with spare bits set.
        BadBitfield = 13,
        /// More outstanding requests than the protocol allows.
        TooManyRequests = 14,
        /// Piece data that failed verification (the sender may be banned).
        BadData = 15,
        /// The peer is banned for this content.
        Banned = 16,
        /// The responder's access policy no longer allows this peer (the share was
        /// removed or made private, the peer left the allowlist, its invite was revoked
        /// or expired).
        AccessRevoked = 17,
    }
}
