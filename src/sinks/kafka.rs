//! The Kafka sink: an idempotent producer (`acks=all`, `enable.idempotence=true`) keyed by
//! `lead_id`. Errors are split three ways:
//! - retriable (broker down, timeouts, leader changes): the failed records are sent again with
//!   exponential backoff (`backon`), forever; meanwhile the journal buffers on disk;
//! - fatal (the idempotent producer's state is lost): the producer is recreated, then as retriable;
//! - permanent (a record Kafka will never take, e.g. too large): the record goes to a dead-letter
//!   file under the data directory, fsynced, so nothing is dropped silently.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::watch;

use super::{HealthReport, Landed, OutRecord, Positions, SinkError};
use crate::config::{KafkaSettings, Topics};

pub struct KafkaSink {
    settings: KafkaSettings,
    producer: FutureProducer,
    dead_letter_dir: PathBuf,
    shutdown: watch::Receiver<bool>,
    health: HealthReport,
    /// Each partition written to: the offset after the last record delivered to it.
    delivered: HashMap<(String, i32), i64>,
    /// Each partition's high watermark when last asked (a topic not created yet: none, under
    /// partition -1), and when that was.
    watermarks: HashMap<(String, i32), i64>,
    asked: Option<Instant>,
}

/// How often [`KafkaSink::positions`] asks the brokers for the partitions' watermarks; between
/// times, the offsets of the records it delivered move them on.
const ASK_EVERY: Duration = Duration::from_secs(5);
/// How long [`KafkaSink::landed`] may read back before giving up.
const READ_BACK_FOR: Duration = Duration::from_secs(120);

/// Consecutive failed attempts after which the producer is recreated.
const RECREATE_AFTER: u32 = 3;

enum Failure {
    Retriable,
    Permanent,
}

fn classify(e: &KafkaError) -> Failure {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(
            C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::MessageBatchTooLarge
            | C::InvalidRecord
            | C::InvalidTopic,
        ) => Failure::Permanent,
        _ => Failure::Retriable,
    }
}

impl KafkaSink {
    /// Builds the producer and, if configured, creates missing topics in the background. A broker
    /// that is down at start is not an error and does not delay the start: records wait in the
    /// journal until it is back.
    pub async fn connect(
        settings: &KafkaSettings,
        topics: &Topics,
        dead_letter_dir: &Path,
        shutdown: watch::Receiver<bool>,
        health: HealthReport,
    ) -> Result<Self, SinkError> {
        let producer = producer(settings)?;
        if settings.create_topics {
            tokio::spawn(create_topics(settings.clone(), topics.clone()));
        }
        Ok(Self {
            settings: settings.clone(),
            producer,
            dead_letter_dir: dead_letter_dir.to_owned(),
            shutdown,
            health,
            delivered: HashMap::new(),
            watermarks: HashMap::new(),
            asked: None,
        })
    }

    /// Each partition of `topics`: the offset from which records delivered from now on are
    /// found. The larger of the high watermark (which tansu reports low: the last batch's first
    /// offset + 1; never past the end) and the offset after this sink's last record there. Asks
    /// the brokers at most every few seconds, and until they answer.
    pub async fn positions(&mut self, topics: &[&str]) -> Result<Positions, SinkError> {
        let mut backoff = crate::retry::forever();
        while self.asked.is_none_or(|t| t.elapsed() >= ASK_EVERY) {
            let client = self.producer.clone();
            let names: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
            let asked = tokio::task::spawn_blocking(move || watermarks(&client, &names))
                .await
                .map_err(|e| SinkError::Kafka(format!("asking for the watermarks: {e}")))?;
            match asked {
                Ok(w) => {
                    self.watermarks = w;
                    self.asked = Some(Instant::now());
                }
                Err(e) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                    tracing::warn!(error = %e, retry_in = ?delay, "kafka: cannot read the partitions' offsets; retrying");
                    self.health.failing(format!("kafka: {e}"));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.shutdown.changed() => return Err(SinkError::Shutdown),
                    }
                }
            }
        }
        let mut at = Positions::default();
        for ((topic, partition), &high) in &self.watermarks {
            let partitions = at.partitions.entry(topic.clone()).or_default();
            if *partition == NO_TOPIC {
                continue; // an empty map: every partition from its start
            }
            let ours = self
                .delivered
                .get(&(topic.clone(), *partition))
                .copied()
                .unwrap_or(0);
            partitions.insert(*partition, high.max(ours));
        }
        Ok(at)
    }

    /// Reads every partition of `at` from its offset to its end and gives the records found
    /// there (by their `event_id` header).
    pub async fn landed(&self, at: &Positions) -> Result<Landed, SinkError> {
        let (settings, at) = (self.settings.clone(), at.clone());
        tokio::task::spawn_blocking(move || read_back(&settings, &at))
            .await
            .map_err(|e| SinkError::Kafka(format!("reading back: {e}")))?
    }

    pub fn brokers(&self) -> &str {
        &self.settings.brokers
    }

    pub async fn deliver(&mut self, records: &[OutRecord]) -> Result<(), SinkError> {
        let mut pending: Vec<usize> = (0..records.len()).collect();
        let mut backoff = crate::retry::forever();
        let mut attempts = 0u32;
        loop {
            let failed = self.send_all(records, &pending).await;
            if failed.is_empty() {
                return Ok(());
            }
            let mut retry = Vec::new();
            let mut last_error = String::new();
            for (i, err) in failed {
                match classify(&err) {
                    Failure::Permanent => {
                        self.dead_letter(&records[i], &err)?;
                        crate::telemetry::kafka_dead_letter(&records[i].topic);
                    }
                    Failure::Retriable => {
                        last_error = err.to_string();
                        retry.push(i);
                    }
                }
            }
            attempts += 1;
            if let Some((code, reason)) = self.producer.client().fatal_error() {
                tracing::error!(?code, %reason, "kafka producer hit a fatal error; recreating it");
                self.producer = producer(&self.settings)?;
                crate::telemetry::kafka_producer_recreated("fatal_error");
            } else if attempts.is_multiple_of(RECREATE_AFTER) {
                // A broker that lost its idempotent-producer state (data loss, an unclean leader
                // election, a restarted broker) refuses this producer id for good. Every report
                // is in, so nothing is in flight: a new producer gets a new id.
                tracing::warn!(
                    attempts,
                    "kafka delivery keeps failing; recreating the producer"
                );
                self.producer = producer(&self.settings)?;
                crate::telemetry::kafka_producer_recreated("repeated_failures");
            }
            if retry.is_empty() {
                return Ok(());
            }
            let delay = backoff.next().unwrap_or(Duration::from_secs(30));
            tracing::warn!(records = retry.len(), error = %last_error, retry_in = ?delay, "kafka delivery failed; retrying");
            crate::telemetry::kafka_retries(retry.len() as u64);
            self.health.failing(format!(
                "kafka: {last_error} ({} records waiting)",
                retry.len()
            ));
            pending = retry;
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.shutdown.changed() => return Err(SinkError::Shutdown),
            }
        }
    }

    /// Sends the records at `indices` and waits for every delivery report; returns the failures.
    async fn send_all(
        &mut self,
        records: &[OutRecord],
        indices: &[usize],
    ) -> Vec<(usize, KafkaError)> {
        let mut failed = Vec::new();
        let mut inflight = Vec::with_capacity(indices.len());
        for &i in indices {
            let r = &records[i];
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for (k, v) in &r.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_str()),
                });
            }
            let mut record: FutureRecord<'_, String, str> =
                FutureRecord::to(&r.topic).key(&r.key).headers(headers);
            if !r.is_tombstone() {
                record = record.payload(r.value.get());
            }
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        crate::telemetry::kafka_in_flight(1.0);
                        inflight.push((i, delivery));
                        break;
                    }
                    // librdkafka's queue is full: wait for it to drain (backpressure), then resend.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => {
                        failed.push((i, e));
                        break;
                    }
                }
            }
        }
        for (i, delivery) in inflight {
            let report = delivery.await;
            crate::telemetry::kafka_in_flight(-1.0);
            match report {
                Ok(Ok(d)) => {
                    let next = self
                        .delivered
                        .entry((records[i].topic.clone(), d.partition))
                        .or_default();
                    *next = (*next).max(d.offset + 1);
                }
                Ok(Err((e, _))) => failed.push((i, e)),
                Err(_) => failed.push((i, KafkaError::Canceled)),
            }
        }
        failed
    }

    fn dead_letter(&self, record: &OutRecord, err: &KafkaError) -> Result<(), SinkError> {
        let path = self.dead_letter_dir.join(format!("{}.jsonl", record.topic));
        tracing::error!(topic = %record.topic, error = %err, file = %path.display(), "kafka refused a record for good; kept in the dead-letter file");
        let io = |source| SinkError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&self.dead_letter_dir).map_err(io)?;
        let line = serde_json::json!({"error": err.to_string(), "topic": record.topic, "key": record.key, "value": &record.value});
        // Sealed with a key, as the embedded output's lines (`leadgate output --dead-letter`).
        let line = super::spool::line_of(&line.to_string())?;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        f.write_all(&line).map_err(io)?;
        f.write_all(b"\n").map_err(io)?;
        f.sync_data().map_err(io)
    }
}

pub(crate) fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    for (k, v) in &settings.options {
        cfg.set(k, v);
    }
    cfg.set("bootstrap.servers", &settings.brokers);
    cfg
}

fn producer(settings: &KafkaSettings) -> Result<FutureProducer, SinkError> {
    let mut cfg = client_config(settings);
    cfg.set("acks", "all")
        .set("enable.idempotence", "true")
        .set(
            "message.timeout.ms",
            settings.message_timeout.as_millis().to_string(),
        );
    cfg.create()
        .map_err(|e| SinkError::Kafka(format!("cannot create the producer: {e}")))
}

/// The partition under which [`watermarks`] notes a topic that does not exist yet.
const NO_TOPIC: i32 = -1;

/// The high watermark of every partition of `topics`.
fn watermarks(
    client: &FutureProducer,
    topics: &[String],
) -> Result<HashMap<(String, i32), i64>, KafkaError> {
    let timeout = Duration::from_secs(10);
    let mut out = HashMap::new();
    for topic in topics {
        let metadata = client.client().fetch_metadata(Some(topic), timeout)?;
        for t in metadata.topics() {
            if t.error().is_some() || t.partitions().is_empty() {
                // Not created yet: whatever it holds later came after.
                out.insert((topic.clone(), NO_TOPIC), 0);
                continue;
            }
            for p in t.partitions() {
                let (_, high) = client.client().fetch_watermarks(topic, p.id(), timeout)?;
                out.insert((topic.clone(), p.id()), high);
            }
        }
    }
    Ok(out)
}

/// How long a read-back partition may stay silent before it is asked for its end again.
const QUIET_FOR: Duration = Duration::from_secs(3);

/// [`KafkaSink::landed`], blocking: for each topic, a consumer of no group assigned its
/// partitions at their offsets, read until each reports its end. An offset the broker calls out
/// of range is read from the partition's start instead: slower, never a record missed.
fn read_back(settings: &KafkaSettings, at: &Positions) -> Result<Landed, SinkError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::{Offset, TopicPartitionList};
    let fail = |e: KafkaError| SinkError::Kafka(format!("reading back what was delivered: {e}"));
    let mut landed = Landed::new();
    let deadline = Instant::now() + READ_BACK_FOR;
    for (topic, partitions) in &at.partitions {
        let mut cfg = client_config(settings);
        cfg.set("group.id", "leadgate-import-read-back")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed");
        let consumer: BaseConsumer = cfg.create().map_err(fail)?;
        let mut list = TopicPartitionList::new();
        for (&p, &offset) in partitions {
            list.add_partition_offset(topic, p, Offset::Offset(offset))
                .map_err(fail)?;
        }
        if partitions.is_empty() {
            // The topic did not exist then: every partition it has now, from its start.
            let metadata = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .map_err(fail)?;
            for t in metadata.topics().iter().filter(|t| t.error().is_none()) {
                for p in t.partitions() {
                    list.add_partition_offset(topic, p.id(), Offset::Beginning)
                        .map_err(fail)?;
                }
            }
        }
        consumer.assign(&list).map_err(fail)?;
        // One consumer per topic: an end-of-partition event names only the partition.
        let mut open: HashSet<i32> = list.elements().iter().map(|e| e.partition()).collect();
        let mut heard = Instant::now();
        while !open.is_empty() {
            if Instant::now() > deadline {
                return Err(SinkError::Kafka(format!(
                    "reading back what was delivered: {topic} did not reach its end in {READ_BACK_FOR:?}"
                )));
            }
            if heard.elapsed() > QUIET_FOR {
                // librdkafka sometimes reports a partition's end as a client-wide error that
                // names no partition (a "Global error: PartitionEOF" in the log): seeking the
                // quiet partitions to where they stand makes it report the end again.
                heard = Instant::now();
                let at = consumer.position().map_err(fail)?;
                for p in &open {
                    let offset = at
                        .find_partition(topic, *p)
                        .map(|e| e.offset())
                        .filter(|o| matches!(o, Offset::Offset(_)))
                        .or_else(|| partitions.get(p).map(|o| Offset::Offset(*o)))
                        .unwrap_or(Offset::Beginning);
                    let _ = consumer.seek(topic, *p, offset, Duration::from_secs(5));
                }
            }
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    heard = Instant::now();
                    open.remove(&p);
                }
                Some(Err(e)) => return Err(fail(e)),
                Some(Ok(m)) => {
                    heard = Instant::now();
                    let id = m.headers().and_then(|h| {
                        h.iter()
                            .find(|h| h.key == "event_id")
                            .and_then(|h| h.value)
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .map(str::to_owned)
                    });
                    if let Some(id) = id {
                        landed.insert((topic.clone(), id));
                    }
                }
            }
        }
    }
    Ok(landed)
}

/// Whether librdkafka takes `settings` (every option known, every value valid in this build):
/// `leadgate validate` asks this, so it fails where `run` would. Connects to nothing.
pub fn check(settings: &KafkaSettings) -> Result<(), SinkError> {
    producer(settings).map(drop)
}

async fn create_topics(settings: KafkaSettings, topics: Topics) {
    let admin: AdminClient<DefaultClientContext> = match client_config(&settings).create() {
        Ok(a) => a,
        Err(e) => {
            return tracing::warn!(error = %e, "cannot create a kafka admin client; topics not created");
        }
    };
    let new: Vec<NewTopic> = topics
        .created()
        .iter()
        .map(|t| {
            NewTopic::new(
                t,
                settings.topic_partitions,
                TopicReplication::Fixed(settings.topic_replication),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    match admin.create_topics(&new, &opts).await {
        Ok(results) => {
            for r in results {
                match r {
                    Ok(t) => tracing::info!(topic = %t, "created kafka topic"),
                    Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => {
                        tracing::debug!(topic = %t, "kafka topic exists")
                    }
                    Err((t, code)) => {
                        tracing::warn!(topic = %t, ?code, "cannot create kafka topic")
                    }
                }
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot create kafka topics (is the broker up?); will publish anyway")
        }
    }
}

/// Failure paths on librdkafka's in-process mock cluster (fast; the real broker is exercised by
/// the integration tests).
#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use serde_json::value::RawValue;

    fn record(n: u32) -> OutRecord {
        OutRecord {
            topic: "leads.clean".into(),
            key: format!("lead-{n}"),
            value: RawValue::from_string(format!("{{\"n\":{n}}}")).unwrap(),
            headers: vec![("event_id", format!("e{n}"))],
        }
    }

    async fn sink(brokers: String, dead: &Path) -> (KafkaSink, watch::Sender<bool>) {
        let settings = KafkaSettings {
            brokers,
            message_timeout: Duration::from_millis(1500),
            create_topics: false,
            topic_partitions: 1,
            topic_replication: 1,
            options: Default::default(),
        };
        let (tx, rx) = watch::channel(false);
        (
            KafkaSink::connect(
                &settings,
                &Topics::default(),
                dead,
                rx,
                HealthReport::new().0,
            )
            .await
            .unwrap(),
            tx,
        )
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn records_are_retried_through_an_outage_until_delivered() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("leads.clean", 1, 1).unwrap();
        let dead = tempfile::tempdir().unwrap();
        let (mut sink, _stop) = sink(mock.bootstrap_servers(), dead.path()).await;
        sink.deliver(&[record(0)]).await.unwrap();

        mock.broker_down(1).unwrap();
        let records: Vec<_> = (1..=5).map(record).collect();
        let delivery = tokio::spawn(async move { sink.deliver(&records).await });
        // Past message_timeout: librdkafka has given up once and leadgate is retrying.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            !delivery.is_finished(),
            "delivery waits for the broker, it does not give up"
        );
        mock.broker_up(1).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(40), delivery)
            .await
            .expect("delivered after the outage");
        result.unwrap().unwrap();
        assert!(
            std::fs::read_dir(dead.path()).unwrap().next().is_none(),
            "nothing was dead-lettered"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_record_kafka_refuses_for_good_goes_to_the_dead_letter_file() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("leads.clean", 1, 1).unwrap();
        mock.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
        );
        let dead = tempfile::tempdir().unwrap();
        let (mut sink, _stop) = sink(mock.bootstrap_servers(), dead.path()).await;
        tokio::time::timeout(Duration::from_secs(20), sink.deliver(&[record(7)]))
            .await
            .unwrap()
            .unwrap();
        let text = std::fs::read_to_string(dead.path().join("leads.clean.jsonl")).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(
            (line["key"].as_str(), &line["value"]),
            (Some("lead-7"), &serde_json::json!({"n": 7}))
        );
        assert!(
            line["error"].as_str().unwrap().contains("too large"),
            "{line}"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn shutdown_interrupts_retrying() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("leads.clean", 1, 1).unwrap();
        mock.broker_down(1).unwrap();
        let dead = tempfile::tempdir().unwrap();
        let (mut sink, stop) = sink(mock.bootstrap_servers(), dead.path()).await;
        let delivery = tokio::spawn(async move { sink.deliver(&[record(1)]).await });
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.send_replace(true);
        let result = tokio::time::timeout(Duration::from_secs(5), delivery)
            .await
            .expect("stops promptly");
        assert!(matches!(result.unwrap(), Err(SinkError::Shutdown)));
    }
}
