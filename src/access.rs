//! The access audit: every answer of the management API that carried a person's data unmasked
//! (who, when, what, which leads), for the privacy officer (PIPL Art. 51, GDPR Art. 30/32). It
//! holds no personal data itself: lead ids and event ids, never a phone number or an address (a
//! search's phone is not written, the people it found are). `<data_dir>/access-audit.redb`,
//! each entry durable before the answer is sent: an answer whose read cannot be recorded is not
//! sent (503).

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("access");

/// At most this many lead or event ids are listed in one entry; `more` counts the rest.
const IDS_KEPT: usize = 100;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Access {
    /// Ascending; `before=` pages on.
    pub seq: u64,
    pub at: String,
    /// The API token's name.
    pub token: String,
    /// What was read: `lead.read`, `lead.search`, `quarantine.read`, `import.report`.
    pub action: String,
    /// The request's route (`/v1/leads/{lead_id}`), never its query.
    pub route: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lead_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_ids: Vec<String>,
    /// Ids beyond the ones listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more: u64,
    /// An import's id, for `import.report`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import_id: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Access {
    pub fn new(token: &str, action: &str, route: &str) -> Self {
        Self {
            seq: 0,
            at: crate::lead::now_rfc3339(),
            token: token.to_owned(),
            action: action.to_owned(),
            route: route.to_owned(),
            lead_ids: Vec::new(),
            event_ids: Vec::new(),
            more: 0,
            import_id: None,
        }
    }

    pub fn leads(mut self, ids: impl IntoIterator<Item = String>) -> Self {
        for id in ids {
            if self.lead_ids.len() < IDS_KEPT {
                self.lead_ids.push(id);
            } else {
                self.more += 1;
            }
        }
        self
    }

    pub fn events(mut self, ids: impl IntoIterator<Item = String>) -> Self {
        for id in ids {
            if self.event_ids.len() < IDS_KEPT {
                self.event_ids.push(id);
            } else {
                self.more += 1;
            }
        }
        self
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the access audit: {0}")]
pub struct AuditError(String);

fn failed(e: impl std::fmt::Display) -> AuditError {
    AuditError(e.to_string())
}

pub struct AccessAudit {
    db: Database,
}

impl AccessAudit {
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let db = crate::storefile::open(&Database::builder(), path).map_err(failed)?;
        let txn = db.begin_write().map_err(failed)?;
        txn.open_table(ENTRIES).map_err(failed)?;
        txn.commit().map_err(failed)?;
        Ok(Self { db })
    }

    pub fn in_memory() -> Result<Self, AuditError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(failed)?;
        let txn = db.begin_write().map_err(failed)?;
        txn.open_table(ENTRIES).map_err(failed)?;
        txn.commit().map_err(failed)?;
        Ok(Self { db })
    }

    /// Appends `entry` (its `seq` assigned here), durably.
    pub fn record(&self, mut entry: Access) -> Result<u64, AuditError> {
        let mut txn = self.db.begin_write().map_err(failed)?;
        txn.set_durability(Durability::Immediate).map_err(failed)?;
        let seq = {
            let mut t = txn.open_table(ENTRIES).map_err(failed)?;
            let seq = t.last().map_err(failed)?.map_or(0, |(k, _)| k.value()) + 1;
            entry.seq = seq;
            let bytes = serde_json::to_vec(&entry).map_err(failed)?;
            t.insert(seq, bytes.as_slice()).map_err(failed)?;
            seq
        };
        txn.commit().map_err(failed)?;
        Ok(seq)
    }

    /// Newest first: the entries before `before` (all when `None`), at most `limit`.
    pub fn newest(&self, before: Option<u64>, limit: usize) -> Result<Vec<Access>, AuditError> {
        let txn = self.db.begin_read().map_err(failed)?;
        let t = txn.open_table(ENTRIES).map_err(failed)?;
        let mut out = Vec::new();
        for entry in t
            .range(..before.unwrap_or(u64::MAX))
            .map_err(failed)?
            .rev()
            .take(limit)
        {
            let (_, v) = entry.map_err(failed)?;
            out.push(serde_json::from_slice(v.value()).map_err(failed)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_kept_in_order_and_read_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access-audit.redb");
        {
            let audit = AccessAudit::open(&path).unwrap();
            for i in 0..5 {
                let e = Access::new("crm", "lead.read", "/v1/leads/{lead_id}")
                    .leads([format!("lead-{i}")]);
                assert_eq!(audit.record(e).unwrap(), i + 1);
            }
        }
        let audit = AccessAudit::open(&path).unwrap();
        let page = audit.newest(None, 2).unwrap();
        assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 4]);
        let next = audit.newest(Some(4), 10).unwrap();
        assert_eq!(next.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 2, 1]);
        assert_eq!(next[2].lead_ids, ["lead-0"]);
        let many =
            Access::new("t", "lead.search", "/v1/leads").leads((0..150).map(|i| i.to_string()));
        assert_eq!((many.lead_ids.len(), many.more), (100, 50));
    }
}
