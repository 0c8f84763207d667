//! HubSpot workflow webhooks ("Send a webhook", Operations Hub). A workflow posts the enrolled
//! record as the API returns it, each property under its internal name, as a `{value}` object
//! (the contacts API's shape) or as a plain value:
//!
//! ```json
//! {"vid": 3234574, "portal-id": 62515,
//!  "properties": {"firstname": {"value": "Codey"}, "lastname": {"value": "Huang"},
//!                 "email": {"value": "codey@hubspot.com"}, "phone": {"value": "…"}}}
//! ```
//!
//! Properties are read by their internal names (`firstname` and `lastname` make the name;
//! `email`, `phone`, `mobilephone`, `company`, `jobtitle`, `city`, `state` match by themselves or
//! by the preset). Signed with the app's client secret (v3): `X-HubSpot-Signature-v3` covers the
//! method, the URL HubSpot called, the body and `X-HubSpot-Request-Timestamp`; behind a proxy
//! set `public_url` to the URL pasted into HubSpot. Keyed by the record id and its last
//! modification, so a retry (HubSpot retries 5xx for up to 3 days) publishes nothing more and a
//! later enrolment of the same record is a new event.

use serde_json::Value;

use crate::mapping::ContactField;
use crate::sources::forms::{self, Answers, FormTool, Signature};

/// `type = "hubspot"`.
pub type HubspotConnector = forms::FormConnector<Hubspot>;

/// HubSpot's deliveries.
#[derive(Debug, Clone, Copy)]
pub struct Hubspot;

/// The v3 headers HubSpot sends for a POST of `body` to `url` (for tests and stand-ins).
pub fn sign(secret: &str, url: &str, body: &[u8], now_ms: i64) -> Vec<(&'static str, String)> {
    Signature::sign_hubspot(secret, url, body, now_ms)
}

fn properties(event: &Value) -> Option<&serde_json::Map<String, Value>> {
    event.get("properties")?.as_object()
}

impl FormTool for Hubspot {
    const TITLE: &'static str = "HubSpot";
    const SIGNATURE: Option<Signature> = Some(Signature::HubspotV3);
    const PRESET: &'static [(ContactField, &'static [&'static str])] = &[
        (ContactField::Phone, &["mobilephone"]),
        (ContactField::Title, &["jobtitle"]),
        (ContactField::Address, &["address"]),
    ];

    fn check(event: &Value) -> Result<(), (&'static str, &'static str)> {
        if properties(event).is_some() {
            Ok(())
        } else {
            Err((
                "properties",
                "a HubSpot workflow webhook carries the record's `properties`",
            ))
        }
    }

    /// `{vid or objectId}:{lastmodifieddate}`.
    fn response_id(event: &Value) -> Option<String> {
        let id = ["objectId", "vid", "canonical-vid", "hs_object_id"]
            .iter()
            .find_map(|k| event.get(*k).and_then(crate::sources::id_text))
            .or_else(|| {
                let p = properties(event)?.get("hs_object_id")?;
                crate::sources::id_text(p.get("value").unwrap_or(p))
            })?;
        let modified = properties(event).and_then(|p| {
            ["lastmodifieddate", "hs_lastmodifieddate"].iter().find_map(|k| {
                let v = p.get(*k)?;
                crate::sources::id_text(v.get("value").unwrap_or(v))
            })
        });
        Some(match modified {
            Some(m) => format!("{id}:{m}"),
            None => id,
        })
    }

    fn fields(event: &Value) -> Value {
        let mut out = Answers::new([Some(event)]);
        for (name, property) in properties(event).into_iter().flatten() {
            let value = match property {
                Value::Object(p) => p.get("value").cloned(),
                v => Some(v.clone()),
            };
            match value {
                Some(Value::String(s)) if s.trim().is_empty() => {}
                Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => {
                    out.answer([Some(name.as_str())], &v);
                }
                _ => {}
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
    fn properties_are_read_by_internal_name_in_either_shape() {
        let event = crate::sources::fixture_json("hubspot", "contact.json");
        assert_eq!(
            Hubspot::response_id(&event).as_deref(),
            Some("3234574:1484026585538")
        );
        let f = Hubspot::fields(&event);
        assert_eq!(f["firstname"], "Codey");
        assert_eq!(f["email"], "codey.huang@example.com");
        let flat = json!({"objectId": 51, "properties": {"email": "a@b.cn", "firstname": "", "phone": 138}});
        let f = Hubspot::fields(&flat);
        assert_eq!(f["email"], "a@b.cn");
        assert_eq!(f["phone"], 138);
        assert!(f.get("firstname").is_none());
        assert_eq!(Hubspot::response_id(&flat).as_deref(), Some("51"));
        assert!(Hubspot::check(&json!([{"eventId": 1}])).is_err());
    }
}
