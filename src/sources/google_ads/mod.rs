//! Google Ads lead form webhooks. Google POSTs one lead per request:
//!
//! ```json
//! {"lead_id": "...", "api_version": "1.0", "form_id": 1, "campaign_id": 2, "adgroup_id": 3,
//!  "creative_id": 4, "gcl_id": "...", "google_key": "<the form's key>", "is_test": false,
//!  "user_column_data": [{"column_id": "PHONE_NUMBER", "column_name": "Phone", "string_value": "..."}]}
//! ```
//!
//! - **Auth** is `google_key`, a shared secret inside the body (not an HMAC), compared in
//!   constant time. It is removed from the payload before anything is stored.
//! - **Dedupe** on `lead_id`: Google retries, and a retry gets the first answer again.
//! - **Test leads** (`is_test: true`, the form's "send test data") go to `leads.test` or are
//!   flagged, by the connector's `test_leads`.
//! - **Fields** are the answers by `column_id`. Unknown ids are kept under `custom`, like any
//!   unmapped field, since Google adds ids over time.

pub mod config;

pub use config::GoogleAdsConnector;

use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use crate::lead::{IntakeEvent, SourceKind};
use crate::mapping::FieldMapping;
use crate::sources::connector::Started;

use crate::http_error::ApiError;
use crate::sources::push::{self, Push, Reply, Verdict, Webhook};
use crate::mapping::ContactField;

/// Why a request is refused (401).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the body has no `google_key`")]
    Missing,
    #[error("`google_key` does not match the connector's key")]
    Mismatch,
}

/// Checks the body's `google_key` against `expected`, then removes it from `payload` (it is a
/// secret and must not reach the records).
pub fn take_key(payload: &mut Value, expected: &str) -> Result<(), KeyError> {
    let key = payload
        .as_object_mut()
        .and_then(|o| o.remove("google_key"))
        .ok_or(KeyError::Missing)?;
    let key = key.as_str().ok_or(KeyError::Missing)?;
    if bool::from(key.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(KeyError::Mismatch)
    }
}

/// The platform's id of the lead.
pub fn lead_id(payload: &Value) -> Option<String> {
    crate::sources::id_text(payload.get("lead_id")?)
}

pub fn is_test(payload: &Value) -> bool {
    payload.get("is_test").and_then(Value::as_bool) == Some(true)
}

/// The fields a lead is mapped from: the top-level scalars (`lead_id`, `campaign_id`, `gcl_id`,
/// ...), then each answer under its `column_id` (or its `column_name` when it has no id).
pub fn fields(payload: &Value) -> Value {
    let mut out = Map::new();
    let Some(obj) = payload.as_object() else {
        return payload.clone();
    };
    for (k, v) in obj {
        if k != "user_column_data" && !v.is_array() && !v.is_object() {
            out.insert(k.clone(), v.clone());
        }
    }
    for answer in obj
        .get("user_column_data")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = answer
            .get("column_id")
            .or_else(|| answer.get("column_name"))
            .and_then(Value::as_str);
        if let (Some(name), Some(value)) = (name, answer.get("string_value")) {
            out.insert(name.to_owned(), value.clone());
        }
    }
    Value::Object(out)
}

/// Google's column ids, by contact field.
const PRESET: &[(ContactField, &[&str])] = &[
    (ContactField::Name, &["FULL_NAME"]),
    (ContactField::Phone, &["PHONE_NUMBER", "WORK_PHONE"]),
    (ContactField::Email, &["EMAIL", "WORK_EMAIL"]),
    (ContactField::Company, &["COMPANY_NAME"]),
    (ContactField::Title, &["JOB_TITLE"]),
    (ContactField::City, &["CITY"]),
    (ContactField::Province, &["REGION"]),
];

/// The idempotency key of a test lead: `test:{form_id}:{lead_id}:{hash of the answers}`.
fn test_key(payload: &Value) -> Option<String> {
    use sha2::Digest;
    let answers = serde_json::to_vec(payload.get("user_column_data")?).ok()?;
    let digest = sha2::Sha256::digest(&answers);
    Some(format!(
        "test:{}:{}:{}",
        payload.get("form_id").and_then(crate::sources::id_text).unwrap_or_default(),
        lead_id(payload).unwrap_or_default(),
        hex::encode(&digest[..8])
    ))
}

/// `mapping` first, then the preset's names for the same field.
pub fn mapping_with_preset(mapping: &FieldMapping) -> FieldMapping {
    crate::sources::with_preset(mapping, PRESET)
}

/// The lead form webhook: the key in the body checked, each lead journaled under its
/// `lead_id` (Google retries until it gets a 200: a retry gets the first answer).
struct LeadForm(GoogleAdsConnector);

pub(crate) fn start(cfg: &GoogleAdsConnector) -> Started {
    Started::webhook(LeadForm(cfg.clone()))
}

impl Webhook for LeadForm {
    fn authenticate(&self, _: &crate::sources::push::Request<'_>) -> Verdict {
        // The key is in the body: checked once it is read.
        Ok(None)
    }

    fn receive<'a>(&'a self, push: Push<'a>) -> Reply<'a> {
        Box::pin(async move {
            let mut payload = push.payload()?;
            let header_key = push.idempotency_key()?;
            take_key(&mut payload, secrecy::ExposeSecret::expose_secret(&self.0.google_key))
                .map_err(|e| {
                    ApiError::new(
                        axum::http::StatusCode::UNAUTHORIZED,
                        "google_key.invalid",
                        Some("google_key"),
                        e.to_string(),
                    )
                })?;
            let lead_id = lead_id(&payload);
            let test = is_test(&payload);
            let mut event =
                IntakeEvent::new(push.connector, SourceKind::Platform, lead_id.clone(), payload);
            event.test = test;
            // Google sends every "send test data" with the same fixed test lead id, whatever the
            // form: a test is keyed by its form and answers too, so another form's test (or the
            // same form's with other answers) is not taken for a retry.
            let key = if test {
                test_key(&event.payload)
            } else {
                lead_id
            };
            let receipt = push.journal(event, header_key.or(key)).await?;
            Ok(push::accepted(&receipt))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lead() -> Value {
        serde_json::from_str(include_str!(
            "../../../connectors/fixtures/google-ads/lead.json"
        ))
        .unwrap()
    }

    #[test]
    fn the_key_is_checked_and_never_kept() {
        let mut p = lead();
        assert_eq!(take_key(&mut p, "form-key-0123456789"), Ok(()));
        assert!(p.get("google_key").is_none());
        let mut p = lead();
        assert_eq!(take_key(&mut p, "another-key"), Err(KeyError::Mismatch));
        assert!(p.get("google_key").is_none(), "removed even when wrong");
        assert_eq!(
            take_key(&mut json!({"lead_id": "x"}), "k"),
            Err(KeyError::Missing)
        );
        assert_eq!(
            take_key(&mut json!({"google_key": 5}), "5"),
            Err(KeyError::Missing)
        );
    }

    #[test]
    fn test_leads_are_keyed_by_form_and_answers() {
        let test = |form: u64, phone: &str| {
            json!({"lead_id": "TeSter-123-ABCDEFGHIJKLMNOPQRSTUVWXYZ-abcdefghijklmnopqrstuvwxyz-0123456789-AaBbCcDdEe",
                   "form_id": form, "is_test": true,
                   "user_column_data": [{"column_id": "PHONE_NUMBER", "string_value": phone}]})
        };
        let a = test_key(&test(1, "+16505550123")).unwrap();
        assert!(a.starts_with("test:1:TeSter-123-"), "{a}");
        assert_eq!(test_key(&test(1, "+16505550123")), Some(a.clone()), "a retry");
        assert_ne!(test_key(&test(2, "+16505550123")), Some(a.clone()), "another form");
        assert_ne!(test_key(&test(1, "+16505550124")), Some(a), "other answers");
    }

    #[test]
    fn answers_become_fields_by_column_id() {
        let f = fields(&lead());
        assert_eq!(f["FULL_NAME"], "李雷");
        assert_eq!(f["PHONE_NUMBER"], "+86 139 1234 5678");
        assert_eq!(f["campaign_id"], 123_456);
        assert_eq!(
            f["Preferred time"], "上午",
            "an answer without an id keeps its name"
        );
        assert!(f.get("user_column_data").is_none());
        assert_eq!(
            lead_id(&lead()).as_deref(),
            Some("TeSter-123-ABCDEFGHIJKLMNOPQRSTUVWXYZ")
        );
        assert!(!is_test(&lead()));
        assert!(is_test(&json!({"is_test": true})));
        assert_eq!(lead_id(&json!({"lead_id": 42})).as_deref(), Some("42"));
    }

    #[test]
    fn the_connectors_mapping_comes_before_the_preset() {
        let mut own = FieldMapping::new();
        own.insert(ContactField::Phone, vec!["MOBILE".into()]);
        let m = mapping_with_preset(&own);
        assert_eq!(
            m[&ContactField::Phone],
            ["MOBILE", "PHONE_NUMBER", "WORK_PHONE"]
        );
        assert_eq!(m[&ContactField::Name], ["FULL_NAME"]);
    }
}
