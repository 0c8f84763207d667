//! One batch being resolved: the resolver's view of the index plus the batch's own writes,
//! which become the log entries of its events.

use hashbrown::HashMap;
use redb::Table;
use uuid::Uuid;

use crate::identity::resolve::{Graph, GraphRead, KeyLinks, Member, Person, lead_text};
use crate::identity::{IdentityError, IdentityKey, IdentityRequest};
use crate::lead::IdentityOutcome;

use super::index::*;
use super::log::*;

/// One batch being resolved: reads see the index plus this batch's writes; the writes become
/// entries, applied to the index once the batch is committed.
pub(super) struct Batch<'a, 't> {
    pub(super) index: &'a Index,
    pub(super) log: &'a Table<'t, u64, &'static [u8]>,
    /// The batch's writes, as (entry, write) places: an entry is `entries[i]`, or `current`
    /// at `entries.len()`.
    pub(super) people: HashMap<Uuid, (usize, usize)>,
    pub(super) keys: HashMap<Digest, (usize, usize)>,
    pub(super) sources: HashMap<Digest, String>,
    /// The entries of the events resolved in this batch, by event id.
    pub(super) outcomes: HashMap<Digest, usize>,
    pub(super) last_event: HashMap<Uuid, u64>,
    pub(super) order: u64,
    pub(super) entries: Vec<Entry>,
    pub(super) current: Entry,
}

impl Batch<'_, '_> {
    /// The log position the current event's entry will have.
    pub(super) fn position(&self) -> u64 {
        position(self.index.batches + 1, self.entries.len())
    }

    pub(super) fn entry(&self, i: usize) -> &Entry {
        self.entries.get(i).unwrap_or(&self.current)
    }

    pub(super) fn finish(&mut self) {
        let e = std::mem::take(&mut self.current);
        if e.source.is_some() || e.member.is_some() || !e.people.is_empty() || !e.keys.is_empty() {
            self.entries.push(e);
        }
    }
}

pub(super) fn lead(id: &str) -> Result<Uuid, IdentityError> {
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
                keys.push((kind.clone(), token_digest(t)?));
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
