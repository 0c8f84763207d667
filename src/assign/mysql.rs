//! The MySQL/MariaDB assignment store, for several gateways sharing rules and one rotation.
//!
//! The logic is the embedded store's ([`super::store`]); this file only reads and writes. Every
//! write (a batch of leads, a rule change) first locks one row, `leadgate_assign_meta.lock`, so
//! writers across gateways take turns: two gateways can never hand out the same round-robin slot,
//! and counters never lose an update. Reads run on a consistent snapshot without the lock.

use std::collections::BTreeMap;

use super::engine::{Decision, TeamState};
use super::lifecycle::Pending;
use super::model::Kind;
use super::store::{
    AssignError, AuditEntry, AuditFrom, LeadStatus, Tables, Transact, Versioned, json, parse,
};
use crate::sql::{Mysql, Retryable, SqlError, Tx};
use serde_json::Value;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS leadgate_assign_resources (
        kind VARBINARY(16) NOT NULL, id VARBINARY(64) NOT NULL, v MEDIUMBLOB NOT NULL,
        PRIMARY KEY (kind, id)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS leadgate_assign_states (
        team VARBINARY(64) NOT NULL PRIMARY KEY, v BLOB NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS leadgate_assign_load (
        owner VARBINARY(64) NOT NULL PRIMARY KEY, n BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS leadgate_assign_sticky (
        lead_id VARBINARY(64) NOT NULL PRIMARY KEY, owner VARBINARY(64) NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS leadgate_assign_outcomes (
        event_id VARBINARY(128) NOT NULL PRIMARY KEY, v BLOB NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS leadgate_assign_audit (
        seq BIGINT UNSIGNED NOT NULL PRIMARY KEY, v MEDIUMBLOB NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS leadgate_assign_meta (
        name VARBINARY(32) NOT NULL PRIMARY KEY, n BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS leadgate_assign_lead_status (
        lead_id VARBINARY(64) NOT NULL PRIMARY KEY, v BLOB NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS leadgate_assign_follow_ups (
        lead_id VARBINARY(64) NOT NULL PRIMARY KEY, due_ms BIGINT NOT NULL, v BLOB NOT NULL,
        KEY by_due (due_ms)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS leadgate_assign_claims (
        k VARBINARY(200) NOT NULL PRIMARY KEY, n BIGINT UNSIGNED NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS leadgate_assign_outbox (
        seq BIGINT UNSIGNED NOT NULL PRIMARY KEY, v MEDIUMBLOB NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS leadgate_assign_funnel (
        dim VARBINARY(16) NOT NULL, value VARBINARY(800) NOT NULL, stage VARBINARY(16) NOT NULL,
        n BIGINT UNSIGNED NOT NULL, PRIMARY KEY (dim, value, stage)) ENGINE=InnoDB",
    "INSERT IGNORE INTO leadgate_assign_meta (name, n) VALUES ('lock', 0), ('version', 0), ('audit', 0), ('outbox', 0)",
];

impl From<SqlError> for AssignError {
    fn from(e: SqlError) -> Self {
        match e {
            SqlError::Conflict(why) => Self::Conflict(why),
            SqlError::Other(why) => Self::Storage(why),
        }
    }
}

impl Retryable for AssignError {
    fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict(_))
    }
}

pub struct MysqlAssignmentStore {
    db: Mysql,
}

impl MysqlAssignmentStore {
    /// Connects to `url` and creates the tables that are missing.
    pub fn connect(url: &str) -> Result<Self, AssignError> {
        Ok(Self {
            db: Mysql::connect(url, SCHEMA)?,
        })
    }
}

impl Transact for MysqlAssignmentStore {
    /// A writer first takes the shared lock row.
    fn transact<T: Send>(
        &self,
        write: bool,
        f: &(dyn Fn(&mut dyn Tables) -> Result<T, AssignError> + Sync),
    ) -> Result<T, AssignError> {
        self.db.transaction(write, |tx| {
            if write {
                tx.run(
                    "SELECT n FROM leadgate_assign_meta WHERE name = 'lock' FOR UPDATE",
                    (),
                )?;
            }
            f(&mut MyTables { tx })
        })
    }
}

struct MyTables<'a, 'h> {
    tx: &'a mut Tx<'h>,
}

impl MyTables<'_, '_> {
    fn counter(&mut self, name: &str) -> Result<u64, AssignError> {
        self.tx.run(
            "UPDATE leadgate_assign_meta SET n = n + 1 WHERE name = ?",
            (name,),
        )?;
        let rows: Vec<u64> = self
            .tx
            .rows("SELECT n FROM leadgate_assign_meta WHERE name = ?", (name,))?;
        rows.first()
            .copied()
            .ok_or_else(|| AssignError::Storage(format!("counter {name} is missing")))
    }

    fn pairs(
        &mut self,
        sql: &str,
        params: impl Into<mysql_async::Params> + Send,
    ) -> Result<Vec<(String, Vec<u8>)>, AssignError> {
        let rows: Vec<(Vec<u8>, Vec<u8>)> = self.tx.rows(sql, params)?;
        Ok(rows
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
            .collect())
    }
}

impl Tables for MyTables<'_, '_> {
    fn resource(&mut self, kind: Kind, id: &str) -> Result<Option<Versioned>, AssignError> {
        self.tx
            .first_blob(
                "SELECT v FROM leadgate_assign_resources WHERE kind = ? AND id = ?",
                (kind.as_str(), id),
            )?
            .map(|b| parse(&b))
            .transpose()
    }

    fn resources(&mut self, kind: Kind) -> Result<Vec<(String, Versioned)>, AssignError> {
        self.pairs(
            "SELECT id, v FROM leadgate_assign_resources WHERE kind = ? ORDER BY id",
            (kind.as_str(),),
        )?
        .into_iter()
        .map(|(id, v)| Ok((id, parse(&v)?)))
        .collect()
    }

    fn put_resource(&mut self, kind: Kind, id: &str, v: &Versioned) -> Result<(), AssignError> {
        Ok(self.tx.run(
            "INSERT INTO leadgate_assign_resources (kind, id, v) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v)",
            (kind.as_str(), id, json(v)),
        )?)
    }

    fn remove_resource(&mut self, kind: Kind, id: &str) -> Result<(), AssignError> {
        Ok(self.tx.run(
            "DELETE FROM leadgate_assign_resources WHERE kind = ? AND id = ?",
            (kind.as_str(), id),
        )?)
    }

    fn states(&mut self) -> Result<BTreeMap<String, TeamState>, AssignError> {
        self.pairs("SELECT team, v FROM leadgate_assign_states", ())?
            .into_iter()
            .map(|(team, v)| Ok((team, parse(&v)?)))
            .collect()
    }

    fn put_state(&mut self, team: &str, s: &TeamState) -> Result<(), AssignError> {
        Ok(self.tx.run(
            "INSERT INTO leadgate_assign_states (team, v) VALUES (?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v)",
            (team, json(s)),
        )?)
    }

    fn load(&mut self) -> Result<BTreeMap<String, u64>, AssignError> {
        let rows: Vec<(Vec<u8>, u64)> = self
            .tx
            .rows("SELECT owner, n FROM leadgate_assign_load", ())?;
        Ok(rows
            .into_iter()
            .map(|(o, n)| (String::from_utf8_lossy(&o).into_owned(), n))
            .collect())
    }

    fn put_load(&mut self, owner: &str, open: u64) -> Result<(), AssignError> {
        Ok(self.tx.run(
            "INSERT INTO leadgate_assign_load (owner, n) VALUES (?, ?) ON DUPLICATE KEY UPDATE n = VALUES(n)",
            (owner, open),
        )?)
    }

    fn sticky(&mut self, lead_id: &str) -> Result<Option<String>, AssignError> {
        Ok(self
            .tx
            .first_blob(
                "SELECT owner FROM leadgate_assign_sticky WHERE lead_id = ?",
                (lead_id,),
            )?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    fn lead_status(&mut self, lead_id: &str) -> Result<Option<LeadStatus>, AssignError> {
        self.tx
            .first_blob(
                "SELECT v FROM leadgate_assign_lead_status WHERE lead_id = ?",
                (lead_id,),
            )?
            .map(|b| parse(&b))
            .transpose()
    }

    fn put_lead_status(&mut self, lead_id: &str, s: &LeadStatus) -> Result<(), AssignError> {
        Ok(self.tx.run(
            "INSERT INTO leadgate_assign_lead_status (lead_id, v) VALUES (?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v)",
            (lead_id, json(s)),
        )?)
    }

    fn put_sticky(&mut self, lead_id: &str, owner: &str) -> Result<(), AssignError> {
        Ok(self.tx.run(
            "INSERT INTO leadgate_assign_sticky (lead_id, owner) VALUES (?, ?) ON DUPLICATE KEY UPDATE owner = VALUES(owner)",
            (lead_id, owner),
        )?)
    }

    fn outcome(&mut self, event_id: &str) -> Result<Option<Option<Decision>>, AssignError> {
        self.tx
            .first_blob(
                "SELECT v FROM leadgate_assign_outcomes WHERE event_id = ?",
                (event_id,),
            )?
            .map(|b| parse(&b))
            .transpose()
    }

    fn forget_lead(&mut self, lead_id: &str) -> Result<(), AssignError> {
        self.tx.run(
            "DELETE FROM leadgate_assign_sticky WHERE lead_id = ?",
            (lead_id,),
        )?;
        Ok(self.tx.run(
            "DELETE FROM leadgate_assign_lead_status WHERE lead_id = ?",
            (lead_id,),
        )?)
    }

    fn forget_outcome(&mut self, event_id: &str) -> Result<(), AssignError> {
        Ok(self.tx.run(
            "DELETE FROM leadgate_assign_outcomes WHERE event_id = ?",
            (event_id,),
        )?)
    }

    fn put_outcome(&mut self, event_id: &str, d: &Option<Decision>) -> Result<(), AssignError> {
        Ok(self.tx.run(
            "INSERT INTO leadgate_assign_outcomes (event_id, v) VALUES (?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v)",
            (event_id, json(d)),
        )?)
    }

    fn next_version(&mut self) -> Result<u64, AssignError> {
        self.counter("version")
    }

    fn append_audit(&mut self, mut entry: AuditEntry) -> Result<(), AssignError> {
        entry.seq = self.counter("audit")?;
        Ok(self.tx.run(
            "INSERT INTO leadgate_assign_audit (seq, v) VALUES (?, ?)",
            (entry.seq, json(&entry)),
        )?)
    }

    fn follow_up(&mut self, lead_id: &str) -> Result<Option<Pending>, AssignError> {
        self.tx
            .first_blob(
                "SELECT v FROM leadgate_assign_follow_ups WHERE lead_id = ?",
                (lead_id,),
            )?
            .map(|b| parse(&b))
            .transpose()
    }

    fn put_follow_up(&mut self, p: &Pending) -> Result<(), AssignError> {
        Ok(self.tx.run(
            "INSERT INTO leadgate_assign_follow_ups (lead_id, due_ms, v) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE due_ms = VALUES(due_ms), v = VALUES(v)",
            (p.lead_id.as_str(), p.due_ms, json(p)),
        )?)
    }

    fn remove_follow_up(&mut self, lead_id: &str) -> Result<(), AssignError> {
        Ok(self.tx.run(
            "DELETE FROM leadgate_assign_follow_ups WHERE lead_id = ?",
            (lead_id,),
        )?)
    }

    fn due_follow_ups(&mut self, now_ms: i64, limit: usize) -> Result<Vec<Pending>, AssignError> {
        let rows: Vec<Vec<u8>> = self.tx.rows(
            "SELECT v FROM leadgate_assign_follow_ups WHERE due_ms <= ? ORDER BY due_ms, lead_id LIMIT ?",
            (now_ms, limit as u64),
        )?;
        rows.iter().map(|b| parse(b)).collect()
    }

    fn claims(&mut self, key: &str) -> Result<u64, AssignError> {
        let rows: Vec<u64> = self
            .tx
            .rows("SELECT n FROM leadgate_assign_claims WHERE k = ?", (key,))?;
        Ok(rows.first().copied().unwrap_or(0))
    }

    fn put_claims(&mut self, key: &str, n: u64) -> Result<(), AssignError> {
        Ok(self.tx.run(
            "INSERT INTO leadgate_assign_claims (k, n) VALUES (?, ?) ON DUPLICATE KEY UPDATE n = VALUES(n)",
            (key, n),
        )?)
    }

    fn push_outbox(&mut self, v: &Value) -> Result<u64, AssignError> {
        let seq = self.counter("outbox")?;
        self.put_outbox(seq, v)?;
        Ok(seq)
    }

    fn put_outbox(&mut self, seq: u64, v: &Value) -> Result<(), AssignError> {
        Ok(self.tx.run(
            "INSERT INTO leadgate_assign_outbox (seq, v) VALUES (?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v)",
            (seq, json(v)),
        )?)
    }

    fn outbox(&mut self, limit: usize) -> Result<Vec<(u64, Value)>, AssignError> {
        let rows: Vec<(u64, Vec<u8>)> = self.tx.rows(
            "SELECT seq, v FROM leadgate_assign_outbox ORDER BY seq LIMIT ?",
            (limit as u64,),
        )?;
        rows.into_iter()
            .map(|(seq, v)| Ok((seq, parse(&v)?)))
            .collect()
    }

    fn remove_outbox(&mut self, seq: u64) -> Result<(), AssignError> {
        Ok(self
            .tx
            .run("DELETE FROM leadgate_assign_outbox WHERE seq = ?", (seq,))?)
    }

    fn add_funnel(
        &mut self,
        by: &str,
        value: &str,
        stage: &str,
        n: u64,
    ) -> Result<(), AssignError> {
        Ok(self.tx.run(
            "INSERT INTO leadgate_assign_funnel (dim, value, stage, n) VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE n = n + VALUES(n)",
            (by, value, stage, n),
        )?)
    }

    fn funnel(&mut self, by: &str) -> Result<Vec<(String, String, u64)>, AssignError> {
        let rows: Vec<(Vec<u8>, Vec<u8>, u64)> = self.tx.rows(
            "SELECT value, stage, n FROM leadgate_assign_funnel WHERE dim = ? ORDER BY value, stage",
            (by,),
        )?;
        Ok(rows
            .into_iter()
            .map(|(v, s, n)| {
                (
                    String::from_utf8_lossy(&v).into_owned(),
                    String::from_utf8_lossy(&s).into_owned(),
                    n,
                )
            })
            .collect())
    }

    fn audit(&mut self, from: AuditFrom, limit: usize) -> Result<Vec<AuditEntry>, AssignError> {
        let rows: Vec<Vec<u8>> = match from {
            AuditFrom::After(after) => self.tx.rows(
                "SELECT v FROM leadgate_assign_audit WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit as u64),
            )?,
            AuditFrom::Before(before) => self.tx.rows(
                "SELECT v FROM leadgate_assign_audit WHERE seq < ? ORDER BY seq DESC LIMIT ?",
                (before, limit as u64),
            )?,
        };
        rows.iter().map(|b| parse(b)).collect()
    }
}
