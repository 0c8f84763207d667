//! 腾讯广告 Tencent Ads leads: `type = "tencent"`.
//!
//! `GET {api_url}?access_token&timestamp&nonce&account_id&time_range&page&page_size` (every
//! request carries a fresh `timestamp`, which Tencent accepts within 300 s, and a unique `nonce`).
//!
//! - **Windows.** `time_range = {"start_time", "end_time", "time_type"}` in unix seconds. Each
//!   poll reads from where the last one ended minus `overlap` to now; the window is part of the
//!   checkpoint, so an interrupted poll resumes with the same window.
//! - **Paging.** Leads come newest first, sorted by time then `leads_id`. Pages are numbered up to
//!   `deep_paging_limit` rows (5000); past it, `last_search_after_values = [ms time, leads_id]`
//!   of the last lead read carries the position and the page number starts again at 1. Each page
//!   is journaled with the position after it.
//! - **Errors.** `code != 0` is an error; the codes that mean throttling or an expired token are
//!   configured (`throttled_codes`, `expired_codes`), since they are not in the reference.
//! - **Fields.** `leads_name`, `leads_telephone`, `leads_email` are mapped; `leads_wechat` and
//!   `leads_qq` are identity keys; `bundle` (a JSON string of the form's other answers) is opened
//!   into fields. Phones may come masked (`134****1234`): normalization reports `phone.masked`
//!   and never uses them as an identity.

pub mod config;

pub use config::TencentConnector;

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::mapping::FieldMapping;
use crate::sources::connector::{Start, Started};
use crate::sources::pull::poll_task;
use crate::lead::{IntakeEvent, SourceKind, now_rfc3339};
use crate::mapping::ContactField;
use crate::sources::pull::{
    Limiter, PageSink, Poll, check_status, lag_since, limiter_for, next_window, retried,
    retry_after, secs,
};
use crate::sources::pull::{PullError, double_page, halve_page};

/// Where the next request starts; stored in the journal with the page before it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The poll under way: `[start, end]`, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<(i64, i64)>,
    /// Its next page number, and the search-after position it counts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<(i64, String)>,
    /// Where the last complete poll's window ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_until: Option<i64>,
    /// The page size in force when smaller than `page_size` (halved while throttled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
}

/// A lead's sort time in milliseconds: `leads_create_time` (or `leads_action_time`), written
/// `yyyy-MM-dd HH:mm:ss` in GMT+8, or as unix seconds.
fn sort_millis(lead: &Value, time_type: &str) -> Option<i64> {
    let key = if time_type == "TIME_TYPE_ACTION_TIME" {
        "leads_action_time"
    } else {
        "leads_create_time"
    };
    match lead.get(key)? {
        Value::Number(n) => n.as_i64().map(|s| s * 1000),
        Value::String(s) => {
            let civil = jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", s.trim()).ok()?;
            let at = civil.in_tz("Asia/Shanghai").ok()?;
            Some(at.timestamp().as_millisecond())
        }
        _ => None,
    }
}

fn leads_id(lead: &Value) -> Option<String> {
    crate::sources::id_text(lead.get("leads_id")?)
}

/// The fields a lead is mapped from: its top-level scalars, then the answers inside `bundle` (a
/// JSON string), which never replace a top-level field.
pub fn fields(lead: &Value) -> Value {
    let Some(obj) = lead.as_object() else {
        return lead.clone();
    };
    let mut out: Map<String, Value> = obj
        .iter()
        .filter(|(k, v)| *k != "bundle" && !v.is_array() && !v.is_object())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let bundle = match obj.get("bundle") {
        Some(Value::String(text)) => serde_json::from_str(text).ok(),
        Some(v @ Value::Object(_)) => Some(v.clone()),
        _ => None,
    };
    if let Some(Value::Object(answers)) = bundle {
        for (k, v) in answers {
            if !v.is_array() && !v.is_object() {
                out.entry(k).or_insert(v);
            }
        }
    }
    Value::Object(out)
}

/// The preset mapping of Tencent's lead fields; the connector's own `mapping` first.
pub fn mapping_with_preset(mapping: &FieldMapping) -> FieldMapping {
    crate::sources::with_preset(
        mapping,
        &[
            (ContactField::Name, &["leads_name"]),
            (ContactField::Phone, &["leads_telephone"]),
            (ContactField::Email, &["leads_email"]),
            (ContactField::Address, &["leads_address"]),
        ],
    )
}

/// Starts every Tencent connector's pull.
/// Starts the connector's poll.
pub(crate) fn start(cfg: &TencentConnector, cx: &Start<'_>) -> anyhow::Result<Started> {
    let client = cx.client(Duration::from_secs(60))?;
    let limiter = limiter_for(
        &format!(
            "{}\u{1f}{}",
            cfg.access_token.expose_secret(),
            cfg.account_id
        ),
        cfg.rate_limit,
    );
    // Refreshed with a refresh token and the app; the configured token as it is otherwise.
    let app = refresher(cfg)
        .filter(|_| cfg.refresh_token.is_some())
        .map(|r| std::sync::Arc::new(r) as std::sync::Arc<dyn crate::sources::oauth::Refresh>);
    let (token, refresh) = crate::sources::oauth::token(
        cx,
        &cfg.name,
        &cfg.access_token,
        cfg.refresh_token.as_ref(),
        app,
    )?;
    let mut tasks: Vec<_> = refresh.into_iter().collect();
    let cfg = cfg.clone();
    let every = cfg.poll_interval;
    tasks.push(poll_task(cx.sink(&cfg.name), every, move |checkpoint, sink| Puller {
        checkpoint,
        limiter: limiter.clone(),
        cfg: cfg.clone(),
        token: token.clone(),
        client: client.clone(),
        sink,
    }));
    Ok(Started {
        tasks,
        webhook: None,
    })
}

/// 腾讯广告's refresh: `GET oauth/token?client_id&client_secret&grant_type=refresh_token&
/// refresh_token`; a refresh rotates the pair.
pub(crate) struct Refresher {
    url: String,
    client_id: String,
    secret: SecretString,
    redirect_uri: Option<String>,
    authorize_url: String,
}

/// The refresh and authorization of `cfg`, when it names the app.
pub(crate) fn refresher(cfg: &TencentConnector) -> Option<Refresher> {
    Some(Refresher {
        url: cfg.oauth_url.clone(),
        client_id: cfg.client_id.clone()?,
        secret: cfg.client_secret.clone()?,
        redirect_uri: cfg.redirect_uri.clone(),
        authorize_url: cfg.authorize_url.clone(),
    })
}

impl crate::sources::oauth::Authorize for Refresher {
    fn authorize_url(&self, state: &str) -> String {
        crate::sources::oauth::page_url(
            &self.authorize_url,
            "https://developers.e.qq.com/oauth/authorize",
            &[
                ("client_id", Some(&self.client_id)),
                ("state", Some(state)),
                ("redirect_uri", self.redirect_uri.as_deref()),
            ],
        )
    }

    fn code_param(&self) -> &'static str {
        "authorization_code"
    }

    fn exchange<'a>(
        &'a self,
        client: &'a reqwest::Client,
        code: &'a str,
    ) -> crate::sources::oauth::TokenFuture<'a> {
        Box::pin(async move {
            let mut query = vec![
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.secret.expose_secret()),
                ("grant_type", "authorization_code"),
                ("authorization_code", code),
            ];
            if let Some(r) = &self.redirect_uri {
                query.push(("redirect_uri", r.as_str()));
            }
            let request = client
                .get(&self.url)
                .query(&query);
            let (status, answer) = crate::sources::oauth::send(request).await?;
            refresh_answer(status, &answer)
        })
    }
}

impl crate::sources::oauth::Refresh for Refresher {
    fn refresh<'a>(
        &'a self,
        client: &'a reqwest::Client,
        refresh_token: &'a str,
    ) -> crate::sources::oauth::TokenFuture<'a> {
        Box::pin(async move {
            let request = client
                .get(&self.url)
                .query(&[
                    ("client_id", self.client_id.as_str()),
                    ("client_secret", self.secret.expose_secret()),
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token),
                ]);
            let (status, answer) = crate::sources::oauth::send(request).await?;
            refresh_answer(status, &answer)
        })
    }
}

/// What a refresh or exchange answer means (code 0 tokens; HTTP 429 or 5xx retried; any code
/// refused: 11010 a malformed refresh token, 11012 an expired one, 11009 an expired code, ...).
fn refresh_answer(
    status: u16,
    answer: &Value,
) -> Result<crate::sources::oauth::Fresh, crate::sources::oauth::RefreshError> {
    crate::sources::oauth::token_answer(
        status,
        answer,
        &crate::sources::oauth::TokenAnswer {
            keys: ("access_token", "refresh_token"),
            expires: ("access_token_expires_in", "refresh_token_expires_in"),
            messages: &["message_cn", "message"],
            retry_codes: &[],
            retry_from: None,
        },
    )
}

struct Puller {
    cfg: TencentConnector,
    /// The token sent (refreshed with `refresh_token` configured).
    token: crate::sources::oauth::Token,
    client: reqwest::Client,
    limiter: Option<Limiter>,
    sink: PageSink,
    checkpoint: Checkpoint,
}

impl Poll for Puller {
    fn wake(&self) -> Option<watch::Receiver<u64>> {
        self.token.subscribe()
    }

    async fn poll(&mut self, shutdown: &watch::Receiver<bool>) -> Result<(), PullError> {
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let window = self.checkpoint.window.unwrap_or_else(|| {
                let now = jiff::Timestamp::now().as_second();
                let (overlap, initial) = (secs(self.cfg.overlap), secs(self.cfg.initial));
                next_window(self.checkpoint.done_until, now, overlap, initial)
            });
            let after = self.checkpoint.after.clone();
            // Throttling halves the page; the page number is renumbered to the same row.
            let max = self.cfg.page_size;
            let start = (
                u64::from(self.checkpoint.page.unwrap_or(1)),
                self.checkpoint.size.unwrap_or(max),
            );
            let (this, cursor) = (&*self, after.as_ref());
            let (leads, (page, size)) = retried(
                &self.cfg.name,
                start,
                |(page, size)| async move { this.fetch(window, page, size, cursor).await },
                |&(page, size)| halve_page(page, 1, size).unwrap_or((page, size)),
            )
            .await?;
            let full = leads.len() >= size as usize;
            let deep = (page + 1) * u64::from(size) > u64::from(self.cfg.deep_paging_limit);
            // The next page, grown back towards `page_size` where it starts at the same row.
            let (next_page, next_size) = if deep { (1, size) } else { (page + 1, size) };
            let (next_page, next_size) =
                double_page(next_page, 1, next_size, max).unwrap_or((next_page, next_size));
            let size_kept = (next_size < max).then_some(next_size);
            let checkpoint = if !full {
                Checkpoint {
                    done_until: Some(window.1),
                    size: size_kept,
                    ..Checkpoint::default()
                }
            } else if deep {
                // Past the rows served by page number: carry on after the last lead read.
                let last = leads.last();
                let position =
                    last.and_then(|l| Some((sort_millis(l, &self.cfg.time_type)?, leads_id(l)?)));
                let Some(position) = position else {
                    return Err(PullError::Shape(
                        "the last lead of a page has no time or leads_id to continue after".into(),
                    ));
                };
                Checkpoint {
                    window: Some(window),
                    page: Some(1),
                    after: Some(position),
                    done_until: self.checkpoint.done_until,
                    size: size_kept,
                }
            } else {
                Checkpoint {
                    window: Some(window),
                    page: u32::try_from(next_page).ok(),
                    after,
                    done_until: self.checkpoint.done_until,
                    size: size_kept,
                }
            };
            let now = now_rfc3339();
            let read = leads.len() as u64;
            let events: Vec<IntakeEvent> = leads
                .into_iter()
                .map(|l| {
                    let mut e =
                        IntakeEvent::new(&self.cfg.name, SourceKind::Platform, leads_id(&l), l);
                    e.received_at = now.clone();
                    e
                })
                .collect();
            let n = self.sink.send(events, &checkpoint).await?;
            let lag = lag_since(checkpoint.done_until);
            self.sink.shown(&checkpoint, n, |s| {
                s.rows_read += read;
                s.lag_seconds = lag;
                s.page_size = Some(size);
            });
            self.checkpoint = checkpoint;
            if !full {
                return Ok(());
            }
        }
    }
}

impl Puller {
    /// [`Puller::fetch_with`] the configured token, or the refreshed one (renewed when Tencent
    /// says it expired).
    async fn fetch(
        &self,
        range: (i64, i64),
        page: u64,
        size: u32,
        after: Option<&(i64, String)>,
    ) -> Result<Vec<Value>, PullError> {
        self.token
            .with(|token| async move { self.fetch_with(&token, range, page, size, after).await })
            .await
    }

    async fn fetch_with(
        &self,
        token: &SecretString,
        (start, end): (i64, i64),
        page: u64,
        size: u32,
        after: Option<&(i64, String)>,
    ) -> Result<Vec<Value>, PullError> {
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        let time_range =
            json!({"start_time": start, "end_time": end, "time_type": self.cfg.time_type});
        let mut query = vec![
            ("access_token", token.expose_secret().to_owned()),
            ("timestamp", jiff::Timestamp::now().as_second().to_string()),
            ("nonce", uuid::Uuid::now_v7().simple().to_string()),
            ("account_id", self.cfg.account_id.to_string()),
            ("time_range", time_range.to_string()),
            ("page", page.to_string()),
            ("page_size", size.to_string()),
        ];
        if let Some((millis, id)) = after {
            query.push(("last_search_after_values", json!([millis, id]).to_string()));
        }
        let resp = self
            .client
            .get(&self.cfg.api_url)
            .query(&query)
            .send()
            .await
            .map_err(|e| PullError::Network(crate::sources::pull::http_error(e)))?;
        let status = resp.status().as_u16();
        check_status(status, retry_after(resp.headers()))?;
        let body: Value = resp
            .json()
            .await
            .map_err(|e| PullError::Shape(format!("not JSON: {}", crate::sources::pull::http_error(e))))?;
        let code = body.get("code").and_then(Value::as_i64).unwrap_or(0);
        if code != 0 {
            let message = body
                .get("message_cn")
                .or_else(|| body.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("");
            return Err(if self.cfg.throttled_codes.contains(&code) {
                PullError::Throttled {
                    status,
                    code: format!(", code {code}"),
                    retry_after: None,
                }
            } else if self.cfg.expired_codes.contains(&code) {
                PullError::Expired(format!("200, code {code}: {message}"))
            } else {
                PullError::Api(format!("{code}: {message}"))
            });
        }
        match body.pointer("/data/leads_info") {
            Some(Value::Array(a)) => Ok(a.clone()),
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(_) => Err(PullError::Shape("`data.leads_info` is not an array".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Value {
        crate::sources::fixture_json("tencent", "leads-list.json")
    }

    #[test]
    fn the_bundle_opens_into_fields_without_replacing_the_leads_own() {
        let lead = page()["data"]["leads_info"][0].clone();
        let f = fields(&lead);
        assert_eq!(f["leads_name"], "刘洋");
        assert_eq!(f["leads_telephone"], "134****1234", "kept as sent: masked");
        assert_eq!(f["意向门店"], "广州天河店", "from the bundle");
        assert!(f.get("bundle").is_none());
        let clash = json!({"leads_name": "A", "bundle": "{\"leads_name\": \"B\", \"x\": 1}"});
        assert_eq!(fields(&clash)["leads_name"], "A");
        assert_eq!(fields(&clash)["x"], 1);
    }

    #[test]
    fn sort_times_are_read_in_gmt8() {
        let lead =
            json!({"leads_create_time": "2026-11-24 08:00:00", "leads_action_time": 1795478400});
        // 08:00 in GMT+8 is midnight UTC.
        assert_eq!(
            sort_millis(&lead, "TIME_TYPE_CREATED_TIME"),
            Some(1_795_478_400_000)
        );
        assert_eq!(
            sort_millis(&lead, "TIME_TYPE_ACTION_TIME"),
            Some(1_795_478_400_000)
        );
        assert_eq!(sort_millis(&json!({}), "TIME_TYPE_CREATED_TIME"), None);
        assert_eq!(leads_id(&json!({"leads_id": 42})).as_deref(), Some("42"));
    }

    #[test]
    fn refresh_answers_give_tokens_a_retry_or_a_refusal() {
        use crate::sources::oauth::RefreshError;
        let ok = json!({"code": 0, "data": {"access_token": "a2", "refresh_token": "r2",
            "access_token_expires_in": 86400, "refresh_token_expires_in": 2592000}});
        let fresh = refresh_answer(200, &ok).unwrap();
        assert_eq!(fresh.access_token.expose_secret(), "a2");
        assert_eq!(fresh.access_expires_in, Some(86400));
        assert_eq!(fresh.refresh_expires_in, Some(2592000));
        assert!(matches!(refresh_answer(502, &Value::Null), Err(RefreshError::Failed(_))));
        let expired = json!({"code": 11012, "message": "refresh token expired"});
        assert!(matches!(refresh_answer(200, &expired), Err(RefreshError::Refused(_))));
    }

    #[test]
    fn the_authorization_page_names_the_app_and_the_redirect() {
        use crate::sources::oauth::Authorize;
        let cfg: TencentConnector = toml::from_str(
            "name = \"qq\"\naccess_token = \"t\"\naccount_id = 1\nrefresh_token = \"r\"\n\
             client_id = \"1110000001\"\nclient_secret = \"s\"\n\
             redirect_uri = \"https://crm.example.cn/cb\"\n",
        )
        .unwrap();
        let flow = refresher(&cfg).unwrap();
        let url = flow.authorize_url("st");
        assert!(url.starts_with("https://developers.e.qq.com/oauth/authorize?"), "{url}");
        assert!(url.contains("client_id=1110000001") && url.contains("state=st"), "{url}");
        assert!(url.contains("redirect_uri=https%3A%2F%2Fcrm.example.cn%2Fcb"), "{url}");
        assert_eq!(flow.code_param(), "authorization_code");
    }
}