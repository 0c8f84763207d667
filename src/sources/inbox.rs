//! For platforms whose webhook carries ids only (Meta, LinkedIn): the **inbox** keeps the leads
//! notified and not fetched yet, and the **fetcher** reads each one from the platform's API.
//!
//! - The webhook puts notices in the inbox. The inbox is committed to the journal (under the key
//!   `{connector}/inbox`) before the webhook is answered, so an acknowledged notification
//!   survives a crash.
//! - The fetcher takes up to 50 notices, fetches each lead, and journals the leads in the same
//!   transaction that removes their notices. A restart fetches whatever the inbox still holds.
//! - A lead the platform no longer has ([`PullError::Missing`]) is dropped and reported. An
//!   expired token ([`PullError::Expired`]) stops the connector (it tries again every 5 minutes);
//!   the inbox keeps its notices. Other errors are retried with backoff.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Mutex, Notify, watch};

use crate::intake::JournalError;
use crate::lead::IntakeEvent;
use crate::sources::pull::PullError;
use crate::sources::pull::{PageSink, settle, sleep_or_stop};

/// Leads fetched and journaled per transaction.
const FETCH_BATCH: usize = 50;

/// At most this many leads wait in an inbox; past it, webhooks get 503 (platforms retry them).
const INBOX_MAX: usize = 100_000;

/// A lead to fetch: the platform's id, and what the notification said about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub id: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub context: Value,
}

/// Notices by id, as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Pending {
    leads: BTreeMap<String, Notice>,
}

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("{0} notified leads wait to be fetched; retry later")]
    Full(usize),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// A connector's inbox: the webhook puts notices in, the fetcher takes them out. Every change is
/// committed to the journal before it is adopted.
pub struct Inbox {
    key: String,
    sink: PageSink,
    pending: Mutex<Pending>,
    wake: Notify,
}

impl Inbox {
    pub fn open(sink: &PageSink) -> Result<Self, JournalError> {
        let key = format!("{}/inbox", sink.name);
        let pending: Pending = match sink.journal.checkpoint(&key)? {
            Some(bytes) => serde_json::from_slice(&bytes)?,
            None => Pending::default(),
        };
        let inbox = Self {
            key,
            sink: sink.clone(),
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
        };
        inbox.show(&pending);
        Ok(Self {
            pending: Mutex::new(pending),
            ..inbox
        })
    }

    /// Shows how many leads wait, in the connector's status.
    fn show(&self, pending: &Pending) {
        let n = pending.leads.len() as u64;
        self.sink
            .statuses
            .update(&self.sink.name, |s| s.inbox = Some(n));
    }

    /// Stores `notices` (those not already waiting); resolves once they are durable.
    pub async fn enqueue(&self, notices: Vec<Notice>) -> Result<usize, InboxError> {
        let mut pending = self.pending.lock().await;
        let mut next = pending.clone();
        let before = next.leads.len();
        for n in notices {
            next.leads.entry(n.id.clone()).or_insert(n);
        }
        let added = next.leads.len() - before;
        if added == 0 {
            return Ok(0);
        }
        if next.leads.len() > INBOX_MAX {
            return Err(InboxError::Full(before));
        }
        let bytes = serde_json::to_vec(&next).map_err(JournalError::from)?;
        self.sink
            .journal
            .append_pulled(&self.key, Vec::new(), bytes)
            .await?;
        self.show(&next);
        *pending = next;
        drop(pending);
        self.wake.notify_one();
        Ok(added)
    }

    async fn batch(&self, n: usize) -> Vec<Notice> {
        let pending = self.pending.lock().await;
        pending.leads.values().take(n).cloned().collect()
    }

    /// Journals `events` and removes `done` from the inbox, in one transaction.
    async fn complete(
        &self,
        events: Vec<IntakeEvent>,
        done: &[String],
    ) -> Result<(), JournalError> {
        let mut pending = self.pending.lock().await;
        let mut next = pending.clone();
        for id in done {
            next.leads.remove(id);
        }
        let bytes = serde_json::to_vec(&next)?;
        self.sink
            .journal
            .append_pulled(&self.key, events, bytes)
            .await?;
        self.show(&next);
        *pending = next;
        Ok(())
    }
}

/// How a platform reads the lead of a notice.
pub trait Fetch: Send + Sync + 'static {
    fn fetch(&self, notice: &Notice)
    -> impl Future<Output = Result<IntakeEvent, PullError>> + Send;

    /// What ends a pause early: new credentials (`leadgate auth` after a refused token).
    fn wake(&self) -> Option<watch::Receiver<u64>> {
        None
    }
}

/// A supervised task fetching `inbox`'s leads with `fetch`.
pub fn fetch_task<F: Fetch + Clone>(
    connector: &str,
    fetch: F,
    inbox: &Arc<Inbox>,
) -> crate::sources::supervise::Task {
    let inbox = inbox.clone();
    crate::sources::supervise::Task::new(connector, "fetch", move |stop| {
        run_fetcher(fetch.clone(), inbox.clone(), stop)
    })
}

/// Fetches the inbox's leads until shutdown.
pub async fn run_fetcher(
    fetch: impl Fetch,
    inbox: Arc<Inbox>,
    mut shutdown: watch::Receiver<bool>,
) {
    let sink = inbox.sink.clone();
    let name = sink.name.clone();
    let mut backoff = crate::retry::forever();
    let mut wake = fetch.wake();
    while sink.statuses.while_paused(&name, &mut shutdown).await {
        let batch = inbox.batch(FETCH_BATCH).await;
        if batch.is_empty() {
            tokio::select! {
                _ = inbox.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        crate::sources::pull::seen(&mut wake);
        let (events, done, failed) = fetch_batch(&fetch, &sink, batch).await;
        if !done.is_empty() {
            sink.journal.wait_below(sink.max_backlog).await;
            let n = events.len() as u64;
            if let Err(e) = inbox.complete(events, &done).await {
                tracing::error!(connector = %name, error = %e, "cannot journal fetched leads");
                sink.statuses.failure(&name, &e.to_string(), false);
                sleep_or_stop(Duration::from_secs(1), &mut shutdown).await;
                continue;
            }
            sink.statuses.update(&name, |s| {
                s.events_journaled += n;
                s.rows_read += n;
            });
        }
        let outcome = failed.map_or(Ok(()), Err);
        let pause = settle(&sink.statuses, &name, outcome, &mut backoff, Duration::ZERO);
        if !pause.is_zero() {
            crate::sources::pull::pause_or_wake(pause, &mut wake, &mut shutdown).await;
        }
    }
}

/// Fetches `batch` until an error retrying could not fix: the events, the ids done (fetched, or
/// gone from the platform), and the error that stopped the batch.
async fn fetch_batch(
    fetch: &impl Fetch,
    sink: &PageSink,
    batch: Vec<Notice>,
) -> (Vec<IntakeEvent>, Vec<String>, Option<PullError>) {
    let (mut events, mut done) = (Vec::new(), Vec::new());
    for n in batch {
        match fetch.fetch(&n).await {
            Ok(event) => {
                events.push(event);
                done.push(n.id);
            }
            Err(PullError::Missing(detail)) => {
                // Deleted, or never visible to this token: retrying cannot bring it back.
                let e = format!("lead {} cannot be read ({detail}); dropped", n.id);
                tracing::error!(connector = %sink.name, "{e}");
                sink.statuses.failure(&sink.name, &e, false);
                done.push(n.id);
            }
            Err(e) => return (events, done, Some(e)),
        }
    }
    (events, done, None)
}
