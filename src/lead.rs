//! The canonical lead model, in pipeline order: an [`IntakeEvent`] (raw, as received and journaled),
//! a [`Contact`] (mapped and normalized), and the published records ([`LeadRecord`], [`MergedRecord`]).
//!
//! The published records are a public contract: their JSON Schema lives in `docs/schema/` and is
//! generated from these types (`leadgate schema`); a test keeps the committed file in sync.

use std::borrow::Cow;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Version of the published record schema. Minor bumps only add optional fields; a major bump
/// changes or removes something and gets new topic names in the release notes.
pub const SCHEMA_VERSION: &str = "1.5";

/// How a lead entered the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Pushed to `POST /v1/webhooks/{connector}`.
    Webhook,
    /// Read from a file by `leadgate import`.
    File,
    /// Read from a MySQL/MariaDB table (incremental pull or binlog). Added in 1.3.
    Mysql,
    /// Pushed by an ad platform to `POST /v1/webhooks/{connector}` (Google Ads, ...). Added in 1.3.
    Platform,
}

/// One ingested event exactly as received, before any cleaning. This is what the durable
/// intake journal stores; everything after it can be recomputed from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntakeEvent {
    pub event_id: String,
    pub connector: String,
    pub kind: SourceKind,
    /// RFC 3339, UTC.
    pub received_at: String,
    /// The platform's own id of the lead, when the connector knows where to find it.
    pub external_id: Option<String>,
    /// The input as received: a JSON body verbatim (key order kept), a form body or a file row as an
    /// object of its fields.
    pub payload: Value,
    /// Which version of the source row this is, for sources whose rows change (MySQL: the cursor
    /// timestamp, or the binlog position). Source idempotency keys on `(external_id, revision)`: the
    /// same version read twice is one lead, an update is a new event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Problems the source itself found (a column it could not read); they join the lead's issues.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issues: Vec<Issue>,
    /// The platform marked it a test lead (Google `is_test`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test: bool,
}

impl IntakeEvent {
    pub fn new(
        connector: &str,
        kind: SourceKind,
        external_id: Option<String>,
        payload: Value,
    ) -> Self {
        Self::received(
            uuid::Uuid::now_v7().to_string(),
            now_rfc3339(),
            connector,
            kind,
            external_id,
            payload,
        )
    }

    /// An event with its id and time of receipt given (an import's rows: ids derived from the
    /// file, one time for a batch).
    pub fn received(
        event_id: String,
        received_at: String,
        connector: &str,
        kind: SourceKind,
        external_id: Option<String>,
        payload: Value,
    ) -> Self {
        Self {
            event_id,
            connector: connector.to_owned(),
            kind,
            received_at,
            external_id,
            payload,
            revision: None,
            issues: Vec::new(),
            test: false,
        }
    }
}

/// The kind of a phone identity key (E.164 numbers of people, never switchboards or masked
/// numbers). Key kinds are part of the model: settings name them (`identity_fields`) and the
/// identity stage matches on them.
pub const PHONE: &str = "phone";
/// The kind of an email identity key (the provider-folded identity key, never role mailboxes).
pub const EMAIL: &str = "email";

/// How deeply a payload may nest (the payload object itself is level 1). Every source is held to
/// it where the payload enters, so nothing accepted can fail to decode later: the journal record,
/// the published record and a consumer's parser all nest a few levels more, and serde_json (like
/// most JSON parsers) refuses input past 128 levels. Form-tool payloads nest five or six levels.
pub const MAX_PAYLOAD_DEPTH: usize = 64;

/// How deeply `value` nests: 1 for a scalar or an empty container, 1 + its deepest member's depth
/// otherwise. Iterative, so no input can exhaust the stack.
pub fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        match v {
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            Value::Object(fields) => stack.extend(fields.values().map(|i| (i, d + 1))),
            _ => {}
        }
    }
    deepest
}

/// A UUID as text (hyphenated, lowercase), without the formatting machinery: lead ids, and the
/// event ids of imported rows.
pub fn uuid_text(id: uuid::Uuid) -> String {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    id.hyphenated().encode_lower(&mut buf).to_owned()
}

/// The current time as RFC 3339 in UTC with millisecond precision.
pub fn now_rfc3339() -> String {
    rfc3339_millis(now())
}

/// The gateway's clock: now, moved by `LEADGATE_CLOCK_OFFSET_MS` when that is set.
pub fn now() -> jiff::Timestamp {
    let now = jiff::Timestamp::now();
    now.checked_add(jiff::SignedDuration::from_millis(*CLOCK_OFFSET_MS))
        .unwrap_or(now)
}

/// `LEADGATE_CLOCK_OFFSET_MS`: moves the gateway's clock for the times it stamps (`received_at`)
/// by this many milliseconds, for tests and demos of time-bucketed statistics (an hour boundary
/// without waiting for one). Unset in production.
static CLOCK_OFFSET_MS: std::sync::LazyLock<i64> = std::sync::LazyLock::new(|| {
    std::env::var("LEADGATE_CLOCK_OFFSET_MS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
});

/// `at` in UTC with exactly three fractional digits, so that these strings sort as the instants
/// do (jiff's default display drops trailing zeros: `.1Z` would sort after `.12Z`).
pub fn rfc3339_millis(at: jiff::Timestamp) -> String {
    format!("{at:.3}")
}

/// A problem found in a lead: `field` is the contact field (or `body`, `contact`), `code` a stable,
/// documented machine-readable code (see `docs/record-schema.md`), `message` a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Issue {
    pub field: Cow<'static, str>,
    pub code: Cow<'static, str>,
    pub message: Cow<'static, str>,
}

impl Issue {
    /// Codes and most fields and messages are constants: they are borrowed, not copied, for each lead.
    pub fn new(
        field: impl Into<Cow<'static, str>>,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            field: field.into(),
            code: code.into(),
            message: message.into(),
        }
    }
}

/// Where a record came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SourceRef {
    /// The connector's configured name, e.g. `webform`.
    pub connector: String,
    pub kind: SourceKind,
    /// The platform's own id of the lead, if any.
    pub external_id: Option<String>,
    /// The version of the source row this record carries, for sources whose rows change (MySQL:
    /// the cursor timestamp, `binlog:{file}:{position}:{row}`, or `snapshot:{hash}`). Records with
    /// the same `external_id` and another revision are updates of the same source row. Added in 1.3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The platform marked it a test lead (Google `is_test`); present (`true`) only then, on
    /// connectors with `test_leads = "flag"` (the others publish test leads to `leads.test`).
    /// Added in 1.3.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub test: bool,
}

/// The cleaned contact. Every field is optional; absent or unusable input is `null`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Contact {
    pub name: Option<String>,
    /// E.164, e.g. `+8613800138000`.
    pub phone: Option<String>,
    /// The extension dialled after the number, digits only.
    pub phone_ext: Option<String>,
    /// libphonenumber's type of `phone`: `mobile`, `fixed_line`, `fixed_line_or_mobile`,
    /// `toll_free` (800), `shared_cost` (400), `premium_rate`, `voip`, `personal_number`, `pager`,
    /// `uan`, `voicemail`. Toll-free, shared-cost, UAN, premium and voicemail numbers are company
    /// lines, never used to match people. Added in 1.1.
    #[serde(default)]
    pub phone_type: Option<Cow<'static, str>>,
    /// Domain lowercased; the local part as typed.
    pub email: Option<String>,
    pub company: Option<String>,
    pub title: Option<String>,
    pub industry: Option<String>,
    // (A name from the geocoding data is borrowed, not copied for each lead.)
    pub province: Option<Cow<'static, str>>,
    pub city: Option<Cow<'static, str>>,
    pub address: Option<String>,
    /// The lead's own country, ISO 3166-1 alpha-2 (`TW`), when a country field named one; its
    /// phone number was read in that region. Added in 1.4.
    #[serde(default)]
    pub country: Option<String>,
    /// Free-text remarks (备注).
    pub notes: Option<String>,
}

/// How the identity stage resolved this lead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdentityStatus {
    /// No known person matched: a new `lead_id`.
    New,
    /// Joined one existing person.
    Matched,
    /// Bridged several known people, which were merged into the oldest.
    Merged,
}

impl IdentityStatus {
    /// Its name in the record and in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Matched => "matched",
            Self::Merged => "merged",
        }
    }
}

/// The identity stage's outcome for one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IdentityOutcome {
    pub lead_id: String,
    pub status: IdentityStatus,
    /// The kinds of keys that matched an existing person, e.g. `["phone"]`.
    pub matched_on: Vec<String>,
    /// What supported a join the identity guards would otherwise have refused, e.g.
    /// `["name", "company"]`; never a match on its own. Empty (absent) for most leads. Added in 1.2.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supported_by: Vec<String>,
    /// `lead_id`s that this event merged into `lead_id` (empty unless `status` is `merged`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_lead_ids: Vec<String>,
}

/// Who the lead was assigned to. `null` until assignment rules are configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Assignment {
    pub owner: Option<String>,
    pub team: Option<String>,
    pub rule_id: Option<String>,
    pub strategy: Option<String>,
    pub reason: String,
}

/// A record on `leads.clean` (then `reasons` is absent) or `leads.rejected` (then `reasons` lists why,
/// and `lead_id` and `identity` are null).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "leadgate lead record", extend("$id" = "https://leadgate.dev/schema/lead-record-1.json"))]
pub struct LeadRecord {
    /// `"1.5"` for this schema (`MAJOR.MINOR`; a minor version only adds).
    pub schema_version: String,
    /// Unique per ingested event; consumers drop repeats by it (delivery is at least once).
    pub event_id: String,
    /// The person this lead belongs to; stable across merges of later events into it.
    pub lead_id: Option<String>,
    /// When the gateway acknowledged the event, RFC 3339 UTC.
    pub received_at: String,
    pub source: SourceRef,
    pub contact: Contact,
    /// What the lead's consent answer said, when its connector names one (`consent` in its
    /// definition); absent otherwise (since 1.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<crate::consent::Consent>,
    /// Input fields that were not mapped to a contact field, under their own names, untouched.
    pub custom: Map<String, Value>,
    /// The input exactly as received (JSON bodies verbatim; form bodies and file rows as an object).
    pub raw: Value,
    /// Problems found that did not stop the lead.
    pub issues: Vec<Issue>,
    pub identity: Option<IdentityOutcome>,
    /// 客户细分: every segment whose conditions the lead meets, once any segment is defined;
    /// absent otherwise (since 1.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<Vec<crate::assign::segments::SegmentRef>>,
    /// 线索评分: the fit score and the rule behind each point, once any score group is
    /// defined; absent otherwise (since 1.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<crate::assign::segments::Score>,
    pub assignment: Option<Assignment>,
    /// Present on `leads.rejected` only: why the lead was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Vec<Issue>>,
}

/// A record on `leads.merged`: the people in `merged_lead_ids` are now `lead_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "leadgate merge record", extend("$id" = "https://leadgate.dev/schema/merge-record-1.json"))]
pub struct MergedRecord {
    pub schema_version: String,
    /// The surviving (oldest) lead.
    pub lead_id: String,
    pub merged_lead_ids: Vec<String>,
    /// The event that caused the merge.
    pub event_id: String,
    pub merged_at: String,
}

/// The published JSON Schemas, by file name under `docs/schema/`.
pub fn json_schemas() -> [(&'static str, serde_json::Value); 3] {
    [
        (
            "lead-record-1.json",
            schemars::schema_for!(LeadRecord).to_value(),
        ),
        (
            "merge-record-1.json",
            schemars::schema_for!(MergedRecord).to_value(),
        ),
        (
            "reassignment-record-1.json",
            schemars::schema_for!(crate::assign::lifecycle::Reassignment).to_value(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::{MAX_PAYLOAD_DEPTH, depth, rfc3339_millis};
    use serde_json::{Value, json};

    #[test]
    fn depth_counts_levels_of_nesting_without_recursion() {
        assert_eq!(depth(&json!("a")), 1);
        assert_eq!(depth(&json!({})), 1);
        assert_eq!(depth(&json!({"a": 1})), 2);
        assert_eq!(depth(&json!({"a": [1, {"b": []}], "c": 2})), 4);
        // Deeper than serde_json would parse, built by hand: counted, not overflowed.
        let mut v = Value::Null;
        for _ in 0..100_000 {
            v = Value::Array(vec![v]);
        }
        assert_eq!(depth(&v), 100_001);
        // serde_json drops nested values recursively; take it apart level by level instead.
        while let Value::Array(mut items) = v {
            v = items.pop().unwrap_or(Value::Null);
        }
        const {
            assert!(
                MAX_PAYLOAD_DEPTH + 8 < 128,
                "room for the record around the payload"
            )
        };
    }

    #[test]
    fn timestamps_have_a_fixed_width_so_they_sort_as_instants() {
        let at = |s: &str| rfc3339_millis(s.parse().unwrap());
        assert_eq!(at("2026-11-24T06:48:54Z"), "2026-11-24T06:48:54.000Z");
        assert_eq!(at("2026-11-24T06:48:54.1Z"), "2026-11-24T06:48:54.100Z");
        assert_eq!(at("2026-11-24T06:48:54.1239Z"), "2026-11-24T06:48:54.123Z");
        let (a, b) = (at("2026-11-24T06:48:54.1Z"), at("2026-11-24T06:48:54.12Z"));
        assert!(a < b, "{a} sorts before {b}");
    }
}
