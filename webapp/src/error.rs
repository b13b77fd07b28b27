//! The one error type of the service and how each error answers a request.

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mongodb::error::{ErrorKind, WriteFailure};

use crate::routes::json_response;
use crate::validate::MAX_DOCUMENT_BYTES;

/// Why a request failed. Each variant maps to a status and a JSON `{"error": "..."}` body.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request body is not declared as JSON.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// The request body is over the configured limit.
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The document is larger than MongoDB stores.
    #[error(
        "the document is {bytes} bytes as BSON, over MongoDB's limit of {MAX_DOCUMENT_BYTES} bytes"
    )]
    DocumentTooLarge {
        /// Its size as BSON.
        bytes: usize,
    },
    /// The request is malformed or its document is not acceptable.
    #[error("{0}")]
    BadRequest(String),
    /// No route matches the path.
    #[error("not found")]
    NotFound,
    /// The route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Too many requests are being served: this one found no turn in time.
    #[error("server busy, retry later")]
    Busy,
    /// The response did not start within the request timeout.
    #[error("request timed out")]
    Timeout,
    /// A MongoDB operation failed.
    #[error("database error: {0}")]
    Database(#[from] mongodb::error::Error),
    /// A stored document could not be read as BSON.
    #[error("stored document is not valid BSON: {0}")]
    CorruptDocument(String),
}

/// What the bson crate finds wrong in stored bytes.
impl From<mongodb::bson::raw::Error> for Error {
    fn from(err: mongodb::bson::raw::Error) -> Self {
        Error::CorruptDocument(err.to_string())
    }
}

impl Error {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::PayloadTooLarge { .. } | Error::DocumentTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::Busy | Error::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            Error::Database(err) if is_unavailable(err) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Database(err) if is_rejected_document(err) => StatusCode::BAD_REQUEST,
            Error::Database(_) | Error::CorruptDocument(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message a client sees: database details stay in the log.
    fn public_message(&self) -> String {
        match self {
            Error::Database(err) if is_unavailable(err) => "database unavailable".to_owned(),
            Error::Database(err) => match err.kind.as_ref() {
                ErrorKind::Write(WriteFailure::WriteError(write)) => {
                    format!("the database rejected the document: {}", write.message)
                }
                _ => "database error".to_owned(),
            },
            Error::CorruptDocument(_) => "database error".to_owned(),
            other => other.to_string(),
        }
    }
}

/// Whether the database could not be reached or did not acknowledge: worth a retry later.
pub fn is_unavailable(err: &mongodb::error::Error) -> bool {
    matches!(
        err.kind.as_ref(),
        ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::Shutdown
            | ErrorKind::Write(WriteFailure::WriteConcernError(_))
    )
}

/// Whether the server refused this particular document (the client's input, not an outage).
fn is_rejected_document(err: &mongodb::error::Error) -> bool {
    matches!(
        err.kind.as_ref(),
        ErrorKind::Write(WriteFailure::WriteError(_))
    )
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let mut response = json_response(
            status,
            &serde_json::json!({ "error": self.public_message() }),
        );
        if matches!(self, Error::Busy) {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
