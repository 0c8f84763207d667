//! The gateway's lifecycle tasks (see [`crate::assign::lifecycle`]): follow-up deadlines checked
//! and reassignments published on `[topics] assignments`; CRM status reports consumed from
//! `[topics] status` in a consumer group, and read from `POST /v1/leads/{id}/status`.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::assign::AssignmentStore;
use crate::assign::model::FieldError;
use crate::assign::store::{STATUSES, StatusOutcome, StatusReport};
use crate::sinks::{OutRecord, Sink};

/// Reassignments taken back and published per round, at most.
const ROUND: usize = 500;

/// Every `every`: takes back the leads whose follow-up deadline passed, and publishes what the
/// outbox holds on `topic`, until `shutdown`.
pub async fn follow_ups(
    store: Arc<dyn AssignmentStore>,
    mut sink: Sink,
    topic: String,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        if let Err(e) = round(&store, &mut sink, &topic).await {
            crate::telemetry::lifecycle_failed("follow_up");
            tracing::warn!(error = %e, "follow-up check failed; retried at the next one");
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::assign::AssignError> + Send + 'static,
) -> anyhow::Result<T> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

/// One check: reclaim what is due, then publish the outbox. A record is forgotten only after the
/// sink confirmed it; a crash in between publishes it again (the same `reassignment_id`).
async fn round(
    store: &Arc<dyn AssignmentStore>,
    sink: &mut Sink,
    topic: &str,
) -> anyhow::Result<()> {
    let s = store.clone();
    let taken = blocking(move || s.reclaim(crate::lead::now(), ROUND)).await?;
    if taken > 0 {
        tracing::info!(taken, "leads not followed up in time were taken back");
    }
    loop {
        let s = store.clone();
        let queued = blocking(move || s.outbox(ROUND)).await?;
        if queued.is_empty() {
            return Ok(());
        }
        let mut records = Vec::with_capacity(queued.len());
        for (_, v) in &queued {
            let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            crate::telemetry::reassigned(
                if v["pool"] == true {
                    "pool"
                } else {
                    "reassigned"
                },
                1,
            );
            records.push(OutRecord {
                topic: topic.to_owned(),
                key: text("lead_id"),
                value: serde_json::value::to_raw_value(v)?,
                headers: vec![
                    ("reassignment_id", text("reassignment_id")),
                    ("schema_version", text("schema_version")),
                ],
            });
        }
        sink.deliver(&records).await?;
        let seqs: Vec<u64> = queued.iter().map(|(seq, _)| *seq).collect();
        let s = store.clone();
        blocking(move || s.published(&seqs)).await?;
        if queued.len() < ROUND {
            return Ok(());
        }
    }
}

/// A status report as a CRM writes it: the HTTP body (the lead in the URL) or a Kafka message
/// (`lead_id` in it, or the message key).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    #[serde(default)]
    lead_id: Option<String>,
    status_id: String,
    status: String,
    #[serde(default)]
    at: Option<String>,
}

/// Reads and checks a status report; every problem names its field. `strict` refuses fields it
/// does not know (the HTTP API); a Kafka message may carry more (the CRM's own).
pub fn parse_status(
    value: &Value,
    strict: bool,
) -> Result<(Option<String>, StatusReport), FieldError> {
    let mut value = value.clone();
    if !strict && let Some(o) = value.as_object_mut() {
        o.retain(|k, _| ["lead_id", "status_id", "status", "at"].contains(&k.as_str()));
    }
    let b: StatusBody = crate::assign::model::parse(&value)?;
    if b.status_id.trim().is_empty() || b.status_id.len() > 128 {
        return Err(FieldError::new(
            "status_id",
            "the CRM's id of this report, 1-128 characters",
        ));
    }
    if !STATUSES.contains(&b.status.as_str()) {
        return Err(FieldError::new(
            "status",
            format!("one of {}", STATUSES.join(", ")),
        ));
    }
    if b.lead_id
        .as_ref()
        .is_some_and(|l| l.trim().is_empty() || l.len() > 64)
    {
        return Err(FieldError::new("lead_id", "a lead id, 1-64 characters"));
    }
    let at = match &b.at {
        None => crate::lead::now(),
        Some(t) => t.parse::<jiff::Timestamp>().map_err(|_| {
            FieldError::new("at", "an RFC 3339 time, e.g. 2026-12-01T10:00:00+08:00")
        })?,
    };
    Ok((
        b.lead_id,
        StatusReport {
            status_id: b.status_id,
            status: b.status,
            // One format, so that the times order as text.
            at: crate::lead::rfc3339_millis(at),
        },
    ))
}

/// The outcome's label for `leadgate_status_reports_total`.
pub fn outcome_label(o: &StatusOutcome) -> &'static str {
    match (o.duplicate, o.applied) {
        (true, _) => "duplicate",
        (false, true) => "applied",
        (false, false) => "stale",
    }
}

/// Applies the status reports CRMs produce to `topic`, in consumer group `group`, until
/// `shutdown`. An offset is committed only after its report is stored; a report that cannot be
/// read is logged and skipped; a store that fails is retried (the report is never dropped).
pub async fn consume_status(
    kafka: crate::config::KafkaSettings,
    topic: String,
    group: String,
    store: Arc<dyn AssignmentStore>,
    mut shutdown: watch::Receiver<bool>,
) {
    use rdkafka::Message;
    use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};

    let consumer: StreamConsumer = match crate::sinks::client_config(&kafka)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            crate::telemetry::lifecycle_failed("status_consumer");
            return tracing::error!(error = %e, "cannot create the status consumer; CRM status reports on Kafka are not read");
        }
    };
    if let Err(e) = consumer.subscribe(&[&topic]) {
        crate::telemetry::lifecycle_failed("status_consumer");
        return tracing::error!(error = %e, %topic, "cannot subscribe to the status topic");
    }
    tracing::info!(%topic, %group, "reading CRM status reports");
    loop {
        let msg = tokio::select! {
            m = consumer.recv() => m,
            _ = shutdown.changed() => return,
        };
        let m = match msg {
            Ok(m) => m,
            Err(e) => {
                crate::telemetry::lifecycle_failed("status_consumer");
                tracing::warn!(error = %e, "status consumer: kafka error; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return,
                }
                continue;
            }
        };
        let parsed = serde_json::from_slice::<Value>(m.payload().unwrap_or_default())
            .map_err(|e| FieldError::new("", format!("not JSON: {e}")))
            .and_then(|v| parse_status(&v, false))
            .and_then(|(lead, report)| {
                let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
                match lead.or(key).filter(|l| !l.trim().is_empty()) {
                    Some(l) => Ok((l, report)),
                    None => Err(FieldError::new(
                        "lead_id",
                        "missing: give lead_id in the message or as its key",
                    )),
                }
            });
        match parsed {
            Err(e) => {
                crate::telemetry::status_report("kafka", "invalid");
                tracing::warn!(partition = m.partition(), offset = m.offset(), field = %e.field, why = %e.message, "a status report on the status topic cannot be read; skipped");
            }
            Ok((lead_id, report)) => {
                let mut backoff = crate::retry::forever();
                loop {
                    let (s, l, r) = (store.clone(), lead_id.clone(), report.clone());
                    match blocking(move || s.report_status(&l, &r)).await {
                        Ok(o) => {
                            crate::telemetry::status_report("kafka", outcome_label(&o));
                            break;
                        }
                        Err(e) => {
                            crate::telemetry::lifecycle_failed("status_consumer");
                            let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                            tracing::warn!(error = %e, retry_in = ?delay, "storing a status report failed; retrying");
                            tokio::select! {
                                _ = tokio::time::sleep(delay) => {}
                                _ = shutdown.changed() => return,
                            }
                        }
                    }
                }
            }
        }
        if let Err(e) = consumer.commit_message(&m, CommitMode::Async) {
            tracing::warn!(error = %e, "status consumer: cannot commit the offset; the report may be applied again (idempotent)");
        }
    }
}
