//! The LinkedIn Lead Sync connector's definition (`type = "linkedin"`) and its checks.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::mapping::FieldMapping;
use crate::sources::connector::{flattened, Checks, Connector, Start, Started, RateLimit, Shape, TestLeads, common_fields, default_region};

/// `type = "linkedin"`: LinkedIn Lead Sync (see `docs/connectors.md`). Register
/// `https://<gateway>/v1/webhooks/{name}` as the app's lead notification URL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkedinConnector {
    pub name: String,
    /// The app's client secret: it signs notifications (`X-LI-Signature`) and answers the
    /// `challengeCode` validation.
    pub client_secret: SecretString,
    /// A token with `r_marketing_leadgen_automation`, sent as `Authorization: Bearer`. With
    /// `client_id` set, the token file written by `leadgate auth` (or a refresh) wins over it.
    pub access_token: SecretString,
    /// The app's client id: with it, `leadgate auth <name>` authorizes the app and the running
    /// gateway takes the new tokens without a restart.
    #[serde(default)]
    pub client_id: Option<String>,
    /// A programmatic refresh token (MDP partners): the access token (60 days) is refreshed at
    /// 80% of its lifetime. LinkedIn does not extend the refresh token's own 365 days.
    #[serde(default)]
    pub refresh_token: Option<SecretString>,
    /// The token endpoint (refresh and code exchange).
    #[serde(default = "LinkedinConnector::default_oauth_url")]
    pub oauth_url: String,
    /// The page a person grants access on (`leadgate auth`).
    #[serde(default = "LinkedinConnector::default_authorize_url")]
    pub authorize_url: String,
    /// The redirect URL registered for the app (`leadgate auth`).
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// The permissions asked for by `leadgate auth`.
    #[serde(default = "LinkedinConnector::default_scope")]
    pub scope: String,
    #[serde(default = "LinkedinConnector::default_api_url")]
    pub api_url: String,
    /// The `LinkedIn-Version` header (`YYYYMM`).
    #[serde(default = "LinkedinConnector::default_api_version")]
    pub api_version: String,
    /// The ad account whose leads are polled (`urn:li:sponsoredAccount:123`): a reconciliation
    /// poll beside the notifications. Unset: notifications only.
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(with = "humantime_serde", default = "LinkedinConnector::default_poll")]
    pub poll_interval: Duration,
    /// Each poll reads responses submitted after the last poll's end, minus this.
    #[serde(
        with = "humantime_serde",
        default = "LinkedinConnector::default_overlap"
    )]
    pub overlap: Duration,
    #[serde(
        with = "humantime_serde",
        default = "LinkedinConnector::default_initial"
    )]
    pub initial: Duration,
    /// Responses per page (`count`).
    #[serde(default = "LinkedinConnector::default_page_size")]
    pub page_size: u32,
    /// Leads with `testLead: true`.
    #[serde(default)]
    pub test_leads: TestLeads,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default = "default_region")]
    pub default_region: String,
    /// Extra names for contact fields (predefined fields or question names), before the preset.
    #[serde(default)]
    pub mapping: FieldMapping,
    #[serde(default)]
    pub identity_fields: BTreeMap<String, String>,
    /// The answer that says the person agreed, and whether it is required: see
    /// `docs/privacy.md#consent`.
    #[serde(default)]
    pub consent: Option<crate::consent::ConsentMapping>,
}

impl LinkedinConnector {
    fn default_api_url() -> String {
        "https://api.linkedin.com/rest".into()
    }
    fn default_oauth_url() -> String {
        "https://www.linkedin.com/oauth/v2/accessToken".into()
    }
    fn default_authorize_url() -> String {
        "https://www.linkedin.com/oauth/v2/authorization".into()
    }
    fn default_scope() -> String {
        "r_marketing_leadgen_automation".into()
    }
    fn default_api_version() -> String {
        "202411".into()
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

common_fields!(LinkedinConnector);

impl Connector for LinkedinConnector {
    fn external_id_field(&self) -> Option<&str> {
        Some("id")
    }

    fn test_leads(&self) -> TestLeads {
        self.test_leads
    }

    fn check(&self, checks: &mut Checks) {
        checks.secret("client_secret", &self.client_secret);
        checks.secret("access_token", &self.access_token);
        checks.oauth_app(
            self.refresh_token.as_ref(),
            ("client_id", self.client_id.as_deref()),
            ("client_secret", Some(&self.client_secret)),
            ("oauth_url", &self.oauth_url),
        );
        if self.client_id.is_some() {
            checks.http_url("oauth_url", &self.oauth_url);
            checks.http_url("authorize_url", &self.authorize_url);
        }
        checks.http_url("api_url", &self.api_url);
        if self.api_version.len() != 6 || !self.api_version.bytes().all(|b| b.is_ascii_digit()) {
            checks.push(
                "api_version",
                "a LinkedIn API version is YYYYMM, e.g. \"202411\"",
            );
        }
        if self
            .owner
            .as_deref()
            .is_some_and(|o| !o.starts_with("urn:li:sponsoredAccount:"))
        {
            checks.push(
                "owner",
                "an ad account URN, e.g. \"urn:li:sponsoredAccount:507404993\"",
            );
        }
        checks.at_least_one("page_size", self.page_size);
        checks.rate_limit(self.rate_limit);
    }

    fn shape(&self) -> Shape {
        flattened(super::mapping_with_preset(&self.mapping), super::fields)
    }

    fn banner(&self, base: &str) -> Option<String> {
        Some(format!(
            "linkedin lead sync: webhook (GET challengeCode, POST) {base}/v1/webhooks/{}",
            self.name
        ))
    }

    fn authorization(&self) -> Option<Box<dyn crate::sources::oauth::Authorize>> {
        super::app(self).map(|a| Box::new(a) as Box<dyn crate::sources::oauth::Authorize>)
    }

    fn start(&self, cx: &Start<'_>) -> anyhow::Result<Started> {
        super::start(self, cx)
    }
}
