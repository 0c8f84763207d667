//! The Graph API as one connector's token sees it: requests with their throttling and error
//! answers classified, and the watch of the token's expiry (`debug_token`).

use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::sync::watch;


use crate::lead::{IntakeEvent, SourceKind};
use crate::sources::id_text;
use crate::sources::pull::PullError;
use crate::sources::pull::{
    Limiter, retried, retry_after,
};
use crate::sources::status::Statuses;


/// The event of a lead read from the Graph API.
pub(super) fn event(connector: &str, lead: Value, now: &str) -> IntakeEvent {
    let id = lead.get("id").and_then(id_text);
    let test = is_test(&lead);
    let mut e = IntakeEvent::new(connector, SourceKind::Platform, id, lead);
    e.received_at = now.to_owned();
    e.test = test;
    e
}

/// A lead of Meta's Lead Ads Testing Tool: its answers are `<test lead: dummy data for …>` and
/// its email `test@fb.com`. Meta marks it nowhere else.
pub(super) fn is_test(lead: &Value) -> bool {
    let values = lead
        .get("field_data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.get("values").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str);
    values.into_iter().any(|v| {
        let v = v.trim();
        v.starts_with("<test lead") || v.eq_ignore_ascii_case("test@fb.com")
    })
}

/// What a Graph error means. `wait` is Meta's own estimate of when the quota comes back.
pub(super) fn classify(status: u16, wait: Option<Duration>, body: Value) -> Result<Value, PullError> {
    let err = body.get("error");
    if err.is_none() && (200..300).contains(&status) {
        return Ok(body);
    }
    let int = |k: &str| err.and_then(|e| e.get(k)).and_then(Value::as_i64);
    let (code, subcode) = (int("code"), int("error_subcode"));
    let message = err
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let detail = match (code, subcode) {
        (Some(c), Some(s)) => format!("{status}, code {c}/{s}: {message}"),
        (Some(c), None) => format!("{status}, code {c}: {message}"),
        _ => format!("{status}"),
    };
    let throttled = |code: String| PullError::Throttled {
        status,
        code,
        retry_after: wait,
    };
    Err(match code {
        Some(c @ (4 | 17 | 32 | 613 | 80000..=80014)) => throttled(format!(", code {c}")),
        Some(190 | 102 | 10 | 200..=299) => PullError::Expired(detail),
        Some(100) if subcode == Some(33) => PullError::Missing(detail),
        Some(1 | 2) => PullError::Server(status),
        _ if status == 429 => throttled(String::new()),
        _ if status == 404 => PullError::Missing(detail),
        _ if status == 401 => PullError::Expired(detail),
        _ if status >= 500 => PullError::Server(status),
        _ => PullError::Api(detail),
    })
}

/// The longest `estimated_time_to_regain_access` (minutes) in `x-business-use-case-usage`:
/// `{"<business>": [{"type": "ads_management", "estimated_time_to_regain_access": 5, ...}]}`.
pub(super) fn regain_access(header: Option<&str>) -> Option<Duration> {
    let usage: Value = serde_json::from_str(header?).ok()?;
    let minutes = usage
        .as_object()?
        .values()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|u| u.get("estimated_time_to_regain_access")?.as_u64())
        .max()?;
    (minutes > 0).then(|| Duration::from_secs(minutes * 60))
}

/// `url` with `name` set to `value` (or removed, when `None`); the other parameters kept.
pub(super) fn with_param(url: &Url, name: &str, value: Option<&str>) -> Url {
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != name)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut out = url.clone();
    out.set_query(None);
    if !pairs.is_empty() || value.is_some() {
        let mut q = out.query_pairs_mut();
        q.extend_pairs(pairs);
        if let Some(v) = value {
            q.append_pair(name, v);
        }
    }
    out
}

/// The Graph API, as one connector's token sees it.
#[derive(Clone)]
pub(super) struct Graph {
    pub(super) name: String,
    pub(super) client: reqwest::Client,
    pub(super) base: String,
    pub(super) token: crate::sources::oauth::Token,
    pub(super) limiter: Option<Limiter>,
}

impl Graph {
    pub(super) fn url(&self, path: &str) -> Result<Url, PullError> {
        let text = format!("{}/{path}", self.base.trim_end_matches('/'));
        Url::parse(&text).map_err(|e| PullError::Shape(format!("bad URL {text}: {e}")))
    }

    async fn get_once(&self, url: &Url, token: &SecretString) -> Result<Value, PullError> {
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        let resp = self
            .client
            .get(url.clone())
            .bearer_auth(token.expose_secret())
            .send()
            .await
            .map_err(|e| PullError::Network(crate::sources::pull::http_error(e)))?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let wait = regain_access(header("x-business-use-case-usage").as_deref())
            .or_else(|| retry_after(resp.headers()));
        let text = resp
            .text()
            .await
            .map_err(|e| PullError::Network(crate::sources::pull::http_error(e)))?;
        let body = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(_) if !(200..300).contains(&status) => json!({}),
            Err(e) => return Err(PullError::Shape(format!("not JSON: {e}"))),
        };
        classify(status, wait, body)
    }

    /// `GET url`, retried while throttled or failing; `throttled` is told of each throttling
    /// and returns the URL to try next (a smaller page).
    pub(super) async fn get(&self, url: Url, throttled: impl Fn(&Url) -> Url) -> Result<Value, PullError> {
        let (url, throttled) = (&url, &throttled);
        self.token
            .with(|token| async move {
                let attempt = |url: Url| {
                    let token = token.clone();
                    async move { self.get_once(&url, &token).await }
                };
                let (answer, _) = retried(&self.name, url.clone(), attempt, throttled).await?;
                Ok(answer)
            })
            .await
    }
}

/// How long before a Meta token's end its health warns: Meta tokens are not refreshed, so a
/// person must get a new one (`leadgate auth`) in that time.
pub(super) const WARN_AHEAD: i64 = 14 * 24 * 3600;

/// Reads the token's expiry from `debug_token` at start, every 6 hours and whenever a new token
/// arrives (`leadgate auth`), into the connector's health: `token.expires_at`,
/// `token.expiring_soon` (within 14 days, or data access ending within 14 days), and
/// `token.refused` when Meta says the token is no longer valid.
pub(super) struct TokenWatch {
    pub(super) graph: Graph,
    pub(super) app_token: SecretString,
    pub(super) statuses: Statuses,
}

impl TokenWatch {
    pub(super) async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut wake = self.graph.token.subscribe();
        while !*shutdown.borrow() {
            crate::sources::pull::seen(&mut wake);
            let pause = match self.check().await {
                Ok(()) => Duration::from_secs(6 * 3600),
                Err(e) => {
                    tracing::warn!(connector = %self.graph.name, error = %e, "cannot read the token's expiry");
                    Duration::from_secs(600)
                }
            };
            crate::sources::pull::pause_or_wake(pause, &mut wake, &mut shutdown).await;
        }
    }

    async fn check(&self) -> Result<(), PullError> {
        let url = with_param(
            &self.graph.url("debug_token")?,
            "input_token",
            Some(self.graph.token.current().expose_secret()),
        );
        let app = Graph {
            token: crate::sources::oauth::Token::Fixed(self.app_token.clone()),
            ..self.graph.clone()
        };
        let body = app.get(url, Url::clone).await?;
        let data = body.get("data").cloned().unwrap_or_default();
        let now = jiff::Timestamp::now().as_second();
        let soon = |key: &str| {
            data.get(key)
                .and_then(Value::as_i64)
                .filter(|at| *at > 0 && at - now < WARN_AHEAD)
                .is_some()
        };
        let expires_at = data
            .get("expires_at")
            .and_then(Value::as_i64)
            .filter(|at| *at > 0)
            .and_then(|at| jiff::Timestamp::from_second(at).ok())
            .map(crate::lead::rfc3339_millis);
        let valid = data.get("is_valid").and_then(Value::as_bool) != Some(false);
        let expiring_soon = soon("expires_at") || soon("data_access_expires_at");
        if expiring_soon {
            tracing::warn!(connector = %self.graph.name, expires_at = ?expires_at, "the Meta token expires within 14 days: get a new one with `leadgate auth`");
        }
        let refused = (!valid).then(|| {
            let why = data
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("debug_token says the token is not valid");
            format!("debug_token: {why}")
        });
        self.statuses.update(&self.graph.name, |s| {
            let token = s.token.get_or_insert_with(Default::default);
            token.expires_at = expires_at;
            token.expiring_soon = expiring_soon;
            if refused.is_some() {
                token.refused = refused;
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn testing_tool_leads_are_test_leads() {
        let lead = |values: &[&str]| {
            json!({"id": "1", "field_data": [{"name": "full_name", "values": values}]})
        };
        assert!(is_test(&lead(&["<test lead: dummy data for full_name>"])));
        assert!(is_test(&lead(&["TEST@fb.com"])));
        assert!(!is_test(&lead(&["Jane Doe"])));
        assert!(!is_test(&json!({"id": "1"})));
        let real = crate::sources::fixture_json("meta", "lead.json");
        assert!(!is_test(&real));
    }
}
