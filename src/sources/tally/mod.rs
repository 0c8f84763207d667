//! Tally (tally.so) form webhooks. Tally posts one JSON event per response:
//!
//! ```json
//! {"eventId": "…", "eventType": "FORM_RESPONSE", "createdAt": "…",
//!  "data": {"responseId": "…", "formId": "…", "formName": "…",
//!           "fields": [{"key": "question_…", "label": "Email Address", "type": "INPUT_EMAIL",
//!                       "value": "…"},
//!                      {"key": "…", "label": "Company size", "type": "DROPDOWN",
//!                       "value": ["<option id>"], "options": [{"id": "…", "text": "…"}]}]}}
//! ```
//!
//! Each answer is read under its label (`Email Address` folds to the built-in `email_address`)
//! and under its key; choice answers become their options' text (whether Tally sends option ids
//! or text varies between fixtures, so both are read). An email or phone question gives `email`
//! or `phone` by its type too, whatever its label (`怎么联系您`).
//!
//! Signed with the webhook's signing secret: `Tally-Signature` is the base64 HMAC-SHA256 of the
//! raw body. Tally retries a delivery up to 5 times (5 min to 24 h apart) and lets an operator
//! re-send it: the response id keys the event, so a repeat gets the first answer and publishes
//! nothing.

pub mod config;

pub use config::TallyConnector;

use axum::http::HeaderMap;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde_json::Value;
use sha2::Sha256;

use crate::lead::{IntakeEvent, SourceKind};
use crate::mapping::{ContactField, FieldMapping};
use crate::sources::push::{self, Push, Reply, Verdict, Webhook};
use crate::sources::webhook::SignatureError;

const SIGNATURE_HEADER: &str = "Tally-Signature";

/// Checks `Tally-Signature` (base64 of the HMAC-SHA256 of `body` under `secret`) in constant
/// time.
pub fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
    let header = || SIGNATURE_HEADER.to_owned();
    let given = headers
        .get(SIGNATURE_HEADER)
        .ok_or_else(|| SignatureError::Missing(header()))?;
    let given = base64::engine::general_purpose::STANDARD
        .decode(given.as_bytes().trim_ascii())
        .map_err(|_| SignatureError::Mismatch(header()))?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch(header()))
}

/// The signature Tally sends for `body` (for tests and stand-ins).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The response's id (`data.responseId`, else `data.submissionId`): a retried or re-sent
/// delivery carries the same one.
pub fn response_id(event: &Value) -> Option<String> {
    let data = event.get("data")?;
    crate::sources::id_text(data.get("responseId").or_else(|| data.get("submissionId"))?)
}

/// The fields a lead is mapped from: the event's and the response's scalars (`eventId`,
/// `formId`, `formName`, `responseId`, `createdAt`, ...), then each answer under its label and
/// its key, then `email` and `phone` from the first answer of those types (unless a question is
/// named so), whatever their labels.
pub fn fields(event: &Value) -> Value {
    let Some(obj) = event.as_object() else {
        return event.clone();
    };
    let mut out = crate::sources::scalars(obj);
    let data = obj.get("data").and_then(Value::as_object);
    if let Some(data) = data {
        out.extend(crate::sources::scalars(data));
    }
    let answers = data
        .and_then(|d| d.get("fields"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    let mut by_type = Vec::new();
    for answer in answers {
        let Some(value) = answer_value(answer) else {
            continue;
        };
        for name in ["label", "key"] {
            if let Some(n) = answer.get(name).and_then(Value::as_str)
                && !n.trim().is_empty()
            {
                out.entry(n.trim().to_owned()).or_insert_with(|| value.clone());
            }
        }
        let typed = match answer.get("type").and_then(Value::as_str) {
            Some("INPUT_EMAIL") => Some("email"),
            Some("INPUT_PHONE_NUMBER") => Some("phone"),
            _ => None,
        };
        by_type.extend(typed.map(|t| (t, value)));
    }
    for (kind, value) in by_type {
        out.entry(kind.to_owned()).or_insert(value);
    }
    Value::Object(out)
}

/// An answer's value as the mapping reads it: text and numbers as they are; choices as their
/// options' text (option ids looked up in `options`), several joined with `, `; `None` when
/// unanswered.
fn answer_value(answer: &Value) -> Option<Value> {
    let value = answer.get("value")?;
    let options = answer.get("options").and_then(Value::as_array);
    let text_of = |v: &Value| -> Option<String> {
        let id = crate::sources::id_text(v)?;
        let option = options.into_iter().flatten().find(|o| {
            o.get("id").and_then(Value::as_str) == Some(id.as_str())
        });
        Some(
            option
                .and_then(|o| o.get("text"))
                .and_then(Value::as_str)
                .map_or(id, str::to_owned),
        )
    };
    match value {
        Value::Null => None,
        Value::Array(items) => {
            let texts: Vec<String> = items.iter().filter_map(text_of).collect();
            (!texts.is_empty()).then(|| Value::String(texts.join(", ")))
        }
        Value::String(_) if options.is_some() => text_of(value).map(Value::String),
        Value::Object(_) => None,
        other => Some(other.clone()),
    }
}

/// No field names beyond the built-in ones: Tally's labels are the form's own questions.
const PRESET: &[(ContactField, &[&str])] = &[];

/// `mapping` first, then the built-in names.
pub fn mapping_with_preset(mapping: &FieldMapping) -> FieldMapping {
    crate::sources::with_preset(mapping, PRESET)
}

/// The webhook: signed (with a signing secret) form responses, each one lead keyed by its
/// response id.
struct Responses(TallyConnector);

impl Webhook for Responses {
    fn rate_limit(&self) -> Option<crate::sources::RateLimit> {
        self.0.rate_limit
    }

    fn authenticate(&self, headers: &axum::http::HeaderMap, body: &[u8]) -> Verdict {
        if let Some(secret) = &self.0.signing_secret {
            verify(secret.expose_secret(), headers, body).map_err(push::unauthorized)?;
        }
        Ok(None)
    }

    fn receive<'a>(&'a self, push: Push<'a>) -> Reply<'a> {
        Box::pin(async move {
            let event = push.payload()?;
            let header_key = push.idempotency_key()?;
            if !event.get("data").is_some_and(Value::is_object) {
                return Err(push::invalid(
                    "data",
                    "a Tally event carries the response in `data`",
                ));
            }
            let id = response_id(&event);
            let lead = IntakeEvent::new(push.connector, SourceKind::Webhook, id.clone(), event);
            let receipt = push.journal(lead, header_key.or(id)).await?;
            Ok(push::accepted(&receipt))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        crate::sources::fixture_json("tally", name)
    }

    #[test]
    fn answers_are_read_by_label_and_key_and_choices_become_text() {
        let event = fixture("lead-form.json");
        let f = fields(&event);
        assert_eq!(f["Full Name"], "John Doe");
        assert_eq!(f["Email Address"], "john@company.com");
        assert_eq!(f["question_rOJ7YL"], "john@company.com");
        assert_eq!(f["Budget"], 25000);
        assert_eq!(f["Company size"], "Enterprise");
        assert_eq!(f["Interest Level"], "High");
        assert_eq!(f["formName"], "Lead Generation Form");
        assert_eq!(f["responseId"], "jaMb6Ka");
        assert_eq!(response_id(&event).as_deref(), Some("jaMb6Ka"));
        let mapped = crate::mapping::Mapper::new(&mapping_with_preset(&FieldMapping::new()))
            .map(&f)
            .values;
        assert_eq!(mapped.get(&ContactField::Name), Some("John Doe"));
        assert_eq!(mapped.get(&ContactField::Email), Some("john@company.com"));
        assert_eq!(mapped.get(&ContactField::Phone), Some("+1234567890"));
    }

    #[test]
    fn typed_questions_give_email_and_phone_whatever_their_label() {
        let event = serde_json::json!({"eventId": "e", "data": {"responseId": "r", "fields": [
            {"key": "q1", "label": "您的称呼", "type": "INPUT_TEXT", "value": "王小明"},
            {"key": "q2", "label": "工作邮箱地址", "type": "INPUT_EMAIL", "value": "wang@example.cn"},
            {"key": "q3", "label": "怎么联系您", "type": "INPUT_PHONE_NUMBER", "value": "+8613800138000"},
            {"key": "q4", "label": "产品", "type": "CHECKBOXES", "value": ["a", "b"],
             "options": [{"id": "a", "text": "CRM"}, {"id": "b", "text": "ERP"}]},
            {"key": "q5", "label": "备注", "type": "TEXTAREA", "value": null}]}});
        let f = fields(&event);
        assert_eq!(f["email"], "wang@example.cn");
        assert_eq!(f["phone"], "+8613800138000");
        assert_eq!(f["产品"], "CRM, ERP");
        assert!(f.get("备注").is_none(), "unanswered: {f}");
    }

    #[test]
    fn signatures_are_base64_hmacs_of_the_raw_body() {
        let body = br#"{"eventId":"e"}"#;
        let mut headers = HeaderMap::new();
        assert!(matches!(
            verify("s3cret", &headers, body),
            Err(SignatureError::Missing(_))
        ));
        headers.insert(SIGNATURE_HEADER, sign("s3cret", body).parse().unwrap());
        verify("s3cret", &headers, body).unwrap();
        assert!(verify("other", &headers, body).is_err());
        assert!(verify("s3cret", &headers, br#"{"eventId":"f"}"#).is_err());
        headers.insert(SIGNATURE_HEADER, "not base64!".parse().unwrap());
        assert!(verify("s3cret", &headers, body).is_err());
    }
}
