//! Settings and connector definitions: the types, field by field, and their defaults.
//! Loading, `${ENV}` interpolation and validation (every error with its place) live in [`load`].

mod load;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

pub use load::{ConfigError, ConfigErrors, load, load_str};

// The connector definitions live with their platforms (`src/sources/<platform>/config.rs`);
// they are named here too, where the rest of the settings are.
pub use crate::identity::{IdentitySettings, StoreSettings};
pub use crate::sources::ConnectorConfig;
pub use crate::sources::connector::{RateLimit, TestLeads, default_region};
pub use crate::sources::file::FileConnector;
pub use crate::sources::google_ads::GoogleAdsConnector;
pub use crate::sources::http_pull::{ErrorCodes, HttpPullConnector, Method, Paging, TimeWindow};
pub use crate::sources::linkedin::LinkedinConnector;
pub use crate::sources::meta::MetaConnector;
pub use crate::sources::mysql::{MysqlConnector, MysqlMode};
pub use crate::sources::oceanengine::OceanEngineConnector;
pub use crate::sources::tencent::TencentConnector;
pub use crate::sources::tiktok::TiktokConnector;
pub use crate::sources::webhook::{SignatureConfig, WebhookConnector};

/// The whole gateway configuration (one TOML file, plus connector files it includes).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// Where the intake journal, identity store and embedded output live.
    pub data_dir: PathBuf,
    pub intake: IntakeSettings,
    pub http: HttpSettings,
    pub output: OutputSettings,
    pub topics: Topics,
    pub identity: IdentitySettings,
    pub assignment: AssignmentSettings,
    pub api: ApiSettings,
    pub metrics: MetricsSettings,
    pub stats: StatsSettings,
    pub lifecycle: LifecycleSettings,
    /// `[coordination]`: several gateways sharing the pull connectors (none: this gateway runs
    /// them all).
    pub coordination: Option<CoordinationSettings>,
    pub privacy: PrivacySettings,
    pub connectors: Vec<ConnectorConfig>,
}

impl Default for Settings {
    /// The built-in default: 127.0.0.1:8080, `./data`, one unsigned web-form webhook named `webform`,
    /// and the embedded output.
    fn default() -> Self {
        Self {
            listen: default_listen(),
            data_dir: default_data_dir(),
            intake: IntakeSettings::default(),
            http: HttpSettings::default(),
            output: OutputSettings::Embedded,
            topics: Topics::default(),
            identity: IdentitySettings::default(),
            assignment: AssignmentSettings::default(),
            api: ApiSettings::default(),
            metrics: MetricsSettings::default(),
            stats: StatsSettings::default(),
            lifecycle: LifecycleSettings::default(),
            coordination: None,
            privacy: PrivacySettings::default(),
            connectors: vec![ConnectorConfig::Webhook(Box::new(WebhookConnector::named(
                "webform",
            )))],
        }
    }
}

impl Settings {
    pub fn connector(&self, name: &str) -> Option<&ConnectorConfig> {
        self.connectors.iter().find(|c| c.name() == name)
    }

    /// Why these settings would serve the management API to the network without a token, if
    /// they would: `listen` is not a loopback address and no `[api]` token is set.
    pub fn open_management_api(&self) -> Option<String> {
        let exposed = !self.listen.ip().is_loopback();
        (exposed && self.api.token.is_none() && self.api.tokens.is_empty()).then(|| {
            format!(
                "`listen` ({}) is reachable from the network, so the management API (leads, \
                 assignment rules, quarantine) needs a token: set [api] token = \"${{LEADGATE_API_TOKEN}}\" \
                 or [[api.tokens]]",
                self.listen
            )
        })
    }
}

pub(crate) fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

pub(crate) fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}

/// `[assignment]`: where rules, owners, teams, segments, score groups and their counters live
/// (see `docs/assignment.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssignmentSettings {
    pub store: StoreSettings,
    /// A lead's score is kept within 0 and this.
    pub max_score: i64,
    /// `[[assignment.segments]]`: segments defined here rather than through the API; written to
    /// the store at start (as changes by `settings`), each in the API's shape.
    pub segments: Vec<serde_json::Value>,
    /// `[[assignment.scores]]`: score groups, likewise.
    pub scores: Vec<serde_json::Value>,
}

impl Default for AssignmentSettings {
    fn default() -> Self {
        Self {
            store: StoreSettings::default(),
            max_score: crate::assign::MAX_TOTAL,
            segments: Vec::new(),
            scores: Vec::new(),
        }
    }
}

/// `[api]`: the management API's tokens (`docs/privacy.md#scoped-access`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// A bearer token with every scope, named `admin` (`Authorization: Bearer ...`); write
    /// `"${LEADGATE_API_TOKEN}"`. Without any token the management endpoints are open, for
    /// local use only.
    pub token: Option<SecretString>,
    /// More tokens, each with a name and its scopes.
    pub tokens: Vec<ApiToken>,
    /// No longer honoured: leads are personal information, and a management API reachable from
    /// the network always needs a token. Kept so that the error can say so.
    pub allow_unauthenticated: bool,
}

/// `[[api.tokens]]`: a named bearer token and what it may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who holds it (`crm-sync`, `ops-console`): named in the access and assignment audits.
    pub name: String,
    pub token: SecretString,
    pub scopes: Vec<Scope>,
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
pub enum Scope {
    /// Everything, every other scope included.
    #[serde(rename = "admin")]
    Admin,
    /// Read-only: connectors, statistics, assignment, imports, leads (masked).
    #[serde(rename = "operator")]
    Operator,
    /// Personal data in answers unmasked (leads, quarantined records, rejected-rows reports);
    /// every such read is written to the access audit.
    #[serde(rename = "pii:read")]
    PiiRead,
    /// Erasures and the access audit: the privacy officer's.
    #[serde(rename = "privacy")]
    Privacy,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::PiiRead => "pii:read",
            Self::Privacy => "privacy",
        }
    }
}

/// `[stats]`: the 效果分析 rollups behind `GET /v1/stats`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatsSettings {
    /// The IANA zone whose calendar days the day rows count (hours are shown in it too).
    #[serde(deserialize_with = "time_zone")]
    pub timezone: jiff::tz::TimeZone,
    /// How long hour rows are kept; day rows are kept for good.
    #[serde(with = "humantime_serde")]
    pub hour_retention: Duration,
}

/// `[privacy]`: personal data at rest (see `docs/privacy.md`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacySettings {
    /// 32 random bytes, base64 or 64 hex digits (`openssl rand -base64 32`); write
    /// `"${LEADGATE_ENCRYPTION_KEY}"`. With it, stored OAuth tokens are encrypted.
    pub encryption_key: Option<secrecy::SecretString>,
    /// Keys values may still be sealed with (after a rotation): read, never written.
    pub previous_keys: Vec<secrecy::SecretString>,
    /// What becomes of a new lead whose phone or address was erased: `drop` (the default) or
    /// `flag` (published on the rejected topic, reason `privacy.suppressed`).
    pub suppression: crate::erasure::Suppression,
    /// People none of whose leads is newer than this are forgotten (the identity store, their
    /// assignment rows); none by default.
    #[serde(with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// Embedded output records older than this are removed from its files; none by default.
    #[serde(with = "humantime_serde")]
    pub output_retention: Option<Duration>,
    /// How often retention is enforced (default 1 day).
    #[serde(with = "humantime_serde")]
    pub retention_check: Option<Duration>,
}

impl PrivacySettings {
    /// The configured keys, ready to seal with; `None` without a key.
    pub fn keys(&self) -> Result<Option<crate::seal::Keys>, String> {
        use secrecy::ExposeSecret;
        let Some(current) = &self.encryption_key else {
            return Ok(None);
        };
        let current = crate::seal::parse_key(current.expose_secret())?;
        let previous = self
            .previous_keys
            .iter()
            .map(|k| crate::seal::parse_key(k.expose_secret()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(crate::seal::Keys::new(&current, &previous)))
    }

    /// What the delivery loop enforces, when any retention is set.
    pub fn retention(&self) -> Option<crate::erasure::Retention> {
        (self.retention.is_some() || self.output_retention.is_some()).then(|| {
            crate::erasure::Retention {
                identity: self.retention,
                output: self.output_retention,
                every: self
                    .retention_check
                    .unwrap_or(Duration::from_secs(24 * 3600)),
            }
        })
    }

    /// Installs the keys for the stores (before anything opens them).
    pub fn install(&self) -> anyhow::Result<()> {
        if let Some(k) = self
            .keys()
            .map_err(|e| anyhow::anyhow!("[privacy] encryption_key: {e}"))?
        {
            crate::seal::install(k);
        }
        Ok(())
    }
}

/// `[coordination]`: where gateways take turns with the pull connectors (see
/// `docs/operations.md`). Each pull connector runs on one gateway at a time, under a lease held
/// as a MySQL named lock.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum CoordinationSettings {
    Mysql {
        /// `mysql://user:password@host:3306/database`; write `"${COORDINATION_MYSQL_URL}"`.
        url: secrecy::SecretString,
        /// A gateway that stops answering loses its leases within this time.
        #[serde(with = "humantime_serde", default = "default_lease")]
        lease: Duration,
        /// This gateway's name in `/v1/connectors` (default: `$HOSTNAME`, else the host name,
        /// with the listen port).
        #[serde(default)]
        gateway: Option<String>,
    },
}

fn default_lease() -> Duration {
    Duration::from_secs(15)
}

impl CoordinationSettings {
    pub fn lease(&self) -> Duration {
        match self {
            Self::Mysql { lease, .. } => *lease,
        }
    }
}

/// `[lifecycle]`: what happens after assignment (follow-up SLAs, CRM status reports).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleSettings {
    /// How often follow-up deadlines are checked (and reassignments published).
    #[serde(with = "humantime_serde")]
    pub check_every: Duration,
    /// With the Kafka output: consume CRM status reports from `[topics] status`.
    pub consume_status: bool,
    /// The consumer group that reads `[topics] status` (every gateway joins it: each report is
    /// applied by one of them).
    pub status_group: String,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        Self {
            check_every: Duration::from_secs(5),
            consume_status: true,
            status_group: "leadgate-status".into(),
        }
    }
}

impl Default for StatsSettings {
    fn default() -> Self {
        Self {
            timezone: jiff::tz::TimeZone::get("Asia/Shanghai")
                .unwrap_or_else(|_| jiff::tz::TimeZone::fixed(jiff::tz::offset(8))),
            hour_retention: Duration::from_secs(90 * 86_400),
        }
    }
}

fn time_zone<'de, D: serde::Deserializer<'de>>(d: D) -> Result<jiff::tz::TimeZone, D::Error> {
    let name = String::deserialize(d)?;
    jiff::tz::TimeZone::get(&name).map_err(|_| {
        serde::de::Error::custom(format!(
            "`{name}` is not an IANA time zone (e.g. \"Asia/Shanghai\", \"UTC\")"
        ))
    })
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Serve `GET /metrics` and record metrics (on by default). Off, nothing is recorded and the
    /// endpoint answers 404.
    pub enabled: bool,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// `[http]`: how long and how many clients the HTTP server waits for. A client that does not
/// send its request in time is cut off, so slow or idle connections cannot use up the server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Time to receive a request's headers, from the connection's start or the end of the
    /// previous request on it (so also how long an idle keep-alive connection stays open).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Time to receive a request's body, from the end of its headers.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Connections served at once; more are closed as they arrive (and counted in the log).
    pub max_connections: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 10_000,
        }
    }
}

/// `[intake]`: the durable journal in front of the pipeline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeSettings {
    /// Events journaled but not yet delivered, above which webhooks answer 503 (backpressure).
    pub max_backlog: u64,
    /// How long a repeated `Idempotency-Key` gets the first answer back, e.g. `"24h"`.
    #[serde(with = "humantime_serde")]
    pub idempotency_retention: Duration,
    /// Largest accepted webhook body, in bytes.
    pub max_body_bytes: usize,
    /// Events handed to the pipeline (and to the sink) at once.
    pub batch_size: usize,
}

impl Default for IntakeSettings {
    fn default() -> Self {
        Self {
            max_backlog: 1_000_000,
            idempotency_retention: Duration::from_secs(24 * 3600),
            max_body_bytes: 1024 * 1024,
            batch_size: 500,
        }
    }
}

/// `[output]`: where published records go.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OutputSettings {
    /// JSON lines per topic under `<data_dir>/output/`. Needs nothing installed.
    #[default]
    Embedded,
    Kafka(KafkaSettings),
}

/// `[output] type = "kafka"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// `bootstrap.servers`, e.g. `"kafka-1:9092,kafka-2:9092"`.
    pub brokers: String,
    /// How long librdkafka tries one message before reporting it failed (it is then retried by us).
    #[serde(
        with = "humantime_serde",
        default = "KafkaSettings::default_message_timeout"
    )]
    pub message_timeout: Duration,
    /// Create missing topics at start-up.
    #[serde(default = "crate::sources::connector::yes")]
    pub create_topics: bool,
    /// Partitions of topics leadgate creates.
    #[serde(default = "KafkaSettings::default_partitions")]
    pub topic_partitions: i32,
    /// Replication factor of topics leadgate creates (use 3 on a production cluster).
    #[serde(default = "KafkaSettings::default_replication")]
    pub topic_replication: i32,
    /// Extra librdkafka properties (`security.protocol`, `sasl.*`, `compression.type`, ...).
    /// `acks` and `enable.idempotence` are fixed and cannot be overridden.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl KafkaSettings {
    fn default_message_timeout() -> Duration {
        Duration::from_secs(30)
    }
    fn default_partitions() -> i32 {
        3
    }
    fn default_replication() -> i32 {
        1
    }
}

/// `[topics]`: the three output topic names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    pub clean: String,
    pub rejected: String,
    pub merged: String,
    /// Test leads of connectors with `test_leads = "topic"` (Google `is_test`, ...).
    pub test: String,
    /// Reassignments of leads taken back under a follow-up SLA (回收).
    pub assignments: String,
    /// Where CRMs report what became of a lead (consumed, not produced, by leadgate).
    pub status: String,
    /// Erasure events (key: the request id): CRMs delete the lead ids they list.
    pub erasures: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            clean: "leads.clean".into(),
            rejected: "leads.rejected".into(),
            merged: "leads.merged".into(),
            test: "leads.test".into(),
            assignments: "leads.assignments".into(),
            status: "leads.status".into(),
            erasures: "leads.erasures".into(),
        }
    }
}

impl Topics {
    /// The topics records are published on by the delivery loop.
    pub fn all(&self) -> [&str; 4] {
        [&self.clean, &self.rejected, &self.merged, &self.test]
    }

    /// Every topic leadgate creates when `create_topics` is on.
    pub fn created(&self) -> [&str; 7] {
        [
            &self.clean,
            &self.rejected,
            &self.merged,
            &self.test,
            &self.assignments,
            &self.status,
            &self.erasures,
        ]
    }
}

pub use crate::mapping::FieldMapping;
