//! The HTTP API (axum): webhooks, lead explanations and health. The server takes its listener and a shutdown signal,
//! so tests can bind port 0 and stop it when they like.

mod access;
mod assignment;
mod auth;
mod connectors;
mod console;
mod erasures;
mod imports;

mod leads;
mod openapi;
mod quarantine;
mod rejections;
mod server;
mod stats;
mod webhooks;

pub use crate::http_error::ApiError;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::assign::AssignmentStore;
use crate::config::Settings;
use crate::identity::IdentityStore;
use crate::intake::Journal;
use crate::pipeline::Processor;
use crate::sinks::DeliveryHealth;
use crate::sources::status::Statuses;

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    webhooks: Arc<HashMap<String, webhooks::Endpoint>>,
    journal: Journal,
    max_backlog: u64,
    max_body: usize,
    delivery: watch::Receiver<DeliveryHealth>,
    identity: Arc<dyn IdentityStore>,
    assignment: Arc<dyn AssignmentStore>,
    processor: Arc<Processor>,
    statuses: Statuses,
    tokens: Arc<auth::Tokens>,
    /// Without one (only in tests), answers that would carry personal data in clear are refused.
    access: Option<Arc<crate::access::AccessAudit>>,
    http: crate::config::HttpSettings,
    stats_zone: jiff::tz::TimeZone,
    imports: Option<crate::imports::Imports>,
    erasures: Option<Arc<crate::erasure::Erasures>>,
}

impl AppState {
    pub fn new(
        settings: &Settings,
        journal: Journal,
        delivery: watch::Receiver<DeliveryHealth>,
        identity: Arc<dyn IdentityStore>,
        assignment: Arc<dyn AssignmentStore>,
        processor: Arc<Processor>,
        sources: crate::sources::Running,
    ) -> Self {
        let webhooks: HashMap<String, webhooks::Endpoint> = sources
            .webhooks
            .into_iter()
            .map(|(name, hook)| (name, webhooks::Endpoint::new(hook)))
            .collect();
        Self {
            webhooks: Arc::new(webhooks),
            journal,
            max_backlog: settings.intake.max_backlog,
            max_body: settings.intake.max_body_bytes,
            delivery,
            identity,
            assignment,
            processor,
            statuses: sources.statuses,
            tokens: Arc::new(auth::Tokens::of(&settings.api)),
            access: None,
            http: settings.http.clone(),
            stats_zone: settings.stats.timezone.clone(),
            imports: None,
            erasures: None,
        }
    }

    /// With erasures through the API (`POST /v1/erasures`).
    pub fn with_erasures(mut self, erasures: Arc<crate::erasure::Erasures>) -> Self {
        self.erasures = Some(erasures);
        self
    }

    /// With the access audit that reads of personal data are written to.
    pub fn with_access_audit(mut self, audit: Arc<crate::access::AccessAudit>) -> Self {
        self.access = Some(audit);
        self
    }

    /// With imports through the API (`POST /v1/imports`).
    pub fn with_imports(mut self, imports: crate::imports::Imports) -> Self {
        self.imports = Some(imports);
        self
    }
}

pub fn router(state: AppState) -> Router {
    let body_timeout = state.http.body_timeout;
    Router::new()
        .route(
            "/v1/webhooks/{connector}",
            post(webhooks::receive).get(webhooks::handshake),
        )
        .route("/v1/whoami", get(access::whoami))
        .route("/v1/access-audit", get(access::list))
        .route("/v1/erasures", post(erasures::submit).get(erasures::list))
        .route("/v1/erasures/{id}", get(erasures::read))
        .route("/v1/leads", get(leads::search))
        .route("/v1/leads/{lead_id}", get(leads::explain))
        .route("/v1/leads/{lead_id}/status", post(leads::status))
        .route("/v1/connectors", get(connectors::list))
        .route("/v1/connectors/{name}", get(connectors::read))
        .route("/v1/connectors/{name}/pause", post(connectors::pause))
        .route("/v1/connectors/{name}/resume", post(connectors::resume))
        .route("/v1/assignment/preview", post(assignment::preview))
        .route("/v1/assignment/audit", get(assignment::audit))
        .route(
            "/v1/assignment/{collection}",
            get(assignment::list).post(assignment::create),
        )
        .route(
            "/v1/assignment/{collection}/{id}",
            get(assignment::read)
                .put(assignment::replace)
                .delete(assignment::remove),
        )
        .route("/v1/quarantine", get(quarantine::list))
        .route("/v1/rejections", get(rejections::latest))
        .route("/v1/stats", get(stats::read))
        .route("/v1/stats/funnel", get(stats::funnel))
        .route("/v1/imports", post(imports::upload))
        .route("/v1/imports/{id}", get(imports::read))
        .route("/v1/imports/{id}/rejected.csv", get(imports::report))
        .route("/console", get(console::root))
        .route("/console/", get(console::index))
        .route("/console/{*path}", get(console::file))
        .route("/openapi.json", get(openapi::document))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn(observe))
        .fallback(not_found)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            body_timeout,
            server::guard,
        ))
}

/// Serves until `shutdown` resolves, then finishes the requests in flight (see [`server`]).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.http.clone();
    server::serve(listener, router(state), &limits, shutdown).await
}

/// `?after=&limit=` of a paged listing: entries after a sequence number, 1 to 1,000 (100 unless
/// given).
#[derive(Debug, serde::Deserialize)]
struct Page {
    #[serde(default)]
    after: u64,
    #[serde(default = "Page::default_limit")]
    limit: usize,
}

impl Page {
    fn default_limit() -> usize {
        100
    }

    fn of(
        query: Result<axum::extract::Query<Self>, axum::extract::rejection::QueryRejection>,
    ) -> Result<Self, ApiError> {
        let mut page = query_of(
            query,
            Some("after"),
            "`after` and `limit` are whole numbers",
        )?;
        page.limit = page.limit.clamp(1, 1000);
        Ok(page)
    }
}

/// A query string read as `T`, or a 400 `query.invalid` naming `field` and saying what is
/// `expected`, with what was wrong.
fn query_of<T>(
    query: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
    field: Option<&str>,
    expected: &str,
) -> Result<T, ApiError> {
    query.map(|q| q.0).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "query.invalid",
            field,
            format!("{expected}: {e}"),
        )
    })
}

/// The `next_before` of a newest-first page of `len` entries out of `limit` asked: the last
/// one's seq while the page is full, `None` after the oldest.
fn next_before(len: usize, limit: usize, last: Option<u64>) -> Option<u64> {
    last.filter(|_| len == limit)
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready when the journal has room and the last delivery attempt succeeded. Quarantined events
/// are counted, but do not make it unready: delivery goes on without them.
async fn readyz(State(st): State<AppState>) -> impl IntoResponse {
    let backlog = st.journal.backlog();
    let last_error = st.delivery.borrow().last_error.clone();
    let full = backlog >= st.max_backlog;
    let status = if full || last_error.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({
        "status": if status.is_success() { "ready" } else { "degraded" },
        "backlog": backlog,
        "max_backlog": st.max_backlog,
        "delivery_error": last_error,
        "quarantined": st.journal.quarantined_count(),
    });
    let mut body = body;
    // With [coordination]: who pulls each leased connector.
    let leases: serde_json::Map<String, serde_json::Value> = st
        .statuses
        .all()
        .into_iter()
        .filter_map(|c| {
            let l = c.lease?;
            Some((
                c.name,
                json!({"holder": l.holder, "held_here": l.held_here}),
            ))
        })
        .collect();
    if !leases.is_empty() {
        body["leases"] = serde_json::Value::Object(leases);
    }
    (status, Json(body))
}

/// `GET /metrics`: the Prometheus text format (see [`crate::telemetry`]); 404 with
/// `[metrics] enabled = false`.
async fn metrics(State(st): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let journal = st.journal.clone();
    let oldest = tokio::task::spawn_blocking(move || journal.oldest_undelivered())
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    let age = oldest
        .and_then(|at| at.parse::<jiff::Timestamp>().ok())
        .map_or(0.0, |at| {
            (jiff::Timestamp::now().as_millisecond() - at.as_millisecond()).max(0) as f64 / 1000.0
        });
    let gauges = crate::telemetry::JournalGauges {
        events: st.journal.backlog(),
        bytes: st.journal.backlog_bytes(),
        oldest_age_seconds: age,
        quarantined: st.journal.quarantined_count(),
        delivery_failing: st.delivery.borrow().last_error.is_some(),
    };
    let text = crate::telemetry::render(&st.statuses.all(), &gauges).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "metrics.disabled",
            None,
            "metrics are off in this gateway's settings ([metrics] enabled = false)",
        )
    })?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}

/// Counts each request of a matched route by its template (`/v1/webhooks/{connector}`, never the
/// path itself), method and status, with its duration.
async fn observe(
    path: Option<axum::extract::MatchedPath>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let response = next.run(request).await;
    let route = path.as_ref().map_or("unmatched", |p| p.as_str());
    crate::telemetry::http_request(
        route,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route.not_found",
        None,
        "no such endpoint",
    )
}
