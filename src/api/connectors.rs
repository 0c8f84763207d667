//! `GET /v1/connectors` and `GET /v1/connectors/{name}`: each connector's health (state, last
//! success, last error, lag, snapshot progress, checkpoint), for operators and monitors.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::{ApiError, AppState, auth};
use crate::sources::status::ConnectorStatus;

pub async fn list(State(st): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    auth::require(&st, &headers)?;
    Ok(Json(json!({ "connectors": st.statuses.all() })))
}

pub async fn read(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<ConnectorStatus>, ApiError> {
    auth::require(&st, &headers)?;
    st.statuses.get(&name).map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "connector.not_found",
            Some("name"),
            format!("no connector named `{name}`"),
        )
    })
}
