//! Ad-platform webhooks replayed from the recorded fixtures in `connectors/fixtures/`, through
//! the real binary to the real broker.

use serde_json::{Value, json};

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
    assert_eq!(
        post("google-flagged", test.clone()).await.unwrap().status(),
        202
    );
    // Google sends every test with the same fixed lead id: another form's test is not a retry.
    let mut other_form = test.clone();
    other_form["form_id"] = json!(987654);
    let second = post("google-ads", other_form).await.unwrap();
    assert_eq!(second.status(), 202);
    assert!(second.headers().get("idempotent-replayed").is_none());
    let retry = post("google-ads", test).await.unwrap();
    assert_eq!(
        retry.headers()["idempotent-replayed"],
        "true",
        "the same form's test again"
    );

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
    assert_eq!(
        flagged[0]["lead_id"],
        Value::Null,
        "a test never becomes a person"
    );
    assert_eq!(
        flagged[0]["assignment"],
        Value::Null,
        "nor reaches a salesperson"
    );
    // test_leads = "topic" (the shipped definition): on leads.test only, never a person.
    let tests = consume_until(
        &broker.brokers(),
        "leads.test",
        std::time::Duration::from_secs(30),
        |got| got.len() >= 2,
    );
    assert_eq!(tests.len(), 2, "one test per form");
    let t = &tests[0].value;
    assert_eq!(t["source"]["connector"], "google-ads");
    assert_eq!(t["source"]["test"], true);
    assert_eq!(t["lead_id"], Value::Null);
    assert_eq!(t["contact"]["email"], "test-user@gmail.com");
    crate::config::assert_valid_lead_record(t);
    crate::config::assert_valid_lead_record(r);
}

/// A local lead API in the shape of Ocean Engine's `clue/get`: 5 leads over 3 pages of 2, an
/// `Access-Token` header, errors as HTTP 200 with a `code` (40100 throttled, 40102 expired).
/// Page 1 is throttled once by code, page 2 once by HTTP 429 with `Retry-After`, and page 3 is
/// held until `release` (so a gateway can be killed mid-pull). Every request is logged.
struct ReplayApi {
    port: u16,
    /// `"{token} page={n}"` per request.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// `(page, start_time, end_time)` of each request with the good token.
    windows: std::sync::Arc<std::sync::Mutex<Vec<(usize, String, String)>>>,
    release: tokio::sync::watch::Sender<bool>,
}

impl ReplayApi {
    async fn start() -> Self {
        use axum::extract::{Query, State};
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::IntoResponse;
        use std::collections::HashMap;
        use std::sync::{Arc, Mutex};

        type Windows = Arc<Mutex<Vec<(usize, String, String)>>>;
        type Shared = (
            Arc<Mutex<Vec<String>>>,
            Windows,
            tokio::sync::watch::Receiver<bool>,
        );
        async fn clues(
            State((log, windows, release)): State<Shared>,
            headers: HeaderMap,
            Query(q): Query<HashMap<String, String>>,
        ) -> axum::response::Response {
            let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
            let size: usize = q.get("page_size").and_then(|p| p.parse().ok()).unwrap_or(2);
            let token = headers
                .get("Access-Token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let entry = format!("{token} page={page}");
            // How often this page number was asked for, at any size.
            let seen = {
                let mut log = log.lock().unwrap();
                log.push(format!("{entry} size={size}"));
                log.iter()
                    .filter(|e| e.starts_with(&format!("{entry} size=")))
                    .count()
            };
            if token == "good-token" {
                let param = |k: &str| q.get(k).cloned().unwrap_or_default();
                windows
                    .lock()
                    .unwrap()
                    .push((page, param("start_time"), param("end_time")));
            }
            if token != "good-token" {
                return axum::Json(
                    serde_json::json!({"code": 40102, "message": "access token expired"}),
                )
                .into_response();
            }
            if q.get("advertiser_ids").map(String::as_str) != Some("[1760000000000000]") {
                return axum::Json(
                    serde_json::json!({"code": 40002, "message": "advertiser_ids: 必填"}),
                )
                .into_response();
            }
            if page == 1 && seen == 1 {
                return axum::Json(
                    serde_json::json!({"code": 40100, "message": "too many requests"}),
                )
                .into_response();
            }
            if page == 2 && seen == 1 {
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("Retry-After", "1")],
                    "slow down",
                )
                    .into_response();
            }
            if page == 3 {
                let mut r = release.clone();
                let _ = r.wait_for(|go| *go).await;
            }
            let list: Vec<Value> = ((page - 1) * size + 1..=(page * size).min(5))
                .map(|n| serde_json::json!({
                    "clue_id": format!("c{n}"), "name": format!("客户{n}"),
                    "telephone": format!("1390000100{n}"), "clue_source": if n == 5 { 4 } else { 1 },
                    "province_name": "广东", "city_name": "深圳"
                }))
                .collect();
            axum::Json(
                serde_json::json!({"code": 0, "message": "OK", "data": {"list": list,
                "page_info": {"page": page, "page_size": size, "total_number": 5, "total_page": 5usize.div_ceil(size)}}}),
            )
            .into_response()
        }
        let log = Arc::new(Mutex::new(Vec::new()));
        let windows = Arc::new(Mutex::new(Vec::new()));
        let (release, gate) = tokio::sync::watch::channel(false);
        let app = axum::Router::new()
            .route("/open_api/2/tools/clue/get/", axum::routing::get(clues))
            .with_state((log.clone(), windows.clone(), gate));
        let port = crate::support::serve_local(app).await;
        Self {
            port,
            log,
            windows,
            release,
        }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn pull_connector(name: &str, port: u16, token: &str) -> String {
    format!(
        "[[connectors]]\nname = \"{name}\"\ntype = \"http_pull\"\n\
         url = \"http://127.0.0.1:{port}/open_api/2/tools/clue/get/\"\n\
         headers = {{ Access-Token = \"{token}\" }}\n\
         records = \"/data/list\"\nid = \"/clue_id\"\n\
         paging = {{ type = \"page\", param = \"page\", size_param = \"page_size\", size = 2 }}\n\
         error_code = {{ pointer = \"/code\", ok = [0], throttled = [40100], expired = [40102] }}\n\
         fields = {{ phone = \"/telephone\", name = \"/name\", province = \"/province_name\", city = \"/city_name\" }}\n\
         test_pointer = \"/clue_source\"\ntest_value = 4\n\
         window = {{ start_param = \"start_time\", end_param = \"end_time\", overlap = \"10m\", initial = \"1h\" }}\n\
         poll_interval = \"1s\"\nrate_limit = {{ per_second = 20 }}\n"
    )
}

/// The 巨量引擎 preset: the same API, the SPI push on.
fn oceanengine_connector(port: u16) -> String {
    format!(
        "[[connectors]]\nname = \"ocean\"\ntype = \"oceanengine\"\naccess_token = \"good-token\"\n\
         advertiser_ids = [1760000000000000]\n\
         api_url = \"http://127.0.0.1:{port}/open_api/2/tools/clue/get/\"\n\
         page_size = 2\npoll_interval = \"1s\"\noverlap = \"10m\"\ninitial = \"1h\"\nsettle = \"5m\"\n\
         rate_limit = {{ per_second = 20 }}\nspi_secret = \"spi-secret\"\n"
    )
}

// Multi-threaded: the replay API keeps serving while the test blocks in the Kafka consumer.
// "ocean" is the 巨量引擎 preset (pull and push); "revoked" is a generic http_pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oceanengine_pulls_pages_retries_throttling_resumes_mid_pull_takes_pushes_and_reports_an_expired_token()
 {
    let api = ReplayApi::start().await;
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}\n{}\n{}",
        kafka_config(&broker.brokers(), ""),
        oceanengine_connector(api.port),
        pull_connector("revoked", api.port, "old-token"),
    );
    let mut gw = Gateway::start(Some(&config), &dir.path().join("gw"));
    let client = reqwest::Client::new();
    let status = |name: &'static str| {
        let client = client.clone();
        let url = gw.url(&format!("/v1/connectors/{name}"));
        async move { crate::support::get_json(&client, &url).await }
    };
    // Pages 1 and 2 (each throttled once, then read) are journaled; page 3 is held.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let st = status("ocean").await;
        if st["events_journaled"].as_u64() == Some(4)
            && api
                .log()
                .iter()
                .any(|e| e.starts_with("good-token page=3 "))
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{st} {:?}", api.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let revoked = status("revoked").await;
    assert_eq!(revoked["state"], "stopped", "{revoked}");
    assert!(
        revoked["last_error"]
            .as_str()
            .unwrap()
            .contains("expired or was revoked"),
        "{revoked}"
    );

    // The SPI push: the verification is answered; a lead message must be signed. c4 is pushed
    // (and pulled later: one lead), c9 only pushed.
    let hook = gw.url("/v1/webhooks/ocean");
    let r = client
        .post(&hook)
        .json(&serde_json::json!({"event": "verify_webhook", "challenge": 987654}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let reply: Value = r.json().await.unwrap();
    assert_eq!(reply["challenge"], 987654);
    let push = |clue: Value, id: &str| {
        serde_json::to_vec(
            &serde_json::json!({"message_id": id, "service_label": "clue.push",
            "timestamp": 1795480800, "nonce": "n1", "data": clue.to_string()}),
        )
        .unwrap()
    };
    let send = |body: Vec<u8>, secret: &str| {
        client
            .post(&hook)
            .header("content-type", "application/json")
            .header(
                "X-Open-Signature",
                leadgate::sources::webhook::sign(secret, None, &body),
            )
            .body(body)
            .send()
    };
    let c4 = serde_json::json!({"clue_id": "c4", "name": "客户4", "telephone": "13900001004",
        "clue_source": 1, "province_name": "广东", "city_name": "深圳"});
    let c9 = serde_json::json!({"clue_id": "c9", "name": "推送客户", "telephone": "13900001009",
        "weixin": "wx-c9", "clue_source": 1, "province_name": "广东", "city_name": "广州"});
    let r = send(push(c4.clone(), "msg-4"), "wrong-secret")
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let err: Value = r.json().await.unwrap();
    assert_eq!(err["error"]["field"], "X-Open-Signature", "{err}");
    for (clue, id) in [(c4, "msg-4"), (c9.clone(), "msg-9"), (c9, "msg-9")] {
        let r = send(push(clue, id), "spi-secret").await.unwrap();
        assert_eq!(r.status(), 200);
        let reply: Value = r.json().await.unwrap();
        assert_eq!(reply["BaseResp"]["StatusCode"], 200, "{reply}");
    }

    // Killed mid-pull; the restart asks for page 3 first, not page 1.
    gw.kill();
    let before = api.log().len();
    api.release.send_replace(true);
    let _gw = Gateway::start(Some(&config), &dir.path().join("gw"));
    // Each lead is one event (a record delivered before the kill may come again, same event_id).
    let clean = crate::support::once_per_event(consume_until(
        &broker.brokers(),
        "leads.clean",
        std::time::Duration::from_secs(30),
        |got| {
            crate::support::once_per_event(got.to_vec())
                .iter()
                .filter(|c| c.value["source"]["connector"] == "ocean")
                .count()
                >= 5
        },
    ));
    let tests = consume_until(
        &broker.brokers(),
        "leads.test",
        std::time::Duration::from_secs(30),
        |got| !got.is_empty(),
    );
    let log = api.log();
    let after = &log[before..];
    let first_ocean = log[before..]
        .iter()
        .find(|e| e.starts_with("good-token "))
        .unwrap();
    assert_eq!(
        first_ocean, "good-token page=3 size=2",
        "resumed mid-pull: {after:?}"
    );
    assert_eq!(
        log[..before]
            .iter()
            .filter(|e| *e == "good-token page=2 size=1")
            .count(),
        2,
        "the first poll: page 2 got a 429, then was read: {log:?}"
    );
    // Throttled by code 40100, page 1 was asked for again at half the size; the page grew back
    // once it could start at the same row (page 3 of 1 is page 2 of 2).
    let first: Vec<&str> = log[..before]
        .iter()
        .filter(|e| e.starts_with("good-token"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        first,
        [
            "good-token page=1 size=2",
            "good-token page=1 size=1",
            "good-token page=2 size=1",
            "good-token page=2 size=1",
            "good-token page=2 size=2",
            "good-token page=3 size=2",
        ],
        "{log:?}"
    );

    let mut ids: Vec<String> = clean
        .iter()
        .filter(|c| c.value["source"]["connector"] == "ocean")
        .map(|c| {
            c.value["source"]["external_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        ["c1", "c2", "c3", "c4", "c9"],
        "each lead once: c4 pushed and pulled, c9 pushed twice"
    );
    let c9 = clean
        .iter()
        .find(|c| c.value["source"]["external_id"] == "c9")
        .unwrap();
    assert_eq!(c9.value["contact"]["city"], "广州市");
    assert_eq!(
        c9.value["raw"]["weixin"], "wx-c9",
        "the pushed lead is kept raw"
    );
    let c1 = clean
        .iter()
        .find(|c| c.value["source"]["external_id"] == "c1")
        .unwrap();
    assert_eq!(c1.value["contact"]["phone"], "+8613900001001");
    assert_eq!(c1.value["contact"]["city"], "深圳市");
    assert_eq!(c1.value["raw"]["clue_id"], "c1", "the record is kept raw");
    assert_eq!(tests.len(), 1);
    assert_eq!(
        tests[0].value["source"]["external_id"], "c5",
        "clue_source 4 is a test lead"
    );

    // Time windows, written in GMT+8: the first poll reaches back `initial` (1h); every page of
    // it, page 3 after the restart included, asks for the same window; the next poll starts
    // `overlap` (10m) before it ended. Its leads are read again and dropped by id.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while api
        .windows
        .lock()
        .unwrap()
        .iter()
        .filter(|w| w.0 == 1)
        .count()
        < 3
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no second poll: {:?}",
            api.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let windows = api.windows.lock().unwrap().clone();
    let parse = |t: &str| {
        jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", t)
            .unwrap_or_else(|e| panic!("{t:?}: {e}"))
    };
    let (_, start, end) = &windows[0];
    let first = (parse(start), parse(end));
    let now_gmt8 = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap())
        .datetime();
    let behind = now_gmt8.duration_since(first.1).as_secs();
    assert!(
        (300..420).contains(&behind),
        "the end is `settle` (5m) before now, in GMT+8: {end} vs {now_gmt8}"
    );
    assert_eq!(
        first.1.duration_since(first.0).as_secs(),
        3600,
        "{windows:?}"
    );
    let same = |w: &(usize, String, String)| {
        (w.1.as_str(), w.2.as_str()) == (start.as_str(), end.as_str())
    };
    let first_poll: Vec<_> = windows.iter().take_while(|w| same(w)).collect();
    assert!(
        first_poll.iter().any(|w| w.0 == 3),
        "page 3 after the restart kept the window: {windows:?}"
    );
    let next = windows.iter().find(|w| !same(w)).unwrap();
    assert_eq!(
        first.1.duration_since(parse(&next.1)).as_secs(),
        600,
        "the next poll starts 10m before the first ended: {windows:?}"
    );
    // A re-read lead is a new event (a new event_id); one delivered before the kill and not yet
    // acknowledged may come again with its own event_id, which at-least-once allows.
    let clean = crate::support::once_per_event(consume_until(
        &broker.brokers(),
        "leads.clean",
        std::time::Duration::from_secs(3),
        |_| false,
    ));
    let ocean: Vec<_> = clean
        .iter()
        .filter(|c| c.value["source"]["connector"] == "ocean")
        .map(|c| {
            (
                c.value["event_id"].clone(),
                c.value["source"]["external_id"].clone(),
            )
        })
        .collect();
    assert_eq!(
        ocean.len(),
        5,
        "leads re-read by later polls are not published again: {ocean:?}"
    );
}

/// 百度线索通 by the shipped definition (`connectors/baidu.toml`, `type = "baidu"`): a POST whose
/// JSON body carries the credentials and the window's dates, success by `header.desc`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baidu_lead_notices_are_posted_for_and_published_by_the_shipped_definition() {
    use axum::extract::State;
    use std::sync::{Arc, Mutex};

    type Bodies = Arc<Mutex<Vec<Value>>>;
    async fn notices(
        State(bodies): State<Bodies>,
        axum::Json(body): axum::Json<Value>,
    ) -> axum::Json<Value> {
        bodies.lock().unwrap().push(body.clone());
        if body["header"]["accessToken"] != "good-token" {
            return axum::Json(
                serde_json::json!({"header": {"desc": "failure", "status": 2,
                "failures": [{"code": 8206, "message": "accessToken invalid"}]}, "body": {}}),
            );
        }
        axum::Json(fixture("baidu/notice-list.json"))
    }
    let bodies: Bodies = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route(
            "/json/sms/service/LeadsNoticeService/getNoticeList",
            axum::routing::post(notices),
        )
        .with_state(bodies.clone());
    let port = crate::support::serve_local(app).await;

    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/connectors/baidu.toml"
    ))
    .unwrap();
    let connector = |name: &str, token: &str| {
        format!(
            "[[connectors]]\n{}\napi_url = \"http://127.0.0.1:{port}/json/sms/service/LeadsNoticeService/getNoticeList\"\n",
            shipped
                .replace("name = \"baidu-leads\"", &format!("name = \"{name}\""))
                .replace("${BAIDU_TOKEN}", token)
        )
    };
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}\n{}\n{}",
        kafka_config(&broker.brokers(), ""),
        connector("baidu", "good-token"),
        connector("baidu-bad", "stale-token"),
    );
    let gw = Gateway::start_with_env(
        Some(&config),
        &dir.path().join("gw"),
        &[("BAIDU_USER", "marketing@example.cn")],
    );
    let clean = consume_until(
        &broker.brokers(),
        "leads.clean",
        std::time::Duration::from_secs(30),
        |got| got.len() >= 2,
    );
    let mut ids: Vec<&str> = clean
        .iter()
        .map(|c| c.value["source"]["external_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["2911000000000001", "2911000000000002"]);
    let zhou = clean
        .iter()
        .find(|c| c.value["source"]["external_id"] == "2911000000000001")
        .unwrap();
    assert_eq!(zhou.value["contact"]["phone"], "+8618612345678");
    assert_eq!(zhou.value["custom"]["flowChannelName"], "百度搜索");

    let sent = bodies.lock().unwrap().clone();
    let first = sent
        .iter()
        .find(|b| b["header"]["accessToken"] == "good-token")
        .unwrap();
    assert_eq!(first["header"]["userName"], "marketing@example.cn");
    assert_eq!(first["body"]["solutionType"], "form");
    let today = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap())
        .strftime("%Y-%m-%d")
        .to_string();
    assert_eq!(first["body"]["endDate"], today, "dates in GMT+8: {first}");
    assert!(first["body"]["startDate"].as_str().unwrap() < today.as_str());

    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let bad = loop {
        let bad = crate::support::get_json(&client, &gw.url("/v1/connectors/baidu-bad")).await;
        if bad["state"] == "failing" {
            break bad;
        }
        assert!(std::time::Instant::now() < deadline, "{bad}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(
        bad["last_error"]
            .as_str()
            .unwrap()
            .contains("accessToken invalid"),
        "{bad}"
    );
}
