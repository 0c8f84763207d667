//! Where rules, owners, teams and the assignment counters live. A trait, so that several gateways
//! can later share one (MySQL); the embedded redb store is the default.
//!
//! Every batch of leads is assigned in one transaction together with the counters it moves
//! (round-robin cursors, weights, open leads, sticky owners) and its outcomes, keyed by event id:
//! a batch replayed after a crash gets the same owners and moves nothing twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::engine::{Decision, RuleTrace, World};
use super::model::{self, FieldError, Kind, Known, Owner, Rule, Team};

/// A resource with the version its ETag carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versioned {
    pub version: u64,
    pub body: Value,
}

/// One change made through the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuditEntry {
    pub seq: u64,
    pub at: String,
    /// `create`, `update` or `delete`.
    pub action: String,
    /// `rules`, `owners` or `teams`.
    pub kind: String,
    pub id: String,
    /// The version written (for a delete, the one removed).
    pub version: u64,
    /// The resource after the change; `null` for a delete.
    pub body: Value,
}

/// One lead to assign: the record as JSON (conditions read it) and the person it belongs to.
#[derive(Debug, Clone)]
pub struct AssignRequest {
    pub event_id: String,
    pub lead_id: Option<String>,
    pub lead: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    #[error("no {0} `{1}`")]
    NotFound(&'static str, String),
    #[error("{0} `{1}` already exists")]
    Exists(&'static str, String),
    #[error("the {kind} changed since you read it: its version is now {current}")]
    Stale { kind: &'static str, current: u64 },
    #[error("invalid")]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    InUse(String),
    #[error("the data directory is in use by another leadgate process (assignment store {0})")]
    Locked(String),
    #[error("assignment store: {0}")]
    Storage(String),
}

/// What a write expects of the current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `POST`: the id must be new.
    Absent,
    /// `PUT` with `If-Match`: the version must be this one.
    Version(u64),
    /// `PUT` without `If-Match`: create or replace.
    Any,
}

/// The decisions for a batch, and how many rules there were.
#[derive(Debug, Clone, PartialEq)]
pub struct AssignBatch {
    pub rules: usize,
    pub decisions: Vec<Option<Decision>>,
}

pub trait AssignmentStore: Send + Sync {
    /// Assigns `leads` in order, atomically; idempotent per event id.
    fn assign(&self, leads: &[AssignRequest]) -> Result<AssignBatch, AssignError>;
    /// What would happen to `lead`, changing nothing.
    fn preview(
        &self,
        lead: &Value,
        lead_id: Option<&str>,
    ) -> Result<(Option<Decision>, Vec<RuleTrace>), AssignError>;
    fn list(&self, kind: Kind) -> Result<Vec<Versioned>, AssignError>;
    fn get(&self, kind: Kind, id: &str) -> Result<Option<Versioned>, AssignError>;
    /// Validates and writes `body` under `id`, recording it in the audit log.
    fn put(
        &self,
        kind: Kind,
        id: &str,
        body: Value,
        expect: Expect,
    ) -> Result<Versioned, AssignError>;
    fn delete(&self, kind: Kind, id: &str, expect: Expect) -> Result<u64, AssignError>;
    /// Audit entries after `after`, oldest first, at most `limit`.
    fn audit(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, AssignError>;
}

/// `"rules/south"` -> `{version, body}`.
const RESOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("resources");
/// team id -> its rotation state.
const STATES: TableDefinition<&str, &[u8]> = TableDefinition::new("team_states");
/// owner id -> open leads (kept apart so that the load moving does not change owners' ETags).
const LOAD: TableDefinition<&str, u64> = TableDefinition::new("open_leads");
/// lead_id -> its owner, for the sticky strategy.
const STICKY: TableDefinition<&str, &str> = TableDefinition::new("sticky");
/// event_id -> its decision (JSON, `null` for none).
const OUTCOMES: TableDefinition<&str, &[u8]> = TableDefinition::new("outcomes");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub struct EmbeddedAssignmentStore {
    db: Database,
}

fn storage(e: impl Into<redb::Error>) -> AssignError {
    AssignError::Storage(e.into().to_string())
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("assignment entries serialize")
}

fn parse<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, AssignError> {
    serde_json::from_slice(b).map_err(|e| AssignError::Storage(format!("corrupt entry: {e}")))
}

fn key(kind: Kind, id: &str) -> String {
    format!("{}/{id}", kind.as_str())
}

/// Reads every resource of `kind` from a table.
fn all(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    kind: Kind,
) -> Result<Vec<(String, Versioned)>, AssignError> {
    let prefix = format!("{}/", kind.as_str());
    let mut out = Vec::new();
    for entry in table.range(prefix.as_str()..).map_err(storage)? {
        let (k, v) = entry.map_err(storage)?;
        let Some(id) = k.value().strip_prefix(prefix.as_str()) else {
            break;
        };
        out.push((id.to_owned(), parse(v.value())?));
    }
    Ok(out)
}

/// The owners, teams, rules, states and load, as a decision needs them.
fn world(
    resources: &impl ReadableTable<&'static str, &'static [u8]>,
    states: &impl ReadableTable<&'static str, &'static [u8]>,
    load: &impl ReadableTable<&'static str, u64>,
) -> Result<World, AssignError> {
    let mut w = World::default();
    for (id, v) in all(resources, Kind::Owners)? {
        let mut o: Owner =
            serde_json::from_value(v.body).map_err(|e| AssignError::Storage(e.to_string()))?;
        o.open_leads = load
            .get(id.as_str())
            .map_err(storage)?
            .map_or(0, |v| v.value());
        w.owners.insert(id, o);
    }
    for (id, v) in all(resources, Kind::Teams)? {
        let t: Team =
            serde_json::from_value(v.body).map_err(|e| AssignError::Storage(e.to_string()))?;
        if let Some(s) = states.get(id.as_str()).map_err(storage)? {
            w.states.insert(id.clone(), parse(s.value())?);
        }
        w.teams.insert(id, t);
    }
    for (_, v) in all(resources, Kind::Rules)? {
        w.rules
            .push(serde_json::from_value(v.body).map_err(|e| AssignError::Storage(e.to_string()))?);
    }
    w.rules
        .sort_by(|a, b| (a.priority, &a.id).cmp(&(b.priority, &b.id)));
    Ok(w)
}

impl EmbeddedAssignmentStore {
    pub fn open(path: &Path) -> Result<Self, AssignError> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                AssignError::Locked(path.display().to_string())
            }
            other => storage(other),
        })?;
        let s = Self { db };
        s.init()?;
        Ok(s)
    }

    pub fn in_memory() -> Result<Self, AssignError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(storage)?;
        let s = Self { db };
        s.init()?;
        Ok(s)
    }

    /// Creates every table, so that readers never meet a missing one.
    fn init(&self) -> Result<(), AssignError> {
        let txn = self.db.begin_write().map_err(storage)?;
        txn.open_table(RESOURCES).map_err(storage)?;
        txn.open_table(STATES).map_err(storage)?;
        txn.open_table(LOAD).map_err(storage)?;
        txn.open_table(STICKY).map_err(storage)?;
        txn.open_table(OUTCOMES).map_err(storage)?;
        txn.open_table(AUDIT).map_err(storage)?;
        txn.open_table(META).map_err(storage)?;
        txn.commit().map_err(storage)
    }

    /// Validates `body` as a `kind` against what exists.
    fn validate(
        resources: &impl ReadableTable<&'static str, &'static [u8]>,
        kind: Kind,
        id: &str,
        body: &Value,
    ) -> Result<Value, AssignError> {
        let ids = |k: Kind| -> Result<BTreeSet<String>, AssignError> {
            Ok(all(resources, k)?.into_iter().map(|(id, _)| id).collect())
        };
        let invalid = |e: FieldError| AssignError::Invalid(vec![e]);
        let (errors, normalized) = match kind {
            Kind::Rules => {
                let r: Rule = model::parse(body).map_err(invalid)?;
                let known = Known {
                    owners: &ids(Kind::Owners)?,
                    teams: &ids(Kind::Teams)?,
                };
                (r.validate(&known), serde_json::to_value(&r))
            }
            Kind::Owners => {
                let o: Owner = model::parse(body).map_err(invalid)?;
                (o.validate(), serde_json::to_value(&o))
            }
            Kind::Teams => {
                let t: Team = model::parse(body).map_err(invalid)?;
                (t.validate(&ids(Kind::Owners)?), serde_json::to_value(&t))
            }
        };
        let mut errors = errors;
        if body.get("id").and_then(Value::as_str) != Some(id) {
            errors.push(FieldError::new(
                "id",
                format!("must be `{id}`, the id in the URL"),
            ));
        }
        if !errors.is_empty() {
            return Err(AssignError::Invalid(errors));
        }
        normalized.map_err(|e| AssignError::Storage(e.to_string()))
    }

    fn record_audit(
        txn: &redb::WriteTransaction,
        action: &str,
        kind: Kind,
        id: &str,
        version: u64,
        body: Value,
    ) -> Result<(), AssignError> {
        let mut meta = txn.open_table(META).map_err(storage)?;
        let seq = meta.get("audit").map_err(storage)?.map_or(0, |v| v.value()) + 1;
        meta.insert("audit", seq).map_err(storage)?;
        let entry = AuditEntry {
            seq,
            at: crate::lead::now_rfc3339(),
            action: action.into(),
            kind: kind.as_str().into(),
            id: id.into(),
            version,
            body,
        };
        txn.open_table(AUDIT)
            .map_err(storage)?
            .insert(seq, json(&entry).as_slice())
            .map_err(storage)?;
        Ok(())
    }

    /// Who refers to `kind/id`: a team listing an owner, a rule naming an owner or a team.
    fn users_of(
        resources: &impl ReadableTable<&'static str, &'static [u8]>,
        kind: Kind,
        id: &str,
    ) -> Result<Vec<String>, AssignError> {
        let mut users = Vec::new();
        if kind == Kind::Owners {
            for (tid, v) in all(resources, Kind::Teams)? {
                let t: Team = serde_json::from_value(v.body)
                    .map_err(|e| AssignError::Storage(e.to_string()))?;
                if t.members.iter().any(|m| m.owner == id) {
                    users.push(format!("team {tid}"));
                }
            }
        }
        if kind != Kind::Rules {
            for (rid, v) in all(resources, Kind::Rules)? {
                let r: Rule = serde_json::from_value(v.body)
                    .map_err(|e| AssignError::Storage(e.to_string()))?;
                let uses = match &r.action {
                    model::Action::Owner { owner } => kind == Kind::Owners && owner == id,
                    model::Action::Team { team, .. } => kind == Kind::Teams && team == id,
                };
                if uses {
                    users.push(format!("rule {rid}"));
                }
            }
        }
        Ok(users)
    }
}

fn check_expect(
    kind: Kind,
    current: Option<&Versioned>,
    id: &str,
    expect: Expect,
) -> Result<(), AssignError> {
    match (expect, current) {
        (Expect::Absent, Some(_)) => Err(AssignError::Exists(kind.one(), id.into())),
        (Expect::Version(_), None) => Err(AssignError::NotFound(kind.one(), id.into())),
        (Expect::Version(v), Some(c)) if c.version != v => Err(AssignError::Stale {
            kind: kind.one(),
            current: c.version,
        }),
        _ => Ok(()),
    }
}

impl AssignmentStore for EmbeddedAssignmentStore {
    fn assign(&self, leads: &[AssignRequest]) -> Result<AssignBatch, AssignError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let out = {
            let resources = txn.open_table(RESOURCES).map_err(storage)?;
            let mut states = txn.open_table(STATES).map_err(storage)?;
            let mut load = txn.open_table(LOAD).map_err(storage)?;
            let mut sticky = txn.open_table(STICKY).map_err(storage)?;
            let mut outcomes = txn.open_table(OUTCOMES).map_err(storage)?;
            let mut w = world(&resources, &states, &load)?;
            let before_states = w.states.clone();
            let before_load: BTreeMap<String, u64> = w
                .owners
                .iter()
                .map(|(id, o)| (id.clone(), o.open_leads))
                .collect();
            let mut out = Vec::with_capacity(leads.len());
            for req in leads {
                if let Some(done) = outcomes.get(req.event_id.as_str()).map_err(storage)? {
                    out.push(parse(done.value())?);
                    continue;
                }
                let owner_of_person = match &req.lead_id {
                    Some(id) => sticky
                        .get(id.as_str())
                        .map_err(storage)?
                        .map(|v| v.value().to_owned()),
                    None => None,
                };
                let (decision, _) = w.decide(&req.lead, owner_of_person.as_deref());
                if let (Some(d), Some(id)) = (&decision, &req.lead_id) {
                    sticky
                        .insert(id.as_str(), d.owner.as_str())
                        .map_err(storage)?;
                }
                outcomes
                    .insert(req.event_id.as_str(), json(&decision).as_slice())
                    .map_err(storage)?;
                out.push(decision);
            }
            for (team, s) in &w.states {
                if before_states.get(team) != Some(s) {
                    states
                        .insert(team.as_str(), json(s).as_slice())
                        .map_err(storage)?;
                }
            }
            for (id, o) in &w.owners {
                if before_load.get(id) != Some(&o.open_leads) {
                    load.insert(id.as_str(), o.open_leads).map_err(storage)?;
                }
            }
            AssignBatch {
                rules: w.rules.len(),
                decisions: out,
            }
        };
        txn.commit().map_err(storage)?;
        Ok(out)
    }

    fn preview(
        &self,
        lead: &Value,
        lead_id: Option<&str>,
    ) -> Result<(Option<Decision>, Vec<RuleTrace>), AssignError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let resources = txn.open_table(RESOURCES).map_err(storage)?;
        let states = txn.open_table(STATES).map_err(storage)?;
        let load = txn.open_table(LOAD).map_err(storage)?;
        let sticky = txn.open_table(STICKY).map_err(storage)?;
        let mut w = world(&resources, &states, &load)?;
        let owner = match lead_id {
            Some(id) => sticky
                .get(id)
                .map_err(storage)?
                .map(|v| v.value().to_owned()),
            None => None,
        };
        Ok(w.decide(lead, owner.as_deref()))
    }

    fn list(&self, kind: Kind) -> Result<Vec<Versioned>, AssignError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let resources = txn.open_table(RESOURCES).map_err(storage)?;
        let load = txn.open_table(LOAD).map_err(storage)?;
        let mut out = Vec::new();
        for (id, mut v) in all(&resources, kind)? {
            if kind == Kind::Owners {
                let open = load
                    .get(id.as_str())
                    .map_err(storage)?
                    .map_or(0, |v| v.value());
                v.body["open_leads"] = open.into();
            }
            out.push(v);
        }
        if kind == Kind::Rules {
            out.sort_by_key(|v| {
                (
                    v.body["priority"].as_i64().unwrap_or(0),
                    v.body["id"].as_str().unwrap_or("").to_owned(),
                )
            });
        }
        Ok(out)
    }

    fn get(&self, kind: Kind, id: &str) -> Result<Option<Versioned>, AssignError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let resources = txn.open_table(RESOURCES).map_err(storage)?;
        let Some(v) = resources.get(key(kind, id).as_str()).map_err(storage)? else {
            return Ok(None);
        };
        let mut v: Versioned = parse(v.value())?;
        if kind == Kind::Owners {
            let load = txn.open_table(LOAD).map_err(storage)?;
            v.body["open_leads"] = load
                .get(id)
                .map_err(storage)?
                .map_or(0, |v| v.value())
                .into();
        }
        Ok(Some(v))
    }

    fn put(
        &self,
        kind: Kind,
        id: &str,
        body: Value,
        expect: Expect,
    ) -> Result<Versioned, AssignError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let written = {
            let mut resources = txn.open_table(RESOURCES).map_err(storage)?;
            let k = key(kind, id);
            let current: Option<Versioned> = match resources.get(k.as_str()).map_err(storage)? {
                Some(v) => Some(parse(v.value())?),
                None => None,
            };
            check_expect(kind, current.as_ref(), id, expect)?;
            let body = Self::validate(&resources, kind, id, &body)?;
            let mut meta = txn.open_table(META).map_err(storage)?;
            let version = meta
                .get("version")
                .map_err(storage)?
                .map_or(0, |v| v.value())
                + 1;
            meta.insert("version", version).map_err(storage)?;
            drop(meta);
            if kind == Kind::Owners {
                let open = body["open_leads"].as_u64().unwrap_or(0);
                txn.open_table(LOAD)
                    .map_err(storage)?
                    .insert(id, open)
                    .map_err(storage)?;
            }
            let v = Versioned { version, body };
            resources
                .insert(k.as_str(), json(&v).as_slice())
                .map_err(storage)?;
            let action = if current.is_some() {
                "update"
            } else {
                "create"
            };
            Self::record_audit(&txn, action, kind, id, version, v.body.clone())?;
            v
        };
        txn.commit().map_err(storage)?;
        Ok(written)
    }

    fn delete(&self, kind: Kind, id: &str, expect: Expect) -> Result<u64, AssignError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let version = {
            let mut resources = txn.open_table(RESOURCES).map_err(storage)?;
            let k = key(kind, id);
            let current: Versioned = match resources.get(k.as_str()).map_err(storage)? {
                Some(v) => parse(v.value())?,
                None => return Err(AssignError::NotFound(kind.one(), id.into())),
            };
            check_expect(kind, Some(&current), id, expect)?;
            let users = Self::users_of(&resources, kind, id)?;
            if !users.is_empty() {
                return Err(AssignError::InUse(format!(
                    "{} `{id}` is used by {}; change those first",
                    kind.one(),
                    users.join(", ")
                )));
            }
            resources.remove(k.as_str()).map_err(storage)?;
            Self::record_audit(&txn, "delete", kind, id, current.version, Value::Null)?;
            current.version
        };
        txn.commit().map_err(storage)?;
        Ok(version)
    }

    fn audit(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, AssignError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(AUDIT).map_err(storage)?;
        let mut out = Vec::new();
        for entry in table.range(after + 1..).map_err(storage)?.take(limit) {
            let (_, v) = entry.map_err(storage)?;
            out.push(parse(v.value())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> EmbeddedAssignmentStore {
        let s = EmbeddedAssignmentStore::in_memory().unwrap();
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
            json!({"id": "all", "priority": 100, "action": {"type": "team", "team": "sales", "strategy": "round_robin"}}),
            Expect::Absent,
        )
        .unwrap();
        s
    }

    fn req(event: &str, lead_id: Option<&str>) -> AssignRequest {
        AssignRequest {
            event_id: event.into(),
            lead_id: lead_id.map(str::to_owned),
            lead: json!({}),
        }
    }

    #[test]
    fn counters_survive_and_replays_move_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.redb");
        {
            let s = EmbeddedAssignmentStore::open(&path).unwrap();
            for o in ["ann", "bob"] {
                s.put(Kind::Owners, o, json!({"id": o}), Expect::Absent)
                    .unwrap();
            }
            s.put(
                Kind::Teams,
                "t",
                json!({"id": "t", "members": [{"owner": "ann"}, {"owner": "bob"}]}),
                Expect::Absent,
            )
            .unwrap();
            s.put(Kind::Rules, "r", json!({"id": "r", "priority": 1, "action": {"type": "team", "team": "t", "strategy": "round_robin"}}), Expect::Absent).unwrap();
            let first = s.assign(&[req("e1", None)]).unwrap().decisions;
            assert_eq!(first[0].as_ref().unwrap().owner, "ann");
            let again = s.assign(&[req("e1", None)]).unwrap().decisions;
            assert_eq!(again, first, "a replay gets the same owner");
        }
        let s = EmbeddedAssignmentStore::open(&path).unwrap();
        let next = s.assign(&[req("e2", None)]).unwrap().decisions;
        assert_eq!(
            next[0].as_ref().unwrap().owner,
            "bob",
            "the cursor survived"
        );
        assert_eq!(
            s.get(Kind::Owners, "ann").unwrap().unwrap().body["open_leads"],
            1
        );
    }

    #[test]
    fn fair_across_batches_and_sticky_through_lead_id() {
        let s = store();
        let mut tally = BTreeMap::<String, usize>::new();
        let leads: Vec<_> = (0..3000).map(|i| req(&format!("e{i}"), None)).collect();
        for batch in leads.chunks(500) {
            for d in s.assign(batch).unwrap().decisions {
                *tally.entry(d.unwrap().owner).or_default() += 1;
            }
        }
        assert!(tally.values().all(|n| *n == 1000), "{tally:?}");

        s.put(Kind::Teams, "weighted", json!({"id": "weighted", "members": [{"owner": "ann", "weight": 6}, {"owner": "bob", "weight": 3}, {"owner": "cai", "weight": 1}]}), Expect::Any).unwrap();
        s.put(Kind::Rules, "all", json!({"id": "all", "priority": 100, "action": {"type": "team", "team": "weighted", "strategy": "weighted"}}), Expect::Any).unwrap();
        let mut tally = BTreeMap::<String, usize>::new();
        let leads: Vec<_> = (0..3000).map(|i| req(&format!("w{i}"), None)).collect();
        for batch in leads.chunks(250) {
            for d in s.assign(batch).unwrap().decisions {
                *tally.entry(d.unwrap().owner).or_default() += 1;
            }
        }
        for (owner, share) in [("ann", 0.6), ("bob", 0.3), ("cai", 0.1)] {
            let got = tally[owner] as f64 / 3000.0;
            assert!((got - share).abs() <= 0.01, "{owner}: {got} vs {share}");
        }

        s.put(Kind::Rules, "all", json!({"id": "all", "priority": 100, "action": {"type": "team", "team": "sales", "strategy": "sticky"}}), Expect::Any).unwrap();
        let first = s.assign(&[req("s1", Some("person-1"))]).unwrap().decisions;
        let owner = first[0].as_ref().unwrap().owner.clone();
        for i in 2..6 {
            let d = s
                .assign(&[req(&format!("s{i}"), Some("person-1"))])
                .unwrap()
                .decisions;
            assert_eq!(
                d[0].as_ref().unwrap().owner,
                owner,
                "the same person keeps the owner"
            );
        }
    }

    #[test]
    fn capacity_stops_at_the_limit() {
        let s = store();
        s.put(
            Kind::Owners,
            "ann",
            json!({"id": "ann", "capacity": 2}),
            Expect::Any,
        )
        .unwrap();
        s.put(
            Kind::Rules,
            "all",
            json!({"id": "all", "priority": 100, "action": {"type": "owner", "owner": "ann"}}),
            Expect::Any,
        )
        .unwrap();
        let out = s
            .assign(
                &(0..3)
                    .map(|i| req(&format!("c{i}"), None))
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        let got: Vec<bool> = out.decisions.iter().map(Option::is_some).collect();
        assert_eq!(got, [true, true, false], "the third waits: ann is full");
        let (_, trace) = s.preview(&json!({}), None).unwrap();
        assert!(trace[0].why_not[0].contains("capacity"), "{trace:?}");
        // The CRM closes one: a slot opens.
        s.put(
            Kind::Owners,
            "ann",
            json!({"id": "ann", "capacity": 2, "open_leads": 1}),
            Expect::Any,
        )
        .unwrap();
        assert!(s.assign(&[req("c9", None)]).unwrap().decisions[0].is_some());
    }

    #[test]
    fn writes_are_checked_versioned_and_audited() {
        let s = store();
        let v = s.get(Kind::Rules, "all").unwrap().unwrap().version;
        let body = json!({"id": "all", "priority": 5, "action": {"type": "owner", "owner": "ann"}});
        assert!(matches!(
            s.put(Kind::Rules, "all", body.clone(), Expect::Version(v + 100)),
            Err(AssignError::Stale { .. })
        ));
        let w = s.put(Kind::Rules, "all", body, Expect::Version(v)).unwrap();
        assert!(w.version > v);
        assert!(matches!(
            s.put(Kind::Owners, "ann", json!({"id": "ann"}), Expect::Absent),
            Err(AssignError::Exists(..))
        ));
        match s.put(Kind::Rules, "x", json!({"id": "x", "priority": 1, "conditions": [{"op": "regex", "field": "contact.city", "pattern": "("}], "action": {"type": "team", "team": "nope", "strategy": "weighted"}}), Expect::Any) {
            Err(AssignError::Invalid(e)) => {
                let fields: Vec<_> = e.iter().map(|e| e.field.as_str()).collect();
                assert_eq!(fields, ["conditions[0].pattern", "action.team"]);
            }
            other => panic!("{other:?}"),
        }
        match s.put(Kind::Rules, "y", json!({"id": "y", "priority": 1, "action": {"type": "team", "team": "sales", "strategy": "random"}}), Expect::Any) {
            Err(AssignError::Invalid(e)) => {
                // Tagged enums are parsed whole: the path stops at `action`, the message names
                // the bad value and the choices.
                assert_eq!(e[0].field, "action");
                assert!(e[0].message.contains("round_robin"), "{e:?}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.delete(Kind::Owners, "bob", Expect::Any),
            Err(AssignError::InUse(_))
        ));
        s.delete(Kind::Rules, "all", Expect::Any).unwrap();
        let log = s.audit(0, 100).unwrap();
        let actions: Vec<_> = log
            .iter()
            .map(|e| format!("{} {} {}", e.action, e.kind, e.id))
            .collect();
        assert_eq!(actions.last().unwrap(), "delete rules all");
        assert_eq!(actions.len(), 7);
    }
}
