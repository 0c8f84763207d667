//! Meta Lead Ads against a local Graph API that replays the documented shapes: the webhook
//! handshake and signature, lead fetches, the forms' lead pages with `paging.next`, throttling
//! codes, a lead that is gone, and an expired token. Read back from the real broker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::support::{Broker, Gateway, consume_events, get_json, kafka_config};

const SECRET: &str = "app-secret-0123";

/// The form's leads, newest first as Meta lists them.
const FORM: [&str; 6] = ["m1", "m2", "m3", "m4", "m5", "m6"];

fn lead(id: &str, n: usize) -> Value {
    json!({
        "id": id,
        "created_time": "2026-11-24T07:40:12+0000",
        "form_id": "5511",
        "ad_id": "23851234567890123",
        "platform": "fb",
        "field_data": [
            {"name": "full_name", "values": [format!("客户{id}")]},
            {"name": "phone_number", "values": [format!("+86 139 0000 20{n:02}")]},
            {"name": "budget", "values": ["10-50万"]}
        ]
    })
}

fn graph_error(status: StatusCode, code: i64, subcode: Option<i64>, message: &str) -> Response {
    let mut error = json!({"message": message, "type": "OAuthException", "code": code,
        "fbtrace_id": "AbCdEf"});
    if let Some(s) = subcode {
        error["error_subcode"] = s.into();
    }
    (status, axum::Json(json!({ "error": error }))).into_response()
}

type Log = Arc<Mutex<Vec<String>>>;

/// The Graph API of one page: `GET /v21.0/{lead}` and `GET /v21.0/5511/leads`. Only the token
/// `good-token` is valid. The first fetch of `w1` and the first request for the second page are
/// throttled (codes 4 and 17); `gone-1` does not exist; the fetch of `w2` and the page after
/// `m3` are held until `release`. Each request is logged as `"{token} {path}?{query}"`.
struct GraphReplay {
    port: u16,
    log: Log,
    release: tokio::sync::watch::Sender<bool>,
}

impl GraphReplay {
    async fn start() -> Self {
        type Shared = (Log, tokio::sync::watch::Receiver<bool>);
        async fn graph(
            State((log, release)): State<Shared>,
            Path(path): Path<String>,
            headers: HeaderMap,
            Query(q): Query<HashMap<String, String>>,
            uri: axum::http::Uri,
        ) -> Response {
            let token = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("")
                .to_owned();
            let entry = format!("{token} {path}?{}", uri.query().unwrap_or(""));
            // How often this token asked for this path and page.
            let seen = {
                let mut log = log.lock().unwrap();
                let same = |e: &String| {
                    e.split_once('?').map(|(p, _)| p) == Some(&format!("{token} {path}"))
                        && after_of(e).as_deref() == q.get("after").map(String::as_str)
                };
                log.push(entry);
                log.iter().filter(|e| same(e)).count()
            };
            if path == "debug_token" {
                assert_eq!(token, format!("1234|{SECRET}"), "the app token");
                let now = jiff::Timestamp::now().as_second();
                let data = if q.get("input_token").map(String::as_str) == Some("good-token") {
                    json!({"app_id": "1234", "type": "PAGE", "is_valid": true,
                        "expires_at": now + 3 * 86_400, "data_access_expires_at": now + 80 * 86_400,
                        "scopes": ["leads_retrieval", "pages_manage_metadata"]})
                } else {
                    json!({"app_id": "1234", "type": "PAGE", "is_valid": false, "expires_at": now - 60,
                        "error": {"code": 190, "subcode": 463,
                            "message": "Error validating access token: Session has expired"}})
                };
                return axum::Json(json!({ "data": data })).into_response();
            }
            if token != "good-token" {
                return graph_error(
                    StatusCode::BAD_REQUEST,
                    190,
                    Some(463),
                    "Error validating access token: Session has expired on Monday, 23-Nov-26",
                );
            }
            let held = || async {
                let mut r = release.clone();
                let _ = r.wait_for(|go| *go).await;
            };
            if path == "5511/leads" {
                let offset: usize = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
                let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(25);
                if offset == 2 && seen == 1 {
                    return graph_error(
                        StatusCode::BAD_REQUEST,
                        17,
                        None,
                        "User request limit reached",
                    );
                }
                if offset == 3 {
                    held().await;
                }
                let end = (offset + limit).min(FORM.len());
                let data: Vec<Value> = (offset..end).map(|i| lead(FORM[i], i + 1)).collect();
                let mut paging =
                    json!({"cursors": {"before": offset.to_string(), "after": end.to_string()}});
                if end < FORM.len() {
                    // Meta puts the token in its next-page URLs.
                    let next = format!(
                        "http://{}/v21.0/5511/leads?access_token={token}&limit={limit}&after={end}&fields=id%2Cfield_data",
                        headers
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("")
                    );
                    paging["next"] = next.into();
                }
                return axum::Json(json!({"data": data, "paging": paging})).into_response();
            }
            match path.as_str() {
                "gone-1" => graph_error(
                    StatusCode::BAD_REQUEST,
                    100,
                    Some(33),
                    "Unsupported get request. Object with ID 'gone-1' does not exist",
                ),
                "w1" if seen == 1 => graph_error(
                    StatusCode::BAD_REQUEST,
                    4,
                    None,
                    "Application request limit reached",
                ),
                "w2" => {
                    held().await;
                    axum::Json(lead("w2", 12)).into_response()
                }
                "w1" => axum::Json(lead("w1", 11)).into_response(),
                id if FORM.contains(&id) => {
                    let n = FORM.iter().position(|f| *f == id).unwrap() + 1;
                    axum::Json(lead(id, n)).into_response()
                }
                _ => graph_error(StatusCode::BAD_REQUEST, 100, None, "Unknown path"),
            }
        }
        let log: Log = Arc::new(Mutex::new(Vec::new()));
        let (release, gate) = tokio::sync::watch::channel(false);
        let app = axum::Router::new()
            .route("/v21.0/{*path}", axum::routing::get(graph))
            .with_state((log.clone(), gate));
        let port = crate::support::serve_local(app).await;
        Self { port, log, release }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

/// The `after` parameter of a logged request.
fn after_of(entry: &str) -> Option<String> {
    let query = entry.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("after="))
        .map(str::to_owned)
}

fn connector(name: &str, port: u16, token: &str) -> String {
    format!(
        "[[connectors]]\nname = \"{name}\"\ntype = \"meta\"\napp_secret = \"{SECRET}\"\n\
         verify_token = \"verify-me\"\naccess_token = \"{token}\"\napp_id = \"1234\"\n\
         graph_url = \"http://127.0.0.1:{port}/v21.0\"\nforms = [\"5511\"]\npage_size = 2\n\
         poll_interval = \"1h\"\ninitial = \"2d\"\n[connectors.mapping]\nnotes = [\"budget\"]\n"
    )
}

fn notification(ids: &[&str]) -> Vec<u8> {
    let changes: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({"field": "leadgen", "value": {"leadgen_id": id, "form_id": "5511",
            "page_id": "5165", "ad_id": "0", "adgroup_id": "0", "created_time": 1795478400}})
        })
        .collect();
    serde_json::to_vec(
        &json!({"object": "page", "entry": [{"id": "5165", "time": 1795478401,
        "changes": changes}]}),
    )
    .unwrap()
}

async fn wait_for(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// Multi-threaded: the replay API keeps serving while the test blocks in the Kafka consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_leads_arrive_once_by_webhook_and_poll_through_throttling_a_restart_and_an_expired_token()
 {
    let graph = GraphReplay::start().await;
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}\n{}\n{}",
        kafka_config(&broker.brokers(), ""),
        connector("meta", graph.port, "good-token"),
        connector("meta-expired", graph.port, "old-token"),
    );
    let mut gw = Gateway::start(Some(&config), &dir.path().join("gw"));
    let http = reqwest::Client::new();
    let hook = gw.url("/v1/webhooks/meta");

    // The subscription handshake.
    let r = http
        .get(&hook)
        .query(&[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", "verify-me"),
            ("hub.challenge", "1158201444"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "1158201444");
    let r = http
        .get(&hook)
        .query(&[
            ("hub.mode", "subscribe"),
            ("hub.verify_token", "guess"),
            ("hub.challenge", "1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["field"], "hub.verify_token", "{err}");

    // Signed notifications only.
    let body = notification(&["gone-1", "m1", "w1", "w2"]);
    let post = |body: Vec<u8>, signature: Option<String>| {
        let mut req = http
            .post(&hook)
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = signature {
            req = req.header("X-Hub-Signature-256", s);
        }
        req.send()
    };
    let forged = format!(
        "sha256={}",
        leadgate::sources::webhook::sign("not-the-secret", None, &body)
    );
    let r = post(body.clone(), Some(forged)).await.unwrap();
    assert_eq!(r.status(), 401);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["field"], "X-Hub-Signature-256", "{err}");
    assert_eq!(post(body.clone(), None).await.unwrap().status(), 401);
    let signed = format!(
        "sha256={}",
        leadgate::sources::webhook::sign(SECRET, None, &body)
    );
    let r = post(body.clone(), Some(signed.clone())).await.unwrap();
    assert_eq!(r.status(), 200);
    let ok: Value = r.json().await.unwrap();
    assert_eq!(ok["leads"], 4);
    // The expired connector takes notifications too; they wait in its inbox.
    let r = http
        .post(gw.url("/v1/webhooks/meta-expired"))
        .header("X-Hub-Signature-256", signed)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The fetch of w2 and the poll's page after m3 are held: kill the gateway there.
    let status = |name: &'static str| {
        let url = gw.url(&format!("/v1/connectors/{name}"));
        let http = http.clone();
        async move { get_json(&http, &url).await }
    };
    wait_for("the held requests", async || {
        let log = graph.log();
        log.iter().any(|e| e.starts_with("good-token w2?"))
            && log.iter().any(|e| {
                e.starts_with("good-token 5511/leads?") && after_of(e).as_deref() == Some("3")
            })
    })
    .await;
    let st = status("meta").await;
    assert_eq!(
        st["inbox"], 4,
        "a batch leaves the inbox when it is journaled: {st}"
    );
    assert!(
        st["last_error"].as_str().unwrap_or("").contains("gone-1"),
        "the lost lead is reported: {st}"
    );
    let expired = status("meta-expired").await;
    wait_for("the expired token to stop its connector", async || {
        status("meta-expired").await["state"] == "stopped"
    })
    .await;
    let expired_now = status("meta-expired").await;
    assert!(
        expired_now["last_error"]
            .as_str()
            .unwrap()
            .contains("code 190/463"),
        "{expired} {expired_now}"
    );
    assert_eq!(expired_now["inbox"], 4, "{expired_now}");
    // The token's health: Meta's answer when refused, the expiry from debug_token.
    assert!(
        expired_now["token"]["refused"]
            .as_str()
            .is_some_and(|r| r.contains("190/463") || r.contains("debug_token")),
        "{expired_now}"
    );
    wait_for("the token's expiry", async || {
        status("meta").await["token"]["expiring_soon"] == true
    })
    .await;
    let st = status("meta").await;
    assert!(st["token"]["expires_at"].is_string(), "{st}");
    assert_eq!(st["token"]["refused"], Value::Null, "{st}");

    gw.kill();
    let before = graph.log().len();
    graph.release.send_replace(true);
    let gw = Gateway::start(Some(&config), &dir.path().join("gw"));
    // Each lead is one event (a record delivered before the kill may come again, same event_id).
    let clean = consume_events(&broker.brokers(), "leads.clean", 8, Duration::from_secs(60));
    let mut ids: Vec<&str> = clean
        .iter()
        .map(|c| c.value["source"]["external_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        ["m1", "m2", "m3", "m4", "m5", "m6", "w1", "w2"],
        "each lead once: notified and polled, m1 is one lead"
    );
    let w1 = &clean
        .iter()
        .find(|c| c.value["source"]["external_id"] == "w1")
        .unwrap()
        .value;
    assert_eq!(w1["source"]["connector"], "meta");
    assert_eq!(w1["source"]["kind"], "platform");
    assert_eq!(w1["contact"]["name"], "客户w1");
    assert_eq!(w1["contact"]["phone"], "+8613900002011");
    assert_eq!(
        w1["contact"]["notes"], "10-50万",
        "the connector's own mapping"
    );
    assert_eq!(
        w1["raw"]["field_data"][0]["name"], "full_name",
        "the raw lead is kept"
    );
    crate::config::assert_valid_lead_record(w1);

    let log = graph.log();
    let after: Vec<&String> = log[before..]
        .iter()
        .filter(|e| e.starts_with("good-token "))
        .collect();
    let first_page = after.iter().find(|e| e.contains("5511/leads")).unwrap();
    assert_eq!(
        after_of(first_page).as_deref(),
        Some("3"),
        "resumed mid-pull: {after:?}"
    );
    assert!(
        after.iter().any(|e| e.starts_with("good-token w2?")),
        "the inbox outlived the kill: {after:?}"
    );
    let form: Vec<&String> = log
        .iter()
        .filter(|e| e.starts_with("good-token 5511/leads?"))
        .collect();
    assert!(
        form[0].contains("filtering=") && form[0].contains("GREATER_THAN"),
        "{form:?}"
    );
    assert!(
        form[1..].iter().all(|e| !e.contains("access_token")),
        "the token never travels in a URL: {form:?}"
    );
    let throttled: Vec<&&String> = form
        .iter()
        .filter(|e| after_of(e).as_deref() == Some("2"))
        .collect();
    assert_eq!(throttled.len(), 2, "{form:?}");
    assert!(
        throttled[0].contains("limit=2") && throttled[1].contains("limit=1"),
        "the page shrank: {throttled:?}"
    );
    assert!(
        log.iter()
            .filter(|e| e.starts_with("good-token w1?"))
            .count()
            >= 2,
        "w1 was throttled, then fetched"
    );

    let st = get_json(&http, &gw.url("/v1/connectors/meta")).await;
    assert_eq!(st["type"], "meta");
    assert_eq!(st["inbox"], 0, "{st}");
    assert!(
        !st["checkpoint"].to_string().contains("good-token"),
        "no token in the checkpoint: {st}"
    );
}
