//! Access control: the one place that decides whether a peer may fetch a
//! content, for every inbound stream (`docs/protocol.md` §7.3).
//!
//! [`decide`] is a pure function of the policy (the shares holding the
//! content, this node's own downloads of it), the authenticated peer, the
//! hello's capability, the invite's recorded state and the clock. [`Access`]
//! feeds it from the store, records invite uses atomically and the access log,
//! and tells running content tasks when any policy changed so that they check
//! their sessions again (and close those no longer allowed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use libp2p_identity::PeerId;
use shoal_core::invite::{Invite, InviteId};
use shoal_core::proto::DenyReason;
use shoal_core::ContentId;
use shoal_store::{Grant, InviteUse, NewAccessLog, Redeem, Store, Visibility};
use tokio::sync::watch;

use crate::error::NodeError;

/// How this node holds a content it downloads (and seeds while the download's
/// task lives).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownloadPolicy {
    /// Anyone who knows the id may fetch it from us (the default: unlisted).
    Unlisted,
    /// Fetched with an invite: served to nobody else.
    Private,
}

/// Why a peer was let in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allowed {
    /// A share that holds it is public or unlisted.
    Open {
        share: ContentId,
        visibility: Visibility,
    },
    /// This node downloads it, unlisted.
    Download,
    /// The peer is on a private share's allowlist.
    Allowlist { share: ContentId },
    /// The peer holds a valid invite (its use is recorded by [`Access::admit`]).
    Invite {
        share: ContentId,
        id: InviteId,
        max_uses: Option<u64>,
    },
}

impl Allowed {
    /// The share the decision was made under (`None` for a download).
    pub fn share(&self) -> Option<ContentId> {
        match self {
            Allowed::Open { share, .. }
            | Allowed::Allowlist { share }
            | Allowed::Invite { share, .. } => Some(*share),
            Allowed::Download => None,
        }
    }

    /// How it was allowed, as the access log says it.
    pub fn label(&self) -> String {
        match self {
            Allowed::Open { visibility, .. } => visibility.as_str().to_string(),
            Allowed::Download => "download (unlisted)".to_string(),
            Allowed::Allowlist { .. } => "allowlist".to_string(),
            Allowed::Invite { id, .. } => format!("invite {id}"),
        }
    }
}

/// Why a peer was refused: the protocol's reason and a one-line text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    pub reason: DenyReason,
    pub text: String,
    /// The share the request was decided under, if some share holds the content.
    pub share: Option<ContentId>,
}

/// The outcome of [`decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow(Allowed),
    Deny(Denied),
}

impl Verdict {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allow(_))
    }
}

/// Everything [`decide`] looks at.
pub struct Request<'a> {
    /// This node's peer id (the only issuer whose invites it honours).
    pub local: PeerId,
    /// The transport-authenticated remote peer.
    pub peer: PeerId,
    /// The content the hello names.
    pub content: ContentId,
    /// The shares holding the content.
    pub grants: &'a [Grant],
    /// This node's download of the content, if one runs.
    pub download: Option<DownloadPolicy>,
    /// The hello's capability (empty: none).
    pub capability: &'a [u8],
    /// Unix seconds.
    pub now: u64,
    /// The recorded state of an invite this node issued (`None`: unknown).
    pub invite_use: &'a dyn Fn(&InviteId) -> Option<InviteUse>,
}

/// Formats Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant), for the proleptic Gregorian calendar.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn deny(reason: DenyReason, text: impl Into<String>, share: Option<ContentId>) -> Verdict {
    Verdict::Deny(Denied {
        reason,
        text: text.into(),
        share,
    })
}

/// Decides whether `req.peer` may fetch `req.content`. Checks, in order: some
/// share or download holds it (`NotFound`); a public or unlisted share, or an
/// unlisted download (allowed); the allowlist of a private share (allowed);
/// then the invite: none (`AccessDenied`), malformed, badly signed or issued by
/// another node (`CapabilityInvalid`), for other content (`CapabilityWrongContent`),
/// for another peer (`CapabilityWrongPeer`), expired (`CapabilityExpired`),
/// revoked or unknown (`CapabilityRevoked`), its uses taken by other peers
/// (`CapabilityUsedUp`).
pub fn decide(req: &Request<'_>) -> Verdict {
    let first_share = req.grants.first().map(|g| g.share);
    if req.grants.is_empty() && req.download.is_none() {
        return deny(DenyReason::NotFound, "not shared here", None);
    }
    if let Some(g) = req
        .grants
        .iter()
        .find(|g| matches!(g.visibility, Visibility::Public | Visibility::Unlisted))
    {
        return Verdict::Allow(Allowed::Open {
            share: g.share,
            visibility: g.visibility,
        });
    }
    if req.download == Some(DownloadPolicy::Unlisted) {
        return Verdict::Allow(Allowed::Download);
    }
    let peer_text = req.peer.to_base58();
    if let Some(g) = req.grants.iter().find(|g| g.allow.contains(&peer_text)) {
        return Verdict::Allow(Allowed::Allowlist { share: g.share });
    }
    if req.grants.is_empty() {
        // Only a private download holds it: nobody else gets it from us.
        return deny(DenyReason::NotFound, "not shared here", None);
    }
    if req.capability.is_empty() {
        return deny(
            DenyReason::AccessDenied,
            "this share is private: ask the sharer for an invite",
            first_share,
        );
    }
    let invite = match Invite::decode(req.capability) {
        Ok(i) => i,
        Err(e) => {
            return deny(
                DenyReason::CapabilityInvalid,
                format!("the invite is not valid: {e}"),
                first_share,
            )
        }
    };
    if invite.issuer_peer() != req.local || !invite.verify_signature() {
        return deny(
            DenyReason::CapabilityInvalid,
            "the invite is not signed by this node",
            first_share,
        );
    }
    let Some(grant) = req.grants.iter().find(|g| g.share == invite.content) else {
        return deny(
            DenyReason::CapabilityWrongContent,
            "the invite is for other content",
            first_share,
        );
    };
    let share = Some(grant.share);
    if invite.recipient.is_some_and(|r| r != req.peer) {
        return deny(
            DenyReason::CapabilityWrongPeer,
            "the invite is for another peer",
            share,
        );
    }
    if let Some(e) = invite.expires_at.filter(|_| invite.expired_at(req.now)) {
        return deny(
            DenyReason::CapabilityExpired,
            format!("the invite expired at {}", utc(e)),
            share,
        );
    }
    let Some(state) = (req.invite_use)(&invite.id) else {
        return deny(
            DenyReason::CapabilityRevoked,
            "the invite was revoked",
            share,
        );
    };
    if state.revoked {
        return deny(
            DenyReason::CapabilityRevoked,
            "the invite was revoked",
            share,
        );
    }
    if let Some(max) = invite.max_uses {
        let others = state.users.iter().filter(|u| **u != peer_text).count() as u64;
        if others >= max {
            return deny(
                DenyReason::CapabilityUsedUp,
                "the invite's uses are all taken",
                share,
            );
        }
    }
    Verdict::Allow(Allowed::Invite {
        share: grant.share,
        id: invite.id,
        max_uses: invite.max_uses,
    })
}

/// The access service: feeds [`decide`] from the store and this node's
/// downloads, records uses and the log, and announces policy changes.
pub struct Access {
    store: Store,
    local: PeerId,
    downloads: Mutex<HashMap<ContentId, (usize, DownloadPolicy)>>,
    generation: watch::Sender<u64>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("local", &self.local)
            .finish()
    }
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Keeps a download's grant registered while it lives.
pub(crate) struct DownloadGrant {
    access: Arc<Access>,
    id: ContentId,
}

impl Drop for DownloadGrant {
    fn drop(&mut self) {
        if let Ok(mut d) = self.access.downloads.lock() {
            if let Some(e) = d.get_mut(&self.id) {
                e.0 -= 1;
                if e.0 == 0 {
                    d.remove(&self.id);
                }
            }
        }
        self.access.changed();
    }
}

impl Access {
    pub fn new(store: Store, local: PeerId) -> Self {
        Self {
            store,
            local,
            downloads: Mutex::new(HashMap::new()),
            generation: watch::Sender::new(0),
        }
    }

    /// Tells every content task that some policy changed: each checks its
    /// sessions again at once.
    pub fn changed(&self) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Notified on every [`changed`](Self::changed).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    pub(crate) fn register_download(
        self: &Arc<Self>,
        id: ContentId,
        policy: DownloadPolicy,
    ) -> DownloadGrant {
        if let Ok(mut d) = self.downloads.lock() {
            let e = d.entry(id).or_insert((0, policy));
            e.0 += 1;
            // The stricter policy wins when two downloads of one id differ.
            if policy == DownloadPolicy::Private {
                e.1 = DownloadPolicy::Private;
            }
        }
        self.changed();
        DownloadGrant {
            access: self.clone(),
            id,
        }
    }

    fn download_policy(&self, id: &ContentId) -> Option<DownloadPolicy> {
        self.downloads.lock().ok()?.get(id).map(|e| e.1)
    }

    /// Whether anything here holds `id` (a share or a download): a seeding task
    /// for an id nothing holds ends.
    pub fn holds(&self, id: &ContentId) -> Result<bool, NodeError> {
        Ok(self.download_policy(id).is_some() || !self.store.db().grants_of(id)?.is_empty())
    }

    /// Decides for `peer` and `content` now, without recording anything (the
    /// check of a running session).
    pub fn check(
        &self,
        content: &ContentId,
        peer: &PeerId,
        capability: &[u8],
    ) -> Result<Verdict, NodeError> {
        let mut v = self.check_all(content, [(peer, capability)])?;
        v.pop()
            .ok_or_else(|| NodeError::Internal("no verdict for one session".into()))
    }

    /// Decides for many `(peer, capability)` sessions of one content at once,
    /// reading the policy once (the periodic re-check of a content task).
    pub fn check_all<'a>(
        &self,
        content: &ContentId,
        sessions: impl IntoIterator<Item = (&'a PeerId, &'a [u8])>,
    ) -> Result<Vec<Verdict>, NodeError> {
        let grants = self.store.db().grants_of(content)?;
        let db = self.store.db();
        let lookup = |id: &InviteId| db.invite_use(&id.0).ok().flatten();
        let download = self.download_policy(content);
        let now = now_secs();
        Ok(sessions
            .into_iter()
            .map(|(peer, capability)| {
                decide(&Request {
                    local: self.local,
                    peer: *peer,
                    content: *content,
                    grants: &grants,
                    download,
                    capability,
                    now,
                    invite_use: &lookup,
                })
            })
            .collect())
    }

    /// Admits a new stream: decides, records the invite use (atomically against
    /// its use count) and logs the answer. Returns the verdict and the log row.
    pub fn admit(
        &self,
        content: &ContentId,
        peer: &PeerId,
        addr: Option<&str>,
        capability: &[u8],
    ) -> Result<(Verdict, Option<i64>), NodeError> {
        let mut verdict = self.check(content, peer, capability)?;
        if let Verdict::Allow(Allowed::Invite {
            share,
            id,
            max_uses,
            ..
        }) = &verdict
        {
            let peer_text = peer.to_base58();
            match self
                .store
                .db()
                .redeem_invite(&id.0, &peer_text, *max_uses)?
            {
                Redeem::Ok => {}
                Redeem::Revoked => {
                    verdict = deny(
                        DenyReason::CapabilityRevoked,
                        "the invite was revoked",
                        Some(*share),
                    )
                }
                Redeem::UsedUp => {
                    verdict = deny(
                        DenyReason::CapabilityUsedUp,
                        "the invite's uses are all taken",
                        Some(*share),
                    )
                }
            }
        }
        let peer_text = peer.to_base58();
        let (allowed, reason, share) = match &verdict {
            Verdict::Allow(a) => (true, a.label(), a.share()),
            Verdict::Deny(d) => (false, format!("{:?}: {}", d.reason, d.text), d.share),
        };
        let pk = self.store.db().log_access(&NewAccessLog {
            content: *content,
            share,
            peer_id: &peer_text,
            addr,
            allowed,
            reason: &reason,
        });
        let pk = match pk {
            Ok(pk) => Some(pk),
            Err(e) => {
                tracing::warn!(error = %e, "cannot write the access log");
                None
            }
        };
        Ok((verdict, pk))
    }

    /// Adds bytes served on an admitted stream to its log row.
    pub fn served(&self, log: i64, bytes: u64) {
        if bytes == 0 {
            return;
        }
        if let Err(e) = self.store.db().add_access_bytes(log, bytes) {
            tracing::warn!(error = %e, "cannot update the access log");
        }
    }
}

/// The one-line message a downloader shows for an access denial, using what it
/// knows of its own invite (the expiry time) rather than the peer's text.
pub fn denial_message(reason: DenyReason, capability: &[u8], peer_text: &str) -> String {
    let invite = Invite::decode(capability).ok();
    match reason {
        DenyReason::AccessDenied => {
            "this share is private: ask the sharer to allow your peer id or send an invite"
                .to_string()
        }
        DenyReason::CapabilityExpired => match invite.and_then(|i| i.expires_at) {
            Some(e) => format!(
                "this invite expired at {}; ask the sharer for a new one",
                utc(e)
            ),
            None => "this invite expired; ask the sharer for a new one".to_string(),
        },
        DenyReason::CapabilityRevoked => {
            "this invite was revoked by the sharer; ask the sharer for a new one".to_string()
        }
        DenyReason::CapabilityUsedUp => {
            "this invite has been used by as many peers as it allows; ask the sharer for a new one"
                .to_string()
        }
        DenyReason::CapabilityWrongPeer => {
            "this invite was made for another peer id; ask the sharer for one made for yours"
                .to_string()
        }
        DenyReason::CapabilityWrongContent => {
            "this invite is for other content; check the ticket".to_string()
        }
        DenyReason::CapabilityInvalid => {
            "this invite is not valid (damaged, or not signed by the sharer); ask for a new ticket"
                .to_string()
        }
        DenyReason::NotFound if !peer_text.is_empty() && peer_text != "not shared here" => format!(
            "the sharer no longer shares this content: {}",
            peer_text.escape_debug()
        ),
        DenyReason::NotFound => "the sharer no longer shares this content".to_string(),
        other => format!("refused: {other:?} ({})", peer_text.escape_debug()),
    }
}

/// Whether a deny reason (or a close with `AccessRevoked`) is about access:
/// such a peer is not dialed again for this download.
pub fn is_access_denial(reason: DenyReason) -> bool {
    matches!(
        reason,
        DenyReason::AccessDenied
            | DenyReason::CapabilityExpired
            | DenyReason::CapabilityInvalid
            | DenyReason::CapabilityRevoked
            | DenyReason::CapabilityUsedUp
            | DenyReason::CapabilityWrongPeer
            | DenyReason::CapabilityWrongContent
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_key(n: u8) -> Keypair {
        Keypair::ed25519_from_bytes([n; 32]).expect("32 bytes make a key")
    }
    use libp2p_identity::Keypair;
    use shoal_core::Kind;

    struct World {
        key: Keypair,
        local: PeerId,
        peer: PeerId,
        content: ContentId,
        folder: ContentId,
    }

    fn world() -> World {
        let key = test_key(1);
        World {
            local: key.public().to_peer_id(),
            key,
            peer: test_key(3).public().to_peer_id(),
            content: ContentId::from_bytes([1; 32]),
            folder: ContentId::from_bytes([2; 32]),
        }
    }

    fn grant(share: ContentId, visibility: Visibility, allow: &[PeerId]) -> Grant {
        Grant {
            share,
            visibility,
            allow: allow.iter().map(|p| p.to_base58()).collect(),
        }
    }

    fn invite(w: &World, content: ContentId, recipient: Option<PeerId>) -> Vec<u8> {
        Invite::issue(
            &w.key,
            InviteId([4; 16]),
            content,
            Kind::File,
            recipient,
            100,
            Some(200),
            Some(2),
        )
        .unwrap()
        .encode()
    }

    fn fresh(_: &InviteId) -> Option<InviteUse> {
        Some(InviteUse {
            revoked: false,
            users: vec![],
        })
    }

    fn run(
        w: &World,
        grants: &[Grant],
        download: Option<DownloadPolicy>,
        cap: &[u8],
        now: u64,
        lookup: &dyn Fn(&InviteId) -> Option<InviteUse>,
    ) -> Verdict {
        decide(&Request {
            local: w.local,
            peer: w.peer,
            content: w.content,
            grants,
            download,
            capability: cap,
            now,
            invite_use: lookup,
        })
    }

    fn reason(v: Verdict) -> DenyReason {
        match v {
            Verdict::Deny(d) => d.reason,
            Verdict::Allow(a) => panic!("allowed: {a:?}"),
        }
    }

    #[test]
    fn nothing_holding_it_is_not_found() {
        let w = world();
        assert_eq!(
            reason(run(&w, &[], None, &[], 0, &fresh)),
            DenyReason::NotFound
        );
        // A private download is served to nobody.
        assert_eq!(
            reason(run(&w, &[], Some(DownloadPolicy::Private), &[], 0, &fresh)),
            DenyReason::NotFound
        );
    }

    #[test]
    fn open_shares_and_unlisted_downloads_allow_anyone() {
        let w = world();
        for v in [Visibility::Public, Visibility::Unlisted] {
            let g = [
                grant(w.folder, Visibility::Private, &[]),
                grant(w.content, v, &[]),
            ];
            assert_eq!(
                run(&w, &g, None, &[], 0, &fresh),
                Verdict::Allow(Allowed::Open {
                    share: w.content,
                    visibility: v
                })
            );
        }
        assert_eq!(
            run(&w, &[], Some(DownloadPolicy::Unlisted), &[], 0, &fresh),
            Verdict::Allow(Allowed::Download)
        );
    }

    #[test]
    fn private_needs_the_allowlist_or_an_invite() {
        let w = world();
        let g = [grant(
            w.content,
            Visibility::Private,
            &[test_key(4).public().to_peer_id()],
        )];
        assert_eq!(
            reason(run(&w, &g, None, &[], 0, &fresh)),
            DenyReason::AccessDenied
        );
        let g = [grant(w.content, Visibility::Private, &[w.peer])];
        assert_eq!(
            run(&w, &g, None, &[], 0, &fresh),
            Verdict::Allow(Allowed::Allowlist { share: w.content })
        );
    }

    #[test]
    fn a_valid_invite_allows_until_it_expires() {
        let w = world();
        let g = [grant(w.content, Visibility::Private, &[])];
        let cap = invite(&w, w.content, Some(w.peer));
        assert!(matches!(
            run(&w, &g, None, &cap, 150, &fresh),
            Verdict::Allow(Allowed::Invite { .. })
        ));
        assert_eq!(
            reason(run(&w, &g, None, &cap, 200, &fresh)),
            DenyReason::CapabilityExpired
        );
        match run(&w, &g, None, &cap, 10_000, &fresh) {
            Verdict::Deny(d) => assert!(d.text.contains("1970-01-01 00:03:20 UTC"), "{}", d.text),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn broken_forged_and_misdirected_invites_are_refused() {
        let w = world();
        let g = [grant(w.content, Visibility::Private, &[])];
        assert_eq!(
            reason(run(&w, &g, None, b"junk", 150, &fresh)),
            DenyReason::CapabilityInvalid
        );
        let mut flipped = invite(&w, w.content, None);
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            reason(run(&w, &g, None, &flipped, 150, &fresh)),
            DenyReason::CapabilityInvalid
        );
        // Signed by another node (valid signature, wrong issuer).
        let other = World {
            key: test_key(2),
            ..world()
        };
        let foreign = invite(&other, w.content, None);
        assert_eq!(
            reason(run(&w, &g, None, &foreign, 150, &fresh)),
            DenyReason::CapabilityInvalid
        );
        let elsewhere = invite(&w, ContentId::from_bytes([9; 32]), None);
        assert_eq!(
            reason(run(&w, &g, None, &elsewhere, 150, &fresh)),
            DenyReason::CapabilityWrongContent
        );
        let someone_else = invite(&w, w.content, Some(test_key(5).public().to_peer_id()));
        assert_eq!(
            reason(run(&w, &g, None, &someone_else, 150, &fresh)),
            DenyReason::CapabilityWrongPeer
        );
    }

    #[test]
    fn revoked_unknown_and_used_up_invites_are_refused() {
        let w = world();
        let g = [grant(w.content, Visibility::Private, &[])];
        let cap = invite(&w, w.content, None);
        let unknown = |_: &InviteId| None;
        assert_eq!(
            reason(run(&w, &g, None, &cap, 150, &unknown)),
            DenyReason::CapabilityRevoked
        );
        let revoked = |_: &InviteId| {
            Some(InviteUse {
                revoked: true,
                users: vec![],
            })
        };
        assert_eq!(
            reason(run(&w, &g, None, &cap, 150, &revoked)),
            DenyReason::CapabilityRevoked
        );
        let two_others = |_: &InviteId| {
            Some(InviteUse {
                revoked: false,
                users: vec!["a".into(), "b".into()],
            })
        };
        assert_eq!(
            reason(run(&w, &g, None, &cap, 150, &two_others)),
            DenyReason::CapabilityUsedUp
        );
        // A peer that already used it keeps its use.
        let me = w.peer.to_base58();
        let me_and_one = move |_: &InviteId| {
            Some(InviteUse {
                revoked: false,
                users: vec!["a".into(), me.clone()],
            })
        };
        assert!(run(&w, &g, None, &cap, 150, &me_and_one).is_allowed());
    }

    #[test]
    fn a_folder_invite_covers_its_files_and_nothing_else() {
        let w = world();
        // The file is held by the private folder share only.
        let g = [grant(w.folder, Visibility::Private, &[])];
        let folder_cap = invite(&w, w.folder, None);
        assert!(matches!(
            run(&w, &g, None, &folder_cap, 150, &fresh),
            Verdict::Allow(Allowed::Invite { share, .. }) if share == w.folder
        ));
        // A file outside the folder (held by another private share).
        let other = [grant(
            ContentId::from_bytes([7; 32]),
            Visibility::Private,
            &[],
        )];
        assert_eq!(
            reason(run(&w, &other, None, &folder_cap, 150, &fresh)),
            DenyReason::CapabilityWrongContent
        );
    }

    #[test]
    fn utc_formats_civil_time() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_220_000), "2026-12-02 14:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn downloader_messages_name_the_expiry() {
        let w = world();
        let cap = invite(&w, w.content, None);
        let m = denial_message(DenyReason::CapabilityExpired, &cap, "");
        assert_eq!(
            m,
            "this invite expired at 1970-01-01 00:03:20 UTC; ask the sharer for a new one"
        );
        assert!(is_access_denial(DenyReason::CapabilityUsedUp));
        assert!(!is_access_denial(DenyReason::Busy));
    }
}
