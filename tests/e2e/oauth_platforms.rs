//! Credentials that stay alive on LinkedIn, TikTok and 百度 at once, and Meta's `leadgate auth`:
//! stand-ins of each platform's OAuth and lead API whose access tokens live 2 seconds and rotate
//! with their refresh token on every refresh (an old pair is refused with the platform's own
//! answers), through the real binary, killed with -9 right after a refresh and between two.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::oauth::{
    LIFETIME, Platform, Shared, auth, every_lead_once, generation, health, resumed, settled,
    succeeded, wait_health, wait_refreshes,
};
use crate::support::Gateway;

/// The three platforms' sides.
#[derive(Clone, Default)]
struct Stand {
    linkedin: Shared,
    tiktok: Shared,
    baidu: Shared,
    /// When LinkedIn's refresh token ends: refreshing does not move it.
    linkedin_refresh_ends: Option<Instant>,
}

/// Leads appear every half second from the first request on: `n` so far.
fn appeared(p: &mut Platform) -> usize {
    let n = p
        .started
        .get_or_insert_with(Instant::now)
        .elapsed()
        .as_millis()
        / 500
        + 1;
    (n as usize).min(150)
}

fn bearer(headers: &HeaderMap, name: &str) -> String {
    let value = headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    value.strip_prefix("Bearer ").unwrap_or(value).to_owned()
}

/// LinkedIn's token endpoint: form-encoded; `invalid_grant` for an old or refused refresh token;
/// the refresh token's remaining lifetime counts down to a fixed end.
async fn linkedin_token(
    State(s): State<Stand>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> axum::response::Response {
    let mut p = s.linkedin.lock().unwrap();
    let field = |k: &str| form.get(k).map(String::as_str);
    let refused = || {
        (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant",
                "error_description": "Token has been expired or revoked."})),
        )
            .into_response()
    };
    if field("client_id") != Some("li-app") || field("client_secret") != Some("li-secret") {
        return (
            axum::http::StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    match field("grant_type") {
        Some("refresh_token") if p.refreshable("l", field("refresh_token").unwrap_or_default()) => {
        }
        Some("authorization_code")
            if field("code") == Some("li-grant")
                && field("redirect_uri") == Some("https://crm.example.com/li") =>
        {
            p.refuse = false;
        }
        _ => return refused(),
    }
    let (access, refresh) = p.rotate("l", field("grant_type") == Some("refresh_token"));
    let left = s
        .linkedin_refresh_ends
        .unwrap()
        .saturating_duration_since(Instant::now())
        .as_secs();
    axum::Json(
        json!({"access_token": access, "expires_in": p.lifetime().as_secs(),
        "refresh_token": refresh, "refresh_token_expires_in": left,
        "scope": "r_marketing_leadgen_automation"}),
    )
    .into_response()
}

async fn linkedin_responses(
    State(s): State<Stand>,
    headers: HeaderMap,
) -> axum::response::Response {
    let mut p = s.linkedin.lock().unwrap();
    if !p.accept("l", bearer(&headers, "authorization")) {
        return (
            axum::http::StatusCode::UNAUTHORIZED,
            axum::Json(
                json!({"serviceErrorCode": 65601, "code": "REVOKED_ACCESS_TOKEN",
                "message": "The token used in the request has been revoked by the user",
                "status": 401}),
            ),
        )
            .into_response();
    }
    let now = jiff::Timestamp::now().as_millisecond();
    let elements: Vec<Value> = (1..=appeared(&mut p))
        .map(|i| {
            json!({"id": format!("l{i}"), "submittedAt": now - 60_000, "testLead": false,
                "formResponse": {"answers": [
                    {"questionId": 1, "answerDetails": {"textQuestionAnswer":
                        {"answer": format!("lead{i}@example.com")}}}]}})
        })
        .collect();
    axum::Json(json!({"elements": elements, "paging": {"start": 0, "count": 200}})).into_response()
}

/// TikTok: `{code, message, data}` answers; 40104 for a refused refresh token, 40105 for an
/// expired access token.
async fn tiktok_refresh(
    State(s): State<Stand>,
    axum::Json(body): axum::Json<Value>,
) -> axum::Json<Value> {
    let mut p = s.tiktok.lock().unwrap();
    let given = body["refresh_token"].as_str().unwrap_or_default();
    if body["app_id"] != "tt-app" || body["secret"] != "tt-secret" || !p.refreshable("k", given) {
        return axum::Json(json!({"code": 40104, "message": "The refresh token has expired."}));
    }
    let (access, refresh) = p.rotate("k", true);
    axum::Json(json!({"code": 0, "message": "OK", "data": {
        "access_token": access, "expires_in": p.lifetime().as_secs(),
        "refresh_token": refresh, "refresh_token_expires_in": 31_536_000}}))
}

fn tiktok_expired() -> axum::response::Response {
    axum::Json(json!({"code": 40105, "message": "Access token is invalid"})).into_response()
}

async fn tiktok_task(State(s): State<Stand>, headers: HeaderMap) -> axum::response::Response {
    let mut p = s.tiktok.lock().unwrap();
    if !p.accept("k", bearer(&headers, "access-token")) {
        return tiktok_expired();
    }
    let n = appeared(&mut p);
    axum::Json(json!({"code": 0, "message": "OK", "data": {"task_id": format!("t{n}")}}))
        .into_response()
}

async fn tiktok_download(
    State(s): State<Stand>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> axum::response::Response {
    let mut p = s.tiktok.lock().unwrap();
    if !p.accept("k", bearer(&headers, "access-token")) {
        return tiktok_expired();
    }
    let n: usize = q["task_id"].trim_start_matches('t').parse().unwrap();
    let mut csv = String::from("lead_id,create_time,name,phone_number\n");
    for i in 1..=n {
        csv.push_str(&format!(
            "k{i},2026-12-01 10:00:00,顾客{i},136{:08}\n",
            20_000_000 + i
        ));
    }
    ([("content-type", "text/csv")], csv).into_response()
}

/// 百度: the refresh at `oauth/refreshToken` with Baidu's own key names; a bad access token is
/// `header.desc = failure` with the code in `header.failures`.
async fn baidu_refresh(
    State(s): State<Stand>,
    axum::Json(body): axum::Json<Value>,
) -> axum::Json<Value> {
    let mut p = s.baidu.lock().unwrap();
    let given = body["refreshToken"].as_str().unwrap_or_default();
    if body["appId"] != "bd-app"
        || body["secretKey"] != "bd-secret"
        || body["userId"] != 42
        || !p.refreshable("b", given)
    {
        return axum::Json(json!({"code": 110, "message": "refreshToken is invalid"}));
    }
    let (access, refresh) = p.rotate("b", true);
    axum::Json(json!({"code": 0, "message": "success", "data": {
        "accessToken": access, "refreshToken": refresh, "expiresIn": p.lifetime().as_secs(),
        "refreshExpiresIn": 2_592_000, "userId": 42, "openId": "o-42"}}))
}

async fn baidu_notices(
    State(s): State<Stand>,
    axum::Json(body): axum::Json<Value>,
) -> axum::Json<Value> {
    let mut p = s.baidu.lock().unwrap();
    let token = body["header"]["accessToken"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if body["header"]["userName"] != "bd-user" || !p.accept("b", token) {
        return axum::Json(json!({"header": {"desc": "failure", "status": 2,
            "failures": [{"code": 8206, "message": "accessToken invalid"}]}, "body": {}}));
    }
    let data: Vec<Value> = (1..=appeared(&mut p))
        .map(|i| {
            json!({"clueId": format!("b{i}"), "solutionType": "form", "name": format!("用户{i}"),
                "phone": format!("137{:08}", 30_000_000 + i), "area": "江苏省南京市"})
        })
        .collect();
    axum::Json(
        json!({"header": {"desc": "success", "failures": [], "status": 0},
        "body": {"data": data}}),
    )
}

fn config(port: u16) -> String {
    let base = format!("http://127.0.0.1:{port}");
    format!(
        "[[connectors]]\nname = \"li\"\ntype = \"linkedin\"\nclient_secret = \"li-secret\"\n\
         client_id = \"li-app\"\naccess_token = \"la0\"\nrefresh_token = \"lr0\"\n\
         oauth_url = \"{base}/li/oauth/v2/accessToken\"\nredirect_uri = \"https://crm.example.com/li\"\n\
         api_url = \"{base}/li/rest\"\nowner = \"urn:li:sponsoredAccount:507404993\"\n\
         poll_interval = \"300ms\"\npage_size = 200\n\n\
         [[connectors]]\nname = \"tt\"\ntype = \"tiktok\"\naccess_token = \"ka0\"\n\
         refresh_token = \"kr0\"\napp_id = \"tt-app\"\napp_secret = \"tt-secret\"\n\
         oauth_url = \"{base}/tt/oauth2/refresh_token/\"\napi_url = \"{base}/tt\"\n\
         advertiser_id = \"adv-1\"\npage_ids = [\"p1\"]\npoll_interval = \"300ms\"\n\n\
         [[connectors]]\nname = \"bd\"\ntype = \"baidu\"\nuser_name = \"bd-user\"\n\
         access_token = \"ba0\"\nrefresh_token = \"br0\"\napp_id = \"bd-app\"\n\
         secret_key = \"bd-secret\"\nuser_id = 42\noauth_url = \"{base}/bd/oauth/refreshToken\"\n\
         api_url = \"{base}/bd/getNoticeList\"\nexpired_codes = [8206]\npoll_interval = \"300ms\"\n"
    )
}

async fn wait_all_refreshes(platforms: &[(&str, &Shared)], n: u64) {
    for (name, p) in platforms {
        wait_refreshes(name, p, n).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn linkedin_tiktok_and_baidu_tokens_rotate_through_kills_and_a_refusal_stops_one_alone() {
    // Lifetimes of 2, 3 and 4 seconds: the three refresh out of step.
    let lived = |secs: u64| {
        std::sync::Arc::new(std::sync::Mutex::new(Platform {
            lifetime: Some(Duration::from_secs(secs)),
            ..Platform::default()
        }))
    };
    let stand = Stand {
        linkedin: lived(2),
        tiktok: lived(3),
        baidu: lived(4),
        linkedin_refresh_ends: Some(Instant::now() + Duration::from_secs(5 * 24 * 3600)),
    };
    let app = axum::Router::new()
        .route(
            "/li/oauth/v2/accessToken",
            axum::routing::post(linkedin_token),
        )
        .route(
            "/li/rest/leadFormResponses",
            axum::routing::get(linkedin_responses),
        )
        .route(
            "/tt/oauth2/refresh_token/",
            axum::routing::post(tiktok_refresh),
        )
        .route("/tt/page/lead/task/", axum::routing::post(tiktok_task))
        .route(
            "/tt/page/lead/task/download/",
            axum::routing::get(tiktok_download),
        )
        .route("/bd/oauth/refreshToken", axum::routing::post(baidu_refresh))
        .route("/bd/getNoticeList", axum::routing::post(baidu_notices))
        .with_state(stand.clone());
    let port = crate::support::serve_local(app).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("gw");
    let platforms = [
        ("linkedin", &stand.linkedin),
        ("tiktok", &stand.tiktok),
        ("baidu", &stand.baidu),
    ];
    let mut gw = Gateway::start(Some(&config(port)), &data);

    // Kills come when no platform has a rotated pair that is not on disk yet (see `settled`).
    let all_settled = |stand: &Stand| {
        [
            ("li", &stand.linkedin),
            ("tt", &stand.tiktok),
            ("bd", &stand.baidu),
        ]
        .iter()
        .all(|(c, p)| settled(&data, c, p))
    };
    // Kill -9 right after a refresh: as soon as each platform's rotated pair is in its file.
    for connector in ["li", "tt", "bd"] {
        let deadline = Instant::now() + Duration::from_secs(30);
        let before = generation(&data, connector).max(1);
        while generation(&data, connector) <= before || !all_settled(&stand) {
            assert!(Instant::now() < deadline, "{connector}: no refresh stored");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        gw.kill();
        gw = Gateway::start(Some(&config(port)), &data);
    }
    // Kill -9 between two refreshes.
    tokio::time::sleep(LIFETIME * 2 + Duration::from_millis(700)).await;
    while !all_settled(&stand) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    gw.kill();
    let gw = Gateway::start(Some(&config(port)), &data);

    wait_all_refreshes(&platforms, 3).await;
    let li_refresh_end = health(&gw, "li").await["token"]["refresh_expires_at"].clone();
    // At least ten rotations each, and pulling goes on.
    wait_all_refreshes(&platforms, 10).await;
    for (prefix, p) in [
        ("l", &stand.linkedin),
        ("k", &stand.tiktok),
        ("b", &stand.baidu),
    ] {
        let want = appeared(&mut p.lock().unwrap()).saturating_sub(4);
        every_lead_once(&gw, prefix, want, p).await;
    }

    // Health: expiries and the last refresh, never a token. LinkedIn's refresh token keeps its
    // end through every refresh, and ends within 7 days: a person must re-authorize soon.
    let li = health(&gw, "li").await;
    assert!(li["token"]["expires_at"].is_string(), "{li}");
    assert!(li["token"]["last_refresh_at"].is_string(), "{li}");
    let at = |v: &Value| {
        v.as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_second()
    };
    assert!(
        (at(&li["token"]["refresh_expires_at"]) - at(&li_refresh_end)).abs() <= 2,
        "the refresh token's end moved: {li_refresh_end} -> {li}"
    );
    assert_eq!(li["token"]["refresh_expiring_soon"], true, "{li}");
    let tt = health(&gw, "tt").await;
    assert_ne!(tt["token"]["refresh_expiring_soon"], true, "{tt}");
    let all = format!("{li}{tt}{}", health(&gw, "bd").await);
    for (prefix, p) in [
        ("l", &stand.linkedin),
        ("k", &stand.tiktok),
        ("b", &stand.baidu),
    ] {
        let g = p.lock().unwrap().generation;
        assert!(
            !all.contains(&format!("{prefix}a{g}")) && !all.contains(&format!("{prefix}r{g}")),
            "no token in health: {all}"
        );
    }

    // LinkedIn refuses its refresh token: LinkedIn stops and says what to do; TikTok and 百度
    // keep refreshing and pulling.
    stand.linkedin.lock().unwrap().refuse = true;
    let li = wait_health(&gw, "li", |st| st["state"] == "stopped").await;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    assert!(text(&li["last_error"]).contains("leadgate auth li"), "{li}");
    assert!(
        text(&li["token"]["last_refresh_error"]).contains("invalid_grant"),
        "{li}"
    );
    let (tt_before, bd_before) = (
        stand.tiktok.lock().unwrap().refreshes,
        stand.baidu.lock().unwrap().refreshes,
    );
    wait_all_refreshes(
        &[("tiktok", &stand.tiktok), ("baidu", &stand.baidu)],
        tt_before.max(bd_before) + 2,
    )
    .await;
    for connector in ["tt", "bd"] {
        let st = health(&gw, connector).await;
        assert_ne!(st["state"], "stopped", "{st}");
    }

    // Re-authorized with `leadgate auth li`: the running gateway pulls again.
    let code = "https://crm.example.com/li?code=li-grant&state=s";
    let stdout = succeeded(&auth(
        dir.path(),
        &config(port),
        &data,
        "li",
        &["--code", code],
    ));
    assert!(
        stdout.contains("linkedin.com/oauth/v2/authorization?response_type=code&client_id=li-app"),
        "{stdout}"
    );
    resumed(&gw, "li", &stand.linkedin).await;
}

/// Meta's Graph: the code and token exchanges, the page token, `debug_token`, and a form's
/// leads, readable only with the page token.
#[derive(Clone, Default)]
struct Graph {
    /// Every token exchange, as `(grant, given)`.
    exchanges: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

async fn graph_token(
    State(g): State<Graph>,
    Query(q): Query<HashMap<String, String>>,
) -> axum::response::Response {
    let field = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
    let bad = |why: &str| {
        (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"message": why, "type": "OAuthException", "code": 190}})),
        )
            .into_response()
    };
    if field("client_id") != "meta-app" || field("client_secret") != "meta-secret" {
        return bad("Error validating client secret.");
    }
    let mut log = g.exchanges.lock().unwrap();
    if let Some(code) = q.get("code") {
        log.push(("code".into(), code.clone()));
        if code != "meta-code" || field("redirect_uri") != "https://crm.example.com/fb" {
            return bad("Invalid verification code format.");
        }
        return axum::Json(
            json!({"access_token": "short-from-code", "token_type": "bearer",
            "expires_in": 3600}),
        )
        .into_response();
    }
    let short = field("fb_exchange_token");
    log.push((field("grant_type").into(), short.into()));
    if field("grant_type") != "fb_exchange_token" || !short.starts_with("short-") {
        return bad("Error validating access token: Session has expired");
    }
    axum::Json(
        json!({"access_token": format!("long-{short}"), "token_type": "bearer",
        "expires_in": 5_183_944}),
    )
    .into_response()
}

async fn graph_node(
    Path(node): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> axum::response::Response {
    let token = q
        .get("access_token")
        .cloned()
        .unwrap_or_else(|| bearer(&headers, "authorization"));
    match node.as_str() {
        "debug_token" => {
            let soon = jiff::Timestamp::now().as_second() + 10 * 24 * 3600;
            let input = q.get("input_token").map(String::as_str).unwrap_or_default();
            axum::Json(json!({"data": {"app_id": "meta-app", "type": "PAGE",
                "is_valid": input.starts_with("page-"), "expires_at": soon,
                "data_access_expires_at": soon + 80 * 24 * 3600}}))
            .into_response()
        }
        "1357" if token.starts_with("long-") => {
            axum::Json(json!({"access_token": format!("page-{token}"), "id": "1357"}))
                .into_response()
        }
        _ => (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"message": "Error validating access token",
                "type": "OAuthException", "code": 190}})),
        )
            .into_response(),
    }
}

async fn graph_leads(Path(form): Path<String>, headers: HeaderMap) -> axum::response::Response {
    if !bearer(&headers, "authorization").starts_with("page-") || form != "2468" {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"message": "Error validating access token: The session has been invalidated",
                "type": "OAuthException", "code": 190, "error_subcode": 460}})),
        )
            .into_response();
    }
    let leads: Vec<Value> = (1..=3)
        .map(|i| {
            json!({"id": format!("m{i}"), "created_time": "2026-12-01T09:00:00+0000",
                "field_data": [{"name": "email", "values": [format!("m{i}@example.com")]}]})
        })
        .collect();
    axum::Json(json!({"data": leads, "paging": {}})).into_response()
}

#[tokio::test(flavor = "multi_thread")]
async fn meta_is_authorized_with_a_long_lived_page_token_that_the_running_gateway_picks_up() {
    let graph = Graph::default();
    let app = axum::Router::new()
        .route("/v21.0/oauth/access_token", axum::routing::get(graph_token))
        .route("/v21.0/{form}/leads", axum::routing::get(graph_leads))
        .route("/v21.0/{node}", axum::routing::get(graph_node))
        .with_state(graph.clone());
    let port = crate::support::serve_local(app).await;
    let config = format!(
        "[[connectors]]\nname = \"fb\"\ntype = \"meta\"\napp_secret = \"meta-secret\"\n\
         verify_token = \"v\"\naccess_token = \"stale\"\napp_id = \"meta-app\"\n\
         page_id = \"1357\"\nredirect_uri = \"https://crm.example.com/fb\"\n\
         graph_url = \"http://127.0.0.1:{port}/v21.0\"\nforms = [\"2468\"]\n\
         poll_interval = \"300ms\"\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("gw");
    let gw = Gateway::start(Some(&config), &data);
    // The configured token is dead: the connector stops and says how to get a new one.
    let st = wait_health(&gw, "fb", |st| st["state"] == "stopped").await;
    assert!(
        st["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("leadgate auth fb"),
        "{st}"
    );
    let auth = |args: &[&str]| auth(dir.path(), &config, &data, "fb", args);
    // A short-lived token that Meta no longer takes: a clear error, nothing stored.
    let bad = auth(&["--token", "expired-user-token"]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("190") && stderr.contains("Session has expired"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&bad.stdout).contains("stored"),
        "{stderr}"
    );

    // The login dialog's code: exchanged for a short-lived token, that for a long-lived one, that
    // for the page's token.
    let stdout = succeeded(&auth(&[
        "--code",
        "https://crm.example.com/fb?code=meta-code&state=s#_=_",
    ]));
    assert!(
        stdout.contains(
            "dialog/oauth?client_id=meta-app&redirect_uri=https%3A%2F%2Fcrm.example.com%2Ffb"
        ) && stdout.contains("leads_retrieval"),
        "{stdout}"
    );
    let grants: Vec<String> = graph
        .exchanges
        .lock()
        .unwrap()
        .iter()
        .map(|(g, t)| format!("{g}:{t}"))
        .collect();
    assert!(
        grants.ends_with(&[
            "code:meta-code".to_owned(),
            "fb_exchange_token:short-from-code".to_owned()
        ]),
        "{grants:?}"
    );
    let file = std::fs::read_to_string(data.join("tokens/fb.json")).unwrap();
    assert!(file.contains("page-long-short-from-code"), "{file}");

    // The running gateway takes the page token, reads the form's leads, and its health warns
    // that the token ends within 14 days.
    let clean = gw.wait_spooled("leads.clean", 3, Duration::from_secs(30));
    let mut ids: Vec<&str> = clean
        .iter()
        .map(|r| r["source"]["external_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["m1", "m2", "m3"]);
    let st = wait_health(&gw, "fb", |st| {
        st["state"] == "following" && st["token"]["expiring_soon"] == true
    })
    .await;
    assert!(
        !st.to_string().contains("page-long"),
        "no token in health: {st}"
    );
}
