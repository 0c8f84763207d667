//! The generic pull's definition (`type = "http_pull"`): paging, time windows, error codes.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::mapping::FieldMapping;
use crate::sources::connector::{Checks, Connector, Start, Started, RateLimit, Shape, TestLeads, common_fields, default_region};
use crate::sources::status::State;

/// `type = "http_pull"`: polls a JSON API page by page (see `docs/connectors.md`). Each page
/// is journaled with the position of the next one, so a restart resumes mid-pull; a lead read
/// twice (the next poll starts over, or the page was re-read) is dropped by its `id`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpPullConnector {
    pub name: String,
    /// The first page's URL (`https://...`).
    pub url: String,
    /// `get` (the default) or `post`.
    #[serde(default)]
    pub method: Method,
    /// The JSON body of a `post` (secrets may be written `"${VAR}"`).
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Request headers; values may hold secrets: `{ Authorization = "Bearer ${ACME_TOKEN}" }`.
    #[serde(default)]
    pub headers: BTreeMap<String, SecretString>,
    /// Fixed query parameters added to every request.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// JSON pointer to the array of leads in a response, e.g. `"/data/list"`.
    pub records: String,
    /// JSON pointer to a lead's own id inside a record, e.g. `"/clue_id"`.
    pub id: String,
    pub paging: Paging,
    /// For APIs filtered by creation time: each poll asks for `[start, end)`, from where the last
    /// poll ended (minus `overlap`) to now.
    #[serde(default)]
    pub window: Option<TimeWindow>,
    /// For APIs that answer HTTP 200 with an error code in the body.
    #[serde(default)]
    pub error_code: Option<ErrorCodes>,
    /// Contact field -> JSON pointer inside a record: `{ phone = "/contact/mobile" }`.
    #[serde(default)]
    pub fields: BTreeMap<crate::mapping::ContactField, String>,
    /// JSON pointer to a record's test marker; a record whose value there is `true` (or `1`, or
    /// equals `test_value`) is a test lead.
    #[serde(default)]
    pub test_pointer: Option<String>,
    #[serde(default)]
    pub test_value: Option<serde_json::Value>,
    #[serde(default)]
    pub test_leads: TestLeads,
    /// The pause between polls once the last page was read.
    #[serde(with = "humantime_serde", default = "HttpPullConnector::default_poll")]
    pub poll_interval: Duration,
    /// Requests per second to this API (the platform's limit per token or account).
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// A platform preset's refreshed access token, sent in this header, or set in the POST body
    /// at this JSON pointer (not configurable: the presets with OAuth refresh set it).
    #[serde(skip)]
    pub auth: Option<(String, crate::sources::oauth::Token)>,
    #[serde(default = "default_region")]
    pub default_region: String,
    #[serde(default)]
    pub mapping: FieldMapping,
    #[serde(default)]
    pub identity_fields: BTreeMap<String, String>,
    /// The answer that says the person agreed, and whether it is required: see
    /// `docs/privacy.md#consent`.
    #[serde(default)]
    pub consent: Option<crate::consent::ConsentMapping>,
}

impl HttpPullConnector {
    fn default_poll() -> Duration {
        Duration::from_secs(60)
    }
}

/// How an API pages.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Paging {
    /// `?page=1&page_size=100`, then 2, 3, ... until a page comes back empty or short.
    Page {
        param: String,
        #[serde(default)]
        size_param: Option<String>,
        #[serde(default = "Paging::default_size")]
        size: u32,
        #[serde(default = "Paging::default_start")]
        start: u64,
    },
    /// `?offset=0&limit=100`, then 100, 200, ...
    Offset {
        param: String,
        size_param: String,
        #[serde(default = "Paging::default_size")]
        size: u32,
    },
    /// `?cursor=<the value at the pointer `next` of the last response>` until it is absent.
    Cursor { param: String, next: String },
    /// The next page's full URL is at the pointer `next` of the response (Meta's `paging.next`).
    NextUrl { next: String },
    /// One request per poll (APIs that answer a whole time window at once).
    None,
}

impl Paging {
    fn default_size() -> u32 {
        100
    }
    fn default_start() -> u64 {
        1
    }
}

/// `window = { start_param = "start_time", end_param = "end_time", format = "%Y-%m-%d %H:%M:%S",
/// timezone = "Asia/Shanghai", overlap = "10m", initial = "7d" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    pub start_param: String,
    pub end_param: String,
    /// strftime format of the parameters; `"%s"` for unix seconds.
    #[serde(default = "TimeWindow::default_format")]
    pub format: String,
    /// IANA zone the API reads times in (Chinese platforms: GMT+8).
    #[serde(default = "TimeWindow::default_timezone")]
    pub timezone: String,
    /// Each window starts this long before the last one ended: leads created just before a
    /// window's end but indexed late are still read (the repeats are dropped by id).
    #[serde(with = "humantime_serde", default = "TimeWindow::default_overlap")]
    pub overlap: Duration,
    /// How far back the very first poll reaches.
    #[serde(with = "humantime_serde", default = "TimeWindow::default_initial")]
    pub initial: Duration,
    /// Windows end this long before now: leads are read once they have settled (Ocean Engine
    /// fills some fields about 10 minutes after a lead is created).
    #[serde(with = "humantime_serde", default)]
    pub delay: Duration,
}

impl TimeWindow {
    fn default_format() -> String {
        "%Y-%m-%d %H:%M:%S".into()
    }
    fn default_timezone() -> String {
        "Asia/Shanghai".into()
    }
    fn default_overlap() -> Duration {
        Duration::from_secs(600)
    }
    fn default_initial() -> Duration {
        Duration::from_secs(7 * 24 * 3600)
    }
}

/// `error_code = { pointer = "/code", ok = [0], throttled = [40100], expired = [40102] }`, or
/// with text: `{ pointer = "/header/desc", ok = ["success"] }`. A body whose value at `pointer`
/// is not in `ok` is an error; an absent value is not.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorCodes {
    pub pointer: String,
    #[serde(default)]
    pub ok: Vec<serde_json::Value>,
    /// Codes that mean "slow down": retried with backoff.
    #[serde(default)]
    pub throttled: Vec<serde_json::Value>,
    /// Codes that mean the token expired or was revoked: the connector stops until fixed.
    #[serde(default)]
    pub expired: Vec<serde_json::Value>,
    /// Where the code that tells an expired token is, when it is not at `pointer` (百度:
    /// `pointer = "/header/desc"` says failure, `/header/failures/0/code` says which).
    #[serde(default)]
    pub expired_pointer: Option<String>,
    /// Where the error's text is, for the connector's status.
    #[serde(default = "ErrorCodes::default_message")]
    pub message: String,
}

impl ErrorCodes {
    fn default_message() -> String {
        "/message".into()
    }
}

/// The HTTP method of a pull request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    #[default]
    Get,
    /// With `body` as the JSON body; parameters named by a JSON pointer (`/body/startDate`) are
    /// set in it.
    Post,
}

common_fields!(HttpPullConnector);

impl Connector for HttpPullConnector {
    fn test_leads(&self) -> TestLeads {
        self.test_leads
    }

    fn check(&self, checks: &mut Checks) {
        if !(self.url.starts_with("https://") || self.url.starts_with("http://")) {
            checks.push("url", "must be an http:// or https:// URL");
        }
        let mut pointers = vec![("records", Some(&self.records)), ("id", Some(&self.id))];
        pointers.push(("test_pointer", self.test_pointer.as_ref()));
        let next = match &self.paging {
            Paging::Cursor { next, .. } | Paging::NextUrl { next } => Some(next),
            _ => None,
        };
        pointers.push(("paging.next", next));
        let codes = self.error_code.as_ref().map(|c| &c.pointer);
        pointers.push(("error_code.pointer", codes));
        pointers.push((
            "error_code.message",
            self.error_code.as_ref().map(|c| &c.message),
        ));
        pointers.push((
            "error_code.expired_pointer",
            self.error_code.as_ref().and_then(|c| c.expired_pointer.as_ref()),
        ));
        let fields: Vec<(String, &String)> = self
            .fields
            .iter()
            .map(|(f, p)| (format!("fields.{}", f.as_str()), p))
            .collect();
        for (key, pointer) in pointers
            .into_iter()
            .filter_map(|(k, p)| Some((k.to_owned(), p?)))
            .chain(fields)
        {
            if !pointer.is_empty() && !pointer.starts_with('/') {
                checks.push(
                    &key,
                    "a JSON pointer starts with `/`, e.g. \"/data/list\" (RFC 6901)",
                );
            }
        }
        if let Some(rl) = self.rate_limit
            && rl.per_second == 0
        {
            checks.push("rate_limit.per_second", "must be at least 1");
        }
        let mut params = Vec::new();
        if let Some(w) = &self.window {
            params.push(("window.start_param", &w.start_param));
            params.push(("window.end_param", &w.end_param));
        }
        match &self.paging {
            Paging::Page {
                param, size_param, ..
            } => {
                params.push(("paging.param", param));
                params.extend(size_param.as_ref().map(|p| ("paging.size_param", p)));
            }
            Paging::Offset {
                param, size_param, ..
            } => {
                params.push(("paging.param", param));
                params.push(("paging.size_param", size_param));
            }
            Paging::Cursor { param, .. } => params.push(("paging.param", param)),
            Paging::NextUrl { .. } | Paging::None => {}
        }
        for (key, name) in params {
            if name.starts_with('/') && self.method != Method::Post {
                checks.push(
                    key,
                    "a parameter named by a JSON pointer is set in the body, which needs `method = \"post\"`",
                );
            }
        }
        if self.body.is_some() && self.method != Method::Post {
            checks.push("body", "a body is sent with `method = \"post\"` only");
        }
        if let Some(w) = &self.window
            && jiff::tz::TimeZone::get(&w.timezone).is_err()
        {
            checks.push(
                "window.timezone",
                "not an IANA time zone, e.g. \"Asia/Shanghai\"",
            );
        }
    }

    fn shape(&self) -> Shape {
        (
            super::mapping_of(self),
            Some(std::sync::Arc::new(super::fields_of(&self.fields))),
        )
    }

    fn initial_state(&self) -> State {
        State::Starting
    }

    fn banner(&self, base: &str) -> Option<String> {
        Some(format!(
            "http pull: {} every {:?}; health at {base}/v1/connectors/{}",
            self.url, self.poll_interval, self.name
        ))
    }

    fn start(&self, cx: &Start<'_>) -> anyhow::Result<Started> {
        super::start(self.clone(), cx)
    }
}
