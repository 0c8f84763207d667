//! A person's explanation: its events (and those of everyone merged into it) read back from
//! the log, and the profile, sources and merges derived from them.

use std::collections::{BTreeSet, HashSet};

use hashbrown::HashMap;
use redb::ReadableTable;

use crate::identity::IdentityError;
use crate::identity::resolve::{
    Cluster, ClusterKey, EVENTS_KEPT, Member, MergeRef, ProfileValue, lead_text,
};

use super::index::*;
use super::log::*;

/// The person at `root`: its own events and those of everyone merged into it, newest first per
/// lead id; the profile (the newest value of each field), the sources and the merges are derived
/// from all of them, the members listed are each lead id's latest [`EVENTS_KEPT`].
pub(super) fn explain(
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
