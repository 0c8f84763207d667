//! Where rules, owners, teams and the assignment counters live. A trait, so that several gateways
//! can later share one (MySQL); the embedded redb store is the default.
//!
//! Every batch of leads is assigned in one transaction together with the counters it moves
//! (round-robin cursors, weights, open leads, sticky owners) and its outcomes, keyed by event id:
//! a batch replayed after a crash gets the same owners and moves nothing twice.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::engine::{Decision, RuleTrace, TeamState, World};
use super::lifecycle::Pending;
use super::model::{self, FieldError, Kind, Known, Owner, Rule, Team};
use super::segments::{ScoreGroup, Segment};

/// A resource with the version its ETag carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versioned {
    pub version: u64,
    pub body: Value,
}

/// What a write stored, and whether it created the resource (rather than replacing it).
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub resource: Versioned,
    pub created: bool,
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
    /// Who made it: the API token's name (`admin` for `[api] token`, `local` without tokens);
    /// absent for changes made before leadgate recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
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
    #[error(
        "the {kind} changed since you read it (its version is now {current}, or for an owner its open leads moved): read it again"
    )]
    Stale { kind: &'static str, current: u64 },
    #[error("invalid")]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    InUse(String),
    #[error("the data directory is in use by another leadgate process (assignment store {0})")]
    Locked(String),
    #[error("assignment store: {0}")]
    Storage(String),
    /// Another gateway held the lock too long (MySQL); the batch can be retried.
    #[error("assignment store: lost a lock conflict with another writer: {0}")]
    Conflict(String),
}

/// What a write expects of the current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `POST`: the id must be new.
    Absent,
    /// `PUT` with `If-Match`: the version must be this one.
    Version(u64),
    /// `PUT` with an owner's `If-Match` (`"7.3"`): its version, and its open leads then. An
    /// assignment moves the count, not the version: a read-modify-write that raced one is
    /// refused rather than writing the old count back.
    Loaded { version: u64, open_leads: u64 },
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
    /// Whether any rule exists (without one there is nothing to assign, and nothing to write).
    fn has_rules(&self) -> Result<bool, AssignError>;
    /// What a batch of leads is classified and assigned with, read at once: whether any rule
    /// exists, and the segments and score groups.
    fn definitions(&self) -> Result<Definitions, AssignError>;
    /// Records what a CRM says became of a lead (idempotent by `report.status_id`, the newest
    /// `at` wins); closing it frees a slot of its owner, reopening takes it again.
    fn report_status(
        &self,
        lead_id: &str,
        report: &StatusReport,
    ) -> Result<StatusOutcome, AssignError>;
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
    /// Validates and writes `body` under `id`, recording it in the audit log as done by `by`
    /// (an API token's name).
    fn put_by(
        &self,
        kind: Kind,
        id: &str,
        body: Value,
        expect: Expect,
        by: Option<&str>,
    ) -> Result<Written, AssignError>;
    fn delete_by(
        &self,
        kind: Kind,
        id: &str,
        expect: Expect,
        by: Option<&str>,
    ) -> Result<u64, AssignError>;
    /// [`AssignmentStore::put_by`] by nobody named (settings files, tests).
    fn put(
        &self,
        kind: Kind,
        id: &str,
        body: Value,
        expect: Expect,
    ) -> Result<Written, AssignError> {
        self.put_by(kind, id, body, expect, None)
    }
    fn delete(&self, kind: Kind, id: &str, expect: Expect) -> Result<u64, AssignError> {
        self.delete_by(kind, id, expect, None)
    }
    /// At most `limit` audit entries from `from`.
    fn audit(&self, from: AuditFrom, limit: usize) -> Result<Vec<AuditEntry>, AssignError>;
    /// Takes back (at most `limit`) leads whose follow-up deadline passed by `now`, reassigns
    /// them and queues the reassignments in the outbox; returns how many.
    fn reclaim(&self, now: jiff::Timestamp, limit: usize) -> Result<usize, AssignError>;
    /// The oldest `limit` records waiting to be published, with their sequence numbers.
    fn outbox(&self, limit: usize) -> Result<Vec<(u64, Value)>, AssignError>;
    /// Forgets published outbox records.
    fn published(&self, seqs: &[u64]) -> Result<(), AssignError>;
    /// The conversion funnel grouped by `by` (one of [`super::lifecycle::DIMENSIONS`]).
    fn funnel(&self, by: &str) -> Result<Vec<super::lifecycle::FunnelRow>, AssignError>;
    /// Forgets erased people: their statuses, owners and follow-ups, and the decisions made for
    /// their events; an open lead leaves its owner's count. The funnel keeps its counts.
    fn erase(&self, lead_ids: &[String], event_ids: &[String]) -> Result<(), AssignError>;
}

/// How long a gateway may take to publish the outbox records it took, before another may.
const OUTBOX_LEASE_MS: i64 = 30_000;
/// Outbox records looked at per call (leased ones are skipped).
const OUTBOX_SCAN: usize = 2_000;

/// A lead's lifecycle states; the last three close it.
pub const STATUSES: &[&str] = &["contacted", "qualified", "converted", "lost", "closed"];
const CLOSING: &[&str] = &["converted", "lost", "closed"];
/// How many status ids of a lead are remembered for idempotency.
const SEEN_KEPT: usize = 100;

/// What a CRM reports of a lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The CRM's id of this report: a repeat is answered as the first, changing nothing.
    pub status_id: String,
    pub status: String,
    /// When it happened in the CRM (RFC 3339 UTC): reports may arrive out of order.
    pub at: String,
}

/// What leadgate knows of a lead's lifecycle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadStatus {
    pub status: String,
    pub at: String,
    pub status_id: String,
    /// Its owner's slot was freed (a closing status).
    pub closed: bool,
    /// The owner whose open leads it counted, when it was assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The latest status ids, for idempotency.
    #[serde(default)]
    pub seen: Vec<String>,
    /// It was assigned (and `owner` counts it among their open leads unless `closed`).
    #[serde(default)]
    pub assigned: bool,
    /// The funnel's groups this person counts in: `("campaign", "618")`...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dims: Vec<(String, String)>,
    /// The funnel's stages this person reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reached: Vec<String>,
}

/// The answer to a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusOutcome {
    pub lead_id: String,
    /// The lead's status now (the newest report's).
    pub status: String,
    pub at: String,
    /// `false` for a repeat, or a report older than the newest one.
    pub applied: bool,
    pub duplicate: bool,
    pub owner: Option<String>,
    /// The owner's open leads after it.
    pub open_leads: Option<u64>,
}

fn report_status(
    t: &mut dyn Tables,
    lead_id: &str,
    r: &StatusReport,
) -> Result<StatusOutcome, AssignError> {
    let mut state = t.lead_status(lead_id)?.unwrap_or_default();
    if state.owner.is_none() && !state.assigned {
        state.owner = t.sticky(lead_id)?;
    }
    let duplicate = state.seen.contains(&r.status_id);
    let newer = !duplicate
        && (state.status_id.is_empty()
            || (r.at.as_str(), r.status_id.as_str())
                > (state.at.as_str(), state.status_id.as_str()));
    if !duplicate {
        state.seen.push(r.status_id.clone());
        if state.seen.len() > SEEN_KEPT {
            state.seen.remove(0);
        }
    }
    // The owner's open leads, read once (and written back when the report moves them).
    let mut open_leads = match &state.owner {
        Some(o) => Some(t.load()?.get(o).copied().unwrap_or(0)),
        None => None,
    };
    if newer {
        let closing = CLOSING.contains(&r.status.as_str());
        if let (Some(owner), Some(n)) = (&state.owner, open_leads.as_mut())
            && closing != state.closed
        {
            *n = if closing { n.saturating_sub(1) } else { *n + 1 };
            t.put_load(owner, *n)?;
        }
        state.closed = closing;
        state.status = r.status.clone();
        state.at = r.at.clone();
        state.status_id = r.status_id.clone();
    }
    if !duplicate {
        super::lifecycle::reported(t, lead_id, &mut state, &r.status)?;
        t.put_lead_status(lead_id, &state)?;
    }
    Ok(StatusOutcome {
        lead_id: lead_id.to_owned(),
        status: state.status,
        at: state.at,
        applied: newer,
        duplicate,
        owner: state.owner,
        open_leads,
    })
}

/// See [`AssignmentStore::definitions`].
#[derive(Debug, Clone, Default)]
pub struct Definitions {
    pub rules: bool,
    pub segments: Vec<Segment>,
    pub groups: Vec<ScoreGroup>,
}

/// Where a page of the audit log starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditFrom {
    /// The entries after this `seq`, oldest first (0: from the first).
    After(u64),
    /// The entries before this `seq`, newest first (`u64::MAX`: from the newest).
    Before(u64),
}

/// A store that runs a closure in one of its transactions: `write` ones are committed (and, for
/// shared stores, serialized across gateways), read ones are discarded. Every such store is an
/// [`AssignmentStore`].
pub trait Transact: Send + Sync {
    fn transact<T: Send>(
        &self,
        write: bool,
        f: &(dyn Fn(&mut dyn Tables) -> Result<T, AssignError> + Sync),
    ) -> Result<T, AssignError>;
}

impl<S: Transact> AssignmentStore for S {
    fn has_rules(&self) -> Result<bool, AssignError> {
        self.transact(false, &|t| Ok(!t.resources(Kind::Rules)?.is_empty()))
    }

    fn report_status(
        &self,
        lead_id: &str,
        report: &StatusReport,
    ) -> Result<StatusOutcome, AssignError> {
        self.transact(true, &|t| report_status(t, lead_id, report))
    }

    fn definitions(&self) -> Result<Definitions, AssignError> {
        self.transact(false, &|t| {
            Ok(Definitions {
                rules: !t.resources(Kind::Rules)?.is_empty(),
                segments: t
                    .resources(Kind::Segments)?
                    .into_iter()
                    .map(|(_, v)| typed(v.body))
                    .collect::<Result<_, _>>()?,
                groups: t
                    .resources(Kind::Scores)?
                    .into_iter()
                    .map(|(_, v)| typed(v.body))
                    .collect::<Result<_, _>>()?,
            })
        })
    }

    fn assign(&self, leads: &[AssignRequest]) -> Result<AssignBatch, AssignError> {
        self.transact(true, &|t| assign(t, leads))
    }

    fn preview(
        &self,
        lead: &Value,
        lead_id: Option<&str>,
    ) -> Result<(Option<Decision>, Vec<RuleTrace>), AssignError> {
        self.transact(false, &|t| preview(t, lead, lead_id))
    }

    fn list(&self, kind: Kind) -> Result<Vec<Versioned>, AssignError> {
        self.transact(false, &|t| list(t, kind))
    }

    fn get(&self, kind: Kind, id: &str) -> Result<Option<Versioned>, AssignError> {
        self.transact(false, &|t| get(t, kind, id))
    }

    fn put_by(
        &self,
        kind: Kind,
        id: &str,
        body: Value,
        expect: Expect,
        by: Option<&str>,
    ) -> Result<Written, AssignError> {
        self.transact(true, &|t| put(t, kind, id, body.clone(), expect, by))
    }

    fn delete_by(
        &self,
        kind: Kind,
        id: &str,
        expect: Expect,
        by: Option<&str>,
    ) -> Result<u64, AssignError> {
        self.transact(true, &|t| delete(t, kind, id, expect, by))
    }

    fn audit(&self, from: AuditFrom, limit: usize) -> Result<Vec<AuditEntry>, AssignError> {
        self.transact(false, &|t| t.audit(from, limit))
    }

    fn reclaim(&self, now: jiff::Timestamp, limit: usize) -> Result<usize, AssignError> {
        // Most calls find nothing due: a read transaction, without the writers' lock.
        if self.transact(false, &|t| {
            Ok(t.due_follow_ups(now.as_millisecond(), 1)?.is_empty())
        })? {
            return Ok(0);
        }
        self.transact(true, &|t| {
            let mut w = world(t)?;
            let before = loads(&w);
            let n = super::lifecycle::reclaim(t, &mut w, now, limit)?;
            write_loads(t, &w, &before)?;
            Ok(n)
        })
    }

    fn outbox(&self, limit: usize) -> Result<Vec<(u64, Value)>, AssignError> {
        let now = jiff::Timestamp::now().as_millisecond();
        // Most calls find it empty: a read transaction first, without the writers' lock.
        if self.transact(false, &|t| t.outbox(1))?.is_empty() {
            return Ok(Vec::new());
        }
        // Leased, so that two gateways sharing the store do not both publish a record; a
        // gateway that dies holding a lease leaves it to the others once it runs out.
        self.transact(true, &|t| {
            let mut out = Vec::new();
            for (seq, mut entry) in t.outbox(OUTBOX_SCAN)? {
                if entry["lease_ms"].as_i64().unwrap_or(0) > now {
                    continue;
                }
                entry["lease_ms"] = (now + OUTBOX_LEASE_MS).into();
                t.put_outbox(seq, &entry)?;
                out.push((seq, entry["record"].take()));
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
    }

    fn published(&self, seqs: &[u64]) -> Result<(), AssignError> {
        self.transact(true, &|t| seqs.iter().try_for_each(|s| t.remove_outbox(*s)))
    }

    fn erase(&self, lead_ids: &[String], event_ids: &[String]) -> Result<(), AssignError> {
        self.transact(true, &|t| {
            for lead in lead_ids {
                let state = t.lead_status(lead)?.unwrap_or_default();
                if let Some(owner) = &state.owner
                    && state.assigned
                    && !state.closed
                {
                    let open = t.load()?.get(owner).copied().unwrap_or(0);
                    t.put_load(owner, open.saturating_sub(1))?;
                }
                t.remove_follow_up(lead)?;
                t.forget_lead(lead)?;
            }
            for event in event_ids {
                t.forget_outcome(event)?;
            }
            Ok(())
        })
    }

    fn funnel(&self, by: &str) -> Result<Vec<super::lifecycle::FunnelRow>, AssignError> {
        let rows = self.transact(false, &|t| t.funnel(by))?;
        Ok(super::lifecycle::funnel_rows(by, rows))
    }
}

/// The reads and writes of one store transaction. The stores implement it; every decision is
/// made once, in the functions below.
pub trait Tables {
    fn resource(&mut self, kind: Kind, id: &str) -> Result<Option<Versioned>, AssignError>;
    /// Every resource of `kind`, by id.
    fn resources(&mut self, kind: Kind) -> Result<Vec<(String, Versioned)>, AssignError>;
    fn put_resource(&mut self, kind: Kind, id: &str, v: &Versioned) -> Result<(), AssignError>;
    fn remove_resource(&mut self, kind: Kind, id: &str) -> Result<(), AssignError>;
    fn states(&mut self) -> Result<BTreeMap<String, TeamState>, AssignError>;
    fn put_state(&mut self, team: &str, s: &TeamState) -> Result<(), AssignError>;
    /// Open leads by owner.
    fn load(&mut self) -> Result<BTreeMap<String, u64>, AssignError>;
    fn put_load(&mut self, owner: &str, open: u64) -> Result<(), AssignError>;
    fn sticky(&mut self, lead_id: &str) -> Result<Option<String>, AssignError>;
    fn put_sticky(&mut self, lead_id: &str, owner: &str) -> Result<(), AssignError>;
    fn lead_status(&mut self, lead_id: &str) -> Result<Option<LeadStatus>, AssignError>;
    fn put_lead_status(&mut self, lead_id: &str, s: &LeadStatus) -> Result<(), AssignError>;
    /// `Some(decision)` when the event was assigned before.
    fn outcome(&mut self, event_id: &str) -> Result<Option<Option<Decision>>, AssignError>;
    fn put_outcome(&mut self, event_id: &str, d: &Option<Decision>) -> Result<(), AssignError>;
    /// Removes a lead's status and sticky owner (an erasure).
    fn forget_lead(&mut self, lead_id: &str) -> Result<(), AssignError>;
    fn forget_outcome(&mut self, event_id: &str) -> Result<(), AssignError>;
    /// A new resource version, greater than every earlier one.
    fn next_version(&mut self) -> Result<u64, AssignError>;
    /// Appends `entry` (its `seq` is assigned here).
    fn append_audit(&mut self, entry: AuditEntry) -> Result<(), AssignError>;
    fn audit(&mut self, from: AuditFrom, limit: usize) -> Result<Vec<AuditEntry>, AssignError>;
    fn follow_up(&mut self, lead_id: &str) -> Result<Option<Pending>, AssignError>;
    /// Creates or replaces the lead's follow-up (and its place in the deadline index).
    fn put_follow_up(&mut self, p: &Pending) -> Result<(), AssignError>;
    fn remove_follow_up(&mut self, lead_id: &str) -> Result<(), AssignError>;
    /// The follow-ups due at `now_ms` (unix milliseconds) or before, earliest first.
    fn due_follow_ups(&mut self, now_ms: i64, limit: usize) -> Result<Vec<Pending>, AssignError>;
    /// An owner's claims on a day (`"ann/2026-12-02"`).
    fn claims(&mut self, key: &str) -> Result<u64, AssignError>;
    fn put_claims(&mut self, key: &str, n: u64) -> Result<(), AssignError>;
    /// Queues a record to publish; returns its sequence number.
    fn push_outbox(&mut self, v: &Value) -> Result<u64, AssignError>;
    /// Replaces the entry at `seq` (its lease).
    fn put_outbox(&mut self, seq: u64, v: &Value) -> Result<(), AssignError>;
    fn outbox(&mut self, limit: usize) -> Result<Vec<(u64, Value)>, AssignError>;
    fn remove_outbox(&mut self, seq: u64) -> Result<(), AssignError>;
    /// Adds `n` people to a funnel count.
    fn add_funnel(&mut self, by: &str, value: &str, stage: &str, n: u64)
    -> Result<(), AssignError>;
    /// The counts of `by`: (value, stage, people).
    fn funnel(&mut self, by: &str) -> Result<Vec<(String, String, u64)>, AssignError>;
}

pub(super) fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("assignment entries serialize")
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, AssignError> {
    serde_json::from_slice(b).map_err(|e| AssignError::Storage(format!("corrupt entry: {e}")))
}

fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, AssignError> {
    serde_json::from_value(v).map_err(|e| AssignError::Storage(format!("corrupt entry: {e}")))
}

/// Owners (with their load), teams (with their state) and rules in evaluation order.
fn world(t: &mut dyn Tables) -> Result<World, AssignError> {
    let mut w = World::default();
    let load = t.load()?;
    for (id, v) in t.resources(Kind::Owners)? {
        let mut o: Owner = typed(v.body)?;
        o.open_leads = load.get(&id).copied().unwrap_or(0);
        w.owners.insert(id, o);
    }
    for (id, v) in t.resources(Kind::Teams)? {
        w.teams.insert(id, typed(v.body)?);
    }
    w.states = t.states()?;
    for (_, v) in t.resources(Kind::Rules)? {
        w.rules.push(typed(v.body)?);
    }
    w.rules
        .sort_by(|a, b| (a.priority, &a.id).cmp(&(b.priority, &b.id)));
    Ok(w)
}

type Loads = (BTreeMap<String, TeamState>, BTreeMap<String, u64>);

/// The counters a decision moves, before it.
fn loads(w: &World) -> Loads {
    (
        w.states.clone(),
        w.owners
            .iter()
            .map(|(id, o)| (id.clone(), o.open_leads))
            .collect(),
    )
}

/// Writes back the counters that moved since `before`.
fn write_loads(t: &mut dyn Tables, w: &World, (states, load): &Loads) -> Result<(), AssignError> {
    for (team, s) in &w.states {
        if states.get(team) != Some(s) {
            t.put_state(team, s)?;
        }
    }
    for (id, o) in &w.owners {
        if load.get(id) != Some(&o.open_leads) {
            t.put_load(id, o.open_leads)?;
        }
    }
    Ok(())
}

/// Assigns `leads` in order; writes back the counters that moved.
pub fn assign(t: &mut dyn Tables, leads: &[AssignRequest]) -> Result<AssignBatch, AssignError> {
    let mut w = world(t)?;
    let before = loads(&w);
    let now = jiff::Timestamp::now();
    let mut decisions = Vec::with_capacity(leads.len());
    for req in leads {
        if let Some(done) = t.outcome(&req.event_id)? {
            decisions.push(done);
            continue;
        }
        let owner_of_person = match &req.lead_id {
            Some(id) => t.sticky(id)?,
            None => None,
        };
        let (decision, _) = w.decide(&req.lead, owner_of_person.as_deref());
        if let (Some(d), Some(id)) = (&decision, &req.lead_id) {
            t.put_sticky(id, &d.owner)?;
        }
        if let Some(owner) = super::lifecycle::assigned(t, req, decision.as_ref(), &w.rules, now)?
            && let Some(o) = w.owners.get_mut(&owner)
        {
            o.open_leads = o.open_leads.saturating_sub(1);
        }
        t.put_outcome(&req.event_id, &decision)?;
        decisions.push(decision);
    }
    write_loads(t, &w, &before)?;
    Ok(AssignBatch {
        rules: w.rules.len(),
        decisions,
    })
}

/// What would happen to `lead`; the caller discards the transaction.
pub fn preview(
    t: &mut dyn Tables,
    lead: &Value,
    lead_id: Option<&str>,
) -> Result<(Option<Decision>, Vec<RuleTrace>), AssignError> {
    let mut w = world(t)?;
    let owner = match lead_id {
        Some(id) => t.sticky(id)?,
        None => None,
    };
    Ok(w.decide(lead, owner.as_deref()))
}

/// Owners are shown with their current load.
fn with_load(
    t: &mut dyn Tables,
    kind: Kind,
    id: &str,
    mut v: Versioned,
) -> Result<Versioned, AssignError> {
    if kind == Kind::Owners {
        v.body["open_leads"] = t.load()?.get(id).copied().unwrap_or(0).into();
    }
    Ok(v)
}

pub fn list(t: &mut dyn Tables, kind: Kind) -> Result<Vec<Versioned>, AssignError> {
    let mut out = Vec::new();
    for (id, v) in t.resources(kind)? {
        out.push(with_load(t, kind, &id, v)?);
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

pub fn get(t: &mut dyn Tables, kind: Kind, id: &str) -> Result<Option<Versioned>, AssignError> {
    match t.resource(kind, id)? {
        Some(v) => with_load(t, kind, id, v).map(Some),
        None => Ok(None),
    }
}

fn ids(t: &mut dyn Tables, kind: Kind) -> Result<BTreeSet<String>, AssignError> {
    Ok(t.resources(kind)?.into_iter().map(|(id, _)| id).collect())
}

/// Validates `body` as a `kind` against what exists; the normalized body.
fn validate(t: &mut dyn Tables, kind: Kind, id: &str, body: &Value) -> Result<Value, AssignError> {
    let invalid = |e: FieldError| AssignError::Invalid(vec![e]);
    let (mut errors, normalized) = match kind {
        Kind::Rules => {
            let r: Rule = model::parse(body).map_err(invalid)?;
            let (owners, teams) = (ids(t, Kind::Owners)?, ids(t, Kind::Teams)?);
            let known = Known {
                owners: &owners,
                teams: &teams,
            };
            (r.validate(&known), serde_json::to_value(&r))
        }
        Kind::Owners => {
            let o: Owner = model::parse(body).map_err(invalid)?;
            (o.validate(), serde_json::to_value(&o))
        }
        Kind::Teams => {
            let team: Team = model::parse(body).map_err(invalid)?;
            (
                team.validate(&ids(t, Kind::Owners)?),
                serde_json::to_value(&team),
            )
        }
        Kind::Segments => {
            let s: Segment = model::parse(body).map_err(invalid)?;
            (s.validate(), serde_json::to_value(&s))
        }
        Kind::Scores => {
            let g: ScoreGroup = model::parse(body).map_err(invalid)?;
            (g.validate(), serde_json::to_value(&g))
        }
    };
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

fn check_expect(
    kind: Kind,
    current: Option<&Versioned>,
    id: &str,
    expect: Expect,
) -> Result<(), AssignError> {
    match (expect, current) {
        (Expect::Absent, Some(_)) => Err(AssignError::Exists(kind.one(), id.into())),
        (Expect::Version(_) | Expect::Loaded { .. }, None) => {
            Err(AssignError::NotFound(kind.one(), id.into()))
        }
        (Expect::Version(v) | Expect::Loaded { version: v, .. }, Some(c)) if c.version != v => {
            Err(AssignError::Stale {
                kind: kind.one(),
                current: c.version,
            })
        }
        _ => Ok(()),
    }
}

/// With [`Expect::Loaded`]: the owner's open leads must not have moved since it was read.
fn check_load(
    t: &mut dyn Tables,
    kind: Kind,
    id: &str,
    expect: Expect,
    version: u64,
) -> Result<(), AssignError> {
    if let Expect::Loaded { open_leads, .. } = expect
        && kind == Kind::Owners
        && t.load()?.get(id).copied().unwrap_or(0) != open_leads
    {
        return Err(AssignError::Stale {
            kind: kind.one(),
            current: version,
        });
    }
    Ok(())
}

fn audit_entry(
    action: &str,
    (kind, id): (Kind, &str),
    version: u64,
    body: Value,
    by: Option<&str>,
) -> AuditEntry {
    AuditEntry {
        seq: 0,
        at: crate::lead::now_rfc3339(),
        action: action.into(),
        kind: kind.as_str().into(),
        id: id.into(),
        version,
        body,
        by: by.map(str::to_owned),
    }
}

pub fn put(
    t: &mut dyn Tables,
    kind: Kind,
    id: &str,
    body: Value,
    expect: Expect,
    by: Option<&str>,
) -> Result<Written, AssignError> {
    let current = t.resource(kind, id)?;
    check_expect(kind, current.as_ref(), id, expect)?;
    if let Some(c) = &current {
        check_load(t, kind, id, expect, c.version)?;
    }
    // An owner's load is leadgate's: a body without `open_leads` (the console's, a script's
    // read-modify-write that drops it) keeps the count, it does not reset it to 0.
    let given_load = body.get("open_leads").is_some();
    let mut body = validate(t, kind, id, &body)?;
    let version = t.next_version()?;
    if kind == Kind::Owners {
        if given_load || current.is_none() {
            t.put_load(id, body["open_leads"].as_u64().unwrap_or(0))?;
        } else {
            body["open_leads"] = t.load()?.get(id).copied().unwrap_or(0).into();
        }
    }
    let v = Versioned { version, body };
    t.put_resource(kind, id, &v)?;
    let action = if current.is_some() {
        "update"
    } else {
        "create"
    };
    t.append_audit(audit_entry(action, (kind, id), version, v.body.clone(), by))?;
    Ok(Written {
        resource: v,
        created: current.is_none(),
    })
}

/// Who refers to `kind/id`: a team listing an owner, a rule naming an owner or a team.
fn users_of(t: &mut dyn Tables, kind: Kind, id: &str) -> Result<Vec<String>, AssignError> {
    let mut users = Vec::new();
    if kind == Kind::Owners {
        for (tid, v) in t.resources(Kind::Teams)? {
            let team: Team = typed(v.body)?;
            if team.members.iter().any(|m| m.owner == id) {
                users.push(format!("team {tid}"));
            }
        }
    }
    if kind != Kind::Rules {
        for (rid, v) in t.resources(Kind::Rules)? {
            let r: Rule = typed(v.body)?;
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

pub fn delete(
    t: &mut dyn Tables,
    kind: Kind,
    id: &str,
    expect: Expect,
    by: Option<&str>,
) -> Result<u64, AssignError> {
    let Some(current) = t.resource(kind, id)? else {
        return Err(AssignError::NotFound(kind.one(), id.into()));
    };
    check_expect(kind, Some(&current), id, expect)?;
    check_load(t, kind, id, expect, current.version)?;
    let users = users_of(t, kind, id)?;
    if !users.is_empty() {
        return Err(AssignError::InUse(format!(
            "{} `{id}` is used by {}; change those first",
            kind.one(),
            users.join(", ")
        )));
    }
    t.remove_resource(kind, id)?;
    t.append_audit(audit_entry(
        "delete",
        (kind, id),
        current.version,
        Value::Null,
        by,
    ))?;
    Ok(current.version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assign::{AssignmentStore, EmbeddedAssignmentStore};
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
        // Taking her off duty without `open_leads` in the body keeps her two open leads.
        let w = s
            .put(
                Kind::Owners,
                "ann",
                json!({"id": "ann", "capacity": 2, "status": "off_duty"}),
                Expect::Any,
            )
            .unwrap();
        assert_eq!(w.resource.body["open_leads"], 2);
        assert_eq!(
            s.get(Kind::Owners, "ann").unwrap().unwrap().body["open_leads"],
            2
        );
        s.put(
            Kind::Owners,
            "ann",
            json!({"id": "ann", "capacity": 2}),
            Expect::Any,
        )
        .unwrap();
        assert!(
            s.assign(&[req("c10", None)]).unwrap().decisions[0].is_none(),
            "still full: the load was kept"
        );
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
        assert!(w.resource.version > v);
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
        let log = s.audit(AuditFrom::After(0), 100).unwrap();
        let actions: Vec<_> = log
            .iter()
            .map(|e| format!("{} {} {}", e.action, e.kind, e.id))
            .collect();
        assert_eq!(actions.last().unwrap(), "delete rules all");
        assert_eq!(actions.len(), 7);
    }
}
