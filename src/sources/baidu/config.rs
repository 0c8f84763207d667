//! The 百度营销 线索通 connector's definition (`type = "baidu"`) and its checks.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::mapping::FieldMapping;
use crate::sources::connector::{
    Checks, Connector, RateLimit, Shape, Start, Started, TestLeads, common_fields, default_region,
};
use crate::sources::status::State;

/// `type = "baidu"`: 百度营销 线索通 lead notices (see `docs/connectors.md`). A preset of the
/// generic pull for `LeadsNoticeService/getNoticeList`, with the OAuth refresh of 百度营销's
/// developer apps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaiduConnector {
    pub name: String,
    /// The 推广账户's user name (`header.userName`).
    pub user_name: String,
    /// The access token (`header.accessToken`); write `"${BAIDU_TOKEN}"`.
    pub access_token: SecretString,
    /// The refresh token that came with it: set, the access token is refreshed ahead of its
    /// expiry, each answer kept in `<data_dir>/tokens/<name>.json`; it needs `app_id`,
    /// `secret_key` and `user_id`.
    #[serde(default)]
    pub refresh_token: Option<SecretString>,
    /// The developer app's `appId`.
    #[serde(default)]
    pub app_id: Option<String>,
    /// The developer app's `secretKey`.
    #[serde(default)]
    pub secret_key: Option<SecretString>,
    /// The authorized account's id (`userId`, the ucid the authorization callback names).
    #[serde(default)]
    pub user_id: Option<u64>,
    /// The refresh endpoint.
    #[serde(default = "BaiduConnector::default_oauth_url")]
    pub oauth_url: String,
    /// `leadgate auth`: where the auth code is exchanged.
    #[serde(default = "BaiduConnector::default_token_url")]
    pub token_url: String,
    /// `leadgate auth`: the page where the account grants the app access.
    #[serde(default = "BaiduConnector::default_authorize_url")]
    pub authorize_url: String,
    /// `leadgate auth`: the app's callback address, as registered.
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// `leadgate auth`: the app's permission code (from the app's own authorization link).
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default = "BaiduConnector::default_api_url")]
    pub api_url: String,
    /// `body.solutionType`: `form` (表单), or another 线索通 solution.
    #[serde(default = "BaiduConnector::default_solution_type")]
    pub solution_type: String,
    /// `header.failures[0].code` values that mean the access token expired or is invalid:
    /// refreshed at once (百度 does not publish them; without them the token is still refreshed
    /// at 80% of its lifetime).
    #[serde(default)]
    pub expired_codes: Vec<i64>,
    #[serde(with = "humantime_serde", default = "BaiduConnector::default_poll")]
    pub poll_interval: Duration,
    /// Each poll re-reads this much of the last window (its dates are whole days, GMT+8).
    #[serde(with = "humantime_serde", default = "BaiduConnector::default_overlap")]
    pub overlap: Duration,
    #[serde(with = "humantime_serde", default = "BaiduConnector::default_initial")]
    pub initial: Duration,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub test_leads: TestLeads,
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

impl BaiduConnector {
    fn default_oauth_url() -> String {
        "https://u.baidu.com/oauth/refreshToken".into()
    }
    fn default_token_url() -> String {
        "https://u.baidu.com/oauth/accessToken".into()
    }
    fn default_authorize_url() -> String {
        "https://u.baidu.com/oauth/page/index".into()
    }
    fn default_api_url() -> String {
        "https://api.baidu.com/json/sms/service/LeadsNoticeService/getNoticeList".into()
    }
    fn default_solution_type() -> String {
        "form".into()
    }
    fn default_poll() -> Duration {
        Duration::from_secs(5 * 60)
    }
    fn default_overlap() -> Duration {
        Duration::from_secs(3600)
    }
    fn default_initial() -> Duration {
        Duration::from_secs(7 * 24 * 3600)
    }
}

common_fields!(BaiduConnector);

impl Connector for BaiduConnector {
    fn external_id_field(&self) -> Option<&str> {
        Some("clueId")
    }

    fn test_leads(&self) -> TestLeads {
        self.test_leads
    }

    fn check(&self, checks: &mut Checks) {
        if self.user_name.trim().is_empty() {
            checks.push("user_name", "must not be empty");
        }
        checks.secret("access_token", &self.access_token);
        checks.oauth_app(
            self.refresh_token.as_ref(),
            ("app_id", self.app_id.as_deref()),
            ("secret_key", self.secret_key.as_ref()),
            ("oauth_url", &self.oauth_url),
        );
        if self.refresh_token.is_some() && self.user_id.is_none() {
            checks.push("user_id", "a refresh needs the authorized account's id");
        }
        checks.http_url("api_url", &self.api_url);
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
        State::Starting
    }

    fn banner(&self, base: &str) -> Option<String> {
        Some(format!(
            "百度营销 线索通: getNoticeList every {:?}; health at {base}/v1/connectors/{}",
            self.poll_interval, self.name
        ))
    }

    fn authorization(&self) -> Option<Box<dyn crate::sources::oauth::Authorize>> {
        super::app(self).map(|a| Box::new(a) as Box<dyn crate::sources::oauth::Authorize>)
    }

    fn start(&self, cx: &Start<'_>) -> anyhow::Result<Started> {
        super::start(self, cx)
    }
}
