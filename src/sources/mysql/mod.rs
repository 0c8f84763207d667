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
