//! 巨量引擎 Ocean Engine (Douyin ads) leads: `type = "oceanengine"`.
//!
//! - **Pull.** `GET /open_api/2/tools/clue/get/` is a preset of the generic HTTP pull
//!   ([`pull_config`]): the `Access-Token` header, `advertiser_ids` as a JSON array, numbered
//!   pages, `start_time`/`end_time` windows written in GMT+8, and errors as HTTP 200 with a
//!   `code` (40100 is throttling; 40102–40105 are token problems). Pages come newest-first and
//!   some fields are filled about 10 minutes after a lead is created, so each window reaches
//!   back `overlap` (30 minutes) into the last one.
//! - **Push (SPI).** With `spi_secret` set, `POST /v1/webhooks/{name}` takes the subscription's
//!   messages: `{"event": "verify_webhook", "challenge": 123}` is answered
//!   `{"BaseResp": {"StatusCode": 200}, "challenge": 123}`; a lead message
//!   `{message_id, service_label, data: "<the lead as a JSON string>", ...}` must carry the hex
//!   HMAC-SHA256 of the raw body in `spi_signature_header`.
//!
//! Pushed and pulled leads are the same object (`clue_id`, `telephone`, `province_name`, ...)
//! and share the connector's name, so a lead both pushed and pulled is published once.
//! `clue_source = 4` (an ad preview) marks a test lead.

pub mod config;

pub use config::OceanEngineConnector;

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde_json::{Value, json};

use crate::sources::http_pull::{ErrorCodes, HttpPullConnector, Paging, TimeWindow};
use crate::sources::webhook::SignatureConfig;
use crate::mapping::ContactField;

use crate::lead::{IntakeEvent, SourceKind};
use crate::sources::connector::{Start, Started};
use crate::sources::push::{self, Push, Reply, Verdict, Webhook};

/// The generic pull that reads this connector's leads.
pub fn pull_config(c: &OceanEngineConnector) -> HttpPullConnector {
    let ids: Vec<String> = c.advertiser_ids.iter().map(u64::to_string).collect();
    let fields = [
        (ContactField::Name, "/name"),
        (ContactField::Phone, "/telephone"),
        (ContactField::Email, "/email"),
        (ContactField::Province, "/province_name"),
        (ContactField::City, "/city_name"),
        (ContactField::Address, "/address"),
    ];
    HttpPullConnector {
        name: c.name.clone(),
        url: c.api_url.clone(),
        method: crate::sources::http_pull::Method::Get,
        body: None,
        headers: BTreeMap::new(),
        auth: Some((
            "Access-Token".to_owned(),
            crate::sources::oauth::Token::Fixed(c.access_token.clone()),
        )),
        query: BTreeMap::from([("advertiser_ids".to_owned(), format!("[{}]", ids.join(",")))]),
        records: "/data/list".into(),
        id: "/clue_id".into(),
        paging: Paging::Page {
            param: "page".into(),
            size_param: Some("page_size".into()),
            size: c.page_size,
            start: 1,
        },
        window: Some(TimeWindow {
            start_param: "start_time".into(),
            end_param: "end_time".into(),
            format: "%Y-%m-%d %H:%M:%S".into(),
            timezone: "Asia/Shanghai".into(),
            overlap: c.overlap,
            initial: c.initial,
            delay: c.settle,
        }),
        error_code: Some(ErrorCodes {
            pointer: "/code".into(),
            ok: vec![json!(0)],
            throttled: vec![json!(40100)],
            expired: [40102, 40103, 40104, 40105].map(|c| json!(c)).to_vec(),
            message: "/message".into(),
            expired_pointer: None,
        }),
        fields: fields.into_iter().map(|(f, p)| (f, p.to_owned())).collect(),
        test_pointer: Some("/clue_source".into()),
        test_value: Some(json!(4)),
        test_leads: c.test_leads,
        poll_interval: c.poll_interval,
        rate_limit: c.rate_limit,
        default_region: c.default_region.clone(),
        mapping: c.mapping.clone(),
        identity_fields: c.identity_fields.clone(),
        consent: c.consent.clone(),
    }
}

/// How SPI pushes are signed, when the connector takes them.
pub fn spi_signature(c: &OceanEngineConnector) -> Option<SignatureConfig> {
    let secret: &SecretString = c.spi_secret.as_ref()?;
    Some(SignatureConfig {
        secret: secret.clone(),
        header: c.spi_signature_header.clone(),
        timestamp_header: None,
        tolerance: std::time::Duration::ZERO,
    })
}

/// The answer to a `verify_webhook` message, if `body` is one. It echoes the challenge only, so
/// it is answered before the signature is checked (the platform may not sign it).
pub fn verification(body: &[u8]) -> Option<Value> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if v.get("event").and_then(Value::as_str) != Some("verify_webhook") {
        return None;
    }
    let challenge = v.get("challenge")?.clone();
    Some(json!({"BaseResp": {"StatusCode": 200, "StatusMessage": "OK"}, "challenge": challenge}))
}

/// Why a push is refused (400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PushError {
    #[error("`data` is missing: a lead message carries the lead as a JSON string in `data`")]
    NoData,
    #[error("`data` is not a JSON object or an array of objects: {0}")]
    BadData(String),
}

/// The leads of an SPI message (its `data`, a JSON string or an object) and the message id.
pub fn pushed(message: &Value) -> Result<(Vec<Value>, Option<String>), PushError> {
    let data = match message.get("data") {
        Some(Value::String(text)) => {
            serde_json::from_str(text).map_err(|e| PushError::BadData(e.to_string()))?
        }
        Some(v @ (Value::Object(_) | Value::Array(_))) => v.clone(),
        _ => return Err(PushError::NoData),
    };
    let leads = match data {
        Value::Object(_) => vec![data],
        Value::Array(items) if items.iter().all(Value::is_object) => items,
        _ => return Err(PushError::BadData("not an object".into())),
    };
    let id = message.get("message_id").and_then(crate::sources::id_text);
    Ok((leads, id))
}

/// A lead's `clue_id` as text.
pub fn clue_id(lead: &Value) -> Option<String> {
    crate::sources::id_text(lead.get("clue_id")?)
}

/// `clue_source = 4`: a lead from an ad preview.
pub fn is_test(lead: &Value) -> bool {
    lead.get("clue_source")
        .is_some_and(|v| v == &json!(4) || v == &json!("4"))
}

/// Starts the connector: the `clue/get` pull (unless `pull = false`), and the SPI push webhook
/// (with `spi_secret`).
pub(crate) fn start(cfg: &OceanEngineConnector, cx: &Start<'_>) -> anyhow::Result<Started> {
    let mut started = if cfg.pull {
        let mut pull = pull_config(cfg);
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
        pull.auth = Some(("Access-Token".to_owned(), token));
        let mut started = crate::sources::http_pull::start(pull, cx)?;
        started.tasks.extend(refresh);
        started
    } else {
        Started::default()
    };
    if let Some(signature) = spi_signature(cfg) {
        started.webhook = Some(std::sync::Arc::new(Spi { signature }));
    }
    Ok(started)
}

/// 巨量引擎's refresh: `POST oauth2/refresh_token/` with the app's id and secret; every refresh
/// rotates the pair (the old refresh token stops working).
pub(crate) struct Refresher {
    url: String,
    app_id: String,
    secret: secrecy::SecretString,
    redirect_uri: Option<String>,
    authorize_url: String,
    token_url: String,
}

/// The refresh and authorization of `cfg`, when it names the app.
pub(crate) fn refresher(cfg: &OceanEngineConnector) -> Option<Refresher> {
    Some(Refresher {
        url: cfg.oauth_url.clone(),
        app_id: cfg.app_id.clone()?,
        secret: cfg.app_secret.clone()?,
        redirect_uri: cfg.redirect_uri.clone(),
        authorize_url: cfg.authorize_url.clone(),
        token_url: cfg.token_url.clone(),
    })
}

impl crate::sources::oauth::Authorize for Refresher {
    fn authorize_url(&self, state: &str) -> String {
        crate::sources::oauth::page_url(
            &self.authorize_url,
            "https://ad.oceanengine.com/openapi/audit/oauth.html",
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
        Box::pin(async move {
            let body = json!({
                "app_id": self.app_id,
                "secret": secrecy::ExposeSecret::expose_secret(&self.secret),
                "grant_type": "auth_code",
                "auth_code": code,
            });
            let request = client
                .post(&self.token_url)
                .json(&body);
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
    ) -> crate::sources::oauth::TokenFuture<'a>
    {
        Box::pin(async move {
            let body = json!({
                "app_id": self.app_id,
                "secret": secrecy::ExposeSecret::expose_secret(&self.secret),
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
            });
            let request = client
                .post(&self.url)
                .json(&body);
            let (status, answer) = crate::sources::oauth::send(request).await?;
            refresh_answer(status, &answer)
        })
    }
}

/// What a refresh or exchange answer means (code 0 tokens; 40100 and 5xxxx retried; any other
/// code refused).
fn refresh_answer(
    status: u16,
    answer: &Value,
) -> Result<crate::sources::oauth::Fresh, crate::sources::oauth::RefreshError> {
    crate::sources::oauth::token_answer(
        status,
        answer,
        &crate::sources::oauth::TokenAnswer {
            keys: ("access_token", "refresh_token"),
            expires: ("expires_in", "refresh_token_expires_in"),
            messages: &["message"],
            retry_codes: &[40100],
            retry_from: Some(50000),
        },
    )
}

/// SPI pushes: each lead in a message's `data` is journaled, keyed by the message id (a
/// redelivered message is a duplicate) and carrying its `clue_id` (a lead also pulled is
/// published once).
struct Spi {
    signature: SignatureConfig,
}

impl Webhook for Spi {
    fn authenticate(&self, request: &crate::sources::push::Request<'_>) -> Verdict {
        let (headers, body) = (request.headers, request.body);
        use axum::response::IntoResponse;
        if let Some(reply) = verification(body) {
            return Ok(Some(axum::Json(reply).into_response()));
        }
        push::signed(&self.signature, headers, body).map(|()| None)
    }

    fn receive<'a>(&'a self, push: Push<'a>) -> Reply<'a> {
        Box::pin(async move {
            use axum::response::IntoResponse;
            let message = push.payload()?;
            let header_key = push.idempotency_key()?;
            let (leads, message_id) =
                pushed(&message).map_err(|e| push::invalid("data", e.to_string()))?;
            let key = header_key.or(message_id);
            let many = leads.len() > 1;
            let mut receipts = Vec::new();
            for (i, lead) in leads.into_iter().enumerate() {
                let clue_id = clue_id(&lead);
                let idempotency = match (&key, many) {
                    (Some(k), true) => Some(format!("{k}#{i}")),
                    (Some(k), false) => Some(k.clone()),
                    (None, _) => clue_id.clone(),
                };
                let mut event =
                    IntakeEvent::new(push.connector, SourceKind::Platform, clue_id, lead);
                event.test = is_test(&event.payload);
                receipts.push(push.journal(event, idempotency).await?);
            }
            let body = json!({
                "BaseResp": {"StatusCode": 200, "StatusMessage": "OK"},
                "events": push::receipts(&receipts),
            });
            Ok((axum::http::StatusCode::OK, axum::Json(body)).into_response())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        crate::sources::fixture_json("oceanengine", name)
    }

    #[test]
    fn verification_echoes_the_challenge() {
        let reply = verification(br#"{"event": "verify_webhook", "challenge": 1234567}"#).unwrap();
        assert_eq!(reply["challenge"], 1234567);
        assert_eq!(reply["BaseResp"]["StatusCode"], 200);
        assert_eq!(verification(br#"{"message_id": "m"}"#), None);
        assert_eq!(verification(b"not json"), None);
    }

    #[test]
    fn a_push_carries_its_lead_as_a_json_string() {
        let (leads, id) = pushed(&fixture("spi-push.json")).unwrap();
        assert_eq!(id.as_deref(), Some("7310000000000000001"));
        assert_eq!(leads.len(), 1);
        assert_eq!(clue_id(&leads[0]).as_deref(), Some("7310000000000000123"));
        assert_eq!(leads[0]["telephone"], "13800138000");
        assert!(!is_test(&leads[0]));
        assert!(is_test(&json!({"clue_source": 4})));
        assert_eq!(pushed(&json!({"message_id": "x"})), Err(PushError::NoData));
        assert!(matches!(
            pushed(&json!({"data": "{not json"})),
            Err(PushError::BadData(_))
        ));
        assert!(matches!(
            pushed(&json!({"data": "[1, 2]"})),
            Err(PushError::BadData(_))
        ));
    }

    #[test]
    fn the_pull_is_the_generic_one_with_the_platforms_shape() {
        let page = fixture("clue-get-page.json");
        let c: OceanEngineConnector = toml::from_str(
            "name = \"douyin\"\naccess_token = \"t\"\nadvertiser_ids = [1760000000000000, 1760000000000001]\n",
        )
        .unwrap();
        let pull = pull_config(&c);
        assert_eq!(
            pull.query["advertiser_ids"],
            "[1760000000000000,1760000000000001]"
        );
        let list = page.pointer(&pull.records).unwrap().as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].pointer(&pull.id).unwrap(), "7310000000000000123");
        let test = list[1].pointer(pull.test_pointer.as_deref().unwrap());
        assert_eq!(test, pull.test_value.as_ref());
        assert_eq!(c.identity_fields["wechat"], "weixin");
        let w = pull.window.unwrap();
        assert_eq!(
            (w.timezone.as_str(), w.overlap.as_secs()),
            ("Asia/Shanghai", 1800)
        );
    }

    #[test]
    fn refresh_answers_give_tokens_a_retry_or_a_refusal() {
        use crate::sources::oauth::RefreshError;
        let ok = json!({"code": 0, "message": "OK", "data": {"access_token": "a2",
            "expires_in": 86399, "refresh_token": "r2", "refresh_token_expires_in": 2591999}});
        let fresh = refresh_answer(200, &ok).unwrap();
        assert_eq!(secrecy::ExposeSecret::expose_secret(&fresh.access_token), "a2");
        assert_eq!(fresh.access_expires_in, Some(86399));
        assert_eq!(fresh.refresh_expires_in, Some(2591999));
        assert!(matches!(refresh_answer(503, &Value::Null), Err(RefreshError::Failed(_))));
        assert!(matches!(refresh_answer(429, &Value::Null), Err(RefreshError::Failed(_))));
        let throttled = json!({"code": 40100, "message": "too many"});
        assert!(matches!(refresh_answer(200, &throttled), Err(RefreshError::Failed(_))));
        let refused = json!({"code": 40107, "message": "refresh_token expired"});
        assert!(matches!(refresh_answer(200, &refused), Err(RefreshError::Refused(_))));
        let no_token = json!({"code": 0, "data": {}});
        assert!(matches!(refresh_answer(200, &no_token), Err(RefreshError::Failed(_))));
    }
}