//! Deciding an owner: rules in order, conditions explained, strategies over the team's state.
//! Pure: the store loads owners, teams and counters, runs this, and writes back what changed.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::model::{
    Action, Condition, FollowUp, Owner, OwnerStatus, Rule, Strategy, Team, minutes, weekday,
};

/// A team's rotation state: the round-robin cursor and the smooth-weighted counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TeamState {
    pub next: u64,
    #[serde(default)]
    pub current: BTreeMap<String, i64>,
}

/// Everything a decision reads and changes.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// Enabled and disabled rules, in evaluation order.
    pub rules: Vec<Rule>,
    pub owners: BTreeMap<String, Owner>,
    pub teams: BTreeMap<String, Team>,
    pub states: BTreeMap<String, TeamState>,
    /// Owners an action must not pick, and why (a reassignment: who let the lead lapse, who is
    /// at their claim limit).
    pub excluded: BTreeMap<String, String>,
}

/// The outcome for one lead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub rule_id: String,
    pub owner: String,
    pub team: Option<String>,
    pub strategy: Option<Strategy>,
    pub reason: String,
}

/// Why a rule did or did not decide.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RuleTrace {
    pub rule_id: String,
    pub matched: bool,
    /// For a rule that did not decide: each failed condition, or why its action found no owner.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub why_not: Vec<String>,
}

/// The value at a dotted path of the record (`contact.province`, `custom.预算`). Through a list
/// of objects a name reads each one's (`segments.id`: the ids of the lead's segments, as a list).
fn lookup<'a>(lead: &'a Value, path: &str) -> Option<Cow<'a, Value>> {
    /// `path` is what is left of the dotted path; `None` once it is used up.
    fn walk<'a>(v: &'a Value, path: Option<&str>) -> Option<Cow<'a, Value>> {
        let Some(path) = path else {
            return Some(Cow::Borrowed(v));
        };
        let (seg, rest) = match path.split_once('.') {
            Some((seg, rest)) => (seg, Some(rest)),
            None => (path, None),
        };
        match v {
            Value::Array(items) if seg.parse::<usize>().is_err() => {
                let found: Vec<Value> = items
                    .iter()
                    .filter_map(|i| walk(i, Some(path)).map(Cow::into_owned))
                    .collect();
                Some(Cow::Owned(Value::Array(found)))
            }
            _ => walk(v.get(seg)?, rest),
        }
    }
    walk(lead, Some(path)).filter(|v| {
        !v.is_null()
            && v.as_str().is_none_or(|s| !s.trim().is_empty())
            && v.as_array().is_none_or(|a| !a.is_empty())
    })
}

/// A list matches when one of its items does (a checkbox answer, `segments.id`).
fn any_same(got: &Value, want: &Value) -> bool {
    match got {
        Value::Array(items) if !want.is_array() => items.iter().any(|i| same(i, want)),
        _ => same(got, want),
    }
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().replace(',', "").parse().ok(),
        _ => None,
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (as_number(a), as_number(b)) {
        (Some(x), Some(y)) if !a.is_string() || !b.is_string() => x == y,
        _ => match (a.as_str(), b.as_str()) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
    }
}

fn show(v: Option<&Cow<'_, Value>>) -> String {
    match v {
        None => "absent".into(),
        Some(v) => v.to_string(),
    }
}

/// `None` when the condition holds, or why not.
pub(super) fn check(c: &Condition, lead: &Value) -> Option<String> {
    let text = |v: Option<&Cow<'_, Value>>| -> Option<String> {
        v.map(|v| match &**v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    match c {
        Condition::Eq { field, value } => {
            let got = lookup(lead, field);
            (!got.as_ref().is_some_and(|g| any_same(g, value)))
                .then(|| format!("{field} is {}, not {value}", show(got.as_ref())))
        }
        Condition::In { field, values } => {
            let got = lookup(lead, field);
            (!got
                .as_ref()
                .is_some_and(|g| values.iter().any(|v| any_same(g, v))))
            .then(|| {
                format!(
                    "{field} is {}, not one of {}",
                    show(got.as_ref()),
                    Value::Array(values.clone())
                )
            })
        }
        Condition::Prefix { field, value } => {
            let got = lookup(lead, field);
            (!text(got.as_ref()).is_some_and(|t| t.starts_with(value.as_str()))).then(|| {
                format!(
                    "{field} is {}, which does not start with {value:?}",
                    show(got.as_ref())
                )
            })
        }
        Condition::Contains { field, value } => {
            let got = lookup(lead, field);
            (!text(got.as_ref()).is_some_and(|t| t.contains(value.as_str()))).then(|| {
                format!(
                    "{field} is {}, which does not contain {value:?}",
                    show(got.as_ref())
                )
            })
        }
        Condition::Regex { field, pattern } => {
            let got = lookup(lead, field);
            let re = regex::Regex::new(pattern).ok();
            (!text(got.as_ref()).is_some_and(|t| re.as_ref().is_some_and(|r| r.is_match(&t)))).then(
                || {
                    format!(
                        "{field} is {}, which does not match /{pattern}/",
                        show(got.as_ref())
                    )
                },
            )
        }
        Condition::Range { field, min, max } => {
            let got = lookup(lead, field);
            let ok = got
                .as_deref()
                .and_then(as_number)
                .is_some_and(|n| min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m));
            (!ok).then(|| {
                let bound = |b: &Option<f64>| b.map_or("…".to_owned(), |b| b.to_string());
                format!(
                    "{field} is {}, not a number in [{}, {}]",
                    show(got.as_ref()),
                    bound(min),
                    bound(max)
                )
            })
        }
        Condition::Exists { field } => lookup(lead, field)
            .is_none()
            .then(|| format!("{field} is absent or empty")),
        Condition::WorkingHours {
            weekdays,
            start,
            end,
            timezone,
        } => {
            let at: Option<jiff::Timestamp> = lead
                .get("received_at")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok());
            let tz = jiff::tz::TimeZone::get(timezone).ok();
            let (Some(at), Some(tz), Some(from), Some(to)) = (at, tz, minutes(start), minutes(end))
            else {
                return Some("the lead's received_at or the rule's hours cannot be read".into());
            };
            let local = at.to_zoned_datetime(tz);
            let now = u32::from(local.hour().unsigned_abs()) * 60
                + u32::from(local.minute().unsigned_abs());
            let in_hours = if from <= to {
                (from..to).contains(&now)
            } else {
                now >= from || now < to
            };
            let day_ok = weekdays
                .iter()
                .filter_map(|d| weekday(d))
                .any(|d| d == local.weekday());
            (!(in_hours && day_ok)).then(|| {
                format!(
                    "received {} ({timezone}), outside {start}-{end} on {}",
                    local.strftime("%a %H:%M"),
                    weekdays.join(",")
                )
            })
        }
    }
}

fn available(o: &Owner) -> bool {
    o.status == OwnerStatus::Active && o.capacity.is_none_or(|c| o.open_leads < c)
}

fn why_unavailable(o: &Owner) -> String {
    match o.status {
        OwnerStatus::OffDuty => format!("owner {} is off duty", o.id),
        OwnerStatus::OnLeave => format!("owner {} is on leave", o.id),
        OwnerStatus::Active => format!(
            "owner {} is at capacity ({} open leads)",
            o.id, o.open_leads
        ),
    }
}

impl World {
    /// Decides the owner of `lead` (the record as JSON; `sticky` is the owner this person already
    /// has), updating counters and load. Also returns the trace of every rule tried.
    pub fn decide(
        &mut self,
        lead: &Value,
        sticky: Option<&str>,
    ) -> (Option<Decision>, Vec<RuleTrace>) {
        let mut trace = Vec::new();
        for i in 0..self.rules.len() {
            let rule = &self.rules[i];
            if !rule.enabled {
                continue;
            }
            let failed: Vec<String> = rule
                .conditions
                .iter()
                .filter_map(|c| check(c, lead))
                .collect();
            let rule_id = rule.id.clone();
            if !failed.is_empty() {
                trace.push(RuleTrace {
                    rule_id,
                    matched: false,
                    why_not: failed,
                });
                continue;
            }
            let action = rule.action.clone();
            match self.act(&action, sticky) {
                Ok((owner, how)) => {
                    if let Some(o) = self.owners.get_mut(&owner) {
                        o.open_leads += 1;
                    }
                    trace.push(RuleTrace {
                        rule_id: rule_id.clone(),
                        matched: true,
                        why_not: Vec::new(),
                    });
                    let (team, strategy) = match &action {
                        Action::Team { team, strategy } => (Some(team.clone()), Some(*strategy)),
                        Action::Owner { .. } => (None, None),
                    };
                    return (
                        Some(Decision {
                            reason: format!("rule {rule_id}: {how}"),
                            rule_id,
                            owner,
                            team,
                            strategy,
                        }),
                        trace,
                    );
                }
                Err(why) => trace.push(RuleTrace {
                    rule_id,
                    matched: false,
                    why_not: vec![why],
                }),
            }
        }
        (None, trace)
    }

    /// The new owner of a lead taken back under `rule`'s follow-up SLA `f` (see
    /// [`FollowUp::team`]), skipping [`World::excluded`]; or why there is none (to the pool).
    pub fn reassign(&mut self, rule: &Rule, f: &FollowUp) -> Result<Decision, String> {
        let action = match (&f.team, &rule.action) {
            (Some(team), a) => Action::Team {
                team: team.clone(),
                strategy: f.strategy.unwrap_or(match a {
                    Action::Team { strategy, .. } => *strategy,
                    Action::Owner { .. } => Strategy::RoundRobin,
                }),
            },
            (None, Action::Team { team, strategy }) => Action::Team {
                team: team.clone(),
                strategy: f.strategy.unwrap_or(*strategy),
            },
            (None, Action::Owner { owner }) => {
                return Err(format!(
                    "rule {} assigns to owner {owner} only and names no follow_up.team",
                    rule.id
                ));
            }
        };
        let (owner, how) = self.act(&action, None)?;
        if let Some(o) = self.owners.get_mut(&owner) {
            o.open_leads += 1;
        }
        let (team, strategy) = match &action {
            Action::Team { team, strategy } => (Some(team.clone()), Some(*strategy)),
            Action::Owner { .. } => (None, None),
        };
        Ok(Decision {
            reason: format!("rule {}: reassigned, {how}", rule.id),
            rule_id: rule.id.clone(),
            owner,
            team,
            strategy,
        })
    }

    fn usable(&self, id: &str) -> bool {
        !self.excluded.contains_key(id) && self.owners.get(id).is_some_and(available)
    }

    fn why_not(&self, id: &str) -> String {
        match (self.excluded.get(id), self.owners.get(id)) {
            (Some(why), _) => why.clone(),
            (None, Some(owner)) => why_unavailable(owner),
            (None, None) => format!("owner {id} no longer exists"),
        }
    }

    /// The owner an action picks, and how; or why it found none.
    fn act(&mut self, action: &Action, sticky: Option<&str>) -> Result<(String, String), String> {
        match action {
            Action::Owner { owner } if self.excluded.contains_key(owner) => {
                Err(self.why_not(owner))
            }
            Action::Owner { owner } => match self.owners.get(owner) {
                Some(o) if available(o) => Ok((owner.clone(), format!("owner {owner}"))),
                Some(o) => Err(why_unavailable(o)),
                None => Err(format!("owner {owner} no longer exists")),
            },
            Action::Team { team, strategy } => {
                let Some(t) = self.teams.get(team) else {
                    return Err(format!("team {team} no longer exists"));
                };
                let members: Vec<(String, u32)> = t
                    .members
                    .iter()
                    .map(|m| (m.owner.clone(), m.weight))
                    .collect();
                let open: Vec<&(String, u32)> =
                    members.iter().filter(|(o, _)| self.usable(o)).collect();
                if open.is_empty() {
                    let why: Vec<String> = members.iter().map(|(o, _)| self.why_not(o)).collect();
                    return Err(format!(
                        "no member of team {team} is available: {}",
                        why.join("; ")
                    ));
                }
                let state = self.states.entry(team.clone()).or_default();
                let pick = |s: &mut TeamState| -> String {
                    // The next member in team order whose turn it is and who is available.
                    let n = members.len() as u64;
                    for k in 0..n {
                        let (o, _) = &members[((s.next + k) % n) as usize];
                        if open.iter().any(|(x, _)| x == o) {
                            s.next = (s.next + k + 1) % n;
                            return o.clone();
                        }
                    }
                    open[0].0.clone()
                };
                let chosen = match strategy {
                    Strategy::RoundRobin => {
                        let o = pick(state);
                        (o.clone(), format!("round robin in team {team}"))
                    }
                    Strategy::Sticky => match sticky.filter(|s| open.iter().any(|(o, _)| o == s)) {
                        Some(s) => (
                            s.to_owned(),
                            format!("sticky in team {team}: this person's owner"),
                        ),
                        None => (
                            pick(state),
                            format!("sticky in team {team}: new person, round robin"),
                        ),
                    },
                    Strategy::Weighted => {
                        // Smooth weighted round-robin (as nginx): exact proportions each cycle.
                        let total: i64 = open.iter().map(|(_, w)| i64::from(*w)).sum();
                        let mut best: Option<(&String, i64)> = None;
                        for (o, w) in &open {
                            let c = state.current.entry(o.clone()).or_default();
                            *c += i64::from(*w);
                            if best.is_none_or(|(_, b)| *c > b) {
                                best = Some((o, *c));
                            }
                        }
                        let o = best.map(|(o, _)| o.clone()).unwrap_or_default();
                        *state.current.entry(o.clone()).or_default() -= total;
                        (o, format!("weighted in team {team}"))
                    }
                    Strategy::Capacity => {
                        let load = |o: &String| {
                            let owner = &self.owners[o];
                            owner.open_leads as f64
                                / owner.capacity.unwrap_or(u64::MAX).max(1) as f64
                        };
                        let o = open
                            .iter()
                            .map(|(o, _)| o)
                            .min_by(|a, b| load(a).total_cmp(&load(b)))
                            .cloned()
                            .unwrap_or_default();
                        (o, format!("least loaded in team {team}"))
                    }
                };
                Ok(chosen)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assign::model::Member;
    use serde_json::json;

    fn owner(id: &str) -> Owner {
        Owner {
            id: id.into(),
            name: String::new(),
            status: OwnerStatus::Active,
            capacity: None,
            open_leads: 0,
            claim_limit: None,
        }
    }

    fn world(strategy: Strategy, weights: &[u32]) -> World {
        let ids = ["ann", "bob", "cai"];
        let mut w = World::default();
        for id in ids {
            w.owners.insert(id.into(), owner(id));
        }
        w.teams.insert(
            "sales".into(),
            Team {
                id: "sales".into(),
                name: String::new(),
                members: ids
                    .iter()
                    .zip(weights)
                    .map(|(o, w)| Member {
                        owner: (*o).into(),
                        weight: *w,
                    })
                    .collect(),
            },
        );
        w.rules.push(Rule {
            id: "all".into(),
            name: String::new(),
            priority: 100,
            enabled: true,
            conditions: vec![],
            action: Action::Team {
                team: "sales".into(),
                strategy,
            },
            follow_up: None,
        });
        w
    }

    fn tally(w: &mut World, n: usize) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for _ in 0..n {
            let (d, _) = w.decide(&json!({}), None);
            *out.entry(d.unwrap().owner).or_default() += 1;
        }
        out
    }

    #[test]
    fn round_robin_is_exactly_fair() {
        let mut w = world(Strategy::RoundRobin, &[1, 1, 1]);
        let t = tally(&mut w, 3000);
        assert!(t.values().all(|n| *n == 1000), "{t:?}");
    }

    #[test]
    fn weighted_gives_the_configured_proportions() {
        let mut w = world(Strategy::Weighted, &[5, 3, 2]);
        let t = tally(&mut w, 3000);
        assert_eq!((t["ann"], t["bob"], t["cai"]), (1500, 900, 600));
    }

    #[test]
    fn unavailable_owners_are_skipped_and_capacity_is_respected() {
        let mut w = world(Strategy::RoundRobin, &[1, 1, 1]);
        w.owners.get_mut("bob").unwrap().status = OwnerStatus::OnLeave;
        w.owners.get_mut("cai").unwrap().capacity = Some(2);
        let t = tally(&mut w, 10);
        assert_eq!((t.get("bob"), t["cai"], t["ann"]), (None, 2, 8));

        let mut w = world(Strategy::Capacity, &[1, 1, 1]);
        w.owners.get_mut("ann").unwrap().open_leads = 5;
        let (d, _) = w.decide(&json!({}), None);
        assert_ne!(d.unwrap().owner, "ann", "the least loaded gets it");
    }

    #[test]
    fn sticky_keeps_a_person_with_their_owner() {
        let mut w = world(Strategy::Sticky, &[1, 1, 1]);
        for _ in 0..5 {
            let (d, _) = w.decide(&json!({}), Some("cai"));
            assert_eq!(d.unwrap().owner, "cai");
        }
        w.owners.get_mut("cai").unwrap().status = OwnerStatus::OffDuty;
        let (d, _) = w.decide(&json!({}), Some("cai"));
        assert_ne!(d.unwrap().owner, "cai", "an absent owner's people go round");
    }

    #[test]
    fn conditions_explain_themselves() {
        let lead = json!({"contact": {"province": "广东省", "city": "深圳市"},
            "custom": {"预算": "50,000"}, "source": {"connector": "douyin"},
            "received_at": "2026-11-24T02:30:00Z"});
        let c = |v: Value| serde_json::from_value::<Condition>(v).unwrap();
        assert_eq!(
            check(
                &c(json!({"op":"eq","field":"contact.province","value":"广东省"})),
                &lead
            ),
            None
        );
        assert_eq!(
            check(
                &c(json!({"op":"in","field":"source.connector","values":["douyin","tencent"]})),
                &lead
            ),
            None
        );
        assert_eq!(
            check(
                &c(json!({"op":"range","field":"custom.预算","min":10000})),
                &lead
            ),
            None
        );
        assert_eq!(
            check(
                &c(json!({"op":"prefix","field":"contact.city","value":"深"})),
                &lead
            ),
            None
        );
        assert_eq!(
            check(
                &c(json!({"op":"regex","field":"contact.city","pattern":"^深"})),
                &lead
            ),
            None
        );
        // 02:30 UTC is 10:30 in Shanghai, a Tuesday.
        assert_eq!(
            check(
                &c(
                    json!({"op":"working_hours","start":"09:00","end":"18:00","weekdays":["mon","tue"]})
                ),
                &lead
            ),
            None
        );
        assert_eq!(
            check(
                &c(json!({"op":"eq","field":"contact.province","value":"北京市"})),
                &lead
            )
            .unwrap(),
            "contact.province is \"广东省\", not \"北京市\""
        );
        assert!(check(&c(json!({"op":"exists","field":"contact.email"})), &lead).is_some());
        assert!(
            check(
                &c(json!({"op":"working_hours","start":"18:00","end":"09:00"})),
                &lead
            )
            .is_some()
        );
    }
}
