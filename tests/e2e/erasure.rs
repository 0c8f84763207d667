//! Erasure: a person erased by phone leaves no byte of their phone (any common format) or
//! address anywhere under the data directory; their new leads are suppressed, across a restart;
//! with Kafka, a tombstone and an erasure event are read back from the broker.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{Value, json};

use crate::support::{
    Broker, Gateway, accepted, consume_until, error_of, get_text, kafka_config, post_json,
};

use crate::privacy::{ADMIN, DPO, TOKENS};

/// Every form of the erased person's phone and address the test looks for.
const GONE: [&str; 6] = [
    "13905712468",
    "139 0571 2468",
    "139-0571-2468",
    "1390571",
    "wang.xm@corp.cn",
    "Wang.XM@corp.cn",
];

/// The files under `dir` (recursively) holding any of `needles`, with the needle.
fn files_holding(dir: &Path, needles: &[&str]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap_or_default();
            for n in needles {
                if bytes.windows(n.len()).any(|w| w == n.as_bytes()) {
                    hits.push(format!("{} in {}", n, path.display()));
                }
            }
        }
    }
    hits
}

async fn erase(http: &Client, gw: &Gateway, body: &Value) -> reqwest::Response {
    http.post(gw.url("/v1/erasures"))
        .bearer_auth(DPO)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// `GET path` with `token`, as JSON.
async fn get_as(http: &Client, gw: &Gateway, path: &str, token: &str) -> Value {
    let resp = http
        .get(gw.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    resp.json().await.unwrap()
}

/// Polls `GET path` (with `token`) until `done` says so of its answer; the answer.
async fn poll(
    http: &Client,
    gw: &Gateway,
    path: &str,
    token: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = get_as(http, gw, path, token).await;
        if done(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "{path}: {got}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `GET /v1/erasures/{id}` until it is completed.
async fn completed(http: &Client, gw: &Gateway, id: &str) -> Value {
    poll(http, gw, &format!("/v1/erasures/{id}"), DPO, |e| {
        e["request_status"] == "completed"
    })
    .await
}

async fn post(http: &Client, gw: &Gateway, lead: Value) -> String {
    accepted(post_json(http, &gw.url("/v1/webhooks/webform"), &lead).await).await
}

/// The count of leads rejected as `privacy.suppressed` in `/metrics`.
async fn suppressed(http: &Client, gw: &Gateway) -> u64 {
    get_text(http, &gw.url("/metrics"))
        .await
        .lines()
        .filter(|l| l.contains("privacy.suppressed") && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn wait_suppressed(http: &Client, gw: &Gateway, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while suppressed(http, gw).await < n {
        assert!(Instant::now() < deadline, "fewer than {n} leads suppressed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_person_leaves_no_byte_in_the_data_directory_and_comes_back_suppressed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = format!(
        "{TOKENS}\n[[connectors]]\nname = \"webform\"\ntype = \"webhook\"\n\n\
         [[connectors]]\nname = \"expo\"\ntype = \"file\"\nconsent = {{ field = \"同意\", required = true }}\n"
    );
    let mut gw = Gateway::start(Some(&config), &data);
    let http = Client::new();

    // The person, three times in three forms (the address alone merges in), and another one.
    post(
        &http,
        &gw,
        json!({"name": "王小明", "phone": "139 0571 2468", "city": "深圳", "utm_campaign": "618"}),
    )
    .await;
    post(
        &http,
        &gw,
        json!({"name": "王小明", "email": "Wang.XM@corp.cn", "company": "星河科技"}),
    )
    .await;
    post(
        &http,
        &gw,
        json!({"name": "王小明", "phone": "+86 139-0571-2468", "email": "wang.xm@corp.cn"}),
    )
    .await;
    post(
        &http,
        &gw,
        json!({"name": "李四", "phone": "13800000001", "email": "lisi@corp.cn"}),
    )
    .await;
    let clean = gw.wait_spooled("leads.clean", 4, Duration::from_secs(30));
    assert_eq!(clean.len(), 4);
    let other = clean[3]["lead_id"].as_str().unwrap().to_owned();
    // A trade-show list through the API: the person's row is rejected (no consent) and lands in
    // the rejected-rows report; the upload itself is not kept once imported.
    let resp = http
        .post(gw.url("/v1/imports?source=expo&file_name=expo.csv"))
        .bearer_auth(ADMIN)
        .body("name,phone,同意\n王小明,139 0571 2468,否\n赵六,13700000009,是\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let import: Value = resp.json().await.unwrap();
    let import_id = import["id"].as_str().unwrap().to_owned();
    let s = poll(
        &http,
        &gw,
        &format!("/v1/imports/{import_id}"),
        ADMIN,
        |s| s["state"] == "done",
    )
    .await;
    assert_eq!(s["rows_rejected"], 1, "{s}");
    gw.wait_spooled("leads.clean", 5, Duration::from_secs(30));
    gw.wait_spooled("leads.rejected", 1, Duration::from_secs(30));
    let uploads: Vec<String> = std::fs::read_dir(data.join("imports/uploads"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        uploads.iter().any(|f| f.ends_with(".rejected.csv"))
            && !uploads
                .iter()
                .any(|f| f.ends_with(".csv") && !f.ends_with(".rejected.csv")),
        "{uploads:?}"
    );
    // The scan finds what is there.
    let before = files_holding(&data, &GONE);
    for file in [
        "journal.redb",
        "identity.redb",
        "leads.clean.jsonl",
        ".rejected.csv",
    ] {
        assert!(
            before.iter().any(|h| h.ends_with(file)),
            "{file}: {before:?}"
        );
    }

    // Only the privacy scope may ask; a bad request names its field.
    let resp = http
        .post(gw.url("/v1/erasures"))
        .bearer_auth(ADMIN.replace("admin", "nobody"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let bad = json!({"subject_request_id": "dsr-1", "subject_identities": [{"identity_type": "phone_number", "identity_value": "12"}]});
    let (status, err) = error_of(erase(&http, &gw, &bad).await).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["field"], "subject_identities[0].identity_value");

    let request = json!({
        "subject_request_id": "dsr-2026-001",
        "subject_request_type": "erasure",
        "submitted_time": "2026-12-02T08:00:00Z",
        "subject_identities": [{"identity_type": "phone_number", "identity_value": "+86 139 0571 2468", "identity_format": "raw"}],
    });
    let resp = erase(&http, &gw, &request).await;
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    let asked: Value = resp.json().await.unwrap();
    assert!(!asked.to_string().contains("0571"), "{asked}");
    let done = completed(&http, &gw, "dsr-2026-001").await;
    assert_eq!(done["lead_ids"].as_array().unwrap().len(), 2, "{done}");
    assert_eq!(done["removed"]["events"], 3, "{done}");
    assert_eq!(done["requested_by"], "dpo");
    // The same request again is the same erasure.
    assert_eq!(erase(&http, &gw, &request).await.status(), 200);

    let hits = files_holding(&data, &GONE);
    assert!(hits.is_empty(), "left after the erasure: {hits:?}");
    assert!(
        !files_holding(&data, &["13800000001", "lisi@corp.cn"]).is_empty(),
        "the other person is kept"
    );
    let clean = gw.spooled("leads.clean");
    assert_eq!(clean.len(), 2, "李四 and 赵六");
    assert_eq!(clean[0]["lead_id"], other.as_str());
    assert!(gw.spooled("leads.rejected").is_empty());
    let events = gw.spooled("leads.erasures");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["erasure_id"], "dsr-2026-001");
    assert_eq!(events[0]["lead_ids"], done["lead_ids"]);
    for lead in done["lead_ids"].as_array().unwrap() {
        let resp = http
            .get(gw.url(&format!("/v1/leads/{}", lead.as_str().unwrap())))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
    }
    let found = get_as(&http, &gw, "/v1/leads?phone=13800000001", ADMIN).await;
    assert_eq!(found["leads"][0]["lead_id"], other.as_str());

    // The address was never named in the request: it was found with the person and suppressed.
    post(&http, &gw, json!({"name": "W", "email": "WANG.XM@corp.cn"})).await;
    wait_suppressed(&http, &gw, 1).await;
    post(&http, &gw, json!({"name": "李四", "phone": "13800000001"})).await;
    gw.wait_spooled("leads.clean", 3, Duration::from_secs(30));
    assert_eq!(gw.spooled("leads.clean").len(), 3);

    // The list survives a restart; the identity store is as it was left.
    assert!(gw.terminate().success());
    let gw = Gateway::start(Some(&config), &data);
    post(&http, &gw, json!({"phone": "13905712468"})).await;
    wait_suppressed(&http, &gw, 1).await;
    post(&http, &gw, json!({"phone": "13800000001"})).await;
    let clean = gw.wait_spooled("leads.clean", 4, Duration::from_secs(30));
    assert_eq!(clean.len(), 4);
    assert_eq!(clean[3]["lead_id"], other.as_str());
    let list = get_as(&http, &gw, "/v1/erasures", DPO).await;
    assert_eq!(list["erasures"][0]["subject_request_id"], "dsr-2026-001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_kafka_the_erasure_publishes_a_tombstone_and_an_erasure_event() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{TOKENS}\n{}",
        kafka_config(&broker.brokers(), "[privacy]\nsuppression = \"flag\"\n")
    );
    let gw = Gateway::start(Some(&config), &dir.path().join("data"));
    let http = Client::new();
    post(
        &http,
        &gw,
        json!({"name": "王小明", "email": "wang.xm@corp.cn"}),
    )
    .await;
    post(&http, &gw, json!({"name": "李四", "phone": "13800000001"})).await;
    let brokers = broker.brokers();
    let clean = tokio::task::spawn_blocking({
        let b = brokers.clone();
        move || {
            consume_until(&b, "leads.clean", Duration::from_secs(60), |got| {
                got.len() >= 2
            })
        }
    })
    .await
    .unwrap();
    let erased = clean
        .iter()
        .find(|c| c.value["contact"]["email"] == "wang.xm@corp.cn")
        .expect("the person's record")
        .key
        .clone();
    let sha = hex_sha256("wang.xm@corp.cn");
    let resp = erase(
        &http,
        &gw,
        &json!({"subject_request_id": "dsr-k", "subject_identities": [
            {"identity_type": "email", "identity_value": sha, "identity_format": "sha256"}]}),
    )
    .await;
    assert_eq!(resp.status(), 202);
    let done = completed(&http, &gw, "dsr-k").await;
    assert_eq!(done["lead_ids"], json!([erased]));

    let (tombstone, event) = tokio::task::spawn_blocking(move || {
        let clean = consume_until(&brokers, "leads.clean", Duration::from_secs(60), |got| {
            got.iter().any(|c| c.value.is_null())
        });
        let events = consume_until(&brokers, "leads.erasures", Duration::from_secs(60), |got| {
            !got.is_empty()
        });
        (
            clean.into_iter().find(|c| c.value.is_null()),
            events.into_iter().next(),
        )
    })
    .await
    .unwrap();
    assert_eq!(tombstone.expect("a tombstone").key, erased);
    let event = event.expect("an erasure event");
    assert_eq!(event.key, "dsr-k");
    assert_eq!(event.value["lead_ids"], json!([erased]));
    assert_eq!(event.value["schema_version"], "1.0");
    assert_eq!(event.header("schema_version"), Some("1.0"));

    // Flagged, not dropped: on the rejected topic with its reason.
    post(&http, &gw, json!({"name": "W", "email": "wang.xm@corp.cn"})).await;
    let b = broker.brokers();
    let rejected = tokio::task::spawn_blocking(move || {
        consume_until(&b, "leads.rejected", Duration::from_secs(60), |got| {
            !got.is_empty()
        })
    })
    .await
    .unwrap();
    assert_eq!(
        rejected[0].value["reasons"][0]["code"], "privacy.suppressed",
        "{:?}",
        rejected[0].value
    );
}

fn hex_sha256(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// The size of the file at `path`.
fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_forgets_people_and_records_older_than_it_and_the_store_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let http = Client::new();
    // Leads from ten days ago (the gateway's clock moved back), 400 people.
    let old_clock = (-10 * 24 * 3600 * 1000i64).to_string();
    let hook = "[[connectors]]\nname = \"webform\"\ntype = \"webhook\"\n";
    {
        let mut gw = Gateway::start_with_env(
            Some(hook),
            &data,
            &[("LEADGATE_CLOCK_OFFSET_MS", old_clock.as_str())],
        );
        for i in 0..400 {
            let lead = json!({"name": format!("旧客户{i}"), "phone": format!("137{i:08}"),
                "email": format!("old{i}@corp.cn"), "remark": "x".repeat(400)});
            post(&http, &gw, lead).await;
        }
        gw.wait_spooled("leads.clean", 400, Duration::from_secs(60));
        assert!(gw.terminate().success());
    }
    let (identity_before, output_before) = (
        size(&data.join("identity.redb")),
        size(&data.join("output/leads.clean.jsonl")),
    );
    let config = format!(
        "[privacy]\nretention = \"7d\"\noutput_retention = \"7d\"\nretention_check = \"1s\"\n\n{hook}"
    );
    let gw = Gateway::start(Some(&config), &data);
    post(
        &http,
        &gw,
        json!({"name": "新客户", "phone": "13900000001"}),
    )
    .await;
    post(
        &http,
        &gw,
        json!({"name": "旧客户5", "phone": "13700000005"}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let clean = gw.spooled("leads.clean");
        if clean.len() == 2 {
            // The old person came back today: a new person, not the forgotten one.
            assert_eq!(clean[1]["identity"]["status"], "new", "{}", clean[1]);
            break;
        }
        assert!(Instant::now() < deadline, "{} records", clean.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = get_text(&http, &gw.url("/metrics")).await;
    assert!(
        metrics.contains("leadgate_retention_removed_total{what=\"people\"} 400"),
        "{metrics}"
    );
    let found = crate::support::get_json(&http, &gw.url("/v1/leads?email=old5@corp.cn")).await;
    assert_eq!(found["leads"], json!([]));
    let (identity_after, output_after) = (
        size(&data.join("identity.redb")),
        size(&data.join("output/leads.clean.jsonl")),
    );
    // What is left of each forgotten person is an anonymous slot; the rest is redb's own.
    assert!(
        identity_after * 10 < identity_before * 7,
        "identity.redb {identity_before} -> {identity_after} bytes"
    );
    assert!(
        output_after * 50 < output_before,
        "{output_before} -> {output_after}"
    );
    assert!(files_holding(&data, &["old5@corp.cn", "old6@corp.cn"]).is_empty());
}
