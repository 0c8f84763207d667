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

use super::auth::{Caller, Need};
use super::{ApiError, AppState, auth};
use crate::access::Access;
use crate::identity::{Cluster, EMAIL, PHONE};
use crate::mask;

/// At most this many people answer one search (a shared office number can link many).
const FOUND_MAX: usize = 20;

/// `?pii=masked` masks personal data even for a token that may read it (the console, until
/// asked to show it); `?pii=clear` insists on it (403 without `pii:read`). Without it: clear for
/// a token with `pii:read`, masked otherwise.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct View {
    #[serde(default)]
    pii: Option<String>,
}

/// Whether `caller`'s answer carries personal data in clear.
fn clear(caller: &Caller, pii: Option<&str>) -> Result<bool, ApiError> {
    match pii {
        None => Ok(caller.reads_pii()),
        Some("masked") => Ok(false),
        Some("clear") if caller.reads_pii() => Ok(true),
        Some("clear") => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "auth.forbidden",
            Some("pii"),
            format!(
                "token `{}` may not read personal data: it needs the scope pii:read",
                caller.name
            ),
        )),
        Some(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "query.invalid",
            Some("pii"),
            "`masked` or `clear`",
        )),
    }
}

/// A person's data masked: the values of its keys and fields (not where or what: province,
/// city, company...), its names.
fn masked(mut c: Cluster) -> Cluster {
    const NOT_PERSONAL: &[&str] = &[
        "province",
        "city",
        "district",
        "country",
        "company",
        "industry",
        "job_title",
        "title",
        "phone_type",
    ];
    let by_kind = |kind: &str, v: &str| match kind {
        "phone" | "mobile" => mask::phone(v),
        "email" => mask::email(v),
        _ => mask::other(v),
    };
    for k in &mut c.keys {
        k.value = by_kind(&k.kind, &k.value);
    }
    for (field, v) in &mut c.profile {
        if !NOT_PERSONAL.contains(&field.as_str()) {
            v.value = by_kind(field, &v.value);
        }
    }
    for n in &mut c.names {
        *n = mask::other(n);
    }
    c
}

/// The people's answers, masked or recorded in the access audit as read.
async fn answer(
    st: &AppState,
    caller: &Caller,
    clear: bool,
    (action, route): (&str, &str),
    people: Vec<Cluster>,
) -> Result<Vec<Value>, ApiError> {
    if clear && !people.is_empty() {
        let ids = people.iter().map(|c| c.lead_id.clone());
        super::access::record(st, Access::new(&caller.name, action, route).leads(ids)).await?;
    }
    Ok(people
        .into_iter()
        .map(|c| {
            let mut v = serde_json::to_value(if clear { c } else { masked(c) }).unwrap_or_default();
            v["masked"] = (!clear).into();
            v
        })
        .collect())
}

pub async fn explain(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(lead_id): Path<String>,
    view: Result<Query<View>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let caller = auth::require(&st, &headers, Need::Read)?;
    let view = super::query_of(view, Some("pii"), "`pii` is `masked` or `clear`")?;
    let clear = clear(&caller, view.pii.as_deref())?;
    let store = st.identity.clone();
    let id = lead_id.clone();
    let found = tokio::task::spawn_blocking(move || store.explain(&id))
        .await
        .map_err(|e| internal(e.to_string()))?
        .map_err(|e| internal(e.to_string()))?;
    let Some(found) = found else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "lead.not_found",
            Some("lead_id"),
            format!("no lead with id `{lead_id}`"),
        ));
    };
    let mut one = answer(
        &st,
        &caller,
        clear,
        ("lead.read", "/v1/leads/{lead_id}"),
        vec![found],
    )
    .await?;
    Ok(Json(one.remove(0)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Search {
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    pii: Option<String>,
}

pub async fn search(
    State(st): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Search>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let caller = auth::require(&st, &headers, Need::Read)?;
    let q = super::query_of(query, None, "search by `phone` or `email`")?;
    let clear = clear(&caller, q.pii.as_deref())?;
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
    let leads = answer(&st, &caller, clear, ("lead.search", "/v1/leads"), people.0).await?;
    Ok(Json(json!({"leads": leads, "truncated": people.1})))
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

/// `POST /v1/leads/{lead_id}/status`: `{"status_id": "crm-1", "status": "contacted", "at": "..."}`.
pub async fn status(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(lead_id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    auth::require(&st, &headers, Need::Admin)?;
    let invalid = |field: &str, why: String| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation.failed",
            Some(field),
            why,
        )
    };
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "body.malformed",
            None,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let (in_body, report) =
        crate::lifecycle::parse_status(&value, true).map_err(|e| invalid(&e.field, e.message))?;
    if lead_id.trim().is_empty() || lead_id.len() > 64 {
        return Err(invalid(
            "lead_id",
            "a lead id, 1-64 characters (the URL's)".into(),
        ));
    }
    if in_body.is_some_and(|l| l != lead_id) {
        return Err(invalid(
            "lead_id",
            "differs from the lead in the URL (leave it out)".into(),
        ));
    }
    let store = st.assignment.clone();
    let done = tokio::task::spawn_blocking(move || store.report_status(&lead_id, &report))
        .await
        .map_err(|e| internal(e.to_string()))?
        .map_err(ApiError::from)?;
    crate::telemetry::status_report("http", crate::lifecycle::outcome_label(&done));
    Ok(Json(serde_json::to_value(done).unwrap_or_default()))
}
