//! The Meta Lead Ads connector's definition (`type = "meta"`) and its checks.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::mapping::FieldMapping;
use crate::sources::connector::{flattened, Checks, Connector, Start, Started, RateLimit, Shape, common_fields, default_region};
use crate::sources::status::State;

/// `type = "meta"`: Meta Lead Ads (see `docs/connectors.md`). Subscribe the app's page webhook
/// (`leadgen` field) to `https://<gateway>/v1/webhooks/{name}`; list the forms to reconcile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaConnector {
    pub name: String,
    /// The app secret: webhooks are signed with it (`X-Hub-Signature-256`).
    pub app_secret: SecretString,
    /// The token entered in the app's webhook settings, echoed in the `hub.challenge` handshake.
    pub verify_token: SecretString,
    /// A page access token with `leads_retrieval`; sent as `Authorization: Bearer`.
    pub access_token: SecretString,
    /// The app's id: with it, the token's expiry is read from `debug_token` (with the app token
    /// `{app_id}|{app_secret}`) and shown in the connector's health.
    /// With it, `leadgate auth <name>` also works: a person grants access, the code is exchanged
    /// for a long-lived token (and, with `page_id`, the page's token that does not expire), and
    /// the running gateway uses it without a restart.
    #[serde(default)]
    pub app_id: Option<String>,
    /// The page whose leads these are: `leadgate auth` stores its page token.
    #[serde(default)]
    pub page_id: Option<String>,
    /// `leadgate auth`: the redirect URL listed in the app's Facebook Login settings.
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// `leadgate auth`: the login dialog.
    #[serde(default = "MetaConnector::default_dialog_url")]
    pub dialog_url: String,
    /// `leadgate auth`: the permissions asked for.
    #[serde(default = "MetaConnector::default_scope")]
    pub scope: String,
    /// The Graph API base, with its version.
    #[serde(default = "MetaConnector::default_graph_url")]
    pub graph_url: String,
    /// Lead form ids polled for leads the webhook missed (`GET /{form}/leads`). Empty: webhook
    /// only.
    #[serde(default)]
    pub forms: Vec<String>,
    /// The pause between reconciliation polls.
    #[serde(with = "humantime_serde", default = "MetaConnector::default_poll")]
    pub poll_interval: Duration,
    /// Each poll asks for leads created after the last poll began, minus this.
    #[serde(with = "humantime_serde", default = "MetaConnector::default_overlap")]
    pub overlap: Duration,
    /// How far back the very first poll reaches (Meta keeps leads for 90 days).
    #[serde(with = "humantime_serde", default = "MetaConnector::default_initial")]
    pub initial: Duration,
    /// Leads per page; halved while Meta throttles, grown back after.
    #[serde(default = "MetaConnector::default_page_size")]
    pub page_size: u32,
    /// Graph requests per second (the app's and the page's quotas are shared).
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default = "default_region")]
    pub default_region: String,
    /// Extra names for contact fields (form question keys), matched before the preset.
    #[serde(default)]
    pub mapping: FieldMapping,
    #[serde(default)]
    pub identity_fields: BTreeMap<String, String>,
    /// The answer that says the person agreed, and whether it is required: see
    /// `docs/privacy.md#consent`.
    #[serde(default)]
    pub consent: Option<crate::consent::ConsentMapping>,
}

impl MetaConnector {
    fn default_graph_url() -> String {
        "https://graph.facebook.com/v21.0".into()
    }
    fn default_dialog_url() -> String {
        "https://www.facebook.com/v21.0/dialog/oauth".into()
    }
    fn default_scope() -> String {
        "leads_retrieval,pages_show_list,pages_read_engagement,pages_manage_metadata,pages_manage_ads,ads_management".into()
    }
    fn default_poll() -> Duration {
        Duration::from_secs(15 * 60)
    }
    fn default_overlap() -> Duration {
        Duration::from_secs(3600)
    }
    fn default_initial() -> Duration {
        Duration::from_secs(7 * 24 * 3600)
    }
    fn default_page_size() -> u32 {
        100
    }
}

common_fields!(MetaConnector);

impl Connector for MetaConnector {
    fn external_id_field(&self) -> Option<&str> {
        Some("id")
    }

    fn check(&self, checks: &mut Checks) {
        checks.secret("app_secret", &self.app_secret);
        checks.secret("verify_token", &self.verify_token);
        checks.secret("access_token", &self.access_token);
        checks.http_url("graph_url", &self.graph_url);
        if self.app_id.is_some() {
            checks.http_url("dialog_url", &self.dialog_url);
        }
        if self
            .page_id
            .as_deref()
            .is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            checks.push("page_id", "a page id is digits");
        }
        for form in &self.forms {
            if form.is_empty() || !form.bytes().all(|b| b.is_ascii_digit()) {
                checks.push("forms", &format!("`{form}` is not a form id (digits)"));
            }
        }
        checks.at_least_one("page_size", self.page_size);
        checks.rate_limit(self.rate_limit);
    }

    fn shape(&self) -> Shape {
        flattened(super::mapping_with_preset(&self.mapping), super::fields)
    }

    fn initial_state(&self) -> State {
        State::Starting
    }

    fn banner(&self, base: &str) -> Option<String> {
        Some(format!(
            "meta lead ads: webhook (GET handshake, POST) {base}/v1/webhooks/{}; {} forms reconciled every {:?}",
            self.name,
            self.forms.len(),
            self.poll_interval
        ))
    }

    fn authorization(&self) -> Option<Box<dyn crate::sources::oauth::Authorize>> {
        super::auth::app(self).map(|a| Box::new(a) as Box<dyn crate::sources::oauth::Authorize>)
    }

    fn start(&self, cx: &Start<'_>) -> anyhow::Result<Started> {
        super::start(self, cx)
    }
}
