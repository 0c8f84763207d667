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
    // A shape Tally is not known to send is taken, never refused and lost: it is rejected with
    // its raw body and the reason.
    let odd = post(envelope, Some(signed)).await.unwrap();
    assert_eq!(odd.status(), 202);

    // Both responses come out once, wherever their checks sent them.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let records = loop {
        let mut all = gw.spooled("leads.clean");
        all.extend(gw.spooled("leads.rejected"));
        if all.len() >= 3 || std::time::Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(records.len(), 3, "{records:?}");
    let odd = records
        .iter()
        .find(|r| r["raw"]["eventId"] == "e")
        .unwrap_or_else(|| panic!("{records:?}"));
    let reasons: Vec<&str> = odd["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        ["contact.unreachable", "body.unexpected_shape"],
        "{odd}"
    );
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

/// One form tool's recorded delivery, and the contact it must give.
struct Preset {
    /// The connector (and its file in `connectors/`).
    name: &'static str,
    fixture: &'static str,
    content_type: &'static str,
    /// The headers (or the URL query) of a delivery of `body` to `url` signed with `secret`.
    sign: fn(secret: &str, body: &[u8], url: &str) -> Auth,
    /// The env var the connector file reads its secret from.
    secret_env: &'static str,
    /// The submission's id (`source.external_id`).
    id: &'static str,
    /// The topic its record goes to.
    topic: &'static str,
    /// The record's contact fields that are set.
    contact: Value,
    /// The codes of the record's issues.
    issues: &'static [&'static str],
    /// Some of the record's `custom` fields.
    custom: Value,
}

const JOTFORM_TYPE: &str =
    "multipart/form-data; boundary=------------------------J1JNT4vbVO4FCC1qLG4HSv";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// How a delivery proves who sent it.
enum Auth {
    Headers(Vec<(&'static str, String)>),
    Query(String),
}

fn presets() -> Vec<Preset> {
    vec![
        Preset {
            name: "tally",
            fixture: "tally/lead-form.json",
            content_type: "application/json",
            sign: |s, b, _| {
                Auth::Headers(vec![(
                    "Tally-Signature",
                    leadgate::sources::tally::sign(s, b),
                )])
            },
            secret_env: "TALLY_SIGNING_SECRET",
            id: "jaMb6Ka",
            topic: "leads.clean",
            // The sample's number is a placeholder, not a real one.
            contact: json!({"name": "John Doe", "email": "john@company.com"}),
            issues: &["phone.invalid"],
            custom: json!({"Company size": "Enterprise", "Budget": 25000}),
        },
        Preset {
            name: "typeform",
            fixture: "typeform/example-payload.json",
            content_type: "application/json",
            sign: |s, b, _| {
                Auth::Headers(vec![(
                    "Typeform-Signature",
                    leadgate::sources::typeform::sign(s, b),
                )])
            },
            secret_env: "TYPEFORM_SECRET",
            id: "lT4Z3j:a3a12ec67a1365927098a606107fac15",
            topic: "leads.clean",
            contact: json!({"name": "Laura", "email": "laura@example.com"}),
            issues: &[],
            custom: json!({"readable_ref_date": "2005-10-15", "user_id": "abc123456",
                           "readable_ref_multiple_choice": "London"}),
        },
        // The recorded request is a tutoring form with no email or phone: rejected, its name
        // read from the name widget.
        Preset {
            name: "jotform",
            fixture: "jotform/response.multipart",
            content_type: JOTFORM_TYPE,
            sign: |s, _, _| Auth::Query(format!("token={s}")),
            secret_env: "JOTFORM_TOKEN",
            id: "6084250982513018472",
            topic: "leads.rejected",
            contact: json!({"name": "Niloth P"}),
            issues: &["contact.unreachable"],
            custom: json!({"Type of Tutoring": "Online Tutoring", "formTitle": "Tutor Appointment Form"}),
        },
        Preset {
            name: "jotform",
            fixture: "jotform/lead-form.multipart",
            content_type: JOTFORM_TYPE,
            sign: |s, _, _| Auth::Query(format!("token={s}")),
            secret_env: "JOTFORM_TOKEN",
            id: "6390012345678901234",
            topic: "leads.clean",
            contact: json!({"name": "王小明", "phone": "+8613800138000", "phone_type": "mobile",
                            "email": "wang.xm@example.cn", "company": "示例科技有限公司",
                            "province": "广东省", "city": "深圳市",
                            "address": "科苑路 88 号, 深圳市, 广东省, 518000, China"}),
            issues: &[],
            custom: json!({"interestedIn": "CRM", "Interested in": "CRM"}),
        },
        Preset {
            name: "webflow",
            fixture: "webflow/form-submission.json",
            content_type: "application/json",
            sign: |s, b, _| Auth::Headers(leadgate::sources::webflow::sign(s, b, now_ms())),
            secret_env: "WEBFLOW_SECRET",
            id: "6321ca84df3949bfc6752327",
            topic: "leads.clean",
            contact: json!({"name": "Zaphod Beeblebrox", "email": "zaphod@heartofgold.ai"}),
            issues: &["phone.invalid"],
            custom: json!({"form_name": "Contact Us", "First Name": "Zaphod"}),
        },
        Preset {
            name: "hubspot",
            fixture: "hubspot/contact.json",
            content_type: "application/json",
            // Behind a proxy that ends TLS: HubSpot signed the https URL of the same host.
            sign: |s, b, url| {
                let url = url.replacen("http://", "https://", 1);
                Auth::Headers(leadgate::sources::hubspot::sign(s, &url, b, now_ms()))
            },
            secret_env: "HUBSPOT_CLIENT_SECRET",
            id: "3234574:1484026585538",
            topic: "leads.clean",
            contact: json!({"name": "Codey Huang", "email": "codey.huang@example.com",
                            "phone": "+16175550123", "phone_type": "fixed_line_or_mobile", "company": "HubSpot",
                            "title": "Marketing Manager"}),
            issues: &[],
            custom: json!({"lifecyclestage": "lead", "hs_analytics_source": "PAID_SEARCH"}),
        },
        Preset {
            name: "elementor",
            fixture: "elementor/advanced-data.txt",
            content_type: "application/x-www-form-urlencoded",
            sign: |s, _, _| Auth::Query(format!("token={s}")),
            secret_env: "ELEMENTOR_TOKEN",
            id: "",
            topic: "leads.clean",
            // A Brazilian number, read in the connector's region (CN): refused, kept in custom.
            contact: json!({"name": "Teste", "email": "teste@gmail.com"}),
            issues: &["phone.invalid"],
            custom: json!({"utm_campaign": "organico", "form_name": "Checkout pré populado"}),
        },
        Preset {
            name: "gravity-forms",
            fixture: "gravity-forms/entry.json",
            content_type: "application/json",
            sign: |s, _, _| Auth::Headers(vec![("authorization", format!("Bearer {s}"))]),
            secret_env: "GRAVITY_FORMS_TOKEN",
            id: "28:134",
            topic: "leads.clean",
            // The address's country sets the region the local number is read in.
            contact: json!({"name": "Thandi Mokoena", "phone": "+27821234567", "phone_type": "mobile",
                            "email": "thandi.mokoena@example.co.za", "address": "12 Long Street",
                            "city": "Cape Town", "province": "Western Cape", "country": "ZA",
                            "notes": "Interested in the CRM trial"}),
            issues: &[],
            custom: json!({"source_url": "https://example.co.za/contact/"}),
        },
        Preset {
            name: "wjx",
            fixture: "wjx/lead.json",
            content_type: "application/json",
            sign: |s, _, _| Auth::Query(format!("token={s}")),
            secret_env: "WJX_TOKEN",
            id: "208812345000017",
            topic: "leads.clean",
            contact: json!({"name": "王小明", "phone": "+8613800138000", "phone_type": "mobile",
                            "email": "wang.xm@example.cn", "province": "北京市", "city": "北京市"}),
            issues: &["region.from_phone"],
            custom: json!({"q4": "CRM, 营销自动化", "q5": "1 个月内", "survey_name": "2026 深圳展会预约",
                           "sojumpparm": "booth-A12"}),
        },
        Preset {
            name: "google-forms",
            fixture: "google-forms/response.json",
            content_type: "application/json; charset=utf-8",
            sign: |s, b, _| {
                Auth::Headers(vec![(
                    "X-Leadgate-Signature",
                    leadgate::sources::google_forms::sign(s, b),
                )])
            },
            secret_env: "GOOGLE_FORMS_SECRET",
            id: "2_ABaOnudP3kF2x7yT9wq1sLk",
            topic: "leads.clean",
            contact: json!({"name": "王小明", "phone": "+8613800138000", "phone_type": "mobile",
                            "email": "wang.xm@example.cn", "company": "示例科技有限公司",
                            "province": "北京市", "city": "北京市"}),
            issues: &["region.from_phone"],
            custom: json!({"感兴趣的产品": "CRM, 营销自动化", "formTitle": "展会预约 Trade Show Booking"}),
        },
        Preset {
            name: "jinshuju",
            fixture: "jinshuju/entry.json",
            content_type: "application/json",
            sign: |s, _, _| Auth::Query(format!("token={s}")),
            secret_env: "JINSHUJU_TOKEN",
            id: "RygpW3:1",
            topic: "leads.clean",
            contact: json!({"name": "小金", "phone": "+8618629058968", "phone_type": "mobile",
                            "email": "roody@jinshuju.com", "company": "金数据",
                            // From the number's prefix.
                            "province": "陕西省", "city": "西安市"}),
            issues: &["region.from_phone"],
            custom: json!({"field_3": "zI63, uN9L", "form_name": "小金俱乐部活动报名"}),
        },
        Preset {
            name: "tencent-wj",
            fixture: "tencent_wj/answer.json",
            content_type: "application/json",
            sign: |s, _, _| Auth::Query(format!("token={s}")),
            secret_env: "TENCENT_WJ_TOKEN",
            id: "5356056:7",
            topic: "leads.clean",
            contact: json!({"name": "王小明", "phone": "+8613800138000", "phone_type": "mobile",
                            "email": "wang.xm@example.cn", "province": "北京市", "city": "北京市"}),
            issues: &["region.from_phone"],
            custom: json!({"q-4-Lk2p": "CRM, 营销自动化", "g-5-1": "满意"}),
        },
    ]
}

/// Every preset in `connectors/`, from its recorded real delivery to the clean record read back
/// from the broker: unsigned and forged deliveries are refused, a signed one is taken once.
#[tokio::test(flavor = "multi_thread")]
async fn form_tool_presets_turn_recorded_deliveries_into_clean_records_on_kafka() {
    let broker = crate::support::Broker::start();
    let presets = presets();
    let mut files: Vec<String> = presets
        .iter()
        .map(|p| format!("{}/connectors/{}.toml", env!("CARGO_MANIFEST_DIR"), p.name))
        .collect();
    files.dedup();
    let config = format!(
        "include = {files:?}\n{}",
        crate::support::kafka_config(&broker.brokers(), "")
    );
    let dir = tempfile::tempdir().unwrap();
    let secrets: Vec<(&str, String)> = presets
        .iter()
        .map(|p| (p.secret_env, format!("{}-secret", p.name)))
        .collect();
    let env: Vec<(&str, &str)> = secrets.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gw = Gateway::start_with_env(Some(&config), &dir.path().join("gw"), &env);
    let client = reqwest::Client::new();

    for (p, (_, secret)) in presets.iter().zip(&secrets) {
        let body = fixture_bytes(p.fixture);
        let endpoint = gw.url(&format!("/v1/webhooks/{}", p.name));
        let post = |auth: Option<Auth>| {
            let mut url = endpoint.clone();
            let mut req = client.post(&url).header("content-type", p.content_type);
            match auth {
                Some(Auth::Headers(headers)) => {
                    for (k, v) in headers {
                        req = req.header(k, v);
                    }
                }
                Some(Auth::Query(q)) => {
                    url = format!("{url}?{q}");
                    req = client.post(&url).header("content-type", p.content_type);
                }
                None => {}
            }
            req.body(body.clone()).send()
        };
        let unsigned = post(None).await.unwrap();
        assert_eq!(unsigned.status(), 401, "{}: unsigned", p.name);
        let forged = post(Some((p.sign)("not-the-secret", &body, &endpoint)))
            .await
            .unwrap();
        assert_eq!(forged.status(), 401, "{}: forged", p.name);
        let first = post(Some((p.sign)(secret, &body, &endpoint)))
            .await
            .unwrap();
        assert_eq!(
            first.status(),
            202,
            "{}: {}",
            p.name,
            first.text().await.unwrap()
        );
        if p.id.is_empty() {
            // A tool with no submission id (Elementor) does not retry either.
            continue;
        }
        let again = post(Some((p.sign)(secret, &body, &endpoint)))
            .await
            .unwrap();
        assert_eq!(again.status(), 202, "{}", p.name);
        assert_eq!(again.headers()["idempotent-replayed"], "true", "{}", p.name);
    }

    // 腾讯问卷's test request, sent when a webhook is saved, is answered without a lead.
    let ping = client
        .post(gw.url("/v1/webhooks/tencent-wj?token=tencent-wj-secret"))
        .json(&json!({"id": "t-1", "object": "Test", "action": "test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), 200);
    assert_eq!(ping.json::<Value>().await.unwrap()["status"], "ignored");

    let mut records = Vec::new();
    for topic in ["leads.clean", "leads.rejected"] {
        let want = presets.iter().filter(|p| p.topic == topic).count();
        let got =
            crate::support::consume_events(&broker.brokers(), topic, want, Duration::from_secs(30));
        assert_eq!(got.len(), want, "each delivery once on {topic}: {got:?}");
        records.extend(got.into_iter().map(|r| (topic, r)));
    }
    for p in &presets {
        let (topic, record) = records
            .iter()
            .find(|(_, r)| {
                r.value["source"]["connector"] == p.name
                    && (p.id.is_empty() || r.value["source"]["external_id"] == p.id)
            })
            .unwrap_or_else(|| panic!("no record of {} {}: {records:?}", p.name, p.id));
        assert_eq!(*topic, p.topic, "{}: {}", p.name, record.value);
        assert_eq!(record.value["source"]["connector"], p.name);
        let mut contact = record.value["contact"].as_object().unwrap().clone();
        contact.retain(|_, v| !v.is_null());
        assert_eq!(
            Value::Object(contact),
            p.contact,
            "{}: {}",
            p.name,
            record.value
        );
        // Rejected records carry their reasons, clean ones their issues.
        let issues: Vec<&str> = ["issues", "reasons"]
            .iter()
            .filter_map(|k| record.value[k].as_array())
            .flatten()
            .map(|i| i["code"].as_str().unwrap())
            .collect();
        assert_eq!(issues, p.issues, "{}: {}", p.name, record.value);
        for (k, v) in p.custom.as_object().unwrap() {
            assert_eq!(
                &record.value["custom"][k], v,
                "{}: custom {k}: {}",
                p.name, record.value
            );
        }
    }
}

/// `mapping` paths reach into any connector's payload: a generic webhook given a nested body.
#[tokio::test(flavor = "multi_thread")]
async fn mapping_paths_read_nested_answers_on_a_generic_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
[[connectors]]
name = "nested"
type = "webhook"
[connectors.mapping]
name = ["$.form_response.answers[field.ref=name].text"]
email = ["$.form_response.answers[field.ref=email]"]
phone = ["$.entry.field_4"]
country = ["$.form_response.hidden.country"]
company = ["$[\"org.name\"]"]
"#;
    let gw = Gateway::start(Some(config), &dir.path().join("gw"));
    let body = json!({
        "form_response": {"hidden": {"country": "台湾"}, "answers": [
            {"type": "text", "text": "林美玲", "field": {"ref": "name"}},
            {"type": "email", "email": "meiling@example.tw", "field": {"ref": "email"}}]},
        "entry": {"field_4": {"value": "0912 345 678", "verified": true}},
        "org.name": "範例股份有限公司"
    });
    let r = reqwest::Client::new()
        .post(gw.url("/v1/webhooks/nested"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let clean = gw.wait_spooled("leads.clean", 1, Duration::from_secs(20));
    let c = &clean[0]["contact"];
    assert_eq!(c["name"], "林美玲", "{c}");
    assert_eq!(c["email"], "meiling@example.tw");
    assert_eq!(
        c["phone"], "+886912345678",
        "read in the lead's own country: {c}"
    );
    assert_eq!(c["country"], "TW");
    assert_eq!(c["company"], "範例股份有限公司");
}
