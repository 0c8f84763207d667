//! The dry run's identity store (`import --dry-run`): the resolver of every store over people,
//! keys and source keys that stay in memory up to a budget and are spilled beyond it to sorted
//! runs in a temporary directory, so that its memory does not grow with the file.
//!
//! Each of the three tables is a small log-structured merge tree. Writes go to an arena in
//! memory (a map of 128-bit ids to places in it). When the arena is over its share of the
//! budget it is written out, sorted by id, as a run: records of `[id: 16][length: 4][value]`,
//! an index in memory of the first id of every block of about 4 KiB, and a binary fuse filter
//! of the ids (9 bits an id, 1 in 256 false positives), which answers most reads of an id never
//! seen (most of an import's keys are new) without touching the disk. Two runs of about the
//! same size are merged into one (the newer value of an id wins), so a table of n ids in runs
//! of r holds at most log2(n/r) + 1 runs. A read looks at the arena, then at the runs from the
//! newest: at most one block read for an id that is there.
//!
//! It keeps what the embedded store keeps of a person (creation order, where it was merged,
//! its keys as digests, its recent names, companies and cities) and no log: each event is
//! resolved once and no one is explained. Writes are applied as they are made; a failing batch
//! ends the dry run.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use xorf::{BinaryFuse8, Filter};

use super::batch::lead;
use super::log::{digest, key_digest, token, token_digest};
use crate::identity::resolve::{self, Graph, GraphRead, KeyLinks, Member, Person, lead_text};
use crate::identity::{IdentityError, IdentityKey, IdentityRequest, IdentityStore, Policy};
use crate::lead::IdentityOutcome;

use super::super::resolve::{Cluster, Resolution};

/// The memory the three tables' arenas may hold together, by default.
pub const DEFAULT_BUDGET: usize = 48 << 20;

/// A run's index has an entry for the first record at or after every this many bytes.
const BLOCK: u64 = 4096;

/// Bytes a record costs in memory besides its value: its place in the map.
const ENTRY_COST: usize = 40;

/// A run has a filter for each stretch of this many records: building one holds about 30 bytes
/// a record, so a run of tens of millions is filtered in as little memory as a small one.
const SEGMENT: usize = if cfg!(test) { 256 } else { 1 << 16 };

/// The dry run's identity store; see the module docs.
pub struct ScratchIdentityStore {
    policy: Policy,
    tables: Mutex<Tables>,
}

impl ScratchIdentityStore {
    /// A store spilling to a new temporary directory under `dir`, removed when it is dropped.
    pub fn new(policy: Policy, dir: &Path, budget: usize) -> Result<Self, IdentityError> {
        let tmp = tempfile::Builder::new()
            .prefix(".leadgate-dry-run-")
            .tempdir_in(dir)
            .map_err(|e| {
                IdentityError::Storage(format!(
                    "cannot make a temporary directory in {}: {e}",
                    dir.display()
                ))
            })?;
        let share = budget / 4;
        let path = tmp.path().to_owned();
        Ok(Self {
            policy,
            tables: Mutex::new(Tables {
                // A person's record is the biggest: half the budget.
                people: Tier::new(&path, "people", share * 2),
                keys: Tier::new(&path, "keys", share),
                sources: Tier::new(&path, "sources", share),
                kinds: Vec::new(),
                order: 0,
                buf: Vec::new(),
                _dir: tmp,
            }),
        })
    }

    /// How many runs each table has on disk (people, keys, source keys).
    #[cfg(test)]
    fn runs(&self) -> (usize, usize, usize) {
        let t = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        (t.people.runs.len(), t.keys.runs.len(), t.sources.runs.len())
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl IdentityStore for ScratchIdentityStore {
    fn resolve(&self, requests: &[IdentityRequest]) -> Result<Vec<Resolution>, IdentityError> {
        let mut t = self.tables();
        requests
            .iter()
            .map(|r| resolve::resolve(&mut *t, r, &self.policy))
            .collect()
    }

    fn explain(&self, _lead_id: &str) -> Result<Option<Cluster>, IdentityError> {
        Err(IdentityError::Storage(
            "the dry run's identity store explains no one".into(),
        ))
    }

    fn find(&self, keys: &[IdentityKey]) -> Result<Vec<String>, IdentityError> {
        resolve::find(&mut *self.tables(), keys)
    }

    fn keeps_profiles(&self) -> bool {
        false
    }
}

struct Tables {
    people: Tier,
    keys: Tier,
    sources: Tier,
    kinds: Vec<String>,
    order: u64,
    /// The record being written, reused.
    buf: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Tables {
    fn encode(&mut self, value: &impl Serialize) -> Result<(), IdentityError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        self.buf = postcard::to_extend(value, buf).map_err(encoding)?;
        Ok(())
    }
}

/// A person as stored: what [`Person`] holds in the embedded store.
#[derive(Deserialize)]
struct StoredPerson {
    order: u64,
    merged_into: Option<[u8; 16]>,
    /// (kind's place in `Tables::kinds`, digest).
    keys: Vec<(u16, [u8; 16])>,
    names: Vec<String>,
    companies: Vec<String>,
    cities: Vec<String>,
}

/// [`StoredPerson`] as written, borrowing the person's lists (the same encoding).
#[derive(Serialize)]
struct PersonRef<'a> {
    order: u64,
    merged_into: Option<[u8; 16]>,
    keys: &'a [(u16, [u8; 16])],
    names: &'a [String],
    companies: &'a [String],
    cities: &'a [String],
}

#[derive(Serialize, Deserialize)]
struct StoredLinks {
    people: Vec<[u8; 16]>,
    shared: bool,
}

fn encoding(e: postcard::Error) -> IdentityError {
    IdentityError::Storage(format!("dry-run identity record: {e}"))
}

impl GraphRead for Tables {
    fn person(&mut self, lead_id: &str) -> Result<Option<Person>, IdentityError> {
        let Ok(id) = Uuid::parse_str(lead_id) else {
            return Ok(None);
        };
        let Some(bytes) = self.people.get(id.as_u128())? else {
            return Ok(None);
        };
        let s: StoredPerson = postcard::from_bytes(&bytes).map_err(encoding)?;
        let mut p = Person {
            order: s.order,
            merged_into: s.merged_into.map(|m| lead_text(Uuid::from_bytes(m))),
            names: s.names,
            companies: s.companies,
            cities: s.cities,
            ..Person::default()
        };
        for (kind, d) in s.keys {
            let kind = self
                .kinds
                .get(usize::from(kind))
                .ok_or_else(|| IdentityError::Storage("dry-run identity: unknown kind".into()))?;
            p.keys
                .entry(kind.clone())
                .or_default()
                .push(token(u128::from_be_bytes(d)));
        }
        Ok(Some(p))
    }

    fn key(&mut self, key: &str) -> Result<KeyLinks, IdentityError> {
        let Some(bytes) = self.keys.get(digest(key))? else {
            return Ok(KeyLinks::default());
        };
        let s: StoredLinks = postcard::from_bytes(&bytes).map_err(encoding)?;
        Ok(KeyLinks {
            people: s
                .people
                .into_iter()
                .map(|p| lead_text(Uuid::from_bytes(p)))
                .collect(),
            shared: s.shared,
        })
    }

    fn token(&self, key: &IdentityKey) -> String {
        token(key_digest(key))
    }
}

impl Graph for Tables {
    fn outcome(&mut self, _event_id: &str) -> Result<Option<IdentityOutcome>, IdentityError> {
        Ok(None)
    }

    fn put_outcome(&mut self, _event_id: &str, _o: &IdentityOutcome) -> Result<(), IdentityError> {
        Ok(())
    }

    fn claim_source(&mut self, key: &str, event_id: &str) -> Result<String, IdentityError> {
        let d = digest(key);
        if let Some(first) = self.sources.get(d)? {
            return String::from_utf8(first.into_owned())
                .map_err(|_| IdentityError::Storage("dry-run identity: event id".into()));
        }
        self.sources.put(d, event_id.as_bytes())?;
        Ok(event_id.to_owned())
    }

    fn put_key(&mut self, key: &str, links: &KeyLinks) -> Result<(), IdentityError> {
        let s = StoredLinks {
            people: links
                .people
                .iter()
                .map(|l| lead(l).map(|u| u.into_bytes()))
                .collect::<Result<_, _>>()?,
            shared: links.shared,
        };
        self.encode(&s)?;
        self.keys.put(digest(key), &self.buf)
    }

    fn put_person(&mut self, lead_id: &str, p: &Person) -> Result<(), IdentityError> {
        let mut keys = Vec::with_capacity(2);
        for (kind, tokens) in &p.keys {
            let k = match self.kinds.iter().position(|k| k == kind) {
                Some(i) => i,
                None => {
                    self.kinds.push(kind.clone());
                    self.kinds.len() - 1
                }
            };
            let k = u16::try_from(k)
                .map_err(|_| IdentityError::Storage("dry-run identity: too many kinds".into()))?;
            for t in tokens {
                keys.push((k, token_digest(t)?.to_be_bytes()));
            }
        }
        let s = PersonRef {
            order: p.order,
            merged_into: p
                .merged_into
                .as_deref()
                .map(|m| lead(m).map(|u| u.into_bytes()))
                .transpose()?,
            keys: &keys,
            names: &p.names,
            companies: &p.companies,
            cities: &p.cities,
        };
        self.encode(&s)?;
        self.people.put(lead(lead_id)?.as_u128(), &self.buf)
    }

    fn add_member(&mut self, _m: Member, _req: &IdentityRequest) -> Result<(), IdentityError> {
        Ok(())
    }

    fn next_order(&mut self) -> Result<u64, IdentityError> {
        self.order += 1;
        Ok(self.order)
    }

    fn keeps_history(&self) -> bool {
        false
    }
}

fn spill(what: &str, path: &Path, e: std::io::Error) -> IdentityError {
    IdentityError::Storage(format!(
        "dry-run identity: cannot {what} {}: {e}",
        path.display()
    ))
}

/// One table: an arena in memory over runs on disk.
struct Tier {
    dir: PathBuf,
    name: &'static str,
    budget: usize,
    hot: HashMap<u128, (u32, u32)>,
    arena: Vec<u8>,
    /// Oldest first.
    runs: Vec<Run>,
    files: u64,
}

impl Tier {
    fn new(dir: &Path, name: &'static str, budget: usize) -> Self {
        Self {
            dir: dir.to_owned(),
            name,
            budget: budget.max(1),
            hot: HashMap::new(),
            arena: Vec::new(),
            runs: Vec::new(),
            files: 0,
        }
    }

    fn get(&self, id: u128) -> Result<Option<std::borrow::Cow<'_, [u8]>>, IdentityError> {
        if let Some(&(at, len)) = self.hot.get(&id) {
            let at = at as usize;
            return Ok(Some(self.arena[at..at + len as usize].into()));
        }
        for run in self.runs.iter().rev() {
            if let Some(v) = run.get(id)? {
                return Ok(Some(v.into()));
            }
        }
        Ok(None)
    }

    fn put(&mut self, id: u128, value: &[u8]) -> Result<(), IdentityError> {
        let at = u32::try_from(self.arena.len()).ok();
        let len = u32::try_from(value.len()).ok();
        let (Some(at), Some(len)) = (at, len) else {
            return Err(IdentityError::Storage(
                "dry-run identity: a record over 4 GiB".into(),
            ));
        };
        if self.arena.capacity() == 0 {
            // Its whole budget at once: growing by copies would touch fresh pages again and
            // again (the memory is reserved, and used as it fills).
            self.arena.reserve(self.budget);
        }
        self.arena.extend_from_slice(value);
        self.hot.insert(id, (at, len));
        if self.arena.len() + self.hot.len() * ENTRY_COST > self.budget {
            self.flush()?;
        }
        Ok(())
    }

    fn path(&mut self) -> PathBuf {
        self.files += 1;
        self.dir.join(format!("{}-{}.run", self.name, self.files))
    }

    /// Writes the arena out as the newest run, then merges runs of about the same size.
    fn flush(&mut self) -> Result<(), IdentityError> {
        let mut places: Vec<(u128, u32, u32)> = self
            .hot
            .drain()
            .map(|(id, (at, len))| (id, at, len))
            .collect();
        places.sort_unstable_by_key(|p| p.0);
        let path = self.path();
        let mut w = RunWriter::create(path)?;
        for (id, at, len) in places {
            let at = at as usize;
            w.push(id, &self.arena[at..at + len as usize])?;
        }
        self.arena.clear();
        self.runs.push(w.finish()?);
        while let [.., older, newer] = self.runs.as_slice()
            && older.len <= newer.len
        {
            let newer = self.runs.pop().expect("two runs");
            let older = self.runs.pop().expect("two runs");
            let path = self.path();
            self.runs.push(merge(older, newer, path)?);
        }
        Ok(())
    }
}

/// A sorted run on disk; see the module docs.
struct Run {
    path: PathBuf,
    file: File,
    /// (first id, offset) of each block.
    index: Vec<(u128, u64)>,
    end: u64,
    /// (first id, filter of the ids) of each segment of [`SEGMENT`] records; `None` for a
    /// filter that could not be built (it very rarely fails), which only costs reads.
    filters: Vec<(u128, Option<BinaryFuse8>)>,
    len: usize,
}

fn fingerprint(id: u128) -> u64 {
    (id as u64) ^ ((id >> 64) as u64)
}

impl Run {
    fn get(&self, id: u128) -> Result<Option<Vec<u8>>, IdentityError> {
        let segment = self.filters.partition_point(|&(first, _)| first <= id);
        let Some((_, filter)) = segment.checked_sub(1).map(|s| &self.filters[s]) else {
            return Ok(None);
        };
        if filter
            .as_ref()
            .is_some_and(|f| !f.contains(&fingerprint(id)))
        {
            return Ok(None);
        }
        let block = self.index.partition_point(|&(first, _)| first <= id);
        if block == 0 {
            return Ok(None);
        }
        let start = self.index[block - 1].1;
        let end = self.index.get(block).map_or(self.end, |b| b.1);
        let len = usize::try_from(end - start).unwrap_or(usize::MAX);
        let mut buf = vec![0; len];
        self.file
            .read_exact_at(&mut buf, start)
            .map_err(|e| spill("read", &self.path, e))?;
        let mut rest = buf.as_slice();
        while rest.len() >= 20 {
            let here = u128::from_le_bytes(rest[..16].try_into().expect("16 bytes"));
            let n = u32::from_le_bytes(rest[16..20].try_into().expect("4 bytes")) as usize;
            let value = rest.get(20..20 + n).ok_or_else(|| {
                IdentityError::Storage(format!("{} is cut short", self.path.display()))
            })?;
            if here == id {
                return Ok(Some(value.to_vec()));
            }
            if here > id {
                break;
            }
            rest = &rest[20 + n..];
        }
        Ok(None)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

struct RunWriter {
    path: PathBuf,
    out: BufWriter<File>,
    index: Vec<(u128, u64)>,
    filters: Vec<(u128, Option<BinaryFuse8>)>,
    /// The current segment's first id and fingerprints.
    first: u128,
    fingerprints: Vec<u64>,
    len: usize,
    at: u64,
    next_block: u64,
}

impl RunWriter {
    fn create(path: PathBuf) -> Result<Self, IdentityError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| spill("create", &path, e))?;
        Ok(Self {
            path,
            out: BufWriter::with_capacity(1 << 16, file),
            index: Vec::new(),
            filters: Vec::new(),
            first: 0,
            fingerprints: Vec::with_capacity(SEGMENT),
            len: 0,
            at: 0,
            next_block: 0,
        })
    }

    fn push(&mut self, id: u128, value: &[u8]) -> Result<(), IdentityError> {
        if self.at >= self.next_block {
            self.index.push((id, self.at));
            self.next_block = self.at + BLOCK;
        }
        let len = u32::try_from(value.len()).expect("a value of the arena");
        self.out
            .write_all(&id.to_le_bytes())
            .and_then(|()| self.out.write_all(&len.to_le_bytes()))
            .and_then(|()| self.out.write_all(value))
            .map_err(|e| spill("write", &self.path, e))?;
        if self.fingerprints.is_empty() {
            self.first = id;
        }
        self.fingerprints.push(fingerprint(id));
        if self.fingerprints.len() == SEGMENT {
            self.filter();
        }
        self.len += 1;
        self.at += 20 + u64::from(len);
        Ok(())
    }

    /// Ends the current segment with its filter.
    fn filter(&mut self) {
        let fingerprints = &mut self.fingerprints;
        fingerprints.sort_unstable();
        fingerprints.dedup();
        self.filters
            .push((self.first, BinaryFuse8::try_from(&*fingerprints).ok()));
        fingerprints.clear();
    }

    fn finish(mut self) -> Result<Run, IdentityError> {
        if !self.fingerprints.is_empty() {
            self.filter();
        }
        let file = self
            .out
            .into_inner()
            .map_err(|e| spill("write", &self.path, e.into_error()))?;
        Ok(Run {
            path: self.path,
            file,
            index: self.index,
            end: self.at,
            filters: self.filters,
            len: self.len,
        })
    }
}

/// Reads a run's records in order.
struct RunReader {
    path: PathBuf,
    input: BufReader<File>,
    left: u64,
}

impl RunReader {
    fn open(run: &Run) -> Result<Self, IdentityError> {
        let file = File::open(&run.path).map_err(|e| spill("open", &run.path, e))?;
        Ok(Self {
            path: run.path.clone(),
            input: BufReader::with_capacity(1 << 16, file),
            left: run.end,
        })
    }

    fn next(&mut self) -> Result<Option<(u128, Vec<u8>)>, IdentityError> {
        if self.left == 0 {
            return Ok(None);
        }
        let mut head = [0u8; 20];
        self.input
            .read_exact(&mut head)
            .map_err(|e| spill("read", &self.path, e))?;
        let id = u128::from_le_bytes(head[..16].try_into().expect("16 bytes"));
        let n = u32::from_le_bytes(head[16..].try_into().expect("4 bytes"));
        let mut value = vec![0; n as usize];
        self.input
            .read_exact(&mut value)
            .map_err(|e| spill("read", &self.path, e))?;
        self.left = self.left.saturating_sub(20 + u64::from(n));
        Ok(Some((id, value)))
    }
}

/// One run of both, the newer's value winning; the two are removed.
fn merge(older: Run, newer: Run, path: PathBuf) -> Result<Run, IdentityError> {
    let mut w = RunWriter::create(path)?;
    let mut a = RunReader::open(&older)?;
    let mut b = RunReader::open(&newer)?;
    let (mut x, mut y) = (a.next()?, b.next()?);
    loop {
        match (&x, &y) {
            (None, None) => break,
            (Some((i, v)), None) => {
                w.push(*i, v)?;
                x = a.next()?;
            }
            (None, Some((j, v))) => {
                w.push(*j, v)?;
                y = b.next()?;
            }
            (Some((i, v)), Some((j, u))) => {
                if i < j {
                    w.push(*i, v)?;
                    x = a.next()?;
                } else {
                    w.push(*j, u)?;
                    if i == j {
                        x = a.next()?;
                    }
                    y = b.next()?;
                }
            }
        }
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::embedded::EmbeddedIdentityStore;
    use crate::identity::embedded::tests::req;
    use crate::lead::IdentityStatus;

    const EMAIL: &str = "email";
    const PHONE: &str = "phone";

    fn lead(r: &Resolution) -> &IdentityOutcome {
        match r {
            Resolution::Person(o) => o,
            other => panic!("not a person: {other:?}"),
        }
    }

    #[test]
    fn it_matches_and_finds_redeliveries() {
        let dir = tempfile::tempdir().unwrap();
        let s = ScratchIdentityStore::new(Policy::default(), dir.path(), DEFAULT_BUDGET).unwrap();
        let mut a = req("e1", &[(EMAIL, "a@b.cn")]);
        a.source_key = Some("expo\u{1f}7001".into());
        let mut b = req("e2", &[(EMAIL, "a@b.cn"), (PHONE, "+8613800138000")]);
        b.source_key = a.source_key.clone();
        let c = req("e3", &[(PHONE, "+8613800138000"), (EMAIL, "a@b.cn")]);
        let out = s.resolve(&[a]).unwrap();
        let later = s.resolve(&[b, c]).unwrap();
        assert_eq!(
            later[0],
            Resolution::Duplicate {
                first_event_id: "e1".into()
            }
        );
        assert_eq!(lead(&later[1]).lead_id, lead(&out[0]).lead_id);
        assert_eq!(lead(&later[1]).status, IdentityStatus::Matched);
        assert!(s.explain(&lead(&out[0]).lead_id).is_err());
        assert_eq!(
            s.find(&[IdentityKey::new(PHONE, "+8613800138000")])
                .unwrap(),
            vec![lead(&out[0]).lead_id.clone()]
        );
    }

    /// Many people over a few keys (matches, merges, shared keys, redeliveries), resolved by the
    /// embedded store in memory and by a scratch store whose budget spills after every few
    /// records: the same outcomes, event by event.
    #[test]
    fn spilled_it_resolves_as_the_embedded_store() {
        let mut rng = fastrand::Rng::with_seed(19);
        let dir = tempfile::tempdir().unwrap();
        let scratch = ScratchIdentityStore::new(Policy::default(), dir.path(), 2048).unwrap();
        let embedded = EmbeddedIdentityStore::in_memory(Policy::default()).unwrap();
        let mut seen = [0usize; 5];
        for batch in 0..60 {
            let requests: Vec<IdentityRequest> = (0..50)
                .map(|i| {
                    let mut keys = Vec::new();
                    if rng.u8(..10) < 8 {
                        keys.push((PHONE, format!("+86139{:08}", rng.u32(..400))));
                    }
                    if rng.u8(..10) < 6 {
                        keys.push((EMAIL, format!("p{}@corp.cn", rng.u32(..300))));
                    }
                    let keys: Vec<(&str, &str)> =
                        keys.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    let mut r = req(&format!("b{batch}-{i}"), &keys);
                    if rng.u8(..10) == 0 {
                        r.source_key = Some(format!("expo\u{1f}{}", rng.u32(..200)));
                    }
                    r.traits.name = Some(["王伟", "李娜", "张敏"][rng.usize(..3)].into());
                    r.traits.company = Some(["华为", "腾讯"][rng.usize(..2)].into());
                    r
                })
                .collect();
            let want = embedded.resolve(&requests).unwrap();
            let got = scratch.resolve(&requests).unwrap();
            assert_eq!(got, want, "batch {batch}");
            for r in &got {
                seen[match r {
                    Resolution::Person(o) => match o.status {
                        IdentityStatus::New => 0,
                        IdentityStatus::Matched if o.supported_by.is_empty() => 1,
                        IdentityStatus::Matched => 2,
                        IdentityStatus::Merged => 3,
                    },
                    _ => 4,
                }] += 1;
            }
        }
        // Every way of resolving happened: new, matched, supported by the name, merged, and
        // redelivered (or rejected).
        assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
        let (people, keys, sources) = scratch.runs();
        assert!(
            people > 1 && keys > 1 && sources >= 1,
            "{people} {keys} {sources}"
        );
        // Merged runs: far fewer than the flushes (thousands of writes, a flush every few).
        assert!(people <= 12, "{people} runs of people");
    }

    #[test]
    fn a_run_finds_every_id_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tier::new(dir.path(), "t", 1 << 12);
        for i in 0..20_000u128 {
            t.put(i * 7 + (i << 90), &(i as u32).to_le_bytes()).unwrap();
        }
        // Overwrites win over the older runs' values.
        for i in (0..20_000u128).step_by(3) {
            t.put(i * 7 + (i << 90), b"new").unwrap();
        }
        assert!(t.runs.len() > 1);
        for i in 0..20_000u128 {
            let got = t.get(i * 7 + (i << 90)).unwrap().unwrap();
            if i % 3 == 0 {
                assert_eq!(&*got, b"new");
            } else {
                assert_eq!(&*got, &(i as u32).to_le_bytes());
            }
            assert!(t.get(i * 7 + (i << 90) + 1).unwrap().is_none());
        }
        let dir_files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(dir_files, t.runs.len(), "merged runs' files are removed");
    }
}
