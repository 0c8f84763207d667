//! The MySQL/MariaDB identity store, for several gateways sharing identities.
//!
//! The algorithm is the same as the embedded store's ([`super::resolve`]); this file only reads
//! and writes. A batch is one InnoDB transaction at REPEATABLE READ: keys and people are read
//! `FOR UPDATE`, so two gateways resolving the same new person at once cannot both create it.
//! InnoDB lets one of them through and rolls the other back as a deadlock (or a lock wait
//! timeout); that batch is retried from the start and finds the person the first one created.
//! The connection, the runtime and the retries are [`crate::sql`]'s.

use serde::Serialize;

use super::resolve::{
    self, Cluster, ClusterKey, Graph, GraphRead, KeyLinks, Member, Person, Resolution,
};
use super::{IdentityError, IdentityKey, IdentityRequest, IdentityStore, Policy};
use crate::lead::IdentityOutcome;
use crate::sql::{Mysql, Retryable, SqlError, Tx};

/// Tables are created when missing. Keys are binary: `wx-A` and `wx-a` are different ids, which a
/// case-insensitive collation would fold.
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS leadgate_identity_keys (
        k VARBINARY(768) NOT NULL PRIMARY KEY, v MEDIUMBLOB NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS leadgate_people (
        lead_id VARBINARY(64) NOT NULL PRIMARY KEY, v MEDIUMBLOB NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS leadgate_members (
        lead_id VARBINARY(64) NOT NULL, event_id VARBINARY(128) NOT NULL, v BLOB NOT NULL,
        PRIMARY KEY (lead_id, event_id)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS leadgate_outcomes (
        event_id VARBINARY(128) NOT NULL PRIMARY KEY, v BLOB NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS leadgate_sources (
        k VARBINARY(768) NOT NULL PRIMARY KEY, event_id VARBINARY(128) NOT NULL) ENGINE=InnoDB",
];

/// Decodes a stored entry (JSON).
fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, IdentityError> {
    serde_json::from_slice(bytes).map_err(|e| IdentityError::Storage(format!("corrupt entry: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("identity entries serialize")
}

/// The reads an explanation of a stored [`Person`] needs ([`explain`]).
trait MemberRead: GraphRead {
    /// The member events resolved to `lead_id` itself (not to people merged into it).
    fn members(&mut self, lead_id: &str) -> Result<Vec<Member>, IdentityError>;
}

/// `GET /v1/leads/{lead_id}`: the person `lead_id` is (or was merged into), its keys, members
/// (its own and those of every person merged into it), merges, profile and sources.
fn explain<G: MemberRead>(g: &mut G, lead_id: &str) -> Result<Option<Cluster>, IdentityError> {
    let Some((id, person)) = resolve::root(g, lead_id)? else {
        return Ok(None);
    };
    let mut keys = Vec::new();
    for (kind, values) in &person.keys {
        for value in values {
            keys.push(ClusterKey {
                kind: kind.clone(),
                value: value.clone(),
                shared: g.key(&format!("{kind}:{value}"))?.shared,
            });
        }
    }
    let mut members = g.members(&id)?;
    for m in &person.merges {
        for absorbed in &m.merged_lead_ids {
            members.extend(g.members(absorbed)?);
        }
    }
    members.sort_by(|a, b| (&a.at, &a.event_id).cmp(&(&b.at, &b.event_id)));
    Ok(Some(Cluster {
        requested_lead_id: (id != lead_id).then(|| lead_id.to_owned()),
        lead_id: id,
        created_at: person.created_at,
        keys,
        profile: person.profile,
        sources: person.sources,
        merges: person.merges,
        members,
        names: person.names,
    }))
}

pub struct MysqlIdentityStore {
    db: Mysql,
    policy: Policy,
}

impl From<SqlError> for IdentityError {
    fn from(e: SqlError) -> Self {
        match e {
            SqlError::Conflict(why) => Self::Conflict(why),
            SqlError::Other(why) => Self::Storage(why),
        }
    }
}

impl Retryable for IdentityError {
    fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict(_))
    }
}

impl MysqlIdentityStore {
    /// Connects to `url` (`mysql://user:password@host:3306/database`) and creates the tables
    /// that are missing.
    pub fn connect(url: &str, policy: Policy) -> Result<Self, IdentityError> {
        Ok(Self {
            db: Mysql::connect(url, SCHEMA)?,
            policy,
        })
    }
}

struct MyTxn<'a, 'h> {
    tx: &'a mut Tx<'h>,
    last_order: u64,
}

impl MyTxn<'_, '_> {
    fn first_blob(
        &mut self,
        sql: &str,
        params: impl Into<mysql_async::Params> + Send,
    ) -> Result<Option<Vec<u8>>, IdentityError> {
        Ok(self.tx.first_blob(sql, params)?)
    }

    fn run(
        &mut self,
        sql: &str,
        params: impl Into<mysql_async::Params> + Send,
    ) -> Result<(), IdentityError> {
        Ok(self.tx.run(sql, params)?)
    }
}

impl GraphRead for MyTxn<'_, '_> {
    fn person(&mut self, lead_id: &str) -> Result<Option<Person>, IdentityError> {
        self.first_blob(
            "SELECT v FROM leadgate_people WHERE lead_id = ? FOR UPDATE",
            (lead_id,),
        )?
        .map(|b| decode(&b))
        .transpose()
    }

    fn key(&mut self, key: &str) -> Result<KeyLinks, IdentityError> {
        Ok(self
            .first_blob(
                "SELECT v FROM leadgate_identity_keys WHERE k = ? FOR UPDATE",
                (key,),
            )?
            .map(|b| decode(&b))
            .transpose()?
            .unwrap_or_default())
    }
}

impl MemberRead for MyTxn<'_, '_> {
    fn members(&mut self, lead_id: &str) -> Result<Vec<Member>, IdentityError> {
        let rows: Vec<Vec<u8>> = self.tx.rows(
            "SELECT v FROM leadgate_members WHERE lead_id = ? ORDER BY event_id",
            (lead_id,),
        )?;
        rows.iter().map(|b| decode(b)).collect()
    }
}

impl Graph for MyTxn<'_, '_> {
    fn outcome(&mut self, event_id: &str) -> Result<Option<IdentityOutcome>, IdentityError> {
        self.first_blob(
            "SELECT v FROM leadgate_outcomes WHERE event_id = ?",
            (event_id,),
        )?
        .map(|b| decode(&b))
        .transpose()
    }

    fn put_outcome(&mut self, event_id: &str, o: &IdentityOutcome) -> Result<(), IdentityError> {
        self.run(
            "INSERT INTO leadgate_outcomes (event_id, v) VALUES (?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v)",
            (event_id, encode(o)),
        )
    }

    fn claim_source(&mut self, key: &str, event_id: &str) -> Result<String, IdentityError> {
        // A concurrent claim of the same key waits on the row lock, then sees the winner.
        self.run(
            "INSERT IGNORE INTO leadgate_sources (k, event_id) VALUES (?, ?)",
            (key, event_id),
        )?;
        let first = self.first_blob(
            "SELECT event_id FROM leadgate_sources WHERE k = ? FOR UPDATE",
            (key,),
        )?;
        Ok(first
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|| event_id.to_owned()))
    }

    fn put_key(&mut self, key: &str, links: &KeyLinks) -> Result<(), IdentityError> {
        self.run(
            "INSERT INTO leadgate_identity_keys (k, v) VALUES (?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v)",
            (key, encode(links)),
        )
    }

    fn put_person(&mut self, lead_id: &str, p: &Person) -> Result<(), IdentityError> {
        self.run(
            "INSERT INTO leadgate_people (lead_id, v) VALUES (?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v)",
            (lead_id, encode(p)),
        )
    }

    fn add_member(&mut self, m: Member, _req: &IdentityRequest) -> Result<(), IdentityError> {
        self.run(
            "INSERT IGNORE INTO leadgate_members (lead_id, event_id, v) VALUES (?, ?, ?)",
            (m.lead_id.as_str(), m.event_id.as_str(), encode(&m)),
        )
    }

    /// Creation order across gateways: microseconds since the epoch, strictly increasing within
    /// a batch. Clocks of different hosts may disagree by a little; the oldest person still wins
    /// a merge up to that skew, and the choice is stored, so it never changes afterwards.
    fn next_order(&mut self) -> Result<u64, IdentityError> {
        let now = jiff::Timestamp::now().as_microsecond().max(0) as u64;
        self.last_order = now.max(self.last_order + 1);
        Ok(self.last_order)
    }
}

impl IdentityStore for MysqlIdentityStore {
    fn resolve(&self, requests: &[IdentityRequest]) -> Result<Vec<Resolution>, IdentityError> {
        self.db.transaction(true, |tx| {
            let mut g = MyTxn { tx, last_order: 0 };
            requests
                .iter()
                .map(|r| resolve::resolve(&mut g, r, &self.policy))
                .collect()
        })
    }

    fn explain(&self, lead_id: &str) -> Result<Option<Cluster>, IdentityError> {
        self.db.transaction(false, |tx| {
            explain(&mut MyTxn { tx, last_order: 0 }, lead_id)
        })
    }

    fn find(&self, keys: &[IdentityKey]) -> Result<Vec<String>, IdentityError> {
        self.db.transaction(false, |tx| {
            resolve::find(&mut MyTxn { tx, last_order: 0 }, keys)
        })
    }

    fn erasable(
        &self,
        hit: &(dyn Fn(&IdentityKey) -> bool + Sync),
        lead_ids: &[String],
    ) -> Result<super::Erased, IdentityError> {
        // The phone numbers and addresses, a page at a time (short reads, no long transaction).
        let mut people: Vec<String> = lead_ids.to_vec();
        for kind in [super::PHONE, super::EMAIL] {
            let (from, to) = (format!("{kind}:"), format!("{kind};"));
            let mut after = from.clone();
            loop {
                let page: Vec<(Vec<u8>, Vec<u8>)> = self.db.transaction(false, |tx| {
                    Ok::<_, IdentityError>(tx.rows(
                        "SELECT k, v FROM leadgate_identity_keys WHERE k > ? AND k < ? ORDER BY k LIMIT 5000",
                        (after.as_str(), to.as_str()),
                    )?)
                })?;
                let Some((last, _)) = page.last() else { break };
                after = String::from_utf8_lossy(last).into_owned();
                for (k, v) in &page {
                    let k = String::from_utf8_lossy(k);
                    let value = k.strip_prefix(from.as_str()).unwrap_or_default();
                    if hit(&IdentityKey::new(kind, value)) {
                        people.extend(decode::<KeyLinks>(v)?.people);
                    }
                }
            }
        }
        self.db.transaction(false, |tx| {
            let mut g = MyTxn { tx, last_order: 0 };
            let cluster = clusters(&mut g, &people)?;
            let mut found = super::Erased::default();
            for (id, person) in &cluster {
                found.lead_ids.push(id.clone());
                for m in g.members(id)? {
                    found.event_ids.push(m.event_id);
                }
                for (kind, values) in &person.keys {
                    for v in values {
                        let key = IdentityKey::new(kind, v.as_str());
                        if !found.keys.contains(&key) {
                            found.keys.push(key);
                        }
                    }
                }
            }
            Ok(found)
        })
    }

    fn expired(&self, before: jiff::Timestamp) -> Result<super::Erased, IdentityError> {
        // Each lead id's newest member event, a page of lead ids at a time; then per cluster.
        let mut newest: std::collections::HashMap<String, jiff::Timestamp> =
            std::collections::HashMap::new();
        let mut after = String::new();
        loop {
            let page: Vec<(Vec<u8>, Option<String>)> = self.db.transaction(false, |tx| {
                Ok::<_, IdentityError>(tx.rows(
                    "SELECT lead_id, MAX(JSON_UNQUOTE(JSON_EXTRACT(CONVERT(v USING utf8mb4), '$.at')))
                     FROM leadgate_members WHERE lead_id > ? GROUP BY lead_id ORDER BY lead_id LIMIT 5000",
                    (after.as_str(),),
                )?)
            })?;
            let Some((last, _)) = page.last() else { break };
            after = String::from_utf8_lossy(last).into_owned();
            let roots: Vec<(String, Option<jiff::Timestamp>)> =
                self.db.transaction(false, |tx| {
                    let mut g = MyTxn { tx, last_order: 0 };
                    let mut out = Vec::with_capacity(page.len());
                    for (lead, at) in &page {
                        let lead = String::from_utf8_lossy(lead).into_owned();
                        if let Some((root, _)) = resolve::root(&mut g, &lead)? {
                            out.push((root, at.as_deref().and_then(|a| a.parse().ok())));
                        }
                    }
                    Ok::<_, IdentityError>(out)
                })?;
            for (root, at) in roots {
                // An event whose time cannot be read keeps its person.
                let at = at.unwrap_or(jiff::Timestamp::MAX);
                let n = newest.entry(root).or_insert(at);
                *n = (*n).max(at);
            }
        }
        let old: Vec<String> = newest
            .into_iter()
            .filter(|(_, at)| *at < before)
            .map(|(root, _)| root)
            .collect();
        if old.is_empty() {
            return Ok(super::Erased::default());
        }
        self.db.transaction(false, |tx| {
            let mut g = MyTxn { tx, last_order: 0 };
            let mut found = super::Erased::default();
            for (id, _) in clusters(&mut g, &old)? {
                for m in g.members(&id)? {
                    found.event_ids.push(m.event_id);
                }
                found.lead_ids.push(id);
            }
            Ok(found)
        })
    }

    fn erase(&self, lead_ids: &[String]) -> Result<(), IdentityError> {
        self.db.transaction(true, |tx| {
            let mut g = MyTxn { tx, last_order: 0 };
            let cluster = clusters(&mut g, lead_ids)?;
            let gone: Vec<&str> = cluster.iter().map(|(id, _)| id.as_str()).collect();
            for (id, person) in &cluster {
                for (kind, values) in &person.keys {
                    for v in values {
                        let k = format!("{kind}:{v}");
                        let mut links = g.key(&k)?;
                        links.people.retain(|p| !gone.contains(&p.as_str()));
                        if links.people.is_empty() {
                            g.run("DELETE FROM leadgate_identity_keys WHERE k = ?", (k,))?;
                        } else {
                            g.put_key(&k, &links)?;
                        }
                    }
                }
                for m in g.members(id)? {
                    g.run(
                        "DELETE FROM leadgate_outcomes WHERE event_id = ?",
                        (m.event_id.as_str(),),
                    )?;
                    g.run(
                        "DELETE FROM leadgate_sources WHERE event_id = ?",
                        (m.event_id.as_str(),),
                    )?;
                }
                g.run(
                    "DELETE FROM leadgate_members WHERE lead_id = ?",
                    (id.as_str(),),
                )?;
                g.run(
                    "DELETE FROM leadgate_people WHERE lead_id = ?",
                    (id.as_str(),),
                )?;
            }
            Ok(())
        })
    }
}

/// The people of `lead_ids`' clusters: each one's root and everyone merged into it, each once.
fn clusters<G: GraphRead>(
    g: &mut G,
    lead_ids: &[String],
) -> Result<Vec<(String, Person)>, IdentityError> {
    let mut out: Vec<(String, Person)> = Vec::new();
    let mut todo: Vec<String> = Vec::new();
    for id in lead_ids {
        if let Some((root, _)) = resolve::root(g, id)? {
            todo.push(root);
        }
    }
    while let Some(id) = todo.pop() {
        if out.iter().any(|(seen, _)| *seen == id) {
            continue;
        }
        let Some(person) = g.person(&id)? else {
            continue;
        };
        for m in &person.merges {
            todo.extend(m.merged_lead_ids.iter().cloned());
        }
        out.push((id, person));
    }
    Ok(out)
}
