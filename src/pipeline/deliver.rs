//! The delivery loop: journaled events through the [`Processor`] to the sink, acknowledged
//! once delivered; a poison event quarantined, an outage retried.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::intake::{Journal, JournalError, Journaled, Stage};
use crate::lead::IntakeEvent;
use crate::sinks::{HealthReport, OutRecord, Sink, SinkError};

use super::{PipelineError, Processor};

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("a pipeline task panicked: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The first pending event fails alone, and nothing after it shows whether it is the fault.
    #[error("the next event fails on its own: {0}")]
    Suspect(String),
}

impl StepError {
    /// Its `error_type` label.
    fn kind(&self) -> &'static str {
        match self {
            Self::Journal(_) => "journal",
            Self::Pipeline(PipelineError::Identity(_)) => "identity_store",
            Self::Pipeline(PipelineError::Assign(_)) => "assignment_store",
            Self::Pipeline(_) => "processing",
            Self::Sink(_) => "sink",
            Self::Join(_) => "panic",
            Self::Suspect(_) => "suspect_event",
        }
    }
}

/// Moves journaled events through the processor to the sink until `shutdown` turns true.
///
/// One bad event never stops it. A record that does not decode is quarantined at once; so is an
/// event whose processing panics or cannot be serialized, found by processing its batch event by
/// event. Any other failure (a store or the sink unreachable) is retried with backoff, as an
/// outage would be; after [`ISOLATE_AFTER`] failures in a row the first event is tried alone and,
/// when it fails while the one after it passes, it is the fault and is quarantined.
pub async fn deliver_forever(
    journal: Journal,
    processor: Arc<Processor>,
    mut sink: Sink,
    batch_size: usize,
    stats: crate::config::StatsSettings,
    health: HealthReport,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut committed = journal.committed();
    let mut cursor = 0u64;
    let mut backoff = crate::retry::forever();
    let mut failures = 0u32;
    let mut unacked = Unacked {
        hour_retention_s: i64::try_from(stats.hour_retention.as_secs()).unwrap_or(i64::MAX),
        ..Unacked::default()
    };
    let erasures = processor.erasures().cloned();
    let mut erasure_retry: Option<tokio::time::Instant> = None;
    let retention = processor.retention();
    let mut retention_due = tokio::time::Instant::now();
    loop {
        if *shutdown.borrow() {
            unacked.acknowledge(&journal, &processor, &health).await;
            return;
        }
        // Erasures, between batches: what was delivered is acknowledged first, so that the
        // journal's undelivered events are the ones still to come.
        if let Some(e) = &erasures
            && e.has_pending()
            && erasure_retry.is_none_or(|t| tokio::time::Instant::now() >= t)
            && unacked.acknowledge(&journal, &processor, &health).await
        {
            erasure_retry = None;
            if let Err(why) = crate::erasure::run(e, &journal, &processor, &mut sink).await {
                tracing::error!(error = %why, "an erasure failed; it is tried again in 10s");
                erasure_retry = Some(tokio::time::Instant::now() + ERASURE_RETRY);
            }
        }
        if let Some(r) = &retention
            && tokio::time::Instant::now() >= retention_due
            && unacked.acknowledge(&journal, &processor, &health).await
        {
            retention_due = tokio::time::Instant::now() + r.every;
            if let Err(why) = crate::erasure::retain(r, &processor, &mut sink).await {
                tracing::error!(error = %why, "retention failed; it is tried again at the next check");
            }
        }
        let isolate = failures >= ISOLATE_AFTER;
        let batch = if isolate { 2 } else { batch_size };
        match step(
            &journal,
            &processor,
            &mut sink,
            cursor,
            batch,
            isolate,
            &stats.timezone,
        )
        .await
        {
            Ok(Some((last, n, tally))) => {
                cursor = last;
                backoff = crate::retry::forever();
                failures = 0;
                health.ok();
                unacked.delivered(last, n, tally);
                if unacked.due() {
                    unacked.acknowledge(&journal, &processor, &health).await;
                }
            }
            Ok(None) => {
                // Idle: acknowledge what was delivered. A failed acknowledgement (the identity
                // store on a full disk) is tried again after a backoff, not only when the next
                // lead arrives: until then the journal holds the leads and health says why.
                let retry = if unacked.acknowledge(&journal, &processor, &health).await {
                    backoff = crate::retry::forever();
                    None
                } else {
                    Some(backoff.next().unwrap_or(Duration::from_secs(30)))
                };
                tokio::select! {
                    _ = committed.changed() => {}
                    _ = shutdown.changed() => {}
                    _ = erasure_asked(erasures.as_deref()) => {}
                    _ = tokio::time::sleep_until(erasure_retry.unwrap_or_else(tokio::time::Instant::now)), if erasure_retry.is_some() => {}
                    _ = tokio::time::sleep_until(retention_due), if retention.is_some() => {}
                    _ = tokio::time::sleep(retry.unwrap_or_default()), if retry.is_some() => {}
                    // Idle for a moment: the stores' housekeeping (an identity snapshot), then
                    // wait for leads again.
                    _ = tokio::time::sleep(IDLE_MAINTENANCE), if retry.is_none() => {
                        let p = processor.clone();
                        match tokio::task::spawn_blocking(move || p.maintain()).await {
                            Ok(Err(e)) => tracing::warn!(error = %e, "store housekeeping failed; tried again when idle"),
                            Err(e) => tracing::warn!(error = %e, "store housekeeping panicked"),
                            Ok(Ok(())) => {}
                        }
                        tokio::select! {
                            _ = committed.changed() => {}
                            _ = shutdown.changed() => {}
                            _ = erasure_asked(erasures.as_deref()) => {}
                            _ = tokio::time::sleep_until(retention_due), if retention.is_some() => {}
                        }
                    }
                }
            }
            Err(StepError::Sink(SinkError::Shutdown)) => {
                unacked.acknowledge(&journal, &processor, &health).await;
                return;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                tracing::error!(error = %e, retry_in = ?delay, failures, "delivery failed; nothing is acknowledged, retrying");
                crate::telemetry::delivery_failed(e.kind());
                health.failing(e.to_string());
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}

/// How long a failed erasure waits before it is tried again.
const ERASURE_RETRY: Duration = Duration::from_secs(10);

/// Resolves when an erasure request comes in (never without erasures).
async fn erasure_asked(erasures: Option<&crate::erasure::Erasures>) {
    match erasures {
        Some(e) => e.asked().await,
        None => std::future::pending().await,
    }
}

/// How long the journal stays empty before the stores' housekeeping runs.
const IDLE_MAINTENANCE: Duration = Duration::from_secs(2);

/// Failures in a row after which the delivery loop suspects the first pending event.
pub const ISOLATE_AFTER: u32 = 3;

/// Delivered batches whose events the journal still holds. Under load they are acknowledged
/// together, at most [`ACK_EVENTS`] events or [`ACK_INTERVAL`] after the last acknowledgement,
/// so that one identity sync and one journal commit (two fsyncs) cover several batches. When the
/// journal runs dry they are acknowledged at once. A crash before then delivers them again: the
/// same records, with the same `event_id` and `lead_id`.
#[derive(Default)]
struct Unacked {
    /// The journal sequence of the last delivered event.
    last: Option<u64>,
    events: usize,
    since: Option<std::time::Instant>,
    /// Their statistics, added to the rollups by the acknowledgement.
    tally: crate::stats::Tally,
    hour_retention_s: i64,
}

const ACK_EVENTS: usize = 5_000;
const ACK_INTERVAL: Duration = Duration::from_millis(100);

impl Unacked {
    fn delivered(&mut self, last: u64, events: usize, tally: crate::stats::Tally) {
        self.last = Some(last);
        self.events += events;
        self.tally.merge(tally);
        self.since.get_or_insert_with(std::time::Instant::now);
    }

    fn due(&self) -> bool {
        self.events >= ACK_EVENTS || self.since.is_some_and(|t| t.elapsed() >= ACK_INTERVAL)
    }

    /// Syncs the identity store, then acknowledges the journal through the last delivered
    /// event. On failure everything stays pending, and is tried again next time. Returns
    /// whether nothing is left pending.
    async fn acknowledge(
        &mut self,
        journal: &Journal,
        processor: &Arc<Processor>,
        health: &HealthReport,
    ) -> bool {
        let Some(last) = self.last else {
            return true;
        };
        let (j, p) = (journal.clone(), processor.clone());
        let (tally, retention) = (std::mem::take(&mut self.tally), self.hour_retention_s);
        let kept = tally.clone();
        let done = tokio::task::spawn_blocking(move || -> Result<(), StepError> {
            p.sync()?;
            Ok(j.ack_through_counting(last, &tally, retention)?)
        })
        .await
        .map_err(StepError::from)
        .and_then(|r| r);
        match done {
            Ok(()) => {
                *self = Self {
                    hour_retention_s: self.hour_retention_s,
                    ..Self::default()
                };
                health.ok();
                true
            }
            Err(e) => {
                // Counted by the acknowledgement that succeeds.
                self.tally = kept;
                tracing::error!(error = %e, "acknowledging delivered leads failed; they stay journaled");
                health.failing(e.to_string());
                false
            }
        }
    }
}

/// One batch: read after `cursor`, process, deliver. Returns the last event's sequence and the
/// number of events, or `None` when there was nothing. [`Unacked`] acknowledges them later.
///
/// The identity store may commit lazily; it is synced before the journal lets go of the events.
/// A crash in between replays them, and they resolve to the lead ids already delivered.
///
/// With `isolate`, the batch (of two) is processed event by event and the first event is
/// quarantined when it fails while the second passes.
async fn step(
    journal: &Journal,
    processor: &Arc<Processor>,
    sink: &mut Sink,
    cursor: u64,
    batch: usize,
    isolate: bool,
    zone: &jiff::tz::TimeZone,
) -> Result<Option<(u64, usize, crate::stats::Tally)>, StepError> {
    let j = journal.clone();
    let read = tokio::task::spawn_blocking(move || j.read_after(cursor, batch)).await??;
    let Some(&(last, _)) = read.last() else {
        return Ok(None);
    };
    let n = read.len();
    let mut events = Vec::with_capacity(n);
    for (seq, record) in read {
        match record {
            Journaled::Event(e) => events.push((seq, e)),
            Journaled::Undecodable { record, error } => {
                let j = journal.clone();
                let reason = format!("the journal record does not decode: {error}");
                tokio::task::spawn_blocking(move || {
                    j.quarantine(seq, Stage::Decode, &reason, &record)
                })
                .await??;
                crate::telemetry::quarantined("unknown", "decoding");
            }
        }
    }
    let ((records, outcomes), last) =
        if isolate {
            match isolated(journal, processor, events).await? {
                Some(done) => done,
                // Only undecodable records were read, now quarantined.
                None => (Processed::default(), last),
            }
        } else {
            let processed =
                match process_blocking(processor, events.iter().map(|(_, e)| e.clone()).collect())
                    .await
                {
                    Ok(processed) => processed,
                    Err(Fault::Poison(_)) => one_by_one(journal, processor, events).await?,
                    Err(Fault::Failed(e)) => return Err(e),
                };
            (processed, last)
        };
    sink.deliver(&records).await?;
    processor.delivered(&records);
    // Counted once the sink confirmed them: a retried batch is not counted twice.
    let now_ms = jiff::Timestamp::now().as_millisecond();
    for r in &records {
        let connector = r.headers.iter().find(|(k, _)| *k == "source");
        crate::telemetry::sent(connector.map_or("", |(_, v)| v.as_str()), &r.topic);
    }
    let mut tally = crate::stats::Tally::default();
    for o in &outcomes {
        crate::telemetry::delivered(&o.connector, &o.received_at, &o.disposition, now_ms);
        tally.count(
            zone,
            &o.connector,
            &o.received_at,
            &o.disposition,
            &o.attribution,
        );
    }
    Ok(Some((last, n, tally)))
}

/// A processed event, for the metrics once it is delivered.
struct Outcome {
    connector: String,
    received_at: String,
    disposition: crate::pipeline::Disposition,
    attribution: crate::stats::Attribution,
}

/// The records of processed events, and what became of each event.
type Processed = (Vec<OutRecord>, Vec<Outcome>);

/// Why processing failed: a fault of the events themselves (a panic, a record that cannot be
/// serialized), which happens again every time, or anything else, which may pass.
enum Fault {
    Poison(String),
    Failed(StepError),
}

async fn process_blocking(
    processor: &Arc<Processor>,
    events: Vec<IntakeEvent>,
) -> Result<Processed, Fault> {
    let p = processor.clone();
    let processed = tokio::task::spawn_blocking(move || {
        p.process_attributed(&events)
            .map(|(records, dispositions)| {
                let outcomes = events
                    .into_iter()
                    .zip(dispositions)
                    .map(|(e, (disposition, attribution))| Outcome {
                        connector: e.connector,
                        received_at: e.received_at,
                        disposition,
                        attribution,
                    })
                    .collect();
                (records, outcomes)
            })
    });
    match processed.await {
        Ok(Ok(processed)) => Ok(processed),
        Ok(Err(PipelineError::Serialize(e))) => {
            Err(Fault::Poison(format!("cannot serialize its record: {e}")))
        }
        Ok(Err(e)) => Err(Fault::Failed(e.into())),
        Err(e) if e.is_panic() => Err(Fault::Poison(format!(
            "processing it panicked: {}",
            crate::sources::supervise::panic_message(e.into_panic())
        ))),
        Err(e) => Err(Fault::Failed(e.into())),
    }
}

/// Processes `events` one at a time, quarantining each that is poison itself; the records of
/// the rest, in order. Any other failure stops it (the batch is retried).
async fn one_by_one(
    journal: &Journal,
    processor: &Arc<Processor>,
    events: Vec<(u64, IntakeEvent)>,
) -> Result<Processed, StepError> {
    let (mut records, mut outcomes) = Processed::default();
    for (seq, event) in events {
        match process_blocking(processor, vec![event.clone()]).await {
            Ok((r, o)) => {
                records.extend(r);
                outcomes.extend(o);
            }
            Err(Fault::Poison(reason)) => set_aside(journal, seq, &event, reason).await?,
            Err(Fault::Failed(e)) => return Err(e),
        }
    }
    Ok((records, outcomes))
}

/// After failures in a row: the first event alone, then (if it failed) the second alone. When
/// the second passes, the first is the fault: it is quarantined with its error. The records, and
/// the sequence of the last event they cover.
async fn isolated(
    journal: &Journal,
    processor: &Arc<Processor>,
    events: Vec<(u64, IntakeEvent)>,
) -> Result<Option<(Processed, u64)>, StepError> {
    let mut events = events.into_iter();
    let Some((seq, first)) = events.next() else {
        return Ok(None);
    };
    let error = match process_blocking(processor, vec![first.clone()]).await {
        Ok(records) => return Ok(Some((records, seq))),
        Err(Fault::Poison(reason)) => reason,
        Err(Fault::Failed(e)) => e.to_string(),
    };
    let Some((next, second)) = events.next() else {
        return Err(StepError::Suspect(error));
    };
    match process_blocking(processor, vec![second]).await {
        Ok(records) => {
            set_aside(journal, seq, &first, error).await?;
            Ok(Some((records, next)))
        }
        Err(Fault::Poison(reason)) => Err(StepError::Suspect(reason)),
        Err(Fault::Failed(e)) => Err(e),
    }
}

/// Quarantines `event` (journal sequence `seq`) as it is journaled.
async fn set_aside(
    journal: &Journal,
    seq: u64,
    event: &IntakeEvent,
    reason: String,
) -> Result<(), StepError> {
    let record = serde_json::to_vec(event).map_err(PipelineError::from)?;
    let j = journal.clone();
    tokio::task::spawn_blocking(move || j.quarantine(seq, Stage::Process, &reason, &record))
        .await??;
    crate::telemetry::quarantined(&event.connector, "processing");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assign::Assigner;
    use crate::assign::EmbeddedAssignmentStore;
    use crate::config::Topics;
    use crate::identity::{
        Cluster, IdentityError, IdentityRequest, IdentityStore, Policy, Resolution,
    };
    use crate::lead::SourceKind;
    use crate::sinks::SpoolSink;
    use serde_json::json;

    /// Resolves nothing (every lead is published as rejected), but panics on a lead named
    /// `poison` and fails, as an unreachable store would, on a lead named `failing`. Its first
    /// `sync_failures` syncs fail, as on a full disk.
    #[derive(Default)]
    struct Faulty {
        sync_failures: std::sync::atomic::AtomicU32,
    }

    impl IdentityStore for Faulty {
        fn resolve(&self, requests: &[IdentityRequest]) -> Result<Vec<Resolution>, IdentityError> {
            let named = |n: &str| {
                requests
                    .iter()
                    .any(|r| r.profile.iter().any(|(_, v)| v.eq_ignore_ascii_case(n)))
            };
            assert!(!named("poison"), "a bug met a poison lead");
            if named("failing") {
                return Err(IdentityError::Storage("the disk said no".into()));
            }
            Ok(requests.iter().map(|_| Resolution::Unresolved).collect())
        }
        fn explain(&self, _: &str) -> Result<Option<Cluster>, IdentityError> {
            Ok(None)
        }
        fn find(&self, _: &[crate::identity::IdentityKey]) -> Result<Vec<String>, IdentityError> {
            Ok(Vec::new())
        }
        fn sync(&self) -> Result<(), IdentityError> {
            use std::sync::atomic::Ordering;
            let failing =
                self.sync_failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            match failing {
                Ok(_) => Err(IdentityError::Disk("No space left on device".into())),
                Err(_) => Ok(()),
            }
        }
    }

    fn lead(name: &str) -> IntakeEvent {
        let payload = json!({ "name": name, "phone": "13800138000" });
        IntakeEvent::new("webform", SourceKind::Webhook, None, payload)
    }

    /// Runs the delivery loop over `names` and waits until `want` records are out, or `within`
    /// passed; the names published, in order, and the journal.
    async fn deliver(names: &[&str], want: usize, within: Duration) -> (Vec<String>, Journal) {
        let (published, journal, _) = deliver_to(Faulty::default(), names, want, within).await;
        (published, journal)
    }

    /// [`deliver`] through `identity`; also waits (within the same time) until the journal is
    /// acknowledged, and says whether it was before the loop was stopped (whose shutdown
    /// acknowledges once more).
    async fn deliver_to(
        identity: Faulty,
        names: &[&str],
        want: usize,
        within: Duration,
    ) -> (Vec<String>, Journal, bool) {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("j.redb"), Duration::from_secs(60)).unwrap();
        let store = Arc::new(EmbeddedAssignmentStore::open(&dir.path().join("a.redb")).unwrap());
        let processor = Arc::new(Processor::new(
            &[],
            Topics::default(),
            Arc::new(identity),
            Policy::default(),
            Assigner::new(store),
        ));
        for n in names {
            journal.append(lead(n), None).await.unwrap();
        }
        let out = dir.path().join("out");
        let sink = Sink::Spool(SpoolSink::open(&out).unwrap());
        let (health, _) = HealthReport::new();
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(deliver_forever(
            journal.clone(),
            processor,
            sink,
            500,
            crate::config::StatsSettings::default(),
            health,
            stop_rx,
        ));
        let file = out.join("leads.rejected.jsonl");
        let deadline = std::time::Instant::now() + within;
        let (published, settled) = loop {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let names: Vec<String> = text
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .map(|r| r["raw"]["name"].as_str().unwrap().to_owned())
                .collect();
            let settled = names.len() >= want && journal.backlog() == 0;
            if settled || std::time::Instant::now() > deadline {
                break (names, settled);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        stop.send_replace(true);
        task.await.unwrap();
        (published, journal, settled)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_lead_that_panics_is_quarantined_and_the_rest_flow_on() {
        let (published, journal) = deliver(&["a", "poison", "b"], 2, Duration::from_secs(20)).await;
        assert_eq!(published, ["a", "b"]);
        let q = journal.quarantined(0, 10).unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].stage, Stage::Process);
        assert!(
            q[0].reason.contains("panicked: a bug met a poison lead"),
            "{}",
            q[0].reason
        );
        let kept: IntakeEvent = serde_json::from_str(&q[0].record).unwrap();
        assert_eq!(kept.payload["name"], "poison");
        assert_eq!(journal.backlog(), 0, "everything was acknowledged");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_lead_that_fails_alone_while_the_next_passes_is_quarantined() {
        let (published, journal) =
            deliver(&["failing", "c", "d"], 2, Duration::from_secs(20)).await;
        assert_eq!(published, ["c", "d"]);
        let q = journal.quarantined(0, 10).unwrap();
        assert_eq!(q.len(), 1);
        assert!(q[0].reason.contains("the disk said no"), "{}", q[0].reason);
        assert_eq!(journal.backlog(), 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_outage_quarantines_nothing() {
        // The only pending lead fails: nothing shows that it is the fault, so it waits.
        // Long enough for the loop to have suspected it (three failures, 1.4 s of backoff).
        let (published, journal) = deliver(&["failing"], 1, Duration::from_secs(4)).await;
        assert!(published.is_empty());
        assert_eq!((journal.quarantined_count(), journal.backlog()), (0, 1));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_acknowledgement_is_retried_without_a_new_lead() {
        // The identity store's sync fails twice (a full disk, freed again): the journal lets go
        // of the delivered lead after a backoff, not when the next lead happens to arrive.
        let store = Faulty {
            sync_failures: 2.into(),
        };
        let (published, _, settled) = deliver_to(store, &["a"], 1, Duration::from_secs(10)).await;
        assert_eq!(published, ["a"]);
        assert!(settled, "the delivered lead is still journaled");
    }
}
