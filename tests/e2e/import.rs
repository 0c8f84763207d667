//! `leadgate import`: CSV and JSON lines through the same pipeline, dry runs in input order, and
//! a real import to Kafka.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{BIN, Broker, consume, kafka_config};

const TRADE_SHOW: &str = "姓名,手机,邮箱,公司,职位,省份,城市,行业,备注,展位
张三,138 0013 8000,zhang@mouke.cn,某某科技有限公司,经理,广东,深圳,制造,想要报价,A12
李四,,li4@Mouke.cn,,,,,,,B3
王五,12345,,,,,,,,C1
张 三,+86 13800138000,,,,,,,,A12
";

fn import(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .current_dir(dir)
        .arg("import")
        .args(args)
        .output()
        .unwrap()
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn dry_run_writes_every_record_in_input_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("expo.csv"), TRADE_SHOW).unwrap();
    let out = import(
        dir.path(),
        &[
            "expo.csv",
            "--dry-run",
            "--output",
            "out.jsonl",
            "--source",
            "expo-2026",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let records = lines(&std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap());
    let topics: Vec<&str> = records
        .iter()
        .map(|r| r["topic"].as_str().unwrap())
        .collect();
    assert_eq!(
        topics,
        [
            "leads.clean",
            "leads.clean",
            "leads.rejected",
            "leads.clean"
        ]
    );
    let names: Vec<&str> = records
        .iter()
        .map(|r| r["value"]["raw"]["姓名"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["张三", "李四", "王五", "张 三"], "input order");
    // The rejected row, beside the file, with its line, reasons and own columns.
    let report = std::fs::read_to_string(dir.path().join("expo.csv.rejected.csv")).unwrap();
    let mut report_lines = report.trim_start_matches('\u{feff}').lines();
    assert!(
        report_lines
            .next()
            .unwrap()
            .starts_with("line,reasons,姓名,"),
        "{report}"
    );
    let row = report_lines.next().unwrap();
    assert!(row.starts_with("4,contact.unreachable"), "{report}");
    assert!(row.contains("王五"), "{report}");
    assert!(stderr.contains("expo.csv.rejected.csv"), "{stderr}");
    assert!(stderr.contains("4 rows in"), "{stderr}");
    assert!(
        stderr.contains("(through line 5)"),
        "the position: {stderr}"
    );
    for r in &records {
        assert_eq!(r.as_object().unwrap().len(), 3, "exactly topic, key, value");
        crate::config::assert_valid_lead_record(&r["value"]);
    }
    let first = &records[0]["value"];
    assert_eq!(first["contact"]["phone"], "+8613800138000");
    assert_eq!(first["contact"]["industry"], "制造");
    assert_eq!(first["contact"]["notes"], "想要报价");
    assert_eq!(first["custom"], json!({"展位": "A12"}));
    assert_eq!(
        first["source"],
        json!({"connector": "expo-2026", "kind": "file", "external_id": null})
    );
    assert_eq!(records[0]["key"], first["lead_id"]);
    assert_eq!(records[3]["key"], first["lead_id"], "the same person again");
    assert_eq!(records[3]["value"]["contact"]["name"], "张三");
    assert_eq!(records[2]["key"], records[2]["value"]["event_id"]);
    assert_eq!(records[2]["value"]["reasons"][1]["code"], "phone.invalid");

    assert!(stderr.contains("4 rows"), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.trim_start().starts_with("accepted") && l.contains(" 3 ")),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.trim_start().starts_with("phone.invalid") && l.trim_end().ends_with(" 1")),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was published"), "{stderr}");
    assert!(
        !dir.path().join("data").exists(),
        "a dry run touches no data directory"
    );
}

#[test]
fn jsonl_to_stdout_and_bad_lines_are_reported_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("leads.jsonl"),
        "{\"phone\":\"13800138000\"}\n{\"phone\": oops}\n{\"email\":\"A@QQ.COM\"}\n",
    )
    .unwrap();
    let out = import(dir.path(), &["leads.jsonl", "--dry-run", "--output", "-"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("leads.jsonl:2: not valid JSON"), "{stderr}");
    let records = lines(&String::from_utf8_lossy(&out.stdout));
    let topics: Vec<&str> = records
        .iter()
        .map(|r| r["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["leads.clean", "leads.rejected", "leads.clean"]);
    assert_eq!(
        records[1]["value"]["raw"], "{\"phone\": oops}",
        "the unreadable line is kept verbatim"
    );
    assert_eq!(records[2]["value"]["contact"]["email"], "A@qq.com");
    // The report says why the line was rejected: it could not be read.
    let report = std::fs::read_to_string(dir.path().join("leads.jsonl.rejected.csv")).unwrap();
    let row = report.lines().nth(1).unwrap();
    assert!(
        row.starts_with("2,unreadable: not valid JSON: expected value at line 1 column 11,"),
        "{report}"
    );
}

#[test]
fn usage_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("leads.pdf"), "x").unwrap();
    let out = import(dir.path(), &["leads.pdf", "--dry-run"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --format csv, jsonl or sheet"));
    // A spreadsheet that is not one says so, with the file's name.
    std::fs::write(dir.path().join("leads.xlsx"), "x").unwrap();
    let out = import(dir.path(), &["leads.xlsx", "--dry-run"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("leads.xlsx: cannot read the spreadsheet"),
        "{stderr}"
    );
    let out = import(dir.path(), &["missing.csv", "--dry-run"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.csv"));
    // An unclosed quote would swallow every row after it: the file is refused at its line.
    std::fs::write(
        dir.path().join("quote.csv"),
        "姓名,手机\n张三,13800138000\n\"李四,13900139000\n王五,13700137000\n",
    )
    .unwrap();
    let out = import(dir.path(), &["quote.csv", "--dry-run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("quote.csv:3: field 1: a quote opens here and is never closed"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing was published");
    // `--sheet` is for spreadsheets: a CSV's is a mistake, not ignored.
    let out = import(dir.path(), &["quote.csv", "--sheet", "Sheet2", "--dry-run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(
            "quote.csv: --sheet names a sheet of a spreadsheet, and this file is read as CSV"
        ),
        "{err}"
    );
}

#[test]
fn import_publishes_to_kafka_and_remembers_identities() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("expo.csv"), TRADE_SHOW).unwrap();
    std::fs::write(
        dir.path().join("leadgate.toml"),
        kafka_config(&broker.brokers(), ""),
    )
    .unwrap();
    let args = [
        "expo.csv",
        "--config",
        "leadgate.toml",
        "--data-dir",
        "data",
    ];
    let out = import(dir.path(), &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let clean = consume(&broker.brokers(), "leads.clean", 3, Duration::from_secs(30));
    assert_eq!(clean.len(), 3);
    assert_eq!(
        consume(
            &broker.brokers(),
            "leads.rejected",
            1,
            Duration::from_secs(30)
        )
        .len(),
        1
    );

    // The same file again: imported already, nothing is published.
    let out = import(dir.path(), &args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("already imported"),
        "{err}"
    );

    // Another list of the same people (the next day's booths) matches the stored identities.
    std::fs::write(
        dir.path().join("expo.csv"),
        TRADE_SHOW.replace("A12", "D7").replace("B3", "D8"),
    )
    .unwrap();
    let out = import(dir.path(), &args);
    assert!(out.status.success());
    let all = consume(&broker.brokers(), "leads.clean", 6, Duration::from_secs(30));
    assert_eq!(all.len(), 6);
    let statuses: Vec<&str> = all[3..]
        .iter()
        .map(|m| m.value["identity"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["matched", "matched", "matched"]);
}

/// A 6,000-row CSV (half the rows with an external id) and a config importing it as `expo` with
/// `output` (the embedded output when empty), in batches of 200.
fn big_import(dir: &Path, output: &str) -> (usize, [&'static str; 8]) {
    const ROWS: usize = 6000;
    let mut csv = String::from("id,姓名,手机,邮箱\n");
    for i in 0..ROWS {
        let id = if i % 2 == 0 {
            format!("T{i}")
        } else {
            String::new()
        };
        // Every 100 rows, three of the same person: a phone, an email (with another phone),
        // then both, which merges the first two (a record on `leads.merged`).
        let (phone, email) = match i % 100 {
            1 => (10_000_000 + i, format!("p{}@example.cn", i - 1)),
            2 => (10_000_000 + i - 2, format!("p{}@example.cn", i - 2)),
            _ => (10_000_000 + i, String::new()),
        };
        csv += &format!("{id},客户{i},139{phone:08},{email}\n");
    }
    std::fs::write(dir.join("big.csv"), &csv).unwrap();
    std::fs::write(
        dir.join("leadgate.toml"),
        format!("{output}\n[intake]\nbatch_size = 200\n\n[[connectors]]\nname = \"expo\"\ntype = \"file\"\nexternal_id_field = \"id\"\n"),
    )
    .unwrap();
    (
        ROWS,
        [
            "import",
            "big.csv",
            "--source",
            "expo",
            "--config",
            "leadgate.toml",
            "--data-dir",
            "data",
        ],
    )
}

/// Runs `args` in `dir`: first stopping right after its 2nd, then its 1st batch is published and
/// before its checkpoint is written (the fault point `LEADGATE_IMPORT_CRASH_AFTER`), then killing
/// it (SIGKILL) after each of `delays` (while the stores are made, before the first batch, between
/// batches, mid-batch), then once more to its end; the number of stops that hit a running import.
fn kill_and_finish(dir: &Path, args: &[&str], delays: &[u64]) -> usize {
    let mut kills = 0;
    for n in ["2", "1"] {
        let out = Command::new(BIN)
            .current_dir(dir)
            .args(args)
            .env("LEADGATE_IMPORT_CRASH_AFTER", n)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        kills += 1;
    }
    for &delay_ms in delays {
        let mut child = Command::new(BIN)
            .current_dir(dir)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
    }
    let finish = Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        finish.status.success(),
        "{}",
        String::from_utf8_lossy(&finish.stderr)
    );
    kills
}

/// Checks that `records` (clean and rejected, as published) hold each of the `rows` rows once.
fn each_row_once(records: &[Value], rows: usize, kills: usize) {
    let mut lines: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for r in records {
        lines
            .entry(r["raw"]["姓名"].as_str().unwrap().to_owned())
            .or_default()
            .push(r["event_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        lines.len(),
        rows,
        "every row came out ({} records)",
        records.len()
    );
    let twice: Vec<_> = lines.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "{} rows came out twice after {kills} kills, for example {:?}",
        twice.len(),
        &twice[..twice.len().min(3)]
    );
    assert_eq!(records.len(), rows);
}

/// Kills `leadgate import` at many points of a 6,000-row import, reruns it until it finishes, and
/// checks that every row came out exactly once (the embedded output).
#[test]
fn an_import_killed_at_any_point_publishes_every_row_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, args) = big_import(dir.path(), "");
    let out = dir.path().join("data/output");
    let published = || -> Vec<Value> {
        ["leads.clean", "leads.rejected"]
            .iter()
            .flat_map(|t| {
                std::fs::read_to_string(out.join(format!("{t}.jsonl")))
                    .unwrap_or_default()
                    .lines()
                    .map(|l| serde_json::from_str::<Value>(l).expect("whole JSON lines"))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let kills = kill_and_finish(
        dir.path(),
        &args,
        &[
            5, 12, 20, 30, 80, 150, 230, 320, 420, 530, 650, 800, 1000, 1300,
        ],
    );
    assert!(kills >= 3, "the import was killed mid-way ({kills} kills)");
    let records = published();
    each_row_once(&records, rows, kills);
    let merges = std::fs::read_to_string(out.join("leads.merged.jsonl")).unwrap();
    assert_eq!(
        merges.lines().count(),
        rows / 100,
        "each merge published once"
    );
    let again = Command::new(BIN)
        .current_dir(dir.path())
        .args(args)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("already imported"));
    assert_eq!(
        published().len(),
        records.len(),
        "a finished import publishes nothing again"
    );
}

/// The same, published to a real broker (three partitions a topic) and read back from it.
#[test]
fn an_import_to_kafka_killed_at_any_point_publishes_every_row_exactly_once() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let output = format!(
        "[output]\ntype = \"kafka\"\nbrokers = \"{}\"\nmessage_timeout = \"5s\"\ntopic_partitions = 3\n",
        broker.brokers()
    );
    let (rows, args) = big_import(dir.path(), &output);
    // Another producer (a gateway, say) writes to the same topic all along: its records are
    // read back too, and must neither be mistaken for the import's nor hold it up.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let other = {
        let (brokers, stop) = (broker.brokers(), stop.clone());
        std::thread::spawn(move || {
            use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
            let producer: BaseProducer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .create()
                .unwrap();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("other-{n}");
                let value = json!({"event_id": id, "other": true}).to_string();
                let headers =
                    rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                        key: "event_id",
                        value: Some(&id),
                    });
                let _ = producer.send(
                    BaseRecord::to("leads.clean")
                        .key(&id)
                        .payload(&value)
                        .headers(headers),
                );
                producer.poll(Duration::from_millis(50));
                n += 1;
            }
            producer.flush(Duration::from_secs(10)).unwrap();
            n
        })
    };
    let kills = kill_and_finish(
        dir.path(),
        &args,
        &[
            300, 600, 900, 1200, 1500, 1800, 2100, 2400, 2700, 3000, 3500, 4000, 5000,
        ],
    );
    assert!(kills >= 3, "the import was killed mid-way ({kills} kills)");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let others = other.join().unwrap();
    assert!(
        others > 10,
        "the other producer wrote along ({others} records)"
    );
    // Read until every row came, then a few seconds more for any repeat.
    let reached = std::cell::Cell::new(None::<std::time::Instant>);
    let records: Vec<Value> = crate::support::consume_until(
        &broker.brokers(),
        "leads.clean",
        Duration::from_secs(90),
        |got| {
            if got.len() < rows + others {
                return false;
            }
            let at = *reached.get().get_or_insert_with(std::time::Instant::now);
            reached.set(Some(at));
            at.elapsed() > Duration::from_secs(4)
        },
    )
    .into_iter()
    .map(|c| c.value)
    .filter(|v| v["other"] != true)
    .collect();
    each_row_once(&records, rows, kills);
    // The merges went to a topic that did not exist before the first of them.
    let merges = consume(
        &broker.brokers(),
        "leads.merged",
        rows / 100 + 1,
        Duration::from_secs(5),
    );
    assert_eq!(merges.len(), rows / 100, "each merge published once");
}

/// A spreadsheet and a GB18030 CSV as Chinese exports are: titles above the table, a phone typed
/// as a number, dates, a blank row. Each lead comes out with the right fields.
#[test]
fn an_xlsx_and_a_gb18030_csv_with_title_rows_import_with_their_fields() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/import");
    for name in ["expo.xlsx", "expo-gb18030.csv"] {
        std::fs::copy(fixtures.join(name), dir.path().join(name)).unwrap();
    }
    let out = import(
        dir.path(),
        &["expo.xlsx", "--dry-run", "--output", "xlsx.jsonl"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("expo.xlsx:1-2: rows above the table (a title?) skipped"),
        "{stderr}"
    );
    let records = lines(&std::fs::read_to_string(dir.path().join("xlsx.jsonl")).unwrap());
    let contacts: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            let c = &r["value"]["contact"];
            (
                c["name"].as_str().unwrap_or_default(),
                c["phone"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        contacts,
        [
            ("张伟", "+8613800138000"),
            ("李娜", "+8613912345678"),
            ("王强", "+8613700137000")
        ]
    );
    assert_eq!(
        records[0]["value"]["contact"]["company"],
        "上海某某汽车销售有限公司"
    );
    assert_eq!(
        records[0]["value"]["custom"]["到访时间"],
        "2026-11-18 10:30:00"
    );

    let out = import(
        dir.path(),
        &["expo-gb18030.csv", "--dry-run", "--output", "csv.jsonl"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = lines(&std::fs::read_to_string(dir.path().join("csv.jsonl")).unwrap());
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["value"]["contact"]["name"], "陈静");
    assert_eq!(records[0]["value"]["contact"]["city"], "广州市");
    assert_eq!(records[1]["value"]["contact"]["phone"], "+8613900139002");
}

/// An import through the running gateway: `leadgate import --server` uploads a file while
/// webhooks keep coming, the gateway is killed with -9 mid-import and started again, and every
/// row and every webhook lead comes out (each row under one event id), with the rejected rows
/// written beside the file.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_through_the_api_while_webhooks_arrive_loses_neither_even_across_a_kill() {
    use crate::support::Gateway;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("gw");
    let config =
        "[intake]\nbatch_size = 50\n\n[[connectors]]\nname = \"webform\"\ntype = \"webhook\"\n";
    let mut gw = Gateway::start(Some(config), &data);
    let rows: usize = 6000;
    let unusable = (0..rows).filter(|i| i % 500 == 7).count();
    let mut csv = String::from("姓名,手机,城市\n");
    for i in 0..rows {
        if i % 500 == 7 {
            csv.push_str(&format!("无号码{i},,上海\n"));
        } else {
            csv.push_str(&format!("客户{i},139{:08},上海\n", 10_000_000 + i));
        }
    }
    let file = dir.path().join("名单.csv");
    std::fs::write(&file, &csv).unwrap();

    // Webhooks meanwhile.
    let url = gw.url("/v1/webhooks/webform");
    let posting = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut accepted = Vec::new();
        for i in 0..150 {
            let lead = serde_json::json!({"name": format!("网页{i}"), "phone": format!("137{:08}", 20_000_000 + i)});
            if let Ok(r) = client.post(&url).json(&lead).send().await
                && r.status().as_u16() == 202
            {
                accepted.push(format!("网页{i}"));
            }
        }
        accepted
    });
    let upload = |addr: String| {
        let file = file.clone();
        std::thread::spawn(move || {
            Command::new(BIN)
                .args(["import", "--server", &addr, "--source", "expo"])
                .arg(&file)
                .output()
                .unwrap()
        })
    };
    let first = upload(gw.url(""));
    // Kill -9 once part of the file is journaled.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let journaled = std::fs::read_dir(data.join("imports/uploads"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<Value>(&b).ok())
            .map(|s| s["rows_journaled"].as_u64().unwrap_or(0))
            .max()
            .unwrap_or(0);
        if journaled >= 500 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "nothing journaled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.kill();
    let out = first.join().unwrap();
    assert!(!out.status.success(), "the client sees the gateway go away");
    let webhooks_before = posting.await.unwrap();
    let gw = Gateway::start(Some(config), &data);
    // The restarted gateway resumes the import by itself; an upload of the same file again goes
    // on where it stopped too, and prints the summary.
    let out = upload(gw.url("")).join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report = std::fs::read_to_string(dir.path().join("名单.csv.rejected.csv")).unwrap();
    assert!(
        report.starts_with("\u{feff}line,reasons,姓名,手机,城市"),
        "{report}"
    );

    // Every row once (one event each), and every webhook lead that was acknowledged (one sent
    // as the gateway died may be there too: it was journaled, its answer lost).
    let want = rows - unusable;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (names, row_events) = loop {
        let mut events = std::collections::HashSet::new();
        let mut names = std::collections::HashMap::<String, usize>::new();
        for r in &gw.spooled("leads.clean") {
            if events.insert(r["event_id"].as_str().unwrap().to_owned()) {
                let name = r["contact"]["name"].as_str().unwrap_or_default().to_owned();
                *names.entry(name).or_default() += 1;
            }
        }
        let row_events: usize = names
            .iter()
            .filter(|(n, _)| n.starts_with("客户"))
            .map(|(_, c)| c)
            .sum();
        let webhooks = webhooks_before.iter().all(|n| names.contains_key(n));
        if (row_events >= want && webhooks) || std::time::Instant::now() > deadline {
            break (names, row_events);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(row_events, want, "every row once, by event id");
    for i in (0..rows).filter(|i| i % 500 != 7) {
        assert_eq!(names.get(&format!("客户{i}")), Some(&1), "row {i}");
    }
    for n in &webhooks_before {
        assert_eq!(names.get(n), Some(&1), "the acknowledged webhook lead {n}");
    }
    let rejected: std::collections::HashSet<String> = gw
        .spooled("leads.rejected")
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(rejected.len(), unusable);
}

/// An upload that keeps coming is not cut by the body deadline, however long it takes; one that
/// stalls is, and so is one whose client goes away, each leaving nothing on disk. An upload whose
/// format cannot be told is refused before it is stored, naming `format`.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_upload_that_keeps_coming_is_taken_and_a_stalled_one_is_cut() {
    use crate::support::Gateway;
    let dir = tempfile::tempdir().unwrap();
    let config =
        "[http]\nbody_timeout = \"1s\"\n\n[[connectors]]\nname = \"webform\"\ntype = \"webhook\"\n";
    let gw = Gateway::start(Some(config), &dir.path().join("gw"));
    let url = gw.url("/v1/imports?source=expo&file_name=slow.csv");
    // 2.4 s in all, 100 KiB every 0.6 s.
    let chunk = |i: usize| {
        let mut part = if i == 0 {
            String::from("姓名,手机\n")
        } else {
            String::new()
        };
        while part.len() < 100 << 10 {
            part.push_str(&format!("客户{i},13800138000\n"));
        }
        bytes::Bytes::from(part)
    };
    let slow = futures::stream::unfold(0usize, move |i| async move {
        if i == 4 {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        Some((Ok::<_, std::io::Error>(chunk(i)), i + 1))
    });
    let resp = reqwest::Client::new()
        .post(&url)
        .body(reqwest::Body::wrap_stream(slow))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    // A first chunk, then nothing for longer than the deadline.
    let stalled = futures::stream::unfold(0usize, move |i| async move {
        match i {
            0 => Some((Ok::<_, std::io::Error>(chunk(0)), 1)),
            1 => {
                tokio::time::sleep(Duration::from_millis(2500)).await;
                Some((Ok(chunk(1)), 2))
            }
            _ => None,
        }
    });
    let resp = reqwest::Client::new()
        .post(&url)
        .body(reqwest::Body::wrap_stream(stalled))
        .send()
        .await;
    match resp {
        Ok(r) => assert_eq!(r.status().as_u16(), 408),
        // The server may close the connection before the client finished sending.
        Err(e) => assert!(e.is_request() || e.is_body() || e.is_connect(), "{e}"),
    }

    // A client that goes away mid-upload: its request is dropped.
    let gone = futures::stream::unfold(0usize, move |i| async move {
        match i {
            0 => Some((Ok::<_, std::io::Error>(chunk(0)), 1)),
            _ => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Some((Err(std::io::Error::other("the client is gone")), 2))
            }
        }
    });
    let _ = reqwest::Client::new()
        .post(&url)
        .body(reqwest::Body::wrap_stream(gone))
        .send()
        .await;

    // The format: from `format`, else from the name (the query's, or the multipart part's).
    // Each upload: (query, content type, body, the status, the field a 400 names, a piece of
    // its message).
    let csv = "姓名,手机\n客户,13800138000\n";
    let form = "--b0\r\nContent-Disposition: form-data; name=\"file\"; filename=\"名单.pdf\"\r\n\
                Content-Type: application/pdf\r\n\r\n%PDF-1.7\r\n--b0--\r\n";
    let multipart = "multipart/form-data; boundary=b0";
    let uploads = [
        (
            "source=expo",
            "text/csv",
            csv,
            400,
            "format",
            "give format=csv, jsonl or sheet",
        ),
        ("source=expo", multipart, form, 400, "format", "`名单.pdf`"),
        (
            "source=expo&file_name=expo.csv&sheet=Sheet2",
            "text/csv",
            csv,
            400,
            "sheet",
            "CSV",
        ),
        ("source=expo&format=csv", "text/csv", csv, 202, "", ""),
    ];
    let client = reqwest::Client::new();
    for (query, content_type, body, status, field, says) in uploads {
        let resp = client
            .post(gw.url(&format!("/v1/imports?{query}")))
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{query}");
        let body: Value = resp.json().await.unwrap();
        if status == 400 {
            assert_eq!(body["error"]["field"], field, "{body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(says), "{body}");
        }
    }

    // No part of the uploads that were cut is left in the uploads directory.
    let uploads = dir.path().join("gw/imports/uploads");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let partial: Vec<_> = std::fs::read_dir(&uploads)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".part"))
            .collect();
        if partial.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "partial uploads left behind: {partial:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A dry run whose people do not fit its memory budget spills them to a temporary directory:
/// the same people (lead ids, matches, merges) as a dry run that holds them all in memory, and
/// nothing left behind in `$TMPDIR`.
#[test]
fn a_dry_run_that_spills_its_people_to_disk_matches_them_as_one_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    // 6,000 rows of about 2,000 people: phones and addresses come back, some rows bring both
    // (matches and merges long after the person was spilled).
    let mut rows = String::new();
    for i in 0..6_000u32 {
        let p = (i * 7919) % 2_000;
        let phone = format!("1390571{:04}", 1000 + p);
        let email = format!("lead{}@corp.cn", (p * 3) % 2_000);
        let row = match i % 3 {
            0 => json!({"name": "王伟", "phone": phone}),
            1 => json!({"name": "王伟", "email": email}),
            _ => json!({"name": "王伟", "phone": phone, "email": email}),
        };
        rows.push_str(&row.to_string());
        rows.push('\n');
    }
    std::fs::write(dir.path().join("leads.jsonl"), rows).unwrap();
    let run = |budget: &str, output: &str| {
        let out = Command::new(BIN)
            .current_dir(dir.path())
            .env("TMPDIR", &tmp)
            .env("LEADGATE_DRY_RUN_BUDGET", budget)
            .args(["import", "leads.jsonl", "--dry-run", "--output", output])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let records = lines(&std::fs::read_to_string(dir.path().join(output)).unwrap());
        records
            .iter()
            .map(|r| {
                (
                    r["topic"].as_str().unwrap().to_owned(),
                    r["key"].clone(),
                    r["value"]["identity"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    let spilled = run("4096", "spilled.jsonl");
    let held = run("1000000000", "held.jsonl");
    assert_eq!(spilled.len(), held.len());
    for (i, (s, h)) in spilled.iter().zip(&held).enumerate() {
        assert_eq!(s, h, "record {i}");
    }
    let statuses = |status: &str| {
        spilled
            .iter()
            .filter(|(_, _, id)| id["status"] == status)
            .count()
    };
    assert!(statuses("matched") > 1_000, "{}", statuses("matched"));
    assert!(statuses("merged") > 10, "{}", statuses("merged"));
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "the spilled runs are removed"
    );
}
