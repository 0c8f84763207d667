//! 腾讯问卷 (wj.qq.com) Webhook. 腾讯问卷 posts one JSON event per answer sheet:
//!
//! ```json
//! {"id": "33cc555f-…", "object": "Answer", "action": "answer.create", "created_at": "…",
//!  "payload": {"survey_id": 5356056, "answer_id": 7, "started_at": "…", "ended_at": "…",
//!    "answer": [{"id": "p-1-…", "questions": [
//!      {"id": "q-1-…", "type": "text", "text": "王小明"},
//!      {"id": "q-3-…", "type": "radio", "options": [{"id": "o-1", "checked": 1, "text": "CRM"}]}]}]}}
//! ```
//!
//! Answers are pages of questions: each is read under its id (and its `title`, where the push
//! carries one): a text answer as its text, a choice as the text of its checked options, a
//! matrix row by row. An answer that is an email address gives `email`. Map the other
//! questions by their ids (the survey's 题目 ID): `mapping = { name = ["q-1-abcd"] }`.
//!
//! `answer.create` and `answer.update` are leads, keyed by survey and answer id (an update
//! replays the create, so it publishes nothing new); `answer.delete` and the test request sent
//! when a webhook is saved are answered without a lead. The push is not signed yet (the docs
//! say a key "will be added later"): set the connector's `token` and add `?token=...` to the URL.

use serde_json::Value;

use crate::sources::forms::{self, Answers, FormTool};

/// `type = "tencent_wj"`.
pub type TencentWjConnector = forms::FormConnector<TencentWj>;

/// 腾讯问卷's deliveries.
#[derive(Debug, Clone, Copy)]
pub struct TencentWj;

impl FormTool for TencentWj {
    const TITLE: &'static str = "腾讯问卷";

    fn skip(event: &Value) -> Option<&'static str> {
        match event.get("action").and_then(Value::as_str) {
            Some("answer.create" | "answer.update") if has_answer(event) => None,
            Some("answer.delete") => Some("a deleted answer sheet is not a lead"),
            _ => Some("not an answer sheet (腾讯问卷 sends a test request when a webhook is saved)"),
        }
    }

    fn check(event: &Value) -> Result<(), (&'static str, &'static str)> {
        if has_answer(event) {
            Ok(())
        } else {
            Err(("payload.answer", "a 腾讯问卷 answer carries its pages in `payload.answer`"))
        }
    }

    /// `{payload.survey_id}:{payload.answer_id}`.
    fn response_id(event: &Value) -> Option<String> {
        let payload = event.get("payload")?;
        let answer = crate::sources::id_text(payload.get("answer_id")?)?;
        let survey = payload
            .get("survey_id")
            .and_then(crate::sources::id_text)
            .unwrap_or_default();
        Some(format!("{survey}:{answer}"))
    }

    fn fields(event: &Value) -> Value {
        let payload = event.get("payload");
        let mut out = Answers::new([Some(event), payload]);
        let pages = payload
            .and_then(|p| p.get("answer"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        let questions = pages.flat_map(|page| {
            page.get("questions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        });
        for question in questions {
            let name = |k: &str| question.get(k).and_then(Value::as_str);
            if let Some(value) = answer_value(question) {
                if value.as_str().is_some_and(forms::looks_like_email) {
                    out.typed("email", &value);
                }
                out.answer([name("title"), name("id")], &value);
            }
            // A matrix: each row under its own id.
            for group in question.get("groups").and_then(Value::as_array).into_iter().flatten() {
                if let (Some(id), Some(value)) =
                    (group.get("id").and_then(Value::as_str), answer_value(group))
                {
                    out.answer([group.get("title").and_then(Value::as_str), Some(id)], &value);
                }
            }
        }
        out.into_value()
    }
}

fn has_answer(event: &Value) -> bool {
    event
        .get("payload")
        .and_then(|p| p.get("answer"))
        .is_some_and(Value::is_array)
}

/// A question's (or a matrix row's) answer: its text, else its checked options' text.
fn answer_value(question: &Value) -> Option<Value> {
    if let Some(text) = question.get("text").filter(|t| match t {
        Value::String(s) => !s.trim().is_empty(),
        Value::Number(_) => true,
        _ => false,
    }) {
        return Some(text.clone());
    }
    let options = question.get("options").and_then(Value::as_array)?;
    let checked = options.iter().filter(|o| match o.get("checked") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_i64() != Some(0),
        Some(_) => false,
    });
    forms::joined(checked.filter_map(|o| o.get("text")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pages_of_questions_read_by_id_with_checked_options_as_text() {
        let event = crate::sources::fixture_json("tencent_wj", "answer.json");
        assert_eq!(TencentWj::skip(&event), None);
        assert_eq!(TencentWj::response_id(&event).as_deref(), Some("5356056:7"));
        let f = TencentWj::fields(&event);
        assert_eq!(f["q-1-Xb3k"], "王小明");
        assert_eq!(f["q-2-Jm8w"], "13800138000");
        assert_eq!(f["email"], "wang.xm@example.cn");
        assert_eq!(f["q-4-Lk2p"], "CRM, 营销自动化", "checked options only: {f}");
        assert_eq!(f["g-5-1"], "满意");
        assert_eq!(f["survey_id"], 5356056);
        assert_eq!(f["action"], "answer.create");
    }

    #[test]
    fn deletions_and_test_requests_are_not_leads() {
        assert!(TencentWj::skip(&json!({"action": "answer.delete", "payload": {"answer": []}})).is_some());
        assert!(TencentWj::skip(&json!({"id": "t", "object": "Test"})).is_some());
        assert!(TencentWj::skip(&json!({"action": "answer.update", "payload": {"answer": []}})).is_none());
    }
}
