//! Durable intake: the journal every accepted event is written to (and fsynced) before anyone is
//! told it was accepted. The pipeline reads it in order and acknowledges events only after the sink
//! confirmed their delivery, so a crash at any point loses nothing: what was not acknowledged is
//! read again at the next start (at least once; `event_id` lets consumers drop repeats).
//!
//! Writes go through one writer thread that commits whatever has queued up in one redb transaction
//! (group commit): one fsync covers many webhooks, so durability does not cost throughput.
//!
//! Pull sources (MySQL) append a batch of events together with their checkpoint, in the same
//! transaction: the checkpoint moves exactly when the rows it covers are durably acknowledged, and
//! a crash can neither skip rows (checkpoint ahead of the data) nor re-read them (data ahead of
//! the checkpoint).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::lead::IntakeEvent;

/// Events by sequence number, oldest first.
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// `"{connector}\u{0}{key}"` -> the first answer given for it.
const IDEMPOTENCY: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
/// A pull connector's name -> its checkpoint (the connector's own JSON).
const CHECKPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("checkpoints");
/// Counters that must survive restarts.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LAST_SEQ: &str = "last_seq";

/// Events committed in one transaction at most.
const MAX_GROUP: usize = 4096;
const PURGE_EVERY: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("the data directory is in use by another leadgate process (journal {0})")]
    Locked(String),
    #[error("journal storage: {0}")]
    Storage(#[from] redb::Error),
    #[error("journal record is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("the journal writer has stopped")]
    Closed,
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(impl From<$t> for JournalError {
        fn from(e: $t) -> Self { Self::Storage(e.into()) }
    })*};
}
storage_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// What the journal did with an appended event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub event_id: String,
    pub received_at: String,
    /// True when the idempotency key was seen before: this is the first answer, given again, and
    /// nothing new was stored.
    #[serde(skip)]
    pub replayed: bool,
}

#[derive(Serialize, Deserialize)]
struct IdempotencyEntry {
    receipt: Receipt,
    stored_at_ms: i64,
}

struct Append {
    event: IntakeEvent,
    idempotency_key: Option<String>,
    reply: oneshot::Sender<Result<Receipt, String>>,
}

/// A pull connector's batch: its events and the checkpoint that covers them.
struct Pulled {
    connector: String,
    events: Vec<IntakeEvent>,
    checkpoint: Vec<u8>,
    reply: oneshot::Sender<Result<(), String>>,
}

enum Job {
    Append(Append),
    Pulled(Pulled),
}

/// Handle to the journal; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    db: Arc<Database>,
    tx: mpsc::Sender<Job>,
    committed: watch::Receiver<u64>,
    backlog: Arc<AtomicU64>,
}

impl Journal {
    /// Opens (or creates) the journal at `path` and starts its writer thread.
    pub fn open(path: &Path, idempotency_retention: Duration) -> Result<Self, JournalError> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                JournalError::Locked(path.display().to_string())
            }
            other => JournalError::Storage(other.into()),
        })?;
        let (last_seq, pending) = {
            let txn = db.begin_write()?;
            let last = {
                let meta = txn.open_table(META)?;
                meta.get(LAST_SEQ)?.map(|v| v.value()).unwrap_or(0)
            };
            let pending = txn.open_table(EVENTS)?.len()?;
            txn.open_table(IDEMPOTENCY)?;
            txn.open_table(CHECKPOINTS)?;
            txn.commit()?;
            (last, pending)
        };
        let db = Arc::new(db);
        let backlog = Arc::new(AtomicU64::new(pending));
        let (tx, rx) = mpsc::channel(65_536);
        let (committed_tx, committed) = watch::channel(last_seq);
        let writer = Writer {
            db: db.clone(),
            rx,
            committed: committed_tx,
            backlog: backlog.clone(),
            last_seq,
            retention_ms: i64::try_from(idempotency_retention.as_millis()).unwrap_or(i64::MAX),
            last_purge: None,
        };
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| JournalError::Storage(redb::StorageError::Io(e).into()))?;
        Ok(Self {
            db,
            tx,
            committed,
            backlog,
        })
    }

    /// Appends `event` durably. Returns once it is fsynced, or the earlier receipt when
    /// `idempotency_key` was seen within the retention (then nothing is stored).
    pub async fn append(
        &self,
        event: IntakeEvent,
        idempotency_key: Option<String>,
    ) -> Result<Receipt, JournalError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Append(Append {
                event,
                idempotency_key,
                reply,
            }))
            .await
            .map_err(|_| JournalError::Closed)?;
        reply_of(rx.await)
    }

    /// Appends a pull connector's `events` and stores its `checkpoint` in the same transaction.
    /// Returns once both are fsynced. An empty `events` just moves the checkpoint.
    pub async fn append_pulled(
        &self,
        connector: &str,
        events: Vec<IntakeEvent>,
        checkpoint: Vec<u8>,
    ) -> Result<(), JournalError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Pulled(Pulled {
                connector: connector.to_owned(),
                events,
                checkpoint,
                reply,
            }))
            .await
            .map_err(|_| JournalError::Closed)?;
        reply_of(rx.await)
    }

    /// The checkpoint `connector` stored last, if any. Blocking.
    pub fn checkpoint(&self, connector: &str) -> Result<Option<Vec<u8>>, JournalError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(CHECKPOINTS)?;
        Ok(table.get(connector)?.map(|v| v.value().to_vec()))
    }

    /// Up to `limit` events with a sequence number above `after`, oldest first. Blocking.
    pub fn read_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, IntakeEvent)>, JournalError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(EVENTS)?;
        let mut out = Vec::with_capacity(limit.min(1024));
        for row in table.range(after.saturating_add(1)..)?.take(limit) {
            let (k, v) = row?;
            out.push((k.value(), serde_json::from_slice(v.value())?));
        }
        Ok(out)
    }

    /// Forgets every event up to and including `seq`: their delivery is confirmed. Blocking.
    pub fn ack_through(&self, seq: u64) -> Result<(), JournalError> {
        let txn = self.db.begin_write()?;
        let mut removed = 0u64;
        {
            let mut table = txn.open_table(EVENTS)?;
            table.retain_in(..=seq, |_, _| {
                removed += 1;
                false
            })?;
        }
        txn.commit()?;
        self.backlog.fetch_sub(removed, Ordering::Relaxed);
        Ok(())
    }

    /// Waits until the backlog is at or below `max`: pull sources do not read faster than the
    /// sink delivers.
    pub async fn wait_below(&self, max: u64) {
        while self.backlog() > max {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Events journaled and not yet acknowledged.
    pub fn backlog(&self) -> u64 {
        self.backlog.load(Ordering::Relaxed)
    }

    /// The sequence number of the newest committed event; changes after every commit.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }
}

fn reply_of<T>(
    answer: Result<Result<T, String>, oneshot::error::RecvError>,
) -> Result<T, JournalError> {
    match answer {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(msg)) => Err(JournalError::Storage(
            redb::StorageError::Io(std::io::Error::other(msg)).into(),
        )),
        Err(_) => Err(JournalError::Closed),
    }
}

struct Writer {
    db: Arc<Database>,
    rx: mpsc::Receiver<Job>,
    committed: watch::Sender<u64>,
    backlog: Arc<AtomicU64>,
    last_seq: u64,
    retention_ms: i64,
    last_purge: Option<Instant>,
}

impl Writer {
    fn run(mut self) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        while let Some(first) = self.rx.blocking_recv() {
            group.push(first);
            while group.len() < MAX_GROUP {
                match self.rx.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            let batch = std::mem::take(&mut group);
            match self.commit(&batch) {
                Ok(receipts) => {
                    let mut receipts = receipts.into_iter();
                    for job in batch {
                        match job {
                            Job::Append(a) => {
                                if let Some(r) = receipts.next() {
                                    let _ = a.reply.send(Ok(r));
                                }
                            }
                            Job::Pulled(p) => {
                                let _ = p.reply.send(Ok(()));
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, jobs = batch.len(), "journal commit failed; events refused");
                    for job in batch {
                        match job {
                            Job::Append(a) => drop(a.reply.send(Err(e.to_string()))),
                            Job::Pulled(p) => drop(p.reply.send(Err(e.to_string()))),
                        }
                    }
                }
            }
        }
    }

    /// Commits `batch` in one transaction; the receipts of its `Append` jobs, in order.
    fn commit(&mut self, batch: &[Job]) -> Result<Vec<Receipt>, JournalError> {
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let txn = self.db.begin_write()?;
        let mut receipts = Vec::with_capacity(batch.len());
        let mut seq = self.last_seq;
        {
            let mut events = txn.open_table(EVENTS)?;
            let mut keys = txn.open_table(IDEMPOTENCY)?;
            let mut checkpoints = txn.open_table(CHECKPOINTS)?;
            for job in batch {
                let append = match job {
                    Job::Append(a) => a,
                    Job::Pulled(p) => {
                        for event in &p.events {
                            seq += 1;
                            events.insert(seq, serde_json::to_vec(event)?.as_slice())?;
                        }
                        checkpoints.insert(p.connector.as_str(), p.checkpoint.as_slice())?;
                        continue;
                    }
                };
                let key = append
                    .idempotency_key
                    .as_ref()
                    .map(|k| format!("{}\u{0}{k}", append.event.connector));
                if let Some(key) = &key
                    && let Some(found) = keys.get(key.as_str())?
                {
                    let entry: IdempotencyEntry = serde_json::from_slice(found.value())?;
                    if now_ms - entry.stored_at_ms <= self.retention_ms {
                        receipts.push(Receipt {
                            replayed: true,
                            ..entry.receipt
                        });
                        continue;
                    }
                }
                seq += 1;
                events.insert(seq, serde_json::to_vec(&append.event)?.as_slice())?;
                let receipt = Receipt {
                    event_id: append.event.event_id.clone(),
                    received_at: append.event.received_at.clone(),
                    replayed: false,
                };
                if let Some(key) = &key {
                    let entry = IdempotencyEntry {
                        receipt: receipt.clone(),
                        stored_at_ms: now_ms,
                    };
                    keys.insert(key.as_str(), serde_json::to_vec(&entry)?.as_slice())?;
                }
                receipts.push(receipt);
            }
            if self.last_purge.is_none_or(|t| t.elapsed() > PURGE_EVERY) {
                let retention = self.retention_ms;
                keys.retain(|_, v| {
                    serde_json::from_slice::<IdempotencyEntry>(v)
                        .is_ok_and(|e| now_ms - e.stored_at_ms <= retention)
                })?;
                self.last_purge = Some(Instant::now());
            }
            txn.open_table(META)?.insert(LAST_SEQ, seq)?;
        }
        txn.commit()?;
        let added = seq - self.last_seq;
        self.last_seq = seq;
        self.backlog.fetch_add(added, Ordering::Relaxed);
        self.committed.send_replace(seq);
        Ok(receipts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lead::SourceKind;
    use serde_json::json;

    fn event(n: u32) -> IntakeEvent {
        IntakeEvent::new("webform", SourceKind::Webhook, None, json!({ "n": n }))
    }

    #[tokio::test]
    async fn events_survive_reopen_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.redb");
        {
            let j = Journal::open(&path, Duration::from_secs(60)).unwrap();
            for n in 0..5 {
                j.append(event(n), None).await.unwrap();
            }
            let read = j.read_after(0, 10).unwrap();
            assert_eq!(read.len(), 5);
            j.ack_through(read[1].0).unwrap();
            assert_eq!(j.backlog(), 3);
        }
        // The writer thread holds the database until its channel closes; wait for it to let go.
        let j = loop {
            match Journal::open(&path, Duration::from_secs(60)) {
                Ok(j) => break j,
                Err(JournalError::Locked(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(e) => panic!("{e}"),
            }
        };
        let left: Vec<u64> = j
            .read_after(0, 10)
            .unwrap()
            .iter()
            .map(|(_, e)| e.payload["n"].as_u64().unwrap())
            .collect();
        assert_eq!(left, [2, 3, 4]);
        assert_eq!(j.backlog(), 3);
        let receipt = j.append(event(9), None).await.unwrap();
        let all = j.read_after(0, 10).unwrap();
        assert_eq!(all.last().unwrap().1.event_id, receipt.event_id);
        assert!(
            all.windows(2).all(|w| w[0].0 < w[1].0),
            "sequence numbers keep rising across restarts"
        );
    }

    #[tokio::test]
    async fn a_repeated_idempotency_key_gets_the_first_answer() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.redb"), Duration::from_secs(60)).unwrap();
        let first = j.append(event(1), Some("k1".into())).await.unwrap();
        let again = j.append(event(2), Some("k1".into())).await.unwrap();
        assert!(!first.replayed && again.replayed);
        assert_eq!(first.event_id, again.event_id);
        assert_eq!(j.read_after(0, 10).unwrap().len(), 1);
        // The same key on another connector is another request.
        let mut other = event(3);
        other.connector = "other".into();
        assert!(!j.append(other, Some("k1".into())).await.unwrap().replayed);
    }

    #[tokio::test]
    async fn a_pulled_batch_and_its_checkpoint_are_stored_together() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.redb"), Duration::from_secs(60)).unwrap();
        assert_eq!(j.checkpoint("crm").unwrap(), None);
        j.append_pulled("crm", vec![event(1), event(2)], b"{\"at\":2}".to_vec())
            .await
            .unwrap();
        j.append(event(3), None).await.unwrap();
        j.append_pulled("crm", Vec::new(), b"{\"at\":3}".to_vec())
            .await
            .unwrap();
        assert_eq!(
            j.checkpoint("crm").unwrap().as_deref(),
            Some(&b"{\"at\":3}"[..])
        );
        assert_eq!(j.checkpoint("other").unwrap(), None);
        let read: Vec<u64> = j
            .read_after(0, 10)
            .unwrap()
            .iter()
            .map(|(_, e)| e.payload["n"].as_u64().unwrap())
            .collect();
        assert_eq!(read, [1, 2, 3]);
        assert_eq!(j.backlog(), 3);
    }

    #[tokio::test]
    async fn concurrent_appends_are_grouped_and_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.redb"), Duration::from_secs(60)).unwrap();
        let tasks: Vec<_> = (0..200)
            .map(|n| {
                tokio::spawn({
                    let j = j.clone();
                    async move { j.append(event(n), None).await.unwrap() }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(j.read_after(0, 1000).unwrap().len(), 200);
        assert_eq!(*j.committed().borrow(), 200);
    }
}
