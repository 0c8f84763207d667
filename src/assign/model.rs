//! Rules, owners and teams as marketing ops write them (JSON through the API), and their
//! validation: every problem names the path of the bad field.

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One problem with a submitted resource: where (`conditions[1].pattern`) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An assignment rule: when every condition holds, the action decides the owner. Rules are tried
/// by ascending `priority` (then `id`); a rule without conditions matches every lead, so the last
/// one is the fallback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Letters, digits, `-` and `_`; part of the URL.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// Lower runs first.
    pub priority: i64,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// All must hold (AND). Empty: every lead.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    pub action: Action,
    /// 回收: the owner must follow the lead up in time, or it is taken back and reassigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_up: Option<FollowUp>,
}

fn yes() -> bool {
    true
}

/// A follow-up SLA (回收规则): a lead whose CRM reports no status (`contacted` or any later one)
/// within `within` of its assignment is taken back from its owner and reassigned, and the
/// reassignment is published on the assignments topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FollowUp {
    /// How long the owner has: `"2h"`, `"30m"`, `"90s"`, `"1d"`. With `working_hours`, only
    /// working time counts ("contacted within 2 working hours").
    pub within: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_hours: Option<WorkingTime>,
    /// Reassign to a member of this team (default: the rule's team; a rule that names one owner
    /// returns the lead to the pool, 公海, unless a team is given here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// How the team's member is chosen (default: the rule's strategy, or round-robin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Never back to an owner who already had it and let it lapse (default true).
    #[serde(default = "yes")]
    pub not_same_owner: bool,
    /// After this many reassignments a lead that lapses again goes to the pool (default 2).
    #[serde(default = "two")]
    pub max_reassignments: u32,
}

fn two() -> u32 {
    2
}

/// The hours that count towards a follow-up SLA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkingTime {
    #[serde(default = "work_days")]
    pub weekdays: Vec<String>,
    /// `"09:00"`; before `end` (a working day does not span midnight).
    pub start: String,
    pub end: String,
    #[serde(default = "shanghai")]
    pub timezone: String,
}

fn work_days() -> Vec<String> {
    ["mon", "tue", "wed", "thu", "fri"]
        .map(String::from)
        .to_vec()
}

impl FollowUp {
    /// `within` as a duration (validated before it is stored).
    pub fn duration(&self) -> Option<std::time::Duration> {
        humantime_serde::re::humantime::parse_duration(self.within.trim())
            .ok()
            .filter(|d| !d.is_zero())
    }

    /// When a lead assigned at `from` must have been followed up.
    pub fn due(&self, from: jiff::Timestamp) -> jiff::Timestamp {
        let Some(d) = self.duration() else {
            return from;
        };
        let plain = || {
            jiff::SignedDuration::try_from(d)
                .ok()
                .and_then(|d| from.checked_add(d).ok())
                .unwrap_or(jiff::Timestamp::MAX)
        };
        match &self.working_hours {
            None => plain(),
            Some(w) => w.after(from, d).unwrap_or_else(plain),
        }
    }

    fn validate(&self, known: &Known<'_>, errors: &mut Vec<FieldError>) {
        if self.duration().is_none() {
            errors.push(FieldError::new(
                "follow_up.within",
                "a duration above zero, e.g. \"2h\", \"30m\" or \"90s\"",
            ));
        }
        if let Some(team) = &self.team
            && !known.teams.contains(team)
        {
            errors.push(FieldError::new(
                "follow_up.team",
                format!("no team `{team}`"),
            ));
        }
        if let Some(w) = &self.working_hours {
            for (j, d) in w.weekdays.iter().enumerate() {
                if weekday(d).is_none() {
                    errors.push(FieldError::new(
                        format!("follow_up.working_hours.weekdays[{j}]"),
                        "one of mon, tue, wed, thu, fri, sat, sun",
                    ));
                }
            }
            if w.weekdays.is_empty() {
                errors.push(FieldError::new(
                    "follow_up.working_hours.weekdays",
                    "must list at least one day",
                ));
            }
            match (minutes(&w.start), minutes(&w.end)) {
                (None, _) => errors.push(FieldError::new(
                    "follow_up.working_hours.start",
                    "a time like \"09:00\"",
                )),
                (_, None) => errors.push(FieldError::new(
                    "follow_up.working_hours.end",
                    "a time like \"18:00\"",
                )),
                (Some(a), Some(b)) if b <= a => errors.push(FieldError::new(
                    "follow_up.working_hours.end",
                    "must be after `start` (a working day does not span midnight)",
                )),
                _ => {}
            }
            if jiff::tz::TimeZone::get(&w.timezone).is_err() {
                errors.push(FieldError::new(
                    "follow_up.working_hours.timezone",
                    "not an IANA time zone, e.g. \"Asia/Shanghai\"",
                ));
            }
        }
    }
}

impl WorkingTime {
    /// `from` plus `d` of working time; `None` when the hours cannot be read.
    fn after(&self, from: jiff::Timestamp, d: std::time::Duration) -> Option<jiff::Timestamp> {
        let tz = jiff::tz::TimeZone::get(&self.timezone).ok()?;
        let (start, end) = (minutes(&self.start)?, minutes(&self.end)?);
        let days: Vec<jiff::civil::Weekday> =
            self.weekdays.iter().filter_map(|d| weekday(d)).collect();
        if days.is_empty() || end <= start {
            return None;
        }
        let mut left = jiff::SignedDuration::try_from(d).ok()?;
        let cursor = from;
        let mut date = from.to_zoned_datetime(tz.clone()).date();
        // At most a few years of days: a week holds at least one working day.
        for _ in 0..(366 * 3) {
            if days.contains(&date.weekday()) {
                let at = |m: u32| {
                    date.at((m / 60) as i8, (m % 60) as i8, 0, 0)
                        .to_zoned_datetime(tz.clone())
                        .ok()
                        .map(|z| z.timestamp())
                };
                let (open, close) = (at(start)?, at(end)?);
                let begin = cursor.max(open);
                if begin < close {
                    let here = close.duration_since(begin);
                    if left <= here {
                        return begin.checked_add(left).ok();
                    }
                    left -= here;
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

/// A test on the lead. `field` is a dotted path into the published record: `contact.province`,
/// `contact.city`, `source.connector`, `custom.预算`, `identity.status`...
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// Equal (text compares exactly; numbers as numbers).
    Eq { field: String, value: Value },
    /// Equal to one of `values`.
    In { field: String, values: Vec<Value> },
    /// The text starts with `value`.
    Prefix { field: String, value: String },
    /// The text contains `value`.
    Contains { field: String, value: String },
    /// The text matches the regular expression `pattern` (Rust `regex` syntax, unanchored).
    Regex { field: String, pattern: String },
    /// A number (or numeric text) within `[min, max]`; either bound may be left out.
    Range {
        field: String,
        #[serde(default)]
        min: Option<f64>,
        #[serde(default)]
        max: Option<f64>,
    },
    /// The field is present and not null or empty.
    Exists { field: String },
    /// The lead arrived on one of `weekdays` (`mon`..`sun`) between `start` and `end`
    /// (`"09:00"`, `"18:00"`; `end` before `start` spans midnight) in `timezone` (IANA, default
    /// `Asia/Shanghai`).
    WorkingHours {
        #[serde(default = "all_days")]
        weekdays: Vec<String>,
        start: String,
        end: String,
        #[serde(default = "shanghai")]
        timezone: String,
    },
}

fn all_days() -> Vec<String> {
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .map(String::from)
        .to_vec()
}

fn shanghai() -> String {
    "Asia/Shanghai".into()
}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Assign to one owner (when available; otherwise the next rule is tried).
    Owner { owner: String },
    /// Assign to a member of a team, chosen by `strategy`.
    Team { team: String, strategy: Strategy },
}

/// How a team's member is chosen. Every strategy skips owners who are not `active` and owners at
/// their `capacity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// In turn.
    RoundRobin,
    /// In proportion to the members' `weight` (smooth weighted round-robin: exact over each cycle).
    Weighted,
    /// The member with the fewest open leads relative to their capacity.
    Capacity,
    /// The owner this person (`lead_id`) already has, if they are in the team and available;
    /// otherwise round-robin.
    Sticky,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::Weighted => "weighted",
            Self::Capacity => "capacity",
            Self::Sticky => "sticky",
        }
    }
}

/// A salesperson.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: OwnerStatus,
    /// At most this many open leads; none: no limit.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub capacity: Option<u64>,
    /// Leads assigned and not yet closed. leadgate adds one per assignment and takes one off
    /// when the CRM reports the lead closed; a CRM sync may set it.
    #[serde(default)]
    pub open_leads: u64,
    /// 领取上限: at most this many leads taken back from others (回收) reassigned to this owner
    /// per day (in the rule's working-hours zone, else Asia/Shanghai); none: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub claim_limit: Option<u64>,
}

/// Only `active` owners get leads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OwnerStatus {
    #[default]
    Active,
    OffDuty,
    OnLeave,
}

/// A group of owners a rule can assign to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Team {
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[schemars(length(min = 1))]
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub owner: String,
    /// For the `weighted` strategy (default 1).
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// The kinds of resource the API manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rules,
    Owners,
    Teams,
    /// 客户细分: see [`super::segments`].
    Segments,
    /// 线索评分 groups of point rules.
    Scores,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "rules" => Some(Self::Rules),
            "owners" => Some(Self::Owners),
            "teams" => Some(Self::Teams),
            "segments" => Some(Self::Segments),
            "scores" => Some(Self::Scores),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rules => "rules",
            Self::Owners => "owners",
            Self::Teams => "teams",
            Self::Segments => "segments",
            Self::Scores => "scores",
        }
    }

    /// The singular, for messages.
    pub fn one(self) -> &'static str {
        match self {
            Self::Rules => "rule",
            Self::Owners => "owner",
            Self::Teams => "team",
            Self::Segments => "segment",
            Self::Scores => "score group",
        }
    }
}

/// Parses a submitted resource: JSON errors name the path (`action.strategy`).
pub fn parse<T: serde::de::DeserializeOwned>(body: &Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(body).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        FieldError::new(field, e.inner().to_string())
    })
}

pub fn check_id(id: &str, errors: &mut Vec<FieldError>) {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        errors.push(FieldError::new(
            "id",
            "1-64 ASCII letters, digits, `-` or `_` (it is part of the URL)",
        ));
    }
}

/// Checks conditions (of a rule, a segment, a point rule) at `prefix` (`conditions`,
/// `rules[0].conditions`): each problem names its path.
pub fn check_conditions(conditions: &[Condition], prefix: &str, errors: &mut Vec<FieldError>) {
    for (i, c) in conditions.iter().enumerate() {
        let at = |f: &str| format!("{prefix}[{i}].{f}");
        let field = match c {
            Condition::Eq { field, .. }
            | Condition::In { field, .. }
            | Condition::Prefix { field, .. }
            | Condition::Contains { field, .. }
            | Condition::Regex { field, .. }
            | Condition::Range { field, .. }
            | Condition::Exists { field } => Some(field),
            Condition::WorkingHours { .. } => None,
        };
        if field.is_some_and(|f| f.trim().is_empty() || f.split('.').any(str::is_empty)) {
            errors.push(FieldError::new(
                at("field"),
                "a dotted path into the lead record, e.g. `contact.province` or `custom.budget`",
            ));
        }
        match c {
            Condition::In { values, .. } if values.is_empty() => {
                errors.push(FieldError::new(
                    at("values"),
                    "must list at least one value",
                ));
            }
            Condition::Regex { pattern, .. } => {
                if let Err(e) = regex::Regex::new(pattern) {
                    errors.push(FieldError::new(at("pattern"), e.to_string()));
                }
            }
            Condition::Range { min, max, .. } => match (min, max) {
                (None, None) => {
                    errors.push(FieldError::new(at("min"), "give `min`, `max` or both"));
                }
                (Some(a), Some(b)) if a > b => {
                    errors.push(FieldError::new(at("max"), "must not be below `min`"));
                }
                _ => {}
            },
            Condition::WorkingHours {
                weekdays,
                start,
                end,
                timezone,
            } => {
                for (j, d) in weekdays.iter().enumerate() {
                    if weekday(d).is_none() {
                        errors.push(FieldError::new(
                            format!("{prefix}[{i}].weekdays[{j}]"),
                            "one of mon, tue, wed, thu, fri, sat, sun",
                        ));
                    }
                }
                for (name, t) in [("start", start), ("end", end)] {
                    if minutes(t).is_none() {
                        errors.push(FieldError::new(at(name), "a time like \"09:00\""));
                    }
                }
                if jiff::tz::TimeZone::get(timezone).is_err() {
                    errors.push(FieldError::new(
                        at("timezone"),
                        "not an IANA time zone, e.g. \"Asia/Shanghai\"",
                    ));
                }
            }
            _ => {}
        }
    }
}

/// What a rule refers to must exist: the API passes the ids it knows.
pub struct Known<'a> {
    pub owners: &'a BTreeSet<String>,
    pub teams: &'a BTreeSet<String>,
}

impl Rule {
    pub fn validate(&self, known: &Known<'_>) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_id(&self.id, &mut errors);
        check_conditions(&self.conditions, "conditions", &mut errors);
        match &self.action {
            Action::Owner { owner } if !known.owners.contains(owner) => {
                errors.push(FieldError::new(
                    "action.owner",
                    format!("no owner `{owner}`"),
                ));
            }
            Action::Team { team, .. } if !known.teams.contains(team) => {
                errors.push(FieldError::new("action.team", format!("no team `{team}`")));
            }
            _ => {}
        }
        if let Some(f) = &self.follow_up {
            f.validate(known, &mut errors);
        }
        errors
    }
}

impl Owner {
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_id(&self.id, &mut errors);
        if self.capacity == Some(0) {
            errors.push(FieldError::new(
                "capacity",
                "must be at least 1 (set status to off_duty to stop leads)",
            ));
        }
        if self.claim_limit == Some(0) {
            errors.push(FieldError::new(
                "claim_limit",
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        errors
    }
}

impl Team {
    pub fn validate(&self, owners: &BTreeSet<String>) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_id(&self.id, &mut errors);
        if self.members.is_empty() {
            errors.push(FieldError::new(
                "members",
                "a team needs at least one member",
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, m) in self.members.iter().enumerate() {
            if !owners.contains(&m.owner) {
                errors.push(FieldError::new(
                    format!("members[{i}].owner"),
                    format!("no owner `{}`", m.owner),
                ));
            } else if !seen.insert(&m.owner) {
                errors.push(FieldError::new(
                    format!("members[{i}].owner"),
                    "listed twice",
                ));
            }
            if m.weight == 0 {
                errors.push(FieldError::new(
                    format!("members[{i}].weight"),
                    "must be at least 1",
                ));
            }
        }
        errors
    }
}
/// `"09:30"` → 570.
pub fn minutes(t: &str) -> Option<u32> {
    let (h, m) = t.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && t.len() == 5).then_some(h * 60 + m)
}

/// `"mon"` → Monday.
pub fn weekday(d: &str) -> Option<jiff::civil::Weekday> {
    use jiff::civil::Weekday::*;
    Some(match d {
        "mon" => Monday,
        "tue" => Tuesday,
        "wed" => Wednesday,
        "thu" => Thursday,
        "fri" => Friday,
        "sat" => Saturday,
        "sun" => Sunday,
        _ => return None,
    })
}
