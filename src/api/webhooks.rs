//! `POST /v1/webhooks/{connector}` (and `GET` for handshakes): the steps every push source
//! shares, in order: the connector looked up, backpressure (503 while the journal is full), the
//! body read up to its limit, the platform's check of who sent it, the rate limit (only for
//! senders that passed it), then the platform's own handling ([`Webhook::receive`]), which
//! journals the events and replies once they are fsynced.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use governor::DefaultDirectRateLimiter;
use governor::clock::{Clock, DefaultClock};

use super::{ApiError, AppState};
use crate::sources::push::{Push, Request, Webhook};

/// A connector's webhook and its rate limiter.
pub(super) struct Endpoint {
    webhook: Arc<dyn Webhook>,
    limiter: Option<DefaultDirectRateLimiter>,
}

impl Endpoint {
    pub(super) fn new(webhook: Arc<dyn Webhook>) -> Self {
        let limiter = webhook.rate_limit().and_then(|rl| rl.limiter());
        Self { webhook, limiter }
    }
}

fn unknown(connector: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "connector.unknown",
        Some("connector"),
        format!("no webhook connector named `{connector}`"),
    )
}

/// `GET /v1/webhooks/{connector}`: a platform's subscription handshake (Meta's `hub.challenge`).
pub(super) async fn handshake(
    State(st): State<AppState>,
    Path(connector): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let ep = st
        .webhooks
        .get(&connector)
        .ok_or_else(|| unknown(&connector))?;
    ep.webhook.handshake(&connector, &query)
}

pub(super) async fn receive(
    State(st): State<AppState>,
    Path(connector): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let known = st.webhooks.contains_key(&connector);
    let answer = accept(&st, &connector, method, uri, headers, body).await;
    if let (Err(e), true) = (&answer, known) {
        let error_type = match e.status.as_u16() {
            401 | 403 => "unauthorized",
            413 => "too_large",
            429 => "rate_limited",
            503 => "backlog_full",
            400..=499 => "invalid_request",
            _ => "internal",
        };
        crate::telemetry::error(&connector, error_type, "receiving");
    }
    answer
}

/// Checks, then journals, one webhook request.
async fn accept(
    st: &AppState,
    connector: &str,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let ep = st
        .webhooks
        .get(connector)
        .ok_or_else(|| unknown(connector))?;
    if st.journal.backlog() >= st.max_backlog {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "backlog.full",
            None,
            "the gateway is holding too many undelivered leads; retry later",
        )
        .retry_after(5));
    }
    let bytes = to_bytes(body, st.max_body).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body.too_large",
            Some("body"),
            format!("the body is larger than {} bytes", st.max_body),
        )
    })?;
    let request = Request {
        method: &method,
        uri: &uri,
        headers: &headers,
        body: &bytes,
    };
    if let Some(reply) = ep.webhook.authenticate(&request)? {
        return Ok(reply);
    }
    // Only requests that proved who sent them count against the limit: unsigned floods at a
    // signed connector are refused above and leave its senders' budget alone. The body has
    // been read, so the connection stays usable after a 429.
    if let Some(limiter) = &ep.limiter
        && let Err(not_until) = limiter.check()
    {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            Some("connector"),
            format!("connector `{connector}` is over its rate limit"),
        )
        .retry_after(wait.as_secs_f64().ceil() as u64));
    }
    let push = Push {
        connector,
        headers: &headers,
        body: &bytes,
        journal: &st.journal,
    };
    ep.webhook.receive(push).await
}
