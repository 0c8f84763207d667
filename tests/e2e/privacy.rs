//! Privacy: scoped API tokens (each endpoint with each scope), personal data masked unless the
//! token may read it, and the access audit of every read.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Gateway, accepted, post_json};

pub(crate) const ADMIN: &str = "admin-token-0123456789";
const OPS: &str = "ops-token-0123456789";
const CRM: &str = "crm-token-0123456789";
pub(crate) const DPO: &str = "dpo-token-0123456789";

/// The API tokens of these tests (and the erasure tests): admin, ops, crm and dpo.
pub(crate) const TOKENS: &str = r#"
[api]
token = "admin-token-0123456789"

[[api.tokens]]
name = "ops"
token = "ops-token-0123456789"
scopes = ["operator"]

[[api.tokens]]
name = "crm"
token = "crm-token-0123456789"
scopes = ["operator", "pii:read"]

[[api.tokens]]
name = "dpo"
token = "dpo-token-0123456789"
scopes = ["privacy"]
"#;

/// What an endpoint needs, as docs/privacy.md lists it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Needs {
    Nothing,
    AnyToken,
    Operator,
    Admin,
    OperatorAndPii,
    Privacy,
}

async fn send(
    http: &reqwest::Client,
    gw: &Gateway,
    method: &Method,
    path: &str,
    token: Option<&str>,
) -> u16 {
    let mut req = http.request(method.clone(), gw.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if *method == Method::POST && path.starts_with("/v1/assignment") {
        req = req.json(&json!({"lead": {"phone": "13800138000"}}));
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_endpoint_answers_each_scope_as_documented_and_reads_of_personal_data_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{TOKENS}\n[[connectors]]\nname = \"webform\"\ntype = \"webhook\"\n");
    let gw = Gateway::start(Some(&config), &dir.path().join("data"));
    let http = reqwest::Client::new();
    let lead = json!({"name": "王芳", "phone": "139 1111 2222", "email": "wangfang@corp.cn", "city": "深圳"});
    accepted(post_json(&http, &gw.url("/v1/webhooks/webform"), &lead).await).await;
    let record = &gw.wait_spooled("leads.clean", 1, Duration::from_secs(30))[0];
    let lead_id = record["lead_id"].as_str().unwrap().to_owned();

    use Needs::*;
    let endpoints: Vec<(Method, String, Needs)> = vec![
        (Method::GET, "/healthz".into(), Nothing),
        (Method::GET, "/readyz".into(), Nothing),
        (Method::GET, "/metrics".into(), Nothing),
        (Method::GET, "/openapi.json".into(), Nothing),
        (Method::GET, "/console/".into(), Nothing),
        (Method::GET, "/v1/whoami".into(), AnyToken),
        (Method::GET, "/v1/connectors".into(), Operator),
        (Method::GET, "/v1/connectors/webform".into(), Operator),
        (Method::POST, "/v1/connectors/webform/pause".into(), Admin),
        (Method::POST, "/v1/connectors/webform/resume".into(), Admin),
        (Method::GET, "/v1/leads?phone=13911112222".into(), Operator),
        (Method::GET, format!("/v1/leads/{lead_id}"), Operator),
        (
            Method::GET,
            format!("/v1/leads/{lead_id}?pii=masked"),
            Operator,
        ),
        (
            Method::GET,
            format!("/v1/leads/{lead_id}?pii=clear"),
            OperatorAndPii,
        ),
        (Method::POST, format!("/v1/leads/{lead_id}/status"), Admin),
        (Method::GET, "/v1/assignment/rules".into(), Operator),
        (Method::GET, "/v1/assignment/owners/nobody".into(), Operator),
        (Method::POST, "/v1/assignment/preview".into(), Operator),
        (Method::GET, "/v1/assignment/audit".into(), Operator),
        (Method::POST, "/v1/assignment/owners".into(), Admin),
        (Method::PUT, "/v1/assignment/owners/nobody".into(), Admin),
        (Method::DELETE, "/v1/assignment/owners/nobody".into(), Admin),
        (Method::GET, "/v1/quarantine".into(), OperatorAndPii),
        (Method::GET, "/v1/rejections".into(), Operator),
        (Method::GET, "/v1/stats".into(), Operator),
        (Method::POST, "/v1/imports".into(), Admin),
        (Method::GET, "/v1/imports/nothing".into(), Operator),
        (
            Method::GET,
            "/v1/imports/nothing/rejected.csv".into(),
            OperatorAndPii,
        ),
        (Method::GET, "/v1/access-audit".into(), Privacy),
        (Method::POST, "/v1/erasures".into(), Privacy),
        (Method::GET, "/v1/erasures".into(), Privacy),
        (Method::GET, "/v1/erasures/nothing".into(), Privacy),
    ];
    let tokens = [("admin", ADMIN), ("ops", OPS), ("crm", CRM), ("dpo", DPO)];
    for (method, path, needs) in &endpoints {
        let without = send(&http, &gw, method, path, None).await;
        let wrong = send(&http, &gw, method, path, Some("wrong-token-0123456789")).await;
        if *needs == Nothing {
            assert_eq!((without, wrong), (200, 200), "{method} {path}");
            continue;
        }
        assert_eq!((without, wrong), (401, 401), "{method} {path}");
        for (name, token) in tokens {
            let allowed = match needs {
                Nothing | AnyToken => true,
                Operator => ["admin", "ops", "crm"].contains(&name),
                Admin => name == "admin",
                OperatorAndPii => ["admin", "crm"].contains(&name),
                Privacy => ["admin", "dpo"].contains(&name),
            };
            let got = send(&http, &gw, method, path, Some(token)).await;
            if allowed {
                assert!(
                    ![401, 403].contains(&got),
                    "{name}: {method} {path} answered {got}"
                );
            } else {
                assert_eq!(got, 403, "{name}: {method} {path}");
            }
        }
    }

    // Masked for the operator, clear for the CRM's token; only the clear reads are audited.
    let read = |token: &'static str, path: String| {
        let http = http.clone();
        let url = gw.url(&path);
        async move {
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let before: Value = read(DPO, "/v1/access-audit".into()).await;
    let seen = before["entries"].as_array().unwrap().len();
    let masked = read(OPS, format!("/v1/leads/{lead_id}")).await;
    assert_eq!(masked["masked"], true);
    let text = masked.to_string();
    for pii in ["13911112222", "wangfang@", "王芳"] {
        assert!(!text.contains(pii), "{pii} in a masked answer: {text}");
    }
    assert_eq!(masked["profile"]["phone"]["value"], "+86139****2222");
    assert_eq!(
        masked["profile"]["city"]["value"], "深圳市",
        "a city is not personal"
    );
    let found = read(OPS, "/v1/leads?phone=139-1111-2222".into()).await;
    assert_eq!(found["leads"][0]["masked"], true);
    let after_ops = read(DPO, "/v1/access-audit".into()).await;
    assert_eq!(
        after_ops["entries"].as_array().unwrap().len(),
        seen,
        "masked answers are not reads of personal data"
    );

    let clear = read(CRM, format!("/v1/leads/{lead_id}")).await;
    assert_eq!(clear["masked"], false);
    assert_eq!(clear["profile"]["phone"]["value"], "+8613911112222");
    let found = read(CRM, "/v1/leads?email=WangFang@corp.cn".into()).await;
    assert_eq!(
        found["leads"][0]["profile"]["email"]["value"],
        "wangfang@corp.cn"
    );
    // The CRM's token asks for a masked answer: not audited.
    let asked_masked = read(CRM, format!("/v1/leads/{lead_id}?pii=masked")).await;
    assert_eq!(asked_masked["masked"], true);

    let audit = read(DPO, "/v1/access-audit?limit=2".into()).await;
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        (
            &entries[0]["token"],
            &entries[0]["action"],
            &entries[0]["route"]
        ),
        (&json!("crm"), &json!("lead.search"), &json!("/v1/leads"))
    );
    assert_eq!(
        (&entries[1]["token"], &entries[1]["action"]),
        (&json!("crm"), &json!("lead.read"))
    );
    for e in entries {
        assert_eq!(e["lead_ids"], json!([lead_id]));
        let text = e.to_string();
        assert!(
            !text.contains("wangfang") && !text.contains("1391111"),
            "no PII in the audit: {text}"
        );
    }

    // Who changed assignment: the token's name in its audit log.
    let r = http
        .post(gw.url("/v1/assignment/owners"))
        .bearer_auth(ADMIN)
        .json(&json!({"id": "ann"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let log = read(OPS, "/v1/assignment/audit?order=newest&limit=1".into()).await;
    assert_eq!(
        (&log["entries"][0]["id"], &log["entries"][0]["by"]),
        (&json!("ann"), &json!("admin"))
    );

    let me = read(CRM, "/v1/whoami".into()).await;
    assert_eq!(
        me,
        json!({"name": "crm", "scopes": ["operator", "pii:read"], "reads_pii": true})
    );
    let me = read(OPS, "/v1/whoami".into()).await;
    assert_eq!(me["reads_pii"], false);
    let r = http
        .get(gw.url(&format!("/v1/leads/{lead_id}?pii=clear")))
        .bearer_auth(OPS)
        .send()
        .await
        .unwrap();
    let (status, err) = crate::support::error_of(r).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (403, Some("auth.forbidden"))
    );
    assert!(
        err["message"].as_str().unwrap().contains("pii:read"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_is_read_from_the_answer_each_connector_names_and_a_required_one_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
[[connectors]]
name = "webform"
type = "webhook"
consent = { field = "同意隐私政策", purposes = ["marketing", "sales_contact"], text = "隐私政策 2026-10 版", required = true }

[[connectors]]
name = "trade-show"
type = "webhook"
consent = { field = "agree" }

[[connectors]]
name = "typeform"
type = "typeform"
signing_secret = "typeform-secret"
consent = { field = "readable_ref_yes_no", purposes = ["newsletter"] }
"#;
    let gw = Gateway::start(Some(config), &dir.path().join("data"));
    let http = reqwest::Client::new();
    let post = |connector: &str, body: Value| {
        let http = http.clone();
        let url = gw.url(&format!("/v1/webhooks/{connector}"));
        async move { accepted(post_json(&http, &url, &body).await).await }
    };
    let yes = post(
        "webform",
        json!({"phone": "13800138001", "同意隐私政策": "同意"}),
    )
    .await;
    let checkbox = post(
        "webform",
        json!({"phone": "13800138002", "同意隐私政策": ["我同意"]}),
    )
    .await;
    let no = post(
        "webform",
        json!({"phone": "13800138003", "同意隐私政策": "不同意"}),
    )
    .await;
    let silent = post("webform", json!({"phone": "13800138004"})).await;
    let odd = post(
        "webform",
        json!({"phone": "13800138005", "同意隐私政策": "看情况"}),
    )
    .await;
    let unreachable = post("webform", json!({"phone": "123", "同意隐私政策": "否"})).await;
    let optional = post("trade-show", json!({"phone": "13800138006"})).await;
    // Typeform's published example answers its yes/no question `false`, and a copy `true`.
    let sample = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/connectors/fixtures/typeform/example-payload.json"
    ))
    .unwrap();
    let mut agreed: Value = serde_json::from_slice(&sample).unwrap();
    let answers = agreed["form_response"]["answers"].as_array_mut().unwrap();
    for a in answers.iter_mut().filter(|a| a["type"] == "boolean") {
        a["boolean"] = json!(true);
    }
    agreed["event_id"] = json!("another-event");
    agreed["form_response"]["token"] = json!("another-response");
    for body in [sample.clone(), serde_json::to_vec(&agreed).unwrap()] {
        let r = http
            .post(gw.url("/v1/webhooks/typeform"))
            .header("content-type", "application/json")
            .header(
                "Typeform-Signature",
                leadgate::sources::typeform::sign("typeform-secret", &body),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        accepted(r).await;
    }

    let clean = gw.wait_spooled("leads.clean", 5, Duration::from_secs(30));
    let rejected = gw.wait_spooled("leads.rejected", 4, Duration::from_secs(30));
    let by_event =
        |records: &[Value], id: &str| records.iter().find(|r| r["event_id"] == id).cloned();
    let granted = by_event(&clean, &yes).expect("consent given: clean");
    assert_eq!(granted["schema_version"], "1.5");
    assert_eq!(
        granted["consent"],
        json!({"granted": true, "purposes": ["marketing", "sales_contact"], "text": "隐私政策 2026-10 版",
               "at": granted["received_at"], "source": "同意隐私政策"})
    );
    crate::config::assert_valid_lead_record(&granted);
    assert_eq!(
        by_event(&clean, &checkbox).expect("a checked box")["consent"]["granted"],
        true
    );
    for (id, codes) in [
        (&no, vec!["consent.missing"]),
        (&silent, vec!["consent.missing"]),
        (&odd, vec!["consent.missing", "consent.unreadable"]),
        (
            &unreachable,
            vec!["consent.missing", "contact.unreachable", "phone.invalid"],
        ),
    ] {
        let r = by_event(&rejected, id).unwrap_or_else(|| panic!("{id} is rejected: {rejected:?}"));
        let got: Vec<&str> = r["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["code"].as_str().unwrap())
            .collect();
        assert_eq!(got, codes, "{r}");
        assert_eq!(r["consent"]["granted"], false);
        assert!(r["lead_id"].is_null());
        crate::config::assert_valid_lead_record(&r);
    }
    let optional = by_event(&clean, &optional).expect("not required: clean");
    assert_eq!(optional["consent"]["granted"], false);
    let typeform: Vec<&Value> = clean
        .iter()
        .filter(|r| r["source"]["connector"] == "typeform")
        .collect();
    assert_eq!(typeform.len(), 2, "{clean:?}");
    let mut said: Vec<bool> = typeform
        .iter()
        .map(|r| r["consent"]["granted"].as_bool().unwrap())
        .collect();
    said.sort();
    assert_eq!(said, [false, true]);
    assert_eq!(typeform[0]["consent"]["purposes"], json!(["newsletter"]));

    // Counted under the reason that decided them.
    let stats = crate::support::get_json(&http, &gw.url("/v1/stats?group_by=connector")).await;
    let webform = stats["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["connector"] == "webform")
        .unwrap();
    assert_eq!(
        webform["counts"]["rejected_by"]["consent.missing"], 4,
        "{webform}"
    );
}

/// With `[privacy] encryption_key`, the tokens a refresh stores are encrypted on disk: no token
/// shows in the data directory, a restart with the key reads them, one with a rotated key (the
/// old one in `previous_keys`) too, and one without any key says why it cannot.
#[tokio::test(flavor = "multi_thread")]
async fn stored_tokens_are_encrypted_with_the_configured_key() {
    use axum::response::IntoResponse;
    use std::sync::{Arc, Mutex};
    type Issued = Arc<Mutex<u32>>;
    async fn refresh(
        axum::extract::State(n): axum::extract::State<Issued>,
        axum::Json(_): axum::Json<Value>,
    ) -> axum::response::Response {
        let mut n = n.lock().unwrap();
        *n += 1;
        axum::Json(json!({"code": 0, "message": "OK", "data": {
            "access_token": format!("secret-access-{n}"), "refresh_token": format!("secret-refresh-{n}"),
            "expires_in": 3600, "refresh_token_expires_in": 2_592_000}}))
        .into_response()
    }
    async fn clues() -> axum::response::Response {
        axum::Json(json!({"code": 0, "message": "OK", "data": {"list": [],
            "page_info": {"page": 1, "page_size": 2, "total_number": 0, "total_page": 0}}}))
        .into_response()
    }
    let issued: Issued = Arc::new(Mutex::new(0));
    let app = axum::Router::new()
        .route("/oauth2/refresh_token/", axum::routing::post(refresh))
        .route("/open_api/2/tools/clue/get/", axum::routing::get(clues))
        .with_state(issued.clone());
    let port = crate::support::serve_local(app).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let connector = format!(
        "[[connectors]]\nname = \"ocean\"\ntype = \"oceanengine\"\naccess_token = \"secret-access-0\"\n\
         refresh_token = \"secret-refresh-0\"\napp_id = \"1760\"\napp_secret = \"app-secret\"\n\
         oauth_url = \"http://127.0.0.1:{port}/oauth2/refresh_token/\"\n\
         advertiser_ids = [1760000000000000]\n\
         api_url = \"http://127.0.0.1:{port}/open_api/2/tools/clue/get/\"\npoll_interval = \"1h\"\n"
    );
    let (old, new) = (hex_key(1), hex_key(2));
    let with_key = format!(
        "[privacy]\nencryption_key = \"${{KEY}}\"\nprevious_keys = [\"${{OLD}}\"]\n\n{connector}"
    );
    let gw = Gateway::start_with_env(Some(&with_key), &data, &[("KEY", &old), ("OLD", &old)]);
    // A first refresh (the configured tokens' expiry is unknown, so they are refreshed at once).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while *issued.lock().unwrap() < 1 {
        assert!(std::time::Instant::now() < deadline, "no refresh");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let file = data.join("tokens/ocean.json");
    let stored = std::fs::read(&file).unwrap();
    assert!(stored.starts_with(b"LGSEAL1"), "not sealed");
    for secret in ["secret-access-1", "secret-refresh-1", "secret-refresh-0"] {
        assert!(
            !contains(&stored, secret.as_bytes()),
            "{secret} in clear in the token file"
        );
    }
    drop(gw);

    // Rotated: the new key current, the old one listed; the tokens are still read (no refresh is
    // needed: the stored access token is good for an hour).
    let before = *issued.lock().unwrap();
    let gw = Gateway::start_with_env(Some(&with_key), &data, &[("KEY", &new), ("OLD", &old)]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status: Value = reqwest::get(gw.url("/v1/connectors/ocean"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(status["state"], "stopped", "{status}");
    assert_eq!(
        *issued.lock().unwrap(),
        before,
        "the stored tokens were read: {status}"
    );
    drop(gw);

    // Without a key the gateway cannot read them, and says so.
    let path = data.with_extension("toml");
    std::fs::write(&path, &connector).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leadgate"))
        .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no [privacy] encryption_key is configured"),
        "{err}"
    );

    // A key that is not one is refused at its field.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[privacy]\nencryption_key = \"c2hvcnQ=\"\n").unwrap();
    let (code, _, err) = crate::config::validate(&bad, &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("field `privacy.encryption_key`: 5 bytes"),
        "{err}"
    );
}

fn hex_key(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The records `leadgate output` prints for `topic` of `data`'s embedded output.
fn output(data: &std::path::Path, topic: &str, env: &[(&str, &str)]) -> Vec<Value> {
    if !data.join("output").join(format!("{topic}.jsonl")).exists() {
        return Vec::new();
    }
    let out = std::process::Command::new(crate::support::BIN)
        .args(["output", topic, "--config"])
        .arg(data.with_extension("toml"))
        .arg("--data-dir")
        .arg(data)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_key_no_posted_personal_data_is_in_clear_in_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = hex_key(7);
    let env = [("LEADGATE_ENCRYPTION_KEY", key.as_str())];
    let config = "[privacy]\nencryption_key = \"${LEADGATE_ENCRYPTION_KEY}\"\n\n\
                  [[connectors]]\nname = \"webform\"\ntype = \"webhook\"\n";
    let mut gw = Gateway::start_with_env(Some(config), &data, &env);
    let http = reqwest::Client::new();
    let url = gw.url("/v1/webhooks/webform");
    for lead in [
        json!({"name": "欧阳娜娜", "phone": "139 0571 2468", "email": "ouyang.nana@corp.cn", "company": "星河科技有限公司"}),
        json!({"name": "欧阳娜娜", "phone": "+86 13905712468"}),
        json!({"name": "司马光", "email": "sima.guang@corp.cn"}),
        json!({"name": "诸葛亮", "phone": "12"}),
    ] {
        accepted(post_json(&http, &url, &lead).await).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while output(&data, "leads.clean", &env).len() < 3
        || output(&data, "leads.rejected", &env).is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "not delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let clean = output(&data, "leads.clean", &env);
    assert_eq!(clean[0]["contact"]["email"], "ouyang.nana@corp.cn");
    assert_eq!(clean[1]["lead_id"], clean[0]["lead_id"]);
    // An import through the API: its rejected-rows report is sealed on disk, plain when read.
    let resp = http
        .post(gw.url("/v1/imports?source=expo&file_name=expo.csv"))
        .body("name,phone\n诸葛亮,12\n司马光,13800000002\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while crate::support::get_json(&http, &gw.url(&format!("/v1/imports/{id}"))).await["state"]
        != "done"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the import did not end"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report =
        crate::support::get_text(&http, &gw.url(&format!("/v1/imports/{id}/rejected.csv"))).await;
    assert!(
        report.starts_with('\u{feff}') && report.contains("诸葛亮"),
        "{report}"
    );
    // A clean stop writes the identity index snapshot, sealed too.
    assert!(gw.terminate().success());
    assert!(data.join("identity.snapshot").is_file());
    let posted = [
        "13905712468",
        "1390571",
        "0571 2468",
        "ouyang.nana",
        "sima.guang",
        "欧阳娜娜",
        "司马光",
        "诸葛亮",
        "星河科技",
    ];
    let mut hits = Vec::new();
    let mut todo = vec![data.clone()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            hits.extend(
                posted
                    .iter()
                    .filter(|p| contains(&bytes, p.as_bytes()))
                    .map(|p| format!("{p} in {}", path.display())),
            );
        }
    }
    assert!(hits.is_empty(), "in clear: {hits:?}");
    // The sealed log and snapshot read back: the person is known after a restart.
    let gw = Gateway::start_with_env(Some(config), &data, &env);
    accepted(
        post_json(
            &http,
            &gw.url("/v1/webhooks/webform"),
            &json!({"phone": "13905712468"}),
        )
        .await,
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let again = loop {
        let clean = output(&data, "leads.clean", &env);
        if clean.len() == 5 {
            break clean;
        }
        assert!(std::time::Instant::now() < deadline, "not delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(again[4]["lead_id"], again[0]["lead_id"]);
    assert_eq!(again[4]["identity"]["status"], "matched");
    // Without the key, the output says why it cannot be read.
    let out = std::process::Command::new(crate::support::BIN)
        .args(["output", "leads.clean", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no [privacy] encryption_key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
