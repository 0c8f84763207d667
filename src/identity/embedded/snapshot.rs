//! Snapshots of the matching index, so that opening a large store does not replay its whole
//! log: the index as it stood after log batch `batches`, in one file beside the store
//! (`identity.snapshot`). Opening reads it and replays only the batches after it.
//!
//! A snapshot is written only of a synced index (every batch it covers is durable in the log),
//! to a temporary file that is synced and renamed over the old one: a crash leaves the old
//! snapshot or the new one. It ends with an XXH3-128 checksum of everything before it; a
//! snapshot that does not verify, or is of another format, or covers batches the log does not
//! have, is ignored (the log is replayed whole, as without one).
//!
//! The lookup tables (`by_lead`, `by_key`) are not written: they are rebuilt from the people and
//! keys, which is faster than reading them.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use hashbrown::{HashMap, HashTable};
use twox_hash::XxHash3_128;

use super::index::{Chunked, Core, Index, KeyRec, join, lead_hash};
use super::log::Digest;

const MAGIC: &[u8; 8] = b"LGIDXSN1";
/// Changes whenever the layout below changes.
const VERSION: u32 = 1;
const BUFFER: usize = 8 << 20;

/// The snapshot file of the store at `store`.
pub(super) fn path_of(store: &Path) -> PathBuf {
    store.with_extension("snapshot")
}

/// The file, sealed in chunks with a key configured ([`crate::seal::ChunkWriter`]): a
/// snapshot holds people's names, companies and cities.
enum Sink {
    Plain(File),
    Sealed(crate::seal::ChunkWriter<File>),
}

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(f) => f.write(b),
            Self::Sealed(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(f) => f.flush(),
            Self::Sealed(s) => s.flush(),
        }
    }
}

impl Sink {
    fn finish(self) -> std::io::Result<File> {
        match self {
            Self::Plain(f) => Ok(f),
            Self::Sealed(s) => s.finish(),
        }
    }
}

struct Out {
    w: BufWriter<Sink>,
    h: XxHash3_128,
}

impl Out {
    fn bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.h.write(b);
        self.w.write_all(b)
    }
    fn u8(&mut self, v: u8) -> std::io::Result<()> {
        self.bytes(&[v])
    }
    fn u32(&mut self, v: u32) -> std::io::Result<()> {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> std::io::Result<()> {
        self.bytes(&v.to_le_bytes())
    }
    fn u128(&mut self, v: u128) -> std::io::Result<()> {
        self.bytes(&v.to_le_bytes())
    }
    fn len(&mut self, n: usize) -> std::io::Result<()> {
        self.u64(n as u64)
    }
    fn text(&mut self, s: &str) -> std::io::Result<()> {
        self.u32(u32::try_from(s.len()).map_err(std::io::Error::other)?)?;
        self.bytes(s.as_bytes())
    }
}

/// Writes `index` to `path`, durably (temporary file, sync, rename, directory sync).
pub(super) fn write(index: &Index, path: &Path) -> std::io::Result<()> {
    let tmp = path.with_extension("snapshot.new");
    let file = File::create(&tmp)?;
    let sink = match crate::seal::keys() {
        Some(keys) => Sink::Sealed(crate::seal::ChunkWriter::new(file, keys)),
        None => Sink::Plain(file),
    };
    let mut o = Out {
        w: BufWriter::with_capacity(BUFFER, sink),
        h: XxHash3_128::new(),
    };
    o.bytes(MAGIC)?;
    o.u32(VERSION)?;
    o.u64(index.batches)?;
    o.len(index.kinds.len())?;
    for k in &index.kinds {
        o.text(k)?;
    }
    o.len(index.people.len())?;
    for i in 0..index.people.len() {
        let c = &index.people[i];
        o.u64(c.last_event)?;
        o.bytes(&c.lead_id)?;
        o.u32(c.merged_into)?;
        o.u32(c.keys[0])?;
        o.u32(c.keys[1])?;
        o.text(&c.traits)?;
    }
    o.len(index.keys.len())?;
    for i in 0..index.keys.len() {
        let k = &index.keys[i];
        for d in k.digest {
            o.u32(d)?;
        }
        o.u32(k.one)?;
        o.u32(k.many)?;
        o.u8(k.kind)?;
        o.u8(u8::from(k.shared))?;
    }
    o.len(index.lists.len())?;
    for l in &index.lists {
        o.len(l.len())?;
        for v in l.iter() {
            o.u32(*v)?;
        }
    }
    o.len(index.sources.len())?;
    for (d, pos) in &index.sources {
        o.u128(*d)?;
        o.u64(*pos)?;
    }
    o.len(index.recent_order.len())?;
    for d in &index.recent_order {
        o.u128(*d)?;
        o.u64(index.recent.get(d).copied().unwrap_or(0))?;
    }
    let sum = o.h.finish_128();
    o.w.write_all(&sum.to_le_bytes())?;
    let file = o.w.into_inner().map_err(|e| e.into_error())?.finish()?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

struct In {
    r: BufReader<Box<dyn Read>>,
    h: XxHash3_128,
}

fn bad(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned())
}

impl In {
    fn bytes<const N: usize>(&mut self) -> std::io::Result<[u8; N]> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b)?;
        self.h.write(&b);
        Ok(b)
    }
    fn u8(&mut self) -> std::io::Result<u8> {
        Ok(self.bytes::<1>()?[0])
    }
    fn u32(&mut self) -> std::io::Result<u32> {
        self.bytes().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> std::io::Result<u64> {
        self.bytes().map(u64::from_le_bytes)
    }
    fn u128(&mut self) -> std::io::Result<u128> {
        self.bytes().map(u128::from_le_bytes)
    }
    /// A count, refused when it is beyond what the file could hold (a damaged length must not
    /// reserve terabytes).
    fn len(&mut self, each: u64) -> std::io::Result<usize> {
        let n = self.u64()?;
        if n.saturating_mul(each) > (1 << 40) {
            return Err(bad("a count is too large"));
        }
        usize::try_from(n).map_err(|_| bad("a count is too large"))
    }
    fn text(&mut self) -> std::io::Result<String> {
        let n = self.u32()? as usize;
        let mut b = vec![0u8; n];
        self.r.read_exact(&mut b)?;
        self.h.write(&b);
        String::from_utf8(b).map_err(|_| bad("a text is not UTF-8"))
    }
}

/// Reads into `buf` until it is full or the file ends; how many bytes.
fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// The index a snapshot holds; `Ok(None)` without a snapshot file.
pub(super) fn read(path: &Path) -> std::io::Result<Option<Index>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut head = [0u8; crate::seal::STREAM_MAGIC_LEN];
    let got = read_up_to(&mut file, &mut head)?;
    let source: Box<dyn Read> = if crate::seal::sealed_stream(&head[..got]) {
        let keys = crate::seal::keys().ok_or_else(|| {
            bad("the snapshot is encrypted, and no [privacy] encryption_key is configured")
        })?;
        Box::new(crate::seal::ChunkReader::new(file, keys))
    } else {
        Box::new(std::io::Cursor::new(head[..got].to_vec()).chain(file))
    };
    let mut i = In {
        r: BufReader::with_capacity(BUFFER, source),
        h: XxHash3_128::new(),
    };
    if &i.bytes::<8>()? != MAGIC {
        return Err(bad("not an identity index snapshot"));
    }
    if i.u32()? != VERSION {
        return Err(bad("a snapshot of another format"));
    }
    let mut index = Index {
        batches: i.u64()?,
        ..Index::default()
    };
    for _ in 0..i.len(4)? {
        index.kinds.push(i.text()?);
    }
    let people = i.len(40)?;
    let mut list = Chunked::default();
    for _ in 0..people {
        list.push(Core {
            last_event: i.u64()?,
            lead_id: i.bytes()?,
            merged_into: i.u32()?,
            keys: [i.u32()?, i.u32()?],
            traits: i.text()?.into_boxed_str(),
        });
    }
    index.people = list;
    let keys = i.len(26)?;
    let mut list = Chunked::default();
    for _ in 0..keys {
        list.push(KeyRec {
            digest: [i.u32()?, i.u32()?, i.u32()?, i.u32()?],
            one: i.u32()?,
            many: i.u32()?,
            kind: i.u8()?,
            shared: i.u8()? != 0,
        });
    }
    index.keys = list;
    let lists = i.len(8)?;
    index.lists.reserve(lists);
    for _ in 0..lists {
        let n = i.len(4)?;
        let mut l = Vec::with_capacity(n);
        for _ in 0..n {
            l.push(i.u32()?);
        }
        index.lists.push(l.into_boxed_slice());
    }
    let sources = i.len(24)?;
    index.sources = HashMap::with_capacity(sources);
    for _ in 0..sources {
        let (d, pos): (Digest, u64) = (i.u128()?, i.u64()?);
        index.sources.insert(d, pos);
    }
    let recent = i.len(24)?;
    index.recent = HashMap::with_capacity(recent);
    for _ in 0..recent {
        let (d, pos) = (i.u128()?, i.u64()?);
        index.recent.insert(d, pos);
        index.recent_order.push_back(d);
    }
    let sum = i.h.finish_128();
    let mut stored = [0u8; 16];
    i.r.read_exact(&mut stored)?;
    if u128::from_le_bytes(stored) != sum {
        return Err(bad("the snapshot's checksum does not match"));
    }
    let mut extra = [0u8; 1];
    if i.r.read(&mut extra)? != 0 {
        return Err(bad("bytes after the snapshot's checksum"));
    }
    // Every reference must point inside the tables, or a damaged file would panic later.
    let (np, nk, nl) = (
        index.people.len() as u64,
        index.keys.len() as u64,
        index.lists.len() as u64,
    );
    for p in 0..index.people.len() {
        let c = &index.people[p];
        let key_ok = |k: u32| k == super::index::NO_KEY || u64::from(k) < nk;
        let keys_ok = match c.keys {
            [super::index::MANY_KEYS, l] => u64::from(l) < nl,
            [a, b] => key_ok(a) && key_ok(b),
        };
        if u64::from(c.merged_into) > np || !keys_ok {
            return Err(bad("a person refers outside the snapshot"));
        }
    }
    for k in 0..index.keys.len() {
        let r = &index.keys[k];
        if u64::from(r.one) > np
            || u64::from(r.many) > nl
            || usize::from(r.kind) >= index.kinds.len()
        {
            return Err(bad("a key refers outside the snapshot"));
        }
    }
    if index
        .lists
        .iter()
        .flat_map(|l| l.iter())
        .any(|v| u64::from(*v) >= np.max(nk))
    {
        return Err(bad("a list refers outside the snapshot"));
    }
    rebuild_tables(&mut index);
    Ok(Some(index))
}

/// The lookup tables, from the people and keys.
fn rebuild_tables(index: &mut Index) {
    let people = &index.people;
    let mut by_lead = HashTable::with_capacity(people.len());
    for i in 0..people.len() {
        by_lead.insert_unique(lead_hash(&people[i].lead_id), i as u32, |&j| {
            lead_hash(&people[j as usize].lead_id)
        });
    }
    let keys = &index.keys;
    let mut by_key = HashTable::with_capacity(keys.len());
    for k in 0..keys.len() {
        by_key.insert_unique(join(keys[k].digest) as u64, k as u32, |&j| {
            join(keys[j as usize].digest) as u64
        });
    }
    index.by_lead = by_lead;
    index.by_key = by_key;
}
