//! 问卷星 (wjx.cn) 答卷API推送. 问卷星 posts each answer sheet as flat JSON; choice questions
//! hold option numbers, not their text:
//!
//! ```json
//! {"activity": "5657754", "name": "问卷名称", "timetaken": "528", "submittime": "2016-08-23 10:01:59",
//!  "q1": "1", "q2": "测试", "q3": "1,2", "joinid": "101812480275", "totalvalue": "15", "sign": "…"}
//! ```
//!
//! Questions are read by their keys (`q1`, `q2`, ...): map them, and list each choice question's
//! options in order so numbers become text: `choices = { q3 = ["CRM", "ERP", "OA"] }` makes
//! `"1,2"` `CRM, ERP`. The survey's `name` is kept as `survey_name` (it is not the person's).
//!
//! The push's `sign` field (SHA-1 of activity, 作答序号 and the push key, as 问卷星 documents it)
//! cannot be checked from the push alone: the 作答序号 is not in the documented body. Set the
//! connector's `token` and add `?token=...` to the push URL. Keyed by `joinid`.

use serde_json::Value;

use crate::sources::forms::{self, Answers, FormTool};

/// `type = "wjx"`.
pub type WjxConnector = forms::FormConnector<Wjx>;

/// 问卷星's deliveries.
#[derive(Debug, Clone, Copy)]
pub struct Wjx;

impl FormTool for Wjx {
    const TITLE: &'static str = "问卷星";

    fn check(event: &Value) -> Result<(), (&'static str, &'static str)> {
        if event.get("activity").is_some() {
            Ok(())
        } else {
            Err(("activity", "a 问卷星 push names its survey in `activity`"))
        }
    }

    /// `joinid` (提交答卷编号), else `{activity}:{index}`.
    fn response_id(event: &Value) -> Option<String> {
        if let Some(id) = event.get("joinid").and_then(crate::sources::id_text) {
            return Some(id);
        }
        let activity = crate::sources::id_text(event.get("activity")?)?;
        let index = crate::sources::id_text(event.get("index")?)?;
        Some(format!("{activity}:{index}"))
    }

    fn fields(event: &Value) -> Value {
        let mut out = Answers::new([]);
        for (key, value) in event.as_object().into_iter().flatten() {
            let Some(value) = forms::flat_value(value) else {
                continue;
            };
            let key = if key == "name" { "survey_name" } else { key.as_str() };
            out.answer([Some(key)], &value);
        }
        out.into_value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_push_reads_its_question_keys() {
        let event = crate::sources::fixture_json("wjx", "answer.json");
        assert_eq!(Wjx::response_id(&event).as_deref(), Some("101812480275"));
        let f = Wjx::fields(&event);
        assert_eq!(f["q3"], "1,2");
        assert_eq!(f["survey_name"], "问卷名称");
        assert!(f.get("name").is_none(), "the survey's name is not the person's: {f}");
    }
}
