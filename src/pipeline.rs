//! The pipeline: journaled events → map → normalize/validate → identity → assign → records, and
//! the delivery loop that moves records to the sink and acknowledges the journal only after the
//! sink confirmed them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use phonenumber::country;
use serde_json::value::RawValue;
use tokio::sync::watch;

use crate::assign::Assigner;
use crate::config::{ConnectorConfig, FieldMapping, TestLeads, Topics};
use crate::identity::{IdentityError, IdentityStore, Policy, RequestInput, Resolution};
use crate::intake::{Journal, JournalError, Journaled, Stage};
use crate::lead::{
    IntakeEvent, Issue, LeadRecord, MergedRecord, SCHEMA_VERSION, SourceKind, SourceRef,
    now_rfc3339,
};
use crate::mapping::Mapper;
use crate::normalize::{NormalizedLead, normalize};
use crate::sinks::{HealthReport, OutRecord, Sink, SinkError};

/// How one event came out, for summaries and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    Accepted {
        merged: bool,
    },
    Rejected {
        codes: Vec<String>,
    },
    /// A platform redelivered a lead already ingested (same connector and platform lead id):
    /// nothing is published.
    Duplicate,
    /// A platform's test lead, published to the test topic only.
    Test,
}

/// A connector's mapping and region, compiled once.
struct Profile {
    mapper: Mapper,
    region: country::Id,
    identity_fields: BTreeMap<String, String>,
    /// A platform's payload -> the flat fields the mapping reads (the payload itself otherwise).
    fields: Option<crate::mapping::FieldsFn>,
    test_leads: TestLeads,
}

impl Profile {
    fn new(mapping: &FieldMapping, region: &str) -> Self {
        Self {
            mapper: Mapper::new(mapping),
            region: region.parse().unwrap_or(country::Id::CN),
            identity_fields: BTreeMap::new(),
            fields: None,
            test_leads: TestLeads::Topic,
        }
    }

    fn of(c: &ConnectorConfig) -> Self {
        let (mapping, fields) = crate::sources::shape(c);
        let mut p = Self::new(&mapping, c.default_region());
        p.fields = fields;
        p.identity_fields = c.identity_fields().clone();
        p.test_leads = c.test_leads();
        p
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Assign(#[from] crate::assign::AssignError),
    #[error("cannot serialize a record: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// Turns events into publishable records. Stateless but for the identity store.
pub struct Processor {
    profiles: HashMap<String, Profile>,
    fallback: Profile,
    identity: Arc<dyn IdentityStore>,
    policy: Policy,
    assigner: Assigner,
    topics: Topics,
}

impl Processor {
    pub fn new(
        connectors: &[ConnectorConfig],
        topics: Topics,
        identity: Arc<dyn IdentityStore>,
        policy: Policy,
        assigner: Assigner,
    ) -> Self {
        let profiles = connectors
            .iter()
            .map(|c| (c.name().to_owned(), Profile::of(c)))
            .collect();
        Self {
            profiles,
            fallback: Profile::new(&FieldMapping::new(), "CN"),
            identity,
            policy,
            assigner,
            topics,
        }
    }

    /// Makes the identity store's resolutions so far durable (see [`IdentityStore::sync`]).
    pub fn sync(&self) -> Result<(), PipelineError> {
        Ok(self.identity.sync()?)
    }

    /// A lead as `connector` would clean it, without identity or assignment (for previews).
    pub fn clean_record(&self, connector: &str, payload: &serde_json::Value) -> LeadRecord {
        let event = IntakeEvent::new(connector, SourceKind::Webhook, None, payload.clone());
        let (lead, custom) = self.clean(&event);
        record_of(&event, lead, custom)
    }

    /// Maps and normalizes an event with its connector's profile; the unmapped fields.
    fn clean(
        &self,
        e: &IntakeEvent,
    ) -> (NormalizedLead, serde_json::Map<String, serde_json::Value>) {
        let profile = self.profile(e);
        let read;
        let payload = match &profile.fields {
            Some(fields) => {
                read = fields(&e.payload);
                &read
            }
            None => &e.payload,
        };
        let mapped = profile.mapper.map(payload);
        (normalize(&mapped, profile.region), mapped.custom)
    }

    fn profile(&self, e: &IntakeEvent) -> &Profile {
        self.profiles.get(&e.connector).unwrap_or(&self.fallback)
    }

    /// A test lead its connector sends to the test topic: no identity, no assignment.
    fn to_test_topic(&self, e: &IntakeEvent) -> bool {
        e.test && self.profile(e).test_leads == TestLeads::Topic
    }

    /// Processes `events` in order. Records come out in event order; a merge record follows the
    /// clean record of the event that caused it.
    pub fn process(
        &self,
        events: &[IntakeEvent],
    ) -> Result<(Vec<OutRecord>, Vec<Disposition>), PipelineError> {
        let cleaned: Vec<_> = events.iter().map(|e| self.clean(e)).collect();
        let requests: Vec<_> = events
            .iter()
            .zip(&cleaned)
            .filter(|(e, _)| !self.to_test_topic(e))
            .map(|(e, (lead, custom))| {
                let profile = self.profile(e);
                self.policy.request(RequestInput {
                    event_id: &e.event_id,
                    connector: &e.connector,
                    external_id: e.external_id.as_deref(),
                    revision: e.revision.as_deref(),
                    received_at: &e.received_at,
                    lead,
                    custom,
                    identity_fields: &profile.identity_fields,
                })
            })
            .collect();
        let mut resolutions = self.identity.resolve(&requests)?.into_iter();

        // Stage every event, then assign the clean ones in one batch, then serialize in order.
        enum Staged {
            Duplicate,
            Test(Box<LeadRecord>),
            Rejected(Box<LeadRecord>),
            Clean(Box<LeadRecord>, Option<MergedRecord>),
        }
        let mut staged = Vec::with_capacity(events.len());
        for (event, (lead, custom)) in events.iter().zip(cleaned) {
            if self.to_test_topic(event) {
                staged.push(Staged::Test(Box::new(record_of(event, lead, custom))));
                continue;
            }
            let resolution = resolutions.next().unwrap_or(Resolution::Unresolved);
            let outcome = match resolution {
                Resolution::Duplicate { first_event_id } => {
                    tracing::debug!(event_id = %event.event_id, %first_event_id, "platform redelivery dropped");
                    staged.push(Staged::Duplicate);
                    continue;
                }
                Resolution::Person(o) => Some(o),
                Resolution::Unresolved => None,
            };
            let mut record = record_of(event, lead, custom);
            let Some(outcome) = outcome else {
                let mut reasons = vec![Issue::new(
                    "contact",
                    "contact.unreachable",
                    "no usable phone number and no usable email",
                )];
                reasons.extend(
                    record
                        .issues
                        .iter()
                        .filter(|i| matches!(&*i.field, "phone" | "email" | "body"))
                        .cloned(),
                );
                record.reasons = Some(reasons);
                staged.push(Staged::Rejected(Box::new(record)));
                continue;
            };
            record.lead_id = Some(outcome.lead_id.clone());
            let merged = (!outcome.merged_lead_ids.is_empty()).then(|| MergedRecord {
                schema_version: SCHEMA_VERSION.into(),
                lead_id: outcome.lead_id.clone(),
                merged_lead_ids: outcome.merged_lead_ids.clone(),
                event_id: event.event_id.clone(),
                merged_at: now_rfc3339(),
            });
            record.identity = Some(outcome);
            staged.push(Staged::Clean(Box::new(record), merged));
        }
        let mut clean: Vec<&mut LeadRecord> = staged
            .iter_mut()
            .filter_map(|s| match s {
                Staged::Clean(r, _) => Some(&mut **r),
                _ => None,
            })
            .collect();
        self.assigner.assign(&mut clean)?;

        let mut records = Vec::with_capacity(events.len() + 1);
        let mut dispositions = Vec::with_capacity(events.len());
        for (event, s) in events.iter().zip(staged) {
            match s {
                Staged::Duplicate => dispositions.push(Disposition::Duplicate),
                Staged::Test(record) => {
                    records.push(self.out(&self.topics.test, &record.event_id, &record, event)?);
                    dispositions.push(Disposition::Test);
                }
                Staged::Rejected(record) => {
                    let codes = record
                        .reasons
                        .iter()
                        .flatten()
                        .map(|r| r.code.to_string())
                        .collect();
                    dispositions.push(Disposition::Rejected { codes });
                    records.push(self.out(
                        &self.topics.rejected,
                        &record.event_id,
                        &record,
                        event,
                    )?);
                }
                Staged::Clean(record, merged) => {
                    let key = record.lead_id.clone().unwrap_or_default();
                    records.push(self.out(&self.topics.clean, &key, &record, event)?);
                    if let Some(m) = &merged {
                        records.push(self.out(&self.topics.merged, &m.lead_id, m, event)?);
                    }
                    dispositions.push(Disposition::Accepted {
                        merged: merged.is_some(),
                    });
                }
            }
        }
        Ok((records, dispositions))
    }

    fn out<T: serde::Serialize>(
        &self,
        topic: &str,
        key: &str,
        value: &T,
        event: &IntakeEvent,
    ) -> Result<OutRecord, PipelineError> {
        Ok(OutRecord {
            topic: topic.to_owned(),
            key: key.to_owned(),
            value: RawValue::from_string(serde_json::to_string(value)?)?,
            headers: vec![
                ("event_id", event.event_id.clone()),
                ("source", event.connector.clone()),
                ("schema_version", SCHEMA_VERSION.to_owned()),
            ],
        })
    }
}

/// The record of a cleaned event, before identity and assignment.
fn record_of(
    event: &IntakeEvent,
    lead: NormalizedLead,
    custom: serde_json::Map<String, serde_json::Value>,
) -> LeadRecord {
    LeadRecord {
        schema_version: SCHEMA_VERSION.into(),
        event_id: event.event_id.clone(),
        lead_id: None,
        received_at: event.received_at.clone(),
        source: SourceRef {
            connector: event.connector.clone(),
            kind: event.kind,
            external_id: event.external_id.clone(),
            revision: event.revision.clone(),
            test: event.test,
        },
        contact: lead.contact,
        custom,
        raw: event.payload.clone(),
        issues: if event.issues.is_empty() {
            lead.issues
        } else {
            event.issues.iter().cloned().chain(lead.issues).collect()
        },
        identity: None,
        assignment: None,
        reasons: None,
    }
}

/// Counts of dispositions, for `import`'s summary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub accepted: u64,
    pub merged: u64,
    pub duplicates: u64,
    /// Test leads sent to the test topic.
    pub tests: u64,
    pub rejected: BTreeMap<String, u64>,
}

impl Summary {
    pub fn add(&mut self, d: &Disposition) {
        match d {
            Disposition::Accepted { merged } => {
                self.accepted += 1;
                self.merged += u64::from(*merged);
            }
            Disposition::Duplicate => self.duplicates += 1,
            Disposition::Test => self.tests += 1,
            Disposition::Rejected { codes } => {
                // The first reason is the verdict; the rest explain it.
                let code = codes.get(1).or(codes.first()).cloned().unwrap_or_default();
                *self.rejected.entry(code).or_default() += 1;
            }
        }
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

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
    health: HealthReport,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut committed = journal.committed();
    let mut cursor = 0u64;
    let mut backoff = crate::retry::forever();
    let mut failures = 0u32;
    let mut unacked = Unacked::default();
    loop {
        if *shutdown.borrow() {
            unacked.acknowledge(&journal, &processor, &health).await;
            return;
        }
        let isolate = failures >= ISOLATE_AFTER;
        let batch = if isolate { 2 } else { batch_size };
        match step(&journal, &processor, &mut sink, cursor, batch, isolate).await {
            Ok(Some((last, n))) => {
                cursor = last;
                backoff = crate::retry::forever();
                failures = 0;
                health.ok();
                unacked.delivered(last, n);
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
                    _ = tokio::time::sleep(retry.unwrap_or_default()), if retry.is_some() => {}
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
                health.failing(e.to_string());
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}

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
}

const ACK_EVENTS: usize = 5_000;
const ACK_INTERVAL: Duration = Duration::from_millis(100);

impl Unacked {
    fn delivered(&mut self, last: u64, events: usize) {
        self.last = Some(last);
        self.events += events;
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
        let done = tokio::task::spawn_blocking(move || -> Result<(), StepError> {
            p.sync()?;
            Ok(j.ack_through(last)?)
        })
        .await
        .map_err(StepError::from)
        .and_then(|r| r);
        match done {
            Ok(()) => {
                *self = Self::default();
                health.ok();
                true
            }
            Err(e) => {
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
) -> Result<Option<(u64, usize)>, StepError> {
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
            }
        }
    }
    let (records, last) =
        if isolate {
            match isolated(journal, processor, events).await? {
                Some(done) => done,
                // Only undecodable records were read, now quarantined.
                None => (Vec::new(), last),
            }
        } else {
            let records =
                match process_blocking(processor, events.iter().map(|(_, e)| e.clone()).collect())
                    .await
                {
                    Ok(records) => records,
                    Err(Fault::Poison(_)) => one_by_one(journal, processor, events).await?,
                    Err(Fault::Failed(e)) => return Err(e),
                };
            (records, last)
        };
    sink.deliver(&records).await?;
    Ok(Some((last, n)))
}

/// Why processing failed: a fault of the events themselves (a panic, a record that cannot be
/// serialized), which happens again every time, or anything else, which may pass.
enum Fault {
    Poison(String),
    Failed(StepError),
}

async fn process_blocking(
    processor: &Arc<Processor>,
    events: Vec<IntakeEvent>,
) -> Result<Vec<OutRecord>, Fault> {
    let p = processor.clone();
    match tokio::task::spawn_blocking(move || p.process(&events)).await {
        Ok(Ok((records, _))) => Ok(records),
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
) -> Result<Vec<OutRecord>, StepError> {
    let mut records = Vec::new();
    for (seq, event) in events {
        match process_blocking(processor, vec![event.clone()]).await {
            Ok(r) => records.extend(r),
            Err(Fault::Poison(reason)) => set_aside(journal, seq, &event, reason).await?,
            Err(Fault::Failed(e)) => return Err(e),
        }
    }
    Ok(records)
}

/// After failures in a row: the first event alone, then (if it failed) the second alone. When
/// the second passes, the first is the fault: it is quarantined with its error. The records, and
/// the sequence of the last event they cover.
async fn isolated(
    journal: &Journal,
    processor: &Arc<Processor>,
    events: Vec<(u64, IntakeEvent)>,
) -> Result<Option<(Vec<OutRecord>, u64)>, StepError> {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assign::EmbeddedAssignmentStore;
    use crate::identity::{Cluster, IdentityRequest};
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
