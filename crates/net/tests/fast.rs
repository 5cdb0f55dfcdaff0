//! The TCP + TLS 1.3 fast path proves peer ids and carries bulk data.

use std::time::Duration;

use libp2p::tls::certificate;
use shoal_net::fast::FastTls;
use shoal_net::{Keypair, NetError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(30);

async fn loopback_listener() -> (TcpListener, std::net::SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

#[tokio::test]
async fn wrong_peer_id_is_refused_with_both_ids_and_no_bytes() {
    let k1 = Keypair::generate_ed25519();
    let k2 = Keypair::generate_ed25519();
    let kc = Keypair::generate_ed25519();
    let (id1, id2) = (k1.public().to_peer_id(), k2.public().to_peer_id());
    let server = FastTls::new(&k1).unwrap();
    let client = FastTls::new(&kc).unwrap();
    let (listener, addr) = loopback_listener().await;

    let srv = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        match server.accept(tcp).await {
            // Should never happen; if it does, prove bytes could flow.
            Ok((_, mut s)) => {
                let _ = s.write_all(b"application data").await;
                Ok(())
            }
            Err(e) => Err(e),
        }
    });

    let err = timeout(T, client.connect(addr, id2))
        .await
        .unwrap()
        .unwrap_err();
    match &err {
        NetError::PeerIdMismatch { addr: at, ids } => {
            assert_eq!(*at, addr);
            assert_eq!(ids.expected, id2);
            assert_eq!(ids.actual, id1);
        }
        other => panic!("expected a peer id mismatch, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&id1.to_string()) && msg.contains(&id2.to_string()),
        "{msg}"
    );

    // The server's handshake aborts too: no stream was ever handed out.
    let srv = timeout(T, srv).await.unwrap().unwrap();
    assert!(
        srv.is_err(),
        "server accepted a connection the client refused"
    );
}

#[tokio::test]
async fn right_peer_id_succeeds_and_both_sides_see_the_real_ids() {
    let ks = Keypair::generate_ed25519();
    let kc = Keypair::generate_ed25519();
    let (ids, idc) = (ks.public().to_peer_id(), kc.public().to_peer_id());
    let server = FastTls::new(&ks).unwrap();
    let client = FastTls::new(&kc).unwrap();
    let (listener, addr) = loopback_listener().await;

    let srv = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (peer, mut s) = server.accept(tcp).await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(b"world").await.unwrap();
        s.shutdown().await.unwrap();
        (peer, buf)
    });

    let mut c = timeout(T, client.connect(addr, ids))
        .await
        .unwrap()
        .unwrap();
    let certs = c.get_ref().1.peer_certificates().unwrap().to_vec();
    assert_eq!(certs.len(), 1);
    assert_eq!(certificate::parse(&certs[0]).unwrap().peer_id(), ids);
    assert_eq!(c.get_ref().1.alpn_protocol(), Some(&b"shoal-xfer/1"[..]));
    c.write_all(b"hello").await.unwrap();
    let mut reply = Vec::new();
    timeout(T, c.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, b"world");

    let (seen, got) = timeout(T, srv).await.unwrap().unwrap();
    assert_eq!(seen, idc);
    assert_eq!(&got, b"hello");
}

#[tokio::test]
async fn aes_gcm_is_negotiated() {
    let ks = Keypair::generate_ed25519();
    let server = FastTls::new(&ks).unwrap();
    let client = FastTls::new(&Keypair::generate_ed25519()).unwrap();
    let (listener, addr) = loopback_listener().await;
    let srv = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        server.accept(tcp).await.map(|_| ())
    });
    let c = timeout(T, client.connect(addr, ks.public().to_peer_id()))
        .await
        .unwrap()
        .unwrap();
    let suite = c.get_ref().1.negotiated_cipher_suite().unwrap().suite();
    assert_eq!(suite, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    timeout(T, srv).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn echo_of_64_mib_in_large_chunks_is_intact() {
    const TOTAL: usize = 64 << 20;
    const CHUNK: usize = 1 << 20;
    let ks = Keypair::generate_ed25519();
    let server = FastTls::new(&ks).unwrap();
    let client = FastTls::new(&Keypair::generate_ed25519()).unwrap();
    let (listener, addr) = loopback_listener().await;

    let srv = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (_, s) = server.accept(tcp).await.unwrap();
        let (mut r, mut w) = tokio::io::split(s);
        let n = tokio::io::copy(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
        n
    });

    let c = timeout(T, client.connect(addr, ks.public().to_peer_id()))
        .await
        .unwrap()
        .unwrap();
    let (mut r, mut w) = tokio::io::split(c);
    let pattern = |i: usize| (i.wrapping_mul(2654435761) >> 7) as u8;
    let writer = tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        for off in (0..TOTAL).step_by(CHUNK) {
            for (j, b) in buf.iter_mut().enumerate() {
                *b = pattern(off + j);
            }
            w.write_all(&buf).await.unwrap();
        }
        w.shutdown().await.unwrap();
    });
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0usize;
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            for (j, b) in buf[..n].iter().enumerate() {
                assert_eq!(*b, pattern(got + j), "byte {} differs", got + j);
            }
            got += n;
        }
        got
    };
    let got = timeout(Duration::from_secs(120), reader).await.unwrap();
    assert_eq!(got, TOTAL);
    timeout(T, writer).await.unwrap().unwrap();
    assert_eq!(timeout(T, srv).await.unwrap().unwrap(), TOTAL as u64);
}

#[tokio::test]
async fn client_offering_another_alpn_is_refused() {
    let ks = Keypair::generate_ed25519();
    let kc = Keypair::generate_ed25519();
    let server = FastTls::new(&ks).unwrap();
    let (listener, addr) = loopback_listener().await;
    let srv = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        server.accept(tcp).await.map(|_| ())
    });

    // A plain libp2p TLS client (ALPN "libp2p") proving the right ids.
    let cfg = libp2p::tls::make_client_config(&kc, Some(ks.public().to_peer_id())).unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let client = timeout(T, connector.connect(name, tcp)).await.unwrap();
    assert!(client.is_err(), "a client without shoal-xfer/1 got through");
    let srv = timeout(T, srv).await.unwrap().unwrap();
    let err = srv.unwrap_err();
    assert!(matches!(err, NetError::Handshake { .. }), "{err:?}");
}
