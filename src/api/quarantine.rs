//! `GET /v1/quarantine`: the events set aside for good (see `intake`), oldest first, with the
//! stage and reason and the journal record verbatim. Token-protected: records hold personal data.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::auth::Need;
use super::{ApiError, AppState, Page, auth};

pub async fn list(
    State(st): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let caller = auth::require(&st, &headers, Need::Pii)?;
    let page = Page::of(query)?;
    let journal = st.journal.clone();
    let entries = tokio::task::spawn_blocking(move || journal.quarantined(page.after, page.limit))
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .map_err(|e| unavailable(e.to_string()))?;
    let next = entries.last().map(|e| e.seq);
    if !entries.is_empty() {
        // The records are verbatim: personal data that cannot be masked.
        let read = crate::access::Access::new(&caller.name, "quarantine.read", "/v1/quarantine")
            .events(entries.iter().map(|e| {
                e.event_id
                    .clone()
                    .unwrap_or_else(|| format!("seq:{}", e.seq))
            }));
        super::access::record(&st, read).await?;
    }
    Ok(Json(json!({
        "total": st.journal.quarantined_count(),
        "entries": entries,
        "next_after": next,
    })))
}

fn unavailable(why: String) -> ApiError {
    tracing::error!(%why, "the quarantine could not be read");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "journal.unavailable",
        None,
        "the journal could not be read; retry later",
    )
    .retry_after(1)
}
