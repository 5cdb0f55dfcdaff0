//! The rules of a folder session (`docs/protocol.md` §6.5): whole files of a
//! collection, named by manifest index, over one stream per pair of peers.
//!
//! Sans-IO like [`ConnectionState`](super::ConnectionState): the driver handles
//! the two hellos (the same as a content session's, naming the collection's
//! manifest id), then feeds every later message through [`FolderState::on_recv`]
//! and [`FolderState::on_send`]. Both sides may request and serve.

use std::collections::HashSet;
use std::sync::Arc;

use super::{ProtoError, MAX_OUTSTANDING_FILE_REQUESTS, MAX_WHOLE_FILE};
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
    our_requests: HashSet<u32>,
    /// Requests the peer sent that this side has not answered yet.
    peer_requests: HashSet<u32>,
    closed: bool,
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
            closed: false,
        }
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

    /// Whether this side's request for `file` is outstanding.
    pub fn requested(&self, file: u32) -> bool {
        self.our_requests.contains(&file)
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
                if self.peer_requests.contains(&piece) {
                    return Err(ProtoError::DuplicateRequest { piece });
                }
                if self.peer_requests.len() as u32 >= MAX_OUTSTANDING_FILE_REQUESTS {
                    return Err(ProtoError::TooManyRequests {
                        what: "file requests",
                        max: MAX_OUTSTANDING_FILE_REQUESTS,
                    });
                }
                self.peer_requests.insert(piece);
            }
            Message::Piece { piece, data } => {
                let size = self.file(piece)?;
                if !self.our_requests.contains(&piece) {
                    return Err(ProtoError::Unrequested { msg: name, piece });
                }
                if data.len() as u64 != size {
                    return Err(ProtoError::WrongPieceLength {
                        piece,
                        len: data.len() as u64,
                        expected: size,
                    });
                }
                self.our_requests.remove(&piece);
            }
            Message::Reject { piece, .. } => {
                self.file(piece)?;
                if !self.our_requests.remove(&piece) {
                    return Err(ProtoError::Unrequested { msg: name, piece });
                }
            }
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
                if self.our_requests.contains(&piece) {
                    return Err(ProtoError::DuplicateRequest { piece });
                }
                if self.our_requests.len() as u32 >= MAX_OUTSTANDING_FILE_REQUESTS {
                    return Err(ProtoError::TooManyRequests {
                        what: "file requests",
                        max: MAX_OUTSTANDING_FILE_REQUESTS,
                    });
                }
                self.our_requests.insert(piece);
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
                if !self.peer_requests.remove(&piece) {
                    return Err(ProtoError::Unrequested { msg: name, piece });
                }
            }
            Message::Reject { piece, .. } => {
                if !self.peer_requests.remove(&piece) {
                    return Err(ProtoError::Unrequested { msg: name, piece });
                }
            }
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
            Message::Unchoke,
            Message::Interested,
            Message::HaveAll,
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
}
