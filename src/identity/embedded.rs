//! The embedded identity store: one redb file under the data directory, or memory for dry runs.
//! Each batch of events is one write transaction; the algorithm is [`super::resolve`].

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, Table, TableDefinition};
use serde::de::DeserializeOwned;

use super::resolve::{
    self, Cluster, Graph, GraphRead, KeyLinks, Member, Person, Resolution, decode, encode,
};
use super::{IdentityError, IdentityRequest, IdentityStore, Policy};
use crate::lead::IdentityOutcome;

/// `"phone:+86..."` -> the people it links (JSON [`KeyLinks`]).
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
/// lead_id -> the person (JSON [`Person`]); an absorbed lead_id says where it went.
const PEOPLE: TableDefinition<&str, &[u8]> = TableDefinition::new("people");
/// event_id -> the member record of its person (JSON [`Member`]). Keyed by the time-ordered
/// event id, so writes append; a person lists its recent event ids ([`Person::events`]).
const MEMBERS: TableDefinition<&str, &[u8]> = TableDefinition::new("member_events");
/// event_id -> its outcome, so that a replayed event resolves the same way.
const OUTCOMES: TableDefinition<&str, &[u8]> = TableDefinition::new("outcomes");
/// connector + platform lead id -> the first event that carried it.
const SOURCES: TableDefinition<&str, &str> = TableDefinition::new("sources");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub struct EmbeddedIdentityStore {
    db: Database,
    policy: Policy,
}

fn storage(e: impl Into<redb::Error>) -> IdentityError {
    IdentityError::Storage(e.into().to_string())
}

impl EmbeddedIdentityStore {
    pub fn open(path: &Path, policy: Policy) -> Result<Self, IdentityError> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                IdentityError::Locked(path.display().to_string())
            }
            other => storage(other),
        })?;
        Ok(Self { db, policy })
    }

    /// A store that lives in memory only (for `import --dry-run`).
    pub fn in_memory(policy: Policy) -> Result<Self, IdentityError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(storage)?;
        Ok(Self { db, policy })
    }
}

/// A JSON entry of a table, if present.
fn get_json<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>, IdentityError> {
    match table.get(key).map_err(storage)? {
        Some(v) => decode(v.value()).map(Some),
        None => Ok(None),
    }
}

fn members_of(
    people: &impl ReadableTable<&'static str, &'static [u8]>,
    members: &impl ReadableTable<&'static str, &'static [u8]>,
    lead_id: &str,
) -> Result<Vec<Member>, IdentityError> {
    let Some(person) = get_json::<Person>(people, lead_id)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(person.events.len());
    for event in &person.events {
        out.extend(get_json(members, event)?);
    }
    Ok(out)
}

/// The tables an explanation (and the resolver) reads.
struct View<K, P, M> {
    keys: K,
    people: P,
    members: M,
}

impl<K, P, M> GraphRead for View<K, P, M>
where
    K: ReadableTable<&'static str, &'static [u8]>,
    P: ReadableTable<&'static str, &'static [u8]>,
    M: ReadableTable<&'static str, &'static [u8]>,
{
    fn person(&mut self, lead_id: &str) -> Result<Option<Person>, IdentityError> {
        get_json(&self.people, lead_id)
    }

    fn key(&mut self, key: &str) -> Result<KeyLinks, IdentityError> {
        Ok(get_json(&self.keys, key)?.unwrap_or_default())
    }

    fn members(&mut self, lead_id: &str) -> Result<Vec<Member>, IdentityError> {
        members_of(&self.people, &self.members, lead_id)
    }
}

type Bytes = &'static [u8];
/// The writer's view: tables of a write transaction.
type WriteView<'t> = View<
    Table<'t, &'static str, Bytes>,
    Table<'t, &'static str, Bytes>,
    Table<'t, &'static str, Bytes>,
>;

/// The tables of one write transaction.
struct Txn<'t> {
    view: WriteView<'t>,
    outcomes: Table<'t, &'static str, &'static [u8]>,
    sources: Table<'t, &'static str, &'static str>,
    order: u64,
}

impl GraphRead for Txn<'_> {
    fn person(&mut self, lead_id: &str) -> Result<Option<Person>, IdentityError> {
        self.view.person(lead_id)
    }

    fn key(&mut self, key: &str) -> Result<KeyLinks, IdentityError> {
        self.view.key(key)
    }

    fn members(&mut self, lead_id: &str) -> Result<Vec<Member>, IdentityError> {
        self.view.members(lead_id)
    }
}

impl Graph for Txn<'_> {
    fn outcome(&mut self, event_id: &str) -> Result<Option<IdentityOutcome>, IdentityError> {
        get_json(&self.outcomes, event_id)
    }

    fn put_outcome(&mut self, event_id: &str, o: &IdentityOutcome) -> Result<(), IdentityError> {
        self.outcomes
            .insert(event_id, encode(o).as_slice())
            .map_err(storage)?;
        Ok(())
    }

    fn claim_source(&mut self, key: &str, event_id: &str) -> Result<String, IdentityError> {
        if let Some(first) = self.sources.get(key).map_err(storage)? {
            return Ok(first.value().to_owned());
        }
        self.sources.insert(key, event_id).map_err(storage)?;
        Ok(event_id.to_owned())
    }

    fn put_key(&mut self, key: &str, links: &KeyLinks) -> Result<(), IdentityError> {
        self.view
            .keys
            .insert(key, encode(links).as_slice())
            .map_err(storage)?;
        Ok(())
    }

    fn put_person(&mut self, lead_id: &str, p: &Person) -> Result<(), IdentityError> {
        self.view
            .people
            .insert(lead_id, encode(p).as_slice())
            .map_err(storage)?;
        Ok(())
    }

    fn add_member(&mut self, _lead_id: &str, m: &Member) -> Result<(), IdentityError> {
        self.view
            .members
            .insert(m.event_id.as_str(), encode(m).as_slice())
            .map_err(storage)?;
        Ok(())
    }

    fn next_order(&mut self) -> Result<u64, IdentityError> {
        self.order += 1;
        Ok(self.order)
    }
}

impl IdentityStore for EmbeddedIdentityStore {
    fn resolve(&self, requests: &[IdentityRequest]) -> Result<Vec<Resolution>, IdentityError> {
        let txn = self.db.begin_write().map_err(storage)?;
        let out = {
            let mut meta = txn.open_table(META).map_err(storage)?;
            let order = meta
                .get("people")
                .map_err(storage)?
                .map(|v| v.value())
                .unwrap_or(0);
            let mut g = Txn {
                view: View {
                    keys: txn.open_table(KEYS).map_err(storage)?,
                    people: txn.open_table(PEOPLE).map_err(storage)?,
                    members: txn.open_table(MEMBERS).map_err(storage)?,
                },
                outcomes: txn.open_table(OUTCOMES).map_err(storage)?,
                sources: txn.open_table(SOURCES).map_err(storage)?,
                order,
            };
            let out = requests
                .iter()
                .map(|r| resolve::resolve(&mut g, r, &self.policy))
                .collect::<Result<Vec<_>, _>>()?;
            meta.insert("people", g.order).map_err(storage)?;
            out
        };
        txn.commit().map_err(storage)?;
        Ok(out)
    }

    fn explain(&self, lead_id: &str) -> Result<Option<Cluster>, IdentityError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let people = match txn.open_table(PEOPLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(storage(e)),
        };
        let mut g = View {
            people,
            keys: txn.open_table(KEYS).map_err(storage)?,
            members: txn.open_table(MEMBERS).map_err(storage)?,
        };
        resolve::explain(&mut g, lead_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
