//! `POST /v1/webhooks/{connector}`: backpressure, body, signature, rate limit, parsing,
//! idempotency, then the journal. The 202 is sent only after the event is fsynced.

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use governor::DefaultDirectRateLimiter;
use governor::clock::{Clock, DefaultClock};
use serde_json::json;

use super::{ApiError, AppState};
use crate::config::{
    GoogleAdsConnector, LinkedinConnector, MetaConnector, OceanEngineConnector, TiktokConnector,
    WebhookConnector,
};
use crate::lead::{IntakeEvent, SourceKind};
use crate::sources::inbox::{Inbox, Notice};
use crate::sources::webhook::SignatureError;
use crate::sources::webhook::{field_text, parse_body, verify_signature};
use crate::sources::{google_ads, linkedin, meta, oceanengine, tiktok};
use secrecy::ExposeSecret;

/// What receives on a webhook URL: the generic web-form webhook, or a platform's.
pub(super) enum Kind {
    Webhook(WebhookConnector),
    GoogleAds(GoogleAdsConnector),
    Meta(MetaConnector, std::sync::Arc<Inbox>),
    Oceanengine(OceanEngineConnector),
    Linkedin(LinkedinConnector, std::sync::Arc<Inbox>),
    Tiktok(TiktokConnector),
}

pub(super) struct Endpoint {
    kind: Kind,
    limiter: Option<DefaultDirectRateLimiter>,
}

impl Endpoint {
    pub(super) fn new(kind: Kind) -> Self {
        let rate_limit = match &kind {
            Kind::Webhook(w) => w.rate_limit,
            Kind::GoogleAds(_)
            | Kind::Meta(..)
            | Kind::Oceanengine(_)
            | Kind::Linkedin(..)
            | Kind::Tiktok(_) => None,
        };
        let limiter = rate_limit.and_then(|rl| rl.limiter());
        Self { kind, limiter }
    }
}

fn unauthorized(e: SignatureError) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        e.code(),
        Some(e.field()),
        e.to_string(),
    )
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
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let ep = st
        .webhooks
        .get(&connector)
        .ok_or_else(|| unknown(&connector))?;
    match &ep.kind {
        Kind::Meta(m, _) => {
            let challenge =
                meta::handshake(&query, m.verify_token.expose_secret()).map_err(|e| {
                    ApiError::new(
                        StatusCode::FORBIDDEN,
                        "handshake.refused",
                        Some(e.field()),
                        e.to_string(),
                    )
                })?;
            Ok(([(header::CONTENT_TYPE, "text/plain")], challenge).into_response())
        }
        Kind::Linkedin(l, _) => {
            let reply =
                linkedin::challenge(&query, l.client_secret.expose_secret()).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "handshake.refused",
                        Some("challengeCode"),
                        "the validation request has no `challengeCode`",
                    )
                })?;
            Ok(Json(reply).into_response())
        }
        Kind::Webhook(_) | Kind::GoogleAds(_) | Kind::Oceanengine(_) | Kind::Tiktok(_) => {
            Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method.not_allowed",
                None,
                format!("connector `{connector}` receives POST only"),
            ))
        }
    }
}

pub(super) async fn receive(
    State(st): State<AppState>,
    Path(connector): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let ep = st
        .webhooks
        .get(&connector)
        .ok_or_else(|| unknown(&connector))?;
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
    if let Kind::Oceanengine(_) = &ep.kind
        && let Some(reply) = oceanengine::verification(&bytes)
    {
        return Ok(Json(reply).into_response());
    }
    if let Kind::Linkedin(l, inbox) = &ep.kind {
        linkedin::verify(l.client_secret.expose_secret(), &headers, &bytes)
            .map_err(unauthorized)?;
        // LinkedIn may send an array of notifications, which the generic body parser refuses.
        let body: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "body.invalid_json",
                Some("body"),
                format!("not JSON: {e}"),
            )
        })?;
        return notified(inbox, &connector, linkedin::notices(&body)).await;
    }
    let signature = match &ep.kind {
        Kind::Webhook(w) => w.signature.clone(),
        Kind::Meta(m, _) => Some(meta::signature(&m.app_secret)),
        Kind::Oceanengine(o) => oceanengine::spi_signature(o),
        Kind::Tiktok(t) => tiktok::signature(t),
        Kind::GoogleAds(_) | Kind::Linkedin(..) => None,
    };
    if let Some(sig) = &signature {
        let now = jiff::Timestamp::now().as_second();
        verify_signature(sig, &headers, &bytes, now).map_err(unauthorized)?;
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
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let mut payload = parse_body(content_type, &bytes).map_err(|e| {
        let status = if e.unsupported() {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, e.code(), Some(e.field()), e.to_string())
    })?;
    let header_key = match headers.get("idempotency-key") {
        Some(v) => match v.to_str().map(str::trim) {
            Ok(k) if !k.is_empty() && k.len() <= 255 => Some(k.to_owned()),
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "idempotency_key.invalid",
                    Some("Idempotency-Key"),
                    "must be 1 to 255 visible ASCII characters",
                ));
            }
        },
        None => None,
    };
    let event = match &ep.kind {
        Kind::Meta(_, inbox) => {
            return notified(inbox, &connector, meta::notifications(&payload)).await;
        }
        // Answered above (its body may be an array); kept for completeness.
        Kind::Linkedin(_, inbox) => {
            return notified(inbox, &connector, linkedin::notices(&payload)).await;
        }
        Kind::Oceanengine(_) => return pushed(&st, &connector, &payload, header_key).await,
        Kind::Tiktok(t) => return called_back(&st, t, &payload).await,
        Kind::Webhook(w) => {
            let idempotency = header_key.or_else(|| {
                w.idempotency_field
                    .as_deref()
                    .and_then(|f| field_text(&payload, f))
            });
            let external_id = w
                .external_id_field
                .as_deref()
                .and_then(|f| field_text(&payload, f));
            let event = IntakeEvent::new(&connector, SourceKind::Webhook, external_id, payload);
            (event, idempotency)
        }
        Kind::GoogleAds(g) => {
            google_ads::take_key(&mut payload, g.google_key.expose_secret()).map_err(|e| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "google_key.invalid",
                    Some("google_key"),
                    e.to_string(),
                )
            })?;
            // Google retries until it gets a 200: a retry of a lead_id gets the first answer.
            let lead_id = google_ads::lead_id(&payload);
            let test = google_ads::is_test(&payload);
            let mut event =
                IntakeEvent::new(&connector, SourceKind::Platform, lead_id.clone(), payload);
            event.test = test;
            (event, header_key.or(lead_id))
        }
    };
    let (event, idempotency_key) = event;
    let receipt = journal(&st, &connector, event, idempotency_key).await?;
    let body = json!({
        "event_id": receipt.event_id,
        "received_at": receipt.received_at,
        "status": if receipt.replayed { "duplicate" } else { "accepted" },
    });
    let mut resp = (StatusCode::ACCEPTED, Json(body)).into_response();
    if receipt.replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// A webhook of ids only (Meta, LinkedIn): the notices go to the connector's inbox, stored
/// before the 200.
async fn notified(
    inbox: &Inbox,
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

/// An Ocean Engine SPI message: each lead in its `data` is journaled, keyed by the message id
/// (a redelivered message is a duplicate) and carrying its `clue_id` (a lead also pulled is
/// published once).
async fn pushed(
    st: &AppState,
    connector: &str,
    message: &serde_json::Value,
    header_key: Option<String>,
) -> Result<Response, ApiError> {
    let (leads, message_id) = oceanengine::pushed(message).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "body.invalid",
            Some("data"),
            e.to_string(),
        )
    })?;
    let key = header_key.or(message_id);
    let many = leads.len() > 1;
    let mut receipts = Vec::new();
    for (i, lead) in leads.into_iter().enumerate() {
        let clue_id = oceanengine::clue_id(&lead);
        let idempotency = match (&key, many) {
            (Some(k), true) => Some(format!("{k}#{i}")),
            (Some(k), false) => Some(k.clone()),
            (None, _) => clue_id.clone(),
        };
        let mut event = IntakeEvent::new(connector, SourceKind::Platform, clue_id, lead);
        event.test = oceanengine::is_test(&event.payload);
        receipts.push(journal(st, connector, event, idempotency).await?);
    }
    let events: Vec<_> = receipts
        .iter()
        .map(|r| json!({"event_id": r.event_id, "status": if r.replayed { "duplicate" } else { "accepted" }}))
        .collect();
    let body = json!({"BaseResp": {"StatusCode": 200, "StatusMessage": "OK"}, "events": events});
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// Journals one event; resolves once it is fsynced.
async fn journal(
    st: &AppState,
    connector: &str,
    event: IntakeEvent,
    idempotency_key: Option<String>,
) -> Result<crate::intake::Receipt, ApiError> {
    st.journal
        .append(event, idempotency_key)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, connector = %connector, "cannot journal an event");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "intake.unavailable",
                None,
                "the lead could not be stored; retry later",
            )
            .retry_after(1)
        })
}

/// A TikTok callback: each entry is a lead, journaled under its id (TikTok retries until it gets
/// a 200; a retry is answered again and publishes nothing).
async fn called_back(
    st: &AppState,
    t: &TiktokConnector,
    callback: &serde_json::Value,
) -> Result<Response, ApiError> {
    let leads = tiktok::entries(callback);
    if leads.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "body.invalid",
            Some("entry"),
            "a callback lists its leads in `entry`",
        ));
    }
    let mut events = Vec::new();
    for lead in leads {
        let id = tiktok::lead_id(&lead, &t.id_column);
        let event = IntakeEvent::new(&t.name, SourceKind::Platform, id.clone(), lead);
        let r = journal(st, &t.name, event, id).await?;
        events.push(json!({"event_id": r.event_id, "status": if r.replayed { "duplicate" } else { "accepted" }}));
    }
    Ok((
        StatusCode::OK,
        Json(json!({"code": 0, "message": "OK", "events": events})),
    )
        .into_response())
}
