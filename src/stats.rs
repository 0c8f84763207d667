//! 效果分析: counts of leads by connector, campaign and form, per hour and per day, persisted in
//! the journal's database and served by `GET /v1/stats`.
//!
//! **Exactly once.** The delivery loop tallies each delivered batch ([`Tally`]) and the journal
//! adds the tally to the rollups in the same transaction that forgets the batch's events
//! (`Journal::ack_through_counting`). A crash before that transaction delivers the events again
//! and tallies them again; after it, they are gone and counted once.
//!
//! **Small.** Only counts are kept: one row per (hour, connector, campaign, form) with leads, and
//! one per (day, ...). Hour rows older than `[stats] hour_retention` (90 days) are dropped; day
//! rows stay. Days are calendar days in `[stats] timezone` (Asia/Shanghai by default); hours are
//! UTC hours, shown in that zone.

use std::collections::BTreeMap;

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::lead::LeadRecord;
use crate::pipeline::Disposition;

/// Hour rows: `(unix seconds of the hour's start, connector, campaign, form)` → [`Counts`].
pub(crate) const HOURS: TableDefinition<(i64, &str, &str, &str), &[u8]> =
    TableDefinition::new("stats_hours");
/// Day rows, by the day's start in the configured zone.
pub(crate) const DAYS: TableDefinition<(i64, &str, &str, &str), &[u8]> =
    TableDefinition::new("stats_days");

/// What a group's leads came to in one hour or day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Counts {
    /// Leads delivered (every outcome below).
    pub received: u64,
    /// Published on the clean topic.
    pub clean: u64,
    /// Rejected, by the issue code that decided it.
    pub rejected: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rejected_by: BTreeMap<String, u64>,
    /// Platform redeliveries of a lead already ingested (nothing published).
    pub duplicate: u64,
    /// Clean leads that merged known people into one.
    pub merged: u64,
    /// Platform test leads.
    pub test: u64,
    /// Clean leads assigned to an owner, by owner id.
    pub assigned: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub assigned_by: BTreeMap<String, u64>,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.received += other.received;
        self.clean += other.clean;
        self.rejected += other.rejected;
        for (k, v) in &other.rejected_by {
            *self.rejected_by.entry(k.clone()).or_default() += v;
        }
        self.duplicate += other.duplicate;
        self.merged += other.merged;
        self.test += other.test;
        self.assigned += other.assigned;
        for (k, v) in &other.assigned_by {
            *self.assigned_by.entry(k.clone()).or_default() += v;
        }
    }

    fn of(disposition: &Disposition, owner: Option<&str>) -> Self {
        let mut c = Counts {
            received: 1,
            ..Counts::default()
        };
        match disposition {
            Disposition::Accepted { merged, .. } => {
                c.clean = 1;
                c.merged = u64::from(*merged);
                if let Some(owner) = owner {
                    c.assigned = 1;
                    c.assigned_by.insert(owner.to_owned(), 1);
                }
            }
            Disposition::Rejected { codes } => {
                c.rejected = 1;
                c.rejected_by
                    .insert(crate::pipeline::verdict(codes).to_owned(), 1);
            }
            Disposition::Duplicate => c.duplicate = 1,
            Disposition::Test => c.test = 1,
        }
        c
    }
}

/// Where a lead came from, as the statistics group it: its campaign and form, where the payload
/// names them (empty otherwise).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attribution {
    pub campaign: String,
    pub form: String,
    /// The owner it was assigned to.
    pub owner: Option<String>,
}

/// The fields naming a lead's campaign, first found wins: UTM tags (web forms), then the
/// platforms' ids (Meta, Google, TikTok and LinkedIn `campaign_id`/`campaign`, 巨量引擎
/// `promotion_id`, 腾讯广告 `adgroup_id`).
const CAMPAIGN_FIELDS: &[&str] = &[
    "utm_campaign",
    "campaign_id",
    "campaign",
    "campaign_name",
    "promotion_id",
    "adgroup_id",
];

/// The fields naming its form: Meta, Google and most form tools (`form_id`, `formId`), LinkedIn
/// (`leadGenForm`), TikTok (`page_id`), form names.
const FORM_FIELDS: &[&str] = &[
    "form_id",
    "formId",
    "form",
    "leadGenForm",
    "versionedLeadGenFormUrn",
    "page_id",
    "form_name",
    "formName",
];

/// Longest campaign or form value kept (longer ones are cut at a character boundary).
const MAX_LABEL: usize = 200;

impl Attribution {
    /// Read from a lead's unmapped fields (`custom`), then its raw payload's top level.
    pub fn of(
        custom: &serde_json::Map<String, serde_json::Value>,
        raw: &serde_json::Value,
    ) -> Self {
        // The first of `names` that `custom` has (or else the raw payload has) with a text: each
        // map's few entries are looked at once, and only a raw field with one of the names is
        // looked up in `custom` (this runs for every lead).
        let find = |names: &[&str]| {
            let named = |e| ranked(names, e);
            let raw_only = raw
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(named)
                .filter(|(_, k, _)| !custom.contains_key(*k));
            custom
                .iter()
                .filter_map(named)
                .chain(raw_only)
                .filter_map(|(rank, _, v)| Some((rank, text(v)?)))
                .min_by_key(|(rank, _)| *rank)
                .map(|(_, v)| cut(&v))
                .unwrap_or_default()
        };
        Self {
            campaign: find(CAMPAIGN_FIELDS),
            form: find(FORM_FIELDS),
            owner: None,
        }
    }

    /// With the owner `record` was assigned to.
    pub fn assigned(mut self, record: &LeadRecord) -> Self {
        self.owner = record.assignment.as_ref().and_then(|a| a.owner.clone());
        self
    }
}

/// A field with its rank among `names`, if it is one of them.
fn ranked<'a>(
    names: &[&str],
    (k, v): (&'a String, &'a serde_json::Value),
) -> Option<(usize, &'a String, &'a serde_json::Value)> {
    Some((names.iter().position(|n| n == k)?, k, v))
}

fn text(v: &serde_json::Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().into()),
        serde_json::Value::Number(n) => Some(n.to_string().into()),
        _ => None,
    }
}

fn cut(s: &str) -> String {
    if s.len() <= MAX_LABEL {
        return s.to_owned();
    }
    let mut end = MAX_LABEL;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// `v` as a spreadsheet cell that is never run as a formula: a leading `=`, `+`, `-`, `@`, tab or
/// carriage return gets an apostrophe before it (the CSVs leadgate writes are opened in Excel).
pub fn spreadsheet_safe(v: &str) -> String {
    match v.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{v}"),
        _ => v.to_owned(),
    }
}

/// A group: connector, campaign, form.
pub type Group = (String, String, String);

/// The counts of delivered batches not yet acknowledged, by hour and by day.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub hours: BTreeMap<(i64, Group), Counts>,
    pub days: BTreeMap<(i64, Group), Counts>,
}

impl Tally {
    pub fn is_empty(&self) -> bool {
        self.hours.is_empty()
    }

    /// Counts one delivered event of `connector`, received at `received_at`.
    pub fn count(
        &mut self,
        zone: &jiff::tz::TimeZone,
        connector: &str,
        received_at: &str,
        disposition: &Disposition,
        attribution: &Attribution,
    ) {
        let Ok(at) = received_at.parse::<jiff::Timestamp>() else {
            return;
        };
        let counts = Counts::of(disposition, attribution.owner.as_deref());
        let group = (
            connector.to_owned(),
            attribution.campaign.clone(),
            attribution.form.clone(),
        );
        let hour = at.as_second().div_euclid(3600) * 3600;
        let day = day_start(at, zone);
        self.hours
            .entry((hour, group.clone()))
            .or_default()
            .add(&counts);
        self.days.entry((day, group)).or_default().add(&counts);
    }

    /// Adds `other` (a later batch).
    pub fn merge(&mut self, other: Tally) {
        for (k, v) in other.hours {
            self.hours.entry(k).or_default().add(&v);
        }
        for (k, v) in other.days {
            self.days.entry(k).or_default().add(&v);
        }
    }

    /// Adds the tally to the rollups inside `txn` (the journal's acknowledgement), and drops hour
    /// rows older than `hour_retention_s` before the newest hour counted.
    pub(crate) fn commit(
        &self,
        txn: &WriteTransaction,
        hour_retention_s: i64,
    ) -> Result<(), crate::intake::JournalError> {
        for (table, rows) in [(HOURS, &self.hours), (DAYS, &self.days)] {
            let mut t = txn.open_table(table)?;
            for ((start, (connector, campaign, form)), add) in rows {
                let key = (*start, connector.as_str(), campaign.as_str(), form.as_str());
                let mut counts: Counts = match t.get(key)? {
                    Some(v) => serde_json::from_slice(v.value()).unwrap_or_default(),
                    None => Counts::default(),
                };
                counts.add(add);
                t.insert(key, serde_json::to_vec(&counts)?.as_slice())?;
            }
        }
        if let Some(((newest, _), _)) = self.hours.last_key_value() {
            let before = newest - hour_retention_s;
            let mut t = txn.open_table(HOURS)?;
            t.retain_in((i64::MIN, "", "", "")..(before, "", "", ""), |_, _| false)?;
        }
        Ok(())
    }
}

/// The start (unix seconds) of `at`'s calendar day in `zone`.
pub fn day_start(at: jiff::Timestamp, zone: &jiff::tz::TimeZone) -> i64 {
    at.to_zoned_datetime(zone.clone())
        .start_of_day()
        .map_or(at.as_second().div_euclid(86_400) * 86_400, |d| {
            d.timestamp().as_second()
        })
}

/// What `GET /v1/stats` groups by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupBy {
    pub connector: bool,
    pub campaign: bool,
    pub form: bool,
}

impl GroupBy {
    /// `connector,campaign,form` (any of them, in any order; empty: the totals).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut g = GroupBy::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "connector" | "source" => g.connector = true,
                "campaign" => g.campaign = true,
                "form" => g.form = true,
                other => {
                    return Err(format!(
                        "`{other}` is not a grouping: use connector, campaign and form"
                    ));
                }
            }
        }
        Ok(g)
    }

    fn key(&self, (connector, campaign, form): (&str, &str, &str)) -> Group {
        let pick = |on: bool, v: &str| if on { v.to_owned() } else { String::new() };
        (
            pick(self.connector, connector),
            pick(self.campaign, campaign),
            pick(self.form, form),
        )
    }
}

/// One row of the answer: a bucket's start and its group's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub start: i64,
    pub group: Group,
    pub counts: Counts,
}

/// The rows of `table` in `[from, to)` (unix seconds), summed by `group_by`, oldest first.
pub(crate) fn read(
    txn: &redb::ReadTransaction,
    day: bool,
    (from, to): (i64, i64),
    group_by: GroupBy,
    connector: Option<&str>,
) -> Result<Vec<Row>, crate::intake::JournalError> {
    let table = txn.open_table(if day { DAYS } else { HOURS })?;
    let mut rows: BTreeMap<(i64, Group), Counts> = BTreeMap::new();
    for row in table.range((from, "", "", "")..(to, "", "", ""))? {
        let (k, v) = row?;
        let (start, c, campaign, form) = k.value();
        if connector.is_some_and(|want| want != c) {
            continue;
        }
        let counts: Counts = serde_json::from_slice(v.value()).unwrap_or_default();
        rows.entry((start, group_by.key((c, campaign, form))))
            .or_default()
            .add(&counts);
    }
    Ok(rows
        .into_iter()
        .map(|((start, group), counts)| Row {
            start,
            group,
            counts,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: the first field name, in order, that the unmapped fields have (or else
    /// the raw payload has), read as text.
    fn attribution_by_names(
        custom: &serde_json::Map<String, serde_json::Value>,
        raw: &serde_json::Value,
    ) -> (String, String) {
        let find = |names: &[&str]| {
            names
                .iter()
                .find_map(|k| custom.get(*k).or_else(|| raw.get(*k)).and_then(text))
                .map(|v| cut(&v))
                .unwrap_or_default()
        };
        (find(CAMPAIGN_FIELDS), find(FORM_FIELDS))
    }

    #[test]
    fn a_leads_campaign_and_form_are_its_first_named_fields_with_a_text() {
        use serde_json::json;
        let cases = [
            (
                json!({}),
                json!({"campaign": "c", "utm_campaign": "u", "form_id": 7}),
            ),
            (
                json!({"campaign_id": " 618 "}),
                json!({"utm_campaign": "u"}),
            ),
            // Present in the unmapped fields but blank: the raw payload is not asked.
            (
                json!({"utm_campaign": "  "}),
                json!({"utm_campaign": "raw", "campaign": "c"}),
            ),
            (
                json!({"utm_campaign": null, "formName": "展会"}),
                json!({"form": ["x"]}),
            ),
            (
                json!({"page_id": 1.5, "form_name": "n"}),
                json!({"formId": "F", "x": "y"}),
            ),
            (json!({}), json!("not an object")),
            (json!({"campaign": "长".repeat(300)}), json!({})),
        ];
        for (custom, raw) in cases {
            let custom = custom.as_object().unwrap().clone();
            let got = Attribution::of(&custom, &raw);
            assert_eq!(
                (got.campaign, got.form),
                attribution_by_names(&custom, &raw),
                "{custom:?} {raw}"
            );
        }
        let got = Attribution::of(
            &serde_json::Map::new(),
            &json!({"campaign": "c", "utm_campaign": "u"}),
        );
        assert_eq!(got.campaign, "u");
    }

    #[test]
    fn days_follow_the_zone_and_hours_are_utc() {
        let zone = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
        let mut t = Tally::default();
        let attribution = Attribution {
            campaign: "双11".into(),
            form: "f1".into(),
            owner: Some("o-1".into()),
        };
        let accepted = Disposition::Accepted {
            merged: false,
            identity: None,
            assignment: None,
        };
        // 15:59:59 and 16:00:00 UTC: two hours, and two days in GMT+8 (midnight at 16:00 UTC).
        for at in ["2026-11-10T15:59:59.000Z", "2026-11-10T16:00:00.000Z"] {
            t.count(&zone, "web", at, &accepted, &attribution);
        }
        t.count(
            &zone,
            "web",
            "2026-11-10T16:30:00.000Z",
            &Disposition::Rejected {
                codes: vec!["contact.unreachable".into(), "phone.invalid".into()],
            },
            &attribution,
        );
        assert_eq!(t.hours.len(), 2);
        assert_eq!(t.days.len(), 2);
        let second_day = t.days.last_key_value().unwrap();
        assert_eq!(
            second_day.0.0,
            "2026-11-11T00:00:00+08:00"
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_second()
        );
        assert_eq!(second_day.1.received, 2);
        assert_eq!(second_day.1.clean, 1);
        assert_eq!(second_day.1.rejected_by["phone.invalid"], 1);
        assert_eq!(second_day.1.assigned_by["o-1"], 1);
    }

    #[test]
    fn groupings_are_named() {
        let g = GroupBy::parse("connector, campaign").unwrap();
        assert!(g.connector && g.campaign && !g.form);
        assert!(GroupBy::parse("").unwrap() == GroupBy::default());
        assert!(GroupBy::parse("owner").unwrap_err().contains("owner"));
    }

    #[test]
    fn long_values_are_cut_on_a_character() {
        let long = "活动".repeat(200);
        let c = cut(&long);
        assert!(c.len() <= MAX_LABEL && long.starts_with(&c));
    }
}
