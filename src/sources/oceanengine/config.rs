//! The 巨量引擎 connector's definition (`type = "oceanengine"`) and its checks.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::mapping::FieldMapping;
use crate::sources::connector::{Checks, Connector, Start, Started, RateLimit, Shape, TestLeads, common_fields, default_region, yes};
use crate::sources::status::State;

/// `type = "oceanengine"`: 巨量引擎 leads (see `docs/connectors.md`). A preset of the generic
/// pull for `clue/get`, plus the SPI push.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OceanEngineConnector {
    pub name: String,
    /// The app's access token (`Access-Token` header); write `"${OCEANENGINE_TOKEN}"`.
    pub access_token: SecretString,
    /// The refresh token that came with the access token (`"${OCEANENGINE_REFRESH_TOKEN}"`).
    /// Set, the access token (24 h) is refreshed ahead of its expiry and every refresh's rotated
    /// pair is kept in `<data_dir>/tokens/<name>.json`; it needs `app_id` and `app_secret`.
    #[serde(default)]
    pub refresh_token: Option<SecretString>,
    /// The developer app's id (`app_id`), for refreshes.
    #[serde(default)]
    pub app_id: Option<String>,
    /// The developer app's secret, for refreshes (`"${OCEANENGINE_APP_SECRET}"`).
    #[serde(default)]
    pub app_secret: Option<SecretString>,
    /// The refresh endpoint.
    #[serde(default = "OceanEngineConnector::default_oauth_url")]
    pub oauth_url: String,
    /// `leadgate auth`: the app's redirect URL, as registered with 巨量引擎.
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// `leadgate auth`: the page where an advertiser grants the app access.
    #[serde(default = "OceanEngineConnector::default_authorize_url")]
    pub authorize_url: String,
    /// `leadgate auth`: where the auth code is exchanged for tokens.
    #[serde(default = "OceanEngineConnector::default_token_url")]
    pub token_url: String,
    /// The advertisers whose leads are pulled.
    #[serde(default)]
    pub advertiser_ids: Vec<u64>,
    /// `false`: push only.
    #[serde(default = "yes")]
    pub pull: bool,
    #[serde(default = "OceanEngineConnector::default_api_url")]
    pub api_url: String,
    /// Leads per page (`page_size`).
    #[serde(default = "OceanEngineConnector::default_page_size")]
    pub page_size: u32,
    #[serde(
        with = "humantime_serde",
        default = "OceanEngineConnector::default_poll"
    )]
    pub poll_interval: Duration,
    /// Each poll re-reads leads created this long before the last window ended (fields are
    /// filled about 10 minutes after a lead is created).
    #[serde(
        with = "humantime_serde",
        default = "OceanEngineConnector::default_overlap"
    )]
    pub overlap: Duration,
    #[serde(
        with = "humantime_serde",
        default = "OceanEngineConnector::default_initial"
    )]
    pub initial: Duration,
    /// Leads are pulled once they are this old, so the fields Ocean Engine fills late are there.
    #[serde(
        with = "humantime_serde",
        default = "OceanEngineConnector::default_settle"
    )]
    pub settle: Duration,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// The SPI subscription's secret: pushes are signed with it. Unset: no push.
    #[serde(default)]
    pub spi_secret: Option<SecretString>,
    /// The header carrying the push's hex HMAC-SHA256 (not documented publicly: configurable).
    #[serde(default = "OceanEngineConnector::default_spi_header")]
    pub spi_signature_header: String,
    /// Leads with `clue_source = 4` (ad previews).
    #[serde(default)]
    pub test_leads: TestLeads,
    #[serde(default = "default_region")]
    pub default_region: String,
    #[serde(default)]
    pub mapping: FieldMapping,
    /// Default: `{ wechat = "weixin", qq = "qq" }`.
    #[serde(default = "OceanEngineConnector::default_identity_fields")]
    pub identity_fields: BTreeMap<String, String>,
    /// The answer that says the person agreed, and whether it is required: see
    /// `docs/privacy.md#consent`.
    #[serde(default)]
    pub consent: Option<crate::consent::ConsentMapping>,
}

impl OceanEngineConnector {
    fn default_api_url() -> String {
        "https://ad.oceanengine.com/open_api/2/tools/clue/get/".into()
    }
    fn default_page_size() -> u32 {
        100
    }
    fn default_oauth_url() -> String {
        "https://ad.oceanengine.com/open_api/oauth2/refresh_token/".into()
    }
    fn default_authorize_url() -> String {
        "https://ad.oceanengine.com/openapi/audit/oauth.html".into()
    }
    fn default_token_url() -> String {
        "https://ad.oceanengine.com/open_api/oauth2/access_token/".into()
    }
    fn default_poll() -> Duration {
        Duration::from_secs(5 * 60)
    }
    fn default_overlap() -> Duration {
        Duration::from_secs(30 * 60)
    }
    fn default_initial() -> Duration {
        Duration::from_secs(7 * 24 * 3600)
    }
    fn default_settle() -> Duration {
        Duration::from_secs(10 * 60)
    }
    fn default_spi_header() -> String {
        "X-Open-Signature".into()
    }
    fn default_identity_fields() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("wechat".to_owned(), "weixin".to_owned()),
            ("qq".to_owned(), "qq".to_owned()),
        ])
    }
}

common_fields!(OceanEngineConnector);

impl Connector for OceanEngineConnector {
    fn external_id_field(&self) -> Option<&str> {
        Some("clue_id")
    }

    fn test_leads(&self) -> TestLeads {
        self.test_leads
    }

    fn check(&self, checks: &mut Checks) {
        if self.pull {
            checks.secret("access_token", &self.access_token);
            if self.advertiser_ids.is_empty() {
                checks.push(
                    "advertiser_ids",
                    "list the advertisers to pull, or set `pull = false`",
                );
            }
        }
        if !self.pull && self.spi_secret.is_none() {
            checks.push(
                "spi_secret",
                "with `pull = false` the connector receives pushes only, which needs the SPI secret",
            );
        }
        if self
            .spi_secret
            .as_ref()
            .is_some_and(|s| secrecy::ExposeSecret::expose_secret(s).is_empty())
        {
            checks.push("spi_secret", "must not be empty");
        }
        checks.oauth_app(
            self.refresh_token.as_ref(),
            ("app_id", self.app_id.as_deref()),
            ("app_secret", self.app_secret.as_ref()),
            ("oauth_url", &self.oauth_url),
        );
        checks.header_name("spi_signature_header", &self.spi_signature_header);
        checks.at_least_one("page_size", self.page_size);
        checks.rate_limit(self.rate_limit);
    }

    fn shape(&self) -> Shape {
        let pull = super::pull_config(self);
        (
            crate::sources::http_pull::mapping_of(&pull),
            Some(std::sync::Arc::new(crate::sources::http_pull::fields_of(
                &pull.fields,
            ))),
        )
    }

    fn initial_state(&self) -> State {
        if self.pull {
            State::Starting
        } else {
            State::Passive
        }
    }

    fn banner(&self, base: &str) -> Option<String> {
        let pull = if self.pull {
            format!("clue/get every {:?}", self.poll_interval)
        } else {
            "push only".to_owned()
        };
        let push = if self.spi_secret.is_some() {
            format!(", SPI push at {base}/v1/webhooks/{}", self.name)
        } else {
            String::new()
        };
        Some(format!(
            "巨量引擎 ocean engine: {pull}{push}; health at {base}/v1/connectors/{}",
            self.name
        ))
    }

    fn start(&self, cx: &Start<'_>) -> anyhow::Result<Started> {
        super::start(self, cx)
    }

    fn authorization(&self) -> Option<Box<dyn crate::sources::oauth::Authorize>> {
        super::refresher(self).map(|r| Box::new(r) as Box<dyn crate::sources::oauth::Authorize>)
    }
}
