//! Binlog mode: follow the row-based binary log (Debezium-style), so every insert and every
//! update of the table is an event, including the ones a poll would never see.
//!
//! - **Start.** With `snapshot`, the table is read inside `START TRANSACTION WITH CONSISTENT
//!   SNAPSHOT`, and the stream starts at the binlog position of that snapshot (MariaDB reports it
//!   exactly as `binlog_snapshot_file`/`_position`; on MySQL the position is read just before the
//!   snapshot, so a change made in between is published twice, never missed). Snapshot rows carry
//!   the revision `snapshot@{file}:{position}`.
//! - **Stream.** Inserts and updates of the table become events with revision
//!   `binlog:{file}:{end position of the rows event}:{row}`; deletes are not leads and are skipped.
//!   Rows are held until their transaction's commit (XID) and journaled with the position after
//!   it, so the checkpoint always sits on a transaction boundary.
//! - **Resume** from the stored file and position. mysql_async asks for GTIDs with MySQL's
//!   `COM_BINLOG_DUMP_GTID`, which MariaDB does not speak, so leadgate resumes by position on
//!   both.
//! - **Purged position.** If the server no longer has the stored file (`PURGE BINARY LOGS`, or
//!   `expire_logs_days`), the changes in between are gone from the log. With
//!   `resnapshot_when_purged` the connector takes a new snapshot and continues from there (every
//!   row is published again with a new revision); otherwise it stops with an error that says so.

use std::time::{Duration, Instant};

use futures::StreamExt;
use mysql_async::binlog::events::{EventData, RowsEventData};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, IsolationLevel, TxOpts, Value as SqlValue};

use super::{BinlogPosition, Checkpoint, Ctx, Kind, RowObject, SnapshotCheckpoint, SourceError};
use crate::sources::status::State;

/// The server's error for a binlog file it no longer has.
const ER_MASTER_FATAL_ERROR_READING_BINLOG: u16 = 1236;
/// How often the server sends a heartbeat on an idle stream, and how long a silent stream is
/// trusted before reconnecting.
const HEARTBEAT: Duration = Duration::from_secs(5);
const SILENCE: Duration = Duration::from_secs(30);
/// An idle table still moves the stored position this often, so a restart need not re-read
/// much of the log, and the position stays ahead of purges.
const IDLE_CHECKPOINT: Duration = Duration::from_secs(10);

pub(super) async fn run(ctx: &mut Ctx) -> Result<(), SourceError> {
    let mut conn = ctx.connect().await?;
    check_server(&mut conn).await?;
    let columns = columns(&mut conn, &ctx.schema, &ctx.table).await?;

    if ctx.checkpoint.binlog.is_none() || ctx.checkpoint.snapshot.is_some() {
        if ctx.cfg.snapshot {
            snapshot(ctx, &mut conn).await?;
        } else {
            let (file, position) = master_position(&mut conn).await?;
            let checkpoint = Checkpoint {
                binlog: Some(BinlogPosition { file, position }),
                ..Default::default()
            };
            ctx.commit(Vec::new(), checkpoint).await?;
        }
    }
    if ctx.stopping() {
        return Ok(());
    }
    match stream(ctx, columns).await {
        Err(SourceError::Sql(mysql_async::Error::Server(e)))
            if e.code == ER_MASTER_FATAL_ERROR_READING_BINLOG =>
        {
            let at = ctx.checkpoint.binlog.clone();
            if ctx.cfg.resnapshot_when_purged {
                tracing::warn!(connector = %ctx.cfg.name, position = ?at, error = %e.message,
                    "the stored binlog position is gone; taking a new snapshot");
                ctx.commit(Vec::new(), Checkpoint::default()).await?;
                Err(SourceError::Other(format!(
                    "binlog position {at:?} was purged ({}); a new snapshot starts",
                    e.message
                )))
            } else {
                Err(SourceError::Fatal(format!(
                    "the stored binlog position {at:?} is no longer on the server ({}): changes \
                     made since are not in the log. Set resnapshot_when_purged = true to publish \
                     the table again from a new snapshot",
                    e.message
                )))
            }
        }
        other => other,
    }
}

/// Binlog mode needs row events with every column.
async fn check_server(conn: &mut mysql_async::Conn) -> Result<(), SourceError> {
    let (format, image): (Option<String>, Option<String>) = conn
        .query_first("SELECT @@GLOBAL.binlog_format, @@GLOBAL.binlog_row_image")
        .await?
        .unwrap_or((None, None));
    let log_bin: Option<u8> = conn.query_first("SELECT @@GLOBAL.log_bin").await?;
    if log_bin != Some(1) {
        return Err(SourceError::Fatal(
            "the server's binary log is off: start it with log_bin (and binlog_format=ROW)".into(),
        ));
    }
    if !format
        .as_deref()
        .is_some_and(|f| f.eq_ignore_ascii_case("ROW"))
    {
        return Err(SourceError::Fatal(format!(
            "binlog_format is {format:?}; binlog mode needs ROW (SET GLOBAL binlog_format = 'ROW')"
        )));
    }
    if !image
        .as_deref()
        .is_some_and(|i| i.eq_ignore_ascii_case("FULL"))
    {
        return Err(SourceError::Fatal(format!(
            "binlog_row_image is {image:?}; binlog mode needs FULL"
        )));
    }
    Ok(())
}

/// The table's columns in order, with how to read each.
async fn columns(
    conn: &mut mysql_async::Conn,
    schema: &str,
    table: &str,
) -> Result<Vec<(String, Kind)>, SourceError> {
    let rows: Vec<(String, String)> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (schema, table),
        )
        .await?;
    if rows.is_empty() {
        return Err(SourceError::Fatal(format!(
            "table `{schema}`.`{table}` does not exist"
        )));
    }
    Ok(rows
        .into_iter()
        .map(|(name, ty)| {
            let kind = match ty.to_ascii_lowercase().as_str() {
                "date" => Kind::Date,
                "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                    Kind::Binary
                }
                _ => Kind::Other,
            };
            (name, kind)
        })
        .collect())
}

async fn master_position(conn: &mut mysql_async::Conn) -> Result<(String, u64), SourceError> {
    let row: Option<mysql_async::Row> = conn.query_first("SHOW MASTER STATUS").await?;
    let row = row.ok_or_else(|| {
        SourceError::Fatal("SHOW MASTER STATUS is empty: the binary log is off".into())
    })?;
    let file: Option<String> = row.get(0);
    let position: Option<u64> = row.get(1);
    Ok((file.unwrap_or_default(), position.unwrap_or(4)))
}

/// Reads the table in one consistent snapshot, recording the binlog position it corresponds to.
async fn snapshot(ctx: &mut Ctx, conn: &mut mysql_async::Conn) -> Result<(), SourceError> {
    let before = master_position(conn).await?;
    let mut opts = TxOpts::new();
    opts.with_consistent_snapshot(true)
        .with_isolation_level(IsolationLevel::RepeatableRead)
        .with_readonly(true);
    let mut tx = conn.start_transaction(opts).await?;
    // MariaDB knows the exact position of the snapshot; MySQL does not, so use the one before.
    let status: Vec<(String, String)> = tx.query("SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
    let exact = |name: &str| {
        status
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let here = match (
        exact("binlog_snapshot_file"),
        exact("binlog_snapshot_position"),
    ) {
        (Some(f), Some(p)) if !f.is_empty() => (f, p.parse().unwrap_or(before.1)),
        _ => before,
    };
    if ctx.checkpoint.snapshot.is_none() {
        let total: Option<u64> = tx
            .query_first(format!("SELECT COUNT(*) FROM {}", ctx.source_sql))
            .await?;
        let checkpoint = Checkpoint {
            snapshot: Some(SnapshotCheckpoint {
                rows_total: total.unwrap_or(0),
                revision: Some(format!("snapshot@{}:{}", here.0, here.1)),
                ..Default::default()
            }),
            binlog: Some(BinlogPosition {
                file: here.0,
                position: here.1,
            }),
            ..Default::default()
        };
        ctx.commit(Vec::new(), checkpoint).await?;
    }
    // A snapshot resumed after a restart keeps its first position: the stream then replays
    // every change since, so nothing is missed (some rows are published twice).
    let revision = ctx
        .checkpoint
        .snapshot
        .as_ref()
        .and_then(|s| s.revision.clone());
    super::snapshot(ctx, &mut tx, move |_| revision.clone()).await?;
    tx.commit().await?;
    Ok(())
}

/// Follows the binlog from the stored position until shutdown.
async fn stream(ctx: &mut Ctx, columns: Vec<(String, Kind)>) -> Result<(), SourceError> {
    let Some(start) = ctx.checkpoint.binlog.clone() else {
        return Err(SourceError::Other(
            "no binlog position to start from".into(),
        ));
    };
    let mut conn = ctx.connect().await?;
    conn.query_drop(format!(
        "SET @master_heartbeat_period = {}",
        HEARTBEAT.as_nanos()
    ))
    .await?;
    let request = BinlogStreamRequest::new(ctx.cfg.server_id)
        .with_filename(start.file.as_bytes())
        .with_pos(start.position);
    let mut stream = conn.get_binlog_stream(request).await?;
    let mut file = start.file.clone();
    let mut pending = Vec::new();
    let mut last_commit = Instant::now();
    let mut columns = columns;
    let mut first = true;
    // Until the stream's first format description, the reader does not know that events carry
    // a checksum, so the name in the opening (fake) rotate event has 4 stray bytes: the file is
    // the one asked for anyway.
    let mut described = false;
    let mut pauses = ctx.sink.statuses.pauses();
    loop {
        ctx.unless_paused()?;
        let next = tokio::select! {
            next = tokio::time::timeout(SILENCE, stream.next()) => next,
            _ = ctx.shutdown.changed() => return Ok(()),
            // Paused: checked at the top of the loop.
            _ = pauses.changed() => continue,
        };
        let event = match next {
            Err(_) => {
                return Err(SourceError::Other(format!(
                    "the binlog stream was silent for {SILENCE:?}"
                )));
            }
            Ok(None) => {
                return Err(SourceError::Other(
                    "the server ended the binlog stream".into(),
                ));
            }
            Ok(Some(event)) => event?,
        };
        if first {
            first = false;
            ctx.sink.statuses.success(ctx.name(), State::Following);
        }
        let header = event.header();
        let end = u64::from(header.log_pos());
        let data = event.read_data().map_err(|e| {
            SourceError::Other(format!("unreadable binlog event at {file}:{end}: {e}"))
        })?;
        match data {
            Some(EventData::FormatDescriptionEvent(_)) => described = true,
            Some(EventData::RotateEvent(r)) if described => file = r.name().into_owned(),
            Some(EventData::RowsEvent(rows)) => {
                let Some(tme) = stream.get_tme(rows.table_id()) else {
                    continue;
                };
                if tme.database_name() != ctx.schema || tme.table_name() != ctx.table {
                    continue;
                }
                let is_change = matches!(
                    rows,
                    RowsEventData::WriteRowsEvent(_)
                        | RowsEventData::WriteRowsEventV1(_)
                        | RowsEventData::UpdateRowsEvent(_)
                        | RowsEventData::UpdateRowsEventV1(_)
                        | RowsEventData::PartialUpdateRowsEvent(_)
                );
                if !is_change {
                    continue;
                }
                if tme.columns_count() as usize != columns.len() {
                    // The table changed shape (ALTER TABLE): read the columns again.
                    let mut c = ctx.connect().await?;
                    columns = self::columns(&mut c, &ctx.schema, &ctx.table).await?;
                }
                let now = crate::lead::now_rfc3339();
                for (i, row) in rows.rows(tme).enumerate() {
                    let (_, after) = row.map_err(|e| {
                        SourceError::Other(format!("unreadable row at {file}:{end}: {e}"))
                    })?;
                    let Some(after) = after else { continue };
                    let values =
                        after
                            .unwrap()
                            .into_iter()
                            .zip(&columns)
                            .map(|(v, (name, kind))| {
                                let v = SqlValue::try_from(v).unwrap_or(SqlValue::NULL);
                                (name.clone(), v, *kind)
                            });
                    let object = RowObject::from_values(values, &ctx.cfg.id_column);
                    pending.push(ctx.event(object, Some(format!("binlog:{file}:{end}:{i}")), &now));
                }
                ctx.read(pending.len());
            }
            Some(EventData::XidEvent(_)) => {
                commit_at(ctx, &mut pending, &file, end, &mut last_commit).await?;
            }
            Some(EventData::QueryEvent(q)) if q.query().eq_ignore_ascii_case("COMMIT") => {
                commit_at(ctx, &mut pending, &file, end, &mut last_commit).await?;
            }
            Some(EventData::HeartbeatEvent) => {
                ctx.sink
                    .statuses
                    .update(ctx.name(), |s| s.lag_seconds = Some(0.0));
            }
            _ => {}
        }
        if header.timestamp() > 0 && end > 0 {
            let lag = jiff::Timestamp::now().as_second() - i64::from(header.timestamp());
            ctx.sink
                .statuses
                .update(ctx.name(), |s| s.lag_seconds = Some(lag.max(0) as f64));
        }
    }
}

/// At a commit: journals the transaction's rows with the position after it (or, for an idle
/// table, moves the position now and then).
async fn commit_at(
    ctx: &mut Ctx,
    pending: &mut Vec<crate::lead::IntakeEvent>,
    file: &str,
    end: u64,
    last_commit: &mut Instant,
) -> Result<(), SourceError> {
    if pending.is_empty() && last_commit.elapsed() < IDLE_CHECKPOINT {
        return Ok(());
    }
    let mut checkpoint = ctx.checkpoint.clone();
    checkpoint.binlog = Some(BinlogPosition {
        file: file.to_owned(),
        position: end,
    });
    ctx.commit(std::mem::take(pending), checkpoint).await?;
    ctx.sink.statuses.success(ctx.name(), State::Following);
    *last_commit = Instant::now();
    Ok(())
}
