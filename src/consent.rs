//! Consent (PIPL Art. 14, GDPR Art. 7): a connector names the answer that says the person agreed
//! (a checkbox, 同意隐私政策, a Typeform yes/no, a platform's disclaimer), and each record carries
//! what it said as `consent`. With `required = true` a lead without it is rejected
//! (`consent.missing`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::lead::Issue;

/// `consent = { field = "同意隐私政策", purposes = ["marketing"], text = "隐私政策 v3", required = true }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentMapping {
    /// The input field whose answer says yes: its name, or a JSON pointer into the payload as
    /// received (`/custom_disclaimer_responses/0/is_checked`).
    pub field: String,
    /// What the person agreed to (`marketing`, `sales_contact`, `data_transfer`...).
    #[serde(default)]
    pub purposes: Vec<String>,
    /// The consent text the form showed, or its version, as recorded with each consent.
    #[serde(default)]
    pub text: Option<String>,
    /// Reject leads whose answer is not yes (`consent.missing`).
    #[serde(default)]
    pub required: bool,
}

/// What a lead's consent answer said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Consent {
    /// The person agreed.
    pub granted: bool,
    /// What to: the connector's `consent.purposes`.
    pub purposes: Vec<String>,
    /// The consent text or version the form showed (`consent.text`), if the connector names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// When: the time the gateway received the answer (RFC 3339 UTC).
    pub at: String,
    /// The input field it was read from.
    pub source: String,
}

/// How an answer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Yes,
    No,
    /// Not there, or empty.
    Missing,
    /// Something that says neither yes nor no.
    Unreadable,
}

/// Yes: `true`, `1`, `yes`, `on`, `checked`, `agree(d)`, `accept(ed)`, `同意`, `是`, `已同意`,
/// `我同意`, `接受`, `确认`, `√`, `✓`; a list (checkboxes) with one of those. No: `false`, `0`,
/// `no`, `off`, `不同意`, `否`, `拒绝`, `不接受`. Full-width letters and digits count as ASCII.
pub fn answer(v: Option<&Value>) -> Answer {
    match v {
        None | Some(Value::Null) => Answer::Missing,
        Some(Value::Bool(true)) => Answer::Yes,
        Some(Value::Bool(false)) => Answer::No,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(1.0) => Answer::Yes,
            Some(0.0) => Answer::No,
            _ => Answer::Unreadable,
        },
        Some(Value::String(s)) => text(s),
        Some(Value::Array(items)) if items.is_empty() => Answer::Missing,
        Some(Value::Array(items)) => {
            let answers: Vec<Answer> = items.iter().map(|i| answer(Some(i))).collect();
            if answers.contains(&Answer::Yes) {
                Answer::Yes
            } else if answers.iter().all(|a| *a == Answer::No) {
                Answer::No
            } else {
                Answer::Unreadable
            }
        }
        Some(Value::Object(_)) => Answer::Unreadable,
    }
}

fn text(s: &str) -> Answer {
    let folded: String = s
        .trim()
        .chars()
        .map(|c| match c {
            // Full-width ASCII (Ｙｅｓ, １) as ASCII.
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            c => c,
        })
        .collect::<String>()
        .to_lowercase();
    const YES: &[&str] = &[
        "true",
        "1",
        "yes",
        "y",
        "on",
        "checked",
        "agree",
        "agreed",
        "i agree",
        "accept",
        "accepted",
        "ok",
        "同意",
        "是",
        "已同意",
        "我同意",
        "同意并继续",
        "接受",
        "确认",
        "√",
        "✓",
        "✔",
    ];
    const NO: &[&str] = &[
        "false",
        "0",
        "no",
        "n",
        "off",
        "unchecked",
        "disagree",
        "decline",
        "declined",
        "不同意",
        "否",
        "拒绝",
        "不接受",
        "×",
        "✗",
    ];
    if folded.is_empty() {
        Answer::Missing
    } else if YES.contains(&folded.as_str()) {
        Answer::Yes
    } else if NO.contains(&folded.as_str()) {
        Answer::No
    } else {
        Answer::Unreadable
    }
}

impl ConsentMapping {
    /// The consent of a lead: its answer is read from `custom` (the fields not mapped to the
    /// contact, as the connector flattened them) or the payload (`payload`, a pointer when the
    /// field starts with `/`). The issues: `consent.missing` when it is required and not yes,
    /// `consent.unreadable` when the answer says neither.
    pub fn read(
        &self,
        payload: &Value,
        custom: &Map<String, Value>,
        received_at: &str,
    ) -> (Consent, Vec<Issue>) {
        let found = if self.field.starts_with('/') {
            payload.pointer(&self.field)
        } else {
            custom.get(&self.field).or_else(|| payload.get(&self.field))
        };
        let said = answer(found);
        let mut issues = Vec::new();
        if said == Answer::Unreadable {
            issues.push(Issue::new(
                "consent",
                "consent.unreadable",
                "the consent answer says neither yes nor no; it is taken as not given",
            ));
        }
        if self.required && said != Answer::Yes {
            issues.push(Issue::new(
                "consent",
                "consent.missing",
                "this connector requires consent, and the lead did not give it",
            ));
        }
        let consent = Consent {
            granted: said == Answer::Yes,
            purposes: self.purposes.clone(),
            text: self.text.clone(),
            at: received_at.to_owned(),
            source: self.field.clone(),
        };
        (consent, issues)
    }
}

/// Whether `issues` reject the lead for its consent.
pub fn refused(issues: &[Issue]) -> bool {
    issues.iter().any(|i| i.code == "consent.missing")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_read_as_people_write_them() {
        for yes in [
            json!(true),
            json!(1),
            json!("同意"),
            json!(" Yes "),
            json!("ＹＥＳ"),
            json!("✓"),
            json!(["同意"]),
            json!("已同意"),
            json!("on"),
        ] {
            assert_eq!(answer(Some(&yes)), Answer::Yes, "{yes}");
        }
        for no in [
            json!(false),
            json!(0),
            json!("不同意"),
            json!("否"),
            json!("No"),
            json!(["否"]),
        ] {
            assert_eq!(answer(Some(&no)), Answer::No, "{no}");
        }
        for missing in [json!(null), json!(""), json!("  "), json!([])] {
            assert_eq!(answer(Some(&missing)), Answer::Missing, "{missing}");
        }
        assert_eq!(answer(None), Answer::Missing);
        for odd in [
            json!("maybe"),
            json!(2),
            json!({"a": 1}),
            json!(["maybe", "否"]),
        ] {
            assert_eq!(answer(Some(&odd)), Answer::Unreadable, "{odd}");
        }
    }

    #[test]
    fn a_required_consent_rejects_what_is_not_yes() {
        let m = ConsentMapping {
            field: "同意隐私政策".into(),
            purposes: vec!["marketing".into()],
            text: Some("隐私政策 v3".into()),
            required: true,
        };
        let custom = |v: Value| {
            let mut c = Map::new();
            c.insert("同意隐私政策".into(), v);
            c
        };
        let (c, issues) = m.read(
            &json!({}),
            &custom(json!("同意")),
            "2026-12-01T00:00:00.000Z",
        );
        assert!(c.granted && issues.is_empty());
        assert_eq!(c.purposes, ["marketing"]);
        let (c, issues) = m.read(&json!({}), &Map::new(), "t");
        assert!(!c.granted && refused(&issues));
        let (_, issues) = m.read(&json!({}), &custom(json!("maybe")), "t");
        let codes: Vec<&str> = issues.iter().map(|i| &*i.code).collect();
        assert_eq!(codes, ["consent.unreadable", "consent.missing"]);
        // A pointer into the payload as received (Meta's disclaimer responses).
        let meta = ConsentMapping {
            field: "/custom_disclaimer_responses/0/is_checked".into(),
            ..m
        };
        let payload = json!({"custom_disclaimer_responses": [{"checkbox_key": "privacy", "is_checked": "1"}]});
        assert!(meta.read(&payload, &Map::new(), "t").0.granted);
    }
}
