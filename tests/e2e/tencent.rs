//! 腾讯广告 `leads_list/get` against a local API that replays the documented shapes: signed-ish
//! requests (`timestamp` within 300 s, a unique `nonce`), `time_range`, numbered pages up to a
//! depth and `last_search_after_values` past it, an error code for throttling, an expired token,
//! masked phones, and a restart mid-pull. Read back from the real broker.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use serde_json::{Value, json};

use crate::support::{Broker, Gateway, consume_events, get_json, kafka_config};

const PAGE: usize = 4;
const DEPTH: usize = 8;

/// 12 leads, newest first by (time, id); 1006 and 1005, the 7th and 8th, share a minute (and so
/// do 1003 and 1002): the search-after position must break the tie by id.
fn leads() -> Vec<Value> {
    let mut all: Vec<Value> = (1..=12)
        .map(|n: u32| {
            let minute = match n {
                6 => 5,
                2 => 3,
                n => n,
            };
            let phone = if n == 3 {
                "134****1234".to_owned()
            } else {
                format!("135000020{n:02}")
            };
            json!({
                "leads_id": 1000 + n,
                "leads_name": format!("客户{n}"),
                "leads_telephone": phone,
                "leads_email": format!("c{n}@example.cn"),
                "leads_wechat": "",
                "bundle": format!("{{\"意向门店\":\"门店{n}\"}}"),
                "leads_create_time": format!("2026-11-24 16:{minute:02}:00"),
            })
        })
        .collect();
    let key = |l: &Value| {
        (
            l["leads_create_time"].as_str().unwrap().to_owned(),
            l["leads_id"].as_u64().unwrap(),
        )
    };
    all.sort_by_key(|l| std::cmp::Reverse(key(l)));
    all
}

fn millis(time: &str) -> i64 {
    jiff::civil::DateTime::strptime("%Y-%m-%d %H:%M:%S", time)
        .unwrap()
        .in_tz("Asia/Shanghai")
        .unwrap()
        .timestamp()
        .as_millisecond()
}

type Log = Arc<Mutex<Vec<HashMap<String, String>>>>;

struct LeadsApi {
    port: u16,
    log: Log,
    release: tokio::sync::watch::Sender<bool>,
}

impl LeadsApi {
    async fn start() -> Self {
        type Shared = (
            Log,
            Arc<Mutex<HashSet<String>>>,
            tokio::sync::watch::Receiver<bool>,
        );
        async fn list(
            State((log, nonces, release)): State<Shared>,
            Query(q): Query<HashMap<String, String>>,
        ) -> axum::Json<Value> {
            let err = |code: i64, msg: &str| {
                axum::Json(json!({"code": code, "message": msg, "message_cn": msg}))
            };
            let good = q.get("access_token").map(String::as_str) == Some("good-token");
            let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
            let size: usize = q
                .get("page_size")
                .and_then(|p| p.parse().ok())
                .unwrap_or(PAGE);
            let after = q.get("last_search_after_values").cloned();
            let seen = {
                let mut log = log.lock().unwrap();
                log.push(q.clone());
                log.iter()
                    .filter(|e| {
                        e.get("access_token") == q.get("access_token")
                            && e.get("page") == q.get("page")
                            && e.get("last_search_after_values") == after.as_ref()
                    })
                    .count()
            };
            let now = jiff::Timestamp::now().as_second();
            let ts: i64 = q.get("timestamp").and_then(|t| t.parse().ok()).unwrap_or(0);
            if (now - ts).abs() > 300 {
                return err(11006, "timestamp 已过期");
            }
            let nonce = q.get("nonce").cloned().unwrap_or_default();
            if nonce.is_empty() || nonce.len() > 32 || !nonces.lock().unwrap().insert(nonce) {
                return err(11007, "nonce 重复");
            }
            if !good {
                return err(11002, "access_token 已过期");
            }
            let range: Value =
                serde_json::from_str(q.get("time_range").map_or("{}", |s| s)).unwrap_or_default();
            if range["time_type"] != "TIME_TYPE_CREATED_TIME" || !range["start_time"].is_i64() {
                return err(11001, "time_range 参数错误");
            }
            if page * size > DEPTH && after.is_none() {
                return err(11030, "超过分页深度, 请使用 last_search_after_values");
            }
            if page == 2 && after.is_none() && seen == 1 {
                return err(11017, "请求过于频繁");
            }
            let mut rows = leads();
            if let Some(a) = &after {
                let v: Value = serde_json::from_str(a).unwrap();
                let (ms, id) = (v[0].as_i64().unwrap(), v[1].as_str().unwrap().to_owned());
                let id: u64 = id.parse().unwrap();
                rows.retain(|l| {
                    let k = (
                        millis(l["leads_create_time"].as_str().unwrap()),
                        l["leads_id"].as_u64().unwrap(),
                    );
                    k < (ms, id)
                });
                let mut r = release.clone();
                let _ = r.wait_for(|go| *go).await;
            }
            let page_rows: Vec<Value> = rows
                .into_iter()
                .skip((page - 1) * size)
                .take(size)
                .collect();
            axum::Json(
                json!({"code": 0, "message": "", "data": {"leads_info": page_rows,
                "page_info": {"page": page, "page_size": size, "total_number": 12,
                    "total_page": 12usize.div_ceil(size)}}}),
            )
        }
        let log: Log = Arc::new(Mutex::new(Vec::new()));
        let (release, gate) = tokio::sync::watch::channel(false);
        let app = axum::Router::new()
            .route("/v3.0/leads_list/get", axum::routing::get(list))
            .with_state((log.clone(), Arc::new(Mutex::new(HashSet::new())), gate));
        let port = crate::support::serve_local(app).await;
        Self { port, log, release }
    }

    fn log(&self) -> Vec<HashMap<String, String>> {
        self.log.lock().unwrap().clone()
    }
}

fn connector(name: &str, port: u16, token: &str) -> String {
    format!(
        "[[connectors]]\nname = \"{name}\"\ntype = \"tencent\"\naccess_token = \"{token}\"\n\
         account_id = 25610\napi_url = \"http://127.0.0.1:{port}/v3.0/leads_list/get\"\n\
         page_size = {PAGE}\ndeep_paging_limit = {DEPTH}\npoll_interval = \"1h\"\ninitial = \"1d\"\n\
         throttled_codes = [11017]\nexpired_codes = [11002]\n\
         [connectors.mapping]\nnotes = [\"意向门店\"]\n"
    )
}

// Multi-threaded: the replay API keeps serving while the test blocks in the Kafka consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tencent_leads_page_then_search_after_through_throttling_and_a_restart() {
    let api = LeadsApi::start().await;
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{}\n{}\n{}",
        kafka_config(&broker.brokers(), ""),
        connector("tencent", api.port, "good-token"),
        connector("tencent-expired", api.port, "old-token"),
    );
    let mut gw = Gateway::start(Some(&config), &dir.path().join("gw"));
    let http = reqwest::Client::new();
    let status = |name: &'static str| {
        let url = gw.url(&format!("/v1/connectors/{name}"));
        let http = http.clone();
        async move { get_json(&http, &url).await }
    };
    // Pages 1 and 2 are journaled; the search-after request is held.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = status("tencent").await;
        let expired = status("tencent-expired").await;
        let held = api
            .log()
            .iter()
            .any(|q| q.contains_key("last_search_after_values"));
        if held && st["events_journaled"] == 8 && expired["state"] == "stopped" {
            assert!(
                expired["last_error"].as_str().unwrap().contains("11002"),
                "{expired}"
            );
            assert!(
                expired["token"]["refused"]
                    .as_str()
                    .unwrap()
                    .contains("11002"),
                "the token's health says why: {expired}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{st} {expired}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.kill();
    let before = api.log().len();
    api.release.send_replace(true);
    let gw2 = Gateway::start(Some(&config), &dir.path().join("gw"));

    // Each lead is one event (a record delivered before the kill may come again, same event_id).
    let clean = consume_events(
        &broker.brokers(),
        "leads.clean",
        12,
        Duration::from_secs(60),
    );
    let mut ids: Vec<&str> = clean
        .iter()
        .map(|c| c.value["source"]["external_id"].as_str().unwrap())
        .collect();
    ids.sort();
    let want: Vec<String> = (1001..=1012).map(|n| n.to_string()).collect();
    assert_eq!(ids, want, "each lead once");
    let masked = &clean
        .iter()
        .find(|c| c.value["source"]["external_id"] == "1003")
        .unwrap()
        .value;
    assert_eq!(masked["contact"]["phone"], Value::Null, "{masked}");
    assert!(
        masked["issues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["code"] == "phone.masked"),
        "{masked}"
    );
    assert_eq!(masked["contact"]["notes"], "门店3", "from the bundle");
    crate::config::assert_valid_lead_record(masked);

    let http = reqwest::Client::new();
    let st = get_json(&http, &gw2.url("/v1/connectors/tencent")).await;
    let lag = st["lag_seconds"].as_f64().unwrap_or(f64::MAX);
    assert!(
        lag < 300.0,
        "read up to the window's end, moments ago: {st}"
    );
    assert_eq!(st["token"]["refused"], Value::Null, "{st}");

    let log = api.log();
    let good: Vec<&HashMap<String, String>> = log
        .iter()
        .filter(|q| q.get("access_token").map(String::as_str) == Some("good-token"))
        .collect();
    let first = good[0];
    let range: Value = serde_json::from_str(&first["time_range"]).unwrap();
    let span = range["end_time"].as_i64().unwrap() - range["start_time"].as_i64().unwrap();
    assert_eq!(
        span, 86_400,
        "the first window reaches back `initial`: {range}"
    );
    let resumed = log[before..]
        .iter()
        .find(|q| q.get("access_token").map(String::as_str) == Some("good-token"))
        .unwrap();
    assert!(
        resumed.contains_key("last_search_after_values"),
        "resumed mid-pull after the restart: {resumed:?}"
    );
    assert_eq!(resumed["page"], "1");
    assert_eq!(
        resumed["time_range"], first["time_range"],
        "the same window after the restart"
    );
    let after: Value = serde_json::from_str(&resumed["last_search_after_values"]).unwrap();
    assert_eq!(
        after[1], "1005",
        "after the 8th lead, by (time, id): {after}"
    );
    assert_eq!(
        after[0],
        millis("2026-11-24 16:05:00"),
        "its time in ms, read in GMT+8"
    );
    // Page 2 was throttled by code: it was asked for again at half the size, as page 3 (the
    // same first row); past the depth, the pages go on after the last lead, grown back.
    let pages: Vec<(String, String, bool)> = log[..before]
        .iter()
        .filter(|q| q.get("access_token").map(String::as_str) == Some("good-token"))
        .map(|q| {
            (
                q["page"].clone(),
                q["page_size"].clone(),
                q.contains_key("last_search_after_values"),
            )
        })
        .collect();
    let want: Vec<(String, String, bool)> = [
        ("1", "4", false),
        ("2", "4", false),
        ("3", "2", false),
        ("4", "2", false),
        ("1", "4", true),
    ]
    .iter()
    .map(|(p, s, a)| ((*p).to_owned(), (*s).to_owned(), *a))
    .collect();
    assert_eq!(pages, want);
}
