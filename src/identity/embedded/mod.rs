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
//! The algorithm is [`resolve::resolve`]; [`index`] keeps the index, [`log`] the entries,
//! [`batch`] a batch being resolved and [`explain`] the explanations; this file the store.

mod batch;
mod erase;
mod explain;
mod index;
mod log;
pub mod scratch;
mod snapshot;

use std::path::{Path, PathBuf};

use crate::reopen::Reopening;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use hashbrown::HashMap;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use uuid::Uuid;

use super::resolve::{self, Cluster, Resolution, lead_text};
use super::{IdentityError, IdentityKey, IdentityRequest, IdentityStore, Policy};

use batch::*;
use explain::*;
use index::*;
use log::*;

/// redb's page cache. The log is appended and read back only for explanations and replays; the
/// index lives in memory.
const CACHE_BYTES: usize = 64 << 20;
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The layout of this file. Format 1 (leadgate before 0.5) kept people and keys in B-trees.
const FORMAT: u64 = 2;

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
    /// Where the index's snapshots go (`None` in memory).
    snapshot: Option<PathBuf>,
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

    fn load(
        db: Database,
        background: bool,
        snapshot: Option<PathBuf>,
    ) -> Result<Self, IdentityError> {
        check_format(&db)?;
        let db = Arc::new(db);
        let index = Arc::new(OnceLock::new());
        let rebuild = {
            let (db, index, snapshot) = (db.clone(), index.clone(), snapshot.clone());
            move || {
                let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    rebuild(&db, snapshot.as_deref())
                }))
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
        Ok(Self {
            db,
            index,
            snapshot,
        })
    }

    /// Writes a snapshot of `index` (synced: every batch it holds is durable) when `due` says
    /// so; a failure is logged, not returned (the log still has everything).
    fn snapshot_if(&self, index: &mut Index, due: impl Fn(u64) -> bool) {
        let Some(path) = &self.snapshot else { return };
        if !due(index.batches - index.snapshot_batches) {
            return;
        }
        let started = std::time::Instant::now();
        match snapshot::write(index, path) {
            Ok(()) => {
                index.snapshot_batches = index.batches;
                tracing::info!(
                    people = index.people.len(),
                    batches = index.batches,
                    seconds = started.elapsed().as_secs_f64(),
                    "identity index snapshot written"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot write the identity index snapshot; the next start replays more of the log")
            }
        }
    }
}

/// Batches (of up to 500 leads each) after which an idle gateway writes a snapshot
/// ([`IdentityStore::maintain`]): a restart then replays at most about a million leads of log.
const SNAPSHOT_BATCHES: u64 = 2_000;
/// Under sustained load a sync writes one after this many (about 4 million leads), so that
/// the pauses it takes stay rare.
const BUSY_SNAPSHOT_BATCHES: u64 = 8_000;

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
        let opened = Opened::load(open_file(path)?, true, Some(snapshot::path_of(path)))?;
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
            opened: Reopening::new(
                "identity store (memory)".into(),
                Opened::load(db, false, None)?,
            ),
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
            Opened::load(db, false, Some(snapshot::path_of(path)))
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
fn rebuild(db: &Database, snapshot: Option<&Path>) -> Result<Index, IdentityError> {
    let started = std::time::Instant::now();
    let mut index = match snapshot.map(snapshot::read) {
        Some(Ok(Some(index))) => {
            tracing::info!(
                people = index.people.len(),
                batches = index.batches,
                seconds = started.elapsed().as_secs_f64(),
                "identity index read from its snapshot"
            );
            index
        }
        Some(Err(e)) => {
            tracing::warn!(error = %e, "the identity index snapshot cannot be read; replaying the whole log");
            Index::default()
        }
        _ => Index::default(),
    };
    index.snapshot_batches = index.batches;
    {
        let read = db.begin_read().map_err(storage)?;
        let log = read.open_table(LOG).map_err(storage)?;
        let last = log.last().map_err(storage)?.map_or(0, |(k, _)| k.value());
        if index.batches > last {
            tracing::warn!(
                snapshot = index.batches,
                log = last,
                "the identity index snapshot is ahead of the log; replaying the whole log"
            );
            index = Index::default();
        }
        for item in log.range(index.batches + 1..).map_err(storage)? {
            let (batch, stored) = item.map_err(storage)?;
            let batch = batch.value();
            let blob = opened(stored.value())?;
            let n = batch_len(&blob).ok_or_else(|| corrupt(format!("batch {batch}")))?;
            for place in 0..n {
                let e = decode_entry(&blob, place)
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

    fn find(&self, keys: &[IdentityKey]) -> Result<Vec<String>, IdentityError> {
        self.with(|st| {
            if st.index.get().is_none() {
                return Err(IdentityError::Storage(
                    "the identity index is still being rebuilt from the log".into(),
                ));
            }
            let index = st.index()?;
            let mut found = Vec::new();
            for key in keys {
                let Some(k) = index.key_at(key_digest(key)) else {
                    continue;
                };
                for person in index.linked(k) {
                    let lead = lead_text(index.lead_of(index.root_of(person)));
                    if !found.contains(&lead) {
                        found.push(lead);
                    }
                }
            }
            Ok(found)
        })
    }

    fn sync(&self) -> Result<(), IdentityError> {
        // Under sustained load a snapshot only now and then (it holds the index meanwhile);
        // idle gateways write one sooner, in `maintain`.
        self.durable_then(false, |since| since >= BUSY_SNAPSHOT_BATCHES)
    }

    fn maintain(&self) -> Result<(), IdentityError> {
        self.durable_then(true, |since| since >= SNAPSHOT_BATCHES)
    }

    fn close(&self) -> Result<(), IdentityError> {
        self.durable_then(true, |since| since > 0)
    }

    fn erasable(
        &self,
        hit: &(dyn Fn(&IdentityKey) -> bool + Sync),
        lead_ids: &[String],
    ) -> Result<super::Erased, IdentityError> {
        self.with(|st| erase::erasable(st, hit, lead_ids))
    }

    fn expired(&self, before: jiff::Timestamp) -> Result<super::Erased, IdentityError> {
        self.with(|st| erase::expired(st, before))
    }

    fn erase(&self, lead_ids: &[String]) -> Result<(), IdentityError> {
        let path = self.path.clone().ok_or_else(|| {
            IdentityError::Storage("an identity store in memory keeps nothing to erase".into())
        })?;
        self.with(|st| {
            if !erase::rewrite(st, &path, lead_ids)? {
                return Ok(());
            }
            let opened = Opened::load(open_file(&path)?, false, Some(snapshot::path_of(&path)))?;
            {
                let mut index = opened.index()?;
                opened.snapshot_if(&mut index, |_| true);
            }
            self.opened.replace(opened);
            tracing::info!(
                people = lead_ids.len(),
                "identity store rewritten without the erased people"
            );
            Ok(())
        })
    }
}

impl EmbeddedIdentityStore {
    /// Makes every batch durable (one fsync), then writes a snapshot of the index when `due`
    /// says so of the batches since the last one (only what is durable goes into a snapshot).
    /// With `if_ready`, a store whose index is still being rebuilt is left alone: nothing was
    /// resolved yet.
    fn durable_then(&self, if_ready: bool, due: impl Fn(u64) -> bool) -> Result<(), IdentityError> {
        self.with(|st| {
            if if_ready && st.index.get().is_none() {
                return Ok(());
            }
            let mut index = st.index()?;
            let mut txn = st.db.begin_write().map_err(storage)?;
            txn.set_durability(Durability::Immediate)
                .map_err(|e| IdentityError::Storage(e.to_string()))?;
            txn.commit().map_err(storage)?;
            st.snapshot_if(&mut index, due);
            Ok(())
        })
    }

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
                log.insert(index.batches + 1, &*sealed(&blob)?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lead::IdentityOutcome;

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
    use crate::identity::{EMAIL, IdentityKey, PHONE, Traits};
    use crate::identity::{Erased, IdentitySettings};
    use crate::lead::IdentityStatus;

    pub(super) fn req(event: &str, keys: &[(&str, &str)]) -> IdentityRequest {
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

    /// An erasure by phone takes the person (and the one merged into them) out of the log, the
    /// index and the snapshot, leaving no byte of their keys or names in the files; the others
    /// resolve, explain and survive a reopen as before.
    #[test]
    fn an_erased_person_leaves_nothing_in_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.redb");
        let named = |event: &str, keys: &[(&str, &str)], name: &str| {
            let mut r = req(event, keys);
            r.traits.name = Some(name.into());
            r.profile = keys
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect();
            r
        };
        let (a, b, others) = {
            let s = EmbeddedIdentityStore::open(&path, Policy::default()).unwrap();
            let out = s
                .resolve(&[
                    named("e1", &[(PHONE, "+8613912345678")], "王小明"),
                    named("e2", &[(EMAIL, "wang.xm@corp.cn")], "王小明"),
                    named("e3", &[(PHONE, "+8613800000001")], "李四"),
                ])
                .unwrap();
            let (a, b) = (person(&out[0]).clone(), person(&out[2]).clone());
            // The same person by both keys: the address's person merges into the phone's.
            let both = s
                .resolve(&[named(
                    "e4",
                    &[(PHONE, "+8613912345678"), (EMAIL, "wang.xm@corp.cn")],
                    "王小明",
                )])
                .unwrap();
            assert_eq!(person(&both[0]).lead_id, a.lead_id);
            let others: Vec<IdentityRequest> = (0..50)
                .map(|i| {
                    named(
                        &format!("o{i}"),
                        &[(PHONE, &format!("+86137{i:08}"))],
                        "张三",
                    )
                })
                .collect();
            s.resolve(&others).unwrap();
            s.close().unwrap();
            let hit = |k: &IdentityKey| k.value == "+8613912345678";
            let found = s.erasable(&hit, &[]).unwrap();
            assert_eq!(
                found.lead_ids.len(),
                2,
                "the phone's person and the merged one"
            );
            assert!(found.lead_ids.contains(&a.lead_id));
            assert_eq!(found.event_ids, ["e1", "e2", "e4"]);
            assert!(
                found
                    .keys
                    .contains(&IdentityKey::new(EMAIL, "wang.xm@corp.cn"))
            );
            s.erase(&found.lead_ids).unwrap();
            assert!(
                s.find(&[IdentityKey::new(PHONE, "+8613912345678")])
                    .unwrap()
                    .is_empty()
            );
            assert!(
                s.find(&[IdentityKey::new(EMAIL, "wang.xm@corp.cn")])
                    .unwrap()
                    .is_empty()
            );
            assert!(s.explain(&a.lead_id).unwrap().is_none());
            assert_eq!(
                s.find(&[IdentityKey::new(PHONE, "+8613800000001")])
                    .unwrap(),
                std::slice::from_ref(&b.lead_id)
            );
            // Erasing again finds nobody and changes nothing.
            assert_eq!(
                s.erasable(&hit, std::slice::from_ref(&a.lead_id)).unwrap(),
                Erased::default()
            );
            s.erase(&found.lead_ids).unwrap();
            (a, b, others.len())
        };
        for file in std::fs::read_dir(dir.path()).unwrap() {
            let file = file.unwrap().path();
            let bytes = std::fs::read(&file).unwrap();
            for gone in [
                "13912345678",
                "wang.xm@corp.cn",
                "王小明",
                a.lead_id.as_str(),
            ] {
                assert!(
                    !bytes.windows(gone.len()).any(|w| w == gone.as_bytes()),
                    "{gone} is still in {}",
                    file.display()
                );
            }
        }
        assert!(snapshot::path_of(&path).exists(), "a new snapshot");
        let s = EmbeddedIdentityStore::open(&path, Policy::default()).unwrap();
        s.ready().unwrap();
        assert!(
            s.find(&[IdentityKey::new(PHONE, "+8613912345678")])
                .unwrap()
                .is_empty()
        );
        let again = s
            .resolve(&[
                req("e5", &[(PHONE, "+8613800000001")]),
                req("e6", &[(PHONE, "+8613912345678")]),
            ])
            .unwrap();
        assert_eq!(
            person(&again[0]).lead_id,
            b.lead_id,
            "the others are matched as before"
        );
        assert_eq!(person(&again[1]).status, IdentityStatus::New);
        let c = s.explain(&b.lead_id).unwrap().unwrap();
        assert_eq!(c.members.len(), 2);
        assert_eq!(others, 50);
    }

    /// A store on disk with many people, merges, shared keys and a platform id, reopened: from
    /// its snapshot plus the log after it, from a damaged snapshot (ignored), and from a
    /// snapshot ahead of its log (ignored): the same answers each time.
    #[test]
    fn a_snapshot_and_the_log_after_it_resolve_as_the_whole_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.redb");
        let snap = snapshot::path_of(&path);
        let batch = |from: usize, to: usize| -> Vec<IdentityRequest> {
            (from..to)
                .map(|i| {
                    let phone = format!("+86139{:08}", i / 2);
                    let email = format!("p{}@corp.cn", i / 3);
                    let mut r = req(
                        &format!("e{i}"),
                        &[(PHONE, phone.as_str()), (EMAIL, email.as_str())],
                    );
                    r.traits.name = Some(format!("客户{}", i / 2));
                    if i % 7 == 0 {
                        r.source_key = Some(format!("meta\u{1f}{i}"));
                    }
                    r
                })
                .collect()
        };
        let probe = |s: &EmbeddedIdentityStore, tag: &str| -> Vec<String> {
            let mut asked = batch(0, 60);
            for (n, r) in asked.iter_mut().enumerate() {
                r.event_id = format!("probe-{tag}-{n}");
            }
            let mut again = req(&format!("probe-{tag}-redelivery"), &[(EMAIL, "x@y.cn")]);
            again.source_key = Some("meta\u{1f}14".into());
            asked.push(again);
            s.resolve(&asked)
                .unwrap()
                .iter()
                .map(|r| match r {
                    Resolution::Person(o) => format!("{} {:?}", o.lead_id, o.matched_on),
                    other => format!("{other:?}"),
                })
                .collect()
        };
        {
            let s = EmbeddedIdentityStore::open(&path, Policy::default()).unwrap();
            s.ready().unwrap();
            s.resolve(&batch(0, 40)).unwrap();
            s.close().unwrap();
        }
        assert!(snap.exists(), "a snapshot at close");
        let snapshot_bytes = std::fs::read(&snap).unwrap();
        let want = {
            // Batches after the snapshot, then a crash (no close): the log covers them.
            let s = EmbeddedIdentityStore::open(&path, Policy::default()).unwrap();
            s.ready().unwrap();
            s.resolve(&batch(40, 80)).unwrap();
            s.sync().unwrap();
            probe(&s, "a")
        };
        assert_eq!(std::fs::read(&snap).unwrap(), snapshot_bytes, "not due yet");
        // The answers after a reopen, and the batches the snapshot it read covered (0: none).
        let answers = |tag: &str| {
            let s = EmbeddedIdentityStore::open(&path, Policy::default()).unwrap();
            s.ready().unwrap();
            let covered = s.with(|st| Ok(st.index()?.snapshot_batches)).unwrap();
            (probe(&s, tag), covered)
        };
        // The probes' events are new each time; the lead ids they resolve to, what they matched
        // on and the redelivery found are what must not change.
        let (got, covered) = answers("b");
        assert_eq!(got, want, "snapshot + log");
        assert!(covered > 0, "read from the snapshot");
        // A damaged snapshot is ignored.
        let mut bytes = std::fs::read(&snap).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&snap, &bytes).unwrap();
        assert_eq!(
            answers("c"),
            (want.clone(), 0),
            "a damaged snapshot: the whole log"
        );
        // A snapshot ahead of the log (of another store) is ignored.
        {
            let other = dir.path().join("other.redb");
            let s = EmbeddedIdentityStore::open(&other, Policy::default()).unwrap();
            s.ready().unwrap();
            for n in 0..5 {
                s.resolve(&batch(1000 + n * 10, 1010 + n * 10)).unwrap();
            }
            for n in 0..300 {
                s.resolve(&[req(&format!("filler{n}"), &[(EMAIL, "f@g.cn")])])
                    .unwrap();
            }
            s.close().unwrap();
            std::fs::copy(snapshot::path_of(&other), &snap).unwrap();
        }
        assert_eq!(
            answers("d"),
            (want, 0),
            "a snapshot ahead of the log: the whole log"
        );
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
