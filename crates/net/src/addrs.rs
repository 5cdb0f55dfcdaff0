//! Address helpers: the fast-path multiaddr form, ticket address selection
//! (docs/net-design.md §6) and the `/shoal/fastpath/1` answer frame (§7.3).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use shoal_core::ticket::{MAX_ADDRS_PER_PROVIDER, MAX_ADDR_LEN};
use shoal_core::wire::{Reader, WireError, Writer};

/// Fast-path addresses per `/shoal/fastpath/1` answer.
pub const MAX_FAST_ADDRS: usize = MAX_ADDRS_PER_PROVIDER;
/// Largest `/shoal/fastpath/1` answer: a count and `MAX_FAST_ADDRS` length-prefixed addresses.
pub const MAX_FAST_FRAME: usize = 1 + MAX_FAST_ADDRS * (2 + MAX_ADDR_LEN);

/// The multiaddr form of a fast-path address: `/ip4/A/tcp/P/tls` (`/ip6/` for
/// v6). No enabled libp2p transport dials it, and the swarm task strips such
/// addresses before any libp2p dial.
pub fn fast_multiaddr(sa: SocketAddr) -> Multiaddr {
    ip_multiaddr(sa.ip())
        .with(Protocol::Tcp(sa.port()))
        .with(Protocol::Tls)
}

/// `/ip4/A` or `/ip6/A`.
pub fn ip_multiaddr(ip: IpAddr) -> Multiaddr {
    Multiaddr::empty().with(match ip {
        IpAddr::V4(a) => Protocol::Ip4(a),
        IpAddr::V6(a) => Protocol::Ip6(a),
    })
}

/// If `m` is a fast-path address (`/ip4|ip6/A/tcp/P/tls`, optionally followed
/// by `/p2p/ID`), its socket address and the peer id it names.
pub fn parse_fast_multiaddr(m: &Multiaddr) -> Option<(SocketAddr, Option<PeerId>)> {
    let mut it = m.iter();
    let ip = match it.next()? {
        Protocol::Ip4(a) => IpAddr::V4(a),
        Protocol::Ip6(a) => IpAddr::V6(a),
        _ => return None,
    };
    let Protocol::Tcp(port) = it.next()? else {
        return None;
    };
    let Protocol::Tls = it.next()? else {
        return None;
    };
    let peer = match it.next() {
        None => None,
        Some(Protocol::P2p(p)) => Some(p),
        Some(_) => return None,
    };
    if it.next().is_some() {
        return None;
    }
    Some((SocketAddr::new(ip, port), peer))
}

/// Whether `m` is a fast-path address.
pub fn is_fast_multiaddr(m: &Multiaddr) -> bool {
    parse_fast_multiaddr(m).is_some()
}

/// The IP an address starts with, if any.
pub fn multiaddr_ip(m: &Multiaddr) -> Option<IpAddr> {
    match m.iter().next()? {
        Protocol::Ip4(a) => Some(IpAddr::V4(a)),
        Protocol::Ip6(a) => Some(IpAddr::V6(a)),
        _ => None,
    }
}

/// `m` without a trailing `/p2p/ID`, and that id.
pub fn split_p2p(m: &Multiaddr) -> (Multiaddr, Option<PeerId>) {
    let mut m = m.clone();
    match m.iter().last() {
        Some(Protocol::P2p(p)) => {
            m.pop();
            (m, Some(p))
        }
        _ => (m, None),
    }
}

/// Whether an address goes through a relay.
pub fn is_relayed(m: &Multiaddr) -> bool {
    m.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// How good an IP is for others to reach us: lower is better.
/// 1 = global, 2 = private/link-local/unique-local, 3 = loopback, 4 = unusable.
pub fn ip_rank(ip: IpAddr) -> u8 {
    if ip.is_unspecified() || ip.is_multicast() {
        return 4;
    }
    if ip.is_loopback() {
        return 3;
    }
    match ip {
        IpAddr::V4(a) => {
            if is_private_v4(a) {
                2
            } else {
                1
            }
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return ip_rank(IpAddr::V4(v4));
            }
            if is_private_v6(a) {
                2
            } else {
                1
            }
        }
    }
}

fn is_private_v4(a: Ipv4Addr) -> bool {
    let o = a.octets();
    a.is_private()
        || a.is_link_local()
        || a.is_documentation()
        || a.is_broadcast()
        // 100.64.0.0/10, carrier-grade NAT
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
}

fn is_private_v6(a: Ipv6Addr) -> bool {
    let s = a.segments();
    (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link local fe80::/10
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
}

/// Addresses a peer elsewhere cannot dial from a ticket: link-local ones
/// (169.254.0.0/16, fe80::/10: valid on one link only, and IPv6 ones need a
/// zone the ticket cannot carry) and the IPv4 broadcast address.
fn unusable_in_tickets(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_link_local() || a.is_broadcast(),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => unusable_in_tickets(IpAddr::V4(v4)),
            None => (a.segments()[0] & 0xffc0) == 0xfe80,
        },
    }
}

/// Transport order inside one IP: fast path, QUIC, TCP, anything else.
fn transport_rank(m: &Multiaddr) -> u8 {
    if is_fast_multiaddr(m) {
        0
    } else if m.iter().any(|p| matches!(p, Protocol::QuicV1)) {
        1
    } else if m.iter().any(|p| matches!(p, Protocol::Tcp(_))) {
        2
    } else {
        3
    }
}

/// Chooses at most [`MAX_ADDRS_PER_PROVIDER`] addresses for a ticket from
/// addresses we actually listen on (`listen`: libp2p listen addresses,
/// including relay circuits; `fast`: bound fast-path addresses) and confirmed
/// external addresses (`external`, mappings of those listeners).
///
/// Order: per IP, fast path then QUIC then TCP; IPs ranked confirmed-external,
/// global, private, loopback (loopback only when nothing else exists); one
/// circuit address last. Unspecified, multicast, broadcast, link-local and
/// oversized addresses are never chosen, nor one address twice.
pub fn select_ticket_addrs(
    listen: &[Multiaddr],
    fast: &[Multiaddr],
    external: &[Multiaddr],
) -> Vec<Multiaddr> {
    let usable = |m: &&Multiaddr| m.len() <= MAX_ADDR_LEN;
    let circuit = listen
        .iter()
        .filter(usable)
        .find(|m| is_relayed(m))
        .cloned();
    let external_ips: Vec<IpAddr> = external.iter().filter_map(multiaddr_ip).collect();

    // Group direct addresses by IP, keeping first-seen order for stability.
    let mut order: Vec<IpAddr> = Vec::new();
    let mut by_ip: HashMap<IpAddr, Vec<Multiaddr>> = HashMap::new();
    for m in fast
        .iter()
        .chain(external.iter())
        .chain(listen.iter())
        .filter(usable)
        .filter(|m| !is_relayed(m))
    {
        let Some(ip) = multiaddr_ip(m) else { continue };
        if ip_rank(ip) >= 4 || unusable_in_tickets(ip) {
            continue;
        }
        let list = by_ip.entry(ip).or_insert_with(|| {
            order.push(ip);
            Vec::new()
        });
        if !list.contains(m) {
            list.push(m.clone());
        }
    }
    let rank = |ip: &IpAddr| {
        if external_ips.contains(ip) {
            0
        } else {
            ip_rank(*ip)
        }
    };
    order.sort_by_key(rank);
    if order.iter().any(|ip| rank(ip) < 3) {
        order.retain(|ip| rank(ip) < 3);
    }

    let budget = MAX_ADDRS_PER_PROVIDER - usize::from(circuit.is_some());
    let mut out = Vec::with_capacity(MAX_ADDRS_PER_PROVIDER);
    for ip in order {
        let Some(mut list) = by_ip.remove(&ip) else {
            continue;
        };
        list.sort_by_key(transport_rank);
        for m in list {
            if out.len() >= budget {
                break;
            }
            out.push(m);
        }
    }
    out.extend(circuit);
    out
}

/// Why a `/shoal/fastpath/1` answer was refused.
#[derive(Debug, thiserror::Error)]
pub enum FastFrameError {
    #[error("malformed fast-path answer: {0}")]
    Wire(#[from] WireError),
    #[error("the fast-path answer holds an invalid address: {0}")]
    BadAddr(String),
}

/// Encodes the `/shoal/fastpath/1` answer: a varint count (≤ [`MAX_FAST_ADDRS`])
/// then each address as length-prefixed multiaddr bytes (≤ 128 bytes).
/// Extra or oversized addresses are left out.
pub fn encode_fast_frame(addrs: &[Multiaddr]) -> Vec<u8> {
    let addrs: Vec<&Multiaddr> = addrs
        .iter()
        .filter(|m| m.len() <= MAX_ADDR_LEN)
        .take(MAX_FAST_ADDRS)
        .collect();
    let mut w = Writer::with_capacity(MAX_FAST_FRAME);
    w.varint(addrs.len() as u64);
    for m in addrs {
        w.bytes(&m.to_vec());
    }
    w.into_vec()
}

/// Decodes a `/shoal/fastpath/1` answer; keeps only fast-path addresses.
pub fn decode_fast_frame(buf: &[u8]) -> Result<Vec<SocketAddr>, FastFrameError> {
    let mut r = Reader::new(buf);
    let n = r.varint_max(MAX_FAST_ADDRS as u64, "fast-path address count")?;
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let bytes = r.bytes(MAX_ADDR_LEN, "fast-path address")?;
        let m = Multiaddr::try_from(bytes.to_vec())
            .map_err(|e| FastFrameError::BadAddr(e.to_string()))?;
        if let Some((sa, _)) = parse_fast_multiaddr(&m) {
            out.push(sa);
        }
    }
    r.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn fast_multiaddr_round_trips_with_and_without_peer() {
        let sa: SocketAddr = "127.0.0.1:4002".parse().unwrap();
        let fm = fast_multiaddr(sa);
        assert_eq!(fm.to_string(), "/ip4/127.0.0.1/tcp/4002/tls");
        assert_eq!(parse_fast_multiaddr(&fm), Some((sa, None)));
        let peer = PeerId::random();
        let with = fm.clone().with(Protocol::P2p(peer));
        assert_eq!(parse_fast_multiaddr(&with), Some((sa, Some(peer))));
        assert!(!is_fast_multiaddr(&m("/ip4/127.0.0.1/tcp/4001")));
        assert!(!is_fast_multiaddr(&m("/ip4/127.0.0.1/tcp/4001/tls/ws")));
    }

    #[test]
    fn ticket_addrs_prefer_fast_then_quic_then_tcp_and_drop_loopback_when_others_exist() {
        let listen = vec![
            m("/ip4/127.0.0.1/tcp/4001"),
            m("/ip4/127.0.0.1/udp/4001/quic-v1"),
            m("/ip4/192.168.1.5/tcp/4001"),
            m("/ip4/192.168.1.5/udp/4001/quic-v1"),
            m("/ip4/0.0.0.0/tcp/4001"),
        ];
        let fast = vec![
            m("/ip4/127.0.0.1/tcp/4002/tls"),
            m("/ip4/192.168.1.5/tcp/4002/tls"),
        ];
        let got = select_ticket_addrs(&listen, &fast, &[]);
        assert_eq!(
            got,
            vec![
                m("/ip4/192.168.1.5/tcp/4002/tls"),
                m("/ip4/192.168.1.5/udp/4001/quic-v1"),
                m("/ip4/192.168.1.5/tcp/4001"),
            ]
        );
    }

    #[test]
    fn ticket_addrs_leave_out_link_local_and_duplicates() {
        let listen = vec![
            m("/ip4/169.254.10.2/tcp/4001"),
            m("/ip6/fe80::1/tcp/4001"),
            m("/ip4/10.0.0.7/tcp/4001"),
            m("/ip4/10.0.0.7/tcp/4001"),
            m("/ip6/::ffff:169.254.1.1/tcp/4001"),
        ];
        let fast = vec![
            m("/ip4/169.254.10.2/tcp/4002/tls"),
            m("/ip4/10.0.0.7/tcp/4002/tls"),
        ];
        let external = vec![m("/ip4/10.0.0.7/tcp/4001")];
        let got = select_ticket_addrs(&listen, &fast, &external);
        assert_eq!(
            got,
            vec![m("/ip4/10.0.0.7/tcp/4002/tls"), m("/ip4/10.0.0.7/tcp/4001")]
        );
        // Only link-local addresses: none is worth a ticket.
        let got = select_ticket_addrs(&[m("/ip6/fe80::1/udp/4001/quic-v1")], &[], &[]);
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn ticket_addrs_keep_loopback_alone_and_circuit_last_within_eight() {
        let mut listen: Vec<Multiaddr> = (0..10)
            .map(|i| m(&format!("/ip4/127.0.0.{}/tcp/4001", i + 1)))
            .collect();
        let relay = PeerId::random();
        let circuit = m(&format!("/ip4/127.0.0.1/tcp/9/p2p/{relay}/p2p-circuit"));
        listen.push(circuit.clone());
        let got = select_ticket_addrs(&listen, &[], &[]);
        assert_eq!(got.len(), MAX_ADDRS_PER_PROVIDER);
        assert_eq!(got.last(), Some(&circuit));
        assert!(got.iter().all(|a| !a.to_string().contains("0.0.0.0")));
    }

    #[test]
    fn fast_frame_round_trips_and_rejects_oversized_counts() {
        let addrs = vec![
            m("/ip4/127.0.0.1/tcp/4002/tls"),
            m("/ip6/::1/tcp/4002/tls"),
            m("/ip4/127.0.0.1/tcp/4001"),
        ];
        let frame = encode_fast_frame(&addrs);
        let got = decode_fast_frame(&frame).unwrap();
        assert_eq!(
            got,
            vec![
                "127.0.0.1:4002".parse::<SocketAddr>().unwrap(),
                "[::1]:4002".parse().unwrap()
            ]
        );
        let mut w = Writer::new();
        w.varint(9);
        assert!(decode_fast_frame(w.as_slice()).is_err());
        let mut trailing = frame.clone();
        trailing.push(0);
        assert!(decode_fast_frame(&trailing).is_err());
    }
}
