//! Form tools' webhooks, replayed from the recorded fixtures in `connectors/fixtures/` through
//! the real binary and the shipped connector definitions, to the embedded output.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::Gateway;

fn fixture_bytes(path: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("connectors/fixtures")
            .join(path),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn tally_responses_are_verified_read_by_label_and_taken_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "include = [{:?}]\n",
        concat!(env!("CARGO_MANIFEST_DIR"), "/connectors/tally.toml")
    );
    let secret = "tally-signing-secret";
    let gw = Gateway::start_with_env(
        Some(&config),
        &dir.path().join("gw"),
        &[("TALLY_SIGNING_SECRET", secret)],
    );
    let client = reqwest::Client::new();
    let url = gw.url("/v1/webhooks/tally");
    let post = |body: Vec<u8>, signature: Option<String>| {
        let mut req = client
            .post(&url)
            .header("content-type", "application/json")
            .header("user-agent", "Tally Webhooks");
        if let Some(s) = signature {
            req = req.header("Tally-Signature", s);
        }
        req.body(body).send()
    };

    // The real sample, byte for byte as recorded.
    let sample = fixture_bytes("tally/lead-form.json");
    let unsigned = post(sample.clone(), None).await.unwrap();
    assert_eq!(unsigned.status(), 401);
    let err: Value = unsigned.json().await.unwrap();
    assert_eq!(
        (&err["error"]["code"], &err["error"]["field"]),
        (&json!("signature.missing"), &json!("Tally-Signature")),
        "{err}"
    );
    let forged = leadgate::sources::tally::sign("not-the-secret", &sample);
    assert_eq!(
        post(sample.clone(), Some(forged)).await.unwrap().status(),
        401
    );

    let signed = leadgate::sources::tally::sign(secret, &sample);
    let first = post(sample.clone(), Some(signed.clone())).await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    // Tally retries a delivery it did not see answered, and operators re-send events by hand:
    // the same response gets the first answer and publishes nothing more.
    let again = post(sample.clone(), Some(signed)).await.unwrap();
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["event_id"], first["event_id"]);

    // A Chinese form: labels that name no contact field, typed email and phone questions, a
    // checkbox answered with option ids.
    let chinese = serde_json::to_vec(&json!({
        "eventId": "5b1f0c7e-0000-4000-8000-000000000001",
        "eventType": "FORM_RESPONSE",
        "createdAt": "2026-11-30T02:15:00.000Z",
        "data": {"responseId": "wRq8Yz1", "submissionId": "wRq8Yz1", "formId": "3xK9pL",
            "formName": "展会预约", "createdAt": "2026-11-30T02:15:00.000Z",
            "fields": [
                {"key": "question_a1", "label": "姓名", "type": "INPUT_TEXT", "value": "王小明"},
                {"key": "question_a2", "label": "怎么联系您", "type": "INPUT_PHONE_NUMBER",
                 "value": "138 0013 8000"},
                {"key": "question_a3", "label": "工作邮箱地址", "type": "INPUT_EMAIL",
                 "value": "wang.xm@example.cn"},
                {"key": "question_a4", "label": "感兴趣的产品", "type": "CHECKBOXES",
                 "value": ["o1", "o3"],
                 "options": [{"id": "o1", "text": "CRM"}, {"id": "o2", "text": "ERP"},
                             {"id": "o3", "text": "营销自动化"}]},
                {"key": "question_a5", "label": "备注", "type": "TEXTAREA", "value": null}
            ]}
    }))
    .unwrap();
    let signed = leadgate::sources::tally::sign(secret, &chinese);
    assert_eq!(post(chinese, Some(signed)).await.unwrap().status(), 202);

    let envelope =
        serde_json::to_vec(&json!({"eventId": "e", "eventType": "FORM_RESPONSE"})).unwrap();
    let signed = leadgate::sources::tally::sign(secret, &envelope);
    let bad = post(envelope, Some(signed)).await.unwrap();
    assert_eq!(bad.status(), 400);
    let err: Value = bad.json().await.unwrap();
    assert_eq!(err["error"]["field"], "data", "{err}");

    // Both responses come out once, wherever their checks sent them.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let records = loop {
        let mut all = gw.spooled("leads.clean");
        all.extend(gw.spooled("leads.rejected"));
        if all.len() >= 2 || std::time::Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(records.len(), 2, "{records:?}");
    let by_id = |id: &str| {
        records
            .iter()
            .find(|r| r["source"]["external_id"] == id)
            .unwrap_or_else(|| panic!("no record of response {id}: {records:?}"))
    };
    let john = by_id("jaMb6Ka");
    assert_eq!(john["source"]["connector"], "tally");
    assert_eq!(john["contact"]["name"], "John Doe");
    assert_eq!(john["contact"]["email"], "john@company.com");
    assert_eq!(john["custom"]["Company size"], "Enterprise", "{john}");
    assert_eq!(john["custom"]["Interest Level"], "High", "{john}");
    let wang = by_id("wRq8Yz1");
    assert_eq!(wang["contact"]["name"], "王小明", "{wang}");
    assert_eq!(wang["contact"]["phone"], "+8613800138000", "{wang}");
    assert_eq!(wang["contact"]["email"], "wang.xm@example.cn", "{wang}");
    assert_eq!(wang["custom"]["感兴趣的产品"], "CRM, 营销自动化", "{wang}");
    let clean = gw.spooled("leads.clean");
    assert!(
        clean
            .iter()
            .any(|r| r["source"]["external_id"] == "wRq8Yz1"),
        "a lead with a valid phone and email is clean: {wang}"
    );
}
