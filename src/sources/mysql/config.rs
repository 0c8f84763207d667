//! The MySQL connector's definition (`type = "mysql"`); its checks and start are in the module
//! (`mod.rs`), which needs the running source only with the `mysql` feature.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::mapping::FieldMapping;
use crate::sources::connector::{default_region, yes};

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
    /// The answer that says the person agreed, and whether it is required: see
    /// `docs/privacy.md#consent`.
    #[serde(default)]
    pub consent: Option<crate::consent::ConsentMapping>,
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

/// A table or column name leadgate may quote into SQL: `name`, or `db.name` for tables.
pub(super) fn is_sql_name(name: &str, qualified: bool) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 64
            && p.chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
    };
    match name.split_once('.') {
        Some((db, table)) if qualified => part(db) && part(table),
        Some(_) => false,
        None => part(name),
    }
}

/// A `mysql://` URL, as the connector and the shared stores take it.
#[cfg(feature = "mysql")]
pub fn check_url(url: &str) -> Result<(), String> {
    mysql_async::Opts::from_url(url)
        .map(drop)
        .map_err(|e| format!("not a MySQL URL (mysql://user:password@host:3306/database): {e}"))
}

/// A `mysql://` URL, as the connector and the shared stores take it.
#[cfg(not(feature = "mysql"))]
pub fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("mysql://") {
        Ok(())
    } else {
        Err("not a MySQL URL (mysql://user:password@host:3306/database)".into())
    }
}
