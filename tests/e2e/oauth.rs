//! Credentials that stay alive: a stand-in of 巨量引擎's OAuth and `clue/get` whose access tokens
//! live 2 seconds and rotate with their refresh token on every refresh (an old pair is refused
//! with the platform's codes), through the real binary, killed with -9 right after a refresh
//! and between two.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::support::Gateway;

pub(crate) const LIFETIME: Duration = Duration::from_secs(2);

/// A platform's side: the pair in force (`{prefix}a{n}`, `{prefix}r{n}`), when its access token
/// was issued, and every lead request as (token, accepted).
#[derive(Default)]
pub(crate) struct Platform {
    pub(crate) generation: u64,
    pub(crate) issued: Option<Instant>,
    pub(crate) requests: Vec<(String, bool)>,
    pub(crate) refreshes: u64,
    /// Once set, every refresh is refused as an expired refresh token.
    pub(crate) refuse: bool,
    pub(crate) started: Option<Instant>,
    /// How long its access tokens live (default [`LIFETIME`]).
    pub(crate) lifetime: Option<Duration>,
}

impl Platform {
    /// Whether `given` is the refresh token in force.
    pub(crate) fn refreshable(&self, prefix: &str, given: &str) -> bool {
        !self.refuse && given == format!("{prefix}r{}", self.generation)
    }

    /// Issues the next pair (`counted`: as a refresh): its access and refresh tokens.
    pub(crate) fn rotate(&mut self, prefix: &str, counted: bool) -> (String, String) {
        self.generation += 1;
        self.refreshes += u64::from(counted);
        self.issued = Some(Instant::now());
        let g = self.generation;
        (format!("{prefix}a{g}"), format!("{prefix}r{g}"))
    }

    /// Records a lead request with `token`; whether it is the access token in force and fresh
    /// (the settings' first token is good until the first refresh).
    pub(crate) fn lifetime(&self) -> Duration {
        self.lifetime.unwrap_or(LIFETIME)
    }

    pub(crate) fn accept(&mut self, prefix: &str, token: String) -> bool {
        let lifetime = self.lifetime();
        let fresh = self.issued.is_some_and(|at| at.elapsed() < lifetime);
        let ok =
            token == format!("{prefix}a{}", self.generation) && (fresh || self.generation == 0);
        self.requests.push((token, ok));
        ok
    }

    pub(crate) fn assert_no_expired_token_twice(&self) {
        for pair in self.requests.windows(2) {
            assert!(
                pair[0].1 || pair[1].1 || pair[0].0 != pair[1].0,
                "an expired token sent twice in a row: {pair:?}"
            );
        }
    }
}

pub(crate) type Shared = Arc<Mutex<Platform>>;

async fn refresh(
    State(p): State<Shared>,
    axum::Json(body): axum::Json<Value>,
) -> axum::Json<Value> {
    let mut p = p.lock().unwrap();
    let given = body["refresh_token"].as_str().unwrap_or_default();
    if !p.refreshable("", given) || body["app_id"] != "app-1" {
        return axum::Json(
            json!({"code": 40107, "message": "refresh_token is invalid or expired"}),
        );
    }
    let (access, refresh) = p.rotate("", true);
    axum::Json(json!({"code": 0, "message": "OK", "data": {
        "access_token": access, "expires_in": LIFETIME.as_secs(),
        "refresh_token": refresh, "refresh_token_expires_in": 2_591_999}}))
}

/// The auth code exchange: `grant-1` gives a new pair (a person authorized again).
async fn exchange(
    State(p): State<Shared>,
    axum::Json(body): axum::Json<Value>,
) -> axum::Json<Value> {
    let mut p = p.lock().unwrap();
    if body["auth_code"] != "grant-1"
        || body["grant_type"] != "auth_code"
        || body["app_id"] != "app-1"
    {
        return axum::Json(json!({"code": 40109, "message": "auth_code is invalid"}));
    }
    p.refuse = false;
    let (access, refresh) = p.rotate("", false);
    axum::Json(json!({"code": 0, "message": "OK", "data": {
        "access_token": access, "expires_in": LIFETIME.as_secs(),
        "refresh_token": refresh, "refresh_token_expires_in": 2_591_999}}))
}

async fn clues(State(p): State<Shared>, headers: HeaderMap) -> axum::Json<Value> {
    let mut p = p.lock().unwrap();
    let token = headers
        .get("access-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if !p.accept("", token) {
        return axum::Json(json!({"code": 40102, "message": "access token expired"}));
    }
    // One new lead every half second since the start: each poll sees all of them so far.
    let n = p
        .started
        .get_or_insert_with(Instant::now)
        .elapsed()
        .as_millis()
        / 500
        + 1;
    let list: Vec<Value> = (1..=n.min(200))
        .map(|i| {
            json!({"clue_id": format!("c{i}"), "name": format!("客户{i}"),
                        "telephone": format!("139{:08}", 10_000_000 + i), "clue_source": 1})
        })
        .collect();
    let total = list.len();
    axum::Json(json!({"code": 0, "message": "OK", "data": {"list": list,
        "page_info": {"page": 1, "page_size": 200, "total_number": total, "total_page": 1}}}))
}

fn config(port: u16) -> String {
    format!(
        "[[connectors]]\nname = \"douyin\"\ntype = \"oceanengine\"\n\
         access_token = \"a0\"\nrefresh_token = \"r0\"\napp_id = \"app-1\"\napp_secret = \"s\"\n\
         oauth_url = \"http://127.0.0.1:{port}/oauth2/refresh_token/\"\n\
         token_url = \"http://127.0.0.1:{port}/oauth2/access_token/\"\n\
         redirect_uri = \"https://crm.example.cn/oauth/callback\"\n\
         api_url = \"http://127.0.0.1:{port}/clue/get/\"\nadvertiser_ids = [1]\npage_size = 200\n\
         poll_interval = \"300ms\"\nsettle = \"0s\"\noverlap = \"1h\"\ninitial = \"1h\"\n"
    )
}

/// The platform ids of the leads published on `leads.clean`, one per event: delivery is at
/// least once, so a record sent again after a kill (the same `event_id`) counts once, as the
/// record contract tells consumers to count it.
pub(crate) fn published(gw: &Gateway) -> Vec<String> {
    let mut events = std::collections::HashSet::new();
    gw.spooled("leads.clean")
        .iter()
        .filter(|r| events.insert(r["event_id"].as_str().unwrap().to_owned()))
        .map(|r| r["source"]["external_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The generation of `connector`'s token file in `data` (0 without one).
pub(crate) fn generation(data: &std::path::Path, connector: &str) -> u64 {
    std::fs::read(data.join(format!("tokens/{connector}.json")))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["generation"].as_u64())
        .unwrap_or(0)
}

/// Every pair `platform` issued is in `connector`'s token file (which counts the configured pair
/// too). A kill while the platform has rotated a pair that is not on disk yet loses that pair:
/// the one window no client can close (see docs/connectors.md, "OAuth"). Tests kill when no pair
/// is in it, so they are about leadgate's own crash points.
pub(crate) fn settled(data: &std::path::Path, connector: &str, platform: &Shared) -> bool {
    generation(data, connector) == platform.lock().unwrap().generation + 1
}

/// `connector`'s health, as `GET /v1/connectors/{name}` answers (within 10 s: a gateway that
/// stops answering fails the test instead of hanging it).
pub(crate) async fn health(gw: &Gateway, connector: &str) -> Value {
    reqwest::Client::new()
        .get(gw.url(&format!("/v1/connectors/{connector}")))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls `connector`'s health until `done` holds (up to 30 s); that health.
pub(crate) async fn wait_health(
    gw: &Gateway,
    connector: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = health(gw, connector).await;
        if done(&st) {
            return st;
        }
        assert!(Instant::now() < deadline, "{connector}: {st}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `leadgate auth <connector> --config <dir>/auth.toml --data-dir <data> <args>`, the
/// settings written first.
pub(crate) fn auth(
    dir: &std::path::Path,
    settings: &str,
    data: &std::path::Path,
    connector: &str,
    args: &[&str],
) -> std::process::Output {
    let path = dir.join("auth.toml");
    std::fs::write(&path, settings).unwrap();
    std::process::Command::new(crate::support::BIN)
        .args(["auth", connector, "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

/// The standard output of a command that must have succeeded.
pub(crate) fn succeeded(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Waits (up to 30 s) until at least `want` of the leads whose platform id starts with `prefix`
/// are published, and checks that each was published once and that `platform` never got an
/// expired token twice in a row.
pub(crate) async fn every_lead_once(gw: &Gateway, prefix: &str, want: usize, platform: &Shared) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let ids = loop {
        let ids: Vec<String> = published(gw)
            .into_iter()
            .filter(|id| id.starts_with(prefix))
            .collect();
        if ids.len() >= want || Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(ids.len() >= want, "{prefix}: {} of {want} leads", ids.len());
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{prefix}: each lead once: {ids:?}");
    let p = platform.lock().unwrap();
    eprintln!(
        "{prefix}: {} refreshes, {} lead requests ({} with an expired token), {} leads",
        p.refreshes,
        p.requests.len(),
        p.requests.iter().filter(|r| !r.1).count(),
        ids.len()
    );
    p.assert_no_expired_token_twice();
}

/// Waits until `platform` has refreshed `n` times (up to 90 s).
pub(crate) async fn wait_refreshes(name: &str, platform: &Shared, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while platform.lock().unwrap().refreshes < n {
        assert!(
            Instant::now() < deadline,
            "{name}: only {} refreshes",
            platform.lock().unwrap().refreshes
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rotating_tokens_keep_a_connector_pulling_through_kills_and_stop_it_alone_when_refused() {
    let platform: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/oauth2/refresh_token/", axum::routing::post(refresh))
        .route("/oauth2/access_token/", axum::routing::post(exchange))
        .route("/clue/get/", axum::routing::get(clues))
        .with_state(platform.clone());
    let port = crate::support::serve_local(app).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("gw");
    let mut gw = Gateway::start(Some(&config(port)), &data);

    // Kill -9 right after a refresh: as soon as the rotated pair is in the token file.
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = generation(&data, "douyin");
    while generation(&data, "douyin") <= before.max(2) || !settled(&data, "douyin", &platform) {
        assert!(Instant::now() < deadline, "no refresh stored");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    gw.kill();
    let mut gw = Gateway::start(Some(&config(port)), &data);
    // Kill -9 between two refreshes.
    tokio::time::sleep(LIFETIME * 2 + Duration::from_millis(700)).await;
    while !settled(&data, "douyin", &platform) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    gw.kill();
    let gw = Gateway::start(Some(&config(port)), &data);

    // At least ten rotations in all, and pulling goes on.
    wait_refreshes("douyin", &platform, 10).await;
    let appeared = {
        let p = platform.lock().unwrap();
        (p.started.unwrap().elapsed().as_millis() / 500) as usize
    };
    every_lead_once(&gw, "c", appeared.saturating_sub(4), &platform).await;
    let st = health(&gw, "douyin").await;
    assert!(st["token"]["expires_at"].is_string(), "{st}");
    assert!(st["token"]["refresh_expires_at"].is_string(), "{st}");
    assert!(st["token"]["last_refresh_at"].is_string(), "{st}");
    let text = st.to_string();
    let g = platform.lock().unwrap().generation;
    assert!(
        !text.contains(&format!("\"a{g}\"")) && !text.contains(&format!("r{g}\"")),
        "no token in health: {st}"
    );

    // The refresh token is refused: once the access token in hand expires, the connector stops
    // and says what to do.
    platform.lock().unwrap().refuse = true;
    let st = wait_health(&gw, "douyin", |st| st["state"] == "stopped").await;
    let err = st["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("leadgate auth douyin"), "{st}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("tokens/douyin.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // A person authorizes again with `leadgate auth`, pasting the address they were sent back
    // to: the running gateway takes the new tokens and pulls again, without a restart.
    let settings = config(port);
    let auth = |code: &str| auth(dir.path(), &settings, &data, "douyin", &["--code", code]);
    let stdout = succeeded(&auth(
        "https://crm.example.cn/oauth/callback?auth_code=grant-1&state=x",
    ));
    assert!(
        stdout.contains("app_id=app-1") && stdout.contains("redirect_uri=https"),
        "{stdout}"
    );
    assert!(
        stdout.contains("stored new tokens for `douyin`"),
        "{stdout}"
    );
    let before = published(&gw).len();
    wait_health(&gw, "douyin", |st| {
        st["state"] == "following" && published(&gw).len() > before
    })
    .await;
    let bad = auth("wrong");
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("40109"), "{stderr}");
}

/// 腾讯广告: `GET oauth/token` rotates the pair; `leads_list/get` takes the token as a parameter
/// and answers 11000 for an expired one.
type TencentShared = Arc<Mutex<Platform>>;

async fn tencent_token(
    State(t): State<TencentShared>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> axum::Json<Value> {
    let mut t = t.lock().unwrap();
    let given = q
        .get("refresh_token")
        .map(String::as_str)
        .unwrap_or_default();
    let grant = q.get("grant_type").map(String::as_str);
    if grant == Some("authorization_code") {
        // `leadgate auth`: the code `grant-q`, with the registered redirect address.
        if q.get("authorization_code").map(String::as_str) != Some("grant-q")
            || q.get("redirect_uri").map(String::as_str) != Some("https://crm.example.cn/cb")
        {
            return axum::Json(json!({"code": 11009, "message": "authorization code expired"}));
        }
        t.refuse = false;
    } else if !t.refreshable("t", given)
        || grant != Some("refresh_token")
        || q.get("client_id").map(String::as_str) != Some("1110000001")
    {
        return axum::Json(json!({"code": 11012, "message": "refresh token expired"}));
    }
    let (access, refresh) = t.rotate("t", true);
    axum::Json(json!({"code": 0, "message": "", "data": {
        "access_token": access, "refresh_token": refresh,
        "access_token_expires_in": LIFETIME.as_secs(), "refresh_token_expires_in": 2_592_000}}))
}

async fn tencent_leads(
    State(t): State<TencentShared>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> axum::Json<Value> {
    let mut t = t.lock().unwrap();
    let token = q.get("access_token").cloned().unwrap_or_default();
    if !t.accept("t", token) {
        return axum::Json(json!({"code": 11000, "message": "access token expired"}));
    }
    let created = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_secs(120))
        .unwrap()
        .in_tz("Asia/Shanghai")
        .unwrap()
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string();
    let leads: Vec<Value> = (1..=3)
        .map(|n| {
            json!({"leads_id": 7000 + n, "leads_name": format!("客户{n}"),
                        "leads_telephone": format!("1350000300{n}"), "leads_create_time": created})
        })
        .collect();
    axum::Json(
        json!({"code": 0, "message": "", "data": {"leads_info": leads,
        "page_info": {"page": 1, "page_size": 100, "total_number": 3, "total_page": 1}}}),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn tencent_tokens_rotate_through_a_kill_and_a_refusal_stops_the_connector() {
    let tencent: TencentShared = Arc::default();
    let app = axum::Router::new()
        .route("/oauth/token", axum::routing::get(tencent_token))
        .route("/v3.0/leads_list/get", axum::routing::get(tencent_leads))
        .with_state(tencent.clone());
    let port = crate::support::serve_local(app).await;
    let config = format!(
        "[[connectors]]\nname = \"qq-ads\"\ntype = \"tencent\"\naccess_token = \"ta0\"\n\
         refresh_token = \"tr0\"\nclient_id = \"1110000001\"\nclient_secret = \"cs\"\n\
         oauth_url = \"http://127.0.0.1:{port}/oauth/token\"\naccount_id = 25610\n\
         redirect_uri = \"https://crm.example.cn/cb\"\n\
         api_url = \"http://127.0.0.1:{port}/v3.0/leads_list/get\"\npoll_interval = \"300ms\"\n\
         initial = \"1d\"\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("gw");
    let mut gw = Gateway::start(Some(&config), &data);
    // Kill -9 right after a refresh answer was stored.
    wait_refreshes("tencent", &tencent, 3).await;
    while !settled(&data, "qq-ads", &tencent) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    gw.kill();
    let gw = Gateway::start(Some(&config), &data);
    wait_refreshes("tencent", &tencent, 10).await;
    gw.wait_spooled("leads.clean", 3, Duration::from_secs(20));
    let mut ids = published(&gw);
    ids.sort();
    assert_eq!(ids, ["7001", "7002", "7003"], "each lead once");
    tencent.lock().unwrap().assert_no_expired_token_twice();
    tencent.lock().unwrap().refuse = true;
    let st = wait_health(&gw, "qq-ads", |st| st["state"] == "stopped").await;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    assert!(
        text(&st["last_error"]).contains("leadgate auth qq-ads"),
        "{st}"
    );
    assert!(
        text(&st["token"]["last_refresh_error"]).contains("11012"),
        "{st}"
    );
    // Re-authorized with `leadgate auth`: the running gateway pulls again.
    let code = "https://crm.example.cn/cb?authorization_code=grant-q&state=s";
    let stdout = succeeded(&auth(
        dir.path(),
        &config,
        &data,
        "qq-ads",
        &["--code", code],
    ));
    assert!(
        stdout.contains("developers.e.qq.com/oauth/authorize?client_id=1110000001"),
        "{stdout}"
    );
    resumed(&gw, "qq-ads", &tencent).await;
}

/// Waits until `connector` follows again and `platform` accepted one of its requests since now.
pub(crate) async fn resumed(gw: &Gateway, connector: &str, platform: &Shared) {
    let requests = platform.lock().unwrap().requests.len();
    wait_health(gw, connector, |st| {
        st["state"] == "following"
            && platform.lock().unwrap().requests[requests..]
                .iter()
                .any(|r| r.1)
    })
    .await;
}
