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
}

#[test]
fn usage_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("leads.xlsx"), "x").unwrap();
    let out = import(dir.path(), &["leads.xlsx", "--dry-run"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pass --format csv or --format jsonl"));
    let out = import(dir.path(), &["missing.csv", "--dry-run"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.csv"));
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

    // A second import of the same people matches the identities the first one stored.
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
