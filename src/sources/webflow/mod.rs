//! Webflow form submissions (`form_submission` webhooks):
//!
//! ```json
//! {"triggerType": "form_submission",
//!  "payload": {"name": "Contact Us", "siteId": "…", "data": {"First Name": "Zaphod", "email": "…"},
//!              "schema": [{"fieldName": "First Name", "fieldType": "FormTextInput", …}],
//!              "submittedAt": "…", "id": "6321ca84df3949bfc6752327", "formId": "…"}}
//! ```
//!
//! `payload.data` is keyed by the fields' labels, so the built-in names match by themselves.
//! Webhooks made through the API are signed: `x-webflow-signature` is the hex HMAC-SHA256 of
//! `{x-webflow-timestamp}:{raw body}` with the webhook's (or the app's) secret, and a timestamp
//! more than 5 minutes off is refused. Webhooks made in the site settings are not signed: use
//! `token` then. Keyed by `payload.id`; Webflow retries 3 times, 10 minutes apart.

use serde_json::Value;

use crate::sources::forms::{self, Answers, FormTool, Signature};

/// `type = "webflow"`.
pub type WebflowConnector = forms::FormConnector<Webflow>;

/// Webflow's deliveries.
#[derive(Debug, Clone, Copy)]
pub struct Webflow;

/// The headers Webflow sends for `body` at `now_ms` (for tests and stand-ins).
pub fn sign(secret: &str, body: &[u8], now_ms: i64) -> Vec<(&'static str, String)> {
    Signature::Webflow.sign(secret, body, now_ms)
}

impl FormTool for Webflow {
    const TITLE: &'static str = "Webflow";
    const SIGNATURE: Option<Signature> = Some(Signature::Webflow);

    fn skip(event: &Value) -> Option<&'static str> {
        match event.get("triggerType").and_then(Value::as_str) {
            None | Some("form_submission") => None,
            Some(_) => Some("not a form submission"),
        }
    }

    fn check(event: &Value) -> Result<(), (&'static str, &'static str)> {
        if event
            .get("payload")
            .and_then(|p| p.get("data"))
            .is_some_and(Value::is_object)
        {
            Ok(())
        } else {
            Err((
                "payload.data",
                "a Webflow form submission carries its fields in `payload.data`",
            ))
        }
    }

    /// `payload.id`.
    fn response_id(event: &Value) -> Option<String> {
        crate::sources::id_text(event.get("payload")?.get("id")?)
    }

    fn fields(event: &Value) -> Value {
        let payload = event.get("payload");
        let data = payload.and_then(|p| p.get("data"));
        // The form's `name` is not the person's: it is kept as `form_name`.
        let mut envelope = payload.and_then(Value::as_object).cloned().unwrap_or_default();
        if let Some(form) = envelope.remove("name") {
            envelope.insert("form_name".into(), form);
        }
        let envelope = Value::Object(envelope);
        let mut out = Answers::new([Some(event), Some(&envelope)]);
        for (label, value) in data.and_then(Value::as_object).into_iter().flatten() {
            if let Some(value) = forms::flat_value(value) {
                out.answer([Some(label.as_str())], &value);
            }
        }
        out.into_value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_example_reads_its_labels() {
        let event = crate::sources::fixture_json("webflow", "form-submission.json");
        assert_eq!(Webflow::skip(&event), None);
        assert_eq!(
            Webflow::response_id(&event).as_deref(),
            Some("6321ca84df3949bfc6752327")
        );
        let f = Webflow::fields(&event);
        assert_eq!(f["First Name"], "Zaphod");
        assert_eq!(f["email"], "zaphod@heartofgold.ai");
        assert_eq!(f["Phone Number"], 15550000000_u64);
        assert_eq!(f["form_name"], "Contact Us");
        assert!(f.get("name").is_none(), "the form's name is not the person's: {f}");
        assert!(Webflow::skip(&serde_json::json!({"triggerType": "site_publish"})).is_some());
    }
}
