//! Assignment rules from outside: the API (every endpoint and error), and leads posted to a
//! webhook coming out of the real broker with the expected owner, rules changing live.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::support::{Broker, Gateway, consume, kafka_config, post_json};

const TOKEN: &str = "assign-token-0123456789";

struct Api {
    http: Client,
    base: String,
}

impl Api {
    fn new(gw: &Gateway) -> Self {
        Self {
            http: Client::new(),
            base: gw.url("/v1/assignment"),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> (StatusCode, Option<String>, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(m) = if_match {
            req = req.header("If-Match", m);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let etag = resp
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, etag, body)
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Option<String>, Value) {
        self.send(reqwest::Method::POST, path, Some(body), None)
            .await
    }

    async fn put(
        &self,
        path: &str,
        body: Value,
        if_match: Option<&str>,
    ) -> (StatusCode, Option<String>, Value) {
        self.send(reqwest::Method::PUT, path, Some(body), if_match)
            .await
    }
}

fn config(extra: &str) -> String {
    format!(
        "[api]\ntoken = \"{TOKEN}\"\n{extra}\n[[connectors]]\nname = \"webform\"\ntype = \"webhook\"\n"
    )
}

async fn team_of_three(api: &Api) {
    for o in ["ann", "bob", "cai"] {
        let (s, etag, _) = api.post("/owners", json!({"id": o, "name": o})).await;
        assert_eq!(s, StatusCode::CREATED);
        assert!(etag.is_some());
    }
    let (s, _, _) = api
        .post(
            "/teams",
            json!({"id": "south", "members": [{"owner": "ann"}, {"owner": "bob"}, {"owner": "cai"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_assignment_api_checks_versions_and_explains() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(Some(&config("")), &dir.path().join("data"));
    let api = Api::new(&gw);

    // The token is required.
    let r = api
        .http
        .get(format!("{}/rules", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    team_of_three(&api).await;
    let (s, _, b) = api.post("/owners", json!({"id": "ann"})).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("assignment.exists"))
    );
    let (s, _, b) = api
        .post(
            "/teams",
            json!({"id": "north", "members": [{"owner": "ann"}, {"owner": "zed"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(b["error"]["field"], "members[1].owner");

    let (s, _, b) = api
        .post(
            "/rules",
            json!({"id": "bad", "priority": 1, "conditions": [{"op": "regex", "field": "contact.city", "pattern": "(["}],
                   "action": {"type": "team", "team": "nowhere", "strategy": "round_robin"}}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let fields: Vec<&str> = b["error"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["conditions[0].pattern", "action.team"]);

    let vip = json!({"id": "vip", "priority": 10,
        "conditions": [{"op": "range", "field": "custom.budget", "min": 100000}],
        "action": {"type": "owner", "owner": "cai"}});
    let south = json!({"id": "south", "priority": 20,
        "conditions": [{"op": "in", "field": "contact.province", "values": ["广东省", "广西壮族自治区"]}],
        "action": {"type": "team", "team": "south", "strategy": "round_robin"}});
    assert_eq!(api.post("/rules", vip).await.0, StatusCode::CREATED);
    let (_, etag, _) = api.post("/rules", south.clone()).await;
    let etag = etag.unwrap();

    // Optimistic concurrency.
    let mut changed = south.clone();
    changed["priority"] = json!(15);
    let put = |body: Value, m: Option<&str>| {
        let api = &api;
        let m = m.map(str::to_owned);
        async move { api.put("/rules/south", body, m.as_deref()).await }
    };
    let (s, _, b) = put(changed.clone(), Some("\"999999\"")).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (
            StatusCode::PRECONDITION_FAILED,
            Some("assignment.version_mismatch")
        )
    );
    let (s, _, _) = put(changed.clone(), Some("not-an-etag")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, new_etag, b) = put(changed.clone(), Some(&etag)).await;
    assert_eq!(s, StatusCode::OK);
    assert_ne!(new_etag.as_deref(), Some(etag.as_str()));
    assert_eq!(b["priority"], 15);
    let (s, _, _) = put(changed, Some(&etag)).await;
    assert_eq!(
        s,
        StatusCode::PRECONDITION_FAILED,
        "the old ETag is stale now"
    );
    let (s, _, b) = api
        .put(
            "/rules/other",
            json!({"id": "south", "priority": 1, "action": {"type": "owner", "owner": "ann"}}),
            None,
        )
        .await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("id"))
    );

    let (s, _, b) = api.send(reqwest::Method::GET, "/rules", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let ids: Vec<&str> = b
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["vip", "south"], "in priority order");
    let (s, etag, b) = api
        .send(reqwest::Method::GET, "/owners/ann", None, None)
        .await;
    assert_eq!((s, b["open_leads"].as_u64()), (StatusCode::OK, Some(0)));
    assert!(etag.is_some());
    assert_eq!(
        api.send(reqwest::Method::GET, "/owners/nobody", None, None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.send(reqwest::Method::GET, "/widgets", None, None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    // Deleting what a rule or team uses is refused.
    let (s, _, b) = api
        .send(reqwest::Method::DELETE, "/owners/cai", None, None)
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("assignment.in_use"))
    );
    assert_eq!(
        api.send(reqwest::Method::DELETE, "/rules/nothing", None, None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    // Bad bodies.
    let r = api
        .http
        .post(format!("{}/owners", api.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        api.post("/owners", json!({"name": "no id"})).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let (s, _, b) = api
        .post("/owners", json!({"id": "dan", "capacity": "lots"}))
        .await;
    assert_eq!(
        (s, b["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("capacity"))
    );

    // Preview: which rule, who, and why the earlier rule did not match.
    let (s, _, b) = api
        .post(
            "/preview",
            json!({"lead": {"name": "张三", "phone": "0755-8600 1234", "budget": "5000"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["assignment"]["rule_id"], "south");
    assert_eq!(b["assignment"]["owner"], "ann");
    assert_eq!(b["rules"][0]["rule_id"], "vip");
    assert_eq!(b["rules"][0]["matched"], false);
    assert!(
        b["rules"][0]["why_not"][0]
            .as_str()
            .unwrap()
            .contains("custom.budget")
    );
    let (s, _, b) = api
        .post("/preview", json!({"lead": {"phone": "13800138000"}}))
        .await;
    assert_eq!(
        (s, &b["assignment"]),
        (StatusCode::OK, &Value::Null),
        "北京 matches no rule"
    );
    let (s, _, _) = api.post("/preview", json!({"lead": "no"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // A preview moves no counter: ann is still next.
    let (_, _, b) = api
        .post("/preview", json!({"lead": {"phone": "0755-8600 1234"}}))
        .await;
    assert_eq!(b["assignment"]["owner"], "ann");

    // The audit log, in order.
    let (s, _, b) = api
        .send(reqwest::Method::GET, "/audit?after=0&limit=3", None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let entries = b["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["action"], "create");
    assert_eq!(entries[0]["id"], "ann");
    let next = b["next_after"].as_u64().unwrap();
    let (_, _, b) = api
        .send(
            reqwest::Method::GET,
            &format!("/audit?after={next}&limit=100"),
            None,
            None,
        )
        .await;
    assert!(
        b["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "update" && e["id"] == "south")
    );
    assert_eq!(
        api.send(reqwest::Method::GET, "/audit?after=x", None, None)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    // Newest first, two at a time, down to the first entry: the same entries reversed.
    let (_, _, all) = api
        .send(reqwest::Method::GET, "/audit?limit=1000", None, None)
        .await;
    let mut oldest_first: Vec<u64> = all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    let mut newest_first = Vec::new();
    let mut page = "/audit?order=newest&limit=2".to_owned();
    loop {
        let (s, _, b) = api.send(reqwest::Method::GET, &page, None, None).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        newest_first.extend(
            b["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["seq"].as_u64().unwrap()),
        );
        match b["next_before"].as_u64() {
            Some(before) => page = format!("/audit?before={before}&limit=2"),
            None => break,
        }
    }
    oldest_first.reverse();
    assert_eq!(newest_first, oldest_first);
    let (s, _, b) = api
        .send(
            reqwest::Method::GET,
            "/audit?order=newest&after=3",
            None,
            None,
        )
        .await;
    assert_eq!(
        (s, &b["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("after"))
    );

    let doc = crate::support::get_json(&api.http, &gw.url("/openapi.json")).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/assignment/rules/{id}"]["put"].is_object());
    assert!(doc["components"]["schemas"]["Condition"].is_object());
}

#[tokio::test(flavor = "multi_thread")]
async fn leads_come_out_of_the_broker_with_their_owner() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let text = kafka_config(&broker.brokers(), &format!("[api]\ntoken = \"{TOKEN}\"\n"));
    let gw = Gateway::start(Some(&text), &dir.path().join("data"));
    let api = Api::new(&gw);
    team_of_three(&api).await;
    let (s, _, _) = api
        .post(
            "/rules",
            json!({"id": "south", "priority": 10,
                "conditions": [{"op": "eq", "field": "contact.province", "value": "广东省"}],
                "action": {"type": "team", "team": "south", "strategy": "round_robin"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let http = Client::new();
    let url = gw.url("/v1/webhooks/webform");
    let mut posted = Vec::new();
    for i in 0..6 {
        let lead = json!({"name": format!("客户{i}"), "phone": format!("0755-8600 12{i:02}")});
        posted.push(crate::support::accepted(post_json(&http, &url, &lead).await).await);
    }
    // 北京: no rule matches.
    crate::support::accepted(post_json(&http, &url, &json!({"phone": "010-6552 9988"})).await)
        .await;
    let clean = consume(&broker.brokers(), "leads.clean", 7, Duration::from_secs(30));
    assert_eq!(clean.len(), 7);
    let owners: Vec<&str> = clean[..6]
        .iter()
        .map(|m| m.value["assignment"]["owner"].as_str().unwrap())
        .collect();
    assert_eq!(owners, ["ann", "bob", "cai", "ann", "bob", "cai"]);
    let a = &clean[0].value["assignment"];
    assert_eq!(
        (
            a["rule_id"].as_str(),
            a["team"].as_str(),
            a["strategy"].as_str()
        ),
        (Some("south"), Some("south"), Some("round_robin"))
    );
    assert_eq!(clean[6].value["assignment"], Value::Null);
    assert!(
        clean[6].value["issues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["code"] == "assignment.unmatched")
    );
    for m in &clean {
        crate::config::assert_valid_lead_record(&m.value);
    }

    // A fallback rule added now applies to the next lead, without a restart.
    let (s, _, _) = api
        .post("/rules", json!({"id": "fallback", "priority": 1000, "action": {"type": "owner", "owner": "cai"}}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    crate::support::accepted(post_json(&http, &url, &json!({"phone": "010-6552 9989"})).await)
        .await;
    let clean = consume(&broker.brokers(), "leads.clean", 8, Duration::from_secs(30));
    assert_eq!(clean[7].value["assignment"]["owner"], "cai");
    assert_eq!(clean[7].value["assignment"]["rule_id"], "fallback");
    let (_, _, b) = api
        .send(reqwest::Method::GET, "/owners/cai", None, None)
        .await;
    assert_eq!(
        b["open_leads"], 3,
        "two from the team, one from the fallback"
    );
}

/// schemathesis, installed by scripts/test (or named by SCHEMATHESIS_BIN).
fn schemathesis() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("SCHEMATHESIS_BIN") {
        return p.into();
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let data = std::env::var("XDG_DATA_HOME").unwrap_or(format!("{home}/.local/share"));
    let p = std::path::PathBuf::from(data).join("leadgate/schemathesis-4.32.5/bin/schemathesis");
    assert!(
        p.is_file(),
        "schemathesis is not installed: run scripts/test (it installs it), or set SCHEMATHESIS_BIN"
    );
    p
}

#[test]
fn schemathesis_finds_no_server_error() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(Some(&config("")), &dir.path().join("data"));
    let out = std::process::Command::new(schemathesis())
        .current_dir(dir.path())
        .args(["run", &gw.url("/openapi.json")])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--checks", "not_a_server_error", "-n", "40", "--seed", "7"])
        .output()
        .expect("cannot run schemathesis");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("passed"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn segments_and_scores_are_on_each_lead_and_rules_assign_by_them() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(
        Some(&config("[assignment]\nmax_score = 100\n")),
        &dir.path().join("data"),
    );
    let api = Api::new(&gw);
    for o in ["ann", "bob"] {
        assert_eq!(
            api.post("/owners", json!({"id": o})).await.0,
            StatusCode::CREATED
        );
    }
    for segment in [
        json!({"id": "south", "name": "华南", "conditions": [
            {"op": "in", "field": "contact.province", "values": ["广东省", "广西壮族自治区", "海南省"]}]}),
        json!({"id": "budget", "name": "有预算", "conditions": [{"op": "exists", "field": "custom.预算"}]}),
    ] {
        let (s, _, b) = api.post("/segments", segment).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    let (s, _, b) = api
        .post(
            "/scores",
            json!({"id": "fit", "name": "匹配度", "cap": 50, "rules": [
                {"name": "大型企业", "points": 30, "conditions": [{"op": "range", "field": "custom.员工人数", "min": 500}]},
                {"name": "制造业", "points": 30, "conditions": [{"op": "eq", "field": "contact.industry", "value": "制造业"}]}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, _, b) = api
        .post(
            "/scores",
            json!({"id": "intent", "rules": [
                {"name": "有预算", "points": 20, "conditions": [{"op": "eq", "field": "segments.id", "value": "budget"}]}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    // A bad definition is refused at its field.
    let (s, _, b) = api
        .post(
            "/scores",
            json!({"id": "bad", "rules": [{"name": "x", "points": 1, "conditions": [
                {"op": "regex", "field": "contact.city", "pattern": "("}]}]}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(b["error"]["field"], "rules[0].conditions[0].pattern", "{b}");
    // Hot leads to ann, southern ones to bob, by what the segments and score say.
    for rule in [
        json!({"id": "hot", "priority": 10, "conditions": [{"op": "range", "field": "score.total", "min": 60}],
               "action": {"type": "owner", "owner": "ann"}}),
        json!({"id": "south", "priority": 20, "conditions": [{"op": "in", "field": "segments.id", "values": ["south"]}],
               "action": {"type": "owner", "owner": "bob"}}),
    ] {
        let (s, _, b) = api.post("/rules", rule).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }

    let http = Client::new();
    let url = gw.url("/v1/webhooks/webform");
    let hot = json!({"phone": "13800138001", "province": "广东", "industry": "制造业", "员工人数": "1,200", "预算": "50万"});
    let warm = json!({"phone": "13800138002", "province": "广东", "员工人数": "800"});
    for lead in [&hot, &warm] {
        crate::support::accepted(post_json(&http, &url, lead).await).await;
    }
    let records = gw.wait_spooled("leads.clean", 2, Duration::from_secs(30));
    let (a, b) = (&records[0], &records[1]);
    // In id order.
    assert_eq!(
        a["segments"],
        json!([{"id": "budget", "name": "有预算"}, {"id": "south", "name": "华南"}])
    );
    // fit 30 + 30 capped at 50, intent 20: 70.
    assert_eq!(a["score"]["total"], 70, "{}", a["score"]);
    assert_eq!(a["score"]["groups"], json!({"fit": 50, "intent": 20}));
    let reasons: Vec<&str> = a["score"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "fit: 大型企业 +30",
            "fit: 制造业 +30",
            "fit: capped at 50 (was 60)",
            "intent: 有预算 +20"
        ]
    );
    assert_eq!(
        (&a["assignment"]["owner"], &a["assignment"]["rule_id"]),
        (&json!("ann"), &json!("hot"))
    );
    assert_eq!(b["segments"], json!([{"id": "south", "name": "华南"}]));
    assert_eq!(b["score"]["total"], 30);
    assert_eq!(
        (&b["assignment"]["owner"], &b["assignment"]["rule_id"]),
        (&json!("bob"), &json!("south"))
    );
    for r in [a, b] {
        crate::config::assert_valid_lead_record(r);
    }

    // The preview explains each point, and what did not apply.
    let (s, _, p) = api.post("/preview", json!({"lead": warm})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(p["score"]["total"], 30);
    assert_eq!(p["assignment"]["rule_id"], "south");
    let missed: Vec<&str> = p["not_applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["what"].as_str().unwrap())
        .collect();
    assert_eq!(
        missed,
        ["segment:budget", "score:fit/制造业", "score:intent/有预算"]
    );

    // A point rule changes through the API: the next lead is scored by it, no restart.
    let (_, etag, group) = api
        .send(reqwest::Method::GET, "/scores/fit", None, None)
        .await;
    let mut group = group;
    group["rules"][0]["points"] = json!(45);
    group["cap"] = json!(null);
    let (s, _, _) = api.put("/scores/fit", group, etag.as_deref()).await;
    assert_eq!(s, StatusCode::OK);
    crate::support::accepted(
        post_json(
            &http,
            &url,
            &json!({"phone": "13800138003", "province": "广东", "员工人数": "600"}),
        )
        .await,
    )
    .await;
    let records = gw.wait_spooled("leads.clean", 3, Duration::from_secs(30));
    assert_eq!(records[2]["score"]["total"], 45);
    let (_, _, log) = api
        .send(
            reqwest::Method::GET,
            "/audit?order=newest&limit=1",
            None,
            None,
        )
        .await;
    assert_eq!(
        (&log["entries"][0]["kind"], &log["entries"][0]["id"]),
        (&json!("scores"), &json!("fit"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_owner_read_before_an_assignment_cannot_write_its_old_count_back() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(Some(&config("")), &dir.path().join("data"));
    let api = Api::new(&gw);
    let (s, etag, _) = api
        .post("/owners", json!({"id": "ann", "capacity": 2}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let created = etag.unwrap();
    assert!(created.ends_with(".0\""), "{created}");
    let (s, _, _) = api
        .post(
            "/rules",
            json!({"id": "all", "priority": 1, "action": {"type": "owner", "owner": "ann"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // A CRM sync reads ann...
    let (_, before, mut body) = api
        .send(reqwest::Method::GET, "/owners/ann", None, None)
        .await;
    assert_eq!(before.as_deref(), Some(created.as_str()));
    // ...a lead is assigned to her meanwhile...
    crate::support::accepted(
        post_json(
            &Client::new(),
            &gw.url("/v1/webhooks/webform"),
            &json!({"phone": "13800138000"}),
        )
        .await,
    )
    .await;
    gw.wait_spooled("leads.clean", 1, Duration::from_secs(30));
    // ...and its write of the old count is refused, instead of freeing a slot that is taken.
    body["status"] = json!("off_duty");
    let (s, _, err) = api
        .put("/owners/ann", body.clone(), before.as_deref())
        .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED, "{err}");
    let (_, now, fresh) = api
        .send(reqwest::Method::GET, "/owners/ann", None, None)
        .await;
    assert_eq!(fresh["open_leads"], 1);
    assert!(now.as_deref().unwrap().ends_with(".1\""), "{now:?}");
    let mut fresh = fresh;
    fresh["status"] = json!("off_duty");
    let (s, _, w) = api.put("/owners/ann", fresh, now.as_deref()).await;
    assert_eq!(s, StatusCode::OK, "{w}");
    assert_eq!(
        (&w["status"], &w["open_leads"]),
        (&json!("off_duty"), &json!(1))
    );
    // A malformed tag is a 400 naming If-Match.
    let (s, _, err) = api.put("/owners/ann", w, Some("\"7.x\"")).await;
    assert_eq!(
        (s, &err["error"]["field"]),
        (StatusCode::BAD_REQUEST, &json!("If-Match"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn segments_and_scores_can_be_defined_in_the_settings() {
    let dir = tempfile::tempdir().unwrap();
    let settings = config(
        r#"[[assignment.segments]]
id = "south"
name = "华南"
conditions = [{ op = "in", field = "contact.province", values = ["广东省", "海南省"] }]

[[assignment.scores]]
id = "fit"
cap = 40
rules = [
  { name = "华南", points = 25, conditions = [{ op = "eq", field = "segments.id", value = "south" }] },
  { name = "有邮箱", points = 25, conditions = [{ op = "exists", field = "contact.email" }] },
]
"#,
    );
    let data = dir.path().join("data");
    let mut gw = Gateway::start(Some(&settings), &data);
    let api = Api::new(&gw);
    let (_, _, log) = api.send(reqwest::Method::GET, "/audit", None, None).await;
    let by: Vec<(&str, &str)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_str().unwrap(), e["by"].as_str().unwrap()))
        .collect();
    assert_eq!(by, [("south", "settings"), ("fit", "settings")]);
    crate::support::accepted(
        post_json(
            &Client::new(),
            &gw.url("/v1/webhooks/webform"),
            &json!({"phone": "13800138000", "email": "a@corp.cn", "province": "广东"}),
        )
        .await,
    )
    .await;
    let r = &gw.wait_spooled("leads.clean", 1, Duration::from_secs(30))[0];
    assert_eq!(r["segments"], json!([{"id": "south", "name": "华南"}]));
    assert_eq!(r["score"]["total"], 40, "{}", r["score"]);
    // A restart with the same settings writes nothing again.
    gw.kill();
    let gw = Gateway::start(Some(&settings), &data);
    let api = Api::new(&gw);
    let (_, _, log) = api.send(reqwest::Method::GET, "/audit", None, None).await;
    assert_eq!(log["entries"].as_array().unwrap().len(), 2);

    // A bad definition is refused before anything opens, naming its field.
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[[assignment.scores]]\nid = \"fit\"\nrules = [{ name = \"x\", points = 1, conditions = [{ op = \"regex\", field = \"contact.city\", pattern = \"(\" }] }]\n",
    )
    .unwrap();
    let (code, _, err) = crate::config::validate(&path, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("field `assignment.scores[0].rules[0].conditions[0].pattern`"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn crm_feedback_frees_capacity_once_and_in_the_order_things_happened() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(Some(&config("")), &dir.path().join("data"));
    let api = Api::new(&gw);
    assert_eq!(
        api.post("/owners", json!({"id": "ann", "capacity": 2}))
            .await
            .0,
        StatusCode::CREATED
    );
    let (s, _, _) = api
        .post(
            "/rules",
            json!({"id": "all", "priority": 1, "action": {"type": "owner", "owner": "ann"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let http = Client::new();
    let hook = gw.url("/v1/webhooks/webform");
    for phone in ["13800138001", "13800138002", "13800138003"] {
        crate::support::accepted(post_json(&http, &hook, &json!({"phone": phone})).await).await;
    }
    let records = gw.wait_spooled("leads.clean", 3, Duration::from_secs(30));
    assert_eq!(records[0]["assignment"]["owner"], "ann");
    assert_eq!(records[1]["assignment"]["owner"], "ann");
    assert!(records[2]["assignment"].is_null(), "ann is full");
    let first = records[0]["lead_id"].as_str().unwrap().to_owned();
    let report = |body: Value| {
        let http = http.clone();
        let url = gw.url(&format!("/v1/leads/{first}/status"));
        async move {
            let r = http
                .post(url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, b) = report(
        json!({"status_id": "crm-1", "status": "contacted", "at": "2026-12-01T10:00:00+08:00"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (&b["status"], &b["open_leads"]),
        (&json!("contacted"), &json!(2))
    );
    // Converted: ann's slot opens, and the next lead is hers.
    let (_, b) = report(
        json!({"status_id": "crm-2", "status": "converted", "at": "2026-12-01T11:00:00+08:00"}),
    )
    .await;
    assert_eq!((&b["applied"], &b["open_leads"]), (&json!(true), &json!(1)));
    // The same report again, and an older one that arrives late: nothing moves.
    let (_, b) = report(
        json!({"status_id": "crm-2", "status": "converted", "at": "2026-12-01T11:00:00+08:00"}),
    )
    .await;
    assert_eq!(
        (&b["duplicate"], &b["open_leads"]),
        (&json!(true), &json!(1))
    );
    let (_, b) = report(
        json!({"status_id": "crm-0", "status": "qualified", "at": "2026-12-01T10:30:00+08:00"}),
    )
    .await;
    assert_eq!(
        (&b["applied"], &b["status"], &b["open_leads"]),
        (&json!(false), &json!("converted"), &json!(1))
    );
    crate::support::accepted(post_json(&http, &hook, &json!({"phone": "13800138004"})).await).await;
    let records = gw.wait_spooled("leads.clean", 4, Duration::from_secs(30));
    assert_eq!(
        records[3]["assignment"]["owner"], "ann",
        "the freed slot is used"
    );
    // Reported wrong: field errors.
    for (body, field) in [
        (json!({"status_id": "x", "status": "won"}), "status"),
        (json!({"status_id": "", "status": "lost"}), "status_id"),
        (
            json!({"status_id": "y", "status": "lost", "at": "yesterday"}),
            "at",
        ),
        (json!({"status": "lost"}), ""),
    ] {
        let (s, b) = report(body).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
        assert_eq!(b["error"]["field"], field, "{b}");
    }
}
