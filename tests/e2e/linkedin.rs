//! LinkedIn Lead Sync against a local Marketing API that replays the documented shapes: the
//! `challengeCode` validation, `X-LI-Signature`, notifications (an array, a redelivery, a
//! deletion), form responses with their form's questions, a 429 with `Retry-After`, a response
//! that is gone, a test lead and a revoked token. Read back from the real broker.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::support::{Broker, Gateway, consume_until, get_json, kafka_config};

const SECRET: &str = "li-client-secret";

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/connectors/fixtures/linkedin/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The form response `id`, built on the recorded one.
fn response(id: &str, n: u32, test: bool) -> Value {
    let mut r = fixture("lead-response.json");
    r["id"] = id.into();
    r["testLead"] = test.into();
    let answers = r["formResponse"]["answers"].as_array_mut().unwrap();
    answers[0]["answerDetails"]["textQuestionAnswer"]["answer"] = format!("Lead{n}").into();
    answers[2]["answerDetails"]["textQuestionAnswer"]["answer"] =
        format!("lead{n}@example.com").into();
    answers[3]["answerDetails"]["textQuestionAnswer"]["answer"] =
        format!("+86 139 0000 30{n:02}").into();
    r
}

type Log = Arc<Mutex<Vec<String>>>;

/// `GET /rest/leadFormResponses/{id}` and `GET /rest/leadForms/1234`, for the token
/// `good-token` and with a `LinkedIn-Version`. The first read of `r2` gets a 429 with
/// `Retry-After: 1`; `r3` is held until `release`; `gone` is a 404. Logged `"{token} {path}"`.
struct MarketingApi {
    port: u16,
    log: Log,
    release: tokio::sync::watch::Sender<bool>,
}

impl MarketingApi {
    async fn start() -> Self {
        type Shared = (Log, tokio::sync::watch::Receiver<bool>);
        async fn rest(
            State((log, release)): State<Shared>,
            Path(path): Path<String>,
            headers: HeaderMap,
            axum::extract::Query(q): axum::extract::Query<
                std::collections::HashMap<String, String>,
            >,
        ) -> Response {
            let token = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("")
                .to_owned();
            let entry = match q.get("start") {
                Some(start) => format!("{token} {path} start={start}"),
                None => format!("{token} {path}"),
            };
            let seen = {
                let mut log = log.lock().unwrap();
                log.push(entry.clone());
                log.iter().filter(|e| **e == entry).count()
            };
            if token != "good-token" {
                let body = json!({"serviceErrorCode": 65601, "status": 401,
                    "message": "The token used in the request has been revoked by the user"});
                return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
            }
            if headers.get("linkedin-version").is_none() {
                let body = json!({"status": 426, "message": "A version must be present"});
                return (StatusCode::UPGRADE_REQUIRED, axum::Json(body)).into_response();
            }
            if path == "leadFormResponses" {
                // The reconciliation poll: r1, r2 (also notified), r5, r6, r7; pages of `count`.
                let owner = "(sponsoredAccount:urn:li:sponsoredAccount:507404993)";
                if q.get("q").map(String::as_str) != Some("owner")
                    || q.get("owner").map(String::as_str) != Some(owner)
                    || !q
                        .get("submittedAtTimeRange")
                        .is_some_and(|r| r.starts_with("(start:"))
                {
                    let body = json!({"status": 400, "message": format!("bad query {q:?}")});
                    return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
                }
                let start: usize = q["start"].parse().unwrap();
                let count: usize = q["count"].parse().unwrap();
                if start == 2 && seen == 1 {
                    return (StatusCode::TOO_MANY_REQUESTS, [("Retry-After", "1")], "")
                        .into_response();
                }
                if start == 4 {
                    let mut r = release.clone();
                    let _ = r.wait_for(|go| *go).await;
                }
                let all = [("r1", 1), ("r2", 2), ("r5", 5), ("r6", 6), ("r7", 7)];
                let elements: Vec<Value> = all
                    .iter()
                    .skip(start)
                    .take(count)
                    .map(|(id, n)| response(id, *n, false))
                    .collect();
                return axum::Json(json!({"elements": elements,
                    "paging": {"start": start, "count": count, "total": all.len(), "links": []}}))
                .into_response();
            }
            let Some(id) = path.strip_prefix("leadFormResponses/") else {
                return if path == "leadForms/1234" {
                    axum::Json(fixture("lead-form.json")).into_response()
                } else {
                    StatusCode::NOT_FOUND.into_response()
                };
            };
            match id {
                "r2" if seen == 1 => (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("Retry-After", "1")],
                    axum::Json(json!({"status": 429, "message": "Resource level throttle limit"})),
                )
                    .into_response(),
                "r3" => {
                    let mut r = release.clone();
                    let _ = r.wait_for(|go| *go).await;
                    axum::Json(response("r3", 3, false)).into_response()
                }
                "r1" | "r2" | "r4" => {
                    let n: u32 = id[1..].parse().unwrap();
                    axum::Json(response(id, n, id == "r4")).into_response()
                }
                // A response of a form the token cannot read (leadForms/9999 is a 404).
                "r8" => {
                    let mut r = response("r8", 8, false);
                    r["versionedLeadGenFormUrn"] =
                        "urn:li:versionedLeadGenForm:(urn:li:leadGenForm:9999,1)".into();
                    axum::Json(r).into_response()
                }
                _ => (
                    StatusCode::NOT_FOUND,
                    axum::Json(json!({"status": 404, "message": "Not found"})),
                )
                    .into_response(),
            }
        }
        let log: Log = Arc::new(Mutex::new(Vec::new()));
        let (release, gate) = tokio::sync::watch::channel(false);
        let app = axum::Router::new()
            .route("/rest/{*path}", axum::routing::get(rest))
            .with_state((log.clone(), gate));
        let port = crate::support::serve_local(app).await;
        Self { port, log, release }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn connector(name: &str, port: u16, token: &str) -> String {
    format!(
        "[[connectors]]\nname = \"{name}\"\ntype = \"linkedin\"\nclient_secret = \"{SECRET}\"\n\
         access_token = \"{token}\"\napi_url = \"http://127.0.0.1:{port}/rest\"\n\
         owner = \"urn:li:sponsoredAccount:507404993\"\npage_size = 2\npoll_interval = \"1h\"\n\
         [connectors.mapping]\nnotes = [\"预算\"]\n"
    )
}

fn notification(id: &str, action: &str) -> Value {
    let mut n = fixture("notification.json");
    n["leadGenFormResponse"] = format!("urn:li:leadGenFormResponse:{id}").into();
    n["leadAction"] = action.into();
    n
}

// Multi-threaded: the replay API keeps serving while the test blocks in the Kafka consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linkedin_leads_are_validated_fetched_with_their_questions_and_published_once() {
    let api = MarketingApi::start().await;
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}\n{}\n{}",
        kafka_config(&broker.brokers(), ""),
        connector("linkedin", api.port, "good-token"),
        connector("li-revoked", api.port, "old-token"),
    );
    let mut gw = Gateway::start(Some(&config), &dir.path().join("gw"));
    let http = reqwest::Client::new();
    let hook = gw.url("/v1/webhooks/linkedin");

    // Endpoint validation.
    let code = "890e4665-4dfe-4ab1-b689-ed553bceeed0";
    let r = http
        .get(&hook)
        .query(&[("challengeCode", code)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let reply: Value = r.json().await.unwrap();
    assert_eq!(reply["challengeCode"], code);
    {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(code.as_bytes());
        assert_eq!(
            reply["challengeResponse"],
            hex::encode(mac.finalize().into_bytes())
        );
    }

    let post = |url: String, body: &Value, secret: &str| {
        let bytes = serde_json::to_vec(body).unwrap();
        http.post(url)
            .header("content-type", "application/json")
            .header(
                "X-LI-Signature",
                leadgate::sources::linkedin::sign(secret, &bytes),
            )
            .body(bytes)
            .send()
    };
    let batch = json!([
        notification("gone", "CREATED"),
        notification("r1", "CREATED"),
        notification("r2", "CREATED"),
        notification("r3", "CREATED"),
        notification("r4", "CREATED"),
        notification("r9", "DELETED"),
    ]);
    let r = post(hook.clone(), &batch, "guessed-secret").await.unwrap();
    assert_eq!(r.status(), 401);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["field"], "X-LI-Signature", "{err}");
    let r = post(hook.clone(), &batch, SECRET).await.unwrap();
    assert_eq!(r.status(), 200);
    let ok: Value = r.json().await.unwrap();
    assert_eq!(ok["leads"], 5, "the deletion is not a lead: {ok}");
    // Redelivered: the same response is one lead.
    let again = post(hook.clone(), &notification("r1", "CREATED"), SECRET)
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let r = post(
        gw.url("/v1/webhooks/li-revoked"),
        &notification("r1", "CREATED"),
        SECRET,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);

    let status = |name: &'static str| {
        let url = gw.url(&format!("/v1/connectors/{name}"));
        let http = http.clone();
        async move { get_json(&http, &url).await }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let revoked = status("li-revoked").await;
        let log = api.log();
        if log.iter().any(|e| e == "good-token leadFormResponses/r3")
            && log
                .iter()
                .any(|e| e == "good-token leadFormResponses start=4")
            && revoked["state"] == "stopped"
        {
            assert!(
                revoked["last_error"].as_str().unwrap().contains("65601"),
                "{revoked}"
            );
            assert_eq!(revoked["inbox"], 1, "{revoked}");
            break;
        }
        assert!(Instant::now() < deadline, "{revoked} {:?}", api.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let st = status("linkedin").await;
    assert_eq!(st["type"], "linkedin");
    assert_eq!(st["inbox"], 5, "{st}");

    // Killed while r3 is fetched; the inbox outlives it.
    gw.kill();
    let before = api.log().len();
    api.release.send_replace(true);
    let gw = Gateway::start(Some(&config), &dir.path().join("gw"));
    // Each lead is one event (a record delivered before the kill may come again, same event_id).
    let clean = crate::support::consume_events(
        &broker.brokers(),
        "leads.clean",
        6,
        Duration::from_secs(60),
    );
    let mut ids: Vec<&str> = clean
        .iter()
        .map(|c| c.value["source"]["external_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        ["r1", "r2", "r3", "r5", "r6", "r7"],
        "notified, polled, or both: each once"
    );
    let r1 = &clean
        .iter()
        .find(|c| c.value["source"]["external_id"] == "r1")
        .unwrap()
        .value;
    assert_eq!(r1["source"]["connector"], "linkedin");
    assert_eq!(
        r1["contact"]["name"], "Lead1 Li",
        "FIRST_NAME and LAST_NAME"
    );
    assert_eq!(r1["contact"]["email"], "lead1@example.com");
    assert_eq!(r1["contact"]["phone"], "+8613900003001");
    assert_eq!(r1["contact"]["company"], "上海某某贸易有限公司");
    assert_eq!(
        r1["contact"]["notes"], "100万以上",
        "a custom question, by name"
    );
    assert_eq!(
        r1["raw"]["questions"]["3"], "EMAIL",
        "the form's questions are kept"
    );
    crate::config::assert_valid_lead_record(r1);
    let tests = consume_until(
        &broker.brokers(),
        "leads.test",
        Duration::from_secs(30),
        |got| !got.is_empty(),
    );
    assert_eq!(tests.len(), 1);
    assert_eq!(tests[0].value["source"]["external_id"], "r4", "testLead");

    let after = &api.log()[before..];
    assert!(
        after.contains(&"good-token leadFormResponses/r3".to_owned()),
        "{after:?}"
    );
    let polled: Vec<&String> = after
        .iter()
        .filter(|e| e.starts_with("good-token leadFormResponses start="))
        .collect();
    assert_eq!(
        polled.first().map(|e| e.as_str()),
        Some("good-token leadFormResponses start=4"),
        "the poll resumed mid-pull: {after:?}"
    );
    let before_kill = &api.log()[..before];
    assert_eq!(
        before_kill
            .iter()
            .filter(|e| *e == "good-token leadFormResponses start=2")
            .count(),
        2,
        "the 429 was retried"
    );
    let all = api.log();
    assert_eq!(
        all[..before]
            .iter()
            .filter(|e| *e == "good-token leadFormResponses/r2")
            .count(),
        2,
        "the 429 was retried: {all:?}"
    );
    assert_eq!(
        after
            .iter()
            .filter(|e| *e == "good-token leadForms/1234")
            .count(),
        1,
        "the form is read once per run: {after:?}"
    );

    // A notification of a lead already published publishes nothing more.
    let r = post(
        gw.url("/v1/webhooks/linkedin"),
        &notification("r2", "CREATED"),
        SECRET,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let http2 = reqwest::Client::new();
    let url = gw.url("/v1/connectors/linkedin");
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_json(&http2, &url).await["inbox"] != 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let clean = crate::support::once_per_event(consume_until(
        &broker.brokers(),
        "leads.clean",
        Duration::from_secs(3),
        |_| false,
    ));
    assert_eq!(clean.len(), 6, "each lead once");
}

/// A response whose form cannot be read (a 404) is still published, its answers under their
/// question ids and the record saying why; the connector's health names the form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_that_cannot_be_read_shows_in_health_and_on_the_record() {
    let api = MarketingApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = connector("linkedin", api.port, "good-token");
    let gw = Gateway::start(Some(&config), &dir.path().join("gw"));
    let http = reqwest::Client::new();
    let bytes = serde_json::to_vec(&notification("r8", "CREATED")).unwrap();
    let r = http
        .post(gw.url("/v1/webhooks/linkedin"))
        .header("content-type", "application/json")
        .header(
            "X-LI-Signature",
            leadgate::sources::linkedin::sign(SECRET, &bytes),
        )
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    let record = loop {
        let found = gw
            .spooled("leads.clean")
            .into_iter()
            .find(|r| r["source"]["external_id"] == "r8");
        if let Some(r) = found {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "{:?} {:?} {:?}",
            api.log(),
            gw.spooled("leads.clean"),
            gw.spooled("leads.rejected")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let issue = record["issues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["code"] == "source.form_unreadable")
        .unwrap_or_else(|| panic!("{record}"));
    assert!(
        issue["message"].as_str().unwrap().contains("9999"),
        "{issue}"
    );
    assert_eq!(
        record["contact"]["email"], "lead8@example.com",
        "typed answers still map: {record}"
    );
    let st = get_json(&http, &gw.url("/v1/connectors/linkedin")).await;
    let err = st["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("cannot read lead form 9999"), "{st}");
}
