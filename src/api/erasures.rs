//! `POST /v1/erasures`, `GET /v1/erasures` and `GET /v1/erasures/{id}`: erasure requests
//! (OpenDSR-style), for the `privacy` scope. See [`crate::erasure`].

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::auth::{self, Need};
use super::{ApiError, AppState};
use crate::erasure::{ErasureError, ErasureRequest, Erasures};
use crate::identity::PHONE;

fn erasures_of(st: &AppState) -> Result<Arc<Erasures>, ApiError> {
    st.erasures.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "erasures.unavailable",
            None,
            "this gateway takes no erasure requests",
        )
    })
}

impl From<ErasureError> for ApiError {
    fn from(e: ErasureError) -> Self {
        match e {
            ErasureError::Invalid(errors) => super::assignment::invalid(errors),
            ErasureError::Conflict(id) => ApiError::new(
                StatusCode::CONFLICT,
                "erasure.conflict",
                Some("subject_request_id"),
                format!(
                    "erasure `{id}` was asked for already with other identities: use a new subject_request_id"
                ),
            ),
            ErasureError::Storage(why) => {
                tracing::error!(%why, "the erasure store failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "erasures.unavailable",
                    None,
                    "the erasure requests could not be written or read; retry later",
                )
                .retry_after(1)
            }
        }
    }
}

/// `POST /v1/erasures`: 202 with the request's status; its identities are suppressed before the
/// answer. The same request again answers 200 with its status.
pub async fn submit(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let caller = auth::require(&st, &headers, Need::Privacy)?;
    let erasures = erasures_of(&st)?;
    let request: ErasureRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "body.malformed",
            None,
            format!(
                "the body is not an erasure request ({{\"subject_request_id\", \"subject_identities\": [{{\"identity_type\", \"identity_value\", \"identity_format\"}}]}}): {e}"
            ),
        )
    })?;
    let processor = st.processor.clone();
    let (id, held) = erasures.parse(&request, |kind, value| {
        let keys = match kind {
            PHONE => processor.search_keys(Some(value), None),
            _ => processor.search_keys(None, Some(value)),
        };
        keys.into_iter().find(|k| k.kind == kind)
    })?;
    let by = caller.name.clone();
    let submitted = request.submitted_time.clone();
    let (erasure, created) =
        tokio::task::spawn_blocking(move || erasures.submit(&id, held, submitted, &by))
            .await
            .map_err(|e| ErasureError::Storage(e.to_string()))??;
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(erasure.view())))
}

/// `GET /v1/erasures/{id}`.
pub async fn read(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    auth::require(&st, &headers, Need::Privacy)?;
    let erasures = erasures_of(&st)?;
    let found = tokio::task::spawn_blocking(move || erasures.get(&id).map(|e| (id, e)))
        .await
        .map_err(|e| ErasureError::Storage(e.to_string()))??;
    match found {
        (_, Some(e)) => Ok(Json(e.view())),
        (id, None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "erasure.not_found",
            Some("id"),
            format!("no erasure request `{id}`"),
        )),
    }
}

/// `GET /v1/erasures?before=&limit=`: newest first.
pub async fn list(
    State(st): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<super::access::Page>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    auth::require(&st, &headers, Need::Privacy)?;
    let q = super::query_of(query, None, "`before` and `limit` are whole numbers")?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let erasures = erasures_of(&st)?;
    let page = tokio::task::spawn_blocking(move || erasures.newest(q.before, limit))
        .await
        .map_err(|e| ErasureError::Storage(e.to_string()))??;
    let next = super::next_before(page.len(), limit, page.last().map(|(seq, _)| *seq));
    Ok(Json(json!({
        "erasures": page.iter().map(|(_, e)| e.view()).collect::<Vec<_>>(),
        "next_before": next,
        "suppressed": st.erasures.as_ref().map_or(0, |e| e.suppressed_count()),
    })))
}
