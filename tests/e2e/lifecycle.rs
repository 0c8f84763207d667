//! The lead lifecycle with the real broker: a test CRM (a real Kafka client) reads the clean
//! leads and reports some contacted on `leads.status`; the others are taken back after their
//! follow-up SLA and reassigned on `leads.assignments`; capacity frees as leads close; the stats
//! API reports the funnel.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::support::{Broker, Gateway, consume, consume_until, kafka_config, post_json};

const TOKEN: &str = "lifecycle-test-token-0123456789";
/// The follow-up SLA: long enough for the CRM's reports to arrive first (a consumer group's
/// first join takes a few seconds on tansu), short for a test.
const SLA_SECS: u64 = 12;

/// The test CRM's producer: `status` reports keyed by lead id, or any bytes.
struct Crm(rdkafka::producer::BaseProducer);

impl Crm {
    fn new(brokers: &str) -> Self {
        Self(
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", brokers)
                .create()
                .unwrap(),
        )
    }

    fn send(&self, key: &str, payload: &str) {
        use rdkafka::producer::{BaseRecord, Producer};
        self.0
            .send(BaseRecord::to("leads.status").key(key).payload(payload))
            .map_err(|(e, _)| e)
            .unwrap();
        self.0.flush(Duration::from_secs(10)).unwrap();
    }

    fn report(&self, lead_id: &str, status: &str) {
        let body = json!({"lead_id": lead_id, "status_id": format!("{lead_id}-{status}"),
            "status": status, "crm_user": "王经理"});
        self.send(lead_id, &body.to_string());
    }
}

async fn api(
    http: &Client,
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = http.request(method, gw.url(path)).bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn open_leads(http: &Client, gw: &Gateway) -> BTreeMap<String, u64> {
    let (_, owners) = api(
        http,
        gw,
        reqwest::Method::GET,
        "/v1/assignment/owners",
        None,
    )
    .await;
    owners
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["id"].as_str().unwrap().to_owned(),
                o["open_leads"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Polls until `f` holds of the open leads, or fails after `within`.
async fn wait_open(
    http: &Client,
    gw: &Gateway,
    within: Duration,
    f: impl Fn(&BTreeMap<String, u64>) -> bool,
) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + within;
    loop {
        let now = open_leads(http, gw).await;
        if f(&now) || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn leads_nobody_calls_are_reassigned_and_crm_feedback_closes_the_funnel() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let text = kafka_config(
        &broker.brokers(),
        &format!("[api]\ntoken = \"{TOKEN}\"\n\n[lifecycle]\ncheck_every = \"200ms\"\n"),
    );
    let gw = Gateway::start(Some(&text), &dir.path().join("data"));
    let http = Client::new();
    use reqwest::Method;
    for o in ["ann", "bob", "cai"] {
        let (s, _) = api(
            &http,
            &gw,
            Method::POST,
            "/v1/assignment/owners",
            Some(json!({"id": o, "capacity": 10})),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (s, _) = api(&http, &gw, Method::POST, "/v1/assignment/teams",
        Some(json!({"id": "sales", "members": [{"owner": "ann"}, {"owner": "bob"}, {"owner": "cai"}]}))).await;
    assert_eq!(s, StatusCode::CREATED);
    // A bad SLA is refused at its field.
    let (s, b) = api(&http, &gw, Method::POST, "/v1/assignment/rules",
        Some(json!({"id": "all", "priority": 1, "action": {"type": "team", "team": "sales", "strategy": "round_robin"},
            "follow_up": {"within": "soon"}}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert!(b.to_string().contains("follow_up.within"), "{b}");
    let (s, b) = api(&http, &gw, Method::POST, "/v1/assignment/rules",
        Some(json!({"id": "all", "priority": 1, "action": {"type": "team", "team": "sales", "strategy": "round_robin"},
            "follow_up": {"within": format!("{SLA_SECS}s")}}))).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    let url = gw.url("/v1/webhooks/webform");
    for i in 0..6 {
        let campaign = if i < 4 { "618" } else { "双11" };
        let lead = json!({"name": format!("客户{i}"), "phone": format!("1390000{i:04}"), "utm_campaign": campaign});
        crate::support::accepted(post_json(&http, &url, &lead).await).await;
    }
    let assigned_at = Instant::now();

    // The CRM reads the clean leads and reports on the first three; a message it cannot read
    // comes first and holds nothing up.
    let clean = consume(&broker.brokers(), "leads.clean", 6, Duration::from_secs(30));
    assert_eq!(clean.len(), 6);
    let lead_ids: Vec<String> = clean
        .iter()
        .map(|c| c.value["lead_id"].as_str().unwrap().to_owned())
        .collect();
    let first_owner: HashMap<&str, &str> = clean
        .iter()
        .map(|c| {
            (
                c.value["lead_id"].as_str().unwrap(),
                c.value["assignment"]["owner"].as_str().unwrap(),
            )
        })
        .collect();
    let crm = Crm::new(&broker.brokers());
    crm.send("x", "not json at all");
    crm.report(&lead_ids[0], "contacted");
    crm.report(&lead_ids[0], "converted");
    crm.report(&lead_ids[1], "contacted");
    crm.report(&lead_ids[1], "closed");
    crm.report(&lead_ids[2], "contacted");
    crm.report(&lead_ids[2], "contacted"); // a repeat changes nothing

    // Capacity frees as leads close: 6 open, lead 0 converted and lead 1 closed.
    let open = wait_open(&http, &gw, Duration::from_secs(20), |o| {
        o.values().sum::<u64>() == 4
    })
    .await;
    assert_eq!(open.values().sum::<u64>(), 4, "{open:?}");
    assert!(
        assigned_at.elapsed() < Duration::from_secs(SLA_SECS),
        "the CRM's reports took longer than the SLA; the test cannot tell them apart"
    );

    // The three leads nobody called are taken back after the SLA and reassigned.
    let moved = consume_until(
        &broker.brokers(),
        "leads.assignments",
        Duration::from_secs(SLA_SECS + 30),
        |got| {
            got.iter()
                .map(|c| c.value["reassignment_id"].as_str().unwrap_or("").to_owned())
                .collect::<std::collections::HashSet<_>>()
                .len()
                >= 3
        },
    );
    assert!(
        assigned_at.elapsed() >= Duration::from_secs(SLA_SECS),
        "reassigned before the SLA ran out"
    );
    let mut by_lead: BTreeMap<String, Value> = BTreeMap::new();
    for m in &moved {
        assert_eq!(m.key, m.value["lead_id"].as_str().unwrap());
        assert_eq!(
            m.header("reassignment_id"),
            m.value["reassignment_id"].as_str()
        );
        by_lead.insert(m.key.clone(), m.value.clone());
    }
    let mut want: Vec<&String> = lead_ids[3..].iter().collect();
    want.sort();
    assert_eq!(by_lead.keys().collect::<Vec<_>>(), want, "{moved:#?}");
    for (lead, r) in &by_lead {
        assert_eq!(r["reason"], "follow_up.missed");
        assert_eq!(r["from_owner"], first_owner[lead.as_str()]);
        assert_ne!(
            r["owner"], r["from_owner"],
            "never back to the owner who let it lapse"
        );
        assert_eq!(
            (&r["pool"], &r["rule_id"], &r["reassignments"]),
            (&json!(false), &json!("all"), &json!(1))
        );
        assert!(
            r["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("within {SLA_SECS}s")),
            "{r}"
        );
        assert_eq!(r["schema_version"], "1.0");
    }
    // The load moved with them: still 4 open, now with the new owners.
    let open = open_leads(&http, &gw).await;
    assert_eq!(open.values().sum::<u64>(), 4, "{open:?}");
    let mut expected: BTreeMap<String, u64> = ["ann", "bob", "cai"]
        .iter()
        .map(|o| ((*o).to_owned(), 0))
        .collect();
    *expected.get_mut(first_owner[lead_ids[2].as_str()]).unwrap() += 1;
    for r in by_lead.values() {
        *expected.get_mut(r["owner"].as_str().unwrap()).unwrap() += 1;
    }
    assert_eq!(open, expected);

    // Their new owners close them: every slot is free but lead 2's.
    for lead in &lead_ids[3..] {
        crm.report(lead, "lost");
    }
    let open = wait_open(&http, &gw, Duration::from_secs(20), |o| {
        o.values().sum::<u64>() == 1
    })
    .await;
    assert_eq!(open.values().sum::<u64>(), 1, "{open:?}");

    // The funnel per campaign, exactly: 618 had leads 0-3, 双11 leads 4-5.
    let (s, funnel) = api(
        &http,
        &gw,
        Method::GET,
        "/v1/stats/funnel?by=campaign",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let row = |v: &str| -> Value {
        funnel["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["value"] == v)
            .cloned()
            .unwrap_or_else(|| panic!("no {v} in {funnel}"))
    };
    let c = row("618")["counts"].clone();
    assert_eq!(
        (
            &c["received"],
            &c["assigned"],
            &c["contacted"],
            &c["qualified"],
            &c["converted"],
            &c["lost"]
        ),
        (
            &json!(4),
            &json!(4),
            &json!(4),
            &json!(1),
            &json!(1),
            &json!(1)
        ),
        "lead 3 was lost (contacted), 0 converted: {c}"
    );
    assert_eq!(row("618")["rates"]["converted"], json!(0.25));
    let c = row("双11")["counts"].clone();
    assert_eq!(
        (&c["received"], &c["contacted"], &c["converted"], &c["lost"]),
        (&json!(2), &json!(2), &json!(0), &json!(2))
    );
    let (s, b) = api(&http, &gw, Method::GET, "/v1/stats/funnel?by=planet", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(b["error"]["field"], "by", "{b}");

    // The unreadable message was counted, and skipped.
    let metrics = crate::support::get_text(&http, &gw.url("/metrics")).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("leadgate_status_reports_total{")
                && l.contains("outcome=\"invalid\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("leadgate_reassignments_total{outcome=\"reassigned\"} 3")),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("reassign"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// On the embedded output the reassignments are JSON lines too; a lead the CRM reported on over
/// HTTP in time stays with its owner.
#[tokio::test(flavor = "multi_thread")]
async fn on_the_embedded_output_reassignments_are_spooled() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[api]\ntoken = \"{TOKEN}\"\n\n[lifecycle]\ncheck_every = \"200ms\"\n\n[[connectors]]\nname = \"webform\"\ntype = \"webhook\"\n"
    );
    let gw = Gateway::start(Some(&text), &dir.path().join("data"));
    let http = Client::new();
    use reqwest::Method;
    for o in ["ann", "bob"] {
        api(
            &http,
            &gw,
            Method::POST,
            "/v1/assignment/owners",
            Some(json!({"id": o})),
        )
        .await;
    }
    api(
        &http,
        &gw,
        Method::POST,
        "/v1/assignment/teams",
        Some(json!({"id": "t", "members": [{"owner": "ann"}, {"owner": "bob"}]})),
    )
    .await;
    let (s, b) = api(&http, &gw, Method::POST, "/v1/assignment/rules",
        Some(json!({"id": "r", "priority": 1, "action": {"type": "team", "team": "t", "strategy": "round_robin"}, "follow_up": {"within": "3s"}}))).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let url = gw.url("/v1/webhooks/webform");
    for phone in ["13911110001", "13911110002"] {
        crate::support::accepted(post_json(&http, &url, &json!({"phone": phone})).await).await;
    }
    let clean = gw.wait_spooled("leads.clean", 2, Duration::from_secs(20));
    let called = clean[1]["lead_id"].as_str().unwrap();
    let (s, b) = api(
        &http,
        &gw,
        Method::POST,
        &format!("/v1/leads/{called}/status"),
        Some(json!({"status_id": "c1", "status": "contacted"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let moved = gw.wait_spooled("leads.assignments", 1, Duration::from_secs(20));
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0]["lead_id"], clean[0]["lead_id"]);
    assert_eq!(
        (moved[0]["from_owner"].as_str(), moved[0]["owner"].as_str()),
        (Some("ann"), Some("bob"))
    );
    // bob lets it lapse too: nobody left who did not have it, so the pool. The lead the CRM
    // called is never taken back.
    let moved = gw.wait_spooled("leads.assignments", 2, Duration::from_secs(20));
    assert_eq!(moved[1]["lead_id"], clean[0]["lead_id"]);
    assert_eq!(
        (&moved[1]["pool"], &moved[1]["owner"]),
        (&json!(true), &Value::Null)
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        gw.spooled("leads.assignments")
            .iter()
            .all(|r| r["lead_id"] != called)
    );
}
