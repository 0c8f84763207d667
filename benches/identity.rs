//! Identity resolution with the embedded store, two measurements:
//!
//! 1. quality: the evaluation harness (`leadgate::identity::eval`) on a large synthetic sample,
//!    pairwise precision, recall, F1 and the worst over-merge;
//! 2. speed and size: 1,000,000 leads resolved in the pipeline's batches (500) against a store on
//!    disk, made durable (`sync`) every 5,000 leads as the delivery loop does under load:
//!    leads per second, the time to reopen the store from the snapshot its close wrote and,
//!    for comparison in the same run, by replaying the whole log; then the file's bytes and the
//!    process's resident memory per person.
//!
//! Run it with:
//!
//!     cargo bench --bench identity                 # 100k people for quality, 1M leads for speed
//!     PEOPLE=20000 LEADS=200000 BATCH=500 cargo bench --bench identity
//!     SYNC=500 cargo bench --bench identity        # sync after every batch instead
//!     PEOPLE=100 LEADS=16000000 cargo bench --bench identity   # 10M people: memory at scale

use std::time::Instant;

// The allocator `leadgate run` uses (src/main.rs), so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use leadgate::identity::eval::{evaluate, generate};
use leadgate::identity::{
    EMAIL, EmbeddedIdentityStore, IdentityKey, IdentityRequest, IdentityStore, PHONE, Policy,
    Resolution,
};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of this process, in bytes (Linux): now (`VmRSS`) or at its peak (`VmHWM`).
fn rss() -> u64 {
    status("VmRSS:")
}

fn status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn main() {
    let people = env("PEOPLE", 100_000);
    let leads = env("LEADS", 1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = Policy::default();

    let samples = generate(people, 42);
    let store =
        EmbeddedIdentityStore::open(&dir.path().join("eval.redb"), policy.clone()).expect("store");
    let started = Instant::now();
    let r = evaluate(&samples, &store, &policy, 500).expect("evaluate");
    println!(
        "quality: {} records of {} people in {:.1}s: precision {:.4}, recall {:.4}, F1 {:.4}, worst over-merge {:.2}x",
        r.records,
        r.people,
        started.elapsed().as_secs_f64(),
        r.precision,
        r.recall,
        r.f1,
        r.worst_over_merge
    );
    drop(store);

    // Speed: about 1.6 leads per person; half carry a phone and an email, a quarter one each.
    // Requests are made batch by batch, so that memory measures the store, not the input.
    let mut rng = fastrand::Rng::with_seed(7);
    let persons = leads * 10 / 16;
    let mut request = |i: usize| {
        let p = if i < persons { i } else { rng.usize(..persons) };
        let mut keys = Vec::with_capacity(2);
        let shape = rng.u8(0..4);
        if shape != 0 {
            keys.push(IdentityKey::new(PHONE, format!("+86139{p:08}")));
        }
        if shape != 1 {
            keys.push(IdentityKey::new(EMAIL, format!("person{p}@qq.com")));
        }
        IdentityRequest {
            event_id: format!("{i:016x}"),
            resolve: true,
            keys,
            connector: "bench".into(),
            received_at: "2026-11-24T00:00:00Z".into(),
            traits: leadgate::identity::Traits {
                name: Some(format!("person{p}")),
                ..Default::default()
            },
            profile: vec![("name".into(), format!("person {p}"))],
            ..Default::default()
        }
    };
    let path = dir.path().join("identity.redb");
    let store = EmbeddedIdentityStore::open(&path, policy).expect("store");
    let before = rss();
    // Only resolving and syncing are timed, not building the requests.
    let mut timed = std::time::Duration::ZERO;
    let mut syncing = std::time::Duration::ZERO;
    let mut new = 0usize;
    let batch = env("BATCH", 500);
    let sync = env("SYNC", 5_000).max(batch);
    let mut unsynced = 0;
    for start in (0..leads).step_by(batch) {
        let requests: Vec<IdentityRequest> = (start..(start + batch).min(leads))
            .map(&mut request)
            .collect();
        if start > 0 && start % 1_000_000 == 0 {
            eprintln!(
                "  {start} leads, {:.0}s, {} MiB resident",
                timed.as_secs_f64(),
                rss() / 1048576
            );
        }
        let started = Instant::now();
        let resolved = store.resolve(&requests).expect("resolve");
        unsynced += requests.len();
        if unsynced >= sync {
            let t = Instant::now();
            store.sync().expect("sync");
            syncing += t.elapsed();
            unsynced = 0;
        }
        timed += started.elapsed();
        for r in resolved {
            if let Resolution::Person(o) = r {
                new += usize::from(o.status == leadgate::lead::IdentityStatus::New);
            }
        }
    }
    let started = Instant::now();
    store.sync().expect("sync");
    let secs = (timed + started.elapsed()).as_secs_f64();
    let grown = rss().saturating_sub(before);
    let file = std::fs::metadata(&path).map_or(0, |m| m.len());
    println!(
        "speed: {leads} leads in {secs:.1}s = {:.0} leads/s ({new} people created; {:.1}s of it in syncs every {sync} leads)",
        leads as f64 / secs,
        syncing.as_secs_f64()
    );
    println!(
        "size: store file {:.0} MiB = {} bytes per person; resident memory grew {:.0} MiB = {} bytes per person",
        file as f64 / 1048576.0,
        file / new.max(1) as u64,
        grown as f64 / 1048576.0,
        grown / new.max(1) as u64
    );
    // A clean shutdown writes the index's snapshot.
    let closing = Instant::now();
    store.close().expect("close");
    let snapshot = path.with_extension("snapshot");
    println!(
        "close: snapshot of {new} people written in {:.1}s ({:.0} MiB)",
        closing.elapsed().as_secs_f64(),
        std::fs::metadata(&snapshot).map_or(0, |m| m.len()) as f64 / 1048576.0
    );
    drop(store);
    let reopen = |what: &str| {
        let reopened = Instant::now();
        let store = EmbeddedIdentityStore::open(&path, Policy::default()).expect("reopen");
        store.ready().expect("the index rebuilt");
        let secs = reopened.elapsed().as_secs_f64();
        println!("reopen: the index of {new} people {what} in {secs:.1}s");
        (store, secs)
    };
    let (store, from_snapshot) = reopen("read from its snapshot (and the log after it)");
    drop(store);
    // The floor it is compared with, in the same run: the whole log replayed.
    let aside = path.with_extension("snapshot.aside");
    std::fs::rename(&snapshot, &aside).expect("move the snapshot aside");
    let (store, replayed) = reopen("rebuilt from the whole log");
    drop(store);
    std::fs::rename(&aside, &snapshot).expect("put the snapshot back");
    println!(
        "reopen: the snapshot takes {:.0}% of the full replay's time",
        100.0 * from_snapshot / replayed.max(f64::EPSILON)
    );
    // An erasure (`POST /v1/erasures`): the person found by address, then the log rewritten
    // without them and the index rebuilt from it; the full replay above is its floor.
    {
        let store = EmbeddedIdentityStore::open(&path, Policy::default()).expect("reopen");
        store.ready().expect("ready");
        let gone = IdentityKey::new(EMAIL, "person12345@qq.com");
        let started = Instant::now();
        let found = store
            .erasable(&|k: &IdentityKey| *k == gone, &[])
            .expect("erasable");
        let finding = started.elapsed().as_secs_f64();
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        let rewriting = Instant::now();
        store.erase(&found.lead_ids).expect("erase");
        let rewrite = rewriting.elapsed().as_secs_f64();
        println!(
            "erasure: {} people ({} events) found in {finding:.1}s; the log ({:.0} MiB) rewritten and the index rebuilt and snapshotted in {rewrite:.1}s = {:.1}x the full replay",
            found.lead_ids.len(),
            found.event_ids.len(),
            size as f64 / 1048576.0,
            (finding + rewrite) / replayed.max(f64::EPSILON)
        );
        assert!(
            store
                .find(std::slice::from_ref(&gone))
                .expect("find")
                .is_empty()
        );
    }
    // A crash: another TAIL leads (1M: what an idle gateway logs at most between snapshots)
    // resolved and synced, then the store dropped without closing.
    let tail = env("TAIL", 1_000_000);
    if tail > 0 {
        let store = EmbeddedIdentityStore::open(&path, Policy::default()).expect("reopen");
        store.ready().expect("ready");
        let mut unsynced = 0;
        for start in (leads..leads + tail).step_by(batch) {
            let requests: Vec<IdentityRequest> = (start..(start + batch).min(leads + tail))
                .map(&mut request)
                .collect();
            store.resolve(&requests).expect("resolve");
            unsynced += requests.len();
            if unsynced >= sync {
                store.sync().expect("sync");
                unsynced = 0;
            }
        }
        store.sync().expect("sync");
        drop(store);
        reopen(&format!(
            "read from its snapshot and {tail} leads of log after it (a crash)"
        ));
    }
    println!(
        "peak resident memory of the process: {:.0} MiB (the index in memory, and redb's page cache)",
        status("VmHWM:") as f64 / 1048576.0
    );
}
