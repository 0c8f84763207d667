//! `GET /v1/rejections`: the latest rejected leads this gateway delivered (at most the last
//! 500 since it started), newest first, each with its reasons and its input fields masked.
//! The records themselves, unmasked, are on the rejected topic.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Need;
use super::{ApiError, AppState, auth};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latest {
    #[serde(default)]
    connector: Option<String>,
    #[serde(default)]
    before: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
}

pub async fn latest(
    State(st): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Latest>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    auth::require(&st, &headers, Need::Read)?;
    let q = super::query_of(
        query,
        None,
        "`connector` is a name, `before` and `limit` whole numbers",
    )?;
    let limit = q
        .limit
        .unwrap_or(50)
        .clamp(1, crate::pipeline::KEPT_REJECTIONS);
    let entries = st.processor.recent_rejections().latest(
        q.connector.as_deref().filter(|c| !c.is_empty()),
        q.before,
        limit,
    );
    let next = super::next_before(entries.len(), limit, entries.last().map(|e| e.seq));
    Ok(Json(json!({"entries": entries, "next_before": next})))
}
