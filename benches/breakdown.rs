//! Where normalization's time goes: each normalizer alone over the benchmark file's mapped fields,
//! in microseconds per lead (of all leads, so the parts add up to roughly the whole).
//!
//!     LEADS_FILE=/tmp/leadgate-bench-1000000.jsonl taskset -c 1 cargo bench --bench breakdown
//!
//! `ONLY=phone` runs one part (for a profiler); `ROUNDS=5` repeats them (the first is cold).

use std::hint::black_box;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use leadgate::mapping::{ContactField, MappedFields, Mapper};
use leadgate::normalize::{
    Email, Phone, clean_name, clean_text, normalize, place_of_phone, tidy_latin_case,
};

mod leads_file;

fn main() {
    let leads = leads_file::read();
    let mapper = Mapper::new(&Default::default());
    let region = phonenumber::country::Id::CN;
    let mapped: Vec<MappedFields> = leads.iter().map(|l| mapper.map(l)).collect();
    let field = |f: ContactField| mapped.iter().filter_map(move |m| m.values.get(&f));
    let phones: Vec<Phone> = field(ContactField::Phone)
        .filter_map(|p| Phone::parse(p, region).ok())
        .collect();
    let only = std::env::var("ONLY").ok();
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2);
    let time = |name: &str, run: &dyn Fn()| {
        if only.as_deref().is_some_and(|o| o != name) {
            return;
        }
        let started = Instant::now();
        run();
        let us = started.elapsed().as_secs_f64() * 1e6 / leads.len() as f64;
        println!("{name:>10}: {us:.3} µs/lead");
    };
    for round in 1..=rounds {
        println!("round {round}");
        time("map", &|| {
            leads.iter().for_each(|l| drop(black_box(mapper.map(l))))
        });
        time("phone", &|| {
            field(ContactField::Phone).for_each(|p| drop(black_box(Phone::parse(p, region))))
        });
        time("place", &|| {
            phones.iter().for_each(|p| {
                black_box(place_of_phone(p.e164()));
            })
        });
        time("email", &|| {
            field(ContactField::Email).for_each(|e| drop(black_box(Email::parse(e))))
        });
        time("name", &|| {
            field(ContactField::Name)
                .for_each(|n| drop(black_box(clean_name(n).map(tidy_latin_case))))
        });
        time("company", &|| {
            field(ContactField::Company).for_each(|c| drop(black_box(clean_text(c))))
        });
        time("normalize", &|| {
            mapped
                .iter()
                .for_each(|m| drop(black_box(normalize(m, region))))
        });
    }
}
