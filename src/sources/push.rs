//! What a platform does on its webhook URL (`/v1/webhooks/{name}`), after the steps every push
//! source shares. The HTTP handler (`api::webhooks`) looks the connector up, refuses requests
//! while the journal is full, reads the body up to its limit, asks the platform's [`Webhook`]
//! who sent it ([`Webhook::authenticate`]), applies the rate limit to senders that passed, and
//! then hands the request over as a [`Push`]; the
//! platform turns the payload into events, journals them through [`Push::journal`] (which
//! resolves once they are fsynced) and builds the reply its platform expects.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use serde_json::{Value, json};

use crate::http_error::ApiError;
use crate::intake::{Journal, Receipt};
use crate::lead::IntakeEvent;
use crate::sources::RateLimit;
use crate::sources::inbox::{Inbox, Notice};
use crate::sources::webhook::{SignatureConfig, SignatureError, parse_body, verify_signature};

/// What [`Webhook::receive`] gives: the reply, once the events are journaled.
pub type Reply<'a> = BoxFuture<'a, Result<Response, ApiError>>;

/// What [`Webhook::authenticate`] gives: `Some(reply)` to answer at once (a verification).
pub type Verdict = Result<Option<Response>, ApiError>;

/// A platform's handling of its webhook URL.
pub trait Webhook: Send + Sync {
    /// `GET`: a subscription handshake (Meta's `hub.challenge`, LinkedIn's `challengeCode`).
    /// Without one the URL takes `POST` only.
    fn handshake(
        &self,
        connector: &str,
        _query: &HashMap<String, String>,
    ) -> Result<Response, ApiError> {
        Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method.not_allowed",
            None,
            format!("connector `{connector}` receives POST only"),
        ))
    }

    /// Requests per second this URL takes from senders that passed [`Webhook::authenticate`];
    /// more get 429 with `Retry-After`.
    fn rate_limit(&self) -> Option<RateLimit> {
        None
    }

    /// Checks who sent the request (a signature, a shared key), or answers it at once (a
    /// verification request): `Ok(Some(reply))`.
    fn authenticate(&self, request: &Request<'_>) -> Verdict;

    /// Turns the request into events, journals them and replies.
    fn receive<'a>(&'a self, push: Push<'a>) -> Reply<'a>;
}

/// A request as [`Webhook::authenticate`] sees it: its body read, nothing checked yet.
pub struct Request<'a> {
    pub method: &'a Method,
    /// The path and query, as sent (`/v1/webhooks/jotform?token=...`).
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

impl Request<'_> {
    /// A query parameter, decoded (`None` when absent or not text).
    pub fn query(&self, name: &str) -> Option<String> {
        let query = crate::sources::webhook::parse_query(self.uri.query()?)?;
        match query.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Array(items) => items.first()?.as_str().map(str::to_owned),
            _ => None,
        }
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok().map(str::trim)
    }
}

/// A request that passed the shared steps.
pub struct Push<'a> {
    pub connector: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub journal: &'a Journal,
}

impl Push<'_> {
    /// The `Idempotency-Key` header, if sent: 1 to 255 visible ASCII characters. A repeated key
    /// gets the first answer back.
    pub fn idempotency_key(&self) -> Result<Option<String>, ApiError> {
        match self.headers.get("idempotency-key") {
            Some(v) => match v.to_str().map(str::trim) {
                Ok(k) if !k.is_empty() && k.len() <= 255 => Ok(Some(k.to_owned())),
                _ => Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "idempotency_key.invalid",
                    Some("Idempotency-Key"),
                    "must be 1 to 255 visible ASCII characters",
                )),
            },
            None => Ok(None),
        }
    }

    /// The body as a JSON object of fields (JSON or a form, in its charset).
    pub fn payload(&self) -> Result<Value, ApiError> {
        let content_type = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        parse_body(content_type, self.body).map_err(|e| {
            let status = if e.unsupported() {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            } else {
                StatusCode::BAD_REQUEST
            };
            ApiError::new(status, e.code(), Some(e.field()), e.to_string())
        })
    }

    /// The body as any JSON value (an array of notifications, say).
    pub fn json(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(self.body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "body.invalid_json",
                Some("body"),
                format!("not JSON: {e}"),
            )
        })
    }

    /// Journals one event; resolves once it is fsynced. A repeated `idempotency_key` gets the
    /// first receipt back.
    pub async fn journal(
        &self,
        event: IntakeEvent,
        idempotency_key: Option<String>,
    ) -> Result<Receipt, ApiError> {
        self.journal
            .append(event, idempotency_key)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, connector = %self.connector, "cannot journal an event");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "intake.unavailable",
                    None,
                    "the lead could not be stored; retry later",
                )
                .retry_after(1)
            })
    }
}

/// `202 {"event_id", "received_at", "status"}` for one journaled event, with
/// `Idempotent-Replayed: true` on a repeat.
pub fn accepted(receipt: &Receipt) -> Response {
    let body = json!({
        "event_id": receipt.event_id,
        "received_at": receipt.received_at,
        "status": status(receipt),
    });
    let mut resp = (StatusCode::ACCEPTED, Json(body)).into_response();
    if receipt.replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp
}

/// `200 {"status": "ignored", "reason"}` for a delivery that carries no lead (a test request, a
/// deletion): the sender sees success and does not retry it.
pub fn ignored(reason: &str) -> Response {
    (
        StatusCode::OK,
        Json(json!({"status": "ignored", "reason": reason})),
    )
        .into_response()
}

/// `accepted` or `duplicate`.
pub fn status(receipt: &Receipt) -> &'static str {
    if receipt.replayed {
        "duplicate"
    } else {
        "accepted"
    }
}

/// `{"event_id", "status"}` of each event of a request that carried several.
pub fn receipts(receipts: &[Receipt]) -> Vec<Value> {
    receipts
        .iter()
        .map(|r| json!({"event_id": r.event_id, "status": status(r)}))
        .collect()
}

/// 401 for a request whose signature does not hold.
pub fn unauthorized(e: SignatureError) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        e.code(),
        Some(e.field()),
        e.to_string(),
    )
}

/// Checks an HMAC signature of the body, now.
pub fn signed(sig: &SignatureConfig, headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let now = jiff::Timestamp::now().as_second();
    verify_signature(sig, headers, body, now).map_err(unauthorized)
}

/// 400 for a body that is not what the platform sends.
pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "body.invalid",
        Some(field),
        message,
    )
}

/// A webhook of ids only (Meta, LinkedIn): the notices go to the connector's inbox, stored
/// before the `200 {"status": "accepted", "leads": n}`.
pub async fn notified(
    inbox: &Arc<Inbox>,
    connector: &str,
    notices: Vec<Notice>,
) -> Result<Response, ApiError> {
    let n = notices.len();
    inbox.enqueue(notices).await.map_err(|e| {
        tracing::error!(error = %e, connector = %connector, "cannot store notified leads");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "intake.unavailable",
            None,
            e.to_string(),
        )
        .retry_after(5)
    })?;
    Ok((
        StatusCode::OK,
        Json(json!({"status": "accepted", "leads": n})),
    )
        .into_response())
}
