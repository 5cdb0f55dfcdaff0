//! The access-control routes: a share's policy and allowlist, invites, the
//! access log. Every handler calls the node's `AccessControl` (through the
//! peer, so running sessions see each change at once); only the mapping of its
//! errors to HTTP statuses lives here.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use shoal_core::ContentId;
use shoal_node::control::InviteOptions;
use shoal_node::host::HostError;
use shoal_store::{AccessLogEntry, InviteRecord, Visibility};
use utoipa::ToSchema;

use crate::api::{parse_id, share_view, ShareView};
use crate::error::{ApiError, ApiJson, ApiPath as Path, ErrorBody};
use crate::{AppState, Event};

type St = State<Arc<AppState>>;
type ApiResult<T> = Result<T, ApiError>;

/// Rows the access-log routes return (newest first).
const LOG_ROWS: u32 = 500;

/// Who may fetch a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Announced on the DHT; anyone may fetch it.
    Public,
    /// Anyone with its ticket (or id) may fetch it; not announced.
    Unlisted,
    /// Only peers on its allowlist, or holders of a valid invite.
    Private,
}

impl From<Policy> for Visibility {
    fn from(p: Policy) -> Self {
        match p {
            Policy::Public => Visibility::Public,
            Policy::Unlisted => Visibility::Unlisted,
            Policy::Private => Visibility::Private,
        }
    }
}

impl From<Visibility> for Policy {
    fn from(v: Visibility) -> Self {
        match v {
            Visibility::Public => Policy::Public,
            Visibility::Unlisted => Policy::Unlisted,
            Visibility::Private => Policy::Private,
        }
    }
}

/// Body of `PATCH /api/v1/shares/{id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SharePatch {
    pub visibility: Policy,
}

/// Body of `POST /api/v1/shares/{id}/allow`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowBody {
    /// The peer id to allow (as `shoal status` prints it).
    pub peer_id: String,
}

/// Body of `POST /api/v1/shares/{id}/invites`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInviteBody {
    /// Only this peer id may use the invite (default: whoever holds it).
    #[serde(default)]
    pub to: Option<String>,
    /// How long the invite is valid, e.g. `30m`, `7d` (default: no expiry).
    #[serde(default)]
    pub expires_in: Option<String>,
    /// How many distinct peers may use it (default: unlimited).
    #[serde(default)]
    pub uses: Option<u64>,
}

/// Where an invite stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InviteState {
    Active,
    Expired,
    Revoked,
    UsedUp,
}

/// An invite this node issued.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InviteView {
    /// 32 hex digits.
    pub id: String,
    /// The share it is for (content id, hex).
    pub share: String,
    /// The only peer id that may use it, or null for anyone.
    pub recipient: Option<String>,
    /// Unix seconds, or null for never.
    pub expires_at: Option<i64>,
    /// Distinct peers allowed, or null for unlimited.
    pub max_uses: Option<i64>,
    /// Distinct peers that used it.
    pub uses: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds, or null.
    pub revoked_at: Option<i64>,
    pub state: InviteState,
    /// A ticket naming this peer and carrying the invite (null once the share
    /// is gone).
    pub ticket: Option<String>,
}

/// A share's access policy.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccessView {
    pub share: ShareView,
    /// Peer ids allowed while the share is private.
    pub allow: Vec<String>,
    pub invites: Vec<InviteView>,
}

/// One access-log row: who asked for what, and the answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccessLogView {
    /// Unix seconds.
    pub at: i64,
    /// The content asked for (hex).
    pub content: String,
    /// The share it was decided under (hex), or null if none holds it.
    pub share: Option<String>,
    pub peer_id: String,
    /// The peer's address as seen, with the path kind, or null.
    pub addr: Option<String>,
    pub allowed: bool,
    /// How it was allowed (`public`, `unlisted`, `allowlist`, `invite <id>`) or
    /// why it was denied.
    pub reason: String,
    /// Piece bytes sent on the stream (counted when it ends).
    pub bytes: u64,
}

/// Maps the node's access errors to HTTP: unknown share or invite 404, bad
/// request values 422 (naming `field`), store failures 500.
fn control_error(e: impl Into<HostError>, field: &str) -> ApiError {
    match e.into() {
        HostError::NotShared(id) => ApiError::not_found(format!(
            "no share with id {id}; GET /api/v1/shares lists them"
        )),
        HostError::UnknownInvite(i) => ApiError::not_found(format!(
            "no invite with id {i}; GET /api/v1/invites lists them"
        )),
        HostError::Invalid(m) => ApiError::unprocessable(field, m),
        other => {
            tracing::warn!(error = %other, "access control failed");
            ApiError::internal(format!("access control failed: {other}"))
        }
    }
}

fn parse_peer(s: &str, field: &str) -> ApiResult<shoal_net::PeerId> {
    s.trim().parse().map_err(|_| {
        ApiError::unprocessable(
            field,
            format!("{s:?} is not a peer id (like 12D3KooW…, as `shoal status` prints it)"),
        )
    })
}

pub(crate) fn invite_view(st: &AppState, r: &InviteRecord) -> InviteView {
    let ticket = st.peer.store().share(&r.content).ok().flatten().map(|s| {
        let mut t = st.peer.ticket(&s);
        t.capability = Some(r.encoded.clone());
        let _ = t.shrink_to_fit();
        t.to_string()
    });
    invite_to_view(r, ticket)
}

/// The API's view of an invite (also what `shoal invites --json` prints
/// without a daemon), with `ticket` carrying it.
pub fn invite_to_view(r: &InviteRecord, ticket: Option<String>) -> InviteView {
    let now = shoal_node::access::now_secs() as i64;
    let state = if r.revoked_at.is_some() {
        InviteState::Revoked
    } else if r.expires_at.is_some_and(|e| now >= e) {
        InviteState::Expired
    } else if r.max_uses.is_some_and(|m| r.uses >= m) {
        InviteState::UsedUp
    } else {
        InviteState::Active
    };
    InviteView {
        id: r.id.clone(),
        share: r.content.to_hex(),
        recipient: r.recipient.clone(),
        expires_at: r.expires_at,
        max_uses: r.max_uses,
        uses: r.uses,
        created_at: r.created_at,
        revoked_at: r.revoked_at,
        state,
        ticket,
    }
}

/// The API's view of an access-log row.
pub fn log_view(e: &AccessLogEntry) -> AccessLogView {
    AccessLogView {
        at: e.at,
        content: e.content.to_hex(),
        share: e.share.map(|s| s.to_hex()),
        peer_id: e.peer_id.clone(),
        addr: e.addr.clone(),
        allowed: e.allowed,
        reason: e.reason.clone(),
        bytes: e.bytes,
    }
}

fn access_view(st: &AppState, id: ContentId) -> ApiResult<AccessView> {
    let a = st
        .peer
        .control()
        .access(id)
        .map_err(|e| control_error(e, "id"))?;
    Ok(AccessView {
        share: share_view(st, &a.share),
        allow: a.allow,
        invites: a.invites.iter().map(|r| invite_view(st, r)).collect(),
    })
}

fn changed(st: &AppState, id: ContentId) {
    let _ = st
        .events
        .send(Event::new("access", serde_json::json!({"id": id.to_hex()})));
}

#[utoipa::path(patch, path = "/api/v1/shares/{id}", tag = "access", request_body = SharePatch,
    params(("id" = String, Path, description = "content id, 64 hex digits")),
    responses((status = 200, body = ShareView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn patch_share(
    State(st): St,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SharePatch>,
) -> ApiResult<Json<ShareView>> {
    let id = parse_id(&id)?;
    st.peer
        .set_visibility(id, body.visibility.into())
        .map_err(|e| control_error(e, "visibility"))?;
    if body.visibility != Policy::Public {
        let net = st.peer.net().clone();
        tokio::spawn(async move {
            let _ = net.unprovide(&id).await;
        });
    }
    let s = st
        .peer
        .store()
        .share(&id)
        .map_err(|e| ApiError::internal(format!("cannot read the share: {e}")))?
        .ok_or_else(|| ApiError::not_found(format!("no share with id {id}")))?;
    let view = share_view(&st, &s);
    let _ = st.events.send(Event::new(
        "share",
        serde_json::to_value(&view).unwrap_or_default(),
    ));
    changed(&st, id);
    Ok(Json(view))
}

#[utoipa::path(get, path = "/api/v1/shares/{id}/access", tag = "access",
    params(("id" = String, Path, description = "content id, 64 hex digits")),
    responses((status = 200, body = AccessView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn get_access(
    State(st): St,
    Path(id): Path<String>,
) -> ApiResult<Json<AccessView>> {
    let id = parse_id(&id)?;
    Ok(Json(access_view(&st, id)?))
}

#[utoipa::path(post, path = "/api/v1/shares/{id}/allow", tag = "access", request_body = AllowBody,
    params(("id" = String, Path, description = "content id, 64 hex digits")),
    responses((status = 200, body = AccessView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn allow_peer(
    State(st): St,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AllowBody>,
) -> ApiResult<Json<AccessView>> {
    let id = parse_id(&id)?;
    let peer = parse_peer(&body.peer_id, "peer_id")?;
    st.peer
        .control()
        .allow(id, peer)
        .map_err(|e| control_error(e, "peer_id"))?;
    changed(&st, id);
    Ok(Json(access_view(&st, id)?))
}

#[utoipa::path(delete, path = "/api/v1/shares/{id}/allow/{peer_id}", tag = "access",
    params(("id" = String, Path, description = "content id, 64 hex digits"),
        ("peer_id" = String, Path, description = "the peer id to take off the allowlist")),
    responses((status = 200, body = AccessView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn deny_peer(
    State(st): St,
    Path((id, peer)): Path<(String, String)>,
) -> ApiResult<Json<AccessView>> {
    let id = parse_id(&id)?;
    let peer = parse_peer(&peer, "peer_id")?;
    st.peer
        .control()
        .deny(id, peer)
        .map_err(|e| control_error(e, "peer_id"))?;
    changed(&st, id);
    Ok(Json(access_view(&st, id)?))
}

#[utoipa::path(post, path = "/api/v1/shares/{id}/invites", tag = "access", request_body = NewInviteBody,
    params(("id" = String, Path, description = "content id, 64 hex digits")),
    responses((status = 201, body = InviteView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub(crate) async fn create_invite(
    State(st): St,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NewInviteBody>,
) -> ApiResult<(StatusCode, Json<InviteView>)> {
    let id = parse_id(&id)?;
    let to = body
        .to
        .as_deref()
        .map(|t| parse_peer(t, "to"))
        .transpose()?;
    let expires = body
        .expires_in
        .as_deref()
        .map(|d| {
            shoal_core::parse_duration(d)
                .map_err(|e| ApiError::unprocessable("expires_in", format!("{d:?}: {e}")))
        })
        .transpose()?;
    let opts = InviteOptions {
        to,
        expires,
        uses: body.uses,
    };
    let (rec, _) = st.peer.invite(id, &opts).map_err(|e| {
        let field = match &e {
            HostError::Invalid(m) if m.contains("use count") => "uses",
            _ => "expires_in",
        };
        control_error(e, field)
    })?;
    changed(&st, id);
    Ok((StatusCode::CREATED, Json(invite_view(&st, &rec))))
}

#[utoipa::path(get, path = "/api/v1/shares/{id}/invites", tag = "access",
    params(("id" = String, Path, description = "content id, 64 hex digits")),
    responses((status = 200, body = [InviteView]), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn share_invites(
    State(st): St,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<InviteView>>> {
    let id = parse_id(&id)?;
    Ok(Json(access_view(&st, id)?.invites))
}

#[utoipa::path(get, path = "/api/v1/invites", tag = "access",
    responses((status = 200, body = [InviteView]), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_invites(State(st): St) -> ApiResult<Json<Vec<InviteView>>> {
    let all = st
        .peer
        .control()
        .invites(None)
        .map_err(|e| control_error(e, "id"))?;
    Ok(Json(all.iter().map(|r| invite_view(&st, r)).collect()))
}

#[utoipa::path(post, path = "/api/v1/invites/{invite_id}/revoke", tag = "access",
    params(("invite_id" = String, Path, description = "invite id, 32 hex digits")),
    responses((status = 200, body = InviteView), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn revoke_invite(
    State(st): St,
    Path(invite_id): Path<String>,
) -> ApiResult<Json<InviteView>> {
    let (rec, _) = st
        .peer
        .control()
        .revoke(&invite_id)
        .map_err(|e| control_error(e, "invite_id"))?;
    changed(&st, rec.content);
    Ok(Json(invite_view(&st, &rec)))
}

#[utoipa::path(get, path = "/api/v1/access-log", tag = "access",
    responses((status = 200, body = [AccessLogView]), (status = 401, body = ErrorBody)))]
pub(crate) async fn access_log(State(st): St) -> ApiResult<Json<Vec<AccessLogView>>> {
    let rows = st
        .peer
        .control()
        .access_log(None, LOG_ROWS)
        .map_err(|e| control_error(e, "id"))?;
    Ok(Json(rows.iter().map(log_view).collect()))
}

#[utoipa::path(get, path = "/api/v1/shares/{id}/access-log", tag = "access",
    params(("id" = String, Path, description = "content id, 64 hex digits")),
    responses((status = 200, body = [AccessLogView]), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn share_access_log(
    State(st): St,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<AccessLogView>>> {
    let id = parse_id(&id)?;
    // 404 for an id that is not a share.
    st.peer
        .control()
        .access(id)
        .map_err(|e| control_error(e, "id"))?;
    let rows = st
        .peer
        .control()
        .access_log(Some(id), LOG_ROWS)
        .map_err(|e| control_error(e, "id"))?;
    Ok(Json(rows.iter().map(log_view).collect()))
}
