//! Platform credentials that stay alive: OAuth access tokens refreshed ahead of their expiry (at
//! 80% of their lifetime) and at once when the platform says one expired, with refresh tokens
//! that rotate on every refresh (巨量引擎, 腾讯广告: the old pair stops working).
//!
//! **Rotated tokens are on disk before they are used.** A refresh's answer is written to the
//! connector's token file (`<data_dir>/tokens/<connector>.json`, the gateway's user only), synced
//! and renamed into place, and only then does the connector send the new access token. A crash
//! after the platform answered and before the file is synced loses the new pair: that window is
//! the time of one file write and two fsyncs, and it is the only one (see `docs/connectors.md`,
//! "OAuth").
//!
//! A connector whose refresh is refused (the refresh token expired or was revoked) stops alone,
//! and its health says to re-authorize; a token file written by `leadgate auth` (or any newer
//! one) is picked up without a restart.

pub mod store;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;

use crate::sources::pull::PullError;
use crate::sources::status::Statuses;
use crate::sources::supervise::Task;

pub use store::{TokenSet, TokenStore};

/// A refresh's answer.
#[derive(Debug)]
pub struct Fresh {
    pub access_token: SecretString,
    /// The new refresh token, where the platform rotates it.
    pub refresh_token: Option<SecretString>,
    pub access_expires_in: Option<u64>,
    pub refresh_expires_in: Option<u64>,
}

/// Why a refresh did not give tokens.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The platform refused the refresh token (expired, revoked, already used): a person must
    /// authorize again.
    #[error("the platform refused the refresh token: {0}")]
    Refused(String),
    /// Anything retrying can fix (network, throttling, a server error).
    #[error("{0}")]
    Failed(String),
}

/// A token request under way: the platform's answer, read.
pub type TokenFuture<'a> = BoxFuture<'a, Result<Fresh, RefreshError>>;

/// A platform's refresh call.
pub trait Refresh: Send + Sync {
    fn refresh<'a>(
        &'a self,
        client: &'a reqwest::Client,
        refresh_token: &'a str,
    ) -> TokenFuture<'a>;
}

/// A platform's authorization: the page a person grants access on, and the exchange of the code
/// it redirects back with (`leadgate auth <connector>`).
pub trait Authorize: Send + Sync {
    /// The page to open, carrying `state` (echoed back in the redirect).
    fn authorize_url(&self, state: &str) -> String;
    /// The redirect's parameter holding the code (`auth_code`, `authorization_code`).
    fn code_param(&self) -> &'static str;
    fn exchange<'a>(&'a self, client: &'a reqwest::Client, code: &'a str) -> TokenFuture<'a>;
    /// Exchanges a token a person already has for a lasting one (Meta: a short-lived user token
    /// for a long-lived one, or the page's); `None` where the platform has no such exchange.
    fn exchange_token<'a>(
        &'a self,
        _client: &'a reqwest::Client,
        _token: &'a str,
    ) -> Option<TokenFuture<'a>> {
        None
    }
}

/// How a platform lays out its token answers (`{code, message, data: {access_token, ...}}`).
pub struct TokenAnswer {
    /// The keys of the tokens in `data` (`access_token`, `refresh_token`; 百度: `accessToken`).
    pub keys: (&'static str, &'static str),
    /// The keys of their lifetimes in `data` (seconds).
    pub expires: (&'static str, &'static str),
    /// Where the error text is, first found wins.
    pub messages: &'static [&'static str],
    /// Codes that mean "try again later" (throttling).
    pub retry_codes: &'static [i64],
    /// Codes from this one up are server errors, retried.
    pub retry_from: Option<i64>,
}

/// What a token answer (a refresh's or a code exchange's) means: tokens (code 0), a retry (HTTP
/// 429 or 5xx, a retry code), or a refusal (any other code: the refresh token or the code is
/// expired, used or revoked).
pub fn token_answer(
    status: u16,
    answer: &serde_json::Value,
    shape: &TokenAnswer,
) -> Result<Fresh, RefreshError> {
    use serde_json::Value;
    if status == 429 || status >= 500 {
        return Err(RefreshError::Failed(format!("HTTP {status}")));
    }
    let message = shape
        .messages
        .iter()
        .find_map(|k| answer.get(*k).and_then(Value::as_str))
        .unwrap_or_default();
    match answer.get("code").and_then(Value::as_i64) {
        Some(0) => {
            let data = answer.get("data").unwrap_or(&Value::Null);
            let text = |k: &str| {
                data.get(k)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            };
            let access = text(shape.keys.0).ok_or_else(|| {
                RefreshError::Failed(format!("the answer has no {}", shape.keys.0))
            })?;
            Ok(Fresh {
                access_token: access.to_owned().into(),
                refresh_token: text(shape.keys.1).map(|r| r.to_owned().into()),
                access_expires_in: data.get(shape.expires.0).and_then(Value::as_u64),
                refresh_expires_in: data.get(shape.expires.1).and_then(Value::as_u64),
            })
        }
        Some(c) if shape.retry_codes.contains(&c) || shape.retry_from.is_some_and(|f| c >= f) => {
            Err(RefreshError::Failed(format!("code {c}: {message}")))
        }
        Some(c) => Err(RefreshError::Refused(format!("code {c}: {message}"))),
        None => Err(RefreshError::Failed(format!(
            "HTTP {status}, no code in the answer"
        ))),
    }
}

/// What a standard OAuth 2.0 token answer (RFC 6749 §5: `{access_token, expires_in,
/// refresh_token, refresh_token_expires_in}`, or `{error, error_description}`) means: tokens, a
/// retry (HTTP 429 or 5xx, `temporarily_unavailable`, `server_error`), or a refusal
/// (`invalid_grant`: the refresh token or the code expired or was revoked; `invalid_client` and
/// the rest: the app's settings are wrong, which a person must fix too).
pub fn oauth2_answer(status: u16, answer: &serde_json::Value) -> Result<Fresh, RefreshError> {
    use serde_json::Value;
    if status == 429 || status >= 500 {
        return Err(RefreshError::Failed(format!("HTTP {status}")));
    }
    let text = |k: &str| {
        answer
            .get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(error) = text("error") {
        let why = format!(
            "HTTP {status}, {error}: {}",
            text("error_description").unwrap_or_default()
        );
        return Err(match error {
            "temporarily_unavailable" | "server_error" => RefreshError::Failed(why),
            _ => RefreshError::Refused(why),
        });
    }
    match text("access_token") {
        Some(access) if (200..300).contains(&status) => Ok(Fresh {
            access_token: access.to_owned().into(),
            refresh_token: text("refresh_token").map(|r| r.to_owned().into()),
            access_expires_in: answer.get("expires_in").and_then(Value::as_u64),
            refresh_expires_in: answer
                .get("refresh_token_expires_in")
                .and_then(Value::as_u64),
        }),
        _ if (400..500).contains(&status) => Err(RefreshError::Refused(format!(
            "HTTP {status} without an error code"
        ))),
        _ => Err(RefreshError::Failed(format!(
            "HTTP {status}, the answer has no access_token"
        ))),
    }
}

/// Sends a token request: its HTTP status and its JSON answer (`null` when it is not
/// JSON), or why it could not be sent (without the request's query, which carries secrets).
pub async fn send(
    request: reqwest::RequestBuilder,
) -> Result<(u16, serde_json::Value), RefreshError> {
    let resp = request.send().await.map_err(|e| {
        RefreshError::Failed(format!(
            "cannot reach the token endpoint: {}",
            crate::sources::pull::http_error(e)
        ))
    })?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(serde_json::Value::Null)))
}

/// `base` (or `fallback`, when `base` is not a URL) with `pairs` added to its query.
pub fn page_url(base: &str, fallback: &str, pairs: &[(&str, Option<&str>)]) -> String {
    let mut url = reqwest::Url::parse(base)
        .or_else(|_| reqwest::Url::parse(fallback))
        .expect("a valid fallback URL");
    for (k, v) in pairs {
        if let Some(v) = v {
            url.query_pairs_mut().append_pair(k, v);
        }
    }
    url.into()
}

/// The code in what a person pasted: the code itself, or the whole redirect URL.
pub fn code_of(pasted: &str, param: &str) -> Option<String> {
    let pasted = pasted.trim();
    if pasted.is_empty() {
        return None;
    }
    let Some((_, query)) = pasted.split_once('?') else {
        return Some(pasted.to_owned());
    };
    let fields = crate::sources::webhook::parse_query(query.split('#').next().unwrap_or(query))?;
    [param, "code", "auth_code", "authorization_code"]
        .iter()
        .find_map(|k| fields.get(*k).and_then(serde_json::Value::as_str))
        .map(str::to_owned)
}

/// Exchanges `code` and writes the tokens to `store` as a new generation (marked as written by
/// `leadgate auth`, so they win over the settings' tokens); a running gateway adopts them within
/// 2 seconds.
pub async fn authorize(
    store: &TokenStore,
    flow: &dyn Authorize,
    client: &reqwest::Client,
    code: &str,
) -> Result<TokenSet, String> {
    let fresh = flow
        .exchange(client, code)
        .await
        .map_err(|e| format!("the platform did not exchange the code: {e}"))?;
    keep(store, fresh)
}

/// Exchanges `token` (a short-lived token a person has, see [`Authorize::exchange_token`]) and
/// writes the result to `store` as a new generation, as [`authorize`] does.
pub async fn authorize_token(
    store: &TokenStore,
    flow: &dyn Authorize,
    client: &reqwest::Client,
    token: &str,
) -> Result<TokenSet, String> {
    let exchange = flow
        .exchange_token(client, token)
        .ok_or("this platform takes an authorization code, not a token: leave out --token")?;
    let fresh = exchange
        .await
        .map_err(|e| format!("the platform did not exchange the token: {e}"))?;
    keep(store, fresh)
}

/// Writes `fresh` to `store` as the next generation, marked as written by `leadgate auth`.
fn keep(store: &TokenStore, fresh: Fresh) -> Result<TokenSet, String> {
    let previous = store.load().map_err(|e| e.to_string())?;
    let generation = previous.as_ref().map_or(0, |p| p.generation);
    let base = TokenSet {
        access_token: fresh.access_token.clone(),
        refresh_token: None,
        access_expires_at: None,
        refresh_expires_at: None,
        refreshed_at: None,
        generation,
        seed: None,
    };
    let set = base.next(fresh, now());
    store
        .save(&set)
        .map_err(|e| format!("cannot write {}: {e}", store.path().display()))?;
    Ok(set)
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// One connector's live credentials: the token set in use, shared by its tasks, and the signal
/// that a request found the access token expired.
#[derive(Clone)]
pub struct Credentials {
    inner: Arc<Inner>,
}

struct Inner {
    connector: String,
    store: TokenStore,
    current: Mutex<TokenSet>,
    /// The generation in use, watched by requests waiting for a fresh token.
    generation: watch::Sender<u64>,
    /// Raised with the generation a request found expired.
    expired: watch::Sender<Option<u64>>,
    /// Set while the refresh token is refused (until new tokens arrive).
    refused: Mutex<Option<String>>,
    /// The fingerprint of the settings' tokens the token sets descend from.
    seed: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("connector", &self.inner.connector)
            .field("generation", &*self.inner.generation.borrow())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The connector's credentials: its token file if there is one descending from the same
    /// configured tokens (the refresh token, or the access token without one), or written by
    /// `leadgate auth` (then marked as descending from them); else the configured tokens,
    /// written to the file at once. A new token in the settings starts over from it.
    pub fn open(
        connector: &str,
        store: TokenStore,
        access_token: &SecretString,
        refresh_token: Option<&SecretString>,
    ) -> std::io::Result<Self> {
        let seed = Some(store::fingerprint(
            refresh_token.unwrap_or(access_token).expose_secret(),
        ));
        let set = match store.load()? {
            Some(saved) if saved.seed == seed => saved,
            Some(mut saved) if saved.seed.is_none() => {
                saved.seed = seed.clone();
                store.save(&saved)?;
                saved
            }
            _ => {
                let set = TokenSet::configured(access_token, refresh_token, seed.clone());
                store.save(&set)?;
                set
            }
        };
        let (generation, _) = watch::channel(set.generation);
        let (expired, _) = watch::channel(None);
        Ok(Self {
            inner: Arc::new(Inner {
                connector: connector.to_owned(),
                store,
                current: Mutex::new(set),
                generation,
                expired,
                refused: Mutex::new(None),
                seed,
            }),
        })
    }

    fn current(&self) -> std::sync::MutexGuard<'_, TokenSet> {
        self.inner
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes with each new token set (a refresh, a file from `leadgate auth`).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// The access token to send, and its generation (to report it expired).
    pub fn access_token(&self) -> (SecretString, u64) {
        let c = self.current();
        (c.access_token.clone(), c.generation)
    }

    /// A request found the token of `generation` expired: refresh now, and wait (up to
    /// `within`) for a newer one. `Err` with the reason when none comes (the refresh token was
    /// refused, or the refresh keeps failing): the caller must not send the old token again.
    pub async fn renew(&self, generation: u64, within: Duration) -> Result<(), String> {
        let mut rx = self.inner.generation.subscribe();
        if *rx.borrow() > generation {
            return Ok(());
        }
        if let Some(why) = self.refused() {
            return Err(why);
        }
        self.inner.expired.send_replace(Some(generation));
        // Woken by a new token, or by the refresh task giving up (it signals the same channel).
        // Either way (a newer token, a refusal, the time up), the generation says which.
        let _ = tokio::time::timeout(
            within,
            rx.wait_for(|g| *g > generation || self.refused().is_some()),
        )
        .await;
        if *self.inner.generation.borrow() > generation {
            return Ok(());
        }
        Err(self
            .refused()
            .unwrap_or_else(|| "the access token expired and no new one came".into()))
    }

    /// Why the refresh token is refused, while it is.
    pub fn refused(&self) -> Option<String> {
        self.inner
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Adopts `set` (written to the file already): requests use it from now on.
    fn adopt(&self, mut set: TokenSet, statuses: &Statuses) {
        // From `leadgate auth`: it descends from the settings in force (saved so by the next
        // refresh or start).
        set.seed = set.seed.or_else(|| self.inner.seed.clone());
        let generation = set.generation;
        health(statuses, &self.inner.connector, &set, None);
        *self.current() = set;
        *self
            .inner
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        self.inner.generation.send_replace(generation);
    }

    /// When the access token should be refreshed: at 80% of its lifetime; now when its expiry is
    /// unknown (tokens from the environment), so the first refresh learns it.
    fn due(&self) -> i64 {
        let c = self.current();
        if c.refresh_token.is_none() {
            // Nothing to refresh with: only a request finding the token expired stops it.
            return i64::MAX;
        }
        match (c.access_expires_at, c.refreshed_at) {
            (Some(exp), Some(at)) => at + (exp - at) * 4 / 5,
            (Some(exp), None) => exp - 60,
            _ => now(),
        }
    }

    /// One refresh: the platform's answer is written to the token file before it is adopted.
    async fn refresh_once(
        &self,
        platform: &dyn Refresh,
        client: &reqwest::Client,
        statuses: &Statuses,
    ) -> Result<(), RefreshError> {
        if !crate::coord::may_use(&self.inner.connector) {
            return Err(RefreshError::Failed(
                "this gateway no longer holds the connector's lease".into(),
            ));
        }
        let old = self.current().clone();
        let Some(refresh_token) = old.refresh_token.clone() else {
            return Err(RefreshError::Refused(
                "the access token expired or was revoked, and there is no refresh token".into(),
            ));
        };
        let fresh = platform
            .refresh(client, refresh_token.expose_secret())
            .await?;
        let set = old.next(fresh, now());
        // Durable first: the old pair may already be dead.
        self.inner
            .store
            .save_refreshed(&set)
            .map_err(|e| RefreshError::Failed(format!("cannot store the new tokens: {e}")))?;
        self.adopt(set, statuses);
        Ok(())
    }
}

/// Runs `attempt` with the access token in use; when the platform says it expired, waits for a
/// new one (the refresh task gets it) and runs it again with that, up to three times (a new
/// token can itself expire before it is used on a stalled host): an expired token is never sent
/// twice in a row.
pub async fn with_token<T, F, Fut>(credentials: &Credentials, attempt: F) -> Result<T, PullError>
where
    F: Fn(SecretString) -> Fut,
    Fut: std::future::Future<Output = Result<T, PullError>>,
{
    let mut tries = 0;
    loop {
        let (token, generation) = credentials.access_token();
        match attempt(token).await {
            Err(PullError::Expired(why)) if tries < 3 => {
                tries += 1;
                credentials
                    .renew(generation, Duration::from_secs(60))
                    .await
                    .map_err(|e| PullError::Expired(format!("{why}; {e}")))?;
            }
            other => return other,
        }
    }
}

/// The access token a connector sends: fixed (from the settings, nothing refreshes it) or live
/// (refreshed, or renewed by `leadgate auth`).
#[derive(Clone)]
pub enum Token {
    Fixed(SecretString),
    Live(Credentials),
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fixed(_) => f.write_str("Token::Fixed(..)"),
            Self::Live(c) => write!(f, "Token::Live({c:?})"),
        }
    }
}

impl Token {
    /// The token to send now.
    pub fn current(&self) -> SecretString {
        match self {
            Self::Fixed(t) => t.clone(),
            Self::Live(c) => c.access_token().0,
        }
    }

    /// Runs `attempt` with the token; a live token is renewed when the platform says it expired
    /// (see [`with_token`]), a fixed one is not.
    pub async fn with<T, F, Fut>(&self, attempt: F) -> Result<T, PullError>
    where
        F: Fn(SecretString) -> Fut,
        Fut: std::future::Future<Output = Result<T, PullError>>,
    {
        match self {
            Self::Fixed(t) => attempt(t.clone()).await,
            Self::Live(c) => with_token(c, attempt).await,
        }
    }

    /// Changes with each new live token (`None` for a fixed one).
    pub fn subscribe(&self) -> Option<watch::Receiver<u64>> {
        match self {
            Self::Fixed(_) => None,
            Self::Live(c) => Some(c.subscribe()),
        }
    }
}

/// A connector's token: live (its token file and the task that keeps it alive) when `app` is
/// set (the platform's refresh and authorization), else the settings' token as it is.
pub fn token(
    cx: &crate::sources::connector::Start<'_>,
    connector: &str,
    access_token: &SecretString,
    refresh_token: Option<&SecretString>,
    app: Option<Arc<dyn Refresh>>,
) -> anyhow::Result<(Token, Option<Task>)> {
    let Some(app) = app else {
        return Ok((Token::Fixed(access_token.clone()), None));
    };
    let (credentials, task) = start(cx, connector, access_token, refresh_token, app)?;
    Ok((Token::Live(credentials), Some(task)))
}

/// Puts a token set's expiries and refresh outcome in the connector's health.
fn health(statuses: &Statuses, connector: &str, set: &TokenSet, error: Option<&str>) {
    let iso = |t: Option<i64>| {
        t.and_then(|s| jiff::Timestamp::from_second(s).ok())
            .map(crate::lead::rfc3339_millis)
    };
    statuses.update(connector, |s| {
        let token = s.token.get_or_insert_with(Default::default);
        token.expires_at = iso(set.access_expires_at);
        token.refresh_expires_at = iso(set.refresh_expires_at);
        token.last_refresh_at = iso(set.refreshed_at);
        let soon = |at: Option<i64>| at.is_some_and(|e| e - now() < 7 * 24 * 3600);
        token.refresh_expiring_soon = soon(set.refresh_expires_at);
        if set.refresh_token.is_none() {
            // No refresh: the access token's own end is when a person must act.
            token.expiring_soon = soon(set.access_expires_at);
        }
        token.last_refresh_error = error.map(str::to_owned);
        if error.is_none() {
            token.refused = None;
        }
    });
}

/// The task that keeps `credentials` alive: refreshes when due or when a request found the token
/// expired, retries failures with backoff (1 s doubling to 5 min), stops the connector on a
/// refused refresh token until new tokens arrive, and picks up a token file written elsewhere
/// (`leadgate auth`), checking it every 2 seconds: while it backs off too, so a person who
/// re-authorizes a connector whose refreshes keep failing does not wait out the backoff.
pub fn refresh_task(
    credentials: Credentials,
    platform: Arc<dyn Refresh>,
    client: reqwest::Client,
    statuses: Statuses,
) -> Task {
    let name = credentials.inner.connector.clone();
    Task::new(&name.clone(), "token refresh", move |mut shutdown| {
        let (credentials, platform, client, statuses, name) = (
            credentials.clone(),
            platform.clone(),
            client.clone(),
            statuses.clone(),
            name.clone(),
        );
        async move {
            health(&statuses, &name, &credentials.current().clone(), None);
            let mut expired = credentials.inner.expired.subscribe();
            let mut backoff = Duration::from_secs(1);
            // After a failed refresh, no new attempt before this.
            let mut retry_at: Option<tokio::time::Instant> = None;
            // A request found the token in use expired (kept through a backoff).
            let mut expiry_reported = false;
            // Nothing seen yet: the first round reads the stored tokens, which another gateway
            // may have refreshed since this one started (a lease taken over).
            let mut seen = None;
            loop {
                if *shutdown.borrow() {
                    return;
                }
                // A newer file (another gateway's refresh, `leadgate auth`) wins. It is read
                // only when it changed.
                let modified = credentials.inner.store.modified();
                if modified != seen
                    && let Ok(Some(saved)) =
                        credentials.inner.store.load().inspect(|_| seen = modified)
                    && saved.generation > credentials.current().generation
                {
                    tracing::info!(connector = %name, "new tokens from the token file");
                    credentials.adopt(saved, &statuses);
                    statuses.success(&name, crate::sources::status::State::Following);
                    (backoff, retry_at, expiry_reported) = (Duration::from_secs(1), None, false);
                }
                let generation = credentials.current().generation;
                expiry_reported |= *expired.borrow_and_update() == Some(generation);
                let due = expiry_reported || credentials.due() <= now();
                let backing_off = retry_at.is_some_and(|t| tokio::time::Instant::now() < t);
                if due && credentials.refused().is_none() && !backing_off {
                    match credentials
                        .refresh_once(platform.as_ref(), &client, &statuses)
                        .await
                    {
                        Ok(()) => {
                            tracing::info!(connector = %name, "access token refreshed");
                            (backoff, retry_at, expiry_reported) =
                                (Duration::from_secs(1), None, false);
                            continue;
                        }
                        Err(RefreshError::Refused(why)) => {
                            let message = format!(
                                "{why}; re-authorize with `leadgate auth {name}` (the gateway picks the new tokens up without a restart)"
                            );
                            tracing::error!(connector = %name, "{message}");
                            *credentials
                                .inner
                                .refused
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                                Some(message.clone());
                            health(
                                &statuses,
                                &name,
                                &credentials.current().clone(),
                                Some(&message),
                            );
                            statuses.update(&name, |s| {
                                if let Some(t) = s.token.as_mut() {
                                    t.refused = Some(message.clone());
                                }
                            });
                            statuses.failure(&name, &message, true);
                            // Waiting requests learn it now.
                            credentials.inner.generation.send_replace(generation);
                        }
                        Err(RefreshError::Failed(why)) => {
                            let message = format!("cannot refresh the access token: {why}");
                            tracing::warn!(connector = %name, "{message}; retrying in {backoff:?}");
                            health(
                                &statuses,
                                &name,
                                &credentials.current().clone(),
                                Some(&message),
                            );
                            retry_at = Some(tokio::time::Instant::now() + backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(300));
                        }
                    }
                }
                // The file is checked every 2 seconds at most; the next attempt (due, or the
                // backoff over) may come sooner.
                let until_retry = retry_at.map_or(Duration::from_secs(2), |t| {
                    t.saturating_duration_since(tokio::time::Instant::now())
                });
                let wait = Duration::from_secs(
                    u64::try_from(credentials.due() - now())
                        .unwrap_or(0)
                        .clamp(1, 2),
                )
                .min(until_retry.max(Duration::from_millis(100)));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = expired.changed() => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    })
}

/// Starts a connector's refreshed credentials: its token file opened (or seeded from the
/// settings' tokens) and the task that keeps them alive.
fn start(
    cx: &crate::sources::connector::Start<'_>,
    connector: &str,
    access_token: &SecretString,
    refresh_token: Option<&SecretString>,
    platform: Arc<dyn Refresh>,
) -> anyhow::Result<(Credentials, Task)> {
    let credentials = Credentials::open(
        connector,
        store_of(cx.data_dir, connector),
        access_token,
        refresh_token,
    )?;
    let task = refresh_task(
        credentials.clone(),
        platform,
        cx.client(Duration::from_secs(30))?,
        cx.statuses.clone(),
    );
    Ok((credentials, task))
}

/// The token file of `connector` in `data_dir`.
pub fn store_of(data_dir: &std::path::Path, connector: &str) -> TokenStore {
    TokenStore::for_connector(
        data_dir.join("tokens").join(format!("{connector}.json")),
        connector,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_comes_out_of_what_was_pasted() {
        assert_eq!(
            code_of(" abc123 \n", "auth_code").as_deref(),
            Some("abc123")
        );
        assert_eq!(
            code_of(
                "https://crm.example.cn/cb?state=x&auth_code=abc%2B1#top",
                "auth_code"
            )
            .as_deref(),
            Some("abc+1")
        );
        assert_eq!(
            code_of(
                "https://crm.example.cn/cb?authorization_code=zz&state=x",
                "authorization_code"
            )
            .as_deref(),
            Some("zz")
        );
        assert_eq!(
            code_of("https://crm.example.cn/cb?state=x", "auth_code"),
            None
        );
        assert_eq!(code_of("   ", "auth_code"), None);
    }

    #[test]
    fn standard_oauth2_answers_are_tokens_retries_or_refusals() {
        use serde_json::json;
        let ok = oauth2_answer(
            200,
            &json!({"access_token": "AQV", "expires_in": 5_184_000, "refresh_token": "AQX",
                "refresh_token_expires_in": 26_438_400, "scope": "r_marketing_leadgen_automation"}),
        )
        .unwrap();
        assert_eq!(ok.access_token.expose_secret(), "AQV");
        assert_eq!(ok.refresh_expires_in, Some(26_438_400));
        let revoked = json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."});
        assert!(matches!(
            oauth2_answer(400, &revoked),
            Err(RefreshError::Refused(m)) if m.contains("invalid_grant") && m.contains("revoked")
        ));
        assert!(matches!(
            oauth2_answer(503, &json!({"error": "temporarily_unavailable"})),
            Err(RefreshError::Failed(_))
        ));
        assert!(matches!(
            oauth2_answer(200, &json!({"error": "server_error"})),
            Err(RefreshError::Failed(_))
        ));
        assert!(matches!(
            oauth2_answer(401, &serde_json::Value::Null),
            Err(RefreshError::Refused(_))
        ));
        assert!(matches!(
            oauth2_answer(200, &json!({"access_token": ""})),
            Err(RefreshError::Failed(_))
        ));
    }

    #[test]
    fn without_a_refresh_token_nothing_is_refreshed_and_the_settings_token_is_the_seed() {
        let dir = tempfile::tempdir().unwrap();
        let store = || store_of(dir.path(), "li");
        let c = Credentials::open("li", store(), &"t0".into(), None).unwrap();
        assert_eq!(c.due(), i64::MAX, "nothing to refresh with");
        // `leadgate auth` wrote a new token (no seed): it wins, and is marked as descending
        // from the settings in force.
        let mut authorized = store().load().unwrap().unwrap().next(
            Fresh {
                access_token: "t1".into(),
                refresh_token: None,
                access_expires_in: Some(5_184_000),
                refresh_expires_in: None,
            },
            now(),
        );
        authorized.seed = None;
        store().save(&authorized).unwrap();
        let c = Credentials::open("li", store(), &"t0".into(), None).unwrap();
        assert_eq!(c.access_token().0.expose_secret(), "t1");
        assert_eq!(
            store().load().unwrap().unwrap().seed,
            Some(store::fingerprint("t0"))
        );
        // A new token in the settings starts over from it.
        let c = Credentials::open("li", store(), &"t2".into(), None).unwrap();
        assert_eq!(c.access_token().0.expose_secret(), "t2");
    }

    #[test]
    fn the_token_file_wins_until_the_settings_name_another_refresh_token() {
        let dir = tempfile::tempdir().unwrap();
        let store = || store_of(dir.path(), "oe");
        let open = |access: &str, refresh: &str| {
            Credentials::open("oe", store(), &access.into(), Some(&refresh.into())).unwrap()
        };
        // First start: the settings' tokens, written to the file at once.
        let c = open("a0", "r0");
        assert_eq!(c.access_token().0.expose_secret(), "a0");
        assert_eq!(store().load().unwrap().unwrap().generation, 1);
        // A refresh rotated them; the settings still name r0: the file wins.
        let set = store().load().unwrap().unwrap().next(
            Fresh {
                access_token: "a1".into(),
                refresh_token: Some("r1".into()),
                access_expires_in: Some(100),
                refresh_expires_in: Some(1000),
            },
            now(),
        );
        store().save(&set).unwrap();
        let c = open("a0", "r0");
        assert_eq!(c.access_token().1, 2);
        assert_eq!(c.access_token().0.expose_secret(), "a1");
        assert!(c.due() > now(), "not due before 80% of its lifetime");
        // A new authorization in the settings starts over from it.
        let c = open("b0", "s0");
        assert_eq!(c.access_token().0.expose_secret(), "b0");
        assert!(
            c.due() <= now(),
            "its expiry is unknown: refresh to learn it"
        );
    }

    /// A platform whose refreshes all fail with an error retrying could fix.
    struct Down(Arc<Mutex<u32>>);

    impl Refresh for Down {
        fn refresh<'a>(&'a self, _: &'a reqwest::Client, _: &'a str) -> TokenFuture<'a> {
            *self.0.lock().unwrap() += 1;
            Box::pin(async { Err(RefreshError::Failed("HTTP 503".into())) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_from_leadgate_auth_are_adopted_within_seconds_while_refreshes_back_off() {
        let dir = tempfile::tempdir().unwrap();
        let store = || store_of(dir.path(), "oe");
        // Its expiry unknown: due at once.
        let c = Credentials::open("oe", store(), &"a0".into(), Some(&"r0".into())).unwrap();
        let attempts = Arc::new(Mutex::new(0));
        let task = refresh_task(
            c.clone(),
            Arc::new(Down(attempts.clone())),
            reqwest::Client::new(),
            Statuses::new(&[]),
        );
        let (_stop, stop) = watch::channel(false);
        tokio::spawn(task.run_once(stop));
        // The backoff doubles from 1 s: the 9th failure waits 256 s, the 10th 5 minutes.
        while *attempts.lock().unwrap() < 10 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let failed = *attempts.lock().unwrap();
        let mut set = store().load().unwrap().unwrap().next(
            Fresh {
                access_token: "a1".into(),
                refresh_token: Some("r1".into()),
                access_expires_in: Some(86_400),
                refresh_expires_in: None,
            },
            now(),
        );
        set.seed = None;
        store().save(&set).unwrap();
        let written = tokio::time::Instant::now();
        let mut generation = c.subscribe();
        tokio::time::timeout(
            Duration::from_secs(60),
            generation.wait_for(|g| *g == set.generation),
        )
        .await
        .expect("the new tokens are adopted")
        .unwrap();
        assert!(
            written.elapsed() <= Duration::from_secs(3),
            "{:?}",
            written.elapsed()
        );
        assert_eq!(c.access_token().0.expose_secret(), "a1");
        assert_eq!(
            *attempts.lock().unwrap(),
            failed,
            "not due: nothing refreshed"
        );
    }
}
