//! `shoal daemon`: a [`Host`] run behind a local HTTP API (axum), with an SSE
//! event stream, Prometheus metrics and the embedded web UI. The contract is
//! `docs/api.md`; the OpenAPI document is generated from [`api`].
//!
//! Files in the data directory: `daemon.lock` (exclusive flock for the
//! daemon's life), `api.token` (0600, kept across restarts; delete it to have a new one
//! written), `daemon.json` (pid
//! and API address, removed on a clean exit), `daemon/transfers.json` and
//! `daemon/settings.json`, `daemon/stats.json` (all-time traffic totals).

pub mod access;
pub mod api;
pub mod discovery;
mod error;
pub mod fs;
mod limits;
pub mod listener;
pub mod settings;
pub mod stats;
pub mod transfers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use shoal_node::host::{Host, HostConfig};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

pub use error::{ApiError, ApiJson, DaemonError, ErrorBody, ErrorCode, ErrorDetail};
pub use settings::{ConfigError, FileConfig, Settings, SettingsPatch};
pub use transfers::{Transfer, TransferPeer, TransferState, Transfers};

/// Events kept for slow SSE clients before they lag (and miss some).
const EVENT_QUEUE: usize = 1024;
/// How long shutdown waits for the HTTP server to finish open requests.
const SERVER_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// One server-sent event: `event: NAME` and one `data:` line of JSON.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: &'static str,
    pub data: serde_json::Value,
}

impl Event {
    /// An event named `name` carrying `data`.
    pub fn new(name: &'static str, data: serde_json::Value) -> Self {
        Self { name, data }
    }
}

/// How to start a [`Daemon`].
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// shoal's data directory (store, identity, daemon files).
    pub data_dir: PathBuf,
    /// Where the HTTP API listens (port 0: any free port).
    pub api: SocketAddr,
    /// The peer's networking and node configuration; its connection and
    /// per-transfer limits and upload limit are overwritten by the settings.
    pub peer: HostConfig,
    /// Settings from the configuration file over the defaults.
    pub settings: Settings,
    /// Settings fixed by flags and environment variables: they win over the
    /// settings saved through the API.
    pub pinned: SettingsPatch,
    /// Most API connections at once (see [`listener::MAX_API_CONNECTIONS`]).
    pub api_max_connections: usize,
    /// An API connection idle this long is closed (see [`listener::API_IDLE`]).
    pub api_idle: std::time::Duration,
    /// A request whose headers take longer than this is cut off (see
    /// [`listener::API_HEADER`]).
    pub api_header: std::time::Duration,
    /// The folder the web UI's folder browser shows (default: `$HOME`).
    pub browse_root: Option<PathBuf>,
}

impl DaemonConfig {
    /// A configuration with default settings, listening on 127.0.0.1 (any port).
    pub fn new(data_dir: impl Into<PathBuf>, peer: HostConfig) -> Self {
        Self {
            data_dir: data_dir.into(),
            api: SocketAddr::from(([127, 0, 0, 1], 0)),
            peer,
            settings: Settings::default(),
            pinned: SettingsPatch::default(),
            api_max_connections: listener::MAX_API_CONNECTIONS,
            api_idle: listener::API_IDLE,
            api_header: listener::API_HEADER,
            browse_root: None,
        }
    }
}

/// Everything the API handlers share.
pub struct AppState {
    pub(crate) peer: Arc<Host>,
    pub(crate) transfers: Arc<Transfers>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) token: String,
    pub(crate) settings: Mutex<Settings>,
    /// What was saved through the API (persisted as a patch, so the
    /// configuration file still decides the fields never patched).
    pub(crate) saved: Mutex<SettingsPatch>,
    pub(crate) base: Settings,
    pub(crate) pinned: SettingsPatch,
    pub(crate) data_dir: PathBuf,
    pub(crate) started: Instant,
    pub(crate) closing: watch::Receiver<bool>,
    pub(crate) stats: stats::Stats,
    /// The folder browser's root (see [`fs`]).
    pub(crate) browse_root: Option<PathBuf>,
}

impl AppState {
    /// The peer.
    pub fn peer(&self) -> &Arc<Host> {
        &self.peer
    }

    /// The current settings.
    pub fn settings(&self) -> Settings {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where downloads go by default.
    pub fn default_output(&self) -> PathBuf {
        self.data_dir.join("downloads")
    }

    pub(crate) fn settings_file(&self) -> PathBuf {
        settings_file(&self.data_dir)
    }
}

fn settings_file(data_dir: &Path) -> PathBuf {
    data_dir.join("daemon").join("settings.json")
}

/// A running daemon. Call [`Daemon::shutdown`] to stop it cleanly (dropping it
/// stops serving but leaves `daemon.json` behind).
pub struct Daemon {
    state: Arc<AppState>,
    api_addr: SocketAddr,
    stats_task: Option<JoinHandle<()>>,
    server: Option<JoinHandle<()>>,
    close: watch::Sender<bool>,
    _lock: discovery::DirLock,
}

impl Daemon {
    /// Locks the data directory, starts the peer, resumes persisted transfers,
    /// listens for the API and writes `api.token` and `daemon.json`.
    pub async fn start(cfg: DaemonConfig) -> Result<Daemon, DaemonError> {
        let data_dir = cfg.data_dir.clone();
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(data_dir.join("daemon"))
                .map_err(|source| DaemonError::Io {
                    what: "create the folder",
                    path: data_dir.join("daemon"),
                    source,
                })?;
        }
        let lock = discovery::lock(&data_dir)?;
        let saved = load_saved(&settings_file(&data_dir))?;
        let settings = effective(&cfg.settings, &saved, &cfg.pinned);
        let mut peer_cfg = cfg.peer.clone();
        limits::configure(&mut peer_cfg, &settings);
        let peer = Arc::new(Host::start(&data_dir, peer_cfg).await?);
        limits::apply(&peer, &settings).await;
        let token = discovery::load_or_create_token(&data_dir)?;
        let (events, _) = broadcast::channel(EVENT_QUEUE);
        let (transfers, transfer_rx) =
            peer.load_transfers(data_dir.join("daemon").join("transfers.json"))?;
        tokio::spawn(transfers::forward(transfer_rx, events.clone()));
        transfers.set_seed_limits(limits::seed_limits(&settings));
        transfers.resume_all();
        let (close, closing) = watch::channel(false);
        let state = Arc::new(AppState {
            peer,
            transfers,
            events,
            token,
            settings: Mutex::new(settings),
            saved: Mutex::new(saved),
            base: cfg.settings,
            pinned: cfg.pinned,
            data_dir: data_dir.clone(),
            started: Instant::now(),
            closing: closing.clone(),
            stats: stats::Stats::load(&data_dir),
            browse_root: fs::browse_root(cfg.browse_root.as_deref()),
        });
        let stats_task = tokio::spawn(stats::run(state.clone()));
        let listener = tokio::net::TcpListener::bind(cfg.api)
            .await
            .map_err(|source| DaemonError::Bind {
                addr: cfg.api,
                source,
            })?;
        let api_addr = listener.local_addr().map_err(|source| DaemonError::Bind {
            addr: cfg.api,
            source,
        })?;
        let app = api::router(state.clone());
        let listener = listener::Guarded::new(listener, cfg.api_max_connections, cfg.api_idle);
        let server = tokio::spawn(listener::serve(listener, app, closing, cfg.api_header));
        discovery::write_info(
            &data_dir,
            &discovery::DaemonInfo {
                pid: std::process::id(),
                api: api_addr,
                version: env!("CARGO_PKG_VERSION").to_owned(),
            },
        )?;
        Ok(Daemon {
            state,
            api_addr,
            stats_task: Some(stats_task),
            server: Some(server),
            close,
            _lock: lock,
        })
    }

    /// Where the API listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The API token (also in `api.token`).
    pub fn token(&self) -> &str {
        &self.state.token
    }

    /// The shared state (for [`api::router`] in tests, and the peer).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Stops the transfers (progress persisted), the API (open event streams
    /// end) and networking, then removes `daemon.json` and releases the lock.
    pub async fn shutdown(mut self) {
        self.state.transfers.stop_all().await;
        let _ = self.close.send(true);
        if let Some(t) = self.stats_task.take() {
            // It saves the all-time totals as it ends.
            let _ = tokio::time::timeout(SERVER_STOP_WAIT, t).await;
        }
        if let Some(mut s) = self.server.take() {
            if tokio::time::timeout(SERVER_STOP_WAIT, &mut s)
                .await
                .is_err()
            {
                s.abort();
            }
        }
        self.state.peer.net().shutdown().await;
        let _ = std::fs::remove_file(self.state.data_dir.join(discovery::INFO_FILE));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.close.send(true);
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }
}

/// The settings in force: configuration file, then saved, then pinned.
pub(crate) fn effective(
    base: &Settings,
    saved: &SettingsPatch,
    pinned: &SettingsPatch,
) -> Settings {
    let s = saved.apply(*base).unwrap_or(*base);
    pinned.apply(s).unwrap_or(s)
}

fn load_saved(path: &Path) -> Result<SettingsPatch, DaemonError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| DaemonError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SettingsPatch::default()),
        Err(source) => Err(DaemonError::Io {
            what: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Merges `new` into `old` (fields set in `new` win).
pub(crate) fn merge_patch(old: &SettingsPatch, new: &SettingsPatch) -> SettingsPatch {
    SettingsPatch {
        upload_limit: new.upload_limit.or(old.upload_limit),
        download_limit: new.download_limit.or(old.download_limit),
        max_connections: new.max_connections.or(old.max_connections),
        max_peers_per_transfer: new.max_peers_per_transfer.or(old.max_peers_per_transfer),
        seed_ratio_limit: new.seed_ratio_limit.or(old.seed_ratio_limit),
        seed_time_limit: new.seed_time_limit.or(old.seed_time_limit),
    }
}
