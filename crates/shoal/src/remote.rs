//! Commands run through the daemon that serves the data dir (docs/api.md):
//! `share`, `get`, `shares`, `rm` when a daemon runs, and `transfers`,
//! `peers`, `pause`, `resume`, `cancel`, `status`, `ui`, which need one.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::cli::{GetArgs, Global, ShareArgs};
use crate::client::{
    ApiPeer, ApiShare, Daemon, SseParser, Transfer, REQUEST_TIMEOUT, SHARE_TIMEOUT,
};
use crate::output::{human_size, table};

/// Returned by `get` when Ctrl-C detached it from a transfer that goes on in
/// the daemon; `main` exits with 130 as shells expect after SIGINT.
#[derive(Debug)]
pub struct Detached;

impl std::fmt::Display for Detached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted; the transfer goes on in the daemon")
    }
}

impl std::error::Error for Detached {}

/// A daemon found for the data dir, with the runtime its requests run on.
pub struct Remote {
    rt: tokio::runtime::Runtime,
    daemon: Daemon,
}

fn client_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

impl Remote {
    /// The daemon serving the data dir, or `None` when none runs or
    /// `--no-daemon` / `SHOAL_NO_DAEMON` asks for the foreground.
    pub fn find(global: &Global) -> Result<Option<Remote>> {
        if global.no_daemon {
            return Ok(None);
        }
        let dir = crate::commands::data_dir(global)?;
        let rt = client_runtime()?;
        let found = rt.block_on(Daemon::discover(&dir))?;
        Ok(found.map(|daemon| Remote { rt, daemon }))
    }

    /// Like [`Remote::find`], for the commands that only work through a daemon.
    pub fn require(global: &Global, command: &str) -> Result<Remote> {
        let dir = crate::commands::data_dir(global)?;
        if global.no_daemon {
            bail!("`shoal {command}` works through the shoal daemon, and --no-daemon (or SHOAL_NO_DAEMON) says not to use it; drop it and start one with `shoal daemon`");
        }
        Self::find(global)?.ok_or_else(|| {
            anyhow!(
                "no shoal daemon runs for {}; start one with `shoal daemon`",
                dir.display()
            )
        })
    }

    fn pid(&self) -> u32 {
        self.daemon.file.pid
    }

    /// Refuses the options of `shoal COMMAND` that only a node started for
    /// this command can honour (network flags, node-wide limits, how long to
    /// serve): the daemon's node runs with its own settings. Those set through
    /// `SHOAL_*` variables are named in a note instead, since they are meant
    /// for every command.
    fn foreground_only(&self, command: &str, allowed: &[&str]) -> Result<()> {
        let g = crate::cli::given();
        let not_allowed = |f: &&String| !allowed.contains(&f.as_str());
        let given: Vec<&str> = g
            .command_line
            .iter()
            .filter(not_allowed)
            .map(String::as_str)
            .collect();
        if !given.is_empty() {
            bail!(
                "{} cannot apply through the shoal daemon (pid {}), whose node already runs with its own settings; pass --no-daemon to run `shoal {command}` in the foreground with them, or change the daemon's settings (its web UI, `shoal daemon --help`)",
                given.join(", "),
                self.pid()
            );
        }
        let env: Vec<&str> = g
            .environment
            .iter()
            .filter(not_allowed)
            .map(String::as_str)
            .collect();
        if !env.is_empty() {
            eprintln!(
                "note: {} (set through SHOAL_* environment variables) do not apply to the shoal daemon's node (pid {}); it uses its own settings",
                env.join(", "),
                self.pid()
            );
        }
        Ok(())
    }

    /// `GET path` of the daemon's API.
    pub fn api_get(&self, path: &str) -> Result<Value> {
        self.rt.block_on(self.daemon.get(path))
    }

    /// Any request to the daemon's API.
    pub fn api_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        self.rt
            .block_on(self.daemon.call(method, path, body, REQUEST_TIMEOUT))
    }

    // ------------------------------------------------------------ shares

    /// `shoal share` through the daemon: adds each path as a share and prints
    /// its ticket (or JSON object) exactly as the foreground command does;
    /// the daemon serves them from then on.
    pub fn share(&self, args: &ShareArgs) -> Result<()> {
        self.foreground_only("share", &["--json", "--public", "--private", "--allow"])?;
        let status = &self.daemon.status;
        let mut lines = Vec::new();
        for path in &args.paths {
            let abs = absolute(path)?;
            let visibility = if args.public {
                "public"
            } else if args.private {
                "private"
            } else {
                "unlisted"
            };
            let body = json!({
                "path": abs.to_string_lossy(),
                "visibility": visibility,
                "allow": args.allow,
            });
            let value = self
                .rt
                .block_on(self.daemon.post("/api/v1/shares", &body, SHARE_TIMEOUT))
                .with_context(|| format!("cannot share {}", path.display()))?;
            let s: ApiShare = serde_json::from_value(value)
                .context("the shoal daemon's answer is not a share; is it the same version?")?;
            if args.json {
                lines.push(serde_json::to_string(&json!({
                    "ticket": s.ticket,
                    "id": s.id,
                    "kind": s.kind,
                    "name": s.name,
                    "size": s.size,
                    "peer": status.peer_id,
                    "addrs": status.ticket_addresses,
                    "public": s.public,
                    "visibility": s.visibility,
                }))?);
            } else {
                lines.push(s.ticket.clone());
            }
            eprintln!(
                "sharing {} '{}' ({}, id {}){}",
                s.kind,
                s.name,
                human_size(s.size),
                s.id,
                visibility_note(&s.visibility)
            );
            if !args.json && std::io::stderr().is_terminal() {
                eprintln!("{}", other_side_hint(&s.ticket));
            }
        }
        let mut out = std::io::stdout().lock();
        for l in &lines {
            writeln!(out, "{l}").context("cannot write to stdout")?;
        }
        out.flush().context("cannot write to stdout")?;
        eprintln!(
            "the shoal daemon (pid {}, peer {}) serves {}; `shoal shares` lists what it serves, `shoal rm ID` stops sharing",
            self.pid(),
            status.peer_id,
            if lines.len() == 1 { "it" } else { "them" }
        );
        Ok(())
    }

    /// `shoal shares` through the daemon.
    pub fn shares(&self, json_out: bool) -> Result<()> {
        let value = self.rt.block_on(self.daemon.get("/api/v1/shares"))?;
        if json_out {
            println!("{}", serde_json::to_string_pretty(&value)?);
            return Ok(());
        }
        let shares: Vec<ApiShare> = serde_json::from_value(value)
            .context("the shoal daemon's share list is not readable; is it the same version?")?;
        if shares.is_empty() {
            eprintln!("no shares yet; share something with `shoal share PATH`");
            return Ok(());
        }
        let rows: Vec<Vec<String>> = shares
            .iter()
            .map(|s| {
                vec![
                    s.id.clone(),
                    s.kind.clone(),
                    human_size(s.size),
                    s.files.to_string(),
                    s.visibility.clone(),
                    s.peers.len().to_string(),
                    rate(s.up_rate),
                    human_size(s.uploaded_bytes),
                    format!("{:.2}", s.ratio),
                    s.name.clone(),
                    s.path.clone(),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &[
                    "ID",
                    "KIND",
                    "SIZE",
                    "FILES",
                    "VISIBILITY",
                    "SERVING",
                    "UP",
                    "SENT",
                    "RATIO",
                    "NAME",
                    "PATH"
                ],
                &rows
            )
        );
        Ok(())
    }

    /// `shoal rm` through the daemon, so it stops serving at once.
    pub fn rm(&self, id: &str) -> Result<()> {
        let value = self.rt.block_on(self.daemon.get("/api/v1/shares"))?;
        let shares: Vec<ApiShare> = serde_json::from_value(value)
            .context("the shoal daemon's share list is not readable; is it the same version?")?;
        let ids: Vec<&str> = shares.iter().map(|s| s.id.as_str()).collect();
        let full = resolve_id(id, &ids, "share", "shoal shares")?;
        self.rt.block_on(self.daemon.call(
            reqwest::Method::DELETE,
            &format!("/api/v1/shares/{full}"),
            None,
            REQUEST_TIMEOUT,
        ))?;
        match shares.iter().find(|s| s.id == full) {
            Some(s) => eprintln!(
                "removed '{}' ({}) from the index; the daemon no longer serves it; the files at {} are untouched",
                s.name, s.id, s.path
            ),
            None => eprintln!("removed {full}"),
        }
        Ok(())
    }

    /// `shoal files ID` through the daemon: a folder it downloads (with the
    /// bytes of each file that are here), else a folder share.
    pub fn files(&self, id: &str, json_out: bool) -> Result<()> {
        let transfers = self.transfer_ids()?;
        let value = self.rt.block_on(self.daemon.get("/api/v1/shares"))?;
        let shares: Vec<ApiShare> = serde_json::from_value(value)
            .context("the shoal daemon's share list is not readable; is it the same version?")?;
        let mut ids: Vec<&str> = transfers.iter().map(String::as_str).collect();
        ids.extend(shares.iter().map(|s| s.id.as_str()));
        ids.sort_unstable();
        ids.dedup();
        let full = resolve_id(
            id,
            &ids,
            "share or transfer",
            "shoal shares` or `shoal transfers",
        )?;
        let base = if transfers.contains(&full) {
            format!("/api/v1/transfers/{full}/files")
        } else {
            format!("/api/v1/shares/{full}/files")
        };
        let mut list = self.file_pages(&format!("{base}?"), REQUEST_TIMEOUT)?;
        if !transfers.contains(&full) {
            // A share's files are all here: no choice, no priority (as
            // without the daemon).
            list.strip_choice();
        }
        crate::commands::print_files(&list, json_out)
    }

    /// Every page of a folder's file list from `GET {route}offset=N&limit=1000`
    /// (`route` ends in `?` or `&`), each request bounded by `timeout`.
    fn file_pages(&self, route: &str, timeout: Duration) -> Result<crate::commands::FileListing> {
        let mut list = crate::commands::FileListing::default();
        loop {
            let path = format!("{route}offset={}&limit=1000", list.files.len());
            let value =
                self.rt
                    .block_on(self.daemon.call(reqwest::Method::GET, &path, None, timeout))?;
            let page: crate::commands::FileListing = serde_json::from_value(value)
                .context("the shoal daemon's file list is not readable; is it the same version?")?;
            let more = !page.files.is_empty();
            list.known = page.known;
            list.total_files = page.total_files;
            list.total_bytes = page.total_bytes;
            if list.files.is_empty() {
                // The empty folders come with the first page.
                list.total_empty_folders = page.total_empty_folders;
                list.empty_folders = page.empty_folders;
            }
            list.files.extend(page.files);
            if !more || list.files.len() as u64 >= list.total_files {
                return Ok(list);
            }
        }
    }

    /// `shoal ls` through the daemon (`GET /api/v1/ls`, page by page).
    pub fn ls(&self, args: &crate::cli::LsArgs) -> Result<()> {
        self.foreground_only("ls", &["--json", "--timeout"])?;
        // Checked here for the same message as in the foreground; a valid
        // ticket or id is URL-safe as it is.
        let _: shoal_core::ticket::Target =
            args.target.trim().parse().map_err(|e: String| anyhow!(e))?;
        let route = format!(
            "/api/v1/ls?ticket={}&timeout_s={}&",
            args.target.trim(),
            args.timeout.as_secs()
        );
        let mut list = self.file_pages(&route, args.timeout + REQUEST_TIMEOUT)?;
        list.strip_choice();
        crate::commands::print_ls(&list, args.json)
    }

    // ------------------------------------------------------------ transfers

    /// `shoal transfers`.
    pub fn transfers(&self, json_out: bool) -> Result<()> {
        let value = self.rt.block_on(self.daemon.get("/api/v1/transfers"))?;
        if json_out {
            println!("{}", serde_json::to_string_pretty(&value)?);
            return Ok(());
        }
        let transfers: Vec<Transfer> = serde_json::from_value(value)
            .context("the shoal daemon's transfer list is not readable; is it the same version?")?;
        if transfers.is_empty() {
            eprintln!("no transfers; start one with `shoal get TICKET`");
            return Ok(());
        }
        let rows: Vec<Vec<String>> = transfers
            .iter()
            .map(|t| {
                vec![
                    short_id(&t.id),
                    t.state.clone(),
                    format!("{:.0}%", (t.progress * 100.0).clamp(0.0, 100.0)),
                    format!(
                        "{}/{}",
                        human_size(t.done_bytes),
                        t.total_bytes.map_or("?".to_owned(), human_size)
                    ),
                    rate(t.down_rate),
                    rate(t.up_rate),
                    t.connected_peers().to_string(),
                    eta(t.eta_s),
                    t.name.clone().unwrap_or_default(),
                    t.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &["ID", "STATE", "DONE", "BYTES", "DOWN", "UP", "PEERS", "ETA", "NAME", "ERROR"],
                &rows
            )
        );
        Ok(())
    }

    fn transfer_ids(&self) -> Result<Vec<String>> {
        let value = self.rt.block_on(self.daemon.get("/api/v1/transfers"))?;
        let transfers: Vec<Transfer> = serde_json::from_value(value)
            .context("the shoal daemon's transfer list is not readable; is it the same version?")?;
        Ok(transfers.into_iter().map(|t| t.id).collect())
    }

    /// `shoal pause|resume|cancel ID`.
    pub fn act(&self, action: &str, id: &str, json_out: bool) -> Result<()> {
        let full = self.full_transfer_id(id)?;
        self.act_on(action, &full, json_out)
    }

    /// The full id of the daemon's transfer that `id` (a unique prefix) names.
    fn full_transfer_id(&self, id: &str) -> Result<String> {
        let ids = self.transfer_ids()?;
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        resolve_id(id, &refs, "transfer", "shoal transfers")
    }

    /// `shoal cancel ID [--keep-data]`.
    pub fn cancel(&self, id: &str, keep_data: bool, json_out: bool) -> Result<()> {
        let full = self.full_transfer_id(id)?;
        self.rt.block_on(self.daemon.post(
            &format!("/api/v1/transfers/{full}/cancel?keep_data={keep_data}"),
            &json!({}),
            REQUEST_TIMEOUT,
        ))?;
        if json_out {
            println!(
                "{}",
                json!({"id": full, "cancelled": true, "kept_data": keep_data})
            );
        }
        if keep_data {
            eprintln!("cancelled {full}: the daemon stopped it and kept its partial data (get it again into the same place to resume)");
        } else {
            eprintln!("cancelled {full}: the daemon stopped it and deleted its partial data (a completed file is kept)");
        }
        Ok(())
    }

    /// [`Remote::act`] on a full transfer id.
    fn act_on(&self, action: &str, full: &str, json_out: bool) -> Result<()> {
        let value = self.rt.block_on(self.daemon.post(
            &format!("/api/v1/transfers/{full}/{action}"),
            &json!({}),
            REQUEST_TIMEOUT,
        ))?;
        if json_out {
            println!("{}", serde_json::to_string(&value)?);
        }
        let t: Transfer = serde_json::from_value(value)
            .context("the shoal daemon's answer is not a transfer; is it the same version?")?;
        eprintln!(
            "{} is now {} ({} of {})",
            t.id,
            t.state,
            human_size(t.done_bytes),
            t.total_bytes.map_or("?".to_owned(), human_size)
        );
        Ok(())
    }

    /// `shoal priority ID --set P PATH...` (`PATCH /api/v1/transfers/{id}/files`).
    pub fn priority(&self, args: &crate::cli::PriorityArgs) -> Result<()> {
        let full = self.full_transfer_id(&args.id)?;
        let body = json!({"paths": args.paths, "priority": args.priority.as_str()});
        let value = self.rt.block_on(self.daemon.call(
            reqwest::Method::PATCH,
            &format!("/api/v1/transfers/{full}/files"),
            Some(&body),
            REQUEST_TIMEOUT,
        ))?;
        if args.json {
            println!("{}", serde_json::to_string(&value)?);
        }
        let t: Transfer = serde_json::from_value(value)
            .context("the shoal daemon's answer is not a transfer; is it the same version?")?;
        eprintln!(
            "{} file{} of {} set to {}; the transfer is {} ({} of {})",
            args.paths.len(),
            if args.paths.len() == 1 { "" } else { "s" },
            t.id,
            args.priority.as_str(),
            t.state,
            human_size(t.done_bytes),
            t.total_bytes.map_or("?".to_owned(), human_size)
        );
        Ok(())
    }

    /// `shoal seed ID`: a completed download seeds again (the resume route
    /// of a complete transfer).
    pub fn seed(&self, id: &str, json_out: bool) -> Result<()> {
        let full = self.full_transfer_id(id)?;
        let value = self
            .rt
            .block_on(self.daemon.get(&format!("/api/v1/transfers/{full}")))?;
        let t: Transfer = serde_json::from_value(value)
            .context("the shoal daemon's answer is not a transfer; is it the same version?")?;
        if !t.is_complete() {
            bail!(
                "{full} is {}: only a completed download can be seeded; `shoal resume {}` continues a paused or failed one",
                t.state,
                short_id(&full)
            );
        }
        self.act_on("resume", &full, json_out)
    }

    /// `shoal peers`: every peer connected or transferring, with what it
    /// downloads from us (shares) and what we download with it (transfers).
    pub fn peers(&self, json_out: bool) -> Result<()> {
        let ids = |v: &[String]| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.iter().map(|t| short_id(t)).collect::<Vec<_>>().join(",")
            }
        };
        let value = self.rt.block_on(self.daemon.get("/api/v1/peers"))?;
        if json_out {
            println!("{}", serde_json::to_string_pretty(&value)?);
            return Ok(());
        }
        let peers: Vec<ApiPeer> = serde_json::from_value(value)
            .context("the shoal daemon's peer list is not readable; is it the same version?")?;
        if peers.is_empty() {
            eprintln!("no peers connected");
            return Ok(());
        }
        let rows: Vec<Vec<String>> = peers
            .iter()
            .map(|p| {
                vec![
                    p.peer_id.clone(),
                    p.path.clone(),
                    rate(p.down_rate),
                    rate(p.up_rate),
                    ids(&p.transfers),
                    ids(&p.shares),
                    p.addresses.join(" "),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &[
                    "PEER",
                    "PATH",
                    "DOWN",
                    "UP",
                    "TRANSFERS",
                    "SHARES",
                    "ADDRESSES"
                ],
                &rows
            )
        );
        Ok(())
    }

    /// `shoal status`: asks again, so the figures are fresh.
    pub fn status(&self, json_out: bool) -> Result<()> {
        let value = self.rt.block_on(self.daemon.get("/api/v1/status"))?;
        if json_out {
            println!("{}", serde_json::to_string_pretty(&value)?);
            return Ok(());
        }
        let s: crate::client::Status = serde_json::from_value(value)
            .context("the shoal daemon's status is not readable; is it the same version?")?;
        let mut out = String::new();
        out.push_str(&format!(
            "daemon        pid {}, version {}, up {}\n",
            self.pid(),
            s.version,
            duration(s.uptime_s)
        ));
        out.push_str(&format!("api           http://{}\n", self.daemon.file.api));
        out.push_str(&format!("peer          {}\n", s.peer_id));
        out.push_str(&format!("data dir      {}\n", s.data_dir));
        out.push_str(&format!("reachability  {}\n", s.reachability));
        out.push_str(&format!("peers         {} connected\n", s.connected_peers));
        for (label, addrs) in [
            ("listening", &s.addresses),
            ("in tickets", &s.ticket_addresses),
        ] {
            if addrs.is_empty() {
                out.push_str(&format!("{label:<14}(none)\n"));
            }
            for (i, a) in addrs.iter().enumerate() {
                let l = if i == 0 { label } else { "" };
                out.push_str(&format!("{l:<14}{a}\n"));
            }
        }
        print!("{out}");
        Ok(())
    }

    /// `shoal ui`: the web UI's address with the token in the fragment.
    pub fn ui(&self, open: bool) -> Result<()> {
        let url = self.daemon.ui_url();
        println!("{url}");
        if open {
            match std::process::Command::new("xdg-open")
                .arg(&url)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
            {
                Ok(_) => eprintln!("opening the web UI in your browser"),
                Err(e) => {
                    eprintln!("cannot run xdg-open ({e}); open the address above in a browser")
                }
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ get

    /// `shoal get` through the daemon: starts (or finds) the transfer, then
    /// follows it on the event stream until it completes or fails. Ctrl-C
    /// stops following; the daemon goes on.
    pub fn get(&self, args: &GetArgs) -> Result<()> {
        self.foreground_only(
            "get",
            &[
                "--output",
                "--name",
                "--json",
                "--download-limit",
                "--only",
                "--exclude",
            ],
        )?;
        if args.sequential || args.collection {
            bail!(
                "--sequential and --folder are not available through the shoal daemon (pid {}); pass --no-daemon to download in the foreground",
                self.pid()
            );
        }
        let out = absolute(&args.out)?;
        std::fs::create_dir_all(&out)
            .with_context(|| format!("cannot create the output folder {}", out.display()))?;
        let mut body = json!({
            "ticket": args.target.trim(),
            "output": out.to_string_lossy(),
            // The foreground node's download limit is the transfer's here:
            // one download either way.
            "download_limit": args.node.download_limit.filter(|l| *l > 0),
            "only": args.only,
            "exclude": args.exclude,
        });
        if let Some(name) = &args.name {
            body["name"] = Value::from(name.as_str());
        }
        self.rt.block_on(async {
            let value = self
                .daemon
                .post("/api/v1/transfers", &body, REQUEST_TIMEOUT)
                .await?;
            let mut t: Transfer = serde_json::from_value(value)
                .context("the shoal daemon's answer is not a transfer; is it the same version?")?;
            let id = t.id.clone();
            // Asking again for content that is paused or failed means: try again.
            if t.state == "paused" || t.state == "failed" {
                let value = self
                    .daemon
                    .post(&format!("/api/v1/transfers/{id}/resume"), &json!({}), REQUEST_TIMEOUT)
                    .await?;
                t = serde_json::from_value(value).context(
                    "the shoal daemon's answer is not a transfer; is it the same version?",
                )?;
            }
            let interrupted = interrupt_signal()?;
            eprintln!(
                "the shoal daemon (pid {}) downloads {id} into {}; Ctrl-C stops watching, not the download",
                self.pid(),
                t.output
            );
            tokio::select! {
                r = self.follow(t, args.json) => r,
                _ = interrupted => {
                    eprintln!(
                        "\nstopped watching: the transfer {id} goes on in the shoal daemon (pid {}); `shoal transfers` shows it, `shoal cancel {}` stops it",
                        self.pid(),
                        short_id(&id)
                    );
                    Err(Detached.into())
                }
            }
        })
    }

    async fn follow(&self, first: Transfer, json_out: bool) -> Result<()> {
        let id = first.id.clone();
        let started = Instant::now();
        let mut view = ProgressView::new(json_out);
        view.show(&first);
        if let Some(done) = finished(&first)? {
            return self.done(&done, started, &mut view, json_out);
        }
        let mut resp = self.daemon.events().await?;
        let mut parser = SseParser::new();
        loop {
            let Some(chunk) = self.daemon.next_chunk(&mut resp).await? else {
                view.clear();
                bail!(
                    "the shoal daemon (pid {}) closed its event stream before {id} completed; it resumes when the daemon runs again; `shoal transfers` shows it",
                    self.pid()
                );
            };
            for ev in parser.push(&chunk)? {
                match ev.event.as_str() {
                    "transfer" => {
                        let Ok(t) = serde_json::from_str::<Transfer>(&ev.data) else {
                            continue;
                        };
                        if t.id != id {
                            continue;
                        }
                        view.show(&t);
                        if let Some(done) = finished(&t)? {
                            return self.done(&done, started, &mut view, json_out);
                        }
                    }
                    "transfer_removed" => {
                        let removed = serde_json::from_str::<Value>(&ev.data)
                            .ok()
                            .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned));
                        if removed.as_deref() == Some(id.as_str()) {
                            view.clear();
                            bail!("the transfer {id} was cancelled in the shoal daemon before it completed");
                        }
                    }
                    "error" => {
                        let v: Value = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
                        if v.get("transfer").and_then(Value::as_str) == Some(id.as_str()) {
                            if let Some(m) = v.get("message").and_then(Value::as_str) {
                                view.note(&format!("daemon: {m}"));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn done(
        &self,
        t: &Transfer,
        started: Instant,
        view: &mut ProgressView,
        json_out: bool,
    ) -> Result<()> {
        view.clear();
        let path = t.result_path();
        let total = t.total_bytes.unwrap_or(t.done_bytes);
        let secs = started.elapsed().as_secs_f64();
        if json_out {
            let peers: Vec<Value> = t
                .peers
                .iter()
                .map(|p| {
                    json!({
                        "peer": p.peer_id,
                        "downloaded": p.downloaded,
                        "uploaded": p.uploaded,
                        "path": p.path,
                        "banned": p.banned,
                    })
                })
                .collect();
            println!(
                "{}",
                json!({
                    "id": t.id,
                    "kind": t.kind,
                    "path": path.display().to_string(),
                    "bytes": total,
                    "seconds": secs,
                    "state": t.state,
                    "daemon_pid": self.pid(),
                    "pieces_failed": t.pieces_failed,
                    "banned_peers": t.banned_peers(),
                    "peers": peers,
                })
            );
        } else {
            eprintln!(
                "verified {} ({}) in {secs:.1} s from {} peer{}{}",
                path.display(),
                human_size(total),
                t.peers.len(),
                if t.peers.len() == 1 { "" } else { "s" },
                if t.state == "seeding" {
                    format!("; the shoal daemon (pid {}) keeps seeding it", self.pid())
                } else {
                    String::new()
                },
            );
            if let Some(t) = t.trouble().strip_prefix("; ") {
                eprintln!("note: {t}");
            }
            println!("{}", path.display());
        }
        Ok(())
    }
}

/// Resolves at Ctrl-C (SIGINT). The handler is in place when this returns, so
/// a Ctrl-C right after is caught rather than killing the process.
fn interrupt_signal() -> Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        let mut sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("cannot handle Ctrl-C")?;
        Ok(async move {
            sig.recv().await;
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// `Some(t)` when the transfer completed; an error when it failed.
fn finished(t: &Transfer) -> Result<Option<Transfer>> {
    if t.is_complete() {
        return Ok(Some(t.clone()));
    }
    if t.state == "failed" {
        bail!(
            "download of {} failed: {}{}",
            t.id,
            t.error
                .as_deref()
                .unwrap_or("the shoal daemon gave no reason; see its log"),
            t.trouble()
        );
    }
    Ok(None)
}

/// Progress on stderr: an indicatif bar on a terminal; otherwise plain lines
/// (at most one a second, plus one at every state change), or JSON lines with
/// `--json`.
struct ProgressView {
    bar: Option<ProgressBar>,
    json: bool,
    last_line: Option<Instant>,
    last_state: String,
    /// The last "what it is doing" shown while no peer answers.
    last_searching: Option<String>,
}

impl ProgressView {
    fn new(json: bool) -> Self {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar
        });
        ProgressView {
            bar,
            json,
            last_line: None,
            last_state: String::new(),
            last_searching: None,
        }
    }

    fn show(&mut self, t: &Transfer) {
        let peers = t.connected_peers();
        if let Some(bar) = &self.bar {
            if let Some(total) = t.total_bytes {
                bar.set_length(total);
            }
            bar.set_position(t.done_bytes);
            if let Some(s) = &t.searching {
                bar.set_message(format!("{}: {s}", t.state));
                return;
            }
            bar.set_message(format!(
                "{} {}/s eta {} {peers} peer{} {}",
                t.state,
                human_size(t.down_rate.max(0.0) as u64),
                eta(t.eta_s),
                if peers == 1 { "" } else { "s" },
                t.path_label()
            ));
            return;
        }
        let changed = t.state != self.last_state || t.searching != self.last_searching;
        self.last_searching = t.searching.clone();
        let due = self
            .last_line
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
        if !(changed || due) {
            return;
        }
        self.last_state = t.state.clone();
        self.last_line = Some(Instant::now());
        if self.json {
            eprintln!(
                "{}",
                json!({
                    "event": "progress",
                    "id": t.id,
                    "state": t.state,
                    "done": t.done_bytes,
                    "total": t.total_bytes,
                    "down_rate": t.down_rate,
                    "eta_s": t.eta_s,
                    "peers": peers,
                    "path": t.path_label(),
                    "searching": t.searching,
                })
            );
        } else if let Some(s) = &t.searching {
            eprintln!("{} {}: {s}", short_id(&t.id), t.state);
        } else {
            eprintln!(
                "progress {}: {} {}/{} ({:.0}%), {}/s, eta {}, {peers} peer{} ({})",
                short_id(&t.id),
                t.state,
                human_size(t.done_bytes),
                t.total_bytes.map_or("?".to_owned(), human_size),
                (t.progress * 100.0).clamp(0.0, 100.0),
                human_size(t.down_rate.max(0.0) as u64),
                eta(t.eta_s),
                if peers == 1 { "" } else { "s" },
                t.path_label()
            );
        }
    }

    fn note(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// An absolute path for the daemon, which runs elsewhere than our cwd.
fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path)
        .with_context(|| format!("cannot make {} an absolute path", path.display()))
}

/// Finds the full id among `ids` from a full id or a unique prefix of at
/// least 8 hex digits.
pub fn resolve_id(given: &str, ids: &[&str], what: &str, list_cmd: &str) -> Result<String> {
    const MIN_PREFIX: usize = 8;
    let lower = given.trim().to_ascii_lowercase();
    if lower.len() < MIN_PREFIX || lower.len() > 64 || !lower.bytes().all(|b| b.is_ascii_hexdigit())
    {
        bail!("{given:?} is not a {what} id: give the 64 hex digits `{list_cmd}` prints, or a unique prefix of at least {MIN_PREFIX}");
    }
    let matches: Vec<&&str> = ids
        .iter()
        .filter(|id| id.to_ascii_lowercase().starts_with(&lower))
        .collect();
    match matches.as_slice() {
        [] => bail!("no {what} id starts with {lower}; `{list_cmd}` lists them"),
        [one] => Ok((**one).to_owned()),
        more => bail!(
            "{} {what}s start with {lower}; give more digits",
            more.len()
        ),
    }
}

/// The first 16 hex digits: enough to tell transfers apart in a table, and
/// accepted as a prefix by `pause`, `resume` and `cancel`.
fn short_id(id: &str) -> String {
    id.chars().take(16).collect()
}

fn rate(bytes_per_s: f64) -> String {
    if bytes_per_s <= 0.0 || !bytes_per_s.is_finite() {
        return "-".to_owned();
    }
    format!("{}/s", human_size(bytes_per_s as u64))
}

pub(crate) fn eta(secs: Option<f64>) -> String {
    match secs {
        Some(s) if s.is_finite() && s >= 0.0 => duration(s.round() as u64),
        _ => "-".to_owned(),
    }
}

/// `45s`, `3m12s`, `2h05m`, `3d04h`.
fn duration(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// What `shoal share` tells a person at a terminal to run on the other
/// machine (stdout keeps the ticket alone, for scripts).
pub fn other_side_hint(ticket: &str) -> String {
    format!("on the other machine, run: shoal get {ticket}")
}

/// How `shoal share` describes a share's visibility, after its id.
pub fn visibility_note(v: &str) -> &'static str {
    match v {
        "public" => ", announced on the DHT",
        "private" => ", private: only allowed peers and invite holders may fetch it (`shoal invite ID` makes an invite)",
        _ => ", reachable with the ticket only",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_other_side_is_told_the_whole_command() {
        assert_eq!(
            other_side_hint("shoal1abc"),
            "on the other machine, run: shoal get shoal1abc"
        );
    }

    #[test]
    fn ids_resolve_from_unique_prefixes_only() {
        let a = "aaaaaaaa11111111";
        let b = "aaaaaaaa22222222";
        let ids = [a, b];
        assert_eq!(
            resolve_id("AAAAAAAA1", &ids, "transfer", "x").expect("unique"),
            a
        );
        assert_eq!(resolve_id(b, &ids, "transfer", "x").expect("full"), b);
        let amb = resolve_id("aaaaaaaa", &ids, "transfer", "x").unwrap_err();
        assert!(amb.to_string().contains("2 transfers start with"), "{amb}");
        let short = resolve_id("aaaa", &ids, "transfer", "x").unwrap_err();
        assert!(short.to_string().contains("at least 8"), "{short}");
        let none = resolve_id("bbbbbbbb", &ids, "transfer", "x").unwrap_err();
        assert!(none.to_string().contains("no transfer id starts with"));
        assert!(resolve_id("zzzzzzzzzz", &ids, "transfer", "x").is_err());
    }

    #[test]
    fn durations_and_rates_read_well() {
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(192), "3m12s");
        assert_eq!(duration(7500), "2h05m");
        assert_eq!(duration(3 * 86400 + 4 * 3600), "3d04h");
        assert_eq!(eta(None), "-");
        assert_eq!(eta(Some(f64::INFINITY)), "-");
        assert_eq!(eta(Some(61.4)), "1m01s");
        assert_eq!(rate(0.0), "-");
        assert_eq!(rate(2048.0), "2.0 KiB/s");
    }

    #[test]
    fn failed_transfer_is_an_error_with_its_reason() {
        let t = Transfer {
            id: "ab".into(),
            state: "failed".into(),
            error: Some("no provider answered".into()),
            ..Transfer::default()
        };
        let e = finished(&t).unwrap_err();
        assert_eq!(e.to_string(), "download of ab failed: no provider answered");
        let t = Transfer {
            state: "seeding".into(),
            ..t
        };
        assert!(finished(&t).expect("complete").is_some());
        let t = Transfer {
            state: "downloading".into(),
            ..t
        };
        assert!(finished(&t).expect("running").is_none());
    }
}
