//! TikTok lead generation: `type = "tiktok"`.
//!
//! - **Callbacks.** With `secret` set, `POST /v1/webhooks/{name}` takes TikTok's callbacks:
//!   `{"object": 1, "entry": [{"id": <lead id>, "page_id", "advertiser_id", "campaign_id",
//!   "adgroup_id", "ad_id", "create_time", "lead_source", "changes": [{"field": "email",
//!   "value": "..."}]}]}`. The hex HMAC-SHA256 of the raw body must be in `signature_header`
//!   (`X-Open-Signature`). The shape is not verified against an official source, so unknown
//!   fields are kept, and the header is configurable. Each entry is one lead, journaled under its
//!   id: TikTok retries a callback for up to 72 hours until it gets a 200, and a retry is
//!   answered again without a second lead.
//! - **Downloads.** With `access_token`, `advertiser_id` and `page_ids`, every `poll_interval`
//!   each form's leads are downloaded: a task is created
//!   (`POST {api_url}/page/lead/task/`), then `GET {api_url}/page/lead/task/download/` is asked
//!   until the file is ready. The file is CSV, possibly zipped, in UTF-8 or GB18030. Its rows are
//!   journaled 500 at a time with the task id and the rows done, so a restart resumes the same
//!   task after the last row journaled. Leads already received are dropped by their id (the
//!   `id_column`, by default `lead_id`), so a lead both called back and downloaded is published
//!   once. Errors come as HTTP 200 with a `code`: 40100 is throttling; 40102, 40104 and 40105
//!   are token problems, which stop the connector.

pub mod config;

pub use config::TiktokConnector;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::mapping::FieldMapping;
use crate::sources::connector::{Start, Started};
use crate::sources::pull::poll_task;

use crate::sources::push::{self, Push, Reply, Verdict, Webhook};
use crate::sources::webhook::SignatureConfig;
use crate::lead::{IntakeEvent, SourceKind, now_rfc3339};
use crate::mapping::ContactField;
use crate::sources::file::{Format, decode, rows};
use crate::sources::pull::PullError;
use crate::sources::pull::{
    Limiter, PageSink, Poll, check_status, lag_since, limiter_for, retried, retry_after,
};

/// Downloaded rows journaled per transaction.
const CHUNK: usize = 500;

/// How a callback is signed, when the connector takes callbacks.
pub fn signature(c: &TiktokConnector) -> Option<SignatureConfig> {
    Some(SignatureConfig {
        secret: c.secret.clone()?,
        header: c.signature_header.clone(),
        timestamp_header: None,
        tolerance: Duration::ZERO,
    })
}

/// The leads of a callback: its entries.
pub fn entries(callback: &Value) -> Vec<Value> {
    callback
        .get("entry")
        .and_then(Value::as_array)
        .map(|e| e.iter().filter(|v| v.is_object()).cloned().collect())
        .unwrap_or_default()
}

/// A lead's id: a callback entry's `id`, or a downloaded row's `id_column`.
pub fn lead_id(lead: &Value, id_column: &str) -> Option<String> {
    crate::sources::id_text(lead.get("id").or_else(|| lead.get(id_column))?)
}

/// The fields a lead is mapped from: its top-level scalars, then each answer of `changes` under
/// its field name (a downloaded row is flat already).
pub fn fields(lead: &Value) -> Value {
    let Some(obj) = lead.as_object() else {
        return lead.clone();
    };
    let mut out = crate::sources::scalars(obj);
    let changes = obj.get("changes").and_then(Value::as_array);
    for c in changes.into_iter().flatten() {
        if let (Some(field), Some(value)) = (c.get("field").and_then(Value::as_str), c.get("value"))
        {
            out.insert(field.to_owned(), value.clone());
        }
    }
    Value::Object(out)
}

/// The preset mapping of TikTok's standard questions; the connector's own `mapping` first.
pub fn mapping_with_preset(mapping: &FieldMapping) -> FieldMapping {
    crate::sources::with_preset(
        mapping,
        &[
            (ContactField::Name, &["name", "full_name"]),
            (ContactField::Phone, &["phone_number", "phone"]),
            (ContactField::Email, &["email"]),
            (ContactField::Company, &["company_name"]),
            (ContactField::Title, &["job_title"]),
            (ContactField::City, &["city"]),
            (ContactField::Province, &["province", "state"]),
        ],
    )
}

/// What a JSON answer's `code` means.
fn check_code(status: u16, body: &Value) -> Result<(), PullError> {
    let code = body.get("code").and_then(Value::as_i64).unwrap_or(0);
    let message = body.get("message").and_then(Value::as_str).unwrap_or("");
    match code {
        0 => Ok(()),
        40100 => Err(PullError::Throttled {
            status,
            code: format!(", code {code}"),
            retry_after: None,
        }),
        40102 | 40104 | 40105 => Err(PullError::Expired(format!(
            "{status}, code {code}: {message}"
        ))),
        _ => Err(PullError::Api(format!("{code}: {message}"))),
    }
}

/// The text of a downloaded file: the first CSV of a zip, or the file itself.
fn file_text(bytes: Vec<u8>) -> Result<String, PullError> {
    if !bytes.starts_with(b"PK\x03\x04") {
        return Ok(decode(bytes));
    }
    let shape =
        |e: &dyn std::fmt::Display| PullError::Shape(format!("the zip cannot be read: {e}"));
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| shape(&e))?;
    let index = (0..zip.len())
        .find(|&i| {
            zip.name_for_index(i)
                .is_some_and(|n| n.is_ok_and(|n| n.to_ascii_lowercase().ends_with(".csv")))
        })
        .unwrap_or(0);
    let mut entry = zip.by_index(index).map_err(|e| shape(&e))?;
    let mut out = Vec::new();
    entry.read_to_end(&mut out).map_err(|e| shape(&e))?;
    Ok(decode(out))
}

/// Where each form's download stands; the connector's checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub forms: BTreeMap<String, FormTask>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormTask {
    /// The download under way, and how many of its rows are journaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default)]
    pub rows_done: u64,
    /// When the last complete download ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<String>,
}

enum Download {
    NotReady(String),
    File(Vec<u8>),
}

struct Puller {
    cfg: TiktokConnector,
    client: reqwest::Client,
    token: crate::sources::oauth::Token,
    advertiser_id: String,
    limiter: Option<Limiter>,
    sink: PageSink,
    checkpoint: Checkpoint,
}

impl Poll for Puller {
    fn wake(&self) -> Option<watch::Receiver<u64>> {
        self.token.subscribe()
    }

    async fn poll(&mut self, shutdown: &watch::Receiver<bool>) -> Result<(), PullError> {
        for page in self.cfg.page_ids.clone() {
            if *shutdown.borrow() {
                return Ok(());
            }
            self.download_form(&page).await?;
        }
        Ok(())
    }
}

/// Starts the download of every TikTok connector that has one.
/// Signed callbacks: each entry is a lead, journaled under its id (TikTok retries until it gets a
/// 200; a retry is answered again and publishes nothing).
struct Callbacks(TiktokConnector);

impl Webhook for Callbacks {
    fn authenticate(&self, request: &crate::sources::push::Request<'_>) -> Verdict {
        let (headers, body) = (request.headers, request.body);
        if let Some(sig) = signature(&self.0) {
            push::signed(&sig, headers, body)?;
        }
        Ok(None)
    }

    fn receive<'a>(&'a self, push: Push<'a>) -> Reply<'a> {
        Box::pin(async move {
            use axum::response::IntoResponse;
            let callback = push.payload()?;
            push.idempotency_key()?;
            let leads = entries(&callback);
            if leads.is_empty() {
                return Err(push::invalid("entry", "a callback lists its leads in `entry`"));
            }
            let mut receipts = Vec::new();
            for lead in leads {
                let id = lead_id(&lead, &self.0.id_column);
                let event = IntakeEvent::new(push.connector, SourceKind::Platform, id.clone(), lead);
                receipts.push(push.journal(event, id).await?);
            }
            let events = push::receipts(&receipts);
            let body = json!({"code": 0, "message": "OK", "events": events});
            Ok((axum::http::StatusCode::OK, axum::Json(body)).into_response())
        })
    }
}

/// Starts the connector's downloads, if configured, and its callback webhook, if it has a
/// secret.
pub(crate) fn start(cfg: &TiktokConnector, cx: &Start<'_>) -> anyhow::Result<Started> {
    let mut started = Started::default();
    if cfg.secret.is_some() {
        started.webhook = Some(std::sync::Arc::new(Callbacks(cfg.clone())));
    }
    let (Some(token), Some(advertiser_id), true) =
        (&cfg.access_token, &cfg.advertiser_id, cfg.pulls())
    else {
        return Ok(started);
    };
    let client = cx.client(Duration::from_secs(300))?;
    let limiter = limiter_for(token.expose_secret(), cfg.rate_limit);
    let app = app(cfg).map(|a| std::sync::Arc::new(a) as std::sync::Arc<dyn crate::sources::oauth::Refresh>);
    let (token, refresh) =
        crate::sources::oauth::token(cx, &cfg.name, token, cfg.refresh_token.as_ref(), app)?;
    started.tasks.extend(refresh);
    let (advertiser_id, cfg) = (advertiser_id.clone(), cfg.clone());
    let every = cfg.poll_interval;
    started.tasks.push(poll_task(
        cx.sink(&cfg.name),
        every,
        move |checkpoint, sink| Puller {
            checkpoint,
            token: token.clone(),
            advertiser_id: advertiser_id.clone(),
            limiter: limiter.clone(),
            cfg: cfg.clone(),
            client: client.clone(),
            sink,
        },
    ));
    Ok(started)
}

/// TikTok's OAuth app (Business API): the code exchange at `token_url` (`{app_id, secret,
/// auth_code}`) and, where a refresh token is configured, the refresh at `oauth_url` (`{app_id,
/// secret, grant_type, refresh_token}`, also sent as `client_id`/`client_secret` for the
/// `tt_user` endpoint). Answers are `{code, message, data}`: 40100 and 5xxxx are retried, any
/// other code (40104: the refresh token expired) is refused.
pub(crate) struct App {
    app_id: String,
    secret: SecretString,
    oauth_url: String,
    token_url: String,
    authorize_url: String,
    redirect_uri: Option<String>,
}

/// The app of `cfg`, when it names its id and secret.
pub(crate) fn app(cfg: &TiktokConnector) -> Option<App> {
    Some(App {
        app_id: cfg.app_id.clone()?,
        secret: cfg.app_secret.clone()?,
        oauth_url: cfg.oauth_url.clone(),
        token_url: cfg.token_url.clone(),
        authorize_url: cfg.authorize_url.clone(),
        redirect_uri: cfg.redirect_uri.clone(),
    })
}

impl App {
    async fn post(
        &self,
        client: &reqwest::Client,
        url: &str,
        body: Value,
    ) -> Result<crate::sources::oauth::Fresh, crate::sources::oauth::RefreshError> {
        let (status, answer) = crate::sources::oauth::send(client.post(url).json(&body)).await?;
        crate::sources::oauth::token_answer(
            status,
            &answer,
            &crate::sources::oauth::TokenAnswer {
                keys: ("access_token", "refresh_token"),
                expires: ("expires_in", "refresh_token_expires_in"),
                messages: &["message"],
                retry_codes: &[40100],
                retry_from: Some(50000),
            },
        )
    }
}

impl crate::sources::oauth::Refresh for App {
    fn refresh<'a>(
        &'a self,
        client: &'a reqwest::Client,
        refresh_token: &'a str,
    ) -> crate::sources::oauth::TokenFuture<'a> {
        let secret = self.secret.expose_secret();
        let body = json!({
            "app_id": self.app_id, "secret": secret,
            "client_id": self.app_id, "client_secret": secret,
            "grant_type": "refresh_token", "refresh_token": refresh_token,
        });
        Box::pin(async move { self.post(client, &self.oauth_url, body).await })
    }
}

impl crate::sources::oauth::Authorize for App {
    fn authorize_url(&self, state: &str) -> String {
        crate::sources::oauth::page_url(
            &self.authorize_url,
            "https://business-api.tiktok.com/portal/auth",
            &[
                ("app_id", Some(&self.app_id)),
                ("state", Some(state)),
                ("redirect_uri", self.redirect_uri.as_deref()),
            ],
        )
    }

    fn code_param(&self) -> &'static str {
        "auth_code"
    }

    fn exchange<'a>(
        &'a self,
        client: &'a reqwest::Client,
        code: &'a str,
    ) -> crate::sources::oauth::TokenFuture<'a> {
        let body = json!({
            "app_id": self.app_id, "secret": self.secret.expose_secret(), "auth_code": code,
        });
        Box::pin(async move { self.post(client, &self.token_url, body).await })
    }
}

impl Puller {
    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.cfg.api_url.trim_end_matches('/'))
    }

    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        token: &SecretString,
    ) -> Result<reqwest::Response, PullError> {
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        let resp = req
            .header("Access-Token", token.expose_secret())
            .send()
            .await
            .map_err(|e| PullError::Network(crate::sources::pull::http_error(e)))?;
        check_status(resp.status().as_u16(), retry_after(resp.headers()))?;
        Ok(resp)
    }

    async fn retrying<T, F: Future<Output = Result<T, PullError>>>(
        &self,
        f: impl Fn() -> F,
    ) -> Result<T, PullError> {
        let (answer, ()) = retried(&self.cfg.name, (), |()| f(), |()| ()).await?;
        Ok(answer)
    }

    /// Starts a download of the form's leads: its task id. A live token is renewed when TikTok
    /// says it expired.
    async fn create_task(&self, page_id: &str) -> Result<String, PullError> {
        self.token
            .with(|token| async move { self.create_task_with(page_id, &token).await })
            .await
    }

    async fn create_task_with(
        &self,
        page_id: &str,
        token: &SecretString,
    ) -> Result<String, PullError> {
        let body = json!({"advertiser_id": self.advertiser_id, "page_id": page_id});
        let resp = self
            .send(self.client.post(self.url("page/lead/task/")).json(&body), token)
            .await?;
        let status = resp.status().as_u16();
        let answer: Value = resp
            .json()
            .await
            .map_err(|e| PullError::Shape(format!("not JSON: {}", crate::sources::pull::http_error(e))))?;
        check_code(status, &answer)?;
        match answer.pointer("/data/task_id") {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(PullError::Shape("the task has no `data.task_id`".into())),
        }
    }

    async fn download(&self, task_id: &str) -> Result<Download, PullError> {
        self.token
            .with(|token| async move { self.download_with(task_id, &token).await })
            .await
    }

    async fn download_with(
        &self,
        task_id: &str,
        token: &SecretString,
    ) -> Result<Download, PullError> {
        let req = self
            .client
            .get(self.url("page/lead/task/download/"))
            .query(&[
                ("advertiser_id", self.advertiser_id.as_str()),
                ("task_id", task_id),
            ]);
        let resp = self.send(req, token).await?;
        let status = resp.status().as_u16();
        let json = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.contains("json"));
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| PullError::Network(crate::sources::pull::http_error(e)))?;
        if !json {
            return Ok(Download::File(bytes.to_vec()));
        }
        // A JSON answer is an error or a task still running.
        let answer: Value = serde_json::from_slice(&bytes)
            .map_err(|e| PullError::Shape(format!("not JSON: {e}")))?;
        check_code(status, &answer)?;
        let state = answer
            .pointer("/data/status")
            .and_then(Value::as_str)
            .unwrap_or("RUNNING");
        if state == "FAILED" {
            return Err(PullError::Api(format!("task {task_id} failed")));
        }
        Ok(Download::NotReady(state.to_owned()))
    }

    /// Downloads one form's leads: the task under way, or a new one.
    async fn download_form(&mut self, page_id: &str) -> Result<(), PullError> {
        let cur = self
            .checkpoint
            .forms
            .get(page_id)
            .cloned()
            .unwrap_or_default();
        let task_id = match cur.task_id.clone() {
            Some(t) => t,
            None => {
                let t = self.retrying(|| self.create_task(page_id)).await?;
                let started = FormTask {
                    task_id: Some(t.clone()),
                    rows_done: 0,
                    done_at: cur.done_at.clone(),
                };
                self.commit(page_id, started, Vec::new()).await?;
                t
            }
        };
        let mut waited = 0;
        let bytes = loop {
            match self.retrying(|| self.download(&task_id)).await? {
                Download::File(bytes) => break bytes,
                Download::NotReady(state) if waited < 60 => {
                    tracing::debug!(connector = %self.cfg.name, task_id, state, "waiting for the download");
                    waited += 1;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Download::NotReady(state) => {
                    return Err(PullError::Api(format!(
                        "task {task_id} is still {state} after 2 minutes; tried again next poll"
                    )));
                }
            }
        };
        let text = file_text(bytes)?;
        let read = rows(&text, Format::Csv, Path::new("tiktok-leads.csv"))
            .map_err(|e| PullError::Shape(e.to_string()))?;
        for note in &read.notes {
            tracing::warn!(connector = %self.cfg.name, task_id, "{note}");
        }
        let all = read.rows;
        let total = all.len();
        let mut done = usize::try_from(cur.rows_done)
            .unwrap_or(usize::MAX)
            .min(total);
        let now = now_rfc3339();
        let finished = |now: &str| FormTask {
            task_id: None,
            rows_done: 0,
            done_at: Some(now.to_owned()),
        };
        if done == total {
            // Nothing (more) to journal: the task is done.
            return self.commit(page_id, finished(&now), Vec::new()).await;
        }
        for chunk in all[done..].chunks(CHUNK) {
            let events: Vec<IntakeEvent> = chunk.iter().map(|row| self.event(row, &now)).collect();
            done += chunk.len();
            let state = if done == total {
                finished(&now)
            } else {
                FormTask {
                    task_id: Some(task_id.clone()),
                    rows_done: done as u64,
                    done_at: cur.done_at.clone(),
                }
            };
            self.commit(page_id, state, events).await?;
        }
        Ok(())
    }

    fn event(&self, row: &crate::sources::file::Row, now: &str) -> IntakeEvent {
        if let Some(err) = &row.error {
            tracing::warn!(connector = %self.cfg.name, line = row.line, error = %err, "a downloaded row cannot be read; kept as a rejected lead");
        }
        let id = lead_id(&row.payload, &self.cfg.id_column);
        let mut e = IntakeEvent::new(
            &self.cfg.name,
            SourceKind::Platform,
            id,
            row.payload.clone(),
        );
        e.received_at = now.to_owned();
        e
    }

    /// Journals `events` with the form's new state.
    async fn commit(
        &mut self,
        page_id: &str,
        state: FormTask,
        events: Vec<IntakeEvent>,
    ) -> Result<(), PullError> {
        let mut checkpoint = self.checkpoint.clone();
        checkpoint.forms.insert(page_id.to_owned(), state);
        let read = events.len() as u64;
        let n = self.sink.send(events, &checkpoint).await?;
        // Every form's leads were read when its last download ended: the oldest is the lag.
        let oldest = checkpoint
            .forms
            .values()
            .map(|f| {
                f.done_at
                    .as_deref()
                    .and_then(|at| at.parse::<jiff::Timestamp>().ok())
                    .map(|t| t.as_second())
            })
            .min()
            .flatten();
        let lag = lag_since(oldest);
        self.sink.shown(&checkpoint, n, |s| {
            s.rows_read += read;
            s.lag_seconds = lag;
        });
        self.checkpoint = checkpoint;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        crate::sources::fixture_bytes("tiktok", name)
    }

    #[test]
    fn a_callbacks_entries_are_leads_with_their_answers() {
        let callback: Value = serde_json::from_slice(&fixture("callback.json")).unwrap();
        let leads = entries(&callback);
        assert_eq!(leads.len(), 2);
        assert_eq!(
            lead_id(&leads[0], "lead_id").as_deref(),
            Some("7312345678901234567")
        );
        let f = fields(&leads[0]);
        assert_eq!(f["email"], "zhao.min@example.com");
        assert_eq!(f["phone_number"], "+86 138 0013 8000");
        assert_eq!(f["ad_id"], "1780000000000001");
        assert!(f.get("changes").is_none());
        assert!(entries(&json!({"object": 1})).is_empty());
    }

    #[test]
    fn downloads_are_csv_plain_or_zipped() {
        let plain = file_text(fixture("leads.csv")).unwrap();
        let zipped = {
            let mut buf = std::io::Cursor::new(Vec::new());
            let mut w = zip::ZipWriter::new(&mut buf);
            w.start_file("leads.csv", zip::write::SimpleFileOptions::default())
                .unwrap();
            std::io::Write::write_all(&mut w, plain.as_bytes()).unwrap();
            w.finish().unwrap();
            buf.into_inner()
        };
        assert_eq!(file_text(zipped).unwrap(), plain);
        let rows = rows(&plain, Format::Csv, Path::new("x.csv")).unwrap().rows;
        assert_eq!(rows.len(), 3);
        assert_eq!(
            lead_id(&rows[0].payload, "lead_id").as_deref(),
            Some("7312345678901234567")
        );
        assert!(file_text(b"PK\x03\x04 broken".to_vec()).is_err());
    }

    #[test]
    fn codes_in_the_body_are_classified() {
        assert!(check_code(200, &json!({"code": 0})).is_ok());
        assert!(matches!(
            check_code(200, &json!({"code": 40100, "message": "Too many requests"})),
            Err(PullError::Throttled { .. })
        ));
        assert!(matches!(
            check_code(
                200,
                &json!({"code": 40105, "message": "Access token is invalid"})
            ),
            Err(PullError::Expired(_))
        ));
        assert!(matches!(
            check_code(200, &json!({"code": 40002, "message": "bad param"})),
            Err(PullError::Api(_))
        ));
    }
}
