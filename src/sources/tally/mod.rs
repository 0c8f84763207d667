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

use serde_json::Value;

use crate::sources::forms::{self, Answers, FormTool, Signature};

/// `type = "tally"`.
pub type TallyConnector = forms::FormConnector<Tally>;

/// Tally's deliveries.
#[derive(Debug, Clone, Copy)]
pub struct Tally;

const SIGNATURE: Signature = Signature::Base64Body {
    header: "Tally-Signature",
    prefix: "",
};

/// The signature Tally sends for `body` (for tests and stand-ins).
pub fn sign(secret: &str, body: &[u8]) -> String {
    SIGNATURE.sign(secret, body, 0).remove(0).1
}

impl FormTool for Tally {
    const TITLE: &'static str = "Tally";
    const SIGNATURE: Option<Signature> = Some(SIGNATURE);

    fn check(event: &Value) -> Result<(), (&'static str, &'static str)> {
        if event.get("data").is_some_and(Value::is_object) {
            Ok(())
        } else {
            Err(("data", "a Tally event carries the response in `data`"))
        }
    }

    /// `data.responseId`, else `data.submissionId`.
    fn response_id(event: &Value) -> Option<String> {
        let data = event.get("data")?;
        crate::sources::id_text(data.get("responseId").or_else(|| data.get("submissionId"))?)
    }

    /// The event's and the response's scalars (`eventId`, `formId`, `formName`, `responseId`,
    /// `createdAt`, ...), then each answer under its label and its key, then `email` and `phone`
    /// from the answers of those types (unless a question is named so), whatever their labels.
    fn fields(event: &Value) -> Value {
        let data = event.get("data");
        let mut out = Answers::new([Some(event), data]);
        let answers = data
            .and_then(|d| d.get("fields"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for answer in answers {
            let Some(value) = answer_value(answer) else {
                continue;
            };
            let name = |k: &str| answer.get(k).and_then(Value::as_str);
            out.answer([name("label"), name("key")], &value);
            match name("type") {
                Some("INPUT_EMAIL") => out.typed("email", &value),
                Some("INPUT_PHONE_NUMBER") => out.typed("phone", &value),
                _ => {}
            }
        }
        out.into_value()
    }
}

/// An answer's value as the mapping reads it: text and numbers as they are; choices as their
/// options' text (option ids looked up in `options`), several joined with `, `; `None` when
/// unanswered.
fn answer_value(answer: &Value) -> Option<Value> {
    let value = answer.get("value")?;
    match (value, answer.get("options").and_then(Value::as_array)) {
        (Value::Null | Value::Object(_), _) => None,
        (Value::Array(_) | Value::String(_), Some(options)) => {
            crate::mapping::path::option_texts(value, options).map(Value::String)
        }
        (Value::Array(items), None) => forms::joined(items),
        (other, _) => Some(other.clone()),
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
        let f = Tally::fields(&event);
        assert_eq!(f["Full Name"], "John Doe");
        assert_eq!(f["Email Address"], "john@company.com");
        assert_eq!(f["question_rOJ7YL"], "john@company.com");
        assert_eq!(f["Budget"], 25000);
        assert_eq!(f["Company size"], "Enterprise");
        assert_eq!(f["Interest Level"], "High");
        assert_eq!(f["formName"], "Lead Generation Form");
        assert_eq!(f["responseId"], "jaMb6Ka");
        assert_eq!(Tally::response_id(&event).as_deref(), Some("jaMb6Ka"));
        let mapped = crate::mapping::Mapper::new(&crate::mapping::FieldMapping::new())
            .map(&f)
            .values;
        assert_eq!(mapped.get(&crate::mapping::ContactField::Name), Some("John Doe"));
        assert_eq!(mapped.get(&crate::mapping::ContactField::Email), Some("john@company.com"));
        assert_eq!(mapped.get(&crate::mapping::ContactField::Phone), Some("+1234567890"));
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
        let f = Tally::fields(&event);
        assert_eq!(f["email"], "wang@example.cn");
        assert_eq!(f["phone"], "+8613800138000");
        assert_eq!(f["产品"], "CRM, ERP");
        assert!(f.get("备注").is_none(), "unanswered: {f}");
    }

    #[test]
    fn signatures_are_base64_hmacs_of_the_raw_body() {
        // Computed apart: base64(HMAC-SHA256("s3cret", body)) in Python.
        assert_eq!(sign("s3cret", br#"{"eventId":"e"}"#), "/4bNT93KnlOiFNRyBqLiiEFKivo1K/aEuZakerAlrwU=");
    }
}
