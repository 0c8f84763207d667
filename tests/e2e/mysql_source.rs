//! The MySQL source on a real MariaDB.

use std::time::Duration;

use futures::StreamExt;
use mysql_async::binlog::events::{EventData, RowsEventData};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn, Opts};

use crate::support::Mariadb;

/// Finds out whether mysql_async's binlog stream reads MariaDB's binlog: its own event types
/// (GTID, annotate, checkpoint), the row events of an insert and an update, and their values.
#[tokio::test]
async fn mysql_async_reads_mariadb_row_events() {
    let db = Mariadb::start();
    let url = db.database("crm");
    db.sql("CREATE TABLE crm.leads (id INT PRIMARY KEY, name VARCHAR(50), phone VARCHAR(30), updated_at DATETIME(3))").unwrap();
    let status = db.sql("SHOW MASTER STATUS").unwrap();
    let mut cols = status.split('\t');
    let (file, pos) = (
        cols.next().unwrap().to_owned(),
        cols.next().unwrap().trim().parse::<u64>().unwrap(),
    );
    db.sql("INSERT INTO crm.leads VALUES (1, '张三', '13800138000', '2026-11-24 10:00:00.123'); UPDATE crm.leads SET phone = '13900139000' WHERE id = 1").unwrap();

    let conn = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    let mut stream = conn
        .get_binlog_stream(
            BinlogStreamRequest::new(2)
                .with_filename(file.as_bytes())
                .with_pos(pos),
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 2 {
        let ev = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("no row events")
            .unwrap()
            .unwrap();
        eprintln!(
            "event type {} pos {}",
            ev.header().event_type_raw(),
            ev.header().log_pos()
        );
        match ev.read_data() {
            Ok(Some(EventData::RowsEvent(rows))) => {
                let tme = stream.get_tme(rows.table_id()).unwrap();
                eprintln!("table {}.{}", tme.database_name(), tme.table_name());
                for row in rows.rows(tme) {
                    let (before, after) = row.unwrap();
                    eprintln!("before {before:?} after {after:?}");
                    seen.push((
                        matches!(
                            rows,
                            RowsEventData::UpdateRowsEvent(_) | RowsEventData::UpdateRowsEventV1(_)
                        ),
                        after.unwrap(),
                    ));
                }
            }
            Ok(other) => eprintln!(
                "  {:?}",
                other.map(|d| format!("{d:?}").chars().take(120).collect::<String>())
            ),
            Err(e) => eprintln!("  unreadable: {e}"),
        }
    }
    assert!(!seen[0].0 && seen[1].0);
}
