//! Erasing people from the embedded store for good. The log is append-only and redb leaves old
//! pages' bytes in its free space, so taking entries out in place would leave the erased keys in
//! the file. Instead the log is **rewritten**: every batch is copied into a new file with the
//! erased people's entries emptied (the batch numbers and places stay, so survivors' positions
//! are unchanged), their index writes reduced to an anonymous slot (a new random lead id, no keys,
//! names or cities: the people's order stays, which the replay checks) and their lead ids taken
//! out of every key's list. The new file is synced and renamed over the old one; the snapshot
//! is deleted before (it holds the old index) and written again from the new log's index. The
//! old file's blocks go back to the filesystem: no file in the data directory holds them.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use uuid::Uuid;

use super::index::Index;
use super::log::*;
use super::{META, Opened};
use crate::identity::resolve::lead_text;
use crate::identity::{Erased, IdentityError, IdentityKey};

/// Batches copied per transaction of the rewrite.
const BATCHES_PER_COMMIT: usize = 512;

/// Every person in the clusters of `roots`.
fn members(index: &Index, roots: &HashSet<u32>) -> HashSet<u32> {
    if roots.is_empty() {
        return HashSet::new();
    }
    (0..index.people.len() as u32)
        .filter(|&i| roots.contains(&index.root_of(i)))
        .collect()
}

fn roots_of(index: &Index, lead_ids: &[String]) -> HashSet<u32> {
    lead_ids
        .iter()
        .filter_map(|l| Uuid::parse_str(l).ok())
        .filter_map(|u| index.person_at(&u))
        .map(|i| index.root_of(i))
        .collect()
}

/// Calls `f` on every entry of the log, in order.
fn each_entry(
    db: &Database,
    mut f: impl FnMut(Entry) -> Result<(), IdentityError>,
) -> Result<(), IdentityError> {
    let txn = db.begin_read().map_err(storage)?;
    let log = txn.open_table(LOG).map_err(storage)?;
    for item in log.iter().map_err(storage)? {
        let (batch, stored) = item.map_err(storage)?;
        let batch = batch.value();
        let blob = opened(stored.value())?;
        let n = batch_len(&blob).ok_or_else(|| corrupt(format!("batch {batch}")))?;
        for place in 0..n {
            f(decode_entry(&blob, place)
                .ok_or_else(|| corrupt(format!("entry {place} of batch {batch}")))?)?;
        }
    }
    Ok(())
}

pub(super) fn erasable(
    st: &Opened,
    hit: &(dyn Fn(&IdentityKey) -> bool + Sync),
    lead_ids: &[String],
) -> Result<Erased, IdentityError> {
    let index = st.index()?;
    let mut roots = roots_of(&index, lead_ids);
    each_entry(&st.db, |e| {
        if let Some(m) = &e.member
            && m.keys
                .iter()
                .any(|(k, v)| hit(&IdentityKey::new(k, v.as_str())))
            && let Some(i) = index.person_at(&m.lead_id)
        {
            roots.insert(index.root_of(i));
        }
        Ok(())
    })?;
    clusters(st, &index, &roots, true)
}

/// The people of the clusters of `roots`, the events that made them and, `with_keys`, all
/// their keys.
fn clusters(
    st: &Opened,
    index: &Index,
    roots: &HashSet<u32>,
    with_keys: bool,
) -> Result<Erased, IdentityError> {
    let gone = members(index, roots);
    if gone.is_empty() {
        return Ok(Erased::default());
    }
    let mut found = Erased {
        lead_ids: gone.iter().map(|&i| lead_text(index.lead_of(i))).collect(),
        ..Erased::default()
    };
    found.lead_ids.sort();
    let gone_ids: HashSet<Uuid> = gone.iter().map(|&i| index.lead_of(i)).collect();
    let mut keys = HashSet::new();
    each_entry(&st.db, |e| {
        if let Some(m) = &e.member
            && gone_ids.contains(&m.lead_id)
        {
            found.event_ids.push(e.event_id.clone());
            for (k, v) in m.keys.iter().filter(|_| with_keys) {
                if keys.insert((k.clone(), v.clone())) {
                    found.keys.push(IdentityKey::new(k, v.as_str()));
                }
            }
        }
        Ok(())
    })?;
    Ok(found)
}

/// The clusters whose newest event was received before `before`, with their events.
pub(super) fn expired(st: &Opened, before: jiff::Timestamp) -> Result<Erased, IdentityError> {
    let index = st.index()?;
    let mut newest: HashMap<u32, jiff::Timestamp> = HashMap::new();
    each_entry(&st.db, |e| {
        if let Some(m) = &e.member
            && let Some(i) = index.person_at(&m.lead_id)
            && let Ok(at) = m.at.parse::<jiff::Timestamp>()
        {
            let root = index.root_of(i);
            let n = newest.entry(root).or_insert(at);
            *n = (*n).max(at);
        }
        Ok(())
    })?;
    let roots: HashSet<u32> = newest
        .into_iter()
        .filter(|(_, at)| *at < before)
        .map(|(root, _)| root)
        .collect();
    clusters(st, &index, &roots, false)
}

/// An entry without the erased people (`gone`: each one's replacement id).
fn scrub(e: Entry, gone: &HashMap<Uuid, Uuid>, kept_keys: &mut HashSet<Digest>) -> Entry {
    let people = e
        .people
        .into_iter()
        .map(|w| match gone.get(&w.lead_id) {
            Some(anonymous) => PersonWrite {
                lead_id: *anonymous,
                order: w.order,
                merged_into: None,
                keys: Vec::new(),
                names: Vec::new(),
                companies: Vec::new(),
                cities: Vec::new(),
            },
            None => w,
        })
        .collect();
    let keys = e
        .keys
        .into_iter()
        .filter_map(|mut w| {
            w.people.retain(|p| !gone.contains_key(p));
            // A key only the erased people had is left out; one a survivor had before keeps
            // its (now shorter) list.
            if w.people.is_empty() && !kept_keys.contains(&w.key) {
                return None;
            }
            kept_keys.insert(w.key);
            Some(w)
        })
        .collect();
    match &e.member {
        Some(m) if gone.contains_key(&m.lead_id) => Entry {
            event_id: String::new(),
            source: None,
            member: None,
            people,
            keys,
        },
        _ => Entry { people, keys, ..e },
    }
}

/// Writes the log without the people of `lead_ids` (with everyone merged with them) to a new
/// file beside `path`, and renames it over `path`; `false` when none of them is in the store.
/// The caller opens the new file.
pub(super) fn rewrite(
    st: &Opened,
    path: &Path,
    lead_ids: &[String],
) -> Result<bool, IdentityError> {
    let index = st.index()?;
    let gone = members(&index, &roots_of(&index, lead_ids));
    if gone.is_empty() {
        return Ok(false);
    }
    let gone: HashMap<Uuid, Uuid> = gone
        .iter()
        .map(|&i| (index.lead_of(i), Uuid::now_v7()))
        .collect();
    let rewrite = crate::storefile::Rewrite::begin(path).map_err(storage)?;
    {
        let db = &rewrite.db;
        let old = st.db.begin_read().map_err(storage)?;
        let mut txn = db.begin_write().map_err(storage)?;
        crate::storefile::copy_table(&old, &txn, META, |_, _| true).map_err(storage)?;
        let log = old.open_table(LOG).map_err(storage)?;
        let mut kept_keys = HashSet::new();
        let mut buf = Vec::new();
        let mut copied = 0;
        for item in log.iter().map_err(storage)? {
            let (batch, stored) = item.map_err(storage)?;
            let batch = batch.value();
            let blob = opened(stored.value())?;
            let n = batch_len(&blob).ok_or_else(|| corrupt(format!("batch {batch}")))?;
            let mut entries = Vec::with_capacity(n);
            for place in 0..n {
                let e = decode_entry(&blob, place)
                    .ok_or_else(|| corrupt(format!("entry {place} of batch {batch}")))?;
                entries.push(scrub(e, &gone, &mut kept_keys));
            }
            buf = encode_batch(&entries, buf)?;
            txn.open_table(LOG)
                .map_err(storage)?
                .insert(batch, &*sealed(&buf)?)
                .map_err(storage)?;
            copied += 1;
            if copied % BATCHES_PER_COMMIT == 0 {
                txn.set_durability(Durability::None)
                    .map_err(|e| IdentityError::Storage(e.to_string()))?;
                txn.commit().map_err(storage)?;
                txn = db.begin_write().map_err(storage)?;
            }
        }
        txn.open_table(LOG).map_err(storage)?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| IdentityError::Storage(e.to_string()))?;
        txn.commit().map_err(storage)?;
    }
    // The snapshot holds the old index: it goes first, so that a crash from here on replays the
    // log (old or new) whole.
    crate::storefile::remove_if_there(&super::snapshot::path_of(path)).map_err(disk)?;
    rewrite.finish().map_err(disk)?;
    Ok(true)
}

fn disk(e: std::io::Error) -> IdentityError {
    IdentityError::Disk(e.to_string())
}
