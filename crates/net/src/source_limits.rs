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
use std::sync::Arc;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::swarm::behaviour::{ConnectionEstablished, ListenFailure};
use libp2p::swarm::{
    dummy, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

use crate::limit::{source_of_addr, PerSource, SourceGuard};

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

/// The connections counted per source: a slot of a [`PerSource`] held while
/// the connection is pending, then another while it is established.
#[derive(Debug)]
pub struct Behaviour {
    pending_set: Arc<PerSource<IpAddr>>,
    established_set: Arc<PerSource<IpAddr>>,
    pending: HashMap<ConnectionId, SourceGuard<IpAddr>>,
    established: HashMap<ConnectionId, SourceGuard<IpAddr>>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            pending_set: PerSource::new(MAX_PENDING_PER_SOURCE),
            established_set: PerSource::new(MAX_ESTABLISHED_PER_SOURCE),
            pending: HashMap::new(),
            established: HashMap::new(),
        }
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
        let Some(ip) = source_of_addr(remote) else {
            return Ok(());
        };
        let Some(slot) = self.pending_set.try_acquire(ip) else {
            return Err(ConnectionDenied::new(SourceLimitExceeded {
                from: ip,
                what: "pending",
                count: self.pending_set.held(&ip),
                max: MAX_PENDING_PER_SOURCE,
            }));
        };
        self.pending.insert(connection_id, slot);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.pending.remove(&connection_id);
        if let Some(ip) = source_of_addr(remote) {
            let count = self.established_set.held(&ip);
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
                // Checked in handle_established_inbound_connection just
                // before, on the same task: a slot is free.
                if let Some(slot) = source_of_addr(send_back_addr)
                    .and_then(|ip| self.established_set.try_acquire(ip))
                {
                    self.established.insert(connection_id, slot);
                }
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                self.established.remove(&connection_id);
            }
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.pending.remove(&connection_id);
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
