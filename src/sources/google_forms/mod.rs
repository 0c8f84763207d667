//! Google Forms, through the Apps Script snippet in `docs/form-tools.md` (Google Forms has no
//! webhook of its own). On each submission the snippet posts:
//!
//! ```json
//! {"formId": "…", "formTitle": "…", "responseId": "…", "timestamp": "…",
//!  "respondentEmail": "…", "answers": [{"id": 123, "title": "姓名", "type": "TEXT",
//!  "response": "王小明"}, {"id": 124, "title": "感兴趣的产品", "type": "CHECKBOX",
//!  "response": ["CRM", "ERP"]}]}
//! ```
//!
//! Each answer is read under its question's title and id; lists (checkboxes, grids) are joined
//! with `, `; the email Google collected gives `email`. The snippet signs the body with the
//! secret kept in the script's properties: `X-Leadgate-Signature` is its base64 HMAC-SHA256.
//! Keyed by `responseId`.

use serde_json::Value;

use crate::sources::forms::{self, Answers, FormTool, Signature};

/// `type = "google_forms"`.
pub type GoogleFormsConnector = forms::FormConnector<GoogleForms>;

/// The snippet's deliveries.
#[derive(Debug, Clone, Copy)]
pub struct GoogleForms;

const SIGNATURE: Signature = Signature::Base64Body {
    header: "X-Leadgate-Signature",
    prefix: "",
};

/// The `X-Leadgate-Signature` the snippet sends for `body` (for tests and stand-ins).
pub fn sign(secret: &str, body: &[u8]) -> String {
    SIGNATURE.sign(secret, body, 0).remove(0).1
}

fn text_of(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(_) | Value::Number(_) | Value::Bool(_) => Some(v.clone()),
        Value::Array(items) => {
            let parts: Vec<Value> = items.iter().filter_map(text_of).collect();
            forms::joined(&parts)
        }
        _ => None,
    }
}

impl FormTool for GoogleForms {
    const TITLE: &'static str = "Google Forms";
    const SIGNATURE: Option<Signature> = Some(SIGNATURE);

    fn check(event: &Value) -> Result<(), (&'static str, &'static str)> {
        if event.get("answers").is_some_and(Value::is_array) {
            Ok(())
        } else {
            Err(("answers", "the Apps Script snippet posts the form's `answers`"))
        }
    }

    fn response_id(event: &Value) -> Option<String> {
        crate::sources::id_text(event.get("responseId")?)
    }

    fn fields(event: &Value) -> Value {
        let mut out = Answers::new([Some(event)]);
        if let Some(email) = event.get("respondentEmail").and_then(text_of) {
            out.typed("email", &email);
        }
        for answer in event.get("answers").and_then(Value::as_array).into_iter().flatten() {
            let Some(value) = answer.get("response").and_then(text_of) else {
                continue;
            };
            let id = answer.get("id").and_then(crate::sources::id_text);
            out.answer(
                [answer.get("title").and_then(Value::as_str), id.as_deref()],
                &value,
            );
        }
        out.into_value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snippets_body_reads_titles_and_lists() {
        let event = crate::sources::fixture_json("google-forms", "response.json");
        assert_eq!(
            GoogleForms::response_id(&event).as_deref(),
            Some("2_ABaOnudP3kF2x7yT9wq1sLk")
        );
        let f = GoogleForms::fields(&event);
        assert_eq!(f["姓名"], "王小明");
        assert_eq!(f["感兴趣的产品"], "CRM, 营销自动化");
        assert_eq!(f["email"], "wang.xm@example.cn");
        assert_eq!(f["1820354112"], "王小明");
        assert!(f.get("备注").is_none(), "unanswered: {f}");
    }
}
