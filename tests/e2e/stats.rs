//! 效果分析 through the real binary: leads of two campaigns posted on both sides of an hour
//! boundary that is also midnight in GMT+8 (the gateway's clock moved with
//! `LEADGATE_CLOCK_OFFSET_MS`), read back exactly from `GET /v1/stats` by hour and by day, as
//! JSON and CSV, and again after kill -9 and a restart: each lead counted once.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::Gateway;

const CONFIG: &str = "[[connectors]]\nname = \"web\"\ntype = \"webhook\"\nexternal_id_field = \"id\"\n\n\
                      [[connectors]]\nname = \"expo\"\ntype = \"webhook\"\n";

/// The gateway's clock `offset_s` seconds from `target` (unix seconds) when it starts.
fn start_at(data: &std::path::Path, target: i64, offset_s: i64) -> Gateway {
    let now = jiff::Timestamp::now().as_millisecond();
    let shift = (target + offset_s) * 1000 - now;
    Gateway::start_with_env(
        Some(CONFIG),
        data,
        &[("LEADGATE_CLOCK_OFFSET_MS", &shift.to_string())],
    )
}

async fn post(gw: &Gateway, connector: &str, body: Value) {
    let status = reqwest::Client::new()
        .post(gw.url(&format!("/v1/webhooks/{connector}")))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 202);
}

async fn stats(gw: &Gateway, query: &str) -> Value {
    let resp = reqwest::get(gw.url(&format!("/v1/stats?{query}")))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{query}");
    resp.json().await.unwrap()
}

/// The rows as `(start, connector, campaign) -> (received, clean, rejected, duplicate)`.
fn table(answer: &Value) -> Vec<(String, String, String, [u64; 4])> {
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let c = &r["counts"];
            let n = |k: &str| c[k].as_u64().unwrap();
            (
                r["start"].as_str().unwrap().to_owned(),
                r["connector"].as_str().unwrap_or_default().to_owned(),
                r["campaign"].as_str().unwrap_or_default().to_owned(),
                [n("received"), n("clean"), n("rejected"), n("duplicate")],
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn campaign_counts_by_hour_and_day_survive_a_kill_and_count_each_lead_once() {
    let zone = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
    // The next midnight in GMT+8: the end of an hour and of a day there.
    let midnight = jiff::Timestamp::now()
        .to_zoned_datetime(zone.clone())
        .date()
        .tomorrow()
        .unwrap()
        .to_zoned_datetime(zone.clone())
        .unwrap()
        .timestamp()
        .as_second();
    let local = |s: i64| {
        jiff::Timestamp::from_second(s)
            .unwrap()
            .to_zoned_datetime(zone.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("gw");

    // 23:58 on the gateway's clock: three leads of 双11大促 (one unusable), one of 年货节.
    let mut gw = start_at(&data, midnight, -120);
    for (id, phone) in [("w1", "13800138001"), ("w2", "13800138002")] {
        let lead = json!({"id": id, "phone": phone, "utm_campaign": "双11大促"});
        post(&gw, "web", lead).await;
    }
    post(
        &gw,
        "web",
        json!({"id": "w3", "name": "无联系方式", "utm_campaign": "双11大促"}),
    )
    .await;
    post(
        &gw,
        "web",
        json!({"id": "w4", "email": "a@example.cn", "utm_campaign": "年货节"}),
    )
    .await;
    gw.wait_spooled("leads.clean", 3, Duration::from_secs(20));
    gw.wait_spooled("leads.rejected", 1, Duration::from_secs(20));
    // Killed as soon as they are out: their acknowledgement (and counting) may not have happened
    // yet, so the restart delivers them again, and they must still count once.
    gw.kill();

    // 00:02 the next day, with an assignment rule giving every lead to o-li: 年货节 again, a
    // platform redelivery of w1, and the trade-show list.
    let gw = start_at(&data, midnight, 120);
    // The first four may be delivered again after the kill: let them be counted before the
    // rule exists, or they would be assigned now (a lead delivered again is assigned anew when
    // it was not before).
    let first_hour = format!("interval=hour&from={}", urlencode(&local(midnight - 7200)));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while stats(&gw, &first_hour).await["totals"]["received"] != 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first leads are not counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = reqwest::Client::new();
    for (path, body) in [
        ("owners", json!({"id": "o-li", "name": "李经理"})),
        (
            "rules",
            json!({"id": "all", "priority": 1, "action": {"type": "owner", "owner": "o-li"}}),
        ),
    ] {
        let resp = client
            .post(gw.url(&format!("/v1/assignment/{path}")))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "{path}");
    }
    post(
        &gw,
        "web",
        json!({"id": "w5", "phone": "13900139005", "utm_campaign": "年货节"}),
    )
    .await;
    post(
        &gw,
        "web",
        json!({"id": "w1", "phone": "13800138001", "utm_campaign": "双11大促"}),
    )
    .await;
    post(
        &gw,
        "expo",
        json!({"name": "展会客户", "phone": "13700137000"}),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (before, after) = (local(midnight - 3600), local(midnight));
    let query = format!(
        "group_by=connector,campaign&interval=hour&from={}&to={}",
        urlencode(&local(midnight - 7200)),
        urlencode(&local(midnight + 7200))
    );
    let want_hours = vec![
        (
            before.clone(),
            "web".into(),
            "双11大促".into(),
            [3, 2, 1, 0],
        ),
        (before.clone(), "web".into(), "年货节".into(), [1, 1, 0, 0]),
        (after.clone(), "expo".into(), String::new(), [1, 1, 0, 0]),
        (after.clone(), "web".into(), "双11大促".into(), [1, 0, 0, 1]),
        (after.clone(), "web".into(), "年货节".into(), [1, 1, 0, 0]),
    ];
    let hours = loop {
        let got = stats(&gw, &query).await;
        if table(&got) == want_hours || std::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(table(&hours), want_hours, "{hours}");
    assert_eq!(hours["interval"], "hour");
    assert_eq!(hours["timezone"], "Asia/Shanghai");
    assert_eq!(hours["totals"]["received"], 7);
    assert_eq!(hours["totals"]["assigned"], 2);
    assert_eq!(hours["totals"]["assigned_by"], json!({"o-li": 2}));
    let rejected = hours["rows"][0]["counts"]["rejected_by"]
        .as_object()
        .unwrap();
    assert_eq!(
        rejected.values().map(|v| v.as_u64().unwrap()).sum::<u64>(),
        1
    );

    // By GMT+8 day: the same split, at midnight.
    let day_query = format!(
        "group_by=campaign&interval=day&from={}&to={}",
        urlencode(&local(midnight - 86_400)),
        urlencode(&local(midnight + 86_400))
    );
    let days = stats(&gw, &day_query).await;
    let want_days = vec![
        (
            local(midnight - 86_400),
            String::new(),
            "双11大促".into(),
            [3, 2, 1, 0],
        ),
        (
            local(midnight - 86_400),
            String::new(),
            "年货节".into(),
            [1, 1, 0, 0],
        ),
        (after.clone(), String::new(), String::new(), [1, 1, 0, 0]),
        (
            after.clone(),
            String::new(),
            "双11大促".into(),
            [1, 0, 0, 1],
        ),
        (after.clone(), String::new(), "年货节".into(), [1, 1, 0, 0]),
    ];
    assert_eq!(table(&days), want_days, "{days}");

    // The CSV a marketer opens in Excel: UTF-8 with a byte order mark, a header, one row each.
    let csv = reqwest::get(gw.url(&format!("/v1/stats?{day_query}&format=csv")))
        .await
        .unwrap();
    assert_eq!(
        csv.headers()["content-type"].to_str().unwrap(),
        "text/csv; charset=utf-8"
    );
    let bytes = csv.bytes().await.unwrap();
    assert!(bytes.starts_with(b"\xEF\xBB\xBF"));
    let text = String::from_utf8(bytes[3..].to_vec()).unwrap();
    let mut lines = text.lines();
    let head = lines.next().unwrap();
    assert!(
        head.starts_with(
            "day,campaign,received,clean,rejected,duplicate,merged,test,assigned,rejected:"
        ),
        "{head}"
    );
    let day_before = local(midnight - 86_400)[..10].to_owned();
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("{day_before},双11大促,3,2,1,0"))),
        "{text}"
    );
    assert_eq!(lines.count(), 5, "{text}");

    // A restart (kill -9 again) keeps every count as it was.
    drop(gw);
    let gw = start_at(&data, midnight, 180);
    assert_eq!(table(&stats(&gw, &query).await), want_hours);

    // Bad queries name the field.
    for (q, field) in [
        ("interval=week", "interval"),
        ("group_by=owner", "group_by"),
        ("from=yesterday", "from"),
        ("from=2026-11-12&to=2026-11-11", "from"),
        ("format=xlsx", "format"),
    ] {
        let resp = reqwest::get(gw.url(&format!("/v1/stats?{q}")))
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{q}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["field"], field, "{q}: {body}");
    }
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}
