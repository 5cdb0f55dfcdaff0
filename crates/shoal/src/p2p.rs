//! The commands that start a node: `share`, `get`, `demo`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;
use shoal_core::ticket::Target;
use shoal_core::{ContentId, Kind};
use shoal_net::{NetConfig, PeerId};
use shoal_node::host::{path_label, GetRequest, Host, HostConfig, NetConnector};
use shoal_node::{Connector, DownloadHandle, Limits, NodeConfig, Progress};
use shoal_store::Visibility;

use crate::cli::{DemoArgs, GetArgs, Global, NodeArgs, ShareArgs};
use crate::output::{display_path, human_size};

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn peer_config(args: &NodeArgs, node: NodeConfig) -> Result<HostConfig> {
    let net = args
        .net
        .clone()
        .into_config()
        .context("invalid network options")?;
    Ok(HostConfig {
        net,
        node,
        limits: Limits {
            upload: args.upload_limit,
            download: args.download_limit,
        },
    })
}

/// Resolves when Ctrl-C or SIGTERM arrives.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Waits for `d` (forever if `None`) or a shutdown signal.
async fn serve_until(d: Option<Duration>) {
    match d {
        Some(d) => {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = shutdown_signal() => {}
            }
        }
        None => shutdown_signal().await,
    }
}

// ---------------------------------------------------------------- share

pub fn share(global: &Global, args: ShareArgs) -> Result<()> {
    let dir = crate::commands::data_dir(global)?;
    let cfg = peer_config(&args.node, NodeConfig::default())?;
    let allow = args
        .allow
        .iter()
        .map(|p| {
            p.trim().parse::<PeerId>().map_err(|_| {
                anyhow!("--allow {p:?} is not a peer id: give the 12D3KooW… id that `shoal status` prints on the other machine")
            })
        })
        .collect::<Result<Vec<_>>>()?;
    runtime()?.block_on(async move {
        let peer = Host::start(&dir, cfg)
            .await
            .with_context(|| format!("cannot start the node with data dir {}", dir.display()))?;
        let mut lines = Vec::new();
        let mut served = Vec::new();
        for path in &args.paths {
            let shown = display_path(path);
            // Sharing again without a flag keeps what was chosen before.
            let asked = if args.public {
                Some(Visibility::Public)
            } else if args.private {
                Some(Visibility::Private)
            } else {
                None
            };
            let bar = crate::commands::indexing_bar(path, &shown);
            let added = peer.share(path, None, asked, &allow, &|n| bar.inc(n));
            bar.finish_and_clear();
            let added = added.with_context(|| format!("cannot share {shown}"))?;
            for skipped in &added.skipped {
                eprintln!("warning: {skipped}");
            }
            let s = &added.share;
            served.push(s.clone());
            let visibility = s.visibility;
            let ticket = peer.ticket(s);
            if args.json {
                let addrs: Vec<String> = peer
                    .net()
                    .ticket_addrs()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                lines.push(serde_json::to_string(&json!({
                    "ticket": ticket.to_string(),
                    "id": s.id,
                    "kind": s.kind.to_string(),
                    "name": s.name,
                    "size": s.size,
                    "peer": peer.peer_id().to_string(),
                    "addrs": addrs,
                    "public": visibility == Visibility::Public,
                    "visibility": visibility,
                }))?);
            } else {
                lines.push(ticket.to_string());
            }
            eprintln!(
                "sharing {} '{}' ({}, id {}){}{}",
                s.kind,
                s.name,
                human_size(s.size),
                s.id,
                crate::remote::visibility_note(visibility.as_str()),
                match added.reused_bytes {
                    0 => String::new(),
                    n if n == s.size => "; unchanged since it was last indexed".to_string(),
                    n => format!("; {} unchanged since it was last indexed", human_size(n)),
                }
            );
            if !args.json && std::io::stderr().is_terminal() {
                eprintln!("{}", crate::remote::other_side_hint(&ticket.to_string()));
            }
        }
        {
            let mut out = std::io::stdout().lock();
            for l in &lines {
                writeln!(out, "{l}").context("cannot write to stdout")?;
            }
            out.flush().context("cannot write to stdout")?;
        }
        eprintln!(
            "serving as peer {} on {}; press Ctrl-C to stop",
            peer.peer_id(),
            peer.net()
                .listen_addrs()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        );
        let status = ShareStatus::new(args.json);
        tokio::select! {
            _ = serve_until(args.serve_for) => {}
            _ = status.run(&peer, &served) => {}
        }
        status.finish(&peer, &served);
        eprintln!("stopping");
        peer.shutdown().await;
        Ok(())
    })
}

/// What `shoal share` says while it serves: on a terminal a status line
/// redrawn every second (peers served, upload rate, total sent); with
/// `--json` an `uploads` event line on stderr each second something changed;
/// otherwise a plain line every 5 s while something changes.
struct ShareStatus {
    json: bool,
    line: Option<ProgressBar>,
    /// Every peer served during this run.
    seen: std::sync::Mutex<std::collections::HashSet<PeerId>>,
}

/// The figures of one moment, summed over the shares of this run.
struct Served {
    uploaded: u64,
    up_rate: f64,
    peers: Vec<shoal_node::ServedPeer>,
    /// (share id, peers of it), for `--json`.
    by_share: Vec<(ContentId, u64, f64, usize)>,
}

impl ShareStatus {
    fn new(json: bool) -> Self {
        let line = (!json && std::io::stderr().is_terminal()).then(|| {
            let pb = ProgressBar::new_spinner();
            pb.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.set_message("waiting for peers");
            pb
        });
        Self {
            json,
            line,
            seen: std::sync::Mutex::new(std::collections::HashSet::new()),
        }
    }

    fn take(&self, peer: &Host, shares: &[shoal_store::Share]) -> Served {
        let mut out = Served {
            uploaded: 0,
            up_rate: 0.0,
            peers: Vec::new(),
            by_share: Vec::new(),
        };
        for s in shares {
            let u = peer.share_uploads(s);
            out.uploaded += u.uploaded;
            out.up_rate += u.up_rate;
            out.by_share
                .push((s.id, u.uploaded, u.up_rate, u.peers.len()));
            for p in u.peers {
                match out.peers.iter_mut().find(|q| q.peer == p.peer) {
                    Some(q) => {
                        q.uploaded += p.uploaded;
                        q.up_rate += p.up_rate;
                    }
                    None => out.peers.push(p),
                }
            }
        }
        if let Ok(mut seen) = self.seen.lock() {
            seen.extend(out.peers.iter().map(|p| p.peer));
        }
        out
    }

    fn text(s: &Served) -> String {
        let n = s.peers.len();
        format!(
            "serving {n} peer{} · ↑ {}/s · {} sent",
            if n == 1 { "" } else { "s" },
            human_size(s.up_rate as u64),
            human_size(s.uploaded)
        )
    }

    /// Reports every second; never returns (the caller stops it).
    async fn run(&self, peer: &Host, shares: &[shoal_store::Share]) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last: Option<(u64, u64, usize)> = None;
        let mut last_plain = Instant::now();
        loop {
            tick.tick().await;
            let s = self.take(peer, shares);
            let key = (s.uploaded, s.up_rate as u64, s.peers.len());
            let changed = last != Some(key);
            last = Some(key);
            if let Some(pb) = &self.line {
                pb.set_message(Self::text(&s));
                pb.tick();
            } else if self.json {
                if changed {
                    let peers: Vec<serde_json::Value> = s
                        .peers
                        .iter()
                        .map(|p| {
                            json!({
                                "peer": p.peer.to_string(),
                                "address": p.remote.as_ref().map(|r| r.addr.clone()),
                                "path": p.remote.as_ref().map(|r| r.path.clone()),
                                "uploaded": p.uploaded,
                                "up_rate": p.up_rate,
                                "progress": p.progress,
                            })
                        })
                        .collect();
                    let shares: Vec<serde_json::Value> = s
                        .by_share
                        .iter()
                        .map(|(id, up, rate, n)| {
                            json!({"id": id, "uploaded": up, "up_rate": rate, "peers": n})
                        })
                        .collect();
                    eprintln!(
                        "{}",
                        json!({
                            "event": "uploads",
                            "uploaded": s.uploaded,
                            "up_rate": s.up_rate,
                            "peers": peers,
                            "shares": shares,
                        })
                    );
                }
            } else if changed && last_plain.elapsed() >= Duration::from_secs(5) {
                last_plain = Instant::now();
                eprintln!("{}", Self::text(&s));
            }
        }
    }

    /// The last word: what was sent, to how many peers.
    fn finish(&self, peer: &Host, shares: &[shoal_store::Share]) {
        let s = self.take(peer, shares);
        if let Some(pb) = &self.line {
            pb.finish_and_clear();
        }
        let n = self.seen.lock().map(|s| s.len()).unwrap_or(0);
        if self.json {
            eprintln!(
                "{}",
                json!({"event": "served", "uploaded": s.uploaded, "peers_served": n})
            );
        } else {
            eprintln!(
                "sent {} to {n} peer{} this run",
                human_size(s.uploaded),
                if n == 1 { "" } else { "s" }
            );
        }
    }
}

// ---------------------------------------------------------------- get

/// What went wrong with peers during a download, as a clause to add to a
/// message ("; 3 pieces failed verification; banned for sending corrupt data:
/// 12D3…"), or "" if nothing did.
fn trouble(p: &Progress) -> String {
    let banned: Vec<String> = p
        .peers
        .iter()
        .filter(|pp| pp.banned)
        .map(|pp| pp.peer.to_string())
        .collect();
    trouble_text(p.pieces_failed, &banned)
}

/// See [`trouble`].
pub(crate) fn trouble_text(pieces_failed: u64, banned: &[String]) -> String {
    let mut out = String::new();
    if pieces_failed > 0 {
        out.push_str(&format!(
            "; {} piece{} failed verification (discarded, fetched again)",
            pieces_failed,
            if pieces_failed == 1 { "" } else { "s" }
        ));
    }
    if !banned.is_empty() {
        out.push_str(&format!(
            "; banned for sending corrupt data: {}",
            banned.join(", ")
        ));
    }
    out
}

/// Counters of one finished download, for the summary.
struct Summary {
    path: PathBuf,
    total: u64,
    secs: f64,
    /// Verified bytes already present when the download started (resume).
    resumed: u64,
    last: Progress,
}

impl Summary {
    fn downloaded(&self) -> u64 {
        self.last.peers.iter().map(|p| p.downloaded).sum()
    }
}

pub fn get(global: &Global, args: GetArgs) -> Result<()> {
    let target: Target = args.target.parse().map_err(|e: String| anyhow!(e))?;
    if let Some(n) = &args.name {
        // Checked again by Host::get; here before a node starts.
        if !shoal_core::manifest::is_plain_name(n) {
            bail!("--name {n:?} is not a plain file name; give a name without slashes, or leave it out");
        }
    }
    let dir = crate::commands::data_dir(global)?;
    let mut node_cfg = NodeConfig::default();
    if args.sequential {
        node_cfg.swarm.picker = shoal_swarm::PickerMode::Sequential;
    }
    let cfg = peer_config(&args.node, node_cfg)?;
    runtime()?.block_on(async move {
        let peer = Host::start(&dir, cfg)
            .await
            .with_context(|| format!("cannot start the node with data dir {}", dir.display()))?;
        let id = target.id;
        if target.providers.is_empty() {
            eprintln!("looking up providers of {id} on the DHT");
        }
        let req = GetRequest {
            target,
            output: args.out.clone(),
            name: args.name.clone(),
            kind: args.collection.then_some(Kind::Collection),
            // The node-wide limit is set already (one download either way).
            download_limit: None,
            announce: args.announce,
            only: args.only.clone(),
            exclude: args.exclude.clone(),
        };
        let got = match peer.get(&req, Some(args.find_timeout)).await {
            Ok(d) => d,
            Err(e) => {
                peer.shutdown().await;
                return Err(e.into());
            }
        };
        let (kind, handle, conn) = (got.kind, got.handle, got.connector);
        let started = Instant::now();
        let res = watch_download(handle, &conn, args.json, started, args.stall_timeout).await;
        let (summary, handle) = match res {
            Ok(x) => x,
            Err(e) => {
                peer.shutdown().await;
                return Err(e);
            }
        };
        print_summary(&peer, &conn, id, kind, &summary, args.json)?;
        if args.seed_for.is_some() || args.seed_ratio.is_some() {
            seed_after(
                &handle,
                summary.total,
                args.seed_for,
                args.seed_ratio,
                args.json,
            )
            .await;
        }
        drop(handle);
        drop(conn);
        peer.shutdown().await;
        Ok(())
    })
}

/// `shoal ls` in the foreground: a node fetches only the folder's manifest
/// from the ticket's providers (or the DHT's) and lists it.
pub fn ls(global: &Global, args: crate::cli::LsArgs) -> Result<()> {
    let target: Target = args.target.trim().parse().map_err(|e: String| anyhow!(e))?;
    let dir = crate::commands::data_dir(global)?;
    let cfg = peer_config(&args.node, NodeConfig::default())?;
    runtime()?.block_on(async move {
        let peer = Host::start(&dir, cfg)
            .await
            .with_context(|| format!("cannot start the node with data dir {}", dir.display()))?;
        let res = peer.list_folder(&target, args.timeout).await;
        peer.shutdown().await;
        let manifest = res?;
        let list = crate::commands::FileListing {
            known: true,
            total_files: manifest.len() as u64,
            total_bytes: manifest.total_size(),
            files: manifest
                .entries()
                .iter()
                .map(|e| crate::commands::FileRow {
                    path: e.path.clone(),
                    size: e.size,
                    id: e.id.to_hex(),
                    done_bytes: 0,
                    chosen: None,
                    priority: None,
                })
                .collect(),
            empty_folders: manifest
                .empty_folders()
                .take(shoal_node::transfers::MAX_LISTED_EMPTY_FOLDERS)
                .map(str::to_owned)
                .collect(),
            total_empty_folders: manifest.empty_folder_count() as u64,
        };
        crate::commands::print_ls(&list, args.json)
    })
}

/// Serves a completed download until `time` passes, it has sent `ratio`
/// times its `size`, or Ctrl-C, whichever comes first; says which.
async fn seed_after(
    handle: &DownloadHandle,
    size: u64,
    time: Option<Duration>,
    ratio: Option<f64>,
    json: bool,
) {
    let mut what = Vec::new();
    if let Some(d) = time {
        what.push(format!("for {} s", d.as_secs()));
    }
    if let Some(r) = ratio {
        what.push(format!("until it has sent {r} times its size"));
    }
    eprintln!("seeding {}; Ctrl-C to stop", what.join(" or "));
    // A receiver held open, so the node keeps publishing progress to it.
    let rx = handle.progress();
    let sent = || -> u64 { rx.borrow().peers.iter().map(|p| p.uploaded).sum() };
    let reached = async {
        let Some(r) = ratio else {
            return std::future::pending::<()>().await;
        };
        let goal = (r * size as f64).ceil() as u64;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            if sent() >= goal {
                return;
            }
        }
    };
    let why = tokio::select! {
        _ = serve_until(time) => "time is up or stopped",
        _ = reached => "ratio reached",
    };
    let sent = sent();
    let r = if size > 0 {
        sent as f64 / size as f64
    } else {
        0.0
    };
    if json {
        eprintln!(
            "{}",
            json!({"event": "seeded", "uploaded": sent, "ratio": r, "why": why})
        );
    } else {
        eprintln!(
            "stopped seeding ({why}): sent {} (ratio {r:.2})",
            human_size(sent)
        );
    }
}

/// The bar of a download: its rate and ETA (in the prefix) come from the
/// node's accounting of verified bytes, the same numbers the daemon's API, the
/// web UI and `/metrics` show, not from the bar's own estimate (which would
/// count resumed bytes as if they had just arrived).
fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {prefix}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// The download rate (verified bytes per second over the node's last rate
/// window, summed over peers) and the seconds left at that rate.
fn rate_and_eta(p: &Progress) -> (f64, Option<f64>) {
    (p.down_rate(), p.eta_s())
}

/// What a download does while no peer answers (see [`Progress::searching`]).
fn searching(p: &Progress) -> Option<String> {
    p.searching()
}

/// Shows progress until the download ends; returns its summary and the handle
/// (which keeps the content served while it lives).
async fn watch_download(
    mut handle: DownloadHandle,
    conn: &Arc<NetConnector>,
    json: bool,
    started: Instant,
    stall: Duration,
) -> Result<(Summary, DownloadHandle)> {
    let mut rx = handle.progress();
    let bar = ProgressBar::new(0);
    bar.set_style(bar_style());
    if json || !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut resumed: Option<u64> = None;
    let mut last_line = Instant::now() - Duration::from_secs(1);
    let mut last_done = 0u64;
    let mut last_gain = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Off a terminal (plain or --json), what the search does is said every
    // few seconds, and at once when it changes.
    let plain = json || !std::io::stderr().is_terminal();
    let mut said: Option<(String, Instant)> = None;
    let result = {
        let fut = handle.result();
        tokio::pin!(fut);
        loop {
            tokio::select! {
                r = &mut fut => break r,
                _ = tick.tick() => {
                    let p = rx.borrow().clone();
                    if let Some(what) = searching(&p) {
                        if !plain {
                            bar.set_message(what);
                        } else if said.as_ref().is_none_or(|(s, at)| *s != what || at.elapsed() >= Duration::from_secs(5)) {
                            if json {
                                eprintln!("{}", json!({
                                    "event": "searching",
                                    "known_peers": p.known_peers,
                                    "dials": p.dials,
                                    "last_dial_error": p.last_dial_error,
                                }));
                            } else {
                                eprintln!("{what}");
                            }
                            said = Some((what, Instant::now()));
                        }
                    }
                    if p.done_bytes > last_done || p.complete {
                        last_done = p.done_bytes;
                        last_gain = Instant::now();
                    } else if last_gain.elapsed() >= stall {
                        bar.finish_and_clear();
                        bail!(
                            "the download of {} made no progress for {} s ({} of {} bytes, {} peers connected, {} known{}); \
                             the providers may be unreachable or may have changed or removed the content; \
                             run the same command again later to resume",
                            p.id,
                            stall.as_secs(),
                            p.done_bytes,
                            p.total_bytes.map_or("?".to_string(), |t| t.to_string()),
                            p.connected_peers,
                            conn.peers().len(),
                            trouble(&p),
                        );
                    }
                }
                ch = rx.changed() => {
                    if ch.is_err() {
                        break (&mut fut).await;
                    }
                    let p = rx.borrow_and_update().clone();
                    if resumed.is_none() && p.num_pieces > 0 {
                        resumed = Some(p.done_bytes);
                    }
                    if let Some(t) = p.total_bytes {
                        bar.set_length(t);
                    }
                    bar.set_position(p.done_bytes);
                    let (rate, eta) = rate_and_eta(&p);
                    bar.set_prefix(format!("{}/s eta {}", human_size(rate as u64), crate::remote::eta(eta)));
                    bar.set_message(format!("{} peers, {}", p.connected_peers, path_label(conn, &p)));
                    if json && last_line.elapsed() >= Duration::from_millis(200) {
                        last_line = Instant::now();
                        eprintln!("{}", json!({
                            "event": "progress",
                            "done": p.done_bytes,
                            "total": p.total_bytes,
                            "pieces_done": p.pieces_done,
                            "num_pieces": p.num_pieces,
                            "peers": p.connected_peers,
                            "pieces_failed": p.pieces_failed,
                            "down_rate": rate.round() as u64,
                            "eta_s": eta.map(|e| e.round() as u64),
                        }));
                    }
                }
            }
        }
    };
    bar.finish_and_clear();
    let last = rx.borrow().clone();
    let path =
        result.with_context(|| format!("download of {} failed{}", last.id, trouble(&last)))?;
    if !last.complete && last.failed.is_some() {
        bail!(
            "download of {} failed: {}",
            last.id,
            last.failed.clone().unwrap_or_default()
        );
    }
    Ok((
        Summary {
            path,
            total: last.total_bytes.unwrap_or(last.done_bytes),
            secs: started.elapsed().as_secs_f64(),
            resumed: resumed.unwrap_or(0),
            last,
        },
        handle,
    ))
}

fn print_summary(
    peer: &Host,
    conn: &NetConnector,
    id: ContentId,
    kind: Kind,
    s: &Summary,
    json: bool,
) -> Result<()> {
    let paths = conn.paths();
    if json {
        let peers: Vec<_> = s
            .last
            .peers
            .iter()
            .map(|p| {
                json!({
                    "peer": p.peer.to_string(),
                    "downloaded": p.downloaded,
                    "uploaded": p.uploaded,
                    "path": paths.get(&p.peer).map(ToString::to_string),
                    "banned": p.banned,
                })
            })
            .collect();
        let piece = if s.last.num_pieces > 0 {
            s.total.div_ceil(u64::from(s.last.num_pieces))
        } else {
            0
        };
        let needed = s.total.saturating_sub(s.resumed);
        let extra = s.downloaded().saturating_sub(needed);
        println!(
            "{}",
            json!({
                "id": id,
                "kind": kind.to_string(),
                "path": s.path.display().to_string(),
                "bytes": s.total,
                "seconds": s.secs,
                "resumed_bytes": s.resumed,
                "downloaded_bytes": s.downloaded(),
                "refetched_bytes": extra,
                "refetched_pieces": extra.checked_div(piece).unwrap_or(0) + u64::from(piece > 0 && !extra.is_multiple_of(piece.max(1))),
                "num_pieces": s.last.num_pieces,
                "pieces_failed": s.last.pieces_failed,
                "banned_peers": s.last.peers.iter().filter(|p| p.banned).map(|p| p.peer.to_string()).collect::<Vec<_>>(),
                "peer": peer.peer_id().to_string(),
                // Where this node serves it (with --seed-for/--seed-ratio).
                "addrs": peer.net().ticket_addrs().iter().map(ToString::to_string).collect::<Vec<_>>(),
                "peers": peers,
            })
        );
    } else {
        let rate = s.total as f64 / s.secs.max(1e-6);
        eprintln!(
            "verified {} ({}) in {:.1} s ({}/s) from {} peer{}",
            display_path(&s.path),
            human_size(s.total),
            s.secs,
            human_size(rate as u64),
            s.last.peers.len(),
            if s.last.peers.len() == 1 { "" } else { "s" }
        );
        let trouble = trouble(&s.last);
        if let Some(t) = trouble.strip_prefix("; ") {
            eprintln!("note: {t}");
        }
        println!("{}", s.path.display());
    }
    Ok(())
}

// ---------------------------------------------------------------- demo

fn demo_net(base: &NetConfig) -> NetConfig {
    NetConfig {
        listen: shoal_net::config::socket_to_multiaddrs(([127, 0, 0, 1], 0).into()),
        fast_listen: vec![([127, 0, 0, 1], 0).into()],
        mdns: false,
        upnp: false,
        dht_mode: shoal_net::DhtMode::Server,
        bootstrap: Vec::new(),
        ..base.clone()
    }
}

fn random_file(path: &Path, size: u64) -> Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
    );
    // A fast, non-compressible stream: BLAKE3 in XOF mode.
    let mut xof = blake3::Hasher::new()
        .update(&size.to_le_bytes())
        .update(&std::process::id().to_le_bytes())
        .finalize_xof();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        xof.fill(&mut buf[..n]);
        f.write_all(&buf[..n])
            .with_context(|| format!("cannot write {}", path.display()))?;
        left -= n as u64;
    }
    f.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub fn demo(args: DemoArgs) -> Result<()> {
    runtime()?.block_on(demo_async(args))
}

async fn demo_async(args: DemoArgs) -> Result<()> {
    let base = args
        .net
        .clone()
        .into_config()
        .context("invalid network options")?;
    let tmp = tempfile::tempdir().context("cannot create a temporary folder for the demo")?;
    let n = args.peers as usize;
    let f = args.size;
    let limit = (args.rate > 0).then_some(args.rate);
    eprintln!(
        "shoal demo: 1 seeder and {n} downloaders on 127.0.0.1, a {} file{}",
        human_size(f),
        match limit {
            Some(r) => format!(", every node uploads at most {}/s", human_size(r)),
            None => String::new(),
        }
    );
    let src = tmp.path().join("demo.bin");
    random_file(&src, f)?;
    let cfg = |net: NetConfig| HostConfig {
        net,
        node: NodeConfig::default(),
        limits: Limits {
            upload: limit,
            download: None,
        },
    };
    let seeder = Host::start(&tmp.path().join("seeder"), cfg(demo_net(&base)))
        .await
        .context("cannot start the seeder")?;
    let share = seeder
        .store()
        .add(&src, Some("demo.bin"), &|_| {})
        .context("cannot index the demo file")?;
    seeder.make_public(share.id)?;
    let ticket = seeder.ticket(&share);
    let boot: Vec<(PeerId, shoal_net::Multiaddr)> = seeder
        .net()
        .listen_addrs()
        .into_iter()
        .filter(|a| !a.to_string().ends_with("/tls"))
        .map(|a| (seeder.peer_id(), a))
        .collect();
    let mut peers = Vec::new();
    for i in 0..n {
        let mut net = demo_net(&base);
        net.bootstrap = boot.clone();
        let p = Host::start(&tmp.path().join(format!("peer{i}")), cfg(net))
            .await
            .with_context(|| format!("cannot start downloader {i}"))?;
        peers.push(p);
    }
    eprintln!(
        "content {} ({}), seeder {}",
        share.id,
        share.kind,
        seeder.peer_id()
    );
    let mp = MultiProgress::new();
    if !std::io::stderr().is_terminal() {
        mp.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    let seeder_id = seeder.peer_id();
    for (i, p) in peers.iter().enumerate() {
        let out = tmp.path().join(format!("out{i}"));
        std::fs::create_dir_all(&out)?;
        p.announce(share.id);
        let conn = p.connector(share.id, &ticket.providers);
        let mut h = p
            .node()
            .download(share.id, share.kind, &out, None, conn.clone());
        let bar = mp.add(ProgressBar::new(f));
        bar.set_style(bar_style());
        bar.set_message(format!("peer {i}"));
        let mut rx = h.progress();
        tasks.push(tokio::spawn(async move {
            let res = {
                let fut = h.result();
                tokio::pin!(fut);
                loop {
                    tokio::select! {
                        r = &mut fut => break r,
                        ch = rx.changed() => {
                            if ch.is_err() { break (&mut fut).await; }
                            let p = rx.borrow_and_update().clone();
                            bar.set_position(p.done_bytes);
                            bar.set_message(format!("peer {i} ({} peers)", p.connected_peers));
                        }
                    }
                }
            };
            let secs = started.elapsed().as_secs_f64();
            bar.finish();
            let last = rx.borrow().clone();
            // Keep the handle and connector alive (seeding) until the demo ends.
            (res, secs, last, h, conn)
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.map_err(|e| anyhow!("a demo task failed: {e}"))?);
    }
    let total_secs = started.elapsed().as_secs_f64();
    mp.clear().ok();
    let mut from_seeder = 0u64;
    let mut from_peers = 0u64;
    let mut rows = Vec::new();
    let mut ok = true;
    for (i, (res, secs, last, _, _)) in results.iter().enumerate() {
        let verified = match res {
            Ok(path) => match shoal_store::hash_file(path, &|_| {}) {
                Ok(ob) => ob.root() == share.id,
                Err(_) => false,
            },
            Err(_) => false,
        };
        ok &= verified;
        let mut s = 0;
        let mut o = 0;
        for pp in &last.peers {
            if pp.peer == seeder_id {
                s += pp.downloaded;
            } else {
                o += pp.downloaded;
            }
        }
        from_seeder += s;
        from_peers += o;
        rows.push(json!({
            "peer": i,
            "seconds": secs,
            "verified": verified,
            "from_seeder": s,
            "from_peers": o,
            "error": res.as_ref().err().map(ToString::to_string),
        }));
        eprintln!(
            "peer {i}: {} in {secs:.2} s, {} from the seeder, {} from other downloaders",
            if verified { "verified" } else { "FAILED" },
            human_size(s),
            human_size(o),
        );
    }
    let nf = n as f64 * f as f64;
    let (bound, bound_text) = match limit {
        Some(u) => {
            // Every node's upload limiter may pass one burst B at once after
            // an idle time (all of them are idle when the downloads start):
            // the seeder sends F in no less than (F - B)/u, and the N + 1
            // uploaders together N*F in no less than (N*F - (N+1)*B)/((N+1)*u).
            let burst = shoal_node::burst_bytes(u) as f64;
            let u = u as f64;
            let uploaders = n as f64 + 1.0;
            let b = ((f as f64 - burst) / u)
                .max((nf - uploaders * burst) / (uploaders * u))
                .max(0.0);
            (
                Some(b),
                format!(
                    "lower bound max((F-B)/u_s, (N*F-(N+1)*B)/(u_s+sum u)) = {b:.2} s, B = {} of saved-up burst per node; one server alone would need N*F/u_s = {:.2} s",
                    human_size(burst as u64),
                    nf / u
                ),
            )
        }
        None => (
            None,
            "no upload limit: loopback has no link bound to compare with (pass --demo-upload-limit)"
                .to_string(),
        ),
    };
    if args.json {
        println!(
            "{}",
            json!({
                "id": share.id,
                "size": f,
                "peers": n,
                "seconds": total_secs,
                "bound_seconds": bound,
                "from_seeder": from_seeder,
                "from_peers": from_peers,
                "all_verified": ok,
                "downloaders": rows,
            })
        );
    }
    eprintln!(
        "all {n} downloaders {} in {total_secs:.2} s; {} ({:.0}% of the bytes) came from other downloaders",
        if ok { "verified" } else { "did NOT all verify" },
        human_size(from_peers),
        100.0 * from_peers as f64 / (from_seeder + from_peers).max(1) as f64
    );
    eprintln!("{bound_text}");
    if let Some(b) = bound {
        eprintln!("time / bound = {:.2}", total_secs / b);
    }
    drop(results);
    for p in peers {
        p.shutdown().await;
    }
    seeder.shutdown().await;
    if !ok {
        bail!("the demo failed: not every downloader got a verified copy");
    }
    Ok(())
}
