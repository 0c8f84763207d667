//! Sources: how leads enter. Each platform lives in its own folder (`src/sources/<platform>/`)
//! with its definition, checks, payload shape, webhook handling and tasks; [`ConnectorConfig`]
//! holds one definition of any of them and delegates to its [`Connector`] implementation. The
//! shared machinery: [`pull`] (paged pulls, checkpoints), [`inbox`] (leads notified by id),
//! [`status`] (health), [`connector`] (the trait and the shared settings).

pub mod connector;
pub mod forms;
pub mod inbox;
pub mod oauth;
pub mod pull;
pub mod push;
pub mod status;
pub mod supervise;

pub use connector::{Checks, Common, Connector, RateLimit, Shape, TestLeads};

/// The connector types: one line per platform, `Variant(folder::Definition) = "type"`. This is
/// the only place outside a platform's folder that names it; the enum, its parsing by `type`
/// and its delegation to [`Connector`] are generated from this list.
macro_rules! connectors {
    ($( $(#[$doc:meta])* $variant:ident($module:ident::$ty:ident) = $tag:literal, )*) => {
        $( pub mod $module; )*

        /// One connector definition, `[[connectors]]` in the settings or a file listed in
        /// `include`, tagged by its `type`.
        #[derive(Debug, Clone)]
        pub enum ConnectorConfig {
            $( $(#[$doc])* $variant(Box<$module::$ty>), )*
        }

        impl ConnectorConfig {
            /// Every `type`, in the order of the list.
            pub const TYPES: &'static [&'static str] = &[$($tag),*];

            /// The platform's own implementation.
            pub fn get(&self) -> &dyn Connector {
                match self {
                    $( Self::$variant(c) => &**c, )*
                }
            }

            /// Its `type`.
            pub fn kind(&self) -> &'static str {
                match self {
                    $( Self::$variant(_) => $tag, )*
                }
            }

            /// Reads a definition of type `kind` (without its `type` key); `None` for a type
            /// that does not exist.
            pub fn deserialize_as<'de, D: serde::Deserializer<'de>>(
                kind: &str,
                definition: D,
            ) -> Option<Result<Self, D::Error>> {
                Some(match kind {
                    $( $tag => <$module::$ty as serde::Deserialize>::deserialize(definition)
                        .map(|c| Self::$variant(Box::new(c))), )*
                    _ => return None,
                })
            }
        }
    };
}

connectors! {
    /// Receives `POST /v1/webhooks/{name}` (web forms and anything that posts JSON or a form).
    Webhook(webhook::WebhookConnector) = "webhook",
    /// A named mapping for `leadgate import --source NAME`.
    File(file::FileConnector) = "file",
    /// Rows of a MySQL/MariaDB table, pulled incrementally or read from the binlog.
    Mysql(mysql::MysqlConnector) = "mysql",
    /// Google Ads lead form webhooks: `POST /v1/webhooks/{name}`.
    GoogleAds(google_ads::GoogleAdsConnector) = "google_ads",
    /// Any paged JSON API, all configuration: page numbers, offsets, cursors or next-page URLs.
    HttpPull(http_pull::HttpPullConnector) = "http_pull",
    /// Meta (Facebook/Instagram) Lead Ads: the `leadgen` webhook, each lead fetched from the
    /// Graph API, and a reconciliation poll of the forms' leads.
    Meta(meta::MetaConnector) = "meta",
    /// 巨量引擎 Ocean Engine: the `clue/get` pull in GMT+8 windows, and the SPI push.
    Oceanengine(oceanengine::OceanEngineConnector) = "oceanengine",
    /// LinkedIn Lead Sync: signed notifications, each lead fetched from the Marketing API.
    Linkedin(linkedin::LinkedinConnector) = "linkedin",
    /// TikTok lead generation: signed callbacks, and the lead download tasks of the listed forms.
    Tiktok(tiktok::TiktokConnector) = "tiktok",
    /// 腾讯广告 Tencent Ads: the `leads_list/get` pull.
    Tencent(tencent::TencentConnector) = "tencent",
    /// 百度营销 线索通: the `getNoticeList` pull, with the OAuth refresh of its developer apps.
    Baidu(baidu::BaiduConnector) = "baidu",
    /// Tally form webhooks: signed responses, answers read by label and key.
    Tally(tally::TallyConnector) = "tally",
    /// Typeform form webhooks: signed responses, typed answers read by title, ref and id.
    Typeform(typeform::TypeformConnector) = "typeform",
    /// Jotform form webhooks: multipart submissions behind a URL token, answers from
    /// `rawRequest` by key, slug and label.
    Jotform(jotform::JotformConnector) = "jotform",
    /// 金数据 数据推送: entries by field code behind a URL token, verified phones and choices
    /// read.
    Jinshuju(jinshuju::JinshujuConnector) = "jinshuju",
    /// 腾讯问卷 Webhook: answer sheets (pages of questions) behind a URL token.
    TencentWj(tencent_wj::TencentWjConnector) = "tencent_wj",
    /// Webflow form submissions: signed (API webhooks) or tokened, fields by label.
    Webflow(webflow::WebflowConnector) = "webflow",
    /// HubSpot workflow webhooks: the enrolled record's properties, v3-signed.
    Hubspot(hubspot::HubspotConnector) = "hubspot",
    /// Elementor Pro forms' webhook action: labels as keys, or "Advanced Data".
    Elementor(elementor::ElementorConnector) = "elementor",
    /// Gravity Forms (Webhooks Add-On): entries by field id.
    GravityForms(gravity_forms::GravityFormsConnector) = "gravity_forms",
    /// 问卷星 答卷API推送: flat answer sheets, option numbers resolved by `choices`.
    Wjx(wjx::WjxConnector) = "wjx",
    /// Google Forms through the shipped Apps Script snippet: signed, answers by title.
    GoogleForms(google_forms::GoogleFormsConnector) = "google_forms",
}

impl ConnectorConfig {
    pub fn name(&self) -> &str {
        self.get().name()
    }

    pub fn mapping(&self) -> &crate::mapping::FieldMapping {
        self.get().mapping()
    }

    pub fn default_region(&self) -> &str {
        self.get().default_region()
    }

    /// Platform ids this connector's leads carry, by key kind: `{ wechat = "openid" }`.
    pub fn identity_fields(&self) -> &std::collections::BTreeMap<String, String> {
        self.get().identity_fields()
    }

    /// The consent answer of its leads, if it names one.
    pub fn consent(&self) -> Option<&crate::consent::ConsentMapping> {
        self.get().consent()
    }

    /// What happens to the platform's test leads.
    pub fn test_leads(&self) -> TestLeads {
        self.get().test_leads()
    }

    pub fn external_id_field(&self) -> Option<&str> {
        self.get().external_id_field()
    }
}

use std::collections::HashMap;
use std::sync::Arc;

use crate::mapping::FieldMapping;

/// What the API needs of the running sources: their statuses, and the webhooks of connectors
/// that take pushes, by connector name.
#[derive(Clone, Default)]
pub struct Running {
    pub statuses: status::Statuses,
    pub webhooks: HashMap<String, Arc<dyn push::Webhook>>,
}

/// Starts every connector's tasks under one supervisor, and returns what the API needs of them
/// and the supervisor (which waits for the tasks at shutdown). A connector that cannot start is
/// an error here; one that fails later shows it in its status and is retried.
pub fn start_all(
    connectors: &[ConnectorConfig],
    journal: &crate::intake::Journal,
    data_dir: &std::path::Path,
    max_backlog: u64,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(Running, supervise::Supervisor)> {
    start_leased(connectors, journal, data_dir, max_backlog, shutdown, None)
        .map(|(running, supervisor, _)| (running, supervisor))
}

/// [`start_all`], with the pull connectors leased when `gateway` (this gateway's name) is given
/// (`[coordination]`): their reading tasks run only while this gateway holds their lease, which
/// the returned [`crate::coord::Leases`] carries.
pub fn start_leased(
    connectors: &[ConnectorConfig],
    journal: &crate::intake::Journal,
    data_dir: &std::path::Path,
    max_backlog: u64,
    shutdown: &tokio::sync::watch::Receiver<bool>,
    gateway: Option<&str>,
) -> anyhow::Result<(Running, supervise::Supervisor, Option<crate::coord::Leases>)> {
    use anyhow::Context;
    let statuses = status::Statuses::new(connectors);
    statuses.keep_pauses_in(data_dir.join("paused-connectors.json"))?;
    let cx = connector::Start::new(journal, data_dir, &statuses, max_backlog);
    let mut started = Vec::new();
    for c in connectors {
        let s = c
            .get()
            .start(&cx)
            .with_context(|| format!("cannot start the {} connector `{}`", c.kind(), c.name()))?;
        started.push((c, s));
    }
    let leases = gateway.map(|g| {
        let leased = started
            .iter()
            .filter(|(_, s)| {
                s.tasks
                    .iter()
                    .any(|t| crate::coord::LEASED_ROLES.contains(&t.role))
            })
            .map(|(c, _)| c.name().to_owned());
        crate::coord::Leases::new(g, leased)
    });
    let mut supervisor = supervise::Supervisor::new(statuses.clone(), shutdown.clone());
    if let Some(l) = &leases {
        supervisor = supervisor.with_leases(l.clone());
    }
    let mut webhooks = HashMap::new();
    for (c, started) in started {
        for task in started.tasks {
            supervisor.spawn(task);
        }
        if let Some(webhook) = started.webhook {
            webhooks.insert(c.name().to_owned(), webhook);
            statuses.update(c.name(), |s| {
                s.webhook = Some(format!("/v1/webhooks/{}", c.name()));
            });
        }
    }
    Ok((Running { statuses, webhooks }, supervisor, leases))
}

/// A platform's id as text: ids come as strings or as numbers.
pub fn id_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The top-level scalars of a payload (its ids, times, flat answers), the start of the fields a
/// platform's mapping reads.
pub fn scalars(
    obj: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    obj.iter()
        .filter(|(_, v)| !v.is_array() && !v.is_object())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `mapping` first, then a platform's preset names for each contact field.
pub fn with_preset(
    mapping: &FieldMapping,
    preset: &[(crate::mapping::ContactField, &[&str])],
) -> FieldMapping {
    let mut out = mapping.clone();
    for (field, names) in preset {
        out.entry(*field)
            .or_default()
            .extend(names.iter().map(|n| (*n).to_owned()));
    }
    out
}

/// Adds `full` as `first last` when a form asked for the two parts only.
pub fn join_name(
    fields: &mut serde_json::Map<String, serde_json::Value>,
    full: &str,
    first: &str,
    last: &str,
) {
    if fields.contains_key(full) {
        return;
    }
    let part = |k: &str| {
        fields
            .get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .trim()
    };
    if let Some(name) = person_name(part(first), part(last)) {
        fields.insert(full.to_owned(), serde_json::Value::String(name));
    }
}

/// A name from its given and family parts: `Jane Doe`, but `王小明` for Chinese (and Japanese
/// and Korean) names, which put the family name first and no space between; `None` when both
/// are blank.
pub fn person_name(given: &str, family: &str) -> Option<String> {
    let (given, family) = (given.trim(), family.trim());
    let cjk = |s: &str| {
        s.chars().any(|c| {
            matches!(c, '\u{3040}'..='\u{30ff}' | '\u{3400}'..='\u{4dbf}' | '\u{4e00}'..='\u{9fff}' | '\u{ac00}'..='\u{d7af}' | '\u{f900}'..='\u{faff}' | '\u{20000}'..='\u{3134f}')
        })
    };
    match (given.is_empty(), family.is_empty()) {
        (true, true) => None,
        (false, true) => Some(given.to_owned()),
        (true, false) => Some(family.to_owned()),
        _ if cjk(given) && cjk(family) => Some(format!("{family}{given}")),
        _ => Some(format!("{given} {family}")),
    }
}

/// A recorded payload of `platform` from `connectors/fixtures/` (for unit tests).
#[cfg(test)]
pub(crate) fn fixture_bytes(platform: &str, name: &str) -> Vec<u8> {
    let path = format!(
        "{}/connectors/fixtures/{platform}/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// [`fixture_bytes`] as JSON.
#[cfg(test)]
pub(crate) fn fixture_json(platform: &str, name: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture_bytes(platform, name)).expect("a JSON fixture")
}
