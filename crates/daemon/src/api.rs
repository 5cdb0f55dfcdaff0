//! The HTTP API v1 (see `docs/api.md`): routes, handlers, the bearer-token
//! middleware, SSE events, Prometheus metrics, the embedded web UI and the
//! OpenAPI document generated from the handlers' annotations.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use shoal_core::{ContentId, Kind, Manifest};
use shoal_store::Visibility;
use subtle::ConstantTimeEq;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::error::{ApiError, ApiJson, ApiPath as Path, ApiQuery, ErrorBody};
use crate::settings::{Settings, SettingsPatch};
use crate::transfers::{
    ContentKind, FileList, FileProgress, NewTransfer, PathKind, Transfer, TransferPeer,
    TransferState, MAX_FILES_PAGE, MAX_LISTED_EMPTY_FOLDERS,
};
use crate::{AppState, Event};

/// Largest request body accepted, in bytes.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Keep-alive comments on the event stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

type St = State<Arc<AppState>>;
type ApiResult<T> = Result<T, ApiError>;

/// A shared file or folder.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ShareView {
    /// Content id, hex.
    pub id: String,
    pub kind: ContentKind,
    pub name: String,
    /// Absolute path of the shared file or folder.
    pub path: String,
    /// Total bytes.
    pub size: u64,
    /// Number of files (1 for a file).
    pub files: u64,
    /// Announced on the DHT (otherwise reachable with the ticket only, or
    /// private). Kept for older clients: `visibility` says it all.
    pub public: bool,
    /// Who may fetch it.
    pub visibility: crate::access::Policy,
    /// A ticket naming this peer.
    pub ticket: String,
    /// Piece bytes sent to other peers since the daemon started (a folder:
    /// of all its files).
    pub uploaded_bytes: u64,
    /// Bytes per second sent now, over the last second.
    pub up_rate: f64,
    /// `uploaded_bytes` / `size`: how many full copies it has given out.
    pub ratio: f64,
    /// The peers it is being sent to now.
    pub peers: Vec<ServedPeerView>,
}

/// A peer this daemon is sending a share to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServedPeerView {
    pub peer_id: String,
    /// The address its stream came from, when it connected to us.
    pub address: Option<String>,
    /// How it is reached, when it connected to us.
    pub path: Option<PathKind>,
    /// Piece bytes sent to it and received from it in its current session.
    pub uploaded: u64,
    pub downloaded: u64,
    /// Bytes per second, over the last second.
    pub up_rate: f64,
    pub down_rate: f64,
    /// The share of the file it holds (0..1), as it told us; null for a
    /// folder, or before it said.
    pub progress: Option<f64>,
}

/// The daemon's peer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Status {
    pub peer_id: String,
    pub version: String,
    /// Listen multiaddrs.
    pub addresses: Vec<String>,
    /// The addresses put in tickets.
    pub ticket_addresses: Vec<String>,
    /// "unknown", "public" or "private".
    pub reachability: String,
    pub uptime_s: u64,
    pub data_dir: String,
    pub connected_peers: u32,
    /// Traffic totals (also sent as `totals` events).
    pub totals: crate::stats::Totals,
}

pub use crate::transfers::PeerView;

/// Body of `POST /api/v1/shares`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewShareBody {
    /// Absolute path of a file or folder.
    pub path: String,
    /// Who may fetch it (default `unlisted`: anyone with the ticket).
    #[serde(default)]
    pub visibility: Option<crate::access::Policy>,
    /// Shorthand of older clients: true is `visibility: public`, false
    /// `unlisted`. Refused when it contradicts `visibility`.
    #[serde(default)]
    pub public: Option<bool>,
    /// Peer ids allowed while the share is private (requires `visibility: private`).
    #[serde(default)]
    pub allow: Option<Vec<String>>,
}

/// Body of `POST /api/v1/transfers`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTransferBody {
    /// A ticket (`shoal1…`) or a content id (64 hex digits, found on the DHT).
    pub ticket: String,
    /// Absolute folder to download into (default `<data-dir>/downloads`).
    #[serde(default)]
    pub output: Option<String>,
    /// File or folder name to create in `output` (default: the name the ticket
    /// gives, else the content id).
    #[serde(default)]
    pub name: Option<String>,
    /// Bytes per second; null or 0 = unlimited.
    #[serde(default)]
    pub download_limit: Option<u64>,
    /// Of a folder: fetch only the files whose path inside it matches one of
    /// these globs (`*` and `?` also match `/`); at most 64, each at most
    /// 256 bytes. The others are never created.
    #[serde(default)]
    pub only: Vec<String>,
    /// Of a folder: leave out the files matching one of these globs.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// At most this many globs in `only` and in `exclude`, each at most
/// [`MAX_GLOB_LEN`] bytes.
const MAX_GLOBS: usize = 64;
const MAX_GLOB_LEN: usize = 256;

/// Body of `PATCH /api/v1/transfers/{id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferPatch {
    /// Bytes per second; null or 0 = unlimited.
    pub download_limit: Option<u64>,
}

/// Body of `PATCH /api/v1/transfers/{id}/files`: the priority of files of
/// a folder transfer, by path inside the folder.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilesPriorityBody {
    /// 1 to 1000 paths, as `GET /api/v1/transfers/{id}/files` lists them.
    pub paths: Vec<String>,
    /// `skip` (not fetched; a file not yet here is never created), `normal`,
    /// or `high` (fetched before the normal ones).
    pub priority: shoal_node::FilePriority,
}

/// The API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "shoal daemon API", version = "1"),
    paths(
        status, list_shares, add_share, get_share, remove_share, share_files, list_transfers,
        add_transfer, transfer_files, set_files_priority, ls,
        get_transfer, patch_transfer, pause_transfer, resume_transfer, cancel_transfer,
        list_peers, get_settings, patch_settings, events, openapi_json, metrics,
        crate::access::patch_share, crate::access::get_access, crate::access::allow_peer,
        crate::access::deny_peer, crate::access::create_invite, crate::access::share_invites,
        crate::access::list_invites, crate::access::revoke_invite, crate::access::access_log,
        crate::access::share_access_log, crate::fs::browse, crate::fs::qr
    ),
    components(schemas(
        crate::access::Policy, crate::access::SharePatch, crate::access::AllowBody,
        crate::access::NewInviteBody, crate::access::InviteState, crate::access::InviteView,
        crate::access::AccessView, crate::access::AccessLogView,
        ShareView, ServedPeerView, crate::stats::Totals, Status, PeerView, NewShareBody, NewTransferBody, TransferPatch, Transfer,
        TransferPeer, FileList, FileProgress, FilesPriorityBody, shoal_node::FilePriority, TransferState, ContentKind, PathKind, Settings, SettingsPatch, ErrorBody,
        crate::ErrorDetail, crate::ErrorCode, crate::fs::FsListing, crate::fs::FsEntry
    )),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API, the metrics and the web UI.
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/status", get(status))
        .route("/shares", get(list_shares).post(add_share))
        .route(
            "/shares/{id}",
            get(get_share)
                .delete(remove_share)
                .patch(crate::access::patch_share),
        )
        .route("/shares/{id}/files", get(share_files))
        .route("/shares/{id}/access", get(crate::access::get_access))
        .route("/shares/{id}/allow", post(crate::access::allow_peer))
        .route(
            "/shares/{id}/allow/{peer_id}",
            axum::routing::delete(crate::access::deny_peer),
        )
        .route(
            "/shares/{id}/invites",
            get(crate::access::share_invites).post(crate::access::create_invite),
        )
        .route(
            "/shares/{id}/access-log",
            get(crate::access::share_access_log),
        )
        .route("/invites", get(crate::access::list_invites))
        .route(
            "/invites/{invite_id}/revoke",
            post(crate::access::revoke_invite),
        )
        .route("/access-log", get(crate::access::access_log))
        .route("/transfers", get(list_transfers).post(add_transfer))
        .route("/transfers/{id}", get(get_transfer).patch(patch_transfer))
        .route(
            "/transfers/{id}/files",
            get(transfer_files).patch(set_files_priority),
        )
        .route("/ls", get(ls))
        .route("/transfers/{id}/pause", post(pause_transfer))
        .route("/transfers/{id}/resume", post(resume_transfer))
        .route("/transfers/{id}/cancel", post(cancel_transfer))
        .route("/peers", get(list_peers))
        .route("/settings", get(get_settings).patch(patch_settings))
        .route("/events", get(events))
        .route("/fs", get(crate::fs::browse))
        .route("/qr", get(crate::fs::qr))
        .route("/openapi.json", get(openapi_json))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .nest("/api/v1", v1)
        .route("/metrics", get(metrics))
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(same_site))
        .with_state(state)
}

/// Whether `host` (a `Host` header value or an origin's host, with or without
/// a port) names this machine the way a browser does when it really talks to
/// the daemon: `localhost` or an IP address. Any other name is a page that
/// made its own name resolve here (DNS rebinding).
fn local_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        match rest.split_once(']') {
            Some((v6, _)) => return v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Refuses requests a page of another site makes through the user's browser:
/// a `Host` that is not this machine (DNS rebinding) and an `Origin` that is
/// not the daemon's own (cross-site requests). Clients that are not browsers
/// send no `Origin`.
async fn same_site(headers: HeaderMap, req: Request, next: Next) -> Response {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(host) = host {
        if !local_host(host) {
            return ApiError::forbidden(format!(
                "the Host {:?} is not this machine: the daemon answers only requests addressed to localhost or an IP address, so that a web page cannot reach it through a name of its own",
                host.escape_debug().to_string()
            ))
            .into_response();
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let same = origin.to_str().ok().is_some_and(|o| {
            let Some(rest) = o.strip_prefix("http://") else {
                return false;
            };
            host.is_some_and(|h| rest.eq_ignore_ascii_case(h)) && local_host(rest)
        });
        if !same {
            return ApiError::forbidden(format!(
                "requests from the page {:?} are refused: only the daemon's own web UI may use the API from a browser",
                String::from_utf8_lossy(origin.as_bytes()).escape_debug().to_string()
            ))
            .into_response();
        }
    }
    next.run(req).await
}

async fn auth(State(st): St, headers: HeaderMap, req: Request, next: Next) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        // The scheme name is case-insensitive (RFC 9110).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match given {
        None => ApiError::unauthorized(
            "this request needs the API token: send Authorization: Bearer <token> (the token is in api.token in the data directory)",
        )
        .into_response(),
        Some(t) if bool::from(t.as_bytes().ct_eq(st.token.as_bytes())) => next.run(req).await,
        Some(_) => ApiError::unauthorized(
            "the API token is wrong: the daemon's token is in api.token in its data directory (shoal ui opens the web UI with it)",
        )
        .into_response(),
    }
}

async fn unknown_route(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "no such route {}; GET /api/v1/openapi.json lists the routes",
        uri.path()
    ))
}

async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let mut e = ApiError::bad_request(
        None,
        format!(
            "{method} is not allowed on {}; GET /api/v1/openapi.json lists the methods",
            uri.path()
        ),
    );
    e.status = StatusCode::METHOD_NOT_ALLOWED;
    e.into_response()
}

/// Parses an id in a path: 400 naming `id` when malformed.
/// A transfer's download limit: 0 and null mean none; over
/// [`crate::settings::MAX_RATE`] is refused (422 `download_limit`).
fn rate(limit: Option<u64>) -> ApiResult<Option<u64>> {
    match limit {
        Some(r) if r > crate::settings::MAX_RATE => Err(ApiError::unprocessable(
            "download_limit",
            format!(
                "download_limit must be at most {} bytes per second (1 TiB/s), not {r}; null or 0 means no limit",
                crate::settings::MAX_RATE
            ),
        )),
        l => Ok(l.filter(|r| *r > 0)),
    }
}

pub(crate) fn parse_id(s: &str) -> ApiResult<ContentId> {
    s.parse().map_err(|_| {
        ApiError::bad_request(
            Some("id"),
            format!("{s:?} is not an id: ids are 64 hex digits, as the listings show"),
        )
    })
}

pub(crate) fn share_view(st: &AppState, s: &shoal_store::Share) -> ShareView {
    let up = st.peer.share_uploads(s);
    ShareView {
        uploaded_bytes: up.uploaded,
        up_rate: up.up_rate,
        ratio: if s.size > 0 {
            up.uploaded as f64 / s.size as f64
        } else {
            0.0
        },
        peers: up
            .peers
            .into_iter()
            .map(|p| ServedPeerView {
                peer_id: p.peer.to_string(),
                path: p.remote.as_ref().and_then(|r| PathKind::parse(&r.path)),
                address: p.remote.map(|r| r.addr),
                uploaded: p.uploaded,
                downloaded: p.downloaded,
                up_rate: p.up_rate,
                down_rate: p.down_rate,
                progress: p.progress,
            })
            .collect(),
        id: s.id.to_hex(),
        kind: s.kind.into(),
        name: s.name.clone(),
        path: s.path.to_string_lossy().into_owned(),
        size: s.size,
        files: s.files,
        public: s.visibility == Visibility::Public,
        visibility: s.visibility.into(),
        ticket: st.peer.ticket(s).to_string(),
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "{what}");
    ApiError::internal(format!("{what}: {e}"))
}

#[utoipa::path(get, path = "/api/v1/status", tag = "daemon",
    responses((status = 200, body = Status), (status = 401, body = ErrorBody)))]
async fn status(State(st): St) -> Json<Status> {
    let h = st.peer.status();
    Json(Status {
        peer_id: h.peer_id.to_string(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        addresses: h.addresses.iter().map(ToString::to_string).collect(),
        ticket_addresses: h.ticket_addresses.iter().map(ToString::to_string).collect(),
        reachability: h.reachability.to_owned(),
        uptime_s: st.started.elapsed().as_secs(),
        data_dir: st.data_dir.to_string_lossy().into_owned(),
        connected_peers: u32::try_from(h.connected_peers).unwrap_or(u32::MAX),
        totals: st.stats.totals(),
    })
}

#[utoipa::path(get, path = "/api/v1/shares", tag = "shares",
    responses((status = 200, body = [ShareView]), (status = 401, body = ErrorBody)))]
async fn list_shares(State(st): St) -> ApiResult<Json<Vec<ShareView>>> {
    let shares = st
        .peer
        .store()
        .shares()
        .map_err(|e| internal("cannot list the shares", e))?;
    Ok(Json(shares.iter().map(|s| share_view(&st, s)).collect()))
}

#[utoipa::path(post, path = "/api/v1/shares", tag = "shares", request_body = NewShareBody,
    responses((status = 201, body = ShareView), (status = 400, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn add_share(
    State(st): St,
    ApiJson(body): ApiJson<NewShareBody>,
) -> ApiResult<(StatusCode, Json<ShareView>)> {
    use crate::access::Policy;
    let policy = match (body.visibility, body.public) {
        (Some(v), None) => v,
        (None, Some(true)) => Policy::Public,
        (None, Some(false) | None) => Policy::Unlisted,
        (Some(v), Some(p)) if (v == Policy::Public) == p => v,
        (Some(v), Some(p)) => {
            return Err(ApiError::unprocessable(
                "public",
                format!(
                    "\"public\": {p} contradicts \"visibility\": \"{}\"; send only \"visibility\"",
                    Visibility::from(v)
                ),
            ))
        }
    };
    let mut allow = Vec::new();
    for (i, p) in body.allow.iter().flatten().enumerate() {
        allow.push(p.trim().parse::<shoal_net::PeerId>().map_err(|_| {
            ApiError::unprocessable(
                &format!("allow[{i}]"),
                format!("{p:?} is not a peer id (like 12D3KooW…, as `shoal status` prints it)"),
            )
        })?);
    }
    if !allow.is_empty() && policy != Policy::Private {
        return Err(ApiError::unprocessable(
            "allow",
            "an allowlist only applies to a private share: add \"visibility\": \"private\"",
        ));
    }
    let path = PathBuf::from(&body.path);
    if body.path.is_empty() || !path.is_absolute() {
        return Err(ApiError::unprocessable(
            "path",
            format!("path {:?} is not absolute; give the full path of a file or folder, starting with /", body.path),
        ));
    }
    let meta = std::fs::metadata(&path).map_err(|e| {
        ApiError::unprocessable(
            "path",
            format!(
                "cannot share {}: {e}; check that it exists and is readable",
                path.display()
            ),
        )
    })?;
    let readable = if meta.is_dir() {
        std::fs::read_dir(&path).map(|_| ())
    } else {
        std::fs::File::open(&path).map(|_| ())
    };
    readable.map_err(|e| {
        ApiError::unprocessable(
            "path",
            format!("cannot read {}: {e}; check its permissions", path.display()),
        )
    })?;
    let host = st.peer.clone();
    let p = path.clone();
    let added = tokio::task::spawn_blocking(move || {
        host.share(&p, None, Some(policy.into()), &allow, &|_| {})
    })
    .await
    .map_err(|e| internal("the indexing task failed", e))?
    .map_err(|e| match e {
        shoal_node::host::HostError::LocalStore(e) => {
            ApiError::unprocessable("path", format!("cannot share {}: {e}", path.display()))
        }
        other => internal("cannot share", other),
    })?;
    let s = added.share;
    let s = st
        .peer
        .store()
        .share(&s.id)
        .map_err(|e| internal("cannot read the share", e))?
        .unwrap_or(s);
    let view = share_view(&st, &s);
    let _ = st.events.send(Event::new(
        "share",
        serde_json::to_value(&view).unwrap_or_default(),
    ));
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(delete, path = "/api/v1/shares/{id}", tag = "shares",
    params(("id" = String, Path, description = "content id, 64 hex digits")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn remove_share(State(st): St, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id = parse_id(&id)?;
    match st.peer.control().unshare(id) {
        Ok(_) => {}
        Err(shoal_node::control::ControlError::NotShared(_)) => {
            return Err(ApiError::not_found(format!(
                "no share with id {id}; GET /api/v1/shares lists them"
            )))
        }
        Err(e) => return Err(internal("cannot remove the share", e)),
    }
    let net = st.peer.net().clone();
    tokio::spawn(async move {
        let _ = net.unprovide(&id).await;
    });
    let _ = st.events.send(Event::new(
        "share_removed",
        serde_json::json!({"id": id.to_hex()}),
    ));
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/transfers", tag = "transfers",
    responses((status = 200, body = [Transfer]), (status = 401, body = ErrorBody)))]
async fn list_transfers(State(st): St) -> Json<Vec<Transfer>> {
    Json(st.transfers.list())
}

#[utoipa::path(post, path = "/api/v1/transfers", tag = "transfers", request_body = NewTransferBody,
    responses((status = 201, body = Transfer, description = "started"),
        (status = 200, body = Transfer, description = "the content already was a transfer"),
        (status = 400, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "another transfer saves to the same path, or too many transfers"),
        (status = 401, body = ErrorBody)))]
async fn add_transfer(
    State(st): St,
    ApiJson(body): ApiJson<NewTransferBody>,
) -> ApiResult<(StatusCode, Json<Transfer>)> {
    let (target, kind) = NewTransfer::parse_target(&body.ticket, &st.peer)
        .map_err(|m| ApiError::unprocessable("ticket", m))?;
    let output = match body.output.as_deref() {
        None => st.default_output(),
        Some(o) => {
            let p = PathBuf::from(o);
            if o.is_empty() || !p.is_absolute() {
                return Err(ApiError::unprocessable(
                    "output",
                    format!("output {o:?} is not absolute; give the full path of a folder, starting with /"),
                ));
            }
            shoal_node::host::check_output(&p).map_err(|m| ApiError::unprocessable("output", m))?;
            p
        }
    };
    if let Some(n) = &body.name {
        if !shoal_core::manifest::is_plain_name(n) {
            return Err(ApiError::unprocessable(
                "name",
                format!("name {n:?} is not a plain file name; give a name without slashes, or leave it out"),
            ));
        }
    }
    for (field, globs) in [("only", &body.only), ("exclude", &body.exclude)] {
        if globs.len() > MAX_GLOBS {
            return Err(ApiError::unprocessable(
                field,
                format!(
                    "{field} has {} globs; give at most {MAX_GLOBS}",
                    globs.len()
                ),
            ));
        }
        if let Some(g) = globs
            .iter()
            .find(|g| g.len() > MAX_GLOB_LEN || g.is_empty())
        {
            return Err(ApiError::unprocessable(
                field,
                format!("{field} glob {g:?} is empty or longer than {MAX_GLOB_LEN} bytes"),
            ));
        }
    }
    if !body.only.is_empty() || !body.exclude.is_empty() {
        let field = if body.only.is_empty() {
            "exclude"
        } else {
            "only"
        };
        if kind != Kind::Collection {
            return Err(ApiError::unprocessable(
                field,
                format!(
                    "{field} chooses files of a folder, and {} is a file",
                    target.id
                ),
            ));
        }
        shoal_node::FileChoice::new(&body.only, &body.exclude).map_err(|m| {
            let field = if m.starts_with("--exclude") {
                "exclude"
            } else {
                "only"
            };
            ApiError::unprocessable(field, m.replace("--only ", "").replace("--exclude ", ""))
        })?;
    }
    let id = target.id;
    if st.transfers.get(&id).is_none() {
        std::fs::create_dir_all(&output).map_err(|e| {
            ApiError::unprocessable(
                "output",
                format!(
                    "cannot create the output folder {}: {e}; choose another folder",
                    output.display()
                ),
            )
        })?;
        if !output.is_dir() {
            return Err(ApiError::unprocessable(
                "output",
                format!("output {} is not a folder", output.display()),
            ));
        }
    }
    let (t, created) = st.transfers.add(NewTransfer {
        id,
        kind,
        providers: target.providers,
        output,
        name: body.name.or(target.name),
        download_limit: rate(body.download_limit)?,
        capability: target.capability,
        only: body.only,
        exclude: body.exclude,
    })?;
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((code, Json(t)))
}

fn transfer_not_found(id: &ContentId) -> ApiError {
    ApiError::not_found(format!(
        "no transfer with id {id}; GET /api/v1/transfers lists them"
    ))
}

#[utoipa::path(get, path = "/api/v1/transfers/{id}", tag = "transfers",
    params(("id" = String, Path, description = "content id, 64 hex digits")),
    responses((status = 200, body = Transfer), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn get_transfer(State(st): St, Path(id): Path<String>) -> ApiResult<Json<Transfer>> {
    let id = parse_id(&id)?;
    st.transfers
        .get(&id)
        .map(Json)
        .ok_or_else(|| transfer_not_found(&id))
}

#[utoipa::path(patch, path = "/api/v1/transfers/{id}", tag = "transfers", request_body = TransferPatch,
    params(("id" = String, Path, description = "content id, 64 hex digits")),
    responses((status = 200, body = Transfer), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn patch_transfer(
    State(st): St,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TransferPatch>,
) -> ApiResult<Json<Transfer>> {
    let id = parse_id(&id)?;
    st.transfers
        .set_limit(&id, rate(body.download_limit)?)
        .await
        .map(Json)
        .map_err(ApiError::from)
}

#[utoipa::path(post, path = "/api/v1/transfers/{id}/pause", tag = "transfers",
    params(("id" = String, Path, description = "content id, 64 hex digits")),
    responses((status = 200, body = Transfer), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn pause_transfer(State(st): St, Path(id): Path<String>) -> ApiResult<Json<Transfer>> {
    let id = parse_id(&id)?;
    Ok(Json(st.transfers.pause(&id).await?))
}

#[utoipa::path(post, path = "/api/v1/transfers/{id}/resume", tag = "transfers",
    params(("id" = String, Path, description = "content id, 64 hex digits")),
    responses((status = 200, body = Transfer), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn resume_transfer(State(st): St, Path(id): Path<String>) -> ApiResult<Json<Transfer>> {
    let id = parse_id(&id)?;
    Ok(Json(st.transfers.resume(&id)?))
}

/// Query of the file lists (`GET /api/v1/transfers/{id}/files`,
/// `GET /api/v1/shares/{id}/files`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilesQuery {
    offset: Option<u64>,
    limit: Option<u64>,
}

impl FilesQuery {
    /// (offset, limit), the limit 200 by default and at most
    /// [`MAX_FILES_PAGE`].
    fn page(&self) -> ApiResult<(u64, usize)> {
        let limit = self.limit.unwrap_or(200);
        if limit == 0 || limit > MAX_FILES_PAGE as u64 {
            return Err(ApiError::unprocessable(
                "limit",
                format!("limit {limit} is out of range: give 1 to {MAX_FILES_PAGE} files per page"),
            ));
        }
        Ok((self.offset.unwrap_or(0), limit as usize))
    }
}

#[utoipa::path(get, path = "/api/v1/transfers/{id}/files", tag = "transfers",
    params(("id" = String, Path, description = "content id, 64 hex digits"),
        ("offset" = Option<u64>, Query, description = "index of the first file (default 0)"),
        ("limit" = Option<u64>, Query, description = "files per page, 1 to 1000 (default 200)")),
    responses((status = 200, body = FileList), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn transfer_files(
    State(st): St,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<FilesQuery>,
) -> ApiResult<Json<FileList>> {
    let id = parse_id(&id)?;
    let (offset, limit) = q.page()?;
    Ok(Json(st.transfers.files(&id, offset, limit).await?))
}

/// Sets the priority of files of a folder transfer while it runs (kept for
/// its later runs).
#[utoipa::path(patch, path = "/api/v1/transfers/{id}/files", tag = "transfers",
    request_body = FilesPriorityBody,
    params(("id" = String, Path, description = "content id, 64 hex digits")),
    responses((status = 200, body = Transfer), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn set_files_priority(
    State(st): St,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<FilesPriorityBody>,
) -> ApiResult<Json<Transfer>> {
    let id = parse_id(&id)?;
    if let Some(p) = body.paths.iter().find(|p| p.len() > 4096) {
        return Err(ApiError::unprocessable(
            "paths",
            format!("a path of {} bytes: paths have at most 4096", p.len()),
        ));
    }
    Ok(Json(
        st.transfers
            .set_priority(&id, body.paths, body.priority)
            .await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/shares/{id}/files", tag = "shares",
    params(("id" = String, Path, description = "content id, 64 hex digits"),
        ("offset" = Option<u64>, Query, description = "index of the first file (default 0)"),
        ("limit" = Option<u64>, Query, description = "files per page, 1 to 1000 (default 200)")),
    responses((status = 200, body = FileList), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn share_files(
    State(st): St,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<FilesQuery>,
) -> ApiResult<Json<FileList>> {
    let id = parse_id(&id)?;
    let (offset, limit) = q.page()?;
    let share = find_share(&st, &id)?;
    if share.kind != Kind::Collection {
        return Err(ApiError::conflict(format!(
            "share {id} is a file, not a folder: it has no list of files"
        )));
    }
    let store = st.peer.store().clone();
    let (total, bytes, files, folders) = tokio::task::spawn_blocking(move || {
        let (total, bytes, files) = store.share_files_page(&id, offset, limit as u64)?;
        let folders = if offset == 0 {
            store.manifest(&id)?.and_then(|b| Manifest::decode(&b).ok())
        } else {
            None
        };
        Ok::<_, shoal_store::StoreError>((total, bytes, files, folders))
    })
    .await
    .map_err(|e| ApiError::internal(format!("listing the files failed: {e}")))?
    .map_err(|e| internal("cannot list the share's files", e))?;
    Ok(Json(FileList {
        known: true,
        total_files: total,
        total_bytes: bytes,
        offset,
        empty_folders: folders
            .as_ref()
            .map(|m| {
                m.empty_folders()
                    .take(MAX_LISTED_EMPTY_FOLDERS)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        total_empty_folders: folders
            .as_ref()
            .map_or(0, |m| m.empty_folder_count() as u64),
        files: files
            .into_iter()
            .map(|f| FileProgress {
                path: f.path,
                size: f.size,
                id: f.id.to_hex(),
                done_bytes: f.size,
                chosen: true,
                priority: shoal_node::FilePriority::Normal,
            })
            .collect(),
    }))
}

/// Query of `GET /api/v1/ls`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LsQuery {
    ticket: Option<String>,
    offset: Option<u64>,
    limit: Option<u64>,
    timeout_s: Option<u64>,
}

/// How long `GET /api/v1/ls` waits for a provider to send the list, by
/// default and at most.
const LS_TIMEOUT_S: u64 = 20;
const LS_MAX_TIMEOUT_S: u64 = 300;

#[utoipa::path(get, path = "/api/v1/ls", tag = "transfers",
    params(("ticket" = String, Query, description = "a folder's ticket (shoal1…) or content id"),
        ("offset" = Option<u64>, Query, description = "index of the first file (default 0)"),
        ("limit" = Option<u64>, Query, description = "files per page, 1 to 1000 (default 200)"),
        ("timeout_s" = Option<u64>, Query, description = "give up after this many seconds without the list, 1 to 300 (default 20)")),
    responses((status = 200, body = FileList), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn ls(State(st): St, ApiQuery(q): ApiQuery<LsQuery>) -> ApiResult<Json<FileList>> {
    let (offset, limit) = FilesQuery {
        offset: q.offset,
        limit: q.limit,
    }
    .page()?;
    let timeout = q.timeout_s.unwrap_or(LS_TIMEOUT_S);
    if !(1..=LS_MAX_TIMEOUT_S).contains(&timeout) {
        return Err(ApiError::unprocessable(
            "timeout_s",
            format!("timeout_s {timeout} is out of range: give 1 to {LS_MAX_TIMEOUT_S} seconds"),
        ));
    }
    let text = q.ticket.unwrap_or_default();
    if text.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "ticket",
            "ticket is missing: give a folder's ticket (shoal1…) or content id",
        ));
    }
    let target: shoal_core::ticket::Target = text
        .trim()
        .parse()
        .map_err(|m: String| ApiError::unprocessable("ticket", m))?;
    if target.kind.is_some_and(|k| k != Kind::Collection) {
        return Err(ApiError::unprocessable(
            "ticket",
            format!(
                "{} is a file, not a folder: it has no list of files; download it",
                target.id
            ),
        ));
    }
    let manifest = st
        .peer
        .list_folder(&target, Duration::from_secs(timeout))
        .await
        .map_err(|e| ApiError::not_found(e.to_string()))?;
    let first = usize::try_from(offset).unwrap_or(usize::MAX);
    let files = manifest
        .entries()
        .iter()
        .skip(first)
        .take(limit)
        .map(|e| FileProgress {
            path: e.path.clone(),
            size: e.size,
            id: e.id.to_hex(),
            done_bytes: 0,
            chosen: true,
            priority: shoal_node::FilePriority::Normal,
        })
        .collect();
    Ok(Json(FileList::of(&manifest, offset, files)))
}

/// The share `id`, or a 404 that says how to list them.
fn find_share(st: &AppState, id: &ContentId) -> ApiResult<shoal_store::Share> {
    st.peer
        .store()
        .share(id)
        .map_err(|e| internal("cannot read the share", e))?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no share with id {id}; GET /api/v1/shares lists them"
            ))
        })
}

#[utoipa::path(get, path = "/api/v1/shares/{id}", tag = "shares",
    params(("id" = String, Path, description = "content id, 64 hex digits")),
    responses((status = 200, body = ShareView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn get_share(State(st): St, Path(id): Path<String>) -> ApiResult<Json<ShareView>> {
    let id = parse_id(&id)?;
    let share = find_share(&st, &id)?;
    Ok(Json(share_view(&st, &share)))
}

/// Query of `POST /api/v1/transfers/{id}/cancel`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelQuery {
    keep_data: Option<bool>,
}

#[utoipa::path(post, path = "/api/v1/transfers/{id}/cancel", tag = "transfers",
    params(("id" = String, Path, description = "content id, 64 hex digits"),
        ("keep_data" = Option<bool>, Query, description = "true: keep the partial data on disk (adding the transfer again resumes from it); default false: delete it")),
    responses((status = 204), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn cancel_transfer(
    State(st): St,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<CancelQuery>,
) -> ApiResult<StatusCode> {
    let id = parse_id(&id)?;
    st.transfers
        .cancel(&id, q.keep_data.unwrap_or(false))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/peers", tag = "daemon",
    responses((status = 200, body = [PeerView]), (status = 401, body = ErrorBody)))]
async fn list_peers(State(st): St) -> Json<Vec<PeerView>> {
    Json(st.peer.peers())
}

#[utoipa::path(get, path = "/api/v1/settings", tag = "daemon",
    responses((status = 200, body = Settings), (status = 401, body = ErrorBody)))]
async fn get_settings(State(st): St) -> Json<Settings> {
    Json(st.settings())
}

#[utoipa::path(patch, path = "/api/v1/settings", tag = "daemon", request_body = SettingsPatch,
    responses((status = 200, body = Settings, description = "applied at once and saved"),
        (status = 400, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
async fn patch_settings(
    State(st): St,
    ApiJson(patch): ApiJson<SettingsPatch>,
) -> ApiResult<Json<Settings>> {
    patch
        .apply(st.settings())
        .map_err(|(field, m)| ApiError::unprocessable(field, m))?;
    let saved = {
        let mut saved = st.saved.lock().unwrap_or_else(|e| e.into_inner());
        *saved = crate::merge_patch(&saved, &patch);
        *saved
    };
    let text = serde_json::to_vec_pretty(&saved).unwrap_or_default();
    crate::discovery::write_atomic(&st.settings_file(), &text, 0o600)
        .map_err(|e| internal("cannot save the settings", e))?;
    let now = crate::effective(&st.base, &saved, &st.pinned);
    *st.settings.lock().unwrap_or_else(|e| e.into_inner()) = now;
    crate::limits::apply(&st.peer, &now).await;
    let _ = st.events.send(Event::new(
        "settings",
        serde_json::to_value(now).unwrap_or_default(),
    ));
    Ok(Json(now))
}

#[utoipa::path(get, path = "/api/v1/events", tag = "daemon",
    responses((status = 200, content_type = "text/event-stream",
        description = "events `transfer`, `transfer_removed`, `share`, `share_removed`, `settings`, `error`; first one `transfer` per transfer"),
        (status = 401, body = ErrorBody)))]
async fn events(
    State(st): St,
) -> Sse<impl Stream<Item = Result<axum::response::sse::Event, Infallible>>> {
    // Subscribe before the snapshot, so nothing between them is missed.
    let rx = st.events.subscribe();
    let initial: Vec<Event> = st
        .transfers
        .list()
        .into_iter()
        .map(|t| Event::new("transfer", serde_json::to_value(t).unwrap_or_default()))
        .collect();
    let live = futures::stream::unfold(rx, |mut rx| async move {
        use tokio::sync::broadcast::error::RecvError;
        match rx.recv().await {
            Ok(ev) => Some((ev, rx)),
            Err(RecvError::Lagged(n)) => {
                let ev = Event::new(
                    "error",
                    serde_json::json!({"message": format!("{n} events were dropped because this client read too slowly; reload the state with GET requests"), "transfer": null}),
                );
                Some((ev, rx))
            }
            Err(RecvError::Closed) => None,
        }
    });
    let mut closing = st.closing.clone();
    let stop = async move {
        let _ = closing.wait_for(|c| *c).await;
    };
    let stream = futures::stream::iter(initial)
        .chain(live)
        .take_until(stop)
        .map(|ev| {
            Ok(axum::response::sse::Event::default()
                .event(ev.name)
                .data(ev.data.to_string()))
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "daemon",
    responses((status = 200, description = "this document"), (status = 401, body = ErrorBody)))]
async fn openapi_json() -> Response {
    let doc = ApiDoc::openapi();
    match doc.to_json() {
        Ok(s) => ([(header::CONTENT_TYPE, "application/json")], s).into_response(),
        Err(e) => internal("cannot render the OpenAPI document", e).into_response(),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "daemon", security(()),
    responses((status = 200, content_type = "text/plain", description = "Prometheus text format")))]
async fn metrics(State(st): St) -> Response {
    let m = crate::limits::counters(&st);
    let mut direct = 0u64;
    let mut relayed = 0u64;
    let conns = st.peer.net().connections();
    let mut seen = std::collections::HashMap::new();
    for c in &conns {
        *seen.entry(c.peer).or_insert(false) |= !c.relayed;
    }
    for d in seen.values() {
        if *d {
            direct += 1;
        } else {
            relayed += 1;
        }
    }
    let shares = st.peer.store().shares().map(|s| s.len()).unwrap_or(0);
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, u64)]| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in lines {
            out.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    metric(
        "shoal_bytes_uploaded_total",
        "counter",
        "Piece bytes sent to peers.",
        &[(String::new(), m.uploaded)],
    );
    metric(
        "shoal_bytes_downloaded_total",
        "counter",
        "Verified piece bytes received from peers.",
        &[(String::new(), m.downloaded)],
    );
    metric(
        "shoal_peers_connected",
        "gauge",
        "Connected peers by path.",
        &[
            ("{path=\"direct\"}".to_owned(), direct),
            ("{path=\"relayed\"}".to_owned(), relayed),
        ],
    );
    metric(
        "shoal_pieces_verified_total",
        "counter",
        "Pieces received and verified.",
        &[(String::new(), m.pieces_verified)],
    );
    metric(
        "shoal_pieces_failed_total",
        "counter",
        "Pieces received that failed verification.",
        &[(String::new(), m.pieces_failed)],
    );
    let states: Vec<(String, u64)> = st
        .transfers
        .count_by_state()
        .into_iter()
        .map(|(s, n)| (format!("{{state=\"{}\"}}", s.as_str()), n))
        .collect();
    metric("shoal_transfers", "gauge", "Transfers by state.", &states);
    metric(
        "shoal_shares",
        "gauge",
        "Shared files and folders.",
        &[(String::new(), shares as u64)],
    );
    metric(
        "shoal_build_info",
        "gauge",
        "The running version.",
        &[(format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")), 1)],
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

const INDEX_HTML: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");

/// The page may load only its own script and style and talk only to this
/// daemon; no other site may frame it.
const UI_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

async fn index() -> Response {
    (
        [
            (header::CONTENT_SECURITY_POLICY, UI_CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(INDEX_HTML),
    )
        .into_response()
}

async fn app_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        APP_JS,
    )
        .into_response()
}

async fn app_css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        APP_CSS,
    )
        .into_response()
}
