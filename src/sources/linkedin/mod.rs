//! LinkedIn Lead Sync: `type = "linkedin"`.
//!
//! - **Validation.** `GET /v1/webhooks/{name}?challengeCode=C` is answered
//!   `{"challengeCode": C, "challengeResponse": hex HMAC-SHA256(client secret, C)}`. LinkedIn
//!   checks it when the URL is registered and every 2 hours after.
//! - **Notifications.** `POST` must carry `X-LI-Signature`: the hex HMAC-SHA256, with the client
//!   secret, of `"hmacsha256=" + raw body`. Each `LEAD_ACTION` notification with
//!   `leadAction: CREATED` names a form response; it goes to the connector's inbox
//!   ([`crate::sources::inbox`]). Notifications may arrive more than once: the inbox keeps one
//!   notice per response, and identity drops a lead journaled twice.
//! - **Fetch.** `GET {api_url}/leadFormResponses/{id}` gives the answers by `questionId`. The
//!   form (`GET {api_url}/leadForms/{form id}`) names each question (`predefinedField` such as
//!   `EMAIL`, or the question's `name`); forms are read once and kept. The fetched response is
//!   journaled with a `questions` object (`{questionId: name}`) added next to LinkedIn's fields.
//! - **Test leads** carry `testLead: true`.

pub mod config;

pub use config::LinkedinConnector;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use tokio::sync::{Mutex, watch};


use crate::http_error::ApiError;
use crate::mapping::FieldMapping;
use crate::sources::connector::{Start, Started};
use crate::sources::inbox::fetch_task;
use crate::sources::pull::poll_task;
use crate::sources::push::{self, Push, Reply, Verdict, Webhook};
use crate::lead::{IntakeEvent, SourceKind, now_rfc3339};
use crate::mapping::ContactField;
use crate::sources::inbox::{Fetch, Inbox, Notice};
use crate::sources::pull::PullError;
use crate::sources::pull::{
    Limiter, PageSink, Poll, lag_since, limiter_for, next_window, retried, retry_after,
};
use crate::sources::webhook::SignatureError;

const SIGNATURE_HEADER: &str = "X-LI-Signature";

fn mac(secret: &str) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length")
}

/// The answer to `GET ?challengeCode=C`, or `None` when there is no challenge.
pub fn challenge(query: &HashMap<String, String>, client_secret: &str) -> Option<Value> {
    let code = query.get("challengeCode").filter(|c| !c.is_empty())?;
    let mut m = mac(client_secret);
    m.update(code.as_bytes());
    let response = hex::encode(m.finalize().into_bytes());
    Some(json!({"challengeCode": code, "challengeResponse": response}))
}

/// Checks `X-LI-Signature` in constant time.
pub fn verify(client_secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
    let name = || SIGNATURE_HEADER.to_owned();
    let given = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .ok_or_else(|| SignatureError::Missing(name()))?;
    let digest = hex::decode(given).map_err(|_| SignatureError::Malformed(name()))?;
    let mut m = mac(client_secret);
    m.update(b"hmacsha256=");
    m.update(body);
    m.verify_slice(&digest)
        .map_err(|_| SignatureError::Mismatch(name()))
}

/// The signature LinkedIn would send for `body` (for tests and client docs).
pub fn sign(client_secret: &str, body: &[u8]) -> String {
    let mut m = mac(client_secret);
    m.update(b"hmacsha256=");
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// The last part of a URN: `urn:li:leadGenFormResponse:abc` → `abc`.
fn urn_id(urn: &str) -> &str {
    urn.rsplit(':').next().unwrap_or(urn)
}

/// The created leads a notification body names (one notification, or an array of them).
pub fn notices(body: &Value) -> Vec<Notice> {
    let items: Vec<&Value> = match body {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    items
        .into_iter()
        .filter(|n| {
            n.get("type")
                .and_then(Value::as_str)
                .unwrap_or("LEAD_ACTION")
                == "LEAD_ACTION"
                && n.get("leadAction")
                    .and_then(Value::as_str)
                    .unwrap_or("CREATED")
                    == "CREATED"
        })
        .filter_map(|n| {
            let urn = n.get("leadGenFormResponse")?.as_str()?;
            let id = urn_id(urn);
            (!id.is_empty()).then(|| Notice {
                id: id.to_owned(),
                context: json!({
                    "leadGenFormResponse": urn,
                    "leadGenForm": n.get("leadGenForm"),
                    "owner": n.get("owner"),
                }),
            })
        })
        .collect()
}

/// The form id inside `urn:li:versionedLeadGenForm:(urn:li:leadGenForm:1234,3)` (or a plain
/// `urn:li:leadGenForm:1234`).
fn form_id(urn: &str) -> Option<&str> {
    let inner = urn.split_once('(').map_or(urn, |(_, rest)| rest);
    let form = inner.split(',').next()?.trim_end_matches(')');
    let id = urn_id(form);
    (!id.is_empty()).then_some(id)
}

/// `{questionId: name}` of a form: each question's `predefinedField`, or else its `name`.
fn question_names(form: &Value) -> Map<String, Value> {
    let questions = form
        .pointer("/content/questions")
        .or_else(|| form.get("questions"))
        .and_then(Value::as_array);
    questions
        .into_iter()
        .flatten()
        .filter_map(|q| {
            let id = match q.get("questionId")? {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => return None,
            };
            let name = q
                .get("predefinedField")
                .and_then(Value::as_str)
                .filter(|f| !f.is_empty() && *f != "NONE")
                .or_else(|| q.get("name").and_then(Value::as_str))?;
            Some((id, Value::String(name.to_owned())))
        })
        .collect()
}

/// The options of each multiple-choice question, `{questionId: {optionId: text}}`, from the form
/// (`questionDetails.multipleChoiceQuestionDetails.options[{id, text}]`, the text localized).
fn question_options(form: &Value) -> Map<String, Value> {
    let questions = form
        .pointer("/content/questions")
        .or_else(|| form.get("questions"))
        .and_then(Value::as_array);
    let localized = |t: &Value| -> Option<String> {
        match t {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o
                .get("localized")
                .and_then(Value::as_object)
                .and_then(|l| l.values().find_map(Value::as_str))
                .map(str::to_owned),
            _ => None,
        }
    };
    let mut out = Map::new();
    for q in questions.into_iter().flatten() {
        let Some(id) = q.get("questionId").and_then(crate::sources::id_text) else {
            continue;
        };
        let options = q
            .pointer("/questionDetails/multipleChoiceQuestionDetails/options")
            .and_then(Value::as_array);
        let texts: Map<String, Value> = options
            .into_iter()
            .flatten()
            .filter_map(|o| {
                let oid = o.get("id").and_then(crate::sources::id_text)?;
                Some((oid, Value::String(localized(o.get("text")?)?)))
            })
            .collect();
        if !texts.is_empty() {
            out.insert(id, Value::Object(texts));
        }
    }
    out
}

/// The text of one answer: a text answer, or the chosen options (their text where the form gave
/// it, else their ids).
fn answer_text(details: &Value, options_of: Option<&Map<String, Value>>) -> Option<String> {
    if let Some(text) = details
        .pointer("/textQuestionAnswer/answer")
        .and_then(Value::as_str)
    {
        return Some(text.to_owned());
    }
    let options = details
        .pointer("/multipleChoiceAnswer/options")?
        .as_array()?;
    let texts: Vec<String> = options
        .iter()
        .filter_map(crate::sources::id_text)
        .map(|id| {
            options_of
                .and_then(|o| o.get(&id))
                .and_then(Value::as_str)
                .map_or(id, str::to_owned)
        })
        .collect();
    (!texts.is_empty()).then(|| texts.join(", "))
}

/// The fields a response is mapped from: its top-level scalars (`id`, `submittedAt`,
/// `testLead`, ...), then each answer under its question's name (or its `questionId`).
/// `FIRST_NAME` and `LAST_NAME` make a `FULL_NAME`.
pub fn fields(response: &Value) -> Value {
    let Some(obj) = response.as_object() else {
        return response.clone();
    };
    let mut out = crate::sources::scalars(obj);
    let names = obj.get("questions").and_then(Value::as_object);
    let options = obj.get("question_options").and_then(Value::as_object);
    let answers = response
        .pointer("/formResponse/answers")
        .and_then(Value::as_array);
    let mut unnamed_email = None;
    for a in answers.into_iter().flatten() {
        let id = match a.get("questionId") {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.clone(),
            _ => continue,
        };
        let name = names
            .and_then(|n| n.get(&id))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let options_of = options.and_then(|o| o.get(&id)).and_then(Value::as_object);
        if let Some(text) = a
            .get("answerDetails")
            .and_then(|d| answer_text(d, options_of))
        {
            // A question whose form could not be read: an email address is still an email.
            if name.is_none() && unnamed_email.is_none() && crate::sources::forms::looks_like_email(&text) {
                unnamed_email = Some(text.clone());
            }
            out.insert(name.unwrap_or(id), Value::String(text));
        }
    }
    if let Some(email) = unnamed_email {
        out.entry("EMAIL").or_insert(Value::String(email));
    }
    crate::sources::join_name(&mut out, "FULL_NAME", "FIRST_NAME", "LAST_NAME");
    Value::Object(out)
}

/// The preset mapping of LinkedIn's predefined fields; the connector's own `mapping` first.
pub fn mapping_with_preset(mapping: &FieldMapping) -> FieldMapping {
    crate::sources::with_preset(
        mapping,
        &[
            (ContactField::Name, &["FULL_NAME"]),
            (ContactField::Phone, &["PHONE_NUMBER", "WORK_PHONE"]),
            (ContactField::Email, &["EMAIL", "WORK_EMAIL"]),
            (ContactField::Company, &["COMPANY_NAME"]),
            (ContactField::Title, &["JOB_TITLE"]),
            (ContactField::Industry, &["INDUSTRY"]),
            (ContactField::City, &["CITY"]),
            (ContactField::Province, &["STATE"]),
        ],
    )
}

/// What an HTTP answer of the Marketing API means.
fn classify(status: u16, retry_after: Option<Duration>, body: &Value) -> Result<(), PullError> {
    let message = || {
        let text = body.get("message").and_then(Value::as_str).unwrap_or("");
        match body.get("serviceErrorCode") {
            Some(code) => format!("{status}, serviceErrorCode {code}: {text}"),
            None => format!("{status}: {text}"),
        }
    };
    match status {
        200..=299 => Ok(()),
        429 => Err(PullError::Throttled {
            status,
            code: String::new(),
            retry_after,
        }),
        401 | 403 => Err(PullError::Expired(message())),
        404 => Err(PullError::Missing(message())),
        500..=599 => Err(PullError::Server(status)),
        _ => Err(PullError::Api(message())),
    }
}

/// The Marketing API, as one connector's token sees it.
/// A form's question names and multiple-choice options (see [`question_names`] and
/// [`question_options`]).
type Questions = (Map<String, Value>, Map<String, Value>);

struct Api {
    name: String,
    client: reqwest::Client,
    base: String,
    version: String,
    token: crate::sources::oauth::Token,
    limiter: Option<Limiter>,
    /// Question names by form id, read once.
    forms: Mutex<HashMap<String, Questions>>,
    statuses: crate::sources::status::Statuses,
}

impl Api {
    async fn get_once(&self, path: &str, token: &SecretString) -> Result<Value, PullError> {
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        let url = format!("{}/{path}", self.base.trim_end_matches('/'));
        let resp = self
            .client
            .get(&url)
            .bearer_auth(token.expose_secret())
            .header("LinkedIn-Version", &self.version)
            .header("X-Restli-Protocol-Version", "2.0.0")
            .send()
            .await
            .map_err(|e| PullError::Network(crate::sources::pull::http_error(e)))?;
        let status = resp.status().as_u16();
        let retry_after = retry_after(resp.headers());
        let text = resp
            .text()
            .await
            .map_err(|e| PullError::Network(crate::sources::pull::http_error(e)))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        classify(status, retry_after, &body)?;
        if body.is_object() {
            Ok(body)
        } else {
            Err(PullError::Shape(format!("{path}: not a JSON object")))
        }
    }

    async fn get(&self, path: &str) -> Result<Value, PullError> {
        self.token
            .with(|token| async move {
                let attempt = |()| self.get_once(path, &token);
                let (answer, ()) = retried(&self.name, (), attempt, |()| ()).await?;
                Ok(answer)
            })
            .await
    }

    /// The question names of the response's form, or why the form could not be read (the
    /// answers then keep their question ids; the next response of the form tries again).
    async fn questions(&self, response: &Value) -> Result<Questions, String> {
        let urn = response
            .get("versionedLeadGenFormUrn")
            .or_else(|| response.get("leadGenForm"))
            .and_then(Value::as_str);
        let Some(form) = urn.and_then(form_id) else {
            return Ok(Default::default());
        };
        // Held while the form is read, so the fetcher and the poll read it once between them.
        let mut forms = self.forms.lock().await;
        if let Some(known) = forms.get(form) {
            return Ok(known.clone());
        }
        match self.get(&format!("leadForms/{form}")).await {
            Ok(f) => {
                let questions = (question_names(&f), question_options(&f));
                forms.insert(form.to_owned(), questions.clone());
                Ok(questions)
            }
            Err(e) => {
                let why = format!(
                    "cannot read lead form {form} ({e}): its answers keep their question ids; check that the token may read the form (r_marketing_leadgen_automation) and that the form exists"
                );
                tracing::warn!(connector = %self.name, form, error = %e, "cannot read the form; answers keep their question ids");
                self.statuses.update(&self.name, |s| {
                    s.last_error = Some(why.clone());
                    s.last_error_at = Some(now_rfc3339());
                });
                Err(why)
            }
        }
    }
}

impl Api {
    /// The event of a form response read from the API, its form's questions added.
    async fn event(&self, mut response: Value, fallback_id: Option<&str>) -> IntakeEvent {
        let ((questions, options), unreadable) = match self.questions(&response).await {
            Ok(q) => (q, None),
            Err(why) => (Default::default(), Some(why)),
        };
        let id = response
            .get("id")
            .and_then(Value::as_str)
            .or(fallback_id)
            .map(str::to_owned);
        let test = response.get("testLead").and_then(Value::as_bool) == Some(true);
        if let Some(obj) = response.as_object_mut() {
            obj.insert("questions".into(), Value::Object(questions));
            if !options.is_empty() {
                obj.insert("question_options".into(), Value::Object(options));
            }
        }
        let mut e = IntakeEvent::new(&self.name, SourceKind::Platform, id, response);
        e.received_at = now_rfc3339();
        e.test = test;
        if let Some(why) = unreadable {
            e.issues.push(crate::lead::Issue::new(
                "questions",
                "source.form_unreadable",
                why,
            ));
        }
        e
    }
}

#[derive(Clone)]
struct ApiFetch(Arc<Api>);

impl Fetch for ApiFetch {
    fn wake(&self) -> Option<watch::Receiver<u64>> {
        self.0.token.subscribe()
    }

    async fn fetch(&self, notice: &Notice) -> Result<IntakeEvent, PullError> {
        let api = &self.0;
        let response = api.get(&format!("leadFormResponses/{}", notice.id)).await?;
        Ok(api.event(response, Some(&notice.id)).await)
    }
}

/// Where the reconciliation poll stands; the connector's checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollCheckpoint {
    /// The poll under way: responses submitted in `[start, end]` (unix ms), from `offset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<(i64, i64)>,
    #[serde(default)]
    pub offset: u64,
    /// Where the last complete poll's window ended (unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_until: Option<i64>,
}

/// The `owner` and `submittedAtTimeRange` of a poll request, in Rest.li 2.0 syntax (the URN's
/// reserved characters percent-encoded inside the parentheses).
fn poll_query(owner: &str, (start, end): (i64, i64), offset: u64, count: u32) -> String {
    let urn: String = form_urlencoded::byte_serialize(owner.as_bytes()).collect();
    let kind = owner
        .strip_prefix("urn:li:")
        .and_then(|rest| rest.split(':').next())
        .unwrap_or("sponsoredAccount");
    format!(
        "leadFormResponses?q=owner&owner=({kind}:{urn})&leadType=(leadType:SPONSORED)\
         &limitedToTestLeads=false&submittedAtTimeRange=(start:{start},end:{end})\
         &start={offset}&count={count}"
    )
}

struct Poller {
    api: Arc<Api>,
    owner: String,
    cfg: LinkedinConnector,
    sink: PageSink,
    checkpoint: PollCheckpoint,
}

impl Poll for Poller {
    fn wake(&self) -> Option<watch::Receiver<u64>> {
        self.api.token.subscribe()
    }

    async fn poll(&mut self, shutdown: &watch::Receiver<bool>) -> Result<(), PullError> {
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2);
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let window = self.checkpoint.window.unwrap_or_else(|| {
                let now = jiff::Timestamp::now().as_millisecond();
                let (overlap, initial) = (self.cfg.overlap, self.cfg.initial);
                next_window(
                    self.checkpoint.done_until,
                    now,
                    millis(overlap),
                    millis(initial),
                )
            });
            let offset = self.checkpoint.offset;
            let path = poll_query(&self.owner, window, offset, self.cfg.page_size);
            let page = self.api.get(&path).await?;
            let elements = match page.get("elements") {
                Some(Value::Array(a)) => a.clone(),
                None | Some(Value::Null) => Vec::new(),
                Some(_) => return Err(PullError::Shape("`elements` is not an array".into())),
            };
            let last = elements.len() < self.cfg.page_size as usize;
            let checkpoint = if last {
                PollCheckpoint {
                    done_until: Some(window.1),
                    ..PollCheckpoint::default()
                }
            } else {
                PollCheckpoint {
                    window: Some(window),
                    offset: offset + elements.len() as u64,
                    done_until: self.checkpoint.done_until,
                }
            };
            let read = elements.len() as u64;
            let mut events = Vec::with_capacity(elements.len());
            for response in elements {
                events.push(self.api.event(response, None).await);
            }
            let n = self.sink.send(events, &checkpoint).await?;
            let lag = lag_since(checkpoint.done_until.map(|ms| ms / 1000));
            self.sink.shown(&checkpoint, n, |s| {
                s.rows_read += read;
                s.lag_seconds = lag;
            });
            self.checkpoint = checkpoint;
            if last {
                return Ok(());
            }
        }
    }
}

/// Starts the connector: the fetcher of notified leads, the reconciliation poll (with `owner`),
/// and the webhook that fills the inbox.
pub(crate) fn start(cfg: &LinkedinConnector, cx: &Start<'_>) -> anyhow::Result<Started> {
    let sink = cx.sink(&cfg.name);
    let inbox = Arc::new(Inbox::open(&sink)?);
    let app = app(cfg).map(|a| Arc::new(a) as Arc<dyn crate::sources::oauth::Refresh>);
    let (token, refresh) = crate::sources::oauth::token(
        cx,
        &cfg.name,
        &cfg.access_token,
        cfg.refresh_token.as_ref(),
        app,
    )?;
    let api = Arc::new(Api {
        name: cfg.name.clone(),
        client: cx.client(Duration::from_secs(60))?,
        base: cfg.api_url.clone(),
        version: cfg.api_version.clone(),
        token,
        limiter: limiter_for(cfg.access_token.expose_secret(), cfg.rate_limit),
        forms: Mutex::new(HashMap::new()),
        statuses: cx.statuses.clone(),
    });
    let mut tasks = vec![fetch_task(&cfg.name, ApiFetch(api.clone()), &inbox)];
    tasks.extend(refresh);
    if let Some(owner) = &cfg.owner {
        let (own, owner, every) = (cfg.clone(), owner.clone(), cfg.poll_interval);
        tasks.push(poll_task(sink, every, move |checkpoint, sink| Poller {
            checkpoint,
            api: api.clone(),
            owner: owner.clone(),
            cfg: own.clone(),
            sink,
        }));
    }
    let webhook = Notifications {
        client_secret: cfg.client_secret.clone(),
        inbox,
    };
    Ok(Started {
        tasks,
        webhook: Some(Arc::new(webhook)),
    })
}

/// LinkedIn's OAuth 2.0 app: refresh (`grant_type=refresh_token`) and code exchange at
/// `oauth_url`, form-encoded, answered the standard way (`invalid_grant`: expired or revoked).
pub(crate) struct App {
    client_id: String,
    client_secret: SecretString,
    oauth_url: String,
    authorize_url: String,
    redirect_uri: Option<String>,
    scope: String,
}

/// The app of `cfg`, when it names its client id.
pub(crate) fn app(cfg: &LinkedinConnector) -> Option<App> {
    Some(App {
        client_id: cfg.client_id.clone()?,
        client_secret: cfg.client_secret.clone(),
        oauth_url: cfg.oauth_url.clone(),
        authorize_url: cfg.authorize_url.clone(),
        redirect_uri: cfg.redirect_uri.clone(),
        scope: cfg.scope.clone(),
    })
}

impl App {
    async fn token(
        &self,
        client: &reqwest::Client,
        grant: &[(&str, &str)],
    ) -> Result<crate::sources::oauth::Fresh, crate::sources::oauth::RefreshError> {
        let mut form = vec![
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose_secret()),
        ];
        form.extend_from_slice(grant);
        let request = client.post(&self.oauth_url).form(&form);
        let (status, answer) = crate::sources::oauth::send(request).await?;
        crate::sources::oauth::oauth2_answer(status, &answer)
    }
}

impl crate::sources::oauth::Refresh for App {
    fn refresh<'a>(
        &'a self,
        client: &'a reqwest::Client,
        refresh_token: &'a str,
    ) -> crate::sources::oauth::TokenFuture<'a> {
        let grant = [("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
        Box::pin(async move { self.token(client, &grant).await })
    }
}

impl crate::sources::oauth::Authorize for App {
    fn authorize_url(&self, state: &str) -> String {
        crate::sources::oauth::page_url(
            &self.authorize_url,
            "https://www.linkedin.com/oauth/v2/authorization",
            &[
                ("response_type", Some("code")),
                ("client_id", Some(&self.client_id)),
                ("redirect_uri", self.redirect_uri.as_deref()),
                ("state", Some(state)),
                ("scope", Some(&self.scope)),
            ],
        )
    }

    fn code_param(&self) -> &'static str {
        "code"
    }

    fn exchange<'a>(
        &'a self,
        client: &'a reqwest::Client,
        code: &'a str,
    ) -> crate::sources::oauth::TokenFuture<'a> {
        Box::pin(async move {
            let mut grant = vec![("grant_type", "authorization_code"), ("code", code)];
            if let Some(r) = &self.redirect_uri {
                grant.push(("redirect_uri", r.as_str()));
            }
            self.token(client, &grant).await
        })
    }
}

/// The lead notification URL: the `challengeCode` validation, then signed notifications (one,
/// or an array) whose lead ids go to the inbox.
struct Notifications {
    client_secret: SecretString,
    inbox: Arc<Inbox>,
}

impl Webhook for Notifications {
    fn handshake(
        &self,
        _: &str,
        query: &HashMap<String, String>,
    ) -> Result<axum::response::Response, ApiError> {
        use axum::response::IntoResponse;
        let reply = challenge(query, self.client_secret.expose_secret()).ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "handshake.refused",
                Some("challengeCode"),
                "the validation request has no `challengeCode`",
            )
        })?;
        Ok(axum::Json(reply).into_response())
    }

    fn authenticate(&self, request: &crate::sources::push::Request<'_>) -> Verdict {
        let (headers, body) = (request.headers, request.body);
        verify(self.client_secret.expose_secret(), headers, body).map_err(push::unauthorized)?;
        Ok(None)
    }

    fn receive<'a>(&'a self, push: Push<'a>) -> Reply<'a> {
        // LinkedIn may send an array of notifications, which the generic body parser refuses.
        Box::pin(async move {
            let body = push.json()?;
            push::notified(&self.inbox, push.connector, notices(&body)).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        crate::sources::fixture_json("linkedin", name)
    }

    #[test]
    fn the_challenge_is_answered_with_its_hmac() {
        let q = HashMap::from([(
            "challengeCode".to_owned(),
            "890e4665-4dfe-4ab1-b689-ed553bceeed0".to_owned(),
        )]);
        let reply = challenge(&q, "secret").unwrap();
        assert_eq!(
            reply["challengeCode"],
            "890e4665-4dfe-4ab1-b689-ed553bceeed0"
        );
        let mut m = mac("secret");
        m.update(b"890e4665-4dfe-4ab1-b689-ed553bceeed0");
        assert_eq!(
            reply["challengeResponse"],
            hex::encode(m.finalize().into_bytes())
        );
        assert_eq!(challenge(&HashMap::new(), "secret"), None);
    }

    #[test]
    fn the_signature_covers_the_prefixed_body() {
        let body = br#"{"type":"LEAD_ACTION"}"#;
        let mut headers = HeaderMap::new();
        headers.insert(SIGNATURE_HEADER, sign("s3", body).parse().unwrap());
        assert_eq!(verify("s3", &headers, body), Ok(()));
        assert_eq!(
            verify("other", &headers, body),
            Err(SignatureError::Mismatch(SIGNATURE_HEADER.into()))
        );
        // The body alone, without the prefix, is not LinkedIn's scheme.
        let plain = crate::sources::webhook::sign("s3", None, body);
        headers.insert(SIGNATURE_HEADER, plain.parse().unwrap());
        assert!(verify("s3", &headers, body).is_err());
        assert_eq!(
            verify("s3", &HeaderMap::new(), body),
            Err(SignatureError::Missing(SIGNATURE_HEADER.into()))
        );
    }

    #[test]
    fn created_leads_are_noticed_and_deletions_ignored() {
        let n = notices(&fixture("notification.json"));
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].id, "5c5d6c2e-0f3c-4f9b-b0a5-4f1c0e8f7a11");
        let deleted = json!({"type": "LEAD_ACTION", "leadAction": "DELETED",
            "leadGenFormResponse": "urn:li:leadGenFormResponse:x"});
        assert!(notices(&deleted).is_empty());
        let both = json!([fixture("notification.json"), deleted]);
        assert_eq!(notices(&both).len(), 1, "an array of notifications");
    }

    #[test]
    fn choice_answers_become_their_options_text() {
        let form = json!({"content": {"questions": [{"questionId": 7, "name": "size",
            "questionDetails": {"multipleChoiceQuestionDetails": {"options": [
                {"id": 1, "text": {"localized": {"zh_CN": "1-50 人"}}},
                {"id": 2, "text": {"localized": {"en_US": "51-200"}}}]}}}]}});
        let mut response = json!({"id": "r", "formResponse": {"answers": [
            {"questionId": 7, "answerDetails": {"multipleChoiceAnswer": {"options": [1, 2, 9]}}}]}});
        response["questions"] = Value::Object(question_names(&form));
        response["question_options"] = Value::Object(question_options(&form));
        assert_eq!(fields(&response)["size"], "1-50 人, 51-200, 9");
    }

    #[test]
    fn answers_take_their_questions_names() {
        let mut response = fixture("lead-response.json");
        let names = question_names(&fixture("lead-form.json"));
        assert_eq!(names["1"], "FIRST_NAME");
        assert_eq!(names["5"], "预算", "a custom question keeps its name");
        response["questions"] = Value::Object(names);
        let f = fields(&response);
        assert_eq!(f["FULL_NAME"], "Lei Li");
        assert_eq!(f["EMAIL"], "lei.li@example.com");
        assert_eq!(f["PHONE_NUMBER"], "+86 139 1234 5678");
        assert_eq!(f["预算"], "100万以上");
        assert_eq!(f["testLead"], false);
        let unnamed = fields(&fixture("lead-response.json"));
        assert_eq!(
            unnamed["3"], "lei.li@example.com",
            "without the form: question ids"
        );
    }

    #[test]
    fn poll_requests_are_written_in_restli_syntax() {
        assert_eq!(
            poll_query("urn:li:sponsoredAccount:507404993", (1, 2), 200, 100),
            "leadFormResponses?q=owner&owner=(sponsoredAccount:urn%3Ali%3AsponsoredAccount%3A507404993)\
             &leadType=(leadType:SPONSORED)&limitedToTestLeads=false\
             &submittedAtTimeRange=(start:1,end:2)&start=200&count=100"
        );
    }

    #[test]
    fn form_ids_come_out_of_versioned_urns() {
        assert_eq!(
            form_id("urn:li:versionedLeadGenForm:(urn:li:leadGenForm:1234,3)"),
            Some("1234")
        );
        assert_eq!(form_id("urn:li:leadGenForm:77"), Some("77"));
    }

    #[test]
    fn errors_are_classified() {
        let body = json!({"serviceErrorCode": 65601, "message": "The token used in the request has been revoked by the user", "status": 401});
        let e = classify(401, None, &body).unwrap_err();
        assert!(matches!(e, PullError::Expired(_)));
        assert!(e.to_string().contains("65601"), "{e}");
        assert!(matches!(
            classify(429, Some(Duration::from_secs(2)), &Value::Null),
            Err(PullError::Throttled {
                retry_after: Some(_),
                ..
            })
        ));
        assert!(matches!(
            classify(404, None, &Value::Null),
            Err(PullError::Missing(_))
        ));
        assert!(matches!(
            classify(503, None, &Value::Null),
            Err(PullError::Server(503))
        ));
    }
}
