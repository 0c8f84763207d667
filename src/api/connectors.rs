//! `GET /v1/connectors` and `GET /v1/connectors/{name}`: each connector's health (state, last
//! success, last error, lag, snapshot progress, checkpoint), for operators and monitors.
//! `POST /v1/connectors/{name}/pause` and `/resume`: an operator stops a connector that reads
//! from an API or a database, and starts it again (kept over a restart).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::auth::Need;
use super::{ApiError, AppState, auth};
use crate::sources::status::{ConnectorStatus, PauseError};

pub async fn list(State(st): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    auth::require(&st, &headers, Need::Read)?;
    Ok(Json(json!({ "connectors": st.statuses.all() })))
}

pub async fn read(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<ConnectorStatus>, ApiError> {
    auth::require(&st, &headers, Need::Read)?;
    st.statuses.get(&name).map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "connector.not_found",
            Some("name"),
            format!("no connector named `{name}`"),
        )
    })
}

pub async fn pause(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<ConnectorStatus>, ApiError> {
    set_paused(st, headers, name, true).await
}

pub async fn resume(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<ConnectorStatus>, ApiError> {
    set_paused(st, headers, name, false).await
}

async fn set_paused(
    st: AppState,
    headers: HeaderMap,
    name: String,
    paused: bool,
) -> Result<Json<ConnectorStatus>, ApiError> {
    auth::require(&st, &headers, Need::Admin)?;
    let statuses = st.statuses.clone();
    let done = tokio::task::spawn_blocking(move || statuses.set_paused(&name, paused))
        .await
        .unwrap_or_else(|e| {
            Err(PauseError::Io {
                path: "paused-connectors.json".into(),
                error: std::io::Error::other(e.to_string()),
            })
        });
    match done {
        Ok(status) => {
            tracing::info!(connector = %status.name, paused, "an operator paused or resumed the connector");
            Ok(Json(status))
        }
        Err(e @ PauseError::Unknown(_)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "connector.not_found",
            Some("name"),
            e.to_string(),
        )),
        Err(e @ PauseError::NotPausable(_)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "connector.not_pausable",
            Some("name"),
            e.to_string(),
        )),
        Err(e @ PauseError::Io { .. }) => {
            tracing::error!(error = %e, "cannot record a pause");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage.unavailable",
                None,
                "the pause could not be recorded on disk; retry later",
            )
            .retry_after(1))
        }
    }
}
