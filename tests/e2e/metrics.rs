//! Metrics as an operator gets them: a real Prometheus server (Debian's package) scrapes the real
//! binary, and the counts read back through Prometheus's query API match the leads the test
//! posted. The shipped alert rules pass `promtool check rules` and their unit tests, and every
//! expression of the rules and of the Grafana dashboard evaluates on that server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Gateway, free_port};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn tool(env: &str, name: &str) -> String {
    std::env::var(env).unwrap_or_else(|_| name.to_owned())
}

/// A private Prometheus server scraping one target every second; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: std::net::SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let rules = Path::new(ROOT).join("deploy/prometheus/leadgate-rules.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: leadgate\n    static_configs:\n      - targets: ['{target}']\n        labels:\n          instance: gw-1\n",
            rules.display()
        );
        let path = dir.path().join("prometheus.yml");
        std::fs::write(&path, config).unwrap();
        let port = free_port();
        let bin = tool("PROMETHEUS_BIN", "prometheus");
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.path().join("prometheus.log"))
                    .map(Stdio::from)
                    .unwrap(),
            )
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start Prometheus ({bin}): {e}; scripts/test installs Debian's `prometheus`")
            });
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(self.url("/-/ready")).await
                && r.status().is_success()
            {
                return;
            }
            assert!(Instant::now() < deadline, "Prometheus did not get ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `GET /api/v1/query`: the whole answer (`status`, `data` or `error`).
    async fn answer(&self, query: &str) -> Value {
        reqwest::Client::new()
            .get(self.url("/api/v1/query"))
            .query(&[("query", query)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// An instant query's series, as (labels, value).
    async fn query(&self, query: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let answer = self.answer(query).await;
        assert_eq!(answer["status"], "success", "{query}: {answer}");
        answer["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let labels = serde_json::from_value(s["metric"].clone()).unwrap();
                let value = s["value"][1].as_str().unwrap().parse().unwrap();
                (labels, value)
            })
            .collect()
    }

    /// `query`'s single value (0 without a series).
    async fn value(&self, query: &str) -> f64 {
        let series = self.query(query).await;
        assert!(series.len() <= 1, "{query}: {series:?}");
        series.first().map_or(0.0, |s| s.1)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const CONFIG: &str = "[[connectors]]\nname = \"site-a\"\ntype = \"webhook\"\nexternal_id_field = \"id\"\n\n\
                      [[connectors]]\nname = \"site-b\"\ntype = \"webhook\"\n";

async fn post(gw: &Gateway, connector: &str, body: Value, key: Option<&str>) -> u16 {
    let mut req = reqwest::Client::new()
        .post(gw.url(&format!("/v1/webhooks/{connector}")))
        .json(&body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_counts_that_match_the_leads_posted() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(Some(CONFIG), &dir.path().join("gw"));
    // site-a: four good leads (one sent twice with the same Idempotency-Key), one lead sent again
    // by the platform (same id), two that cannot be used. site-b: two good, one unusable, one
    // body that is not JSON.
    for (id, phone) in [
        ("a1", "13800138001"),
        ("a2", "13800138002"),
        ("a3", "13800138003"),
    ] {
        let lead = json!({"id": id, "name": "张三", "phone": phone});
        assert_eq!(post(&gw, "site-a", lead, None).await, 202);
    }
    let again = json!({"id": "a2", "name": "张三", "phone": "13800138002", "note": "resent"});
    assert_eq!(post(&gw, "site-a", again, None).await, 202);
    let keyed = json!({"id": "a4", "email": "li.si@example.cn"});
    assert_eq!(post(&gw, "site-a", keyed.clone(), Some("k-1")).await, 202);
    // Sent again with its key: answered with the first receipt, nothing stored.
    assert_eq!(post(&gw, "site-a", keyed, Some("k-1")).await, 202);
    for bad in [
        json!({"id": "a9", "name": "无联系方式"}),
        json!({"id": "a10", "phone": "123"}),
    ] {
        assert_eq!(post(&gw, "site-a", bad, None).await, 202);
    }
    for (name, phone) in [("王五", "13900139001"), ("赵六", "13900139002")] {
        let lead = json!({"name": name, "phone": phone});
        assert_eq!(post(&gw, "site-b", lead, None).await, 202);
    }
    let unusable = json!({"email": "not-an-address"});
    assert_eq!(post(&gw, "site-b", unusable, None).await, 202);
    let not_json = reqwest::Client::new()
        .post(gw.url("/v1/webhooks/site-b"))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status().as_u16(), 400);
    gw.wait_spooled("leads.clean", 6, Duration::from_secs(20));
    gw.wait_spooled("leads.rejected", 3, Duration::from_secs(20));

    let prom = Prometheus::start(gw.addr);
    prom.ready().await;
    // Delivered records are counted once the output confirmed them: wait for the last ones.
    let deadline = Instant::now() + Duration::from_secs(30);
    while prom
        .value("sum(leadgate_component_sent_events_total)")
        .await
        < 9.0
    {
        assert!(Instant::now() < deadline, "not scraped yet");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let v = |q: &'static str| prom.value(q);
    assert_eq!(
        v(r#"leadgate_component_received_events_total{connector="site-a"}"#).await,
        7.0
    );
    assert_eq!(
        v(r#"leadgate_component_received_events_total{connector="site-b"}"#).await,
        3.0
    );
    assert!(v(r#"leadgate_component_received_event_bytes_total{connector="site-a"}"#).await > 0.0);
    for (connector, topic, n) in [
        ("site-a", "leads.clean", 4.0),
        ("site-a", "leads.rejected", 2.0),
        ("site-b", "leads.clean", 2.0),
        ("site-b", "leads.rejected", 1.0),
    ] {
        let q = format!(
            r#"leadgate_component_sent_events_total{{connector="{connector}",topic="{topic}"}}"#
        );
        assert_eq!(prom.value(&q).await, n, "{q}");
    }
    let discarded = prom
        .query(r#"leadgate_component_discarded_events_total{connector="site-a"}"#)
        .await;
    let by_reason: BTreeMap<String, (f64, String)> = discarded
        .into_iter()
        .map(|(l, n)| (l["reason"].clone(), (n, l["intentional"].clone())))
        .collect();
    assert_eq!(by_reason["duplicate"], (1.0, "true".to_owned()));
    assert_eq!(by_reason["replayed_request"], (1.0, "true".to_owned()));
    assert_eq!(by_reason["rejected"], (2.0, "false".to_owned()));

    // Rejections by code: the code each rejected record was decided by.
    let mut want: BTreeMap<(String, String), f64> = BTreeMap::new();
    for r in gw.spooled("leads.rejected") {
        let codes: Vec<&str> = r["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["code"].as_str().unwrap())
            .collect();
        let code = codes.get(1).or(codes.first()).unwrap().to_string();
        let connector = r["source"]["connector"].as_str().unwrap().to_owned();
        *want.entry((connector, code)).or_default() += 1.0;
    }
    let got: BTreeMap<(String, String), f64> = prom
        .query("leadgate_rejections_total")
        .await
        .into_iter()
        .map(|(l, n)| ((l["connector"].clone(), l["code"].clone()), n))
        .collect();
    assert_eq!(got, want);
    assert!(want.len() >= 2, "more than one code: {want:?}");

    assert_eq!(
        v(r#"sum(leadgate_identity_outcomes_total{outcome="new"})"#).await,
        6.0
    );
    assert_eq!(
        v(r#"leadgate_component_errors_total{connector="site-b",error_type="invalid_request",stage="receiving"}"#).await,
        1.0
    );
    assert_eq!(
        v(r#"sum(leadgate_http_requests_total{route="/v1/webhooks/{connector}",status="202"})"#)
            .await,
        11.0
    );
    assert_eq!(
        v(r#"leadgate_connector_state{connector="site-a",state="passive"}"#).await,
        1.0
    );
    assert_eq!(v("leadgate_journal_backlog_events").await, 0.0);
    assert_eq!(v("leadgate_delivery_up").await, 1.0);
    assert_eq!(
        v("sum(leadgate_delivery_latency_seconds_count)").await,
        10.0,
        "one latency per delivered event (the replayed request stored none)"
    );

    // No phone, email or name in any label.
    let all = prom.query(r#"{__name__=~"leadgate_.+"}"#).await;
    assert!(all.len() > 20, "{}", all.len());
    for (labels, _) in &all {
        for value in labels.values() {
            assert!(
                !value.contains("138001") && !value.contains('@') && !value.contains('张'),
                "PII in a label: {labels:?}"
            );
        }
    }

    // Every expression of the shipped rules and dashboard evaluates, and names only metrics
    // leadgate describes.
    let described = described_metrics();
    for expr in shipped_expressions() {
        let answer = prom.answer(&expr.replace("$instance", ".*")).await;
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        for name in metric_names(&expr) {
            assert!(
                described.iter().any(|d| name == *d
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name == format!("{d}{s}"))),
                "{expr} names {name}, which leadgate does not export"
            );
        }
    }
    // The rules are loaded and healthy on the server.
    let rules: Value = reqwest::get(prom.url("/api/v1/rules"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let loaded = rules["data"]["groups"][0]["rules"].as_array().unwrap();
    assert!(loaded.len() >= 6, "{rules}");
    for r in loaded {
        assert_eq!(r["health"], "ok", "{r}");
    }
}

/// The metric names `src/telemetry.rs` describes (every metric leadgate exports is described).
fn described_metrics() -> Vec<String> {
    let source = std::fs::read_to_string(Path::new(ROOT).join("src/telemetry.rs")).unwrap();
    let names: Vec<String> = source
        .split("describe_")
        .skip(1)
        .filter_map(|rest| {
            let start = rest.find("\"leadgate_")? + 1;
            let end = rest[start..].find('"')? + start;
            Some(rest[start..end].to_owned())
        })
        .collect();
    assert!(names.len() > 20, "{names:?}");
    names
}

/// The `leadgate_...` names an expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("leadgate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every PromQL expression in `deploy/`: the alert rules' and the dashboard panels'.
fn shipped_expressions() -> Vec<String> {
    let mut exprs = Vec::new();
    let rules =
        std::fs::read_to_string(Path::new(ROOT).join("deploy/prometheus/leadgate-rules.yml"))
            .unwrap();
    // `expr:` is either on its line or a block (`expr: |`) indented below it.
    let lines: Vec<&str> = rules.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        if let Some(rest) = lines[i].trim_start().strip_prefix("expr:") {
            let rest = rest.trim();
            if rest == "|" {
                let indent = lines[i].len() - lines[i].trim_start().len();
                let mut block = String::new();
                i += 1;
                while i < lines.len()
                    && (lines[i].trim().is_empty()
                        || lines[i].len() - lines[i].trim_start().len() > indent)
                {
                    block.push_str(lines[i].trim());
                    block.push(' ');
                    i += 1;
                }
                exprs.push(block);
                continue;
            }
            exprs.push(rest.to_owned());
        }
        i += 1;
    }
    assert!(exprs.len() >= 9, "{exprs:?}");
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(ROOT).join("deploy/grafana/leadgate.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    assert_eq!(dashboard["uid"], "leadgate");
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let mut ids = std::collections::HashSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
        assert!(p["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert_eq!(p["datasource"]["type"], "prometheus");
        for g in ["x", "y", "w", "h"] {
            assert!(p["gridPos"][g].is_u64(), "{p}");
        }
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{p}");
        for t in targets {
            exprs.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    exprs
}

fn promtool(args: &[&str], dir: &PathBuf) -> std::process::Output {
    let bin = tool("PROMTOOL_BIN", "promtool");
    Command::new(&bin)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({bin}): {e}; scripts/test installs Debian's `prometheus`")
        })
}

#[test]
fn the_shipped_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = Path::new(ROOT).join("deploy/prometheus");
    for args in [
        &["check", "rules", "leadgate-rules.yml"][..],
        &["test", "rules", "leadgate-rules.test.yml"][..],
    ] {
        let out = promtool(args, &dir);
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
