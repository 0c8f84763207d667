//! The embedded identity store, the default: the matching index in memory over an append-only log
//! in one redb file under the data directory (or in memory, for dry runs).
//!
//! Resolving a lead reads and writes memory only: the keys, held as 128-bit digests, and each
//! person's matching state (creation order, where it was merged, its keys, its recent names,
//! companies and cities). What each event did is appended to the log, one entry per event: its
//! outcome, its keys and contact fields, and the index writes it made. Opening the store replays
//! those writes. An explanation walks a person's events back through the log and derives its
//! profile, sources and merges from them.
//!
//! Durability: each batch is one redb commit without an fsync ([`Durability::None`]);
//! [`IdentityStore::sync`] makes every batch so far durable, and the pipeline calls it before it
//! acknowledges their events in the journal. A crash can lose only unsynced batches, whose events the
//! journal still holds. Resolving them again gives the outcomes already published: the log is
//! back at the state they were first resolved against, and a new person's lead id derives from
//! its founding event ([`resolve::new_lead_id`]).
//!
//! The algorithm is [`resolve::resolve`]; this file keeps the index and the log.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::path::{Path, PathBuf};

use crate::reopen::Reopening;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use hashbrown::{HashMap, HashTable};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, Table, TableDefinition};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::resolve::{
    self, Cluster, ClusterKey, EVENTS_KEPT, Graph, GraphRead, KeyLinks, Member, MergeRef, Person,
    ProfileValue, Resolution, lead_text,
};
use super::{IdentityError, IdentityKey, IdentityRequest, IdentityStore, Policy};
use crate::lead::{IdentityOutcome, IdentityStatus};

/// Batch number (from 1) -> the [`Entry`] of each of its events that changed anything: see
/// [`encode_batch`].
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("identity_log");
/// An entry's position is its batch's number, shifted by this, plus its place in the batch
/// (from 1). 0 is no position.
const PLACE_BITS: u32 = 24;
/// redb's page cache. The log is appended and read back only for explanations and replays; the
/// index lives in memory.
const CACHE_BYTES: usize = 64 << 20;
/// How many of the latest events a replay is answered for (as first resolved) from the index.
/// Events come again only while their journal acknowledgement is pending: the delivery loop holds
/// at most 5,000 delivered events plus one batch (at most 10,000) unacknowledged at a time.
const RECENT: usize = 100_000;
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The layout of this file. Format 1 (leadgate before 0.5) kept people and keys in B-trees.
const FORMAT: u64 = 2;

/// A key (`phone:+86…`) or a source key, as the index holds it: its XXH3-128 digest. Two of
/// 20 million keys share a digest with a probability near 10⁻²⁴.
type Digest = u128;

fn digest(text: &str) -> Digest {
    twox_hash::XxHash3_128::oneshot(text.as_bytes())
}

/// The digest of `kind:value`, without building the text when it is short.
fn key_digest(key: &IdentityKey) -> Digest {
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
struct Entry {
    event_id: String,
    /// The source key (connector + platform lead id) this event was the first to carry.
    source: Option<String>,
    /// The person it resolved to; `None` for an unresolved (rejected) lead.
    member: Option<MemberEntry>,
    /// The index writes it made, people before keys.
    people: Vec<PersonWrite>,
    keys: Vec<KeyWrite>,
}

#[derive(Debug, Serialize, Deserialize)]
struct MemberEntry {
    lead_id: Uuid,
    status: IdentityStatus,
    matched_on: Vec<String>,
    supported_by: Vec<String>,
    merged: Vec<Uuid>,
    connector: String,
    at: String,
    /// The event's keys and contact fields, for explanations.
    keys: Vec<(String, String)>,
    profile: Vec<(String, String)>,
    /// The previous event resolved to `lead_id` (its position), 0 for its first.
    prev: u64,
}

impl MemberEntry {
    fn outcome(&self) -> IdentityOutcome {
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
struct PersonWrite {
    lead_id: Uuid,
    order: u64,
    merged_into: Option<Uuid>,
    /// (kind, digest) of each key value.
    keys: Vec<(String, Digest)>,
    names: Vec<String>,
    companies: Vec<String>,
    cities: Vec<String>,
}

/// The people a key links, as [`resolve`] wrote them.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyWrite {
    kind: String,
    key: Digest,
    people: Vec<Uuid>,
    shared: bool,
}

/// How a key's value stands in [`Person::keys`] here: its digest, in hex.
fn token(d: Digest) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(32);
    for i in 0..32 {
        s.push(char::from(HEX[((d >> (124 - 4 * i)) & 0xf) as usize]));
    }
    s
}

fn corrupt(what: impl std::fmt::Display) -> IdentityError {
    IdentityError::Storage(format!("corrupt identity log: {what}"))
}

fn storage(e: impl Into<redb::Error>) -> IdentityError {
    IdentityError::Disk(e.into().to_string())
}

/// A person in memory: about 64 bytes, plus its key ids and packed traits.
#[derive(Debug)]
struct Core {
    /// The newest event resolved to this lead id (its log position), 0 for none.
    last_event: u64,
    lead_id: [u8; 16],
    /// The person this one was merged into (its index + 1), 0 for none.
    merged_into: u32,
    /// Its keys: up to two ids inline ([`NO_KEY`] for none), or [`MANY_KEYS`] and the place of
    /// its list in `Index::lists`.
    keys: [u32; 2],
    /// Recent names, companies and cities: see [`pack`].
    traits: Box<str>,
}

const NO_KEY: u32 = u32::MAX;
const MANY_KEYS: u32 = u32::MAX - 1;

/// A key in memory: 28 bytes.
#[derive(Debug)]
struct KeyRec {
    digest: [u32; 4],
    /// The one person it links (index + 1), or 0.
    one: u32,
    /// Its list in `Index::lists` (index + 1) when it links several, or 0.
    many: u32,
    kind: u8,
    shared: bool,
}

/// A vector in chunks of 64Ki elements: growing never copies it, nor holds its old and new
/// buffers at once (a vector of 10 million people would, for a moment, need 1.5 times its size).
struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

const CHUNK_BITS: u32 = 16;

impl<T> Chunked<T> {
    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, value: T) {
        if self.len.is_multiple_of(1 << CHUNK_BITS) {
            self.chunks.push(Vec::with_capacity(1 << CHUNK_BITS));
        }
        self.chunks
            .last_mut()
            .expect("a chunk with room")
            .push(value);
        self.len += 1;
    }

    fn get(&self, i: usize) -> Option<&T> {
        self.chunks
            .get(i >> CHUNK_BITS)?
            .get(i & ((1 << CHUNK_BITS) - 1))
    }
}

impl<T> std::ops::Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        &self.chunks[i >> CHUNK_BITS][i & ((1 << CHUNK_BITS) - 1)]
    }
}

impl<T> std::ops::IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        &mut self.chunks[i >> CHUNK_BITS][i & ((1 << CHUNK_BITS) - 1)]
    }
}

/// The matching index: everything resolving needs, rebuilt from the log on open.
#[derive(Default)]
struct Index {
    /// By creation order - 1.
    people: Chunked<Core>,
    by_lead: HashTable<u32>,
    keys: Chunked<KeyRec>,
    by_key: HashTable<u32>,
    lists: Vec<Box<[u32]>>,
    kinds: Vec<String>,
    /// A source key's digest -> the position of the entry of the event that first carried it.
    sources: HashMap<Digest, u64>,
    /// The latest [`RECENT`] resolved events: the event id's digest -> the position of its entry.
    recent: HashMap<Digest, u64>,
    recent_order: VecDeque<Digest>,
    /// The number of the newest batch.
    batches: u64,
    /// The last batch's encoding buffer, reused: a batch is over 100 KiB, and a fresh one each
    /// time would fault its pages in again.
    scratch: Vec<u8>,
}

fn split(d: Digest) -> [u32; 4] {
    [
        (d >> 96) as u32,
        (d >> 64) as u32,
        (d >> 32) as u32,
        d as u32,
    ]
}

fn join([a, b, c, d]: [u32; 4]) -> Digest {
    (u128::from(a) << 96) | (u128::from(b) << 64) | (u128::from(c) << 32) | u128::from(d)
}

fn lead_hash(lead: &[u8; 16]) -> u64 {
    u64::from_le_bytes(lead[8..].try_into().expect("8 bytes"))
}

/// Names, companies and cities in one string: lists apart by U+001E, values by U+001F.
fn pack(lists: [&[String]; 3]) -> Box<str> {
    if lists.iter().all(|l| l.is_empty()) {
        return Box::default();
    }
    let len = lists
        .iter()
        .flat_map(|l| l.iter())
        .map(|v| v.len() + 1)
        .sum();
    let mut out = String::with_capacity(len);
    for (n, list) in lists.iter().enumerate() {
        if n > 0 {
            out.push('\u{1e}');
        }
        for (i, v) in list.iter().enumerate() {
            if i > 0 {
                out.push('\u{1f}');
            }
            out.push_str(v);
        }
    }
    out.into_boxed_str()
}

fn unpack(packed: &str) -> [Vec<String>; 3] {
    let mut out: [Vec<String>; 3] = Default::default();
    for (slot, list) in out.iter_mut().zip(packed.split('\u{1e}')) {
        *slot = list
            .split('\u{1f}')
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect();
    }
    out
}

impl Index {
    fn person_at(&self, lead: &Uuid) -> Option<u32> {
        let bytes = lead.as_bytes();
        self.by_lead
            .find(lead_hash(bytes), |&i| {
                self.people[i as usize].lead_id == *bytes
            })
            .copied()
    }

    fn key_at(&self, d: Digest) -> Option<u32> {
        let parts = split(d);
        self.by_key
            .find(d as u64, |&k| self.keys[k as usize].digest == parts)
            .copied()
    }

    fn lead_of(&self, i: u32) -> Uuid {
        Uuid::from_bytes(self.people[i as usize].lead_id)
    }

    /// Follows merges from person `i` to the one that absorbed it.
    fn root_of(&self, mut i: u32) -> u32 {
        for _ in 0..self.people.len() {
            match self.people[i as usize].merged_into {
                0 => break,
                m => i = m - 1,
            }
        }
        i
    }

    fn person(&self, i: u32) -> Person {
        let core = &self.people[i as usize];
        let mut p = Person {
            order: u64::from(i) + 1,
            merged_into: (core.merged_into != 0)
                .then(|| lead_text(self.lead_of(core.merged_into - 1))),
            ..Person::default()
        };
        for &k in self.keys_of(core) {
            let rec = &self.keys[k as usize];
            p.keys
                .entry(self.kinds[usize::from(rec.kind)].clone())
                .or_default()
                .push(token(join(rec.digest)));
        }
        [p.names, p.companies, p.cities] = unpack(&core.traits);
        p
    }

    fn keys_of<'c>(&'c self, core: &'c Core) -> &'c [u32] {
        match core.keys {
            [MANY_KEYS, list] => &self.lists[list as usize],
            [NO_KEY, _] => &[],
            [_, NO_KEY] => &core.keys[..1],
            _ => &core.keys,
        }
    }

    /// Puts `ids` in a list of `lists`, the one at `slot` (place + 1) when there is one, and
    /// returns its slot.
    fn store_list(&mut self, slot: u32, ids: Vec<u32>) -> Result<u32, IdentityError> {
        if slot != 0 {
            self.lists[slot as usize - 1] = ids.into_boxed_slice();
            return Ok(slot);
        }
        self.lists.push(ids.into_boxed_slice());
        u32::try_from(self.lists.len()).map_err(|_| corrupt("too many lists"))
    }

    fn linked(&self, k: u32) -> Vec<u32> {
        let rec = &self.keys[k as usize];
        match (rec.one, rec.many) {
            (0, 0) => Vec::new(),
            (0, m) => self.lists[m as usize - 1].to_vec(),
            (one, _) => vec![one - 1],
        }
    }

    fn links(&self, k: u32) -> KeyLinks {
        KeyLinks {
            people: self
                .linked(k)
                .into_iter()
                .map(|i| lead_text(self.lead_of(i)))
                .collect(),
            shared: self.keys[k as usize].shared,
        }
    }

    /// The key with digest `d`, created (linking no one) when new.
    fn key_or_new(&mut self, kind: &str, d: Digest) -> Result<u32, IdentityError> {
        if let Some(k) = self.key_at(d) {
            return Ok(k);
        }
        let kind = match self.kinds.iter().position(|k| k == kind) {
            Some(i) => i,
            None => {
                self.kinds.push(kind.to_owned());
                self.kinds.len() - 1
            }
        };
        let kind = u8::try_from(kind).map_err(|_| corrupt("more than 256 kinds of keys"))?;
        let k = u32::try_from(self.keys.len()).map_err(|_| corrupt("too many keys"))?;
        self.keys.push(KeyRec {
            digest: split(d),
            one: 0,
            many: 0,
            kind,
            shared: false,
        });
        let keys = &self.keys;
        self.by_key
            .insert_unique(d as u64, k, |&k| join(keys[k as usize].digest) as u64);
        Ok(k)
    }

    fn lead_index(&self, lead: &Uuid) -> Result<u32, IdentityError> {
        self.person_at(lead)
            .ok_or_else(|| corrupt(format!("unknown lead id {lead}")))
    }

    /// Applies one entry, at log position `pos`: the same code for a new batch and on open.
    fn apply(&mut self, e: &Entry, pos: u64) -> Result<(), IdentityError> {
        for w in &e.people {
            let i = usize::try_from(w.order.saturating_sub(1)).unwrap_or(usize::MAX);
            if i == self.people.len() {
                let n = u32::try_from(i).map_err(|_| corrupt("too many people"))?;
                self.people.push(Core {
                    last_event: 0,
                    lead_id: *w.lead_id.as_bytes(),
                    merged_into: 0,
                    keys: [NO_KEY; 2],
                    traits: Box::default(),
                });
                let people = &self.people;
                self.by_lead
                    .insert_unique(lead_hash(w.lead_id.as_bytes()), n, |&i| {
                        lead_hash(&people[i as usize].lead_id)
                    });
            } else if self
                .people
                .get(i)
                .is_none_or(|c| c.lead_id != *w.lead_id.as_bytes())
            {
                return Err(corrupt(format!("person {} out of order", w.lead_id)));
            }
            let merged_into = match &w.merged_into {
                Some(to) => self.lead_index(to)? + 1,
                None => 0,
            };
            let ids = w
                .keys
                .iter()
                .map(|(kind, d)| self.key_or_new(kind, *d))
                .collect::<Result<Vec<u32>, _>>()?;
            let keys = match (ids.as_slice(), self.people[i].keys) {
                ([], _) => [NO_KEY; 2],
                ([a], _) => [*a, NO_KEY],
                ([a, b], _) => [*a, *b],
                (_, [MANY_KEYS, slot]) => [MANY_KEYS, self.store_list(slot + 1, ids)? - 1],
                _ => [MANY_KEYS, self.store_list(0, ids)? - 1],
            };
            let core = &mut self.people[i];
            core.merged_into = merged_into;
            core.keys = keys;
            core.traits = pack([&w.names, &w.companies, &w.cities]);
        }
        for w in &e.keys {
            let k = self.key_or_new(&w.kind, w.key)?;
            let people = w
                .people
                .iter()
                .map(|l| self.lead_index(l))
                .collect::<Result<Vec<u32>, _>>()?;
            let rec = &mut self.keys[k as usize];
            rec.shared = w.shared;
            match people.as_slice() {
                [] => rec.one = 0,
                [one] => rec.one = one + 1,
                _ => {
                    rec.one = 0;
                    let slot = rec.many;
                    let slot = self.store_list(slot, people)?;
                    self.keys[k as usize].many = slot;
                }
            }
        }
        if let Some(source) = &e.source {
            self.sources.insert(digest(source), pos);
        }
        if let Some(m) = &e.member {
            let i = self.lead_index(&m.lead_id)?;
            self.people[i as usize].last_event = pos;
            let d = digest(&e.event_id);
            self.recent.insert(d, pos);
            self.recent_order.push_back(d);
            if self.recent_order.len() > RECENT
                && let Some(old) = self.recent_order.pop_front()
            {
                self.recent.remove(&old);
            }
        }
        Ok(())
    }
}

fn position(batch: u64, place: usize) -> u64 {
    (batch << PLACE_BITS) | (place as u64 + 1)
}

/// A batch's entries in one value, so that a batch is one append: their count (u32, little
/// endian), where each ends (u32 each), then each entry in postcard.
fn encode_batch(entries: &[Entry], mut buf: Vec<u8>) -> Result<Vec<u8>, IdentityError> {
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
fn batch_len(blob: &[u8]) -> Option<usize> {
    Some(u32::from_le_bytes(blob.get(..4)?.try_into().ok()?) as usize)
}

/// The entry at `place` (from 0) of a batch value.
fn decode_entry(blob: &[u8], place: usize) -> Option<Entry> {
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

fn read_entry(
    log: &impl ReadableTable<u64, &'static [u8]>,
    pos: u64,
) -> Result<Entry, IdentityError> {
    let (batch, place) = (pos >> PLACE_BITS, (pos & ((1 << PLACE_BITS) - 1)) as usize);
    let blob = log
        .get(batch)
        .map_err(storage)?
        .ok_or_else(|| corrupt(format!("batch {batch} is missing")))?;
    place
        .checked_sub(1)
        .and_then(|place| decode_entry(blob.value(), place))
        .ok_or_else(|| corrupt(format!("entry {place} of batch {batch}")))
}

/// One batch being resolved: reads see the index plus this batch's writes; the writes become
/// entries, applied to the index once the batch is committed.
struct Batch<'a, 't> {
    index: &'a Index,
    log: &'a Table<'t, u64, &'static [u8]>,
    /// The batch's writes, as (entry, write) places: an entry is `entries[i]`, or `current`
    /// at `entries.len()`.
    people: HashMap<Uuid, (usize, usize)>,
    keys: HashMap<Digest, (usize, usize)>,
    sources: HashMap<Digest, String>,
    /// The entries of the events resolved in this batch, by event id.
    outcomes: HashMap<Digest, usize>,
    last_event: HashMap<Uuid, u64>,
    order: u64,
    entries: Vec<Entry>,
    current: Entry,
}

impl Batch<'_, '_> {
    /// The log position the current event's entry will have.
    fn position(&self) -> u64 {
        position(self.index.batches + 1, self.entries.len())
    }

    fn entry(&self, i: usize) -> &Entry {
        self.entries.get(i).unwrap_or(&self.current)
    }

    fn finish(&mut self) {
        let e = std::mem::take(&mut self.current);
        if e.source.is_some() || e.member.is_some() || !e.people.is_empty() || !e.keys.is_empty() {
            self.entries.push(e);
        }
    }
}

fn lead(id: &str) -> Result<Uuid, IdentityError> {
    Uuid::parse_str(id).map_err(|_| IdentityError::Storage(format!("lead id {id} is not a UUID")))
}

impl GraphRead for Batch<'_, '_> {
    fn person(&mut self, lead_id: &str) -> Result<Option<Person>, IdentityError> {
        let Ok(id) = Uuid::parse_str(lead_id) else {
            return Ok(None);
        };
        if let Some(&(e, i)) = self.people.get(&id) {
            let w = &self.entry(e).people[i];
            let mut p = Person {
                order: w.order,
                merged_into: w.merged_into.map(lead_text),
                names: w.names.clone(),
                companies: w.companies.clone(),
                cities: w.cities.clone(),
                ..Person::default()
            };
            for (kind, d) in &w.keys {
                p.keys.entry(kind.clone()).or_default().push(token(*d));
            }
            return Ok(Some(p));
        }
        Ok(self.index.person_at(&id).map(|i| self.index.person(i)))
    }

    fn key(&mut self, key: &str) -> Result<KeyLinks, IdentityError> {
        let d = digest(key);
        if let Some(&(e, i)) = self.keys.get(&d) {
            let w = &self.entry(e).keys[i];
            return Ok(KeyLinks {
                people: w.people.iter().map(|u| lead_text(*u)).collect(),
                shared: w.shared,
            });
        }
        Ok(self
            .index
            .key_at(d)
            .map(|k| self.index.links(k))
            .unwrap_or_default())
    }

    fn token(&self, key: &IdentityKey) -> String {
        token(key_digest(key))
    }
}

impl Graph for Batch<'_, '_> {
    fn outcome(&mut self, event_id: &str) -> Result<Option<IdentityOutcome>, IdentityError> {
        if let Some(&e) = self.outcomes.get(&digest(event_id)) {
            return Ok(self.entry(e).member.as_ref().map(MemberEntry::outcome));
        }
        let Some(&pos) = self.index.recent.get(&digest(event_id)) else {
            return Ok(None);
        };
        let e = read_entry(self.log, pos)?;
        Ok(e.member
            .filter(|_| e.event_id == event_id)
            .map(|m| m.outcome()))
    }

    fn put_outcome(&mut self, event_id: &str, o: &IdentityOutcome) -> Result<(), IdentityError> {
        let m = self
            .current
            .member
            .as_mut()
            .ok_or_else(|| IdentityError::Storage("an outcome without a member".into()))?;
        m.supported_by = o.supported_by.clone();
        m.merged = o
            .merged_lead_ids
            .iter()
            .map(|l| lead(l))
            .collect::<Result<_, _>>()?;
        self.outcomes.insert(digest(event_id), self.entries.len());
        Ok(())
    }

    fn claim_source(&mut self, key: &str, event_id: &str) -> Result<String, IdentityError> {
        let d = digest(key);
        if let Some(first) = self.sources.get(&d) {
            return Ok(first.clone());
        }
        if let Some(&pos) = self.index.sources.get(&d) {
            return Ok(read_entry(self.log, pos)?.event_id);
        }
        self.sources.insert(d, event_id.to_owned());
        self.current.source = Some(key.to_owned());
        Ok(event_id.to_owned())
    }

    fn put_key(&mut self, key: &str, links: &KeyLinks) -> Result<(), IdentityError> {
        let (kind, _) = key
            .split_once(':')
            .ok_or_else(|| IdentityError::Storage(format!("key {key} has no kind")))?;
        let w = KeyWrite {
            kind: kind.to_owned(),
            key: digest(key),
            people: links
                .people
                .iter()
                .map(|l| lead(l))
                .collect::<Result<_, _>>()?,
            shared: links.shared,
        };
        self.keys
            .insert(w.key, (self.entries.len(), self.current.keys.len()));
        self.current.keys.push(w);
        Ok(())
    }

    fn put_person(&mut self, lead_id: &str, p: &Person) -> Result<(), IdentityError> {
        let mut keys = Vec::with_capacity(2);
        for (kind, tokens) in &p.keys {
            for t in tokens {
                let d = Digest::from_str_radix(t, 16).map_err(|_| {
                    IdentityError::Storage(format!("key token {t} is not a digest"))
                })?;
                keys.push((kind.clone(), d));
            }
        }
        let w = PersonWrite {
            lead_id: lead(lead_id)?,
            order: p.order,
            merged_into: p.merged_into.as_deref().map(lead).transpose()?,
            keys,
            names: p.names.clone(),
            companies: p.companies.clone(),
            cities: p.cities.clone(),
        };
        self.people
            .insert(w.lead_id, (self.entries.len(), self.current.people.len()));
        self.current.people.push(w);
        Ok(())
    }

    fn add_member(&mut self, m: Member, req: &IdentityRequest) -> Result<(), IdentityError> {
        let lead_id = lead(&m.lead_id)?;
        let prev = match self.last_event.get(&lead_id) {
            Some(&pos) => pos,
            None => self
                .index
                .person_at(&lead_id)
                .map_or(0, |i| self.index.people[i as usize].last_event),
        };
        let pos = self.position();
        self.last_event.insert(lead_id, pos);
        self.current.member = Some(MemberEntry {
            lead_id,
            status: m.status,
            matched_on: m.matched_on,
            supported_by: Vec::new(),
            merged: Vec::new(),
            connector: m.connector,
            at: m.at,
            keys: req
                .keys
                .iter()
                .map(|k| (k.kind.clone(), k.value.clone()))
                .collect(),
            profile: req.profile.clone(),
            prev,
        });
        Ok(())
    }

    fn next_order(&mut self) -> Result<u64, IdentityError> {
        self.order += 1;
        Ok(self.order)
    }

    /// Explanations derive the history from the log's member entries.
    fn keeps_history(&self) -> bool {
        false
    }
}

pub struct EmbeddedIdentityStore {
    /// The file, to open again after a storage error; `None` in memory.
    path: Option<PathBuf>,
    policy: Policy,
    /// The open file and its index; after a storage error the next use opens the file again and
    /// rebuilds the index from its log (the index may hold batches the file lost).
    opened: Reopening<Opened>,
}

struct Opened {
    db: Arc<Database>,
    /// Set once the index is rebuilt from the log (or the rebuild failed).
    index: Arc<OnceLock<Result<Mutex<Index>, String>>>,
}

impl Opened {
    fn index(&self) -> Result<MutexGuard<'_, Index>, IdentityError> {
        match self.index.wait() {
            // A batch that panicked (a bug met a poison lead, which the pipeline then
            // quarantines) left the index as it was: a batch changes it only after its log entry
            // is committed. Refusing the lock from then on would stop every later lead.
            Ok(index) => Ok(index
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)),
            Err(e) => Err(IdentityError::Storage(e.clone())),
        }
    }

    fn load(db: Database, background: bool) -> Result<Self, IdentityError> {
        check_format(&db)?;
        let db = Arc::new(db);
        let index = Arc::new(OnceLock::new());
        let rebuild = {
            let (db, index) = (db.clone(), index.clone());
            move || {
                let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rebuild(&db)))
                    .unwrap_or_else(|_| Err(corrupt("the rebuild panicked")));
                if let Err(e) = &built {
                    tracing::error!(error = %e, "the identity index cannot be rebuilt");
                }
                let _ = index.set(built.map(Mutex::new).map_err(|e| e.to_string()));
            }
        };
        if background {
            std::thread::Builder::new()
                .name("identity-index".into())
                .spawn(rebuild)
                .map_err(|e| {
                    IdentityError::Storage(format!("cannot start the index rebuild: {e}"))
                })?;
        } else {
            rebuild();
        }
        Ok(Self { db, index })
    }
}

fn open_file(path: &Path) -> Result<Database, IdentityError> {
    let mut builder = Database::builder();
    builder.set_cache_size(CACHE_BYTES);
    crate::storefile::open(&builder, path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => {
            IdentityError::Locked(path.display().to_string())
        }
        other => storage(other),
    })
}

impl EmbeddedIdentityStore {
    /// Opens (or creates) the store at `path`. Its index is rebuilt from the log on a thread of
    /// its own (about 5 s per million leads), so that the gateway takes webhooks meanwhile;
    /// resolving waits for it, explanations are refused until it is ready.
    pub fn open(path: &Path, policy: Policy) -> Result<Self, IdentityError> {
        let opened = Opened::load(open_file(path)?, true)?;
        Ok(Self {
            path: Some(path.to_owned()),
            policy,
            opened: Reopening::new(format!("identity store {}", path.display()), opened),
        })
    }

    /// A store that lives in memory only (for `import --dry-run`).
    pub fn in_memory(policy: Policy) -> Result<Self, IdentityError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(storage)?;
        Ok(Self {
            path: None,
            policy,
            opened: Reopening::new("identity store (memory)".into(), Opened::load(db, false)?),
        })
    }

    /// Waits until the index is rebuilt from the log.
    pub fn ready(&self) -> Result<(), IdentityError> {
        self.with(|st| st.index().map(drop))
    }

    /// Runs `f` on the open store, opened again (its index rebuilt, here) after a storage
    /// error; a storage error lets go of it.
    fn with<T>(
        &self,
        f: impl FnOnce(&Opened) -> Result<T, IdentityError>,
    ) -> Result<T, IdentityError> {
        let st = self.opened.get(|| {
            let path = self.path.as_deref().ok_or_else(|| {
                IdentityError::Storage("the in-memory identity store failed".into())
            })?;
            let db = open_file(path).map_err(|e| match e {
                IdentityError::Locked(_) => {
                    IdentityError::Disk("the identity store is being opened again".into())
                }
                other => other,
            })?;
            Opened::load(db, false)
        })?;
        self.opened
            .with(st, |e| matches!(e, IdentityError::Disk(_)), f)
    }
}

/// Creates the tables of a new store; refuses a store of another format.
fn check_format(db: &Database) -> Result<(), IdentityError> {
    let txn = db.begin_write().map_err(storage)?;
    {
        let mut meta = txn.open_table(META).map_err(storage)?;
        let format = meta.get("format").map_err(storage)?.map(|v| v.value());
        let older = meta.get("people").map_err(storage)?.is_some();
        match format {
            Some(FORMAT) => {}
            None if !older => {
                meta.insert("format", FORMAT).map_err(storage)?;
            }
            found => {
                return Err(IdentityError::Storage(format!(
                    "the identity store is in format {}, this leadgate reads format {FORMAT}; \
                         move it aside (the data directory's identity.redb) to start a new one",
                    found.unwrap_or(1)
                )));
            }
        }
        txn.open_table(LOG).map_err(storage)?;
    }
    txn.commit().map_err(storage)
}

/// The index, from the log.
fn rebuild(db: &Database) -> Result<Index, IdentityError> {
    let started = std::time::Instant::now();
    let mut index = Index::default();
    {
        let read = db.begin_read().map_err(storage)?;
        let log = read.open_table(LOG).map_err(storage)?;
        for item in log.iter().map_err(storage)? {
            let (batch, blob) = item.map_err(storage)?;
            let (batch, blob) = (batch.value(), blob.value());
            let n = batch_len(blob).ok_or_else(|| corrupt(format!("batch {batch}")))?;
            for place in 0..n {
                let e = decode_entry(blob, place)
                    .ok_or_else(|| corrupt(format!("entry {place} of batch {batch}")))?;
                index.apply(&e, position(batch, place))?;
            }
            index.batches = batch;
        }
    }
    if index.batches > 0 {
        tracing::info!(
            people = index.people.len(),
            keys = index.keys.len(),
            seconds = started.elapsed().as_secs_f64(),
            "identity index rebuilt from the log"
        );
    }
    Ok(index)
}

impl IdentityStore for EmbeddedIdentityStore {
    fn resolve(&self, requests: &[IdentityRequest]) -> Result<Vec<Resolution>, IdentityError> {
        self.with(|st| self.resolve_in(st, requests))
    }

    fn explain(&self, lead_id: &str) -> Result<Option<Cluster>, IdentityError> {
        self.with(|st| explain_in(st, lead_id))
    }

    fn sync(&self) -> Result<(), IdentityError> {
        self.with(|st| {
            let _index = st.index()?;
            let mut txn = st.db.begin_write().map_err(storage)?;
            txn.set_durability(Durability::Immediate)
                .map_err(|e| IdentityError::Storage(e.to_string()))?;
            txn.commit().map_err(storage)
        })
    }
}

impl EmbeddedIdentityStore {
    fn resolve_in(
        &self,
        st: &Opened,
        requests: &[IdentityRequest],
    ) -> Result<Vec<Resolution>, IdentityError> {
        let mut index = st.index()?;
        let mut txn = st.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::None)
            .map_err(|e| IdentityError::Storage(e.to_string()))?;
        let n = requests.len();
        let mut blob = std::mem::take(&mut index.scratch);
        let (out, entries) = {
            let mut log = txn.open_table(LOG).map_err(storage)?;
            let mut b = Batch {
                order: index.people.len() as u64,
                index: &index,
                log: &log,
                people: HashMap::with_capacity(n),
                keys: HashMap::with_capacity(2 * n),
                sources: HashMap::new(),
                outcomes: HashMap::with_capacity(n),
                last_event: HashMap::with_capacity(n),
                entries: Vec::with_capacity(n),
                current: Entry::default(),
            };
            let mut out = Vec::with_capacity(requests.len());
            for r in requests {
                b.current.event_id.clone_from(&r.event_id);
                out.push(resolve::resolve(&mut b, r, &self.policy)?);
                b.finish();
            }
            let entries = b.entries;
            if !entries.is_empty() {
                blob = encode_batch(&entries, blob)?;
                log.insert(index.batches + 1, blob.as_slice())
                    .map_err(storage)?;
            }
            (out, entries)
        };
        if entries.is_empty() {
            return Ok(out);
        }
        txn.commit().map_err(storage)?;
        let batch = index.batches + 1;
        for (place, e) in entries.iter().enumerate() {
            index.apply(e, position(batch, place))?;
        }
        index.batches = batch;
        index.scratch = blob;
        Ok(out)
    }
}

fn explain_in(st: &Opened, lead_id: &str) -> Result<Option<Cluster>, IdentityError> {
    {
        let Ok(asked) = Uuid::parse_str(lead_id) else {
            return Ok(None);
        };
        if st.index.get().is_none() {
            return Err(IdentityError::Storage(
                "the identity index is still being rebuilt from the log".into(),
            ));
        }
        let index = st.index()?;
        let Some(found) = index.person_at(&asked) else {
            return Ok(None);
        };
        let root = index.root_of(found);
        let txn = st.db.begin_read().map_err(storage)?;
        let log = txn.open_table(LOG).map_err(storage)?;
        explain(&index, &log, root, lead_id)
    }
}

impl Drop for EmbeddedIdentityStore {
    fn drop(&mut self) {
        // Still rebuilding (or failed): nothing was resolved since, so nothing waits for a sync.
        if self
            .opened
            .current()
            .is_none_or(|st| st.index.get().is_none())
        {
            return;
        }
        if let Err(e) = self.sync() {
            tracing::warn!(error = %e, "identity store: the last batches were not synced on close");
        }
    }
}

/// The person at `root`: its own events and those of everyone merged into it, newest first per
/// lead id; the profile (the newest value of each field), the sources and the merges are derived
/// from all of them, the members listed are each lead id's latest [`EVENTS_KEPT`].
fn explain(
    index: &Index,
    log: &impl ReadableTable<u64, &'static [u8]>,
    root: u32,
    asked: &str,
) -> Result<Option<Cluster>, IdentityError> {
    let lead_id = index.lead_of(root).to_string();
    let mut cluster = Cluster {
        requested_lead_id: (lead_id != asked).then(|| asked.to_owned()),
        lead_id,
        created_at: String::new(),
        keys: Vec::new(),
        profile: Default::default(),
        sources: Default::default(),
        merges: Vec::new(),
        members: Vec::new(),
        names: unpack(&index.people[root as usize].traits)[0].clone(),
    };
    let mut newest: HashMap<String, (String, u64)> = HashMap::new();
    let mut keys = BTreeSet::new();
    let mut seen = HashSet::from([root]);
    let mut queue = vec![root];
    while let Some(p) = queue.pop() {
        let mut pos = index.people[p as usize].last_event;
        let mut listed = 0;
        while pos != 0 {
            let e = read_entry(log, pos)?;
            let m = e
                .member
                .ok_or_else(|| corrupt(format!("entry {pos} has no member")))?;
            if listed < EVENTS_KEPT {
                listed += 1;
                cluster.members.push(Member {
                    event_id: e.event_id.clone(),
                    lead_id: m.lead_id.to_string(),
                    connector: m.connector.clone(),
                    at: m.at.clone(),
                    status: m.status,
                    matched_on: m.matched_on.clone(),
                });
            }
            for (field, value) in m.profile {
                let newer = newest
                    .get(&field)
                    .is_none_or(|(at, at_pos)| (&m.at, pos) > (at, *at_pos));
                if newer {
                    newest.insert(field.clone(), (m.at.clone(), pos));
                    cluster.profile.insert(
                        field,
                        ProfileValue {
                            value,
                            connector: m.connector.clone(),
                            event_id: e.event_id.clone(),
                            at: m.at.clone(),
                        },
                    );
                }
            }
            *cluster.sources.entry(m.connector.clone()).or_default() += 1;
            if !m.merged.is_empty() {
                for absorbed in &m.merged {
                    if let Some(j) = index.person_at(absorbed)
                        && seen.insert(j)
                    {
                        queue.push(j);
                    }
                }
                cluster.merges.push(MergeRef {
                    merged_lead_ids: m.merged.iter().map(|u| lead_text(*u)).collect(),
                    event_id: e.event_id.clone(),
                    at: m.at.clone(),
                });
            }
            keys.extend(m.keys);
            if p == root && m.prev == 0 {
                cluster.created_at = m.at;
            }
            pos = m.prev;
        }
    }
    cluster.keys = keys
        .into_iter()
        .map(|(kind, value)| {
            let shared = index
                .key_at(digest(&format!("{kind}:{value}")))
                .is_some_and(|k| index.keys[k as usize].shared);
            ClusterKey {
                kind,
                value,
                shared,
            }
        })
        .collect();
    cluster
        .members
        .sort_by(|a, b| (&a.at, &a.event_id).cmp(&(&b.at, &b.event_id)));
    cluster
        .merges
        .sort_by(|a, b| (&a.at, &a.event_id).cmp(&(&b.at, &b.event_id)));
    Ok(Some(cluster))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_digests_round_trip() {
        let key = IdentityKey::new(PHONE, "+8613800138000");
        assert_eq!(key_digest(&key), digest("phone:+8613800138000"));
        let long = IdentityKey::new("crm_id", "x".repeat(300));
        assert_eq!(key_digest(&long), digest(&long.to_string()));
        let d = key_digest(&key);
        assert_eq!(token(d), format!("{d:032x}"));
        assert_eq!(Digest::from_str_radix(&token(d), 16).unwrap(), d);
        assert_eq!(join(split(d)), d);
        let lists = [
            vec!["张三".to_owned(), "zhang".into()],
            vec![],
            vec!["北京市".into()],
        ];
        assert_eq!(unpack(&pack([&lists[0], &lists[1], &lists[2]])), lists);
        assert_eq!(
            unpack(&pack([&[], &[], &[]])),
            <[Vec<String>; 3]>::default()
        );
    }
    use crate::config::IdentitySettings;
    use crate::identity::{EMAIL, IdentityKey, PHONE, Traits};
    use crate::lead::IdentityStatus;

    fn req(event: &str, keys: &[(&str, &str)]) -> IdentityRequest {
        IdentityRequest {
            event_id: event.into(),
            resolve: true,
            keys: keys.iter().map(|(k, v)| IdentityKey::new(k, *v)).collect(),
            connector: "webform".into(),
            received_at: format!("2026-11-24T00:00:0{}Z", event.len() % 10),
            ..Default::default()
        }
    }

    fn store() -> EmbeddedIdentityStore {
        EmbeddedIdentityStore::in_memory(Policy::default()).unwrap()
    }

    fn person(r: &Resolution) -> &IdentityOutcome {
        match r {
            Resolution::Person(o) => o,
            other => panic!("expected a person, got {other:?}"),
        }
    }

    #[test]
    fn phone_then_email_then_both_merges_into_the_oldest() {
        let s = store();
        let out = s
            .resolve(&[
                req("e1", &[(PHONE, "+8613800138000")]),
                req("e2", &[(EMAIL, "a@b.cn")]),
                req("e3", &[(PHONE, "+8613800138000")]),
            ])
            .unwrap();
        let (o1, o2, o3) = (person(&out[0]), person(&out[1]), person(&out[2]));
        assert_eq!(
            (o1.status, o2.status),
            (IdentityStatus::New, IdentityStatus::New)
        );
        assert_ne!(o1.lead_id, o2.lead_id);
        assert_eq!(
            (o3.status, &o3.lead_id),
            (IdentityStatus::Matched, &o1.lead_id)
        );
        assert_eq!(o3.matched_on, ["phone"]);

        let both = s
            .resolve(&[req("e4", &[(PHONE, "+8613800138000"), (EMAIL, "a@b.cn")])])
            .unwrap();
        let o4 = person(&both[0]);
        assert_eq!(o4.status, IdentityStatus::Merged);
        assert_eq!(o4.lead_id, o1.lead_id, "the oldest survives");
        assert_eq!(o4.merged_lead_ids, std::slice::from_ref(&o2.lead_id));

        let later = s.resolve(&[req("e5", &[(EMAIL, "a@b.cn")])]).unwrap();
        assert_eq!(person(&later[0]).lead_id, o1.lead_id);

        // The absorbed id explains the survivor, with every member event.
        let c = s.explain(&o2.lead_id).unwrap().unwrap();
        assert_eq!(c.lead_id, o1.lead_id);
        assert_eq!(c.requested_lead_id.as_deref(), Some(o2.lead_id.as_str()));
        let events: Vec<_> = c.members.iter().map(|m| m.event_id.as_str()).collect();
        assert_eq!(events.len(), 5);
        assert_eq!(
            c.merges[0].merged_lead_ids,
            std::slice::from_ref(&o2.lead_id)
        );
        assert_eq!(c.keys.len(), 2);
        assert!(s.explain("nobody").unwrap().is_none());
    }

    #[test]
    fn a_replayed_event_resolves_as_the_first_time() {
        let s = store();
        let first = s.resolve(&[req("e1", &[(EMAIL, "a@b.cn")])]).unwrap();
        let again = s.resolve(&[req("e1", &[(EMAIL, "a@b.cn")])]).unwrap();
        assert_eq!(first, again);
        assert_eq!(person(&again[0]).status, IdentityStatus::New);
    }

    #[test]
    fn a_platform_redelivery_is_a_duplicate() {
        let s = store();
        let mut a = req("e1", &[(EMAIL, "a@b.cn")]);
        a.source_key = Some("tiktok\u{1f}7001".into());
        let mut b = req("e2", &[(EMAIL, "a@b.cn")]);
        b.source_key = a.source_key.clone();
        let out = s.resolve(&[a.clone(), b]).unwrap();
        assert_eq!(person(&out[0]).status, IdentityStatus::New);
        assert_eq!(
            out[1],
            Resolution::Duplicate {
                first_event_id: "e1".into()
            }
        );
        // The first event itself, replayed after a crash, is not its own duplicate.
        assert_eq!(s.resolve(&[a]).unwrap(), out[..1]);
    }

    #[test]
    fn a_key_shared_by_two_people_stops_joining() {
        // One mobile typed by three colleagues, each with their own email (2 emails per person).
        let s = store();
        let out = s
            .resolve(&[
                req("e1", &[(PHONE, "+8613911112222"), (EMAIL, "a@x.cn")]),
                req("e2", &[(PHONE, "+8613911112222"), (EMAIL, "b@x.cn")]),
                req("e3", &[(PHONE, "+8613911112222"), (EMAIL, "c@x.cn")]),
                req("e4", &[(PHONE, "+8613911112222")]),
            ])
            .unwrap();
        let ids: Vec<_> = out.iter().map(|r| person(r).lead_id.clone()).collect();
        assert_eq!(ids[1], ids[0], "two emails per person are allowed");
        assert_ne!(ids[2], ids[0], "a third email is another person");
        let o4 = person(&out[3]);
        assert_eq!(
            o4.status,
            IdentityStatus::New,
            "the phone no longer identifies"
        );
        let c = s.explain(&ids[0]).unwrap().unwrap();
        assert!(c.keys.iter().any(|k| k.kind == PHONE && k.shared));
    }

    #[test]
    fn name_and_company_support_a_join_the_limits_refuse() {
        let s = store();
        let traits = |name: &str| Traits {
            name: Some(name.into()),
            company: Some("华夏实业".into()),
            city: None,
        };
        let mut a = req("e1", &[(PHONE, "+8613911113333"), (EMAIL, "a@x.cn")]);
        a.traits = traits("张三");
        let mut b = req("e2", &[(PHONE, "+8613911113333"), (EMAIL, "b@x.cn")]);
        b.traits = traits("张三");
        let mut c = req("e3", &[(PHONE, "+8613911113333"), (EMAIL, "c@x.cn")]);
        c.traits = traits("zhang san");
        let mut d = req("e4", &[(PHONE, "+8613911113333"), (EMAIL, "d@x.cn")]);
        d.traits = traits("李四");
        let out = s.resolve(&[a, b, c, d]).unwrap();
        let o3 = person(&out[2]);
        assert_eq!(o3.lead_id, person(&out[0]).lead_id);
        assert_eq!(o3.supported_by, ["company", "name"]);
        assert_ne!(
            person(&out[3]).lead_id,
            o3.lead_id,
            "a name alone never joins"
        );
    }

    #[test]
    fn survivorship_keeps_the_newest_value_and_the_sources() {
        let s = store();
        let mut a = req("e1", &[(PHONE, "+8613800138000")]);
        a.profile = vec![
            ("company".into(), "旧公司".into()),
            ("city".into(), "北京市".into()),
        ];
        a.received_at = "2026-11-01T00:00:00Z".into();
        let mut b = req("e2", &[(PHONE, "+8613800138000")]);
        b.profile = vec![("company".into(), "新公司".into())];
        b.received_at = "2026-11-02T00:00:00Z".into();
        b.connector = "trade-show".into();
        let out = s.resolve(&[a, b]).unwrap();
        let c = s.explain(&person(&out[0]).lead_id).unwrap().unwrap();
        assert_eq!(c.profile["company"].value, "新公司");
        assert_eq!(c.profile["company"].connector, "trade-show");
        assert_eq!(c.profile["city"].value, "北京市");
        assert_eq!(c.sources.len(), 2);
    }

    /// Three batches: a phone, an email, then one lead with both (a merge) and three colleagues
    /// on one mobile (a shared key).
    fn history() -> Vec<Vec<IdentityRequest>> {
        vec![
            vec![
                req("e1", &[(PHONE, "+8613800138000")]),
                req("e2", &[(EMAIL, "a@b.cn")]),
            ],
            vec![
                req("e3", &[(PHONE, "+8613800138000"), (EMAIL, "a@b.cn")]),
                req("e4", &[(PHONE, "+8613911112222"), (EMAIL, "x@x.cn")]),
                req("e5", &[(PHONE, "+8613911112222"), (EMAIL, "y@x.cn")]),
            ],
            vec![
                req("e6", &[(PHONE, "+8613911112222"), (EMAIL, "z@x.cn")]),
                req("e7", &[(EMAIL, "a@b.cn")]),
            ],
        ]
    }

    #[test]
    fn the_index_is_rebuilt_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.redb");
        let [first, second, third]: [Vec<IdentityRequest>; 3] = history().try_into().unwrap();
        let reference = store();
        let mut expected = Vec::new();
        for batch in [&first, &second, &third] {
            expected.extend(reference.resolve(batch).unwrap());
        }

        let mut got = Vec::new();
        for batch in [&first, &second] {
            let s = EmbeddedIdentityStore::open(&path, Policy::default()).unwrap();
            got.extend(s.resolve(batch).unwrap());
        }
        let s = EmbeddedIdentityStore::open(&path, Policy::default()).unwrap();
        got.extend(s.resolve(&third).unwrap());
        assert_eq!(
            got, expected,
            "a reopened store resolves as one that stayed open"
        );
        assert_eq!(person(&got[2]).status, IdentityStatus::Merged);
        assert_eq!(
            person(&got[5]).status,
            IdentityStatus::New,
            "the phone is shared"
        );

        let lead = &person(&got[0]).lead_id;
        let (c, r) = (s.explain(lead).unwrap(), reference.explain(lead).unwrap());
        assert_eq!(c, r);
        let c = c.unwrap();
        assert_eq!(c.members.len(), 4);
        assert_eq!(c.created_at, "2026-11-24T00:00:02Z");
        let shared = s.explain(&person(&got[3]).lead_id).unwrap().unwrap();
        assert!(shared.keys.iter().any(|k| k.kind == PHONE && k.shared));
    }

    #[test]
    fn a_crash_loses_only_unsynced_batches_and_their_replay_gives_the_same_lead_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.redb");
        let crashed = dir.path().join("crashed.redb");
        let [first, second, _]: [Vec<IdentityRequest>; 3] = history().try_into().unwrap();
        let s = EmbeddedIdentityStore::open(&path, Policy::default()).unwrap();
        let a = s.resolve(&first).unwrap();
        s.sync().unwrap();
        let b = s.resolve(&second).unwrap();
        // The file as a power cut would leave it: the second batch was committed, not synced.
        std::fs::copy(&path, &crashed).unwrap();
        drop(s);

        let s = EmbeddedIdentityStore::open(&crashed, Policy::default()).unwrap();
        s.ready().unwrap();
        assert!(
            s.explain(&person(&b[1]).lead_id).unwrap().is_none(),
            "the unsynced batch is gone"
        );
        assert_eq!(
            s.resolve(&first).unwrap(),
            a,
            "synced events replay as resolved"
        );
        assert_eq!(
            s.resolve(&second).unwrap(),
            b,
            "lost events resolve again to the lead ids already published"
        );
    }

    #[test]
    fn identities_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.redb");
        let policy = Policy::new(&IdentitySettings::default());
        let first = EmbeddedIdentityStore::open(&path, policy.clone())
            .unwrap()
            .resolve(&[req("e1", &[(EMAIL, "a@b.cn")])])
            .unwrap();
        let s = EmbeddedIdentityStore::open(&path, policy.clone()).unwrap();
        let again = s.resolve(&[req("e2", &[(EMAIL, "a@b.cn")])]).unwrap();
        assert_eq!(person(&again[0]).lead_id, person(&first[0]).lead_id);
        assert!(matches!(
            EmbeddedIdentityStore::open(&path, policy),
            Err(IdentityError::Locked(_))
        ));
    }
}
