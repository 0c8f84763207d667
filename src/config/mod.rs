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
            connectors: vec![ConnectorConfig::Webhook(WebhookConnector::named("webform"))],
        }
    }
}

impl Settings {
    pub fn connector(&self, name: &str) -> Option<&ConnectorConfig> {
        self.connectors.iter().find(|c| c.name() == name)
    }

    /// Why these settings would serve the management API to the network without a token, if
    /// they would: `listen` is not a loopback address and `[api] token` is not set (unless
    /// `[api] allow_unauthenticated` says that is meant).
    pub fn open_management_api(&self) -> Option<String> {
        let exposed = !self.listen.ip().is_loopback();
        (exposed && self.api.token.is_none() && !self.api.allow_unauthenticated).then(|| {
            format!(
                "`listen` ({}) is reachable from the network, so the management API (leads, \
                 assignment rules, quarantine) needs a token: set [api] token = \"${{LEADGATE_API_TOKEN}}\" \
                 (or allow_unauthenticated = true when something in front of leadgate checks callers)",
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

/// `[identity]`: the guards of identity matching (see `docs/identity.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySettings {
    /// Key values that never link people, written `kind:value`: `"phone:+8613800000000"`,
    /// `"email:test@company.cn"`. Placeholders (`0`, `null`, `138 8888 8888`, `test@...`) are
    /// always blocked.
    pub blocked_values: Vec<String>,
    /// Distinct values of a key kind one person may hold (default: phone 2, email 2, any platform
    /// id 1). A lead that would push a person past it stays apart.
    pub max_values_per_person: BTreeMap<String, usize>,
    /// People a key may be linked to before it stops being an identifier (default 1 per kind).
    pub max_people_per_key: BTreeMap<String, usize>,
    /// Jaro-Winkler similarity (0-1) of names at or above which a name supports a match.
    pub name_similarity: f64,
    /// Where identities live: the embedded store under the data directory (default), or a
    /// MySQL/MariaDB database several gateways share.
    pub store: StoreSettings,
}

/// `[identity.store]`, `[assignment.store]`: the embedded store under the data directory, or a
/// MySQL/MariaDB database several gateways share.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreSettings {
    #[default]
    Embedded,
    Mysql {
        /// `mysql://user:password@host:3306/database`; write `"${IDENTITY_MYSQL_URL}"`.
        url: SecretString,
    },
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            blocked_values: Vec::new(),
            max_values_per_person: BTreeMap::new(),
            max_people_per_key: BTreeMap::new(),
            name_similarity: 0.9,
            store: StoreSettings::Embedded,
        }
    }
}

/// `[assignment]`: where rules, owners, teams and their counters live (see `docs/assignment.md`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssignmentSettings {
    pub store: StoreSettings,
}

/// `[api]`: the management API (`/v1/leads`, later `/v1/assignment`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// A bearer token the management endpoints require (`Authorization: Bearer ...`); write
    /// `"${LEADGATE_API_TOKEN}"`. Without one they are open, for local use only.
    pub token: Option<SecretString>,
    /// Serve the management API without a token on a non-loopback `listen`. Refused unless set:
    /// only for a gateway behind something else that authenticates callers.
    pub allow_unauthenticated: bool,
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
    #[serde(default = "yes")]
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

fn yes() -> bool {
    true
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
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            clean: "leads.clean".into(),
            rejected: "leads.rejected".into(),
            merged: "leads.merged".into(),
            test: "leads.test".into(),
        }
    }
}

impl Topics {
    pub fn all(&self) -> [&str; 4] {
        [&self.clean, &self.rejected, &self.merged, &self.test]
    }
}

/// One connector definition, `[[connectors]]` in the settings or a file listed in `include`.
/// Closed and tagged: adding a platform is one new variant.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConnectorConfig {
    /// Receives `POST /v1/webhooks/{name}` (web forms and anything that posts JSON or a form).
    Webhook(WebhookConnector),
    /// A named mapping for `leadgate import --source NAME`.
    File(FileConnector),
    /// Rows of a MySQL/MariaDB table, pulled incrementally or read from the binlog.
    Mysql(MysqlConnector),
    /// Google Ads lead form webhooks: `POST /v1/webhooks/{name}`.
    GoogleAds(GoogleAdsConnector),
    /// Any paged JSON API, all configuration: page numbers, offsets, cursors or next-page URLs.
    HttpPull(Box<HttpPullConnector>),
    /// Meta (Facebook/Instagram) Lead Ads: the `leadgen` webhook on `/v1/webhooks/{name}`, each
    /// lead fetched from the Graph API, and a reconciliation poll of the forms' leads.
    Meta(Box<MetaConnector>),
    /// 巨量引擎 Ocean Engine: the `clue/get` pull in GMT+8 windows, and the SPI push on
    /// `/v1/webhooks/{name}` when `spi_secret` is set.
    Oceanengine(Box<OceanEngineConnector>),
    /// LinkedIn Lead Sync: signed notifications on `/v1/webhooks/{name}`, each lead fetched from
    /// the Marketing API.
    Linkedin(Box<LinkedinConnector>),
    /// TikTok lead generation: signed callbacks on `/v1/webhooks/{name}`, and the lead download
    /// tasks of the listed forms.
    Tiktok(Box<TiktokConnector>),
    /// 腾讯广告 Tencent Ads: the `leads_list/get` pull.
    Tencent(Box<TencentConnector>),
}

impl ConnectorConfig {
    pub fn name(&self) -> &str {
        match self {
            Self::Webhook(c) => &c.name,
            Self::File(c) => &c.name,
            Self::Mysql(c) => &c.name,
            Self::GoogleAds(c) => &c.name,
            Self::HttpPull(c) => &c.name,
            Self::Meta(c) => &c.name,
            Self::Oceanengine(c) => &c.name,
            Self::Linkedin(c) => &c.name,
            Self::Tiktok(c) => &c.name,
            Self::Tencent(c) => &c.name,
        }
    }

    pub fn mapping(&self) -> &FieldMapping {
        match self {
            Self::Webhook(c) => &c.mapping,
            Self::File(c) => &c.mapping,
            Self::Mysql(c) => &c.mapping,
            Self::GoogleAds(c) => &c.mapping,
            Self::HttpPull(c) => &c.mapping,
            Self::Meta(c) => &c.mapping,
            Self::Oceanengine(c) => &c.mapping,
            Self::Linkedin(c) => &c.mapping,
            Self::Tiktok(c) => &c.mapping,
            Self::Tencent(c) => &c.mapping,
        }
    }

    pub fn default_region(&self) -> &str {
        match self {
            Self::Webhook(c) => &c.default_region,
            Self::File(c) => &c.default_region,
            Self::Mysql(c) => &c.default_region,
            Self::GoogleAds(c) => &c.default_region,
            Self::HttpPull(c) => &c.default_region,
            Self::Meta(c) => &c.default_region,
            Self::Oceanengine(c) => &c.default_region,
            Self::Linkedin(c) => &c.default_region,
            Self::Tiktok(c) => &c.default_region,
            Self::Tencent(c) => &c.default_region,
        }
    }

    /// Platform ids this connector's leads carry, by key kind: `{ wechat = "openid" }`.
    pub fn identity_fields(&self) -> &BTreeMap<String, String> {
        match self {
            Self::Webhook(c) => &c.identity_fields,
            Self::File(c) => &c.identity_fields,
            Self::Mysql(c) => &c.identity_fields,
            Self::GoogleAds(c) => &c.identity_fields,
            Self::HttpPull(c) => &c.identity_fields,
            Self::Meta(c) => &c.identity_fields,
            Self::Oceanengine(c) => &c.identity_fields,
            Self::Linkedin(c) => &c.identity_fields,
            Self::Tiktok(c) => &c.identity_fields,
            Self::Tencent(c) => &c.identity_fields,
        }
    }

    /// What happens to the platform's test leads.
    pub fn test_leads(&self) -> TestLeads {
        match self {
            Self::GoogleAds(c) => c.test_leads,
            Self::HttpPull(c) => c.test_leads,
            Self::Oceanengine(c) => c.test_leads,
            Self::Linkedin(c) => c.test_leads,
            _ => TestLeads::Topic,
        }
    }

    pub fn external_id_field(&self) -> Option<&str> {
        match self {
            Self::Webhook(c) => c.external_id_field.as_deref(),
            Self::File(c) => c.external_id_field.as_deref(),
            Self::Mysql(c) => Some(&c.id_column),
            Self::GoogleAds(_) => Some("lead_id"),
            Self::HttpPull(_) => None,
            Self::Meta(_) => Some("id"),
            Self::Oceanengine(_) => Some("clue_id"),
            Self::Linkedin(_) => Some("id"),
            Self::Tiktok(c) => Some(&c.id_column),
            Self::Tencent(_) => Some("leads_id"),
        }
    }
}

/// `type = "webhook"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConnector {
    /// Unique; the URL is `/v1/webhooks/{name}`. Letters, digits, `-` and `_`.
    pub name: String,
    /// ISO 3166 region for numbers written without a country code.
    #[serde(default = "default_region")]
    pub default_region: String,
    /// Extra input field names for contact fields (matched before the built-in English and Chinese ones).
    #[serde(default)]
    pub mapping: FieldMapping,
    /// Require an HMAC-SHA256 signature of the raw body.
    #[serde(default)]
    pub signature: Option<SignatureConfig>,
    /// A body field whose value acts as the idempotency key when no `Idempotency-Key` header is sent.
    #[serde(default)]
    pub idempotency_field: Option<String>,
    /// A body field holding the platform's own id of the lead (`source.external_id`). A second
    /// event with the same id is a redelivery and is dropped (source idempotency).
    #[serde(default)]
    pub external_id_field: Option<String>,
    /// Input fields holding platform ids that identify a person, by key kind:
    /// `identity_fields = { wechat = "openid", crm_id = "客户编号" }`.
    #[serde(default)]
    pub identity_fields: BTreeMap<String, String>,
    /// Requests per second allowed on this connector; more get 429 with `Retry-After`.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

impl WebhookConnector {
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            default_region: default_region(),
            mapping: FieldMapping::default(),
            signature: None,
            idempotency_field: None,
            external_id_field: None,
            identity_fields: BTreeMap::new(),
            rate_limit: None,
        }
    }
}

/// `type = "file"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConnector {
    pub name: String,
    #[serde(default = "default_region")]
    pub default_region: String,
    #[serde(default)]
    pub mapping: FieldMapping,
    #[serde(default)]
    pub external_id_field: Option<String>,
    #[serde(default)]
    pub identity_fields: BTreeMap<String, String>,
}

/// `type = "mysql"`: every row of a table (or query) becomes a lead, and every later change of
/// a row becomes a new event for the same `source.external_id` (see `docs/mysql.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConnector {
    pub name: String,
    /// `mysql://user:password@host:3306/database`; write `"${CRM_MYSQL_URL}"`.
    pub url: SecretString,
    /// The table to read, `leads` or `crm.leads`. Set this or `query`.
    #[serde(default)]
    pub table: Option<String>,
    /// A `SELECT` whose rows are the leads (a join, a filter); incremental mode only.
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub mode: MysqlMode,
    /// The column that identifies a row; its value is the lead's `source.external_id`.
    #[serde(default = "MysqlConnector::default_id_column")]
    pub id_column: String,
    /// Incremental mode: the `DATETIME`/`TIMESTAMP` column every insert and update moves
    /// forward (`updated_at`). Rows are read in `(timestamp, id)` order.
    #[serde(default)]
    pub timestamp_column: Option<String>,
    /// Incremental mode: a sweep every tenth of this (at most every 5 s) reads again the rows up
    /// to this long before the newest one read, so a row whose transaction committed late (with
    /// an older timestamp) is still seen. Longer than your longest write transaction.
    #[serde(
        with = "humantime_serde",
        default = "MysqlConnector::default_safety_lag"
    )]
    pub safety_lag: Duration,
    /// Incremental mode: the pause between polls once caught up.
    #[serde(
        with = "humantime_serde",
        default = "MysqlConnector::default_poll_interval"
    )]
    pub poll_interval: Duration,
    /// Rows per query (and per journal commit).
    #[serde(default = "MysqlConnector::default_batch_size")]
    pub batch_size: usize,
    /// Read the whole table first (a backfill), then follow changes. Without it, incremental
    /// mode starts from the oldest timestamp and binlog mode from the current binlog position.
    #[serde(default = "yes")]
    pub snapshot: bool,
    /// Binlog mode: when the stored binlog position was purged from the server, take a new
    /// snapshot (every row is published again) instead of stopping with an error.
    #[serde(default)]
    pub resnapshot_when_purged: bool,
    /// Binlog mode: the replica server id leadgate registers with; unique among the server's
    /// replicas.
    #[serde(default = "MysqlConnector::default_server_id")]
    pub server_id: u32,
    #[serde(default = "default_region")]
    pub default_region: String,
    /// Contact field -> column names, beyond the built-in English and Chinese ones.
    #[serde(default)]
    pub mapping: FieldMapping,
    #[serde(default)]
    pub identity_fields: BTreeMap<String, String>,
}

impl MysqlConnector {
    fn default_id_column() -> String {
        "id".into()
    }
    fn default_safety_lag() -> Duration {
        Duration::from_secs(30)
    }
    fn default_poll_interval() -> Duration {
        Duration::from_secs(1)
    }
    fn default_batch_size() -> usize {
        5000
    }
    fn default_server_id() -> u32 {
        48_151
    }
}

/// `type = "google_ads"`: Google Ads lead form webhooks (see `docs/connectors.md`). Google posts
/// `{lead_id, form_id, campaign_id, google_key, is_test, user_column_data: [...]}`; the answers
/// are mapped by their `column_id` (`FULL_NAME`, `PHONE_NUMBER`, `EMAIL`, ...).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleAdsConnector {
    pub name: String,
    /// The key entered in the lead form's webhook settings; Google sends it in the body. Write
    /// `"${GOOGLE_ADS_KEY}"`.
    pub google_key: SecretString,
    /// Leads sent with `is_test: true` (the "send test data" button).
    #[serde(default)]
    pub test_leads: TestLeads,
    #[serde(default = "default_region")]
    pub default_region: String,
    /// Extra names for contact fields (column ids or names), matched before the preset.
    #[serde(default)]
    pub mapping: FieldMapping,
    #[serde(default)]
    pub identity_fields: BTreeMap<String, String>,
}

/// `type = "http_pull"`: polls a JSON API page by page (see `docs/connectors.md`). Each page
/// is journaled with the position of the next one, so a restart resumes mid-pull; a lead read
/// twice (the next poll starts over, or the page was re-read) is dropped by its `id`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPullConnector {
    pub name: String,
    /// The first page's URL (`https://...`).
    pub url: String,
    /// `get` (the default) or `post`.
    #[serde(default)]
    pub method: Method,
    /// The JSON body of a `post` (secrets may be written `"${VAR}"`).
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Request headers; values may hold secrets: `{ Authorization = "Bearer ${ACME_TOKEN}" }`.
    #[serde(default)]
    pub headers: BTreeMap<String, SecretString>,
    /// Fixed query parameters added to every request.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// JSON pointer to the array of leads in a response, e.g. `"/data/list"`.
    pub records: String,
    /// JSON pointer to a lead's own id inside a record, e.g. `"/clue_id"`.
    pub id: String,
    pub paging: Paging,
    /// For APIs filtered by creation time: each poll asks for `[start, end)`, from where the last
    /// poll ended (minus `overlap`) to now.
    #[serde(default)]
    pub window: Option<TimeWindow>,
    /// For APIs that answer HTTP 200 with an error code in the body.
    #[serde(default)]
    pub error_code: Option<ErrorCodes>,
    /// Contact field -> JSON pointer inside a record: `{ phone = "/contact/mobile" }`.
    #[serde(default)]
    pub fields: BTreeMap<crate::mapping::ContactField, String>,
    /// JSON pointer to a record's test marker; a record whose value there is `true` (or `1`, or
    /// equals `test_value`) is a test lead.
    #[serde(default)]
    pub test_pointer: Option<String>,
    #[serde(default)]
    pub test_value: Option<serde_json::Value>,
    #[serde(default)]
    pub test_leads: TestLeads,
    /// The pause between polls once the last page was read.
    #[serde(with = "humantime_serde", default = "HttpPullConnector::default_poll")]
    pub poll_interval: Duration,
    /// Requests per second to this API (the platform's limit per token or account).
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default = "default_region")]
    pub default_region: String,
    #[serde(default)]
    pub mapping: FieldMapping,
    #[serde(default)]
    pub identity_fields: BTreeMap<String, String>,
}

impl HttpPullConnector {
    fn default_poll() -> Duration {
        Duration::from_secs(60)
    }
}

/// `type = "meta"`: Meta Lead Ads (see `docs/connectors.md`). Subscribe the app's page webhook
/// (`leadgen` field) to `https://<gateway>/v1/webhooks/{name}`; list the forms to reconcile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaConnector {
    pub name: String,
    /// The app secret: webhooks are signed with it (`X-Hub-Signature-256`).
    pub app_secret: SecretString,
    /// The token entered in the app's webhook settings, echoed in the `hub.challenge` handshake.
    pub verify_token: SecretString,
    /// A page access token with `leads_retrieval`; sent as `Authorization: Bearer`.
    pub access_token: SecretString,
    /// The app's id: with it, the token's expiry is read from `debug_token` (with the app token
    /// `{app_id}|{app_secret}`) and shown in the connector's health.
    #[serde(default)]
    pub app_id: Option<String>,
    /// The Graph API base, with its version.
    #[serde(default = "MetaConnector::default_graph_url")]
    pub graph_url: String,
    /// Lead form ids polled for leads the webhook missed (`GET /{form}/leads`). Empty: webhook
    /// only.
    #[serde(default)]
    pub forms: Vec<String>,
    /// The pause between reconciliation polls.
    #[serde(with = "humantime_serde", default = "MetaConnector::default_poll")]
    pub poll_interval: Duration,
    /// Each poll asks for leads created after the last poll began, minus this.
    #[serde(with = "humantime_serde", default = "MetaConnector::default_overlap")]
    pub overlap: Duration,
    /// How far back the very first poll reaches (Meta keeps leads for 90 days).
    #[serde(with = "humantime_serde", default = "MetaConnector::default_initial")]
    pub initial: Duration,
    /// Leads per page; halved while Meta throttles, grown back after.
    #[serde(default = "MetaConnector::default_page_size")]
    pub page_size: u32,
    /// Graph requests per second (the app's and the page's quotas are shared).
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default = "default_region")]
    pub default_region: String,
    /// Extra names for contact fields (form question keys), matched before the preset.
    #[serde(default)]
    pub mapping: FieldMapping,
    #[serde(default)]
    pub identity_fields: BTreeMap<String, String>,
}

impl MetaConnector {
    fn default_graph_url() -> String {
        "https://graph.facebook.com/v21.0".into()
    }
    fn default_poll() -> Duration {
        Duration::from_secs(15 * 60)
    }
    fn default_overlap() -> Duration {
        Duration::from_secs(3600)
    }
    fn default_initial() -> Duration {
        Duration::from_secs(7 * 24 * 3600)
    }
    fn default_page_size() -> u32 {
        100
    }
}

/// `type = "oceanengine"`: 巨量引擎 leads (see `docs/connectors.md`). A preset of the generic
/// pull for `clue/get`, plus the SPI push.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OceanEngineConnector {
    pub name: String,
    /// The app's access token (`Access-Token` header); write `"${OCEANENGINE_TOKEN}"`.
    pub access_token: SecretString,
    /// The advertisers whose leads are pulled.
    #[serde(default)]
    pub advertiser_ids: Vec<u64>,
    /// `false`: push only.
    #[serde(default = "default_true")]
    pub pull: bool,
    #[serde(default = "OceanEngineConnector::default_api_url")]
    pub api_url: String,
    /// Leads per page (`page_size`).
    #[serde(default = "OceanEngineConnector::default_page_size")]
    pub page_size: u32,
    #[serde(
        with = "humantime_serde",
        default = "OceanEngineConnector::default_poll"
    )]
    pub poll_interval: Duration,
    /// Each poll re-reads leads created this long before the last window ended (fields are
    /// filled about 10 minutes after a lead is created).
    #[serde(
        with = "humantime_serde",
        default = "OceanEngineConnector::default_overlap"
    )]
    pub overlap: Duration,
    #[serde(
        with = "humantime_serde",
        default = "OceanEngineConnector::default_initial"
    )]
    pub initial: Duration,
    /// Leads are pulled once they are this old, so the fields Ocean Engine fills late are there.
    #[serde(
        with = "humantime_serde",
        default = "OceanEngineConnector::default_settle"
    )]
    pub settle: Duration,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// The SPI subscription's secret: pushes are signed with it. Unset: no push.
    #[serde(default)]
    pub spi_secret: Option<SecretString>,
    /// The header carrying the push's hex HMAC-SHA256 (not documented publicly: configurable).
    #[serde(default = "OceanEngineConnector::default_spi_header")]
    pub spi_signature_header: String,
    /// Leads with `clue_source = 4` (ad previews).
    #[serde(default)]
    pub test_leads: TestLeads,
    #[serde(default = "default_region")]
    pub default_region: String,
    #[serde(default)]
    pub mapping: FieldMapping,
    /// Default: `{ wechat = "weixin", qq = "qq" }`.
    #[serde(default = "OceanEngineConnector::default_identity_fields")]
    pub identity_fields: BTreeMap<String, String>,
}

impl OceanEngineConnector {
    fn default_api_url() -> String {
        "https://ad.oceanengine.com/open_api/2/tools/clue/get/".into()
    }
    fn default_page_size() -> u32 {
        100
    }
    fn default_poll() -> Duration {
        Duration::from_secs(5 * 60)
    }
    fn default_overlap() -> Duration {
        Duration::from_secs(30 * 60)
    }
    fn default_initial() -> Duration {
        Duration::from_secs(7 * 24 * 3600)
    }
    fn default_settle() -> Duration {
        Duration::from_secs(10 * 60)
    }
    fn default_spi_header() -> String {
        "X-Open-Signature".into()
    }
    fn default_identity_fields() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("wechat".to_owned(), "weixin".to_owned()),
            ("qq".to_owned(), "qq".to_owned()),
        ])
    }
}

fn default_true() -> bool {
    true
}

/// `type = "linkedin"`: LinkedIn Lead Sync (see `docs/connectors.md`). Register
/// `https://<gateway>/v1/webhooks/{name}` as the app's lead notification URL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkedinConnector {
    pub name: String,
    /// The app's client secret: it signs notifications (`X-LI-Signature`) and answers the
    /// `challengeCode` validation.
    pub client_secret: SecretString,
    /// A token with `r_marketing_leadgen_automation`, sent as `Authorization: Bearer`.
    pub access_token: SecretString,
    #[serde(default = "LinkedinConnector::default_api_url")]
    pub api_url: String,
    /// The `LinkedIn-Version` header (`YYYYMM`).
    #[serde(default = "LinkedinConnector::default_api_version")]
    pub api_version: String,
    /// The ad account whose leads are polled (`urn:li:sponsoredAccount:123`): a reconciliation
    /// poll beside the notifications. Unset: notifications only.
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(with = "humantime_serde", default = "LinkedinConnector::default_poll")]
    pub poll_interval: Duration,
    /// Each poll reads responses submitted after the last poll's end, minus this.
    #[serde(
        with = "humantime_serde",
        default = "LinkedinConnector::default_overlap"
    )]
    pub overlap: Duration,
    #[serde(
        with = "humantime_serde",
        default = "LinkedinConnector::default_initial"
    )]
    pub initial: Duration,
    /// Responses per page (`count`).
    #[serde(default = "LinkedinConnector::default_page_size")]
    pub page_size: u32,
    /// Leads with `testLead: true`.
    #[serde(default)]
    pub test_leads: TestLeads,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default = "default_region")]
    pub default_region: String,
    /// Extra names for contact fields (predefined fields or question names), before the preset.
    #[serde(default)]
    pub mapping: FieldMapping,
    #[serde(default)]
    pub identity_fields: BTreeMap<String, String>,
}

impl LinkedinConnector {
    fn default_api_url() -> String {
        "https://api.linkedin.com/rest".into()
    }
    fn default_api_version() -> String {
        "202411".into()
    }
    fn default_poll() -> Duration {
        Duration::from_secs(15 * 60)
    }
    fn default_overlap() -> Duration {
        Duration::from_secs(3600)
    }
    fn default_initial() -> Duration {
        Duration::from_secs(7 * 24 * 3600)
    }
    fn default_page_size() -> u32 {
        100
    }
}

/// `type = "tiktok"`: TikTok lead generation (see `docs/connectors.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TiktokConnector {
    pub name: String,
    /// The secret callbacks are signed with; set it to take callbacks on `/v1/webhooks/{name}`.
    #[serde(default)]
    pub secret: Option<SecretString>,
    /// The header carrying a callback's hex HMAC-SHA256.
    #[serde(default = "TiktokConnector::default_signature_header")]
    pub signature_header: String,
    /// The Business API token (`Access-Token` header); set it, `advertiser_id` and `page_ids`
    /// to download leads.
    #[serde(default)]
    pub access_token: Option<SecretString>,
    #[serde(default)]
    pub advertiser_id: Option<String>,
    /// Lead forms (instant pages) whose leads are downloaded.
    #[serde(default)]
    pub page_ids: Vec<String>,
    #[serde(default = "TiktokConnector::default_api_url")]
    pub api_url: String,
    /// The pause between downloads of every form's leads.
    #[serde(with = "humantime_serde", default = "TiktokConnector::default_poll")]
    pub poll_interval: Duration,
    /// The column of a downloaded lead holding its id (a callback's lead id is its `id`).
    #[serde(default = "TiktokConnector::default_id_column")]
    pub id_column: String,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default = "default_region")]
    pub default_region: String,
    #[serde(default)]
    pub mapping: FieldMapping,
    #[serde(default)]
    pub identity_fields: BTreeMap<String, String>,
}

impl TiktokConnector {
    fn default_signature_header() -> String {
        "X-Open-Signature".into()
    }
    fn default_api_url() -> String {
        "https://business-api.tiktok.com/open_api/v1.3".into()
    }
    fn default_poll() -> Duration {
        Duration::from_secs(3600)
    }
    fn default_id_column() -> String {
        "lead_id".into()
    }

    /// Downloads are configured.
    pub fn pulls(&self) -> bool {
        self.access_token.is_some() && !self.page_ids.is_empty()
    }
}

/// `type = "tencent"`: 腾讯广告 leads (see `docs/connectors.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TencentConnector {
    pub name: String,
    /// Sent as the `access_token` parameter; write `"${TENCENT_ADS_TOKEN}"`.
    pub access_token: SecretString,
    pub account_id: u64,
    #[serde(default = "TencentConnector::default_api_url")]
    pub api_url: String,
    /// Leads per page (at most 200).
    #[serde(default = "TencentConnector::default_page_size")]
    pub page_size: u32,
    /// `TIME_TYPE_CREATED_TIME` or `TIME_TYPE_ACTION_TIME`.
    #[serde(default = "TencentConnector::default_time_type")]
    pub time_type: String,
    /// Rows served by page number; past them, `last_search_after_values` carries the position.
    #[serde(default = "TencentConnector::default_deep_paging_limit")]
    pub deep_paging_limit: u32,
    #[serde(with = "humantime_serde", default = "TencentConnector::default_poll")]
    pub poll_interval: Duration,
    #[serde(
        with = "humantime_serde",
        default = "TencentConnector::default_overlap"
    )]
    pub overlap: Duration,
    #[serde(
        with = "humantime_serde",
        default = "TencentConnector::default_initial"
    )]
    pub initial: Duration,
    /// Response codes that mean throttling (retried with backoff).
    #[serde(default)]
    pub throttled_codes: Vec<i64>,
    /// Response codes that mean the token expired or was revoked (the connector stops).
    #[serde(default)]
    pub expired_codes: Vec<i64>,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default = "default_region")]
    pub default_region: String,
    #[serde(default)]
    pub mapping: FieldMapping,
    /// Default: `{ wechat = "leads_wechat", qq = "leads_qq" }`.
    #[serde(default = "TencentConnector::default_identity_fields")]
    pub identity_fields: BTreeMap<String, String>,
}

impl TencentConnector {
    fn default_api_url() -> String {
        "https://api.e.qq.com/v3.0/leads_list/get".into()
    }
    fn default_page_size() -> u32 {
        100
    }
    fn default_time_type() -> String {
        "TIME_TYPE_CREATED_TIME".into()
    }
    fn default_deep_paging_limit() -> u32 {
        5000
    }
    fn default_poll() -> Duration {
        Duration::from_secs(5 * 60)
    }
    fn default_overlap() -> Duration {
        Duration::from_secs(30 * 60)
    }
    fn default_initial() -> Duration {
        Duration::from_secs(7 * 24 * 3600)
    }
    fn default_identity_fields() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("wechat".to_owned(), "leads_wechat".to_owned()),
            ("qq".to_owned(), "leads_qq".to_owned()),
        ])
    }
}

/// How an API pages.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Paging {
    /// `?page=1&page_size=100`, then 2, 3, ... until a page comes back empty or short.
    Page {
        param: String,
        #[serde(default)]
        size_param: Option<String>,
        #[serde(default = "Paging::default_size")]
        size: u32,
        #[serde(default = "Paging::default_start")]
        start: u64,
    },
    /// `?offset=0&limit=100`, then 100, 200, ...
    Offset {
        param: String,
        size_param: String,
        #[serde(default = "Paging::default_size")]
        size: u32,
    },
    /// `?cursor=<the value at the pointer `next` of the last response>` until it is absent.
    Cursor { param: String, next: String },
    /// The next page's full URL is at the pointer `next` of the response (Meta's `paging.next`).
    NextUrl { next: String },
    /// One request per poll (APIs that answer a whole time window at once).
    None,
}

impl Paging {
    fn default_size() -> u32 {
        100
    }
    fn default_start() -> u64 {
        1
    }
}

/// `window = { start_param = "start_time", end_param = "end_time", format = "%Y-%m-%d %H:%M:%S",
/// timezone = "Asia/Shanghai", overlap = "10m", initial = "7d" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    pub start_param: String,
    pub end_param: String,
    /// strftime format of the parameters; `"%s"` for unix seconds.
    #[serde(default = "TimeWindow::default_format")]
    pub format: String,
    /// IANA zone the API reads times in (Chinese platforms: GMT+8).
    #[serde(default = "TimeWindow::default_timezone")]
    pub timezone: String,
    /// Each window starts this long before the last one ended: leads created just before a
    /// window's end but indexed late are still read (the repeats are dropped by id).
    #[serde(with = "humantime_serde", default = "TimeWindow::default_overlap")]
    pub overlap: Duration,
    /// How far back the very first poll reaches.
    #[serde(with = "humantime_serde", default = "TimeWindow::default_initial")]
    pub initial: Duration,
    /// Windows end this long before now: leads are read once they have settled (Ocean Engine
    /// fills some fields about 10 minutes after a lead is created).
    #[serde(with = "humantime_serde", default)]
    pub delay: Duration,
}

impl TimeWindow {
    fn default_format() -> String {
        "%Y-%m-%d %H:%M:%S".into()
    }
    fn default_timezone() -> String {
        "Asia/Shanghai".into()
    }
    fn default_overlap() -> Duration {
        Duration::from_secs(600)
    }
    fn default_initial() -> Duration {
        Duration::from_secs(7 * 24 * 3600)
    }
}

/// `error_code = { pointer = "/code", ok = [0], throttled = [40100], expired = [40102] }`, or
/// with text: `{ pointer = "/header/desc", ok = ["success"] }`. A body whose value at `pointer`
/// is not in `ok` is an error; an absent value is not.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorCodes {
    pub pointer: String,
    #[serde(default)]
    pub ok: Vec<serde_json::Value>,
    /// Codes that mean "slow down": retried with backoff.
    #[serde(default)]
    pub throttled: Vec<serde_json::Value>,
    /// Codes that mean the token expired or was revoked: the connector stops until fixed.
    #[serde(default)]
    pub expired: Vec<serde_json::Value>,
    /// Where the error's text is, for the connector's status.
    #[serde(default = "ErrorCodes::default_message")]
    pub message: String,
}

impl ErrorCodes {
    fn default_message() -> String {
        "/message".into()
    }
}

/// The HTTP method of a pull request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    #[default]
    Get,
    /// With `body` as the JSON body; parameters named by a JSON pointer (`/body/startDate`) are
    /// set in it.
    Post,
}

/// Where a platform's test leads go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestLeads {
    /// To `[topics] test` (`leads.test`), never to the clean stream.
    #[default]
    Topic,
    /// With the other leads, marked `source.test = true`.
    Flag,
}

/// How a MySQL connector follows changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MysqlMode {
    /// Poll by `(timestamp_column, id_column)`, re-reading a safety window.
    #[default]
    Incremental,
    /// Follow the row-based binary log (`binlog_format = ROW`).
    Binlog,
}

pub(crate) fn default_region() -> String {
    "CN".into()
}

/// `[connectors.signature]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureConfig {
    /// The shared HMAC key; write `"${ENV_VAR}"` rather than the secret itself.
    pub secret: SecretString,
    /// Header carrying the hex digest, optionally prefixed `sha256=`.
    #[serde(default = "SignatureConfig::default_header")]
    pub header: String,
    /// If set, this header carries a unix timestamp (seconds), the signed message is
    /// `"{timestamp}.{raw body}"`, and requests older or newer than `tolerance` are refused.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    #[serde(
        with = "humantime_serde",
        default = "SignatureConfig::default_tolerance"
    )]
    pub tolerance: Duration,
}

impl SignatureConfig {
    fn default_header() -> String {
        "X-Signature".into()
    }
    fn default_tolerance() -> Duration {
        Duration::from_secs(300)
    }
}

/// `rate_limit = { per_second = 50, burst = 100 }`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    #[serde(default)]
    pub burst: Option<u32>,
}

impl RateLimit {
    /// The governor limiter for it (`None` when `per_second` is 0, which validation refuses).
    pub fn limiter(&self) -> Option<governor::DefaultDirectRateLimiter> {
        let per_second = std::num::NonZeroU32::new(self.per_second)?;
        let burst = self
            .burst
            .and_then(std::num::NonZeroU32::new)
            .unwrap_or(per_second);
        Some(governor::RateLimiter::direct(
            governor::Quota::per_second(per_second).allow_burst(burst),
        ))
    }
}

pub use crate::mapping::FieldMapping;
