//! The [`Net`] handle and the swarm task behind it (docs/net-design.md §8).
//!
//! One tokio task owns the libp2p `Swarm`; everything else talks to it through
//! a bounded command channel and reads shared state (listen addresses through
//! a `watch`, the connection table through a mutex). Outgoing events never
//! block the task: they are `try_send`-ed and counted when dropped.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::core::transport::ListenerId;
use libp2p::identity::Keypair;
use libp2p::kad::store::RecordStore as _;
use libp2p::kad::{self, GetProvidersOk, QueryId, QueryResult, RecordKey};
use libp2p::multiaddr::Protocol;
use libp2p::multihash::Multihash;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{identify, noise, tcp, tls, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use shoal_core::ContentId;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::compat::FuturesAsyncReadCompatExt as _;

use crate::addrs::{
    decode_fast_frame, encode_fast_frame, fast_multiaddr, ip_rank, is_fast_multiaddr, is_relayed,
    multiaddr_ip, parse_fast_multiaddr, select_ticket_addrs, split_p2p, MAX_FAST_FRAME,
};
use crate::behaviour::{Behaviour, BehaviourEvent};
use crate::config::NetConfig;
use crate::error::{NetError, Result};
use crate::fast::{self, FastTls};
use crate::{IncomingTransfer, PathKind, TransferStream};

/// The transfer protocol on libp2p streams.
pub const XFER_PROTOCOL: StreamProtocol = StreamProtocol::new(shoal_core::proto::PROTOCOL_ID);
/// Asks a peer for its fast-path addresses (one bounded frame, then close).
pub const FASTPATH_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/fastpath/1");
const PEER_HINT: &str =
    "the peer may be offline or unreachable from here: try again later or another address";

/// Multihash code of BLAKE3 (DHT keys are the multihash of the content id).
pub const BLAKE3_MULTIHASH: u64 = 0x1e;

const COMMAND_QUEUE: usize = 256;
const EVENT_QUEUE: usize = 1024;
const INCOMING_QUEUE: usize = 256;
const DIAL_TIMEOUT: Duration = Duration::from_secs(20);
const OPEN_STREAM_TIMEOUT: Duration = Duration::from_secs(20);
const FASTPATH_QUERY_TIMEOUT: Duration = Duration::from_secs(5);
const PROVIDE_TIMEOUT: Duration = Duration::from_secs(90);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a peer's `/shoal/fastpath/1` answer is reused.
const FAST_ADDR_TTL: Duration = Duration::from_secs(300);
/// A fast address that proved another peer id is not tried again for this long.
const MISMATCH_PENALTY: Duration = Duration::from_secs(600);
/// A fast address that failed otherwise is not tried again for this long
/// (the life of a cached `/shoal/fastpath/1` answer).
const FAILURE_PENALTY: Duration = Duration::from_secs(300);
/// Fast-path candidates tried per `open_transfer` before falling back.
const MAX_FAST_ATTEMPTS: usize = 3;
/// Concurrent `/shoal/fastpath/1` answers being written.
const MAX_FASTPATH_ANSWERS: usize = 32;
/// Peers and addresses per peer kept in the swarm task's address book.
const ADDR_BOOK_PEERS: usize = 4096;
const ADDR_BOOK_ADDRS: usize = 16;
/// Callers waiting for dials, in total.
const MAX_DIAL_WAITERS: usize = 1024;
/// Concurrent provider lookups.
const MAX_FIND_QUERIES: usize = 64;
/// Bounded caches in the handle.
const MAX_CACHED_PEERS: usize = 4096;

/// The DHT key of a content id: the 34-byte multihash `1e 20 <BLAKE3>`.
pub fn provider_key(cid: &ContentId) -> RecordKey {
    match Multihash::<64>::wrap(BLAKE3_MULTIHASH, cid.as_bytes()) {
        Ok(mh) => RecordKey::from(mh),
        // 32 bytes always fit in 64; keep a well-formed key regardless.
        Err(_) => {
            let mut v = vec![BLAKE3_MULTIHASH as u8, 32];
            v.extend_from_slice(cid.as_bytes());
            RecordKey::new(&v)
        }
    }
}

/// The content id a DHT key names, if it is a BLAKE3 multihash.
pub fn content_id_of_key(key: &RecordKey) -> Option<ContentId> {
    let b = key.as_ref();
    if b.len() == 34 && b[0] == BLAKE3_MULTIHASH as u8 && b[1] == 32 {
        let mut id = [0u8; 32];
        id.copy_from_slice(&b[2..]);
        Some(ContentId::from_bytes(id))
    } else {
        None
    }
}

/// A live libp2p connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub peer: PeerId,
    pub id: ConnectionId,
    /// The address dialed, or the peer's address as seen by our listener.
    pub remote_addr: Multiaddr,
    /// Whether the connection goes through a relay (`/p2p-circuit`).
    pub relayed: bool,
    /// Whether we dialed it.
    pub outbound: bool,
}

/// Things the node may want to know. Delivered on a bounded channel; if the
/// consumer lags, events are dropped (state such as listen addresses is always
/// available from [`Net`] itself).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum NetEvent {
    /// A libp2p listen address appeared.
    ListenAddr(Multiaddr),
    /// A libp2p listen address went away.
    ListenAddrExpired(Multiaddr),
    /// An external address was confirmed (AutoNAT, UPnP, or an explicit listen IP).
    ExternalAddrConfirmed(Multiaddr),
    ExternalAddrExpired(Multiaddr),
    PeerConnected {
        peer: PeerId,
        addr: Multiaddr,
        relayed: bool,
    },
    /// The last connection to a peer closed.
    PeerDisconnected {
        peer: PeerId,
    },
    /// identify told us about a peer.
    PeerIdentified {
        peer: PeerId,
        agent: String,
        listen_addrs: Vec<Multiaddr>,
    },
    /// mDNS found peers on the LAN (unverified hints).
    MdnsDiscovered(Vec<(PeerId, Multiaddr)>),
    /// Another peer stored a provider record with us.
    ProviderRecordStored {
        provider: PeerId,
        cid: Option<ContentId>,
    },
    /// A relay accepted our reservation.
    RelayReservation {
        relay: PeerId,
    },
    /// A hole punch (DCUtR) to a peer ended.
    HolePunch {
        peer: PeerId,
        ok: bool,
    },
}

/// The receiving ends [`Net::start`] hands out.
#[derive(Debug)]
pub struct NetEvents {
    /// Node events, bounded; see [`NetEvent`].
    pub events: mpsc::Receiver<NetEvent>,
    /// Authenticated inbound transfer streams from both the fast-path listener
    /// and libp2p (`/shoal/xfer/1`). Bounded: when full, new streams are closed.
    pub incoming: mpsc::Receiver<IncomingTransfer>,
}

#[derive(Clone, Debug, Default)]
struct ListenState {
    /// libp2p listen addresses (expanded per interface, relay circuits included).
    listen: Vec<Multiaddr>,
    /// Fast-path addresses (`/ipX/A/tcp/P/tls`), wildcards expanded.
    fast: Vec<Multiaddr>,
    /// Confirmed external addresses.
    external: Vec<Multiaddr>,
    /// Startup listeners that have not reported an address yet.
    pending: usize,
}

enum Command {
    Dial {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<()>>,
    },
    Provide {
        key: RecordKey,
        reply: oneshot::Sender<Result<()>>,
    },
    Unprovide {
        key: RecordKey,
    },
    FindProviders {
        key: RecordKey,
        reply: mpsc::Sender<PeerId>,
    },
    Close {
        peer: PeerId,
    },
    SetLimits {
        limits: crate::config::ConnectionLimits,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

type Connections = Arc<Mutex<HashMap<PeerId, Vec<ConnectionInfo>>>>;
/// The usable listen addresses identify reported, per peer, with when (kept
/// after the connection closes: a peer met over the fast path may have had only
/// a short-lived libp2p connection).
type Identified = Arc<Mutex<HashMap<PeerId, (Instant, Vec<Multiaddr>)>>>;
/// Peers mDNS found on the local network, with their announced addresses.
type LanPeers = Arc<Mutex<HashMap<PeerId, Vec<Multiaddr>>>>;

/// Whether other peers can dial this node, as AutoNAT found out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reachability {
    /// No AutoNAT test has finished yet.
    Unknown,
    /// A peer dialed one of our addresses back.
    Public,
    /// Every test so far failed: we are behind a NAT or firewall.
    Private,
}

impl Reachability {
    /// The verdict after one more AutoNAT test: one address confirmed is
    /// enough to be public; failures only make an unknown verdict private.
    pub fn after_test(self, reachable: bool) -> Self {
        match (self, reachable) {
            (_, true) | (Self::Public, false) => Self::Public,
            _ => Self::Private,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            Self::Unknown => 0,
            Self::Public => 1,
            Self::Private => 2,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Public,
            2 => Self::Private,
            _ => Self::Unknown,
        }
    }
}
/// Most LAN peers remembered, and addresses kept per LAN peer.
const MAX_LAN_PEERS: usize = 256;
const MAX_LAN_ADDRS: usize = 8;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these maps inconsistent in a harmful way.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Handle to a running node's networking. Cheap to clone; the swarm task stops
/// on [`Net::shutdown`] or when the last clone is dropped.
#[derive(Clone)]
pub struct Net {
    inner: Arc<Inner>,
}

struct Inner {
    peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    control: libp2p_stream::Control,
    state: watch::Receiver<ListenState>,
    connections: Connections,
    identified: Identified,
    fast: FastTls,
    /// Fast addresses learned through `/shoal/fastpath/1`, with their time.
    fast_addrs: Mutex<HashMap<PeerId, (Instant, Vec<SocketAddr>)>>,
    /// Fast addresses not to try until the given instant.
    bad_fast: Mutex<HashMap<SocketAddr, Instant>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The relays this node reserves circuits through.
    relays: Vec<PeerId>,
    limits: Mutex<crate::config::ConnectionLimits>,
    lan: LanPeers,
    reach: Arc<std::sync::atomic::AtomicU8>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
    }
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("peer_id", &self.inner.peer_id)
            .finish_non_exhaustive()
    }
}

fn swarm_err(what: &'static str) -> impl Fn(String) -> NetError {
    move |reason| NetError::Swarm { what, reason }
}

impl Net {
    /// Builds the swarm, starts listening (libp2p and fast path), dials the
    /// bootstrap nodes and spawns the swarm task. Must run inside a tokio
    /// runtime. Bind failures are reported here; [`Net::wait_listening`] waits
    /// for the addresses.
    pub async fn start(keypair: Keypair, config: NetConfig) -> Result<(Net, NetEvents)> {
        crate::config::validate_kad_protocol(&config.kad_protocol)?;
        let peer_id = keypair.public().to_peer_id();
        let fast = FastTls::new(&keypair)?;

        let cfg = config.clone();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                (tls::Config::new, noise::Config::new),
                yamux::Config::default,
            )
            .map_err(|e| swarm_err("TCP transport")(e.to_string()))?
            .with_quic()
            .with_relay_client(
                (tls::Config::new, noise::Config::new),
                yamux::Config::default,
            )
            .map_err(|e| swarm_err("relay client")(e.to_string()))?
            .with_behaviour(|key, relay_client| Behaviour::new(key, relay_client, &cfg))
            .map_err(|e| swarm_err("behaviours")(e.to_string()))?
            .with_swarm_config(|c| {
                // Smart dial ranks QUIC before TCP, Happy-Eyeballs style.
                c.with_idle_connection_timeout(config.idle_connection_timeout)
                    .with_smart_dial()
            })
            .build();

        let mut control = swarm.behaviour().stream.new_control();
        let xfer_incoming = control
            .accept(XFER_PROTOCOL)
            .map_err(|e| swarm_err("stream protocol")(e.to_string()))?;
        let fastpath_incoming = control
            .accept(FASTPATH_PROTOCOL)
            .map_err(|e| swarm_err("stream protocol")(e.to_string()))?;

        // libp2p listeners. Binding happens inside listen_on, so errors show here.
        let mut startup_listeners = HashSet::new();
        let mut explicit_ip_listeners = HashSet::new();
        for addr in &config.listen {
            probe_tcp_port(addr)?;
            let id = match swarm.listen_on(addr.clone()) {
                Ok(id) => id,
                // The default `[::]:0` must not stop a node on a host without IPv6.
                Err(e) if is_ipv6_wildcard(addr) && config.listen.len() > 1 => {
                    tracing::warn!("not listening on {addr}: {e}");
                    continue;
                }
                Err(e) => {
                    return Err(NetError::Listen {
                        addr: addr.clone(),
                        reason: e.to_string(),
                    })
                }
            };
            if !is_relayed(addr) {
                startup_listeners.insert(id);
                if multiaddr_ip(addr).is_some_and(|ip| !ip.is_unspecified()) {
                    explicit_ip_listeners.insert(id);
                }
            }
        }
        for (relay, addr) in &config.relays {
            let circuit = addr
                .clone()
                .with(Protocol::P2p(*relay))
                .with(Protocol::P2pCircuit);
            swarm
                .listen_on(circuit.clone())
                .map_err(|e| NetError::Listen {
                    addr: circuit,
                    reason: e.to_string(),
                })?;
        }

        // Fast-path listeners.
        let (incoming_tx, incoming_rx) = mpsc::channel(INCOMING_QUEUE);
        let mut tasks = Vec::new();
        let mut fast_bound = Vec::new();
        for sa in &config.fast_listen {
            let listener = bind_fast(*sa)?;
            let local = listener
                .local_addr()
                .map_err(|source| NetError::FastListen { addr: *sa, source })?;
            fast_bound.push(local);
            tasks.push(tokio::spawn(fast::accept_loop(
                listener,
                fast.clone(),
                incoming_tx.clone(),
            )));
        }

        // Bootstrap nodes: into the routing table, dialed, then a bootstrap query.
        for (peer, addr) in &config.bootstrap {
            swarm.behaviour_mut().kad.add_address(peer, addr.clone());
            let opts = DialOpts::peer_id(*peer)
                .addresses(vec![addr.clone()])
                .build();
            if let Err(e) = swarm.dial(opts) {
                tracing::warn!(%peer, "cannot dial bootstrap node {addr}: {e}");
            }
        }
        if !config.bootstrap.is_empty() {
            let _ = swarm.behaviour_mut().kad.bootstrap();
        }

        let (state_tx, state_rx) = watch::channel(ListenState {
            pending: startup_listeners.len(),
            ..Default::default()
        });
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
        let connections: Connections = Arc::default();
        let identified: Identified = Arc::default();
        let lan: LanPeers = Arc::default();
        let reach: Arc<std::sync::atomic::AtomicU8> = Arc::default();

        let task = SwarmTask {
            swarm,
            local: peer_id,
            kad_protocol: config.kad_protocol.clone(),
            state: state_tx,
            listen_state: ListenState {
                pending: startup_listeners.len(),
                ..Default::default()
            },
            startup_listeners,
            explicit_ip_listeners,
            fast_bound,
            connections: connections.clone(),
            identified: identified.clone(),
            events: event_tx,
            dropped_events: 0,
            dial_waiters: HashMap::new(),
            waiter_count: 0,
            in_flight: HashMap::new(),
            provides: HashMap::new(),
            finds: HashMap::new(),
            addr_book: HashMap::new(),
            lan: lan.clone(),
            reach: reach.clone(),
        };
        tasks.push(tokio::spawn(task.run(cmd_rx)));
        tasks.push(tokio::spawn(accept_xfer(
            xfer_incoming,
            incoming_tx,
            connections.clone(),
        )));
        tasks.push(tokio::spawn(answer_fastpath(
            fastpath_incoming,
            state_rx.clone(),
        )));

        let net = Net {
            inner: Arc::new(Inner {
                peer_id,
                commands: cmd_tx,
                control,
                state: state_rx,
                connections,
                identified,
                fast,
                fast_addrs: Mutex::new(HashMap::new()),
                bad_fast: Mutex::new(HashMap::new()),
                tasks: Mutex::new(tasks),
                relays: config.relays.iter().map(|(p, _)| *p).collect(),
                limits: Mutex::new(config.limits),
                lan,
                reach,
            }),
        };
        Ok((
            net,
            NetEvents {
                events: event_rx,
                incoming: incoming_rx,
            },
        ))
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    /// Addresses this node actually listens on: libp2p listen addresses
    /// (wildcards expanded per interface, relay circuits once reserved) and the
    /// bound fast-path addresses in `/ipX/A/tcp/P/tls` form. Never unspecified.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        let s = self.inner.state.borrow();
        s.listen.iter().chain(s.fast.iter()).cloned().collect()
    }

    /// The fast-path addresses alone (`/ipX/A/tcp/P/tls`).
    pub fn fast_addrs(&self) -> Vec<Multiaddr> {
        self.inner.state.borrow().fast.clone()
    }

    /// Confirmed external addresses.
    pub fn external_addrs(&self) -> Vec<Multiaddr> {
        self.inner.state.borrow().external.clone()
    }

    /// Waits until every listener started by [`Net::start`] reported its
    /// addresses (or closed), then returns [`Net::listen_addrs`].
    pub async fn wait_listening(&self, timeout: Duration) -> Result<Vec<Multiaddr>> {
        let mut rx = self.inner.state.clone();
        tokio::time::timeout(timeout, rx.wait_for(|s| s.pending == 0))
            .await
            .map_err(|_| NetError::Timeout {
                what: "waiting for the listeners to report their addresses".into(),
                secs: timeout.as_secs(),
                hint: "the machine may be overloaded: try again",
            })?
            .map_err(|_| NetError::Stopped)?;
        Ok(self.listen_addrs())
    }

    /// Waits until a circuit through every configured relay is reserved (its
    /// `/p2p-circuit` address is a listen address), so that tickets made
    /// afterwards carry it. Returns the relays still without a reservation
    /// when `timeout` ends (empty: all reserved, or no relay configured).
    pub async fn wait_relayed(&self, timeout: Duration) -> Vec<PeerId> {
        let relays = &self.inner.relays;
        let missing = |s: &ListenState| -> Vec<PeerId> {
            relays
                .iter()
                .filter(|r| {
                    !s.listen
                        .iter()
                        .any(|a| is_relayed(a) && a.iter().any(|p| p == Protocol::P2p(**r)))
                })
                .copied()
                .collect()
        };
        let mut rx = self.inner.state.clone();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|s| missing(s).is_empty())).await;
        let s = self.inner.state.borrow();
        missing(&s)
    }

    /// Peers that mDNS found on the local network (unverified: a peer id and
    /// the addresses it announced), while their announcements are fresh.
    /// Empty when mDNS is off.
    pub fn lan_peers(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        lock(&self.inner.lan)
            .iter()
            .map(|(p, a)| (*p, a.clone()))
            .collect()
    }

    /// At most 8 addresses to put in a ticket for this node (note §6): only
    /// addresses we listen on or confirmed mappings of them.
    pub fn ticket_addrs(&self) -> Vec<Multiaddr> {
        let s = self.inner.state.borrow();
        select_ticket_addrs(&s.listen, &s.fast, &s.external)
    }

    /// Live libp2p connections.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        lock(&self.inner.connections)
            .values()
            .flatten()
            .cloned()
            .collect()
    }

    /// Addresses at which `peer` may be dialed, as far as this node knows: its
    /// fast-path addresses (if we asked it recently) first, then the listen
    /// addresses its identify reported in the last 5 minutes (filtered
    /// like identify's: no unspecified addresses, loopback only when we listen on
    /// loopback, circuits only when it has nothing direct). Unverified hints
    /// for others; empty when nothing is known.
    pub fn peer_addrs(&self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut out: Vec<Multiaddr> = self
            .cached_fast_addrs(peer)
            .unwrap_or_default()
            .into_iter()
            .filter(|sa| !sa.ip().is_unspecified())
            .map(fast_multiaddr)
            .collect();
        if let Some((at, list)) = lock(&self.inner.identified).get(peer) {
            if at.elapsed() < FAST_ADDR_TTL {
                out.extend(list.iter().cloned());
            }
        }
        out
    }

    /// Whether a libp2p connection to `peer` exists.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        lock(&self.inner.connections).contains_key(peer)
    }

    async fn command(&self, c: Command) -> Result<()> {
        self.inner
            .commands
            .send(c)
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Connects to `peer` over libp2p unless already connected, using `addrs`
    /// (fast-path and `/p2p/` suffixes are handled) plus any address the node
    /// already knows. Waits at most 20 s.
    pub async fn dial(&self, peer: PeerId, addrs: &[Multiaddr]) -> Result<()> {
        if self.is_connected(&peer) {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        self.command(Command::Dial {
            peer,
            addrs: addrs.to_vec(),
            reply,
        })
        .await?;
        tokio::time::timeout(DIAL_TIMEOUT, rx)
            .await
            .map_err(|_| NetError::Timeout {
                what: format!("connecting to {peer}"),
                secs: DIAL_TIMEOUT.as_secs(),
                hint: PEER_HINT,
            })?
            .map_err(|_| NetError::Stopped)?
    }

    /// Announces on the DHT that this node provides `cid` and waits for the
    /// first publication to finish (kad republishes it afterwards). `Ok` means
    /// the record is stored locally and was sent to the closest peers found,
    /// which may be none if the node knows no peers yet.
    pub async fn provide(&self, cid: &ContentId) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::Provide {
            key: provider_key(cid),
            reply,
        })
        .await?;
        tokio::time::timeout(PROVIDE_TIMEOUT, rx)
            .await
            .map_err(|_| NetError::Timeout {
                what: format!("publishing the provider record for {cid}"),
                secs: PROVIDE_TIMEOUT.as_secs(),
                hint: "the DHT peers did not answer: check the bootstrap nodes; the node retries by itself",
            })?
            .map_err(|_| NetError::Stopped)?
    }

    /// Stops announcing `cid` (local; remote records expire by themselves).
    pub async fn unprovide(&self, cid: &ContentId) -> Result<()> {
        self.command(Command::Unprovide {
            key: provider_key(cid),
        })
        .await
    }

    /// Starts a DHT lookup for providers of `cid`. Each provider is sent once
    /// (never this node) and dialed as soon as it is found, while the lookup
    /// still knows its addresses. The channel closes when the lookup ends.
    pub async fn find_providers_stream(&self, cid: &ContentId) -> Result<mpsc::Receiver<PeerId>> {
        let (reply, rx) = mpsc::channel(64);
        self.command(Command::FindProviders {
            key: provider_key(cid),
            reply,
        })
        .await?;
        Ok(rx)
    }

    /// Looks up providers of `cid` until the lookup ends or `timeout` passes,
    /// and returns those found (possibly none).
    pub async fn find_providers(&self, cid: &ContentId, timeout: Duration) -> Result<Vec<PeerId>> {
        let mut rx = self.find_providers_stream(cid).await?;
        let mut found = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while let Ok(Some(p)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            if !found.contains(&p) {
                found.push(p);
            }
        }
        Ok(found)
    }

    /// Closes every libp2p connection to `peer`.
    pub async fn disconnect(&self, peer: PeerId) -> Result<()> {
        self.command(Command::Close { peer }).await
    }

    /// Replaces the connection limits while running. New connections are
    /// checked against them at once; connections already established above a
    /// lowered limit stay until they close.
    pub async fn set_connection_limits(
        &self,
        limits: crate::config::ConnectionLimits,
    ) -> Result<()> {
        self.command(Command::SetLimits { limits }).await?;
        *lock(&self.inner.limits) = limits;
        Ok(())
    }

    /// Whether other peers can dial this node, from AutoNAT's tests so far.
    pub fn reachability(&self) -> Reachability {
        Reachability::from_u8(self.inner.reach.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The connection limits in force.
    pub fn connection_limits(&self) -> crate::config::ConnectionLimits {
        *lock(&self.inner.limits)
    }

    /// Opens a transfer stream to `peer`, authenticated as `peer` whatever the
    /// path. Uses the fast path when the peer has a direct fast address (from
    /// `hint_addrs`, e.g. a ticket, or from asking the peer over
    /// `/shoal/fastpath/1`); otherwise, or if every fast attempt fails, a libp2p
    /// stream on `/shoal/xfer/1` (QUIC, TCP or relayed), dialing with
    /// `hint_addrs` first if not connected. A fast address that proves another
    /// peer id is never used again for 10 minutes; there is never a fallback
    /// to anything unauthenticated.
    pub async fn open_transfer(
        &self,
        peer: PeerId,
        hint_addrs: &[Multiaddr],
    ) -> Result<(TransferStream, PathKind)> {
        if peer == self.peer_id() {
            return Err(NetError::OpenStream {
                peer,
                reason: "that is this node's own peer id".into(),
            });
        }
        let mut fast_cands = Vec::new();
        let mut p2p_hints = Vec::new();
        for a in hint_addrs {
            if let Some((sa, id)) = parse_fast_multiaddr(a) {
                if id.is_none_or(|id| id == peer) && !fast_cands.contains(&sa) {
                    fast_cands.push(sa);
                }
            } else {
                let (a, id) = split_p2p(a);
                if id.is_none_or(|id| id == peer) {
                    p2p_hints.push(a);
                }
            }
        }

        if fast_cands.is_empty() {
            if let Some(cached) = self.cached_fast_addrs(&peer) {
                fast_cands = cached;
            } else if self.dial(peer, &p2p_hints).await.is_ok() {
                match self.query_fast_addrs(peer).await {
                    Ok(list) => fast_cands = list,
                    Err(e) => tracing::debug!(%peer, "no fast-path answer: {e}"),
                }
            }
        }

        // The fast path's failure, said with libp2p's if that fails too: it
        // is often the one that names the cause (a refused port).
        let mut fast_err = None;
        for sa in self.order_fast_candidates(&peer, fast_cands) {
            match self.inner.fast.connect(sa, peer).await {
                Ok(tls) => return Ok((Box::new(tls), PathKind::Fast)),
                Err(e @ NetError::PeerIdMismatch { .. }) => {
                    tracing::warn!("{e}");
                    self.penalise(sa, MISMATCH_PENALTY);
                    fast_err = Some(e.to_string());
                }
                Err(e) => {
                    tracing::debug!(%peer, "fast path unavailable: {e}");
                    self.penalise(sa, FAILURE_PENALTY);
                    fast_err = Some(e.to_string());
                }
            }
        }

        match self.open_stream(peer, XFER_PROTOCOL, &p2p_hints).await {
            Ok(s) => Ok(s),
            Err(e) => match fast_err {
                Some(fast) => Err(NetError::OpenStream {
                    peer,
                    reason: format!("over the fast path: {fast}; over libp2p: {e}"),
                }),
                None => Err(e),
            },
        }
    }

    /// Opens a libp2p stream to `peer` for `protocol` (dialing with the
    /// `hints` first if not connected), authenticated as `peer`. Every service
    /// of the node talks to peers this way, each on its own protocol (the
    /// transfer protocol's fast path is the one exception, see
    /// [`open_transfer`](Self::open_transfer)).
    pub async fn open_stream(
        &self,
        peer: PeerId,
        protocol: StreamProtocol,
        hints: &[Multiaddr],
    ) -> Result<(TransferStream, PathKind)> {
        if peer == self.peer_id() {
            return Err(NetError::OpenStream {
                peer,
                reason: "that is this node's own peer id".into(),
            });
        }
        self.dial(peer, hints).await?;
        let mut control = self.inner.control.clone();
        let stream = tokio::time::timeout(
            OPEN_STREAM_TIMEOUT,
            control.open_stream(peer, protocol.clone()),
        )
        .await
        .map_err(|_| NetError::Timeout {
            what: format!("opening a {protocol} stream to {peer}"),
            secs: OPEN_STREAM_TIMEOUT.as_secs(),
            hint: PEER_HINT,
        })?
        .map_err(|e| NetError::OpenStream {
            peer,
            reason: e.to_string(),
        })?;
        let path = path_of(&self.inner.connections, &peer);
        Ok((Box::new(stream.compat()), path))
    }

    /// Accepts inbound streams of `protocol`: each arrives on the returned
    /// channel (at most `queue` waiting; more are closed) with the
    /// authenticated peer, its path and address. Fails if the protocol is
    /// already accepted (`/shoal/xfer/1` and `/shoal/fastpath/1` are, by
    /// [`Net::start`]). Poll it promptly: libp2p drops inbound streams while
    /// nobody takes them.
    pub fn accept_streams(
        &self,
        protocol: StreamProtocol,
        queue: usize,
    ) -> Result<mpsc::Receiver<IncomingTransfer>> {
        let mut control = self.inner.control.clone();
        let streams = control
            .accept(protocol.clone())
            .map_err(|e| NetError::OpenStream {
                peer: self.peer_id(),
                reason: format!("cannot accept {protocol}: {e}"),
            })?;
        let (tx, rx) = mpsc::channel(queue.max(1));
        tokio::spawn(accept_xfer(streams, tx, self.inner.connections.clone()));
        Ok(rx)
    }

    fn cached_fast_addrs(&self, peer: &PeerId) -> Option<Vec<SocketAddr>> {
        let cache = lock(&self.inner.fast_addrs);
        let (at, list) = cache.get(peer)?;
        (at.elapsed() < FAST_ADDR_TTL).then(|| list.clone())
    }

    fn penalise(&self, sa: SocketAddr, d: Duration) {
        let mut bad = lock(&self.inner.bad_fast);
        let now = Instant::now();
        if bad.len() >= MAX_CACHED_PEERS {
            bad.retain(|_, until| *until > now);
        }
        if bad.len() < MAX_CACHED_PEERS {
            bad.insert(sa, now + d);
        }
    }

    /// Same IP as a live direct connection first; loopback candidates only when
    /// we reach the peer over loopback or know nothing better; penalised
    /// addresses skipped; at most [`MAX_FAST_ATTEMPTS`], or one global
    /// address when the peer is reached only through a relay.
    fn order_fast_candidates(&self, peer: &PeerId, cands: Vec<SocketAddr>) -> Vec<SocketAddr> {
        let (direct_ips, relayed_only): (Vec<IpAddr>, bool) = lock(&self.inner.connections)
            .get(peer)
            .map(|cs| {
                let ips = cs
                    .iter()
                    .filter(|c| !c.relayed)
                    .filter_map(|c| multiaddr_ip(&c.remote_addr))
                    .collect();
                (ips, !cs.is_empty() && cs.iter().all(|c| c.relayed))
            })
            .unwrap_or_default();
        let now = Instant::now();
        let bad = lock(&self.inner.bad_fast);
        let mut cands: Vec<SocketAddr> = cands
            .into_iter()
            .filter(|sa| bad.get(sa).is_none_or(|until| *until <= now))
            .filter(|sa| !sa.ip().is_unspecified())
            .collect();
        drop(bad);
        let over_loopback = direct_ips.iter().any(IpAddr::is_loopback);
        if !direct_ips.is_empty() && !over_loopback {
            cands.retain(|sa| !sa.ip().is_loopback());
        }
        let mut attempts = MAX_FAST_ATTEMPTS;
        if direct_ips.is_empty() && relayed_only {
            // Reached only through a relay: the peer's private addresses are
            // most likely behind its NAT, and each costs a connect timeout.
            cands.retain(|sa| ip_rank(sa.ip()) <= 1);
            attempts = 1;
        }
        cands.sort_by_key(|sa| (!direct_ips.contains(&sa.ip()), ip_rank(sa.ip())));
        cands.truncate(attempts);
        cands
    }

    /// Asks a connected peer for its fast-path addresses over `/shoal/fastpath/1`.
    async fn query_fast_addrs(&self, peer: PeerId) -> Result<Vec<SocketAddr>> {
        let mut control = self.inner.control.clone();
        let fut = async {
            let mut s = control
                .open_stream(peer, FASTPATH_PROTOCOL)
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = Vec::with_capacity(256);
            (&mut s)
                .take(MAX_FAST_FRAME as u64 + 1)
                .read_to_end(&mut buf)
                .await
                .map_err(|e| e.to_string())?;
            if buf.len() > MAX_FAST_FRAME {
                return Err("answer too long".to_owned());
            }
            decode_fast_frame(&buf).map_err(|e| e.to_string())
        };
        let list = tokio::time::timeout(FASTPATH_QUERY_TIMEOUT, fut)
            .await
            .map_err(|_| NetError::Timeout {
                what: format!("asking {peer} for its fast-path addresses"),
                secs: FASTPATH_QUERY_TIMEOUT.as_secs(),
                hint: PEER_HINT,
            })?
            .map_err(|reason| NetError::OpenStream { peer, reason })?;
        let mut cache = lock(&self.inner.fast_addrs);
        if cache.len() >= MAX_CACHED_PEERS {
            cache.retain(|_, (at, _)| at.elapsed() < FAST_ADDR_TTL);
        }
        if cache.len() < MAX_CACHED_PEERS {
            cache.insert(peer, (Instant::now(), list.clone()));
        }
        Ok(list)
    }

    /// Stops the swarm task and the listeners; connections are closed.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.command(Command::Shutdown { reply }).await.is_ok() {
            let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, rx).await;
        }
        for t in lock(&self.inner.tasks).drain(..) {
            t.abort();
        }
    }
}

/// libp2p-tcp listens with `SO_REUSEPORT`, so a second node on the same TCP
/// port would start silently and share the port's connections with the
/// first. A plain bind first turns that into a clear error.
fn probe_tcp_port(addr: &Multiaddr) -> Result<()> {
    let mut it = addr.iter();
    let ip = match it.next() {
        Some(Protocol::Ip4(a)) => IpAddr::V4(a),
        Some(Protocol::Ip6(a)) => IpAddr::V6(a),
        _ => return Ok(()),
    };
    let port = match (it.next(), it.next()) {
        (Some(Protocol::Tcp(p)), None) if p != 0 => p,
        _ => return Ok(()),
    };
    match std::net::TcpListener::bind(SocketAddr::new(ip, port)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(NetError::Listen {
            addr: addr.clone(),
            reason: "the port is already in use (is another shoal node running?)".into(),
        }),
        // Other failures (e.g. no IPv6) are left for libp2p to report.
        Err(_) => Ok(()),
    }
}

fn is_ipv6_wildcard(m: &Multiaddr) -> bool {
    matches!(m.iter().next(), Some(Protocol::Ip6(ip)) if ip.is_unspecified())
}

fn path_of(connections: &Connections, peer: &PeerId) -> PathKind {
    // libp2p-stream picks one of the peer's connections at random; a peer with
    // any direct connection is labelled Direct.
    match lock(connections).get(peer) {
        Some(cs) if cs.iter().all(|c| c.relayed) => PathKind::Relayed,
        _ => PathKind::Direct,
    }
}

/// Binds a fast-path listener; IPv6 sockets are v6-only so `0.0.0.0:P` and
/// `[::]:P` can coexist, as libp2p-tcp does.
fn bind_fast(sa: SocketAddr) -> Result<TcpListener> {
    let err = |source| NetError::FastListen { addr: sa, source };
    let domain = socket2::Domain::for_address(sa);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))
        .map_err(err)?;
    if sa.is_ipv6() {
        socket.set_only_v6(true).map_err(err)?;
    }
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&sa.into()).map_err(err)?;
    socket.listen(1024).map_err(err)?;
    TcpListener::from_std(socket.into()).map_err(err)
}

/// Forwards inbound streams of one protocol (`/shoal/xfer/1`, or one a
/// service accepts with [`Net::accept_streams`]). Must be polled promptly:
/// libp2p-stream drops inbound streams while this loop is busy.
async fn accept_xfer(
    mut streams: libp2p_stream::IncomingStreams,
    incoming: mpsc::Sender<IncomingTransfer>,
    connections: Connections,
) {
    while let Some((peer, stream)) = streams.next().await {
        let path = path_of(&connections, &peer);
        let remote = lock(&connections)
            .get(&peer)
            .and_then(|cs| cs.iter().find(|c| !c.relayed).or(cs.first()))
            .map(|c| c.remote_addr.clone());
        if incoming
            .try_send(IncomingTransfer {
                peer,
                stream: Box::new(stream.compat()),
                path,
                remote,
            })
            .is_err()
        {
            tracing::debug!(%peer, "incoming transfer queue full; closing a libp2p stream");
        }
    }
}

/// Answers `/shoal/fastpath/1` with our fast-path addresses, then closes.
async fn answer_fastpath(
    mut streams: libp2p_stream::IncomingStreams,
    state: watch::Receiver<ListenState>,
) {
    let permits = Arc::new(Semaphore::new(MAX_FASTPATH_ANSWERS));
    while let Some((peer, mut stream)) = streams.next().await {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many fast-path queries at once; dropping one");
            continue;
        };
        let frame = encode_fast_frame(&state.borrow().fast);
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(FASTPATH_QUERY_TIMEOUT, async {
                stream.write_all(&frame).await?;
                stream.close().await
            })
            .await;
        });
    }
}

struct FindState {
    reply: mpsc::Sender<PeerId>,
    seen: HashSet<PeerId>,
}

struct SwarmTask {
    swarm: Swarm<Behaviour>,
    local: PeerId,
    kad_protocol: String,
    state: watch::Sender<ListenState>,
    listen_state: ListenState,
    startup_listeners: HashSet<ListenerId>,
    /// Listeners on a specific IP: their addresses are asserted reachable and
    /// become external addresses (note §5 rule (a)).
    explicit_ip_listeners: HashSet<ListenerId>,
    fast_bound: Vec<SocketAddr>,
    connections: Connections,
    identified: Identified,
    events: mpsc::Sender<NetEvent>,
    dropped_events: u64,
    dial_waiters: HashMap<PeerId, Vec<oneshot::Sender<Result<()>>>>,
    waiter_count: usize,
    /// Our own dials per peer that have not ended yet.
    in_flight: HashMap<PeerId, HashSet<ConnectionId>>,
    provides: HashMap<QueryId, oneshot::Sender<Result<()>>>,
    finds: HashMap<QueryId, FindState>,
    addr_book: HashMap<PeerId, Vec<Multiaddr>>,
    lan: LanPeers,
    reach: Arc<std::sync::atomic::AtomicU8>,
}

impl SwarmTask {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => {
                        let _ = reply.send(());
                        break;
                    }
                    Some(c) => self.on_command(c),
                    None => break,
                },
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
            }
        }
        if self.dropped_events > 0 {
            tracing::debug!(
                "{} network events were dropped (consumer lagging)",
                self.dropped_events
            );
        }
    }

    fn emit(&mut self, e: NetEvent) {
        if self.events.try_send(e).is_err() {
            self.dropped_events += 1;
        }
    }

    fn learn_addr(&mut self, peer: PeerId, addr: Multiaddr) {
        if is_fast_multiaddr(&addr) || peer == self.local {
            return;
        }
        let (addr, id) = split_p2p(&addr);
        if id.is_some_and(|id| id != peer) {
            return;
        }
        if !self.addr_book.contains_key(&peer) && self.addr_book.len() >= ADDR_BOOK_PEERS {
            return;
        }
        let list = self.addr_book.entry(peer).or_default();
        if !list.contains(&addr) {
            if list.len() >= ADDR_BOOK_ADDRS {
                list.remove(0);
            }
            list.push(addr);
        }
    }

    fn publish_state(&mut self) {
        // Fast listeners on a wildcard IP are advertised on each IP of the same
        // family that libp2p's TCP listeners report, like libp2p expands its own.
        let mut fast = Vec::new();
        for sa in &self.fast_bound {
            if sa.ip().is_unspecified() {
                for m in &self.listen_state.listen {
                    if is_relayed(m) || !m.iter().any(|p| matches!(p, Protocol::Tcp(_))) {
                        continue;
                    }
                    if let Some(ip) = multiaddr_ip(m) {
                        if ip.is_ipv4() == sa.is_ipv4() {
                            let fm = fast_multiaddr(SocketAddr::new(ip, sa.port()));
                            if !fast.contains(&fm) {
                                fast.push(fm);
                            }
                        }
                    }
                }
            } else {
                let fm = fast_multiaddr(*sa);
                if !fast.contains(&fm) {
                    fast.push(fm);
                }
            }
        }
        self.listen_state.fast = fast;
        self.state.send_replace(self.listen_state.clone());
    }

    fn on_command(&mut self, c: Command) {
        match c {
            Command::Dial { peer, addrs, reply } => self.dial(peer, addrs, reply),
            Command::Provide { key, reply } => {
                match self.swarm.behaviour_mut().kad.start_providing(key) {
                    Ok(id) => {
                        self.provides.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetError::Provide {
                            what: "this content".into(),
                            reason: format!("{e:?}; unshare something or restart the node"),
                        }));
                    }
                }
            }
            Command::Unprovide { key } => self.swarm.behaviour_mut().kad.stop_providing(&key),
            Command::SetLimits { limits } => {
                *self.swarm.behaviour_mut().limits.limits_mut() =
                    crate::behaviour::libp2p_limits(&limits);
            }
            Command::FindProviders { key, reply } => {
                if self.finds.len() >= MAX_FIND_QUERIES {
                    // Dropping `reply` ends the caller's lookup with nothing found.
                    tracing::debug!("too many concurrent provider lookups");
                    return;
                }
                let id = self.swarm.behaviour_mut().kad.get_providers(key);
                self.finds.insert(
                    id,
                    FindState {
                        reply,
                        seen: HashSet::new(),
                    },
                );
            }
            Command::Close { peer } => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn dial(&mut self, peer: PeerId, hints: Vec<Multiaddr>, reply: oneshot::Sender<Result<()>>) {
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(()));
            return;
        }
        if peer == self.local {
            let _ = reply.send(Err(NetError::Dial {
                peer,
                reason: "that is this node's own peer id".into(),
            }));
            return;
        }
        for a in hints {
            self.learn_addr(peer, a);
        }
        let addrs = self.addr_book.get(&peer).cloned().unwrap_or_default();
        let busy = self.in_flight.get(&peer).is_some_and(|s| !s.is_empty());
        if !addrs.is_empty() || !busy {
            match self.start_dial(peer, addrs) {
                Ok(()) => {}
                Err(reason) if !busy => {
                    let _ = reply.send(Err(NetError::Dial { peer, reason }));
                    return;
                }
                Err(_) => {}
            }
        }
        if self.waiter_count >= MAX_DIAL_WAITERS {
            let _ = reply.send(Err(NetError::Dial {
                peer,
                reason: "too many connection attempts in progress".into(),
            }));
            return;
        }
        self.waiter_count += 1;
        self.dial_waiters.entry(peer).or_default().push(reply);
    }

    fn start_dial(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), String> {
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::Disconnected)
            .addresses(addrs)
            .extend_addresses_through_behaviour()
            .build();
        let id = opts.connection_id();
        self.swarm.dial(opts).map_err(|e| e.to_string())?;
        self.in_flight.entry(peer).or_default().insert(id);
        Ok(())
    }

    fn resolve_waiters(&mut self, peer: &PeerId, result: impl Fn() -> Result<()>) {
        if let Some(ws) = self.dial_waiters.remove(peer) {
            self.waiter_count = self.waiter_count.saturating_sub(ws.len());
            for w in ws {
                let _ = w.send(result());
            }
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                if self.explicit_ip_listeners.contains(&listener_id) {
                    self.swarm.add_external_address(address.clone());
                }
                if self.startup_listeners.remove(&listener_id) {
                    self.listen_state.pending = self.listen_state.pending.saturating_sub(1);
                }
                if !self.listen_state.listen.contains(&address) {
                    self.listen_state.listen.push(address.clone());
                }
                self.publish_state();
                self.emit(NetEvent::ListenAddr(address));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_state.listen.retain(|a| a != &address);
                self.publish_state();
                self.emit(NetEvent::ListenAddrExpired(address));
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => {
                if let Err(e) = reason {
                    tracing::warn!("a listener closed: {e}");
                }
                if self.startup_listeners.remove(&listener_id) {
                    self.listen_state.pending = self.listen_state.pending.saturating_sub(1);
                }
                self.listen_state.listen.retain(|a| !addresses.contains(a));
                self.publish_state();
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!("listener error: {error}");
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                if !self.listen_state.external.contains(&address) {
                    self.listen_state.external.push(address.clone());
                }
                self.publish_state();
                self.emit(NetEvent::ExternalAddrConfirmed(address));
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                self.listen_state.external.retain(|a| a != &address);
                self.publish_state();
                self.emit(NetEvent::ExternalAddrExpired(address));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                let addr = endpoint.get_remote_address().clone();
                let relayed = endpoint.is_relayed();
                if endpoint.is_dialer() {
                    self.learn_addr(peer_id, addr.clone());
                }
                if let Some(s) = self.in_flight.get_mut(&peer_id) {
                    s.remove(&connection_id);
                    if s.is_empty() {
                        self.in_flight.remove(&peer_id);
                    }
                }
                let first = {
                    let mut conns = lock(&self.connections);
                    let list = conns.entry(peer_id).or_default();
                    list.push(ConnectionInfo {
                        peer: peer_id,
                        id: connection_id,
                        remote_addr: addr.clone(),
                        relayed,
                        outbound: endpoint.is_dialer(),
                    });
                    list.len() == 1
                };
                self.resolve_waiters(&peer_id, || Ok(()));
                if first {
                    self.emit(NetEvent::PeerConnected {
                        peer: peer_id,
                        addr,
                        relayed,
                    });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                {
                    let mut conns = lock(&self.connections);
                    if let Some(list) = conns.get_mut(&peer_id) {
                        list.retain(|c| c.id != connection_id);
                        if list.is_empty() {
                            conns.remove(&peer_id);
                        }
                    }
                }
                if num_established == 0 {
                    self.emit(NetEvent::PeerDisconnected { peer: peer_id });
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id: Some(peer),
                error,
            } => {
                let mut ended = false;
                if let Some(s) = self.in_flight.get_mut(&peer) {
                    s.remove(&connection_id);
                    if s.is_empty() {
                        self.in_flight.remove(&peer);
                        ended = true;
                    }
                }
                if ended && !self.swarm.is_connected(&peer) {
                    let reason = error.to_string();
                    self.resolve_waiters(&peer, || {
                        Err(NetError::Dial {
                            peer,
                            reason: reason.clone(),
                        })
                    });
                }
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.on_identify(peer_id, info)
            }
            BehaviourEvent::Kad(ev) => self.on_kad(ev),
            BehaviourEvent::Mdns(libp2p::mdns::Event::Discovered(list)) => {
                {
                    let mut lan = lock(&self.lan);
                    for (p, a) in &list {
                        if *p == self.local || (!lan.contains_key(p) && lan.len() >= MAX_LAN_PEERS)
                        {
                            continue;
                        }
                        let addrs = lan.entry(*p).or_default();
                        if !addrs.contains(a) && addrs.len() < MAX_LAN_ADDRS {
                            addrs.push(a.clone());
                        }
                    }
                }
                for (p, a) in &list {
                    self.learn_addr(*p, a.clone());
                }
                self.emit(NetEvent::MdnsDiscovered(list));
            }
            BehaviourEvent::RelayClient(libp2p::relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                ..
            }) => self.emit(NetEvent::RelayReservation {
                relay: relay_peer_id,
            }),
            BehaviourEvent::Dcutr(ev) => {
                let ok = ev.result.is_ok();
                self.emit(NetEvent::HolePunch {
                    peer: ev.remote_peer_id,
                    ok,
                });
            }
            BehaviourEvent::AutonatClient(ev) => {
                use std::sync::atomic::Ordering::Relaxed;
                let now =
                    Reachability::from_u8(self.reach.load(Relaxed)).after_test(ev.result.is_ok());
                self.reach.store(now.to_u8(), Relaxed);
                tracing::debug!(
                    "AutoNAT test of {} via {}: {}",
                    ev.tested_addr,
                    ev.server,
                    if ev.result.is_ok() {
                        "reachable"
                    } else {
                        "not reachable"
                    }
                );
            }
            BehaviourEvent::Mdns(libp2p::mdns::Event::Expired(list)) => {
                let mut lan = lock(&self.lan);
                for (p, a) in &list {
                    if let Some(addrs) = lan.get_mut(p) {
                        addrs.retain(|x| x != a);
                        if addrs.is_empty() {
                            lan.remove(p);
                        }
                    }
                }
            }
            BehaviourEvent::Upnp(ev) => tracing::debug!("UPnP: {ev:?}"),
            _ => {}
        }
    }

    fn on_identify(&mut self, peer: PeerId, info: identify::Info) {
        let we_listen_on_loopback = self
            .listen_state
            .listen
            .iter()
            .any(|a| multiaddr_ip(a).is_some_and(|ip| ip.is_loopback()));
        let direct: Vec<Multiaddr> = info
            .listen_addrs
            .iter()
            .filter(|a| !is_relayed(a) && !is_fast_multiaddr(a))
            .filter(|a| {
                multiaddr_ip(a).is_none_or(|ip| {
                    !ip.is_unspecified() && (we_listen_on_loopback || !ip.is_loopback())
                })
            })
            .cloned()
            .collect();
        // Circuit addresses only when the peer offers nothing direct.
        let usable: Vec<Multiaddr> = if direct.is_empty() {
            info.listen_addrs
                .iter()
                .filter(|a| is_relayed(a))
                .cloned()
                .collect()
        } else {
            direct
        };
        let speaks_kad = info
            .protocols
            .iter()
            .any(|p| p.as_ref() == self.kad_protocol);
        for a in &usable {
            self.learn_addr(peer, a.clone());
            if speaks_kad {
                self.swarm.behaviour_mut().kad.add_address(&peer, a.clone());
            }
        }
        {
            let mut ids = lock(&self.identified);
            if !ids.contains_key(&peer) && ids.len() >= MAX_CACHED_PEERS {
                ids.retain(|_, (at, _)| at.elapsed() < FAST_ADDR_TTL);
            }
            if ids.contains_key(&peer) || ids.len() < MAX_CACHED_PEERS {
                let mut keep = usable.clone();
                keep.truncate(ADDR_BOOK_ADDRS);
                ids.insert(peer, (Instant::now(), keep));
            }
        }
        self.emit(NetEvent::PeerIdentified {
            peer,
            agent: info.agent_version,
            listen_addrs: usable,
        });
    }

    fn on_kad(&mut self, ev: kad::Event) {
        match ev {
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => match result {
                QueryResult::StartProviding(r) => {
                    if let Some(reply) = self.provides.remove(&id) {
                        let _ = reply.send(r.map(|_| ()).map_err(|e| NetError::Provide {
                            what: "this content".into(),
                            reason: format!("{e}; check the bootstrap nodes and try again"),
                        }));
                    }
                }
                QueryResult::GetProviders(r) => {
                    if let Ok(GetProvidersOk::FoundProviders { providers, .. }) = r {
                        let mut new = Vec::new();
                        if let Some(f) = self.finds.get_mut(&id) {
                            for p in providers {
                                if p != self.local && f.seen.insert(p) {
                                    new.push(p);
                                    // The caller stops listening when it has enough.
                                    let _ = f.reply.try_send(p);
                                }
                            }
                        }
                        // Dial now: kad knows the providers' addresses only while
                        // this query runs (note §5).
                        for p in new {
                            if !self.swarm.is_connected(&p) {
                                let addrs = self.addr_book.get(&p).cloned().unwrap_or_default();
                                if let Err(e) = self.start_dial(p, addrs) {
                                    tracing::debug!(%p, "cannot dial provider: {e}");
                                }
                            }
                        }
                    }
                    if step.last {
                        self.finds.remove(&id);
                    }
                }
                _ => {}
            },
            kad::Event::InboundRequest {
                request: kad::InboundRequest::AddProvider { record: Some(rec) },
            } => {
                let provider = rec.provider;
                let cid = content_id_of_key(&rec.key);
                match self.swarm.behaviour_mut().kad.store_mut().add_provider(rec) {
                    Ok(()) => self.emit(NetEvent::ProviderRecordStored { provider, cid }),
                    Err(e) => tracing::debug!("provider record not stored: {e}"),
                }
            }
            kad::Event::RoutingUpdated {
                peer, addresses, ..
            } => {
                for a in addresses.iter() {
                    self.learn_addr(peer, a.clone());
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_and_streams_can_move_between_tasks() {
        fn send_sync<T: Send + Sync + 'static>() {}
        fn send<T: Send + 'static>() {}
        send_sync::<Net>();
        send::<TransferStream>();
        send::<IncomingTransfer>();
        send::<NetEvents>();
    }

    #[test]
    fn provider_key_is_the_blake3_multihash_of_the_content_id() {
        let cid = ContentId::of(b"x");
        let key = provider_key(&cid);
        let mut expected = vec![0x1e, 0x20];
        expected.extend_from_slice(cid.as_bytes());
        assert_eq!(key.as_ref(), &expected[..]);
        assert_eq!(content_id_of_key(&key), Some(cid));
        assert_eq!(content_id_of_key(&RecordKey::new(&[1u8, 2, 3])), None);
    }
}

#[cfg(test)]
mod reachability_tests {
    use super::Reachability::{self, *};

    #[test]
    fn one_confirmed_address_makes_a_node_public_and_failures_alone_private() {
        assert_eq!(Unknown.after_test(false), Private);
        assert_eq!(Unknown.after_test(true), Public);
        assert_eq!(Private.after_test(true), Public);
        assert_eq!(Public.after_test(false), Public);
        for r in [Unknown, Public, Private] {
            assert_eq!(Reachability::from_u8(r.to_u8()), r);
        }
    }
}
