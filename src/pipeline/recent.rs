//! The latest rejected leads this gateway delivered, for the console's data-quality page: what
//! was wrong and which fields came, with every value masked ([`crate::mask`]). Kept in memory
//! (the last [`KEPT`]), so a restart forgets them; the records themselves are on the rejected
//! topic.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

use crate::sinks::OutRecord;

/// How many rejected leads are kept.
pub const KEPT: usize = 500;
/// How many of a lead's input fields are kept, and how deep a nested field is followed.
const FIELDS: usize = 30;
const DEPTH: usize = 5;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Rejection {
    /// Ascending as they were delivered: `before=` pages on.
    pub seq: u64,
    pub event_id: String,
    pub connector: String,
    pub received_at: String,
    /// `[{field, code, message}]`, the record's `reasons`.
    pub reasons: Value,
    /// The input's fields (nested ones by dotted path), each value masked.
    pub fields: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
pub struct RecentRejections {
    kept: Mutex<(u64, VecDeque<Rejection>)>,
}

impl RecentRejections {
    /// Keeps the records of `delivered` on `topic` (the rejected one).
    pub fn note(&self, delivered: &[OutRecord], topic: &str) {
        let mut fresh: Vec<Rejection> = Vec::new();
        for r in delivered.iter().filter(|r| r.topic == topic) {
            let Ok(record) = serde_json::from_str::<Value>(r.value.get()) else {
                continue;
            };
            let text = |p: &str| {
                record
                    .pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            let mut fields = BTreeMap::new();
            flatten(&record["raw"], String::new(), 0, &mut fields);
            fresh.push(Rejection {
                seq: 0,
                event_id: text("/event_id"),
                connector: text("/source/connector"),
                received_at: text("/received_at"),
                reasons: record
                    .get("reasons")
                    .cloned()
                    .unwrap_or(Value::Array(Vec::new())),
                fields,
            });
        }
        if fresh.is_empty() {
            return;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        for mut r in fresh {
            kept.0 += 1;
            r.seq = kept.0;
            if kept.1.len() == KEPT {
                kept.1.pop_front();
            }
            kept.1.push_back(r);
        }
    }

    /// The newest first, of `connector` if given, before `seq` if given, at most `limit`.
    pub fn latest(
        &self,
        connector: Option<&str>,
        before: Option<u64>,
        limit: usize,
    ) -> Vec<Rejection> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.1
            .iter()
            .rev()
            .filter(|r| before.is_none_or(|b| r.seq < b))
            .filter(|r| connector.is_none_or(|c| r.connector == c))
            .take(limit)
            .cloned()
            .collect()
    }
}

fn flatten(v: &Value, path: String, depth: usize, out: &mut BTreeMap<String, String>) {
    if out.len() >= FIELDS {
        return;
    }
    let name = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match v {
        Value::Object(m) if depth < DEPTH => {
            for (k, v) in m {
                flatten(v, name(k), depth + 1, out);
            }
        }
        Value::Array(a) if depth < DEPTH => {
            for (i, v) in a.iter().enumerate() {
                flatten(v, name(&i.to_string()), depth + 1, out);
            }
        }
        Value::Null => {}
        Value::String(s) => {
            out.insert(or_value(path), crate::mask::guess(s));
        }
        Value::Number(n) => {
            out.insert(or_value(path), crate::mask::guess(&n.to_string()));
        }
        Value::Bool(b) => {
            out.insert(or_value(path), b.to_string());
        }
        // Deeper than kept: that it is there, not what.
        _ => {
            out.insert(or_value(path), "…".into());
        }
    }
}

/// An unreadable file line's raw is its text, with no field name.
fn or_value(path: String) -> String {
    if path.is_empty() {
        "(line)".into()
    } else {
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rejected(n: usize, connector: &str) -> OutRecord {
        let record = json!({
            "event_id": format!("e{n}"), "received_at": "2026-12-01T00:00:00.000Z",
            "source": {"connector": connector},
            "raw": {"phone": "12345", "name": "王芳", "form": {"answers": [{"text": "13800138000"}]}},
            "reasons": [{"field": "contact", "code": "contact.unreachable", "message": "m"}],
        });
        OutRecord {
            topic: "leads.rejected".into(),
            key: format!("e{n}"),
            value: serde_json::value::to_raw_value(&record).unwrap(),
            headers: Vec::new(),
        }
    }

    #[test]
    fn keeps_the_latest_masked_and_pages_newest_first() {
        let recent = RecentRejections::default();
        let mut clean = rejected(0, "webform");
        clean.topic = "leads.clean".into();
        recent.note(&[clean], "leads.rejected");
        assert!(
            recent.latest(None, None, 10).is_empty(),
            "clean records are not kept"
        );
        for n in 1..=KEPT + 5 {
            recent.note(
                &[rejected(n, if n % 2 == 0 { "a" } else { "b" })],
                "leads.rejected",
            );
        }
        let all = recent.latest(None, None, usize::MAX);
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0].event_id, format!("e{}", KEPT + 5));
        assert_eq!(all[KEPT - 1].event_id, "e6", "the oldest went");
        let page = recent.latest(Some("a"), Some(all[0].seq), 2);
        assert_eq!(
            page.iter()
                .map(|r| r.connector.as_str())
                .collect::<Vec<_>>(),
            ["a", "a"]
        );
        assert!(page[0].seq < all[0].seq);
        let f = &all[0].fields;
        assert_eq!(f["phone"], "1***5");
        assert_eq!(f["name"], "王*");
        assert_eq!(f["form.answers.0.text"], "138****8000");
        assert_eq!(all[0].reasons[0]["code"], "contact.unreachable");
        let text = serde_json::to_string(&all).unwrap();
        assert!(!text.contains("13800138000") && !text.contains("王芳"));
    }
}
