//! Sinks: where published records go. A sink's `deliver` returns only when every record is
//! durably accepted downstream (fsynced to disk, or acknowledged by all in-sync Kafka replicas);
//! only then does the pipeline acknowledge the journal.

mod dry_run;
mod kafka;
mod spool;

pub use dry_run::DryRunSink;
pub(crate) use kafka::client_config;
pub use kafka::{KafkaSink, check as check_kafka};
pub use spool::{SpoolSink, erase_in as erase_lines, record_of as spool_record};

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::watch;

/// One record to publish.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub topic: String,
    /// `lead_id` for clean and merge records, `event_id` for rejected ones.
    pub key: String,
    /// The record, serialized once.
    pub value: Box<RawValue>,
    /// Sent as Kafka headers: `event_id`, `source`, `schema_version`.
    pub headers: Vec<(&'static str, String)>,
}

impl OutRecord {
    /// A record of `value` as JSON.
    pub fn json<T: serde::Serialize>(
        topic: &str,
        key: &str,
        value: &T,
        headers: Vec<(&'static str, String)>,
    ) -> Self {
        Self {
            topic: topic.to_owned(),
            key: key.to_owned(),
            value: serde_json::value::to_raw_value(value)
                .unwrap_or_else(|_| RawValue::NULL.to_owned()),
            headers,
        }
    }

    /// A tombstone: `key` with no value, so that a compacted topic forgets it (an erasure).
    /// Kafka gets a null value; the embedded output writes nothing.
    pub fn tombstone(topic: &str, key: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            key: key.to_owned(),
            value: RawValue::NULL.to_owned(),
            headers: Vec::new(),
        }
    }

    pub fn is_tombstone(&self) -> bool {
        self.value.get() == "null"
    }

    /// The `event_id` header.
    pub fn event_id(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| *k == "event_id")
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("delivery stopped: shutting down")]
    Shutdown,
}

/// Where an output stood before a batch was delivered: each topic's file length (the embedded
/// output), or each Kafka partition's offset. What a batch in doubt after a crash delivered is
/// found after these positions.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Positions {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub partitions: BTreeMap<String, BTreeMap<i32, i64>>,
}

/// A record's topic and `event_id`.
pub type Landed = HashSet<(String, String)>;

/// The configured output.
pub enum Sink {
    Spool(SpoolSink),
    Kafka(KafkaSink),
    DryRun(DryRunSink),
}

impl Sink {
    /// Delivers `records` in order. Kafka retries by itself until delivered or shut down; a spool
    /// or dry-run error is returned for the caller to retry.
    pub async fn deliver(&mut self, records: &[OutRecord]) -> Result<(), SinkError> {
        match self {
            Self::Spool(s) => s.deliver(records),
            Self::Kafka(k) => k.deliver(records).await,
            Self::DryRun(d) => d.deliver(records),
        }
    }

    /// Where `topics` stand now (see [`Positions`]); nothing for a dry run.
    pub async fn positions(&mut self, topics: &[&str]) -> Result<Positions, SinkError> {
        match self {
            Self::Spool(s) => s.positions(topics),
            Self::Kafka(k) => k.positions(topics).await,
            Self::DryRun(_) => Ok(Positions::default()),
        }
    }

    /// The records that reached the output after `at`: their topics and event ids.
    pub async fn landed(&self, at: &Positions) -> Result<Landed, SinkError> {
        match self {
            Self::Spool(s) => s.landed(at),
            Self::Kafka(k) => k.landed(at).await,
            Self::DryRun(_) => Ok(Landed::new()),
        }
    }

    /// Where a person can look at the output, for the start-up banner.
    pub fn describe(&self) -> String {
        match self {
            Self::Spool(s) => format!(
                "embedded output: JSON lines per topic in {}",
                s.dir().display()
            ),
            Self::Kafka(k) => format!("kafka output: brokers {}", k.brokers()),
            Self::DryRun(_) => "dry run: records are written out, nothing is published".into(),
        }
    }
}

/// What `/readyz` knows about delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryHealth {
    /// The last delivery error, cleared by the next success.
    pub last_error: Option<String>,
}

/// Where the delivery loop and the sinks report failures and recoveries; cheap to clone.
#[derive(Clone)]
pub struct HealthReport(Arc<watch::Sender<DeliveryHealth>>);

impl HealthReport {
    pub fn new() -> (Self, watch::Receiver<DeliveryHealth>) {
        let (tx, rx) = watch::channel(DeliveryHealth::default());
        (Self(Arc::new(tx)), rx)
    }

    pub fn failing(&self, error: String) {
        self.0.send_replace(DeliveryHealth {
            last_error: Some(error),
        });
    }

    pub fn ok(&self) {
        self.0.send_if_modified(|h| h.last_error.take().is_some());
    }
}
