//! Shared helpers for the integration tests: the real `leadgate` binary, a real Kafka-protocol
//! broker (tansu) and a real Kafka client (rdkafka's consumer). A missing service fails the test
//! with a message saying how to get it; nothing is skipped.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_leadgate");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A tansu broker on a free port, killed on drop.
pub struct Broker {
    child: Child,
    pub port: u16,
    /// The port clients are told to use (the broker's own, or a [`Proxy`] in front of it).
    advertised: u16,
}

fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return p.into();
    }
    let home_bin = std::env::var("HOME")
        .map(|h| PathBuf::from(h).join(".cargo/bin/tansu"))
        .ok();
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("tansu"))
            .find(|p| p.is_file())
    });
    on_path.or(home_bin.filter(|p| p.is_file())).unwrap_or_else(|| {
        panic!("the Kafka-protocol broker `tansu` is not installed: run scripts/test (it installs it), or set TANSU_BIN")
    })
}

impl Broker {
    /// A broker keeping its data in memory.
    pub fn start() -> Self {
        let port = free_port();
        Self::start_on(port, port)
    }

    /// A broker that tells clients to reach it through a [`Proxy`] on `advertised`, so a test
    /// can cut the network between the gateway and a broker that stays up.
    pub fn start_behind(advertised: u16) -> Self {
        Self::start_on(free_port(), advertised)
    }

    fn start_on(port: u16, advertised: u16) -> Self {
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised_url = format!("tcp://127.0.0.1:{advertised}");
        let log = std::env::temp_dir().join(format!("tansu-{port}.log"));
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised_url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(&log)
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .spawn()
            .expect("cannot start tansu");
        let broker = Self {
            child,
            port,
            advertised,
        };
        assert!(
            wait_for_port(port, Duration::from_secs(20)),
            "tansu did not listen on {port}; see {}",
            log.display()
        );
        broker
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
    }

    /// Stops the broker (as an outage would).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One message read back from Kafka.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub key: String,
    pub value: Value,
    pub headers: Vec<(String, String)>,
}

impl Consumed {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads `topic` from the beginning with a fresh consumer group until `want` messages arrived or
/// `within` passed; returns what it read.
pub fn consume(brokers: &str, topic: &str, want: usize, within: Duration) -> Vec<Consumed> {
    consume_until(brokers, topic, within, |got| got.len() >= want)
}

/// `records` in the order consumed, each event once. Delivery is at least once: a record delivered
/// but not yet acknowledged when a gateway was killed comes again, with its `event_id`.
pub fn once_per_event(records: Vec<Consumed>) -> Vec<Consumed> {
    let mut seen = std::collections::HashSet::new();
    records
        .into_iter()
        .filter(|c| seen.insert(c.value["event_id"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// Reads `topic` until `want` distinct events arrived or `within` passed; each event once.
pub fn consume_events(brokers: &str, topic: &str, want: usize, within: Duration) -> Vec<Consumed> {
    let got = consume_until(brokers, topic, within, |got| {
        got.iter()
            .map(|c| c.value["event_id"].as_str().unwrap_or_default())
            .collect::<std::collections::HashSet<_>>()
            .len()
            >= want
    });
    once_per_event(got)
}

/// Reads `topic` from the beginning until `done` says so or `within` passed.
pub fn consume_until(
    brokers: &str,
    topic: &str,
    within: Duration,
    done: impl Fn(&[Consumed]) -> bool,
) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("test-{}", uuid::Uuid::now_v7()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while !done(&out) && Instant::now() < deadline {
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let Ok(msg) = msg else { continue };
        let headers = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| {
                        (
                            x.key.to_owned(),
                            String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Consumed {
            key: String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned(),
            // A tombstone (an erasure) has no value: null.
            value: match msg.payload() {
                None => Value::Null,
                Some(p) => serde_json::from_slice(p).expect("records are JSON"),
            },
            headers,
        });
    }
    out
}

/// Appends to `path` (a gateway's log, kept beside its data directory for post-mortems).
fn log_file(path: &Path) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(Stdio::from)
        .unwrap_or(Stdio::inherit())
}

/// A running `leadgate run`, killed (SIGKILL) on drop.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// What the binary printed at start-up.
    pub banner: Vec<String>,
}

impl Gateway {
    /// Starts the binary with `config` (a settings file's text, or the built-in default) on a free
    /// port with `data_dir`.
    pub fn start(config: Option<&str>, data_dir: &Path) -> Self {
        Self::start_with_env(config, data_dir, &[])
    }

    /// Like [`Gateway::start`], with extra environment variables (for `${VAR}` in the config).
    pub fn start_with_env(config: Option<&str>, data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.envs(env.iter().copied());
        cmd.arg("run")
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir);
        if let Some(text) = config {
            let path = data_dir.with_extension("toml");
            std::fs::write(&path, text).unwrap();
            cmd.arg("--config").arg(path);
        }
        let mut child = cmd
            .env("LEADGATE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log_file(&data_dir.with_extension("log")))
            .spawn()
            .expect("cannot start leadgate");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let addr: SocketAddr = first
            .rsplit("http://")
            .next()
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| {
                let log =
                    std::fs::read_to_string(data_dir.with_extension("log")).unwrap_or_default();
                panic!("leadgate did not start; it printed {first:?}; its log:\n{log}")
            });
        let mut banner = vec![first];
        // The rest of the banner is printed at once; keep reading in the background so the pipe never fills.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
            banner.push(line);
        }
        Self {
            child,
            addr,
            data_dir: data_dir.to_owned(),
            banner,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`"STOP"`, `"CONT"`) to the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} failed");
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().unwrap()
    }

    /// The records in the embedded output of `topic`: its complete lines (a running gateway may
    /// be writing the last one as it is read; a consumer reads up to the last newline too).
    pub fn spooled(&self, topic: &str) -> Vec<Value> {
        let path = self.data_dir.join("output").join(format!("{topic}.jsonl"));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .map(|l| serde_json::from_str(l).expect("spool lines are JSON"))
            .collect()
    }

    /// Waits until `topic`'s embedded output has at least `n` records.
    pub fn wait_spooled(&self, topic: &str, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.spooled(topic);
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn kafka_config(brokers: &str, extra: &str) -> String {
    format!(
        "[output]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\nmessage_timeout = \"5s\"\ntopic_partitions = 1\n\n{extra}\n[[connectors]]\nname = \"webform\"\ntype = \"webhook\"\n"
    )
}

/// Asserts that the gateway acknowledged a lead (202) and returns its `event_id`.
pub async fn accepted(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), 202, "the lead was acknowledged");
    let body: Value = resp.json().await.expect("a JSON answer");
    body["event_id"].as_str().expect("an event_id").to_owned()
}

/// Serves `app` on a free local port (a platform's API, replayed); returns the port.
pub async fn serve_local(app: axum::Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// GET `url` and its JSON answer.
pub async fn get_text(client: &reqwest::Client, url: &str) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

pub async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

pub async fn post_json(client: &reqwest::Client, url: &str, body: &Value) -> reqwest::Response {
    client.post(url).json(body).send().await.expect("request")
}

/// An error answer's status and its `error` object (`code`, `field`, `message`).
pub async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("errors are JSON");
    (status, body["error"].clone())
}

/// Posts one lead with a usable phone to the gateway's `webform` webhook; its `event_id` once it
/// is acknowledged (a `202`).
pub async fn post_lead(gw: &Gateway) -> String {
    let lead = serde_json::json!({"phone": "13800138000"});
    let url = gw.url("/v1/webhooks/webform");
    accepted(post_json(&reqwest::Client::new(), &url, &lead).await).await
}

/// Concurrent clients posting distinct leads until stopped or until the server goes away.
pub struct Load {
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Starts `clients` clients posting to `url`, each at most `max_each` leads.
pub fn start_load(url: &str, clients: usize, max_each: usize) -> Load {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let tasks = (0..clients)
        .map(|_| {
            let (url, stop) = (url.to_owned(), stop.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut acked = Vec::new();
                for _ in 0..max_each {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let n = NEXT.fetch_add(1, Ordering::Relaxed);
                    let lead = serde_json::json!({"name": format!("客户{n}"), "phone": format!("139{n:08}")});
                    let Ok(resp) = http.post(&url).json(&lead).send().await else { break };
                    if resp.status() != 202 {
                        break;
                    }
                    let Ok(body) = resp.json::<Value>().await else { break };
                    acked.push(body["event_id"].as_str().unwrap_or_default().to_owned());
                }
                acked
            })
        })
        .collect();
    Load { tasks, stop }
}

impl Load {
    /// Stops the clients and returns the event ids of every acknowledged lead.
    pub async fn finish(self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.unwrap());
        }
        all
    }
}

/// Puts `gw` under concurrent load, kills it with SIGKILL mid-load, and returns the event ids of
/// every lead it acknowledged before dying.
pub async fn kill_under_load(gw: &mut Gateway) -> Vec<String> {
    let load = start_load(&gw.url("/v1/webhooks/webform"), 8, 100_000);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gw.kill();
    let acked = load.finish().await;
    assert!(
        acked.len() > 20,
        "the load ran ({} acknowledged)",
        acked.len()
    );
    acked
}

/// A TCP forwarder from `port` to a broker: stopping it is a network outage for every client.
pub struct Proxy {
    pub port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// A proxy on a free port, not forwarding yet.
    pub fn new() -> Self {
        Self {
            port: free_port(),
            task: None,
        }
    }

    /// Forwards connections to `target` until [`Proxy::stop`].
    pub async fn start(&mut self, target: u16) {
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.task = Some(tokio::spawn(async move {
            // Dropping the set (when this task is aborted) closes every forwarded connection.
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// A private MariaDB server (Debian's `mariadb-server` binaries) in a temporary directory, with
/// the binary log on (row format) and no grant checks; killed on drop.
#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
pub struct Mariadb {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
fn mariadb_bin(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| {
            ["/usr/sbin", "/usr/bin"]
                .iter()
                .map(|d| Path::new(d).join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "MariaDB's `{name}` is not installed: run scripts/test (it installs mariadb-server)"
            )
        })
}

#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
impl Mariadb {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // Each server has its own temporary directory: two bootstraps sharing /tmp collide.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let out = Command::new(mariadb_bin("mariadb-install-db"))
            .args(["--no-defaults", "--user=root", "--skip-test-db"])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg("--auth-root-authentication-method=normal")
            .output()
            .expect("cannot run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let child = Self::spawn(dir.path(), port);
        let db = Self { child, port, dir };
        db.wait_ready();
        db
    }

    fn spawn(dir: &Path, port: u16) -> Child {
        Command::new(mariadb_bin("mariadbd"))
            .args(["--no-defaults", "--user=root", "--bind-address=127.0.0.1"])
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--tmpdir={}", dir.join("tmp").display()))
            .arg(format!("--port={port}"))
            .arg(format!("--log-bin={}", dir.join("data/binlog").display()))
            .args([
                "--server-id=1",
                "--binlog-format=ROW",
                "--skip-grant-tables",
                "--innodb-buffer-pool-size=64M",
                "--innodb-lock-wait-timeout=10",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_unicode_ci",
            ])
            .stdout(Stdio::null())
            .stderr(log_file(&dir.join("server.log")))
            .spawn()
            .expect("cannot start mariadbd")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.sql("SELECT 1").is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        panic!(
            "MariaDB did not start on port {}; its log:\n{log}",
            self.port
        );
    }

    /// Runs SQL with the `mariadb` client; the output's rows, tab-separated.
    pub fn sql(&self, statements: &str) -> Result<String, String> {
        let out = Command::new(mariadb_bin("mariadb"))
            .args(["--no-defaults", "-h127.0.0.1", "-uroot", "-N", "-B"])
            .arg("--default-character-set=utf8mb4")
            .arg(format!("-P{}", self.port))
            .args(["-e", statements])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Stops the server (SIGKILL, like a crash) and starts it again on the same port and data.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self.dir.path(), self.port);
        self.wait_ready();
    }

    /// Kills every client connection using database `db` (`KILL CONNECTION`); how many.
    pub fn kill_connections(&self, db: &str) -> usize {
        let ids = self
            .sql(&format!(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = '{db}' AND ID <> CONNECTION_ID()"
            ))
            .unwrap();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        for id in &ids {
            let _ = self.sql(&format!("KILL CONNECTION {id}"));
        }
        ids.len()
    }

    /// A new, empty database and its URL.
    pub fn database(&self, name: &str) -> String {
        self.sql(&format!("CREATE DATABASE {name}")).unwrap();
        format!("mysql://root@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
