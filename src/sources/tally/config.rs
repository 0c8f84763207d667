//! The Tally connector's definition (`type = "tally"`) and its checks.

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::Deserialize;

use crate::mapping::FieldMapping;
use crate::sources::connector::{flattened, 
    Checks, Connector, RateLimit, Shape, Start, Started, common_fields, default_region,
};

/// `type = "tally"`: Tally form webhooks on `/v1/webhooks/{name}` (see `docs/connectors.md`).
/// Tally posts `{eventId, eventType, createdAt, data: {responseId, formId, formName, fields:
/// [{key, label, type, value, options}]}}`; each answer is read under its label and its key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TallyConnector {
    pub name: String,
    /// The webhook's signing secret (the form's Integrations → Webhooks → "Signing secret").
    /// Set, every request must carry a valid `Tally-Signature`; write
    /// `"${TALLY_SIGNING_SECRET}"`.
    #[serde(default)]
    pub signing_secret: Option<SecretString>,
    /// Requests per second taken; more get 429 with `Retry-After` (Tally retries them).
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default = "default_region")]
    pub default_region: String,
    /// Extra names for contact fields (question labels or keys), matched before the built-in
    /// ones.
    #[serde(default)]
    pub mapping: FieldMapping,
    #[serde(default)]
    pub identity_fields: BTreeMap<String, String>,
}

common_fields!(TallyConnector);

impl Connector for TallyConnector {
    fn check(&self, checks: &mut Checks) {
        checks.secret_if_set("signing_secret", self.signing_secret.as_ref());
        checks.rate_limit(self.rate_limit);
    }

    fn shape(&self) -> Shape {
        flattened(super::mapping_with_preset(&self.mapping), super::fields)
    }

    fn banner(&self, base: &str) -> Option<String> {
        Some(format!(
            "tally form webhook: POST {base}/v1/webhooks/{}{}",
            self.name,
            if self.signing_secret.is_some() {
                " (signed)"
            } else {
                ""
            }
        ))
    }

    fn start(&self, _: &Start<'_>) -> anyhow::Result<Started> {
        Ok(Started::webhook(super::Responses(self.clone())))
    }
}
