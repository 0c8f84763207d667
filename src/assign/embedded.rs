//! The embedded assignment store: `assignment.redb` under the data directory, or memory for dry
//! runs. Every call is one write transaction (reads are aborted ones), so the pipeline and the
//! API never see half a change.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableTable, Table, TableDefinition, WriteTransaction};

use super::engine::{Decision, TeamState};
use super::lifecycle::Pending;
use super::model::Kind;
use super::store::{
    AssignError, AuditEntry, AuditFrom, LeadStatus, Tables, Transact, Versioned, json, parse,
};
use serde_json::Value;

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
/// lead_id -> what its CRM last said of it (JSON).
const LEAD_STATUS: TableDefinition<&str, &[u8]> = TableDefinition::new("lead_status");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// lead_id -> its follow-up (JSON).
const FOLLOW_UPS: TableDefinition<&str, &[u8]> = TableDefinition::new("follow_ups");
/// (deadline in unix ms, lead_id): the follow-ups by deadline.
const FOLLOW_DUE: TableDefinition<(i64, &str), ()> = TableDefinition::new("follow_ups_due");
/// `owner/day` -> leads reassigned to them that day.
const CLAIMS: TableDefinition<&str, u64> = TableDefinition::new("claims");
/// seq -> a record to publish (JSON).
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// (dimension, value, stage) -> people.
const FUNNEL: TableDefinition<(&str, &str, &str), u64> = TableDefinition::new("funnel");

pub struct EmbeddedAssignmentStore {
    db: Database,
}

fn storage(e: impl Into<redb::Error>) -> AssignError {
    AssignError::Storage(e.into().to_string())
}

fn key(kind: Kind, id: &str) -> String {
    format!("{}/{id}", kind.as_str())
}

type Bytes = &'static [u8];

/// The tables of one write transaction.
struct Txn<'t> {
    resources: Table<'t, &'static str, Bytes>,
    states: Table<'t, &'static str, Bytes>,
    load: Table<'t, &'static str, u64>,
    sticky: Table<'t, &'static str, &'static str>,
    outcomes: Table<'t, &'static str, Bytes>,
    audit: Table<'t, u64, Bytes>,
    meta: Table<'t, &'static str, u64>,
    lead_status: Table<'t, &'static str, Bytes>,
    follow_ups: Table<'t, &'static str, Bytes>,
    follow_due: Table<'t, (i64, &'static str), ()>,
    claims: Table<'t, &'static str, u64>,
    outbox: Table<'t, u64, Bytes>,
    funnel: Table<'t, (&'static str, &'static str, &'static str), u64>,
}

impl<'t> Txn<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, AssignError> {
        Ok(Self {
            resources: txn.open_table(RESOURCES).map_err(storage)?,
            states: txn.open_table(STATES).map_err(storage)?,
            load: txn.open_table(LOAD).map_err(storage)?,
            sticky: txn.open_table(STICKY).map_err(storage)?,
            outcomes: txn.open_table(OUTCOMES).map_err(storage)?,
            audit: txn.open_table(AUDIT).map_err(storage)?,
            meta: txn.open_table(META).map_err(storage)?,
            lead_status: txn.open_table(LEAD_STATUS).map_err(storage)?,
            follow_ups: txn.open_table(FOLLOW_UPS).map_err(storage)?,
            follow_due: txn.open_table(FOLLOW_DUE).map_err(storage)?,
            claims: txn.open_table(CLAIMS).map_err(storage)?,
            outbox: txn.open_table(OUTBOX).map_err(storage)?,
            funnel: txn.open_table(FUNNEL).map_err(storage)?,
        })
    }

    fn counter(&mut self, name: &str) -> Result<u64, AssignError> {
        let n = self
            .meta
            .get(name)
            .map_err(storage)?
            .map_or(0, |v| v.value())
            + 1;
        self.meta.insert(name, n).map_err(storage)?;
        Ok(n)
    }
}

impl Tables for Txn<'_> {
    fn resource(&mut self, kind: Kind, id: &str) -> Result<Option<Versioned>, AssignError> {
        match self
            .resources
            .get(key(kind, id).as_str())
            .map_err(storage)?
        {
            Some(v) => parse(v.value()).map(Some),
            None => Ok(None),
        }
    }

    fn resources(&mut self, kind: Kind) -> Result<Vec<(String, Versioned)>, AssignError> {
        let prefix = format!("{}/", kind.as_str());
        let mut out = Vec::new();
        for entry in self.resources.range(prefix.as_str()..).map_err(storage)? {
            let (k, v) = entry.map_err(storage)?;
            let Some(id) = k.value().strip_prefix(prefix.as_str()) else {
                break;
            };
            out.push((id.to_owned(), parse(v.value())?));
        }
        Ok(out)
    }

    fn put_resource(&mut self, kind: Kind, id: &str, v: &Versioned) -> Result<(), AssignError> {
        self.resources
            .insert(key(kind, id).as_str(), json(v).as_slice())
            .map_err(storage)?;
        Ok(())
    }

    fn remove_resource(&mut self, kind: Kind, id: &str) -> Result<(), AssignError> {
        self.resources
            .remove(key(kind, id).as_str())
            .map_err(storage)?;
        Ok(())
    }

    fn states(&mut self) -> Result<BTreeMap<String, TeamState>, AssignError> {
        let mut out = BTreeMap::new();
        for entry in self.states.iter().map_err(storage)? {
            let (k, v) = entry.map_err(storage)?;
            out.insert(k.value().to_owned(), parse(v.value())?);
        }
        Ok(out)
    }

    fn put_state(&mut self, team: &str, s: &TeamState) -> Result<(), AssignError> {
        self.states
            .insert(team, json(s).as_slice())
            .map_err(storage)?;
        Ok(())
    }

    fn load(&mut self) -> Result<BTreeMap<String, u64>, AssignError> {
        let mut out = BTreeMap::new();
        for entry in self.load.iter().map_err(storage)? {
            let (k, v) = entry.map_err(storage)?;
            out.insert(k.value().to_owned(), v.value());
        }
        Ok(out)
    }

    fn put_load(&mut self, owner: &str, open: u64) -> Result<(), AssignError> {
        self.load.insert(owner, open).map_err(storage)?;
        Ok(())
    }

    fn sticky(&mut self, lead_id: &str) -> Result<Option<String>, AssignError> {
        Ok(self
            .sticky
            .get(lead_id)
            .map_err(storage)?
            .map(|v| v.value().to_owned()))
    }

    fn put_sticky(&mut self, lead_id: &str, owner: &str) -> Result<(), AssignError> {
        self.sticky.insert(lead_id, owner).map_err(storage)?;
        Ok(())
    }

    fn lead_status(&mut self, lead_id: &str) -> Result<Option<LeadStatus>, AssignError> {
        match self.lead_status.get(lead_id).map_err(storage)? {
            Some(v) => parse(v.value()).map(Some),
            None => Ok(None),
        }
    }

    fn put_lead_status(&mut self, lead_id: &str, s: &LeadStatus) -> Result<(), AssignError> {
        self.lead_status
            .insert(lead_id, json(s).as_slice())
            .map_err(storage)?;
        Ok(())
    }

    fn outcome(&mut self, event_id: &str) -> Result<Option<Option<Decision>>, AssignError> {
        match self.outcomes.get(event_id).map_err(storage)? {
            Some(v) => parse(v.value()).map(Some),
            None => Ok(None),
        }
    }

    fn put_outcome(&mut self, event_id: &str, d: &Option<Decision>) -> Result<(), AssignError> {
        self.outcomes
            .insert(event_id, json(d).as_slice())
            .map_err(storage)?;
        Ok(())
    }

    fn forget_lead(&mut self, lead_id: &str) -> Result<(), AssignError> {
        self.sticky.remove(lead_id).map_err(storage)?;
        self.lead_status.remove(lead_id).map_err(storage)?;
        Ok(())
    }

    fn forget_outcome(&mut self, event_id: &str) -> Result<(), AssignError> {
        self.outcomes.remove(event_id).map_err(storage)?;
        Ok(())
    }

    fn next_version(&mut self) -> Result<u64, AssignError> {
        self.counter("version")
    }

    fn append_audit(&mut self, mut entry: AuditEntry) -> Result<(), AssignError> {
        entry.seq = self.counter("audit")?;
        self.audit
            .insert(entry.seq, json(&entry).as_slice())
            .map_err(storage)?;
        Ok(())
    }

    fn follow_up(&mut self, lead_id: &str) -> Result<Option<Pending>, AssignError> {
        match self.follow_ups.get(lead_id).map_err(storage)? {
            Some(v) => parse(v.value()).map(Some),
            None => Ok(None),
        }
    }

    fn put_follow_up(&mut self, p: &Pending) -> Result<(), AssignError> {
        self.remove_follow_up(&p.lead_id)?;
        self.follow_ups
            .insert(p.lead_id.as_str(), json(p).as_slice())
            .map_err(storage)?;
        self.follow_due
            .insert((p.due_ms, p.lead_id.as_str()), ())
            .map_err(storage)?;
        Ok(())
    }

    fn remove_follow_up(&mut self, lead_id: &str) -> Result<(), AssignError> {
        let old: Option<Pending> = match self.follow_ups.remove(lead_id).map_err(storage)? {
            Some(v) => Some(parse(v.value())?),
            None => None,
        };
        if let Some(old) = old {
            self.follow_due
                .remove((old.due_ms, lead_id))
                .map_err(storage)?;
        }
        Ok(())
    }

    fn due_follow_ups(&mut self, now_ms: i64, limit: usize) -> Result<Vec<Pending>, AssignError> {
        let mut ids = Vec::new();
        for entry in self
            .follow_due
            .range((i64::MIN, "")..=(now_ms, "\u{10ffff}"))
            .map_err(storage)?
            .take(limit)
        {
            let (k, _) = entry.map_err(storage)?;
            ids.push(k.value().1.to_owned());
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.follow_up(&id)?);
        }
        Ok(out)
    }

    fn claims(&mut self, key: &str) -> Result<u64, AssignError> {
        Ok(self
            .claims
            .get(key)
            .map_err(storage)?
            .map_or(0, |v| v.value()))
    }

    fn put_claims(&mut self, key: &str, n: u64) -> Result<(), AssignError> {
        self.claims.insert(key, n).map_err(storage)?;
        Ok(())
    }

    fn push_outbox(&mut self, v: &Value) -> Result<u64, AssignError> {
        let seq = self.counter("outbox")?;
        self.put_outbox(seq, v)?;
        Ok(seq)
    }

    fn put_outbox(&mut self, seq: u64, v: &Value) -> Result<(), AssignError> {
        self.outbox
            .insert(seq, json(v).as_slice())
            .map_err(storage)?;
        Ok(())
    }

    fn outbox(&mut self, limit: usize) -> Result<Vec<(u64, Value)>, AssignError> {
        let mut out = Vec::new();
        for entry in self.outbox.iter().map_err(storage)?.take(limit) {
            let (k, v) = entry.map_err(storage)?;
            out.push((k.value(), parse(v.value())?));
        }
        Ok(out)
    }

    fn remove_outbox(&mut self, seq: u64) -> Result<(), AssignError> {
        self.outbox.remove(seq).map_err(storage)?;
        Ok(())
    }

    fn add_funnel(
        &mut self,
        by: &str,
        value: &str,
        stage: &str,
        n: u64,
    ) -> Result<(), AssignError> {
        let now = self
            .funnel
            .get((by, value, stage))
            .map_err(storage)?
            .map_or(0, |v| v.value());
        self.funnel
            .insert((by, value, stage), now + n)
            .map_err(storage)?;
        Ok(())
    }

    fn funnel(&mut self, by: &str) -> Result<Vec<(String, String, u64)>, AssignError> {
        let mut out = Vec::new();
        for entry in self.funnel.range((by, "", "")..).map_err(storage)? {
            let (k, v) = entry.map_err(storage)?;
            let (d, value, stage) = k.value();
            if d != by {
                break;
            }
            out.push((value.to_owned(), stage.to_owned(), v.value()));
        }
        Ok(out)
    }

    fn audit(&mut self, from: AuditFrom, limit: usize) -> Result<Vec<AuditEntry>, AssignError> {
        let mut out = Vec::new();
        let entries = match from {
            AuditFrom::After(after) => self.audit.range(after.saturating_add(1)..),
            AuditFrom::Before(before) => self.audit.range(..before),
        }
        .map_err(storage)?;
        let mut put = |entry: Result<_, redb::StorageError>| -> Result<(), AssignError> {
            let (_, v): (_, redb::AccessGuard<'_, &[u8]>) = entry.map_err(storage)?;
            out.push(parse(v.value())?);
            Ok(())
        };
        match from {
            AuditFrom::After(_) => entries.take(limit).try_for_each(&mut put)?,
            AuditFrom::Before(_) => entries.rev().take(limit).try_for_each(&mut put)?,
        }
        Ok(out)
    }
}

impl EmbeddedAssignmentStore {
    pub fn open(path: &Path) -> Result<Self, AssignError> {
        // Small (rules, owners, teams, counters): every page's checksum is verified at open.
        let mut builder = Database::builder();
        builder.set_check_integrity_on_open(true);
        let db = crate::storefile::open(&builder, path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                AssignError::Locked(path.display().to_string())
            }
            other => storage(other),
        })?;
        Ok(Self { db })
    }

    pub fn in_memory() -> Result<Self, AssignError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(storage)?;
        Ok(Self { db })
    }
}

impl Transact for EmbeddedAssignmentStore {
    /// Every call is a write transaction; a read one is aborted at the end.
    fn transact<T: Send>(
        &self,
        write: bool,
        f: &(dyn Fn(&mut dyn Tables) -> Result<T, AssignError> + Sync),
    ) -> Result<T, AssignError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let out = {
            let mut t = Txn::open(&txn)?;
            f(&mut t)?
        };
        if write {
            txn.commit().map_err(storage)?;
        } else {
            txn.abort().map_err(storage)?;
        }
        Ok(out)
    }
}
