//! 金数据 (jinshuju) 数据推送. 金数据 posts each entry as JSON with `X-Requested-By: jinshuju`:
//!
//! ```json
//! {"form": "RygpW3", "form_name": "小金俱乐部活动报名",
//!  "entry": {"serial_number": 1, "field_1": "小金", "field_4": {"value": "18629058968",
//!            "verified": true}, "field_3": ["zI63", "uN9L"], "created_at": "…"}}
//! ```
//!
//! The push carries field codes, not labels (表单设置 → 数据推送 lists which code is which
//! question): map them with `mapping = { name = ["field_1"] }`. Object values are read by their
//! `value` (a verified phone), lists are joined with `, `. A verified phone gives `phone`, and an
//! answer that is an email address gives `email`, whatever its code.
//!
//! 金数据 does not sign its pushes: set the connector's `token` and push to the URL with
//! `?token=...`. The entry is keyed by form and serial number (金数据 retries up to 3 times).

use serde_json::Value;

use crate::sources::forms::{self, Answers, FormTool};

/// `type = "jinshuju"`.
pub type JinshujuConnector = forms::FormConnector<Jinshuju>;

/// 金数据's deliveries.
#[derive(Debug, Clone, Copy)]
pub struct Jinshuju;

impl FormTool for Jinshuju {
    const TITLE: &'static str = "金数据";

    fn check(event: &Value) -> Result<(), (&'static str, &'static str)> {
        if event.get("entry").is_some_and(Value::is_object) {
            Ok(())
        } else {
            Err(("entry", "a 金数据 push carries the answers in `entry`"))
        }
    }

    /// `{form}:{entry.serial_number}`.
    fn response_id(event: &Value) -> Option<String> {
        let serial = crate::sources::id_text(event.get("entry")?.get("serial_number")?)?;
        let form = event
            .get("form")
            .and_then(crate::sources::id_text)
            .unwrap_or_default();
        Some(format!("{form}:{serial}"))
    }

    fn fields(event: &Value) -> Value {
        let entry = event.get("entry");
        let mut out = Answers::new([Some(event)]);
        for (key, value) in entry.and_then(Value::as_object).into_iter().flatten() {
            let text = match value {
                Value::Object(obj) => match obj.get("value") {
                    Some(v @ (Value::String(_) | Value::Number(_))) => {
                        if obj.get("verified").is_some_and(Value::is_boolean) {
                            out.typed("phone", v);
                        }
                        v.clone()
                    }
                    _ => continue,
                },
                v => match forms::flat_value(v) {
                    Some(v) => v,
                    None => continue,
                },
            };
            if let Value::String(s) = &text
                && forms::looks_like_email(s)
            {
                out.typed("email", &text);
            }
            out.answer([Some(key.as_str())], &text);
        }
        out.into_value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_entry_reads_codes_objects_and_lists() {
        let event = crate::sources::fixture_json("jinshuju", "entry.json");
        assert_eq!(Jinshuju::response_id(&event).as_deref(), Some("RygpW3:1"));
        let f = Jinshuju::fields(&event);
        assert_eq!(f["field_1"], "小金");
        assert_eq!(f["field_4"], "18629058968");
        assert_eq!(f["phone"], "18629058968", "a verified phone: {f}");
        assert_eq!(f["email"], "roody@jinshuju.com");
        assert_eq!(f["field_3"], "zI63, uN9L");
        assert_eq!(f["form_name"], "小金俱乐部活动报名");
        assert_eq!(f["created_at"], "2016-02-17T11:40:31.524Z");
        assert!(f.get("field_7").is_none(), "unanswered: {f}");
        assert!(Jinshuju::check(&serde_json::json!({"form": "x"})).is_err());
    }
}
