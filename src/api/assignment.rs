//! `/v1/assignment/`: rules, owners and teams (list, create, read, replace, delete), a preview of
//! what a lead would get and why, and the audit log of changes. Every resource carries an ETag;
//! `If-Match` makes a write conditional (412 when someone changed it first). Bodies are checked
//! field by field (422 naming the path). Behind the `[api] token` when one is set.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Need;
use super::{ApiError, AppState, auth};
use crate::assign::model::Kind;
use crate::assign::{AssignError, AuditFrom, Expect, Versioned};
use axum::extract::rejection::QueryRejection;

fn kind(name: &str) -> Result<Kind, ApiError> {
    Kind::parse(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "route.not_found",
            None,
            format!("no such collection `{name}`; use rules, owners or teams"),
        )
    })
}

/// A 422 `validation.failed` naming the first field, with every problem in its details.
pub(super) fn invalid(errors: Vec<crate::assign::model::FieldError>) -> ApiError {
    let first = errors
        .first()
        .cloned()
        .unwrap_or_else(|| crate::assign::model::FieldError::new("", "invalid"));
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation.failed",
        Some(&first.field),
        first.message,
    )
    .with_details(json!(errors))
}

impl From<AssignError> for ApiError {
    fn from(e: AssignError) -> Self {
        let msg = e.to_string();
        match e {
            AssignError::NotFound(..) => {
                ApiError::new(StatusCode::NOT_FOUND, "assignment.not_found", None, msg)
            }
            AssignError::Exists(..) => {
                ApiError::new(StatusCode::CONFLICT, "assignment.exists", Some("id"), msg)
            }
            AssignError::Stale { .. } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "assignment.version_mismatch",
                Some("If-Match"),
                msg,
            ),
            AssignError::InUse(_) => {
                ApiError::new(StatusCode::CONFLICT, "assignment.in_use", None, msg)
            }
            AssignError::Invalid(errors) => invalid(errors),
            AssignError::Locked(_) | AssignError::Storage(_) | AssignError::Conflict(_) => {
                tracing::error!(error = %msg, "assignment store failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "assignment.unavailable",
                    None,
                    "the assignment store could not be used; retry later",
                )
                .retry_after(1)
            }
        }
    }
}

/// The ETag of a resource: its version, `"7"`; an owner's also says its open leads, `"7.3"`,
/// which assignments move without a new version.
fn etag(v: &Versioned) -> HeaderValue {
    let tag = match v.body.get("open_leads").and_then(Value::as_u64) {
        Some(n) => format!("\"{}.{n}\"", v.version),
        None => format!("\"{}\"", v.version),
    };
    HeaderValue::from_str(&tag).expect("digits are a valid header")
}

/// `If-Match: "7"` (or `W/"7"`, or `*`).
fn expectation(headers: &HeaderMap, otherwise: Expect) -> Result<Expect, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(otherwise);
    };
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "if_match.invalid",
            Some("If-Match"),
            "expected the ETag of the resource, e.g. If-Match: \"7\"",
        )
    };
    let text = v.to_str().map_err(|_| bad())?.trim();
    if text == "*" {
        return Ok(Expect::Any);
    }
    let tag = text.trim_start_matches("W/").trim_matches('"');
    match tag.split_once('.') {
        Some((v, n)) => Ok(Expect::Loaded {
            version: v.parse().map_err(|_| bad())?,
            open_leads: n.parse().map_err(|_| bad())?,
        }),
        None => tag.parse().map(Expect::Version).map_err(|_| bad()),
    }
}

fn with_etag(status: StatusCode, v: Versioned) -> Response {
    let tag = etag(&v);
    let mut resp = (status, Json(v.body)).into_response();
    resp.headers_mut().insert(header::ETAG, tag);
    resp
}

/// A JSON object body, or a 400/422 saying what is wrong with it.
fn object(body: &Bytes) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "body.malformed",
            None,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    if !v.is_object() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation.failed",
            Some(""),
            "the body must be a JSON object",
        ));
    }
    Ok(v)
}

/// Runs a store call off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AssignError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AssignError::Storage(e.to_string()))?
        .map_err(ApiError::from)
}

pub async fn list(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(collection): Path<String>,
) -> Result<Json<Vec<Value>>, ApiError> {
    auth::require(&st, &headers, Need::Read)?;
    let k = kind(&collection)?;
    let store = st.assignment.clone();
    let items = blocking(move || store.list(k)).await?;
    Ok(Json(items.into_iter().map(|v| v.body).collect()))
}

pub async fn create(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(collection): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = auth::require(&st, &headers, Need::Admin)?;
    let k = kind(&collection)?;
    let body = object(&body)?;
    let Some(id) = body.get("id").and_then(Value::as_str).map(str::to_owned) else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation.failed",
            Some("id"),
            "missing: every resource needs an id (ASCII letters, digits, `-`, `_`)",
        ));
    };
    let store = st.assignment.clone();
    let id2 = id.clone();
    let w =
        blocking(move || store.put_by(k, &id2, body, Expect::Absent, Some(&caller.name))).await?;
    let mut resp = with_etag(StatusCode::CREATED, w.resource);
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/assignment/{}/{id}", k.as_str())) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

pub async fn read(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((collection, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    auth::require(&st, &headers, Need::Read)?;
    let k = kind(&collection)?;
    let store = st.assignment.clone();
    let id2 = id.clone();
    match blocking(move || store.get(k, &id2)).await? {
        Some(v) => Ok(with_etag(StatusCode::OK, v)),
        None => Err(AssignError::NotFound(k.one(), id).into()),
    }
}

pub async fn replace(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((collection, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = auth::require(&st, &headers, Need::Admin)?;
    let k = kind(&collection)?;
    let expect = expectation(&headers, Expect::Any)?;
    let body = object(&body)?;
    let store = st.assignment.clone();
    let w = blocking(move || store.put_by(k, &id, body, expect, Some(&caller.name))).await?;
    let status = if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_etag(status, w.resource))
}

pub async fn remove(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((collection, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let caller = auth::require(&st, &headers, Need::Admin)?;
    let k = kind(&collection)?;
    let expect = expectation(&headers, Expect::Any)?;
    let store = st.assignment.clone();
    blocking(move || store.delete_by(k, &id, expect, Some(&caller.name))).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `?after=SEQ` pages oldest first (`next_after`); `?order=newest` (and `before=SEQ`) pages
/// newest first (`next_before`), as the console shows the latest changes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    before: Option<u64>,
    #[serde(default)]
    order: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

pub async fn audit(
    State(st): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    auth::require(&st, &headers, Need::Read)?;
    let q = super::query_of(
        query,
        None,
        "`after`, `before` and `limit` are whole numbers, `order` is `oldest` or `newest`",
    )?;
    let invalid = |field: &str, why: &str| {
        ApiError::new(StatusCode::BAD_REQUEST, "query.invalid", Some(field), why)
    };
    let newest = match q.order.as_deref() {
        None => q.before.is_some(),
        Some("newest") => true,
        Some("oldest") => false,
        Some(_) => return Err(invalid("order", "`oldest` (the default) or `newest`")),
    };
    if newest && q.after.is_some() {
        return Err(invalid(
            "after",
            "newest first pages with `before`, not `after`",
        ));
    }
    if !newest && q.before.is_some() {
        return Err(invalid(
            "before",
            "`before` pages newest first: leave out `order=oldest`",
        ));
    }
    let from = if newest {
        AuditFrom::Before(q.before.unwrap_or(u64::MAX))
    } else {
        AuditFrom::After(q.after.unwrap_or(0))
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let store = st.assignment.clone();
    let entries = blocking(move || store.audit(from, limit)).await?;
    let last = entries.last().map(|e| e.seq);
    Ok(Json(if newest {
        json!({"entries": entries, "next_before": super::next_before(entries.len(), limit, last)})
    } else {
        json!({"entries": entries, "next_after": last})
    }))
}

/// `POST /v1/assignment/preview`: `{"lead": {raw fields}, "connector": "webform", "lead_id": ...}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewRequest {
    lead: Value,
    #[serde(default)]
    connector: Option<String>,
    #[serde(default)]
    lead_id: Option<String>,
    #[serde(default)]
    received_at: Option<String>,
}

pub async fn preview(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    auth::require(&st, &headers, Need::Read)?;
    let body = object(&body)?;
    let req: PreviewRequest = crate::assign::model::parse(&body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation.failed",
            Some(&e.field),
            e.message,
        )
    })?;
    if !req.lead.is_object() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation.failed",
            Some("lead"),
            "the lead's fields, as a webhook would send them, in an object",
        ));
    }
    if let Some(at) = &req.received_at
        && at.parse::<jiff::Timestamp>().is_err()
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation.failed",
            Some("received_at"),
            "an RFC 3339 time, e.g. 2026-11-24T10:00:00+08:00",
        ));
    }
    let connector = req.connector.unwrap_or_else(|| "preview".into());
    let mut record = st.processor.clean_record(&connector, &req.lead);
    if let Some(at) = req.received_at {
        record.received_at = at;
    }
    record.lead_id = req.lead_id.clone();
    let mut lead = serde_json::to_value(&record).unwrap_or_default();
    let store = st.assignment.clone();
    let assigner = st.processor.assigner().clone();
    let lead_id = req.lead_id;
    let (decision, trace, classified) = blocking(move || {
        // Segments and score first, as a posted lead gets them: the rules may read them.
        let (classifier, _) = assigner.classifier()?;
        let classified = classifier.classify(&lead);
        lead["segments"] = serde_json::to_value(&classified.segments).unwrap_or_default();
        lead["score"] = serde_json::to_value(&classified.score).unwrap_or_default();
        let (decision, trace) = store.preview(&lead, lead_id.as_deref())?;
        Ok((decision, trace, classified))
    })
    .await?;
    Ok(Json(json!({
        "assignment": decision.as_ref().map(|d| json!({
            "owner": d.owner, "team": d.team, "rule_id": d.rule_id,
            "strategy": d.strategy, "reason": d.reason,
        })),
        "rules": trace,
        "segments": classified.segments,
        "score": classified.score,
        "not_applied": classified.misses,
        "contact": record.contact,
    })))
}
