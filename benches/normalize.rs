//! Normalize + validate throughput on one core: the same JSON-lines file as the Python baseline
//! (`scripts/bench/baseline.py`), mapped and normalized lead by lead (phone, email, name, the
//! rest). Parsing the file is not timed; normalization is.
//!
//!     python3 scripts/bench/gen_leads.py 1000000 > /tmp/leads-1m.jsonl
//!     LEADS_FILE=/tmp/leads-1m.jsonl cargo bench --bench normalize
//!
//! `scripts/bench/normalize` does all of it, baseline included.

use std::time::Instant;

// The allocator `leadgate run` uses (src/main.rs), so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use leadgate::mapping::Mapper;
use leadgate::normalize::normalize;

mod leads_file;

fn main() {
    let leads = leads_file::read();
    let mapper = Mapper::new(&Default::default());
    let region = phonenumber::country::Id::CN;
    // What the first lead would wait for: libphonenumber's metadata, China's number types, the
    // geocoding prefixes, the disposable-domain list. The gateway loads them as it starts.
    let started = Instant::now();
    leadgate::normalize::warm_up();
    let load = started.elapsed().as_secs_f64();
    println!("one-time load (metadata, geocoding, lists): {load:.2}s");
    // Pass 1 is cold: caches, and each foreign region's patterns on first use. The warm passes
    // after it are the steady state of a running gateway; there are several because a pass takes
    // about a second, and a shared host's speed wanders over seconds.
    let passes: usize = std::env::var("WARM_PASSES")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(5);
    let mut warm = Vec::new();
    for pass in 0..=passes {
        let started = Instant::now();
        let mut phones = 0usize;
        for lead in &leads {
            let n = normalize(&mapper.map(lead), region);
            phones += usize::from(n.contact.phone.is_some());
            std::hint::black_box(&n);
        }
        let secs = started.elapsed().as_secs_f64();
        let rate = leads.len() as f64 / secs;
        if pass == 0 {
            println!(
                "normalize + validate (cold): {} leads in {secs:.2}s on one core = {rate:.0} leads/s ({phones} valid phones)",
                leads.len(),
            );
            println!(
                "normalize + validate (cold, with the one-time load): {:.0} leads/s",
                leads.len() as f64 / (secs + load)
            );
        } else {
            warm.push(secs);
        }
    }
    if let (Some(min), Some(max)) = (
        warm.iter().copied().reduce(f64::min),
        warm.iter().copied().reduce(f64::max),
    ) {
        let total: f64 = warm.iter().sum();
        let n = leads.len() as f64;
        println!(
            "normalize + validate (warm): {} passes of {} leads in {total:.2}s on one core = {:.0} leads/s (passes {:.0}-{:.0})",
            warm.len(),
            leads.len(),
            n * warm.len() as f64 / total,
            n / max,
            n / min,
        );
    }
}
