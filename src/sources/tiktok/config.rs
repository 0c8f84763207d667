//! The TikTok lead generation connector's definition (`type = "tiktok"`) and its checks.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::mapping::FieldMapping;
use crate::sources::connector::{flattened, Checks, Connector, Start, Started, RateLimit, Shape, common_fields, default_region};
use crate::sources::status::State;

/// `type = "tiktok"`: TikTok lead generation (see `docs/connectors.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TiktokConnector {
    pub name: String,
    /// The secret callbacks are signed with; set it to take callbacks on `/v1/webhooks/{name}`.
    #[serde(default)]
    pub secret: Option<SecretString>,
    /// The header carrying a callback's hex HMAC-SHA256.
    #[serde(default = "TiktokConnector::default_signature_header")]
    pub signature_header: String,
    /// The Business API token (`Access-Token` header); set it, `advertiser_id` and `page_ids`
    /// to download leads.
    #[serde(default)]
    pub access_token: Option<SecretString>,
    #[serde(default)]
    pub advertiser_id: Option<String>,
    /// The app's id and secret (My Apps, Basic Information): with them, `leadgate auth <name>`
    /// authorizes the app and the running gateway takes the new token without a restart.
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub app_secret: Option<SecretString>,
    /// Where TikTok issued one: the access token is refreshed ahead of its expiry with it.
    #[serde(default)]
    pub refresh_token: Option<SecretString>,
    /// The refresh endpoint (the `tt_user` tokens of creators:
    /// `.../tt_user/oauth2/refresh_token/`).
    #[serde(default = "TiktokConnector::default_oauth_url")]
    pub oauth_url: String,
    /// The auth code exchange (`leadgate auth`).
    #[serde(default = "TiktokConnector::default_token_url")]
    pub token_url: String,
    /// The page an advertiser grants access on (`leadgate auth`).
    #[serde(default = "TiktokConnector::default_authorize_url")]
    pub authorize_url: String,
    /// The redirect URL registered for the app.
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// Lead forms (instant pages) whose leads are downloaded.
    #[serde(default)]
    pub page_ids: Vec<String>,
    #[serde(default = "TiktokConnector::default_api_url")]
    pub api_url: String,
    /// The pause between downloads of every form's leads.
    #[serde(with = "humantime_serde", default = "TiktokConnector::default_poll")]
    pub poll_interval: Duration,
    /// The column of a downloaded lead holding its id (a callback's lead id is its `id`).
    #[serde(default = "TiktokConnector::default_id_column")]
    pub id_column: String,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
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

impl TiktokConnector {
    fn default_signature_header() -> String {
        "X-Open-Signature".into()
    }
    fn default_api_url() -> String {
        "https://business-api.tiktok.com/open_api/v1.3".into()
    }
    fn default_oauth_url() -> String {
        "https://business-api.tiktok.com/open_api/v1.3/oauth2/refresh_token/".into()
    }
    fn default_token_url() -> String {
        "https://business-api.tiktok.com/open_api/v1.3/oauth2/access_token/".into()
    }
    fn default_authorize_url() -> String {
        "https://business-api.tiktok.com/portal/auth".into()
    }
    fn default_poll() -> Duration {
        Duration::from_secs(3600)
    }
    fn default_id_column() -> String {
        "lead_id".into()
    }

    /// Downloads are configured.
    pub fn pulls(&self) -> bool {
        self.access_token.is_some() && !self.page_ids.is_empty()
    }
}

common_fields!(TiktokConnector);

impl Connector for TiktokConnector {
    fn external_id_field(&self) -> Option<&str> {
        Some(&self.id_column)
    }

    fn check(&self, checks: &mut Checks) {
        if self.secret.is_none() && self.access_token.is_none() {
            checks.push(
                "secret",
                "set `secret` (callbacks) or `access_token` with `page_ids` (downloads), or both",
            );
        }
        checks.secret_if_set("secret", self.secret.as_ref());
        checks.secret_if_set("access_token", self.access_token.as_ref());
        if self.access_token.is_some() {
            if self.advertiser_id.as_deref().is_none_or(str::is_empty) {
                checks.push("advertiser_id", "downloads need the advertiser id");
            }
            if self.page_ids.is_empty() {
                checks.push("page_ids", "list the lead forms (page ids) to download");
            }
        }
        checks.oauth_app(
            self.refresh_token.as_ref(),
            ("app_id", self.app_id.as_deref()),
            ("app_secret", self.app_secret.as_ref()),
            ("oauth_url", &self.oauth_url),
        );
        if self.refresh_token.is_some() && self.access_token.is_none() {
            checks.push("access_token", "a refresh needs the access token it renews");
        }
        checks.header_name("signature_header", &self.signature_header);
        checks.http_url("api_url", &self.api_url);
        checks.rate_limit(self.rate_limit);
    }

    fn shape(&self) -> Shape {
        flattened(super::mapping_with_preset(&self.mapping), super::fields)
    }

    fn initial_state(&self) -> State {
        if self.pulls() {
            State::Starting
        } else {
            State::Passive
        }
    }

    fn banner(&self, base: &str) -> Option<String> {
        let callbacks = if self.secret.is_some() {
            format!(" callbacks at {base}/v1/webhooks/{}", self.name)
        } else {
            String::new()
        };
        let downloads = if self.pulls() {
            format!(
                " downloads of {} forms every {:?}",
                self.page_ids.len(),
                self.poll_interval
            )
        } else {
            String::new()
        };
        Some(format!(
            "tiktok leads:{callbacks}{downloads}; health at {base}/v1/connectors/{}",
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
