//! What each subcommand does. Errors carry context that names the thing that failed
//! and what to do, so `main` can print them as one line.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use shoal_core::{ContentId, Ticket};
use shoal_store::{Hashed, Share, Store};

use crate::cli::{Cli, Command, Global, TicketCommand};
use crate::output::{byte_bar, checksum_line, display_path, human_size, table};
use crate::remote::Remote;

/// Returned when every problem was already printed (one line each), so `main`
/// only sets the exit code.
#[derive(Debug)]
pub struct AlreadyReported;

impl std::fmt::Display for AlreadyReported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("errors were reported above")
    }
}

impl std::error::Error for AlreadyReported {}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Hash { paths } => hash(&paths),
        Command::Add { path, name, json } => add(&cli.global, &path, name.as_deref(), json),
        Command::Shares { json } => match Remote::find(&cli.global)? {
            Some(remote) => remote.shares(json),
            None => shares(&cli.global, json),
        },
        Command::Rm { id } => match Remote::find(&cli.global)? {
            Some(remote) => remote.rm(&id),
            None => rm(&cli.global, &id),
        },
        Command::Files { id, json } => match Remote::find(&cli.global)? {
            Some(remote) => remote.files(&id, json),
            None => files(&cli.global, &id, json),
        },
        Command::Ls(args) => {
            if !(1..=300).contains(&args.timeout.as_secs()) {
                bail!("--timeout must be between 1 s and 5 min");
            }
            match Remote::find(&cli.global)? {
                Some(remote) => remote.ls(&args),
                None => crate::p2p::ls(&cli.global, args),
            }
        }
        Command::Transfers { json } => Remote::require(&cli.global, "transfers")?.transfers(json),
        Command::Peers { json } => Remote::require(&cli.global, "peers")?.peers(json),
        Command::Pause(a) => Remote::require(&cli.global, "pause")?.act("pause", &a.id, a.json),
        Command::Resume(a) => Remote::require(&cli.global, "resume")?.act("resume", &a.id, a.json),
        Command::Seed(a) => Remote::require(&cli.global, "seed")?.seed(&a.id, a.json),
        Command::Priority(a) => Remote::require(&cli.global, "priority")?.priority(&a),
        Command::Cancel(a) => {
            Remote::require(&cli.global, "cancel")?.cancel(&a.t.id, a.keep_data, a.t.json)
        }
        Command::Status { json } => Remote::require(&cli.global, "status")?.status(json),
        Command::Ui { open } => Remote::require(&cli.global, "ui")?.ui(open),
        Command::Ticket(TicketCommand::Inspect { ticket, json }) => inspect(&ticket, json),
        Command::Ticket(TicketCommand::Qr { ticket, svg }) => qr(&ticket, svg),
        Command::Share(args) => match Remote::find(&cli.global)? {
            Some(remote) => remote.share(&args),
            None => crate::p2p::share(&cli.global, args),
        },
        Command::Get(args) => match Remote::find(&cli.global)? {
            Some(remote) => remote.get(&args),
            None => crate::p2p::get(&cli.global, args),
        },
        Command::Demo(args) => crate::p2p::demo(args),
        Command::Daemon(args) => crate::daemon_cmd::run(&cli.global, args),
        Command::Access(cmd) => crate::access_cmd::run(&cli.global, cmd),
    }
}

/// The data directory: `--data-dir`, `SHOAL_DATA_DIR`, or the platform default.
pub(crate) fn data_dir(global: &Global) -> Result<PathBuf> {
    if let Some(dir) = &global.data_dir {
        return Ok(dir.clone());
    }
    directories::ProjectDirs::from("", "", "shoal")
        .map(|dirs| dirs.data_dir().to_path_buf())
        .ok_or_else(|| {
            anyhow!("cannot find a home directory for shoal's data; pass --data-dir DIR or set SHOAL_DATA_DIR")
        })
}

fn open_store(global: &Global) -> Result<Store> {
    let dir = data_dir(global)?;
    Store::open(&dir).with_context(|| format!("cannot open shoal's data dir {}", dir.display()))
}

/// `shoal hash`: `b3sum`-compatible lines. Like `b3sum`, a path that fails is
/// reported and the others are still hashed; the exit code is non-zero if any failed.
fn hash(paths: &[PathBuf]) -> Result<()> {
    let stdout = std::io::stdout();
    let mut failed = false;
    for path in paths {
        let shown = display_path(path);
        let result = hash_one(path, &shown).and_then(|lines| {
            let mut out = stdout.lock();
            for line in lines {
                writeln!(out, "{line}").context("cannot write to stdout")?;
            }
            Ok(())
        });
        if let Err(err) = result {
            eprintln!("error: {}", crate::one_line(&err));
            failed = true;
        }
    }
    if failed {
        return Err(AlreadyReported.into());
    }
    Ok(())
}

fn hash_one(path: &Path, shown: &str) -> Result<Vec<String>> {
    let meta = std::fs::metadata(path).map_err(|e| {
        anyhow!("cannot read {shown}: {e}; check that the path exists and is readable")
    })?;
    let total = meta.is_file().then_some(meta.len());
    let bar = byte_bar(total, &format!("hashing {shown}"));
    let hashed = shoal_store::hash_path(path, &|n| bar.inc(n));
    bar.finish_and_clear();
    let hashed = hashed.with_context(|| format!("cannot hash {shown}"))?;
    Ok(match hashed {
        Hashed::File(file) => vec![checksum_line(&file.id, shown)],
        Hashed::Folder(folder) => {
            for skipped in &folder.skipped {
                eprintln!("warning: {skipped}");
            }
            let base = shown.trim_end_matches('/');
            let mut lines: Vec<String> = folder
                .files
                .iter()
                .map(|f| checksum_line(&f.id, &format!("{base}/{}", f.path)))
                .collect();
            lines.push(checksum_line(&folder.id, &format!("{base}/")));
            lines
        }
    })
}

/// The progress bar of indexing `path` (`shown` names it): bytes of a file,
/// a spinner for a folder.
pub fn indexing_bar(path: &Path, shown: &str) -> indicatif::ProgressBar {
    let total = std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    byte_bar(total, &format!("indexing {shown}"))
}

/// [`Store::add_with_report`] with a byte progress bar on stderr (`shown`
/// names the path in it), for `shoal add` and `shoal share`.
pub fn add_with_bar(
    store: &Store,
    path: &Path,
    name: Option<&str>,
    shown: &str,
) -> std::result::Result<shoal_store::store::Added, shoal_store::StoreError> {
    let bar = indexing_bar(path, shown);
    let added = store.add_with_report(path, name, &|n| bar.inc(n));
    bar.finish_and_clear();
    added
}

fn add(global: &Global, path: &Path, name: Option<&str>, json: bool) -> Result<()> {
    let shown = display_path(path);
    if let Some(name) = name {
        validate_name(name)?;
    }
    let store = open_store(global)?;
    let added =
        add_with_bar(&store, path, name, &shown).with_context(|| format!("cannot add {shown}"))?;
    for skipped in &added.skipped {
        eprintln!("warning: {skipped}");
    }
    let share = &added.share;
    if json {
        println!("{}", serde_json::to_string(&share)?);
    } else {
        eprintln!(
            "{} {} '{}' ({}, {} file{}) in place from {}",
            if added.existed {
                "already shared:"
            } else {
                "added"
            },
            share.kind,
            share.name,
            human_size(share.size),
            share.files,
            if share.files == 1 { "" } else { "s" },
            share.path.display(),
        );
        println!("{}", share.id);
    }
    Ok(())
}

/// Share names are shown in listings and tickets: keep them printable and short.
fn validate_name(name: &str) -> Result<()> {
    const MAX_NAME: usize = 255;
    if name.trim().is_empty() {
        bail!("--name is empty; give a name with at least one visible character");
    }
    if name.len() > MAX_NAME {
        bail!(
            "--name is {} bytes long; use at most {MAX_NAME} bytes",
            name.len()
        );
    }
    if name.chars().any(char::is_control) {
        bail!("--name contains a control character (such as a newline or tab); use printable characters only");
    }
    Ok(())
}

fn shares(global: &Global, json: bool) -> Result<()> {
    let store = open_store(global)?;
    let shares = store.shares().context("cannot list shares")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&shares)?);
        return Ok(());
    }
    if shares.is_empty() {
        eprintln!("no shares yet; add one with `shoal add PATH`");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = shares
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                s.kind.to_string(),
                human_size(s.size),
                s.files.to_string(),
                s.visibility.to_string(),
                s.name.clone(),
                s.path.display().to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["ID", "KIND", "SIZE", "FILES", "VISIBILITY", "NAME", "PATH"],
            &rows
        )
    );
    Ok(())
}

fn rm(global: &Global, id: &str) -> Result<()> {
    let store = open_store(global)?;
    let share = find_share(&store, id)?;
    let removed = store
        .remove(&share.id)
        .with_context(|| format!("cannot remove share {}", share.id))?;
    if !removed {
        bail!(
            "share {} vanished while removing it; nothing to do",
            share.id
        );
    }
    eprintln!(
        "removed '{}' ({}) from the index; the files at {} are untouched",
        share.name,
        share.id,
        share.path.display()
    );
    Ok(())
}

/// `shoal files ID` without a daemon: the files of a folder share.
fn files(global: &Global, id: &str, json: bool) -> Result<()> {
    let store = open_store(global)?;
    let share = find_share(&store, id)?;
    if share.kind != shoal_core::Kind::Collection {
        bail!(
            "share {} ('{}') is a file, not a folder: it has no list of files",
            share.id,
            share.name
        );
    }
    let mut list = FileListing::default();
    loop {
        let (total, bytes, page) = store
            .share_files_page(&share.id, list.files.len() as u64, 1000)
            .context("cannot read the share's files")?;
        list.known = true;
        list.total_files = total;
        list.total_bytes = bytes;
        if page.is_empty() {
            break;
        }
        list.files.extend(page.into_iter().map(|f| FileRow {
            path: f.path,
            size: f.size,
            id: f.id.to_hex(),
            done_bytes: f.size,
            chosen: None,
            priority: None,
        }));
    }
    if let Some(bytes) = store
        .manifest(&share.id)
        .context("cannot read the share's list of files")?
    {
        let m = shoal_core::Manifest::decode(&bytes)
            .context("the share's list of files in the data dir is damaged")?;
        list.total_empty_folders = m.empty_folder_count() as u64;
        list.empty_folders = m
            .empty_folders()
            .take(shoal_node::transfers::MAX_LISTED_EMPTY_FOLDERS)
            .map(str::to_owned)
            .collect();
    }
    print_files(&list, json)
}

/// A folder's files as `shoal files` prints them (the API's `FileList`, all
/// pages).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct FileListing {
    pub known: bool,
    pub total_files: u64,
    pub total_bytes: u64,
    #[serde(default)]
    pub files: Vec<FileRow>,
    /// The folder's empty folders (the API names at most 1000, on the first
    /// page).
    #[serde(default)]
    pub empty_folders: Vec<String>,
    #[serde(default)]
    pub total_empty_folders: u64,
}

impl FileListing {
    /// Drops what only a transfer's files have (chosen, priority).
    pub fn strip_choice(&mut self) {
        for f in &mut self.files {
            f.chosen = None;
            f.priority = None;
        }
    }
}

/// One file of a [`FileListing`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct FileRow {
    pub path: String,
    pub size: u64,
    pub id: String,
    pub done_bytes: u64,
    /// Of a transfer's files: whether `--only`/`--exclude` chose it, and its
    /// priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
}

/// Prints a folder's files: a table (path, size, what is here, id) and a
/// total line, or one JSON object.
pub(crate) fn print_files(list: &FileListing, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(list)?);
        return Ok(());
    }
    if !list.known {
        eprintln!("the folder's list of files is not here yet: the download fetches it first");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .files
        .iter()
        .map(|f| {
            let pct = if f.size == 0 {
                100.0
            } else {
                f.done_bytes as f64 * 100.0 / f.size as f64
            };
            let want = match (f.chosen, f.priority.as_deref()) {
                (Some(false), _) => "not chosen".to_owned(),
                (_, Some(p)) => p.to_owned(),
                _ => "-".to_owned(),
            };
            vec![
                f.path.clone(),
                human_size(f.size),
                format!("{:.0}%", pct.clamp(0.0, 100.0)),
                want,
                f.id.clone(),
            ]
        })
        .chain(list.empty_folders.iter().map(|d| {
            vec![
                format!("{d}/"),
                "folder".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                "(empty)".to_owned(),
            ]
        }))
        .collect();
    print!(
        "{}",
        table(&["PATH", "SIZE", "HERE", "PRIORITY", "ID"], &rows)
    );
    let here: u64 = list.files.iter().map(|f| f.done_bytes).sum();
    eprintln!(
        "{} file{}{}, {} ({} here)",
        list.total_files,
        if list.total_files == 1 { "" } else { "s" },
        folders_note(list),
        human_size(list.total_bytes),
        human_size(here)
    );
    Ok(())
}

/// Prints a remote folder's files (`shoal ls`): a table (path, size, id)
/// and a total line, or one JSON object without the `done_bytes` of each.
pub(crate) fn print_ls(list: &FileListing, json: bool) -> Result<()> {
    if json {
        let files: Vec<serde_json::Value> = list
            .files
            .iter()
            .map(|f| serde_json::json!({"path": f.path, "size": f.size, "id": f.id}))
            .collect();
        let v = serde_json::json!({
            "total_files": list.total_files,
            "total_bytes": list.total_bytes,
            "files": files,
            "empty_folders": list.empty_folders,
            "total_empty_folders": list.total_empty_folders,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .files
        .iter()
        .map(|f| vec![f.path.clone(), human_size(f.size), f.id.clone()])
        .chain(
            list.empty_folders
                .iter()
                .map(|d| vec![format!("{d}/"), "folder".to_owned(), "(empty)".to_owned()]),
        )
        .collect();
    print!("{}", table(&["PATH", "SIZE", "ID"], &rows));
    eprintln!(
        "{} file{}{}, {}",
        list.total_files,
        if list.total_files == 1 { "" } else { "s" },
        folders_note(list),
        human_size(list.total_bytes)
    );
    Ok(())
}

/// ", N empty folders" for a listing's total line, or nothing; says how
/// many are not shown when the list names only some.
fn folders_note(list: &FileListing) -> String {
    let n = list.total_empty_folders;
    if n == 0 {
        return String::new();
    }
    let shown = list.empty_folders.len() as u64;
    let more = if shown < n {
        format!(" ({shown} shown)")
    } else {
        String::new()
    };
    format!(", {n} empty folder{}{more}", if n == 1 { "" } else { "s" })
}

/// Finds a share by its full id or by a unique prefix of at least 8 hex digits.
fn find_share(store: &Store, id: &str) -> Result<Share> {
    const MIN_PREFIX: usize = 8;
    let id = id.trim();
    if let Ok(full) = id.parse::<ContentId>() {
        return store
            .share(&full)
            .context("cannot read the share index")?
            .ok_or_else(|| anyhow!("no share with id {full}; `shoal shares` lists them"));
    }
    let lower = id.to_ascii_lowercase();
    if lower.len() < MIN_PREFIX || lower.len() > 64 || !lower.bytes().all(|b| b.is_ascii_hexdigit())
    {
        bail!("{id:?} is not a share id: give the 64 hex digits `shoal shares` prints, or a unique prefix of at least {MIN_PREFIX}");
    }
    let matches: Vec<Share> = store
        .shares()
        .context("cannot read the share index")?
        .into_iter()
        .filter(|s| s.id.to_string().starts_with(&lower))
        .collect();
    match matches.len() {
        0 => bail!("no share id starts with {lower}; `shoal shares` lists them"),
        1 => Ok(matches.into_iter().next().expect("one match")),
        n => bail!("{n} shares start with {lower}; give more digits"),
    }
}

/// `shoal ticket qr`: the ticket (checked first) as a QR code.
fn qr(text: &str, svg: bool) -> Result<()> {
    let ticket: Ticket = text
        .trim()
        .parse()
        .map_err(|e| anyhow!("not a valid ticket: {e}"))?;
    let text = ticket.to_string();
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::L)
        .map_err(|e| anyhow!("cannot make a QR code of this ticket: {e}"))?;
    let out = if svg {
        code.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .build()
    } else {
        // Two modules per character cell, dark on light, with its quiet zone.
        code.render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .build()
    };
    println!("{out}");
    Ok(())
}

fn inspect(text: &str, json: bool) -> Result<()> {
    let ticket: Ticket = text
        .parse()
        .map_err(|e| anyhow!("not a valid ticket: {e}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&ticket)?);
        return Ok(());
    }
    println!(
        "ticket    shoal ticket, version {}",
        shoal_core::ticket::VERSION
    );
    println!("content   {} ({})", ticket.id, ticket.kind);
    if let Some(name) = &ticket.name {
        println!("name      {name}");
    }
    println!("providers {}", ticket.providers.len());
    for provider in &ticket.providers {
        println!("  peer {}", provider.peer);
        if provider.addrs.is_empty() {
            println!("    (no addresses: found through the DHT)");
        }
        for addr in &provider.addrs {
            println!("    {addr}");
        }
    }
    match &ticket.capability {
        None => println!("capability none (anyone with the ticket may fetch an unlisted share)"),
        Some(cap) => println!("capability {} bytes", cap.len()),
    }
    Ok(())
}
