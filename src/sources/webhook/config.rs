//! The generic webhook's definition (`type = "webhook"`): web forms and anything that posts
//! JSON or a form to `/v1/webhooks/{name}`, optionally signed.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::mapping::FieldMapping;
use crate::sources::connector::{Checks, Connector, Start, Started, RateLimit, common_fields, default_region};

/// `type = "webhook"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConnector {
    /// Unique; the URL is `/v1/webhooks/{name}`. Letters, digits, `-` and `_`.
    pub name: String,
    /// ISO 3166 region for numbers written without a country code.
    #[serde(default = "default_region")]
    pub default_region: String,
    /// Extra input field names for contact fields (matched before the built-in English and Chinese ones).
    #[serde(default)]
    pub mapping: FieldMapping,
    /// Require an HMAC-SHA256 signature of the raw body.
    #[serde(default)]
    pub signature: Option<SignatureConfig>,
    /// A body field whose value acts as the idempotency key when no `Idempotency-Key` header is sent.
    #[serde(default)]
    pub idempotency_field: Option<String>,
    /// A body field holding the platform's own id of the lead (`source.external_id`). A second
    /// event with the same id is a redelivery and is dropped (source idempotency).
    #[serde(default)]
    pub external_id_field: Option<String>,
    /// Input fields holding platform ids that identify a person, by key kind:
    /// `identity_fields = { wechat = "openid", crm_id = "客户编号" }`.
    #[serde(default)]
    pub identity_fields: BTreeMap<String, String>,
    /// The answer that says the person agreed, and whether it is required: see
    /// `docs/privacy.md#consent`.
    #[serde(default)]
    pub consent: Option<crate::consent::ConsentMapping>,
    /// Requests per second allowed on this connector; more get 429 with `Retry-After`.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

impl WebhookConnector {
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            default_region: default_region(),
            mapping: FieldMapping::default(),
            signature: None,
            idempotency_field: None,
            external_id_field: None,
            identity_fields: BTreeMap::new(),
            consent: None,
            rate_limit: None,
        }
    }
}

/// `[connectors.signature]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureConfig {
    /// The shared HMAC key; write `"${ENV_VAR}"` rather than the secret itself.
    pub secret: SecretString,
    /// Header carrying the hex digest, optionally prefixed `sha256=`.
    #[serde(default = "SignatureConfig::default_header")]
    pub header: String,
    /// If set, this header carries a unix timestamp (seconds), the signed message is
    /// `"{timestamp}.{raw body}"`, and requests older or newer than `tolerance` are refused.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    #[serde(
        with = "humantime_serde",
        default = "SignatureConfig::default_tolerance"
    )]
    pub tolerance: Duration,
}

impl SignatureConfig {
    fn default_header() -> String {
        "X-Signature".into()
    }
    fn default_tolerance() -> Duration {
        Duration::from_secs(300)
    }
}

common_fields!(WebhookConnector);

impl Connector for WebhookConnector {
    fn external_id_field(&self) -> Option<&str> {
        self.external_id_field.as_deref()
    }

    fn check(&self, checks: &mut Checks) {
        if let Some(sig) = &self.signature {
            if secrecy::ExposeSecret::expose_secret(&sig.secret).is_empty() {
                checks.push("signature.secret", "must not be empty");
            }
            checks.header_name("signature.header", &sig.header);
            if let Some(h) = &sig.timestamp_header {
                checks.header_name("signature.timestamp_header", h);
            }
        }
        checks.rate_limit(self.rate_limit);
    }

    fn banner(&self, base: &str) -> Option<String> {
        Some(format!("webhook: POST {base}/v1/webhooks/{}", self.name))
    }

    fn start(&self, _: &Start<'_>) -> anyhow::Result<Started> {
        Ok(Started::webhook(Form(self.clone())))
    }
}

/// The generic webhook: an optional signature and rate limit, then the body as one lead, keyed
/// by the `Idempotency-Key` header or the `idempotency_field`.
struct Form(WebhookConnector);

impl crate::sources::push::Webhook for Form {
    fn rate_limit(&self) -> Option<crate::sources::RateLimit> {
        self.0.rate_limit
    }

    fn authenticate(&self, request: &crate::sources::push::Request<'_>) -> crate::sources::push::Verdict {
        let (headers, body) = (request.headers, request.body);
        if let Some(sig) = &self.0.signature {
            crate::sources::push::signed(sig, headers, body)?;
        }
        Ok(None)
    }

    fn receive<'a>(&'a self, push: crate::sources::push::Push<'a>) -> crate::sources::push::Reply<'a> {
        Box::pin(async move {
            let payload = push.payload()?;
            let idempotency = push.idempotency_key()?.or_else(|| {
                self.0
                    .idempotency_field
                    .as_deref()
                    .and_then(|f| super::field_text(&payload, f))
            });
            let external_id = self
                .0
                .external_id_field
                .as_deref()
                .and_then(|f| super::field_text(&payload, f));
            let event = crate::lead::IntakeEvent::new(
                push.connector,
                crate::lead::SourceKind::Webhook,
                external_id,
                payload,
            );
            let receipt = push.journal(event, idempotency).await?;
            Ok(crate::sources::push::accepted(&receipt))
        })
    }
}
