//! What every connector implements once, in its own folder (`src/sources/<platform>/`): its
//! definition's fields ([`Common`] and its own), its checks, how its payloads are read, its
//! initial health and its line in the start-up banner. [`ConnectorConfig`](super::ConnectorConfig)
//! holds one definition of any platform and only delegates to this trait.
//!
//! The settings every connector shares (regions, rate limits, test leads) live here too, so that
//! platforms need nothing from the settings module.

use std::collections::BTreeMap;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::intake::Journal;
use crate::mapping::{FieldMapping, FieldsFn};
use crate::sources::pull::PageSink;
use crate::sources::push::Webhook;
use crate::sources::status::{State, Statuses};
use crate::sources::supervise::Task;

/// The fields every connector definition has.
pub trait Common {
    /// Unique; it names the connector in URLs, records and health.
    fn name(&self) -> &str;
    /// ISO 3166 region for numbers written without a country code.
    fn default_region(&self) -> &str;
    /// Extra input field names for contact fields, matched before the built-in and preset ones.
    fn mapping(&self) -> &FieldMapping;
    /// Platform ids this connector's leads carry, by key kind: `{ wechat = "openid" }`.
    fn identity_fields(&self) -> &BTreeMap<String, String>;
    /// The consent answer of its leads, if it names one.
    fn consent(&self) -> Option<&crate::consent::ConsentMapping>;
}

/// Implements [`Common`] for a definition with the fields `name`, `default_region`, `mapping` and
/// `identity_fields`.
macro_rules! common_fields {
    ($ty:ty) => {
        impl $crate::sources::connector::Common for $ty {
            fn name(&self) -> &str {
                &self.name
            }
            fn default_region(&self) -> &str {
                &self.default_region
            }
            fn mapping(&self) -> &$crate::mapping::FieldMapping {
                &self.mapping
            }
            fn identity_fields(&self) -> &std::collections::BTreeMap<String, String> {
                &self.identity_fields
            }
            fn consent(&self) -> Option<&$crate::consent::ConsentMapping> {
                self.consent.as_ref()
            }
        }
    };
}
pub(crate) use common_fields;

/// One platform's connector. Everything has a default but [`Common`]: a platform states only
/// what it does differently.
pub trait Connector: Common + Send + Sync {
    /// The field of a payload holding the platform's own id of the lead (`source.external_id`);
    /// a second event with the same id is a redelivery.
    fn external_id_field(&self) -> Option<&str> {
        None
    }

    /// What happens to the platform's test leads.
    fn test_leads(&self) -> TestLeads {
        TestLeads::Topic
    }

    /// The platform's own checks of its definition (the common fields are checked for every
    /// connector by the settings loader).
    fn check(&self, _checks: &mut Checks) {}

    /// How its payloads are read: the field mapping (its own names first, then a platform
    /// preset) and, for nested answers, the function that flattens a payload into fields.
    fn shape(&self) -> Shape {
        (self.mapping().clone(), None)
    }

    /// The state its health starts in: [`State::Passive`] for pushes and files, `Starting` for
    /// connectors that run tasks.
    fn initial_state(&self) -> State {
        State::Passive
    }

    /// A mode shown in its health (MySQL: `incremental` or `binlog`).
    fn mode(&self) -> Option<String> {
        None
    }

    /// Its OAuth authorization (`leadgate auth <connector>`), where the platform has one and the
    /// definition names the app.
    fn authorization(&self) -> Option<Box<dyn crate::sources::oauth::Authorize>> {
        None
    }

    /// Its line in the start-up banner, given the gateway's base URL (`http://127.0.0.1:8080`);
    /// `None` for connectors that do not run in the gateway (files).
    fn banner(&self, base: &str) -> Option<String>;

    /// What it runs in the gateway: its tasks (run under the sources' supervisor) and its
    /// webhook, if it takes pushes. Called once at start-up; an error stops the start.
    fn start(&self, _: &Start<'_>) -> anyhow::Result<Started> {
        Ok(Started::default())
    }
}

/// What a connector starts with.
pub struct Start<'a> {
    pub journal: &'a Journal,
    /// The gateway's data directory (token files live under `tokens/`).
    pub data_dir: &'a std::path::Path,
    pub statuses: &'a Statuses,
    /// Pulled pages wait while the journal holds this many undelivered events.
    pub max_backlog: u64,
    /// The platform API clients, one per request timeout, shared by every connector (one
    /// connection pool and TLS set-up, however many connectors there are).
    clients: std::sync::Mutex<std::collections::HashMap<std::time::Duration, reqwest::Client>>,
}

impl<'a> Start<'a> {
    pub fn new(
        journal: &'a Journal,
        data_dir: &'a std::path::Path,
        statuses: &'a Statuses,
        max_backlog: u64,
    ) -> Self {
        Self {
            journal,
            data_dir,
            statuses,
            max_backlog,
            clients: Default::default(),
        }
    }

    /// Where the connector `name` journals pages and reports.
    pub fn sink(&self, name: &str) -> PageSink {
        PageSink::new(name, self.journal, self.statuses, self.max_backlog)
    }

    /// The shared HTTP client for platform APIs whose requests may take up to `timeout`.
    pub fn client(&self, timeout: std::time::Duration) -> reqwest::Result<reqwest::Client> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = clients.get(&timeout) {
            return Ok(c.clone());
        }
        let c = crate::sources::pull::api_client(timeout)?;
        clients.insert(timeout, c.clone());
        Ok(c)
    }
}

/// What a connector runs.
#[derive(Default)]
pub struct Started {
    pub tasks: Vec<Task>,
    pub webhook: Option<Arc<dyn Webhook>>,
}

impl Started {
    pub fn webhook(webhook: impl Webhook + 'static) -> Self {
        Self {
            tasks: Vec::new(),
            webhook: Some(Arc::new(webhook)),
        }
    }
}

/// A connector's field mapping and, for nested payloads, its flattening function.
pub type Shape = (FieldMapping, Option<FieldsFn>);

/// The [`Shape`] of a platform whose payloads `fields` flattens, read with `mapping`.
pub fn flattened(
    mapping: FieldMapping,
    fields: fn(&serde_json::Value) -> serde_json::Value,
) -> Shape {
    (mapping, Some(std::sync::Arc::new(fields)))
}

/// The problems a connector's [`Connector::check`] finds: the field (dotted path) and why. The
/// settings loader adds the file, line and connector.
#[derive(Debug, Default)]
pub struct Checks(pub Vec<(String, String)>);

impl Checks {
    pub fn push(&mut self, field: &str, message: &str) {
        self.0.push((field.to_owned(), message.to_owned()));
    }

    /// A secret that must be set to something.
    pub fn secret(&mut self, field: &str, secret: &SecretString) {
        if secret.expose_secret().trim().is_empty() {
            self.push(field, "must not be empty");
        }
    }

    /// An optional secret that, when given, must be set to something.
    pub fn secret_if_set(&mut self, field: &str, secret: Option<&SecretString>) {
        if let Some(s) = secret {
            self.secret(field, s);
        }
    }

    /// An OAuth app's settings, checked when a refresh token is set: the token, the app's id and
    /// secret (named `id_field`, `secret_field`), and the refresh endpoint.
    pub fn oauth_app(
        &mut self,
        refresh_token: Option<&SecretString>,
        (id_field, id): (&str, Option<&str>),
        (secret_field, secret): (&str, Option<&SecretString>),
        (url_field, url): (&str, &str),
    ) {
        let Some(refresh_token) = refresh_token else {
            return;
        };
        self.secret("refresh_token", refresh_token);
        if id.is_none_or(|a| a.trim().is_empty()) {
            self.push(id_field, "a refresh needs the app's id");
        }
        match secret {
            Some(secret) => self.secret(secret_field, secret),
            None => self.push(secret_field, "a refresh needs the app's secret"),
        }
        self.http_url(url_field, url);
    }

    pub fn http_url(&mut self, field: &str, url: &str) {
        if !reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
            self.push(field, "must be an http:// or https:// URL");
        }
    }

    pub fn header_name(&mut self, field: &str, name: &str) {
        if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            self.push(field, "not a valid HTTP header name");
        }
    }

    pub fn rate_limit(&mut self, rate_limit: Option<RateLimit>) {
        let Some(rl) = rate_limit else {
            return;
        };
        if rl.per_second == 0 {
            self.push("rate_limit.per_second", "must be at least 1");
        }
        if rl.burst == Some(0) {
            self.push("rate_limit.burst", "must be at least 1");
        }
    }

    pub fn at_least_one(&mut self, field: &str, n: u32) {
        if n == 0 {
            self.push(field, "must be at least 1");
        }
    }
}

/// Where a platform's test leads go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestLeads {
    /// To `[topics] test` (`leads.test`), never to the clean stream.
    #[default]
    Topic,
    /// With the other leads, marked `source.test = true`.
    Flag,
}

/// `rate_limit = { per_second = 50, burst = 100 }`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    #[serde(default)]
    pub burst: Option<u32>,
}

impl RateLimit {
    /// The governor limiter for it (`None` when `per_second` is 0, which validation refuses).
    pub fn limiter(&self) -> Option<governor::DefaultDirectRateLimiter> {
        let per_second = std::num::NonZeroU32::new(self.per_second)?;
        let burst = self
            .burst
            .and_then(std::num::NonZeroU32::new)
            .unwrap_or(per_second);
        Some(governor::RateLimiter::direct(
            governor::Quota::per_second(per_second).allow_burst(burst),
        ))
    }
}

/// The default `default_region`.
pub fn default_region() -> String {
    "CN".into()
}

pub fn yes() -> bool {
    true
}
