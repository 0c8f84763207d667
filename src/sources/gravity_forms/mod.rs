//! Gravity Forms (Webhooks Add-On). A feed posts, as JSON or a form, either the whole entry
//! (`all_fields`) or the keys the feed lists (`select_fields`). The whole entry is keyed by
//! field id, with no labels:
//!
//! ```json
//! {"id": "134", "form_id": "28", "date_created": "2024-01-01 10:00:00", "ip": "…",
//!  "source_url": "…", "1": "Jane Doe", "2": "jane@example.com", "3": "082 123 4567", "4.6": "South Africa"}
//! ```
//!
//! Map the field ids (the form editor shows each field's id; a name, an address or a checkbox
//! field has one id per input, `4.3` the city and `4.6` the country of an address):
//! `mapping = { name = ["1"], email = ["2"], phone = ["3"], country = ["4.6"] }` (a name
//! field's inputs also give the whole name under its id). With
//! `select_fields` the keys are the feed's own and the built-in names match them.
//!
//! Gravity Forms does not sign: add a request header `Authorization: Bearer <token>` to the
//! feed and set the connector's `token`. An entry is keyed by form and entry id.

use serde_json::Value;

use crate::sources::forms::{self, Answers, FormTool};

/// `type = "gravity_forms"`.
pub type GravityFormsConnector = forms::FormConnector<GravityForms>;

/// Gravity Forms' deliveries.
#[derive(Debug, Clone, Copy)]
pub struct GravityForms;

impl FormTool for GravityForms {
    const TITLE: &'static str = "Gravity Forms";

    fn check(event: &Value) -> Result<(), (&'static str, &'static str)> {
        if event.as_object().is_some_and(|o| !o.is_empty()) {
            Ok(())
        } else {
            Err(("body", "a Gravity Forms feed posts the entry's fields"))
        }
    }

    /// `{form_id}:{id}` of a whole entry; none for a feed of selected fields.
    fn response_id(event: &Value) -> Option<String> {
        let id = crate::sources::id_text(event.get("id")?)?;
        let form = crate::sources::id_text(event.get("form_id")?)?;
        Some(format!("{form}:{id}"))
    }

    fn fields(event: &Value) -> Value {
        let mut out = Answers::new([]);
        for (key, value) in event.as_object().into_iter().flatten() {
            let Some(value) = forms::flat_value(value) else {
                continue;
            };
            out.answer([Some(key.as_str())], &value);
        }
        // A name field's inputs (N.3 first, N.4 middle, N.6 last; an address has N.1 and N.5
        // too) also give the whole name under N.
        if let Some(obj) = event.as_object() {
            let input = |n: &str, i: u8| {
                obj.get(&format!("{n}.{i}"))
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .unwrap_or_default()
            };
            let groups: std::collections::BTreeSet<&str> =
                obj.keys().filter_map(|k| k.split_once('.').map(|(n, _)| n)).collect();
            for n in groups {
                if [1, 5].iter().any(|i| obj.contains_key(&format!("{n}.{i}"))) {
                    continue;
                }
                let given = [input(n, 3), input(n, 4)]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                if let Some(name) = crate::sources::person_name(&given, input(n, 6)) {
                    out.put(n, Value::String(name));
                }
            }
        }
        out.into_value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_is_keyed_by_field_id() {
        let event = crate::sources::fixture_json("gravity-forms", "entry.json");
        assert_eq!(GravityForms::response_id(&event).as_deref(), Some("28:134"));
        let f = GravityForms::fields(&event);
        assert_eq!(f["1.3"], "Thandi");
        assert_eq!(f["1"], "Thandi Mokoena", "a name field's inputs: {f}");
        assert!(f.get("4").is_none(), "an address is not a name");
        assert_eq!(f["4.6"], "South Africa");
        assert!(f.get("4.2").is_none(), "an empty input: {f}");
    }
}
