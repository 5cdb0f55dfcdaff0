//! The daemon's transfers are the node's managed transfers
//! ([`shoal_node::transfers`]); here their errors become HTTP answers and
//! their events become server-sent events.

use tokio::sync::broadcast;

pub use shoal_node::transfers::*;

use crate::error::ApiError;
use crate::Event;

impl From<TransferError> for ApiError {
    fn from(e: TransferError) -> Self {
        match e {
            TransferError::NotFound(_) => ApiError::not_found(e.to_string()),
            TransferError::Conflict(m) => ApiError::conflict(m),
            TransferError::NotAFolder(_) => ApiError::conflict(e.to_string()),
            TransferError::Invalid { field, message } => ApiError::unprocessable(field, message),
            other => {
                tracing::warn!(error = %other, "a transfer operation failed");
                ApiError::internal(other.to_string())
            }
        }
    }
}

impl From<TransferError> for crate::DaemonError {
    fn from(e: TransferError) -> Self {
        match e {
            TransferError::Io { what, path, source } => {
                crate::DaemonError::Io { what, path, source }
            }
            TransferError::Corrupt { path, message } => {
                crate::DaemonError::Corrupt { path, message }
            }
            other => crate::DaemonError::Corrupt {
                path: std::path::PathBuf::from("daemon/transfers.json"),
                message: other.to_string(),
            },
        }
    }
}

/// The server-sent event of a transfer event (docs/api.md: `transfer`,
/// `transfer_removed`, `error`).
pub(crate) fn to_event(e: TransferEvent) -> Event {
    match e {
        TransferEvent::Changed(t) => {
            Event::new("transfer", serde_json::to_value(t).unwrap_or_default())
        }
        TransferEvent::Removed(id) => {
            Event::new("transfer_removed", serde_json::json!({ "id": id }))
        }
        TransferEvent::Failed { message, transfer } => Event::new(
            "error",
            serde_json::json!({"message": message, "transfer": transfer}),
        ),
    }
}

/// Forwards the transfers' events to the event stream, in order, until the
/// transfers are gone. A forwarder that fell behind says so on the stream.
pub(crate) async fn forward(
    mut rx: broadcast::Receiver<TransferEvent>,
    events: broadcast::Sender<Event>,
) {
    loop {
        match rx.recv().await {
            Ok(e) => {
                let _ = events.send(to_event(e));
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                let _ = events.send(Event::new(
                    "error",
                    serde_json::json!({
                        "message": format!("{n} transfer events were dropped; reload the transfers with GET /api/v1/transfers"),
                        "transfer": null
                    }),
                ));
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
