//! End-to-end transfers between in-process nodes over duplex pipes.

mod common;

use common::*;
use shoal_core::Kind;
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_from_one_seeder_to_one_leecher_is_identical() {
    timeout(TEST_TIMEOUT, async {
        let seeder = TestNode::new(1);
        let data = random_bytes(8 << 20, 1);
        let share = seeder.share_bytes("src.bin", &data);
        let leecher = TestNode::new(2);
        let out = leecher.path("out");
        let conn = PipeConnector::new(leecher.id, &[&seeder]);
        let mut h = leecher
            .node
            .download(share.id, Kind::File, &out, Some("file.bin"), conn);
        let path = h.result().await.expect("download");
        assert_eq!(path, out.join("file.bin"));
        assert!(std::fs::read(&path).expect("read") == data, "bytes differ");
        let p = h.progress().borrow().clone();
        assert_eq!(p.pieces_done, 32);
        assert_eq!(p.done_bytes, 8 << 20);
    })
    .await
    .expect("timed out");
}
