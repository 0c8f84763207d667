//! The matching index in memory: people and keys as compact entries in hash tables of
//! digests, rebuilt from the log on open by applying each entry's writes.

use std::collections::VecDeque;

use hashbrown::{HashMap, HashTable};
use uuid::Uuid;

use crate::identity::IdentityError;
use crate::identity::resolve::{KeyLinks, Person, lead_text};

use super::log::*;

/// How many of the latest events a replay is answered for (as first resolved) from the index.
/// Events come again only while their journal acknowledgement is pending: the delivery loop holds
/// at most 5,000 delivered events plus one batch (at most 10,000) unacknowledged at a time.
pub(super) const RECENT: usize = 100_000;

/// A person in memory: about 64 bytes, plus its key ids and packed traits.
#[derive(Debug)]
pub(super) struct Core {
    /// The newest event resolved to this lead id (its log position), 0 for none.
    pub(super) last_event: u64,
    pub(super) lead_id: [u8; 16],
    /// The person this one was merged into (its index + 1), 0 for none.
    pub(super) merged_into: u32,
    /// Its keys: up to two ids inline ([`NO_KEY`] for none), or [`MANY_KEYS`] and the place of
    /// its list in `Index::lists`.
    pub(super) keys: [u32; 2],
    /// Recent names, companies and cities: see [`pack`].
    pub(super) traits: Box<str>,
}

pub(super) const NO_KEY: u32 = u32::MAX;
pub(super) const MANY_KEYS: u32 = u32::MAX - 1;

/// A key in memory: 28 bytes.
#[derive(Debug)]
pub(super) struct KeyRec {
    pub(super) digest: [u32; 4],
    /// The one person it links (index + 1), or 0.
    pub(super) one: u32,
    /// Its list in `Index::lists` (index + 1) when it links several, or 0.
    pub(super) many: u32,
    pub(super) kind: u8,
    pub(super) shared: bool,
}

/// A vector in chunks of 64Ki elements: growing never copies it, nor holds its old and new
/// buffers at once (a vector of 10 million people would, for a moment, need 1.5 times its size).
pub(super) struct Chunked<T> {
    pub(super) chunks: Vec<Vec<T>>,
    pub(super) len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

pub(super) const CHUNK_BITS: u32 = 16;

impl<T> Chunked<T> {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn push(&mut self, value: T) {
        if self.len.is_multiple_of(1 << CHUNK_BITS) {
            self.chunks.push(Vec::with_capacity(1 << CHUNK_BITS));
        }
        self.chunks
            .last_mut()
            .expect("a chunk with room")
            .push(value);
        self.len += 1;
    }

    pub(super) fn get(&self, i: usize) -> Option<&T> {
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
pub(super) struct Index {
    /// By creation order - 1.
    pub(super) people: Chunked<Core>,
    pub(super) by_lead: HashTable<u32>,
    pub(super) keys: Chunked<KeyRec>,
    pub(super) by_key: HashTable<u32>,
    pub(super) lists: Vec<Box<[u32]>>,
    pub(super) kinds: Vec<String>,
    /// A source key's digest -> the position of the entry of the event that first carried it.
    pub(super) sources: HashMap<Digest, u64>,
    /// The latest [`RECENT`] resolved events: the event id's digest -> the position of its entry.
    pub(super) recent: HashMap<Digest, u64>,
    pub(super) recent_order: VecDeque<Digest>,
    /// The number of the newest batch.
    pub(super) batches: u64,
    /// The newest batch the last snapshot covers (0: none).
    pub(super) snapshot_batches: u64,
    /// The last batch's encoding buffer, reused: a batch is over 100 KiB, and a fresh one each
    /// time would fault its pages in again.
    pub(super) scratch: Vec<u8>,
}

pub(super) fn split(d: Digest) -> [u32; 4] {
    [
        (d >> 96) as u32,
        (d >> 64) as u32,
        (d >> 32) as u32,
        d as u32,
    ]
}

pub(super) fn join([a, b, c, d]: [u32; 4]) -> Digest {
    (u128::from(a) << 96) | (u128::from(b) << 64) | (u128::from(c) << 32) | u128::from(d)
}

pub(super) fn lead_hash(lead: &[u8; 16]) -> u64 {
    u64::from_le_bytes(lead[8..].try_into().expect("8 bytes"))
}

/// Names, companies and cities in one string: lists apart by U+001E, values by U+001F.
pub(super) fn pack(lists: [&[String]; 3]) -> Box<str> {
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

pub(super) fn unpack(packed: &str) -> [Vec<String>; 3] {
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
    pub(super) fn person_at(&self, lead: &Uuid) -> Option<u32> {
        let bytes = lead.as_bytes();
        self.by_lead
            .find(lead_hash(bytes), |&i| {
                self.people[i as usize].lead_id == *bytes
            })
            .copied()
    }

    pub(super) fn key_at(&self, d: Digest) -> Option<u32> {
        let parts = split(d);
        self.by_key
            .find(d as u64, |&k| self.keys[k as usize].digest == parts)
            .copied()
    }

    pub(super) fn lead_of(&self, i: u32) -> Uuid {
        Uuid::from_bytes(self.people[i as usize].lead_id)
    }

    /// Follows merges from person `i` to the one that absorbed it.
    pub(super) fn root_of(&self, mut i: u32) -> u32 {
        for _ in 0..self.people.len() {
            match self.people[i as usize].merged_into {
                0 => break,
                m => i = m - 1,
            }
        }
        i
    }

    pub(super) fn person(&self, i: u32) -> Person {
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

    pub(super) fn keys_of<'c>(&'c self, core: &'c Core) -> &'c [u32] {
        match core.keys {
            [MANY_KEYS, list] => &self.lists[list as usize],
            [NO_KEY, _] => &[],
            [_, NO_KEY] => &core.keys[..1],
            _ => &core.keys,
        }
    }

    /// Puts `ids` in a list of `lists`, the one at `slot` (place + 1) when there is one, and
    /// returns its slot.
    pub(super) fn store_list(&mut self, slot: u32, ids: Vec<u32>) -> Result<u32, IdentityError> {
        if slot != 0 {
            self.lists[slot as usize - 1] = ids.into_boxed_slice();
            return Ok(slot);
        }
        self.lists.push(ids.into_boxed_slice());
        u32::try_from(self.lists.len()).map_err(|_| corrupt("too many lists"))
    }

    pub(super) fn linked(&self, k: u32) -> Vec<u32> {
        let rec = &self.keys[k as usize];
        match (rec.one, rec.many) {
            (0, 0) => Vec::new(),
            (0, m) => self.lists[m as usize - 1].to_vec(),
            (one, _) => vec![one - 1],
        }
    }

    pub(super) fn links(&self, k: u32) -> KeyLinks {
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
    pub(super) fn key_or_new(&mut self, kind: &str, d: Digest) -> Result<u32, IdentityError> {
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

    pub(super) fn lead_index(&self, lead: &Uuid) -> Result<u32, IdentityError> {
        self.person_at(lead)
            .ok_or_else(|| corrupt(format!("unknown lead id {lead}")))
    }

    /// Applies one entry, at log position `pos`: the same code for a new batch and on open.
    pub(super) fn apply(&mut self, e: &Entry, pos: u64) -> Result<(), IdentityError> {
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
