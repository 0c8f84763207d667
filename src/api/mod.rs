//! The HTTP API (axum): webhooks, lead explanations and health. The server takes its listener and a shutdown signal,
//! so tests can bind port 0 and stop it when they like.

mod assignment;
mod auth;
mod connectors;

mod leads;
mod openapi;
mod quarantine;
mod server;
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

use secrecy::SecretString;

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
    token: Option<SecretString>,
    http: crate::config::HttpSettings,
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
            token: settings.api.token.clone(),
            http: settings.http.clone(),
        }
    }
}

pub fn router(state: AppState) -> Router {
    let body_timeout = state.http.body_timeout;
    Router::new()
        .route(
            "/v1/webhooks/{connector}",
            post(webhooks::receive).get(webhooks::handshake),
        )
        .route("/v1/leads/{lead_id}", get(leads::explain))
        .route("/v1/connectors", get(connectors::list))
        .route("/v1/connectors/{name}", get(connectors::read))
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
        .route("/openapi.json", get(openapi::document))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
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
        let axum::extract::Query(mut page) = query.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "query.invalid",
                Some("after"),
                format!("`after` and `limit` are whole numbers: {e}"),
            )
        })?;
        page.limit = page.limit.clamp(1, 1000);
        Ok(page)
    }
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
    (status, Json(body))
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route.not_found",
        None,
        "no such endpoint",
    )
}
