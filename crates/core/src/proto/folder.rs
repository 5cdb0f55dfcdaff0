//! The rules of a folder session (`docs/protocol.md` §6.5): whole files of a
//! collection, named by manifest index, over one stream per pair of peers.
//!
//! Sans-IO like [`ConnectionState`](super::ConnectionState): the driver handles
//! the two hellos (the same as a content session's, naming the collection's
//! manifest id), then feeds every later message through [`FolderState::on_recv`]
//! and [`FolderState::on_send`]. Both sides may request and serve.

use std::collections::HashSet;
use std::sync::Arc;

use super::{
    default_piece_size, num_pieces, ProtoError, CV_LEN, MAX_OUTSTANDING_FILE_REQUESTS,
    MAX_PART_FILE, MAX_WHOLE_FILE,
};
use crate::proto::Message;

const IN_FOLDER: &str = "in a folder session";

/// One side's view of a folder session after both hellos.
#[derive(Debug, Clone)]
pub struct FolderState {
    /// Every file's size, in manifest order.
    sizes: Arc<[u64]>,
    got_availability: bool,
    sent_availability: bool,
    /// Requests this side sent that are not answered yet.
    our_requests: HashSet<Req>,
    /// Requests the peer sent that this side has not answered yet.
    peer_requests: HashSet<Req>,
    /// Choking and interest, each direction (§6.5): both sides start
    /// unchoked and interested.
    am_choking: bool,
    peer_choking: bool,
    am_interested: bool,
    peer_interested: bool,
    closed: bool,
}

/// One outstanding request of a folder session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Req {
    /// A whole file (`Request`).
    File(u32),
    /// A larger file's outboard (`FileOutboardRequest`).
    Outboard(u32),
    /// A piece of a larger file (`PartRequest`).
    Part(u32, u32),
}

/// A file a folder session carries piece by piece (§6.5): larger than a
/// whole file, at most [`MAX_PART_FILE`].
pub fn is_part_file(size: u64) -> bool {
    size > u64::from(MAX_WHOLE_FILE) && size <= MAX_PART_FILE
}

/// The piece size and piece count of a file of `size` bytes carried piece by
/// piece: the default layout of a content of that size (§3).
pub fn part_layout(size: u64) -> Option<(u32, u32)> {
    let ps = default_piece_size(size)?;
    Some((ps, num_pieces(size, ps) as u32))
}

/// A file whose size lets a folder session carry it whole (not empty: an
/// empty file is created without the network).
pub fn is_whole_file(size: u64) -> bool {
    (1..=u64::from(MAX_WHOLE_FILE)).contains(&size)
}

impl FolderState {
    /// A session over a collection whose files have these sizes.
    pub fn new(sizes: Arc<[u64]>) -> Self {
        Self {
            sizes,
            got_availability: false,
            sent_availability: false,
            our_requests: HashSet::new(),
            peer_requests: HashSet::new(),
            am_choking: false,
            peer_choking: false,
            am_interested: true,
            peer_interested: true,
            closed: false,
        }
    }

    /// Whether this side chokes the peer (its requests of files and pieces
    /// are answered `Choked`).
    pub fn am_choking(&self) -> bool {
        self.am_choking
    }

    /// Whether the peer chokes this side (no `Request` or `PartRequest` may
    /// be sent).
    pub fn peer_choking(&self) -> bool {
        self.peer_choking
    }

    pub fn am_interested(&self) -> bool {
        self.am_interested
    }

    /// Whether the peer said it wants files of this side (the last of
    /// `Interested` / `NotInterested`; interested until it says otherwise).
    pub fn peer_interested(&self) -> bool {
        self.peer_interested
    }

    /// A request this side is about to send while the peer chokes it.
    fn choked(&self, msg: &'static str) -> Result<(), ProtoError> {
        if self.peer_choking {
            return Err(ProtoError::Unexpected {
                msg,
                when: "while the peer chokes this side",
            });
        }
        Ok(())
    }

    /// The number of files of the collection.
    pub fn num_files(&self) -> u32 {
        self.sizes.len() as u32
    }

    /// Whether the peer's `FileBitfield` has arrived.
    pub fn is_established(&self) -> bool {
        self.got_availability && self.sent_availability
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Requests this side has outstanding.
    pub fn our_requests(&self) -> usize {
        self.our_requests.len()
    }

    /// Whether this side's request for whole file `file` is outstanding.
    pub fn requested(&self, file: u32) -> bool {
        self.our_requests.contains(&Req::File(file))
    }

    /// The piece count of part file `file`, or why it is none.
    fn part_file(
        sizes: &[u64],
        file: u32,
        msg: &'static str,
    ) -> Result<(u64, u32, u32), ProtoError> {
        let size = sizes
            .get(file as usize)
            .copied()
            .ok_or(ProtoError::PieceOutOfRange {
                piece: u64::from(file),
                num_pieces: sizes.len() as u32,
            })?;
        match part_layout(size) {
            Some((ps, n)) if is_part_file(size) => Ok((size, ps, n)),
            _ => Err(ProtoError::Invalid {
                msg,
                why: "the file is not one a folder session carries piece by piece",
            }),
        }
    }

    /// Checks that piece `piece` of part file `file` exists; its length.
    fn part(sizes: &[u64], file: u32, piece: u32, msg: &'static str) -> Result<u64, ProtoError> {
        let (size, ps, n) = Self::part_file(sizes, file, msg)?;
        if piece >= n {
            return Err(ProtoError::PieceOutOfRange {
                piece: u64::from(piece),
                num_pieces: n,
            });
        }
        let start = u64::from(piece) * u64::from(ps);
        Ok((size - start).min(u64::from(ps)))
    }

    /// Records a request of the peer (`theirs`) or ours, within the bound.
    fn ask(set: &mut HashSet<Req>, req: Req) -> Result<(), ProtoError> {
        if set.contains(&req) {
            let piece = match req {
                Req::File(f) | Req::Outboard(f) => f,
                Req::Part(_, p) => p,
            };
            return Err(ProtoError::DuplicateRequest { piece });
        }
        if set.len() as u32 >= MAX_OUTSTANDING_FILE_REQUESTS {
            return Err(ProtoError::TooManyRequests {
                what: "file requests",
                max: MAX_OUTSTANDING_FILE_REQUESTS,
            });
        }
        set.insert(req);
        Ok(())
    }

    /// Checks an answer to `req` against the requests of its asker.
    fn answer(set: &mut HashSet<Req>, req: Req, msg: &'static str) -> Result<(), ProtoError> {
        if !set.remove(&req) {
            let piece = match req {
                Req::File(f) | Req::Outboard(f) => f,
                Req::Part(_, p) => p,
            };
            return Err(ProtoError::Unrequested { msg, piece });
        }
        Ok(())
    }

    /// Checks a message about a larger file's outboard or parts, sent or
    /// received: `asks` holds the requests of the side that asks with it
    /// (ours when we send a request or receive an answer).
    fn on_part_msg(
        sizes: &[u64],
        msg: &Message<'_>,
        requests: &mut HashSet<Req>,
    ) -> Result<(), ProtoError> {
        let name = msg.message_type().name();
        match *msg {
            Message::FileOutboardRequest { file } => {
                Self::part_file(sizes, file, name)?;
                Self::ask(requests, Req::Outboard(file))
            }
            Message::FileOutboard { file, cvs } => {
                let (_, _, n) = Self::part_file(sizes, file, name)?;
                if !cvs.is_empty() && cvs.len() != n as usize * CV_LEN {
                    return Err(ProtoError::Invalid {
                        msg: name,
                        why: "not the file's number of chaining values",
                    });
                }
                Self::answer(requests, Req::Outboard(file), name)
            }
            Message::PartRequest { file, piece } => {
                Self::part(sizes, file, piece, name)?;
                Self::ask(requests, Req::Part(file, piece))
            }
            Message::Part { file, piece, data } => {
                let len = Self::part(sizes, file, piece, name)?;
                if data.len() as u64 != len {
                    return Err(ProtoError::WrongPieceLength {
                        piece,
                        len: data.len() as u64,
                        expected: len,
                    });
                }
                Self::answer(requests, Req::Part(file, piece), name)
            }
            Message::PartReject { file, piece, .. } => {
                Self::part(sizes, file, piece, name)?;
                Self::answer(requests, Req::Part(file, piece), name)
            }
            _ => Ok(()),
        }
    }

    fn file(&self, file: u32) -> Result<u64, ProtoError> {
        self.sizes
            .get(file as usize)
            .copied()
            .ok_or(ProtoError::PieceOutOfRange {
                piece: u64::from(file),
                num_pieces: self.num_files(),
            })
    }

    fn whole(&self, file: u32, msg: &'static str) -> Result<u64, ProtoError> {
        let size = self.file(file)?;
        if !is_whole_file(size) {
            return Err(ProtoError::Invalid {
                msg,
                why: "the file is empty or larger than a folder session carries whole",
            });
        }
        Ok(size)
    }

    fn availability(&self, msg: &Message<'_>) -> Result<(), ProtoError> {
        match *msg {
            Message::FileBitfield { num_files, .. } if num_files == self.num_files() => Ok(()),
            Message::FileBitfield { .. } => Err(ProtoError::BadBitfield(
                "its file count is not the manifest's number of files",
            )),
            ref other => Err(ProtoError::Unexpected {
                msg: other.message_type().name(),
                when: "where a folder session's FileBitfield belongs",
            }),
        }
    }

    /// Checks and records a message received from the peer.
    pub fn on_recv(&mut self, msg: &Message<'_>) -> Result<(), ProtoError> {
        if self.closed {
            return Ok(());
        }
        let name = msg.message_type().name();
        if let Message::Close { .. } = msg {
            self.closed = true;
            return Ok(());
        }
        if !self.got_availability {
            self.availability(msg)?;
            self.got_availability = true;
            return Ok(());
        }
        match *msg {
            Message::Have { piece } | Message::Cancel { piece } => {
                self.file(piece)?;
            }
            Message::Request { piece } => {
                self.whole(piece, name)?;
                Self::ask(&mut self.peer_requests, Req::File(piece))?;
            }
            Message::Piece { piece, data } => {
                let size = self.file(piece)?;
                if !self.our_requests.contains(&Req::File(piece)) {
                    return Err(ProtoError::Unrequested { msg: name, piece });
                }
                if data.len() as u64 != size {
                    return Err(ProtoError::WrongPieceLength {
                        piece,
                        len: data.len() as u64,
                        expected: size,
                    });
                }
                self.our_requests.remove(&Req::File(piece));
            }
            Message::Reject { piece, .. } => {
                self.file(piece)?;
                Self::answer(&mut self.our_requests, Req::File(piece), name)?;
            }
            Message::FileOutboardRequest { .. } | Message::PartRequest { .. } => {
                Self::on_part_msg(&self.sizes, msg, &mut self.peer_requests)?;
            }
            Message::FileOutboard { .. } | Message::Part { .. } | Message::PartReject { .. } => {
                Self::on_part_msg(&self.sizes, msg, &mut self.our_requests)?;
            }
            Message::PartHave { file, piece } => {
                Self::part(&self.sizes, file, piece, name)?;
            }
            Message::Choke => self.peer_choking = true,
            Message::Unchoke => self.peer_choking = false,
            Message::Interested => self.peer_interested = true,
            Message::NotInterested => self.peer_interested = false,
            Message::PeerExchange { .. } | Message::KeepAlive | Message::Close { .. } => {}
            _ => {
                return Err(ProtoError::Unexpected {
                    msg: name,
                    when: IN_FOLDER,
                })
            }
        }
        Ok(())
    }

    /// Checks and records a message this side is about to send; an error
    /// means sending it would break the protocol (it is not sent).
    pub fn on_send(&mut self, msg: &Message<'_>) -> Result<(), ProtoError> {
        let name = msg.message_type().name();
        if self.closed {
            return Err(ProtoError::Unexpected {
                msg: name,
                when: "after the connection closed",
            });
        }
        if let Message::Close { .. } = msg {
            self.closed = true;
            return Ok(());
        }
        if !self.sent_availability {
            self.availability(msg)?;
            self.sent_availability = true;
            return Ok(());
        }
        match *msg {
            Message::Have { piece } | Message::Cancel { piece } => {
                self.file(piece)?;
            }
            Message::Request { piece } => {
                self.whole(piece, name)?;
                self.choked(name)?;
                Self::ask(&mut self.our_requests, Req::File(piece))?;
            }
            Message::Piece { piece, data } => {
                let size = self.file(piece)?;
                if data.len() as u64 != size {
                    return Err(ProtoError::WrongPieceLength {
                        piece,
                        len: data.len() as u64,
                        expected: size,
                    });
                }
                Self::answer(&mut self.peer_requests, Req::File(piece), name)?;
            }
            Message::Reject { piece, .. } => {
                Self::answer(&mut self.peer_requests, Req::File(piece), name)?;
            }
            Message::FileOutboardRequest { .. } => {
                Self::on_part_msg(&self.sizes, msg, &mut self.our_requests)?;
            }
            Message::PartRequest { .. } => {
                self.choked(name)?;
                Self::on_part_msg(&self.sizes, msg, &mut self.our_requests)?;
            }
            Message::FileOutboard { .. } | Message::Part { .. } | Message::PartReject { .. } => {
                Self::on_part_msg(&self.sizes, msg, &mut self.peer_requests)?;
            }
            Message::PartHave { file, piece } => {
                Self::part(&self.sizes, file, piece, name)?;
            }
            Message::Choke => self.am_choking = true,
            Message::Unchoke => self.am_choking = false,
            Message::Interested => self.am_interested = true,
            Message::NotInterested => self.am_interested = false,
            Message::PeerExchange { .. } | Message::KeepAlive => {}
            _ => {
                return Err(ProtoError::Unexpected {
                    msg: name,
                    when: IN_FOLDER,
                })
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{CloseCode, RejectReason};

    fn state(sizes: &[u64]) -> FolderState {
        let mut s = FolderState::new(sizes.to_vec().into());
        let bits = vec![0u8; sizes.len().div_ceil(8)];
        let bf = Message::FileBitfield {
            num_files: sizes.len() as u32,
            bits: &bits,
        };
        s.on_send(&bf).unwrap();
        s.on_recv(&bf).unwrap();
        assert!(s.is_established());
        s
    }

    #[test]
    fn the_first_message_must_be_a_file_bitfield_of_the_manifests_count() {
        let mut s = FolderState::new(vec![1, 2].into());
        assert!(s.on_recv(&Message::HaveAll).is_err());
        let mut s = FolderState::new(vec![1, 2].into());
        let e = s
            .on_recv(&Message::FileBitfield {
                num_files: 3,
                bits: &[0],
            })
            .unwrap_err();
        assert!(matches!(e, ProtoError::BadBitfield(_)), "{e}");
    }

    #[test]
    fn a_request_is_for_a_whole_file_in_range_once_and_within_the_bound() {
        let big = u64::from(MAX_WHOLE_FILE) + 1;
        let mut s = state(&[10, big, 0, 5]);
        assert!(s.on_recv(&Message::Request { piece: 4 }).is_err());
        assert!(s.on_recv(&Message::Request { piece: 1 }).is_err());
        assert!(s.on_recv(&Message::Request { piece: 2 }).is_err());
        s.on_recv(&Message::Request { piece: 0 }).unwrap();
        assert!(matches!(
            s.on_recv(&Message::Request { piece: 0 }),
            Err(ProtoError::DuplicateRequest { piece: 0 })
        ));
        // Answered with the file's exact size, then it may be asked again.
        assert!(s
            .on_send(&Message::Piece {
                piece: 0,
                data: &[0; 9]
            })
            .is_err());
        s.on_send(&Message::Piece {
            piece: 0,
            data: &[0; 10],
        })
        .unwrap();
        s.on_recv(&Message::Request { piece: 0 }).unwrap();
        s.on_send(&Message::Reject {
            piece: 0,
            reason: RejectReason::NotAvailable,
        })
        .unwrap();
        assert!(s
            .on_send(&Message::Reject {
                piece: 3,
                reason: RejectReason::NotAvailable,
            })
            .is_err());
    }

    #[test]
    fn more_outstanding_requests_than_the_bound_is_a_violation() {
        let n = MAX_OUTSTANDING_FILE_REQUESTS as usize + 1;
        let mut s = state(&vec![1; n]);
        for i in 0..MAX_OUTSTANDING_FILE_REQUESTS {
            s.on_recv(&Message::Request { piece: i }).unwrap();
        }
        let e = s
            .on_recv(&Message::Request {
                piece: MAX_OUTSTANDING_FILE_REQUESTS,
            })
            .unwrap_err();
        assert_eq!(e.close_code(), CloseCode::TooManyRequests);
        let mut s = state(&vec![1; n]);
        for i in 0..MAX_OUTSTANDING_FILE_REQUESTS {
            s.on_send(&Message::Request { piece: i }).unwrap();
        }
        assert!(s
            .on_send(&Message::Request {
                piece: MAX_OUTSTANDING_FILE_REQUESTS
            })
            .is_err());
        assert_eq!(s.our_requests(), MAX_OUTSTANDING_FILE_REQUESTS as usize);
    }

    #[test]
    fn unrequested_or_wrong_sized_files_and_content_session_messages_are_violations() {
        let mut s = state(&[3, 4]);
        assert!(s
            .on_recv(&Message::Piece {
                piece: 0,
                data: &[1, 2, 3]
            })
            .is_err());
        let mut s = state(&[3, 4]);
        s.on_send(&Message::Request { piece: 1 }).unwrap();
        assert!(matches!(
            s.on_recv(&Message::Piece {
                piece: 1,
                data: &[1, 2, 3]
            }),
            Err(ProtoError::WrongPieceLength { .. })
        ));
        for m in [
            Message::HaveAll,
            Message::HaveNone,
            Message::OutboardRequest { first: 0, count: 1 },
        ] {
            let mut s = state(&[3, 4]);
            assert!(s.on_recv(&m).is_err(), "{m:?}");
        }
        let mut s = state(&[3, 4]);
        s.on_recv(&Message::Have { piece: 1 }).unwrap();
        assert!(s.on_recv(&Message::Have { piece: 2 }).is_err());
        s.on_recv(&Message::Close {
            code: CloseCode::Normal,
            text: "",
        })
        .unwrap();
        assert!(s.is_closed());
    }

    #[test]
    fn a_choked_side_sends_no_file_or_piece_requests_but_may_ask_for_outboards() {
        let three = 3 << 20;
        let mut s = state(&[10, three]);
        assert!(!s.peer_choking() && s.am_interested() && s.peer_interested());
        s.on_recv(&Message::Choke).unwrap();
        s.on_recv(&Message::Choke).unwrap();
        assert!(s.peer_choking());
        assert!(s.on_send(&Message::Request { piece: 0 }).is_err());
        assert!(s
            .on_send(&Message::PartRequest { file: 1, piece: 0 })
            .is_err());
        assert_eq!(s.our_requests(), 0);
        s.on_send(&Message::FileOutboardRequest { file: 1 })
            .unwrap();
        s.on_send(&Message::NotInterested).unwrap();
        assert!(!s.am_interested());
        s.on_recv(&Message::Unchoke).unwrap();
        s.on_send(&Message::Request { piece: 0 }).unwrap();
        s.on_send(&Message::PartRequest { file: 1, piece: 0 })
            .unwrap();
        // The uploader's side: a request crossing its Choke is accepted, to
        // be answered `Choked`.
        let mut u = state(&[10, three]);
        u.on_send(&Message::Choke).unwrap();
        assert!(u.am_choking());
        u.on_recv(&Message::Request { piece: 0 }).unwrap();
        u.on_send(&Message::Reject {
            piece: 0,
            reason: RejectReason::Choked,
        })
        .unwrap();
        u.on_recv(&Message::NotInterested).unwrap();
        assert!(!u.peer_interested());
        u.on_recv(&Message::Interested).unwrap();
        assert!(u.peer_interested());
    }

    #[test]
    fn part_have_names_a_piece_of_a_part_file_in_range_either_way() {
        let three = 3 << 20;
        let mut s = state(&[10, three]);
        for m in [
            Message::PartHave { file: 0, piece: 0 },
            Message::PartHave { file: 1, piece: 12 },
            Message::PartHave { file: 2, piece: 0 },
        ] {
            assert!(s.clone().on_recv(&m).is_err(), "{m:?}");
            assert!(s.clone().on_send(&m).is_err(), "{m:?}");
        }
        s.on_recv(&Message::PartHave { file: 1, piece: 11 })
            .unwrap();
        s.on_send(&Message::PartHave { file: 1, piece: 0 }).unwrap();
        // Not a request: announcing needs no answer and has no bound.
        assert_eq!(s.our_requests(), 0);
    }

    #[test]
    fn parts_and_outboards_are_for_larger_files_in_range_once_and_answered_exactly() {
        let whole = u64::from(MAX_WHOLE_FILE);
        // 3 MiB: 12 pieces of 256 KiB; 1 MiB + 1: 5 pieces, the last of 1 byte.
        let three = 3 << 20;
        let mut s = state(&[10, three, whole + 1, MAX_PART_FILE + 1]);
        assert_eq!(part_layout(three), Some((256 * 1024, 12)));
        // Not for a whole file, nor one too large, nor past the last piece.
        for m in [
            Message::FileOutboardRequest { file: 0 },
            Message::FileOutboardRequest { file: 3 },
            Message::FileOutboardRequest { file: 4 },
            Message::PartRequest { file: 0, piece: 0 },
            Message::PartRequest { file: 3, piece: 0 },
            Message::PartRequest { file: 1, piece: 12 },
        ] {
            assert!(s.clone().on_recv(&m).is_err(), "{m:?}");
        }
        s.on_recv(&Message::FileOutboardRequest { file: 1 })
            .unwrap();
        assert!(s
            .on_recv(&Message::FileOutboardRequest { file: 1 })
            .is_err());
        // The outboard is all 12 CVs, or none.
        let cvs = vec![0u8; 12 * CV_LEN];
        assert!(s
            .on_send(&Message::FileOutboard {
                file: 1,
                cvs: &cvs[..11 * CV_LEN]
            })
            .is_err());
        s.on_send(&Message::FileOutboard { file: 1, cvs: &cvs })
            .unwrap();
        s.on_recv(&Message::FileOutboardRequest { file: 1 })
            .unwrap();
        s.on_send(&Message::FileOutboard { file: 1, cvs: &[] })
            .unwrap();
        assert!(s
            .on_send(&Message::FileOutboard { file: 1, cvs: &[] })
            .is_err());
        // A part is answered once, with the piece's exact length.
        s.on_recv(&Message::PartRequest { file: 2, piece: 4 })
            .unwrap();
        assert!(matches!(
            s.on_recv(&Message::PartRequest { file: 2, piece: 4 }),
            Err(ProtoError::DuplicateRequest { piece: 4 })
        ));
        assert!(s
            .on_send(&Message::Part {
                file: 2,
                piece: 4,
                data: &[0; 2]
            })
            .is_err());
        s.on_send(&Message::Part {
            file: 2,
            piece: 4,
            data: &[0; 1],
        })
        .unwrap();
        assert!(s
            .on_send(&Message::PartReject {
                file: 2,
                piece: 4,
                reason: RejectReason::NotAvailable
            })
            .is_err());
        // Ours: an unrequested part is a violation, a requested one is not.
        let mut s = state(&[10, three]);
        assert!(s
            .on_recv(&Message::Part {
                file: 1,
                piece: 0,
                data: &[0; 256 * 1024]
            })
            .is_err());
        let mut s = state(&[10, three]);
        s.on_send(&Message::PartRequest { file: 1, piece: 0 })
            .unwrap();
        s.on_send(&Message::PartRequest { file: 1, piece: 11 })
            .unwrap();
        s.on_recv(&Message::Part {
            file: 1,
            piece: 0,
            data: &vec![0; 256 * 1024],
        })
        .unwrap();
        s.on_recv(&Message::PartReject {
            file: 1,
            piece: 11,
            reason: RejectReason::NotAvailable,
        })
        .unwrap();
        assert_eq!(s.our_requests(), 0);
        // Parts are folder-session messages only.
        let mut c = crate::proto::ConnectionState::new(crate::proto::Role::Initiator);
        assert!(c
            .on_recv(&Message::PartRequest { file: 0, piece: 0 })
            .is_err());
    }

    #[test]
    fn whole_files_outboards_and_parts_share_one_bound() {
        let mut sizes = vec![1u64; 60];
        sizes.push(3 << 20);
        let mut s = state(&sizes);
        for i in 0..50 {
            s.on_recv(&Message::Request { piece: i }).unwrap();
        }
        s.on_recv(&Message::FileOutboardRequest { file: 60 })
            .unwrap();
        for p in 0..12 {
            s.on_recv(&Message::PartRequest { file: 60, piece: p })
                .unwrap();
        }
        // 63 outstanding: one more of any kind, then a violation.
        s.on_recv(&Message::Request { piece: 50 }).unwrap();
        let e = s.on_recv(&Message::Request { piece: 51 }).unwrap_err();
        assert_eq!(e.close_code(), CloseCode::TooManyRequests, "{e}");
        let e = s
            .clone()
            .on_recv(&Message::FileOutboardRequest { file: 60 })
            .unwrap_err();
        assert!(matches!(e, ProtoError::DuplicateRequest { .. }), "{e}");
    }
}
