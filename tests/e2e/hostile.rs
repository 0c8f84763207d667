//! Hostile input and bad clients, seen from outside (issue 14): nothing accepted can stop
//! delivery, slow clients are cut off, floods do not spend a signed sender's budget, and every
//! error answer is JSON that names the field.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{BIN, Gateway, error_of, get_json, post_json, post_lead};

const CONFIG: &str = r#"
[intake]
max_body_bytes = 4096

[http]
header_timeout = "1s"
body_timeout = "1s"

[api]
token = "0123456789abcdef0123"

[[connectors]]
name = "webform"
type = "webhook"

[[connectors]]
name = "signed"
type = "webhook"
signature = { secret = "topsecret", header = "X-Signature" }
rate_limit = { per_second = 1, burst = 2 }
"#;

const TOKEN: &str = "0123456789abcdef0123";

/// A JSON body whose `x` nests so that the whole body is `levels` deep.
fn nested(levels: usize, name: &str) -> String {
    let inner = levels - 1;
    format!(
        r#"{{"name":"{name}","phone":"13800138000","x":{}{}}}"#,
        "[".repeat(inner - 1) + "[",
        "]".repeat(inner)
    )
}

fn start() -> (tempfile::TempDir, Gateway) {
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(Some(CONFIG), &dir.path().join("data"));
    (dir, gw)
}

/// Sends `raw` on a new connection and reads until the server closes it or `within` passes;
/// what came back, and whether the server closed the connection.
fn exchange(gw: &Gateway, raw: &[u8], within: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(within)).unwrap();
    s.write_all(raw).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_nested_too_deep_is_refused_and_delivery_goes_on() {
    let (_dir, gw) = start();
    let http = reqwest::Client::new();
    let url = gw.url("/v1/webhooks/webform");
    let post = |body: String| {
        http.post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // The reproducer of the issue: 127 levels.
    let (status, err) = error_of(post(nested(127, "deep")).await.unwrap()).await;
    assert_eq!(
        (status, err["code"].as_str(), err["field"].as_str()),
        (400, Some("body.too_deep"), Some("body")),
        "{err}"
    );
    let (status, _) = error_of(post(nested(65, "deeper")).await.unwrap()).await;
    assert_eq!(status, 400);
    // 64 levels are accepted, delivered, and do not stop the lead after them.
    let r = post(nested(64, "edge")).await.unwrap();
    assert_eq!(r.status(), 202);
    let r = post_json(
        &http,
        &url,
        &json!({"name": "after", "phone": "13900139000"}),
    )
    .await;
    assert_eq!(r.status(), 202);
    let clean = gw.wait_spooled("leads.clean", 2, Duration::from_secs(10));
    let names: Vec<&str> = clean
        .iter()
        .map(|r| r["raw"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["edge", "after"]);
    let ready: Value = get_json(&http, &gw.url("/readyz")).await;
    assert_eq!(
        (ready["status"].as_str(), ready["quarantined"].as_u64()),
        (Some("ready"), Some(0))
    );
    let q: Value = http
        .get(gw.url("/v1/quarantine"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(q["total"], 0, "{q}");
}

#[tokio::test(flavor = "multi_thread")]
async fn form_bodies_in_gb18030_keep_their_characters() {
    let (_dir, gw) = start();
    let (bytes, _, _) = encoding_rs::GB18030.encode("姓名=张三&手机=13800138000&公司=华为");
    let body: String = bytes
        .iter()
        .map(|&b| match b {
            b'=' | b'&' | b'0'..=b'9' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect();
    let http = reqwest::Client::new();
    for ct in [
        "application/x-www-form-urlencoded; charset=gb18030",
        "application/x-www-form-urlencoded; charset=GBK",
    ] {
        let r = http
            .post(gw.url("/v1/webhooks/webform"))
            .header("content-type", ct)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{ct}");
    }
    let r = http
        .post(gw.url("/v1/webhooks/webform"))
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=x-nonsense",
        )
        .body("a=1")
        .send()
        .await
        .unwrap();
    let (status, err) = error_of(r).await;
    assert_eq!(
        (status, err["code"].as_str(), err["field"].as_str()),
        (415, Some("body.unsupported_charset"), Some("content-type"))
    );
    let clean = gw.wait_spooled("leads.clean", 2, Duration::from_secs(10));
    assert_eq!(clean.len(), 2);
    for r in &clean {
        assert_eq!(r["contact"]["name"], "张三");
        assert_eq!(r["contact"]["company"], "华为");
        assert_eq!(
            r["raw"]["姓名"], "张三",
            "the raw fields are the characters sent"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unsigned_floods_do_not_spend_a_signed_connectors_limit() {
    let (_dir, gw) = start();
    let http = reqwest::Client::new();
    let url = gw.url("/v1/webhooks/signed");
    for _ in 0..50 {
        let r = http
            .post(&url)
            .header("X-Signature", "00")
            .body(r#"{"phone":"13800138000"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let body = r#"{"phone":"13600136000"}"#;
    let sig = leadgate::sources::webhook::sign("topsecret", None, body.as_bytes());
    let signed = || {
        http.post(&url)
            .header("X-Signature", &sig)
            .body(body)
            .send()
    };
    for _ in 0..2 {
        assert_eq!(
            signed().await.unwrap().status(),
            202,
            "the signed sender's burst is whole"
        );
    }
    let (status, err) = error_of(signed().await.unwrap()).await;
    assert_eq!((status, err["code"].as_str()), (429, Some("rate_limited")));
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_idle_clients_are_cut_off_while_others_are_served() {
    let (_dir, gw) = start();
    let started = Instant::now();
    // Idle: nothing sent. Slow headers: a request line, never finished.
    let idle = std::thread::spawn({
        let addr = gw.addr;
        move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            matches!(s.read(&mut [0u8; 64]), Ok(0) | Err(_))
        }
    });
    let (_, closed) = exchange(
        &gw,
        b"POST /v1/webhooks/webform HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(10),
    );
    assert!(closed, "a request whose headers never end is cut off");
    assert!(idle.join().unwrap(), "an idle connection is closed");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );

    // Slow body: headers promise 100 bytes, 10 come.
    let (answer, closed) = exchange(
        &gw,
        b"POST /v1/webhooks/webform HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"phone\":",
        Duration::from_secs(10),
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body.timeout"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(closed);

    // Meanwhile (and after) an ordinary request is served at once.
    post_lead(&gw).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_before_the_body_is_read_closes_the_connection_and_says_so() {
    let (_dir, gw) = start();
    // A body larger than the limit, of which the first part has come: refused without reading
    // the rest, so the connection cannot carry another request.
    let req = format!(
        "POST /v1/webhooks/webform HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{}",
        "x".repeat(8000)
    );
    let (answer, closed) = exchange(&gw, req.as_bytes(), Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(closed);
    // A refusal after the body was read whole keeps its connection.
    let req = "POST /v1/webhooks/webform HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\r\n{\"a\":";
    let (answer, closed) = exchange(&gw, req.as_bytes(), Duration::from_millis(500));
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(!closed, "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn http_layer_errors_are_json_and_the_bearer_scheme_is_case_insensitive() {
    let (_dir, gw) = start();
    let http = reqwest::Client::new();
    let (status, err) = error_of(
        http.delete(gw.url("/v1/webhooks/webform"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (405, Some("method.not_allowed"))
    );
    let (status, err) = error_of(http.get(gw.url("/v1/leads/%ff")).send().await.unwrap()).await;
    assert_eq!(
        (status, err["code"].as_str(), err["field"].as_str()),
        (400, Some("path.invalid"), Some("path")),
        "{err}"
    );
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let r = http
            .get(gw.url("/v1/quarantine"))
            .header("authorization", format!("{scheme} {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{scheme}");
    }
    let (status, err) = error_of(http.get(gw.url("/v1/quarantine")).send().await.unwrap()).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (401, Some("auth.missing_token"))
    );
}

#[test]
fn a_network_listen_without_a_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open.toml");
    std::fs::write(&path, "listen = \"0.0.0.0:18080\"\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("field `api.token`") && err.contains("0.0.0.0:18080"),
        "{err}"
    );
    // The same through `run --listen`: refused before anything opens.
    let out = std::process::Command::new(BIN)
        .args(["run", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("[api] token"), "{err}");
    // The old way round it is refused, saying why.
    std::fs::write(
        &path,
        "listen = \"0.0.0.0:18080\"\n[api]\nallow_unauthenticated = true\n",
    )
    .unwrap();
    let (code, _, err) = crate::config::validate(&path, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("field `api.allow_unauthenticated`") && err.contains("personal information"),
        "{err}"
    );
    // A named token is enough.
    std::fs::write(
        &path,
        "listen = \"0.0.0.0:18080\"\n[[api.tokens]]\nname = \"ops\"\ntoken = \"ops-token-0123456789\"\nscopes = [\"operator\"]\n",
    )
    .unwrap();
    let (code, _, err) = crate::config::validate(&path, &[]);
    assert_eq!(code, 0, "{err}");
}

/// Runs the gateway on `data` until it listens (then stops it) or exits; its exit code (`None`
/// when it started) and what it wrote to stderr.
fn start_on(data: &std::path::Path) -> (Option<i32>, String) {
    let log = data.with_extension("stderr");
    let mut child = std::process::Command::new(BIN)
        .args(["run", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let _ = std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    );
    let code = if first.contains("listening") {
        let _ = child.kill();
        let _ = child.wait();
        None
    } else {
        child.wait().unwrap().code()
    };
    (code, std::fs::read_to_string(&log).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_cannot_be_trusted_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut gw = Gateway::start(None, &data);
    post_lead(&gw).await;
    gw.wait_spooled("leads.clean", 1, Duration::from_secs(10));
    assert!(gw.terminate().success());
    let good = dir.path().join("good");
    std::fs::rename(&data, &good).unwrap();
    let fresh = || {
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap();
        for f in ["journal.redb", "identity.redb", "assignment.redb"] {
            std::fs::copy(good.join(f), data.join(f)).unwrap();
        }
    };
    for (file, len) in [
        ("journal.redb", 0),
        ("identity.redb", 0),
        ("assignment.redb", 100),
    ] {
        fresh();
        std::fs::File::options()
            .write(true)
            .open(data.join(file))
            .unwrap()
            .set_len(len)
            .unwrap();
        let (code, err) = start_on(&data);
        assert_eq!(code, Some(1), "{file} cut to {len} bytes: {err}");
        assert!(err.contains(file) && err.contains("cut short"), "{err}");
    }
    // Cut to half its length: refused, naming the file.
    fresh();
    let identity = data.join("identity.redb");
    let len = std::fs::metadata(&identity).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&identity)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let (code, err) = start_on(&data);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("identity.redb"), "{err}");
    // Random bytes over each page of the journal in turn: never a panic; a damaged page that is
    // in use is refused with the file's name.
    let len = std::fs::metadata(good.join("journal.redb")).unwrap().len();
    let mut refused = 0;
    for page in (0..len).step_by(8192) {
        fresh();
        let mut f = std::fs::File::options()
            .write(true)
            .open(data.join("journal.redb"))
            .unwrap();
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(page)).unwrap();
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        f.write_all(&noise).unwrap();
        drop(f);
        let (code, err) = start_on(&data);
        assert!(!err.contains("panicked"), "page at {page}: {err}");
        if code.is_some() {
            assert!(err.contains("journal.redb"), "page at {page}: {err}");
            refused += 1;
        }
    }
    assert!(refused > 0, "some damage was found");
}

/// A tmpfs of `mib` MiB at `dir`, unmounted on drop (the tests run as root, as CI does).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, mib: u32) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mounting a small tmpfs (needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir.to_owned())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_leads_and_recovers_without_a_restart_once_freed() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let _mount = SmallDisk::mount(&disk, 24);
    let data = disk.join("data");
    let mut gw = Gateway::start(None, &data);
    let http = reqwest::Client::new();
    let url = gw.url("/v1/webhooks/webform");
    let lead = |i: usize| json!({"name": format!("客户{i}"), "phone": format!("139{:08}", i), "notes": "x".repeat(2000)});
    let mut accepted = std::collections::BTreeSet::new();
    let mut i = 0;
    let mut post = async |i: usize| -> u16 {
        let r = post_json(&http, &url, &lead(i)).await;
        let status = r.status().as_u16();
        if status == 202 {
            let body: Value = r.json().await.unwrap();
            accepted.insert(body["event_id"].as_str().unwrap().to_owned());
        }
        status
    };
    for _ in 0..20 {
        assert_eq!(post(i).await, 202);
        i += 1;
    }
    // Fill the disk a block at a time, posting between blocks, so that the last leads taken
    // meet a full disk on their way out (identity store, output) as well as on their way in.
    let filler = disk.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 256 << 10];
    let mut refused = 0;
    let mut degraded = Vec::new();
    for _ in 0..2000 {
        let full = f.write_all(&block).is_err();
        for _ in 0..3 {
            match post(i).await {
                202 => {}
                503 => refused += 1,
                other => panic!("a full disk answered {other}"),
            }
            i += 1;
        }
        let ready: Value = get_json(&http, &gw.url("/readyz")).await;
        if let Some(e) = ready["delivery_error"].as_str() {
            degraded.push(e.to_owned());
        }
        if full && refused >= 5 && !degraded.is_empty() {
            break;
        }
        if full {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(f);
    eprintln!(
        "refused {refused}; delivery errors seen: {:?}",
        degraded.iter().collect::<std::collections::BTreeSet<_>>()
    );
    assert!(!degraded.is_empty(), "delivery met the full disk");
    assert!(refused >= 5, "the full disk was noticed");
    // Free the space: leads are taken again, and everything accepted is delivered, whole.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = post(i).await;
        i += 1;
        if status == 202 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} after the disk was freed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let ready: Value = get_json(&http, &gw.url("/readyz")).await;
        if ready["status"] == "ready" && ready["backlog"] == 0 {
            break ready;
        }
        assert!(Instant::now() < deadline, "not ready again: {ready}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ready["delivery_error"], Value::Null);
    let text = std::fs::read_to_string(data.join("output/leads.clean.jsonl")).unwrap();
    let delivered: std::collections::BTreeSet<String> = text
        .lines()
        .map(|l| {
            let r: Value = serde_json::from_str(l).expect("no torn record in the output");
            r["event_id"].as_str().unwrap().to_owned()
        })
        .collect();
    let lost: Vec<_> = accepted.difference(&delivered).collect();
    assert!(lost.is_empty(), "{} acknowledged leads lost", lost.len());
    assert!(gw.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_kafka_does_not_delay_the_listener_and_leads_are_taken() {
    let dir = tempfile::tempdir().unwrap();
    let dead = crate::support::free_port();
    let started = Instant::now();
    let gw = Gateway::start(
        Some(&crate::support::kafka_config(
            &format!("127.0.0.1:{dead}"),
            "",
        )),
        &dir.path().join("data"),
    );
    // Answered 202: the lead waits in the journal.
    post_lead(&gw).await;
    // It used to wait about 31 s for the topics to be created first.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_identity_store_on_a_full_disk_recovers_without_a_restart_once_freed() {
    // Only the identity store sits on the small disk (a symlink): leads are still taken, and
    // delivery stops at identity until space is freed, then goes on by itself.
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let _mount = SmallDisk::mount(&disk, 4);
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::os::unix::fs::symlink(disk.join("identity.redb"), data.join("identity.redb")).unwrap();
    let gw = Gateway::start(None, &data);
    let http = reqwest::Client::new();
    let url = gw.url("/v1/webhooks/webform");
    let lead = |i: usize| json!({"name": format!("客户{i}"), "phone": format!("139{:08}", i), "notes": "x".repeat(1500)});
    let mut accepted = std::collections::BTreeSet::new();
    let mut i = 0;
    for _ in 0..5 {
        let r = post_json(&http, &url, &lead(i)).await;
        i += 1;
        accepted.insert(crate::support::accepted(r).await);
    }
    gw.wait_spooled("leads.clean", 5, Duration::from_secs(10));
    let filler = disk.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    while f.write_all(&[0u8; 1 << 16]).is_ok() {}
    drop(f);
    // Leads are taken (the journal has room) while delivery meets the full disk.
    let deadline = Instant::now() + Duration::from_secs(30);
    let error = loop {
        let r = post_json(&http, &url, &lead(i)).await;
        i += 1;
        accepted.insert(crate::support::accepted(r).await);
        let ready: Value = get_json(&http, &gw.url("/readyz")).await;
        if let Some(e) = ready["delivery_error"].as_str() {
            break e.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "delivery never met the full disk: {ready}"
        );
    };
    assert!(error.contains("identity store"), "{error}");
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready: Value = get_json(&http, &gw.url("/readyz")).await;
        if ready["status"] == "ready" && ready["backlog"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "not ready again: {ready}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let delivered: std::collections::BTreeSet<String> = gw
        .spooled("leads.clean")
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_owned())
        .collect();
    let lost: Vec<_> = accepted.difference(&delivered).collect();
    assert!(lost.is_empty(), "{} acknowledged leads lost", lost.len());
}
