//! Jotform form webhooks. Jotform posts each submission as `multipart/form-data`: `formID`,
//! `submissionID`, `formTitle`, `ip`, `pretty` (`"Label:value, Label:value"`) and `rawRequest`,
//! a JSON string of the answers keyed `q<N>_<slug>`:
//!
//! ```json
//! {"q3_fullName": {"first": "Niloth", "last": "P"}, "q4_email": "…",
//!  "q5_phoneNumber": {"full": "(555) 123-4567"}, "q33_typeOf": "Online Tutoring"}
//! ```
//!
//! Each answer is read under its key and its slug (`phoneNumber` folds to the built-in
//! `phone_number`), then under its label from `pretty`. Compound answers become text: a name
//! (`first`, `middle`, `last`) gives `name`, a phone (`full`, or `area` and `phone`) gives
//! `phone`, an address (`addr_line1`, `city`, `state`, `postal`, `country`) gives `address`,
//! `city` and `province`, a date (`year`, `month`, `day`) `YYYY-MM-DD`, whatever their labels.
//!
//! Jotform does not sign its requests: set the connector's `token` and paste the URL with
//! `?token=...`. The submission id keys the event.

use serde_json::{Map, Value};

use crate::sources::forms::{self, Answers, FormTool};

/// `type = "jotform"`.
pub type JotformConnector = forms::FormConnector<Jotform>;

/// Jotform's deliveries.
#[derive(Debug, Clone, Copy)]
pub struct Jotform;

impl FormTool for Jotform {
    const TITLE: &'static str = "Jotform";

    fn check(event: &Value) -> Result<(), (&'static str, &'static str)> {
        match event.get("rawRequest") {
            Some(Value::String(s)) if serde_json::from_str::<Map<String, Value>>(s).is_ok() => {
                Ok(())
            }
            Some(Value::Object(_)) => Ok(()),
            Some(_) => Err(("rawRequest", "must be the JSON object of the answers")),
            None => Err((
                "rawRequest",
                "a Jotform submission carries its answers in the `rawRequest` part",
            )),
        }
    }

    /// `submissionID`.
    fn response_id(event: &Value) -> Option<String> {
        crate::sources::id_text(event.get("submissionID")?)
    }

    fn fields(event: &Value) -> Value {
        let mut envelope = event.as_object().cloned().unwrap_or_default();
        let raw = envelope.remove("rawRequest");
        let pretty = envelope.remove("pretty");
        envelope.retain(|_, v| !matches!(v, Value::String(s) if s.is_empty()));
        let envelope = Value::Object(envelope);
        let mut out = Answers::new([Some(&envelope)]);
        let answers = match raw {
            Some(Value::String(s)) => serde_json::from_str(&s).unwrap_or_default(),
            Some(Value::Object(obj)) => obj,
            _ => Map::new(),
        };
        for (key, value) in &answers {
            let Some(slug) = question_slug(key) else {
                continue;
            };
            answer(&mut out, key, slug, value);
        }
        if let Some(Value::String(pretty)) = pretty {
            for (label, value) in pretty_pairs(&pretty) {
                out.answer([Some(label.as_str())], &Value::String(value));
            }
        }
        out.into_value()
    }
}

/// `q12_fullName` -> `fullName`; keys that are not answers (`slug`, `buildDate`, ...) -> `None`.
fn question_slug(key: &str) -> Option<&str> {
    let rest = key.strip_prefix('q')?;
    let (n, slug) = rest.split_once('_')?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !slug.is_empty()).then_some(slug)
}

fn answer(out: &mut Answers, key: &str, slug: &str, value: &Value) {
    let names = [Some(key), Some(slug)];
    match value {
        Value::String(s) if s.trim().is_empty() => {}
        Value::String(s) => {
            out.answer(names, value);
            if s.contains('@') && slug.to_ascii_lowercase().contains("email") {
                out.typed("email", value);
            }
        }
        Value::Number(_) | Value::Bool(_) => out.answer(names, value),
        Value::Array(items) => {
            if let Some(v) = forms::joined(items) {
                out.answer(names, &v);
            }
        }
        Value::Object(parts) => {
            let part = |k: &str| {
                parts
                    .get(k)
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
            };
            let words = |keys: &[&str], sep: &str| {
                let texts: Vec<&str> = keys.iter().filter_map(|k| part(k)).collect();
                (!texts.is_empty()).then(|| Value::String(texts.join(sep)))
            };
            if parts.contains_key("first") || parts.contains_key("last") {
                let given = words(&["first", "middle"], " ");
                let given = given.as_ref().and_then(Value::as_str).unwrap_or_default();
                let name = crate::sources::person_name(given, part("last").unwrap_or_default());
                if let Some(name) = name.map(Value::String) {
                    out.answer(names, &name);
                    out.typed("name", &name);
                }
            } else if parts.contains_key("full") || parts.contains_key("area") {
                let phone = part("full").map(|s| Value::String(s.to_owned()));
                if let Some(phone) = phone.or_else(|| words(&["area", "phone"], " ")) {
                    out.answer(names, &phone);
                    out.typed("phone", &phone);
                }
            } else if parts.contains_key("addr_line1") || parts.contains_key("city") {
                if let Some(address) =
                    words(&["addr_line1", "addr_line2", "city", "state", "postal", "country"], ", ")
                {
                    out.answer(names, &address);
                    out.typed("address", &address);
                }
                for (sub, field) in [("city", "city"), ("state", "province")] {
                    if let Some(text) = part(sub) {
                        out.typed(field, &Value::String(text.to_owned()));
                    }
                }
            } else if let (Some(y), Some(m), Some(d)) = (part("year"), part("month"), part("day"))
            {
                out.answer(names, &Value::String(format!("{y}-{m:0>2}-{d:0>2}")));
            } else if !parts.contains_key("year") {
                let texts = parts.values().filter(|v| v.is_string() || v.is_number());
                if let Some(v) = forms::joined(texts) {
                    out.answer(names, &v);
                }
            }
        }
        Value::Null => {}
    }
}

/// `"Name:Niloth P, Type of Tutoring:Online Tutoring"` -> label and value pairs. A piece with no
/// `:` continues the value before it (a value with `, ` in it).
fn pretty_pairs(pretty: &str) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for piece in pretty.split(", ") {
        match piece.split_once(':') {
            Some((label, value)) if !label.trim().is_empty() => {
                pairs.push((label.trim().to_owned(), value.trim().to_owned()));
            }
            _ => {
                if let Some((_, value)) = pairs.last_mut() {
                    value.push_str(", ");
                    value.push_str(piece.trim());
                }
            }
        }
    }
    pairs.retain(|(_, v)| !v.is_empty());
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn recorded() -> Value {
        let body = crate::sources::fixture_bytes("jotform", "response.multipart");
        crate::sources::webhook::parse_body(
            Some("multipart/form-data; boundary=------------------------J1JNT4vbVO4FCC1qLG4HSv"),
            &body,
        )
        .unwrap()
    }

    #[test]
    fn the_recorded_submission_reads_its_answers_and_labels() {
        let event = recorded();
        assert!(Jotform::check(&event).is_ok());
        assert_eq!(Jotform::response_id(&event).as_deref(), Some("6084250982513018472"));
        let f = Jotform::fields(&event);
        assert_eq!(f["name"], "Niloth P", "a name widget, whatever its label: {f}");
        assert_eq!(f["studentsName"], "Niloth P");
        assert_eq!(f["q33_typeOf"], "Online Tutoring");
        assert_eq!(f["Type of Tutoring"], "Online Tutoring");
        assert_eq!(f["Prior Tutoring?"], "No");
        assert_eq!(f["formTitle"], "Tutor Appointment Form");
        assert!(f.get("rawRequest").is_none() && f.get("pretty").is_none());
        assert!(f.get("q15_date").is_none(), "an empty date: {f}");
        assert!(f.get("action").is_none(), "empty parts are left out: {f}");
        assert!(f.get("slug").is_none());
    }

    #[test]
    fn compound_answers_become_contact_fields() {
        let raw = json!({"q3_fullName": {"first": "小明", "last": "王"},
            "q4_yourEmail": "wang@example.cn",
            "q5_phoneNumber": {"area": "138", "phone": "0013 8000"},
            "q6_address": {"addr_line1": "科苑路 88 号", "addr_line2": "", "city": "深圳市",
                           "state": "广东省", "postal": "518000", "country": "China"},
            "q7_date": {"month": "3", "day": "9", "year": "2026"},
            "q8_products": ["CRM", "ERP"]});
        let event = json!({"submissionID": "1", "rawRequest": raw.to_string(),
            "pretty": "Full Name:小明 王, 备注:你好, 再见, Products:CRM ERP"});
        let f = Jotform::fields(&event);
        assert_eq!(f["name"], "王小明", "family name first, no space");
        assert_eq!(f["email"], "wang@example.cn");
        assert_eq!(f["phone"], "138 0013 8000");
        assert_eq!(f["phoneNumber"], "138 0013 8000");
        assert_eq!(f["city"], "深圳市");
        assert_eq!(f["province"], "广东省");
        assert_eq!(f["q6_address"], "科苑路 88 号, 深圳市, 广东省, 518000, China");
        assert_eq!(f["date"], "2026-03-09");
        assert_eq!(f["products"], "CRM, ERP");
        assert_eq!(f["备注"], "你好, 再见");
    }

    #[test]
    fn a_body_without_answers_is_refused() {
        assert!(Jotform::check(&json!({"submissionID": "1"})).is_err());
        assert!(Jotform::check(&json!({"rawRequest": "not json"})).is_err());
        assert_eq!(question_slug("q12_fullName"), Some("fullName"));
        assert_eq!(question_slug("qx_fullName"), None);
        assert_eq!(question_slug("q_"), None);
    }
}
