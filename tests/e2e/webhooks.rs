//! Webhook intake on the embedded default: the README's lead, every kind of bad request, rate
//! limits and idempotency, seen from outside.

use std::time::Duration;

use futures::FutureExt;
use serde_json::{Value, json};

use crate::support::{Gateway, error_of, post_json};

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_lead_reaches_the_embedded_output() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(None, &dir.path().join("data"));
    assert!(
        gw.banner.iter().any(|l| l.contains("leads.clean.jsonl")),
        "the banner says where output goes: {:?}",
        gw.banner
    );

    let lead = json!({"name":"张三","phone":"138 0013 8000","email":"Zhang.San@Example.COM"});
    let resp = post_json(
        &reqwest::Client::new(),
        &gw.url("/v1/webhooks/webform"),
        &lead,
    )
    .await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    let event_id = body["event_id"].as_str().expect("an event_id").to_owned();

    let clean = gw.wait_spooled("leads.clean", 1, Duration::from_secs(5));
    assert_eq!(clean.len(), 1, "one clean record");
    let r = &clean[0];
    assert_eq!(r["event_id"], event_id);
    assert_eq!(r["schema_version"], "1.5");
    assert_eq!(r["contact"]["phone_type"], "mobile");
    assert_eq!(r["contact"]["phone"], "+8613800138000");
    assert_eq!(r["contact"]["email"], "Zhang.San@example.com");
    assert_eq!(r["contact"]["name"], "张三");
    assert_eq!(
        r["source"],
        json!({"connector": "webform", "kind": "webhook", "external_id": null})
    );
    assert_eq!(r["raw"], lead, "raw is the input as received");
    assert_eq!(r["lead_id"], r["identity"]["lead_id"]);
    assert_eq!(r["identity"]["status"], "new");
    crate::config::assert_valid_lead_record(r);
    assert!(
        gw.terminate().success(),
        "SIGTERM stops the gateway cleanly"
    );
}

const CONFIG: &str = r#"
[intake]
max_body_bytes = 2048

[[connectors]]
name = "webform"
type = "webhook"

[[connectors]]
name = "signed"
type = "webhook"
idempotency_field = "submission_id"
external_id_field = "submission_id"
signature = { secret = "${LEADGATE_TEST_SECRET}", header = "X-Signature" }

[[connectors]]
name = "limited"
type = "webhook"
rate_limit = { per_second = 1, burst = 2 }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn webhook_inputs_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with_env(
        Some(CONFIG),
        &dir.path().join("data"),
        &[("LEADGATE_TEST_SECRET", "topsecret")],
    );
    let http = reqwest::Client::new();
    let url = |c: &str| gw.url(&format!("/v1/webhooks/{c}"));
    let mut accepted = Vec::new();

    // JSON and urlencoded forms are both leads.
    let r = post_json(&http, &url("webform"), &json!({"phone": "13900139000"})).await;
    accepted.push(crate::support::accepted(r).await);
    let r = http
        .post(url("webform"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("name=%E6%9D%8E%E5%9B%9B&mobile=13700137000&utm_source=baidu")
        .send()
        .await
        .unwrap();
    accepted.push(crate::support::accepted(r).await);

    // Signatures: missing and wrong are 401 and never ingested; right is accepted.
    let body = br#"{"phone":"13600136000","submission_id":"s-1"}"#;
    let (status, err) = error_of(
        http.post(url("signed"))
            .body(&body[..])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str(), err["field"].as_str()),
        (401, Some("signature.missing"), Some("X-Signature"))
    );
    let bad = leadgate::sources::webhook::sign("not-the-secret", None, body);
    let (status, err) = error_of(
        http.post(url("signed"))
            .header("X-Signature", bad)
            .body(&body[..])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (401, Some("signature.mismatch"))
    );
    let good = format!(
        "sha256={}",
        leadgate::sources::webhook::sign("topsecret", None, body)
    );
    let post_signed = || {
        http.post(url("signed"))
            .header("X-Signature", &good)
            .body(&body[..])
            .send()
            .map(Result::unwrap)
    };
    let r = post_signed().await;
    assert_eq!(r.status(), 202);
    let first: Value = r.json().await.unwrap();
    accepted.push(first["event_id"].as_str().unwrap().to_owned());
    // The same submission_id again (a platform retry): the first answer, no new event.
    let r = post_signed().await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let again: Value = r.json().await.unwrap();
    assert_eq!(
        (again["event_id"].clone(), again["status"].clone()),
        (first["event_id"].clone(), json!("duplicate"))
    );

    // The Idempotency-Key header does the same on any connector.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = http
            .post(url("webform"))
            .header("Idempotency-Key", "order-77")
            .json(&json!({"email": "a@b.cn"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        ids.push(r.json::<Value>().await.unwrap()["event_id"].clone());
    }
    assert_eq!(ids[0], ids[1]);
    accepted.push(ids[0].as_str().unwrap().to_owned());

    // Malformed input: 4xx naming the field and the reason.
    let cases: [(&str, &str, u16, &str, &str); 4] = [
        (
            "application/json",
            "{\"phone\": ",
            400,
            "body.malformed_json",
            "body",
        ),
        (
            "application/json",
            "[{\"phone\": \"1\"}]",
            400,
            "body.not_object",
            "body",
        ),
        ("application/json", "", 400, "body.empty", "body"),
        (
            "text/plain",
            "phone=1",
            415,
            "body.unsupported_type",
            "content-type",
        ),
    ];
    for (ctype, body, want_status, want_code, want_field) in cases {
        let (status, err) = error_of(
            http.post(url("webform"))
                .header("content-type", ctype)
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, err["code"].as_str(), err["field"].as_str()),
            (want_status, Some(want_code), Some(want_field)),
            "{body:?}"
        );
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, err) =
        error_of(post_json(&http, &url("webform"), &json!({"notes": "x".repeat(4000)})).await)
            .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (413, Some("body.too_large"))
    );
    let (status, err) = error_of(post_json(&http, &url("nope"), &json!({})).await).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (404, Some("connector.unknown"))
    );

    // Rate limit: a burst of 2, then 429 with Retry-After.
    for _ in 0..2 {
        let r = post_json(&http, &url("limited"), &json!({"phone": "13500135000"})).await;
        accepted.push(crate::support::accepted(r).await);
    }
    let r = post_json(&http, &url("limited"), &json!({"phone": "13500135000"})).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);

    // Exactly the accepted events came out: none of the refused ones, no repeats.
    let clean = gw.wait_spooled("leads.clean", accepted.len(), Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(300));
    let clean = if clean.len() == accepted.len() {
        gw.spooled("leads.clean")
    } else {
        clean
    };
    let mut got: Vec<String> = clean
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    accepted.sort();
    assert_eq!(got, accepted);

    let form = clean
        .iter()
        .find(|r| r["contact"]["name"] == "李四")
        .expect("the form lead");
    assert_eq!(form["contact"]["phone"], "+8613700137000");
    assert_eq!(
        form["custom"],
        json!({"utm_source": "baidu"}),
        "unmapped fields are kept as custom"
    );
    let signed = clean
        .iter()
        .find(|r| r["source"]["connector"] == "signed")
        .unwrap();
    assert_eq!(signed["source"]["external_id"], "s-1");

    let health = http.get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready: Value = crate::support::get_json(&http, &gw.url("/readyz")).await;
    assert_eq!(
        (ready["status"].as_str(), ready["backlog"].as_u64()),
        (Some("ready"), Some(0))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn leads_without_a_usable_contact_are_rejected_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(None, &dir.path().join("data"));
    let http = reqwest::Client::new();
    let r = post_json(
        &http,
        &gw.url("/v1/webhooks/webform"),
        &json!({"name": "王五", "phone": "134****1234", "email": "wang.at.qq.com"}),
    )
    .await;
    assert_eq!(
        r.status(),
        202,
        "a rejected lead is still acknowledged: it is kept, not lost"
    );
    let rejected = gw.wait_spooled("leads.rejected", 1, Duration::from_secs(5));
    assert_eq!(rejected.len(), 1);
    let codes: Vec<&str> = rejected[0]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        ["contact.unreachable", "phone.masked", "email.missing_at"]
    );
    assert_eq!(rejected[0]["lead_id"], Value::Null);
    assert!(gw.spooled("leads.clean").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_on_the_embedded_output_loses_no_acknowledged_lead() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut gw = Gateway::start(None, &data);
    let acked = crate::support::kill_under_load(&mut gw).await;

    let gw = Gateway::start(None, &data);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let missing = loop {
        let seen: std::collections::HashSet<String> = gw
            .spooled("leads.clean")
            .iter()
            .map(|r| r["event_id"].as_str().unwrap().to_owned())
            .collect();
        let missing: Vec<&String> = acked.iter().filter(|id| !seen.contains(*id)).collect();
        if missing.is_empty() || std::time::Instant::now() > deadline {
            break missing.len();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        missing,
        0,
        "of {} acknowledged leads, {missing} were lost",
        acked.len()
    );
}
