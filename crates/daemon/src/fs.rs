//! What the web UI needs beyond the API's resources: a folder browser (so a
//! user picks what to share instead of typing an absolute path) and QR codes
//! of tickets.
//!
//! The browser lists only folders under one root (the user's home unless
//! `DaemonConfig::browse_root` says otherwise): a path outside it, also
//! through a symbolic link, is refused with 403, so a page cannot use the
//! daemon to look around the machine.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiQuery, ErrorBody};
use crate::AppState;

/// Most entries listed for one folder (the rest are counted, not listed).
pub const MAX_ENTRIES: usize = 5000;
/// Longest text a QR code is made of, in bytes (a QR code holds at most
/// 2,953 bytes at the lowest error correction; tickets are far shorter).
pub const MAX_QR_TEXT: usize = 2048;

/// A folder's listing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FsListing {
    /// The folder listed (absolute, symbolic links resolved).
    pub path: String,
    /// Its parent, if that is still under the root.
    pub parent: Option<String>,
    /// The root the browser may not leave.
    pub root: String,
    /// Folders first, then files, each sorted by name; at most
    /// [`MAX_ENTRIES`].
    pub entries: Vec<FsEntry>,
    /// Entries not listed because of the limit.
    pub omitted: u64,
}

/// One entry of a folder.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FsEntry {
    pub name: String,
    /// Absolute path (give it to `POST /api/v1/shares`).
    pub path: String,
    /// "dir" or "file" (symbolic links are shown as what they point to;
    /// other kinds are left out).
    pub kind: String,
    /// Bytes, for a file.
    pub size: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FsQuery {
    path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QrQuery {
    text: Option<String>,
}

/// The root of the browser: configured, else `$HOME`.
pub(crate) fn browse_root(configured: Option<&Path>) -> Option<PathBuf> {
    configured
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
        .filter(|p| p.is_absolute())
}

/// Lists `dir` if it is under `root`.
fn list(root: &Path, dir: &Path) -> Result<FsListing, ApiError> {
    let root = root.canonicalize().map_err(|e| {
        ApiError::internal(format!(
            "the folder browser's root {} cannot be opened: {e}",
            root.display()
        ))
    })?;
    let real = dir
        .canonicalize()
        .map_err(|e| ApiError::not_found(format!("{} cannot be opened: {e}", dir.display())))?;
    if !real.starts_with(&root) {
        return Err(ApiError::forbidden(format!(
            "{} is outside {}, the only folder the browser shows (start the daemon with --browse-root to choose another)",
            dir.display(),
            root.display()
        )));
    }
    if !real.is_dir() {
        return Err(ApiError::unprocessable(
            "path",
            format!("{} is not a folder", dir.display()),
        ));
    }
    let rd = std::fs::read_dir(&real)
        .map_err(|e| ApiError::forbidden(format!("{} cannot be read: {e}", real.display())))?;
    let mut entries = Vec::new();
    let mut omitted = 0u64;
    for ent in rd.flatten() {
        let path = ent.path();
        // Follows links: a link shows as what it points to.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let kind = if meta.is_dir() {
            "dir"
        } else if meta.is_file() {
            "file"
        } else {
            continue;
        };
        if entries.len() >= MAX_ENTRIES {
            omitted += 1;
            continue;
        }
        entries.push(FsEntry {
            name: ent.file_name().to_string_lossy().into_owned(),
            path: path.to_string_lossy().into_owned(),
            kind: kind.to_owned(),
            size: meta.is_file().then_some(meta.len()),
        });
    }
    entries.sort_by(|a, b| (a.kind != "dir", &a.name).cmp(&(b.kind != "dir", &b.name)));
    let parent = real
        .parent()
        .filter(|p| p.starts_with(&root))
        .map(|p| p.to_string_lossy().into_owned());
    Ok(FsListing {
        path: real.to_string_lossy().into_owned(),
        parent,
        root: root.to_string_lossy().into_owned(),
        entries,
        omitted,
    })
}

#[utoipa::path(get, path = "/api/v1/fs", tag = "daemon",
    params(("path" = Option<String>, Query, description = "absolute folder to list (default: the browser's root, the user's home unless the daemon was started with --browse-root)")),
    responses((status = 200, body = FsListing), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub(crate) async fn browse(
    State(st): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<FsQuery>,
) -> Result<Json<FsListing>, ApiError> {
    let Some(root) = st.browse_root.clone() else {
        return Err(ApiError::forbidden(
            "the folder browser has no root: HOME is not set; start the daemon with --browse-root DIR",
        ));
    };
    let dir = match q.path.as_deref() {
        None | Some("") => root.clone(),
        Some(p) if Path::new(p).is_absolute() => PathBuf::from(p),
        Some(p) => {
            return Err(ApiError::unprocessable(
                "path",
                format!("path {p:?} is not absolute; give a folder starting with /"),
            ))
        }
    };
    tokio::task::spawn_blocking(move || list(&root, &dir))
        .await
        .map_err(|e| ApiError::internal(format!("the folder listing failed: {e}")))?
        .map(Json)
}

#[utoipa::path(get, path = "/api/v1/qr", tag = "daemon",
    params(("text" = String, Query, description = "the text to encode (a ticket), at most 2048 bytes")),
    responses((status = 200, content_type = "image/svg+xml", description = "the QR code as SVG"),
        (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub(crate) async fn qr(ApiQuery(q): ApiQuery<QrQuery>) -> Result<Response, ApiError> {
    let text = q.text.unwrap_or_default();
    if text.is_empty() {
        return Err(ApiError::unprocessable(
            "text",
            "text is missing: give the ticket to encode",
        ));
    }
    if text.len() > MAX_QR_TEXT {
        return Err(ApiError::unprocessable(
            "text",
            format!(
                "text is {} bytes long; a QR code here holds at most {MAX_QR_TEXT}",
                text.len()
            ),
        ));
    }
    let code = qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::L)
        .map_err(|e| {
            ApiError::unprocessable("text", format!("cannot make a QR code of it: {e}"))
        })?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        svg,
    )
        .into_response())
}
