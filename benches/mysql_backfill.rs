//! MySQL backfill: how fast the source reads a table into the journal. The real connector
//! (`leadgate::sources::mysql`) snapshots the table at `MYSQL_URL` in pages of `BATCH` rows,
//! turns each row into an event and commits each page with its checkpoint to a journal on disk
//! (fsynced), exactly as `leadgate run` does; nothing downstream of the journal is measured.
//!
//! Run it with `scripts/bench-mysql [ROWS]`, which starts a private MariaDB and fills the table.

use std::time::{Duration, Instant};

use leadgate::config::{ConnectorConfig, load_str};
use leadgate::intake::Journal;

// The allocator `leadgate run` uses (src/main.rs), so the figure is the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let Ok(url) = std::env::var("MYSQL_URL") else {
        eprintln!("MYSQL_URL is not set: run scripts/bench-mysql, which starts a MariaDB for it");
        std::process::exit(2);
    };
    let rows: u64 = std::env::var("ROWS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let batch: usize = std::env::var("BATCH")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5000);
    let settings = load_str(
        &format!(
            "[[connectors]]\nname = \"crm\"\ntype = \"mysql\"\nurl = \"{url}\"\ntable = \"leads\"\n\
             timestamp_column = \"updated_at\"\nbatch_size = {batch}\npoll_interval = \"1h\"\n"
        ),
        std::path::Path::new("bench.toml"),
    )
    .expect("bench settings");
    let connectors: Vec<ConnectorConfig> = settings.connectors;
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let journal = Journal::open(&dir.path().join("journal.redb"), Duration::from_secs(60))
            .expect("journal");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let started = Instant::now();
        let (running, _supervisor) =
            leadgate::sources::start_all(&connectors, &journal, dir.path(), u64::MAX, &stopped)
                .expect("start");
        let statuses = running.statuses;
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let s = statuses.get("crm").expect("status");
            if let Some(e) = &s.last_error {
                panic!("the source failed: {e}");
            }
            if s.snapshot.is_none() && s.events_journaled >= rows && s.checkpoint.is_some() {
                let secs = started.elapsed().as_secs_f64();
                println!(
                    "backfill: {} rows in {secs:.2}s = {:.0} rows/s (batch {batch}, journal fsynced per batch)",
                    s.events_journaled,
                    s.events_journaled as f64 / secs
                );
                break;
            }
        }
        stop.send_replace(true);
        let peak = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .unwrap_or(0);
        println!("peak resident memory: {:.0} MiB", peak as f64 / 1024.0);
    });
}
