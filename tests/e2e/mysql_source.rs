//! The MySQL source on a real MariaDB, publishing to the real broker: a backfill, rows sharing
//! a timestamp across a restart, a late commit inside the safety window, a killed connection, a
//! restarted server, and binlog CDC (inserts, updates, resume, a purged position). Every test
//! asserts that each row is published exactly once per change, by external id.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mysql_async::binlog::events::{EventData, RowsEventData};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn, Opts};
use serde_json::{Value, json};

use crate::support::{Broker, Consumed, Gateway, Mariadb, consume_until, get_json, kafka_config};

const TABLE: &str = "CREATE TABLE crm.leads (
    id INT PRIMARY KEY,
    name VARCHAR(50),
    phone VARCHAR(30),
    email VARCHAR(100),
    city VARCHAR(30),
    birthday DATE NULL,
    updated_at DATETIME(3) NOT NULL,
    KEY by_change (updated_at, id))";

/// A MariaDB server with an empty `crm.leads`, and the database's URL.
fn crm_db() -> (Mariadb, String) {
    let db = Mariadb::start();
    let url = db.database("crm");
    db.sql(TABLE).unwrap();
    (db, url)
}

/// Inserts rows `from..=to`, each a reachable lead with its own phone, all stamped `at`.
fn insert_rows(db: &Mariadb, from: u32, to: u32, at: &str) {
    db.sql(&format!(
        "INSERT INTO crm.leads SELECT seq, CONCAT('客户', seq), CONCAT('139', LPAD(seq, 8, '0')), \
         NULL, '上海', NULL, '{at}' FROM crm.seq_{from}_to_{to}"
    ))
    .unwrap();
}

fn mysql_connector(db: &Mariadb, extra: &str) -> String {
    format!(
        "[[connectors]]\nname = \"crm\"\ntype = \"mysql\"\nurl = \"mysql://root@127.0.0.1:{}/crm\"\ntable = \"leads\"\n{extra}\n",
        db.port
    )
}

fn config(broker: &Broker, db: &Mariadb, extra: &str) -> String {
    format!(
        "{}\n{}",
        kafka_config(&broker.brokers(), "[intake]\nbatch_size = 2000\n"),
        mysql_connector(db, extra)
    )
}

/// The clean records of `crm`, read until `done` holds for them.
fn clean_until(
    broker: &Broker,
    within: Duration,
    done: impl Fn(&[Consumed]) -> bool,
) -> Vec<Value> {
    consume_until(&broker.brokers(), "leads.clean", within, done)
        .into_iter()
        .map(|c| c.value)
        .filter(|v| v["source"]["connector"] == "crm")
        .collect()
}

/// external_id -> revision -> the distinct event_ids published for it.
fn changes(records: &[Value]) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for r in records {
        let id = r["source"]["external_id"]
            .as_str()
            .expect("an external id")
            .to_owned();
        let rev = r["source"]["revision"].as_str().unwrap_or("").to_owned();
        let event = r["event_id"].as_str().unwrap().to_owned();
        out.entry(id)
            .or_default()
            .entry(rev)
            .or_default()
            .insert(event);
    }
    out
}

/// Asserts each of `ids` was published exactly `per_id` times (one event per change), and no
/// other id was.
fn assert_exactly(records: &[Value], ids: impl IntoIterator<Item = u32>, per_id: usize) {
    let got = changes(records);
    let want: BTreeSet<String> = ids.into_iter().map(|i| i.to_string()).collect();
    let have: BTreeSet<String> = got.keys().cloned().collect();
    let missing: Vec<_> = want.difference(&have).take(10).collect();
    let extra: Vec<_> = have.difference(&want).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, unexpected {extra:?}"
    );
    for (id, revisions) in &got {
        assert_eq!(revisions.len(), per_id, "row {id}: revisions {revisions:?}");
        for (rev, events) in revisions {
            assert_eq!(
                events.len(),
                1,
                "row {id} revision {rev} was published as {events:?}"
            );
        }
    }
}

fn distinct_events(records: &[Consumed]) -> usize {
    records
        .iter()
        .filter(|c| c.value["source"]["connector"] == "crm")
        .map(|c| c.value["event_id"].as_str().unwrap_or_default().to_owned())
        .collect::<BTreeSet<_>>()
        .len()
}

async fn status(gw: &Gateway) -> Value {
    get_json(&reqwest::Client::new(), &gw.url("/v1/connectors/crm")).await
}

/// Polls the connector's status until `done` holds for it; fails after a minute.
async fn status_until(gw: &Gateway, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = status(gw).await;
        if done(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "the connector did not get there: {st}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_backfill_of_100k_rows_publishes_each_once_then_follows_changes() {
    const ROWS: u32 = 100_000;
    let (db, _) = crm_db();
    insert_rows(&db, 1, ROWS, "2026-11-20 09:00:00");
    // Bad rows still flow: an unusable phone and no email is a rejected lead with its reasons;
    // a zero date (legal in a non-strict legacy schema) cannot be read and says so.
    db.sql(
        "SET SESSION sql_mode = ''; INSERT INTO crm.leads VALUES \
         (200001, '坏号码', 'not a phone', NULL, '北京', '0000-00-00', '2026-11-20 09:00:00'), \
         (200002, '王五', '13912345670', NULL, '北京', '0000-00-00', '2026-11-20 09:00:00')",
    )
    .unwrap();
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(
        Some(&config(
            &broker,
            &db,
            "timestamp_column = \"updated_at\"\npoll_interval = \"200ms\"\nbatch_size = 5000\n",
        )),
        &dir.path().join("gw"),
    );
    let want = ROWS as usize + 1;
    let clean = clean_until(&broker, Duration::from_secs(240), |got| {
        got.len() >= want && distinct_events(got) >= want
    });
    assert_exactly(&clean, (1..=ROWS).chain([200002]), 1);
    let zero = clean
        .iter()
        .find(|r| r["source"]["external_id"] == "200002")
        .unwrap();
    assert_eq!(zero["raw"]["birthday"], Value::Null);
    assert!(
        zero["issues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["code"] == "source.unreadable_value" && i["field"] == "raw.birthday"),
        "{}",
        zero["issues"]
    );
    assert_eq!(zero["source"]["kind"], "mysql");
    assert_eq!(zero["contact"]["city"], "北京市");
    let rejected = consume_until(
        &broker.brokers(),
        "leads.rejected",
        Duration::from_secs(30),
        |got| !got.is_empty(),
    );
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].value["source"]["external_id"], "200001");
    let codes: Vec<&str> = rejected[0].value["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"contact.unreachable"), "{codes:?}");

    let st = status(&gw).await;
    assert_eq!(st["state"], "following", "{st}");
    assert_eq!(st["snapshot"], Value::Null, "the snapshot finished: {st}");
    assert!(st["rows_read"].as_u64().unwrap() >= u64::from(ROWS), "{st}");

    // After the backfill: an update is a new event for the same external id, an insert a new lead.
    db.sql("UPDATE crm.leads SET city = '杭州', updated_at = NOW(3) WHERE id = 5; \
            INSERT INTO crm.leads VALUES (300000, '新客户', '13955556666', NULL, '深圳', NULL, NOW(3))")
        .unwrap();
    let clean = clean_until(&broker, Duration::from_secs(60), |got| {
        got.len() >= want + 2 && distinct_events(got) >= want + 2
    });
    let by_id = changes(&clean);
    assert_eq!(
        by_id["5"].len(),
        2,
        "the update of row 5 is a second revision: {:?}",
        by_id["5"]
    );
    assert_eq!(by_id["300000"].len(), 1);
    let five: Vec<&Value> = clean
        .iter()
        .filter(|r| r["source"]["external_id"] == "5")
        .collect();
    assert_eq!(five[1]["contact"]["city"], "杭州市");
    assert_eq!(five[0]["lead_id"], five[1]["lead_id"], "the same person");
    assert_eq!(clean.len(), want + 2, "nothing else was published");
}

#[tokio::test]
async fn after_the_backfill_polling_starts_at_the_newest_row_minus_the_safety_lag() {
    // 2,000 rows a second apart: each poll reads again only the 31 inside the 30 s safety lag
    // (the first poll used to start from the oldest row, reading the whole table twice).
    let (db, _) = crm_db();
    db.sql(
        "INSERT INTO crm.leads SELECT seq, CONCAT('客户', seq), CONCAT('139', LPAD(seq, 8, '0')), \
         NULL, '上海', NULL, DATE_ADD('2026-11-20 09:00:00', INTERVAL seq SECOND) FROM crm.seq_1_to_2000",
    )
    .unwrap();
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(
        Some(&config(
            &broker,
            &db,
            "timestamp_column = \"updated_at\"\npoll_interval = \"200ms\"\nbatch_size = 500\n",
        )),
        &dir.path().join("gw"),
    );
    let clean = clean_until(&broker, Duration::from_secs(60), |got| {
        got.len() >= 2000 && distinct_events(got) >= 2000
    });
    assert_exactly(&clean, 1..=2000, 1);
    status_until(&gw, |st| {
        st["state"] == "following" && st["snapshot"].is_null()
    })
    .await;
    // Let a few polls pass: they read nothing new.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let st = status(&gw).await;
    let read = st["rows_read"].as_u64().unwrap();
    assert!((2000..2500).contains(&read), "rows_read {read}: {st}");
    assert_eq!(
        st["checkpoint"]["cursor"]["timestamp"], "2026-11-20 09:33:20.000000",
        "{st}"
    );
}

#[tokio::test]
async fn rows_sharing_one_timestamp_are_each_published_once_across_a_restart() {
    let (db, _) = crm_db();
    // Kafka Connect's JDBC source loses the rest of a timestamp's rows when it restarts inside
    // them: 3,000 rows share one timestamp, read 5 at a time (600 journal commits, so a fast
    // machine is still mid-way when it is killed), and the gateway is killed midway.
    insert_rows(&db, 1, 3000, "2026-11-20 09:00:00");
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &broker,
        &db,
        "timestamp_column = \"updated_at\"\npoll_interval = \"200ms\"\nbatch_size = 5\nsnapshot = false\n",
    );
    let mut gw = Gateway::start(Some(&cfg), &dir.path().join("gw"));
    let st = status_until(&gw, |st| {
        st["events_journaled"].as_u64().unwrap_or(0) >= 200
    })
    .await;
    let n = st["events_journaled"].as_u64().unwrap();
    assert!(
        n < 3000,
        "the restart must come mid-way; {n} were read already"
    );
    gw.kill();
    // Rows added while it was down, with the same timestamp and later ones.
    insert_rows(&db, 3001, 3100, "2026-11-20 09:00:00");
    insert_rows(&db, 3101, 3200, "2026-11-20 09:00:01");
    let gw = Gateway::start(Some(&cfg), &dir.path().join("gw"));
    let clean = clean_until(&broker, Duration::from_secs(120), |got| {
        got.len() >= 3200 && distinct_events(got) >= 3200
    });
    assert_exactly(&clean, 1..=3200, 1);
    drop(gw);
}

#[tokio::test]
async fn a_row_committed_late_inside_the_safety_window_is_published() {
    let (db, url) = crm_db();
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(
        Some(&config(
            &broker,
            &db,
            "timestamp_column = \"updated_at\"\npoll_interval = \"100ms\"\nsafety_lag = \"60s\"\nsnapshot = false\n",
        )),
        &dir.path().join("gw"),
    );
    // A transaction stamps its row, then takes its time to commit...
    let mut slow = Conn::new(Opts::from_url(&url).unwrap()).await.unwrap();
    slow.query_drop("START TRANSACTION").await.unwrap();
    slow.query_drop(
        "INSERT INTO leads VALUES (1, '慢事务', '13900000011', NULL, '上海', NULL, NOW(3))",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // ...while a later row commits at once and is published: the cursor moves past row 1's time.
    db.sql("INSERT INTO crm.leads VALUES (2, '快事务', '13900000022', NULL, '上海', NULL, NOW(3))")
        .unwrap();
    let first = clean_until(&broker, Duration::from_secs(30), |got| {
        !got.is_empty() && distinct_events(got) >= 1
    });
    assert_exactly(&first, [2], 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    slow.query_drop("COMMIT").await.unwrap();
    let clean = clean_until(&broker, Duration::from_secs(30), |got| {
        got.len() >= 2 && distinct_events(got) >= 2
    });
    assert_exactly(&clean, [1, 2], 1);
    assert_eq!(
        clean[1]["source"]["external_id"], "1",
        "the late row came after the early one"
    );
    drop(gw);
}

#[tokio::test]
async fn a_killed_connection_and_a_restarted_server_lose_nothing() {
    const ROWS: u32 = 20_000;
    let (mut db, _) = crm_db();
    insert_rows(&db, 1, ROWS, "2026-11-20 09:00:00");
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    // A small backlog makes the reader wait for delivery, so the backfill is still running when
    // its connection is killed.
    let cfg = config(
        &broker,
        &db,
        "timestamp_column = \"updated_at\"\npoll_interval = \"200ms\"\nbatch_size = 500\n",
    )
    .replace("[intake]\n", "[intake]\nmax_backlog = 1000\n");
    let gw = Gateway::start(Some(&cfg), &dir.path().join("gw"));
    status_until(&gw, |st| {
        st["snapshot"]["rows_done"].as_u64().unwrap_or(0) >= 2000
    })
    .await;
    assert!(
        db.kill_connections("crm") >= 1,
        "the gateway's connection was found and killed"
    );
    let st = status(&gw).await;
    assert_ne!(st["snapshot"], Value::Null, "killed mid-backfill: {st}");

    let clean = clean_until(&broker, Duration::from_secs(120), |got| {
        got.len() >= ROWS as usize && distinct_events(got) >= ROWS as usize
    });
    assert_exactly(&clean, 1..=ROWS, 1);
    let st = status(&gw).await;
    assert!(
        st["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "the killed connection was reported: {st}"
    );

    // The server crashes and comes back; rows written after it are published too.
    db.restart();
    db.sql(
        "INSERT INTO crm.leads VALUES (50000, '重启后', '13955550000', NULL, '上海', NULL, NOW(3))",
    )
    .unwrap();
    let clean = clean_until(&broker, Duration::from_secs(60), |got| {
        got.len() > ROWS as usize && distinct_events(got) > ROWS as usize
    });
    assert_exactly(&clean, (1..=ROWS).chain([50000]), 1);
    let st = status(&gw).await;
    assert_eq!(st["state"], "following", "{st}");
}

/// Finds out whether mysql_async's binlog stream reads MariaDB's binlog: its own event types
/// (GTID, annotate, checkpoint), the row events of an insert and an update, and their values.
#[tokio::test]
async fn mysql_async_reads_mariadb_row_events() {
    let (db, url) = crm_db();
    let status = db.sql("SHOW MASTER STATUS").unwrap();
    let mut cols = status.split('\t');
    let (file, pos) = (
        cols.next().unwrap().to_owned(),
        cols.next().unwrap().trim().parse::<u64>().unwrap(),
    );
    db.sql(
        "INSERT INTO crm.leads VALUES (1, '张三', '13800138000', NULL, NULL, NULL, '2026-11-24 10:00:00.123'); \
         UPDATE crm.leads SET phone = '13900139000' WHERE id = 1",
    )
    .unwrap();
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
            .expect("the row events arrive")
            .unwrap()
            .unwrap();
        if let Ok(Some(EventData::RowsEvent(rows))) = ev.read_data() {
            let tme = stream.get_tme(rows.table_id()).unwrap();
            assert_eq!(
                (&*tme.database_name(), &*tme.table_name()),
                ("crm", "leads")
            );
            let update = matches!(
                rows,
                RowsEventData::UpdateRowsEventV1(_) | RowsEventData::UpdateRowsEvent(_)
            );
            for row in rows.rows(tme) {
                let (_, after) = row.unwrap();
                seen.push((update, format!("{:?}", after.unwrap())));
            }
        }
    }
    assert!(
        !seen[0].0 && seen[1].0,
        "an insert then an update: {seen:?}"
    );
    assert!(
        seen[0].1.contains("张三") && seen[1].1.contains("13900139"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn binlog_mode_publishes_inserts_and_updates_and_resumes_where_it_stopped() {
    let (db, _) = crm_db();
    insert_rows(&db, 1, 3, "2026-11-20 09:00:00");
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&broker, &db, "mode = \"binlog\"\nserver_id = 777\n");
    let mut gw = Gateway::start(Some(&cfg), &dir.path().join("gw"));
    // The snapshot: the rows already there.
    let clean = clean_until(&broker, Duration::from_secs(60), |got| {
        got.len() >= 3 && distinct_events(got) >= 3
    });
    assert_exactly(&clean, 1..=3, 1);
    assert!(
        clean[0]["source"]["revision"]
            .as_str()
            .unwrap()
            .starts_with("snapshot@")
    );

    // Changes a poll could not see: an update that leaves updated_at alone, two updates of one
    // row, a delete (not a lead), and inserts in one transaction.
    db.sql(
        "UPDATE crm.leads SET city = '杭州' WHERE id = 1; \
         UPDATE crm.leads SET city = '苏州' WHERE id = 2; UPDATE crm.leads SET city = '南京' WHERE id = 2; \
         DELETE FROM crm.leads WHERE id = 3; \
         START TRANSACTION; \
         INSERT INTO crm.leads VALUES (4, '新甲', '13900000044', NULL, '上海', NULL, NOW(3)), \
                                      (5, '新乙', '13900000055', NULL, '上海', NULL, NOW(3)); \
         COMMIT",
    )
    .unwrap();
    let clean = clean_until(&broker, Duration::from_secs(30), |got| {
        got.len() >= 8 && distinct_events(got) >= 8
    });
    let by_id = changes(&clean);
    assert_eq!(by_id["1"].len(), 2, "{:?}", by_id["1"]);
    assert_eq!(by_id["2"].len(), 3, "{:?}", by_id["2"]);
    assert_eq!(by_id["3"].len(), 1, "a delete publishes nothing");
    assert_eq!((by_id["4"].len(), by_id["5"].len()), (1, 1));
    let cities: Vec<&str> = clean
        .iter()
        .filter(|r| r["source"]["external_id"] == "2")
        .map(|r| r["contact"]["city"].as_str().unwrap())
        .collect();
    assert_eq!(
        cities,
        ["上海市", "苏州市", "南京市"],
        "changes in commit order"
    );
    let st = status(&gw).await;
    assert_eq!(st["state"], "following", "{st}");
    assert!(
        st["checkpoint"]["binlog"]["position"].as_u64().unwrap() > 4,
        "{st}"
    );

    // Stopped, then changes while it is down: a restart publishes those and nothing again.
    assert!(gw.terminate().success());
    db.sql(
        "UPDATE crm.leads SET city = '成都' WHERE id = 4; \
            INSERT INTO crm.leads VALUES (6, '新丙', '13900000066', NULL, '上海', NULL, NOW(3))",
    )
    .unwrap();
    let _gw = Gateway::start(Some(&cfg), &dir.path().join("gw"));
    let all = clean_until(&broker, Duration::from_secs(30), |got| {
        got.len() >= 10 && distinct_events(got) >= 10
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all_again = clean_until(&broker, Duration::from_secs(5), |got| {
        distinct_events(got) > 10
    });
    assert_eq!(all_again.len(), 10, "nothing was published twice");
    let by_id = changes(&all);
    assert_eq!(by_id["4"].len(), 2);
    assert_eq!(by_id["6"].len(), 1);
    for revisions in by_id.values() {
        assert!(
            revisions.values().all(|events| events.len() == 1),
            "{by_id:?}"
        );
    }
}

#[tokio::test]
async fn a_purged_binlog_position_stops_the_connector_or_takes_a_new_snapshot() {
    let (db, _) = crm_db();
    insert_rows(&db, 1, 2, "2026-11-20 09:00:00");
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[api]\ntoken = \"0123456789abcdef\"\n{}",
        mysql_connector(&db, "mode = \"binlog\"")
    );
    let mut gw = Gateway::start(Some(&cfg), &dir.path().join("gw"));
    assert_eq!(
        gw.wait_spooled("leads.clean", 2, Duration::from_secs(30))
            .len(),
        2
    );
    assert!(gw.terminate().success());
    // While it is down, the server moves to a new binlog and purges the one it was reading.
    db.sql("INSERT INTO crm.leads VALUES (3, '丢失', '13900000033', NULL, '上海', NULL, NOW(3))")
        .unwrap();
    // MariaDB keeps a file until its binlog checkpoint has moved past it: flush until it is gone.
    for _ in 0..50 {
        db.sql("FLUSH BINARY LOGS; PURGE BINARY LOGS BEFORE NOW() + INTERVAL 1 DAY")
            .unwrap();
        if !db
            .sql("SHOW BINARY LOGS")
            .unwrap()
            .contains("binlog.000001")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !db.sql("SHOW BINARY LOGS")
            .unwrap()
            .contains("binlog.000001")
    );
    let gw = Gateway::start(Some(&cfg), &dir.path().join("gw"));
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let st = loop {
        let st: Value = client
            .get(gw.url("/v1/connectors/crm"))
            .bearer_auth("0123456789abcdef")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if st["state"] == "stopped" || Instant::now() > deadline {
            break st;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(st["state"], "stopped", "{st}");
    assert!(
        st["last_error"]
            .as_str()
            .unwrap()
            .contains("resnapshot_when_purged"),
        "{st}"
    );
    let all: Value = client
        .get(gw.url("/v1/connectors"))
        .bearer_auth("0123456789abcdef")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["connectors"].as_array().unwrap().len(), 1);
    drop(gw);

    // Allowed to, it publishes the table again from a new snapshot, row 3 included.
    let cfg = cfg.replace(
        "mode = \"binlog\"",
        "mode = \"binlog\"\nresnapshot_when_purged = true",
    );
    let gw = Gateway::start(Some(&cfg), &dir.path().join("gw"));
    let clean = gw.wait_spooled("leads.clean", 5, Duration::from_secs(30));
    let ids: BTreeSet<&str> = clean
        .iter()
        .map(|r| r["source"]["external_id"].as_str().unwrap())
        .collect();
    assert_eq!(clean.len(), 5, "two rows before, then all three again");
    assert_eq!(ids, BTreeSet::from(["1", "2", "3"]));
}

#[tokio::test]
async fn a_paused_mysql_connector_reads_nothing_until_resumed() {
    let (db, _) = crm_db();
    insert_rows(&db, 1, 10, "2026-11-20 09:00:00");
    let dir = tempfile::tempdir().unwrap();
    let cfg = mysql_connector(
        &db,
        "timestamp_column = \"updated_at\"\npoll_interval = \"200ms\"\nsafety_lag = \"1s\"\n",
    );
    let gw = Gateway::start(Some(&cfg), &dir.path().join("gw"));
    status_until(&gw, |st| st["events_journaled"] == 10).await;
    let http = reqwest::Client::new();
    let paused: Value = http
        .post(gw.url("/v1/connectors/crm/pause"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paused["state"], "paused", "{paused}");
    insert_rows(&db, 11, 20, "2026-11-20 09:00:05");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = status(&gw).await;
    assert_eq!(
        (&st["state"], &st["events_journaled"]),
        (&json!("paused"), &json!(10)),
        "{st}"
    );
    let resumed = http
        .post(gw.url("/v1/connectors/crm/resume"))
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    status_until(&gw, |st| {
        st["events_journaled"] == 20 && st["state"] == "following"
    })
    .await;
    let clean = gw.wait_spooled("leads.clean", 20, Duration::from_secs(30));
    assert_exactly(&clean, 1..=20, 1);
}
