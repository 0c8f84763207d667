//! `GET /v1/leads/{lead_id}`: why records are one person. The cluster's keys (and which stopped
//! identifying), its member events, its merges, its per-field newest values and its sources.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use super::{ApiError, AppState, auth};
use crate::identity::Cluster;

pub async fn explain(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(lead_id): Path<String>,
) -> Result<Json<Cluster>, ApiError> {
    auth::require(&st, &headers)?;
    let store = st.identity.clone();
    let id = lead_id.clone();
    let found = tokio::task::spawn_blocking(move || store.explain(&id))
        .await
        .map_err(|e| internal(e.to_string()))?
        .map_err(|e| internal(e.to_string()))?;
    found.map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "lead.not_found",
            Some("lead_id"),
            format!("no lead with id `{lead_id}`"),
        )
    })
}

fn internal(why: String) -> ApiError {
    tracing::error!(%why, "identity store read failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "identity.unavailable",
        None,
        "the identity store could not be read; retry later",
    )
    .retry_after(1)
}
