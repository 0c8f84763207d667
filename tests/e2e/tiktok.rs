//! TikTok against a local Business API that replays the documented flow: signed callbacks, and
//! lead downloads by task (a throttled task creation, a task still running, a zipped CSV of three
//! chunks, a plain CSV, an expired token), with a restart while a download is held. Read back
//! from the real broker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::support::{Broker, Gateway, consume_events, get_json, kafka_config};

const SECRET: &str = "tiktok-app-secret";
const P1_ROWS: usize = 1100;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/connectors/fixtures/tiktok/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(path).unwrap()
}

/// Form p1's leads: a zipped CSV of 1,100 rows.
fn p1_zip() -> Vec<u8> {
    let mut csv = String::from("lead_id,create_time,name,phone_number\n");
    for i in 0..P1_ROWS {
        csv.push_str(&format!(
            "p1-{i},2026-11-24 16:00:00,客户{i},1370000{i:04}\n"
        ));
    }
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut w = zip::ZipWriter::new(&mut buf);
    w.start_file("leads_p1.csv", zip::write::SimpleFileOptions::default())
        .unwrap();
    std::io::Write::write_all(&mut w, csv.as_bytes()).unwrap();
    w.finish().unwrap();
    buf.into_inner()
}

type Log = Arc<Mutex<Vec<String>>>;

#[derive(Clone)]
struct Shared {
    log: Log,
    tasks: Arc<Mutex<HashMap<String, String>>>,
    release: tokio::sync::watch::Receiver<bool>,
    p1: Arc<Vec<u8>>,
}

/// `POST /open_api/v1.3/page/lead/task/` and `GET .../task/download/`. The token is
/// `good-token`; the first task creation is throttled (code 40100); each task's first download
/// answers `RUNNING`; p2's download is held until `release`. Logged as
/// `"{token} create {page}"` and `"{token} download {task} ({page})"`.
struct BusinessApi {
    port: u16,
    log: Log,
    release: tokio::sync::watch::Sender<bool>,
}

impl BusinessApi {
    async fn start() -> Self {
        fn token(headers: &HeaderMap) -> String {
            headers
                .get("Access-Token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        }
        fn expired() -> Response {
            axum::Json(
                json!({"code": 40105, "message": "Access token is invalid or expired.",
                "request_id": "r"}),
            )
            .into_response()
        }
        async fn create(
            State(st): State<Shared>,
            headers: HeaderMap,
            axum::Json(body): axum::Json<Value>,
        ) -> Response {
            let token = token(&headers);
            let page = body["page_id"].as_str().unwrap_or("").to_owned();
            let creates = {
                let mut log = st.log.lock().unwrap();
                log.push(format!("{token} create {page}"));
                log.iter()
                    .filter(|e| e.starts_with("good-token create "))
                    .count()
            };
            if token != "good-token" {
                return expired();
            }
            if body["advertiser_id"] != "7200000000000000001" {
                return axum::Json(json!({"code": 40002, "message": "advertiser_id"}))
                    .into_response();
            }
            if creates == 1 {
                return axum::Json(json!({"code": 40100, "message": "Too many requests."}))
                    .into_response();
            }
            let mut tasks = st.tasks.lock().unwrap();
            let id = format!("task-{}", tasks.len() + 1);
            tasks.insert(id.clone(), page);
            axum::Json(
                json!({"code": 0, "message": "OK", "data": {"task_id": id, "status": "CREATED"}}),
            )
            .into_response()
        }
        async fn download(
            State(st): State<Shared>,
            headers: HeaderMap,
            Query(q): Query<HashMap<String, String>>,
        ) -> Response {
            let token = token(&headers);
            let task = q.get("task_id").cloned().unwrap_or_default();
            let page = st
                .tasks
                .lock()
                .unwrap()
                .get(&task)
                .cloned()
                .unwrap_or_default();
            let entry = format!("{token} download {task} ({page})");
            let seen = {
                let mut log = st.log.lock().unwrap();
                log.push(entry.clone());
                log.iter().filter(|e| **e == entry).count()
            };
            if token != "good-token" {
                return expired();
            }
            if seen == 1 {
                return axum::Json(
                    json!({"code": 0, "message": "OK", "data": {"status": "RUNNING"}}),
                )
                .into_response();
            }
            match page.as_str() {
                "p1" => (
                    StatusCode::OK,
                    [("content-type", "application/zip")],
                    (*st.p1).clone(),
                )
                    .into_response(),
                "p2" => {
                    let mut r = st.release.clone();
                    let _ = r.wait_for(|go| *go).await;
                    (
                        StatusCode::OK,
                        [("content-type", "text/csv")],
                        fixture("leads.csv"),
                    )
                        .into_response()
                }
                _ => axum::Json(json!({"code": 40002, "message": "task_id"})).into_response(),
            }
        }
        let log: Log = Arc::new(Mutex::new(Vec::new()));
        let (release, gate) = tokio::sync::watch::channel(false);
        let shared = Shared {
            log: log.clone(),
            tasks: Arc::new(Mutex::new(HashMap::new())),
            release: gate,
            p1: Arc::new(p1_zip()),
        };
        let app = axum::Router::new()
            .route(
                "/open_api/v1.3/page/lead/task/",
                axum::routing::post(create),
            )
            .route(
                "/open_api/v1.3/page/lead/task/download/",
                axum::routing::get(download),
            )
            .with_state(shared);
        let port = crate::support::serve_local(app).await;
        Self { port, log, release }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn connector(name: &str, port: u16, token: &str) -> String {
    format!(
        "[[connectors]]\nname = \"{name}\"\ntype = \"tiktok\"\nsecret = \"{SECRET}\"\n\
         access_token = \"{token}\"\nadvertiser_id = \"7200000000000000001\"\n\
         page_ids = [\"p1\", \"p2\"]\napi_url = \"http://127.0.0.1:{port}/open_api/v1.3\"\n\
         poll_interval = \"1h\"\n[connectors.mapping]\nnotes = [\"想了解的产品\"]\n"
    )
}

// Multi-threaded: the replay API keeps serving while the test blocks in the Kafka consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiktok_callbacks_and_downloads_publish_each_lead_once_across_a_restart() {
    let api = BusinessApi::start().await;
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}\n{}\n{}",
        kafka_config(&broker.brokers(), ""),
        connector("tiktok", api.port, "good-token"),
        connector("tt-expired", api.port, "old-token"),
    );
    let mut gw = Gateway::start(Some(&config), &dir.path().join("gw"));
    let http = reqwest::Client::new();

    // Callbacks must be signed; a retried callback is one lead per entry.
    let body = fixture("callback.json");
    let post = |secret: &str| {
        http.post(gw.url("/v1/webhooks/tiktok"))
            .header("content-type", "application/json")
            .header(
                "X-Open-Signature",
                leadgate::sources::webhook::sign(secret, None, &body),
            )
            .body(body.clone())
            .send()
    };
    let r = post("not-the-secret").await.unwrap();
    assert_eq!(r.status(), 401);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["field"], "X-Open-Signature", "{err}");
    for expected in ["accepted", "duplicate"] {
        let r = post(SECRET).await.unwrap();
        assert_eq!(r.status(), 200);
        let reply: Value = r.json().await.unwrap();
        assert_eq!(reply["code"], 0);
        assert_eq!(reply["events"][0]["status"], expected, "{reply}");
    }

    // p1 is downloaded whole; p2's download is held: kill the gateway there.
    let status = |name: &'static str| {
        let url = gw.url(&format!("/v1/connectors/{name}"));
        let http = http.clone();
        async move { get_json(&http, &url).await }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = status("tiktok").await;
        let expired = status("tt-expired").await;
        let held = api.log().iter().filter(|e| e.ends_with("(p2)")).count() >= 2;
        if held && st["events_journaled"] == P1_ROWS && expired["state"] == "stopped" {
            assert!(
                expired["last_error"].as_str().unwrap().contains("40105"),
                "{expired}"
            );
            assert_eq!(st["checkpoint"]["forms"]["p2"]["task_id"], "task-2", "{st}");
            break;
        }
        assert!(Instant::now() < deadline, "{st} {expired} {:?}", api.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gw.kill();
    let before = api.log().len();
    api.release.send_replace(true);
    let _gw = Gateway::start(Some(&config), &dir.path().join("gw"));

    // 1,100 from p1, the 2 called back, and 2 more from p2 (its first row was called back).
    let want = P1_ROWS + 4;
    // Each lead is one event (a record delivered before the kill may come again, same event_id).
    let clean = consume_events(
        &broker.brokers(),
        "leads.clean",
        want,
        Duration::from_secs(120),
    );
    let mut ids: Vec<String> = clean
        .iter()
        .map(|c| {
            c.value["source"]["external_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    ids.sort();
    let mut expected: Vec<String> = (0..P1_ROWS).map(|i| format!("p1-{i}")).collect();
    expected.extend(
        [
            "7312345678901234567",
            "7312345678901234568",
            "7312345678901234569",
            "7312345678901234570",
        ]
        .map(str::to_owned),
    );
    expected.sort();
    assert_eq!(ids, expected, "each lead once");
    let called = &clean
        .iter()
        .find(|c| c.value["source"]["external_id"] == "7312345678901234567")
        .unwrap()
        .value;
    assert_eq!(called["contact"]["name"], "赵敏");
    assert_eq!(called["contact"]["phone"], "+8613800138000");
    assert_eq!(
        called["contact"]["notes"], "智能门锁",
        "a custom question, mapped"
    );
    assert_eq!(
        called["raw"]["changes"][0]["field"], "name",
        "the callback is kept raw"
    );
    crate::config::assert_valid_lead_record(called);

    let log = api.log();
    let after: Vec<&String> = log[before..]
        .iter()
        .filter(|e| e.starts_with("good-token"))
        .collect();
    assert!(
        !after.iter().any(|e| e.ends_with("create p2")),
        "p2 resumed its task instead of creating one: {after:?}"
    );
    assert!(
        after
            .iter()
            .any(|e| *e == "good-token download task-2 (p2)"),
        "{after:?}"
    );
    assert_eq!(
        log[..before]
            .iter()
            .filter(|e| *e == "good-token create p1")
            .count(),
        2,
        "the throttled creation was retried: {log:?}"
    );
}
