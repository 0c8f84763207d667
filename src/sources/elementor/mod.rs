//! Elementor Pro forms' "Webhook" action. WordPress posts the form urlencoded, in one of two
//! shapes:
//!
//! - by default, each field under its label (`Name=…&Email=…&form_id=…&form_name=…`), plus meta
//!   rows (`Date`, `Page URL`, `User Agent`, ...): the built-in names match the labels;
//! - with "Advanced Data": `form[id]`, `form[name]`, `fields[<id>][id|type|title|value|raw_value]`
//!   and `meta[<key>][title|value]`, which nest into objects (see the bracketed keys of
//!   `docs/form-tools.md`). Each field is read under its title and its id; an `email` or `tel`
//!   field gives `email` or `phone` whatever its title.
//!
//! Elementor neither signs nor retries (a non-200 shows "Webhook error" to the person): set the
//! connector's `token` and add `?token=...` to the URL. There is no submission id.

use serde_json::Value;

use crate::sources::forms::{self, Answers, FormTool};

/// `type = "elementor"`.
pub type ElementorConnector = forms::FormConnector<Elementor>;

/// Elementor's deliveries.
#[derive(Debug, Clone, Copy)]
pub struct Elementor;

impl FormTool for Elementor {
    const TITLE: &'static str = "Elementor";

    fn check(event: &Value) -> Result<(), (&'static str, &'static str)> {
        if event.as_object().is_some_and(|o| !o.is_empty()) {
            Ok(())
        } else {
            Err(("body", "an Elementor form posts its fields"))
        }
    }

    fn response_id(_: &Value) -> Option<String> {
        None
    }

    fn fields(event: &Value) -> Value {
        let advanced = event.get("fields").and_then(Value::as_object);
        let Some(fields) = advanced.filter(|f| f.values().all(Value::is_object)) else {
            // The default shape: labels as keys.
            return Answers::new([Some(event)]).into_value();
        };
        let form = event.get("form");
        let mut out = Answers::new([]);
        for (key, name) in [("id", "form_id"), ("name", "form_name")] {
            if let Some(v) = form.and_then(|f| f.get(key)).filter(|v| v.is_string()) {
                out.put(name, v.clone());
            }
        }
        for (id, field) in fields {
            let text = |k: &str| field.get(k).and_then(Value::as_str).map(str::trim);
            let Some(value) = text("value")
                .filter(|v| !v.is_empty())
                .or(text("raw_value").filter(|v| !v.is_empty()))
            else {
                continue;
            };
            let value = Value::String(value.to_owned());
            out.answer([text("title"), Some(id.as_str())], &value);
            match text("type") {
                Some("email") => out.typed("email", &value),
                Some("tel") => out.typed("phone", &value),
                _ => {}
            }
        }
        for meta in event.get("meta").and_then(Value::as_object).into_iter().flatten().map(|(_, m)| m) {
            if let (Some(title), Some(value)) = (
                meta.get("title").and_then(Value::as_str),
                meta.get("value").filter(|v| v.as_str().is_some_and(|s| !s.trim().is_empty())),
            ) {
                out.answer([Some(title)], value);
            }
        }
        out.into_value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn advanced_data_reads_titles_ids_and_types() {
        let body = crate::sources::fixture_bytes("elementor", "advanced-data.txt");
        let event =
            crate::sources::webhook::parse_body(Some("application/x-www-form-urlencoded"), &body)
                .unwrap();
        let f = Elementor::fields(&event);
        assert_eq!(f["name"], "Teste");
        assert_eq!(f["Seu nome"], "Teste");
        assert_eq!(f["Whatsapp"], "(85) 98769-6383");
        assert_eq!(f["email"], "teste@gmail.com");
        assert_eq!(f["utm_campaign"], "organico");
        assert_eq!(f["form_name"], "Checkout pré populado");
        assert_eq!(f["Page URL"], "https://tarciramartinsacademy.com.br/pagina-aberta/?fbclid=fbclid");
        assert!(f.get("src").is_none() && f.get("utm_term").is_none(), "empty fields: {f}");
    }

    #[test]
    fn the_default_shape_is_labels_as_keys() {
        let event = json!({"Name": "王小明", "Email": "wang@example.cn", "form_id": "7d2e", "form_name": "Contact"});
        assert_eq!(Elementor::fields(&event), event);
        assert!(Elementor::check(&json!({})).is_err());
    }
}
