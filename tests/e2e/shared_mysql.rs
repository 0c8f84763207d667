//! The MySQL stores on a real MariaDB: two writers resolving the same new people at once end with
//! one lead_id each, two gateways share identities, and two gateways share one round-robin.

use std::sync::Arc;
use std::time::Duration;

use leadgate::identity::{
    IdentityKey, IdentityRequest, IdentityStore, MysqlIdentityStore, PHONE, Policy, Resolution,
};
use leadgate::lead::IdentityStatus;
use serde_json::json;

use crate::support::{Gateway, Mariadb, accepted, post_json};

fn request(event: String, person: usize) -> IdentityRequest {
    IdentityRequest {
        event_id: event,
        resolve: true,
        keys: vec![IdentityKey::new(PHONE, format!("+86139{person:08}"))],
        connector: "test".into(),
        received_at: "2026-11-24T00:00:00Z".into(),
        ..Default::default()
    }
}

/// Retention on the MySQL store: the people none of whose events is newer than the cut-off are
/// found and erased; the others stay.
#[test]
fn people_older_than_the_retention_are_forgotten_by_the_mysql_store() {
    let db = Mariadb::start();
    let store = MysqlIdentityStore::connect(&db.database("retention"), Policy::default()).unwrap();
    let at = |r: IdentityRequest, when: &str| IdentityRequest {
        received_at: when.into(),
        ..r
    };
    store
        .resolve(&[
            at(request("old-1".into(), 1), "2026-01-01T00:00:00.000Z"),
            at(request("old-2".into(), 2), "2026-01-02T00:00:00.000Z"),
            // Person 3 was old, and came back recently: kept.
            at(request("old-3".into(), 3), "2026-01-03T00:00:00.000Z"),
            at(request("new-3".into(), 3), "2026-11-30T00:00:00.000Z"),
            at(request("new-4".into(), 4), "2026-12-01T00:00:00.000Z"),
        ])
        .unwrap();
    let found = store
        .expired("2026-06-01T00:00:00Z".parse().unwrap())
        .unwrap();
    assert_eq!(found.lead_ids.len(), 2, "{found:?}");
    let mut events = found.event_ids.clone();
    events.sort();
    assert_eq!(events, ["old-1", "old-2"]);
    store.erase(&found.lead_ids).unwrap();
    let phone = |p: usize| IdentityKey::new(PHONE, format!("+86139{p:08}"));
    assert!(store.find(&[phone(1), phone(2)]).unwrap().is_empty());
    assert_eq!(store.find(&[phone(3), phone(4)]).unwrap().len(), 2);
    let left = db
        .sql("SELECT COUNT(*) FROM retention.leadgate_people; SELECT COUNT(*) FROM retention.leadgate_members;")
        .unwrap();
    assert_eq!(left.split_whitespace().collect::<Vec<_>>(), ["2", "3"]);
}

#[test]
fn two_writers_resolving_the_same_new_people_make_one_lead_each() {
    let db = Mariadb::start();
    let url = db.database("identity");
    const PEOPLE: usize = 300;
    let writers: Vec<Arc<MysqlIdentityStore>> = (0..2)
        .map(|_| Arc::new(MysqlIdentityStore::connect(&url, Policy::default()).unwrap()))
        .collect();
    let threads: Vec<_> = writers
        .iter()
        .enumerate()
        .map(|(w, store)| {
            let store = store.clone();
            std::thread::spawn(move || {
                let reqs: Vec<_> = (0..PEOPLE)
                    .map(|p| request(format!("w{w}-{p:04}"), p))
                    .collect();
                let mut out = Vec::new();
                for batch in reqs.chunks(25) {
                    out.extend(store.resolve(batch).expect("resolve"));
                }
                out
            })
        })
        .collect();
    let results: Vec<Vec<Resolution>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let outcome = |r: &Resolution| match r {
        Resolution::Person(o) => o.clone(),
        other => panic!("{other:?}"),
    };
    let mut created = 0;
    for (p, (a, b)) in results[0].iter().zip(&results[1]).enumerate() {
        let (a, b) = (outcome(a), outcome(b));
        created += usize::from(a.status == IdentityStatus::New);
        created += usize::from(b.status == IdentityStatus::New);
        assert_eq!(
            a.lead_id, b.lead_id,
            "person {p}: both writers chose one lead"
        );
    }
    assert_eq!(created, PEOPLE, "each person was created exactly once");

    // Replays give the first answers, from either writer.
    let again = writers[1].resolve(&[request("w0-0007".into(), 7)]).unwrap();
    assert_eq!(outcome(&again[0]), outcome(&results[0][7]));
    let c = writers[0]
        .explain(&outcome(&results[0][7]).lead_id)
        .unwrap()
        .unwrap();
    assert_eq!(c.members.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_share_identities_through_mysql() {
    let db = Mariadb::start();
    let url = db.database("shared");
    let config = r#"
[identity.store]
type = "mysql"
url = "${IDENTITY_MYSQL_URL}"

[[connectors]]
name = "webform"
type = "webhook"
"#;
    let dir = tempfile::tempdir().unwrap();
    let env = [("IDENTITY_MYSQL_URL", url.as_str())];
    let one = Gateway::start_with_env(Some(config), &dir.path().join("one"), &env);
    let two = Gateway::start_with_env(Some(config), &dir.path().join("two"), &env);
    let http = reqwest::Client::new();
    let first = accepted(
        post_json(
            &http,
            &one.url("/v1/webhooks/webform"),
            &json!({"name": "赵敏", "phone": "139 2222 3333"}),
        )
        .await,
    )
    .await;
    let a = one.wait_spooled("leads.clean", 1, Duration::from_secs(10));
    assert_eq!(a[0]["event_id"], first);
    accepted(
        post_json(
            &http,
            &two.url("/v1/webhooks/webform"),
            &json!({"name": "赵敏", "phone": "+86 13922223333", "email": "zhaomin@corp.cn"}),
        )
        .await,
    )
    .await;
    let b = two.wait_spooled("leads.clean", 1, Duration::from_secs(10));
    assert_eq!(b[0]["identity"]["status"], "matched");
    assert_eq!(
        b[0]["lead_id"], a[0]["lead_id"],
        "the second gateway knew the person"
    );

    let lead = a[0]["lead_id"].as_str().unwrap();
    let cluster = crate::support::get_json(&http, &one.url(&format!("/v1/leads/{lead}"))).await;
    assert_eq!(cluster["members"].as_array().unwrap().len(), 2);
    assert_eq!(cluster["profile"]["email"]["value"], "zhaomin@corp.cn");
    // Either gateway finds the person by the phone the first one took in.
    let found =
        crate::support::get_json(&http, &two.url("/v1/leads?phone=139%202222%203333")).await;
    assert_eq!(found["leads"][0]["lead_id"], lead, "{found}");
    assert_eq!(found["leads"].as_array().unwrap().len(), 1);

    // Erased through one gateway by the address it never took in: gone from the shared store.
    let asked = json!({"subject_request_id": "dsr-mysql", "subject_identities": [
        {"identity_type": "email", "identity_value": "ZhaoMin@corp.cn"}]});
    let resp = post_json(&http, &one.url("/v1/erasures"), &asked).await;
    assert_eq!(resp.status(), 202);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let done = loop {
        let got = crate::support::get_json(&http, &one.url("/v1/erasures/dsr-mysql")).await;
        if got["request_status"] == "completed" {
            break got;
        }
        assert!(std::time::Instant::now() < deadline, "{got}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(done["lead_ids"], json!([lead]));
    assert_eq!(done["removed"]["events"], 2);
    let left = db
        .sql(
            "SELECT COUNT(*) FROM shared.leadgate_identity_keys;
             SELECT COUNT(*) FROM shared.leadgate_people;
             SELECT COUNT(*) FROM shared.leadgate_members;
             SELECT COUNT(*) FROM shared.leadgate_outcomes;",
        )
        .unwrap();
    assert_eq!(
        left.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "0", "0"]
    );
    let found =
        crate::support::get_json(&http, &two.url("/v1/leads?phone=139%202222%203333")).await;
    assert_eq!(found["leads"], json!([]), "{found}");
    // The other gateway suppresses the person too (it reads the shared list every 2 s): their
    // phone, never named in the request.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before = two.spooled("leads.clean").len();
    accepted(
        post_json(
            &http,
            &two.url("/v1/webhooks/webform"),
            &json!({"name": "赵敏", "phone": "13922223333"}),
        )
        .await,
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = crate::support::get_text(&http, &two.url("/metrics")).await;
        if metrics.contains("code=\"privacy.suppressed\"") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not suppressed on the other gateway"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(two.spooled("leads.clean").len(), before);
}

/// Two gateways' stores on `url`, with owners ann, bob and cai in team `t` and rule `r` (round
/// robin, with `follow_up` unless it is null).
fn three_owners(
    url: &str,
    follow_up: serde_json::Value,
) -> Vec<Arc<leadgate::assign::MysqlAssignmentStore>> {
    use leadgate::assign::model::Kind;
    use leadgate::assign::{AssignmentStore, Expect, MysqlAssignmentStore};
    let stores: Vec<Arc<MysqlAssignmentStore>> = (0..2)
        .map(|_| Arc::new(MysqlAssignmentStore::connect(url).unwrap()))
        .collect();
    let s = &stores[0];
    for o in ["ann", "bob", "cai"] {
        s.put(Kind::Owners, o, json!({"id": o}), Expect::Absent)
            .unwrap();
    }
    s.put(
        Kind::Teams,
        "t",
        json!({"id": "t", "members": [{"owner": "ann"}, {"owner": "bob"}, {"owner": "cai"}]}),
        Expect::Absent,
    )
    .unwrap();
    let mut rule = json!({"id": "r", "priority": 1, "action": {"type": "team", "team": "t", "strategy": "round_robin"}});
    if !follow_up.is_null() {
        rule["follow_up"] = follow_up;
    }
    s.put(Kind::Rules, "r", rule, Expect::Absent).unwrap();
    stores
}

#[test]
fn two_gateways_share_one_round_robin_through_mysql() {
    use leadgate::assign::model::Kind;
    use leadgate::assign::{AssignRequest, AssignmentStore, Expect};
    use std::collections::BTreeMap;

    let db = Mariadb::start();
    let url = db.database("assignment");
    let stores = three_owners(&url, json!(null));
    let s = &stores[0];
    // The second gateway sees the first one's rules.
    assert_eq!(stores[1].list(Kind::Rules).unwrap().len(), 1);
    // And its segments and score groups.
    s.put(Kind::Segments, "south", json!({"id": "south", "conditions": [{"op": "eq", "field": "contact.province", "value": "广东省"}]}), Expect::Absent).unwrap();
    s.put(
        Kind::Scores,
        "fit",
        json!({"id": "fit", "cap": 10, "rules": [{"name": "all", "points": 20}]}),
        Expect::Absent,
    )
    .unwrap();
    let d = stores[1].definitions().unwrap();
    assert_eq!(
        (d.rules, d.segments.len(), d.groups[0].cap),
        (true, 1, Some(10))
    );
    // A CRM's report through one gateway is known to the other.
    let report = leadgate::assign::store::StatusReport {
        status_id: "crm-1".into(),
        status: "contacted".into(),
        at: "2026-12-01T02:00:00.000Z".into(),
    };
    assert!(stores[0].report_status("lead-x", &report).unwrap().applied);
    let again = stores[1].report_status("lead-x", &report).unwrap();
    assert!(again.duplicate && again.status == "contacted");

    let threads: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(g, store)| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut owners = Vec::new();
                let leads: Vec<AssignRequest> = (0..1500)
                    .map(|i| AssignRequest {
                        event_id: format!("g{g}-{i}"),
                        lead_id: None,
                        lead: json!({}),
                    })
                    .collect();
                for batch in leads.chunks(50) {
                    for d in store.assign(batch).unwrap().decisions {
                        owners.push(d.unwrap().owner);
                    }
                }
                owners
            })
        })
        .collect();
    let mut tally = BTreeMap::<String, usize>::new();
    for t in threads {
        for o in t.join().unwrap() {
            *tally.entry(o).or_default() += 1;
        }
    }
    assert_eq!(
        tally.values().copied().collect::<Vec<_>>(),
        [1000, 1000, 1000],
        "no slot handed out twice: {tally:?}"
    );
    let ann = stores[1].get(Kind::Owners, "ann").unwrap().unwrap();
    assert_eq!(ann.body["open_leads"], 1000);
    assert_eq!(
        stores[1]
            .audit(leadgate::assign::AuditFrom::After(0), 100)
            .unwrap()
            .len(),
        7
    );
}

/// Follow-up SLAs on the shared store: two gateways checking deadlines at once take each lead
/// back once, publish each reassignment once, and add up one funnel.
#[test]
fn two_gateways_reclaim_each_lead_once_through_mysql() {
    use leadgate::assign::model::Kind;
    use leadgate::assign::store::StatusReport;
    use leadgate::assign::{AssignRequest, AssignmentStore};

    let db = Mariadb::start();
    let url = db.database("lifecycle");
    let stores = three_owners(&url, json!({"within": "1m"}));
    let s = &stores[0];
    let leads: Vec<AssignRequest> = (0..40)
        .map(|i| AssignRequest {
            event_id: format!("e{i}"),
            lead_id: Some(format!("p{i}")),
            lead: json!({"source": {"connector": "web"}, "custom": {"utm_campaign": "双11"}}),
        })
        .collect();
    for batch in leads.chunks(7) {
        s.assign(batch).unwrap();
    }
    // The CRM reports on the even ones, through the other gateway.
    for i in (0..40).step_by(2) {
        let report = StatusReport {
            status_id: format!("s{i}"),
            status: if i % 4 == 0 { "converted" } else { "contacted" }.into(),
            at: "2026-12-02T02:00:00.000Z".into(),
        };
        assert!(
            stores[1]
                .report_status(&format!("p{i}"), &report)
                .unwrap()
                .applied
        );
    }
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(61);
    let threads: Vec<_> = stores
        .iter()
        .map(|store| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut taken = 0;
                let mut published = Vec::new();
                for _ in 0..10 {
                    taken += store.reclaim(later, 3).unwrap();
                    let out = store.outbox(4).unwrap();
                    store
                        .published(&out.iter().map(|(s, _)| *s).collect::<Vec<_>>())
                        .unwrap();
                    published.extend(out.into_iter().map(|(_, v)| v));
                }
                (taken, published)
            })
        })
        .collect();
    let mut taken = 0;
    let mut published = Vec::new();
    for t in threads {
        let (n, p) = t.join().unwrap();
        taken += n;
        published.extend(p);
    }
    assert_eq!(taken, 20, "each odd lead taken back once");
    let mut ids: Vec<String> = published
        .iter()
        .map(|v| v["lead_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    let mut want: Vec<String> = (1..40).step_by(2).map(|i| format!("p{i}")).collect();
    want.sort();
    assert_eq!(ids, want, "each reassignment published once");
    assert!(
        published
            .iter()
            .all(|v| v["owner"].is_string() && v["owner"] != v["from_owner"])
    );
    // 40 open, 10 converted closed; the 20 reassigned moved, not added.
    let open: u64 = stores[1]
        .list(Kind::Owners)
        .unwrap()
        .iter()
        .map(|o| o.body["open_leads"].as_u64().unwrap())
        .sum();
    assert_eq!(open, 30);
    let funnel = stores[0].funnel("campaign").unwrap();
    let c = &funnel[0].counts;
    assert_eq!(
        (
            funnel[0].value.as_str(),
            c["received"],
            c["assigned"],
            c["contacted"],
            c["converted"]
        ),
        ("双11", 40, 40, 20, 10)
    );
}
