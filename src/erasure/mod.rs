//! Erasure (PIPL Art. 47, GDPR Art. 17) and suppression (PIPL Art. 15, 24; GDPR Art. 7(3), 21).
//!
//! `POST /v1/erasures` takes an OpenDSR-style request: a `subject_request_id` and the person's
//! identities (a phone number, an address, a lead id; raw or as the SHA-256 of the normalized
//! value). The request is stored in `<data_dir>/erasures.redb` with **salted hashes** of the
//! identities, never the values, and the identities go on the suppression list at once: from the
//! answer on, a new lead with that phone or address is dropped or flagged
//! (`[privacy] suppression`). The delivery loop then carries the erasure out ([`run`]): it finds
//! the people in the identity store, takes them out of it, out of the journal's undelivered
//! events, quarantine and idempotency records, out of the assignment store and the embedded
//! output, and rewrites each file so that no byte of what was erased is left in it (free pages
//! included); it publishes a tombstone per lead id on the clean topic and an erasure event on
//! `[topics] erasures`. Each step can be run again: a gateway that stops half way finishes the
//! erasure at its next start.
//!
//! Hashes: `SHA-256(salt ‖ kind ‖ ":" ‖ hex(SHA-256(value)))`, the salt 32 random bytes made when
//! the file is created. A raw identity is normalized first, as a webhook lead's would be; a hashed
//! one must be the SHA-256 (hex) of the normalized value: a phone number in E.164 with its `+`
//! (`+8613800138000`), an address in lower case.

mod run;
#[cfg(feature = "mysql")]
pub mod shared;

pub use run::{ErasureTarget, Retention, retain, run};

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::assign::model::FieldError;
use crate::identity::{EMAIL, IdentityKey, PHONE};

/// The version of the erasure events' schema (`[topics] erasures`).
pub const SCHEMA_VERSION: &str = "1.0";

/// request id -> the [`Erasure`] (JSON).
const REQUESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("requests");
/// seq -> request id: the order they came in.
const ORDER: TableDefinition<u64, &str> = TableDefinition::new("order");
/// salted hash -> the request that put it on the list.
const SUPPRESSED: TableDefinition<&[u8], &str> = TableDefinition::new("suppressed");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// At most this many identities in one request.
const MAX_IDENTITIES: usize = 100;

/// A salted hash of an identity.
pub type Hash = [u8; 32];

/// What a suppressed lead becomes (`[privacy] suppression`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Suppression {
    /// Dropped: nothing is published or stored; counted as rejected `privacy.suppressed`.
    #[default]
    Drop,
    /// Published on the rejected topic with the reason `privacy.suppressed`, never resolved or
    /// assigned: a marketer sees that the person came back, and may ask them for consent anew.
    Flag,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Received; its identities are suppressed already.
    Pending,
    /// Being carried out.
    InProgress,
    /// Nothing of the person is left.
    Completed,
}

/// An identity as the request gave it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectIdentity {
    pub identity_type: String,
    pub identity_value: String,
    #[serde(default)]
    pub identity_format: Option<String>,
}

/// `POST /v1/erasures`'s body (OpenDSR 1.0's request, for `erasure`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasureRequest {
    #[serde(default)]
    pub subject_request_id: Option<String>,
    #[serde(default)]
    pub subject_request_type: Option<String>,
    #[serde(default)]
    pub submitted_time: Option<String>,
    #[serde(default)]
    pub subject_identities: Vec<SubjectIdentity>,
    /// OpenDSR's, accepted and ignored.
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub property_id: Option<String>,
}

/// An identity as the store keeps it: its kind and its salted hash (hex), or a lead id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub kind: String,
    /// How it was given: `raw` or `sha256`.
    pub format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lead_id: Option<String>,
}

/// What an erasure removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    /// People taken out of the identity store (merged ones included).
    pub people: usize,
    /// Their events in the identity store's history.
    pub events: usize,
    /// Undelivered or quarantined journal events.
    pub journal_events: usize,
    /// Records taken out of the embedded output's files.
    pub output_records: u64,
    /// Tombstones published (one per lead id).
    pub tombstones: usize,
}

/// One erasure request, as stored: no personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erasure {
    pub subject_request_id: String,
    pub request_status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_time: Option<String>,
    pub received_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_time: Option<String>,
    /// The API token that asked.
    pub requested_by: String,
    pub identities: Vec<Held>,
    /// The people found, kept before anything is removed so that a restart publishes their
    /// tombstones too.
    #[serde(default)]
    pub lead_ids: Vec<String>,
    #[serde(default)]
    pub event_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Removed>,
}

impl Erasure {
    /// The answer of `GET /v1/erasures/{id}`: the request without its hashes.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "subject_request_id": self.subject_request_id,
            "subject_request_type": "erasure",
            "request_status": self.request_status,
            "submitted_time": self.submitted_time,
            "received_time": self.received_time,
            "completed_time": self.completed_time,
            "requested_by": self.requested_by,
            "identities": self.identities.iter().map(|h| serde_json::json!({
                "identity_type": h.kind, "identity_format": h.format,
            })).collect::<Vec<_>>(),
            "lead_ids": self.lead_ids,
            "removed": self.removed,
        })
    }

    /// The event published on `[topics] erasures` once it is done (key: the request id).
    pub fn event(&self) -> serde_json::Value {
        serde_json::json!({
            "schema_version": SCHEMA_VERSION,
            "erasure_id": self.subject_request_id,
            "lead_ids": self.lead_ids,
            "received_at": self.received_time,
            "erased_at": self.completed_time,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ErasureError {
    #[error("invalid")]
    Invalid(Vec<FieldError>),
    #[error("erasure `{0}` was asked for already with other identities")]
    Conflict(String),
    #[error("the erasure store: {0}")]
    Storage(String),
}

fn storage(e: impl std::fmt::Display) -> ErasureError {
    ErasureError::Storage(e.to_string())
}

/// The hex SHA-256 of `value`.
pub fn sha256_hex(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// The erasure requests and the suppression list: `<data_dir>/erasures.redb`, the list also in
/// memory.
pub struct Erasures {
    db: Database,
    /// The data directory (the file's), whose imports' reports an erasure rewrites.
    data_dir: Option<std::path::PathBuf>,
    salt: [u8; 32],
    suppressed: RwLock<HashSet<Hash>>,
    /// Set when a request waits to be carried out; the delivery loop looks at it.
    pending: AtomicBool,
    /// Wakes an idle delivery loop.
    wake: tokio::sync::Notify,
    /// The list shared with the other gateways of a MySQL identity store, and how far it was read.
    #[cfg(feature = "mysql")]
    shared: Option<shared::SharedList>,
    #[cfg(feature = "mysql")]
    shared_seq: std::sync::atomic::AtomicU64,
    mode: Suppression,
}

impl Erasures {
    pub fn open(path: &Path, mode: Suppression) -> Result<Self, ErasureError> {
        let db = crate::storefile::open(&Database::builder(), path).map_err(storage)?;
        let mut e = Self::of(db, mode)?;
        e.data_dir = path.parent().map(Path::to_owned);
        Ok(e)
    }

    pub fn in_memory(mode: Suppression) -> Result<Self, ErasureError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(storage)?;
        Self::of(db, mode)
    }

    fn of(db: Database, mode: Suppression) -> Result<Self, ErasureError> {
        let mut txn = db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate).map_err(storage)?;
        let (salt, suppressed, pending) = {
            let mut meta = txn.open_table(META).map_err(storage)?;
            let salt: [u8; 32] = match meta.get("salt").map_err(storage)? {
                Some(v) => v
                    .value()
                    .try_into()
                    .map_err(|_| storage("its salt is not 32 bytes"))?,
                None => {
                    use chacha20poly1305::aead::rand_core::RngCore;
                    let mut salt = [0u8; 32];
                    chacha20poly1305::aead::OsRng.fill_bytes(&mut salt);
                    salt
                }
            };
            meta.insert("salt", salt.as_slice()).map_err(storage)?;
            let list = txn.open_table(SUPPRESSED).map_err(storage)?;
            let mut suppressed = HashSet::new();
            for row in list.iter().map_err(storage)? {
                let (k, _) = row.map_err(storage)?;
                if let Ok(h) = Hash::try_from(k.value()) {
                    suppressed.insert(h);
                }
            }
            txn.open_table(ORDER).map_err(storage)?;
            let requests = txn.open_table(REQUESTS).map_err(storage)?;
            let mut pending = false;
            for row in requests.iter().map_err(storage)? {
                let (_, v) = row.map_err(storage)?;
                let e: Erasure = serde_json::from_slice(v.value()).map_err(storage)?;
                pending |= e.request_status != Status::Completed;
            }
            (salt, suppressed, pending)
        };
        txn.commit().map_err(storage)?;
        Ok(Self {
            db,
            data_dir: None,
            salt,
            suppressed: RwLock::new(suppressed),
            pending: AtomicBool::new(pending),
            wake: tokio::sync::Notify::new(),
            #[cfg(feature = "mysql")]
            shared: None,
            #[cfg(feature = "mysql")]
            shared_seq: std::sync::atomic::AtomicU64::new(0),
            mode,
        })
    }

    /// Shares the suppression list with the other gateways of a MySQL identity store: their
    /// salt (the first gateway's) and their hashes; this gateway's own go there too.
    #[cfg(feature = "mysql")]
    pub fn share(mut self, list: shared::SharedList) -> Result<Self, ErasureError> {
        let salt = list
            .salt(self.salt)
            .map_err(|e| storage(format!("{e:?}")))?;
        if salt != self.salt {
            if self.suppressed_count() > 0 {
                tracing::warn!(
                    "this gateway's own suppression list was made with another salt than the shared one; its hashes stay local"
                );
            }
            self.salt = salt;
            let txn = self.db.begin_write().map_err(storage)?;
            txn.open_table(META)
                .map_err(storage)?
                .insert("salt", salt.as_slice())
                .map_err(storage)?;
            txn.commit().map_err(storage)?;
        } else {
            let mine: Vec<Hash> = self
                .suppressed
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .copied()
                .collect();
            list.add("local", &mine)
                .map_err(|e| storage(format!("{e:?}")))?;
        }
        self.shared = Some(list);
        self.refresh()?;
        Ok(self)
    }

    /// Reads the hashes other gateways added since the last call (a no-op without a shared
    /// list); how many.
    pub fn refresh(&self) -> Result<usize, ErasureError> {
        #[cfg(feature = "mysql")]
        if let Some(list) = &self.shared {
            let mut added = 0;
            loop {
                let from = self.shared_seq.load(Ordering::SeqCst);
                let page = list.since(from).map_err(|e| storage(format!("{e:?}")))?;
                let Some((last, _)) = page.last() else {
                    return Ok(added);
                };
                self.shared_seq.store(*last, Ordering::SeqCst);
                added += page.len();
                self.remember(
                    page.iter()
                        .filter_map(|(_, h)| Hash::try_from(h.as_slice()).ok()),
                );
            }
        }
        Ok(0)
    }

    /// Whether the list is shared with other gateways.
    pub fn is_shared(&self) -> bool {
        #[cfg(feature = "mysql")]
        return self.shared.is_some();
        #[cfg(not(feature = "mysql"))]
        false
    }

    /// Puts `hashes` on the shared list, when there is one.
    fn share_hashes(&self, id: &str, hashes: &[Hash]) -> Result<(), ErasureError> {
        #[cfg(feature = "mysql")]
        if let Some(list) = &self.shared {
            list.add(id, hashes)
                .map_err(|e| storage(format!("{e:?}")))?;
        }
        let _ = (id, hashes);
        Ok(())
    }

    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    pub fn mode(&self) -> Suppression {
        self.mode
    }

    /// The salted hash of an identity given as the SHA-256 (hex) of its value.
    pub fn hash_of_sha(&self, kind: &str, sha_hex: &str) -> Hash {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update(kind.as_bytes());
        h.update(b":");
        h.update(sha_hex.to_ascii_lowercase().as_bytes());
        h.finalize().into()
    }

    /// The salted hash of `key`.
    pub fn hash_of(&self, key: &IdentityKey) -> Hash {
        self.hash_of_sha(&key.kind, &sha256_hex(&key.value))
    }

    /// Whether any of `keys` (phone numbers and addresses) is on the suppression list.
    pub fn suppresses(&self, keys: &[IdentityKey]) -> bool {
        let list = self
            .suppressed
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        !list.is_empty()
            && keys
                .iter()
                .filter(|k| k.kind == PHONE || k.kind == EMAIL)
                .any(|k| list.contains(&self.hash_of(k)))
    }

    /// How many hashes the suppression list holds.
    pub fn suppressed_count(&self) -> usize {
        self.suppressed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Reads and checks a request; `normalize` gives the identity keys of a raw phone number
    /// or address (as a webhook lead's would be: `None` when it is not usable).
    pub fn parse(
        &self,
        request: &ErasureRequest,
        normalize: impl Fn(&str, &str) -> Option<IdentityKey>,
    ) -> Result<(String, Vec<Held>), ErasureError> {
        let mut errors = Vec::new();
        let id = match request.subject_request_id.as_deref().map(str::trim) {
            None | Some("") => uuid::Uuid::now_v7().to_string(),
            Some(id)
                if id.len() <= 128
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)) =>
            {
                id.to_owned()
            }
            Some(_) => {
                errors.push(FieldError::new(
                    "subject_request_id",
                    "1-128 letters, digits, '-', '_', '.' or ':'",
                ));
                String::new()
            }
        };
        if let Some(t) = &request.subject_request_type
            && t != "erasure"
        {
            errors.push(FieldError::new(
                "subject_request_type",
                format!("`{t}`: this endpoint carries out `erasure` requests"),
            ));
        }
        if let Some(t) = &request.submitted_time
            && t.parse::<jiff::Timestamp>().is_err()
        {
            errors.push(FieldError::new(
                "submitted_time",
                "an RFC 3339 time (2026-12-02T08:00:00Z)",
            ));
        }
        if request.subject_identities.is_empty() {
            errors.push(FieldError::new(
                "subject_identities",
                "at least one identity: a phone number, an email address or a lead id",
            ));
        }
        if request.subject_identities.len() > MAX_IDENTITIES {
            errors.push(FieldError::new(
                "subject_identities",
                format!("at most {MAX_IDENTITIES} identities in one request"),
            ));
        }
        let mut held = Vec::new();
        for (i, s) in request.subject_identities.iter().enumerate() {
            let field = |f: &str| format!("subject_identities[{i}].{f}");
            let kind = match s.identity_type.trim() {
                "phone" | "phone_number" => PHONE,
                "email" => EMAIL,
                "lead_id" => "lead_id",
                other => {
                    errors.push(FieldError::new(
                        field("identity_type"),
                        format!("`{other}`: one of phone_number (or phone), email, lead_id"),
                    ));
                    continue;
                }
            };
            let format = s.identity_format.as_deref().unwrap_or("raw");
            let value = s.identity_value.trim();
            if value.is_empty() {
                errors.push(FieldError::new(field("identity_value"), "empty"));
                continue;
            }
            match (kind, format) {
                ("lead_id", "raw") => {
                    if uuid::Uuid::parse_str(value).is_err() {
                        errors.push(FieldError::new(
                            field("identity_value"),
                            "not a lead id (a UUID, as the records carry it)",
                        ));
                        continue;
                    }
                    held.push(Held {
                        kind: kind.into(),
                        format: "raw".into(),
                        hash: None,
                        lead_id: Some(value.to_ascii_lowercase()),
                    });
                }
                (_, "raw") => match normalize(kind, value) {
                    Some(key) => held.push(Held {
                        kind: kind.into(),
                        format: "raw".into(),
                        hash: Some(hex::encode(self.hash_of(&key))),
                        lead_id: None,
                    }),
                    None => errors.push(FieldError::new(
                        field("identity_value"),
                        format!("not a usable {kind}: leadgate would not take it from a lead"),
                    )),
                },
                ("lead_id", _) => errors.push(FieldError::new(
                    field("identity_format"),
                    "a lead id is given raw",
                )),
                (_, "sha256") => {
                    if value.len() != 64 || !value.chars().all(|c| c.is_ascii_hexdigit()) {
                        errors.push(FieldError::new(
                            field("identity_value"),
                            "not a SHA-256 (64 hex digits)",
                        ));
                        continue;
                    }
                    held.push(Held {
                        kind: kind.into(),
                        format: "sha256".into(),
                        hash: Some(hex::encode(self.hash_of_sha(kind, value))),
                        lead_id: None,
                    });
                }
                (_, other) => errors.push(FieldError::new(
                    field("identity_format"),
                    format!("`{other}`: raw or sha256"),
                )),
            }
        }
        if errors.is_empty() {
            Ok((id, held))
        } else {
            Err(ErasureError::Invalid(errors))
        }
    }

    /// Stores a request and suppresses its identities, durably, before it is answered. The
    /// same request again (same id, same identities) is the same erasure: `false`, not created.
    pub fn submit(
        &self,
        id: &str,
        identities: Vec<Held>,
        submitted_time: Option<String>,
        by: &str,
    ) -> Result<(Erasure, bool), ErasureError> {
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate).map_err(storage)?;
        let (erasure, created) = {
            let mut requests = txn.open_table(REQUESTS).map_err(storage)?;
            if let Some(v) = requests.get(id).map_err(storage)? {
                let e: Erasure = serde_json::from_slice(v.value()).map_err(storage)?;
                if e.identities != identities {
                    return Err(ErasureError::Conflict(id.to_owned()));
                }
                return Ok((e, false));
            }
            let erasure = Erasure {
                subject_request_id: id.to_owned(),
                request_status: Status::Pending,
                submitted_time,
                received_time: crate::lead::now_rfc3339(),
                completed_time: None,
                requested_by: by.to_owned(),
                identities,
                lead_ids: Vec::new(),
                event_ids: Vec::new(),
                removed: None,
            };
            let bytes = serde_json::to_vec(&erasure).map_err(storage)?;
            requests.insert(id, bytes.as_slice()).map_err(storage)?;
            let mut order = txn.open_table(ORDER).map_err(storage)?;
            let seq = order.last().map_err(storage)?.map_or(0, |(k, _)| k.value()) + 1;
            order.insert(seq, id).map_err(storage)?;
            (erasure, true)
        };
        let hashes: Vec<Hash> = erasure.identities.iter().filter_map(held_hash).collect();
        // The other gateways first: an erasure answered is suppressed everywhere.
        self.share_hashes(id, &hashes)?;
        {
            let mut list = txn.open_table(SUPPRESSED).map_err(storage)?;
            for h in &hashes {
                list.insert(h.as_slice(), id).map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)?;
        self.remember(hashes);
        self.pending.store(true, Ordering::SeqCst);
        self.wake.notify_one();
        Ok((erasure, created))
    }

    fn remember(&self, hashes: impl IntoIterator<Item = Hash>) {
        self.suppressed
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(hashes);
    }

    /// Puts more hashes on the list (the other identities of the people an erasure found).
    pub fn suppress(&self, id: &str, hashes: &[Hash]) -> Result<(), ErasureError> {
        self.share_hashes(id, hashes)?;
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate).map_err(storage)?;
        {
            let mut list = txn.open_table(SUPPRESSED).map_err(storage)?;
            for h in hashes {
                list.insert(h.as_slice(), id).map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)?;
        self.remember(hashes.iter().copied());
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<Erasure>, ErasureError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(REQUESTS).map_err(storage)?;
        t.get(id)
            .map_err(storage)?
            .map(|v| serde_json::from_slice(v.value()).map_err(storage))
            .transpose()
    }

    /// Newest first, at most `limit`, before the `before`-th request.
    pub fn newest(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Erasure)>, ErasureError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let order = txn.open_table(ORDER).map_err(storage)?;
        let requests = txn.open_table(REQUESTS).map_err(storage)?;
        let mut out = Vec::new();
        for row in order
            .range(..before.unwrap_or(u64::MAX))
            .map_err(storage)?
            .rev()
            .take(limit)
        {
            let (seq, id) = row.map_err(storage)?;
            if let Some(v) = requests.get(id.value()).map_err(storage)? {
                out.push((
                    seq.value(),
                    serde_json::from_slice(v.value()).map_err(storage)?,
                ));
            }
        }
        Ok(out)
    }

    /// The requests not completed, oldest first; clears the pending flag.
    pub fn take_pending(&self) -> Result<Vec<Erasure>, ErasureError> {
        self.pending.store(false, Ordering::SeqCst);
        let txn = self.db.begin_read().map_err(storage)?;
        let order = txn.open_table(ORDER).map_err(storage)?;
        let requests = txn.open_table(REQUESTS).map_err(storage)?;
        let mut out = Vec::new();
        for row in order.iter().map_err(storage)? {
            let (_, id) = row.map_err(storage)?;
            if let Some(v) = requests.get(id.value()).map_err(storage)? {
                let e: Erasure = serde_json::from_slice(v.value()).map_err(storage)?;
                if e.request_status != Status::Completed {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    /// Resolves when a request comes in (or came in since the last call).
    pub async fn asked(&self) {
        self.wake.notified().await;
    }

    /// Whether a request waits to be carried out.
    pub fn has_pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst)
    }

    /// Marks that a request still waits (after a failed attempt).
    pub fn retry_later(&self) {
        self.pending.store(true, Ordering::SeqCst);
    }

    pub fn save(&self, e: &Erasure) -> Result<(), ErasureError> {
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate).map_err(storage)?;
        {
            let mut t = txn.open_table(REQUESTS).map_err(storage)?;
            let bytes = serde_json::to_vec(e).map_err(storage)?;
            t.insert(e.subject_request_id.as_str(), bytes.as_slice())
                .map_err(storage)?;
        }
        txn.commit().map_err(storage)
    }
}

/// A held identity's hash, for the suppression list (lead ids have none).
fn held_hash(h: &Held) -> Option<Hash> {
    let bytes = hex::decode(h.hash.as_deref()?).ok()?;
    Hash::try_from(bytes.as_slice()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalize(kind: &str, value: &str) -> Option<IdentityKey> {
        let digits: String = value.chars().filter(char::is_ascii_digit).collect();
        match kind {
            PHONE if digits.len() == 11 => Some(IdentityKey::new(PHONE, format!("+86{digits}"))),
            EMAIL if value.contains('@') => Some(IdentityKey::new(EMAIL, value.to_lowercase())),
            _ => None,
        }
    }

    fn request(identities: serde_json::Value) -> ErasureRequest {
        serde_json::from_value(serde_json::json!({
            "subject_request_id": "dsr-1",
            "subject_request_type": "erasure",
            "subject_identities": identities,
        }))
        .unwrap()
    }

    #[test]
    fn raw_and_hashed_identities_suppress_the_same_person() {
        let store = Erasures::in_memory(Suppression::Drop).unwrap();
        let sha = sha256_hex("zhang@corp.cn");
        let req = request(serde_json::json!([
            {"identity_type": "phone_number", "identity_value": "139 1234 5678"},
            {"identity_type": "email", "identity_value": sha, "identity_format": "sha256"},
        ]));
        let (id, held) = store.parse(&req, normalize).unwrap();
        assert_eq!(id, "dsr-1");
        let stored = serde_json::to_string(&held).unwrap();
        assert!(!stored.contains("13912345678") && !stored.contains(&sha));
        let (e, created) = store.submit(&id, held.clone(), None, "dpo").unwrap();
        assert!(created && e.request_status == Status::Pending);
        assert!(store.suppresses(&[IdentityKey::new(PHONE, "+8613912345678")]));
        assert!(store.suppresses(&[IdentityKey::new(EMAIL, "zhang@corp.cn")]));
        assert!(!store.suppresses(&[IdentityKey::new(PHONE, "+8613900000000")]));
        // The same request again is the same erasure; other identities under its id are not.
        assert!(!store.submit(&id, held, None, "dpo").unwrap().1);
        let other = store
            .parse(
                &request(
                    serde_json::json!([{"identity_type": "email", "identity_value": "x@y.cn"}]),
                ),
                normalize,
            )
            .unwrap();
        assert!(matches!(
            store.submit(&id, other.1, None, "dpo"),
            Err(ErasureError::Conflict(_))
        ));
        assert!(store.has_pending());
        assert_eq!(store.take_pending().unwrap().len(), 1);
        assert!(!store.has_pending());
    }

    #[test]
    fn a_bad_request_names_each_field() {
        let store = Erasures::in_memory(Suppression::Drop).unwrap();
        let req: ErasureRequest = serde_json::from_value(serde_json::json!({
            "subject_request_id": "a b",
            "subject_request_type": "access",
            "subject_identities": [
                {"identity_type": "passport", "identity_value": "x"},
                {"identity_type": "phone", "identity_value": "12"},
                {"identity_type": "email", "identity_value": "abc", "identity_format": "sha256"},
                {"identity_type": "lead_id", "identity_value": "nope"},
            ],
        }))
        .unwrap();
        let Err(ErasureError::Invalid(errors)) = store.parse(&req, normalize) else {
            panic!("accepted")
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "subject_request_id",
                "subject_request_type",
                "subject_identities[0].identity_type",
                "subject_identities[1].identity_value",
                "subject_identities[2].identity_value",
                "subject_identities[3].identity_value",
            ]
        );
    }

    #[test]
    fn the_list_and_the_salt_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("erasures.redb");
        let key = IdentityKey::new(PHONE, "+8613912345678");
        let hash = {
            let store = Erasures::open(&path, Suppression::Drop).unwrap();
            let (id, held) = store
                .parse(
                    &request(serde_json::json!([{"identity_type": "phone", "identity_value": "13912345678"}])),
                    normalize,
                )
                .unwrap();
            store.submit(&id, held, None, "dpo").unwrap();
            store.hash_of(&key)
        };
        let store = Erasures::open(&path, Suppression::Drop).unwrap();
        assert_eq!(store.hash_of(&key), hash);
        assert!(store.suppresses(&[key]));
        assert!(
            store.has_pending(),
            "an unfinished erasure is carried out after a restart"
        );
        let bytes = std::fs::read(&path).unwrap();
        assert!(!bytes.windows(11).any(|w| w == b"13912345678"));
    }
}
