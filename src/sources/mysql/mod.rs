//! The MySQL/MariaDB source: rows of a table (or query) become leads, first by a snapshot of the
//! whole table, then by following changes, either incrementally by `(timestamp, id)`
//! ([`incremental`]) or through the row-based binlog ([`binlog`]).
//!
//! Every batch of rows goes to the journal together with the checkpoint that covers it, in one
//! transaction ([`Journal::append_pulled`]), so a row acknowledged is never lost and a restart
//! resumes exactly where the journal left off. The connector's in-memory position only moves
//! after that commit, so a killed connection or a restarted server is retried with backoff from
//! the last committed batch. Each event carries the row's id as `external_id` and its version as
//! `revision`; identity's source idempotency turns a version read twice into one lead.
//!
//! The connector's definition and checks ([`config`]) are always built, so that a gateway built
//! without the `mysql` feature still reads a configuration that has one and says why it cannot
//! run it.

pub mod config;
#[cfg(feature = "mysql")]
mod source;

pub use config::{MysqlConnector, MysqlMode};
#[cfg(feature = "mysql")]
pub use source::*;

use crate::sources::connector::{Checks, Connector, common_fields};
use crate::sources::status::State;

common_fields!(MysqlConnector);

impl Connector for MysqlConnector {
    fn external_id_field(&self) -> Option<&str> {
        Some(&self.id_column)
    }

    fn check(&self, checks: &mut Checks) {
        if !cfg!(feature = "mysql") {
            checks.push(
                "type",
                "the mysql connector needs a leadgate built with the `mysql` feature",
            );
        }
        if let Err(e) = config::check_url(secrecy::ExposeSecret::expose_secret(&self.url)) {
            checks.push("url", &e);
        }
        match (&self.table, &self.query) {
            (None, None) => checks.push("table", "missing; set `table` or `query`"),
            (Some(_), Some(_)) => checks.push("query", "set `table` or `query`, not both"),
            (Some(t), None) if !config::is_sql_name(t, true) => checks.push(
                "table",
                "a table name is `table` or `database.table`: letters, digits, `_` and `$`",
            ),
            (None, Some(q))
                if !q
                    .trim_start()
                    .get(..6)
                    .is_some_and(|w| w.eq_ignore_ascii_case("select")) =>
            {
                checks.push("query", "must be a SELECT statement")
            }
            _ => {}
        }
        let columns = [
            ("id_column", Some(&self.id_column)),
            ("timestamp_column", self.timestamp_column.as_ref()),
        ];
        for (key, column) in columns {
            if column.is_some_and(|c| !config::is_sql_name(c, false)) {
                checks.push(key, "a column name is letters, digits, `_` and `$`");
            }
        }
        match self.mode {
            MysqlMode::Incremental if self.timestamp_column.is_none() => checks.push(
                "timestamp_column",
                "incremental mode needs the column every change moves forward, e.g. \"updated_at\"",
            ),
            MysqlMode::Binlog if self.query.is_some() => checks.push(
                "query",
                "binlog mode follows one table: set `table` instead",
            ),
            _ => {}
        }
        if self.batch_size == 0 {
            checks.push("batch_size", "must be at least 1");
        }
        checks.at_least_one("server_id", self.server_id);
    }

    fn initial_state(&self) -> State {
        State::Starting
    }

    fn mode(&self) -> Option<String> {
        Some(format!("{:?}", self.mode).to_lowercase())
    }

    fn banner(&self, base: &str) -> Option<String> {
        Some(format!(
            "mysql ({:?}): {}; health at {base}/v1/connectors/{}",
            self.mode,
            self.table.as_deref().unwrap_or("query"),
            self.name
        ))
    }

    #[cfg(feature = "mysql")]
    fn start(
        &self,
        cx: &crate::sources::connector::Start<'_>,
    ) -> anyhow::Result<crate::sources::connector::Started> {
        source::start(self, cx)
    }
}
