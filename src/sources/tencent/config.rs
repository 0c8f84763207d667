//! The 腾讯广告 connector's definition (`type = "tencent"`) and its checks.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::mapping::FieldMapping;
use crate::sources::connector::{flattened, Checks, Connector, Start, Started, RateLimit, Shape, common_fields, default_region};
use crate::sources::status::State;

/// `type = "tencent"`: 腾讯广告 leads (see `docs/connectors.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TencentConnector {
    pub name: String,
    /// Sent as the `access_token` parameter; write `"${TENCENT_ADS_TOKEN}"`.
    pub access_token: SecretString,
    /// The refresh token that came with the access token (`"${TENCENT_ADS_REFRESH_TOKEN}"`).
    /// Set, the access token (24 h) is refreshed ahead of its expiry and each rotated pair kept
    /// in `<data_dir>/tokens/<name>.json`; it needs `client_id` and `client_secret`.
    #[serde(default)]
    pub refresh_token: Option<SecretString>,
    /// The developer app's id (`client_id`), for refreshes.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The developer app's secret, for refreshes (`"${TENCENT_ADS_CLIENT_SECRET}"`).
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    /// The refresh endpoint (also where `leadgate auth` exchanges its code).
    #[serde(default = "TencentConnector::default_oauth_url")]
    pub oauth_url: String,
    /// `leadgate auth`: the app's redirect address, as registered with 腾讯广告.
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// `leadgate auth`: the page where an advertiser grants the app access.
    #[serde(default = "TencentConnector::default_authorize_url")]
    pub authorize_url: String,
    pub account_id: u64,
    #[serde(default = "TencentConnector::default_api_url")]
    pub api_url: String,
    /// Leads per page (at most 200).
    #[serde(default = "TencentConnector::default_page_size")]
    pub page_size: u32,
    /// `TIME_TYPE_CREATED_TIME` or `TIME_TYPE_ACTION_TIME`.
    #[serde(default = "TencentConnector::default_time_type")]
    pub time_type: String,
    /// Rows served by page number; past them, `last_search_after_values` carries the position.
    #[serde(default = "TencentConnector::default_deep_paging_limit")]
    pub deep_paging_limit: u32,
    #[serde(with = "humantime_serde", default = "TencentConnector::default_poll")]
    pub poll_interval: Duration,
    #[serde(
        with = "humantime_serde",
        default = "TencentConnector::default_overlap"
    )]
    pub overlap: Duration,
    #[serde(
        with = "humantime_serde",
        default = "TencentConnector::default_initial"
    )]
    pub initial: Duration,
    /// Response codes that mean throttling (retried with backoff).
    #[serde(default)]
    pub throttled_codes: Vec<i64>,
    /// Response codes that mean the token expired or was revoked: with `refresh_token`, a new
    /// token is fetched and the page asked for again; without, the connector stops. Default:
    /// 11000 (expired), 11002 (invalid), 11004 (malformed), 11005 (empty).
    #[serde(default = "TencentConnector::default_expired_codes")]
    pub expired_codes: Vec<i64>,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default = "default_region")]
    pub default_region: String,
    #[serde(default)]
    pub mapping: FieldMapping,
    /// Default: `{ wechat = "leads_wechat", qq = "leads_qq" }`.
    #[serde(default = "TencentConnector::default_identity_fields")]
    pub identity_fields: BTreeMap<String, String>,
    /// The answer that says the person agreed, and whether it is required: see
    /// `docs/privacy.md#consent`.
    #[serde(default)]
    pub consent: Option<crate::consent::ConsentMapping>,
}

impl TencentConnector {
    fn default_api_url() -> String {
        "https://api.e.qq.com/v3.0/leads_list/get".into()
    }
    fn default_expired_codes() -> Vec<i64> {
        vec![11000, 11002, 11004, 11005]
    }
    fn default_oauth_url() -> String {
        "https://api.e.qq.com/oauth/token".into()
    }
    fn default_authorize_url() -> String {
        "https://developers.e.qq.com/oauth/authorize".into()
    }
    fn default_page_size() -> u32 {
        100
    }
    fn default_time_type() -> String {
        "TIME_TYPE_CREATED_TIME".into()
    }
    fn default_deep_paging_limit() -> u32 {
        5000
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
    fn default_identity_fields() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("wechat".to_owned(), "leads_wechat".to_owned()),
            ("qq".to_owned(), "leads_qq".to_owned()),
        ])
    }
}

common_fields!(TencentConnector);

impl Connector for TencentConnector {
    fn external_id_field(&self) -> Option<&str> {
        Some("leads_id")
    }

    fn check(&self, checks: &mut Checks) {
        checks.secret("access_token", &self.access_token);
        checks.oauth_app(
            self.refresh_token.as_ref(),
            ("client_id", self.client_id.as_deref()),
            ("client_secret", self.client_secret.as_ref()),
            ("oauth_url", &self.oauth_url),
        );
        if !(1..=200).contains(&self.page_size) {
            checks.push("page_size", "must be 1 to 200");
        }
        if self.deep_paging_limit < self.page_size {
            checks.push("deep_paging_limit", "must be at least `page_size`");
        }
        if !matches!(
            self.time_type.as_str(),
            "TIME_TYPE_CREATED_TIME" | "TIME_TYPE_ACTION_TIME"
        ) {
            checks.push(
                "time_type",
                "must be TIME_TYPE_CREATED_TIME or TIME_TYPE_ACTION_TIME",
            );
        }
        checks.http_url("api_url", &self.api_url);
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
            "腾讯广告 tencent ads: leads_list/get of account {} every {:?}; health at {base}/v1/connectors/{}",
            self.account_id, self.poll_interval, self.name
        ))
    }

    fn authorization(&self) -> Option<Box<dyn crate::sources::oauth::Authorize>> {
        super::refresher(self).map(|r| Box::new(r) as Box<dyn crate::sources::oauth::Authorize>)
    }

    fn start(&self, cx: &Start<'_>) -> anyhow::Result<Started> {
        super::start(self, cx)
    }
}
