//! The log's entries, as the embedded store appends them: what each event did (its outcome,
//! keys, contact fields and index writes), one value per batch, and their positions.

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::identity::resolve::lead_text;
use crate::identity::{IdentityError, IdentityKey};
use crate::lead::{IdentityOutcome, IdentityStatus};

/// Batch number (from 1) -> the [`Entry`] of each of its events that changed anything: see
/// [`encode_batch`].
pub(super) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("identity_log");
/// An entry's position is its batch's number, shifted by this, plus its place in the batch
/// (from 1). 0 is no position.
pub(super) const PLACE_BITS: u32 = 24;

/// A key (`phone:+86…`) or a source key, as the index holds it: its XXH3-128 digest. Two of
/// 20 million keys share a digest with a probability near 10⁻²⁴.
pub(super) type Digest = u128;

pub(super) fn digest(text: &str) -> Digest {
    twox_hash::XxHash3_128::oneshot(text.as_bytes())
}

/// The digest of `kind:value`, without building the text when it is short.
pub(super) fn key_digest(key: &IdentityKey) -> Digest {
    let (kind, value) = (key.kind.as_bytes(), key.value.as_bytes());
    let len = kind.len() + 1 + value.len();
    let mut buf = [0u8; 128];
    if len > buf.len() {
        return digest(&key.name());
    }
    buf[..kind.len()].copy_from_slice(kind);
    buf[kind.len()] = b':';
    buf[kind.len() + 1..len].copy_from_slice(value);
    twox_hash::XxHash3_128::oneshot(&buf[..len])
}

/// What one event did: appended to the log when it changed anything.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Entry {
    pub(super) event_id: String,
    /// The source key (connector + platform lead id) this event was the first to carry.
    pub(super) source: Option<String>,
    /// The person it resolved to; `None` for an unresolved (rejected) lead.
    pub(super) member: Option<MemberEntry>,
    /// The index writes it made, people before keys.
    pub(super) people: Vec<PersonWrite>,
    pub(super) keys: Vec<KeyWrite>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct MemberEntry {
    pub(super) lead_id: Uuid,
    pub(super) status: IdentityStatus,
    pub(super) matched_on: Vec<String>,
    pub(super) supported_by: Vec<String>,
    pub(super) merged: Vec<Uuid>,
    pub(super) connector: String,
    pub(super) at: String,
    /// The event's keys and contact fields, for explanations.
    pub(super) keys: Vec<(String, String)>,
    pub(super) profile: Vec<(String, String)>,
    /// The previous event resolved to `lead_id` (its position), 0 for its first.
    pub(super) prev: u64,
}

impl MemberEntry {
    pub(super) fn outcome(&self) -> IdentityOutcome {
        IdentityOutcome {
            lead_id: lead_text(self.lead_id),
            status: self.status,
            matched_on: self.matched_on.clone(),
            supported_by: self.supported_by.clone(),
            merged_lead_ids: self.merged.iter().map(|u| lead_text(*u)).collect(),
        }
    }
}

/// A person's matching state, as [`resolve`] wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PersonWrite {
    pub(super) lead_id: Uuid,
    pub(super) order: u64,
    pub(super) merged_into: Option<Uuid>,
    /// (kind, digest) of each key value.
    pub(super) keys: Vec<(String, Digest)>,
    pub(super) names: Vec<String>,
    pub(super) companies: Vec<String>,
    pub(super) cities: Vec<String>,
}

/// The people a key links, as [`resolve`] wrote them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct KeyWrite {
    pub(super) kind: String,
    pub(super) key: Digest,
    pub(super) people: Vec<Uuid>,
    pub(super) shared: bool,
}

/// How a key's value stands in [`Person::keys`] here: its digest, in hex.
pub(super) fn token(d: Digest) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(32);
    for i in 0..32 {
        s.push(char::from(HEX[((d >> (124 - 4 * i)) & 0xf) as usize]));
    }
    s
}

/// The digest a [`token`] stands for.
pub(super) fn token_digest(t: &str) -> Result<Digest, IdentityError> {
    Digest::from_str_radix(t, 16)
        .map_err(|_| IdentityError::Storage(format!("key token {t} is not a digest")))
}

pub(super) fn corrupt(what: impl std::fmt::Display) -> IdentityError {
    IdentityError::Storage(format!("corrupt identity log: {what}"))
}

pub(super) fn storage(e: impl Into<redb::Error>) -> IdentityError {
    IdentityError::Disk(e.into().to_string())
}

pub(super) fn position(batch: u64, place: usize) -> u64 {
    (batch << PLACE_BITS) | (place as u64 + 1)
}

/// A batch's entries in one value, so that a batch is one append: their count (u32, little
/// endian), where each ends (u32 each), then each entry in postcard.
pub(super) fn encode_batch(entries: &[Entry], mut buf: Vec<u8>) -> Result<Vec<u8>, IdentityError> {
    let count = u32::try_from(entries.len())
        .ok()
        .filter(|n| *n < 1 << PLACE_BITS)
        .ok_or_else(|| IdentityError::Storage("a batch of more than 16M events".into()))?;
    let header = 4 + 4 * entries.len();
    buf.clear();
    buf.reserve(header + 256 * entries.len());
    buf.extend_from_slice(&count.to_le_bytes());
    buf.resize(header, 0);
    for (i, e) in entries.iter().enumerate() {
        postcard::to_io(e, &mut buf)
            .map_err(|e| IdentityError::Storage(format!("encoding an entry: {e}")))?;
        let end = u32::try_from(buf.len())
            .map_err(|_| IdentityError::Storage("a batch of more than 4 GiB".into()))?;
        buf[4 + 4 * i..8 + 4 * i].copy_from_slice(&end.to_le_bytes());
    }
    Ok(buf)
}

/// How many entries a batch value holds.
pub(super) fn batch_len(blob: &[u8]) -> Option<usize> {
    Some(u32::from_le_bytes(blob.get(..4)?.try_into().ok()?) as usize)
}

/// The entry at `place` (from 0) of a batch value.
pub(super) fn decode_entry(blob: &[u8], place: usize) -> Option<Entry> {
    let n = batch_len(blob)?;
    let end = |i: usize| -> Option<usize> {
        Some(u32::from_le_bytes(blob.get(4 + 4 * i..8 + 4 * i)?.try_into().ok()?) as usize)
    };
    let start = match place {
        0 => 4 + 4 * n,
        _ => end(place - 1)?,
    };
    postcard::from_bytes(blob.get(start..end(place)?)?).ok()
}

/// A batch value as it is stored: sealed when a key is configured (`[privacy]`).
pub(super) fn sealed(blob: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, IdentityError> {
    match crate::seal::keys() {
        Some(k) => k
            .seal(blob)
            .map(std::borrow::Cow::Owned)
            .map_err(|e| IdentityError::Storage(e.to_string())),
        None => Ok(std::borrow::Cow::Borrowed(blob)),
    }
}

/// A stored batch value's plain bytes.
pub(super) fn opened(stored: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, IdentityError> {
    crate::seal::open_stored(stored)
        .map_err(|e| IdentityError::Storage(format!("the identity log: {e}")))
}

pub(super) fn read_entry(
    log: &impl ReadableTable<u64, &'static [u8]>,
    pos: u64,
) -> Result<Entry, IdentityError> {
    let (batch, place) = (pos >> PLACE_BITS, (pos & ((1 << PLACE_BITS) - 1)) as usize);
    let blob = log
        .get(batch)
        .map_err(storage)?
        .ok_or_else(|| corrupt(format!("batch {batch} is missing")))?;
    let blob = opened(blob.value())?;
    place
        .checked_sub(1)
        .and_then(|place| decode_entry(&blob, place))
        .ok_or_else(|| corrupt(format!("entry {place} of batch {batch}")))
}
