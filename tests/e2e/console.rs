//! The console in a real browser: Debian's headless Chromium driven through chromedriver
//! (WebDriver), against the real binary. `scripts/test` installs both (`chromium`,
//! `chromium-driver`); a missing one fails the test.
//!
//! `LEADGATE_SCREENSHOTS=DIR` keeps the screenshots the tests take (docs/console/ holds the ones
//! in docs/console.md).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Gateway, free_port, wait_for_port};

const TOKEN: &str = "console-test-token-0123456789";

fn binary(env: &str, name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return p.into();
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("`{name}` is not installed: run scripts/test (it installs Debian's chromium and chromium-driver), or set {env}")
    })
}

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new(binary("CHROMEDRIVER_BIN", "chromedriver"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start chromedriver");
        assert!(
            wait_for_port(port, Duration::from_secs(20)),
            "chromedriver did not listen on {port}"
        );
        Self { child, port }
    }

    /// A headless browser whose preferred language is `lang`; its downloads go to the temporary
    /// directory.
    async fn browser(&self, lang: &str) -> Client {
        self.browser_saving_to(lang, &std::env::temp_dir()).await
    }

    /// The same, its downloads saved in `downloads`.
    async fn browser_saving_to(&self, lang: &str, downloads: &Path) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": binary("CHROMIUM_BIN", "chromium"),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900", format!("--lang={lang}")],
                "prefs": {
                    "intl.accept_languages": lang,
                    "download.default_directory": downloads,
                    "download.prompt_for_download": false,
                },
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stand-in pull platform: an empty page of leads while `up`, HTTP 500 after. Its port, and
/// the count of requests it was sent.
async fn platform(up: Arc<AtomicBool>) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let up = up.load(Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = conn.read(&mut buf).await;
                let (status, body) = if up {
                    ("200 OK", r#"{"code":0,"data":{"list":[]}}"#)
                } else {
                    (
                        "500 Internal Server Error",
                        r#"{"message":"platform is down"}"#,
                    )
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    (port, asked)
}

/// A 巨量引擎-style pull connector `douyin` on the stand-in at `port`, polling every second.
fn douyin(port: u16) -> String {
    format!(
        "[[connectors]]\nname = \"douyin\"\ntype = \"http_pull\"\n\
         url = \"http://127.0.0.1:{port}/open_api/2/tools/clue/get/\"\n\
         records = \"/data/list\"\nid = \"/clue_id\"\n\
         paging = {{ type = \"page\", param = \"page\", size_param = \"page_size\", size = 10 }}\n\
         error_code = {{ pointer = \"/code\", ok = [0] }}\n\
         fields = {{ phone = \"/telephone\" }}\npoll_interval = \"1s\"\n"
    )
}

/// Waits until the element `css` shows text that `done` accepts; returns the text.
async fn text_of(c: &Client, css: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(el) = c.find(Locator::Css(css)).await
            && let Ok(text) = el.text().await
        {
            if done(&text) {
                return text;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what}: `{css}` never showed it; last text {last:?}")
}

/// A gateway asking for [`TOKEN`], with `connectors` (settings text).
fn gateway(dir: &Path, connectors: &str) -> Gateway {
    let config = format!("[api]\ntoken = \"{TOKEN}\"\n\n{connectors}");
    Gateway::start(Some(&config), &dir.join("data"))
}

const WEBFORM: &str = "[[connectors]]\nname = \"webform\"\ntype = \"webhook\"\n";

/// Posts each of `leads` to the `webform` connector; each must be acknowledged.
async fn post(gw: &Gateway, leads: &[serde_json::Value]) {
    let http = reqwest::Client::new();
    for lead in leads {
        crate::support::accepted(
            http.post(gw.url("/v1/webhooks/webform"))
                .json(lead)
                .send()
                .await
                .unwrap(),
        )
        .await;
    }
}

/// The focused element, once it is the one with id `id`.
async fn focused(c: &Client, id: &str) -> fantoccini::elements::Element {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(el) = c.active_element().await
            && el.attr("id").await.ok().flatten().as_deref() == Some(id)
        {
            return el;
        }
        assert!(Instant::now() < deadline, "#{id} never took focus");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the focused element's text is `text`.
async fn focused_text(c: &Client, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    loop {
        if let Ok(el) = c.active_element().await
            && let Ok(t) = el.text().await
        {
            if t == text {
                return;
            }
            last = t;
        }
        assert!(
            Instant::now() < deadline,
            "focus never reached {text:?}; last {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(c: &Client, at: Locator<'_>) {
    c.find(at).await.unwrap().click().await.unwrap();
}

/// Types the token into the sign-in form and presses Enter.
async fn sign_in_by_keyboard(c: &Client) {
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(&format!("{TOKEN}\u{E007}"))
        .await
        .unwrap();
}

/// The text of the file the browser downloads to `path`, once it is there.
async fn downloaded(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.is_empty()
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "nothing was downloaded to {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    if let Ok(dir) = std::env::var("LEADGATE_SCREENSHOTS") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_see_a_connector_fail_and_switch_the_language() {
    let up = Arc::new(AtomicBool::new(true));
    let (port, _) = platform(up.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), &format!("{WEBFORM}\n{}", douyin(port)));
    let driver = Driver::start();
    let c = driver.browser("en-US").await;

    // Without the token nothing but the sign-in form shows.
    c.goto(&gw.url("/console")).await.unwrap();
    let title = text_of(&c, "#sign-in h1", "the sign-in form", |t| !t.is_empty()).await;
    assert_eq!(title, "Sign in");
    assert!(
        !c.find(Locator::Css("#overview"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    );
    screenshot(&c, "sign-in").await;

    // A wrong token is refused at the field; the right one opens the overview.
    let token = c.find(Locator::Id("token")).await.unwrap();
    token.send_keys("not-the-token").await.unwrap();
    click(&c, Locator::Css("#sign-in-form button")).await;
    text_of(&c, "#token-error", "the refusal", |t| {
        t.contains("not valid")
    })
    .await;
    assert_eq!(
        token.attr("aria-invalid").await.unwrap().as_deref(),
        Some("true")
    );
    token.clear().await.unwrap();
    token.send_keys(TOKEN).await.unwrap();
    click(&c, Locator::Css("#sign-in-form button")).await;
    text_of(&c, "#delivery-state", "the delivery state", |t| {
        t == "Working"
    })
    .await;
    text_of(&c, "#connector-states", "the connectors' states", |t| {
        t.contains("Following: 1") && t.contains("Waiting for pushes: 1")
    })
    .await;
    assert!(
        c.find(Locator::Id("problems-none"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap(),
        "nothing needs attention"
    );
    // The connectors page, from the navigation.
    click(&c, Locator::Css("#nav a[href='#/connectors']")).await;
    text_of(
        &c,
        "tr[data-connector=douyin] .state",
        "the pull connector",
        |t| t == "Following",
    )
    .await;
    text_of(
        &c,
        "tr[data-connector=webform] .state",
        "the webhook",
        |t| t == "Waiting for pushes",
    )
    .await;
    // The URL to paste into the form tool, under the address the console was opened at; a pull
    // connector has none.
    let hook = c
        .find(Locator::Css("tr[data-connector=webform] td.webhook input"))
        .await
        .unwrap();
    assert_eq!(
        hook.prop("value").await.unwrap().as_deref(),
        Some(gw.url("/v1/webhooks/webform").as_str())
    );
    assert_eq!(
        hook.attr("aria-label").await.unwrap().as_deref(),
        Some("Webhook URL of webform")
    );
    assert!(
        c.find_all(Locator::Css("tr[data-connector=douyin] td.webhook input"))
            .await
            .unwrap()
            .is_empty()
    );

    // The platform fails: the console shows it within a refresh or two, with the error.
    up.store(false, Ordering::SeqCst);
    text_of(&c, "tr[data-connector=douyin] .state", "the failure", |t| {
        t == "Failing, retrying"
    })
    .await;
    let error = text_of(
        &c,
        "tr[data-connector=douyin] .last-error",
        "the error",
        |t| t.contains("500"),
    )
    .await;
    assert!(!error.is_empty());
    screenshot(&c, "connectors").await;
    // The overview says what needs attention, and what to do about it.
    click(&c, Locator::Css("#nav a[href='#/overview']")).await;
    let problem = text_of(
        &c,
        "#problems li[data-connector=douyin]",
        "the problem",
        |t| t.contains("500"),
    )
    .await;
    assert!(problem.starts_with("douyin: "), "{problem}");
    assert!(
        problem.contains("leadgate retries with backoff"),
        "{problem}"
    );
    let rate = text_of(&c, "#rate", "the rates", |t| t.contains(" in · ")).await;
    assert!(rate.ends_with(" out"), "{rate}");
    screenshot(&c, "overview").await;

    // 中文: the page speaks Chinese at once, and keeps it on the next visit.
    let select = c.find(Locator::Id("lang")).await.unwrap();
    select.select_by_value("zh").await.unwrap();
    text_of(&c, "#overview h1", "the Chinese title", |t| t == "概览").await;
    text_of(
        &c,
        "#problems li[data-connector=douyin]",
        "the problem in Chinese",
        |t| t.contains("自动退避重试"),
    )
    .await;
    assert_eq!(
        c.find(Locator::Css("html"))
            .await
            .unwrap()
            .attr("lang")
            .await
            .unwrap()
            .as_deref(),
        Some("zh-CN")
    );
    screenshot(&c, "overview-zh").await;
    c.refresh().await.unwrap();
    text_of(&c, "#overview h1", "the language kept", |t| t == "概览").await;

    // Signing out asks for the token again.
    click(&c, Locator::Id("sign-out")).await;
    text_of(&c, "#sign-in h1", "the sign-in form again", |t| t == "登录").await;
    c.close().await.unwrap();

    // A browser that asks for Chinese gets it from the first page.
    let zh = driver.browser("zh-CN").await;
    zh.goto(&gw.url("/console/")).await.unwrap();
    text_of(&zh, "#sign-in h1", "Chinese by default", |t| t == "登录").await;
    // Keyboard: the token field has its label and takes focus; Enter submits.
    let label = zh
        .find(Locator::Css("label[for=token]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(label, "API 令牌");
    zh.active_element()
        .await
        .unwrap()
        .send_keys(&format!("{TOKEN}\u{E007}"))
        .await
        .unwrap();
    text_of(&zh, "#overview h1", "signed in by keyboard", |t| {
        t == "概览"
    })
    .await;
    zh.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_a_csv_see_its_summary_and_download_its_rejected_rows() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(
        dir.path(),
        "[[connectors]]\nname = \"expo\"\ntype = \"file\"\n",
    );
    // A trade-show list: a title row above the table, three good rows, one without a contact.
    let csv = dir.path().join("车展线索.csv");
    std::fs::write(
        &csv,
        "2026 上海车展 线索名单,,\n姓名,手机,邮箱\n张三,13800138000,\n李四,139 0013 9000,li@example.cn\n王五,,wang@example.cn\n赵六,12345,\n",
    )
    .unwrap();
    let driver = Driver::start();
    let downloads = dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let c = driver.browser_saving_to("zh-CN", &downloads).await;
    c.goto(&gw.url("/console/#/import")).await.unwrap();
    let token = c.find(Locator::Id("token")).await.unwrap();
    token.send_keys(TOKEN).await.unwrap();
    click(&c, Locator::Css("#sign-in-form button")).await;
    text_of(&c, "#import h1", "the import page", |t| t == "导入").await;

    // Without a file: the error is at the field.
    click(&c, Locator::Css("#import-form button")).await;
    text_of(&c, "#import-error", "no file", |t| t == "请选择一个文件。").await;

    let file = c.find(Locator::Id("import-file")).await.unwrap();
    file.send_keys(csv.to_str().unwrap()).await.unwrap();
    let source = c.find(Locator::Id("import-source")).await.unwrap();
    source.clear().await.unwrap();
    source.send_keys("expo").await.unwrap();
    click(&c, Locator::Css("#import-form button")).await;
    text_of(&c, "#import-state", "the import done", |t| t == "完成").await;
    assert_eq!(
        text_of(&c, "#import-rows-read", "rows read", |t| !t.is_empty()).await,
        "4"
    );
    assert_eq!(
        text_of(&c, "#import-rows-journaled", "rows taken in", |t| !t
            .is_empty())
        .await,
        "4"
    );
    assert_eq!(
        text_of(&c, "#import-rows-rejected", "rows rejected", |t| !t
            .is_empty())
        .await,
        "1"
    );
    let notes = text_of(&c, "#import-notes", "the title row noted", |t| {
        !t.is_empty()
    })
    .await;
    assert!(
        notes.contains("车展线索.csv:1: rows above the table") && notes.contains("line 2"),
        "{notes}"
    );
    assert!(
        c.find(Locator::Id("import-report"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    );
    screenshot(&c, "import").await;

    // The report, downloaded with the token: the rejected row with its line and reason.
    click(&c, Locator::Id("import-report")).await;
    let saved = downloads.join("车展线索.csv.rejected.csv");
    let report = downloaded(&saved).await;
    assert!(
        report.contains("赵六") && report.contains("contact.unreachable"),
        "{report}"
    );
    assert!(
        report.contains(",6,") || report.contains("\n6,"),
        "its line: {report}"
    );

    // The rows reached the output like any lead.
    let clean = dir.path().join("data/output/leads.clean.jsonl");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&clean)
        .unwrap_or_default()
        .lines()
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "the clean leads were published");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaigns_show_the_leads_of_each_campaign_and_download_as_csv() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), WEBFORM);
    use reqwest::Method;
    admin(
        &gw,
        Method::POST,
        "/v1/assignment/owners",
        json!({"id": "ann"}),
    )
    .await;
    admin(
        &gw,
        Method::POST,
        "/v1/assignment/rules",
        json!({"id": "all", "priority": 1, "action": {"type": "owner", "owner": "ann"}}),
    )
    .await;
    let mut leads: Vec<_> = ["双11大促", "双11大促", "双11大促", "年货节"]
        .iter()
        .enumerate()
        .map(|(i, campaign)| {
            json!({"phone": format!("1390013{:04}", 9000 + i), "utm_campaign": campaign})
        })
        .collect();
    leads.push(json!({"name": "无联系方式", "utm_campaign": "年货节"}));
    post(&gw, &leads).await;
    // The CRM reports on two of the 双11 leads: one contacted, one converted.
    let clean = gw.wait_spooled("leads.clean", 4, Duration::from_secs(30));
    for (i, status) in [(0, "contacted"), (1, "converted")] {
        let lead = clean[i]["lead_id"].as_str().unwrap();
        admin(
            &gw,
            Method::POST,
            &format!("/v1/leads/{lead}/status"),
            json!({"status_id": format!("s{i}"), "status": status}),
        )
        .await;
    }

    let downloads = dir.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let driver = Driver::start();
    let c = driver.browser_saving_to("en-US", &downloads).await;
    c.goto(&gw.url("/console/#/campaigns")).await.unwrap();
    sign_in_by_keyboard(&c).await;
    // The counts come once the leads are delivered: ask again until they show.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        click(&c, Locator::Css("#stats-form button[type=submit]")).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let done = match c.find(Locator::Css("tr.totals")).await {
            Ok(tr) => tr.text().await.unwrap_or_default().contains("5"),
            Err(_) => false,
        };
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "the stats showed the leads");
    }
    let big = text_of(
        &c,
        "tr[data-group='webform/双11大促']",
        "the campaign's row",
        |t| !t.is_empty(),
    )
    .await;
    // received, clean, rejected, duplicate, merged, assigned
    assert!(big.ends_with("3 3 0 0 0 3"), "{big}");
    let small = text_of(
        &c,
        "tr[data-group='webform/年货节']",
        "the other campaign",
        |t| !t.is_empty(),
    )
    .await;
    assert!(small.ends_with("2 1 1 0 0 1"), "{small}");
    // The funnel: received, assigned, contacted, qualified, converted, lost, conversion.
    let funnel = text_of(
        &c,
        "#funnel tr[data-value='双11大促']",
        "the funnel's row",
        |t| !t.is_empty(),
    )
    .await;
    assert!(funnel.ends_with("3 3 2 1 1 0 33.3%"), "{funnel}");
    let headings = text_of(&c, "#funnel thead", "the funnel's columns", |t| {
        t.contains("Converted")
    })
    .await;
    assert!(
        headings.starts_with("Campaign Received Assigned Contacted"),
        "{headings}"
    );
    // By owner: every lead went to ann.
    c.find(Locator::Id("funnel-by"))
        .await
        .unwrap()
        .select_by_value("owner")
        .await
        .unwrap();
    let ann = text_of(&c, "#funnel tr[data-value='ann']", "ann's row", |t| {
        !t.is_empty()
    })
    .await;
    assert!(ann.ends_with("4 4 2 1 1 0 25.0%"), "{ann}");
    c.find(Locator::Id("funnel-by"))
        .await
        .unwrap()
        .select_by_value("campaign")
        .await
        .unwrap();
    text_of(
        &c,
        "#funnel tr[data-value='双11大促']",
        "the campaign funnel again",
        |t| !t.is_empty(),
    )
    .await;
    screenshot(&c, "campaigns").await;

    click(&c, Locator::Id("stats-csv")).await;
    let saved = downloads.join("leadgate-stats.csv");
    let csv = downloaded(&saved).await;
    assert!(csv.starts_with('\u{feff}'), "a byte order mark for Excel");
    assert!(csv.contains("双11大促") && csv.contains("年货节"), "{csv}");
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_quality_shows_each_sources_rejections_and_their_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), WEBFORM);
    let leads = [
        json!({"phone": "13800138000"}),
        json!({"phone": "139 0013 9000"}),
        json!({"email": "wang@example.cn"}),
        json!({"phone": "12345"}),
        json!({"phone": "000"}),
    ];
    post(&gw, &leads).await;
    let driver = Driver::start();
    let c = driver.browser("en-US").await;
    c.goto(&gw.url("/console/#/quality")).await.unwrap();
    sign_in_by_keyboard(&c).await;
    // The page refreshes itself: the counts come once the leads are delivered.
    let rate = text_of(
        &c,
        "#quality-sources tr[data-connector=webform] .rejected-rate",
        "the rejection rate",
        |t| t == "40.0%",
    )
    .await;
    assert_eq!(rate, "40.0%");
    let reason = text_of(
        &c,
        "#quality-sources tr[data-connector=webform] li[data-code='phone.invalid']",
        "the reason",
        |t| !t.is_empty(),
    )
    .await;
    assert_eq!(reason, "phone.invalid: 2");
    let bar = c
        .find(Locator::Css("#quality-chart rect"))
        .await
        .unwrap()
        .attr("data-count")
        .await
        .unwrap();
    assert_eq!(bar.as_deref(), Some("2"), "today's bar");
    let label = c
        .find(Locator::Id("quality-chart"))
        .await
        .unwrap()
        .attr("aria-label")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(
        label.starts_with("Rejected leads by day: ") && label.ends_with(" 2"),
        "{label}"
    );
    // The latest rejected leads, newest first, with their reasons and masked fields only.
    text_of(&c, "#rejections tbody", "the latest rejected leads", |t| {
        t.matches("webform").count() >= 2
    })
    .await;
    let mut rows = Vec::new();
    for tr in c
        .find_all(Locator::Css("#rejections tbody tr"))
        .await
        .unwrap()
    {
        rows.push(tr.text().await.unwrap());
    }
    let latest = rows.join("\n");
    assert_eq!(rows.len(), 2, "{latest}");
    assert!(
        rows[0].contains("phone: 0**") && rows[1].contains("phone: 1***5"),
        "{latest}"
    );
    assert!(
        rows.iter()
            .all(|r| r.contains("phone.invalid") && r.contains("webform")),
        "{latest}"
    );
    assert!(!latest.contains("12345"), "{latest}");
    screenshot(&c, "quality").await;
    c.close().await.unwrap();
}

/// The management API as a script would call it, with the token.
async fn admin(gw: &Gateway, method: reqwest::Method, path: &str, body: serde_json::Value) {
    let resp = reqwest::Client::new()
        .request(method, gw.url(path))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert!(
        status.is_success(),
        "{path}: {status} {}",
        resp.text().await.unwrap()
    );
}

/// The owner the newest clean record of `gw` went to, once there are `n` records.
fn owner_of_record(gw: &Gateway, n: usize) -> serde_json::Value {
    let records = gw.wait_spooled("leads.clean", n, Duration::from_secs(30));
    records[n - 1]["assignment"]["owner"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_a_rule_and_the_next_lead_goes_to_the_new_owner() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), WEBFORM);
    use reqwest::Method;
    for owner in [
        json!({"id": "ann", "name": "安娜"}),
        json!({"id": "bob", "name": "鲍勃", "capacity": 10}),
    ] {
        admin(&gw, Method::POST, "/v1/assignment/owners", owner).await;
    }
    admin(
        &gw,
        Method::POST,
        "/v1/assignment/teams",
        json!({"id": "south", "name": "华南", "members": [{"owner": "ann"}, {"owner": "bob", "weight": 2}]}),
    )
    .await;
    admin(
        &gw,
        Method::POST,
        "/v1/assignment/rules",
        json!({"id": "all", "name": "全部", "priority": 100, "action": {"type": "owner", "owner": "ann"}}),
    )
    .await;
    admin(
        &gw,
        Method::POST,
        "/v1/assignment/segments",
        json!({"id": "south", "name": "华南", "conditions": [{"op": "eq", "field": "contact.province", "value": "广东省"}]}),
    )
    .await;
    admin(
        &gw,
        Method::POST,
        "/v1/assignment/scores",
        json!({"id": "fit", "rules": [{"name": "华南客户", "points": 20, "conditions": [{"op": "eq", "field": "segments.id", "value": "south"}]}]}),
    )
    .await;
    post(&gw, &[json!({"phone": "13800138000", "province": "广东"})]).await;
    assert_eq!(owner_of_record(&gw, 1), "ann");

    let driver = Driver::start();
    let c = driver.browser("en-US").await;
    c.goto(&gw.url("/console/#/assignment")).await.unwrap();
    sign_in_by_keyboard(&c).await;
    let action = text_of(
        &c,
        "#rules tr[data-rule=all] td:nth-of-type(5)",
        "the rule",
        |t| !t.is_empty(),
    )
    .await;
    assert_eq!(action, "to ann");
    click(&c, Locator::Css("#rules tr[data-rule=all] button")).await;
    // The editor opens on the rule (once it is read), its name field focused.
    let name = focused(&c, "rule-name").await;
    assert_eq!(name.prop("value").await.unwrap().as_deref(), Some("全部"));

    // A condition the API refuses: the error shows at the conditions, naming which one.
    let conditions = c.find(Locator::Id("rule-conditions")).await.unwrap();
    conditions
        .send_keys(r#"[{"op": "regex", "field": "contact.city", "pattern": "(广州"}]"#)
        .await
        .unwrap();
    c.find(Locator::Id("rule-owner"))
        .await
        .unwrap()
        .select_by_value("bob")
        .await
        .unwrap();
    click(&c, Locator::Css("#rule-form button[type=submit]")).await;
    let error = text_of(&c, "#rule-conditions-error", "the field error", |t| {
        !t.is_empty()
    })
    .await;
    assert!(error.starts_with("conditions[0].pattern: "), "{error}");
    assert_eq!(
        conditions.attr("aria-invalid").await.unwrap().as_deref(),
        Some("true")
    );
    focused(&c, "rule-conditions").await; // the bad field takes focus
    // Not JSON at all: caught before asking the API, at the same field.
    conditions.clear().await.unwrap();
    conditions.send_keys("[{").await.unwrap();
    click(&c, Locator::Css("#rule-form button[type=submit]")).await;
    text_of(&c, "#rule-conditions-error", "the JSON error", |t| {
        t.starts_with("Not valid JSON")
    })
    .await;
    screenshot(&c, "assignment-rule-error").await;

    // Fixed: the rule now gives every lead to bob, and the next lead goes to him.
    conditions.clear().await.unwrap();
    click(&c, Locator::Css("#rule-form button[type=submit]")).await;
    text_of(&c, "#assignment-saved", "the saved rule", |t| {
        t == "Rule all saved; it applies to the next lead."
    })
    .await;
    text_of(
        &c,
        "#rules tr[data-rule=all] td:nth-of-type(5)",
        "the new owner",
        |t| t == "to bob",
    )
    .await;
    let form = c.find(Locator::Id("rule-form")).await.unwrap();
    assert!(!form.is_displayed().await.unwrap(), "the editor closes");
    post(&gw, &[json!({"phone": "13900139000", "province": "广东"})]).await;
    assert_eq!(owner_of_record(&gw, 2), "bob");

    // The preview says the same, and why.
    click(&c, Locator::Css("#preview-form button[type=submit]")).await;
    let verdict = text_of(&c, "#preview-verdict", "the preview", |t| !t.is_empty()).await;
    assert!(
        verdict.starts_with("It goes to bob (rule all)"),
        "{verdict}"
    );
    let segments = text_of(&c, "#preview-segments", "the segments", |t| !t.is_empty()).await;
    assert_eq!(segments, "Segments: 华南");
    let score = text_of(&c, "#preview-score", "the score", |t| !t.is_empty()).await;
    assert_eq!(score, "Score: 20");

    // The change is the newest in the audit log.
    let newest = text_of(&c, "#audit tbody tr:first-child", "the audit log", |t| {
        t.contains("changed")
    })
    .await;
    assert!(
        newest.contains("rule") && newest.contains("all"),
        "{newest}"
    );

    // Bob off duty: his open lead is kept (the body leaves `open_leads` out), and the rule,
    // finding nobody, assigns the next lead to no one.
    click(&c, Locator::Css("#owners tr[data-owner=bob] button")).await;
    text_of(
        &c,
        "#owners tr[data-owner=bob] .owner-status",
        "off duty",
        |t| t == "Off duty",
    )
    .await;
    let open = c
        .find(Locator::Css("#owners tr[data-owner=bob] td:nth-of-type(3)"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(open, "1", "bob's open lead is kept");
    focused_text(&c, "Set active").await; // focus stays on the owner's button
    c.execute("window.scrollTo(0, 0)", vec![]).await.unwrap();
    screenshot(&c, "assignment").await;
    post(&gw, &[json!({"phone": "13700137000"})]).await;
    assert_eq!(owner_of_record(&gw, 3), serde_json::Value::Null);
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_a_person_by_phone_email_or_lead_id_masked_until_shown() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), WEBFORM);
    post(
        &gw,
        &[
            json!({"name": "王芳", "phone": "139 1111 2222", "city": "深圳"}),
            json!({"name": "王芳", "phone": "+86 13911112222", "email": "wangfang@corp.cn", "city": "深圳"}),
        ],
    )
    .await;
    let records = gw.wait_spooled("leads.clean", 2, Duration::from_secs(30));
    let lead = records[0]["lead_id"].as_str().unwrap().to_owned();
    assert_eq!(records[1]["lead_id"], lead.as_str());

    let driver = Driver::start();
    let c = driver.browser("en-US").await;
    c.goto(&gw.url("/console/#/leads")).await.unwrap();
    sign_in_by_keyboard(&c).await;
    // The search field has focus: type a phone number in another format and press Enter.
    text_of(&c, "#leads h1", "the leads page", |t| t == "Leads").await;
    let query = c.find(Locator::Id("lead-query")).await.unwrap();
    query.send_keys("139-1111-2222\u{E007}").await.unwrap();
    let person = format!("article[data-lead='{lead}']");
    let profile = text_of(&c, &format!("{person} table.profile"), "the person", |t| {
        t.contains("phone")
    })
    .await;
    assert!(profile.contains("+86139****2222"), "{profile}");
    assert!(profile.contains("w***@corp.cn"), "{profile}");
    assert!(
        profile.contains("深圳"),
        "a city is not personal: {profile}"
    );
    let events = c
        .find(Locator::Css(&format!("{person} table.events tbody")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(events.lines().count(), 2, "{events}");
    assert!(events.contains("matched a person"), "{events}");
    let page = c
        .find(Locator::Id("leads"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for pii in ["13911112222", "wangfang@", "王芳"] {
        assert!(!page.contains(pii), "{pii} shows before it is asked for");
    }
    screenshot(&c, "leads").await;
    // Shown on request.
    click(&c, Locator::Id("lead-reveal")).await;
    text_of(&c, &format!("{person} table.profile"), "the values", |t| {
        t.contains("+8613911112222") && t.contains("wangfang@corp.cn")
    })
    .await;

    // By address and by lead id: the same person.
    for q in ["WangFang@corp.cn", lead.as_str()] {
        query.clear().await.unwrap();
        query.send_keys(&format!("{q}\u{E007}")).await.unwrap();
        let count = text_of(&c, "#lead-count", "found", |t| t == "1 found.").await;
        assert_eq!(count, "1 found.");
        c.find(Locator::Css(&person))
            .await
            .expect("the same person");
    }
    // Not a phone number at all: said at the field.
    query.clear().await.unwrap();
    query.send_keys("12\u{E007}").await.unwrap();
    text_of(&c, "#lead-query-error", "the refusal", |t| {
        t == "Not a phone number a person can be identified by."
    })
    .await;
    assert_eq!(
        query.attr("aria-invalid").await.unwrap().as_deref(),
        Some("true")
    );
    query.clear().await.unwrap();
    query.send_keys("13800000001\u{E007}").await.unwrap();
    text_of(&c, "#lead-count", "nobody", |t| t == "Nobody found.").await;
    c.close().await.unwrap();
}

/// Waits until the stand-in was asked more than `n` times.
async fn asked_more_than(asked: &AtomicUsize, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = asked.load(Ordering::SeqCst);
        if now > n {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the platform was asked {now} times, never more than {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_a_pull_connector_keep_it_paused_over_a_restart_and_resume_it() {
    let up = Arc::new(AtomicBool::new(true));
    let (port, asked) = platform(up).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = format!("{WEBFORM}\n{}", douyin(port));
    let mut gw = gateway(dir.path(), &settings);
    asked_more_than(&asked, 1).await;

    let driver = Driver::start();
    let c = driver.browser("en-US").await;
    c.goto(&gw.url("/console/#/connectors")).await.unwrap();
    sign_in_by_keyboard(&c).await;
    text_of(&c, "tr[data-connector=douyin] .state", "following", |t| {
        t == "Following"
    })
    .await;
    // A webhook has nothing to pause: no button.
    assert!(
        c.find_all(Locator::Css(
            "tr[data-connector=webform] td:last-child button"
        ))
        .await
        .unwrap()
        .is_empty()
    );
    let pause = c
        .find(Locator::Css(
            "tr[data-connector=douyin] td:last-child button",
        ))
        .await
        .unwrap();
    assert_eq!(
        pause.attr("aria-label").await.unwrap().as_deref(),
        Some("Pause douyin")
    );
    pause.click().await.unwrap();
    text_of(&c, "tr[data-connector=douyin] .state", "paused", |t| {
        t == "Paused"
    })
    .await;
    let resume = c
        .find(Locator::Css(
            "tr[data-connector=douyin] td:last-child button",
        ))
        .await
        .unwrap();
    assert_eq!(resume.text().await.unwrap(), "Resume");
    // At most the poll under way finishes; then nothing for several poll intervals.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let paused_at = asked.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        asked.load(Ordering::SeqCst),
        paused_at,
        "a paused connector polls nothing"
    );

    // Still paused after a restart.
    gw.kill();
    let gw = gateway(dir.path(), &settings);
    let http = reqwest::Client::new();
    let status: serde_json::Value = http
        .get(gw.url("/v1/connectors/douyin"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "paused", "{status}");
    assert!(status["paused_at"].is_string(), "{status}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        asked.load(Ordering::SeqCst),
        paused_at,
        "not after a restart either"
    );

    // The API refuses what cannot pause, and answers only with the token.
    for (path, token, status, code) in [
        (
            "/v1/connectors/webform/pause",
            Some(TOKEN),
            409,
            "connector.not_pausable",
        ),
        (
            "/v1/connectors/nope/pause",
            Some(TOKEN),
            404,
            "connector.not_found",
        ),
        (
            "/v1/connectors/douyin/resume",
            None,
            401,
            "auth.missing_token",
        ),
    ] {
        let mut req = http.post(gw.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let (s, err) = crate::support::error_of(req.send().await.unwrap()).await;
        assert_eq!((s, err["code"].as_str().unwrap()), (status, code), "{path}");
    }

    // Resumed from the console of the restarted gateway (another address: sign in again).
    c.goto(&gw.url("/console/#/connectors")).await.unwrap();
    sign_in_by_keyboard(&c).await;
    text_of(&c, "tr[data-connector=douyin] .state", "paused", |t| {
        t == "Paused"
    })
    .await;
    click(
        &c,
        Locator::Css("tr[data-connector=douyin] td:last-child button"),
    )
    .await;
    asked_more_than(&asked, paused_at).await;
    text_of(
        &c,
        "tr[data-connector=douyin] .state",
        "following again",
        |t| t == "Following",
    )
    .await;
    focused_text(&c, "Pause").await; // focus stays on the connector's button
    c.close().await.unwrap();
}

/// Every input, select and text area of the console has a label (its own, `aria-label`, or one
/// it sits in), on every page: what a screen reader says for it.
const UNLABELLED: &str = "return [...document.querySelectorAll('input, select, textarea')]\
    .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))\
    .map((el) => el.id || el.outerHTML);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connectors_are_paged_and_filtered_and_every_control_is_labelled() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = String::from(WEBFORM);
    for i in 0..1000 {
        settings.push_str(&format!(
            "[[connectors]]\nname = \"form-{i:04}\"\ntype = \"webhook\"\n"
        ));
    }
    let gw = gateway(dir.path(), &settings);
    let driver = Driver::start();
    let c = driver.browser("en-US").await;
    c.goto(&gw.url("/console/#/connectors")).await.unwrap();
    sign_in_by_keyboard(&c).await;
    let pages = text_of(&c, "#connectors-page-of", "the pages", |t| !t.is_empty()).await;
    assert_eq!(pages, "Page 1 of 21 · 1,001 in all");
    let rows = c
        .find_all(Locator::Css("#connector-list tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 50, "one page of 50");
    click(&c, Locator::Id("connectors-next")).await;
    text_of(&c, "#connectors-page-of", "the next page", |t| {
        t.starts_with("Page 2 of 21")
    })
    .await;
    let filter = c.find(Locator::Id("connector-name")).await.unwrap();
    filter.send_keys("form-0999").await.unwrap();
    text_of(&c, "#connectors-page-of", "the filtered list", |t| {
        t == "Page 1 of 1 · 1 in all"
    })
    .await;
    c.find(Locator::Css(
        "tr[data-connector='form-0999'] td.webhook input",
    ))
    .await
    .expect("the one connector, with its webhook URL");

    // Every page: no unlabelled control.
    for page in [
        "overview",
        "connectors",
        "quality",
        "campaigns",
        "import",
        "leads",
        "assignment",
    ] {
        c.goto(&gw.url(&format!("/console/#/{page}")))
            .await
            .unwrap();
        text_of(&c, &format!("#{page} h1"), page, |t| !t.is_empty()).await;
        let unlabelled = c.execute(UNLABELLED, vec![]).await.unwrap();
        assert_eq!(unlabelled, json!([]), "{page}: controls without a label");
    }
    c.close().await.unwrap();
}
