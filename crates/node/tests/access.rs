//! Access control between in-process nodes: every inbound stream is admitted
//! by policy, and a policy change closes the sessions it no longer allows.

mod common;

use std::time::{Duration, Instant};

use common::*;
use shoal_core::invite::{Invite, InviteId};
use shoal_core::{ContentId, Kind};
use shoal_node::control::InviteOptions;
use shoal_node::{DownloadHandle, Limits, NodeError};
use shoal_store::Visibility;
use tokio::time::timeout;

const MIB: usize = 1 << 20;

/// Waits until the download has verified some bytes (but is not done).
async fn until_started(h: &DownloadHandle) {
    let mut rx = h.progress();
    loop {
        {
            let p = rx.borrow_and_update();
            if p.done_bytes > 0 {
                assert!(!p.complete, "finished before the policy change");
                return;
            }
            assert!(p.failed.is_none(), "failed early: {:?}", p.failed);
        }
        rx.changed().await.expect("progress");
    }
}

fn err_text(r: Result<std::path::PathBuf, NodeError>) -> String {
    match r {
        Ok(p) => panic!("download succeeded: {}", p.display()),
        Err(e) => e.to_string(),
    }
}

/// A seeder serving at `rate` bytes/s so that a download can be caught mid-way.
fn slow_seeder(i: u8, rate: u64) -> TestNode {
    let s = TestNode::new(i);
    s.node.set_limits(Limits {
        upload: Some(rate),
        download: None,
    });
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_share_is_refused_and_its_sessions_close() {
    timeout(TEST_TIMEOUT, async {
        let a = TestNode::new(1);
        let data = random_bytes(2 * MIB, 1);
        let share = a.share_bytes("f.bin", &data);
        // B fetches it and keeps its download (and A's seed task) alive.
        let b = TestNode::new(2);
        let mut hb = b.node.download(
            share.id,
            Kind::File,
            &b.path("out"),
            None,
            PipeConnector::new(b.id, &[&a]),
        );
        hb.result().await.expect("B downloads");
        a.control(1).unshare(share.id).expect("unshare");
        // C, with the old ticket, is refused and receives nothing.
        let c = TestNode::new(3);
        let mut hc = c.node.download(
            share.id,
            Kind::File,
            &c.path("out"),
            None,
            PipeConnector::new(c.id, &[&a]),
        );
        let msg = err_text(hc.result().await);
        assert!(msg.contains("no longer shares"), "{msg}");
        assert_eq!(hc.progress().borrow().done_bytes, 0);
        assert!(!c.path("out").join(share.id.to_hex()).exists());
        let log = a.control(1).access_log(None, 10).expect("log");
        assert!(
            log.iter().any(|e| e.peer_id == c.id.to_base58()
                && !e.allowed
                && e.reason.contains("NotFound")),
            "{log:?}"
        );
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn making_a_share_private_closes_a_running_download_which_resumes_once_allowed() {
    timeout(TEST_TIMEOUT, async {
        let a = slow_seeder(1, 2 * MIB as u64);
        let data = random_bytes(8 * MIB, 2);
        let share = a.share_bytes("f.bin", &data);
        let c = TestNode::new(3);
        let out = c.path("out");
        let mut hc = c.node.download(
            share.id,
            Kind::File,
            &out,
            Some("f.bin"),
            PipeConnector::new(c.id, &[&a]),
        );
        until_started(&hc).await;
        let t = Instant::now();
        a.control(1)
            .set_visibility(share.id, Visibility::Private)
            .expect("private");
        let msg = err_text(hc.result().await);
        let took = t.elapsed();
        assert!(took < Duration::from_secs(1), "closed after {took:?}");
        assert!(
            msg.contains("no longer allows") && msg.contains("private"),
            "{msg}"
        );
        let had = hc.progress().borrow().done_bytes;
        assert!(had > 0 && had < data.len() as u64, "{had}");
        hc.stop().await;
        // Allowed now: the download resumes from its verified pieces.
        a.node.set_limits(Limits::default());
        assert!(a.control(1).allow(share.id, c.id).expect("allow"));
        let mut again = c.node.download(
            share.id,
            Kind::File,
            &out,
            Some("f.bin"),
            PipeConnector::new(c.id, &[&a]),
        );
        let path = again.result().await.expect("resumed download");
        assert!(std::fs::read(path).expect("read") == data);
        let up: u64 = again
            .progress()
            .borrow()
            .peers
            .iter()
            .map(|p| p.downloaded)
            .sum();
        assert!(
            up <= data.len() as u64 - had + 256 * 1024,
            "fetched {up} bytes again after having {had}"
        );
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_share_serves_only_its_allowlist_and_denying_closes_the_session() {
    timeout(TEST_TIMEOUT, async {
        let a = slow_seeder(1, 2 * MIB as u64);
        let data = random_bytes(6 * MIB, 3);
        let share = a.share_bytes("f.bin", &data);
        let ctl = a.control(1);
        ctl.set_visibility(share.id, Visibility::Private).unwrap();
        let d = TestNode::new(4);
        let mut hd = d.node.download(
            share.id,
            Kind::File,
            &d.path("out"),
            None,
            PipeConnector::new(d.id, &[&a]),
        );
        let msg = err_text(hd.result().await);
        assert!(msg.contains("this share is private"), "{msg}");
        let log = ctl.access_log(Some(share.id), 10).unwrap();
        assert!(log.iter().any(|e| e.peer_id == d.id.to_base58()
            && !e.allowed
            && e.reason.contains("AccessDenied")));

        let e = TestNode::new(5);
        ctl.allow(share.id, e.id).unwrap();
        let mut he = e.node.download(
            share.id,
            Kind::File,
            &e.path("out"),
            None,
            PipeConnector::new(e.id, &[&a]),
        );
        until_started(&he).await;
        ctl.deny(share.id, e.id).unwrap();
        let msg = err_text(he.result().await);
        assert!(msg.contains("private"), "{msg}");

        // Allowed again, it completes.
        a.node.set_limits(Limits::default());
        ctl.allow(share.id, e.id).unwrap();
        he.stop().await;
        let mut he = e.node.download(
            share.id,
            Kind::File,
            &e.path("out"),
            None,
            PipeConnector::new(e.id, &[&a]),
        );
        let p = he.result().await.expect("allowed download");
        assert!(std::fs::read(p).unwrap() == data);
        let log = ctl.access_log(Some(share.id), 50).unwrap();
        assert!(log.iter().any(|r| r.peer_id == e.id.to_base58()
            && r.allowed
            && r.reason == "allowlist"
            && r.bytes > 0));
    })
    .await
    .expect("timed out");
}

/// Fetches `id` from `a` as node `i` presenting `cap`: the result.
async fn fetch_with(
    a: &TestNode,
    i: u8,
    id: ContentId,
    kind: Kind,
    cap: Option<Vec<u8>>,
) -> Result<std::path::PathBuf, NodeError> {
    fetch_into(a, &TestNode::new(i), id, kind, cap).await
}

/// Fetches `id` from `a` into node `n` presenting `cap`.
async fn fetch_into(
    a: &TestNode,
    n: &TestNode,
    id: ContentId,
    kind: Kind,
    cap: Option<Vec<u8>>,
) -> Result<std::path::PathBuf, NodeError> {
    let mut h = n.node.download_with(
        id,
        kind,
        &n.path("out"),
        None,
        PipeConnector::new(n.id, &[a]),
        cap,
    );
    let r = h.result().await;
    if r.is_err() {
        assert_eq!(h.progress().borrow().done_bytes, 0, "denied but got data");
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_are_checked_before_any_data_moves() {
    timeout(TEST_TIMEOUT, async {
        let a = TestNode::new(1);
        let data = random_bytes(MIB, 4);
        let share = a.share_bytes("f.bin", &data);
        let other = a.share_bytes("g.bin", &random_bytes(1000, 5));
        let ctl = a.control(1);
        ctl.set_visibility(share.id, Visibility::Private).unwrap();
        ctl.set_visibility(other.id, Visibility::Private).unwrap();
        let invite = |o: InviteOptions| ctl.invite(share.id, &o).expect("invite").encoded;

        // Valid: served (twice, to distinct peers, with no use limit).
        let any = invite(InviteOptions::default());
        fetch_with(&a, 10, share.id, Kind::File, Some(any.clone()))
            .await
            .expect("valid invite");
        fetch_with(&a, 11, share.id, Kind::File, Some(any.clone()))
            .await
            .expect("valid invite");

        // For another recipient.
        let for_12 = invite(InviteOptions {
            to: Some(peer_id(12)),
            ..Default::default()
        });
        let msg = err_text(fetch_with(&a, 13, share.id, Kind::File, Some(for_12.clone())).await);
        assert!(msg.contains("made for another peer id"), "{msg}");
        fetch_with(&a, 12, share.id, Kind::File, Some(for_12))
            .await
            .expect("its recipient");

        // One use: the second peer is refused, the first may come back.
        let once = invite(InviteOptions {
            uses: Some(1),
            ..Default::default()
        });
        fetch_with(&a, 14, share.id, Kind::File, Some(once.clone()))
            .await
            .expect("first use");
        let msg = err_text(fetch_with(&a, 15, share.id, Kind::File, Some(once.clone())).await);
        assert!(msg.contains("used by as many peers"), "{msg}");
        fetch_with(&a, 14, share.id, Kind::File, Some(once))
            .await
            .expect("same peer again");

        // Revoked.
        let rec = ctl.invite(share.id, &InviteOptions::default()).unwrap();
        ctl.revoke(&rec.id).unwrap();
        let msg = err_text(fetch_with(&a, 16, share.id, Kind::File, Some(rec.encoded)).await);
        assert!(msg.contains("revoked"), "{msg}");

        // One flipped bit (in the signature), another node's signature, and an
        // invite for other content.
        let mut flipped = any.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x10;
        let msg = err_text(fetch_with(&a, 17, share.id, Kind::File, Some(flipped)).await);
        assert!(msg.contains("not valid"), "{msg}");
        let forged = Invite::issue(
            &keypair(99),
            InviteId([1; 16]),
            share.id,
            Kind::File,
            None,
            1,
            None,
            None,
        )
        .unwrap()
        .encode();
        let msg = err_text(fetch_with(&a, 18, share.id, Kind::File, Some(forged)).await);
        assert!(msg.contains("not valid"), "{msg}");
        let for_other = ctl
            .invite(other.id, &InviteOptions::default())
            .unwrap()
            .encoded;
        let msg = err_text(fetch_with(&a, 19, share.id, Kind::File, Some(for_other)).await);
        assert!(msg.contains("other content"), "{msg}");

        // Expired (a one-second invite, used two seconds later).
        let short = invite(InviteOptions {
            expires: Some(Duration::from_secs(1)),
            ..Default::default()
        });
        let exp = Invite::decode(&short).unwrap().expires_at.unwrap();
        while shoal_node::access::now_secs() <= exp {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let msg = err_text(fetch_with(&a, 20, share.id, Kind::File, Some(short)).await);
        assert!(
            msg.contains(&format!(
                "this invite expired at {}",
                shoal_node::access::utc(exp)
            )),
            "{msg}"
        );
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_invite_closes_the_session_it_admitted() {
    timeout(TEST_TIMEOUT, async {
        let a = slow_seeder(1, 2 * MIB as u64);
        let data = random_bytes(8 * MIB, 6);
        let share = a.share_bytes("f.bin", &data);
        let ctl = a.control(1);
        ctl.set_visibility(share.id, Visibility::Private).unwrap();
        let rec = ctl.invite(share.id, &InviteOptions::default()).unwrap();
        let c = TestNode::new(3);
        let mut h = c.node.download_with(
            share.id,
            Kind::File,
            &c.path("out"),
            None,
            PipeConnector::new(c.id, &[&a]),
            Some(rec.encoded.clone()),
        );
        until_started(&h).await;
        let t = Instant::now();
        ctl.revoke(&rec.id).unwrap();
        let msg = err_text(h.result().await);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert!(
            msg.contains("access") || msg.contains("private") || msg.contains("revoked"),
            "{msg}"
        );
        assert!(h.progress().borrow().done_bytes < data.len() as u64);
    })
    .await
    .expect("timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_invite_serves_every_file_of_the_folder_and_nothing_else() {
    timeout(TEST_TIMEOUT, async {
        let a = TestNode::new(1);
        let src = a.path("folder");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("one.txt"), b"one").unwrap();
        std::fs::write(src.join("sub/two.bin"), random_bytes(MIB + 7, 7)).unwrap();
        let folder = a.share(&src);
        let outside = a.share_bytes("outside.bin", &random_bytes(5000, 8));
        let ctl = a.control(1);
        ctl.set_visibility(folder.id, Visibility::Private).unwrap();
        ctl.set_visibility(outside.id, Visibility::Private).unwrap();
        let cap = ctl
            .invite(folder.id, &InviteOptions::default())
            .unwrap()
            .encoded;
        let n = TestNode::new(30);
        let root = fetch_into(&a, &n, folder.id, Kind::Collection, Some(cap.clone()))
            .await
            .expect("the folder");
        assert_eq!(std::fs::read(root.join("one.txt")).unwrap(), b"one");
        // A single file of the folder, fetched by its own id, with the folder's invite.
        let two = ContentId::of(&std::fs::read(src.join("sub/two.bin")).unwrap());
        fetch_with(&a, 31, two, Kind::File, Some(cap.clone()))
            .await
            .expect("a file of the folder");
        let msg = err_text(fetch_with(&a, 32, outside.id, Kind::File, Some(cap)).await);
        assert!(msg.contains("other content"), "{msg}");
    })
    .await
    .expect("timed out");
}
