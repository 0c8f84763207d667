//! What every pull connector does with a page it read: wait while the journal's backlog is full
//! (a reader never runs ahead of delivery), journal the page's events together with the
//! checkpoint after them in one transaction, and count them in the connector's status. The
//! connector adopts the checkpoint only once [`PageSink::send`] resolved.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::intake::{Journal, JournalError};
use crate::lead::IntakeEvent;
use crate::sources::status::{ConnectorStatus, State, Statuses, TokenHealth};

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("throttled by the API (HTTP {status}{code})")]
    Throttled {
        status: u16,
        code: String,
        retry_after: Option<Duration>,
    },
    #[error(
        "the API refused the credentials (HTTP {0}): the token expired or was revoked; renew it and restart"
    )]
    Expired(String),
    #[error("HTTP {0} from the API")]
    Server(u16),
    #[error("cannot reach the API: {0}")]
    Network(String),
    #[error("the API answered error code {0}")]
    Api(String),
    #[error("the API has no such object ({0})")]
    Missing(String),
    #[error("the response is not what the connector expects: {0}")]
    Shape(String),
    #[error(transparent)]
    Journal(#[from] crate::intake::JournalError),
    /// `[coordination]`: this gateway no longer holds the connector's lease; another reads now.
    #[error("this gateway no longer holds the connector's lease")]
    LeaseLost,
}

impl PullError {
    /// Its `error_type` label in the metrics.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Throttled { .. } => "throttled",
            Self::Expired(_) => "token_refused",
            Self::Server(_) => "server_error",
            Self::Network(_) => "network",
            Self::Api(_) => "api_error",
            Self::Missing(_) => "missing",
            Self::Shape(_) => "unexpected_response",
            Self::Journal(_) => "journal",
            Self::LeaseLost => "lease_lost",
        }
    }

    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Self::Throttled { .. } | Self::Server(_) | Self::Network(_)
        )
    }
}

/// Numbered page `p` (counted from `start`) at half of `size`, renumbered to start at the same
/// row: page 3 of 100 is page 5 of 50. Only an even size is halved, so pages keep mapping to
/// the same rows.
pub fn halve_page(p: u64, start: u64, size: u32) -> Option<(u64, u32)> {
    (size.is_multiple_of(2) && size > 1).then(|| ((p - start) * 2 + start, size / 2))
}

/// Numbered page `p` at twice `size` (never past `max`), where a page of twice the size starts
/// exactly at the same row: page 7 of 50 is page 4 of 100.
pub fn double_page(p: u64, start: u64, size: u32, max: u32) -> Option<(u64, u32)> {
    ((p - start).is_multiple_of(2) && size * 2 <= max).then(|| ((p - start) / 2 + start, size * 2))
}

/// Retries of one API request: 5 times, from 200 ms up to 30 s apart, with jitter.
fn api_retry() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(200))
        .with_max_delay(std::time::Duration::from_secs(30))
        .with_max_times(5)
        .with_jitter()
}

/// One API request, retried ([`api_retry`]) while throttled, failing on the server or
/// unreachable. A throttling answer's own wait (`Retry-After`, Meta's usage header) replaces the
/// backoff step, and `on_throttle` may change the request's `state` before the next attempt (a
/// smaller page). Gives the answer and the state it was read with.
pub async fn retried<S, T, F>(
    connector: &str,
    state: S,
    attempt: impl Fn(S) -> F,
    on_throttle: impl Fn(&S) -> S,
) -> Result<(T, S), PullError>
where
    S: Clone,
    F: Future<Output = Result<T, PullError>>,
{
    use backon::Retryable;
    let current = std::sync::Mutex::new(state);
    let lock = || current.lock().unwrap_or_else(|p| p.into_inner());
    let answer = (|| {
        // A gateway that lost the lease (frozen past it, say) must not spend the token.
        let held = crate::coord::may_use(connector);
        let f = attempt(lock().clone());
        async move {
            if !held {
                return Err(PullError::LeaseLost);
            }
            f.await
        }
    })
    .retry(api_retry())
    .when(PullError::retryable)
    .adjust(|e, delay| match e {
        PullError::Throttled {
            retry_after: Some(after),
            ..
        } => Some(*after),
        _ => delay,
    })
    .notify(|e, after| {
        if matches!(e, PullError::Throttled { .. }) {
            let mut s = lock();
            *s = on_throttle(&s);
        }
        tracing::warn!(connector, error = %e, retry_in = ?after, "retrying");
        crate::telemetry::error(connector, e.error_type(), "receiving");
    })
    .await?;
    Ok((
        answer,
        current.into_inner().unwrap_or_else(|p| p.into_inner()),
    ))
}

/// The `Retry-After` of an answer, in seconds.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .map(Duration::from_secs)
}

/// A request's error as text, without its query: query strings carry tokens and secrets
/// (腾讯广告's `access_token`, a refresh's `client_secret`), and this text reaches logs and
/// health. The URL's origin and path stay, and the causes (connection refused, a timeout) follow.
pub fn http_error(e: reqwest::Error) -> String {
    let at = e
        .url()
        .map(|u| format!(" ({}{})", u.origin().ascii_serialization(), u.path()));
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text.push_str(at.as_deref().unwrap_or_default());
    text
}

/// What an HTTP status means to a pull: 2xx goes on; 429 is throttling; 401 and 403 are a
/// refused token; 5xx is the server failing; anything else is an error of the request.
pub fn check_status(status: u16, retry_after: Option<Duration>) -> Result<(), PullError> {
    match status {
        200..=299 => Ok(()),
        429 => Err(PullError::Throttled {
            status,
            code: String::new(),
            retry_after,
        }),
        401 | 403 => Err(PullError::Expired(status.to_string())),
        500..=599 => Err(PullError::Server(status)),
        other => Err(PullError::Api(format!("HTTP {other}"))),
    }
}

#[derive(Clone)]
pub struct PageSink {
    pub name: String,
    pub journal: Journal,
    pub statuses: Statuses,
    pub max_backlog: u64,
}

impl PageSink {
    pub fn new(name: &str, journal: &Journal, statuses: &Statuses, max_backlog: u64) -> Self {
        Self {
            name: name.to_owned(),
            journal: journal.clone(),
            statuses: statuses.clone(),
            max_backlog,
        }
    }

    /// The checkpoint this connector stored last, or the default (a first start).
    pub fn checkpoint<C: DeserializeOwned + Default>(&self) -> Result<C, JournalError> {
        match self.journal.checkpoint(&self.name)? {
            Some(bytes) => Ok(serde_json::from_slice(&bytes)?),
            None => Ok(C::default()),
        }
    }

    /// Journals `events` with `checkpoint`; resolves to how many events were journaled. The
    /// future owns what it needs, so the connector can read its next page meanwhile.
    pub fn send<C: Serialize>(
        &self,
        events: Vec<IntakeEvent>,
        checkpoint: &C,
    ) -> impl Future<Output = Result<u64, JournalError>> + use<C> {
        let bytes = serde_json::to_vec(checkpoint);
        let sink = self.clone();
        async move {
            let bytes = bytes?;
            sink.journal.wait_below(sink.max_backlog).await;
            let n = events.len() as u64;
            sink.journal
                .append_pulled(&sink.name, events, bytes)
                .await?;
            Ok(n)
        }
    }

    /// Shows a journaled page in the status: `n` more events, the checkpoint now stored, and
    /// whatever else the connector reports with it.
    pub fn shown<C: Serialize>(
        &self,
        checkpoint: &C,
        n: u64,
        more: impl FnOnce(&mut ConnectorStatus),
    ) {
        let stored = serde_json::to_value(checkpoint).ok();
        self.statuses.update(&self.name, |s| {
            s.events_journaled += n;
            s.checkpoint = stored;
            more(s);
        });
    }
}

/// How long a connector waits after an error: 5 minutes when its token was refused (retrying
/// cannot help until it is renewed), else the next backoff step.
pub fn pause_after(e: &PullError, backoff: &mut backon::ExponentialBackoff) -> Duration {
    if matches!(e, PullError::Expired(_)) {
        Duration::from_secs(300)
    } else {
        backoff.next().unwrap_or(Duration::from_secs(30))
    }
}

pub async fn sleep_or_stop(pause: Duration, shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(pause) => {}
        _ = shutdown.changed() => {}
    }
}

/// Shows the outcome of one attempt of an API connector in its status, and says how long to wait
/// before the next: a success clears the error streak (and shows the token accepted); an
/// expired or revoked token stops the connector and marks the token refused; other errors are
/// retried with backoff.
pub fn settle(
    statuses: &Statuses,
    name: &str,
    outcome: Result<(), PullError>,
    backoff: &mut backon::ExponentialBackoff,
    interval: Duration,
) -> Duration {
    match outcome {
        Ok(()) => {
            *backoff = crate::retry::forever();
            statuses.success(name, State::Following);
            statuses.update(name, |s| {
                let token = s.token.get_or_insert_with(TokenHealth::default);
                token.refused = None;
            });
            interval
        }
        Err(e) => {
            let fatal = matches!(e, PullError::Expired(_));
            tracing::error!(connector = %name, error = %e, "the connector's request failed");
            crate::telemetry::error(name, e.error_type(), "receiving");
            statuses.failure(name, &e.to_string(), fatal);
            if fatal {
                statuses.update(name, |s| {
                    let token = s.token.get_or_insert_with(TokenHealth::default);
                    token.refused = Some(e.to_string());
                });
            }
            pause_after(&e, backoff)
        }
    }
}

/// Seconds from `until` (unix seconds: everything created before it was read) to now: the lag
/// of a connector that polls by time.
pub fn lag_since(until: Option<i64>) -> Option<f64> {
    until.map(|u| (jiff::Timestamp::now().as_second() - u).max(0) as f64)
}

/// A connector that polls an API: one `poll` reads from the checkpoint to the last page.
pub trait Poll: Send + 'static {
    fn poll(
        &mut self,
        shutdown: &tokio::sync::watch::Receiver<bool>,
    ) -> impl Future<Output = Result<(), PullError>> + Send;

    /// What ends a pause early: new credentials (`leadgate auth` after a refused token), for
    /// connectors that refresh theirs.
    fn wake(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// Polls until shutdown, a pause of `interval` after each poll that succeeded: each outcome is
/// settled in `sink`'s status, and an error waits as [`settle`] says.
pub async fn run_polls(
    mut p: impl Poll,
    sink: PageSink,
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = crate::retry::forever();
    let mut wake = p.wake();
    while sink.statuses.while_paused(&sink.name, &mut shutdown).await {
        seen(&mut wake);
        let outcome = p.poll(&shutdown).await;
        let pause = settle(&sink.statuses, &sink.name, outcome, &mut backoff, interval);
        pause_or_wake(pause, &mut wake, &mut shutdown).await;
    }
}

/// Marks the credentials in use now as seen by `wake`: call it before each attempt, so new
/// credentials that arrive while it is under way end the pause after it.
pub fn seen(wake: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    if let Some(w) = wake {
        w.borrow_and_update();
    }
}

/// Sleeps `pause`, ended early by shutdown or by new credentials on `wake` since it was last
/// [`seen`] (at once when they came during the attempt that failed).
pub async fn pause_or_wake(
    pause: Duration,
    wake: &mut Option<tokio::sync::watch::Receiver<u64>>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) {
    match wake {
        Some(w) => {
            tokio::select! {
                _ = sleep_or_stop(pause, shutdown) => {}
                _ = w.changed() => {}
            }
        }
        None => sleep_or_stop(pause, shutdown).await,
    }
}

/// A supervised task that runs [`run_polls`] with a poller made by `make` from the connector's
/// stored checkpoint, read again at each (re)start.
pub fn poll_task<C, P>(
    sink: PageSink,
    every: Duration,
    make: impl Fn(C, PageSink) -> P + Send + Sync + 'static,
) -> crate::sources::supervise::Task
where
    C: DeserializeOwned + Default,
    P: Poll,
{
    let name = sink.name.clone();
    crate::sources::supervise::Task::fallible(&name, "poll", move |stop| {
        let sink = sink.clone();
        let poller = sink
            .checkpoint::<C>()
            .map(|c| make(c, sink.clone()))
            .map_err(|e| format!("cannot read its checkpoint: {e}"));
        async move {
            run_polls(poller?, sink, every, stop).await;
            Ok(())
        }
    })
}

/// The time window of a new poll: from where the last one ended minus `overlap`, or `initial`
/// back from `now` for the first, to `now` (all in the same unit).
pub fn next_window(done_until: Option<i64>, now: i64, overlap: i64, initial: i64) -> (i64, i64) {
    let start = match done_until {
        Some(end) => end - overlap,
        None => now - initial,
    };
    (start, now)
}

/// Whole seconds of `d`, for window arithmetic.
pub fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2)
}

/// The HTTP client of a platform connector: its user agent, and `timeout` per request.
pub fn api_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("leadgate/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A shared rate limiter.
pub type Limiter = std::sync::Arc<governor::DefaultDirectRateLimiter>;

/// The rate limiter of the credential `secret` (a token, or a token and an account): platforms
/// count requests per token and per account, so connectors that use the same credential share
/// one limiter, whichever of them asks. The first connector to ask sets its rate. Only a hash of
/// the credential is kept.
pub fn limiter_for(secret: &str, rate: Option<crate::sources::RateLimit>) -> Option<Limiter> {
    use sha2::Digest;
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static SHARED: OnceLock<Mutex<HashMap<[u8; 32], Limiter>>> = OnceLock::new();
    let rate = rate?;
    let key: [u8; 32] = sha2::Sha256::digest(secret.as_bytes()).into();
    let mut shared = SHARED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(l) = shared.get(&key) {
        return Some(l.clone());
    }
    let l = std::sync::Arc::new(rate.limiter()?);
    shared.insert(key, l.clone());
    Some(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::RateLimit;

    #[tokio::test]
    async fn request_errors_never_carry_the_query() {
        let client = reqwest::Client::new();
        let e = client
            .get("http://127.0.0.1:1/oauth/token?client_secret=SECRET-1&refresh_token=SECRET-2")
            .send()
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("SECRET-1"),
            "reqwest shows the URL: {e}"
        );
        let text = http_error(e);
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("http://127.0.0.1:1/oauth/token"), "{text}");
    }

    #[test]
    fn connectors_with_one_credential_share_one_limiter() {
        let rate = Some(RateLimit {
            per_second: 5,
            burst: None,
        });
        let a = limiter_for("token-a-for-the-test", rate).unwrap();
        let again = limiter_for("token-a-for-the-test", rate).unwrap();
        let b = limiter_for("token-b-for-the-test", rate).unwrap();
        assert!(std::sync::Arc::ptr_eq(&a, &again));
        assert!(!std::sync::Arc::ptr_eq(&a, &b));
        assert!(limiter_for("token-a-for-the-test", None).is_none());
    }

    #[test]
    fn windows_start_after_the_last_with_an_overlap() {
        assert_eq!(next_window(None, 1000, 10, 100), (900, 1000));
        assert_eq!(next_window(Some(950), 1000, 10, 100), (940, 1000));
    }

    #[tokio::test(start_paused = true)]
    async fn credentials_that_came_during_a_failed_attempt_end_its_pause_at_once() {
        let (tokens, rx) = tokio::sync::watch::channel(1u64);
        let (_stop, mut shutdown) = tokio::sync::watch::channel(false);
        let mut wake = Some(rx);
        seen(&mut wake);
        // The attempt under way fails with the old token; `leadgate auth` lands meanwhile.
        tokens.send_replace(2);
        let start = tokio::time::Instant::now();
        pause_or_wake(Duration::from_secs(300), &mut wake, &mut shutdown).await;
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        // Nothing new since: the whole pause.
        seen(&mut wake);
        let start = tokio::time::Instant::now();
        pause_or_wake(Duration::from_secs(300), &mut wake, &mut shutdown).await;
        assert_eq!(start.elapsed().as_secs(), 300);
    }
}
