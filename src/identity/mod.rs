//! Identity: which person a lead belongs to.
//!
//! Four layers, in order (see `docs/identity.md`):
//! 1. source idempotency: a `(connector, platform lead id)` seen before is a duplicate, not a new event;
//! 2. the identity graph: keys (email identity key, person phone, declared platform ids) link
//!    events to people; a lead bridging two people merges them into the oldest;
//! 3. guards: blocked and placeholder values never link; a person holds at most N values of a kind,
//!    and a key linked to more than N people stops being an identifier;
//! 4. fuzzy support: a similar name with the same company or city may *support* a match the
//!    guards would refuse; it never makes one alone.
//!
//! The algorithm ([`resolve`]) is written once against a transactional [`resolve::Graph`]; the
//! stores (embedded: an in-memory index over a log; MySQL) only provide the reads and writes.

mod embedded;
/// The synthetic-data evaluation harness (quality and speed): test and benchmark support, not
/// part of the gateway. `cargo bench --bench identity --features eval` runs it.
#[cfg(any(test, feature = "eval"))]
pub mod eval;
#[cfg(feature = "mysql")]
mod mysql;
mod resolve;
mod settings;

pub use embedded::EmbeddedIdentityStore;
pub use embedded::scratch::{self as scratch, ScratchIdentityStore};
#[cfg(feature = "mysql")]
pub use mysql::MysqlIdentityStore;
pub use resolve::{Cluster, ClusterKey, Member, Person, ProfileValue, Resolution};
pub use settings::{IdentitySettings, StoreSettings};

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::lead::{Contact, IdentityOutcome};
use crate::normalize::{NormalizedLead, company_key, name_key};

pub use crate::lead::{EMAIL, PHONE};

/// A normalized value that identifies one person, e.g. `phone:+8613800138000`, `wechat:o6_bmj...`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IdentityKey {
    /// `phone`, `email`, or a platform id kind a connector declares (`wechat`, `qq`, `crm_id`...).
    pub kind: String,
    pub value: String,
}

impl IdentityKey {
    pub fn new(kind: &str, value: impl Into<String>) -> Self {
        Self {
            kind: kind.to_owned(),
            value: value.into(),
        }
    }
}

impl IdentityKey {
    /// `kind:value`, as [`fmt::Display`] writes it, without the formatting machinery (this is
    /// on the resolver's hot path).
    pub fn name(&self) -> String {
        let mut s = String::with_capacity(self.kind.len() + 1 + self.value.len());
        s.push_str(&self.kind);
        s.push(':');
        s.push_str(&self.value);
        s
    }
}

impl fmt::Display for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// What may support a match, never make one: the name's matching key (Simplified, folded), the
/// company's key (no legal form) and the city.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Traits {
    pub name: Option<String>,
    pub company: Option<String>,
    pub city: Option<String>,
}

impl Traits {
    pub fn of(contact: &Contact) -> Self {
        Self {
            name: contact.name.as_deref().and_then(name_key),
            company: contact.company.as_deref().and_then(company_key),
            city: contact.city.as_deref().map(str::to_owned),
        }
    }
}

/// One event to resolve.
#[derive(Debug, Clone, Default)]
pub struct IdentityRequest {
    pub event_id: String,
    /// The connector and the platform's lead id: an event whose source key was seen with another
    /// event is a platform redelivery ([`Resolution::Duplicate`]).
    pub source_key: Option<String>,
    /// `false` for a rejected lead: only source idempotency applies, no person is resolved.
    pub resolve: bool,
    pub keys: Vec<IdentityKey>,
    pub traits: Traits,
    /// The cleaned contact fields, for per-field survivorship on the person.
    pub profile: Vec<(String, String)>,
    /// The connector's name, for the person's history of sources.
    pub connector: String,
    /// When the event was acknowledged (RFC 3339 UTC): the newest value of a field wins.
    pub received_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the data directory is in use by another leadgate process (identity store {0})")]
    Locked(String),
    #[error("identity store: {0}")]
    Storage(String),
    /// The store's file failed (a full disk, EIO): the embedded store lets go of it and opens it
    /// again on next use.
    #[error("identity store: {0}")]
    Disk(String),
    /// Another writer holds what this batch needs (a deadlock or lock wait timeout); retrying the
    /// batch resolves it.
    #[error("identity store: lost a lock conflict with another writer: {0}")]
    Conflict(String),
}

/// Resolves events to people. Implementations must be idempotent per `event_id`: resolving an
/// event again (after a crash, before its delivery was acknowledged) gives the first outcome.
pub trait IdentityStore: Send + Sync {
    /// Resolves `requests` in order, atomically; an error means none of them was applied.
    fn resolve(&self, requests: &[IdentityRequest]) -> Result<Vec<Resolution>, IdentityError>;

    /// Everything known about a person, found by any of its lead ids (merged ones included).
    fn explain(&self, lead_id: &str) -> Result<Option<Cluster>, IdentityError>;

    /// The lead ids of the people `keys` link today (after merges, each once), in the keys'
    /// order: how a phone number or an address finds its person.
    fn find(&self, keys: &[IdentityKey]) -> Result<Vec<String>, IdentityError>;

    /// Whether it keeps the contact fields of each event ([`IdentityRequest::profile`]): a store
    /// that does not (the dry run's) is sent requests without them.
    fn keeps_profiles(&self) -> bool {
        true
    }

    /// Makes every resolution so far durable. A store may commit batches lazily; the pipeline
    /// calls this before it acknowledges their events in the journal.
    fn sync(&self) -> Result<(), IdentityError> {
        Ok(())
    }

    /// At shutdown, after the last batch: makes everything durable and lets the store prepare
    /// its next start (the embedded store writes a snapshot of its index).
    fn close(&self) -> Result<(), IdentityError> {
        self.sync()
    }

    /// Called when the gateway has been idle for a moment: housekeeping that would hold up
    /// leads under load (the embedded store's snapshot, when one is due).
    fn maintain(&self) -> Result<(), IdentityError> {
        Ok(())
    }

    /// The people an erasure is about: everyone with a phone number or address `hit` picks, or
    /// with one of `lead_ids`, with everyone merged with them; their lead ids, the events
    /// that made them and all their keys. Reads only.
    fn erasable(
        &self,
        hit: &(dyn Fn(&IdentityKey) -> bool + Sync),
        lead_ids: &[String],
    ) -> Result<Erased, IdentityError> {
        let _ = (hit, lead_ids);
        Err(IdentityError::Storage(
            "this identity store cannot erase people".into(),
        ))
    }

    /// Takes the people with these lead ids (and everyone merged with them) out for good: no
    /// byte of their keys or contact fields is left in the store. Erasing someone already gone
    /// does nothing.
    fn erase(&self, lead_ids: &[String]) -> Result<(), IdentityError> {
        let _ = lead_ids;
        Err(IdentityError::Storage(
            "this identity store cannot erase people".into(),
        ))
    }

    /// The people (whole clusters) none of whose events is newer than `before`: what
    /// `[privacy] retention` forgets ([`IdentityStore::erase`] then takes them out). Reads only.
    fn expired(&self, before: jiff::Timestamp) -> Result<Erased, IdentityError> {
        let _ = before;
        no_expiry()
    }
}

/// The default of [`IdentityStore::expired`]: a store that keeps no history by time.
pub fn no_expiry() -> Result<Erased, IdentityError> {
    Ok(Erased::default())
}

/// What [`IdentityStore::erasable`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erased {
    pub lead_ids: Vec<String>,
    pub event_ids: Vec<String>,
    /// Every key the people had (to suppress their other phone numbers and addresses too).
    pub keys: Vec<IdentityKey>,
}

/// The guards and thresholds, compiled from `[identity]`.
#[derive(Debug, Clone)]
pub struct Policy {
    blocked: HashSet<String>,
    max_values: BTreeMap<String, usize>,
    max_people: BTreeMap<String, usize>,
    pub name_similarity: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Self::new(&IdentitySettings::default())
    }
}

impl Policy {
    pub fn new(s: &IdentitySettings) -> Self {
        Self {
            blocked: s.blocked_values.iter().cloned().collect(),
            max_values: s.max_values_per_person.clone(),
            max_people: s.max_people_per_key.clone(),
            name_similarity: s.name_similarity,
        }
    }

    /// How many distinct values of `kind` one person may hold (2 phones, 2 emails, 1 of any
    /// platform id unless configured).
    pub fn max_values(&self, kind: &str) -> usize {
        self.max_values
            .get(kind)
            .copied()
            .unwrap_or(match kind {
                PHONE | EMAIL => 2,
                _ => 1,
            })
            .max(1)
    }

    /// How many people a key of `kind` may be linked to and still identify (1 unless configured).
    pub fn max_people(&self, kind: &str) -> usize {
        self.max_people.get(kind).copied().unwrap_or(1).max(1)
    }

    /// Whether a key may link people: not configured as blocked, not a placeholder.
    pub fn allows(&self, key: &IdentityKey) -> bool {
        (self.blocked.is_empty() || !self.blocked.contains(&key.name())) && !is_placeholder(key)
    }

    /// The keys of a cleaned lead: its person phone, its non-role email, and the platform ids its
    /// connector declares (`identity_fields`, read from the mapped custom fields), minus blocked
    /// and placeholder values.
    pub fn keys_of(
        &self,
        lead: &NormalizedLead,
        custom: &Map<String, Value>,
        identity_fields: &BTreeMap<String, String>,
    ) -> Vec<IdentityKey> {
        let mut keys = Vec::with_capacity(2 + identity_fields.len());
        if let Some(phone) = lead.person_phone() {
            keys.push(IdentityKey::new(PHONE, phone));
        }
        if let Some(key) = lead.person_email_key() {
            keys.push(IdentityKey::new(EMAIL, key));
        }
        for (kind, field) in identity_fields {
            let text = match custom.get(field) {
                Some(Value::String(s)) => s.trim().to_owned(),
                Some(Value::Number(n)) => n.to_string(),
                _ => continue,
            };
            if !text.is_empty() {
                keys.push(IdentityKey::new(kind, text));
            }
        }
        keys.retain(|k| self.allows(k));
        keys
    }
}

/// Values people and forms type when they have nothing to give: `0`, `-1`, `null`, `n/a`, `无`;
/// phone numbers whose last 8 digits are one digit repeated or a run (`138 8888 8888`,
/// `010 1234 5678`); and addresses like `test@test.com`, `none@qq.com`.
fn is_placeholder(key: &IdentityKey) -> bool {
    const TEXTS: &[&str] = &[
        "0",
        "-1",
        "-",
        "null",
        "nil",
        "none",
        "n/a",
        "na",
        "undefined",
        "unknown",
        "test",
        "无",
        "空",
        "暂无",
    ];
    const LOCAL_PARTS: &[&str] = &[
        "test", "null", "none", "noemail", "no-email", "nomail", "na", "n/a", "example", "asdf",
        "xxx", "abc", "123", "123456", "unknown",
    ];
    const DOMAINS: &[&str] = &["example.com", "example.org", "example.net", "test.com"];
    // Most values are ASCII and most of those lower case already: compared without a copy.
    let trimmed = key.value.trim();
    let lowered;
    let value = if trimmed
        .bytes()
        .any(|b| b.is_ascii_uppercase() || !b.is_ascii())
    {
        lowered = trimmed.to_lowercase();
        lowered.as_str()
    } else {
        trimmed
    };
    if TEXTS.contains(&value) {
        return true;
    }
    match key.kind.as_str() {
        PHONE => {
            // The last 8 digits, last first.
            let mut tail = [0u8; 8];
            let mut n = 0;
            for d in value.bytes().rev().filter(u8::is_ascii_digit).take(8) {
                tail[7 - n] = d;
                n += 1;
            }
            n == 8
                && (tail.iter().all(|d| *d == tail[0])
                    || tail.windows(2).all(|w| w[1] == w[0] + 1)
                    || tail.windows(2).all(|w| w[0] == w[1] + 1))
        }
        EMAIL => match value.rsplit_once('@') {
            Some((local, domain)) => LOCAL_PARTS.contains(&local) || DOMAINS.contains(&domain),
            None => true,
        },
        _ => value.chars().all(|c| c == '0'),
    }
}

/// The request for one event, built from its cleaned lead.
pub struct RequestInput<'a> {
    pub event_id: &'a str,
    pub connector: &'a str,
    pub external_id: Option<&'a str>,
    /// The version of the source row (see `IntakeEvent::revision`).
    pub revision: Option<&'a str>,
    pub received_at: &'a str,
    pub lead: &'a NormalizedLead,
    pub custom: &'a Map<String, Value>,
    pub identity_fields: &'a BTreeMap<String, String>,
    /// Whether the request carries the contact fields ([`IdentityRequest::profile`]): only for
    /// a store that keeps them ([`IdentityStore::keeps_profiles`]).
    pub profile: bool,
}

impl Policy {
    pub fn request(&self, input: RequestInput<'_>) -> IdentityRequest {
        let reachable = input.lead.is_usable();
        let c = &input.lead.contact;
        let profile: Vec<(String, String)> = if !input.profile {
            Vec::new()
        } else {
            [
                ("name", c.name.as_deref()),
                ("phone", c.phone.as_deref()),
                ("phone_ext", c.phone_ext.as_deref()),
                ("email", c.email.as_deref()),
                ("company", c.company.as_deref()),
                ("title", c.title.as_deref()),
                ("industry", c.industry.as_deref()),
                ("province", c.province.as_deref()),
                ("city", c.city.as_deref()),
                ("address", c.address.as_deref()),
            ]
            .into_iter()
            .filter_map(|(f, v)| Some((f.to_owned(), v?.to_owned())))
            .collect()
        };
        IdentityRequest {
            event_id: input.event_id.to_owned(),
            source_key: input
                .external_id
                .filter(|id| !id.trim().is_empty())
                .map(|id| match input.revision {
                    Some(rev) => format!("{}\u{1f}{}\u{1f}{rev}", input.connector, id.trim()),
                    None => format!("{}\u{1f}{}", input.connector, id.trim()),
                }),
            resolve: reachable,
            keys: if reachable {
                self.keys_of(input.lead, input.custom, input.identity_fields)
            } else {
                Vec::new()
            },
            traits: Traits::of(c),
            profile,
            connector: input.connector.to_owned(),
            received_at: input.received_at.to_owned(),
        }
    }
}

/// The outcome published on a record, or `None` for a duplicate or an unresolved (rejected) lead.
pub fn outcome_of(r: &Resolution) -> Option<&IdentityOutcome> {
    match r {
        Resolution::Person(o) => Some(o),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_never_identify() {
        let p = Policy::default();
        for (kind, v) in [
            (PHONE, "+8613888888888"),
            (PHONE, "+861012345678"),
            (PHONE, "+8613987654321"),
            (EMAIL, "test@qq.com"),
            (EMAIL, "zhang@example.com"),
            ("wechat", "null"),
            ("wechat", " NULL "),
            ("qq", "暂无"),
            ("qq", "N/A"),
            (EMAIL, "NoEmail@QQ.com"),
            (EMAIL, "no-at-sign"),
            (PHONE, "+86 138 1234 5678"),
            ("crm_id", "000"),
        ] {
            assert!(!p.allows(&IdentityKey::new(kind, v)), "{kind}:{v}");
        }
        for (kind, v) in [
            (PHONE, "+8613800138000"),
            (EMAIL, "zhangsan@qq.com"),
            (EMAIL, "Zhang.San@QQ.com"),
            ("wechat", "wxid_abc"),
            ("wechat", "Ｎｕｌｌ"),
            (PHONE, "+86 138 1234 5679"),
            (PHONE, "1234567"),
        ] {
            assert!(p.allows(&IdentityKey::new(kind, v)), "{kind}:{v}");
        }
    }

    #[test]
    fn configured_values_are_blocked() {
        let p = Policy::new(&IdentitySettings {
            blocked_values: vec!["phone:+8613800138000".into()],
            ..Default::default()
        });
        assert!(!p.allows(&IdentityKey::new(PHONE, "+8613800138000")));
        assert_eq!(p.max_values(PHONE), 2);
        assert_eq!(p.max_values("wechat"), 1);
        assert_eq!(p.max_people(EMAIL), 1);
    }
}
