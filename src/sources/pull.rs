//! What every pull connector does with a page it read: wait while the journal's backlog is full
//! (a reader never runs ahead of delivery), journal the page's events together with the
//! checkpoint after them in one transaction, and count them in the connector's status. The
//! connector adopts the checkpoint only once [`PageSink::send`] resolved.

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::intake::{Journal, JournalError};
use crate::lead::IntakeEvent;
use crate::sources::status::{ConnectorStatus, Statuses};

/// Retries of one API request: 5 times, from 200 ms up to 30 s apart, with jitter. Callers
/// choose which errors are retried and honour the API's own `Retry-After`.
pub fn api_retry() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(200))
        .with_max_delay(std::time::Duration::from_secs(30))
        .with_max_times(5)
        .with_jitter()
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
