//! Carrying erasures out, in the delivery loop (which owns the sink and is the only writer of the
//! identity store): one request after the other, each step safe to run again.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Erasure, Erasures, Hash, Removed, Status, held_hash};
use crate::identity::{EMAIL, IdentityKey, PHONE};
use crate::intake::Journal;
use crate::pipeline::Processor;
use crate::sinks::{OutRecord, Sink};

/// Who an erasure is about: the salted hashes of their phone numbers and addresses, their lead
/// ids and the events that made them.
#[derive(Clone)]
pub struct ErasureTarget {
    erasures: Arc<Erasures>,
    pub hashes: HashSet<Hash>,
    pub lead_ids: HashSet<String>,
    pub event_ids: HashSet<String>,
}

impl ErasureTarget {
    fn of(erasures: &Arc<Erasures>, e: &Erasure) -> Self {
        Self {
            erasures: erasures.clone(),
            hashes: e.identities.iter().filter_map(held_hash).collect(),
            lead_ids: e
                .identities
                .iter()
                .filter_map(|h| h.lead_id.clone())
                .chain(e.lead_ids.iter().cloned())
                .collect(),
            event_ids: e.event_ids.iter().cloned().collect(),
        }
    }

    /// Whether `key` is one of the person's phone numbers or addresses.
    pub fn hit(&self, key: &IdentityKey) -> bool {
        (key.kind == PHONE || key.kind == EMAIL)
            && !self.hashes.is_empty()
            && self.hashes.contains(&self.erasures.hash_of(key))
    }

    /// Whether an output record (clean, rejected, merged or test) is about the person.
    pub fn record_hit(&self, record: &serde_json::Value) -> bool {
        let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
        let lead = |v: Option<&serde_json::Value>| {
            v.and_then(|v| v.as_str())
                .is_some_and(|l| self.lead_ids.contains(l))
        };
        if lead(record.get("lead_id"))
            || record
                .get("merged_lead_ids")
                .and_then(|v| v.as_array())
                .is_some_and(|ids| ids.iter().any(|l| lead(Some(l))))
            || record
                .get("event_id")
                .and_then(|v| v.as_str())
                .is_some_and(|e| self.event_ids.contains(e))
        {
            return true;
        }
        let contact = record.get("contact");
        let phone = contact.and_then(|c| c.get("phone")).and_then(text);
        let email = contact.and_then(|c| c.get("email")).and_then(text);
        phone.is_some_and(|p| self.hit(&IdentityKey::new(PHONE, p)))
            || email.is_some_and(|e| self.hit(&IdentityKey::new(EMAIL, e)))
    }
}

/// Carries out every erasure that waits. An error leaves the rest for the next attempt (each
/// step can be run again).
pub async fn run(
    erasures: &Arc<Erasures>,
    journal: &Journal,
    processor: &Arc<Processor>,
    sink: &mut Sink,
) -> Result<usize, String> {
    let pending = erasures.take_pending().map_err(|e| e.to_string())?;
    let mut done = 0;
    for mut e in pending {
        let started = std::time::Instant::now();
        if let Err(why) = carry_out(erasures, journal, processor, sink, &mut e).await {
            erasures.retry_later();
            crate::telemetry::erasure("failed");
            return Err(format!("erasure {}: {why}", e.subject_request_id));
        }
        crate::telemetry::erasure("completed");
        tracing::info!(
            erasure = %e.subject_request_id,
            people = e.lead_ids.len(),
            seconds = started.elapsed().as_secs_f64(),
            "erasure completed"
        );
        done += 1;
    }
    Ok(done)
}

async fn carry_out(
    erasures: &Arc<Erasures>,
    journal: &Journal,
    processor: &Arc<Processor>,
    sink: &mut Sink,
    e: &mut Erasure,
) -> Result<(), String> {
    let fail = |what: &'static str| move |err: String| format!("{what}: {err}");
    let blocking = |f: Box<dyn FnOnce() -> Result<(), String> + Send>| async move {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| format!("panicked: {e}"))?
    };
    e.request_status = Status::InProgress;
    erasures.save(e).map_err(|x| x.to_string())?;

    // Who: the people the identities lead to, kept before anything is removed, and their other
    // phone numbers and addresses put on the suppression list.
    let mut target = ErasureTarget::of(erasures, e);
    let found = {
        let (p, t) = (processor.clone(), target.clone());
        tokio::task::spawn_blocking(move || {
            let lead_ids: Vec<String> = t.lead_ids.iter().cloned().collect();
            p.identity()
                .erasable(&|k: &IdentityKey| t.hit(k), &lead_ids)
        })
        .await
        .map_err(|e| format!("panicked: {e}"))?
        .map_err(|x| format!("finding the people: {x}"))?
    };
    let more: Vec<Hash> = found
        .keys
        .iter()
        .filter(|k| k.kind == PHONE || k.kind == EMAIL)
        .map(|k| erasures.hash_of(k))
        .filter(|h| !target.hashes.contains(h))
        .collect();
    erasures
        .suppress(&e.subject_request_id, &more)
        .map_err(|x| x.to_string())?;
    target.hashes.extend(more);
    for id in &found.lead_ids {
        if !e.lead_ids.contains(id) {
            e.lead_ids.push(id.clone());
        }
    }
    for id in &found.event_ids {
        if !e.event_ids.contains(id) {
            e.event_ids.push(id.clone());
        }
    }
    target.lead_ids.extend(e.lead_ids.iter().cloned());
    target.event_ids.extend(e.event_ids.iter().cloned());
    erasures.save(e).map_err(|x| x.to_string())?;

    // The identity store, then the assignment store, the journal and the output.
    let lead_ids = e.lead_ids.clone();
    let event_ids = e.event_ids.clone();
    {
        let (p, ids) = (processor.clone(), lead_ids.clone());
        blocking(Box::new(move || {
            p.identity().erase(&ids).map_err(|x| x.to_string())
        }))
        .await
        .map_err(fail("the identity store"))?;
    }
    {
        let (p, leads, events) = (processor.clone(), lead_ids.clone(), event_ids.clone());
        blocking(Box::new(move || {
            p.assigner()
                .store()
                .erase(&leads, &events)
                .map_err(|x| x.to_string())
        }))
        .await
        .map_err(fail("the assignment store"))?;
    }
    let journal_events = {
        let (p, t) = (processor.clone(), target.clone());
        let events = t.event_ids.clone();
        journal
            .erase(
                Box::new(move |event| {
                    t.event_ids.contains(&event.event_id)
                        || p.event_keys(event).iter().any(|k| t.hit(k))
                }),
                events,
            )
            .await
            .map_err(|x| format!("the journal: {x}"))?
    };
    let output_records = match sink {
        Sink::Spool(spool) => {
            let t = target.clone();
            tokio::task::block_in_place(|| spool.erase(|record| t.record_hit(record)))
                .map_err(|x| format!("the embedded output: {x}"))?
        }
        _ => 0,
    };

    // The Kafka output's dead letters hold whole records.
    let dead_letters = match erasures.data_dir() {
        Some(dir) => {
            let t = target.clone();
            crate::sinks::erase_lines(&dir.join("dead-letter"), |line| {
                t.record_hit(line.get("value").unwrap_or(line))
            })
            .map_err(|x| format!("the dead letters: {x}"))?
        }
        None => 0,
    };
    let report_rows = match erasures.data_dir() {
        Some(dir) => {
            let (p, t, dir) = (processor.clone(), target.clone(), dir.to_owned());
            tokio::task::spawn_blocking(move || {
                crate::imports::erase_reports(&dir, |cell| {
                    p.search_keys(Some(cell), Some(cell))
                        .iter()
                        .any(|k| t.hit(k))
                })
            })
            .await
            .map_err(|e| format!("panicked: {e}"))?
            .map_err(|x| format!("the imports' reports: {x}"))?
        }
        None => 0,
    };

    // Tell the CRMs: a tombstone per lead id, and the erasure event.
    let topics = processor.topics();
    e.completed_time = Some(crate::lead::now_rfc3339());
    let mut records: Vec<OutRecord> = lead_ids
        .iter()
        .map(|id| OutRecord::tombstone(&topics.clean, id))
        .collect();
    records.push(OutRecord::json(
        &topics.erasures,
        &e.subject_request_id,
        &e.event(),
        vec![("schema_version", super::SCHEMA_VERSION.to_owned())],
    ));
    sink.deliver(&records)
        .await
        .map_err(|x| format!("publishing the tombstones: {x}"))?;
    e.removed = Some(Removed {
        people: lead_ids.len(),
        events: event_ids.len(),
        journal_events,
        output_records: output_records + report_rows + dead_letters,
        tombstones: lead_ids.len(),
    });
    e.request_status = Status::Completed;
    erasures.save(e).map_err(|x| x.to_string())
}

/// `[privacy] retention` and `output_retention`, enforced by the delivery loop every `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub identity: Option<std::time::Duration>,
    pub output: Option<std::time::Duration>,
    pub every: std::time::Duration,
}

/// When an output record happened: its `received_at` (leads), `merged_at`, `erased_at`.
fn record_time(v: &serde_json::Value) -> Option<jiff::Timestamp> {
    ["received_at", "merged_at", "erased_at", "at"]
        .iter()
        .find_map(|k| v.get(*k)?.as_str()?.parse().ok())
}

/// Forgets the people and removes the output records older than the retention: the identity
/// store is rewritten without them (see [`crate::identity::IdentityStore::erase`]), so that its
/// size follows the people kept. Returns how many people and records went.
pub async fn retain(
    r: &Retention,
    processor: &Arc<Processor>,
    sink: &mut Sink,
) -> Result<(usize, u64), String> {
    let now = crate::lead::now();
    let ago = |d: std::time::Duration| {
        jiff::SignedDuration::try_from(d)
            .ok()
            .and_then(|d| now.checked_sub(d).ok())
            .unwrap_or(jiff::Timestamp::MIN)
    };
    let mut people = 0;
    if let Some(keep) = r.identity {
        let (p, before) = (processor.clone(), ago(keep));
        people = tokio::task::spawn_blocking(move || -> Result<usize, String> {
            let found = p.identity().expired(before).map_err(|e| e.to_string())?;
            if found.lead_ids.is_empty() {
                return Ok(0);
            }
            p.identity()
                .erase(&found.lead_ids)
                .map_err(|e| format!("the identity store: {e}"))?;
            p.assigner()
                .store()
                .erase(&found.lead_ids, &found.event_ids)
                .map_err(|e| format!("the assignment store: {e}"))?;
            Ok(found.lead_ids.len())
        })
        .await
        .map_err(|e| format!("panicked: {e}"))??;
    }
    let mut records = 0;
    if let (Some(keep), Sink::Spool(spool)) = (r.output, sink) {
        let before = ago(keep);
        records = tokio::task::block_in_place(|| {
            spool.erase(|v| record_time(v).is_some_and(|t| t < before))
        })
        .map_err(|e| format!("the embedded output: {e}"))?;
    }
    crate::telemetry::retained(people as u64, records);
    if people > 0 || records > 0 {
        tracing::info!(
            people,
            records,
            "retention: expired people and records removed"
        );
    }
    Ok((people, records))
}
