//! Three gateways on one MariaDB and one broker, with the same Meta-style and 巨量引擎-style pull
//! connectors on all three, against stand-ins that log every request with the token that made
//! it (each gateway has its own token, so the log says who asked). Exactly one gateway pulls each
//! connector; the holder killed mid-pull is replaced within 30 s; a gateway frozen past its
//! lease does not ask again after it thaws; every lead is published once; webhooks posted round
//! robin during the failover are all published.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::support::{Broker, Gateway, Mariadb, consume_until, kafka_config};

type Log = Arc<Mutex<Vec<(Instant, String, String)>>>;

/// Clues of the 巨量引擎 stand-in, and leads of the Meta one.
const CLUES: usize = 12;
const META_LEADS: usize = 10;

/// Both platforms: `clue/get` pages (size 2) and a Meta form's `leads` edge (limit 2). Every
/// request is logged as (when, token, what) and answered after 300 ms, so a pull takes a few
/// seconds; while `hold` is set, 巨量引擎's page 3 waits until it is cleared.
struct Platforms {
    port: u16,
    log: Log,
    hold: tokio::sync::watch::Sender<bool>,
}

impl Platforms {
    async fn start() -> Self {
        type Shared = (Log, tokio::sync::watch::Receiver<bool>);
        async fn clues(
            State((log, hold)): State<Shared>,
            headers: HeaderMap,
            Query(q): Query<HashMap<String, String>>,
        ) -> axum::response::Response {
            let token = headers
                .get("Access-Token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
            log.lock()
                .unwrap()
                .push((Instant::now(), token.clone(), format!("clue page={page}")));
            tokio::time::sleep(Duration::from_millis(300)).await;
            if page == 3 {
                let mut h = hold.clone();
                let _ = h.wait_for(|held| !*held).await;
            }
            if !token.starts_with("good-token") {
                return axum::Json(json!({"code": 40102, "message": "access token expired"}))
                    .into_response();
            }
            let list: Vec<Value> = ((page - 1) * 2 + 1..=(page * 2).min(CLUES))
                .map(|n| {
                    json!({"clue_id": format!("c{n}"), "name": format!("巨量客户{n}"),
                    "telephone": format!("1390000{:04}", 3000 + n), "clue_source": 1,
                    "province_name": "广东", "city_name": "深圳"})
                })
                .collect();
            axum::Json(json!({"code": 0, "message": "OK", "data": {"list": list,
                "page_info": {"page": page, "page_size": 2, "total_number": CLUES, "total_page": CLUES.div_ceil(2)}}}))
            .into_response()
        }
        async fn leads(
            State((log, _)): State<Shared>,
            headers: HeaderMap,
            Query(q): Query<HashMap<String, String>>,
        ) -> axum::response::Response {
            let token = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("")
                .to_owned();
            let offset: usize = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
            log.lock().unwrap().push((
                Instant::now(),
                token.clone(),
                format!("meta after={offset}"),
            ));
            tokio::time::sleep(Duration::from_millis(300)).await;
            let end = (offset + 2).min(META_LEADS);
            let data: Vec<Value> = (offset..end)
                .map(|i| json!({"id": format!("m{i}"), "created_time": "2026-12-02T01:00:00+0000",
                    "form_id": "5511", "field_data": [
                        {"name": "full_name", "values": [format!("Meta客户{i}")]},
                        {"name": "phone_number", "values": [format!("+86 139 0000 {:04}", 4000 + i)]}]}))
                .collect();
            let mut paging =
                json!({"cursors": {"before": offset.to_string(), "after": end.to_string()}});
            if end < META_LEADS {
                let host = headers
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("");
                paging["next"] =
                    format!("http://{host}/v21.0/5511/leads?limit=2&after={end}").into();
            }
            axum::Json(json!({"data": data, "paging": paging})).into_response()
        }
        let log: Log = Arc::new(Mutex::new(Vec::new()));
        let (hold, held) = tokio::sync::watch::channel(false);
        let app = axum::Router::new()
            .route("/open_api/2/tools/clue/get/", axum::routing::get(clues))
            .route("/v21.0/5511/leads", axum::routing::get(leads))
            .with_state((log.clone(), held));
        let port = crate::support::serve_local(app).await;
        Self { port, log, hold }
    }

    /// The tokens that asked for `what` (`clue`, `meta`) since `since`.
    fn askers(&self, what: &str, since: Instant) -> HashSet<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _, w)| *at >= since && w.starts_with(what))
            .map(|(_, t, _)| t.clone())
            .collect()
    }

    fn asked_since(&self, what: &str, token: &str, since: Instant) -> bool {
        self.log
            .lock()
            .unwrap()
            .iter()
            .any(|(at, t, w)| *at >= since && t == token && w == what)
    }
}

fn config(brokers: &str, port: u16) -> String {
    let coordination = "[identity.store]\ntype = \"mysql\"\nurl = \"${DB}\"\n\n\
        [coordination]\ntype = \"mysql\"\nurl = \"${DB}\"\nlease = \"6s\"\ngateway = \"${GW}\"\n";
    format!(
        "{}\n[[connectors]]\nname = \"ocean\"\ntype = \"oceanengine\"\naccess_token = \"${{TOKEN}}\"\n\
         advertiser_ids = [1760000000000000]\n\
         api_url = \"http://127.0.0.1:{port}/open_api/2/tools/clue/get/\"\n\
         page_size = 2\npoll_interval = \"2s\"\noverlap = \"10m\"\ninitial = \"1h\"\nsettle = \"5m\"\n\n\
         [[connectors]]\nname = \"meta\"\ntype = \"meta\"\napp_secret = \"app-secret-0123\"\n\
         verify_token = \"verify-me\"\naccess_token = \"${{TOKEN}}\"\n\
         graph_url = \"http://127.0.0.1:{port}/v21.0\"\nforms = [\"5511\"]\npage_size = 2\n\
         poll_interval = \"2s\"\ninitial = \"2d\"\n",
        kafka_config(brokers, coordination)
    )
}

async fn connectors(http: &reqwest::Client, gw: &Gateway) -> BTreeMap<String, Value> {
    let v = crate::support::get_json(http, &gw.url("/v1/connectors")).await;
    v["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_owned(), c.clone()))
        .collect()
}

/// The index of the gateway holding `connector`, once exactly one says it does.
async fn holder(
    http: &reqwest::Client,
    gws: &[Option<Gateway>],
    connector: &str,
    within: Duration,
) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let mut here = Vec::new();
        for (i, gw) in gws.iter().enumerate() {
            if let Some(gw) = gw {
                let c = connectors(http, gw).await;
                if c[connector]["lease"]["held_here"] == true {
                    here.push(i);
                }
            }
        }
        if here.len() == 1 {
            return here[0];
        }
        assert!(Instant::now() < deadline, "{connector}: held by {here:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_pull_each_connector_once_and_fail_over() {
    let db = Mariadb::start();
    let url = db.database("ha");
    let broker = Broker::start();
    let api = Platforms::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = config(&broker.brokers(), api.port);
    let start = |i: usize| {
        let (gw, token) = (format!("gw-{i}"), format!("good-token-{i}"));
        Gateway::start_with_env(
            Some(&text),
            &dir.path().join(format!("gw{i}")),
            &[
                ("DB", url.as_str()),
                ("GW", gw.as_str()),
                ("TOKEN", token.as_str()),
            ],
        )
    };
    let mut gws: Vec<Option<Gateway>> = (0..3).map(|i| Some(start(i))).collect();
    let http = reqwest::Client::new();

    // Each connector is held by one gateway, and only its token asks the platform.
    // Three gateways, two connectors: a fair share is one each, so they end on two gateways
    // (the first one up took both, and lets one go once the others are there).
    let shared_out = Instant::now();
    let (ocean, meta) = loop {
        let ocean = holder(&http, &gws, "ocean", Duration::from_secs(30)).await;
        let meta = holder(&http, &gws, "meta", Duration::from_secs(30)).await;
        if ocean != meta {
            break (ocean, meta);
        }
        assert!(
            shared_out.elapsed() < Duration::from_secs(30),
            "gw-{ocean} kept both connectors"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let all = consume_until(
        &broker.brokers(),
        "leads.clean",
        Duration::from_secs(60),
        |got| platform_ids(got).len() >= CLUES + META_LEADS,
    );
    assert_eq!(platform_ids(&all).len(), CLUES + META_LEADS);
    let settled = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        api.askers("clue", settled),
        HashSet::from([format!("good-token-{ocean}")])
    );
    assert_eq!(
        api.askers("meta", settled),
        HashSet::from([format!("good-token-{meta}")])
    );
    for (i, gw) in gws.iter().enumerate() {
        let gw = gw.as_ref().unwrap();
        let ready = crate::support::get_json(&http, &gw.url("/readyz")).await;
        assert_eq!(ready["leases"]["ocean"]["held_here"], i == ocean, "{ready}");
        let metrics = crate::support::get_text(&http, &gw.url("/metrics")).await;
        let held = format!(
            "leadgate_connector_lease_held{{connector=\"ocean\"}} {}",
            u8::from(i == ocean)
        );
        assert!(
            metrics.lines().any(|l| l == held),
            "{held} not in the metrics of gw-{i}"
        );
        let c = connectors(&http, gw).await;
        assert_eq!(
            c["ocean"]["lease"]["holder"],
            format!("gw-{ocean}"),
            "{}",
            c["ocean"]
        );
        if c["ocean"]["lease"]["held_here"] == false {
            assert_eq!(c["ocean"]["state"], "standby", "{}", c["ocean"]);
        }
    }

    // Kill the 巨量引擎 holder in the middle of a pull (page 3 held), while webhooks are posted
    // round robin to all three.
    api.hold.send_replace(true);
    let asked_page3 = Instant::now();
    while !api.asked_since("clue page=3", &format!("good-token-{ocean}"), asked_page3) {
        assert!(
            asked_page3.elapsed() < Duration::from_secs(30),
            "page 3 was not asked for"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let posting = {
        let urls: Vec<String> = gws
            .iter()
            .flatten()
            .map(|g| g.url("/v1/webhooks/webform"))
            .collect();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut accepted = Vec::new();
            for n in 0..60 {
                let lead =
                    json!({"name": format!("表单{n}"), "phone": format!("1390000{:04}", 5000 + n)});
                if let Ok(r) = http.post(&urls[n % urls.len()]).json(&lead).send().await
                    && r.status() == 202
                {
                    let b: Value = r.json().await.unwrap();
                    accepted.push(b["event_id"].as_str().unwrap().to_owned());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            accepted
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    gws[ocean].as_mut().unwrap().kill();
    gws[ocean] = None;
    let killed = Instant::now();
    api.hold.send_replace(false);
    let next = holder(&http, &gws, "ocean", Duration::from_secs(30)).await;
    assert_ne!(next, ocean);
    let took_over = loop {
        if api
            .askers("clue", killed)
            .contains(&format!("good-token-{next}"))
        {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "nobody took over in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(took_over < Duration::from_secs(30), "{took_over:?}");
    eprintln!("ocean: gw-{ocean} killed, gw-{next} pulled {took_over:?} later");
    let accepted = posting.await.unwrap();
    assert!(accepted.len() >= 30, "{} accepted", accepted.len());

    // Freeze the Meta holder past its lease; another takes over; once thawed it asks nothing.
    let meta = holder(&http, &gws, "meta", Duration::from_secs(30)).await;
    let frozen_token = format!("good-token-{meta}");
    gws[meta].as_ref().unwrap().signal("STOP");
    let frozen = Instant::now();
    let thawing = loop {
        let others: Vec<_> = (0..3).filter(|i| *i != meta && gws[*i].is_some()).collect();
        if api
            .askers("meta", frozen)
            .iter()
            .any(|t| others.iter().any(|i| *t == format!("good-token-{i}")))
        {
            break Instant::now();
        }
        assert!(
            frozen.elapsed() < Duration::from_secs(40),
            "nobody took over from the frozen gateway"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    gws[meta].as_ref().unwrap().signal("CONT");
    eprintln!(
        "meta: gw-{meta} frozen, another pulled {:?} later",
        thawing - frozen
    );
    let thawed = Instant::now();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let late: Vec<_> = api
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, t, w)| {
            *at > thawed + Duration::from_millis(500) && *t == frozen_token && w.starts_with("meta")
        })
        .map(|(_, _, w)| w.clone())
        .collect();
    assert!(
        late.is_empty(),
        "the thawed gateway asked again: {late:?} (took over after {:?})",
        thawing - frozen
    );
    // The shared checkpoint is the new holder's epoch.
    let rows = db
        .sql("SELECT c.epoch = l.epoch, l.holder FROM ha.leadgate_checkpoints c JOIN ha.leadgate_leases l USING (connector) WHERE connector = 'meta'")
        .unwrap();
    let row: Vec<&str> = rows.trim().split('\t').collect();
    assert_eq!(row.len(), 2, "{rows}");
    assert_eq!(
        row[0], "1",
        "the shared checkpoint was written under the current lease: {rows}"
    );
    assert_ne!(row[1], format!("gw-{meta}"), "{rows}");

    // Every platform lead once, every accepted webhook lead.
    let want = CLUES + META_LEADS + accepted.len();
    let all = consume_until(
        &broker.brokers(),
        "leads.clean",
        Duration::from_secs(60),
        |got| platform_ids(got).len() + webhook_events(got, &accepted) >= want,
    );
    let ids = platform_ids(&all);
    assert_eq!(ids.len(), CLUES + META_LEADS);
    assert!(
        ids.values().all(|n| *n == 1),
        "a platform lead published twice: {ids:?}"
    );
    assert_eq!(
        webhook_events(&all, &accepted),
        accepted.len(),
        "a 202 was lost"
    );
}

/// Platform leads (connector, platform id) → distinct events published for it.
fn platform_ids(got: &[crate::support::Consumed]) -> BTreeMap<(String, String), usize> {
    let mut events: BTreeMap<(String, String), HashSet<String>> = BTreeMap::new();
    for c in got {
        let source = &c.value["source"];
        if let Some(id) = source["external_id"].as_str() {
            events
                .entry((
                    source["connector"].as_str().unwrap_or("").to_owned(),
                    id.to_owned(),
                ))
                .or_default()
                .insert(c.value["event_id"].as_str().unwrap_or("").to_owned());
        }
    }
    events.into_iter().map(|(k, v)| (k, v.len())).collect()
}

fn webhook_events(got: &[crate::support::Consumed], accepted: &[String]) -> usize {
    let seen: HashSet<&str> = got
        .iter()
        .filter_map(|c| c.value["event_id"].as_str())
        .collect();
    accepted
        .iter()
        .filter(|e| seen.contains(e.as_str()))
        .count()
}

/// 巨量引擎's refresh rotates the pair: each refresh token works once. Shared tokens let the
/// gateway that takes the lease over refresh with the one the last holder got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_holder_refreshes_with_the_rotated_token() {
    #[derive(Default)]
    struct Oauth {
        /// The refresh token that works now, and how many refreshes passed / were refused.
        current: String,
        issued: u32,
        refused: Vec<String>,
    }
    type Shared = Arc<Mutex<Oauth>>;
    async fn refresh(
        State(o): State<Shared>,
        axum::Json(body): axum::Json<Value>,
    ) -> axum::response::Response {
        let mut o = o.lock().unwrap();
        let given = body["refresh_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if given != o.current {
            o.refused.push(given);
            return axum::Json(json!({"code": 40107, "message": "refresh_token 已失效"}))
                .into_response();
        }
        o.issued += 1;
        let n = o.issued;
        o.current = format!("rt-{}", n + 1);
        axum::Json(json!({"code": 0, "message": "OK", "data": {
            "access_token": format!("at-{n}"), "refresh_token": o.current,
            "expires_in": 3, "refresh_token_expires_in": 2_592_000}}))
        .into_response()
    }
    async fn clues() -> axum::response::Response {
        axum::Json(json!({"code": 0, "message": "OK", "data": {"list": [],
            "page_info": {"page": 1, "page_size": 2, "total_number": 0, "total_page": 0}}}))
        .into_response()
    }
    let oauth: Shared = Arc::new(Mutex::new(Oauth {
        current: "rt-1".into(),
        ..Oauth::default()
    }));
    let app = axum::Router::new()
        .route("/oauth2/refresh_token/", axum::routing::post(refresh))
        .route("/open_api/2/tools/clue/get/", axum::routing::get(clues))
        .with_state(oauth.clone());
    let port = crate::support::serve_local(app).await;
    let db = Mariadb::start();
    let url = db.database("tokens");
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[identity.store]\ntype = \"mysql\"\nurl = \"${{DB}}\"\n\n\
         [coordination]\ntype = \"mysql\"\nurl = \"${{DB}}\"\nlease = \"6s\"\ngateway = \"${{GW}}\"\n\n\
         [[connectors]]\nname = \"ocean\"\ntype = \"oceanengine\"\naccess_token = \"at-0\"\n\
         refresh_token = \"rt-1\"\napp_id = \"1760\"\napp_secret = \"app-secret\"\n\
         oauth_url = \"http://127.0.0.1:{port}/oauth2/refresh_token/\"\n\
         advertiser_ids = [1760000000000000]\n\
         api_url = \"http://127.0.0.1:{port}/open_api/2/tools/clue/get/\"\npoll_interval = \"1s\"\n"
    );
    let start = |i: usize| {
        let gw = format!("gw-{i}");
        Gateway::start_with_env(
            Some(&text),
            &dir.path().join(format!("gw{i}")),
            &[("DB", url.as_str()), ("GW", gw.as_str())],
        )
    };
    let mut gws: Vec<Option<Gateway>> = (0..2).map(|i| Some(start(i))).collect();
    let http = reqwest::Client::new();
    let issued = |o: &Shared| o.lock().unwrap().issued;
    let wait_issued = |n: u32, what: &'static str| {
        let o = oauth.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(40);
            while issued(&o) < n {
                assert!(
                    Instant::now() < deadline,
                    "{what}: {} refreshes",
                    issued(&o)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_issued(3, "the first holder refreshes").await;
    let first = holder(&http, &gws, "ocean", Duration::from_secs(20)).await;
    gws[first].as_mut().unwrap().kill();
    gws[first] = None;
    let before = issued(&oauth);
    wait_issued(
        before + 3,
        "the next holder refreshes with the rotated token",
    )
    .await;
    let next = holder(&http, &gws, "ocean", Duration::from_secs(20)).await;
    assert_ne!(next, first);
    let refused = oauth.lock().unwrap().refused.clone();
    assert!(refused.is_empty(), "refresh tokens used twice: {refused:?}");
    let c = connectors(&http, gws[next].as_ref().unwrap()).await;
    assert_ne!(c["ocean"]["state"], "stopped", "{}", c["ocean"]);
    let stored = db
        .sql("SELECT generation, epoch FROM tokens.leadgate_tokens WHERE connector = 'ocean'")
        .unwrap();
    let generation: u32 = stored.split('\t').next().unwrap().trim().parse().unwrap();
    assert!(generation > before, "{stored}");
}
