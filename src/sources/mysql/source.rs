//! The running MySQL source (needs the `mysql` feature).

pub mod binlog;
pub mod incremental;

use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Row, Value as SqlValue};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::watch;

use super::config::{MysqlConnector, MysqlMode};
use crate::intake::JournalError;
use crate::lead::{IntakeEvent, Issue, SourceKind, now_rfc3339};
use crate::sources::pull::PageSink;
use crate::sources::status::{SnapshotProgress, State};

/// Where a MySQL connector is; stored in the journal with the rows it covers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Present while a snapshot is under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotCheckpoint>,
    /// Incremental mode: the newest row delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
    /// Binlog mode: where the next transaction starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binlog: Option<BinlogPosition>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotCheckpoint {
    /// The id of the last row delivered; `None` before the first page.
    pub after_id: Option<Value>,
    pub rows_done: u64,
    pub rows_total: u64,
    /// Binlog mode: the revision every snapshot row carries (`snapshot@{file}:{position}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// `YYYY-MM-DD HH:MM:SS.ffffff`, as the server stores it.
    pub timestamp: String,
    pub id: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogPosition {
    pub file: String,
    pub position: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("MySQL: {0}")]
    Sql(#[from] mysql_async::Error),
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Retrying cannot help: the operator must act.
    #[error("{0}")]
    Fatal(String),
    #[error("{0}")]
    Other(String),
    /// An operator paused the connector: the read stops, and starts again from the checkpoint
    /// when resumed.
    #[error("paused")]
    Paused,
}

/// One running MySQL connector: its settings, its committed checkpoint and where it reports.
pub(crate) struct Ctx {
    cfg: MysqlConnector,
    opts: Opts,
    /// `` `db`.`table` `` or `(query) AS src`.
    source_sql: String,
    /// The database and table followed in binlog mode.
    schema: String,
    table: String,
    sink: PageSink,
    shutdown: watch::Receiver<bool>,
    checkpoint: Checkpoint,
}

impl Ctx {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// `Err(Paused)` once an operator paused the connector: the read in progress ends there.
    fn unless_paused(&self) -> Result<(), SourceError> {
        if self.sink.statuses.is_paused(self.name()) {
            Err(SourceError::Paused)
        } else {
            Ok(())
        }
    }

    async fn connect(&self) -> Result<Conn, SourceError> {
        Ok(Conn::new(self.opts.clone()).await?)
    }

    /// Journals `events` with `checkpoint` in one transaction, then adopts the checkpoint.
    async fn commit(
        &mut self,
        events: Vec<IntakeEvent>,
        checkpoint: Checkpoint,
    ) -> Result<(), SourceError> {
        let n = self.send(events, &checkpoint).await?;
        self.adopt(checkpoint, n);
        Ok(())
    }

    /// Journals `events` with `checkpoint` in one transaction. The future borrows nothing from
    /// the connector, so the next page can be read and converted while the journal commits;
    /// [`Ctx::adopt`] the checkpoint once it resolved (never before).
    fn send(
        &self,
        events: Vec<IntakeEvent>,
        checkpoint: &Checkpoint,
    ) -> impl Future<Output = Result<u64, JournalError>> + use<> {
        self.sink.send(events, checkpoint)
    }

    /// Takes `checkpoint`, whose `n` events are journaled, as the connector's position.
    fn adopt(&mut self, checkpoint: Checkpoint, n: u64) {
        self.sink.shown(&checkpoint, n, |s| {
            s.snapshot = checkpoint.snapshot.as_ref().map(|p| SnapshotProgress {
                rows_done: p.rows_done,
                rows_total: p.rows_total,
            });
        });
        self.checkpoint = checkpoint;
    }

    fn read(&self, rows: usize) {
        self.sink
            .statuses
            .update(&self.cfg.name, |s| s.rows_read += rows as u64);
    }

    /// Sleeps `d`; false when shutdown came first.
    async fn pause(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.shutdown.changed() => false,
        }
    }

    /// The event of one row.
    /// The event of one row read at `received_at` (one clock reading per page).
    fn event(&self, row: RowObject, revision: Option<String>, received_at: &str) -> IntakeEvent {
        IntakeEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            connector: self.cfg.name.clone(),
            kind: SourceKind::Mysql,
            received_at: received_at.to_owned(),
            external_id: row.id,
            payload: Value::Object(row.fields),
            revision,
            issues: row.issues,
            test: false,
        }
    }
}

/// Starts the connector's reader: it retries on its own until shutdown, and reads its
/// checkpoint again from the journal if the supervisor restarts it.
pub(crate) fn start(
    cfg: &MysqlConnector,
    cx: &crate::sources::connector::Start<'_>,
) -> anyhow::Result<crate::sources::connector::Started> {
    let opts = Opts::from_url(cfg.url.expose_secret())
        .map_err(|e| anyhow::anyhow!("connector {}: url: {e}", cfg.name))?;
    let default_db = opts.db_name().unwrap_or_default().to_owned();
    let (schema, table) = match cfg.table.as_deref().map(|t| t.split_once('.')) {
        Some(Some((db, t))) => (db.to_owned(), t.to_owned()),
        Some(None) => (default_db, cfg.table.clone().unwrap_or_default()),
        None => (default_db, String::new()),
    };
    let source_sql = match &cfg.query {
        Some(q) => format!("({}) AS `src`", q.trim().trim_end_matches(';')),
        None if schema.is_empty() => quote(&table),
        None => format!("{}.{}", quote(&schema), quote(&table)),
    };
    let sink = cx.sink(&cfg.name);
    let cfg = cfg.clone();
    let role = match cfg.mode {
        MysqlMode::Incremental => "incremental read",
        MysqlMode::Binlog => "binlog read",
    };
    let task = crate::sources::supervise::Task::fallible(&cfg.name.clone(), role, move |shutdown| {
        let checkpoint = sink
            .checkpoint()
            .map_err(|e| format!("cannot read its stored checkpoint: {e}"));
        let ctx = checkpoint.map(|checkpoint| Ctx {
            cfg: cfg.clone(),
            opts: opts.clone(),
            source_sql: source_sql.clone(),
            schema: schema.clone(),
            table: table.clone(),
            sink: sink.clone(),
            shutdown,
            checkpoint,
        });
        async move {
            run(ctx?).await;
            Ok(())
        }
    });
    Ok(crate::sources::connector::Started {
        tasks: vec![task],
        webhook: None,
    })
}

/// Runs one connector until shutdown, retrying every failure with backoff from the last commit.
async fn run(mut ctx: Ctx) {
    let mut backoff = crate::retry::forever();
    let mut recent = incremental::Recent::default();
    loop {
        let statuses = ctx.sink.statuses.clone();
        if !statuses.while_paused(&ctx.cfg.name, &mut ctx.shutdown).await {
            return;
        }
        let result = match ctx.cfg.mode {
            MysqlMode::Incremental => incremental::run(&mut ctx, &mut recent).await,
            MysqlMode::Binlog => binlog::run(&mut ctx).await,
        };
        let (error, fatal) = match result {
            Ok(()) => return,
            Err(SourceError::Paused) => continue,
            Err(SourceError::Fatal(msg)) => (msg, true),
            Err(e) => (e.to_string(), false),
        };
        ctx.sink.statuses.failure(ctx.name(), &error, fatal);
        let delay = if fatal {
            // Nothing changes until the operator acts; look again now and then.
            Duration::from_secs(60)
        } else {
            backoff.next().unwrap_or(Duration::from_secs(10))
        };
        tracing::error!(connector = %ctx.cfg.name, %error, retry_in = ?delay, "MySQL source failed");
        if !ctx.pause(delay).await {
            return;
        }
    }
}

/// Reads the snapshot from where `ctx.checkpoint.snapshot` stands to the end of the table, in
/// `id` order, on `q` (a connection, or a transaction holding a consistent snapshot). Each row's
/// revision is `revision(row)`. Clears `checkpoint.snapshot` at the end.
async fn snapshot<Q: Queryable>(
    ctx: &mut Ctx,
    q: &mut Q,
    mut revision: impl FnMut(&RowObject) -> Option<String>,
) -> Result<(), SourceError> {
    let id = quote(&ctx.cfg.id_column);
    let n = ctx.cfg.batch_size;
    let first = format!("SELECT * FROM {} ORDER BY {id} LIMIT {n}", ctx.source_sql);
    let next = format!(
        "SELECT * FROM {} WHERE {id} > ? ORDER BY {id} LIMIT {n}",
        ctx.source_sql
    );
    let mut logged = std::time::Instant::now();
    // While the journal commits a page (and fsyncs), the next page is read and converted: the
    // database, the conversion and the journal work at the same time. Commits stay in order: the
    // next one is sent only after this one is confirmed.
    let mut prefetched: Option<Page> = None;
    loop {
        let Some(progress) = ctx.checkpoint.snapshot.clone() else {
            return Ok(());
        };
        ctx.sink.statuses.success(ctx.name(), State::Snapshot);
        if ctx.stopping() {
            return Ok(());
        }
        ctx.unless_paused()?;
        let page = match prefetched.take() {
            Some(page) => page,
            None => {
                let rows: Vec<Row> = match &progress.after_id {
                    None => q.exec(first.as_str(), ()).await?,
                    Some(after) => q.exec(next.as_str(), vec![sql_value(after)]).await?,
                };
                Page::of(ctx, rows, &progress, &mut revision)
            }
        };
        let mut checkpoint = ctx.checkpoint.clone();
        checkpoint.snapshot = (!page.done).then(|| page.progress.clone());
        let rows_done = page.progress.rows_done;
        let done = page.done;
        let sent = ctx.send(page.events, &checkpoint);
        let read_ahead = !done && !ctx.stopping();
        let cx: &Ctx = ctx;
        let ahead = async {
            match &page.progress.after_id {
                Some(after) if read_ahead => {
                    let rows: Vec<Row> = q.exec(next.as_str(), vec![sql_value(after)]).await?;
                    Ok::<_, SourceError>(Some(Page::of(cx, rows, &page.progress, &mut revision)))
                }
                _ => Ok(None),
            }
        };
        // The read goes first: its query is on the wire before the commit is awaited.
        let (ahead, sent) = tokio::join!(ahead, sent);
        let n = sent?;
        ctx.adopt(checkpoint, n);
        // A failed read ahead is retried from the checkpoint just adopted.
        prefetched = ahead?;
        if done || logged.elapsed() > Duration::from_secs(5) {
            logged = std::time::Instant::now();
            tracing::info!(
                connector = %ctx.cfg.name,
                rows_done,
                rows_total = progress.rows_total,
                "snapshot {}",
                if done { "complete" } else { "in progress" }
            );
        }
    }
}

/// A snapshot page converted to events, and the progress once it is journaled.
struct Page {
    events: Vec<IntakeEvent>,
    progress: SnapshotCheckpoint,
    /// The last page: the table has no more rows.
    done: bool,
}

impl Page {
    fn of(
        ctx: &Ctx,
        rows: Vec<Row>,
        before: &SnapshotCheckpoint,
        revision: &mut impl FnMut(&RowObject) -> Option<String>,
    ) -> Self {
        ctx.read(rows.len());
        let done = rows.len() < ctx.cfg.batch_size;
        let now = now_rfc3339();
        let mut events = Vec::with_capacity(rows.len());
        let mut last_id = before.after_id.clone();
        for row in rows {
            let row = RowObject::from_row(row, &ctx.cfg.id_column);
            last_id = Some(row.id_value.clone());
            let revision = revision(&row);
            events.push(ctx.event(row, revision, &now));
        }
        let rows_done = before.rows_done + events.len() as u64;
        Self {
            events,
            progress: SnapshotCheckpoint {
                after_id: last_id,
                rows_done,
                rows_total: before.rows_total.max(rows_done),
                revision: before.revision.clone(),
            },
            done,
        }
    }
}

/// One row as a lead payload: its fields in column order, its id, and what could not be read.
pub(crate) struct RowObject {
    pub fields: Map<String, Value>,
    /// The id column's value as text (`source.external_id`).
    pub id: Option<String>,
    pub id_value: Value,
    pub issues: Vec<Issue>,
}

impl RowObject {
    fn from_row(row: Row, id_column: &str) -> Self {
        let columns = row.columns();
        let values = row.unwrap();
        Self::from_values(
            columns.iter().zip(values).map(|(c, v)| {
                let kind = if c.column_type() == ColumnType::MYSQL_TYPE_DATE {
                    Kind::Date
                } else if c.character_set() == BINARY_CHARSET
                    && c.flags().contains(ColumnFlags::BINARY_FLAG)
                    && is_text_type(c.column_type())
                {
                    Kind::Binary
                } else {
                    Kind::Other
                };
                (c.name_str().into_owned(), v, kind)
            }),
            id_column,
        )
    }

    /// From `(column, value, kind)` triples.
    pub(crate) fn from_values(
        values: impl IntoIterator<Item = (String, SqlValue, Kind)>,
        id_column: &str,
    ) -> Self {
        let mut fields = Map::new();
        let mut issues = Vec::new();
        for (name, value, kind) in values {
            let json = match to_json(value, kind) {
                Ok(v) => v,
                Err(why) => {
                    issues.push(Issue::new(
                        format!("raw.{name}"),
                        "source.unreadable_value",
                        format!("column `{name}`: {why}; published as null"),
                    ));
                    Value::Null
                }
            };
            fields.insert(name, json);
        }
        let id_value = fields.get(id_column).cloned().unwrap_or(Value::Null);
        let id = match &id_value {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        };
        Self {
            fields,
            id,
            id_value,
            issues,
        }
    }
}

/// MySQL's `binary` character set number.
const BINARY_CHARSET: u16 = 63;

fn is_text_type(t: ColumnType) -> bool {
    use ColumnType::*;
    matches!(
        t,
        MYSQL_TYPE_VARCHAR
            | MYSQL_TYPE_VAR_STRING
            | MYSQL_TYPE_STRING
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB
            | MYSQL_TYPE_BLOB
    )
}

/// How to read a column's value beyond its [`SqlValue`] variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A `DATE`: no time of day.
    Date,
    /// `BINARY`, `VARBINARY`, `BLOB`: bytes, published as text only when they are UTF-8.
    Binary,
    Other,
}

/// A column value as JSON: numbers stay numbers, text is text, dates are
/// `YYYY-MM-DD[ HH:MM:SS[.ffffff]]`. An error says why the value cannot be read.
pub(crate) fn to_json(value: SqlValue, kind: Kind) -> Result<Value, String> {
    Ok(match value {
        SqlValue::NULL => Value::Null,
        SqlValue::Int(i) => Value::from(i),
        SqlValue::UInt(u) => Value::from(u),
        SqlValue::Float(f) => float(f64::from(f))?,
        SqlValue::Double(f) => float(f)?,
        SqlValue::Bytes(b) => match String::from_utf8(b) {
            Ok(s) => Value::String(s),
            Err(e) if kind == Kind::Binary => {
                return Err(format!("{} bytes of binary data", e.as_bytes().len()));
            }
            Err(_) => return Err("text that is not valid UTF-8".into()),
        },
        SqlValue::Date(y, m, d, ..) if y == 0 || m == 0 || d == 0 => {
            return Err(format!("the zero date {y:04}-{m:02}-{d:02}"));
        }
        SqlValue::Date(y, m, d, h, mi, s, us) => {
            let mut t = format!("{y:04}-{m:02}-{d:02}");
            if kind != Kind::Date || (h, mi, s, us) != (0, 0, 0, 0) {
                let _ = write!(t, " {h:02}:{mi:02}:{s:02}");
                if us > 0 {
                    let _ = write!(t, ".{us:06}");
                }
            }
            Value::String(t)
        }
        SqlValue::Time(neg, days, h, m, s, us) => {
            let hours = u64::from(days) * 24 + u64::from(h);
            let mut t = format!("{}{hours:02}:{m:02}:{s:02}", if neg { "-" } else { "" });
            if us > 0 {
                let _ = write!(t, ".{us:06}");
            }
            Value::String(t)
        }
    })
}

fn float(f: f64) -> Result<Value, String> {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| format!("the number {f}, which JSON cannot hold"))
}

/// A timestamp column's value as a cursor: `YYYY-MM-DD HH:MM:SS.ffffff`, always with six
/// fraction digits so that text order is time order. A value may come as a date (the binary
/// protocol) or as its text (the text protocol, e.g. an aggregate like `MAX(updated_at)`).
pub(crate) fn cursor_text(value: &SqlValue) -> Option<String> {
    match value {
        SqlValue::Date(y, m, d, h, mi, s, us) if *y > 0 && *m > 0 && *d > 0 => Some(format!(
            "{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}"
        )),
        SqlValue::Bytes(text) => {
            let at: jiff::civil::DateTime = std::str::from_utf8(text).ok()?.trim().parse().ok()?;
            let us = at.subsec_nanosecond() / 1000;
            Some(format!("{}.{us:06}", at.strftime("%Y-%m-%d %H:%M:%S")))
        }
        _ => None,
    }
}

/// A JSON id (as stored in a checkpoint) as a statement parameter.
pub(crate) fn sql_value(v: &Value) -> SqlValue {
    match v {
        Value::Number(n) => n
            .as_i64()
            .map(SqlValue::Int)
            .or_else(|| n.as_u64().map(SqlValue::UInt))
            .unwrap_or_else(|| SqlValue::Double(n.as_f64().unwrap_or_default())),
        Value::String(s) => SqlValue::Bytes(s.clone().into_bytes()),
        Value::Null => SqlValue::NULL,
        other => SqlValue::Bytes(other.to_string().into_bytes()),
    }
}

/// A name quoted for SQL. Names are checked when the configuration loads (letters, digits, `_`,
/// `$`), so this cannot be escaped out of.
pub(crate) fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_json_and_unreadable_ones_become_issues() {
        let row = RowObject::from_values(
            [
                ("id".to_owned(), SqlValue::Int(7), Kind::Other),
                (
                    "name".into(),
                    SqlValue::Bytes("张三".as_bytes().to_vec()),
                    Kind::Other,
                ),
                ("score".into(), SqlValue::Double(1.5), Kind::Other),
                (
                    "born".into(),
                    SqlValue::Date(1990, 5, 1, 0, 0, 0, 0),
                    Kind::Date,
                ),
                (
                    "at".into(),
                    SqlValue::Date(2026, 11, 24, 8, 5, 9, 120),
                    Kind::Other,
                ),
                (
                    "zero".into(),
                    SqlValue::Date(0, 0, 0, 0, 0, 0, 0),
                    Kind::Other,
                ),
                (
                    "blob".into(),
                    SqlValue::Bytes(vec![0xff, 0xfe]),
                    Kind::Binary,
                ),
                ("latin".into(), SqlValue::Bytes(vec![0xe9]), Kind::Other),
                (
                    "wait".into(),
                    SqlValue::Time(true, 1, 2, 3, 4, 0),
                    Kind::Other,
                ),
                ("gone".into(), SqlValue::NULL, Kind::Other),
            ],
            "id",
        );
        assert_eq!(row.id.as_deref(), Some("7"));
        assert_eq!(
            Value::Object(row.fields),
            serde_json::json!({
                "id": 7, "name": "张三", "score": 1.5, "born": "1990-05-01",
                "at": "2026-11-24 08:05:09.000120", "zero": null, "blob": null, "latin": null,
                "wait": "-26:03:04", "gone": null
            })
        );
        let fields: Vec<&str> = row.issues.iter().map(|i| &*i.field).collect();
        assert_eq!(fields, ["raw.zero", "raw.blob", "raw.latin"]);
        assert!(
            row.issues
                .iter()
                .all(|i| i.code == "source.unreadable_value")
        );
        assert!(
            row.issues[0].message.contains("zero date"),
            "{:?}",
            row.issues[0]
        );
    }

    #[test]
    fn cursor_text_orders_like_time() {
        let a = cursor_text(&SqlValue::Date(2026, 11, 24, 10, 0, 0, 0)).unwrap();
        let b = cursor_text(&SqlValue::Date(2026, 11, 24, 10, 0, 0, 500)).unwrap();
        let c = cursor_text(&SqlValue::Date(2026, 11, 24, 10, 0, 1, 0)).unwrap();
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(cursor_text(&SqlValue::Date(0, 0, 0, 0, 0, 0, 0)), None);
        assert_eq!(cursor_text(&SqlValue::NULL), None);
        // The text protocol's form of the same values (what `MAX(updated_at)` comes back as).
        let text = |t: &str| cursor_text(&SqlValue::Bytes(t.as_bytes().to_vec()));
        assert_eq!(text("2026-11-24 10:00:00").as_ref(), Some(&a));
        assert_eq!(text("2026-11-24 10:00:00.000500").as_ref(), Some(&b));
        assert_eq!(text("2026-11-24 10:00:01.000").as_ref(), Some(&c));
        assert_eq!(text("0000-00-00 00:00:00"), None);
        assert_eq!(text("not a time"), None);
    }

    #[test]
    fn names_are_quoted() {
        assert_eq!(quote("updated_at"), "`updated_at`");
        assert_eq!(quote("a`b"), "`a``b`");
    }

    #[test]
    fn checkpoints_read_back() {
        let cp = Checkpoint {
            snapshot: Some(SnapshotCheckpoint {
                after_id: Some(Value::from(42)),
                rows_done: 42,
                rows_total: 100,
                revision: None,
            }),
            cursor: Some(Cursor {
                timestamp: "2026-11-24 10:00:00.000000".into(),
                id: Value::Null,
            }),
            binlog: None,
        };
        let back: Checkpoint = serde_json::from_slice(&serde_json::to_vec(&cp).unwrap()).unwrap();
        assert_eq!(back, cp);
        assert!(matches!(sql_value(&Value::from(42)), SqlValue::Int(42)));
        assert!(matches!(sql_value(&Value::from("a")), SqlValue::Bytes(_)));
    }
}
