//! Identity from outside: a platform's redelivery is dropped, a declared platform id joins people,
//! a bridging lead merges them, and `GET /v1/leads/{id}` explains the cluster behind the token.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Gateway, accepted, error_of, post_json};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

const CONFIG: &str = r#"
[api]
token = "${LEADGATE_API_TOKEN}"

[identity]
blocked_values = ["phone:+8613912345670"]

[[connectors]]
name = "tiktok"
type = "webhook"
external_id_field = "lead_id"
identity_fields = { wechat = "openid" }
"#;

/// `GET /v1/leads/{id}` with the token: the cluster (asserting a 200).
async fn explained(http: &reqwest::Client, gw: &Gateway, id: &str) -> Value {
    let r = http
        .get(gw.url(&format!("/v1/leads/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The `event_id` of each record (or cluster member), in order.
fn event_ids(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn redeliveries_drop_platform_ids_join_and_clusters_explain() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start_with_env(
        Some(CONFIG),
        &dir.path().join("data"),
        &[("LEADGATE_API_TOKEN", TOKEN)],
    );
    let http = reqwest::Client::new();
    let url = gw.url("/v1/webhooks/tiktok");
    let a = json!({"lead_id": "t-1", "name": "王芳", "phone": "139 1111 2222"});
    let first = accepted(post_json(&http, &url, &a).await).await;
    // TikTok redelivers the same lead (no Idempotency-Key): acknowledged, but not a new lead.
    let again = accepted(post_json(&http, &url, &a).await).await;
    assert_ne!(first, again);
    let b =
        json!({"lead_id": "t-2", "name": "王芳", "email": "wangfang@corp.cn", "openid": "wx-77"});
    let second = accepted(post_json(&http, &url, &b).await).await;
    // The WeChat id of B and the phone of A: one person.
    let c =
        json!({"lead_id": "t-3", "name": "王芳", "phone": "+86 139-1111-2222", "openid": "wx-77"});
    let third = accepted(post_json(&http, &url, &c).await).await;
    // A blocked number joins no one.
    let d = json!({"lead_id": "t-4", "name": "李雷", "phone": "13912345670"});
    let fourth = accepted(post_json(&http, &url, &d).await).await;

    let clean = gw.wait_spooled("leads.clean", 4, Duration::from_secs(10));
    let events = event_ids(&clean);
    assert_eq!(
        events,
        [&first, &second, &third, &fourth],
        "the redelivery is dropped"
    );
    let (ra, rb, rc) = (&clean[0], &clean[1], &clean[2]);
    assert_eq!(ra["source"]["external_id"], "t-1");
    assert_ne!(ra["lead_id"], rb["lead_id"]);
    assert_eq!(rc["identity"]["status"], "merged");
    assert_eq!(rc["lead_id"], ra["lead_id"], "the oldest survives");
    assert_eq!(rc["identity"]["matched_on"], json!(["phone", "wechat"]));
    assert_eq!(clean[3]["identity"]["status"], "new");
    assert_eq!(
        gw.wait_spooled("leads.merged", 1, Duration::from_secs(5))
            .len(),
        1
    );

    // The explanation needs the token.
    let survivor = ra["lead_id"].as_str().unwrap();
    let explain = |id: &str| gw.url(&format!("/v1/leads/{id}"));
    let r = http.get(explain(survivor)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "auth.missing_token");
    let r = http
        .get(explain(survivor))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Asked by the absorbed id, it answers with the survivor's whole story.
    let absorbed = rb["lead_id"].as_str().unwrap();
    let cluster = explained(&http, &gw, absorbed).await;
    assert_eq!(cluster["lead_id"], survivor);
    assert_eq!(cluster["requested_lead_id"], absorbed);
    let members = event_ids(cluster["members"].as_array().unwrap());
    assert_eq!(members, [&first, &second, &third]);
    let keys: Vec<String> = cluster["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            format!(
                "{}:{}",
                k["kind"].as_str().unwrap(),
                k["value"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            "email:wangfang@corp.cn",
            "phone:+8613911112222",
            "wechat:wx-77"
        ]
    );
    assert_eq!(cluster["merges"][0]["merged_lead_ids"], json!([absorbed]));
    assert_eq!(cluster["profile"]["email"]["value"], "wangfang@corp.cn");
    assert_eq!(cluster["sources"]["tiktok"], 3);

    // Found by the phone in any form, or by the address of the absorbed lead: the survivor.
    let search = |q: &[(&str, &str)]| {
        http.get(gw.url("/v1/leads"))
            .query(q)
            .bearer_auth(TOKEN)
            .send()
    };
    for q in [
        &[("phone", "139-1111-2222")][..],
        &[("phone", "+86 (139) 1111 2222")],
        &[("phone", "１３９１１１１２２２２")],
        &[("email", " WangFang@Corp.cn ")],
        &[("phone", "13911112222"), ("email", "wangfang@corp.cn")],
    ] {
        let r = search(q).await.unwrap();
        assert_eq!(r.status(), 200, "{q:?}");
        let found: Value = r.json().await.unwrap();
        let ids: Vec<&str> = found["leads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["lead_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [survivor], "{q:?}");
        assert_eq!(found["leads"][0]["sources"]["tiktok"], 3);
    }
    let r = search(&[("phone", "13800000001")]).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["leads"], json!([]));
    for (q, field, status) in [
        (&[("phone", "12")][..], "phone", 422),
        (&[("email", "not-an-address")], "email", 422),
        (&[], "phone", 400),
        (&[("name", "王芳")], "", 400),
    ] {
        let (s, err) = error_of(search(q).await.unwrap()).await;
        assert_eq!(s, status, "{q:?}: {err}");
        if !field.is_empty() {
            assert_eq!(err["field"], field, "{q:?}");
        }
    }
    assert_eq!(
        http.get(gw.url("/v1/leads?phone=13911112222"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    let r = http
        .get(explain("no-such-lead"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "lead.not_found");
    assert_eq!(body["error"]["field"], "lead_id");
}

/// The embedded store keeps only a log on disk and rebuilds its index on start: after a SIGKILL,
/// people, their keys, platform ids already seen and explanations are all still there.
#[tokio::test(flavor = "multi_thread")]
async fn identities_survive_a_kill_9_and_are_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [("LEADGATE_API_TOKEN", TOKEN)];
    let http = reqwest::Client::new();
    let mut gw = Gateway::start_with_env(Some(CONFIG), &data, &env);
    let url = gw.url("/v1/webhooks/tiktok");
    let a = json!({"lead_id": "k-1", "name": "陈静", "phone": "139 2222 3333"});
    let b = json!({"lead_id": "k-2", "name": "陈静", "email": "chenjing@corp.cn"});
    let first = accepted(post_json(&http, &url, &a).await).await;
    let second = accepted(post_json(&http, &url, &b).await).await;
    let before = gw.wait_spooled("leads.clean", 2, Duration::from_secs(10));
    gw.kill();

    let gw = Gateway::start_with_env(Some(CONFIG), &data, &env);
    let url = gw.url("/v1/webhooks/tiktok");
    // A redelivery of k-2 from before the kill is still known; a lead with both keys merges.
    let _dropped = accepted(post_json(&http, &url, &b).await).await;
    let c = json!({"lead_id": "k-3", "name": "陈静", "phone": "13922223333", "email": "chenjing@corp.cn"});
    let third = accepted(post_json(&http, &url, &c).await).await;
    // The kill may have come between delivering a record and acknowledging it: delivery is at
    // least once, and a record delivered again is the same record, with the same lead_id.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let clean = loop {
        let mut clean: Vec<Value> = Vec::new();
        for r in gw.spooled("leads.clean") {
            match clean.iter().find(|c| c["event_id"] == r["event_id"]) {
                Some(c) => assert_eq!(
                    c["lead_id"], r["lead_id"],
                    "delivered again as another person"
                ),
                None => clean.push(r),
            }
        }
        if clean.len() >= 3 || std::time::Instant::now() > deadline {
            break clean;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let events = event_ids(&clean);
    assert_eq!(
        events,
        [&first, &second, &third],
        "the redelivery is dropped"
    );
    assert_eq!(clean[2]["identity"]["status"], "merged");
    assert_eq!(clean[2]["lead_id"], before[0]["lead_id"]);
    assert_eq!(
        clean[2]["identity"]["merged_lead_ids"],
        json!([before[1]["lead_id"]])
    );

    let id = before[0]["lead_id"].as_str().unwrap();
    let cluster = explained(&http, &gw, id).await;
    let members = event_ids(cluster["members"].as_array().unwrap());
    assert_eq!(members, [&first, &second, &third]);
    assert_eq!(cluster["sources"]["tiktok"], 3);
    assert_eq!(cluster["profile"]["phone"]["value"], "+8613922223333");
}

/// A gateway stopped with SIGTERM writes its identity index's snapshot; the next start reads it
/// (and the log after it): people, and platform ids already seen, are still known.
#[tokio::test(flavor = "multi_thread")]
async fn a_clean_stop_writes_a_snapshot_the_next_start_reads() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let env = [("LEADGATE_API_TOKEN", TOKEN)];
    let http = reqwest::Client::new();
    let mut gw = Gateway::start_with_env(Some(CONFIG), &data, &env);
    let url = gw.url("/v1/webhooks/tiktok");
    let a = json!({"lead_id": "s-1", "name": "林峰", "phone": "139 4444 5555"});
    accepted(post_json(&http, &url, &a).await).await;
    let before = gw.wait_spooled("leads.clean", 1, Duration::from_secs(10));
    assert!(gw.terminate().success());
    let snapshot = data.join("identity.snapshot");
    assert!(snapshot.exists(), "no snapshot at a clean stop");
    let written = std::fs::metadata(&snapshot).unwrap().modified().unwrap();

    let gw = Gateway::start_with_env(Some(CONFIG), &data, &env);
    let url = gw.url("/v1/webhooks/tiktok");
    let _redelivery = accepted(post_json(&http, &url, &a).await).await;
    let b = json!({"lead_id": "s-2", "name": "林峰", "phone": "+86 13944445555", "email": "linfeng@corp.cn"});
    accepted(post_json(&http, &url, &b).await).await;
    let after = gw.wait_spooled("leads.clean", 2, Duration::from_secs(10));
    assert_eq!(
        after.len(),
        2,
        "the redelivery of s-1 is still dropped: {after:?}"
    );
    assert_eq!(after[1]["identity"]["status"], "matched");
    assert_eq!(after[1]["lead_id"], before[0]["lead_id"]);
    assert_eq!(
        std::fs::metadata(&snapshot).unwrap().modified().unwrap(),
        written,
        "read, not rewritten, at start"
    );
}
