//! Ad-platform webhooks replayed from the recorded fixtures in `connectors/fixtures/`, through
//! the real binary to the real broker.

use serde_json::Value;

use crate::support::{Broker, Gateway, consume_until, kafka_config};

fn fixture(path: &str) -> Value {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("connectors/fixtures")
            .join(path),
    )
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn google_ads_leads_are_checked_mapped_deduplicated_and_tests_kept_apart() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    // `include` is a top-level key, so it comes before the tables.
    let config = format!(
        "include = [{:?}]\n{}\n[[connectors]]\nname = \"google-flagged\"\ntype = \"google_ads\"\ngoogle_key = \"form-key-0123456789\"\ntest_leads = \"flag\"\n",
        concat!(env!("CARGO_MANIFEST_DIR"), "/connectors/google-ads.toml"),
        kafka_config(&broker.brokers(), ""),
    );
    let gw = Gateway::start_with_env(
        Some(&config),
        &dir.path().join("gw"),
        &[("GOOGLE_ADS_KEY", "form-key-0123456789")],
    );
    let client = reqwest::Client::new();
    let post = |connector: &str, body: Value| {
        client
            .post(gw.url(&format!("/v1/webhooks/{connector}")))
            .json(&body)
            .send()
    };

    let lead = fixture("google-ads/lead.json");
    let first: Value = post("google-ads", lead.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["status"], "accepted");
    // Google retries until it sees a 200: the retry gets the first answer and publishes nothing.
    let again = post("google-ads", lead.clone()).await.unwrap();
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.unwrap();
    assert_eq!(
        (again["status"].as_str(), &again["event_id"]),
        (Some("duplicate"), &first["event_id"])
    );

    let mut wrong = lead.clone();
    wrong["google_key"] = "not-the-key".into();
    let refused = post("google-ads", wrong).await.unwrap();
    assert_eq!(refused.status(), 401);
    let err: Value = refused.json().await.unwrap();
    assert_eq!(err["error"]["field"], "google_key", "{err}");
    let mut keyless = lead.clone();
    keyless.as_object_mut().unwrap().remove("google_key");
    assert_eq!(post("google-ads", keyless).await.unwrap().status(), 401);

    let test = fixture("google-ads/test-lead.json");
    assert_eq!(
        post("google-ads", test.clone()).await.unwrap().status(),
        202
    );
    assert_eq!(post("google-flagged", test).await.unwrap().status(), 202);

    let clean = consume_until(
        &broker.brokers(),
        "leads.clean",
        std::time::Duration::from_secs(30),
        |got| got.len() >= 2,
    );
    let by_connector = |name: &str| -> Vec<&Value> {
        clean
            .iter()
            .map(|c| &c.value)
            .filter(|v| v["source"]["connector"] == name)
            .collect()
    };
    let real = by_connector("google-ads");
    assert_eq!(
        real.len(),
        1,
        "one clean record for the lead, none for the retry or the test"
    );
    let r = real[0];
    assert_eq!(r["source"]["kind"], "platform");
    assert_eq!(
        r["source"]["external_id"],
        "TeSter-123-ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    );
    assert_eq!(r["contact"]["name"], "李雷");
    assert_eq!(r["contact"]["phone"], "+8613912345678");
    assert_eq!(r["contact"]["email"], "Li.Lei@example.com");
    assert_eq!(r["contact"]["company"], "上海某某贸易有限公司");
    assert_eq!(r["contact"]["city"], "上海市");
    assert_eq!(
        r["contact"]["notes"], "上午",
        "the connector's own mapping of a custom question"
    );
    assert_eq!(
        r["custom"]["BUDGET_RANGE"], "50-100万",
        "an unknown column id is kept"
    );
    assert_eq!(r["custom"]["campaign_id"], 123456);
    assert!(
        r["raw"].get("google_key").is_none(),
        "the key never reaches a record: {}",
        r["raw"]
    );
    assert_eq!(
        r["raw"]["user_column_data"], lead["user_column_data"],
        "the raw payload is kept"
    );
    assert!(r["source"].get("test").is_none());

    // test_leads = "flag": with the other leads, marked.
    let flagged = by_connector("google-flagged");
    assert_eq!(flagged.len(), 1);
    assert_eq!(flagged[0]["source"]["test"], true);
    // test_leads = "topic" (the shipped definition): on leads.test only, never a person.
    let tests = consume_until(
        &broker.brokers(),
        "leads.test",
        std::time::Duration::from_secs(30),
        |got| !got.is_empty(),
    );
    assert_eq!(tests.len(), 1);
    let t = &tests[0].value;
    assert_eq!(t["source"]["connector"], "google-ads");
    assert_eq!(t["source"]["test"], true);
    assert_eq!(t["lead_id"], Value::Null);
    assert_eq!(t["contact"]["email"], "test-user@gmail.com");
    crate::config::assert_valid_lead_record(t);
    crate::config::assert_valid_lead_record(r);
}
