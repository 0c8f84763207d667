//! Webhook intake to durable acknowledgement: how many leads per second the gateway acknowledges
//! (each 202 sent only after its event is fsynced), and the latency of those acknowledgements.
//! The delivery loop runs meanwhile on the embedded output, as in production.
//!
//!     cargo bench --bench intake                      # 20000 leads, 64 concurrent clients
//!     LEADS=50000 CLIENTS=128 cargo bench --bench intake

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use leadgate::config::Settings;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing we need.
    let leads = env_or("LEADS", 20_000);
    let clients = env_or("CLIENTS", 64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench(leads, clients));
}

async fn bench(leads: usize, clients: usize) {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        data_dir: dir.path().join("data"),
        ..Settings::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/v1/webhooks/webform",
        listener.local_addr().unwrap()
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(leadgate::app::run_on(settings, listener, async {
        let _ = stop_rx.await;
    }));

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (url, next) = (url.clone(), next.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut latencies = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= leads {
                        return latencies;
                    }
                    let body = format!(
                        r#"{{"name":"客户{n}","phone":"139{n:08}","email":"user{n}@example.com","company":"某某科技有限公司"}}"#
                    );
                    let t = Instant::now();
                    let resp = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .expect("request");
                    assert_eq!(resp.status(), 202);
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::with_capacity(leads);
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!("intake to durable ack: {leads} leads, {clients} concurrent clients");
    println!(
        "  throughput: {:.0} leads/s",
        leads as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}
