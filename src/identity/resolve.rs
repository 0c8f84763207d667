//! The identity algorithm, written once against [`Graph`]: the reads and writes of one store
//! transaction. Each store (embedded, MySQL) implements `Graph`; none of them decides anything.

use std::collections::{BTreeMap, BTreeSet};

use pinyin::ToPinyin;
use serde::{Deserialize, Serialize};

use super::{IdentityError, IdentityKey, IdentityRequest, Policy, Traits};
use crate::lead::{IdentityOutcome, IdentityStatus};

/// How many recent names, companies and cities a person keeps for fuzzy support.
const TRAITS_KEPT: usize = 4;

/// What resolving one event gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "resolution")]
pub enum Resolution {
    /// The event belongs to this person.
    Person(IdentityOutcome),
    /// The platform redelivered a lead already ingested as `first_event_id`: no new event.
    Duplicate { first_event_id: String },
    /// A rejected lead: no person.
    Unresolved,
}

/// The people a key links, and whether it stopped identifying (linked to too many people).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyLinks {
    pub people: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
}

/// The newest value of a contact field, and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileValue {
    pub value: String,
    pub connector: String,
    pub event_id: String,
    pub at: String,
}

/// One merge this person went through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeRef {
    pub merged_lead_ids: Vec<String>,
    pub event_id: String,
    pub at: String,
}

/// A person: stored under each of its lead ids; an absorbed one only says where it went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Person {
    /// Creation order: the lowest survives a merge.
    pub order: u64,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    /// Key values by kind.
    #[serde(default)]
    pub keys: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub companies: Vec<String>,
    #[serde(default)]
    pub cities: Vec<String>,
    /// Per-field survivorship: the newest value of each contact field.
    #[serde(default)]
    pub profile: BTreeMap<String, ProfileValue>,
    /// Events per connector: the history of sources.
    #[serde(default)]
    pub sources: BTreeMap<String, u64>,
    #[serde(default)]
    pub merges: Vec<MergeRef>,
    /// The most recent member events resolved to this lead id ([`EVENTS_KEPT`] at most; the
    /// members of ids merged into it stay listed under those ids).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
}

/// How many member event ids a lead id lists.
pub const EVENTS_KEPT: usize = 200;

/// A member event of a person, as the explanation lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub event_id: String,
    pub lead_id: String,
    pub connector: String,
    pub at: String,
    pub status: IdentityStatus,
    pub matched_on: Vec<String>,
}

/// A key of a person, as the explanation lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterKey {
    pub kind: String,
    pub value: String,
    /// Linked to more people than allowed: it no longer joins anyone.
    pub shared: bool,
}

/// `GET /v1/leads/{lead_id}`: why these records are one person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    pub lead_id: String,
    /// The id asked for, when it was merged into `lead_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_lead_id: Option<String>,
    pub created_at: String,
    pub keys: Vec<ClusterKey>,
    pub profile: BTreeMap<String, ProfileValue>,
    pub sources: BTreeMap<String, u64>,
    pub merges: Vec<MergeRef>,
    pub members: Vec<Member>,
    pub names: Vec<String>,
}

/// The reads the resolver needs.
pub trait GraphRead {
    fn person(&mut self, lead_id: &str) -> Result<Option<Person>, IdentityError>;
    fn key(&mut self, key: &str) -> Result<KeyLinks, IdentityError>;
    /// How [`Person::keys`] holds a key's value in this store. The value itself unless the store
    /// keeps only a digest of it; the resolver compares and counts values through this only.
    fn token(&self, key: &IdentityKey) -> String {
        key.value.clone()
    }
}

/// The reads and writes of one store transaction.
pub trait Graph: GraphRead {
    fn outcome(&mut self, event_id: &str) -> Result<Option<IdentityOutcome>, IdentityError>;
    fn put_outcome(&mut self, event_id: &str, o: &IdentityOutcome) -> Result<(), IdentityError>;
    /// The event a source key was first seen with; records it for `event_id` when unseen.
    fn claim_source(&mut self, key: &str, event_id: &str) -> Result<String, IdentityError>;
    fn put_key(&mut self, key: &str, links: &KeyLinks) -> Result<(), IdentityError>;
    fn put_person(&mut self, lead_id: &str, p: &Person) -> Result<(), IdentityError>;
    /// Records that `req`'s event is a member of `m.lead_id`.
    fn add_member(&mut self, m: Member, req: &IdentityRequest) -> Result<(), IdentityError>;
    fn next_order(&mut self) -> Result<u64, IdentityError>;
    /// Whether [`Person`] carries its history (profile, sources, merges, recent events) for
    /// explanations. A store that derives the history from its member events says no, and the
    /// resolver does not build it.
    fn keeps_history(&self) -> bool {
        true
    }
}

/// Follows merges to the person that absorbed `lead_id`.
pub fn root<G: GraphRead>(
    g: &mut G,
    lead_id: &str,
) -> Result<Option<(String, Person)>, IdentityError> {
    let mut id = lead_id.to_owned();
    for _ in 0..64 {
        let Some(p) = g.person(&id)? else {
            return Ok(None);
        };
        match p.merged_into.clone() {
            Some(next) => id = next,
            None => return Ok(Some((id, p))),
        }
    }
    Err(IdentityError::Storage(format!(
        "merge chain of {lead_id} is longer than 64"
    )))
}

/// The people `keys` link, each followed to the person it was merged into, each once.
#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
pub fn find<G: GraphRead>(g: &mut G, keys: &[IdentityKey]) -> Result<Vec<String>, IdentityError> {
    let mut found = Vec::new();
    for key in keys {
        for id in g.key(&key.name())?.people {
            if let Some((root_id, _)) = root(g, &id)?
                && !found.contains(&root_id)
            {
                found.push(root_id);
            }
        }
    }
    Ok(found)
}

/// A key of the event: its links as stored and as they will be (written only when they differ),
/// and the people they led to before this event.
struct Link<'r> {
    key: &'r IdentityKey,
    name: String,
    /// The value as the person holds it ([`GraphRead::token`]).
    token: String,
    stored: KeyLinks,
    links: KeyLinks,
    roots: Vec<String>,
}

struct Candidate {
    lead_id: String,
    person: Person,
    via: BTreeSet<String>,
}

/// Resolves one event (see the module docs of `identity` for the layers).
pub fn resolve<G: Graph>(
    g: &mut G,
    req: &IdentityRequest,
    policy: &Policy,
) -> Result<Resolution, IdentityError> {
    if let Some(o) = g.outcome(&req.event_id)? {
        return Ok(Resolution::Person(o));
    }
    if let Some(source) = &req.source_key {
        let first = g.claim_source(source, &req.event_id)?;
        if first != req.event_id {
            return Ok(Resolution::Duplicate {
                first_event_id: first,
            });
        }
    }
    if !req.resolve {
        return Ok(Resolution::Unresolved);
    }

    // Layer 2: the people each key links, skipping keys that stopped identifying.
    let mut links: Vec<Link<'_>> = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    for key in &req.keys {
        let name = key.name();
        let stored = g.key(&name)?;
        let mut l = stored.clone();
        let mut roots = Vec::new();
        for id in &l.people {
            if let Some((root_id, person)) = root(g, id)?
                && !roots.iter().any(|(r, _)| *r == root_id)
            {
                roots.push((root_id, person));
            }
        }
        if roots.len() > policy.max_people(&key.kind) {
            l.shared = true;
        }
        let root_ids: Vec<String> = roots.iter().map(|(r, _)| r.clone()).collect();
        if !l.shared {
            for (root_id, person) in roots {
                match candidates.iter_mut().find(|c| c.lead_id == root_id) {
                    Some(c) => {
                        c.via.insert(key.kind.clone());
                    }
                    None => candidates.push(Candidate {
                        lead_id: root_id,
                        person,
                        via: BTreeSet::from([key.kind.clone()]),
                    }),
                }
            }
        }
        links.push(Link {
            key,
            name,
            token: g.token(key),
            stored,
            links: l,
            roots: root_ids,
        });
    }
    candidates.sort_by_key(|c| c.person.order);

    // Layer 3: join candidates oldest first while the joined person stays within the per-kind
    // limits; layer 4: a candidate over the limit may still join when its name agrees and its
    // company or city does too.
    let mut joined_keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Only candidates need them: a new person, the most common case, builds nothing.
    if !candidates.is_empty() {
        for l in &links {
            joined_keys
                .entry(l.key.kind.clone())
                .or_default()
                .insert(l.token.clone());
        }
    }
    let mut accepted: Vec<Candidate> = Vec::new();
    let mut matched_on: BTreeSet<String> = BTreeSet::new();
    let mut supported_by: BTreeSet<String> = BTreeSet::new();
    for c in candidates {
        let mut union = joined_keys.clone();
        for (kind, values) in &c.person.keys {
            union
                .entry(kind.clone())
                .or_default()
                .extend(values.iter().cloned());
        }
        let within = |slack: usize| {
            union
                .iter()
                .all(|(kind, v)| v.len() <= policy.max_values(kind) * slack)
        };
        // Both sides bring a different value of some kind (another email, another phone): then
        // the names, where both are known, must not say these are two people.
        let conflicting = union.iter().any(|(kind, v)| {
            let mine = joined_keys.get(kind).map_or(0, BTreeSet::len);
            let theirs = c.person.keys.get(kind).map_or(0, Vec::len);
            mine > 0 && theirs > 0 && v.len() > mine.max(theirs)
        });
        let ok = if conflicting && names_disagree(&req.traits, &c.person) {
            false
        } else if within(1) {
            true
        } else {
            let support = support(&req.traits, &c.person, policy.name_similarity);
            let ok = !support.is_empty() && within(2);
            if ok {
                supported_by.extend(support.iter().map(|s| (*s).to_owned()));
            }
            ok
        };
        if ok {
            joined_keys = union;
            matched_on.extend(c.via.iter().cloned());
            accepted.push(c);
        }
    }

    let (lead_id, mut person, status, absorbed) = if accepted.is_empty() {
        let id = lead_text(new_lead_id(&req.event_id));
        let person = Person {
            order: g.next_order()?,
            created_at: req.received_at.clone(),
            ..Person::default()
        };
        (id, person, IdentityStatus::New, Vec::new())
    } else {
        let mut accepted = accepted.into_iter();
        let survivor = accepted.next().expect("one accepted");
        let rest: Vec<Candidate> = accepted.collect();
        let status = if rest.is_empty() {
            IdentityStatus::Matched
        } else {
            IdentityStatus::Merged
        };
        (survivor.lead_id, survivor.person, status, rest)
    };

    let mut merged_lead_ids = Vec::new();
    for c in absorbed {
        absorb(&mut person, c.person.clone());
        g.put_person(
            &c.lead_id,
            &Person {
                merged_into: Some(lead_id.clone()),
                order: c.person.order,
                created_at: c.person.created_at,
                events: c.person.events,
                ..Person::default()
            },
        )?;
        merged_lead_ids.push(c.lead_id);
    }
    let history = g.keeps_history();
    if history && !merged_lead_ids.is_empty() {
        person.merges.push(MergeRef {
            merged_lead_ids: merged_lead_ids.clone(),
            event_id: req.event_id.clone(),
            at: req.received_at.clone(),
        });
    }

    // Link the keys to the person; a key now linking more people than allowed stops identifying.
    for Link {
        key,
        name,
        token,
        stored,
        links: mut l,
        roots,
    } in links
    {
        // A shared key's list stops growing: it joins no one any more.
        if !l.shared && !l.people.contains(&lead_id) {
            // The people it linked, as they are after this event's merges.
            let mut linked: BTreeSet<String> = roots
                .into_iter()
                .map(|r| {
                    if merged_lead_ids.contains(&r) {
                        lead_id.clone()
                    } else {
                        r
                    }
                })
                .collect();
            if !linked.contains(&lead_id) {
                l.people.push(lead_id.clone());
                linked.insert(lead_id.clone());
            }
            if linked.len() > policy.max_people(&key.kind) {
                l.shared = true;
            }
        }
        if l != stored {
            g.put_key(&name, &l)?;
        }
        let values = person.keys.entry(key.kind.clone()).or_default();
        if !values.contains(&token) {
            values.push(token);
        }
    }
    remember(&mut person, &req.traits);
    for (field, value) in req.profile.iter().filter(|_| history) {
        let newer = person
            .profile
            .get(field)
            .is_none_or(|old| old.at <= req.received_at);
        if newer {
            person.profile.insert(
                field.clone(),
                ProfileValue {
                    value: value.clone(),
                    connector: req.connector.clone(),
                    event_id: req.event_id.clone(),
                    at: req.received_at.clone(),
                },
            );
        }
    }
    if history {
        *person.sources.entry(req.connector.clone()).or_default() += 1;
        person.events.push(req.event_id.clone());
        if person.events.len() > EVENTS_KEPT {
            person.events.remove(0);
        }
    }
    g.put_person(&lead_id, &person)?;

    let matched_on: Vec<String> = matched_on.into_iter().collect();
    g.add_member(
        Member {
            event_id: req.event_id.clone(),
            lead_id: lead_id.clone(),
            connector: req.connector.clone(),
            at: req.received_at.clone(),
            status,
            matched_on: matched_on.clone(),
        },
        req,
    )?;
    let outcome = IdentityOutcome {
        lead_id,
        status,
        matched_on,
        supported_by: supported_by.into_iter().collect(),
        merged_lead_ids,
    };
    g.put_outcome(&req.event_id, &outcome)?;
    Ok(Resolution::Person(outcome))
}

/// The lead id of a person founded by `event_id`: the same on every replay of the event, so a store
/// that loses its last unsynced batches in a crash gives the replayed events the ids already
/// published. A version 7 UUID: the founding event's timestamp when its id is one (leadgate's event
/// ids are), then the event id's SHA-1 (as in a version 5 UUID) for the other bits.
pub fn new_lead_id(event_id: &str) -> uuid::Uuid {
    let digest = uuid::Uuid::new_v5(&LEAD_ID_NAMESPACE, event_id.as_bytes());
    let mut bytes = *digest.as_bytes();
    if let Ok(event) = uuid::Uuid::parse_str(event_id)
        && event.get_version_num() == 7
    {
        bytes[..6].copy_from_slice(&event.as_bytes()[..6]);
    }
    uuid::Builder::from_bytes(bytes)
        .with_version(uuid::Version::SortRand)
        .into_uuid()
}

/// A lead id as text.
pub use crate::lead::uuid_text as lead_text;

/// The namespace of [`new_lead_id`]'s digests.
const LEAD_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6c65_6164_6761_7465_8000_6c65_6164_5f69);

/// Folds an absorbed person into the survivor: keys, traits, sources, merges, and each profile
/// field where the absorbed value is newer.
fn absorb(into: &mut Person, from: Person) {
    for (kind, values) in from.keys {
        let mine = into.keys.entry(kind).or_default();
        for v in values {
            if !mine.contains(&v) {
                mine.push(v);
            }
        }
    }
    remember_all(&mut into.names, from.names);
    remember_all(&mut into.companies, from.companies);
    remember_all(&mut into.cities, from.cities);
    for (field, value) in from.profile {
        match into.profile.get(&field) {
            Some(old) if old.at >= value.at => {}
            _ => {
                into.profile.insert(field, value);
            }
        }
    }
    for (source, n) in from.sources {
        *into.sources.entry(source).or_default() += n;
    }
    into.merges.extend(from.merges);
}

fn remember(p: &mut Person, t: &Traits) {
    remember_all(&mut p.names, t.name.clone());
    remember_all(&mut p.companies, t.company.clone());
    remember_all(&mut p.cities, t.city.clone());
}

/// Keeps the most recent distinct values, newest last.
fn remember_all(list: &mut Vec<String>, new: impl IntoIterator<Item = String>) {
    for v in new {
        list.retain(|x| *x != v);
        list.push(v);
        if list.len() > TRAITS_KEPT {
            list.remove(0);
        }
    }
}

/// What supports joining `person`: a similar name (Jaro-Winkler, across scripts through pinyin)
/// together with the same company key or city. Empty when the name alone is all there is.
fn support(t: &Traits, person: &Person, threshold: f64) -> Vec<&'static str> {
    let Some(name) = &t.name else {
        return Vec::new();
    };
    if !person
        .names
        .iter()
        .any(|n| name_similarity(name, n) >= threshold)
    {
        return Vec::new();
    }
    let mut also = Vec::new();
    if t.company
        .as_ref()
        .is_some_and(|c| person.companies.contains(c))
    {
        also.push("company");
    }
    if t.city.as_ref().is_some_and(|c| person.cities.contains(c)) {
        also.push("city");
    }
    if also.is_empty() {
        return also;
    }
    also.insert(0, "name");
    also
}

/// Both names are known and no name of the person is even close (below 0.7): a conflicting key
/// then joins two different people, as when colleagues type a receptionist's mobile. A surname
/// with a form of address (`张先生`, `王总`) is close to every name with that surname.
fn names_disagree(t: &Traits, person: &Person) -> bool {
    match &t.name {
        Some(name) if !person.names.is_empty() => person.names.iter().all(|n| {
            !same_surname_address(name, n)
                && !same_surname_address(n, name)
                && name_similarity(name, n) < 0.7
        }),
        _ => false,
    }
}

/// `addressed` is a surname plus a form of address, and `name` has that surname.
fn same_surname_address(addressed: &str, name: &str) -> bool {
    const ADDRESS: &[&str] = &["先生", "女士", "小姐", "老师", "经理", "总"];
    ADDRESS.iter().any(|a| {
        addressed
            .strip_suffix(a)
            .is_some_and(|surname| !surname.is_empty() && name.starts_with(surname))
    })
}

/// Jaro-Winkler similarity of two name keys: character by character when both are Chinese (or
/// both Latin); a Chinese and a romanized name are compared in pinyin, both ways round (`张三` ~
/// `zhangsan` ~ `sanzhang`).
pub fn name_similarity(a: &str, b: &str) -> f64 {
    let cjk = |s: &str| s.chars().any(crate::normalize::is_cjk);
    if cjk(a) == cjk(b) {
        return strsim::jaro_winkler(a, b);
    }
    let (pa, pb) = (romanize(a), romanize(b));
    let plain = |s: &str| s.replace(' ', "");
    let swapped = |p: &str, other: &str| match p.split_once(' ') {
        Some((first, rest)) => strsim::jaro_winkler(&format!("{}{first}", plain(rest)), other),
        None => 0.0,
    };
    strsim::jaro_winkler(&plain(&pa), &plain(&pb))
        .max(swapped(&pa, &plain(&pb)))
        .max(swapped(&pb, &plain(&pa)))
}

/// A name key as plain pinyin syllables when it has Chinese characters (`张三` → `zhang san`).
fn romanize(s: &str) -> String {
    if !s.chars().any(crate::normalize::is_cjk) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() * 3);
    for (c, py) in s.chars().zip(s.to_pinyin()) {
        if !out.is_empty() {
            out.push(' ');
        }
        match py {
            Some(p) => out.push_str(p.plain()),
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_ids_derive_from_the_founding_event() {
        let event = uuid::Uuid::now_v7().to_string();
        let id = new_lead_id(&event);
        assert_eq!(id, new_lead_id(&event), "the same on every replay");
        assert_eq!(id.get_version_num(), 7);
        assert_eq!(
            id.as_bytes()[..6],
            uuid::Uuid::parse_str(&event).unwrap().as_bytes()[..6]
        );
        assert_ne!(id.to_string(), event);
        assert_ne!(new_lead_id("e1"), new_lead_id("e2"));
        assert_eq!(new_lead_id("e1").get_version_num(), 7);
    }

    #[test]
    fn names_compare_across_scripts() {
        assert!(name_similarity("张三", "zhangsan") > 0.95);
        assert!(name_similarity("张三", "sanzhang") > 0.95);
        assert!(name_similarity("张三", "张三") == 1.0);
        assert!(name_similarity("张三", "李四") < 0.7);
        assert!(name_similarity("marylee", "maryli") > 0.9);
        assert!(name_similarity("罗军", "罗华婷") < 0.7);
        assert!(same_surname_address("张先生", "张三"));
        assert!(!same_surname_address("张先生", "李四"));
    }
}
