//! Paths into a payload, for `mapping` entries that name a nested value rather than a field:
//!
//! ```text
//! $.form_response.hidden.utm_campaign          keys, from the payload's top
//! $.answers[0].text                            an array element by position
//! $.answers[field.ref=email].email             the first element whose `field.ref` is `email`
//! $.data.fields[label="手机"]                   values may be quoted ("a.b", "x]")
//! $["key.with.dots"].value                     a quoted key
//! ```
//!
//! What a path reaches becomes text as the mapping reads it ([`text_of`]): text, numbers and
//! booleans as they are; a list joined with `, `; an object by what it holds: its `value`
//! (a verified phone), with option ids resolved through its `options` (a choice question), the
//! value under the key its `type` names (a Typeform answer), else its `label` or `text`.

use serde_json::Value;

/// A parsed path.
#[derive(Debug, Clone, PartialEq)]
pub struct Path(Vec<Step>);

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
    /// The first element of an array whose value at `keys` is `value`.
    Select {
        keys: Vec<String>,
        value: String,
    },
}

/// Why a path does not parse: the position (in characters from 0; shown from 1) and what was
/// expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at character {}: expected {why}", at + 1)]
pub struct PathError {
    pub at: usize,
    pub why: &'static str,
}

/// Whether a `mapping` entry is a path rather than a field name.
pub fn is_path(entry: &str) -> bool {
    entry.trim_start().starts_with('$')
}

impl std::str::FromStr for Path {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Self, PathError> {
        let chars: Vec<char> = s.trim().chars().collect();
        let err = |at, why| Err(PathError { at, why });
        if chars.first() != Some(&'$') {
            return err(0, "a path starts with `$`");
        }
        let mut steps = Vec::new();
        let mut i = 1;
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    let start = i + 1;
                    let mut end = start;
                    while end < chars.len() && !matches!(chars[end], '.' | '[' | ']') {
                        end += 1;
                    }
                    if end == start {
                        return err(start, "a key after `.`");
                    }
                    steps.push(Step::Key(chars[start..end].iter().collect()));
                    i = end;
                }
                '[' => {
                    let (inner, next) = bracket(&chars, i + 1)?;
                    i = next;
                    steps.push(inner);
                }
                _ => return err(i, "`.` or `[`"),
            }
        }
        if steps.is_empty() {
            return err(1, "at least one step (`.key` or `[...]`)");
        }
        Ok(Self(steps))
    }
}

/// Reads `"..."` from `at` (just after the opening quote): the text and the index after the
/// closing quote. `\"` and `\\` are escapes.
fn quoted(chars: &[char], mut at: usize) -> Result<(String, usize), PathError> {
    let mut out = String::new();
    while at < chars.len() {
        match chars[at] {
            '"' => return Ok((out, at + 1)),
            '\\' if at + 1 < chars.len() => {
                out.push(chars[at + 1]);
                at += 2;
            }
            c => {
                out.push(c);
                at += 1;
            }
        }
    }
    Err(PathError {
        at,
        why: "a closing `\"`",
    })
}

/// Reads the inside of `[...]` from `at`; returns the step and the index after `]`.
fn bracket(chars: &[char], at: usize) -> Result<(Step, usize), PathError> {
    let close = |at: usize| -> Result<usize, PathError> {
        if chars.get(at) == Some(&']') {
            Ok(at + 1)
        } else {
            Err(PathError { at, why: "`]`" })
        }
    };
    if chars.get(at) == Some(&'"') {
        let (key, next) = quoted(chars, at + 1)?;
        return Ok((Step::Key(key), close(next)?));
    }
    let mut end = at;
    while end < chars.len() && !matches!(chars[end], '=' | ']') {
        end += 1;
    }
    let head: String = chars[at..end].iter().collect();
    let head = head.trim();
    if chars.get(end) == Some(&']') {
        return match head.parse::<usize>() {
            Ok(n) => Ok((Step::Index(n), end + 1)),
            Err(_) => Err(PathError {
                at,
                why: "a position (`[0]`), a selector (`[key=value]`) or a quoted key (`[\"key\"]`)",
            }),
        };
    }
    if end >= chars.len() {
        return Err(PathError {
            at: end,
            why: "`]`",
        });
    }
    // A selector: `keys=value` or `keys==value`.
    if head.is_empty() {
        return Err(PathError {
            at,
            why: "a key before `=`",
        });
    }
    let keys: Vec<String> = head.split('.').map(|k| k.trim().to_owned()).collect();
    if keys.iter().any(String::is_empty) {
        return Err(PathError {
            at,
            why: "keys separated by single `.`",
        });
    }
    let mut v = end + 1;
    if chars.get(v) == Some(&'=') {
        v += 1;
    }
    while chars.get(v) == Some(&' ') {
        v += 1;
    }
    let (value, next) = if chars.get(v) == Some(&'"') {
        quoted(chars, v + 1)?
    } else {
        let mut e = v;
        while e < chars.len() && chars[e] != ']' {
            e += 1;
        }
        (chars[v..e].iter().collect::<String>().trim().to_owned(), e)
    };
    let mut next = next;
    while chars.get(next) == Some(&' ') {
        next += 1;
    }
    Ok((Step::Select { keys, value }, close(next)?))
}

/// A scalar as the text a selector compares.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn at_keys<'a>(mut v: &'a Value, keys: &[String]) -> Option<&'a Value> {
    for k in keys {
        v = v.get(k)?;
    }
    Some(v)
}

impl Path {
    /// The value the path reaches in `payload`, if it reaches one.
    pub fn find<'a>(&self, payload: &'a Value) -> Option<&'a Value> {
        let mut v = payload;
        for step in &self.0 {
            v = match step {
                Step::Key(k) => v.get(k)?,
                Step::Index(i) => v.get(*i)?,
                Step::Select { keys, value } => v.as_array()?.iter().find(|item| {
                    at_keys(item, keys).and_then(scalar_text).as_deref() == Some(value.as_str())
                })?,
            };
        }
        Some(v)
    }
}

/// A reached value as text (see the module docs); `None` when it holds none.
pub fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => (!s.trim().is_empty()).then(|| s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => None,
        Value::Array(items) => {
            let texts: Vec<String> = items.iter().filter_map(text_of).collect();
            (!texts.is_empty()).then(|| texts.join(", "))
        }
        Value::Object(obj) => {
            if let (Some(value), Some(Value::Array(options))) =
                (obj.get("value"), obj.get("options"))
            {
                return option_texts(value, options);
            }
            if let Some(value) = obj.get("value") {
                return text_of(value);
            }
            if let Some(kind) = obj.get("type").and_then(Value::as_str)
                && let Some(value) = obj.get(kind)
                && kind != "type"
            {
                return text_of(value);
            }
            ["label", "text", "name"]
                .iter()
                .find_map(|k| obj.get(*k).and_then(text_of))
        }
    }
}

/// Option ids (one or a list) as their options' text, several joined with `, `; ids no option
/// has stay as they are.
pub fn option_texts(value: &Value, options: &[Value]) -> Option<String> {
    // By id, once: the first option whose `id`, `value` or `key` is the id, and its `text`,
    // `label` or `name`.
    let mut by_id: std::collections::HashMap<String, Option<&str>> = Default::default();
    for o in options {
        let text = ["text", "label", "name"]
            .iter()
            .find_map(|k| o.get(*k).and_then(Value::as_str));
        for k in ["id", "value", "key"] {
            if let Some(id) = o.get(k).and_then(scalar_text) {
                by_id.entry(id).or_insert(text);
            }
        }
    }
    let one = |id: &Value| -> Option<String> {
        let id = scalar_text(id)?;
        Some(match by_id.get(&id) {
            Some(Some(text)) => (*text).to_owned(),
            _ => id,
        })
    };
    let texts: Vec<String> = match value {
        Value::Array(ids) => ids.iter().filter_map(one).collect(),
        id => one(id).into_iter().collect(),
    };
    (!texts.is_empty()).then(|| texts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn find(path: &str, payload: &Value) -> Option<String> {
        path.parse::<Path>()
            .unwrap()
            .find(payload)
            .and_then(text_of)
    }

    #[test]
    fn paths_reach_keys_positions_and_selected_elements() {
        let typeform = json!({"form_response": {"hidden": {"utm_campaign": "双十一"},
            "answers": [
                {"type": "text", "text": "Laura", "field": {"id": "a", "ref": "name"}},
                {"type": "email", "email": "laura@example.com", "field": {"id": "b", "ref": "email"}},
                {"type": "choice", "choice": {"label": "London"}, "field": {"id": "c", "ref": "city"}}]}});
        assert_eq!(
            find("$.form_response.hidden.utm_campaign", &typeform).as_deref(),
            Some("双十一")
        );
        assert_eq!(
            find("$.form_response.answers[field.ref=email].email", &typeform).as_deref(),
            Some("laura@example.com")
        );
        assert_eq!(
            find("$.form_response.answers[field.ref == \"email\"]", &typeform).as_deref(),
            Some("laura@example.com"),
            "a typed answer by its type"
        );
        assert_eq!(
            find("$.form_response.answers[field.ref=city]", &typeform).as_deref(),
            Some("London")
        );
        assert_eq!(
            find("$.form_response.answers[0].text", &typeform).as_deref(),
            Some("Laura")
        );
        assert_eq!(find("$.form_response.answers[9].text", &typeform), None);
        assert_eq!(
            find("$.form_response.answers[field.ref=phone]", &typeform),
            None
        );
        assert_eq!(find("$.nothing.here", &typeform), None);
    }

    #[test]
    fn objects_give_their_value_and_options_their_text() {
        let tally = json!({"data": {"fields": [
            {"label": "手机", "type": "INPUT_PHONE_NUMBER", "value": "+8613800138000"},
            {"label": "产品", "value": ["o1", "o3"], "options": [{"id": "o1", "text": "CRM"}, {"id": "o3", "text": "营销自动化"}]}]}});
        assert_eq!(
            find("$.data.fields[label=\"手机\"]", &tally).as_deref(),
            Some("+8613800138000")
        );
        assert_eq!(
            find("$.data.fields[label=产品]", &tally).as_deref(),
            Some("CRM, 营销自动化")
        );
        let jinshuju = json!({"entry": {"field_4": {"value": "18629058968", "verified": true}, "field_3": ["a", "b"]}});
        assert_eq!(
            find("$.entry.field_4", &jinshuju).as_deref(),
            Some("18629058968")
        );
        assert_eq!(find("$.entry.field_3", &jinshuju).as_deref(), Some("a, b"));
        let odd = json!({"a.b": {"x]": 1}, "n": null, "blank": " "});
        assert_eq!(find("$[\"a.b\"][\"x]\"]", &odd).as_deref(), Some("1"));
        assert_eq!(find("$.n", &odd), None);
        assert_eq!(find("$.blank", &odd), None);
    }

    #[test]
    fn bad_paths_say_where() {
        for (path, at) in [
            ("answers", 0),
            ("$", 1),
            ("$.", 2),
            ("$.a[", 4),
            ("$.a[x]", 4),
            ("$.a[=1]", 4),
            ("$.a[k=1", 7),
            ("$.a[\"k]", 7),
            ("$.a..b", 4),
            ("$x", 1),
            ("$.a[k.=1]", 4),
        ] {
            let e = path.parse::<Path>().unwrap_err();
            assert_eq!(e.at, at, "{path}: {e}");
        }
    }
}
