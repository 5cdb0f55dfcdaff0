//! A full peer: the store, the identity, `shoal-net` and the [`TransferService`] wired
//! together. [`Host::start`] opens everything from a data directory, serves
//! inbound transfer streams, announces public shares on the DHT; [`Host::fetch`]
//! downloads content from the providers of a ticket plus those the DHT finds,
//! re-querying the DHT while the download runs.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use libp2p_identity::Keypair;
use shoal_core::manifest::is_plain_name;
use shoal_core::ticket::{Provider, Target};
use shoal_core::{ContentId, Kind, Ticket};
use shoal_net::addrs::multiaddr_ip;
use shoal_net::PeerId;
use shoal_net::{Multiaddr, Net, NetConfig, NetEvents, PathKind};
use shoal_store::{InviteRecord, Share, Store, Visibility};

use crate::control::{AccessControl, ControlError, InviteOptions};
use crate::transfers::{TransferError, TransferEvent, Transfers};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::{
    AddressBook, BoxStream, Connector, Counters, DownloadHandle, Limits, NodeConfig, NodeError,
    Progress, TransferService,
};

/// Inbound streams whose hello is being read at once, per transport (the
/// fast path; libp2p, direct or relayed): a flood on one does not turn away
/// the other. More are closed at once (the peer retries or takes another
/// path).
const MAX_ACCEPTING: usize = 128;
/// Inbound streams waiting for their hello from one source (an IPv4 address,
/// an IPv6 /64, or the peer id of a relayed stream): one host's silent
/// streams take at most this many of a pool. A legitimate peer sends its
/// hello at once, so it never holds more than a few.
const MAX_ACCEPTING_PER_SOURCE: usize = 16;

/// What an inbound stream counts against while its hello is awaited.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Source {
    Ip(std::net::IpAddr),
    Peer(PeerId),
}

/// Its address's source, or the peer when the address is a relay's (or
/// unknown).
fn source_of(inc: &shoal_net::IncomingTransfer) -> Source {
    inc.remote
        .as_ref()
        .and_then(shoal_net::limit::source_of_addr)
        .map_or(Source::Peer(inc.peer), Source::Ip)
}
/// How often a download asks the DHT for providers again, so that a seeder
/// appearing later is found.
pub const DHT_REQUERY: Duration = Duration::from_secs(3);
/// How long one provider lookup may run.
const DHT_LOOKUP: Duration = Duration::from_secs(5);
/// Most peers a connector remembers (ticket + DHT).
const MAX_KNOWN_PEERS: usize = 256;
/// How long [`Host::start`] waits for the configured relays' reservations.
const RELAY_WAIT: Duration = Duration::from_secs(10);
/// How long `Host::start` waits for the listeners to report their addresses.
const LISTEN_WAIT: Duration = Duration::from_secs(10);

/// What can go wrong starting or running a peer.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The store could not be opened.
    #[error("cannot open shoal's data directory {}: {source}", dir.display())]
    Store {
        dir: PathBuf,
        #[source]
        source: shoal_store::StoreError,
    },
    /// Networking failed (identity, listening, DHT).
    #[error(transparent)]
    Net(#[from] shoal_net::NetError),
    /// The node failed.
    #[error(transparent)]
    TransferService(#[from] NodeError),
    /// The local store failed.
    #[error(transparent)]
    LocalStore(#[from] shoal_store::StoreError),
    /// No share with this id.
    #[error("no share with id {0}; `shoal shares` lists them")]
    NotShared(ContentId),
    /// No invite with this id.
    #[error("no invite with id {0}; `shoal invites` lists them")]
    UnknownInvite(String),
    /// A request that makes no sense (bad duration, use count, peer id).
    #[error("{0}")]
    Invalid(String),
}

impl From<ControlError> for HostError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Store(e) => HostError::LocalStore(e),
            ControlError::NotShared(id) => HostError::NotShared(id),
            ControlError::UnknownInvite(i) => HostError::UnknownInvite(i),
            ControlError::Invalid(m) => HostError::Invalid(m),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running shoal peer. Dropping it stops serving (call [`Host::shutdown`] for
/// a clean stop).
pub struct Host {
    net: Net,
    node: Arc<TransferService>,
    /// The managed transfers, once loaded.
    transfers: std::sync::OnceLock<Arc<Transfers>>,
    /// The identity key: signs invites.
    keypair: Keypair,
    tasks: Vec<JoinHandle<()>>,
    /// The content ids of each folder share seen (its manifest and files), for
    /// [`Host::share_uploads`].
    members: Mutex<HashMap<ContentId, Arc<Vec<ContentId>>>>,
}

/// How to start a [`Host`].
#[derive(Debug, Clone, Default)]
pub struct HostConfig {
    pub net: NetConfig,
    pub node: NodeConfig,
    /// Rate limits over all transfer streams at start (change them with
    /// [`Host::set_limits`]).
    pub limits: Limits,
}

impl Drop for Host {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Host {
    /// Opens the store in `data_dir`, loads (or creates) the identity there,
    /// starts networking with `net_config` and waits until it listens, then
    /// serves inbound transfers and announces every public share on the DHT (in
    /// the background; kad republishes them).
    pub async fn start(data_dir: &Path, config: HostConfig) -> Result<Host, HostError> {
        let HostConfig {
            net: net_config,
            node: node_config,
            limits,
        } = config;
        let store = Store::open(data_dir).map_err(|source| HostError::Store {
            dir: data_dir.to_path_buf(),
            source,
        })?;
        let keypair = shoal_net::identity::load_or_create(data_dir)?;
        let (net, events) = Net::start(keypair.clone(), net_config).await?;
        net.wait_listening(LISTEN_WAIT).await?;
        // A node behind a relay is reachable only through its circuit: wait for
        // the reservation so the tickets it hands out carry that address.
        let unreserved = net.wait_relayed(RELAY_WAIT).await;
        for relay in unreserved {
            tracing::warn!(%relay, "no circuit reserved through this relay yet; tickets made now will not name it");
        }
        let node = Arc::new(TransferService::new(store, net.peer_id(), node_config));
        node.set_limits(limits);
        node.set_address_book(Arc::new(NetBook(net.clone())));
        let NetEvents {
            mut events,
            mut incoming,
        } = events;
        let mut tasks = Vec::new();
        let n = node.clone();
        tasks.push(tokio::spawn(async move {
            let fast = Arc::new(Semaphore::new(MAX_ACCEPTING));
            let libp2p = Arc::new(Semaphore::new(MAX_ACCEPTING));
            let sources = shoal_net::limit::PerSource::new(MAX_ACCEPTING_PER_SOURCE);
            while let Some(inc) = incoming.recv().await {
                let pool = if inc.path == shoal_net::PathKind::Fast {
                    &fast
                } else {
                    &libp2p
                };
                let Some(source) = sources.try_acquire(source_of(&inc)) else {
                    tracing::debug!(peer = %inc.peer, path = %inc.path, "too many streams without a hello from this source; closing one");
                    continue;
                };
                let Ok(permit) = pool.clone().try_acquire_owned() else {
                    tracing::debug!(peer = %inc.peer, path = %inc.path, "inbound streams waiting for a hello at their limit; closing one");
                    continue;
                };
                let n = n.clone();
                let stream = inc.stream;
                tokio::spawn(async move {
                    let _permit = permit;
                    let _source = source;
                    let remote = inc.remote.as_ref().map(|a| crate::transfer::Remote {
                        addr: a.to_string(),
                        path: inc.path.to_string(),
                    });
                    if let Err(e) = n.accept_from(inc.peer, remote, stream).await {
                        tracing::debug!(peer = %inc.peer, path = %inc.path, error = %e, "inbound transfer refused");
                    }
                });
            }
        }));
        // Events are informational here; drain them so the channel never lags.
        tasks.push(tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                tracing::trace!(?ev, "net event");
            }
        }));
        let peer = Host {
            net,
            node,
            transfers: std::sync::OnceLock::new(),
            keypair,
            tasks,
            members: Mutex::new(HashMap::new()),
        };
        let public: Vec<ContentId> = peer
            .node
            .store()
            .shares()?
            .into_iter()
            .filter(|s| s.visibility == Visibility::Public)
            .map(|s| s.id)
            .collect();
        for id in public {
            peer.announce(id);
        }
        Ok(peer)
    }

    /// What this node sent of `share` since it started, with the peers it is
    /// sending to now. A folder's figures add up its manifest and every file
    /// in it; a peer fetching several of its files is listed once, its bytes
    /// and rates summed (its progress is a file's only, so it is not given).
    pub fn share_uploads(&self, share: &Share) -> crate::transfer::Uploads {
        let all = self.node.uploads();
        if share.kind == Kind::File {
            return all.get(&share.id).cloned().unwrap_or_default();
        }
        let members = {
            let mut m = self.members.lock().unwrap_or_else(|e| e.into_inner());
            match m.get(&share.id) {
                Some(ids) => ids.clone(),
                None => {
                    let mut ids = vec![share.id];
                    ids.extend(
                        self.node
                            .store()
                            .share_files(&share.id)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|f| f.id),
                    );
                    let ids = Arc::new(ids);
                    // Folders shared once and removed leave a stale entry at most.
                    if m.len() >= 4096 {
                        m.clear();
                    }
                    m.insert(share.id, ids.clone());
                    ids
                }
            }
        };
        let mut out = crate::transfer::Uploads::default();
        let mut peers: HashMap<PeerId, crate::transfer::ServedPeer> = HashMap::new();
        for id in members.iter() {
            let Some(u) = all.get(id) else { continue };
            out.uploaded += u.uploaded;
            out.up_rate += u.up_rate;
            for p in &u.peers {
                peers
                    .entry(p.peer)
                    .and_modify(|q| {
                        q.uploaded += p.uploaded;
                        q.downloaded += p.downloaded;
                        q.up_rate += p.up_rate;
                        q.down_rate += p.down_rate;
                        q.remote = q.remote.take().or_else(|| p.remote.clone());
                    })
                    .or_insert_with(|| crate::transfer::ServedPeer {
                        progress: None,
                        ..p.clone()
                    });
            }
        }
        out.peers = peers.into_values().collect();
        out.peers.sort_by_key(|p| p.peer.to_bytes());
        out
    }

    /// Every peer connected or transferring, with the transfers it takes part
    /// in and the shares it downloads from this node.
    pub fn peers(&self) -> Vec<crate::transfers::PeerView> {
        let Some(t) = self.transfers.get() else {
            return Vec::new();
        };
        let mut served = Vec::new();
        for s in self.node.store().shares().unwrap_or_default() {
            for p in self.share_uploads(&s).peers {
                served.push((s.id.to_hex(), p));
            }
        }
        t.peers_with_served(served)
    }

    /// The networking handle.
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// The node.
    pub fn node(&self) -> &Arc<TransferService> {
        &self.node
    }

    /// The store.
    pub fn store(&self) -> &Store {
        self.node.store()
    }

    /// Sets the rate limits; they apply at once to every open transfer stream
    /// (paced reads slow the sender through TCP backpressure).
    pub fn set_limits(&self, limits: Limits) {
        self.node.set_limits(limits);
    }

    /// The rate limits in force.
    pub fn limits(&self) -> Limits {
        self.node.limits()
    }

    /// Traffic and verification totals since start.
    pub fn counters(&self) -> Counters {
        self.node.counters()
    }

    /// This peer's id.
    pub fn peer_id(&self) -> PeerId {
        self.net.peer_id()
    }

    /// Announces `id` on the DHT in the background (failures are logged; kad
    /// retries on its republish interval).
    pub fn announce(&self, id: ContentId) {
        announce_on(&self.net, id);
    }

    /// Loads the managed transfers persisted in `state_file` (none if it does
    /// not exist) without starting them (see [`Transfers::resume_all`]); the
    /// host keeps them ([`Host::transfers`]). Their events arrive on the
    /// returned receiver (more with [`Transfers::subscribe`]). Once per host.
    pub fn load_transfers(
        &self,
        state_file: PathBuf,
    ) -> Result<
        (
            Arc<Transfers>,
            tokio::sync::broadcast::Receiver<TransferEvent>,
        ),
        TransferError,
    > {
        let (tx, rx) = tokio::sync::broadcast::channel(TRANSFER_EVENT_QUEUE);
        let t = Transfers::load(self, state_file, tx)?;
        self.transfers
            .set(t.clone())
            .map_err(|_| TransferError::Internal("the transfers are loaded already".into()))?;
        Ok((t, rx))
    }

    /// The managed transfers, once [`load_transfers`](Self::load_transfers)
    /// loaded them: add, list, pause, resume, cancel, limits, peers.
    pub fn transfers(&self) -> Option<&Arc<Transfers>> {
        self.transfers.get()
    }

    /// Marks a share public and announces it.
    pub fn make_public(&self, id: ContentId) -> Result<(), HostError> {
        self.set_visibility(id, Visibility::Public)
    }

    /// Share and access management on this node: every change reaches the
    /// running sessions at once.
    pub fn control(&self) -> AccessControl {
        AccessControl::new(
            self.store().clone(),
            self.keypair.clone(),
            Some(self.node.access().clone()),
        )
    }

    /// Applies the live settings: rate limits (at once, to every open stream),
    /// the most peers per transfer (running transfers dial and accept against
    /// it at once) and the connection limit (new connections are checked
    /// against it; those above a lowered limit stay until they close).
    pub async fn apply_settings(
        &self,
        limits: Limits,
        max_peers_per_transfer: u32,
        max_connections: u32,
    ) {
        self.set_limits(limits);
        self.node.set_max_peers(max_peers_per_transfer);
        let mut conn = self.net.connection_limits();
        if conn.max_established != max_connections {
            conn.max_established = max_connections;
            if let Err(e) = self.net.set_connection_limits(conn).await {
                tracing::warn!(error = %e, "cannot change the connection limit");
            }
        }
    }

    /// Where this node stands on the network: its peer id, listen and ticket
    /// addresses, reachability and how many peers it is connected to.
    pub fn status(&self) -> HostStatus {
        let net = self.net();
        let mut peers: Vec<PeerId> = net.connections().into_iter().map(|c| c.peer).collect();
        peers.sort();
        peers.dedup();
        let reachability = match net.reachability() {
            shoal_net::Reachability::Public => "public",
            shoal_net::Reachability::Private => "private",
            // A listener on an explicit IP or a confirmed mapping is asserted
            // reachable before any AutoNAT test finished.
            shoal_net::Reachability::Unknown if !net.external_addrs().is_empty() => "public",
            shoal_net::Reachability::Unknown => "unknown",
        };
        HostStatus {
            peer_id: self.peer_id(),
            addresses: net.listen_addrs(),
            ticket_addresses: net.ticket_addrs(),
            reachability,
            connected_peers: peers.len(),
        }
    }

    /// Shares a file or folder in place (indexing what is not yet indexed;
    /// `progress` gets the bytes hashed) with `visibility` (`None`: an existing
    /// share keeps its own, a new one is unlisted) and the `allow`ed peers; a
    /// public share is announced. What `shoal share` and the daemon's
    /// `POST /api/v1/shares` do.
    pub fn share(
        &self,
        path: &Path,
        name: Option<&str>,
        visibility: Option<Visibility>,
        allow: &[PeerId],
        progress: shoal_store::hash::Progress<'_>,
    ) -> Result<shoal_store::Added, HostError> {
        if !allow.is_empty() && visibility != Some(Visibility::Private) {
            return Err(HostError::Invalid(
                "an allowlist only applies to a private share".into(),
            ));
        }
        let mut added = self.store().add_with_report(path, name, progress)?;
        // Hashed again just now: a source that had failed matches again.
        self.node.clear_broken(&added.share.id);
        let v = visibility.unwrap_or(added.share.visibility);
        self.set_visibility(added.share.id, v)?;
        for p in allow {
            self.control().allow(added.share.id, *p)?;
        }
        added.share.visibility = v;
        Ok(added)
    }

    /// Changes a share's policy (see [`AccessControl::set_visibility`]); a share
    /// made public is announced.
    pub fn set_visibility(&self, id: ContentId, v: Visibility) -> Result<(), HostError> {
        self.control().set_visibility(id, v)?;
        if v == Visibility::Public {
            self.announce(id);
        }
        Ok(())
    }

    /// Issues an invite to share `id` and returns it with a ticket naming this
    /// peer's addresses and carrying the invite.
    pub fn invite(
        &self,
        id: ContentId,
        opts: &InviteOptions,
    ) -> Result<(InviteRecord, Ticket), HostError> {
        let share = self.store().share(&id)?.ok_or(HostError::NotShared(id))?;
        let rec = self.control().invite(id, opts)?;
        let mut ticket = self.ticket(&share);
        ticket.capability = Some(rec.encoded.clone());
        let _ = ticket.shrink_to_fit();
        Ok((rec, ticket))
    }

    /// The kind of content `id` to download: `known` (a ticket's), else what
    /// this node's store knows of it, else a file.
    pub fn kind_of(&self, id: &ContentId, known: Option<Kind>) -> Kind {
        known.unwrap_or_else(|| {
            self.store()
                .kind_of(id)
                .ok()
                .flatten()
                .unwrap_or(Kind::File)
        })
    }

    /// A ticket for `share` naming this peer and its ticket addresses, and the
    /// share's name when it is one plain file name (what `get` saves it as).
    pub fn ticket(&self, share: &Share) -> Ticket {
        let name = Some(share.name.clone()).filter(|n| is_plain_name(n));
        let mut t = Ticket {
            id: share.id,
            kind: share.kind,
            providers: vec![Provider {
                peer: self.peer_id(),
                addrs: self.net.ticket_addrs(),
            }],
            capability: None,
            name,
        };
        // A ticket of ours always fits once shrunk; keep it as is otherwise.
        let _ = t.shrink_to_fit();
        t
    }

    /// A connector for content `id`: the `providers` (from a ticket) plus those
    /// the DHT finds, looked up again every [`DHT_REQUERY`] while it lives.
    pub fn connector(&self, id: ContentId, providers: &[Provider]) -> Arc<NetConnector> {
        NetConnector::new(self.net.clone(), id, providers)
    }

    /// Downloads `id` into `out_dir` (named `name`, default the id) from the
    /// ticket `providers` and the DHT. Returns the handle and the connector
    /// (which knows the peers found and the path used to each).
    pub fn fetch(
        &self,
        id: ContentId,
        kind: Kind,
        out_dir: &Path,
        name: Option<&str>,
        providers: &[Provider],
    ) -> (DownloadHandle, Arc<NetConnector>) {
        self.fetch_with(id, kind, out_dir, name, providers, None)
    }

    /// [`fetch`](Self::fetch) presenting `capability` (a ticket's invite).
    pub fn fetch_with(
        &self,
        id: ContentId,
        kind: Kind,
        out_dir: &Path,
        name: Option<&str>,
        providers: &[Provider],
        capability: Option<Vec<u8>>,
    ) -> (DownloadHandle, Arc<NetConnector>) {
        let c = self.connector(id, providers);
        let h = self
            .node
            .download_with(id, kind, out_dir, name, c.clone(), capability);
        (h, c)
    }

    /// Starts a download as `shoal get` and the daemon both do: the name rule
    /// ([`destination`]), the output folder created, the content's kind (the
    /// request's, else the ticket's, else what the store knows, else a file),
    /// the ticket's invite presented, the per-download limit, and the announce
    /// rule ([`announces`]). Fetching by id (no ticket providers) first waits
    /// up to `find_timeout` for a provider on the DHT, if given.
    pub async fn get(
        &self,
        req: &GetRequest,
        find_timeout: Option<Duration>,
    ) -> Result<Download, HostError> {
        let t = &req.target;
        if let Some(n) = &req.name {
            if !is_plain_name(n) {
                return Err(HostError::Invalid(format!(
                    "the name {n:?} is not a plain file name; give a name without slashes, or leave it out"
                )));
            }
        }
        check_output(&req.output).map_err(HostError::Invalid)?;
        let name = req.name.clone().or(t.name.clone());
        let kind = self.kind_of(&t.id, req.kind.or(t.kind));
        let choice = if req.only.is_empty() && req.exclude.is_empty() {
            None
        } else if kind != Kind::Collection {
            return Err(HostError::Invalid(format!(
                "--only and --exclude choose files of a folder, and {} is a file",
                t.id
            )));
        } else {
            Some(Arc::new(
                crate::FileChoice::new(&req.only, &req.exclude).map_err(HostError::Invalid)?,
            ))
        };
        std::fs::create_dir_all(&req.output).map_err(|e| {
            HostError::Invalid(format!(
                "cannot create the output folder {}: {e}; choose another output folder",
                req.output.display()
            ))
        })?;
        let conn = self.connector(t.id, &t.providers);
        if let Some(limit) = find_timeout.filter(|_| t.providers.is_empty()) {
            if !conn.wait_for_peers(limit).await {
                return Err(HostError::Invalid(format!(
                    "no provider of {} found on the DHT within {} s; check --bootstrap, or ask the sharer for a ticket",
                    t.id,
                    limit.as_secs()
                )));
            }
        }
        if announces(&t.providers, req.announce) {
            self.announce(t.id);
        }
        let handle = self.node.download_chosen(
            t.id,
            kind,
            &req.output,
            name.as_deref(),
            conn.clone(),
            t.capability.clone(),
            choice,
        );
        handle.set_download_limit(req.download_limit.filter(|l| *l > 0));
        Ok(Download {
            id: t.id,
            kind,
            dest: destination(&req.output, name.as_deref(), &t.id),
            handle,
            connector: conn,
        })
    }

    /// The list of files of the folder `target` names (a ticket, or an id
    /// taken for a folder's): only its manifest is fetched (or the copy an
    /// earlier download left in the store), verified against the id. Gives up
    /// after `timeout` without it.
    pub async fn list_folder(
        &self,
        target: &Target,
        timeout: Duration,
    ) -> Result<shoal_core::Manifest, HostError> {
        if target.kind.is_some_and(|k| k != Kind::Collection) {
            return Err(HostError::Invalid(format!(
                "{} is a file, not a folder: it has no list of files; `shoal get` fetches it",
                target.id
            )));
        }
        let conn = self.connector(target.id, &target.providers);
        // By id alone: wait (within the time given) for the DHT to name a
        // provider, as `get` does.
        if target.providers.is_empty() && !conn.wait_for_peers(timeout).await {
            return Err(HostError::Invalid(format!(
                "no provider of {} found on the DHT within {} s; check --bootstrap, or ask the sharer for a ticket",
                target.id,
                timeout.as_secs()
            )));
        }
        match tokio::time::timeout(
            timeout,
            self.node
                .manifest(target.id, conn, target.capability.clone()),
        )
        .await
        {
            Ok(res) => Ok(res?),
            Err(_) => Err(HostError::Invalid(format!(
                "no provider sent the list of files of {} within {} s; check that the sharer is online, or give a ticket with its addresses",
                target.id,
                timeout.as_secs()
            ))),
        }
    }

    /// Stops serving and shuts networking down.
    pub async fn shutdown(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        self.net.shutdown().await;
    }
}

/// Events of the managed transfers waiting for a slow receiver.
const TRANSFER_EVENT_QUEUE: usize = 1024;

/// Announces `id` on the DHT in the background (failures are logged; kad
/// retries on its republish interval).
pub(crate) fn announce_on(net: &Net, id: ContentId) {
    let net = net.clone();
    tokio::spawn(async move {
        if let Err(e) = net.provide(&id).await {
            tracing::debug!(%id, error = %e, "provider record not published yet");
        }
    });
}

/// See [`Host::status`].
#[derive(Debug, Clone)]
pub struct HostStatus {
    pub peer_id: PeerId,
    pub addresses: Vec<Multiaddr>,
    /// The addresses put in tickets.
    pub ticket_addresses: Vec<Multiaddr>,
    /// "unknown", "public" or "private" (AutoNAT's answer).
    pub reachability: &'static str,
    /// Distinct peers with a libp2p connection.
    pub connected_peers: usize,
}

/// What [`Host::get`] downloads, and how.
#[derive(Debug, Clone)]
pub struct GetRequest {
    /// A ticket's content, providers, name and invite, or a bare id.
    pub target: Target,
    /// The folder to save into.
    pub output: PathBuf,
    /// The file or folder name to create there (default: the ticket's, else the id).
    pub name: Option<String>,
    /// The kind when the target does not say (a bare id of a folder).
    pub kind: Option<Kind>,
    /// This download's own limit, bytes per second (`None` or 0: none).
    pub download_limit: Option<u64>,
    /// Announce on the DHT that this node has the content (always when
    /// fetching by id).
    pub announce: bool,
    /// Only the files of a folder matching one of these globs (none: all).
    pub only: Vec<String>,
    /// Not the files of a folder matching one of these globs.
    pub exclude: Vec<String>,
}

/// A started download.
pub struct Download {
    pub id: ContentId,
    pub kind: Kind,
    /// Where the file or folder lands.
    pub dest: PathBuf,
    pub handle: DownloadHandle,
    /// The peers found and the path to each.
    pub connector: Arc<NetConnector>,
}

/// Where a download of `id` saves: `output/name`, the id in hex when no name
/// is given. The CLI and the daemon both use it.
pub fn destination(output: &Path, name: Option<&str>, id: &ContentId) -> PathBuf {
    output.join(name.map_or_else(|| id.to_hex(), str::to_owned))
}

/// Refuses an output folder inside the kernel's virtual file systems
/// (`/proc`, `/sys`, `/dev`), where a download can only fail or do harm.
pub fn check_output(output: &Path) -> Result<(), String> {
    let resolved = output
        .canonicalize()
        .unwrap_or_else(|_| output.to_path_buf());
    for virt in ["/proc", "/sys", "/dev"] {
        if resolved.starts_with(virt) || output.starts_with(virt) {
            return Err(format!(
                "{} is inside {virt}, a virtual file system of the kernel; choose a folder on a disk",
                output.display()
            ));
        }
    }
    Ok(())
}

/// Whether a download announces itself as a provider on the DHT: when asked,
/// and always when fetching by id (nobody else would tell others about us).
pub fn announces(providers: &[Provider], asked: bool) -> bool {
    asked || providers.is_empty()
}

/// "direct", "relayed" or "direct+relayed": how the peers connected now are
/// reached, for progress lines and summaries.
pub fn path_label(conn: &NetConnector, p: &Progress) -> &'static str {
    let paths = conn.paths();
    label_of_paths(
        p.peers
            .iter()
            .filter(|pp| pp.connected)
            .map(|pp| conn.is_relayed(&pp.peer) || paths.get(&pp.peer) == Some(&PathKind::Relayed)),
    )
}

/// "direct", "relayed" or "direct+relayed" for connected peers, each given as
/// whether it is reached through a relay ("direct" when there is none).
pub fn label_of_paths(relayed: impl IntoIterator<Item = bool>) -> &'static str {
    let (mut direct, mut through_relay) = (false, false);
    for r in relayed {
        if r {
            through_relay = true;
        } else {
            direct = true;
        }
    }
    match (direct, through_relay) {
        (true, true) => "direct+relayed",
        (false, true) => "relayed",
        _ => "direct",
    }
}

#[derive(Default)]
struct Known {
    /// Peers in the order they were learned.
    order: Vec<PeerId>,
    hints: HashMap<PeerId, Vec<Multiaddr>>,
    paths: HashMap<PeerId, PathKind>,
}

/// A [`Connector`] over `shoal-net`: opens transfers with
/// [`Net::open_transfer`] (ticket addresses as hints) and knows the peers of
/// the ticket plus those a background DHT lookup loop finds. The loop stops
/// when the connector is dropped.
pub struct NetConnector {
    net: Net,
    local: PeerId,
    known: Arc<Mutex<Known>>,
    lookup: JoinHandle<()>,
}

impl Drop for NetConnector {
    fn drop(&mut self) {
        self.lookup.abort();
    }
}

impl NetConnector {
    pub(crate) fn new(net: Net, id: ContentId, providers: &[Provider]) -> Arc<Self> {
        let local = net.peer_id();
        let mut known = Known::default();
        for p in providers {
            if p.peer == local || known.order.contains(&p.peer) {
                continue;
            }
            known.order.push(p.peer);
            known.hints.insert(p.peer, p.addrs.clone());
        }
        let known = Arc::new(Mutex::new(known));
        let k = known.clone();
        let n = net.clone();
        let lookup = tokio::spawn(async move {
            loop {
                // Peers on the local network (mDNS) are asked directly: a
                // peer without the content denies the hello with NotFound.
                {
                    let mut k = lock(&k);
                    for (p, addrs) in n.lan_peers() {
                        if p != local && !k.order.contains(&p) && k.order.len() < MAX_KNOWN_PEERS {
                            tracing::debug!(%id, peer = %p, "asking a peer found on the LAN");
                            k.order.push(p);
                            k.hints.insert(p, addrs);
                        }
                    }
                }
                match n.find_providers(&id, DHT_LOOKUP).await {
                    Ok(found) => {
                        let mut k = lock(&k);
                        for p in found {
                            if p != local
                                && !k.order.contains(&p)
                                && k.order.len() < MAX_KNOWN_PEERS
                            {
                                tracing::debug!(%id, peer = %p, "provider found on the DHT");
                                k.order.push(p);
                            }
                        }
                    }
                    Err(e) => tracing::debug!(%id, error = %e, "provider lookup failed"),
                }
                tokio::time::sleep(DHT_REQUERY).await;
            }
        });
        Arc::new(Self {
            net,
            local,
            known,
            lookup,
        })
    }

    /// Waits until at least one peer is known, up to `timeout`; returns whether
    /// one is.
    pub async fn wait_for_peers(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if !lock(&self.known).order.is_empty() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The path each peer was last reached on.
    pub fn paths(&self) -> HashMap<PeerId, PathKind> {
        lock(&self.known).paths.clone()
    }

    /// Whether `peer` is connected through a relay (or, for our own
    /// transfers, was reached on a relayed path).
    pub fn is_relayed(&self, peer: &PeerId) -> bool {
        lock(&self.known).paths.get(peer) == Some(&PathKind::Relayed)
            || self
                .net
                .connections()
                .iter()
                .any(|c| c.peer == *peer && c.relayed)
                && !self
                    .net
                    .connections()
                    .iter()
                    .any(|c| c.peer == *peer && !c.relayed)
    }
}

impl Connector for NetConnector {
    fn connect(
        &self,
        peer: PeerId,
    ) -> Pin<Box<dyn Future<Output = Result<BoxStream, NodeError>> + Send + '_>> {
        Box::pin(async move {
            if peer == self.local {
                return Err(NodeError::Internal(
                    "refusing to dial this node itself".into(),
                ));
            }
            let hints = lock(&self.known)
                .hints
                .get(&peer)
                .cloned()
                .unwrap_or_default();
            let (stream, kind) = self
                .net
                .open_transfer(peer, &hints)
                .await
                .map_err(|e| NodeError::Io(std::io::Error::other(e.to_string())))?;
            lock(&self.known).paths.insert(peer, kind);
            if kind == PathKind::Fast && !self.net.is_connected(&peer) {
                // A fast-path connection tells the peer nothing about where we
                // listen; a libp2p connection beside it does (identify), so the
                // peer can pass our addresses on in peer exchange.
                let net = self.net.clone();
                tokio::spawn(async move {
                    if let Err(e) = net.dial(peer, &hints).await {
                        tracing::debug!(%peer, error = %e, "no libp2p connection beside the fast path");
                    }
                });
            }
            Ok(Box::new(stream) as BoxStream)
        })
    }

    fn peers(&self) -> Vec<PeerId> {
        lock(&self.known).order.clone()
    }

    fn for_content(&self, id: ContentId) -> Option<Arc<dyn Connector>> {
        Some(NetConnector::new(self.net.clone(), id, &[]))
    }

    fn learned(&self, peers: Vec<(PeerId, Vec<Multiaddr>)>) {
        let mut k = lock(&self.known);
        for (peer, addrs) in peers {
            if peer == self.local {
                continue;
            }
            if !k.order.contains(&peer) {
                if k.order.len() >= MAX_KNOWN_PEERS {
                    break;
                }
                tracing::debug!(%peer, "peer learned through peer exchange");
                k.order.push(peer);
            }
            // Hints we were given first (a ticket's) stay first.
            let hints = k.hints.entry(peer).or_default();
            for a in addrs {
                if hints.len() >= MAX_HINTS {
                    break;
                }
                if !hints.contains(&a) {
                    hints.push(a);
                }
            }
        }
    }
}

/// Most dial hints kept per peer.
const MAX_HINTS: usize = 16;

/// The [`AddressBook`] of a [`Host`]: what `Net` knows of each peer's
/// addresses ([`Net::peer_addrs`]), without loopback addresses for a receiver
/// that we do not reach over loopback.
struct NetBook(Net);

impl AddressBook for NetBook {
    fn addrs_for(&self, peer: &PeerId, to: &PeerId) -> Vec<Multiaddr> {
        let is_loopback = |a: &Multiaddr| multiaddr_ip(a).is_some_and(|ip| ip.is_loopback());
        let to_on_loopback = self
            .0
            .connections()
            .iter()
            .any(|c| c.peer == *to && !c.relayed && is_loopback(&c.remote_addr));
        self.0
            .peer_addrs(peer)
            .into_iter()
            .filter(|a| to_on_loopback || !is_loopback(a))
            .collect()
    }
}
