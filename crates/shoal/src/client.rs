//! The client side of the daemon's HTTP API (docs/api.md): finding the daemon
//! that runs for a data dir, calling its routes, and reading its event stream.
//!
//! Discovery follows the contract: a daemon runs for a data dir when
//! `<data-dir>/daemon.json` exists, the pid it names is alive, and
//! `GET /api/v1/status` with the token from `<data-dir>/api.token` answers.
//! A file left behind by a daemon that died (its pid is gone, or nothing
//! listens on its address any more) means no daemon: commands then run in the
//! foreground as they do without a daemon.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How long discovery waits for `GET /status`: a healthy daemon answers at once.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeout of ordinary requests (listings, pause, resume, cancel).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Adding a share indexes it first, which takes as long as hashing the files.
pub const SHARE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The daemon sends a keep-alive comment every 15 s; silence for this long
/// means it stopped.
pub const EVENT_SILENCE: Duration = Duration::from_secs(45);
/// Bounds what we read from the daemon: a `daemon.json` or token file, one
/// event-stream line, one error body.
const MAX_FILE: u64 = 64 * 1024;
const MAX_SSE_LINE: usize = 4 * 1024 * 1024;

/// The content of `<data-dir>/daemon.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct DaemonFile {
    pub pid: u32,
    /// `IP:PORT` of the HTTP API.
    pub api: String,
}

/// What the files in a data dir say about a daemon, before asking it anything.
#[derive(Debug)]
pub enum Local {
    /// No `daemon.json`, or one left behind by a daemon that is gone.
    None,
    /// `daemon.json` names a live process.
    Alive(DaemonFile),
}

/// Reads `daemon.json` and checks that its pid is alive. An unreadable or
/// garbled file counts as stale: the daemon writes it whole after it listens.
pub fn read_local(data_dir: &Path) -> Local {
    let path = data_dir.join("daemon.json");
    let Ok(text) = read_bounded(&path) else {
        return Local::None;
    };
    let Ok(file) = serde_json::from_str::<DaemonFile>(&text) else {
        return Local::None;
    };
    if !pid_alive(file.pid) {
        return Local::None;
    }
    Local::Alive(file)
}

fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_FILE)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Whether a process with this pid exists. On Linux `/proc` tells without
/// signalling anyone; elsewhere we cannot tell cheaply and say yes, so the
/// status request decides.
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    let proc_root = Path::new("/proc");
    if proc_root.join("self").exists() {
        proc_root.join(pid.to_string()).exists()
    } else {
        true
    }
}

/// A daemon that answered: the handle every remote command uses.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub data_dir: PathBuf,
    pub file: DaemonFile,
    pub status: Status,
    token: String,
    base: String,
    http: reqwest::Client,
}

/// Why discovery found no usable daemon, when it is not simply absent.
fn not_answering(data_dir: &Path, file: &DaemonFile, why: &str) -> anyhow::Error {
    anyhow!(
        "the shoal daemon for {} (pid {}) is not answering at {}: {why}; check that it runs, stop it (kill {}), or pass --no-daemon to work without it",
        data_dir.display(),
        file.pid,
        file.api,
        file.pid
    )
}

/// The text of an error and its causes, for one line.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

impl Daemon {
    /// Finds the daemon running for `data_dir`: `Ok(None)` when none runs
    /// (no `daemon.json`, a dead pid, or nothing listening at its address),
    /// an error when one seems to run but does not answer properly.
    pub async fn discover(data_dir: &Path) -> Result<Option<Daemon>> {
        let Local::Alive(file) = read_local(data_dir) else {
            return Ok(None);
        };
        let token_path = data_dir.join("api.token");
        let token = match read_bounded(&token_path) {
            Ok(t) => t.trim().to_owned(),
            // The daemon writes the token before daemon.json, so a live pid
            // without a token is a pid reused after a daemon died.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(anyhow!(
                    "cannot read the daemon's API token {}: {e}; run shoal as the user who started `shoal daemon`",
                    token_path.display()
                ))
            }
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(STATUS_TIMEOUT)
            .build()
            .context("cannot set up the HTTP client")?;
        let base = format!("http://{}", file.api);
        let mut daemon = Daemon {
            data_dir: data_dir.to_path_buf(),
            file,
            status: Status::default(),
            token,
            base,
            http,
        };
        let resp = daemon
            .http
            .get(daemon.url("/api/v1/status"))
            .bearer_auth(&daemon.token)
            .timeout(STATUS_TIMEOUT)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            // Nothing listens where daemon.json points: that daemon is gone
            // and its pid was reused.
            Err(e) if e.is_connect() => return Ok(None),
            Err(e) if e.is_timeout() => {
                return Err(not_answering(
                    data_dir,
                    &daemon.file,
                    &format!("no answer within {} s", STATUS_TIMEOUT.as_secs()),
                ))
            }
            Err(e) => return Err(not_answering(data_dir, &daemon.file, &chain(&e))),
        };
        let value = daemon.read_response("GET", "/api/v1/status", resp).await?;
        daemon.status = serde_json::from_value(value).map_err(|e| {
            not_answering(
                data_dir,
                &daemon.file,
                &format!(
                    "its status is not what this shoal understands ({e}); is it the same version?"
                ),
            )
        })?;
        Ok(Some(daemon))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `http://ADDR/#token=TOKEN`: the web UI with the token handed over in
    /// the fragment, which the browser never sends to the server.
    pub fn ui_url(&self) -> String {
        format!("{}/#token={}", self.base, self.token)
    }

    /// Calls a route and returns its JSON body (`Null` for 204). A non-2xx
    /// answer becomes an error carrying the API's message.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), self.url(path))
            .bearer_auth(&self.token)
            .timeout(timeout);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(&e))?;
        self.read_response(method.as_str(), path, resp).await
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, path, None, REQUEST_TIMEOUT)
            .await
    }

    pub async fn post(&self, path: &str, body: &Value, timeout: Duration) -> Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body), timeout)
            .await
    }

    fn transport_error(&self, e: &reqwest::Error) -> anyhow::Error {
        if e.is_timeout() {
            not_answering(&self.data_dir, &self.file, "the request timed out")
        } else {
            not_answering(&self.data_dir, &self.file, &chain(e))
        }
    }

    async fn read_response(
        &self,
        method: &str,
        path: &str,
        resp: reqwest::Response,
    ) -> Result<Value> {
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(&e))?;
        if status.is_success() {
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes).with_context(|| {
                format!("the shoal daemon answered {method} {path} with JSON this shoal cannot read; is it the same version?")
            });
        }
        Err(api_error(status.as_u16(), &bytes, method, path))
    }

    /// Opens `GET /api/v1/events`; read it with [`Daemon::next_chunk`].
    pub async fn events(&self) -> Result<reqwest::Response> {
        let resp = self
            .http
            .get(self.url("/api/v1/events"))
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp.bytes().await.unwrap_or_default();
            return Err(api_error(status.as_u16(), &bytes, "GET", "/api/v1/events"));
        }
        Ok(resp)
    }

    /// The next piece of the event stream; `None` when the daemon closed it.
    pub async fn next_chunk(&self, resp: &mut reqwest::Response) -> Result<Option<Vec<u8>>> {
        match tokio::time::timeout(EVENT_SILENCE, resp.chunk()).await {
            Err(_) => Err(not_answering(
                &self.data_dir,
                &self.file,
                &format!(
                    "its event stream was silent for {} s",
                    EVENT_SILENCE.as_secs()
                ),
            )),
            Ok(Err(e)) => Err(self.transport_error(&e)),
            Ok(Ok(chunk)) => Ok(chunk.map(|b| b.to_vec())),
        }
    }
}

/// The error a non-2xx answer stands for: the API's own message when the body
/// has the contract's shape, else the status and the start of the body.
pub fn api_error(status: u16, body: &[u8], method: &str, path: &str) -> anyhow::Error {
    #[derive(Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(b) = serde_json::from_slice::<Body>(body) {
        if !b.error.message.trim().is_empty() {
            return anyhow!("{}", b.error.message.trim());
        }
        if !b.error.code.is_empty() {
            return anyhow!(
                "the shoal daemon refused {method} {path}: {} (HTTP {status})",
                b.error.code
            );
        }
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    anyhow!(
        "the shoal daemon answered {method} {path} with HTTP {status}{}",
        if text.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", text.trim())
        }
    )
}

// ---------------------------------------------------------------- types

/// `Status` of the API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    pub peer_id: String,
    pub version: String,
    pub addresses: Vec<String>,
    pub ticket_addresses: Vec<String>,
    pub reachability: String,
    pub uptime_s: u64,
    pub data_dir: String,
    pub connected_peers: u32,
}

/// `Share` of the API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiShare {
    pub id: String,
    pub kind: String,
    pub name: String,
    pub path: String,
    pub size: u64,
    pub files: u64,
    pub public: bool,
    /// public, unlisted or private.
    pub visibility: String,
    pub ticket: String,
    /// Bytes sent since the daemon started, the rate now, and who is being
    /// served (absent from older daemons).
    #[serde(default)]
    pub uploaded_bytes: u64,
    #[serde(default)]
    pub up_rate: f64,
    #[serde(default)]
    pub ratio: f64,
    #[serde(default)]
    pub peers: Vec<serde_json::Value>,
}

/// `Transfer` of the API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Transfer {
    pub id: String,
    pub name: Option<String>,
    pub kind: String,
    pub output: String,
    pub state: String,
    pub total_bytes: Option<u64>,
    pub done_bytes: u64,
    pub progress: f64,
    pub down_rate: f64,
    pub up_rate: f64,
    pub eta_s: Option<f64>,
    pub peers: Vec<TransferPeer>,
    pub download_limit: Option<u64>,
    pub error: Option<String>,
    pub pieces_failed: u64,
    pub added_at: u64,
    /// What it does while no peer answers (absent from older daemons).
    #[serde(default)]
    pub searching: Option<String>,
}

impl Transfer {
    /// Complete: "seeding" (still served) or "completed".
    pub fn is_complete(&self) -> bool {
        self.state == "seeding" || self.state == "completed"
    }

    /// What went wrong with peers, as a clause to add to a message ("; 3
    /// pieces failed verification …; banned for sending corrupt data: …"),
    /// or "" if nothing did. The foreground download says the same.
    pub fn trouble(&self) -> String {
        crate::p2p::trouble_text(self.pieces_failed, &self.banned_peers())
    }

    /// The peers banned for sending corrupt data.
    pub fn banned_peers(&self) -> Vec<String> {
        self.peers
            .iter()
            .filter(|p| p.banned)
            .map(|p| p.peer_id.clone())
            .collect()
    }

    /// Where the result lands: the output dir joined with the content's name
    /// (the id when the name is not known yet).
    pub fn result_path(&self) -> PathBuf {
        let name = self.name.as_deref().filter(|n| !n.is_empty());
        match self.id.parse::<shoal_core::ContentId>() {
            // The node's rule, as the daemon applied it.
            Ok(id) => shoal_node::host::destination(Path::new(&self.output), name, &id),
            Err(_) => Path::new(&self.output).join(name.unwrap_or(&self.id)),
        }
    }

    /// "direct", "relayed" or "direct+relayed", over the connected peers.
    pub fn path_label(&self) -> &'static str {
        shoal_node::host::label_of_paths(
            self.peers
                .iter()
                .filter(|p| p.connected)
                .map(|p| p.path == "relayed"),
        )
    }

    pub fn connected_peers(&self) -> usize {
        self.peers.iter().filter(|p| p.connected).count()
    }
}

/// `TransferPeer` of the API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TransferPeer {
    pub peer_id: String,
    pub path: String,
    pub connected: bool,
    pub downloaded: u64,
    pub uploaded: u64,
    pub down_rate: f64,
    pub up_rate: f64,
    pub banned: bool,
    /// Absent from older daemons.
    pub address: Option<String>,
    pub progress: Option<f64>,
}

/// `Host` of the API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiPeer {
    pub peer_id: String,
    pub addresses: Vec<String>,
    pub path: String,
    pub down_rate: f64,
    pub up_rate: f64,
    pub transfers: Vec<String>,
    /// Shares it downloads from this daemon (absent from older daemons).
    #[serde(default)]
    pub shares: Vec<String>,
}

// ---------------------------------------------------------------- SSE

/// One server-sent event: its `event:` name ("message" if none) and its
/// `data:` lines joined with newlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// An incremental `text/event-stream` parser (the WHATWG rules that matter
/// here): fed arbitrary chunks, it yields each event when its blank line
/// arrives. Lines end with LF or CRLF; comment lines (`:`) are skipped; a line
/// longer than 4 MiB is an error, so a broken server cannot grow our memory.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    event: String,
    data: String,
    has_data: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the events completed by them, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                if self.line.last() == Some(&b'\r') {
                    self.line.pop();
                }
                let line = std::mem::take(&mut self.line);
                if let Some(ev) = self.line_done(&line) {
                    out.push(ev);
                }
            } else {
                if self.line.len() >= MAX_SSE_LINE {
                    bail!(
                        "the shoal daemon sent an event line longer than {} MiB; is it the same version?",
                        MAX_SSE_LINE >> 20
                    );
                }
                self.line.push(b);
            }
            if self.data.len() > MAX_SSE_LINE {
                bail!(
                    "the shoal daemon sent an event larger than {} MiB; is it the same version?",
                    MAX_SSE_LINE >> 20
                );
            }
        }
        Ok(out)
    }

    fn line_done(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            let had = std::mem::replace(&mut self.has_data, false);
            if !had {
                return None;
            }
            return Some(SseEvent {
                event: if event.is_empty() {
                    "message".to_owned()
                } else {
                    event
                },
                data,
            });
        }
        if line[0] == b':' {
            return None;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&line[..], ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.push(c).expect("valid stream"));
        }
        out
    }

    #[test]
    fn sse_events_split_across_chunks_are_reassembled() {
        let stream = b"event: transfer\ndata: {\"id\":\"ab\"}\n\n: keep-alive\n\nevent: share_removed\r\ndata: {\"id\":\"cd\"}\r\n\r\n";
        let whole = parse_all(&[stream]);
        assert_eq!(
            whole,
            vec![
                SseEvent {
                    event: "transfer".into(),
                    data: "{\"id\":\"ab\"}".into()
                },
                SseEvent {
                    event: "share_removed".into(),
                    data: "{\"id\":\"cd\"}".into()
                },
            ]
        );
        // Byte by byte gives the same events.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(parse_all(&bytes), whole);
    }

    #[test]
    fn sse_multiline_data_joins_with_newlines_and_default_name_is_message() {
        let ev = parse_all(&[b"data: a\ndata:b\ndata\n\n"]);
        assert_eq!(
            ev,
            vec![SseEvent {
                event: "message".into(),
                data: "a\nb\n".into()
            }]
        );
    }

    #[test]
    fn sse_comments_and_events_without_data_yield_nothing() {
        assert!(parse_all(&[b": keep-alive\n\nevent: x\n\n\n"]).is_empty());
        // The name of a data-less event does not leak into the next one.
        let ev = parse_all(&[b"event: x\n\ndata: 1\n\n"]);
        assert_eq!(ev[0].event, "message");
    }

    #[test]
    fn sse_overlong_line_is_an_error_not_unbounded_memory() {
        let mut p = SseParser::new();
        let chunk = vec![b'a'; 1 << 20];
        let mut failed = false;
        for _ in 0..8 {
            if p.push(&chunk).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "a line over the bound must be refused");
        assert!(p.line.len() <= MAX_SSE_LINE);
    }

    #[test]
    fn api_error_shows_the_message_of_the_contract_body() {
        let body = br#"{"error":{"code":"unprocessable","field":"path","message":"path /x does not exist; give an existing file"}}"#;
        let e = api_error(422, body, "POST", "/api/v1/shares");
        assert_eq!(
            e.to_string(),
            "path /x does not exist; give an existing file"
        );
        let e = api_error(502, b"<html>bad gateway</html>", "GET", "/api/v1/status");
        assert_eq!(
            e.to_string(),
            "the shoal daemon answered GET /api/v1/status with HTTP 502: <html>bad gateway</html>"
        );
    }

    #[test]
    fn missing_or_garbled_daemon_file_means_no_daemon() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(read_local(dir.path()), Local::None));
        std::fs::write(dir.path().join("daemon.json"), "{not json").expect("write");
        assert!(matches!(read_local(dir.path()), Local::None));
    }

    #[test]
    fn daemon_file_with_a_dead_pid_is_stale() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        std::fs::write(
            dir.path().join("daemon.json"),
            format!(r#"{{"pid": {pid}, "api": "127.0.0.1:9", "version": "0.1.0"}}"#),
        )
        .expect("write");
        assert!(matches!(read_local(dir.path()), Local::None));
    }

    #[test]
    fn daemon_file_with_a_live_pid_is_alive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid = std::process::id();
        std::fs::write(
            dir.path().join("daemon.json"),
            format!(r#"{{"pid": {pid}, "api": "127.0.0.1:9", "version": "0.1.0"}}"#),
        )
        .expect("write");
        match read_local(dir.path()) {
            Local::Alive(f) => {
                assert_eq!(f.pid, pid);
                assert_eq!(f.api, "127.0.0.1:9");
            }
            Local::None => panic!("our own pid is alive"),
        }
    }

    /// Discovery in a data dir whose daemon record names this (live) process
    /// and `api`, bounded by 10 s on top of discovery's own timeout.
    fn discover_recorded(api: &str) -> Result<Option<Daemon>> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("daemon.json"),
            format!(r#"{{"pid": {}, "api": "{api}"}}"#, std::process::id()),
        )
        .expect("write");
        std::fs::write(dir.path().join("api.token"), "00ff\n").expect("write");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), Daemon::discover(dir.path())).await
        })
        .expect("discovery is bounded by its own timeout")
    }

    #[test]
    fn live_pid_with_nothing_listening_is_no_daemon() {
        // A port nobody listens on: bind, note it, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind")
            .port();
        let found = discover_recorded(&format!("127.0.0.1:{port}"));
        assert!(found.expect("no error").is_none());
    }

    #[test]
    fn live_daemon_that_never_answers_is_a_clear_error() {
        // Accepts connections (the kernel does) but never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let found = discover_recorded(&addr.to_string());
        let err = found.expect_err("a silent daemon is an error").to_string();
        assert!(
            err.contains(&format!(
                "(pid {}) is not answering at {addr}: no answer within 2 s",
                std::process::id()
            )),
            "{err}"
        );
        assert!(err.contains("--no-daemon"), "{err}");
        drop(listener);
    }

    #[test]
    fn transfer_result_path_and_path_label() {
        let mut t = Transfer {
            id: "ab".into(),
            output: "/tmp/out".into(),
            ..Transfer::default()
        };
        assert_eq!(t.result_path(), PathBuf::from("/tmp/out/ab"));
        t.name = Some("file.bin".into());
        assert_eq!(t.result_path(), PathBuf::from("/tmp/out/file.bin"));
        assert_eq!(t.path_label(), "direct");
        t.peers = vec![TransferPeer {
            path: "relayed".into(),
            connected: true,
            ..TransferPeer::default()
        }];
        assert_eq!(t.path_label(), "relayed");
        assert_eq!(t.connected_peers(), 1);
    }
}
