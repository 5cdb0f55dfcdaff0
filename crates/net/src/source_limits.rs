//! libp2p connection limits per source address.
//!
//! libp2p's `connection_limits` bounds connections in total and per peer id,
//! but an attacker chooses its peer ids freely: 64 TCP connections from one
//! host that never finish their handshake fill `max_pending_incoming` and
//! every other peer's connection, QUIC included, is refused until they time
//! out. This behaviour bounds inbound connections per source (an IPv4 address
//! or an IPv6 /64, see [`crate::limit::source_of`]): pending ones (still in
//! their handshake) and established ones. Relayed connections are not
//! counted here: their address is the relay's, and the relay bounds them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::{ConnectionEstablished, ListenFailure};
use libp2p::swarm::{
    dummy, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// Inbound connections from one source still in their handshake.
pub const MAX_PENDING_PER_SOURCE: usize = 8;
/// Established inbound connections from one source. Several peers may share
/// an address (a household, a carrier-grade NAT), so this is well above what
/// one peer needs (`ConnectionLimits::max_established_per_peer`).
pub const MAX_ESTABLISHED_PER_SOURCE: usize = 32;

/// Refusal of a connection over its source's limit.
#[derive(Debug, thiserror::Error)]
#[error("{count} {what} connections from {from} already (at most {max} per source)")]
pub struct SourceLimitExceeded {
    pub from: IpAddr,
    pub what: &'static str,
    pub count: usize,
    pub max: usize,
}

#[derive(Debug, Default)]
pub struct Behaviour {
    pending: HashMap<ConnectionId, IpAddr>,
    pending_per: HashMap<IpAddr, usize>,
    established: HashMap<ConnectionId, IpAddr>,
    established_per: HashMap<IpAddr, usize>,
}

/// The source an inbound connection counts against, if any.
fn source(remote: &Multiaddr) -> Option<IpAddr> {
    if remote.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return None;
    }
    remote.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(crate::limit::source_of(ip.into())),
        Protocol::Ip6(ip) => Some(crate::limit::source_of(ip.into())),
        _ => None,
    })
}

fn take(map: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(n) = map.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            map.remove(&ip);
        }
    }
}

impl Behaviour {
    fn end_pending(&mut self, id: ConnectionId) {
        if let Some(ip) = self.pending.remove(&id) {
            take(&mut self.pending_per, ip);
        }
    }

    /// Connections counted now, pending and established, from `ip`'s source.
    pub fn counts(&self, ip: IpAddr) -> (usize, usize) {
        let s = crate::limit::source_of(ip);
        (
            self.pending_per.get(&s).copied().unwrap_or(0),
            self.established_per.get(&s).copied().unwrap_or(0),
        )
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = source(remote) else {
            return Ok(());
        };
        let count = self.pending_per.get(&ip).copied().unwrap_or(0);
        if count >= MAX_PENDING_PER_SOURCE {
            return Err(ConnectionDenied::new(SourceLimitExceeded {
                from: ip,
                what: "pending",
                count,
                max: MAX_PENDING_PER_SOURCE,
            }));
        }
        *self.pending_per.entry(ip).or_insert(0) += 1;
        self.pending.insert(connection_id, ip);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.end_pending(connection_id);
        if let Some(ip) = source(remote) {
            let count = self.established_per.get(&ip).copied().unwrap_or(0);
            if count >= MAX_ESTABLISHED_PER_SOURCE {
                return Err(ConnectionDenied::new(SourceLimitExceeded {
                    from: ip,
                    what: "established",
                    count,
                    max: MAX_ESTABLISHED_PER_SOURCE,
                }));
            }
        }
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            // Counted once it is established (another behaviour may still
            // refuse it after our check), uncounted when it closes.
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                connection_id,
                endpoint: ConnectedPoint::Listener { send_back_addr, .. },
                ..
            }) => {
                if let Some(ip) = source(send_back_addr) {
                    *self.established_per.entry(ip).or_insert(0) += 1;
                    self.established.insert(connection_id, ip);
                }
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                if let Some(ip) = self.established.remove(&connection_id) {
                    take(&mut self.established_per, ip);
                }
            }
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.end_pending(connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}
