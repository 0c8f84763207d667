//! Incremental mode: poll by `(timestamp_column, id_column)`.
//!
//! Kafka Connect's JDBC source loses rows in two ways, and this mode avoids both:
//! - **Rows sharing a timestamp across a restart.** Pages are cut by the `(timestamp, id)` pair,
//!   and every poll starts at a timestamp, never strictly after one: the rows of the newest
//!   timestamp are always read again, and the ones already delivered are known.
//! - **Rows committed late** by a transaction that started earlier, with a timestamp older than
//!   rows already read. Each poll re-reads everything from `safety_lag` before the newest
//!   timestamp delivered, so such a row is seen on the next poll.
//!
//! What was already delivered is skipped before it reaches the journal by [`Recent`] (the ids
//! and revisions inside the safety window); after a restart that memory is empty, and identity's
//! source idempotency (`external_id` + `revision` = the row's timestamp) drops the repeats.

use std::collections::HashMap;

use mysql_async::Row;
use mysql_async::prelude::Queryable;

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
    let ts_for_revision = ts_name.clone();
    super::snapshot(ctx, &mut conn, move |row| {
        row.fields
            .get(&ts_for_revision)
            .and_then(|v| v.as_str())
            .map(normalize_text)
    })
    .await?;

    let n = ctx.cfg.batch_size;
    let select = format!("SELECT * FROM {} WHERE ", ctx.source_sql);
    let order = format!(" ORDER BY {ts}, {id} LIMIT {n}");
    let from_start = format!("{select}{ts} IS NOT NULL{order}");
    let from_window = format!("{select}{ts} >= ?{order}");
    let after = format!("{select}{ts} >= ? AND ({ts} > ? OR {id} > ?){order}");
    let lag = jiff::SignedDuration::try_from(ctx.cfg.safety_lag).unwrap_or_default();

    while !ctx.stopping() {
        let window = ctx
            .checkpoint
            .cursor
            .as_ref()
            .map(|c| minus(&c.timestamp, lag));
        let mut position: Option<(String, mysql_async::Value)> = None;
        loop {
            let rows: Vec<Row> = match (&position, &window) {
                (None, None) => conn.exec(from_start.as_str(), ()).await?,
                (None, Some(w)) => conn.exec(from_window.as_str(), (w.as_str(),)).await?,
                (Some((t, i)), _) => {
                    conn.exec(after.as_str(), (t.as_str(), t.as_str(), i.clone()))
                        .await?
                }
            };
            ctx.read(rows.len());
            let full = rows.len() == n;
            let mut events = Vec::new();
            let mut newest = ctx.checkpoint.cursor.clone();
            let mut delivered = Vec::with_capacity(rows.len());
            for row in rows {
                let stamp = row
                    .as_ref(column_index(&row, &ts_name))
                    .and_then(cursor_text)
                    .unwrap_or_default();
                let id_value = row.as_ref(column_index(&row, &ctx.cfg.id_column)).cloned();
                let object = RowObject::from_row(row, &ctx.cfg.id_column);
                let key = object.id.clone().unwrap_or_default();
                if !recent.delivered(&key, &stamp) {
                    events.push(ctx.event(&object, Some(stamp.clone())));
                }
                if newest.as_ref().is_none_or(|c| stamp >= c.timestamp) {
                    newest = Some(Cursor {
                        timestamp: stamp.clone(),
                        id: object.id_value.clone(),
                    });
                }
                position = Some((stamp.clone(), id_value.unwrap_or(mysql_async::Value::NULL)));
                delivered.push((key, stamp));
            }
            if !events.is_empty() || newest != ctx.checkpoint.cursor {
                let mut checkpoint = ctx.checkpoint.clone();
                checkpoint.cursor = newest;
                ctx.commit(events, checkpoint).await?;
            }
            recent.0.extend(delivered);
            if !full || ctx.stopping() {
                break;
            }
        }
        if let Some(c) = &ctx.checkpoint.cursor {
            recent.prune(&minus(&c.timestamp, lag));
            let lag_seconds: Option<f64> = conn
                .exec_first(
                    "SELECT TIMESTAMPDIFF(MICROSECOND, ?, NOW(6)) / 1e6",
                    (c.timestamp.as_str(),),
                )
                .await?;
            ctx.statuses.update(ctx.name(), |s| {
                s.lag_seconds = lag_seconds.map(|l| l.max(0.0))
            });
        }
        ctx.statuses.success(ctx.name(), State::Following);
        let interval = ctx.cfg.poll_interval;
        if !ctx.pause(interval).await {
            break;
        }
    }
    Ok(())
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
