//! Errors: the daemon's own ([`DaemonError`]) and the API's JSON error bodies
//! ([`ApiError`]), plus the JSON body extractor that maps every rejection to the
//! contract's shape (400 for malformed JSON, 422 naming the field for invalid
//! values).

use std::path::PathBuf;

use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use utoipa::ToSchema;

/// What can go wrong starting or running the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another daemon holds the data directory's lock.
    #[error("another shoal daemon (pid {}) is running for {}; stop it first or use --data-dir", pid.map_or("unknown".to_string(), |p| p.to_string()), data_dir.display())]
    AlreadyRunning { pid: Option<u32>, data_dir: PathBuf },
    /// A file of the daemon could not be read or written.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The API address could not be bound.
    #[error("cannot listen for the API on {addr}: {source}; choose another address with --api")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The peer (store, networking) failed to start.
    #[error("cannot start the peer: {0}")]
    Host(#[from] shoal_node::host::HostError),
    /// A persisted file of the daemon is corrupt.
    #[error("{} is not valid: {message}; fix or remove it", path.display())]
    Corrupt { path: PathBuf, message: String },
}

/// The `code` of an API error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unprocessable,
    NotFound,
    Conflict,
    Unauthorized,
    Forbidden,
    Internal,
}

/// The error object inside every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// The request field at fault (a JSON path like `path` or `download_limit`,
    /// or `id` for an id in the URL), or null.
    pub field: Option<String>,
    /// A sentence saying what went wrong and what to do.
    pub message: String,
}

/// Every error response: `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// An error answered to an API client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, field: Option<&str>, message: String) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: ErrorDetail {
                    code,
                    field: field.map(str::to_owned),
                    message,
                },
            },
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(field: Option<&str>, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            field,
            message.into(),
        )
    }

    /// 403: the request comes from a page of another site (its `Host` or
    /// `Origin` is not this daemon's).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            None,
            message.into(),
        )
    }

    /// 422: a well-formed request with an invalid value in `field`.
    pub fn unprocessable(field: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Unprocessable,
            Some(field),
            message.into(),
        )
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            None,
            message.into(),
        )
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            None,
            message.into(),
        )
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            None,
            message.into(),
        )
    }

    /// 500: a failure of the daemon itself, never of the client's input.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            None,
            message.into(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// A JSON request body of type `T`: requires `Content-Type: application/json`,
/// answers 400 for malformed JSON and 422 (naming the field) for values of the
/// wrong type or missing required fields.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                let v = v.trim().to_ascii_lowercase();
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            });
        if !json_ct {
            return Err(ApiError::bad_request(
                None,
                "the request body must be JSON: send it with Content-Type: application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        ErrorCode::BadRequest,
                        None,
                        format!(
                            "the request body is larger than {} bytes; send a smaller one",
                            crate::api::BODY_LIMIT
                        ),
                    )
                } else {
                    ApiError::bad_request(None, format!("cannot read the request body: {e}"))
                }
            })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Deserializes `bytes` with the error mapping of [`ApiJson`].
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every body of this API is one JSON object: an array (which serde would
    // read into a struct field by field) or a bare value is refused.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        return Err(ApiError::bad_request(
            None,
            "the request body must be a JSON object ({...})",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let res: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    let value = res.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        use serde_json::error::Category;
        match inner.classify() {
            Category::Syntax | Category::Eof | Category::Io => ApiError::bad_request(
                None,
                format!("the request body is not valid JSON: {inner}; send a JSON object"),
            ),
            Category::Data => {
                let msg = inner.to_string();
                let field = missing_field(&msg)
                    .map(|f| {
                        if path == "." {
                            f.to_owned()
                        } else {
                            format!("{path}.{f}")
                        }
                    })
                    .or_else(|| unknown_field(&msg).map(str::to_owned))
                    .unwrap_or_else(|| if path == "." { String::new() } else { path });
                let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
                if field.is_empty() {
                    ApiError::unprocessable("", format!("the request body is invalid: {msg}"))
                        .without_field()
                } else {
                    ApiError::unprocessable(&field, format!("invalid value for {field}: {msg}"))
                }
            }
        }
    })?;
    // Nothing but white space may follow the object.
    de.end().map_err(|e| {
        ApiError::bad_request(
            None,
            format!("the request body has data after its JSON object: {e}; send one JSON object"),
        )
    })?;
    Ok(value)
}

impl ApiError {
    fn without_field(mut self) -> Self {
        self.body.error.field = None;
        self
    }
}

fn missing_field(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("missing field `")?;
    rest.split('`').next()
}

fn unknown_field(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// The path parameters of a route, like axum's `Path`, but a URL that does not
/// decode (invalid percent-encoding or UTF-8) is answered with a JSON 400.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(e) => Err(ApiError::bad_request(
                None,
                format!(
                    "{}; ids are written as 64 hex digits (peer ids in base58)",
                    e.body_text()
                ),
            )),
        }
    }
}

/// The query parameters of a route, like axum's `Query`, but a query that
/// does not parse is answered with a JSON 422 naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> axum::extract::FromRequestParts<S>
    for ApiQuery<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let msg = e.inner().to_string();
                let field = unknown_field(&msg)
                    .map(str::to_owned)
                    .or_else(|| {
                        let p = e.path().to_string();
                        (p != ".").then_some(p)
                    })
                    .unwrap_or_default();
                if field.is_empty() {
                    ApiError::unprocessable("", format!("the query is invalid: {msg}"))
                        .without_field()
                } else {
                    ApiError::unprocessable(
                        &field,
                        format!("invalid query parameter {field}: {msg}"),
                    )
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Body {
        path: String,
        limit: Option<u64>,
    }

    #[test]
    fn json_errors_are_400_for_syntax_and_422_naming_the_field_for_values() {
        let e = parse_json::<Body>(b"{not json").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse_json::<Body>(b"{}").unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.body.error.field.as_deref(), Some("path"));
        let e = parse_json::<Body>(br#"{"path": "x", "limit": -5}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.body.error.field.as_deref(), Some("limit"));
        let e = parse_json::<Body>(br#"{"path": 3}"#).unwrap_err();
        assert_eq!(e.body.error.field.as_deref(), Some("path"));
    }
}
