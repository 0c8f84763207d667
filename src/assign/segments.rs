//! 客户细分 segments and 线索评分 fit scores, computed on each clean lead before assignment (so
//! that rules can use them: `segments.id`, `score.total`). A segment is a named set of
//! conditions, in the assignment rules' language; a lead carries every segment whose conditions
//! all hold. A score is the HubSpot model: point rules in groups, each group capped, the total
//! capped; every point says which rule gave it.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::engine::check;
use super::model::{Condition, FieldError, check_conditions, check_id};

/// `POST /v1/assignment/segments`: `{"id": "vip", "name": "高价值", "conditions": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// All must hold (AND). Empty: every lead.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// `POST /v1/assignment/scores`: a group of point rules with a cap, e.g. fit (company size,
/// industry, region) or intent (budget, timeline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreGroup {
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The group gives at most this many points (none: no cap).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub cap: Option<i64>,
    pub rules: Vec<PointRule>,
}

/// Points for a lead whose conditions all hold (negative points take some away).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PointRule {
    /// Names the rule in the score's reasons.
    pub name: String,
    pub points: i64,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

fn yes() -> bool {
    true
}

impl Segment {
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_id(&self.id, &mut errors);
        check_conditions(&self.conditions, "conditions", &mut errors);
        errors
    }
}

impl ScoreGroup {
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_id(&self.id, &mut errors);
        if self.cap.is_some_and(|c| c < 0) {
            errors.push(FieldError::new("cap", "must not be negative"));
        }
        if self.rules.is_empty() {
            errors.push(FieldError::new("rules", "a group needs at least one rule"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            if r.name.trim().is_empty() {
                errors.push(FieldError::new(
                    format!("rules[{i}].name"),
                    "name the rule: the score's reasons say it",
                ));
            } else if !names.insert(r.name.as_str()) {
                errors.push(FieldError::new(
                    format!("rules[{i}].name"),
                    "another rule of the group has it",
                ));
            }
            check_conditions(
                &r.conditions,
                &format!("rules[{i}].conditions"),
                &mut errors,
            );
        }
        errors
    }
}

/// The problems of a segment (`kind` Segments) or a score group (Scores) in the API's shape, as
/// `[[assignment.segments]]` and `[[assignment.scores]]` give them.
pub fn check_definition(kind: super::model::Kind, item: &Value) -> Vec<FieldError> {
    use super::model::{Kind, parse};
    let errors = match kind {
        Kind::Segments => parse::<Segment>(item).map(|s| s.validate()),
        _ => parse::<ScoreGroup>(item).map(|g| g.validate()),
    };
    errors.unwrap_or_else(|e| vec![e])
}

/// Writes the settings' segments and score groups to `store` where they differ from what it
/// holds (as changes by `settings`, in the audit log); how many were written.
pub fn apply_settings(
    store: &dyn super::AssignmentStore,
    settings: &crate::config::AssignmentSettings,
) -> Result<usize, super::AssignError> {
    use super::model::Kind;
    let mut written = 0;
    for (kind, items) in [
        (Kind::Segments, &settings.segments),
        (Kind::Scores, &settings.scores),
    ] {
        for item in items {
            let normalized = match kind {
                Kind::Segments => {
                    serde_json::from_value::<Segment>(item.clone()).and_then(serde_json::to_value)
                }
                _ => serde_json::from_value::<ScoreGroup>(item.clone())
                    .and_then(serde_json::to_value),
            }
            .map_err(|e| super::AssignError::Storage(e.to_string()))?;
            let id = normalized["id"].as_str().unwrap_or_default().to_owned();
            if store.get(kind, &id)?.is_some_and(|v| v.body == normalized) {
                continue;
            }
            store.put_by(kind, &id, normalized, super::Expect::Any, Some("settings"))?;
            written += 1;
        }
    }
    Ok(written)
}

/// A segment a lead is in, on its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SegmentRef {
    pub id: String,
    pub name: String,
}

/// A lead's fit score, on its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Score {
    /// The sum of the groups' points, within `[0, max_total]`.
    pub total: i64,
    /// Each group's points, after its cap.
    pub groups: BTreeMap<String, i64>,
    /// Every rule that gave (or took) points, and every cap applied, in order.
    pub reasons: Vec<ScoreReason>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ScoreReason {
    pub group: String,
    /// The rule's name; absent on a cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub points: i64,
    /// In words: `fit: 大型企业 +30`, `fit: capped at 50 (was 60)`.
    pub reason: String,
}

/// Why a segment or a point rule did not apply, for previews.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Miss {
    /// `segment:vip` or `score:fit/大型企业`.
    pub what: String,
    pub why_not: Vec<String>,
}

/// The segments and score groups in force.
#[derive(Debug, Clone, Default)]
pub struct Classifier {
    pub segments: Vec<Segment>,
    pub groups: Vec<ScoreGroup>,
    pub max_total: i64,
}

/// What [`Classifier::classify`] found: `None` for what is not defined at all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Classified {
    pub segments: Option<Vec<SegmentRef>>,
    pub score: Option<Score>,
    pub misses: Vec<Miss>,
}

fn failed(conditions: &[Condition], lead: &Value) -> Vec<String> {
    conditions.iter().filter_map(|c| check(c, lead)).collect()
}

impl Classifier {
    pub fn is_empty(&self) -> bool {
        !self.segments.iter().any(|s| s.enabled) && !self.groups.iter().any(|g| g.enabled)
    }

    /// The segments `lead` (a record as JSON) is in, and its score. Deterministic: the same
    /// lead and definitions give the same answer.
    pub fn classify(&self, lead: &Value) -> Classified {
        let mut out = Classified::default();
        let segments: Vec<&Segment> = self.segments.iter().filter(|s| s.enabled).collect();
        if !segments.is_empty() {
            let mut found = Vec::new();
            for s in segments {
                let why_not = failed(&s.conditions, lead);
                if why_not.is_empty() {
                    found.push(SegmentRef {
                        id: s.id.clone(),
                        name: s.name.clone(),
                    });
                } else {
                    out.misses.push(Miss {
                        what: format!("segment:{}", s.id),
                        why_not,
                    });
                }
            }
            out.segments = Some(found);
        }
        let groups: Vec<&ScoreGroup> = self.groups.iter().filter(|g| g.enabled).collect();
        // Point rules may read the segments (`segments.id`).
        let with_segments;
        let lead = match &out.segments {
            Some(s) if !groups.is_empty() => {
                let mut l = lead.clone();
                l["segments"] = serde_json::to_value(s).unwrap_or_default();
                with_segments = l;
                &with_segments
            }
            _ => lead,
        };
        if !groups.is_empty() {
            let mut score = Score {
                total: 0,
                groups: BTreeMap::new(),
                reasons: Vec::new(),
            };
            for g in groups {
                let mut points = 0i64;
                for r in &g.rules {
                    let why_not = failed(&r.conditions, lead);
                    if why_not.is_empty() {
                        points = points.saturating_add(r.points);
                        score.reasons.push(ScoreReason {
                            group: g.id.clone(),
                            rule: Some(r.name.clone()),
                            points: r.points,
                            reason: format!("{}: {} {:+}", g.id, r.name, r.points),
                        });
                    } else {
                        out.misses.push(Miss {
                            what: format!("score:{}/{}", g.id, r.name),
                            why_not,
                        });
                    }
                }
                if let Some(cap) = g.cap
                    && points > cap
                {
                    score.reasons.push(ScoreReason {
                        group: g.id.clone(),
                        rule: None,
                        points: cap - points,
                        reason: format!("{}: capped at {cap} (was {points})", g.id),
                    });
                    points = cap;
                }
                score.groups.insert(g.id.clone(), points);
                score.total = score.total.saturating_add(points);
            }
            let bounded = score.total.clamp(0, self.max_total);
            if bounded != score.total {
                score.reasons.push(ScoreReason {
                    group: String::new(),
                    rule: None,
                    points: bounded - score.total,
                    reason: format!(
                        "total kept within 0-{} (was {})",
                        self.max_total, score.total
                    ),
                });
                score.total = bounded;
            }
            out.score = Some(score);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn classifier() -> Classifier {
        let segment = |v: Value| serde_json::from_value::<Segment>(v).unwrap();
        let group = |v: Value| serde_json::from_value::<ScoreGroup>(v).unwrap();
        Classifier {
            segments: vec![
                segment(json!({"id": "south", "name": "华南", "conditions": [
                    {"op": "in", "field": "contact.province", "values": ["广东省", "广西壮族自治区"]}]})),
                segment(json!({"id": "big", "name": "大客户", "conditions": [
                    {"op": "range", "field": "custom.员工人数", "min": 500}]})),
                segment(json!({"id": "off", "enabled": false})),
            ],
            groups: vec![
                group(json!({"id": "fit", "cap": 50, "rules": [
                    {"name": "大型企业", "points": 30, "conditions": [{"op": "range", "field": "custom.员工人数", "min": 500}]},
                    {"name": "制造业", "points": 30, "conditions": [{"op": "eq", "field": "contact.industry", "value": "制造业"}]},
                    {"name": "个人邮箱", "points": -10, "conditions": [{"op": "regex", "field": "contact.email", "pattern": "@(qq|163)\\.com$"}]}]})),
                group(json!({"id": "intent", "rules": [
                    {"name": "预算明确", "points": 40, "conditions": [{"op": "exists", "field": "custom.预算"}]},
                    {"name": "近期采购", "points": 30, "conditions": [{"op": "in", "field": "custom.采购时间", "values": ["一个月内", "三个月内"]}]}]})),
            ],
            max_total: 100,
        }
    }

    #[test]
    fn segments_and_points_are_explained_and_capped() {
        let lead = json!({"contact": {"province": "广东省", "industry": "制造业", "email": "a@qq.com"},
                          "custom": {"员工人数": "1,200", "预算": "50万", "采购时间": "一个月内"}});
        let c = classifier().classify(&lead);
        assert_eq!(
            c.segments.unwrap(),
            [
                SegmentRef {
                    id: "south".into(),
                    name: "华南".into()
                },
                SegmentRef {
                    id: "big".into(),
                    name: "大客户".into()
                }
            ]
        );
        let score = c.score.unwrap();
        // fit: 30 + 30 - 10 = 50 (at the cap); intent: 40 + 30 = 70; total 120 -> 100.
        assert_eq!(
            score.groups,
            BTreeMap::from([("fit".into(), 50), ("intent".into(), 70)])
        );
        assert_eq!(score.total, 100);
        let said: Vec<&str> = score.reasons.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(
            said,
            [
                "fit: 大型企业 +30",
                "fit: 制造业 +30",
                "fit: 个人邮箱 -10",
                "intent: 预算明确 +40",
                "intent: 近期采购 +30",
                "total kept within 0-100 (was 120)"
            ]
        );
        assert_eq!(
            score.reasons.iter().map(|r| r.points).sum::<i64>(),
            100,
            "the reasons add up"
        );

        let small = json!({"contact": {"province": "北京市", "email": "a@qq.com"}, "custom": {}});
        let c = classifier().classify(&small);
        assert_eq!(c.segments.unwrap(), []);
        let score = c.score.unwrap();
        assert_eq!((score.total, score.groups["fit"]), (0, -10));
        assert!(
            c.misses
                .iter()
                .any(|m| m.what == "segment:south" && m.why_not[0].contains("北京市"))
        );
        // Nothing defined: nothing on the record.
        let none = Classifier {
            max_total: 100,
            ..Classifier::default()
        }
        .classify(&lead);
        assert_eq!((none.segments, none.score), (None, None));
    }

    #[test]
    fn bad_definitions_name_the_field() {
        let g: ScoreGroup = serde_json::from_value(json!({"id": "fit", "cap": -1, "rules": [
            {"name": "", "points": 1, "conditions": [{"op": "regex", "field": "contact.city", "pattern": "("}]}]})).unwrap();
        let fields: Vec<String> = g.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            ["cap", "rules[0].name", "rules[0].conditions[0].pattern"]
        );
        let s: Segment = serde_json::from_value(
            json!({"id": "a b", "conditions": [{"op": "in", "field": "x", "values": []}]}),
        )
        .unwrap();
        let fields: Vec<String> = s.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["id", "conditions[0].values"]);
    }
}
