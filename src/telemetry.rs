//! Prometheus metrics (`GET /metrics`), named after Vector's instrumentation spec with the prefix
//! `leadgate_`: counters end in `_total`, causes are labels, and a retried operation is counted
//! as an error, never as a drop. Labels are bounded sets: connector names, issue codes, topics,
//! rule ids, routes. No phone, email, name or token is ever a label value.
//!
//! Counters and histograms are recorded where things happen (the journal, the delivery loop, the
//! sinks, the pulls, the HTTP layer) through the `metrics` facade; gauges that describe state
//! (the journal's backlog, each connector's health) are read when Prometheus scrapes. Exposition
//! is `metrics-exporter-prometheus`'s.

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock, RwLock};

use metrics::{Counter, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::pipeline::Disposition;
use crate::sources::status::{ConnectorStatus, State};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Buckets of the latency histograms, in seconds: a millisecond to ten minutes.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 600.0,
];

/// Installs the process's recorder (once; later calls return the same handle). `None` when
/// another recorder is installed already (a test harness).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
                .ok()?
                .install_recorder()
                .inspect_err(|e| tracing::warn!(error = %e, "metrics are off"))
                .ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

/// Installs the recorder and keeps it small between scrapes: histogram samples are folded into
/// their buckets every 5 seconds (they would otherwise wait for the next scrape).
pub fn start() {
    if let Some(handle) = install()
        && let Ok(runtime) = tokio::runtime::Handle::try_current()
    {
        static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !STARTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            runtime.spawn(async move {
                let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
                loop {
                    every.tick().await;
                    handle.run_upkeep();
                }
            });
        }
    }
}

/// Help texts, shown as `# HELP` lines.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "leadgate_component_received_events_total",
        "Events a connector received and the journal stored (acknowledged to the source)."
    );
    describe_counter!(
        "leadgate_component_received_event_bytes_total",
        Unit::Bytes,
        "Bytes of the events a connector received, as journaled."
    );
    describe_counter!(
        "leadgate_component_sent_events_total",
        "Records delivered (confirmed by the sink), by connector and topic."
    );
    describe_counter!(
        "leadgate_component_discarded_events_total",
        "Events that reached no clean topic, by reason; intentional=true for duplicates, test leads and replayed requests."
    );
    describe_counter!(
        "leadgate_component_errors_total",
        "Errors by connector, error_type and stage; a retried request counts each failure."
    );
    describe_counter!(
        "leadgate_rejections_total",
        "Leads rejected, by connector and the issue code that decided it."
    );
    describe_counter!(
        "leadgate_identity_outcomes_total",
        "Identity resolutions of delivered leads: new, matched or merged."
    );
    describe_counter!(
        "leadgate_assignment_outcomes_total",
        "Assignments of delivered leads: assigned by a rule, or unmatched."
    );
    describe_histogram!(
        "leadgate_delivery_latency_seconds",
        Unit::Seconds,
        "From receipt to confirmed delivery, per event."
    );
    describe_counter!(
        "leadgate_delivery_errors_total",
        "Failed delivery attempts (retried until they pass)."
    );
    describe_counter!(
        "leadgate_reassignments_total",
        "Leads taken back under a follow-up SLA (回收), by outcome: reassigned or pool."
    );
    describe_counter!(
        "leadgate_status_reports_total",
        "CRM status reports, by source (http, kafka) and outcome (applied, duplicate, stale, invalid)."
    );
    describe_counter!(
        "leadgate_retention_removed_total",
        "What [privacy] retention removed: people (from the identity store) and output_records (from the embedded output)."
    );
    describe_counter!(
        "leadgate_erasures_total",
        "Erasure requests carried out (completed) or tried and left for the next attempt (failed)."
    );
    describe_counter!(
        "leadgate_lifecycle_errors_total",
        "Failed rounds of the follow-up check or the status consumer (retried)."
    );
    describe_gauge!(
        "leadgate_delivery_up",
        "1 while the last delivery attempt succeeded, 0 while delivery is failing."
    );
    describe_gauge!(
        "leadgate_journal_backlog_events",
        "Events journaled and not yet delivered."
    );
    describe_gauge!(
        "leadgate_journal_backlog_bytes",
        Unit::Bytes,
        "Bytes of the events journaled and not yet delivered."
    );
    describe_gauge!(
        "leadgate_journal_oldest_undelivered_age_seconds",
        Unit::Seconds,
        "How long the oldest undelivered event has waited (0 without a backlog)."
    );
    describe_gauge!(
        "leadgate_journal_quarantined_events",
        "Events set aside for good (see GET /v1/quarantine)."
    );
    describe_gauge!(
        "leadgate_kafka_in_flight_messages",
        "Records sent to Kafka whose delivery report has not come back."
    );
    describe_counter!(
        "leadgate_kafka_retries_total",
        "Records sent to Kafka again after a retriable failure."
    );
    describe_counter!(
        "leadgate_kafka_dead_letters_total",
        "Records Kafka refused for good, written to the dead-letter file."
    );
    describe_counter!(
        "leadgate_kafka_producer_recreations_total",
        "Kafka producers replaced after a fatal error or repeated failures."
    );
    describe_gauge!(
        "leadgate_connector_state",
        "1 for the connector's current state (passive, starting, snapshot, following, failing, stopped, paused, standby)."
    );
    describe_gauge!(
        "leadgate_connector_lease_held",
        "With [coordination]: 1 while this gateway holds the connector's lease (and so pulls for it)."
    );
    describe_gauge!(
        "leadgate_connector_lag_seconds",
        Unit::Seconds,
        "Pull connectors: how far behind now the newest moment read completely is."
    );
    describe_gauge!(
        "leadgate_connector_last_success_timestamp_seconds",
        Unit::Seconds,
        "Unix time of the connector's last successful request."
    );
    describe_gauge!(
        "leadgate_connector_consecutive_errors",
        "Failed attempts in a row."
    );
    describe_gauge!(
        "leadgate_connector_token_expiry_timestamp_seconds",
        Unit::Seconds,
        "Unix time a platform token expires, token=access or refresh."
    );
    describe_gauge!(
        "leadgate_connector_token_refused",
        "1 while the platform refuses the connector's token (re-authorize)."
    );
    describe_counter!(
        "leadgate_http_requests_total",
        "HTTP requests by route, method and status."
    );
    describe_histogram!(
        "leadgate_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request durations by route and method."
    );
}

/// The exposition text: state gauges refreshed from `connectors` and `journal`, then everything
/// rendered. `None` when metrics are off (not started).
pub fn render(connectors: &[ConnectorStatus], journal: &JournalGauges) -> Option<String> {
    let handle = HANDLE.get()?.as_ref()?;
    for c in connectors {
        connector_gauges(c);
    }
    gauge!("leadgate_journal_backlog_events").set(journal.events as f64);
    gauge!("leadgate_journal_backlog_bytes").set(journal.bytes as f64);
    gauge!("leadgate_journal_oldest_undelivered_age_seconds").set(journal.oldest_age_seconds);
    gauge!("leadgate_journal_quarantined_events").set(journal.quarantined as f64);
    gauge!("leadgate_delivery_up").set(if journal.delivery_failing { 0.0 } else { 1.0 });
    handle.run_upkeep();
    Some(handle.render())
}

/// The journal's state at a scrape.
#[derive(Debug, Default)]
pub struct JournalGauges {
    pub events: u64,
    pub bytes: u64,
    pub oldest_age_seconds: f64,
    pub quarantined: u64,
    pub delivery_failing: bool,
}

const STATES: [(State, &str); 8] = [
    (State::Passive, "passive"),
    (State::Starting, "starting"),
    (State::Snapshot, "snapshot"),
    (State::Following, "following"),
    (State::Failing, "failing"),
    (State::Stopped, "stopped"),
    (State::Paused, "paused"),
    (State::Standby, "standby"),
];

fn connector_gauges(c: &ConnectorStatus) {
    let name = c.name.clone();
    for (state, label) in STATES {
        gauge!("leadgate_connector_state", "connector" => name.clone(), "state" => label)
            .set(if c.state == state { 1.0 } else { 0.0 });
    }
    gauge!("leadgate_connector_consecutive_errors", "connector" => name.clone())
        .set(c.consecutive_errors as f64);
    if let Some(lease) = &c.lease {
        gauge!("leadgate_connector_lease_held", "connector" => name.clone())
            .set(if lease.held_here { 1.0 } else { 0.0 });
    }
    if let Some(lag) = c.lag_seconds {
        gauge!("leadgate_connector_lag_seconds", "connector" => name.clone()).set(lag);
    }
    if let Some(at) = c.last_success_at.as_deref().and_then(unix_seconds) {
        gauge!("leadgate_connector_last_success_timestamp_seconds", "connector" => name.clone())
            .set(at);
    }
    if let Some(token) = &c.token {
        for (kind, at) in [
            ("access", &token.expires_at),
            ("refresh", &token.refresh_expires_at),
        ] {
            if let Some(at) = at.as_deref().and_then(unix_seconds) {
                gauge!("leadgate_connector_token_expiry_timestamp_seconds",
                    "connector" => name.clone(), "token" => kind)
                .set(at);
            }
        }
        gauge!("leadgate_connector_token_refused", "connector" => name)
            .set(if token.refused.is_some() { 1.0 } else { 0.0 });
    }
}

fn unix_seconds(rfc3339: &str) -> Option<f64> {
    let t: jiff::Timestamp = rfc3339.parse().ok()?;
    Some(t.as_millisecond() as f64 / 1000.0)
}

/// Metric handles by their label values, registered once: the paths taken for every lead and
/// every request look a handle up (no allocation once warm) instead of building its key and
/// registering it again.
struct Handles<T>(LazyLock<RwLock<HashMap<Box<str>, T>>>);

impl<T: Clone> Handles<T> {
    const fn new() -> Self {
        Self(LazyLock::new(Default::default))
    }

    fn get(&self, labels: &[&str], make: impl FnOnce() -> T) -> T {
        thread_local! {
            static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        KEY.with_borrow_mut(|key| {
            key.clear();
            for l in labels {
                key.push_str(l);
                key.push('\u{1f}');
            }
            let map = self
                .0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(h) = map.get(key.as_str()) {
                return h.clone();
            }
            drop(map);
            let mut map = self
                .0
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            map.entry(key.as_str().into()).or_insert_with(make).clone()
        })
    }
}

static RECEIVED: Handles<(Counter, Counter)> = Handles::new();
static SENT: Handles<Counter> = Handles::new();
static DISCARDED: Handles<Counter> = Handles::new();
static ERRORS: Handles<Counter> = Handles::new();
static REJECTIONS: Handles<Counter> = Handles::new();
static IDENTITY: Handles<Counter> = Handles::new();
static ASSIGNMENT: Handles<Counter> = Handles::new();
static LATENCY: Handles<Histogram> = Handles::new();
static HTTP: Handles<(Counter, Histogram)> = Handles::new();

fn bool_label(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// Events the journal stored for `connector`: `events` of `bytes` in all.
pub fn received(connector: &str, events: u64, bytes: u64) {
    let (count, size) = RECEIVED.get(&[connector], || {
        let c = connector.to_owned();
        (
            counter!("leadgate_component_received_events_total", "connector" => c.clone()),
            counter!("leadgate_component_received_event_bytes_total", "connector" => c),
        )
    });
    count.increment(events);
    size.increment(bytes);
}

/// An event the source sent again (the same `Idempotency-Key`): answered, not stored.
pub fn replayed(connector: &str) {
    discarded(connector, "replayed_request", true, 1);
}

/// `n` events that reached no clean topic, for `reason`.
pub fn discarded(connector: &str, reason: &'static str, intentional: bool, n: u64) {
    let intentional = bool_label(intentional);
    DISCARDED
        .get(&[connector, reason, intentional], || {
            counter!("leadgate_component_discarded_events_total",
                "connector" => connector.to_owned(), "reason" => reason,
                "intentional" => intentional)
        })
        .increment(n);
}

/// An error of `connector` at `stage` (`receiving`, `decoding`, `processing`).
pub fn error(connector: &str, error_type: &'static str, stage: &'static str) {
    ERRORS
        .get(&[connector, error_type, stage], || {
            counter!("leadgate_component_errors_total",
                "connector" => connector.to_owned(), "error_type" => error_type, "stage" => stage)
        })
        .increment(1);
}

/// One delivered event of `connector`, received at `received_at` (RFC 3339): its outcome counted
/// and its latency observed.
pub fn delivered(connector: &str, received_at: &str, disposition: &Disposition, now_ms: i64) {
    match disposition {
        Disposition::Accepted {
            identity,
            assignment,
            ..
        } => {
            if let Some(status) = identity {
                let outcome = status.label();
                IDENTITY
                    .get(&[connector, outcome], || {
                        counter!("leadgate_identity_outcomes_total",
                            "connector" => connector.to_owned(), "outcome" => outcome)
                    })
                    .increment(1);
            }
            if let Some(rule) = assignment {
                let (rule, outcome) = match rule {
                    Some(rule) => (rule.as_str(), "assigned"),
                    None => ("", "unmatched"),
                };
                ASSIGNMENT
                    .get(&[connector, rule, outcome], || {
                        counter!("leadgate_assignment_outcomes_total",
                            "connector" => connector.to_owned(), "rule" => rule.to_owned(),
                            "outcome" => outcome)
                    })
                    .increment(1);
            }
        }
        Disposition::Rejected { codes } => {
            let code = crate::pipeline::verdict(codes);
            REJECTIONS
                .get(&[connector, code], || {
                    counter!("leadgate_rejections_total",
                        "connector" => connector.to_owned(), "code" => code.to_owned())
                })
                .increment(1);
            discarded(connector, "rejected", false, 1);
        }
        Disposition::Duplicate => discarded(connector, "duplicate", true, 1),
        Disposition::Test => discarded(connector, "test_lead", true, 1),
    }
    if let Some(at) = unix_seconds(received_at) {
        let seconds = (now_ms as f64 / 1000.0 - at).max(0.0);
        LATENCY
            .get(&[connector], || {
                histogram!("leadgate_delivery_latency_seconds", "connector" => connector.to_owned())
            })
            .record(seconds);
    }
}

/// A record delivered to `topic` for `connector`.
pub fn sent(connector: &str, topic: &str) {
    SENT.get(&[connector, topic], || {
        counter!("leadgate_component_sent_events_total",
            "connector" => connector.to_owned(), "topic" => topic.to_owned())
    })
    .increment(1);
}

/// An event quarantined at `stage` (it reaches no topic).
pub fn quarantined(connector: &str, stage: &'static str) {
    discarded(connector, "quarantined", false, 1);
    error(connector, "quarantined", stage);
}

/// A failed delivery attempt.
pub fn reassigned(outcome: &'static str, n: u64) {
    counter!("leadgate_reassignments_total", "outcome" => outcome).increment(n);
}

pub fn status_report(source: &'static str, outcome: &'static str) {
    counter!("leadgate_status_reports_total", "source" => source, "outcome" => outcome)
        .increment(1);
}

/// People and embedded output records removed by retention.
pub fn retained(people: u64, records: u64) {
    counter!("leadgate_retention_removed_total", "what" => "people").increment(people);
    counter!("leadgate_retention_removed_total", "what" => "output_records").increment(records);
}

/// An erasure carried out (`completed`) or tried and left for later (`failed`).
pub fn erasure(outcome: &'static str) {
    counter!("leadgate_erasures_total", "outcome" => outcome).increment(1);
}

pub fn lifecycle_failed(task: &'static str) {
    counter!("leadgate_lifecycle_errors_total", "task" => task).increment(1);
}

pub fn delivery_failed(error_type: &'static str) {
    counter!("leadgate_delivery_errors_total", "error_type" => error_type).increment(1);
}

pub fn kafka_in_flight(delta: f64) {
    gauge!("leadgate_kafka_in_flight_messages").increment(delta);
}

pub fn kafka_retries(n: u64) {
    counter!("leadgate_kafka_retries_total").increment(n);
}

pub fn kafka_dead_letter(topic: &str) {
    counter!("leadgate_kafka_dead_letters_total", "topic" => topic.to_owned()).increment(1);
}

pub fn kafka_producer_recreated(reason: &'static str) {
    counter!("leadgate_kafka_producer_recreations_total", "reason" => reason).increment(1);
}

/// One HTTP request: its route template (never the path itself), method and status.
pub fn http_request(route: &str, method: &str, status: u16, seconds: f64) {
    // The status's three digits, without allocating.
    let status = status.min(999);
    let digits = [100, 10, 1].map(|d| b'0' + (status / d % 10) as u8);
    let status = std::str::from_utf8(&digits).unwrap_or("000");
    let (count, duration) = HTTP.get(&[route, method, status], || {
        let (route, method) = (route.to_owned(), method.to_owned());
        (
            counter!("leadgate_http_requests_total",
                "route" => route.clone(), "method" => method.clone(), "status" => status.to_owned()),
            histogram!("leadgate_http_request_duration_seconds", "route" => route, "method" => method),
        )
    });
    count.increment(1);
    duration.record(seconds);
}
