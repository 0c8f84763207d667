//! What happens to a lead after it is assigned: the follow-up SLA (回收), the conversion funnel.
//!
//! **Follow-up.** A lead assigned by a rule with a `follow_up` gets a deadline. A status report
//! from the CRM (any: `contacted` or later) ends it. When the deadline passes first, the lead is
//! taken back from its owner (one open lead less) and reassigned by the rule's strategy, skipping
//! owners who already let it lapse and owners at their claim limit; without an owner it goes to
//! the pool (公海). Each reassignment is written, in the same store transaction, to an outbox, from
//! which the gateway publishes it on the assignments topic (at least once: a consumer drops a
//! repeated `reassignment_id`).
//!
//! **Funnel.** Counted per person (`lead_id`) in the store, so that several gateways add up:
//! a person counts once under each connector, campaign and segment they came through, in each
//! stage they reached (received → assigned → contacted → qualified → converted, and lost); an
//! owner counts the people given to them and the stages reached while they owned them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::engine::{Decision, World};
use super::model::{FollowUp, Rule};
use super::store::{AssignError, AssignRequest, LeadStatus, Tables};

/// A lead waiting to be followed up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub lead_id: String,
    pub event_id: String,
    pub rule_id: String,
    pub owner: String,
    pub assigned_at: String,
    /// The deadline, in unix milliseconds (the store's index) and as text.
    pub due_ms: i64,
    pub due: String,
    /// How many times it was taken back already.
    pub reassignments: u32,
    /// Everyone who had it, first to last.
    pub owners: Vec<String>,
}

/// The version of the reassignment records' schema.
pub const SCHEMA_VERSION: &str = "1.0";

/// A lead taken back from its owner, published on `[topics] assignments` (key: `lead_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Reassignment {
    pub schema_version: String,
    /// `{lead_id}/{n}`: the same for every delivery of this reassignment.
    pub reassignment_id: String,
    pub lead_id: String,
    /// The lead (event) that was assigned.
    pub event_id: String,
    pub at: String,
    /// `follow_up.missed`.
    pub reason: String,
    /// In words: the SLA, the deadline, why this owner (or why none).
    pub detail: String,
    pub from_owner: String,
    /// The new owner; `null` when the lead went back to the pool (公海).
    pub owner: Option<String>,
    pub pool: bool,
    pub rule_id: String,
    pub team: Option<String>,
    pub strategy: Option<String>,
    /// The deadline that was missed.
    pub due: String,
    /// This is its n-th reassignment.
    pub reassignments: u32,
}

/// The funnel's stages, in order.
pub const STAGES: &[&str] = &[
    "received",
    "assigned",
    "contacted",
    "qualified",
    "converted",
    "lost",
];

/// The stages a status shows the lead reached (a lead converted was contacted and qualified).
fn reached_by(status: &str) -> &'static [&'static str] {
    match status {
        "contacted" => &["contacted"],
        "qualified" => &["contacted", "qualified"],
        "converted" => &["contacted", "qualified", "converted"],
        "lost" => &["contacted", "lost"],
        _ => &[],
    }
}

/// What the funnel groups by.
pub const DIMENSIONS: &[&str] = &["connector", "campaign", "segment", "owner"];
/// A person keeps at most this many (dimension, value) pairs.
const MAX_DIMS: usize = 32;

/// The groups a lead counts in: its connector, campaign and segments.
pub fn dims_of(lead: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(c) = lead.pointer("/source/connector").and_then(Value::as_str) {
        out.push(("connector".into(), c.to_owned()));
    }
    let none = serde_json::Map::new();
    let custom = lead
        .get("custom")
        .and_then(Value::as_object)
        .unwrap_or(&none);
    let campaign =
        crate::stats::Attribution::of(custom, lead.get("raw").unwrap_or(&Value::Null)).campaign;
    if !campaign.is_empty() {
        out.push(("campaign".into(), campaign));
    }
    for s in lead
        .get("segments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(id) = s.get("id").and_then(Value::as_str) {
            out.push(("segment".into(), id.to_owned()));
        }
    }
    out
}

fn count(
    t: &mut dyn Tables,
    dims: &[(String, String)],
    owner: Option<&str>,
    stage: &str,
) -> Result<(), AssignError> {
    for (d, v) in dims {
        t.add_funnel(d, v, stage, 1)?;
    }
    if let Some(o) = owner {
        t.add_funnel("owner", o, stage, 1)?;
    }
    Ok(())
}

/// After `req` was decided (in the assignment's transaction): its funnel counts, its owner, its
/// follow-up deadline. An owner's open leads count people, not submissions: returns the owner
/// whose count must drop by one, when this person was open already: with the same owner (the
/// assignment's count given back), or with another (who no longer has them).
pub(super) fn assigned(
    t: &mut dyn Tables,
    req: &AssignRequest,
    decision: Option<&Decision>,
    rules: &[Rule],
    now: jiff::Timestamp,
) -> Result<Option<String>, AssignError> {
    let Some(lead_id) = &req.lead_id else {
        return Ok(None);
    };
    let mut s = t.lead_status(lead_id)?.unwrap_or_default();
    let before = s.clone();
    for dim in dims_of(&req.lead) {
        if s.dims.contains(&dim) || s.dims.len() >= MAX_DIMS {
            continue;
        }
        t.add_funnel(&dim.0, &dim.1, "received", 1)?;
        for stage in &s.reached {
            t.add_funnel(&dim.0, &dim.1, stage, 1)?;
        }
        s.dims.push(dim);
    }
    let mut release = None;
    if let Some(d) = decision {
        if !s.reached.iter().any(|r| r == "assigned") {
            s.reached.push("assigned".into());
            count(t, &s.dims, None, "assigned")?;
        }
        let same_owner = before.owner.as_deref() == Some(d.owner.as_str());
        let open = before.assigned && !before.closed;
        if open {
            release = before.owner.clone();
        }
        if !same_owner || !before.assigned {
            t.add_funnel("owner", &d.owner, "received", 1)?;
            t.add_funnel("owner", &d.owner, "assigned", 1)?;
        }
        // Its follow-up goes with it to the new owner (the deadline stays).
        if !same_owner && let Some(mut p) = t.follow_up(lead_id)? {
            p.owner = d.owner.clone();
            p.owners.push(d.owner.clone());
            t.put_follow_up(&p)?;
        }
        s.owner = Some(d.owner.clone());
        s.assigned = true;
        s.closed = false;
        let follow_up = rules
            .iter()
            .find(|r| r.id == d.rule_id)
            .and_then(|r| r.follow_up.as_ref());
        // A report received before the assignment already shows it followed up.
        if let Some(f) = follow_up
            && (s.status.is_empty() || before.closed)
            && t.follow_up(lead_id)?.is_none()
        {
            let due = f.due(now);
            t.put_follow_up(&Pending {
                lead_id: lead_id.clone(),
                event_id: req.event_id.clone(),
                rule_id: d.rule_id.clone(),
                owner: d.owner.clone(),
                assigned_at: now.to_string(),
                due_ms: due.as_millisecond(),
                due: due.to_string(),
                reassignments: 0,
                owners: vec![d.owner.clone()],
            })?;
        }
    }
    if s != before {
        t.put_lead_status(lead_id, &s)?;
    }
    Ok(release)
}

/// A status report that was not a repeat: the follow-up is done, the stages it shows are
/// counted once.
pub(super) fn reported(
    t: &mut dyn Tables,
    lead_id: &str,
    s: &mut LeadStatus,
    status: &str,
) -> Result<(), AssignError> {
    t.remove_follow_up(lead_id)?;
    for stage in reached_by(status) {
        if s.reached.iter().any(|r| r == stage) {
            continue;
        }
        s.reached.push((*stage).to_owned());
        count(t, &s.dims, s.owner.as_deref(), stage)?;
    }
    Ok(())
}

/// The day a claim counts on, in the follow-up's zone.
fn claim_day(f: &FollowUp, now: jiff::Timestamp) -> String {
    let zone = f
        .working_hours
        .as_ref()
        .map_or("Asia/Shanghai", |w| w.timezone.as_str());
    let tz = jiff::tz::TimeZone::get(zone).unwrap_or(jiff::tz::TimeZone::UTC);
    now.to_zoned_datetime(tz).date().to_string()
}

/// Takes back every lead whose deadline passed by `now` (at most `limit`), reassigns it and
/// writes the reassignment to the outbox. Returns how many were taken back.
pub(super) fn reclaim(
    t: &mut dyn Tables,
    w: &mut World,
    now: jiff::Timestamp,
    limit: usize,
) -> Result<usize, AssignError> {
    let due = t.due_follow_ups(now.as_millisecond(), limit)?;
    // Claims by `owner/day`, read once per call and kept up to date as leads are reassigned.
    let mut claims: BTreeMap<String, u64> = BTreeMap::new();
    for p in &due {
        let rule = w.rules.iter().find(|r| r.id == p.rule_id).cloned();
        let Some((rule, f)) = rule.and_then(|r| r.follow_up.clone().map(|f| (r, f))) else {
            // The rule, or its SLA, was removed meanwhile: nothing to enforce.
            t.remove_follow_up(&p.lead_id)?;
            continue;
        };
        if let Some(o) = w.owners.get_mut(&p.owner) {
            o.open_leads = o.open_leads.saturating_sub(1);
        }
        w.excluded.clear();
        if f.not_same_owner {
            for o in &p.owners {
                w.excluded.insert(
                    o.clone(),
                    format!("owner {o} had this lead and did not follow it up in time"),
                );
            }
        }
        let day = claim_day(&f, now);
        for (id, o) in &w.owners {
            let Some(cap) = o.claim_limit else { continue };
            let key = format!("{id}/{day}");
            let n = match claims.get(&key) {
                Some(n) => *n,
                None => {
                    let n = t.claims(&key)?;
                    claims.insert(key, n);
                    n
                }
            };
            if n >= cap && !w.excluded.contains_key(id) {
                w.excluded.insert(
                    id.clone(),
                    format!("owner {id} reached their claim limit ({cap} a day)"),
                );
            }
        }
        let n = p.reassignments + 1;
        let outcome = if p.reassignments >= f.max_reassignments {
            Err(format!(
                "taken back {} times already (max_reassignments)",
                p.reassignments
            ))
        } else {
            w.reassign(&rule, &f)
        };
        let mut s = t.lead_status(&p.lead_id)?.unwrap_or_default();
        let missed = format!(
            "not followed up within {}{} of its assignment (due {})",
            f.within,
            if f.working_hours.is_some() {
                " working time"
            } else {
                ""
            },
            p.due
        );
        let mut record = Reassignment {
            schema_version: SCHEMA_VERSION.into(),
            reassignment_id: format!("{}/{n}", p.lead_id),
            lead_id: p.lead_id.clone(),
            event_id: p.event_id.clone(),
            at: now.to_string(),
            reason: "follow_up.missed".into(),
            detail: String::new(),
            from_owner: p.owner.clone(),
            owner: None,
            pool: true,
            rule_id: rule.id.clone(),
            team: None,
            strategy: None,
            due: p.due.clone(),
            reassignments: n,
        };
        match outcome {
            Ok(d) => {
                let key = format!("{}/{day}", d.owner);
                let claimed = match claims.get(&key) {
                    Some(c) => *c,
                    None => t.claims(&key)?,
                } + 1;
                t.put_claims(&key, claimed)?;
                claims.insert(key, claimed);
                t.put_sticky(&p.lead_id, &d.owner)?;
                t.add_funnel("owner", &d.owner, "received", 1)?;
                t.add_funnel("owner", &d.owner, "assigned", 1)?;
                s.owner = Some(d.owner.clone());
                let next = f.due(now);
                let mut owners = p.owners.clone();
                owners.push(d.owner.clone());
                t.put_follow_up(&Pending {
                    owner: d.owner.clone(),
                    assigned_at: now.to_string(),
                    due_ms: next.as_millisecond(),
                    due: next.to_string(),
                    reassignments: n,
                    owners,
                    ..p.clone()
                })?;
                record.detail = format!("{missed}; {}", d.reason);
                record.owner = Some(d.owner);
                record.pool = false;
                record.team = d.team;
                record.strategy = d.strategy.map(|s| s.as_str().to_owned());
            }
            Err(why) => {
                t.remove_follow_up(&p.lead_id)?;
                s.owner = None;
                record.detail = format!("{missed}; back to the pool: {why}");
            }
        }
        t.put_lead_status(&p.lead_id, &s)?;
        let record = serde_json::to_value(&record).unwrap_or_default();
        t.push_outbox(&serde_json::json!({"record": record, "lease_ms": 0}))?;
    }
    w.excluded.clear();
    Ok(due.len())
}

/// One group of the funnel, with its rates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct FunnelRow {
    /// `connector`, `campaign`, `segment` or `owner`.
    pub by: String,
    pub value: String,
    /// People per stage (every stage of [`STAGES`]).
    pub counts: BTreeMap<String, u64>,
    /// `assigned`/`received`, `contacted`/`assigned`, `converted`/`received` and
    /// `converted`/`contacted`, as fractions; absent when the divisor is 0.
    pub rates: BTreeMap<String, f64>,
}

/// The funnel grouped by `by`, from the store's counts.
pub fn funnel_rows(by: &str, rows: Vec<(String, String, u64)>) -> Vec<FunnelRow> {
    let mut groups: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (value, stage, n) in rows {
        *groups.entry(value).or_default().entry(stage).or_default() += n;
    }
    groups
        .into_iter()
        .map(|(value, mut counts)| {
            for s in STAGES {
                counts.entry((*s).to_owned()).or_default();
            }
            let mut rates = BTreeMap::new();
            for (name, top, bottom) in [
                ("assigned", "assigned", "received"),
                ("contacted", "contacted", "assigned"),
                ("converted", "converted", "received"),
                ("converted_of_contacted", "converted", "contacted"),
            ] {
                let (a, b) = (counts[top], counts[bottom]);
                if b > 0 {
                    rates.insert(name.to_owned(), a as f64 / b as f64);
                }
            }
            FunnelRow {
                by: by.to_owned(),
                value,
                counts,
                rates,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assign::store::{AssignmentStore, Expect, StatusReport, Transact};
    use crate::assign::{EmbeddedAssignmentStore, model::Kind};
    use serde_json::json;

    fn store(follow_up: Value) -> EmbeddedAssignmentStore {
        set_up(EmbeddedAssignmentStore::in_memory().unwrap(), follow_up)
    }

    /// Owners ann, bob and cai in team `sales`, and rule `all` (round robin) with `follow_up`.
    fn set_up(s: EmbeddedAssignmentStore, follow_up: Value) -> EmbeddedAssignmentStore {
        for o in ["ann", "bob", "cai"] {
            s.put(Kind::Owners, o, json!({"id": o}), Expect::Absent)
                .unwrap();
        }
        s.put(
            Kind::Teams,
            "sales",
            json!({"id": "sales", "members": [{"owner": "ann"}, {"owner": "bob"}, {"owner": "cai"}]}),
            Expect::Absent,
        )
        .unwrap();
        s.put(
            Kind::Rules,
            "all",
            json!({"id": "all", "priority": 1, "action": {"type": "team", "team": "sales", "strategy": "round_robin"}, "follow_up": follow_up}),
            Expect::Absent,
        )
        .unwrap();
        s
    }

    fn lead(n: u32, campaign: &str) -> AssignRequest {
        AssignRequest {
            event_id: format!("e{n}"),
            lead_id: Some(format!("p{n}")),
            lead: json!({"source": {"connector": "web"}, "custom": {"utm_campaign": campaign}, "raw": {}}),
        }
    }

    fn load(s: &EmbeddedAssignmentStore, o: &str) -> u64 {
        s.get(Kind::Owners, o).unwrap().unwrap().body["open_leads"]
            .as_u64()
            .unwrap()
    }

    fn report(s: &EmbeddedAssignmentStore, lead: &str, status: &str, id: &str) {
        s.report_status(
            lead,
            &StatusReport {
                status_id: id.into(),
                status: status.into(),
                at: jiff::Timestamp::now().to_string(),
            },
        )
        .unwrap();
    }

    fn later(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::now() + jiff::SignedDuration::from_secs(secs)
    }

    fn published(s: &EmbeddedAssignmentStore) -> Vec<Reassignment> {
        let out = s.outbox(100).unwrap();
        s.published(&out.iter().map(|(seq, _)| *seq).collect::<Vec<_>>())
            .unwrap();
        out.into_iter()
            .map(|(_, v)| serde_json::from_value(v).unwrap())
            .collect()
    }

    #[test]
    fn a_lead_not_followed_up_is_taken_back_and_reassigned_to_someone_else() {
        let s = store(json!({"within": "10s"}));
        let d = s.assign(&[lead(1, "c"), lead(2, "c")]).unwrap().decisions;
        assert_eq!(d[0].as_ref().unwrap().owner, "ann");
        assert_eq!(d[1].as_ref().unwrap().owner, "bob");
        report(&s, "p2", "contacted", "s1");
        assert_eq!(s.reclaim(later(5), 100).unwrap(), 0, "not due yet");
        assert_eq!(s.reclaim(later(11), 100).unwrap(), 1, "p2 was contacted");
        let r = published(&s);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].lead_id, "p1");
        assert_eq!(r[0].from_owner, "ann");
        // Round robin goes on in turn: cai (ann is excluded, she let it lapse).
        assert_eq!(r[0].owner.as_deref(), Some("cai"));
        assert_eq!(r[0].reason, "follow_up.missed");
        assert!(r[0].detail.contains("within 10s"), "{}", r[0].detail);
        assert_eq!(
            (load(&s, "ann"), load(&s, "bob"), load(&s, "cai")),
            (0, 1, 1)
        );
        assert!(published(&s).is_empty(), "published ones are forgotten");
        // Its second deadline runs from the reassignment; cai lets it lapse too: never back to
        // ann or cai, so bob.
        assert_eq!(s.reclaim(later(22), 100).unwrap(), 1);
        let r = published(&s);
        assert_eq!(
            (r[0].from_owner.as_str(), r[0].owner.as_deref()),
            ("cai", Some("bob"))
        );
        assert_eq!(r[0].reassignments, 2);
        assert_eq!(r[0].reassignment_id, "p1/2");
        // A third lapse: max_reassignments (2) reached, to the pool.
        assert_eq!(s.reclaim(later(40), 100).unwrap(), 1);
        let r = published(&s);
        assert!(r[0].pool && r[0].owner.is_none(), "{r:?}");
        assert_eq!(
            (load(&s, "ann"), load(&s, "bob"), load(&s, "cai")),
            (0, 1, 0)
        );
        assert_eq!(s.reclaim(later(1000), 100).unwrap(), 0, "nothing left");
    }

    /// An erased person's lead leaves its owner's count, its follow-up and its decisions; the
    /// funnel keeps its counts.
    #[test]
    fn an_erased_lead_is_forgotten_and_frees_its_owner() {
        let s = store(json!({"within": "10s"}));
        s.assign(&[lead(1, "c"), lead(2, "c")]).unwrap();
        assert_eq!((load(&s, "ann"), load(&s, "bob")), (1, 1));
        s.erase(&["p1".into()], &["e1".into()]).unwrap();
        assert_eq!((load(&s, "ann"), load(&s, "bob")), (0, 1));
        assert_eq!(
            s.reclaim(later(11), 100).unwrap(),
            1,
            "only p2 is still followed"
        );
        assert_eq!(published(&s)[0].lead_id, "p2");
        s.transact(false, &|t| {
            assert!(t.lead_status("p1")?.is_none() && t.sticky("p1")?.is_none());
            assert!(t.outcome("e1")?.is_none() && t.outcome("e2")?.is_some());
            Ok(())
        })
        .unwrap();
        let funnel = s.funnel("campaign").unwrap();
        assert_eq!(funnel[0].counts["received"], 2, "counts stay");
        // Erasing it again changes nothing.
        let loads = |s: &EmbeddedAssignmentStore| [load(s, "ann"), load(s, "bob"), load(s, "cai")];
        let before = loads(&s);
        s.erase(&["p1".into()], &["e1".into()]).unwrap();
        assert_eq!(loads(&s), before);
    }

    #[test]
    fn an_outbox_record_is_handed_to_one_publisher_and_kept_until_published() {
        let path = tempfile::tempdir().unwrap();
        let file = path.path().join("a.redb");
        {
            let s = set_up(
                EmbeddedAssignmentStore::open(&file).unwrap(),
                json!({"within": "1s"}),
            );
            s.assign(&[lead(1, "c")]).unwrap();
            assert_eq!(s.reclaim(later(2), 10).unwrap(), 1);
            let first = s.outbox(10).unwrap();
            assert_eq!(first.len(), 1);
            assert_eq!(first[0].1["lead_id"], "p1");
            assert!(
                s.outbox(10).unwrap().is_empty(),
                "leased to the first caller"
            );
            // Not published: a crash now leaves it in the store.
        }
        let s = EmbeddedAssignmentStore::open(&file).unwrap();
        assert_eq!(s.reclaim(later(2), 10).unwrap(), 0, "taken back once");
        let raw = s.transact(false, &|t| t.outbox(10)).unwrap();
        assert_eq!(raw.len(), 1, "still queued after the restart");
        assert_eq!(raw[0].1["record"]["owner"], "bob");
    }

    #[test]
    fn claim_limits_and_capacity_are_respected_and_no_owner_means_the_pool() {
        let s = store(json!({"within": "1m", "not_same_owner": true}));
        s.put(
            Kind::Owners,
            "cai",
            json!({"id": "cai", "claim_limit": 1}),
            Expect::Any,
        )
        .unwrap();
        // ann, bob, cai, ann, bob, cai.
        let leads: Vec<_> = (1..=6).map(|n| lead(n, "c")).collect();
        s.assign(&leads).unwrap();
        for n in [2, 3, 5, 6] {
            report(&s, &format!("p{n}"), "contacted", &format!("s{n}"));
        }
        // p1 and p4 (ann's) lapse: the first goes to bob or cai in turn, cai claims one at most.
        assert_eq!(s.reclaim(later(61), 100).unwrap(), 2);
        let r = published(&s);
        let owners: Vec<_> = r.iter().map(|r| r.owner.clone().unwrap()).collect();
        assert_eq!(
            owners.iter().filter(|o| *o == "cai").count(),
            1,
            "{owners:?}"
        );
        assert!(owners.iter().all(|o| o != "ann"));

        // With bob off duty and cai at the claim limit, the next lapse has nobody: the pool.
        s.put(
            Kind::Owners,
            "bob",
            json!({"id": "bob", "status": "off_duty"}),
            Expect::Any,
        )
        .unwrap();
        assert_eq!(s.reclaim(later(200), 100).unwrap(), 2);
        let r = published(&s);
        let cai_claims = r
            .iter()
            .filter(|r| r.owner.as_deref() == Some("cai"))
            .count();
        assert_eq!(cai_claims, 0, "cai claimed one today already: {r:?}");
        assert!(r.iter().all(|r| r.pool), "{r:?}");
        assert!(r[0].detail.contains("claim limit"), "{}", r[0].detail);
    }

    #[test]
    fn open_leads_count_people_and_closing_frees_the_slot() {
        let s = store(json!({"within": "1h"}));
        s.assign(&[lead(1, "c")]).unwrap();
        // The same person again (sticky): still one open lead for ann.
        let again = AssignRequest {
            event_id: "e1b".into(),
            ..lead(1, "c")
        };
        s.put(Kind::Rules, "all", json!({"id": "all", "priority": 1, "action": {"type": "team", "team": "sales", "strategy": "sticky"}}), Expect::Any).unwrap();
        let d = s.assign(&[again]).unwrap().decisions;
        assert_eq!(d[0].as_ref().unwrap().owner, "ann");
        assert_eq!(load(&s, "ann"), 1);
        report(&s, "p1", "converted", "s1");
        assert_eq!(load(&s, "ann"), 0);

        // Another person, who comes back while open and goes to another owner by round robin:
        // the first owner no longer has them.
        s.put(Kind::Rules, "all", json!({"id": "all", "priority": 1, "action": {"type": "team", "team": "sales", "strategy": "round_robin"}}), Expect::Any).unwrap();
        let first = s.assign(&[lead(2, "c")]).unwrap().decisions[0]
            .clone()
            .unwrap();
        let again = AssignRequest {
            event_id: "e2b".into(),
            ..lead(2, "c")
        };
        let second = s.assign(&[again]).unwrap().decisions[0].clone().unwrap();
        assert_ne!(first.owner, second.owner);
        assert_eq!((load(&s, &first.owner), load(&s, &second.owner)), (0, 1));
        report(&s, "p2", "closed", "s2");
        let total: u64 = ["ann", "bob", "cai"].iter().map(|o| load(&s, o)).sum();
        assert_eq!(total, 0);
    }

    #[test]
    fn the_funnel_counts_each_person_once_per_stage() {
        let s = store(json!({"within": "1h"}));
        let leads: Vec<_> = (1..=4)
            .map(|n| lead(n, if n <= 3 { "618" } else { "双11" }))
            .collect();
        s.assign(&leads).unwrap();
        // p1 contacted then converted (reported out of order), p2 lost, p3 nothing.
        report(&s, "p1", "converted", "s2");
        report(&s, "p1", "contacted", "s1");
        report(&s, "p1", "converted", "s2");
        report(&s, "p2", "lost", "s3");
        let rows = s.funnel("campaign").unwrap();
        let c = &rows.iter().find(|r| r.value == "618").unwrap().counts;
        assert_eq!(
            (
                c["received"],
                c["assigned"],
                c["contacted"],
                c["qualified"],
                c["converted"],
                c["lost"]
            ),
            (3, 3, 2, 1, 1, 1)
        );
        let r = &rows.iter().find(|r| r.value == "618").unwrap().rates;
        assert!((r["converted"] - 1.0 / 3.0).abs() < 1e-9);
        let owners = s.funnel("owner").unwrap();
        let ann = &owners.iter().find(|r| r.value == "ann").unwrap().counts;
        assert_eq!((ann["assigned"], ann["converted"]), (2, 1), "p1 and p4");
        assert_eq!(s.funnel("connector").unwrap()[0].counts["received"], 4);
    }

    #[test]
    fn working_time_deadlines_skip_nights_and_weekends() {
        let f: FollowUp = serde_json::from_value(json!({
            "within": "2h",
            "working_hours": {"start": "09:00", "end": "18:00"}
        }))
        .unwrap();
        let at = |s: &str| -> jiff::Timestamp { s.parse().unwrap() };
        // Friday 17:00 in Shanghai (09:00 UTC): one hour on Friday, one on Monday.
        assert_eq!(
            f.due(at("2026-12-04T09:00:00Z")),
            at("2026-12-07T02:00:00Z")
        );
        // Saturday: Monday 11:00.
        assert_eq!(
            f.due(at("2026-12-05T04:00:00Z")),
            at("2026-12-07T03:00:00Z")
        );
        // Inside the day.
        assert_eq!(
            f.due(at("2026-12-02T02:00:00Z")),
            at("2026-12-02T04:00:00Z")
        );
        let plain: FollowUp = serde_json::from_value(json!({"within": "90s"})).unwrap();
        assert_eq!(
            plain.due(at("2026-12-02T02:00:00Z")),
            at("2026-12-02T02:01:30Z")
        );
    }

    #[test]
    fn follow_up_errors_name_the_field() {
        let s = store(json!({"within": "1h"}));
        let bad = json!({"id": "x", "priority": 2, "action": {"type": "owner", "owner": "ann"},
            "follow_up": {"within": "soon", "team": "nope",
                "working_hours": {"start": "18:00", "end": "09:00", "weekdays": ["fri", "fun"], "timezone": "Mars/Base"}}});
        let Err(crate::assign::AssignError::Invalid(errors)) =
            s.put(Kind::Rules, "x", bad, Expect::Absent)
        else {
            panic!("accepted");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        for f in [
            "follow_up.within",
            "follow_up.team",
            "follow_up.working_hours.weekdays[1]",
            "follow_up.working_hours.end",
            "follow_up.working_hours.timezone",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
    }
}
