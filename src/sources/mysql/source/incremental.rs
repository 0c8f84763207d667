//! Incremental mode: poll by `(timestamp_column, id_column)`.
//!
//! Kafka Connect's JDBC source loses rows in two ways, and this mode avoids both:
//! - **Rows sharing a timestamp across a restart.** Pages are cut by the `(timestamp, id)` pair,
//!   never by the timestamp alone, and the cursor stored with each page is that pair: a restart
//!   inside a run of equal timestamps continues after the last id delivered.
//! - **Rows committed late** by a transaction that started earlier, with a timestamp older than
//!   rows already read. Every few seconds (a tenth of `safety_lag`, at most 5 s) a sweep re-reads
//!   everything from `safety_lag` before the cursor, so such a row is seen.
//!
//! Between sweeps, each `poll_interval` reads only what comes after the cursor (cheap with an
//! index on `(timestamp, id)`). What was already delivered is skipped before it reaches the
//! journal by [`Recent`] (ids and revisions inside the safety window); after a restart that
//! memory is empty, and identity's source idempotency (`external_id` + `revision` = the row's
//! timestamp) drops the repeats.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Row, Value as SqlValue};

use super::{Ctx, Cursor, RowObject, SnapshotCheckpoint, SourceError, cursor_text, quote};
use crate::sources::status::State;

/// Rows delivered inside the safety window: id -> revision (the row's cursor timestamp).
#[derive(Default)]
pub struct Recent(HashMap<String, String>);

impl Recent {
    fn delivered(&self, id: &str, revision: &str) -> bool {
        self.0.get(id).is_some_and(|r| r == revision)
    }

    /// Forgets rows older than `from`, the start of the next window.
    fn prune(&mut self, from: &str) {
        if self.0.len() > 1024 {
            self.0.retain(|_, rev| rev.as_str() >= from);
        }
    }
}

/// Snapshot (when configured and not done), then polls until shutdown.
pub(super) async fn run(ctx: &mut Ctx, recent: &mut Recent) -> Result<(), SourceError> {
    let mut conn = ctx.connect().await?;
    let ts = quote(ctx.cfg.timestamp_column.as_deref().unwrap_or_default());
    let id = quote(&ctx.cfg.id_column);
    let ts_name = ctx.cfg.timestamp_column.clone().unwrap_or_default();

    if ctx.checkpoint == Default::default() && ctx.cfg.snapshot {
        // The snapshot reads in id order (the primary key: cheap on any table); the polls
        // that follow start at the newest timestamp it could have seen, minus the safety lag.
        let (total, newest): (u64, Option<mysql_async::Value>) = conn
            .query_first(format!(
                "SELECT COUNT(*), MAX({ts}) FROM {}",
                ctx.source_sql
            ))
            .await?
            .unwrap_or((0, None));
        let mut checkpoint = ctx.checkpoint.clone();
        checkpoint.snapshot = Some(SnapshotCheckpoint {
            rows_total: total,
            ..Default::default()
        });
        checkpoint.cursor = newest.as_ref().and_then(cursor_text).map(|t| Cursor {
            timestamp: t,
            id: serde_json::Value::Null,
        });
        ctx.commit(Vec::new(), checkpoint).await?;
    }
    // Snapshot rows inside the first poll's window are remembered, so that poll does not
    // journal them again.
    let lag = jiff::SignedDuration::try_from(ctx.cfg.safety_lag).unwrap_or_default();
    let window = ctx
        .checkpoint
        .cursor
        .as_ref()
        .map(|c| minus(&c.timestamp, lag))
        .unwrap_or_default();
    super::snapshot(ctx, &mut conn, |row| {
        let stamp = row
            .fields
            .get(&ts_name)
            .and_then(|v| v.as_str())
            .map(normalize_text)?;
        if stamp >= window {
            recent
                .0
                .insert(row.id.clone().unwrap_or_default(), stamp.clone());
        }
        Some(stamp)
    })
    .await?;

    let n = ctx.cfg.batch_size;
    let select = format!("SELECT * FROM {} WHERE ", ctx.source_sql);
    let order = format!(" ORDER BY {ts}, {id} LIMIT {n}");
    let queries = Queries {
        from_start: format!("{select}{ts} IS NOT NULL{order}"),
        from: format!("{select}{ts} >= ?{order}"),
        after: format!("{select}{ts} >= ? AND ({ts} > ? OR {id} > ?){order}"),
    };
    // The sweep of the safety window is the expensive part; new rows are found by the cheap
    // keyset poll in between.
    let sweep_every = (ctx.cfg.safety_lag / 10).clamp(
        ctx.cfg.poll_interval,
        Duration::from_secs(5).max(ctx.cfg.poll_interval),
    );
    let mut last_sweep: Option<Instant> = None;

    while !ctx.stopping() {
        ctx.unless_paused()?;
        let sweep = last_sweep.is_none_or(|t| t.elapsed() >= sweep_every);
        let start = match &ctx.checkpoint.cursor {
            None => Start::Beginning,
            Some(c) if sweep => Start::From(minus(&c.timestamp, lag)),
            Some(c) => Start::After(c.timestamp.clone(), super::sql_value(&c.id)),
        };
        if sweep {
            last_sweep = Some(Instant::now());
        }
        read_from(ctx, &mut conn, recent, &queries, start, &ts_name).await?;
        if let Some(c) = &ctx.checkpoint.cursor {
            recent.prune(&minus(&c.timestamp, lag));
            let lag_seconds: Option<f64> = conn
                .exec_first(
                    "SELECT TIMESTAMPDIFF(MICROSECOND, ?, NOW(6)) / 1e6",
                    (c.timestamp.as_str(),),
                )
                .await?;
            ctx.sink.statuses.update(ctx.name(), |s| {
                s.lag_seconds = lag_seconds.map(|l| l.max(0.0))
            });
        }
        ctx.sink.statuses.success(ctx.name(), State::Following);
        let interval = ctx.cfg.poll_interval;
        if !ctx.pause(interval).await {
            break;
        }
    }
    Ok(())
}

struct Queries {
    from_start: String,
    from: String,
    after: String,
}

/// Where a read starts.
enum Start {
    /// No row was read yet.
    Beginning,
    /// At this timestamp, every id (a sweep of the safety window).
    From(String),
    /// Strictly after this `(timestamp, id)` (the keyset poll).
    After(String, SqlValue),
}

/// Reads pages in `(timestamp, id)` order from `start` until a short page, journaling the rows
/// not delivered yet with the cursor they move to.
async fn read_from(
    ctx: &mut Ctx,
    conn: &mut mysql_async::Conn,
    recent: &mut Recent,
    q: &Queries,
    mut start: Start,
    ts_name: &str,
) -> Result<(), SourceError> {
    let n = ctx.cfg.batch_size;
    loop {
        let rows: Vec<Row> = match &start {
            Start::Beginning => conn.exec(q.from_start.as_str(), ()).await?,
            Start::From(t) => conn.exec(q.from.as_str(), (t.as_str(),)).await?,
            Start::After(t, i) => {
                conn.exec(q.after.as_str(), (t.as_str(), t.as_str(), i.clone()))
                    .await?
            }
        };
        ctx.read(rows.len());
        let Some(last) = rows.last() else {
            return Ok(());
        };
        let (ts_at, id_at) = (
            column_index(last, ts_name),
            column_index(last, &ctx.cfg.id_column),
        );
        let last_stamp = last.as_ref(ts_at).and_then(cursor_text).unwrap_or_default();
        let last_id = last.as_ref(id_at).cloned().unwrap_or(SqlValue::NULL);
        // The page's last row is its newest in (timestamp, id) order; it moves the cursor when
        // it is newer than the cursor, which a keyset page always is.
        let keyset = matches!(start, Start::After(..) | Start::Beginning);
        let newer = ctx
            .checkpoint
            .cursor
            .as_ref()
            .is_none_or(|c| last_stamp > c.timestamp || (keyset && last_stamp == c.timestamp));
        let full = rows.len() == n;
        let mut events = Vec::new();
        let mut delivered = Vec::new();
        let now = crate::lead::now_rfc3339();
        for row in rows {
            let stamp = row.as_ref(ts_at).and_then(cursor_text).unwrap_or_default();
            let key = row.as_ref(id_at).map(id_text).unwrap_or_default();
            if recent.delivered(&key, &stamp) {
                continue;
            }
            let object = RowObject::from_row(row, &ctx.cfg.id_column);
            events.push(ctx.event(object, Some(stamp.clone()), &now));
            delivered.push((key, stamp));
        }
        if !events.is_empty() || newer {
            let mut checkpoint = ctx.checkpoint.clone();
            if newer {
                checkpoint.cursor = Some(Cursor {
                    timestamp: last_stamp.clone(),
                    id: id_json(&last_id),
                });
            }
            ctx.commit(events, checkpoint).await?;
        }
        recent.0.extend(delivered);
        if !full || ctx.stopping() {
            return Ok(());
        }
        start = Start::After(last_stamp, last_id);
    }
}

/// An id as [`RowObject`] writes it into `external_id`.
fn id_text(v: &SqlValue) -> String {
    match v {
        SqlValue::Int(i) => i.to_string(),
        SqlValue::UInt(u) => u.to_string(),
        SqlValue::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        other => super::to_json(other.clone(), super::Kind::Other)
            .map(|j| j.as_str().map_or_else(|| j.to_string(), str::to_owned))
            .unwrap_or_default(),
    }
}

fn id_json(v: &SqlValue) -> serde_json::Value {
    super::to_json(v.clone(), super::Kind::Other).unwrap_or_default()
}

fn column_index(row: &Row, column: &str) -> usize {
    row.columns_ref()
        .iter()
        .position(|c| c.name_str() == column)
        .unwrap_or(usize::MAX)
}

/// A row's timestamp as published (`YYYY-MM-DD HH:MM:SS[.ffffff]`) in cursor form.
fn normalize_text(published: &str) -> String {
    match published.split_once('.') {
        Some((whole, frac)) => format!("{whole}.{frac:0<6}"),
        None if published.len() == 10 => format!("{published} 00:00:00.000000"),
        None => format!("{published}.000000"),
    }
}

/// `timestamp` minus `lag`, in cursor form; `timestamp` itself if it cannot be read.
fn minus(timestamp: &str, lag: jiff::SignedDuration) -> String {
    timestamp
        .parse::<jiff::civil::DateTime>()
        .ok()
        .and_then(|t| t.checked_sub(lag).ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S.%6f").to_string())
        .unwrap_or_else(|| timestamp.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_starts_the_lag_before_the_cursor() {
        let lag = jiff::SignedDuration::from_secs(30);
        assert_eq!(
            minus("2026-11-24 00:00:10.250000", lag),
            "2026-11-23 23:59:40.250000"
        );
        assert_eq!(minus("garbage", lag), "garbage");
    }

    #[test]
    fn published_timestamps_match_cursor_text() {
        assert_eq!(
            normalize_text("2026-11-24 10:00:00"),
            "2026-11-24 10:00:00.000000"
        );
        assert_eq!(
            normalize_text("2026-11-24 10:00:00.5"),
            "2026-11-24 10:00:00.500000"
        );
        assert_eq!(normalize_text("2026-11-24"), "2026-11-24 00:00:00.000000");
    }

    #[test]
    fn recent_rows_are_known_by_id_and_revision() {
        let mut r = Recent::default();
        r.0.insert("1".into(), "2026-11-24 10:00:00.000000".into());
        assert!(r.delivered("1", "2026-11-24 10:00:00.000000"));
        assert!(
            !r.delivered("1", "2026-11-24 10:00:01.000000"),
            "an update is new"
        );
        assert!(!r.delivered("2", "2026-11-24 10:00:00.000000"));
        for i in 0..2000 {
            r.0.insert(format!("old{i}"), "2026-11-24 09:00:00.000000".into());
        }
        r.prune("2026-11-24 09:59:30.000000");
        assert_eq!(r.0.len(), 1);
    }
}
