//! The Google Ads lead form connector's definition (`type = "google_ads"`) and its checks.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::Deserialize;

use crate::mapping::FieldMapping;
use crate::sources::connector::{flattened, Checks, Connector, Start, Started, Shape, TestLeads, common_fields, default_region};

/// `type = "google_ads"`: Google Ads lead form webhooks (see `docs/connectors.md`). Google posts
/// `{lead_id, form_id, campaign_id, google_key, is_test, user_column_data: [...]}`; the answers
/// are mapped by their `column_id` (`FULL_NAME`, `PHONE_NUMBER`, `EMAIL`, ...).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleAdsConnector {
    pub name: String,
    /// The key entered in the lead form's webhook settings; Google sends it in the body. Write
    /// `"${GOOGLE_ADS_KEY}"`.
    pub google_key: SecretString,
    /// Leads sent with `is_test: true` (the "send test data" button).
    #[serde(default)]
    pub test_leads: TestLeads,
    #[serde(default = "default_region")]
    pub default_region: String,
    /// Extra names for contact fields (column ids or names), matched before the preset.
    #[serde(default)]
    pub mapping: FieldMapping,
    #[serde(default)]
    pub identity_fields: BTreeMap<String, String>,
    /// The answer that says the person agreed, and whether it is required: see
    /// `docs/privacy.md#consent`.
    #[serde(default)]
    pub consent: Option<crate::consent::ConsentMapping>,
}

common_fields!(GoogleAdsConnector);

impl Connector for GoogleAdsConnector {
    fn external_id_field(&self) -> Option<&str> {
        Some("lead_id")
    }

    fn test_leads(&self) -> TestLeads {
        self.test_leads
    }

    fn check(&self, checks: &mut Checks) {
        checks.secret("google_key", &self.google_key);
    }

    fn shape(&self) -> Shape {
        flattened(super::mapping_with_preset(&self.mapping), super::fields)
    }

    fn banner(&self, base: &str) -> Option<String> {
        Some(format!(
            "google ads lead form: POST {base}/v1/webhooks/{}",
            self.name
        ))
    }

    fn start(&self, _: &Start<'_>) -> anyhow::Result<Started> {
        Ok(super::start(self))
    }
}
