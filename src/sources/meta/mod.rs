//! Meta (Facebook/Instagram) Lead Ads: `type = "meta"`.
//!
//! Meta's webhook carries ids only, and webhooks get lost in practice, so a connector runs three
//! parts:
//!
//! - **The webhook** on `/v1/webhooks/{name}`. `GET` answers the `hub.challenge` handshake when
//!   `hub.verify_token` matches. `POST` is checked against `X-Hub-Signature-256` (HMAC-SHA256 of
//!   the raw body with the app secret, in constant time); each `leadgen` change is put in the
//!   connector's **inbox**, which is stored in the journal before the 200 is sent.
//! - **The fetcher** takes leads from the inbox, reads each one from the Graph API
//!   (`GET /{leadgen_id}`), and journals it in the same transaction that removes it from the
//!   inbox. A restart fetches whatever the inbox still holds.
//! - **The reconciliation poll** reads `GET /{form}/leads`, filtered to leads created after the
//!   last poll began (minus `overlap`), following `paging.next`. Each page is journaled with the
//!   position after it, as every pull connector does.
//!
//! A lead both notified and polled is journaled twice and published once: both carry the lead's
//! id as `external_id`, and identity's source idempotency drops the second.
//!
//! Graph errors come in the body (`{"error": {"code", "error_subcode", "message"}}`):
//! codes 4, 17, 32, 613 and 80000–80014 (and HTTP 429) are throttling, retried with backoff that
//! honours `x-business-use-case-usage`'s `estimated_time_to_regain_access`; the poll's page size
//! is halved each time and grows back after. Code 190 (and 102, and the permission codes 10 and
//! 200–299) means the token expired or lost its permission: the connector stops and says so in
//! `GET /v1/connectors/{name}`, and the inbox keeps its leads for the next start.

pub mod config;

pub use config::MetaConnector;

pub(crate) mod auth;
mod graph;

use graph::{Graph, TokenWatch, event, with_param};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::sync::watch;


use crate::http_error::ApiError;
use crate::mapping::FieldMapping;
use crate::sources::connector::{Start, Started};
use crate::sources::inbox::fetch_task;
use crate::sources::pull::poll_task;
use crate::sources::push::{self, Push, Reply, Verdict, Webhook};
use crate::sources::supervise::Task;
use crate::sources::webhook::SignatureConfig;
use crate::lead::{IntakeEvent, now_rfc3339};
use crate::mapping::ContactField;
use crate::sources::id_text;
use crate::sources::inbox::{Fetch, Inbox, Notice};
use crate::sources::pull::PullError;
use crate::sources::pull::{
    PageSink, Poll, lag_since, limiter_for, next_window,
    secs,
};

/// The lead fields asked of the Graph API, by a fetch and a poll alike, so both give the same
/// payload.
const LEAD_FIELDS: &str =
    "id,created_time,field_data,ad_id,ad_name,adset_id,campaign_id,form_id,is_organic,platform,custom_disclaimer_responses";

/// Why a `hub.challenge` handshake is refused (403).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("`hub.mode` must be `subscribe`")]
    Mode,
    #[error("`hub.verify_token` does not match the connector's verify_token")]
    Token,
    #[error("`hub.challenge` is missing")]
    Challenge,
}

impl HandshakeError {
    pub fn field(&self) -> &'static str {
        match self {
            Self::Mode => "hub.mode",
            Self::Token => "hub.verify_token",
            Self::Challenge => "hub.challenge",
        }
    }
}

/// The subscription handshake: `GET ?hub.mode=subscribe&hub.verify_token=T&hub.challenge=C` is
/// answered with `C` when `T` is the connector's token.
pub fn handshake(
    query: &HashMap<String, String>,
    verify_token: &str,
) -> Result<String, HandshakeError> {
    if query.get("hub.mode").map(String::as_str) != Some("subscribe") {
        return Err(HandshakeError::Mode);
    }
    let token = query.get("hub.verify_token").ok_or(HandshakeError::Token)?;
    if !bool::from(token.as_bytes().ct_eq(verify_token.as_bytes())) {
        return Err(HandshakeError::Token);
    }
    match query.get("hub.challenge") {
        Some(c) if !c.is_empty() => Ok(c.clone()),
        _ => Err(HandshakeError::Challenge),
    }
}

/// How Meta signs a webhook: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, body)>`.
pub fn signature(app_secret: &SecretString) -> SignatureConfig {
    SignatureConfig {
        secret: app_secret.clone(),
        header: "X-Hub-Signature-256".into(),
        timestamp_header: None,
        tolerance: Duration::ZERO,
    }
}

/// The `leadgen` changes of a webhook body; other fields and objects are ignored.
pub fn notifications(payload: &Value) -> Vec<Notice> {
    let entries = payload.get("entry").and_then(Value::as_array);
    entries
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("changes").and_then(Value::as_array))
        .flatten()
        .filter(|c| c.get("field").and_then(Value::as_str) == Some("leadgen"))
        .filter_map(|c| {
            let v = c.get("value")?;
            Some(Notice {
                id: id_text(v.get("leadgen_id")?)?,
                context: json!({
                    "form_id": v.get("form_id").and_then(id_text),
                    "page_id": v.get("page_id").and_then(id_text),
                }),
            })
        })
        .collect()
}

/// The fields a lead is mapped from: its top-level scalars (`id`, `created_time`, `ad_id`,
/// `form_id`, ...), then each answer of `field_data` under its question key (several values are
/// joined with `, `). `first_name` and `last_name` make a `full_name` when there is none.
pub fn fields(lead: &Value) -> Value {
    let Some(obj) = lead.as_object() else {
        return lead.clone();
    };
    let mut out = crate::sources::scalars(obj);
    for answer in obj
        .get("field_data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(name) = answer.get("name").and_then(Value::as_str) else {
            continue;
        };
        let values: Vec<&str> = answer
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !values.is_empty() {
            out.insert(name.to_owned(), Value::String(values.join(", ")));
        }
    }
    crate::sources::join_name(&mut out, "full_name", "first_name", "last_name");
    Value::Object(out)
}

/// The preset mapping of Meta's standard question keys; the connector's own `mapping` first.
pub fn mapping_with_preset(mapping: &FieldMapping) -> FieldMapping {
    crate::sources::with_preset(
        mapping,
        &[
            (ContactField::Name, &["full_name"]),
            (ContactField::Phone, &["phone_number", "work_phone_number"]),
            (ContactField::Email, &["email", "work_email"]),
            (ContactField::Company, &["company_name"]),
            (ContactField::Title, &["job_title"]),
            (ContactField::City, &["city"]),
            (ContactField::Province, &["state", "province"]),
            (ContactField::Address, &["street_address"]),
        ],
    )
}

/// Where each form's reconciliation poll stands; the connector's checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollCheckpoint {
    pub forms: BTreeMap<String, FormCursor>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormCursor {
    /// The poll under way reads leads created after `since` (unix seconds); it began at
    /// `started`, and its next page is `next` (without the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// When the last complete poll began: every lead created before it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_until: Option<i64>,
}

/// Starts the connector: the fetcher of notified leads, the token watch (with `app_id`), the
/// reconciliation poll (with `forms`), and the webhook that fills the inbox.
pub(crate) fn start(cfg: &MetaConnector, cx: &Start<'_>) -> anyhow::Result<Started> {
    let client = cx.client(Duration::from_secs(60))?;
    // With the app's id, the token file written by `leadgate auth` wins over the settings'
    // token; Meta tokens are not refreshed (there is no refresh token).
    let app = auth::app(cfg).map(|a| Arc::new(a) as Arc<dyn crate::sources::oauth::Refresh>);
    let (token, renewal) =
        crate::sources::oauth::token(cx, &cfg.name, &cfg.access_token, None, app)?;
    let graph = Graph {
        name: cfg.name.clone(),
        client,
        base: cfg.graph_url.clone(),
        token,
        limiter: limiter_for(cfg.access_token.expose_secret(), cfg.rate_limit),
    };
    let sink = cx.sink(&cfg.name);
    let inbox = Arc::new(Inbox::open(&sink)?);
    let mut tasks = vec![fetch_task(&cfg.name, GraphFetch(graph.clone()), &inbox)];
    tasks.extend(renewal);
    if let Some(app_id) = &cfg.app_id {
        let app_token = SecretString::from(format!("{app_id}|{}", cfg.app_secret.expose_secret()));
        let (graph, statuses) = (graph.clone(), cx.statuses.clone());
        tasks.push(Task::new(&cfg.name, "token watch", move |stop| {
            let watch = TokenWatch {
                graph: graph.clone(),
                app_token: app_token.clone(),
                statuses: statuses.clone(),
            };
            watch.run(stop)
        }));
    }
    if !cfg.forms.is_empty() {
        let (own, every) = (cfg.clone(), cfg.poll_interval);
        tasks.push(poll_task(sink, every, move |checkpoint, sink| Poller {
            checkpoint,
            limit: AtomicU32::new(own.page_size),
            cfg: own.clone(),
            graph: graph.clone(),
            sink,
        }));
    }
    let webhook = Notifications {
        cfg: cfg.clone(),
        inbox,
    };
    Ok(Started {
        tasks,
        webhook: Some(Arc::new(webhook)),
    })
}

/// The `leadgen` webhook: the subscription handshake, then signed notifications whose lead ids
/// go to the inbox.
struct Notifications {
    cfg: MetaConnector,
    inbox: Arc<Inbox>,
}

impl Webhook for Notifications {
    fn handshake(
        &self,
        _: &str,
        query: &HashMap<String, String>,
    ) -> Result<axum::response::Response, ApiError> {
        use axum::response::IntoResponse;
        let challenge = handshake(query, self.cfg.verify_token.expose_secret()).map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "handshake.refused",
                Some(e.field()),
                e.to_string(),
            )
        })?;
        Ok(([(axum::http::header::CONTENT_TYPE, "text/plain")], challenge).into_response())
    }

    fn authenticate(&self, request: &crate::sources::push::Request<'_>) -> Verdict {
        let (headers, body) = (request.headers, request.body);
        push::signed(&signature(&self.cfg.app_secret), headers, body).map(|()| None)
    }

    fn receive<'a>(&'a self, push: Push<'a>) -> Reply<'a> {
        Box::pin(async move {
            let payload = push.payload()?;
            push.idempotency_key()?;
            push::notified(&self.inbox, push.connector, notifications(&payload)).await
        })
    }
}

/// Reads a notified lead from the Graph API.
#[derive(Clone)]
struct GraphFetch(Graph);

impl Fetch for GraphFetch {
    fn wake(&self) -> Option<watch::Receiver<u64>> {
        self.0.token.subscribe()
    }

    async fn fetch(&self, notice: &Notice) -> Result<IntakeEvent, PullError> {
        let url = with_param(&self.0.url(&notice.id)?, "fields", Some(LEAD_FIELDS));
        let lead = self.0.get(url, Url::clone).await?;
        Ok(event(&self.0.name, lead, &now_rfc3339()))
    }
}

struct Poller {
    cfg: MetaConnector,
    graph: Graph,
    sink: PageSink,
    checkpoint: PollCheckpoint,
    /// The page size now: halved while throttled, grown back after.
    limit: AtomicU32,
}

impl Poll for Poller {
    fn wake(&self) -> Option<watch::Receiver<u64>> {
        self.graph.token.subscribe()
    }

    async fn poll(&mut self, shutdown: &watch::Receiver<bool>) -> Result<(), PullError> {
        for form in self.cfg.forms.clone() {
            self.poll_form(&form, shutdown).await?;
        }
        Ok(())
    }
}

impl Poller {
    /// Reads one form's leads from its cursor to the last page.
    async fn poll_form(
        &mut self,
        form: &str,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<(), PullError> {
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let cur = self.checkpoint.forms.get(form).cloned().unwrap_or_default();
            let (since, started) = match (cur.since, cur.started) {
                (Some(since), Some(started)) => (since, started),
                _ => {
                    let now = jiff::Timestamp::now().as_second();
                    let (overlap, initial) = (secs(self.cfg.overlap), secs(self.cfg.initial));
                    next_window(cur.done_until, now, overlap, initial)
                }
            };
            let url = match &cur.next {
                Some(next) => Url::parse(next)
                    .map_err(|e| PullError::Shape(format!("bad next page {next}: {e}")))?,
                None => {
                    let filter = json!([{"field": "time_created", "operator": "GREATER_THAN", "value": since}]);
                    let url = self.graph.url(&format!("{form}/leads"))?;
                    let url = with_param(&url, "fields", Some(LEAD_FIELDS));
                    with_param(&url, "filtering", Some(&filter.to_string()))
                }
            };
            let limit = self.limit.load(Ordering::Relaxed).to_string();
            let url = with_param(&url, "limit", Some(&limit));
            let body = self
                .graph
                .get(url, |url| {
                    let smaller = (self.limit.load(Ordering::Relaxed) / 2).max(1);
                    self.limit.store(smaller, Ordering::Relaxed);
                    with_param(url, "limit", Some(&smaller.to_string()))
                })
                .await?;
            let records = match body.get("data") {
                Some(Value::Array(a)) => a.clone(),
                None | Some(Value::Null) => Vec::new(),
                Some(_) => return Err(PullError::Shape("`data` is not an array".into())),
            };
            let next = body
                .pointer("/paging/next")
                .and_then(Value::as_str)
                .and_then(|n| Url::parse(n).ok())
                // The token stays out of the checkpoint; it is sent as a header.
                .map(|n| with_param(&n, "access_token", None).to_string());
            let last = next.is_none() || records.is_empty();
            let cursor = if last {
                FormCursor {
                    done_until: Some(started),
                    ..FormCursor::default()
                }
            } else {
                FormCursor {
                    since: Some(since),
                    started: Some(started),
                    next,
                    done_until: cur.done_until,
                }
            };
            let mut checkpoint = self.checkpoint.clone();
            checkpoint.forms.insert(form.to_owned(), cursor);
            let now = now_rfc3339();
            let read = records.len() as u64;
            let events: Vec<IntakeEvent> = records
                .into_iter()
                .map(|r| event(&self.cfg.name, r, &now))
                .collect();
            let n = self.sink.send(events, &checkpoint).await?;
            let limit = self.limit.load(Ordering::Relaxed);
            // Every form is read up to its `done_until`: the oldest is the connector's lag.
            let oldest = checkpoint
                .forms
                .values()
                .map(|f| f.done_until)
                .min()
                .flatten();
            let lag = lag_since(oldest);
            self.sink.shown(&checkpoint, n, |s| {
                s.lag_seconds = lag;
                s.rows_read += read;
                s.page_size = Some(limit);
            });
            self.checkpoint = checkpoint;
            // Throttling passed: grow the page back towards the configured size.
            let grown = limit.saturating_mul(2).min(self.cfg.page_size);
            self.limit.store(grown, Ordering::Relaxed);
            if last {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use graph::{classify, regain_access};

    fn fixture(name: &str) -> Value {
        crate::sources::fixture_json("meta", name)
    }

    #[test]
    fn the_handshake_echoes_the_challenge_only_for_the_token() {
        let q = |mode: &str, token: &str, challenge: &str| {
            HashMap::from([
                ("hub.mode".to_owned(), mode.to_owned()),
                ("hub.verify_token".to_owned(), token.to_owned()),
                ("hub.challenge".to_owned(), challenge.to_owned()),
            ])
        };
        assert_eq!(
            handshake(&q("subscribe", "tok", "1158201444"), "tok").as_deref(),
            Ok("1158201444")
        );
        assert_eq!(
            handshake(&q("subscribe", "other", "1"), "tok"),
            Err(HandshakeError::Token)
        );
        assert_eq!(
            handshake(&q("unsubscribe", "tok", "1"), "tok"),
            Err(HandshakeError::Mode)
        );
        assert_eq!(
            handshake(&q("subscribe", "tok", ""), "tok"),
            Err(HandshakeError::Challenge)
        );
        assert_eq!(handshake(&HashMap::new(), "tok"), Err(HandshakeError::Mode));
    }

    #[test]
    fn leadgen_changes_are_read_and_other_fields_ignored() {
        let n = notifications(&fixture("webhook.json"));
        let ids: Vec<&str> = n.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["444444444444", "5545"], "numbers become text");
        assert_eq!(n[1].context, json!({"form_id": "5511", "page_id": "5165"}));
        assert!(notifications(&json!({"object": "page"})).is_empty());
    }

    #[test]
    fn answers_become_fields_and_names_are_joined() {
        let f = fields(&fixture("lead.json"));
        assert_eq!(f["email"], "wang.fang@example.cn");
        assert_eq!(f["phone_number"], "+8613912345678");
        assert_eq!(f["id"], "1234567890123456");
        assert_eq!(f["full_name"], "Fang Wang", "first_name and last_name");
        assert_eq!(f["which_products"], "CRM, ERP", "several answers");
        assert!(f.get("field_data").is_none());
    }

    #[test]
    fn graph_errors_are_classified() {
        let err = |code: i64, sub: Option<i64>| {
            let mut e = json!({"message": "m", "type": "OAuthException", "code": code});
            if let Some(s) = sub {
                e["error_subcode"] = s.into();
            }
            json!({ "error": e })
        };
        let c = |status, body| classify(status, None, body).unwrap_err();
        assert!(matches!(c(400, err(4, None)), PullError::Throttled { .. }));
        assert!(matches!(c(400, err(17, None)), PullError::Throttled { .. }));
        assert!(matches!(
            c(400, err(80004, None)),
            PullError::Throttled { .. }
        ));
        let expired = c(400, err(190, Some(463)));
        assert!(matches!(expired, PullError::Expired(_)));
        assert!(expired.to_string().contains("190/463"), "{expired}");
        assert!(matches!(c(403, err(200, None)), PullError::Expired(_)));
        assert!(matches!(c(400, err(100, Some(33))), PullError::Missing(_)));
        assert!(matches!(c(400, err(100, None)), PullError::Api(_)));
        assert!(matches!(c(500, json!({})), PullError::Server(500)));
        assert!(matches!(c(429, json!({})), PullError::Throttled { .. }));
        assert_eq!(
            classify(200, None, json!({"data": []})).unwrap(),
            json!({"data": []})
        );
    }

    #[test]
    fn metas_usage_header_says_when_to_come_back() {
        let h = r#"{"112233": [{"type": "ads_management", "call_count": 100, "estimated_time_to_regain_access": 3},
                    {"type": "pages", "estimated_time_to_regain_access": 0}]}"#;
        assert_eq!(regain_access(Some(h)), Some(Duration::from_secs(180)));
        assert_eq!(
            regain_access(Some(r#"{"1": [{"estimated_time_to_regain_access": 0}]}"#)),
            None
        );
        assert_eq!(regain_access(Some("not json")), None);
        assert_eq!(regain_access(None), None);
    }

    #[test]
    fn next_pages_lose_the_token_and_take_the_page_size() {
        let next = Url::parse(
            "https://graph.facebook.com/v21.0/5511/leads?access_token=SECRET&limit=100&after=QVFI",
        )
        .unwrap();
        let clean = with_param(&next, "access_token", None);
        assert_eq!(
            clean.as_str(),
            "https://graph.facebook.com/v21.0/5511/leads?limit=100&after=QVFI"
        );
        assert_eq!(
            with_param(&clean, "limit", Some("25")).as_str(),
            "https://graph.facebook.com/v21.0/5511/leads?after=QVFI&limit=25"
        );
        let bare = Url::parse("https://x/leads?access_token=S").unwrap();
        assert_eq!(
            with_param(&bare, "access_token", None).as_str(),
            "https://x/leads"
        );
    }

    #[test]
    fn the_connectors_mapping_comes_before_the_preset() {
        let mut own = FieldMapping::new();
        own.insert(ContactField::Phone, vec!["mobile".into()]);
        let m = mapping_with_preset(&own);
        assert_eq!(
            m[&ContactField::Phone],
            ["mobile", "phone_number", "work_phone_number"]
        );
        assert_eq!(m[&ContactField::Name], ["full_name"]);
    }
}
