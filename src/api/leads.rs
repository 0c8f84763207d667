//! `GET /v1/leads/{lead_id}`: why records are one person. The cluster's keys (and which stopped
//! identifying), its member events, its merges, its per-field newest values and its sources.
//! `GET /v1/leads?phone=...&email=...`: the people a phone number or an address belongs to,
//! normalized as a lead's would be, each explained the same way.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, auth};
use crate::identity::{Cluster, EMAIL, PHONE};

/// At most this many people answer one search (a shared office number can link many).
const FOUND_MAX: usize = 20;

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Search {
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    email: Option<String>,
}

pub async fn search(
    State(st): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Search>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    auth::require(&st, &headers)?;
    let Query(q) = query.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "query.invalid",
            None,
            format!("search by `phone` or `email`: {e}"),
        )
    })?;
    let (phone, email) = (given(&q.phone), given(&q.email));
    if phone.is_none() && email.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "query.invalid",
            Some("phone"),
            "give a `phone` or an `email` to search for (a lead id: GET /v1/leads/{lead_id})",
        ));
    }
    let keys = st.processor.search_keys(phone, email);
    for (field, kind, value) in [("phone", PHONE, phone), ("email", EMAIL, email)] {
        if value.is_some() && !keys.iter().any(|k| k.kind == kind) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "query.invalid",
                Some(field),
                format!(
                    "not a {field} leadgate can identify a person by (it would reject or ignore it on a lead)"
                ),
            ));
        }
    }
    let store = st.identity.clone();
    let people = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let ids = store.find(&keys).map_err(|e| e.to_string())?;
        let more = ids.len() > FOUND_MAX;
        let mut found = Vec::new();
        for id in ids.iter().take(FOUND_MAX) {
            if let Some(c) = store.explain(id).map_err(|e| e.to_string())? {
                found.push(c);
            }
        }
        Ok((found, more))
    })
    .await
    .map_err(|e| internal(e.to_string()))?
    .map_err(internal)?;
    Ok(Json(json!({"leads": people.0, "truncated": people.1})))
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
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
