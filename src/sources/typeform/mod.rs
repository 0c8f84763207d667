//! Typeform form webhooks. Typeform posts one JSON event per response:
//!
//! ```json
//! {"event_id": "…", "event_type": "form_response",
//!  "form_response": {"form_id": "lT4Z3j", "token": "…", "submitted_at": "…",
//!    "hidden": {"utm_campaign": "…"}, "variables": [{"key": "score", "type": "number", "number": 4}],
//!    "definition": {"fields": [{"id": "SMEUb7VJz92Q", "title": "Your email?", "type": "email",
//!                               "ref": "readable_ref_email"}]},
//!    "answers": [{"type": "email", "email": "laura@example.com",
//!                 "field": {"id": "SMEUb7VJz92Q", "type": "email"}}]}}
//! ```
//!
//! Each answer's value sits under the key its `type` names (`text`, `email`, `phone_number`,
//! `number`, `boolean`, `date`, `url`, `choice.label`, `choices.labels`, ...). It is read under
//! its question's title (from `definition.fields`, joined by the field id), its `ref` and its
//! id; an email or phone question gives `email` or `phone` by its type too. Hidden fields
//! (`utm_source`, `utm_campaign`, ...) and variables are fields of their own.
//!
//! Signed with the webhook's secret: `Typeform-Signature: sha256=<base64 HMAC-SHA256 of the raw
//! body>`. The response is keyed by `form_id` and `token` (one real payload has `event_id ==
//! token`, so the token alone is not taken as unique across forms).

use serde_json::Value;

use crate::sources::forms::{self, Answers, FormTool, Signature};

/// `type = "typeform"`.
pub type TypeformConnector = forms::FormConnector<Typeform>;

/// Typeform's deliveries.
#[derive(Debug, Clone, Copy)]
pub struct Typeform;

const SIGNATURE: Signature = Signature::Base64Body {
    header: "Typeform-Signature",
    prefix: "sha256=",
};

/// The `Typeform-Signature` Typeform sends for `body` (for tests and stand-ins).
pub fn sign(secret: &str, body: &[u8]) -> String {
    SIGNATURE.sign(secret, body, 0).remove(0).1
}

impl FormTool for Typeform {
    const TITLE: &'static str = "Typeform";
    const SIGNATURE: Option<Signature> = Some(SIGNATURE);

    fn check(event: &Value) -> Result<(), (&'static str, &'static str)> {
        match event.get("form_response") {
            Some(r) if r.is_object() => Ok(()),
            _ => Err((
                "form_response",
                "a Typeform event carries the response in `form_response`",
            )),
        }
    }

    /// `{form_id}:{token}`.
    fn response_id(event: &Value) -> Option<String> {
        let response = event.get("form_response")?;
        let token = crate::sources::id_text(response.get("token")?)?;
        let form = response
            .get("form_id")
            .and_then(crate::sources::id_text)
            .unwrap_or_default();
        Some(format!("{form}:{token}"))
    }

    fn fields(event: &Value) -> Value {
        let response = event.get("form_response");
        let part = |k: &str| response.and_then(|r| r.get(k));
        let mut out = Answers::new([Some(event), response, part("hidden"), part("calculated")]);
        // By id, once: a response may carry thousands of answers.
        let questions: std::collections::HashMap<&str, &Value> = part("definition")
            .and_then(|d| d.get("fields"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|q| Some((q.get("id")?.as_str()?, q)))
            .collect();
        let answers = part("answers").and_then(Value::as_array).into_iter().flatten();
        for answer in answers {
            let Some(value) = answer_value(answer) else {
                continue;
            };
            let field = answer.get("field");
            let id = field.and_then(|f| f.get("id")).and_then(Value::as_str);
            let question = id.and_then(|id| questions.get(id).copied());
            out.answer(
                [
                    text(question, "title"),
                    text(field, "ref").or(text(question, "ref")),
                    id,
                ],
                &value,
            );
            match answer.get("type").and_then(Value::as_str) {
                Some("email") => out.typed("email", &value),
                Some("phone_number") => out.typed("phone", &value),
                _ => {}
            }
        }
        let variables = part("variables").and_then(Value::as_array).into_iter().flatten();
        for variable in variables {
            if let (Some(key), Some(value)) = (
                variable.get("key").and_then(Value::as_str),
                answer_value(variable),
            ) {
                out.put(key, value);
            }
        }
        out.into_value()
    }
}

fn text<'a>(v: Option<&'a Value>, key: &str) -> Option<&'a str> {
    v?.get(key)?.as_str()
}

/// The value under the key an answer's `type` names: scalars as they are, a choice as its label
/// (or the "other" text), several choices joined with `, `; `None` for what has no text
/// (payments, unanswered).
fn answer_value(answer: &Value) -> Option<Value> {
    let kind = answer.get("type")?.as_str()?;
    let value = answer.get(kind)?;
    match (kind, value) {
        ("choice", Value::Object(c)) => c
            .get("label")
            .or_else(|| c.get("other"))
            .filter(|v| v.is_string())
            .cloned(),
        ("choices", Value::Object(c)) => {
            let labels = c.get("labels").and_then(Value::as_array).into_iter().flatten();
            forms::joined(labels.chain(c.get("other")))
        }
        (_, Value::String(s)) if s.trim().is_empty() => None,
        (_, v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => Some(v.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_published_example_reads_by_title_ref_and_type() {
        let event = crate::sources::fixture_json("typeform", "example-payload.json");
        assert_eq!(
            Typeform::response_id(&event).as_deref(),
            Some("lT4Z3j:a3a12ec67a1365927098a606107fac15")
        );
        let f = Typeform::fields(&event);
        assert_eq!(f["email"], "laura@example.com");
        assert_eq!(f["readable_ref_email"], "laura@example.com");
        assert_eq!(f["What is your first name?"], "Laura");
        assert_eq!(f["readable_ref_short_text"], "Laura");
        assert_eq!(f["Which pictures do you like? You can choose as many as you like."], "London, Sydney");
        assert_eq!(f["readable_ref_multiple_choice"], "London");
        assert_eq!(f["readable_ref_yes_no"], false);
        assert_eq!(f["readable_ref_date"], "2005-10-15");
        assert_eq!(f["user_id"], "abc123456");
        assert_eq!(f["score"], 9, "calculated.score; the variable `score` comes after it");
        assert_eq!(f["name"], "typeform", "the variable");
        assert_eq!(f["form_id"], "lT4Z3j");
    }

    #[test]
    fn phone_questions_and_other_choices_are_read_whatever_their_titles() {
        let event = json!({"event_id": "e", "form_response": {"form_id": "F", "token": "t",
            "hidden": {"utm_campaign": "双十一"},
            "definition": {"fields": [
                {"id": "a", "title": "怎么联系您", "type": "phone_number", "ref": "r_phone"},
                {"id": "b", "title": "行业", "type": "multiple_choice", "ref": "r_industry"},
                {"id": "c", "title": "付款", "type": "payment"}]},
            "answers": [
                {"type": "phone_number", "phone_number": "+8613800138000", "field": {"id": "a", "type": "phone_number"}},
                {"type": "choice", "choice": {"other": "新能源"}, "field": {"id": "b", "type": "multiple_choice"}},
                {"type": "payment", "payment": {"amount": "1"}, "field": {"id": "c", "type": "payment"}},
                {"type": "text", "text": "  ", "field": {"id": "d", "type": "short_text"}}]}});
        let f = Typeform::fields(&event);
        assert_eq!(f["phone"], "+8613800138000");
        assert_eq!(f["怎么联系您"], "+8613800138000");
        assert_eq!(f["行业"], "新能源");
        assert_eq!(f["utm_campaign"], "双十一");
        assert!(f.get("付款").is_none() && f.get("d").is_none(), "{f}");
        assert_eq!(Typeform::response_id(&event).as_deref(), Some("F:t"));
        assert!(Typeform::check(&json!({"event_id": "e"})).is_err());
    }

    #[test]
    fn signatures_are_prefixed_base64_hmacs_of_the_raw_body() {
        // Computed apart: "sha256=" + base64(HMAC-SHA256("s3cret", body)) in Python.
        assert_eq!(
            sign("s3cret", br#"{"eventId":"e"}"#),
            "sha256=/4bNT93KnlOiFNRyBqLiiEFKivo1K/aEuZakerAlrwU="
        );
    }
}

#[cfg(test)]
mod large {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_response_of_many_answers_reads_each_once() {
        let n = 20_000;
        let fields: Vec<Value> = (0..n)
            .map(|i| json!({"id": format!("f{i}"), "title": format!("Q{i}"), "ref": format!("r{i}")}))
            .collect();
        let answers: Vec<Value> = (0..n)
            .map(|i| json!({"type": "text", "text": format!("a{i}"), "field": {"id": format!("f{i}")}}))
            .collect();
        let event = json!({"form_response": {"form_id": "F", "token": "t",
            "definition": {"fields": fields}, "answers": answers}});
        let f = Typeform::fields(&event);
        assert_eq!(f["Q19999"], "a19999");
        assert_eq!(f["r0"], "a0");
    }
}
