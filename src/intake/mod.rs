//! Durable intake: the journal every accepted event is written to (and fsynced) before anyone is
//! told it was accepted. The pipeline reads it in order and acknowledges events only after the sink
//! confirmed their delivery, so a crash at any point loses nothing: what was not acknowledged is
//! read again at the next start (at least once; `event_id` lets consumers drop repeats).
//!
//! Writes go through one writer thread that commits whatever has queued up in one redb transaction
//! (group commit): one fsync covers many webhooks, so durability does not cost throughput.
//!
//! An event that cannot go on, for good, is quarantined: a payload nested deeper than
//! [`MAX_PAYLOAD_DEPTH`] when it arrives, a record that no longer decodes (written by an older
//! version), or an event that fails every stage while its neighbours pass. The quarantine keeps the
//! record verbatim with its stage and reason, in the same file, so nothing acknowledged is lost, and
//! delivery moves on. `GET /v1/quarantine` lists it; `/readyz` counts it.
//!
//! A storage error (a full disk, EIO) makes redb refuse every later transaction until the file is
//! opened again; the journal lets go of it and opens it afresh (its checksums verified) on next use,
//! so once space is freed, intake and delivery go on without a restart.
//!
//! Pull sources (MySQL) append a batch of events together with their checkpoint, in the same
//! transaction: the checkpoint moves exactly when the rows it covers are durably acknowledged, and
//! a crash can neither skip rows (checkpoint ahead of the data) nor re-read them (data ahead of
//! the checkpoint).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::lead::{IntakeEvent, MAX_PAYLOAD_DEPTH, depth};
use crate::reopen::Reopening;

/// Events by sequence number, oldest first.
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// `"{connector}\u{0}{key}"` -> the first answer given for it.
const IDEMPOTENCY: TableDefinition<&str, &[u8]> = TableDefinition::new("idempotency");
/// A pull connector's name -> its checkpoint (the connector's own JSON).
const CHECKPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("checkpoints");
/// `(connector, seq)` -> the checkpoint a pulled page stored, `seq` being the journal's last
/// sequence number after the page: once every event up to `seq` is delivered, the checkpoint
/// covers only delivered leads and may be shared with other gateways (`[coordination]`). The
/// newest [`HISTORY_KEPT`] of each connector are kept.
const CHECKPOINT_HISTORY: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("checkpoint_history");
const HISTORY_KEPT: usize = 64;
/// Events set aside for good, by their sequence number -> a [`Quarantined`] entry (JSON).
const QUARANTINE: TableDefinition<u64, &[u8]> = TableDefinition::new("quarantine");
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
    /// A sealed record that cannot be opened (no key, or another key: `[privacy]`).
    #[error("journal record: {0}")]
    Sealed(String),
}

/// A record as it is stored: sealed with a key configured (`[privacy] encryption_key`).
fn sealed(plain: Vec<u8>) -> Result<Vec<u8>, JournalError> {
    crate::seal::seal_stored(plain).map_err(|e| JournalError::Sealed(e.to_string()))
}

/// A stored record's plain bytes.
fn opened(stored: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, JournalError> {
    crate::seal::open_stored(stored).map_err(|e| JournalError::Sealed(e.to_string()))
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

/// A journal record as read back: the event, or the stored bytes that no longer decode.
#[derive(Debug)]
pub enum Journaled {
    Event(IntakeEvent),
    Undecodable { record: Vec<u8>, error: String },
}

/// Where in the pipeline an event was set aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// When it arrived (a pulled payload nested too deep).
    Intake,
    /// Reading it back from the journal.
    Decode,
    /// Mapping, normalization, identity or assignment failed for it alone.
    Process,
}

/// One quarantined event: the journal record verbatim, and why it was set aside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quarantined {
    pub seq: u64,
    pub stage: Stage,
    pub reason: String,
    pub quarantined_at: String,
    /// Read from the record when it can be; `None` when even that fails.
    pub event_id: Option<String>,
    pub connector: Option<String>,
    pub received_at: Option<String>,
    /// The journal record (an [`IntakeEvent`] as JSON text), exactly as stored.
    pub record: String,
}

impl Quarantined {
    fn new(seq: u64, stage: Stage, reason: String, record: &[u8]) -> Self {
        // The record's first fields are scalars (see `IntakeEvent`), written before `payload`;
        // a quote inside a string is escaped, so the first `,"payload":` is the key itself. The
        // fields before it parse even when the payload does not.
        #[derive(Deserialize, Default)]
        struct Head {
            event_id: Option<String>,
            connector: Option<String>,
            received_at: Option<String>,
        }
        let text = String::from_utf8_lossy(record).into_owned();
        let head = text
            .find(",\"payload\":")
            .and_then(|at| serde_json::from_str::<Head>(&format!("{}}}", &text[..at])).ok())
            .unwrap_or_default();
        Self {
            seq,
            stage,
            reason,
            quarantined_at: crate::lead::now_rfc3339(),
            event_id: head.event_id,
            connector: head.connector,
            received_at: head.received_at,
            record: text,
        }
    }
}

/// Why an arriving event cannot be journaled as it is, if it cannot.
fn refusal(event: &IntakeEvent) -> Option<String> {
    let d = depth(&event.payload);
    (d > MAX_PAYLOAD_DEPTH).then(|| {
        format!("the payload nests {d} levels deep; at most {MAX_PAYLOAD_DEPTH} are accepted")
    })
}

#[derive(Serialize, Deserialize)]
struct IdempotencyEntry {
    receipt: Receipt,
    stored_at_ms: i64,
}

/// An event on its way to the writer, with why it cannot be journaled as it is, if it cannot.
/// The check runs on the caller's task: the writer thread, which every append waits on, only
/// stores.
struct Arriving {
    event: IntakeEvent,
    refused: Option<String>,
}

impl Arriving {
    fn new(event: IntakeEvent) -> Self {
        let refused = refusal(&event);
        Self { event, refused }
    }
}

struct Append {
    arriving: Arriving,
    idempotency_key: Option<String>,
    reply: oneshot::Sender<Result<Receipt, String>>,
}

/// A pull connector's batch: its events and the checkpoint that covers them.
struct Pulled {
    connector: String,
    events: Vec<Arriving>,
    checkpoint: Vec<u8>,
    reply: oneshot::Sender<Result<(), String>>,
}

/// An erasure: the events `drop` picks, and the idempotency records of those and of
/// `event_ids`, taken out and the file rewritten.
struct Erase {
    drop: EventFilter,
    event_ids: std::collections::HashSet<String>,
    reply: oneshot::Sender<Result<usize, String>>,
}

/// Picks journaled events (see [`Journal::erase`]).
pub type EventFilter = Box<dyn Fn(&IntakeEvent) -> bool + Send>;

enum Job {
    Append(Append),
    Pulled(Pulled),
    Erase(Erase),
}

/// Handle to the journal; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    store: Arc<Store>,
    tx: mpsc::Sender<Job>,
    committed: watch::Receiver<u64>,
    backlog: Arc<AtomicU64>,
    /// Bytes of the events in `backlog`, as stored.
    backlog_bytes: Arc<AtomicU64>,
    quarantined: Arc<AtomicU64>,
}

impl Journal {
    /// Opens (or creates) the journal at `path` and starts its writer thread.
    pub fn open(path: &Path, idempotency_retention: Duration) -> Result<Self, JournalError> {
        let db = Store::open_db(path)?;
        let (last_seq, pending, quarantined) = {
            let txn = db.begin_write()?;
            let last = {
                let meta = txn.open_table(META)?;
                meta.get(LAST_SEQ)?.map(|v| v.value()).unwrap_or(0)
            };
            let (pending, pending_bytes) = {
                let events = txn.open_table(EVENTS)?;
                let mut bytes = 0u64;
                for row in events.iter()? {
                    bytes += row?.1.value().len() as u64;
                }
                (events.len()?, bytes)
            };
            let quarantined = txn.open_table(QUARANTINE)?.len()?;
            txn.open_table(IDEMPOTENCY)?;
            txn.open_table(CHECKPOINTS)?;
            txn.open_table(CHECKPOINT_HISTORY)?;
            txn.open_table(crate::stats::HOURS)?;
            txn.open_table(crate::stats::DAYS)?;
            txn.commit()?;
            (last, (pending, pending_bytes), quarantined)
        };
        let (pending, pending_bytes) = pending;
        let store = Arc::new(Store {
            path: path.to_owned(),
            db: Reopening::new(format!("journal {}", path.display()), db),
        });
        let backlog = Arc::new(AtomicU64::new(pending));
        let backlog_bytes = Arc::new(AtomicU64::new(pending_bytes));
        let quarantined = Arc::new(AtomicU64::new(quarantined));
        let (tx, rx) = mpsc::channel(65_536);
        let (committed_tx, committed) = watch::channel(last_seq);
        let writer = Writer {
            store: store.clone(),
            rx,
            committed: committed_tx,
            backlog: backlog.clone(),
            backlog_bytes: backlog_bytes.clone(),
            quarantined: quarantined.clone(),
            last_seq,
            retention_ms: i64::try_from(idempotency_retention.as_millis()).unwrap_or(i64::MAX),
            last_purge: None,
        };
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| JournalError::Storage(redb::StorageError::Io(e).into()))?;
        Ok(Self {
            store,
            tx,
            committed,
            backlog,
            backlog_bytes,
            quarantined,
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
                arriving: Arriving::new(event),
                idempotency_key,
                reply,
            }))
            .await
            .map_err(|_| JournalError::Closed)?;
        reply_of(rx.await)
    }

    /// Takes out the undelivered and quarantined events `drop` picks, with their idempotency
    /// records and those of `event_ids` (an erasure), and rewrites the file so that nothing of
    /// them is left in it (see [`crate::storefile::Rewrite`]); appends wait meanwhile. Returns
    /// how many events went. A quarantined record that no longer decodes is kept.
    pub async fn erase(
        &self,
        drop: EventFilter,
        event_ids: std::collections::HashSet<String>,
    ) -> Result<usize, JournalError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Erase(Erase {
                drop,
                event_ids,
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
                events: events.into_iter().map(Arriving::new).collect(),
                checkpoint,
                reply,
            }))
            .await
            .map_err(|_| JournalError::Closed)?;
        reply_of(rx.await)
    }

    /// The statistics rows of `[from, to)` (unix seconds): day rows with `day`, else hour rows,
    /// summed by `group_by`, of one connector or all. Blocking.
    pub fn stats(
        &self,
        day: bool,
        range: (i64, i64),
        group_by: crate::stats::GroupBy,
        connector: Option<&str>,
    ) -> Result<Vec<crate::stats::Row>, JournalError> {
        self.store.with(|db| {
            let txn = db.begin_read()?;
            crate::stats::read(&txn, day, range, group_by, connector)
        })
    }

    /// The newest checkpoint of `connector` whose page's leads, and every lead journaled before
    /// them, are delivered: what another gateway may resume from. Blocking.
    pub fn delivered_checkpoint(&self, connector: &str) -> Result<Option<Vec<u8>>, JournalError> {
        self.store.with(|db| {
            let txn = db.begin_read()?;
            let through = match txn.open_table(EVENTS)?.first()? {
                Some((k, _)) => k.value().saturating_sub(1),
                None => u64::MAX,
            };
            let history = txn.open_table(CHECKPOINT_HISTORY)?;
            let newest = history
                .range((connector, 0)..=(connector, through))?
                .next_back();
            Ok(match newest {
                Some(r) => Some(r?.1.value().to_vec()),
                None => None,
            })
        })
    }

    /// Makes `checkpoint` the one `connector` resumes from (a lease taken over from another
    /// gateway: the shared checkpoint), forgetting its older history. Blocking; call it while
    /// none of the connector's tasks runs.
    pub fn adopt_checkpoint(&self, connector: &str, checkpoint: &[u8]) -> Result<(), JournalError> {
        self.store.with(|db| {
            let txn = db.begin_write()?;
            {
                let last = txn
                    .open_table(META)?
                    .get(LAST_SEQ)?
                    .map_or(0, |v| v.value());
                txn.open_table(CHECKPOINTS)?.insert(connector, checkpoint)?;
                let mut history = txn.open_table(CHECKPOINT_HISTORY)?;
                history.retain_in((connector, 0)..=(connector, u64::MAX), |_, _| false)?;
                history.insert((connector, last), checkpoint)?;
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// The checkpoint `connector` stored last, if any. Blocking.
    pub fn checkpoint(&self, connector: &str) -> Result<Option<Vec<u8>>, JournalError> {
        self.store.with(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(CHECKPOINTS)?;
            Ok(table.get(connector)?.map(|v| v.value().to_vec()))
        })
    }

    /// Up to `limit` records with a sequence number above `after`, oldest first. A record that
    /// does not decode is returned as it is stored, for the caller to quarantine. Blocking.
    pub fn read_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Journaled)>, JournalError> {
        self.store.with(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(EVENTS)?;
            let mut out = Vec::with_capacity(limit.min(1024));
            for row in table.range(after.saturating_add(1)..)?.take(limit) {
                let (k, v) = row?;
                let plain = opened(v.value())?;
                let record = match serde_json::from_slice(&plain) {
                    Ok(event) => Journaled::Event(event),
                    Err(e) => Journaled::Undecodable {
                        record: plain.into_owned(),
                        error: e.to_string(),
                    },
                };
                out.push((k.value(), record));
            }
            Ok(out)
        })
    }

    /// Sets the record `seq` aside with its `stage` and `reason`, durably. Quarantining the same
    /// sequence again (after a crash before its acknowledgement) replaces the entry. The record
    /// leaves the event table when the delivery loop acknowledges past it. Blocking.
    pub fn quarantine(
        &self,
        seq: u64,
        stage: Stage,
        reason: &str,
        record: &[u8],
    ) -> Result<(), JournalError> {
        let entry = Quarantined::new(seq, stage, reason.to_owned(), record);
        tracing::error!(seq, stage = ?stage, event_id = ?entry.event_id, connector = ?entry.connector,
            reason, "event quarantined; delivery goes on without it");
        let added = self.store.with(|db| {
            let txn = db.begin_write()?;
            let added = txn
                .open_table(QUARANTINE)?
                .insert(seq, sealed(serde_json::to_vec(&entry)?)?.as_slice())?
                .is_none();
            txn.commit()?;
            Ok(added)
        })?;
        self.quarantined
            .fetch_add(u64::from(added), Ordering::Relaxed);
        Ok(())
    }

    /// Quarantined events with a sequence number above `after`, oldest first. Blocking.
    pub fn quarantined(&self, after: u64, limit: usize) -> Result<Vec<Quarantined>, JournalError> {
        self.store.with(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(QUARANTINE)?;
            let mut out = Vec::new();
            for row in table.range(after.saturating_add(1)..)?.take(limit) {
                out.push(serde_json::from_slice(&opened(row?.1.value())?)?);
            }
            Ok(out)
        })
    }

    /// How many events are quarantined.
    pub fn quarantined_count(&self) -> u64 {
        self.quarantined.load(Ordering::Relaxed)
    }

    /// Forgets every event up to and including `seq`: their delivery is confirmed. Blocking.
    pub fn ack_through(&self, seq: u64) -> Result<(), JournalError> {
        self.ack_through_counting(seq, &crate::stats::Tally::default(), 0)
    }

    /// [`Journal::ack_through`], adding the delivered events' statistics to the rollups in the
    /// same transaction: they are counted exactly once (see [`crate::stats`]). Hour rows older
    /// than `hour_retention_s` before the newest are dropped. Blocking.
    pub fn ack_through_counting(
        &self,
        seq: u64,
        tally: &crate::stats::Tally,
        hour_retention_s: i64,
    ) -> Result<(), JournalError> {
        let removed = self.store.with(|db| {
            let txn = db.begin_write()?;
            if !tally.is_empty() {
                tally.commit(&txn, hour_retention_s)?;
            }
            let (mut removed, mut bytes) = (0u64, 0u64);
            {
                let mut table = txn.open_table(EVENTS)?;
                table.retain_in(..=seq, |_, v| {
                    removed += 1;
                    bytes += v.len() as u64;
                    false
                })?;
            }
            txn.commit()?;
            Ok((removed, bytes))
        })?;
        self.backlog.fetch_sub(removed.0, Ordering::Relaxed);
        self.backlog_bytes.fetch_sub(removed.1, Ordering::Relaxed);
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

    /// Bytes of the undelivered events, as stored.
    pub fn backlog_bytes(&self) -> u64 {
        self.backlog_bytes.load(Ordering::Relaxed)
    }

    /// When the oldest undelivered event was received (RFC 3339), if there is one. Blocking.
    pub fn oldest_undelivered(&self) -> Result<Option<String>, JournalError> {
        self.store.with(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(EVENTS)?;
            let Some(row) = table.first()? else {
                return Ok(None);
            };
            #[derive(serde::Deserialize)]
            struct Received {
                received_at: String,
            }
            let plain = opened(row.1.value()).ok();
            Ok(plain
                .and_then(|p| serde_json::from_slice::<Received>(&p).ok())
                .map(|r| r.received_at))
        })
    }

    /// The sequence number of the newest committed event; changes after every commit.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }
}

/// The journal's database, opened again after a storage error (see [`crate::reopen`]).
struct Store {
    path: PathBuf,
    db: Reopening<Database>,
}

impl Store {
    /// Opens the file, verifying every page's checksum (the journal is small: what is not yet
    /// delivered): a file changed outside redb is refused instead of trusted, or panicking.
    fn open_db(path: &Path) -> Result<Database, JournalError> {
        let mut builder = Database::builder();
        builder.set_check_integrity_on_open(true);
        crate::storefile::open(&builder, path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                JournalError::Locked(path.display().to_string())
            }
            other => JournalError::Storage(other.into()),
        })
    }

    fn get(&self) -> Result<Arc<Database>, JournalError> {
        self.db.get(|| {
            Self::open_db(&self.path).map_err(|e| match e {
                JournalError::Locked(_) => JournalError::Storage(
                    redb::StorageError::Io(std::io::Error::other(
                        "the journal is being opened again after a storage error",
                    ))
                    .into(),
                ),
                other => other,
            })
        })
    }

    /// Runs `f` on the database; a storage error lets go of it.
    fn with<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let db = self.get()?;
        self.db
            .with(db, |e| matches!(e, JournalError::Storage(_)), f)
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

/// What a committed transaction did with one arriving event, for the metrics.
enum Stored {
    /// Stored for delivery: its connector and its size.
    Event(String, u64),
    /// Answered from its idempotency key: nothing stored.
    Replayed(String),
    /// Quarantined on arrival.
    Refused(String),
}

impl Stored {
    fn count(&self) {
        match self {
            Self::Event(connector, bytes) => crate::telemetry::received(connector, 1, *bytes),
            Self::Replayed(connector) => crate::telemetry::replayed(connector),
            Self::Refused(connector) => crate::telemetry::quarantined(connector, "receiving"),
        }
    }
}

struct Writer {
    store: Arc<Store>,
    rx: mpsc::Receiver<Job>,
    committed: watch::Sender<u64>,
    backlog: Arc<AtomicU64>,
    backlog_bytes: Arc<AtomicU64>,
    quarantined: Arc<AtomicU64>,
    last_seq: u64,
    retention_ms: i64,
    last_purge: Option<Instant>,
}

impl Writer {
    fn run(mut self) {
        let mut group = Vec::with_capacity(MAX_GROUP);
        let mut held = None;
        loop {
            let Some(first) = held.take().or_else(|| self.rx.blocking_recv()) else {
                break;
            };
            if let Job::Erase(e) = first {
                let done = self.erase(&e).map_err(|x| x.to_string());
                if let Err(why) = &done {
                    tracing::error!(error = %why, "erasing from the journal failed");
                }
                let _ = e.reply.send(done);
                continue;
            }
            group.push(first);
            while group.len() < MAX_GROUP {
                match self.rx.try_recv() {
                    // After the appends before it.
                    Ok(erase @ Job::Erase(_)) => {
                        held = Some(erase);
                        break;
                    }
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            let batch = std::mem::take(&mut group);
            match self.commit(&batch) {
                Ok((receipts, stored)) => {
                    for s in &stored {
                        s.count();
                    }
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
                            Job::Erase(_) => {}
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, jobs = batch.len(), "journal commit failed; events refused");
                    for job in batch {
                        match job {
                            Job::Append(a) => drop(a.reply.send(Err(e.to_string()))),
                            Job::Pulled(p) => drop(p.reply.send(Err(e.to_string()))),
                            Job::Erase(_) => {}
                        }
                    }
                }
            }
        }
    }

    /// See [`Journal::erase`]. The writer is the only one to write events; the delivery loop,
    /// the other writer (acknowledgements, quarantine), is the one that asks and waits.
    fn erase(&mut self, job: &Erase) -> Result<usize, JournalError> {
        use crate::storefile::{Rewrite, copy_table};
        let old = self.store.get()?;
        let rewrite = Rewrite::begin(&self.store.path)?;
        let (mut events, mut bytes, mut quarantined) = (0u64, 0u64, 0u64);
        let mut gone: std::collections::HashSet<String> = job.event_ids.clone();
        let distinct = {
            let from = old.begin_read()?;
            let mut txn = rewrite.db.begin_write()?;
            txn.set_durability(redb::Durability::Immediate)
                .map_err(|e| JournalError::Storage(e.into()))?;
            let mut dropped = std::collections::HashSet::new();
            let mut picks = |stored: &[u8]| match opened(stored)
                .ok()
                .and_then(|r| serde_json::from_slice::<IntakeEvent>(&r).ok())
            {
                Some(event) if (job.drop)(&event) => {
                    gone.insert(event.event_id.clone());
                    dropped.insert(event.event_id);
                    true
                }
                _ => false,
            };
            copy_table(&from, &txn, EVENTS, |_, record| {
                let out = picks(record);
                if out {
                    events += 1;
                    bytes += record.len() as u64;
                }
                !out
            })?;
            copy_table(&from, &txn, QUARANTINE, |_, entry| {
                let out = opened(entry)
                    .ok()
                    .and_then(|e| serde_json::from_slice::<Quarantined>(&e).ok())
                    .is_some_and(|q| picks(q.record.as_bytes()));
                quarantined += u64::from(out);
                !out
            })?;
            copy_table(&from, &txn, IDEMPOTENCY, |_, entry| {
                serde_json::from_slice::<IdempotencyEntry>(entry)
                    .map_or(true, |e| !gone.contains(&e.receipt.event_id))
            })?;
            copy_table(&from, &txn, CHECKPOINTS, |_, _| true)?;
            copy_table(&from, &txn, CHECKPOINT_HISTORY, |_, _| true)?;
            copy_table(&from, &txn, crate::stats::HOURS, |_, _| true)?;
            copy_table(&from, &txn, crate::stats::DAYS, |_, _| true)?;
            copy_table(&from, &txn, META, |_, _| true)?;
            txn.commit()?;
            dropped.len()
        };
        rewrite
            .finish()
            .map_err(|e| JournalError::Storage(redb::StorageError::Io(e).into()))?;
        self.store.db.replace(Store::open_db(&self.store.path)?);
        self.backlog.fetch_sub(events, Ordering::Relaxed);
        self.backlog_bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.quarantined.fetch_sub(quarantined, Ordering::Relaxed);
        Ok(distinct)
    }

    /// Commits `batch` in one transaction; the receipts of its `Append` jobs, in order.
    fn commit(&mut self, batch: &[Job]) -> Result<(Vec<Receipt>, Vec<Stored>), JournalError> {
        let store = self.store.clone();
        store.with(|db| self.commit_to(db, batch))
    }

    fn commit_to(
        &mut self,
        db: &Database,
        batch: &[Job],
    ) -> Result<(Vec<Receipt>, Vec<Stored>), JournalError> {
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let txn = db.begin_write()?;
        let mut receipts = Vec::with_capacity(batch.len());
        let mut stored: Vec<Stored> = Vec::with_capacity(batch.len());
        let mut bytes_added = 0u64;
        let mut replays = Vec::new();
        let mut seq = self.last_seq;
        let mut set_aside = 0u64;
        {
            let mut events = txn.open_table(EVENTS)?;
            let mut quarantine = txn.open_table(QUARANTINE)?;
            // Stores an arriving event, or quarantines it when it cannot go on as it is.
            let mut store = |seq: u64, arriving: &Arriving| -> Result<(), JournalError> {
                let event = &arriving.event;
                let record = serde_json::to_vec(event)?;
                match &arriving.refused {
                    None => {
                        let record = sealed(record)?;
                        events.insert(seq, record.as_slice())?;
                        bytes_added += record.len() as u64;
                        stored.push(Stored::Event(event.connector.clone(), record.len() as u64));
                    }
                    Some(reason) => {
                        stored.push(Stored::Refused(event.connector.clone()));
                        let entry = Quarantined::new(seq, Stage::Intake, reason.clone(), &record);
                        tracing::error!(seq, connector = %event.connector, reason = %entry.reason, "arriving event quarantined");
                        quarantine.insert(seq, sealed(serde_json::to_vec(&entry)?)?.as_slice())?;
                        set_aside += 1;
                    }
                }
                Ok(())
            };
            let mut keys = txn.open_table(IDEMPOTENCY)?;
            let mut checkpoints = txn.open_table(CHECKPOINTS)?;
            let mut history = txn.open_table(CHECKPOINT_HISTORY)?;
            for job in batch {
                let append = match job {
                    Job::Append(a) => a,
                    Job::Erase(_) => continue,
                    Job::Pulled(p) => {
                        for arriving in &p.events {
                            seq += 1;
                            store(seq, arriving)?;
                        }
                        checkpoints.insert(p.connector.as_str(), p.checkpoint.as_slice())?;
                        let c = p.connector.as_str();
                        history.insert((c, seq), p.checkpoint.as_slice())?;
                        let old: Vec<u64> = history
                            .range((c, 0)..=(c, u64::MAX))?
                            .rev()
                            .skip(HISTORY_KEPT)
                            .map(|r| r.map(|(k, _)| k.value().1))
                            .collect::<Result<_, _>>()?;
                        for s in old {
                            history.remove((c, s))?;
                        }
                        continue;
                    }
                };
                let event = &append.arriving.event;
                let key = append
                    .idempotency_key
                    .as_ref()
                    .map(|k| format!("{}\u{0}{k}", event.connector));
                if let Some(key) = &key
                    && let Some(found) = keys.get(key.as_str())?
                {
                    let entry: IdempotencyEntry = serde_json::from_slice(found.value())?;
                    if now_ms - entry.stored_at_ms <= self.retention_ms {
                        replays.push(Stored::Replayed(event.connector.clone()));
                        receipts.push(Receipt {
                            replayed: true,
                            ..entry.receipt
                        });
                        continue;
                    }
                }
                seq += 1;
                store(seq, &append.arriving)?;
                let receipt = Receipt {
                    event_id: event.event_id.clone(),
                    received_at: event.received_at.clone(),
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
        let added = seq - self.last_seq - set_aside;
        self.last_seq = seq;
        self.backlog.fetch_add(added, Ordering::Relaxed);
        self.backlog_bytes.fetch_add(bytes_added, Ordering::Relaxed);
        stored.extend(replays);
        self.quarantined.fetch_add(set_aside, Ordering::Relaxed);
        self.committed.send_replace(seq);
        Ok((receipts, stored))
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

    fn n_of(read: &(u64, Journaled)) -> u64 {
        match &read.1 {
            Journaled::Event(e) => e.payload["n"].as_u64().unwrap(),
            other => panic!("{other:?}"),
        }
    }

    /// A payload nested `levels` deep (the payload object is level 1).
    fn nested(levels: usize) -> serde_json::Value {
        let mut v = json!([]);
        for _ in 2..levels {
            v = json!([v]);
        }
        json!({ "phone": "1", "x": v })
    }

    impl Journal {
        /// Stores `record` as the next event, bypassing every check: what an older version (or a
        /// bug) may have left in the file. The journal must be opened again before the next
        /// append (its writer does not know of it).
        fn insert_raw(&self, record: &[u8]) -> u64 {
            let db = self.store.get().unwrap();
            let txn = db.begin_write().unwrap();
            let seq = {
                let mut meta = txn.open_table(META).unwrap();
                let seq = meta.get(LAST_SEQ).unwrap().map(|v| v.value()).unwrap_or(0) + 1;
                meta.insert(LAST_SEQ, seq).unwrap();
                txn.open_table(EVENTS).unwrap().insert(seq, record).unwrap();
                seq
            };
            txn.commit().unwrap();
            seq
        }
    }

    /// An erasure takes the person's undelivered and quarantined events and their idempotency
    /// records out, and nothing of them is left in the file, delivered ones' free pages
    /// included; the rest, and later appends, go on as before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_erasure_leaves_nothing_of_the_events_it_takes_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        let j = Journal::open(&path, Duration::from_secs(60)).unwrap();
        let lead = |n: u32, phone: &str| {
            IntakeEvent::new(
                "webform",
                SourceKind::Webhook,
                None,
                json!({"n": n, "phone": phone}),
            )
        };
        let mut ids = Vec::new();
        for (n, phone) in [
            (1, "13905712468"),
            (2, "13800000001"),
            (3, "13905712468"),
            (4, "13800000002"),
            (5, "139 0571 2468"),
        ] {
            ids.push(
                j.append(lead(n, phone), Some(format!("k{n}")))
                    .await
                    .unwrap()
                    .event_id,
            );
        }
        // 1 and 2 are delivered (their bytes linger in free pages), 5 is quarantined.
        j.ack_through(2).unwrap();
        let Some((5, Journaled::Event(e))) = j.read_after(4, 1).unwrap().pop() else {
            panic!("no event 5")
        };
        let five = serde_json::to_vec(&e).unwrap();
        j.quarantine(5, Stage::Process, "test", &five).unwrap();
        let file_holds = |s: &str| {
            let bytes = std::fs::read(&path).unwrap();
            bytes.windows(s.len()).any(|w| w == s.as_bytes())
        };
        assert!(file_holds("13905712468"));
        let erased = std::collections::HashSet::from([ids[0].clone()]);
        let gone = j
            .erase(
                Box::new(|e| {
                    e.payload["phone"]
                        .as_str()
                        .is_some_and(|p| p.replace(' ', "") == "13905712468")
                }),
                erased,
            )
            .await
            .unwrap();
        assert_eq!(gone, 2, "event 3 and the quarantined 5");
        assert!(!file_holds("13905712468") && !file_holds("139 0571 2468"));
        assert!(file_holds("13800000002"));
        let left: Vec<u64> = j.read_after(0, 10).unwrap().iter().map(n_of).collect();
        assert_eq!(left, [4]);
        assert_eq!((j.backlog(), j.quarantined_count()), (1, 0));
        // The erased event's key is forgotten; another event's is still known.
        assert!(
            !j.append(lead(1, "x"), Some("k1".into()))
                .await
                .unwrap()
                .replayed
        );
        assert!(
            j.append(lead(4, "x"), Some("k4".into()))
                .await
                .unwrap()
                .replayed
        );
        drop(j);
        let j = loop {
            match Journal::open(&path, Duration::from_secs(60)) {
                Ok(j) => break j,
                Err(JournalError::Locked(_)) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(j.backlog(), 2);
    }

    #[tokio::test]
    async fn an_arriving_payload_nested_too_deep_is_quarantined_not_journaled() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.redb"), Duration::from_secs(60)).unwrap();
        let mut deep = event(2);
        deep.payload = nested(MAX_PAYLOAD_DEPTH + 1);
        let mut edge = event(3);
        edge.payload = nested(MAX_PAYLOAD_DEPTH);
        edge.payload["n"] = json!(3);
        j.append_pulled("crm", vec![event(1), deep.clone(), edge], b"{}".to_vec())
            .await
            .unwrap();
        let read = j.read_after(0, 10).unwrap();
        assert_eq!(read.iter().map(n_of).collect::<Vec<_>>(), [1, 3]);
        assert_eq!((j.backlog(), j.quarantined_count()), (2, 1));
        let q = j.quarantined(0, 10).unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].stage, Stage::Intake);
        assert_eq!(q[0].event_id.as_deref(), Some(deep.event_id.as_str()));
        assert_eq!(q[0].connector.as_deref(), Some("webform"));
        assert!(q[0].reason.contains("65 levels"), "{}", q[0].reason);
        let kept: IntakeEvent = serde_json::from_str(&q[0].record).unwrap();
        assert_eq!(kept, deep, "the record is kept verbatim");
    }

    #[tokio::test]
    async fn a_record_that_no_longer_decodes_is_read_back_as_it_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.redb");
        let reopen = || async {
            loop {
                match Journal::open(&path, Duration::from_secs(60)) {
                    Ok(j) => break j,
                    Err(JournalError::Locked(_)) => {
                        tokio::time::sleep(Duration::from_millis(10)).await
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        };
        let j = reopen().await;
        j.append(event(1), None).await.unwrap();
        // What an older version journaled: 127 levels, past serde_json's recursion limit.
        let mut poison = event(2);
        poison.payload = nested(127);
        let record = serde_json::to_vec(&poison).unwrap();
        let seq = j.insert_raw(&record);
        drop(j);
        let j = reopen().await;
        j.append(event(3), None).await.unwrap();
        let read = j.read_after(0, 10).unwrap();
        assert_eq!(read.len(), 3);
        let Journaled::Undecodable {
            record: stored,
            error,
        } = &read[1].1
        else {
            panic!("{:?}", read[1]);
        };
        assert_eq!(stored, &record);
        assert!(error.contains("recursion limit"), "{error}");
        j.quarantine(seq, Stage::Decode, error, stored).unwrap();
        // Again, as after a crash before the acknowledgement: one entry.
        j.quarantine(seq, Stage::Decode, error, stored).unwrap();
        assert_eq!(j.quarantined_count(), 1);
        let q = &j.quarantined(0, 10).unwrap()[0];
        assert_eq!(
            (q.seq, q.event_id.as_deref(), q.stage),
            (seq, Some(poison.event_id.as_str()), Stage::Decode)
        );
        assert_eq!(q.record.as_bytes(), record.as_slice());
        j.ack_through(read[2].0).unwrap();
        assert_eq!(j.backlog(), 0);
        drop(j);
        assert_eq!(
            reopen().await.quarantined_count(),
            1,
            "the count survives a restart"
        );
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
        let left: Vec<u64> = j.read_after(0, 10).unwrap().iter().map(n_of).collect();
        assert_eq!(left, [2, 3, 4]);
        assert_eq!(j.backlog(), 3);
        let receipt = j.append(event(9), None).await.unwrap();
        let all = j.read_after(0, 10).unwrap();
        assert!(
            matches!(&all.last().unwrap().1, Journaled::Event(e) if e.event_id == receipt.event_id)
        );
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
        let read: Vec<u64> = j.read_after(0, 10).unwrap().iter().map(n_of).collect();
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
