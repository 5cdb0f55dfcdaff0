//! What the store keeps for access control: each private share's allowlist, the
//! invites this node issued and who used them, and the bounded access log.
//!
//! Peer ids are kept as their text (base58); this crate does not interpret them.

use rusqlite::{params, OptionalExtension};
use shoal_core::ContentId;

use crate::db::{corrupt, id_from, now_secs, Db, Visibility};
use crate::error::StoreError;

/// Most rows the access log keeps; older rows are dropped as new ones arrive.
pub const ACCESS_LOG_MAX_ROWS: i64 = 10_000;
/// Most peers on one share's allowlist.
pub const MAX_ALLOWLIST: usize = 10_000;

/// A share that holds some content (as the share itself, or as a file of a
/// shared folder), with the policy that decides who may fetch it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The share's id (the folder's id for a file inside a shared folder).
    pub share: ContentId,
    pub visibility: Visibility,
    /// Peer ids (text) allowed when the share is private.
    pub allow: Vec<String>,
}

/// An invite as the issuer keeps it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InviteRecord {
    /// 32 hex digits.
    pub id: String,
    /// The content (share) it is for.
    pub content: ContentId,
    /// The signed invite (what the ticket carries).
    #[serde(skip)]
    pub encoded: Vec<u8>,
    pub recipient: Option<String>,
    pub expires_at: Option<i64>,
    pub max_uses: Option<i64>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// Distinct peers that used it.
    pub uses: i64,
}

/// What the serving node knows about an invite id when checking it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteUse {
    pub revoked: bool,
    /// Peers (text) that used it already.
    pub users: Vec<String>,
}

/// One access-log row.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AccessLogEntry {
    pub pk: i64,
    /// Unix seconds.
    pub at: i64,
    pub content: ContentId,
    pub share: Option<ContentId>,
    pub peer_id: String,
    pub addr: Option<String>,
    pub allowed: bool,
    /// Why: how it was allowed (`public`, `unlisted`, `allowlist`, `invite <id>`,
    /// `download`) or why it was denied.
    pub reason: String,
    /// Piece bytes sent on the stream (updated when it ends).
    pub bytes: u64,
}

/// A new access-log row.
#[derive(Clone, Debug)]
pub struct NewAccessLog<'a> {
    pub content: ContentId,
    pub share: Option<ContentId>,
    pub peer_id: &'a str,
    pub addr: Option<&'a str>,
    pub allowed: bool,
    pub reason: &'a str,
}

/// The outcome of redeeming an invite use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redeem {
    /// This peer may use it (its first use was recorded now, or before).
    Ok,
    /// Unknown or revoked.
    Revoked,
    /// Every use is taken by other peers.
    UsedUp,
}

/// The row key of share `id`, if it exists.
fn share_pk(conn: &rusqlite::Connection, id: &ContentId) -> Result<Option<i64>, StoreError> {
    conn.query_row(
        "SELECT pk FROM shares WHERE id = ?1",
        [id.as_bytes().as_slice()],
        |r| r.get(0),
    )
    .optional()
    .map_err(StoreError::db("find a share"))
}

impl Db {
    /// Every share that holds `id`, with its policy and allowlist.
    pub fn grants_of(&self, id: &ContentId) -> Result<Vec<Grant>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT s.pk, s.id, s.visibility FROM shares s WHERE s.id = ?1
                 UNION
                 SELECT s.pk, s.id, s.visibility FROM share_files f JOIN shares s ON s.pk = f.share
                 WHERE f.id = ?1",
            )
            .map_err(StoreError::db("look up a share's policy"))?;
        let rows = stmt
            .query_map([id.as_bytes().as_slice()], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(StoreError::db("look up a share's policy"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::db("look up a share's policy"))?;
        let mut allow_stmt = conn
            .prepare_cached("SELECT peer_id FROM share_allow WHERE share = ?1 ORDER BY peer_id")
            .map_err(StoreError::db("read an allowlist"))?;
        let mut out = Vec::with_capacity(rows.len());
        for (pk, sid, vis) in rows {
            let visibility: Visibility = vis.parse().map_err(corrupt)?;
            let allow = if visibility == Visibility::Private {
                allow_stmt
                    .query_map([pk], |r| r.get::<_, String>(0))
                    .map_err(StoreError::db("read an allowlist"))?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(StoreError::db("read an allowlist"))?
            } else {
                Vec::new()
            };
            out.push(Grant {
                share: id_from(sid)?,
                visibility,
                allow,
            });
        }
        Ok(out)
    }

    /// The allowlist of share `id` (`None`: no such share).
    pub fn allowlist(&self, id: &ContentId) -> Result<Option<Vec<String>>, StoreError> {
        let conn = self.conn();
        let Some(pk) = share_pk(&conn, id)? else {
            return Ok(None);
        };
        let mut stmt = conn
            .prepare_cached("SELECT peer_id FROM share_allow WHERE share = ?1 ORDER BY peer_id")
            .map_err(StoreError::db("read an allowlist"))?;
        let list = stmt
            .query_map([pk], |r| r.get::<_, String>(0))
            .map_err(StoreError::db("read an allowlist"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::db("read an allowlist"))?;
        Ok(Some(list))
    }

    /// Adds `peer` to share `id`'s allowlist. `None`: no such share; else whether
    /// it was added (false: already there).
    pub fn allow_peer(&self, id: &ContentId, peer: &str) -> Result<Option<bool>, StoreError> {
        let conn = self.conn();
        let Some(pk) = share_pk(&conn, id)? else {
            return Ok(None);
        };
        let count: i64 = conn
            .query_row(
                "SELECT count(*) FROM share_allow WHERE share = ?1",
                [pk],
                |r| r.get(0),
            )
            .map_err(StoreError::db("count an allowlist"))?;
        if count as usize >= MAX_ALLOWLIST {
            return Err(StoreError::Invalid {
                what: format!("the allowlist already holds {MAX_ALLOWLIST} peers, the limit"),
            });
        }
        let n = conn
            .execute(
                "INSERT OR IGNORE INTO share_allow (share, peer_id, added_at) VALUES (?1, ?2, ?3)",
                params![pk, peer, now_secs()],
            )
            .map_err(StoreError::db("add to an allowlist"))?;
        Ok(Some(n > 0))
    }

    /// Removes `peer` from share `id`'s allowlist. `None`: no such share; else
    /// whether it was there.
    pub fn deny_peer(&self, id: &ContentId, peer: &str) -> Result<Option<bool>, StoreError> {
        let conn = self.conn();
        let Some(pk) = share_pk(&conn, id)? else {
            return Ok(None);
        };
        let n = conn
            .execute(
                "DELETE FROM share_allow WHERE share = ?1 AND peer_id = ?2",
                params![pk, peer],
            )
            .map_err(StoreError::db("remove from an allowlist"))?;
        Ok(Some(n > 0))
    }

    /// Records an invite this node issued.
    pub fn insert_invite(&self, rec: &InviteRecord, id: &[u8; 16]) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO invites (id, content, encoded, recipient, expires_at, max_uses, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id.as_slice(),
                    rec.content.as_bytes().as_slice(),
                    rec.encoded,
                    rec.recipient,
                    rec.expires_at,
                    rec.max_uses,
                    rec.created_at
                ],
            )
            .map_err(StoreError::db("record an invite"))?;
        Ok(())
    }

    /// The invites issued for `content` (all of them if `None`), newest first.
    pub fn invites(&self, content: Option<&ContentId>) -> Result<Vec<InviteRecord>, StoreError> {
        self.invites_where(content, None)
    }

    fn invites_where(
        &self,
        content: Option<&ContentId>,
        only: Option<&[u8; 16]>,
    ) -> Result<Vec<InviteRecord>, StoreError> {
        let conn = self.conn();
        let sql = "SELECT i.id, i.content, i.encoded, i.recipient, i.expires_at, i.max_uses,
                          i.created_at, i.revoked_at,
                          (SELECT count(*) FROM invite_uses u WHERE u.invite = i.id)
                   FROM invites i WHERE (?1 IS NULL OR i.content = ?1)
                     AND (?2 IS NULL OR i.id = ?2)
                   ORDER BY i.created_at DESC, i.rowid DESC";
        let mut stmt = conn
            .prepare_cached(sql)
            .map_err(StoreError::db("list invites"))?;
        let filter = content.map(|c| c.as_bytes().to_vec());
        let by_id = only.map(|i| i.to_vec());
        let rows = stmt
            .query_map(params![filter, by_id], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                    r.get::<_, i64>(8)?,
                ))
            })
            .map_err(StoreError::db("list invites"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::db("list invites"))?;
        rows.into_iter()
            .map(
                |(id, content, encoded, recipient, exp, max, created, revoked, uses)| {
                    Ok(InviteRecord {
                        id: data_encoding::HEXLOWER.encode(&id),
                        content: id_from(content)?,
                        encoded,
                        recipient,
                        expires_at: exp,
                        max_uses: max,
                        created_at: created,
                        revoked_at: revoked,
                        uses,
                    })
                },
            )
            .collect()
    }

    /// One invite by id.
    pub fn invite(&self, id: &[u8; 16]) -> Result<Option<InviteRecord>, StoreError> {
        Ok(self.invites_where(None, Some(id))?.pop())
    }

    /// Revokes an invite. `None`: unknown; `Some(false)`: already revoked.
    pub fn revoke_invite(&self, id: &[u8; 16]) -> Result<Option<bool>, StoreError> {
        let conn = self.conn();
        let n = conn
            .execute(
                "UPDATE invites SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id.as_slice(), now_secs()],
            )
            .map_err(StoreError::db("revoke an invite"))?;
        if n > 0 {
            return Ok(Some(true));
        }
        let exists: Option<i64> = conn
            .query_row(
                "SELECT 1 FROM invites WHERE id = ?1",
                [id.as_slice()],
                |r| r.get(0),
            )
            .optional()
            .map_err(StoreError::db("find an invite"))?;
        Ok(exists.map(|_| false))
    }

    /// What is known about invite `id` (`None`: this node never issued it, or
    /// forgot it).
    pub fn invite_use(&self, id: &[u8; 16]) -> Result<Option<InviteUse>, StoreError> {
        let conn = self.conn();
        let revoked: Option<Option<i64>> = conn
            .query_row(
                "SELECT revoked_at FROM invites WHERE id = ?1",
                [id.as_slice()],
                |r| r.get(0),
            )
            .optional()
            .map_err(StoreError::db("find an invite"))?;
        let Some(revoked) = revoked else {
            return Ok(None);
        };
        let mut stmt = conn
            .prepare_cached("SELECT peer_id FROM invite_uses WHERE invite = ?1")
            .map_err(StoreError::db("read an invite's uses"))?;
        let users = stmt
            .query_map([id.as_slice()], |r| r.get::<_, String>(0))
            .map_err(StoreError::db("read an invite's uses"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::db("read an invite's uses"))?;
        Ok(Some(InviteUse {
            revoked: revoked.is_some(),
            users,
        }))
    }

    /// Records `peer`'s use of invite `id`, atomically against `max_uses`
    /// distinct peers: two peers racing for the last use cannot both get it.
    pub fn redeem_invite(
        &self,
        id: &[u8; 16],
        peer: &str,
        max_uses: Option<u64>,
    ) -> Result<Redeem, StoreError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(StoreError::db("begin a transaction"))?;
        let revoked: Option<Option<i64>> = tx
            .query_row(
                "SELECT revoked_at FROM invites WHERE id = ?1",
                [id.as_slice()],
                |r| r.get(0),
            )
            .optional()
            .map_err(StoreError::db("find an invite"))?;
        match revoked {
            None | Some(Some(_)) => return Ok(Redeem::Revoked),
            Some(None) => {}
        }
        let already: Option<i64> = tx
            .query_row(
                "SELECT 1 FROM invite_uses WHERE invite = ?1 AND peer_id = ?2",
                params![id.as_slice(), peer],
                |r| r.get(0),
            )
            .optional()
            .map_err(StoreError::db("read an invite's uses"))?;
        if already.is_some() {
            return Ok(Redeem::Ok);
        }
        if let Some(max) = max_uses {
            let used: i64 = tx
                .query_row(
                    "SELECT count(*) FROM invite_uses WHERE invite = ?1",
                    [id.as_slice()],
                    |r| r.get(0),
                )
                .map_err(StoreError::db("count an invite's uses"))?;
            if used as u64 >= max {
                return Ok(Redeem::UsedUp);
            }
        }
        tx.execute(
            "INSERT INTO invite_uses (invite, peer_id, first_at) VALUES (?1, ?2, ?3)",
            params![id.as_slice(), peer, now_secs()],
        )
        .map_err(StoreError::db("record an invite's use"))?;
        tx.commit()
            .map_err(StoreError::db("commit an invite's use"))?;
        Ok(Redeem::Ok)
    }

    /// Appends an access-log row, dropping the oldest beyond
    /// [`ACCESS_LOG_MAX_ROWS`]. Returns the row's key (for [`Db::add_access_bytes`]).
    pub fn log_access(&self, e: &NewAccessLog<'_>) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO access_log (at, content, share, peer_id, addr, allowed, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                now_secs(),
                e.content.as_bytes().as_slice(),
                e.share.map(|s| s.as_bytes().to_vec()),
                e.peer_id,
                e.addr,
                e.allowed,
                e.reason
            ],
        )
        .map_err(StoreError::db("write the access log"))?;
        let pk = conn.last_insert_rowid();
        if pk % 100 == 0 {
            conn.execute(
                "DELETE FROM access_log WHERE pk <= ?1",
                [pk - ACCESS_LOG_MAX_ROWS],
            )
            .map_err(StoreError::db("rotate the access log"))?;
        }
        Ok(pk)
    }

    /// Adds `bytes` served to access-log row `pk`.
    pub fn add_access_bytes(&self, pk: i64, bytes: u64) -> Result<(), StoreError> {
        let b = i64::try_from(bytes).unwrap_or(i64::MAX);
        self.conn()
            .execute(
                "UPDATE access_log SET bytes = bytes + ?2 WHERE pk = ?1",
                params![pk, b],
            )
            .map_err(StoreError::db("update the access log"))?;
        Ok(())
    }

    /// The newest `limit` access-log rows, for one share (rows decided under it
    /// or naming it) or all.
    pub fn access_log(
        &self,
        share: Option<&ContentId>,
        limit: u32,
    ) -> Result<Vec<AccessLogEntry>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT pk, at, content, share, peer_id, addr, allowed, reason, bytes
                 FROM access_log WHERE (?1 IS NULL OR share = ?1 OR content = ?1)
                 ORDER BY pk DESC LIMIT ?2",
            )
            .map_err(StoreError::db("read the access log"))?;
        let filter = share.map(|c| c.as_bytes().to_vec());
        let rows = stmt
            .query_map(params![filter, limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, Option<Vec<u8>>>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, bool>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, i64>(8)?,
                ))
            })
            .map_err(StoreError::db("read the access log"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::db("read the access log"))?;
        rows.into_iter()
            .map(
                |(pk, at, content, share, peer_id, addr, allowed, reason, bytes)| {
                    Ok(AccessLogEntry {
                        pk,
                        at,
                        content: id_from(content)?,
                        share: share.map(id_from).transpose()?,
                        peer_id,
                        addr,
                        allowed,
                        reason,
                        bytes: bytes.max(0) as u64,
                    })
                },
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{NewShare, Share};

    fn db_with_share(vis: Visibility) -> (Db, ContentId) {
        let db = Db::open_in_memory().unwrap();
        let id = ContentId::from_bytes([9; 32]);
        let share = Share {
            id,
            kind: shoal_core::Kind::File,
            name: "a".into(),
            path: "/tmp/a".into(),
            size: 1,
            files: 1,
            visibility: vis,
            added_at: 0,
        };
        db.insert_share(&NewShare {
            share: &share,
            files: &[],
            outboards: &[],
            manifest: None,
            mtime_ns: None,
        })
        .unwrap();
        (db, id)
    }

    #[test]
    fn allowlist_and_grants() {
        let (db, id) = db_with_share(Visibility::Private);
        assert_eq!(db.allow_peer(&id, "p1").unwrap(), Some(true));
        assert_eq!(db.allow_peer(&id, "p1").unwrap(), Some(false));
        let g = db.grants_of(&id).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].allow, vec!["p1".to_string()]);
        assert_eq!(db.deny_peer(&id, "p1").unwrap(), Some(true));
        assert_eq!(db.deny_peer(&id, "p1").unwrap(), Some(false));
        let other = ContentId::from_bytes([1; 32]);
        assert_eq!(db.allow_peer(&other, "p1").unwrap(), None);
        assert!(db.grants_of(&other).unwrap().is_empty());
        // Removing the share removes its allowlist.
        db.allow_peer(&id, "p2").unwrap();
        db.remove_share(&id).unwrap();
        assert!(db.grants_of(&id).unwrap().is_empty());
    }

    #[test]
    fn invite_uses_are_distinct_peers_and_bounded() {
        let (db, id) = db_with_share(Visibility::Private);
        let iid = [5u8; 16];
        let rec = InviteRecord {
            id: String::new(),
            content: id,
            encoded: vec![1, 2],
            recipient: None,
            expires_at: None,
            max_uses: Some(1),
            created_at: 1,
            revoked_at: None,
            uses: 0,
        };
        db.insert_invite(&rec, &iid).unwrap();
        assert_eq!(db.redeem_invite(&iid, "a", Some(1)).unwrap(), Redeem::Ok);
        assert_eq!(db.redeem_invite(&iid, "a", Some(1)).unwrap(), Redeem::Ok);
        assert_eq!(
            db.redeem_invite(&iid, "b", Some(1)).unwrap(),
            Redeem::UsedUp
        );
        assert_eq!(db.invites(Some(&id)).unwrap()[0].uses, 1);
        assert_eq!(db.revoke_invite(&iid).unwrap(), Some(true));
        assert_eq!(db.revoke_invite(&iid).unwrap(), Some(false));
        assert_eq!(db.revoke_invite(&[0; 16]).unwrap(), None);
        assert_eq!(
            db.redeem_invite(&iid, "a", Some(1)).unwrap(),
            Redeem::Revoked
        );
        assert_eq!(
            db.redeem_invite(&[0; 16], "a", None).unwrap(),
            Redeem::Revoked
        );
        assert!(db.invite_use(&iid).unwrap().unwrap().revoked);
    }

    #[test]
    fn access_log_rotates_and_counts_bytes() {
        let (db, id) = db_with_share(Visibility::Public);
        let mut last = 0;
        for i in 0..(ACCESS_LOG_MAX_ROWS + 250) {
            last = db
                .log_access(&NewAccessLog {
                    content: id,
                    share: Some(id),
                    peer_id: "p",
                    addr: None,
                    allowed: i % 2 == 0,
                    reason: "public",
                })
                .unwrap();
        }
        db.add_access_bytes(last, 42).unwrap();
        let rows = db.access_log(Some(&id), 5).unwrap();
        assert_eq!(rows[0].bytes, 42);
        let n: i64 = db
            .conn()
            .query_row("SELECT count(*) FROM access_log", [], |r| r.get(0))
            .unwrap();
        assert!(n <= ACCESS_LOG_MAX_ROWS + 100, "{n} rows kept");
    }
}
