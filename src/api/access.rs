//! `GET /v1/whoami`: the caller's token name and scopes (the console asks, to offer what the
//! token may do). `GET /v1/access-audit`: every read of personal data, newest first, for the
//! `privacy` scope.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{self, Need};
use super::{ApiError, AppState};
use crate::access::Access;

pub async fn whoami(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = auth::require(&st, &headers, Need::Any)?;
    Ok(Json(json!({
        "name": caller.name,
        "scopes": caller.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "reads_pii": caller.reads_pii(),
    })))
}

/// `?before=&limit=` of a newest-first listing (the access audit, the erasures).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    #[serde(default)]
    pub(super) before: Option<u64>,
    #[serde(default)]
    pub(super) limit: Option<usize>,
}

pub async fn list(
    State(st): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    auth::require(&st, &headers, Need::Privacy)?;
    let q = super::query_of(query, None, "`before` and `limit` are whole numbers")?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let audit = audit_of(&st)?;
    let entries = tokio::task::spawn_blocking(move || audit.newest(q.before, limit))
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .map_err(|e| unavailable(e.to_string()))?;
    let next = super::next_before(entries.len(), limit, entries.last().map(|e| e.seq));
    Ok(Json(json!({"entries": entries, "next_before": next})))
}

/// Writes `entry` before an answer with personal data goes out; the answer waits for it, and is
/// not sent when it cannot be written.
pub async fn record(st: &AppState, entry: Access) -> Result<(), ApiError> {
    let audit = audit_of(st)?;
    tokio::task::spawn_blocking(move || audit.record(entry))
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .map_err(|e| unavailable(e.to_string()))?;
    Ok(())
}

fn audit_of(st: &AppState) -> Result<std::sync::Arc<crate::access::AccessAudit>, ApiError> {
    st.access
        .clone()
        .ok_or_else(|| unavailable("this gateway keeps no access audit".into()))
}

fn unavailable(why: String) -> ApiError {
    tracing::error!(%why, "the access audit failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "audit.unavailable",
        None,
        "the access audit could not be written or read; retry later",
    )
    .retry_after(1)
}
