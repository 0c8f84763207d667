//! The embedded identity store: one redb file under the data directory, or memory for dry runs.
//!
//! People form a union-find: every key points at the `lead_id` it was first seen with, and a merged
//! `lead_id` points at the one that absorbed it. The oldest `lead_id` (by creation order) survives.

use std::collections::BTreeSet;
use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};

use super::{IdentityError, IdentityRequest, IdentityStore, KeyKind};
use crate::lead::{IdentityOutcome, IdentityStatus};

/// `"phone:+86..."` -> the lead_id it was first linked to.
const KEYS: TableDefinition<&str, &str> = TableDefinition::new("keys");
/// lead_id -> creation order (lower is older).
const LEADS: TableDefinition<&str, u64> = TableDefinition::new("leads");
/// merged lead_id -> the lead_id that absorbed it.
const MERGED: TableDefinition<&str, &str> = TableDefinition::new("merged");
/// event_id -> its outcome, so that a replayed event resolves the same way.
const OUTCOMES: TableDefinition<&str, &[u8]> = TableDefinition::new("outcomes");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub struct EmbeddedIdentityStore {
    db: Database,
}

fn storage(e: impl Into<redb::Error>) -> IdentityError {
    IdentityError::Storage(e.into().to_string())
}

impl EmbeddedIdentityStore {
    pub fn open(path: &Path) -> Result<Self, IdentityError> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                IdentityError::Locked(path.display().to_string())
            }
            other => storage(other),
        })?;
        Ok(Self { db })
    }

    /// A store that lives in memory only (for `import --dry-run`).
    pub fn in_memory() -> Result<Self, IdentityError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(storage)?;
        Ok(Self { db })
    }

    fn resolve_one(
        txn: &WriteTransaction,
        req: &IdentityRequest,
        counter: &mut u64,
    ) -> Result<IdentityOutcome, IdentityError> {
        let mut outcomes = txn.open_table(OUTCOMES).map_err(storage)?;
        if let Some(found) = outcomes.get(req.event_id.as_str()).map_err(storage)? {
            return serde_json::from_slice(found.value())
                .map_err(|e| IdentityError::Storage(e.to_string()));
        }
        let mut keys = txn.open_table(KEYS).map_err(storage)?;
        let mut leads = txn.open_table(LEADS).map_err(storage)?;
        let mut merged = txn.open_table(MERGED).map_err(storage)?;

        // Which people do the keys point at, and through which kinds of key?
        let mut roots: Vec<(u64, String)> = Vec::new();
        let mut matched_on: BTreeSet<KeyKind> = BTreeSet::new();
        let mut unseen = Vec::new();
        for key in &req.keys {
            let name = key.to_string();
            let linked = keys
                .get(name.as_str())
                .map_err(storage)?
                .map(|v| v.value().to_owned());
            let Some(mut id) = linked else {
                unseen.push(name);
                continue;
            };
            while let Some(next) = merged
                .get(id.as_str())
                .map_err(storage)?
                .map(|v| v.value().to_owned())
            {
                id = next;
            }
            let order = leads
                .get(id.as_str())
                .map_err(storage)?
                .map(|v| v.value())
                .unwrap_or(0);
            matched_on.insert(key.kind);
            if !roots.iter().any(|(_, r)| *r == id) {
                roots.push((order, id));
            }
        }
        roots.sort();
        let (lead_id, status, merged_ids) = match roots.len() {
            0 => {
                *counter += 1;
                let id = uuid::Uuid::now_v7().to_string();
                leads.insert(id.as_str(), *counter).map_err(storage)?;
                (id, IdentityStatus::New, Vec::new())
            }
            1 => (roots.remove(0).1, IdentityStatus::Matched, Vec::new()),
            _ => {
                let survivor = roots.remove(0).1;
                let absorbed: Vec<String> = roots.into_iter().map(|(_, id)| id).collect();
                for id in &absorbed {
                    merged
                        .insert(id.as_str(), survivor.as_str())
                        .map_err(storage)?;
                }
                (survivor, IdentityStatus::Merged, absorbed)
            }
        };
        for name in unseen {
            keys.insert(name.as_str(), lead_id.as_str())
                .map_err(storage)?;
        }
        let outcome = IdentityOutcome {
            lead_id,
            status,
            matched_on: matched_on
                .into_iter()
                .map(|k| k.as_str().to_owned())
                .collect(),
            merged_lead_ids: merged_ids,
        };
        let bytes =
            serde_json::to_vec(&outcome).map_err(|e| IdentityError::Storage(e.to_string()))?;
        outcomes
            .insert(req.event_id.as_str(), bytes.as_slice())
            .map_err(storage)?;
        Ok(outcome)
    }
}

impl IdentityStore for EmbeddedIdentityStore {
    fn resolve(&self, requests: &[IdentityRequest]) -> Result<Vec<IdentityOutcome>, IdentityError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let mut counter = {
            let meta = txn.open_table(META).map_err(storage)?;
            meta.get("leads")
                .map_err(storage)?
                .map(|v| v.value())
                .unwrap_or(0)
        };
        let out = requests
            .iter()
            .map(|r| Self::resolve_one(&txn, r, &mut counter))
            .collect::<Result<Vec<_>, _>>()?;
        txn.open_table(META)
            .map_err(storage)?
            .insert("leads", counter)
            .map_err(storage)?;
        txn.commit().map_err(storage)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityKey;

    fn req(event: &str, keys: &[(KeyKind, &str)]) -> IdentityRequest {
        IdentityRequest {
            event_id: event.into(),
            keys: keys
                .iter()
                .map(|(k, v)| IdentityKey {
                    kind: *k,
                    value: (*v).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn phone_then_email_then_both_merges_into_the_oldest() {
        let s = EmbeddedIdentityStore::in_memory().unwrap();
        let out = s
            .resolve(&[
                req("e1", &[(KeyKind::Phone, "+8613800138000")]),
                req("e2", &[(KeyKind::Email, "a@b.cn")]),
                req("e3", &[(KeyKind::Phone, "+8613800138000")]),
            ])
            .unwrap();
        assert_eq!(out[0].status, IdentityStatus::New);
        assert_eq!(out[1].status, IdentityStatus::New);
        assert_ne!(out[0].lead_id, out[1].lead_id);
        assert_eq!(
            (out[2].status, &out[2].lead_id),
            (IdentityStatus::Matched, &out[0].lead_id)
        );
        assert_eq!(out[2].matched_on, ["phone"]);

        let both = s
            .resolve(&[req(
                "e4",
                &[
                    (KeyKind::Phone, "+8613800138000"),
                    (KeyKind::Email, "a@b.cn"),
                ],
            )])
            .unwrap();
        assert_eq!(both[0].status, IdentityStatus::Merged);
        assert_eq!(both[0].lead_id, out[0].lead_id, "the oldest survives");
        assert_eq!(both[0].merged_lead_ids, [out[1].lead_id.clone()]);

        // The absorbed person's key now leads to the survivor.
        let later = s
            .resolve(&[req("e5", &[(KeyKind::Email, "a@b.cn")])])
            .unwrap();
        assert_eq!(later[0].lead_id, out[0].lead_id);
    }

    #[test]
    fn a_replayed_event_resolves_as_the_first_time() {
        let s = EmbeddedIdentityStore::in_memory().unwrap();
        let first = s
            .resolve(&[req("e1", &[(KeyKind::Email, "a@b.cn")])])
            .unwrap();
        let again = s
            .resolve(&[req("e1", &[(KeyKind::Email, "a@b.cn")])])
            .unwrap();
        assert_eq!(first, again);
        assert_eq!(again[0].status, IdentityStatus::New);
    }

    #[test]
    fn identities_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.redb");
        let first = EmbeddedIdentityStore::open(&path)
            .unwrap()
            .resolve(&[req("e1", &[(KeyKind::Email, "a@b.cn")])])
            .unwrap();
        let s = EmbeddedIdentityStore::open(&path).unwrap();
        let again = s
            .resolve(&[req("e2", &[(KeyKind::Email, "a@b.cn")])])
            .unwrap();
        assert_eq!(again[0].lead_id, first[0].lead_id);
        assert!(matches!(
            EmbeddedIdentityStore::open(&path),
            Err(IdentityError::Locked(_))
        ));
    }
}
