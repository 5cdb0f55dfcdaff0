//! Hostile and broken peers: hand-written raw peers against real nodes.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use shoal_core::proto::{CloseCode, Hello, Message, RejectReason, DEFAULT_PIECE_SIZE};
use shoal_core::{ContentId, Kind};
use shoal_node::{NodeConfig, NodeError};
use std::time::Duration;
use tokio::time::timeout;

/// A raw responder that serves `bytes` (one piece) as content `id`, optionally
/// sending a piece nobody asked for right after the handshake; it records the code
/// of the `Close` it receives.
async fn serve_raw(
    mut raw: Raw,
    id: ContentId,
    bytes: Arc<Vec<u8>>,
    unrequested: bool,
    closed: Arc<Mutex<Vec<u8>>>,
) {
    let Some(first) = raw.recv().await else {
        return;
    };
    if !matches!(first.msg(), Message::Hello(_)) {
        return;
    }
    let _availability = raw.recv().await;
    let hello = Hello {
        piece_size: Some(DEFAULT_PIECE_SIZE),
        content_len: Some(bytes.len() as u64),
        ..Hello::new(id)
    };
    raw.send(&Message::Hello(hello)).await;
    raw.send(&Message::HaveAll).await;
    if unrequested {
        raw.send(&Message::Piece {
            piece: 0,
            data: &bytes,
        })
        .await;
    }
    while let Some(f) = raw.recv().await {
        let reply = match f.msg() {
            Message::Interested => Some(Message::Unchoke),
            Message::Request { piece } => Some(Message::Piece {
                piece,
                data: &bytes,
            }),
            Message::OutboardRequest { first, .. } => {
                Some(Message::OutboardResponse { first, cvs: &[] })
            }
            Message::Close { code, .. } => {
                closed.lock().expect("lock").push(code.to_u8());
                return;
            }
            _ => None,
        };
        if let Some(m) = reply {
            raw.send(&m).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_manifest_with_dotdot_path_is_refused_and_nothing_is_written() {
    timeout(TEST_TIMEOUT, async {
        // A manifest whose bytes hash to its id but that names "../x".
        let mut bytes = b"shoal-manifest".to_vec();
        bytes.push(1); // version
        bytes.push(1); // one entry
        bytes.push(4);
        bytes.extend_from_slice(b"../x");
        bytes.push(5); // size
        bytes.extend_from_slice(ContentId::of(b"owned").as_bytes());
        let id = ContentId::of(&bytes);
        let bytes = Arc::new(bytes);
        let closed = Arc::new(Mutex::new(Vec::new()));
        let leecher = TestNode::new(2);
        let (b, c) = (bytes.clone(), closed.clone());
        let conn = Arc::new(RawConnector {
            peer: peer_id(1),
            serve: move |raw| serve_raw(raw, id, b.clone(), false, c.clone()),
        });
        let out = leecher.path("out");
        let mut h = leecher
            .node
            .download(id, Kind::Collection, &out, Some("c"), conn);
        let err = h
            .result()
            .await
            .expect_err("a hostile manifest must be refused");
        assert!(matches!(err, NodeError::BadManifest { .. }), "{err}");
        assert!(!leecher.path("x").exists());
        assert!(!out.join("x").exists());
        assert!(
            !out.join("c").exists(),
            "nothing is created for a refused manifest"
        );
    })
    .await
    .expect("timed out");
}

/// Connects a raw initiator with peer id `who` and sends its hello and `HaveNone`.
async fn raw_hello(seeder: &TestNode, id: ContentId, who: u8) -> Raw {
    let (near, far) = tokio::io::duplex(PIPE_BUF);
    let node = seeder.node.clone();
    tokio::spawn(async move {
        let _ = node.accept(peer_id(who), far).await;
    });
    let mut raw = Raw::new(near);
    raw.send(&Message::Hello(Hello::new(id))).await;
    raw.send(&Message::HaveNone).await;
    raw
}

/// Connects a raw initiator to a node seeding a small file, completes the
/// handshake, and returns it.
async fn raw_initiator(seeder: &TestNode, id: ContentId) -> Raw {
    let mut raw = raw_hello(seeder, id, 9).await;
    let reply = raw.recv().await.expect("hello");
    assert!(matches!(reply.msg(), Message::Hello(_)));
    let avail = raw.recv().await.expect("availability");
    assert!(matches!(
        avail.msg(),
        Message::HaveAll | Message::HaveNone | Message::Bitfield { .. }
    ));
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_message_type_closes_with_unknown_message() {
    timeout(TEST_TIMEOUT, async {
        let seeder = TestNode::new(1);
        let share = seeder.share_bytes("f", &random_bytes(300_000, 1));
        let mut raw = raw_initiator(&seeder, share.id).await;
        raw.send_raw(&[0, 0, 0, 1, 0x1a]).await;
        assert_eq!(
            raw.until_close().await,
            Some(CloseCode::UnknownMessage.to_u8())
        );
        // A folder session's availability inside a content's session.
        let mut raw = raw_initiator(&seeder, share.id).await;
        raw.send_raw(&[0, 0, 0, 2, 0x13, 0]).await;
        assert_eq!(
            raw.until_close().await,
            Some(CloseCode::UnexpectedMessage.to_u8())
        );
        // A folder session's part request, or part announcement, inside a
        // content's session.
        for ty in [0x16, 0x19] {
            let mut raw = raw_initiator(&seeder, share.id).await;
            raw.send_raw(&[0, 0, 0, 3, ty, 0, 0]).await;
            assert_eq!(
                raw.until_close().await,
                Some(CloseCode::UnexpectedMessage.to_u8())
            );
        }
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frame_closes_with_frame_too_large_before_the_body() {
    timeout(TEST_TIMEOUT, async {
        let seeder = TestNode::new(1);
        let share = seeder.share_bytes("f", &random_bytes(300_000, 1));
        let mut raw = raw_initiator(&seeder, share.id).await;
        // A Piece frame one byte over the limit; no body follows.
        let len = (shoal_core::proto::MAX_FRAME_LEN as u32 + 1).to_be_bytes();
        raw.send_raw(&[len[0], len[1], len[2], len[3], 0x0c]).await;
        assert_eq!(
            raw.until_close().await,
            Some(CloseCode::FrameTooLarge.to_u8())
        );
        // A control message over its 2 KiB limit.
        let mut raw = raw_initiator(&seeder, share.id).await;
        raw.send_raw(&[0, 0, 0x10, 0, 0x05]).await;
        assert_eq!(
            raw.until_close().await,
            Some(CloseCode::FrameTooLarge.to_u8())
        );
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrequested_piece_closes_with_unrequested_piece_and_writes_nothing() {
    timeout(TEST_TIMEOUT, async {
        let data = Arc::new(random_bytes(1000, 4));
        let id = ContentId::of(&data);
        let closed = Arc::new(Mutex::new(Vec::new()));
        let leecher = TestNode::new(2);
        let (d, c) = (data.clone(), closed.clone());
        let conn = Arc::new(RawConnector {
            peer: peer_id(1),
            serve: move |raw| serve_raw(raw, id, d.clone(), true, c.clone()),
        });
        let out = leecher.path("out");
        let h = leecher.node.download(id, Kind::File, &out, Some("f"), conn);
        while closed.lock().expect("lock").is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            closed.lock().expect("lock")[0],
            CloseCode::UnrequestedPiece.to_u8()
        );
        h.stop().await;
        assert!(!out.join("f").exists(), "an unrequested piece was written");
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_for_unknown_content_is_denied_not_found() {
    timeout(TEST_TIMEOUT, async {
        let seeder = TestNode::new(1);
        let (near, far) = tokio::io::duplex(PIPE_BUF);
        let node = seeder.node.clone();
        tokio::spawn(async move {
            let _ = node.accept(peer_id(9), far).await;
        });
        let mut raw = Raw::new(near);
        raw.send(&Message::Hello(Hello::new(ContentId::of(
            b"nobody has this",
        ))))
        .await;
        raw.send(&Message::HaveNone).await;
        let reply = raw.recv().await.expect("deny");
        match reply.msg() {
            Message::Deny { reason, .. } => {
                assert_eq!(reason, shoal_core::proto::DenyReason::NotFound)
            }
            other => panic!("expected Deny, got {other:?}"),
        }
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_share_is_denied_access() {
    timeout(TEST_TIMEOUT, async {
        let seeder = TestNode::new(1);
        let share = seeder.share_bytes("secret", &random_bytes(1 << 20, 3));
        seeder
            .node
            .store()
            .set_visibility(&share.id, shoal_store::Visibility::Private)
            .expect("set visibility");
        let (near, far) = tokio::io::duplex(PIPE_BUF);
        let node = seeder.node.clone();
        tokio::spawn(async move {
            let _ = node.accept(peer_id(9), far).await;
        });
        let mut raw = Raw::new(near);
        raw.send(&Message::Hello(Hello::new(share.id))).await;
        raw.send(&Message::HaveNone).await;
        let reply = raw.recv().await.expect("deny");
        match reply.msg() {
            Message::Deny { reason, .. } => {
                assert_eq!(reason, shoal_core::proto::DenyReason::AccessDenied)
            }
            other => panic!("expected Deny, got {other:?}"),
        }
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_queued_requests_are_each_answered_once() {
    timeout(TEST_TIMEOUT, async {
        let seeder = TestNode::new(1);
        let share = seeder.share_bytes("f", &random_bytes(4 << 20, 2));
        let mut raw = raw_initiator(&seeder, share.id).await;
        raw.send(&Message::Interested).await;
        // Collect the pieces the seeder offers until it has unchoked us.
        let mut offered = Vec::new();
        let mut unchoked = false;
        while !(unchoked && offered.len() >= 4) {
            let f = raw.recv().await.expect("frame");
            match f.msg() {
                Message::Have { piece } => offered.push(piece),
                Message::HaveAll => offered.extend(0..16),
                Message::Unchoke => unchoked = true,
                _ => {}
            }
        }
        offered.truncate(4);
        // All requests and cancels in one write, so the cancels reach the seeder
        // while the requests after the first are still queued.
        let mut burst = Vec::new();
        for &p in &offered {
            shoal_core::proto::encode(&Message::Request { piece: p }, &mut burst).expect("encode");
        }
        for &p in &offered[1..] {
            shoal_core::proto::encode(&Message::Cancel { piece: p }, &mut burst).expect("encode");
        }
        raw.send_raw(&burst).await;
        let mut answers: std::collections::BTreeMap<u32, Vec<String>> = Default::default();
        while answers.values().map(Vec::len).sum::<usize>() < offered.len() {
            let f = raw.recv().await.expect("an answer");
            match f.msg() {
                Message::Piece { piece, .. } => {
                    answers.entry(piece).or_default().push("piece".into())
                }
                Message::Reject { piece, reason } => answers
                    .entry(piece)
                    .or_default()
                    .push(format!("{reason:?}")),
                _ => {}
            }
        }
        for &p in &offered {
            assert_eq!(answers.get(&p).map(Vec::len), Some(1), "{answers:?}");
        }
        let cancelled = answers
            .values()
            .flatten()
            .filter(|a| a.as_str() == "Cancelled")
            .count();
        assert!(cancelled >= 1, "{answers:?}");
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinked_folder_in_the_destination_is_refused() {
    timeout(TEST_TIMEOUT, async {
        let seeder = TestNode::new(1);
        let src = seeder.path("src");
        std::fs::create_dir_all(src.join("sub")).expect("mkdir");
        std::fs::write(src.join("sub/f.txt"), b"data").expect("write");
        let share = seeder.share(&src);
        let leecher = TestNode::new(2);
        let out = leecher.path("out");
        let elsewhere = leecher.path("elsewhere");
        std::fs::create_dir_all(out.join("tree")).expect("mkdir");
        std::fs::create_dir_all(&elsewhere).expect("mkdir");
        std::os::unix::fs::symlink(&elsewhere, out.join("tree/sub")).expect("symlink");
        let conn = PipeConnector::new(leecher.id, &[&seeder]);
        let mut h = leecher
            .node
            .download(share.id, Kind::Collection, &out, Some("tree"), conn);
        let err = h.result().await.expect_err("must refuse");
        assert!(matches!(err, NodeError::UnsafeDestination { .. }), "{err}");
        assert_eq!(std::fs::read_dir(&elsewhere).expect("dir").count(), 0);
    })
    .await
    .expect("timed out");
}

#[tokio::test(start_paused = true)]
async fn silent_initiator_is_closed_after_the_hello_timeout() {
    let seeder = TestNode::new(1);
    let (near, far) = tokio::io::duplex(PIPE_BUF);
    let node = seeder.node.clone();
    let accept = tokio::spawn(async move { node.accept(peer_id(9), far).await });
    let mut raw = Raw::new(near);
    let start = tokio::time::Instant::now();
    assert_eq!(raw.until_close().await, Some(CloseCode::Timeout.to_u8()));
    // Closed once the responder's own wait is over (spec §9.7 lets it be
    // shorter than HELLO_TIMEOUT), not before.
    assert!(start.elapsed() >= shoal_node::INBOUND_HELLO_WAIT);
    assert!(start.elapsed() < shoal_core::proto::HELLO_TIMEOUT);
    assert!(accept.await.expect("join").is_err());
}

#[tokio::test(start_paused = true)]
async fn idle_connection_gets_keepalives_then_closes_with_timeout() {
    let seeder = TestNode::new(1);
    let share = seeder.share_bytes("f", &random_bytes(300_000, 1));
    let mut raw = raw_initiator(&seeder, share.id).await;
    let start = tokio::time::Instant::now();
    let mut keepalives = 0;
    let code = loop {
        let Some(f) = raw.recv().await else {
            break None;
        };
        match f.msg() {
            Message::KeepAlive => keepalives += 1,
            Message::Close { code, .. } => break Some(code),
            _ => {}
        }
    };
    assert_eq!(code, Some(CloseCode::Timeout));
    assert!(start.elapsed() >= shoal_core::proto::IDLE_TIMEOUT);
    assert!(keepalives >= 3, "{keepalives} keep-alives in 120 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_over_the_limit_are_denied_busy() {
    timeout(TEST_TIMEOUT, async {
        let cfg = shoal_node::NodeConfig {
            max_peers: 1,
            ..Default::default()
        };
        let seeder = TestNode::with_config(1, cfg);
        let share = seeder.share_bytes("f", &random_bytes(300_000, 1));
        let _first = raw_initiator(&seeder, share.id).await;
        let mut second = raw_hello(&seeder, share.id, 10).await;
        match second.recv().await.expect("reply").msg() {
            Message::Deny { reason, .. } => {
                assert_eq!(reason, shoal_core::proto::DenyReason::Busy)
            }
            other => panic!("expected Deny, got {other:?}"),
        }
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_kill_replaces_the_dead_session_at_once() {
    timeout(TEST_TIMEOUT, async {
        let seeder = TestNode::new(1);
        let data = random_bytes(1 << 20, 41);
        let share = seeder.share_bytes("f.bin", &data);
        // The leecher's first session: a handshake, then it "crashes" with the
        // stream left open on the seeder's side (no FIN, no RST).
        let (near, far) = tokio::io::duplex(PIPE_BUF);
        let node = seeder.node.clone();
        let leecher = TestNode::new(2);
        let id = leecher.id;
        tokio::spawn(async move {
            let _ = node.accept(id, far).await;
        });
        let mut dead = Raw::new(near);
        dead.send(&Message::Hello(Hello::new(share.id))).await;
        dead.send(&Message::HaveNone).await;
        let reply = dead.recv().await.expect("the seeder's hello");
        assert!(
            matches!(reply.msg(), Message::Hello(_)),
            "{:?}",
            reply.msg()
        );
        // The restarted download, same peer id, is served at once instead of
        // being denied Busy until the dead session times out.
        let started = std::time::Instant::now();
        let mut h = leecher.node.download(
            share.id,
            Kind::File,
            &leecher.path("out"),
            None,
            PipeConnector::new(leecher.id, &[&seeder]),
        );
        let path = h.result().await.expect("the restarted download completes");
        assert!(std::fs::read(path).expect("read") == data);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        // The old stream was closed by the seeder.
        assert_eq!(dead.until_close().await, Some(CloseCode::Normal.to_u8()));
        drop(dead);
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_source_stops_serving_without_a_loop() {
    timeout(TEST_TIMEOUT, async {
        let seeder = TestNode::new(1);
        let data = random_bytes(4 << 20, 42);
        let share = seeder.share_bytes("f.bin", &data);
        // Truncated behind the share's back.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(seeder.path("f.bin"))
            .expect("open");
        f.set_len(1 << 20).expect("truncate");
        let leecher = TestNode::new(2);
        let started = std::time::Instant::now();
        let mut h = leecher.node.download(
            share.id,
            Kind::File,
            &leecher.path("out"),
            None,
            PipeConnector::new(leecher.id, &[&seeder]),
        );
        let err = h.result().await.expect_err("nothing complete to fetch");
        let msg = err.to_string();
        assert!(
            msg.contains("the shared file no longer matches content"),
            "{msg}"
        );
        // Told and stopped within a redial, not after a stall timeout.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        // A Request/Reject loop would have read the file again and again:
        // the seeder read at most a handful of pieces.
        let sent = seeder.node.counters().bytes_up;
        assert!(sent < 8 << 20, "the seeder sent {sent} bytes");
        // Later streams are refused with the reason, not served.
        let (near, far) = tokio::io::duplex(PIPE_BUF);
        let node = seeder.node.clone();
        tokio::spawn(async move {
            let _ = node.accept(peer_id(9), far).await;
        });
        let mut raw = Raw::new(near);
        raw.send(&Message::Hello(Hello::new(share.id))).await;
        raw.send(&Message::HaveNone).await;
        match raw.recv().await.expect("deny").msg() {
            Message::Deny { reason, text } => {
                assert_eq!(reason, shoal_core::proto::DenyReason::NotFound);
                assert!(text.contains("no longer matches"), "{text}");
            }
            other => panic!("expected Deny, got {other:?}"),
        }
    })
    .await
    .expect("timed out");
}

/// A raw peer (id 9) on a 64 KiB pipe to `seeder` that has handshaken for
/// `id`, said it is interested and asked for the pieces it was shown.
async fn requesting_peer(seeder: &TestNode, id: ContentId) -> Raw {
    let (near, far) = tokio::io::duplex(64 * 1024);
    let node = seeder.node.clone();
    tokio::spawn(async move {
        let _ = node.accept(peer_id(9), far).await;
    });
    let mut raw = Raw::new(near);
    raw.send(&Message::Hello(Hello::new(id))).await;
    raw.send(&Message::HaveNone).await;
    let _hello = raw.recv().await.expect("the seeder's hello");
    let _avail = raw.recv().await.expect("the seeder's availability");
    raw.send(&Message::Interested).await;
    request_offers(&mut raw).await;
    raw
}

/// Asks for the pieces an initial-seeding seeder shows this peer (the `Have`s
/// after its `Unchoke`), so that the seeder has pieces to send it.
async fn request_offers(raw: &mut Raw) {
    let mut offered = Vec::new();
    let mut unchoked = false;
    while !unchoked || offered.len() < 4 {
        let frame = raw.recv().await.expect("the seeder's unchoke and offers");
        match frame.msg() {
            Message::Unchoke => unchoked = true,
            Message::Have { piece } => offered.push(piece),
            _ => {}
        }
    }
    for piece in offered {
        raw.send(&Message::Request { piece }).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_reads_slowly_does_not_delay_other_downloads() {
    timeout(TEST_TIMEOUT, async {
        let seeder = TestNode::new(1);
        let data = random_bytes(16 << 20, 44);
        let share = seeder.share_bytes("f.bin", &data);
        let mut slow = requesting_peer(&seeder, share.id).await;
        // It reads 16 KiB every 250 ms: 64 KiB/s, a 256 KiB piece in 4 s.
        use tokio::io::AsyncReadExt;
        let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = read.clone();
        let reader = tokio::spawn(async move {
            let mut chunk = vec![0u8; 16 * 1024];
            loop {
                match slow.s.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        counter.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;

        let leecher = TestNode::new(2);
        let started = std::time::Instant::now();
        let mut h = leecher.node.download(
            share.id,
            Kind::File,
            &leecher.path("out"),
            None,
            PipeConnector::new(leecher.id, &[&seeder]),
        );
        let path = h.result().await.expect("the other download completes");
        let took = started.elapsed();
        assert!(std::fs::read(path).expect("read") == data);
        // Served at its own pace, the slow peer held the shared upload slot
        // for at most `upload_stall` (1 s). Holding it for every one of its
        // pieces, as before, costs the other download 4 s per piece.
        assert!(took < std::time::Duration::from_secs(8), "took {took:?}");
        // And the slow peer is still being served, not dropped.
        let before = read.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let after = read.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            !reader.is_finished(),
            "the seeder closed the slow reader's session after {after} bytes"
        );
        assert!(
            after > before,
            "the slow reader stopped receiving ({before} bytes)"
        );
        reader.abort();
    })
    .await
    .expect("timed out: a slow reader held the seeder up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_does_not_stall_other_downloads() {
    timeout(TEST_TIMEOUT, async {
        let seeder = TestNode::new(1);
        let data = random_bytes(16 << 20, 43);
        let share = seeder.share_bytes("f.bin", &data);
        // A peer that asks for what it is shown and then never reads: a small
        // pipe, so the seeder's writes stop at once.
        let hog = requesting_peer(&seeder, share.id).await;
        // (It keeps the stream open and reads nothing from here on.)
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;

        let leecher = TestNode::new(2);
        let started = std::time::Instant::now();
        let mut h = leecher.node.download(
            share.id,
            Kind::File,
            &leecher.path("out"),
            None,
            PipeConnector::new(leecher.id, &[&seeder]),
        );
        let path = h.result().await.expect("the other download completes");
        assert!(std::fs::read(path).expect("read") == data);
        // The hog loses its upload slot after `upload_stall` (1 s) and its
        // session after WRITE_STALL (5 s), not never.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(8),
            "took {:?}",
            started.elapsed()
        );
        drop(hog);
    })
    .await
    .expect("timed out: a peer that never reads stalled the seeder");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_run_again_finds_its_file_and_fetches_nothing() {
    timeout(TEST_TIMEOUT, async {
        let seeder = TestNode::new(1);
        let data = random_bytes(8 << 20, 45);
        let share = seeder.share_bytes("f.bin", &data);
        let leecher = TestNode::new(2);
        let out = leecher.path("out");
        let mut h = leecher.node.download(
            share.id,
            Kind::File,
            &out,
            None,
            PipeConnector::new(leecher.id, &[&seeder]),
        );
        let first = h.result().await.expect("the first download completes");
        drop(h);
        let pieces = leecher.node.counters().pieces_verified;
        assert!(pieces > 0);
        // The same download again: the file is there, so nothing is fetched.
        let mut h = leecher.node.download(
            share.id,
            Kind::File,
            &out,
            None,
            PipeConnector::new(leecher.id, &[&seeder]),
        );
        let again = h.result().await.expect("the second run finds the file");
        assert_eq!(again, first);
        assert_eq!(
            leecher.node.counters().pieces_verified,
            pieces,
            "the second run fetched pieces again"
        );
        assert!(std::fs::read(&again).expect("read") == data);
        // A different file of the same length at that place is not taken
        // for the content, and is left alone.
        let other = random_bytes(8 << 20, 46);
        std::fs::write(&again, &other).unwrap();
        let mut h = leecher.node.download(
            share.id,
            Kind::File,
            &out,
            None,
            PipeConnector::new(leecher.id, &[&seeder]),
        );
        let err = h.result().await.expect_err("another file is in the way");
        assert!(err.to_string().contains("exists"), "{err}");
        assert!(std::fs::read(&again).expect("read") == other);
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_seeders_size_is_not_shown_before_it_is_verified() {
    timeout(TEST_TIMEOUT, async {
        let data = Arc::new(random_bytes(3 << 20, 47));
        let id = ContentId::of(&data);
        let leecher = TestNode::new(2);
        // A seeder that claims 4 TiB for a 3 MiB content and never proves it.
        let conn = Arc::new(RawConnector {
            peer: peer_id(1),
            serve: move |mut raw: Raw| async move {
                let Some(first) = raw.recv().await else {
                    return;
                };
                if !matches!(first.msg(), Message::Hello(_)) {
                    return;
                }
                let _availability = raw.recv().await;
                let hello = Hello {
                    piece_size: Some(4 << 20),
                    content_len: Some((1u64 << 42) - 1),
                    ..Hello::new(id)
                };
                raw.send(&Message::Hello(hello)).await;
                raw.send(&Message::HaveAll).await;
                while let Some(f) = raw.recv().await {
                    match f.msg() {
                        Message::Interested => raw.send(&Message::Unchoke).await,
                        // It never sends the outboard that would expose it.
                        Message::Close { .. } => return,
                        _ => {}
                    }
                }
            },
        });
        let out = leecher.path("out");
        let mut h = leecher.node.download(id, Kind::File, &out, Some("f"), conn);
        let mut rx = h.progress();
        let watch = tokio::spawn(async move {
            let mut shown = Vec::new();
            while rx.changed().await.is_ok() {
                if let Some(t) = rx.borrow_and_update().total_bytes {
                    shown.push(t);
                }
            }
            shown
        });
        // Long enough for several progress updates while it stalls.
        let res = tokio::time::timeout(std::time::Duration::from_secs(3), h.result()).await;
        h.stop().await;
        let shown = watch.await.expect("watcher");
        assert!(
            shown.iter().all(|t| *t != (1u64 << 42) - 1),
            "the claimed size was shown: {shown:?} (result {res:?})"
        );
    })
    .await
    .expect("timed out");
}

/// A raw folder-session initiator (peer `who`) holding none of the `files`
/// files of collection `id`, past both `FileBitfield`s.
async fn raw_folder_peer(seeder: &TestNode, id: ContentId, files: u32, who: u8) -> Raw {
    let (near, far) = tokio::io::duplex(PIPE_BUF);
    let node = seeder.node.clone();
    tokio::spawn(async move {
        let _ = node.accept(peer_id(who), far).await;
    });
    let mut raw = Raw::new(near);
    raw.send(&Message::Hello(Hello::new(id))).await;
    let bits = vec![0u8; (files as usize).div_ceil(8)];
    raw.send(&Message::FileBitfield {
        num_files: files,
        bits: &bits,
    })
    .await;
    let hello = raw.recv().await.expect("the seeder's hello");
    assert!(matches!(hello.msg(), Message::Hello(_)));
    let avail = raw.recv().await.expect("the seeder's file bitfield");
    assert!(matches!(avail.msg(), Message::FileBitfield { .. }));
    raw
}

/// The next message within 5 s that is not a `KeepAlive` nor the sender's
/// interest (a seeder says it is not interested).
async fn next_msg(raw: &mut Raw) -> RawFrame {
    loop {
        let f = timeout(Duration::from_secs(5), raw.recv())
            .await
            .expect("a message within 5 s")
            .expect("the stream is open");
        if !matches!(
            f.msg(),
            Message::KeepAlive | Message::Interested | Message::NotInterested
        ) {
            return f;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_seeder_serves_as_many_peers_as_it_has_slots_and_answers_the_others_choked() {
    timeout(TEST_TIMEOUT, async {
        // One upload slot, no optimistic one, and no round in the test's
        // time: only interest moves the slot.
        let cfg = NodeConfig {
            swarm: shoal_swarm::Config {
                regular_slots: 1,
                optimistic_slots: 0,
                initial_seeding: false,
                rechoke_interval: Duration::from_secs(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let seeder = TestNode::with_config(1, cfg);
        let src = seeder.path("src");
        std::fs::create_dir_all(&src).expect("mkdir");
        let contents: Vec<Vec<u8>> = (0..3u8).map(|i| vec![b'a' + i; 100]).collect();
        for (i, c) in contents.iter().enumerate() {
            std::fs::write(src.join(format!("{i}.txt")), c).expect("write");
        }
        let share = seeder.share(&src);
        assert_eq!(share.kind, Kind::Collection);

        // The first peer takes the slot: it is never choked and is served.
        let mut a = raw_folder_peer(&seeder, share.id, 3, 9).await;
        a.send(&Message::Request { piece: 0 }).await;
        let f = next_msg(&mut a).await;
        let Message::Piece { piece: 0, data } = f.msg() else {
            panic!("expected file 0, got {:?}", f.msg());
        };
        assert!(contents.iter().any(|c| c == data));

        // The second finds the slot taken: choked at once, and a request
        // that crosses the Choke is answered Choked.
        let mut b = raw_folder_peer(&seeder, share.id, 3, 10).await;
        assert!(matches!(next_msg(&mut b).await.msg(), Message::Choke));
        b.send(&Message::Request { piece: 1 }).await;
        let f = next_msg(&mut b).await;
        assert!(
            matches!(
                f.msg(),
                Message::Reject {
                    piece: 1,
                    reason: RejectReason::Choked
                }
            ),
            "{:?}",
            f.msg()
        );

        // The first wants nothing more: its slot goes to the second, and
        // the first is choked.
        a.send(&Message::NotInterested).await;
        assert!(matches!(next_msg(&mut a).await.msg(), Message::Choke));
        assert!(matches!(next_msg(&mut b).await.msg(), Message::Unchoke));
        b.send(&Message::Request { piece: 1 }).await;
        let f = next_msg(&mut b).await;
        let Message::Piece { piece: 1, data } = f.msg() else {
            panic!("expected file 1, got {:?}", f.msg());
        };
        assert!(contents.iter().any(|c| c == data));
        a.send(&Message::Request { piece: 2 }).await;
        assert!(matches!(
            next_msg(&mut a).await.msg(),
            Message::Reject {
                piece: 2,
                reason: RejectReason::Choked
            }
        ));
    })
    .await
    .expect("timed out");
}
