//! `shoal access`, `allow`, `deny`, `visibility`, `invite`, `invites`,
//! `revoke`, `access-log`: who may fetch what.
//!
//! With a daemon running for the data dir, each goes through its HTTP API (so
//! the daemon's sessions see the change at once); without one, through the
//! node's `AccessControl` on the store directly (a node serving the same data
//! dir in another process sees the change within a second). Both paths produce
//! the API's JSON shapes, so `--json` prints the same either way.

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use shoal_core::ticket::Provider;
use shoal_core::{ContentId, Ticket};
use shoal_daemon::access::{
    invite_to_view, log_view, AccessLogView, AccessView, InviteState, InviteView, Policy,
};
use shoal_daemon::api::ShareView;
use shoal_net::PeerId;
use shoal_node::access::utc;
use shoal_node::control::{AccessControl, InviteOptions};
use shoal_store::{Share, Store, Visibility};

use crate::cli::{AccessCommand, Global, InviteArgs};
use crate::output::{human_size, table};
use crate::remote::{resolve_id, Remote};

/// Where the commands act: the daemon, or the data dir directly.
enum Backend {
    Remote(Remote),
    Local {
        ctl: AccessControl,
        store: Store,
        local: PeerId,
    },
}

fn parse_peer(s: &str) -> Result<PeerId> {
    s.trim().parse().map_err(|_| {
        anyhow!("{s:?} is not a peer id: give the 12D3KooW… id that `shoal status` prints on the other machine")
    })
}

fn from_value<T: DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v)
        .context("the shoal daemon's answer is not readable; is it the same version?")
}

impl Backend {
    fn open(global: &Global) -> Result<Backend> {
        if let Some(r) = Remote::find(global)? {
            return Ok(Backend::Remote(r));
        }
        let dir = crate::commands::data_dir(global)?;
        let store = Store::open(&dir)
            .with_context(|| format!("cannot open shoal's data dir {}", dir.display()))?;
        let key = shoal_net::identity::load_or_create(&dir)
            .with_context(|| format!("cannot read this node's identity in {}", dir.display()))?;
        let local = key.public().to_peer_id();
        Ok(Backend::Local {
            ctl: AccessControl::new(store.clone(), key, None),
            store,
            local,
        })
    }

    /// A ticket naming this node without addresses (no daemon: the addresses
    /// are not known), carrying `capability`.
    fn local_ticket(local: PeerId, s: &Share, capability: Option<Vec<u8>>) -> String {
        let mut t = Ticket {
            id: s.id,
            kind: s.kind,
            providers: vec![Provider {
                peer: local,
                addrs: Vec::new(),
            }],
            capability,
            name: Some(s.name.clone()).filter(|n| shoal_core::manifest::is_plain_name(n)),
        };
        let _ = t.shrink_to_fit();
        t.to_string()
    }

    fn share_view(local: PeerId, s: &Share) -> ShareView {
        ShareView {
            id: s.id.to_hex(),
            kind: s.kind.into(),
            name: s.name.clone(),
            path: s.path.to_string_lossy().into_owned(),
            size: s.size,
            files: s.files,
            public: s.visibility == Visibility::Public,
            visibility: s.visibility.into(),
            ticket: Self::local_ticket(local, s, None),
            // Without a daemon nothing is being served.
            uploaded_bytes: 0,
            up_rate: 0.0,
            ratio: 0.0,
            peers: Vec::new(),
        }
    }

    /// The full id of a share given by id or unique prefix.
    fn share_id(&self, given: &str) -> Result<ContentId> {
        let ids: Vec<String> = match self {
            Backend::Remote(r) => {
                let v: Vec<ShareView> = from_value(r.api_get("/api/v1/shares")?)?;
                v.into_iter().map(|s| s.id).collect()
            }
            Backend::Local { store, .. } => store
                .shares()
                .context("cannot read the share index")?
                .iter()
                .map(|s| s.id.to_hex())
                .collect(),
        };
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let full = resolve_id(given, &refs, "share", "shoal shares")?;
        full.parse()
            .map_err(|_| anyhow!("share id {full} is not valid"))
    }

    fn access(&self, id: ContentId) -> Result<AccessView> {
        match self {
            Backend::Remote(r) => from_value(r.api_get(&format!("/api/v1/shares/{id}/access"))?),
            Backend::Local { ctl, local, .. } => {
                let a = ctl.access(id)?;
                Ok(AccessView {
                    share: Self::share_view(*local, &a.share),
                    allow: a.allow,
                    invites: a
                        .invites
                        .iter()
                        .map(|r| {
                            let t = Self::local_ticket(*local, &a.share, Some(r.encoded.clone()));
                            invite_to_view(r, Some(t))
                        })
                        .collect(),
                })
            }
        }
    }

    fn allow(&self, id: ContentId, peer: PeerId) -> Result<AccessView> {
        match self {
            Backend::Remote(r) => from_value(r.api_call(
                reqwest::Method::POST,
                &format!("/api/v1/shares/{id}/allow"),
                Some(&json!({"peer_id": peer.to_base58()})),
            )?),
            Backend::Local { ctl, .. } => {
                ctl.allow(id, peer)?;
                self.access(id)
            }
        }
    }

    fn deny(&self, id: ContentId, peer: PeerId) -> Result<AccessView> {
        match self {
            Backend::Remote(r) => from_value(r.api_call(
                reqwest::Method::DELETE,
                &format!("/api/v1/shares/{id}/allow/{}", peer.to_base58()),
                None,
            )?),
            Backend::Local { ctl, .. } => {
                ctl.deny(id, peer)?;
                self.access(id)
            }
        }
    }

    fn visibility(&self, id: ContentId, v: Policy) -> Result<ShareView> {
        match self {
            Backend::Remote(r) => from_value(r.api_call(
                reqwest::Method::PATCH,
                &format!("/api/v1/shares/{id}"),
                Some(&json!({ "visibility": v })),
            )?),
            Backend::Local { ctl, .. } => {
                ctl.set_visibility(id, v.into())?;
                Ok(self.access(id)?.share)
            }
        }
    }

    fn invite(&self, id: ContentId, a: &InviteArgs) -> Result<InviteView> {
        let to = a.to.as_deref().map(parse_peer).transpose()?;
        match self {
            Backend::Remote(r) => {
                let body = json!({
                    "to": to.map(|p| p.to_base58()),
                    "expires_in": a.expires.map(|d| format!("{}s", d.as_secs())),
                    "uses": a.uses,
                });
                from_value(r.api_call(
                    reqwest::Method::POST,
                    &format!("/api/v1/shares/{id}/invites"),
                    Some(&body),
                )?)
            }
            Backend::Local { ctl, local, store } => {
                let rec = ctl.invite(
                    id,
                    &InviteOptions {
                        to,
                        expires: a.expires,
                        uses: a.uses,
                    },
                )?;
                let share = store
                    .share(&id)?
                    .ok_or_else(|| anyhow!("share {id} vanished"))?;
                let t = Self::local_ticket(*local, &share, Some(rec.encoded.clone()));
                Ok(invite_to_view(&rec, Some(t)))
            }
        }
    }

    fn invites(&self, id: Option<ContentId>) -> Result<Vec<InviteView>> {
        match (self, id) {
            (Backend::Remote(r), Some(id)) => {
                from_value(r.api_get(&format!("/api/v1/shares/{id}/invites"))?)
            }
            (Backend::Remote(r), None) => from_value(r.api_get("/api/v1/invites")?),
            (Backend::Local { ctl, store, local }, id) => {
                let shares = store.shares()?;
                Ok(ctl
                    .invites(id)?
                    .iter()
                    .map(|r| {
                        let t = shares
                            .iter()
                            .find(|s| s.id == r.content)
                            .map(|s| Self::local_ticket(*local, s, Some(r.encoded.clone())));
                        invite_to_view(r, t)
                    })
                    .collect())
            }
        }
    }

    fn revoke(&self, invite: &str) -> Result<InviteView> {
        match self {
            Backend::Remote(r) => from_value(r.api_call(
                reqwest::Method::POST,
                &format!("/api/v1/invites/{}/revoke", invite.trim()),
                None,
            )?),
            Backend::Local { ctl, .. } => {
                let (rec, _) = ctl.revoke(invite)?;
                Ok(invite_to_view(&rec, None))
            }
        }
    }

    fn log(&self, id: Option<ContentId>, limit: u32) -> Result<Vec<AccessLogView>> {
        let mut rows: Vec<AccessLogView> = match (self, id) {
            (Backend::Remote(r), Some(id)) => {
                from_value(r.api_get(&format!("/api/v1/shares/{id}/access-log"))?)?
            }
            (Backend::Remote(r), None) => from_value(r.api_get("/api/v1/access-log")?)?,
            (Backend::Local { ctl, .. }, id) => {
                ctl.access_log(id, limit)?.iter().map(log_view).collect()
            }
        };
        rows.truncate(limit as usize);
        Ok(rows)
    }

    fn note_offline(&self) {
        if let Backend::Local { .. } = self {
            eprintln!("note: no shoal daemon runs for this data dir: the change is saved; a node serving it applies it within a second");
        }
    }
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn policy_text(p: Policy) -> &'static str {
    match p {
        Policy::Public => "public: announced on the DHT, anyone may fetch it",
        Policy::Unlisted => "unlisted: anyone with its ticket may fetch it",
        Policy::Private => {
            "private: only the peers allowed below, or holders of a valid invite, may fetch it"
        }
    }
}

fn state_text(s: InviteState) -> &'static str {
    match s {
        InviteState::Active => "active",
        InviteState::Expired => "expired",
        InviteState::Revoked => "revoked",
        InviteState::UsedUp => "used up",
    }
}

fn when(secs: Option<i64>) -> String {
    secs.map_or("never".to_owned(), |s| utc(s.max(0) as u64))
}

fn invite_rows(list: &[InviteView]) -> Vec<Vec<String>> {
    list.iter()
        .map(|i| {
            vec![
                i.id.clone(),
                i.share.chars().take(16).collect(),
                state_text(i.state).to_owned(),
                match i.max_uses {
                    Some(m) => format!("{}/{m}", i.uses),
                    None => format!("{}/∞", i.uses),
                },
                when(i.expires_at),
                i.recipient.clone().unwrap_or_else(|| "anyone".to_owned()),
            ]
        })
        .collect()
}

const INVITE_HEADER: [&str; 6] = ["INVITE", "SHARE", "STATE", "USES", "EXPIRES", "FOR"];

fn print_access(a: &AccessView) {
    println!("share    '{}' ({})", a.share.name, a.share.id);
    println!("policy   {}", policy_text(a.share.visibility));
    if a.allow.is_empty() {
        println!("allowed  nobody by peer id");
    } else {
        println!("allowed  {}", a.allow.join("\n         "));
    }
    if a.invites.is_empty() {
        println!(
            "invites  none (`shoal invite {}` makes one)",
            &a.share.id[..16]
        );
    } else {
        println!("invites  {}", a.invites.len());
        print!("{}", table(&INVITE_HEADER, &invite_rows(&a.invites)));
    }
}

pub fn run(global: &Global, cmd: AccessCommand) -> Result<()> {
    let b = Backend::open(global)?;
    match cmd {
        AccessCommand::Access { id, json } => {
            let a = b.access(b.share_id(&id)?)?;
            if json {
                return print_json(&a);
            }
            print_access(&a);
        }
        AccessCommand::Allow { id, peer, json } => {
            let id = b.share_id(&id)?;
            let peer = parse_peer(&peer)?;
            let a = b.allow(id, peer)?;
            if json {
                return print_json(&a);
            }
            eprintln!(
                "peer {peer} may fetch '{}'{}",
                a.share.name,
                if a.share.visibility == Policy::Private {
                    ""
                } else {
                    " (the share is not private: anyone with its ticket may fetch it anyway; `shoal visibility ID private` restricts it)"
                }
            );
            b.note_offline();
        }
        AccessCommand::Deny { id, peer, json } => {
            let id = b.share_id(&id)?;
            let peer = parse_peer(&peer)?;
            let was = b.access(id)?.allow.contains(&peer.to_base58());
            let a = b.deny(id, peer)?;
            if json {
                return print_json(&a);
            }
            if was {
                eprintln!(
                    "peer {peer} is off the allowlist of '{}'; its sessions that nothing else allows were closed",
                    a.share.name
                );
            } else {
                eprintln!("peer {peer} was not on the allowlist of '{}'", a.share.name);
            }
            b.note_offline();
        }
        AccessCommand::Visibility {
            id,
            visibility,
            json,
        } => {
            let id = b.share_id(&id)?;
            let s = b.visibility(id, visibility)?;
            if json {
                return print_json(&s);
            }
            eprintln!("'{}' is now {}", s.name, policy_text(s.visibility));
            b.note_offline();
        }
        AccessCommand::Invite(a) => {
            let id = b.share_id(&a.id)?;
            let inv = b.invite(id, &a)?;
            if a.json {
                return print_json(&inv);
            }
            let Some(ticket) = &inv.ticket else {
                bail!(
                    "the invite {} was made but no ticket could be built for it",
                    inv.id
                );
            };
            println!("{ticket}");
            eprintln!(
                "invite {} for {}: {}, expires {}, {}",
                inv.id,
                &inv.share[..16],
                inv.recipient
                    .as_deref()
                    .map_or("anyone holding it".to_owned(), |p| format!("only peer {p}")),
                when(inv.expires_at),
                inv.max_uses
                    .map_or("any number of peers".to_owned(), |m| format!(
                        "at most {m} peer{}",
                        if m == 1 { "" } else { "s" }
                    )),
            );
            if let Backend::Local { .. } = b {
                eprintln!("note: no shoal daemon runs: the ticket names this node's peer id but no addresses (they are found on the DHT); run `shoal invite` while the daemon runs for a ticket with addresses");
            }
        }
        AccessCommand::Invites { id, json } => {
            let id = id.as_deref().map(|i| b.share_id(i)).transpose()?;
            let list = b.invites(id)?;
            if json {
                return print_json(&list);
            }
            if list.is_empty() {
                eprintln!("no invites yet; `shoal invite ID` makes one");
                return Ok(());
            }
            print!("{}", table(&INVITE_HEADER, &invite_rows(&list)));
        }
        AccessCommand::Revoke { invite, json } => {
            let inv = b.revoke(&invite)?;
            if json {
                return print_json(&inv);
            }
            eprintln!(
                "invite {} is revoked; sessions it admitted were closed and new ones are refused",
                inv.id
            );
            b.note_offline();
        }
        AccessCommand::AccessLog { id, limit, json } => {
            let id = id.as_deref().map(|i| b.share_id(i)).transpose()?;
            let rows = b.log(id, limit)?;
            if json {
                return print_json(&rows);
            }
            if rows.is_empty() {
                eprintln!("nobody asked for anything yet");
                return Ok(());
            }
            let t: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        utc(r.at.max(0) as u64),
                        r.peer_id.clone(),
                        r.addr.clone().unwrap_or_else(|| "-".to_owned()),
                        if r.allowed { "allowed" } else { "denied" }.to_owned(),
                        r.reason.clone(),
                        human_size(r.bytes),
                        r.content.chars().take(16).collect(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["TIME", "PEER", "ADDRESS", "ANSWER", "REASON", "SENT", "CONTENT"],
                    &t
                )
            );
        }
    }
    Ok(())
}
