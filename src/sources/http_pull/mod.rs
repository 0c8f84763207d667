//! `type = "http_pull"`: any paged JSON API, by configuration alone.
//!
//! - **Paging.** Page numbers, offsets, cursors or next-page URLs ([`Paging`]).
//! - **Leads.** The records are found at a JSON pointer, each lead's id at another, and contact
//!   fields at pointers inside a record.
//! - **Checkpoint.** Each page goes to the journal in one transaction with the position of the
//!   next page, as the MySQL source does. A restart resumes mid-pull at the first page not yet
//!   journaled.
//! - **Polling.** When the last page is read, the next poll starts over: from the first page, or,
//!   for cursor and next-URL APIs, from the last position. Leads read again are dropped by their
//!   id (identity's source idempotency), so they are published once.
//! - **Rate limits and retries.** Requests are rate limited with `governor`. Throttling (HTTP
//!   429, or a `throttled` error code in the body) and server errors are retried with backoff
//!   (`backon`) that honours `Retry-After`. HTTP 401/403, or an `expired` code, means the token
//!   expired or was revoked: retrying cannot help, so the connector stops and says so in
//!   `GET /v1/connectors/{name}`.

pub mod config;

pub use config::{ErrorCodes, HttpPullConnector, Method, Paging, TimeWindow};

use std::time::Duration;

use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::mapping::FieldMapping;
use crate::sources::connector::{Start, Started};
use crate::sources::pull::poll_task;
use crate::lead::{IntakeEvent, SourceKind, now_rfc3339};
use crate::sources::pull::{
    Limiter, PageSink, Poll, PullError, check_status, double_page, halve_page, lag_since,
    limiter_for, next_window, retried, retry_after, secs,
};
use crate::sources::status::State;

/// Where the next request starts; stored in the journal with the page before it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// `None`: at the start of a poll.
    pub next: Option<Position>,
    /// Cursor and next-URL APIs: where the last poll ended, so the next one starts there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<Position>,
    /// With `window`: the poll under way asks for `[start, end)`, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<(i64, i64)>,
    /// With `window`: where the last complete poll's window ended, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_until: Option<i64>,
    /// The page size in force when it differs from the configured one (shrunk while
    /// throttled); `next` counts in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    Page(u64),
    Offset(u64),
    Cursor(String),
    Url(String),
}

/// One page: its leads and the position after it (`None`: it was the last).
struct Page {
    records: Vec<Value>,
    next: Option<Position>,
}


/// Starts the poll of `cfg` (a connector's own, or a platform preset's).
pub(crate) fn start(cfg: HttpPullConnector, cx: &Start<'_>) -> anyhow::Result<Started> {
    let client = cx.client(Duration::from_secs(60))?;
    // The API's host and the credentials sent to it identify whose quota this is.
    let credential = cfg.headers.values().fold(
        reqwest::Url::parse(&cfg.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default(),
        |acc, v| acc + "\u{1f}" + v.expose_secret(),
    );
    let limiter = limiter_for(&credential, cfg.rate_limit);
    let every = cfg.poll_interval;
    let task = poll_task(cx.sink(&cfg.name), every, move |checkpoint, sink| Puller {
        cfg: cfg.clone(),
        client: client.clone(),
        limiter: limiter.clone(),
        sink,
        checkpoint,
    });
    Ok(Started {
        tasks: vec![task],
        webhook: None,
    })

}

struct Puller {
    cfg: HttpPullConnector,
    client: reqwest::Client,
    limiter: Option<Limiter>,
    sink: PageSink,
    checkpoint: Checkpoint,
}

impl Poll for Puller {
    fn wake(&self) -> Option<watch::Receiver<u64>> {
        self.cfg.auth.as_ref().and_then(|(_, t)| t.subscribe())
    }

    /// Reads pages from the checkpoint to the last one, journaling each with the next position.
    async fn poll(&mut self, shutdown: &watch::Receiver<bool>) -> Result<(), PullError> {
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let at = self
                .checkpoint
                .next
                .clone()
                .or_else(|| self.checkpoint.resume.clone())
                .unwrap_or_else(|| first_position(&self.cfg.paging));
            let window = self.window();
            let configured = configured_size(&self.cfg.paging);
            let size = self.checkpoint.size.or(configured).unwrap_or(0);
            // Throttling halves the page; the position is renumbered with it.
            let this = &*self;
            let (page, (at, size)) = retried(
                &self.cfg.name,
                (at, size),
                |(at, size)| async move { this.fetch(&at, window, size).await },
                |(at, size)| shrink(&self.cfg.paging, at, *size),
            )
            .await?;
            // A page went through: grow back towards the configured size.
            let (next, size) = grow(&self.cfg.paging, page.next.clone(), size, configured);
            let now = now_rfc3339();
            let events: Vec<IntakeEvent> =
                page.records.iter().map(|r| self.event(r, &now)).collect();
            self.sink
                .statuses
                .update(&self.cfg.name, |s| s.rows_read += events.len() as u64);
            let last = next.is_none();
            let checkpoint = Checkpoint {
                next,
                resume: if last {
                    // Cursor and next-URL APIs resume where they ended; numbered pages start over.
                    matches!(at, Position::Cursor(_) | Position::Url(_)).then_some(at)
                } else {
                    self.checkpoint.resume.clone()
                },
                // The window is kept until its last page is journaled; then the next poll
                // starts where it ended.
                window: if last { None } else { window },
                done_until: match (last, window) {
                    (true, Some((_, end))) => Some(end),
                    _ => self.checkpoint.done_until,
                },
                size: (Some(size) != configured && configured.is_some()).then_some(size),
            };
            let n = self.sink.send(events, &checkpoint).await?;
            let lag = lag_since(checkpoint.done_until);
            self.sink.shown(&checkpoint, n, |s| {
                s.lag_seconds = lag;
                s.page_size = configured.map(|_| size);
            });
            self.checkpoint = checkpoint;
            self.sink.statuses.success(&self.cfg.name, State::Following);
            if last {
                return Ok(());
            }
        }
    }
}

impl Puller {
    /// The time window of this poll: the one under way (after a restart), or a new one from
    /// where the last ended, minus the overlap, to now (minus the window's `delay`).
    fn window(&self) -> Option<(i64, i64)> {
        let w = self.cfg.window.as_ref()?;
        if let Some(under_way) = self.checkpoint.window {
            return Some(under_way);
        }
        let end = jiff::Timestamp::now().as_second() - secs(w.delay);
        Some(next_window(
            self.checkpoint.done_until,
            end,
            secs(w.overlap),
            secs(w.initial),
        ))
    }

    fn event(&self, record: &Value, now: &str) -> IntakeEvent {
        let id = record.pointer(&self.cfg.id).and_then(|v| match v {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
        let test = self.cfg.test_pointer.as_deref().is_some_and(|p| {
            record
                .pointer(p)
                .is_some_and(|v| match &self.cfg.test_value {
                    Some(want) => v == want,
                    None => v == &Value::Bool(true) || v == &Value::from(1),
                })
        });
        let mut e = IntakeEvent::new(&self.cfg.name, SourceKind::Platform, id, record.clone());
        e.received_at = now.to_owned();
        e.test = test;
        e
    }

    /// [`Puller::fetch_with`] the access token in use; when the platform says it expired, a new
    /// one is awaited (the refresh task gets it) and the page asked for again with it: an expired
    /// token is never sent twice in a row.
    async fn fetch(
        &self,
        at: &Position,
        window: Option<(i64, i64)>,
        size: u32,
    ) -> Result<Page, PullError> {
        let Some((header, token)) = &self.cfg.auth else {
            return self.fetch_with(at, window, size, None).await;
        };
        token
            .with(|token| async move {
                self.fetch_with(at, window, size, Some((header, &token)))
                    .await
            })
            .await
    }

    async fn fetch_with(
        &self,
        at: &Position,
        window: Option<(i64, i64)>,
        size: u32,
        bearer: Option<(&String, &secrecy::SecretString)>,
    ) -> Result<Page, PullError> {
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        // Parameters: in the query, or, for a name that is a JSON pointer, in the POST body.
        let mut params: Vec<(String, String)> = Vec::new();
        if let (Some(w), Some((start, end)), false) =
            (&self.cfg.window, window, matches!(at, Position::Url(_)))
        {
            params.push((w.start_param.clone(), format_time(start, w)));
            params.push((w.end_param.clone(), format_time(end, w)));
        }
        match (&self.cfg.paging, at) {
            (
                Paging::Page {
                    param, size_param, ..
                },
                Position::Page(p),
            ) => {
                params.push((param.clone(), p.to_string()));
                if let Some(sp) = size_param {
                    params.push((sp.clone(), size.to_string()));
                }
            }
            (
                Paging::Offset {
                    param, size_param, ..
                },
                Position::Offset(o),
            ) => {
                params.push((param.clone(), o.to_string()));
                params.push((size_param.clone(), size.to_string()));
            }
            (Paging::Cursor { param, .. }, Position::Cursor(c)) if !c.is_empty() => {
                params.push((param.clone(), c.clone()));
            }
            _ => {}
        }
        let mut body = self.cfg.body.clone();
        let mut query = Vec::new();
        for (name, value) in params {
            match &mut body {
                Some(b) if name.starts_with('/') => set_pointer(b, &name, Value::String(value)),
                _ => query.push((name, value)),
            }
        }
        // A refreshed token named by a JSON pointer goes in the body (百度: `/header/accessToken`).
        if let (Some((name, token)), Some(b)) = (bearer, &mut body)
            && name.starts_with('/')
        {
            set_pointer(b, name, Value::String(token.expose_secret().to_owned()));
        }
        let mut req = match (at, self.cfg.method) {
            (Position::Url(url), _) => self.client.get(url),
            (_, Method::Get) => self.client.get(&self.cfg.url).query(&self.cfg.query),
            (_, Method::Post) => {
                let req = self.client.post(&self.cfg.url).query(&self.cfg.query);
                req.json(body.as_ref().unwrap_or(&Value::Object(Map::new())))
            }
        };
        req = req.query(&query);
        for (name, value) in &self.cfg.headers {
            req = req.header(name, value.expose_secret());
        }
        if let Some((name, token)) = bearer.filter(|(name, _)| !name.starts_with('/')) {
            req = req.header(name, token.expose_secret());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| PullError::Network(crate::sources::pull::http_error(e)))?;
        let status = resp.status().as_u16();
        let retry_after = retry_after(resp.headers());
        check_status(status, retry_after)?;
        let body: Value = resp
            .json()
            .await
            .map_err(|e| PullError::Shape(format!("not JSON: {}", crate::sources::pull::http_error(e))))?;
        if let Some(codes) = &self.cfg.error_code
            && let Some(code) = body.pointer(&codes.pointer).filter(|c| !c.is_null())
            && !codes.ok.contains(code)
        {
            let text = format!(
                "{code}: {}",
                body.pointer(&codes.message)
                    .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_owned))
                    .unwrap_or_default()
            );
            return Err(if codes.throttled.contains(code) {
                PullError::Throttled {
                    status,
                    code: format!(", code {code}"),
                    retry_after,
                }
            } else if codes.expired.contains(code)
                || codes
                    .expired_pointer
                    .as_deref()
                    .and_then(|p| body.pointer(p))
                    .is_some_and(|c| codes.expired.contains(c))
            {
                PullError::Expired(format!("200, code {text}"))
            } else {
                PullError::Api(text)
            });
        }
        let records = match body.pointer(&self.cfg.records) {
            Some(Value::Array(a)) => a.clone(),
            Some(Value::Null) | None => Vec::new(),
            Some(_) => {
                return Err(PullError::Shape(format!(
                    "`{}` is not an array",
                    self.cfg.records
                )));
            }
        };
        let next = next_position(&self.cfg.paging, at, &body, records.len(), size);
        Ok(Page { records, next })
    }
}

/// Sets `value` at `pointer` in `target`, creating the objects on the way.
fn set_pointer(target: &mut Value, pointer: &str, value: Value) {
    let mut at = target;
    for raw in pointer.split('/').skip(1) {
        let key = raw.replace("~1", "/").replace("~0", "~");
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        let Value::Object(obj) = at else {
            return;
        };
        at = obj.entry(key).or_insert(Value::Null);
    }
    *at = value;
}

/// Unix seconds as the API wants them: `%s`, or a strftime format in the window's zone.
fn format_time(secs: i64, w: &TimeWindow) -> String {
    if w.format == "%s" {
        return secs.to_string();
    }
    let tz = jiff::tz::TimeZone::get(&w.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_zoned_datetime(tz).strftime(&w.format).to_string())
        .unwrap_or_else(|_| secs.to_string())
}

fn first_position(paging: &Paging) -> Position {
    match paging {
        Paging::Page { start, .. } => Position::Page(*start),
        Paging::Offset { .. } => Position::Offset(0),
        Paging::Cursor { .. } => Position::Cursor(String::new()),
        // The configured URL is the first page.
        Paging::NextUrl { .. } | Paging::None => Position::Page(0),
    }
}

/// The position after a page of `n` records read at page size `size`, or `None` when it was the
/// last.
fn next_position(
    paging: &Paging,
    at: &Position,
    body: &Value,
    n: usize,
    size: u32,
) -> Option<Position> {
    let text = |pointer: &str| {
        body.pointer(pointer)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    match (paging, at) {
        (_, _) if n == 0 => None,
        (Paging::Page { .. }, Position::Page(p)) => {
            (n >= size as usize).then_some(Position::Page(p + 1))
        }
        (Paging::Offset { .. }, Position::Offset(o)) => {
            (n >= size as usize).then_some(Position::Offset(o + n as u64))
        }
        (Paging::Cursor { next, .. }, _) => text(next).map(Position::Cursor),
        (Paging::NextUrl { next }, _) => text(next).map(Position::Url),
        _ => None,
    }
}

/// The configured page size, for paging kinds that have one (a shorter page is the last).
fn configured_size(paging: &Paging) -> Option<u32> {
    match paging {
        Paging::Page { size, .. } | Paging::Offset { size, .. } => Some(*size),
        _ => None,
    }
}

/// The page halved, and `at` renumbered to the same first row.
fn shrink(paging: &Paging, at: &Position, size: u32) -> (Position, u32) {
    match (paging, at) {
        (
            Paging::Page {
                start,
                size_param: Some(_),
                ..
            },
            Position::Page(p),
        ) => halve_page(*p, *start, size)
            .map_or((at.clone(), size), |(p, size)| (Position::Page(p), size)),
        (Paging::Offset { .. }, Position::Offset(o)) if size > 1 => {
            (Position::Offset(*o), size / 2)
        }
        _ => (at.clone(), size),
    }
}

/// The page doubled back (never past `configured`), and `next` renumbered to the same first row.
fn grow(
    paging: &Paging,
    next: Option<Position>,
    size: u32,
    configured: Option<u32>,
) -> (Option<Position>, u32) {
    let Some(max) = configured.filter(|max| size < *max) else {
        return (next, size);
    };
    match (paging, next) {
        (Paging::Page { start, .. }, Some(Position::Page(p))) => {
            match double_page(p, *start, size, max) {
                Some((p, size)) => (Some(Position::Page(p)), size),
                None => (Some(Position::Page(p)), size),
            }
        }
        (Paging::Offset { .. }, Some(Position::Offset(o))) => {
            (Some(Position::Offset(o)), (size * 2).min(max))
        }
        (_, next) => (next, size),
    }
}

/// A record's fields for the mapping: its top-level values, then each configured pointer's
/// value under the contact field's name.
pub fn fields_of(
    pointers: &std::collections::BTreeMap<crate::mapping::ContactField, String>,
) -> impl Fn(&Value) -> Value + Send + Sync + use<> {
    let pointers: Vec<(String, String)> = pointers
        .iter()
        .map(|(f, p)| (f.as_str().to_owned(), p.clone()))
        .collect();
    move |record: &Value| {
        let mut out: Map<String, Value> = record.as_object().cloned().unwrap_or_default();
        for (field, pointer) in &pointers {
            if let Some(v) = record.pointer(pointer) {
                out.insert(field.clone(), v.clone());
            }
        }
        Value::Object(out)
    }
}

/// The connector's mapping, plus each pointer-mapped field under its own name.
pub fn mapping_of(cfg: &HttpPullConnector) -> FieldMapping {
    let mut m = cfg.mapping.clone();
    for field in cfg.fields.keys() {
        m.entry(*field)
            .or_default()
            .insert(0, field.as_str().to_owned());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page(size: u32) -> Paging {
        Paging::Page {
            param: "page".into(),
            size_param: Some("page_size".into()),
            size,
            start: 1,
        }
    }

    #[test]
    fn positions_advance_by_the_paging_kind() {
        let body = json!({"paging": {"next": "https://x/next", "cursor": "c2"}});
        assert_eq!(
            next_position(&page(2), &Position::Page(1), &body, 2, 2),
            Some(Position::Page(2))
        );
        assert_eq!(
            next_position(&page(2), &Position::Page(3), &body, 1, 2),
            None,
            "a short page is the last"
        );
        assert_eq!(
            next_position(&page(2), &Position::Page(3), &body, 0, 2),
            None
        );
        let offset = Paging::Offset {
            param: "offset".into(),
            size_param: "limit".into(),
            size: 2,
        };
        assert_eq!(
            next_position(&offset, &Position::Offset(4), &body, 2, 2),
            Some(Position::Offset(6))
        );
        let cursor = Paging::Cursor {
            param: "cursor".into(),
            next: "/paging/cursor".into(),
        };
        assert_eq!(
            next_position(&cursor, &Position::Cursor(String::new()), &body, 5, 0),
            Some(Position::Cursor("c2".into()))
        );
        let url = Paging::NextUrl {
            next: "/paging/next".into(),
        };
        assert_eq!(
            next_position(&url, &Position::Page(0), &body, 5, 0),
            Some(Position::Url("https://x/next".into()))
        );
        assert_eq!(
            next_position(&url, &Position::Page(0), &json!({}), 5, 0),
            None
        );
    }

    #[test]
    fn throttling_halves_pages_and_renumbers_them_to_the_same_rows() {
        let paging = page(100);
        // Page 3 of 100 starts at row 200; page 5 of 50 too.
        assert_eq!(
            shrink(&paging, &Position::Page(3), 100),
            (Position::Page(5), 50)
        );
        assert_eq!(
            shrink(&paging, &Position::Page(5), 25),
            (Position::Page(5), 25),
            "an odd size is not halved"
        );
        // Page 7 of 50 starts at row 300: page 4 of 100.
        assert_eq!(
            grow(&paging, Some(Position::Page(7)), 50, Some(100)),
            (Some(Position::Page(4)), 100)
        );
        assert_eq!(
            grow(&paging, Some(Position::Page(6)), 50, Some(100)),
            (Some(Position::Page(6)), 50),
            "row 250 is not where a page of 100 starts"
        );
        assert_eq!(
            grow(&paging, Some(Position::Page(4)), 100, Some(100)),
            (Some(Position::Page(4)), 100)
        );
        let offset = Paging::Offset {
            param: "offset".into(),
            size_param: "limit".into(),
            size: 100,
        };
        assert_eq!(
            shrink(&offset, &Position::Offset(300), 25),
            (Position::Offset(300), 12)
        );
        assert_eq!(
            grow(&offset, Some(Position::Offset(312)), 60, Some(100)),
            (Some(Position::Offset(312)), 100)
        );
    }

    #[test]
    fn parameters_named_by_pointers_go_into_the_body() {
        let mut body = json!({"header": {"userName": "u"}, "body": {"solutionType": "form"}});
        set_pointer(&mut body, "/body/startDate", json!("2026-11-24"));
        set_pointer(&mut body, "/paging/page", json!("2"));
        assert_eq!(
            body,
            json!({"header": {"userName": "u"},
                "body": {"solutionType": "form", "startDate": "2026-11-24"},
                "paging": {"page": "2"}})
        );
    }

    #[test]
    fn window_times_are_written_in_the_apis_zone() {
        let w = TimeWindow {
            start_param: "start_time".into(),
            end_param: "end_time".into(),
            format: "%Y-%m-%d %H:%M:%S".into(),
            timezone: "Asia/Shanghai".into(),
            overlap: Duration::from_secs(600),
            initial: Duration::from_secs(3600),
            delay: Duration::ZERO,
        };
        // 2026-11-24T00:00:00Z is 08:00 in GMT+8.
        assert_eq!(format_time(1_795_478_400, &w), "2026-11-24 08:00:00");
        let unix = TimeWindow {
            format: "%s".into(),
            ..w
        };
        assert_eq!(format_time(1_795_478_400, &unix), "1795478400");
    }

    #[test]
    fn pointers_fill_contact_fields_and_keep_the_rest() {
        let mut p = std::collections::BTreeMap::new();
        p.insert(
            crate::mapping::ContactField::Phone,
            "/contact/mobile".to_owned(),
        );
        let f = fields_of(&p);
        let out = f(&json!({"id": 1, "contact": {"mobile": "13800138000"}}));
        assert_eq!(out["phone"], "13800138000");
        assert_eq!(out["id"], 1);
    }
}
