//! The Kafka output against a real Kafka-protocol broker (tansu), read back with a real client
//! (rdkafka): record contents, keys and headers, identity merges, a broker outage, and kill -9.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    Broker, Gateway, Proxy, consume, consume_until, kafka_config, kill_under_load, post_json,
};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn clean_rejected_and_merged_records_reach_kafka() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(
        Some(&kafka_config(&broker.brokers(), "")),
        &dir.path().join("data"),
    );
    assert!(
        gw.banner.iter().any(|l| l.contains("kafka output")),
        "{:?}",
        gw.banner
    );
    let http = reqwest::Client::new();
    let url = gw.url("/v1/webhooks/webform");

    // A: phone only. B: email only. C: both, which proves A and B are one person.
    let mut events = Vec::new();
    for lead in [
        json!({"name":"张三","phone":"138 0013 8000"}),
        json!({"name":"张三","email":"Zhang.San@Mouke.CN"}),
        json!({"姓名":"张三","手机":"+86 138-0013-8000","邮箱":"zhang.san@mouke.cn","公司":"某某科技有限公司"}),
        json!({"name":"no way to reach"}),
    ] {
        events.push(crate::support::accepted(post_json(&http, &url, &lead).await).await);
    }

    let clean = consume(&broker.brokers(), "leads.clean", 3, WAIT);
    assert_eq!(clean.len(), 3, "three clean records");
    let by_event = |id: &str| {
        clean
            .iter()
            .find(|m| m.value["event_id"] == id)
            .unwrap_or_else(|| panic!("{id} not on leads.clean"))
    };
    let (a, b, c) = (
        by_event(&events[0]),
        by_event(&events[1]),
        by_event(&events[2]),
    );
    for m in [a, b, c] {
        assert_eq!(
            m.key,
            m.value["lead_id"].as_str().unwrap(),
            "the key is the lead_id"
        );
        assert_eq!(m.header("event_id"), m.value["event_id"].as_str());
        assert_eq!(m.header("source"), Some("webform"));
        assert_eq!(m.header("schema_version"), Some("1.5"));
        crate::config::assert_valid_lead_record(&m.value);
    }
    assert_eq!(a.value["contact"]["phone"], "+8613800138000");
    assert_eq!(b.value["contact"]["email"], "Zhang.San@mouke.cn");
    assert_ne!(a.key, b.key, "A and B are two people until C joins them");
    assert_eq!(c.value["identity"]["status"], "merged");
    assert_eq!(c.key, a.key, "the oldest lead_id survives");
    assert_eq!(c.value["contact"]["company"], "某某科技有限公司");

    let merged = consume(&broker.brokers(), "leads.merged", 1, WAIT);
    assert_eq!(merged.len(), 1);
    assert_eq!(merged[0].value["lead_id"], a.key.as_str());
    assert_eq!(merged[0].value["merged_lead_ids"], json!([b.key]));

    let rejected = consume(&broker.brokers(), "leads.rejected", 1, WAIT);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].value["event_id"], events[3].as_str());
    assert_eq!(
        rejected[0].key, events[3],
        "rejected records are keyed by event_id"
    );
    assert_eq!(
        rejected[0].value["reasons"][0]["code"],
        "contact.unreachable"
    );
    crate::config::assert_valid_lead_record(&rejected[0].value);
}

#[tokio::test(flavor = "multi_thread")]
async fn topic_names_come_from_the_config() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let topics =
        "[topics]\nclean = \"crm.leads\"\nrejected = \"crm.rejects\"\nmerged = \"crm.merges\"\n";
    let gw = Gateway::start(
        Some(&kafka_config(&broker.brokers(), topics)),
        &dir.path().join("data"),
    );
    let r = post_json(
        &reqwest::Client::new(),
        &gw.url("/v1/webhooks/webform"),
        &json!({"phone": "13800138000"}),
    )
    .await;
    assert_eq!(r.status(), 202);
    assert_eq!(consume(&broker.brokers(), "crm.leads", 1, WAIT).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_outage_is_buffered_on_disk_and_delivered_after() {
    // The broker stays up; the network between it and every client goes down and comes back.
    let mut proxy = Proxy::new();
    let broker = Broker::start_behind(proxy.port);
    proxy.start(broker.port).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(
        Some(&kafka_config(&broker.brokers(), "")),
        &dir.path().join("data"),
    );
    let http = reqwest::Client::new();
    let url = gw.url("/v1/webhooks/webform");
    assert_eq!(
        post_json(&http, &url, &json!({"phone": "13800000001"}))
            .await
            .status(),
        202
    );
    assert_eq!(consume(&broker.brokers(), "leads.clean", 1, WAIT).len(), 1);

    proxy.stop().await;
    let mut during = HashSet::new();
    for n in 2..=6 {
        let r = post_json(&http, &url, &json!({"phone": format!("1380000000{n}")})).await;
        assert_eq!(
            r.status(),
            202,
            "leads are still acknowledged while the broker is down"
        );
        during.insert(
            r.json::<Value>().await.unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Delivery fails after message_timeout (5s); readiness says so and the backlog is on disk.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let ready = loop {
        let r = http.get(gw.url("/readyz")).send().await.unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        if status == 503 || std::time::Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(ready.0, 503, "readyz reports the outage: {}", ready.1);
    assert!(ready.1["backlog"].as_u64().unwrap() >= 5, "{}", ready.1);

    proxy.start(broker.port).await;
    let all = consume(&broker.brokers(), "leads.clean", 6, Duration::from_secs(90));
    let seen: HashSet<String> = all
        .iter()
        .map(|m| m.value["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        during.is_subset(&seen),
        "every lead posted during the outage arrived after it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_under_load_loses_no_acknowledged_lead() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = kafka_config(&broker.brokers(), "");
    let mut gw = Gateway::start(Some(&config), &data);
    let acked = kill_under_load(&mut gw).await;

    let _gw = Gateway::start(Some(&config), &data);
    let want: HashSet<String> = acked.into_iter().collect();
    let ids = |got: &[crate::support::Consumed]| -> HashSet<String> {
        got.iter()
            .map(|m| m.value["event_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let got = consume_until(
        &broker.brokers(),
        "leads.clean",
        Duration::from_secs(90),
        |got| want.is_subset(&ids(got)),
    );
    let seen = ids(&got);
    let lost = want.difference(&seen).count();
    assert_eq!(
        lost,
        0,
        "of {} acknowledged leads, {lost} were lost",
        want.len()
    );
}
