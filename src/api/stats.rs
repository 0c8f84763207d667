//! `GET /v1/stats`: 效果分析, the counts of leads by connector, campaign and form, per hour or
//! per day, as JSON or as a CSV a marketer opens in Excel (UTF-8 with a byte order mark, so
//! Excel reads Chinese names). Token-protected like the other management endpoints.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Need;
use super::{ApiError, AppState, auth};
use crate::stats::{Counts, GroupBy, Row};

/// The query: `group_by=connector,campaign&from=...&to=...&interval=day&connector=...&format=csv`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    #[serde(default)]
    group_by: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    connector: Option<String>,
    #[serde(default)]
    format: Option<String>,
}

fn bad(field: &str, message: String) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "query.invalid",
        Some(field),
        message,
    )
}

/// `text` as an instant: RFC 3339 (`2026-11-11T00:00:00+08:00`), or a date (`2026-11-11`, the
/// day's start in `zone`).
fn instant(field: &str, text: &str, zone: &jiff::tz::TimeZone) -> Result<i64, ApiError> {
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t.as_second());
    }
    if let Ok(d) = text.parse::<jiff::civil::Date>()
        && let Ok(z) = d.to_zoned_datetime(zone.clone())
    {
        return Ok(z.timestamp().as_second());
    }
    Err(bad(
        field,
        format!(
            "`{text}` is not a time: write RFC 3339 (2026-11-11T00:00:00+08:00) or a date (2026-11-11)"
        ),
    ))
}

pub async fn read(
    State(st): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    auth::require(&st, &headers, Need::Read)?;
    let Query(q) = query.map_err(|e| bad("query", e.body_text()))?;
    let zone = st.stats_zone.clone();
    let day = match q.interval.as_deref().unwrap_or("day") {
        "day" => true,
        "hour" => false,
        other => {
            return Err(bad(
                "interval",
                format!("`{other}` is not an interval: use hour or day"),
            ));
        }
    };
    let group_by = GroupBy::parse(q.group_by.as_deref().unwrap_or("connector"))
        .map_err(|e| bad("group_by", e))?;
    let now = crate::lead::now().as_second();
    let to = match &q.to {
        Some(t) => instant("to", t, &zone)?,
        None => now + 1,
    };
    let from = match &q.from {
        Some(f) => instant("from", f, &zone)?,
        None => to - if day { 30 * 86_400 } else { 48 * 3600 },
    };
    if from >= to {
        return Err(bad("from", "`from` must be before `to`".into()));
    }
    // Rows are stored by their bucket's start: a bucket that began before `from` is left out,
    // so `from` is moved back to the start of its bucket.
    let from = if day {
        jiff::Timestamp::from_second(from).map_or(from, |t| crate::stats::day_start(t, &zone))
    } else {
        from.div_euclid(3600) * 3600
    };
    let csv = match q.format.as_deref() {
        Some("csv") => true,
        Some("json") => false,
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/csv")),
        Some(other) => {
            return Err(bad(
                "format",
                format!("`{other}` is not a format: use json or csv"),
            ));
        }
    };
    let journal = st.journal.clone();
    let connector = q.connector.clone();
    let rows = tokio::task::spawn_blocking(move || {
        journal.stats(day, (from, to), group_by, connector.as_deref())
    })
    .await
    .map_err(|e| unavailable(e.to_string()))?
    .map_err(|e| unavailable(e.to_string()))?;
    let interval = if day { "day" } else { "hour" };
    if csv {
        return Ok(csv_response(&rows, group_by, &zone, interval));
    }
    let mut totals = Counts::default();
    for r in &rows {
        totals.add(&r.counts);
    }
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut row = json!({
                "start": local(r.start, &zone),
                "counts": r.counts,
            });
            let (connector, campaign, form) = &r.group;
            for (on, key, value) in [
                (group_by.connector, "connector", connector),
                (group_by.campaign, "campaign", campaign),
                (group_by.form, "form", form),
            ] {
                if on {
                    row[key] = json!(value);
                }
            }
            row
        })
        .collect();
    Ok(axum::Json(json!({
        "interval": interval,
        "timezone": zone.iana_name().unwrap_or("UTC"),
        "from": local(from, &zone),
        "to": local(to, &zone),
        "group_by": group_names(group_by),
        "totals": totals,
        "rows": rows,
    }))
    .into_response())
}

fn group_names(g: GroupBy) -> Vec<&'static str> {
    [
        (g.connector, "connector"),
        (g.campaign, "campaign"),
        (g.form, "form"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect()
}

/// Unix seconds as RFC 3339 in `zone` (`2026-11-11T00:00:00+08:00`).
fn local(seconds: i64, zone: &jiff::tz::TimeZone) -> String {
    jiff::Timestamp::from_second(seconds)
        .map(|t| {
            t.to_zoned_datetime(zone.clone())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string()
        })
        .unwrap_or_default()
}

/// The rows as CSV: the bucket's start (local time), the group's columns, the counts, then one
/// column per rejection reason and per owner seen.
fn csv_response(
    rows: &[Row],
    group_by: GroupBy,
    zone: &jiff::tz::TimeZone,
    interval: &str,
) -> Response {
    let mut reasons = std::collections::BTreeSet::new();
    let mut owners = std::collections::BTreeSet::new();
    for r in rows {
        reasons.extend(r.counts.rejected_by.keys().cloned());
        owners.extend(r.counts.assigned_by.keys().cloned());
    }
    let mut out = csv::Writer::from_writer(Vec::from(*b"\xEF\xBB\xBF"));
    let mut head: Vec<String> = vec![interval.to_owned()];
    head.extend(group_names(group_by).into_iter().map(str::to_owned));
    head.extend(
        [
            "received",
            "clean",
            "rejected",
            "duplicate",
            "merged",
            "test",
            "assigned",
        ]
        .map(str::to_owned),
    );
    head.extend(reasons.iter().map(|r| format!("rejected:{r}")));
    head.extend(owners.iter().map(|o| format!("assigned:{o}")));
    let _ = out.write_record(&head);
    for r in rows {
        let start = jiff::Timestamp::from_second(r.start)
            .map(|t| {
                let z = t.to_zoned_datetime(zone.clone());
                if interval == "day" {
                    z.strftime("%Y-%m-%d").to_string()
                } else {
                    z.strftime("%Y-%m-%d %H:00").to_string()
                }
            })
            .unwrap_or_default();
        let mut line = vec![start];
        let (connector, campaign, form) = &r.group;
        for (on, v) in [
            (group_by.connector, connector),
            (group_by.campaign, campaign),
            (group_by.form, form),
        ] {
            if on {
                line.push(crate::stats::spreadsheet_safe(v));
            }
        }
        let c = &r.counts;
        line.extend(
            [
                c.received,
                c.clean,
                c.rejected,
                c.duplicate,
                c.merged,
                c.test,
                c.assigned,
            ]
            .map(|n| n.to_string()),
        );
        line.extend(
            reasons
                .iter()
                .map(|k| c.rejected_by.get(k).copied().unwrap_or(0).to_string()),
        );
        line.extend(
            owners
                .iter()
                .map(|k| c.assigned_by.get(k).copied().unwrap_or(0).to_string()),
        );
        let _ = out.write_record(&line);
    }
    let body = out.into_inner().unwrap_or_default();
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"leadgate-stats.csv\"",
            ),
        ],
        body,
    )
        .into_response()
}

fn unavailable(why: String) -> ApiError {
    tracing::error!(%why, "the statistics could not be read");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "journal.unavailable",
        None,
        "the statistics could not be read; retry later",
    )
    .retry_after(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreadsheet_formulas_are_defused() {
        use crate::stats::spreadsheet_safe;
        assert_eq!(spreadsheet_safe("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(spreadsheet_safe("双11"), "双11");
        assert_eq!(spreadsheet_safe("-5%"), "'-5%");
    }

    #[test]
    fn times_are_rfc3339_or_a_local_date() {
        let zone = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
        assert_eq!(
            instant("from", "2026-11-11", &zone).unwrap(),
            instant("from", "2026-11-10T16:00:00Z", &zone).unwrap()
        );
        let e = instant("to", "yesterday", &zone).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("to"));
    }
}

/// `GET /v1/stats/funnel?by=campaign`: the conversion funnel (people, not submissions).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunnelQuery {
    #[serde(default)]
    by: Option<String>,
}

pub async fn funnel(
    State(st): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<FunnelQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    auth::require(&st, &headers, Need::Read)?;
    let Query(q) = query.map_err(|e| bad("query", e.body_text()))?;
    let by = q.by.unwrap_or_else(|| "campaign".into());
    let dims = crate::assign::lifecycle::DIMENSIONS;
    if !dims.contains(&by.as_str()) {
        return Err(bad(
            "by",
            format!("`{by}` is not a grouping: use one of {}", dims.join(", ")),
        ));
    }
    let store = st.assignment.clone();
    let b = by.clone();
    let rows = tokio::task::spawn_blocking(move || store.funnel(&b))
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .map_err(|e| unavailable(e.to_string()))?;
    Ok(axum::Json(json!({
        "by": by,
        "stages": crate::assign::lifecycle::STAGES,
        "rows": rows,
    }))
    .into_response())
}
