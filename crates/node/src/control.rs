//! Share and access management: policies, allowlists, invites, the access log.
//!
//! [`AccessControl`] works on a store and the node's identity key, with or
//! without a running node: with one (`notify`), every change reaches the
//! running sessions at once; without, a node serving from the same data
//! directory in another process picks it up within a second (content tasks
//! check their sessions every second) and for every new stream.

use std::sync::Arc;
use std::time::Duration;

use libp2p_identity::{Keypair, PeerId};
use shoal_core::invite::{Invite, InviteId, MAX_USES};
use shoal_core::ContentId;
use shoal_store::{AccessLogEntry, InviteRecord, Share, Store, StoreError, Visibility};

use crate::access::{now_secs, Access};

/// Longest invite lifetime accepted (ten years).
pub const MAX_INVITE_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Most access-log rows one call returns.
pub const MAX_LOG_ROWS: u32 = 1000;

/// What went wrong managing access.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No share with this id.
    #[error("no share with id {0}; `shoal shares` lists them")]
    NotShared(ContentId),
    /// No invite with this id.
    #[error("no invite with id {0}; `shoal invites` lists them")]
    UnknownInvite(String),
    /// A request that makes no sense (bad duration, use count, id).
    #[error("{0}")]
    Invalid(String),
}

/// A share's policy, as `shoal access` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccessView {
    pub share: Share,
    /// Peer ids allowed while the share is private.
    pub allow: Vec<String>,
    pub invites: Vec<InviteRecord>,
}

/// What an invite allows (see [`AccessControl::invite`]).
#[derive(Debug, Clone, Default)]
pub struct InviteOptions {
    /// Only this peer may use it.
    pub to: Option<PeerId>,
    /// It expires this long after it is made.
    pub expires: Option<Duration>,
    /// At most this many distinct peers may use it.
    pub uses: Option<u64>,
}

/// Share and access management over a store (see the module docs).
pub struct AccessControl {
    store: Store,
    keypair: Keypair,
    notify: Option<Arc<Access>>,
}

impl AccessControl {
    pub fn new(store: Store, keypair: Keypair, notify: Option<Arc<Access>>) -> Self {
        Self {
            store,
            keypair,
            notify,
        }
    }

    fn changed(&self) {
        if let Some(a) = &self.notify {
            a.changed();
        }
    }

    fn share_of(&self, id: &ContentId) -> Result<Share, ControlError> {
        self.store.share(id)?.ok_or(ControlError::NotShared(*id))
    }

    /// Changes a share's policy. Sessions it no longer allows are closed
    /// (`AccessRevoked`).
    pub fn set_visibility(&self, id: ContentId, v: Visibility) -> Result<(), ControlError> {
        let changed = self.store.set_visibility(&id, v)?;
        self.changed();
        if !changed {
            return Err(ControlError::NotShared(id));
        }
        Ok(())
    }

    /// Stops sharing `id` (the files stay where they are): every session
    /// serving it, or a file of it, that no other share allows is closed.
    pub fn unshare(&self, id: ContentId) -> Result<Share, ControlError> {
        let share = self.share_of(&id)?;
        let removed = self.store.remove(&id)?;
        self.changed();
        if !removed {
            return Err(ControlError::NotShared(id));
        }
        Ok(share)
    }

    /// Allows `peer` to fetch share `id` while it is private. Returns false if
    /// it already was.
    pub fn allow(&self, id: ContentId, peer: PeerId) -> Result<bool, ControlError> {
        let added = self
            .store
            .db()
            .allow_peer(&id, &peer.to_base58())?
            .ok_or(ControlError::NotShared(id))?;
        self.changed();
        Ok(added)
    }

    /// Takes `peer` off share `id`'s allowlist; its sessions that nothing else
    /// allows are closed. Returns false if it was not on it.
    pub fn deny(&self, id: ContentId, peer: PeerId) -> Result<bool, ControlError> {
        let removed = self
            .store
            .db()
            .deny_peer(&id, &peer.to_base58())?
            .ok_or(ControlError::NotShared(id))?;
        self.changed();
        Ok(removed)
    }

    /// A share's policy, allowlist and invites.
    pub fn access(&self, id: ContentId) -> Result<AccessView, ControlError> {
        let share = self.share_of(&id)?;
        let allow = self.store.db().allowlist(&id)?.unwrap_or_default();
        let invites = self.store.db().invites(Some(&id))?;
        Ok(AccessView {
            share,
            allow,
            invites,
        })
    }

    /// Issues and records an invite to share `id`, signed by this node's key.
    /// Its `encoded` bytes go in a ticket's capability slot.
    pub fn invite(
        &self,
        id: ContentId,
        opts: &InviteOptions,
    ) -> Result<InviteRecord, ControlError> {
        let share = self.share_of(&id)?;
        if let Some(e) = opts.expires {
            if e < Duration::from_secs(1) || e > MAX_INVITE_LIFETIME {
                return Err(ControlError::Invalid(format!(
                    "an invite must expire between 1 s and {} days after it is made",
                    MAX_INVITE_LIFETIME.as_secs() / 86_400
                )));
            }
        }
        if let Some(u) = opts.uses {
            if u == 0 || u > MAX_USES {
                return Err(ControlError::Invalid(format!(
                    "an invite's use count must be between 1 and {MAX_USES}"
                )));
            }
        }
        let now = now_secs();
        let expires_at = opts.expires.map(|d| now + d.as_secs());
        let mut raw = [0u8; 16];
        {
            use rand::RngCore;
            rand::rng().fill_bytes(&mut raw);
        }
        let invite = Invite::issue(
            &self.keypair,
            InviteId(raw),
            id,
            share.kind,
            opts.to,
            now,
            expires_at,
            opts.uses,
        )
        .map_err(|e| ControlError::Invalid(e.to_string()))?;
        let rec = InviteRecord {
            id: invite.id.to_hex(),
            content: id,
            encoded: invite.encode(),
            recipient: opts.to.map(|p| p.to_base58()),
            expires_at: expires_at.map(|e| e as i64),
            max_uses: opts.uses.map(|u| u as i64),
            created_at: now as i64,
            revoked_at: None,
            uses: 0,
        };
        self.store.db().insert_invite(&rec, &raw)?;
        Ok(rec)
    }

    /// Invites issued for share `id` (all if `None`), newest first.
    pub fn invites(&self, id: Option<ContentId>) -> Result<Vec<InviteRecord>, ControlError> {
        Ok(self.store.db().invites(id.as_ref())?)
    }

    /// Revokes an invite: refused from now on, and the sessions it admitted are
    /// closed. Returns the invite; `revoked_at` was already set if it was
    /// revoked before.
    pub fn revoke(&self, invite: &str) -> Result<(InviteRecord, bool), ControlError> {
        let id = InviteId::parse(invite).map_err(|e| ControlError::Invalid(e.to_string()))?;
        let newly = self
            .store
            .db()
            .revoke_invite(&id.0)?
            .ok_or_else(|| ControlError::UnknownInvite(id.to_hex()))?;
        self.changed();
        let rec = self
            .store
            .db()
            .invite(&id.0)?
            .ok_or_else(|| ControlError::UnknownInvite(id.to_hex()))?;
        Ok((rec, newly))
    }

    /// The newest `limit` (at most [`MAX_LOG_ROWS`]) access-log rows, for share
    /// `id` (requests decided under it or naming it) or all.
    pub fn access_log(
        &self,
        id: Option<ContentId>,
        limit: u32,
    ) -> Result<Vec<AccessLogEntry>, ControlError> {
        Ok(self
            .store
            .db()
            .access_log(id.as_ref(), limit.clamp(1, MAX_LOG_ROWS))?)
    }
}
