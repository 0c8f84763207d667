//! The pipeline: journaled events → map → normalize/validate → identity → assign → records, and
//! the delivery loop ([`deliver`]) that moves records to the sink and acknowledges the journal
//! only after the sink confirmed them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use phonenumber::country;

mod deliver;
mod recent;

pub use deliver::{ISOLATE_AFTER, deliver_forever};
pub use recent::{KEPT as KEPT_REJECTIONS, RecentRejections, Rejection};

use crate::assign::Assigner;
use crate::config::{ConnectorConfig, FieldMapping, TestLeads, Topics};
use crate::identity::{
    IdentityError, IdentityKey, IdentityStore, Policy, RequestInput, Resolution,
};
use crate::lead::{
    IntakeEvent, Issue, LeadRecord, MergedRecord, SCHEMA_VERSION, SourceKind, SourceRef,
    now_rfc3339,
};
use crate::mapping::Mapper;
use crate::normalize::{NormalizedLead, normalize};
use crate::sinks::OutRecord;

/// The records of processed events, and each event's disposition and attribution.
pub type Attributed = (
    Vec<OutRecord>,
    Vec<(Disposition, crate::stats::Attribution)>,
);

/// Events mapped and normalized, with their attributions and identity requests: what
/// [`Processor::prepare`] gives [`Processor::finish`].
pub struct Prepared {
    cleaned: Vec<(NormalizedLead, serde_json::Map<String, serde_json::Value>)>,
    attributions: Vec<crate::stats::Attribution>,
    requests: Vec<crate::identity::IdentityRequest>,
    /// Per event: its phone or address is on the suppression list (an erasure).
    suppressed: Vec<bool>,
}

/// Prepared events resolved by identity: what [`Processor::resolve`] gives
/// [`Processor::records`].
pub struct Resolved {
    cleaned: Vec<(NormalizedLead, serde_json::Map<String, serde_json::Value>)>,
    attributions: Vec<crate::stats::Attribution>,
    resolutions: Vec<Resolution>,
    suppressed: Vec<bool>,
}

/// How one event came out, for summaries and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    Accepted {
        merged: bool,
        /// How identity resolved it.
        identity: Option<crate::lead::IdentityStatus>,
        /// `None` without assignment rules; then the rule that assigned it, or `None` when no
        /// rule matched.
        assignment: Option<Option<String>>,
    },
    Rejected {
        codes: Vec<String>,
    },
    /// A platform redelivered a lead already ingested (same connector and platform lead id):
    /// nothing is published.
    Duplicate,
    /// A platform's test lead, published to the test topic only.
    Test,
}

/// A connector's mapping and region, compiled once.
struct Profile {
    mapper: Mapper,
    region: country::Id,
    identity_fields: BTreeMap<String, String>,
    /// A platform's payload -> the flat fields the mapping reads (the payload itself otherwise).
    fields: Option<crate::mapping::FieldsFn>,
    test_leads: TestLeads,
    consent: Option<crate::consent::ConsentMapping>,
}

impl Profile {
    fn new(mapping: &FieldMapping, region: &str) -> Self {
        Self {
            mapper: Mapper::new(mapping),
            region: region.parse().unwrap_or(country::Id::CN),
            identity_fields: BTreeMap::new(),
            fields: None,
            test_leads: TestLeads::Topic,
            consent: None,
        }
    }

    fn of(c: &ConnectorConfig) -> Self {
        let (mapping, fields) = c.get().shape();
        let mut p = Self::new(&mapping, c.default_region());
        p.fields = fields;
        p.identity_fields = c.identity_fields().clone();
        p.test_leads = c.test_leads();
        p.consent = c.consent().cloned();
        p
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Assign(#[from] crate::assign::AssignError),
    #[error("cannot serialize a record: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// Turns events into publishable records. Stateless but for the identity store.
pub struct Processor {
    profiles: HashMap<String, Profile>,
    fallback: Profile,
    identity: Arc<dyn IdentityStore>,
    policy: Policy,
    assigner: Assigner,
    topics: Topics,
    recent: RecentRejections,
    /// The suppression list (erasures); `None` in imports' dry runs and tests.
    erasures: Option<Arc<crate::erasure::Erasures>>,
    retention: Option<crate::erasure::Retention>,
}

impl Processor {
    pub fn new(
        connectors: &[ConnectorConfig],
        topics: Topics,
        identity: Arc<dyn IdentityStore>,
        policy: Policy,
        assigner: Assigner,
    ) -> Self {
        let profiles = connectors
            .iter()
            .map(|c| (c.name().to_owned(), Profile::of(c)))
            .collect();
        Self {
            profiles,
            fallback: Profile::new(&FieldMapping::new(), "CN"),
            identity,
            policy,
            assigner,
            topics,
            recent: RecentRejections::default(),
            erasures: None,
            retention: None,
        }
    }

    /// With the retention the delivery loop enforces (`[privacy] retention`).
    pub fn with_retention(mut self, r: Option<crate::erasure::Retention>) -> Self {
        self.retention = r;
        self
    }

    pub fn retention(&self) -> Option<crate::erasure::Retention> {
        self.retention
    }

    /// With the suppression list that erased people's new leads are checked against.
    pub fn with_erasures(mut self, erasures: Arc<crate::erasure::Erasures>) -> Self {
        self.erasures = Some(erasures);
        self
    }

    pub fn erasures(&self) -> Option<&Arc<crate::erasure::Erasures>> {
        self.erasures.as_ref()
    }

    pub fn identity(&self) -> &Arc<dyn IdentityStore> {
        &self.identity
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// The identity keys a journaled event has, as its connector would clean it (an erasure
    /// looks for the person's among the undelivered events).
    pub fn event_keys(&self, event: &IntakeEvent) -> Vec<IdentityKey> {
        let (lead, custom) = self.clean(event);
        self.policy
            .keys_of(&lead, &custom, &self.profile(event).identity_fields)
    }

    /// Classifies and assigns clean records (segments, score, owner).
    pub fn assigner(&self) -> &Assigner {
        &self.assigner
    }

    /// Keeps the rejected records among `delivered` for [`Processor::recent_rejections`].
    pub fn delivered(&self, delivered: &[OutRecord]) {
        self.recent.note(delivered, &self.topics.rejected);
    }

    /// The latest rejected leads delivered, masked.
    pub fn recent_rejections(&self) -> &RecentRejections {
        &self.recent
    }

    /// Makes the identity store's resolutions so far durable (see [`IdentityStore::sync`]).
    pub fn sync(&self) -> Result<(), PipelineError> {
        Ok(self.identity.sync()?)
    }

    /// Housekeeping of the stores while idle (see [`IdentityStore::maintain`]).
    pub fn maintain(&self) -> Result<(), PipelineError> {
        Ok(self.identity.maintain()?)
    }

    /// A lead as `connector` would clean it, without identity or assignment (for previews).
    pub fn clean_record(&self, connector: &str, payload: &serde_json::Value) -> LeadRecord {
        let mut event = IntakeEvent::new(connector, SourceKind::Webhook, None, payload.clone());
        let (lead, custom) = self.clean(&event);
        let raw = std::mem::take(&mut event.payload);
        record_of(&event, lead, custom, raw)
    }

    /// The identity keys a lead with this phone number and this address would have, normalized as
    /// a webhook lead's are: how `GET /v1/leads?phone=` finds its person.
    pub fn search_keys(&self, phone: Option<&str>, email: Option<&str>) -> Vec<IdentityKey> {
        let mut payload = serde_json::Map::new();
        for (field, value) in [("phone", phone), ("email", email)] {
            if let Some(v) = value {
                payload.insert(field.into(), v.into());
            }
        }
        let event = IntakeEvent::new("search", SourceKind::Webhook, None, payload.into());
        let (lead, custom) = self.clean(&event);
        self.policy.keys_of(&lead, &custom, &BTreeMap::new())
    }

    /// Why `event` would be rejected (no usable phone and no usable email), or `None` when it
    /// would not: the same test as [`Processor::process`], without identity or assignment.
    pub fn rejection(&self, event: &IntakeEvent) -> Option<Vec<Issue>> {
        let (lead, custom) = self.clean(event);
        let profile = self.profile(event);
        let resolve = self
            .policy
            .request(RequestInput {
                event_id: &event.event_id,
                connector: &event.connector,
                external_id: event.external_id.as_deref(),
                revision: event.revision.as_deref(),
                received_at: &event.received_at,
                lead: &lead,
                custom: &custom,
                identity_fields: &profile.identity_fields,
                profile: false,
            })
            .resolve;
        (!resolve).then(|| rejection_reasons(&lead.issues, lead.is_reachable()))
    }

    /// Maps and normalizes an event with its connector's profile; the unmapped fields.
    fn clean(
        &self,
        e: &IntakeEvent,
    ) -> (NormalizedLead, serde_json::Map<String, serde_json::Value>) {
        let profile = self.profile(e);
        let read;
        let payload = match &profile.fields {
            Some(fields) => {
                read = fields(&e.payload);
                &read
            }
            None => &e.payload,
        };
        let mapped = profile.mapper.map_read(payload, &e.payload);
        let mut lead = normalize(&mapped, profile.region);
        if let Some(rule) = &profile.consent {
            let (consent, issues) = rule.read(&e.payload, &mapped.custom, &e.received_at);
            lead.issues.extend(issues);
            lead.consent = Some(consent);
        }
        (lead, mapped.custom)
    }

    fn profile(&self, e: &IntakeEvent) -> &Profile {
        self.profiles.get(&e.connector).unwrap_or(&self.fallback)
    }

    /// Where a platform's test lead goes (the test topic, or the clean one marked `source.test`):
    /// never through identity or assignment, so a test never matches, merges into or is
    /// deduplicated against a person, and never reaches a salesperson. `None` for real leads.
    fn test_topic(&self, e: &IntakeEvent) -> Option<&str> {
        e.test.then(|| match self.profile(e).test_leads {
            TestLeads::Topic => self.topics.test.as_str(),
            TestLeads::Flag => self.topics.clean.as_str(),
        })
    }

    /// Processes `events` in order. Records come out in event order; a merge record follows the
    /// clean record of the event that caused it.
    pub fn process(
        &self,
        events: &[IntakeEvent],
    ) -> Result<(Vec<OutRecord>, Vec<Disposition>), PipelineError> {
        let (records, outcomes) = self.process_attributed(events)?;
        Ok((records, outcomes.into_iter().map(|(d, _)| d).collect()))
    }

    /// [`Processor::process`], with each event's campaign, form and owner for the statistics.
    pub fn process_attributed(&self, events: &[IntakeEvent]) -> Result<Attributed, PipelineError> {
        self.finish(events, self.prepare(events))
    }

    /// The part of processing `events` that needs no store: mapping, normalization, attribution
    /// and the identity requests. It may run on another thread than [`Processor::finish`] (an
    /// import prepares the next batch while the current one is resolved).
    pub fn prepare(&self, events: &[IntakeEvent]) -> Prepared {
        let cleaned: Vec<_> = events.iter().map(|e| self.clean(e)).collect();
        let attributions: Vec<_> = events
            .iter()
            .zip(&cleaned)
            .map(|(e, (_, custom))| crate::stats::Attribution::of(custom, &e.payload))
            .collect();
        let mut suppressed = vec![false; events.len()];
        let profiles = self.identity.keeps_profiles();
        let requests: Vec<_> = events
            .iter()
            .zip(&cleaned)
            .enumerate()
            .filter(|(_, (e, _))| !e.test)
            .map(|(i, (e, (lead, custom)))| {
                let profile = self.profile(e);
                let request = self.policy.request(RequestInput {
                    event_id: &e.event_id,
                    connector: &e.connector,
                    external_id: e.external_id.as_deref(),
                    revision: e.revision.as_deref(),
                    received_at: &e.received_at,
                    lead,
                    custom,
                    identity_fields: &profile.identity_fields,
                    profile: profiles,
                });
                (i, request)
            })
            .filter(|(i, request)| {
                // An erased person's new lead goes nowhere near identity or assignment.
                let out = self
                    .erasures
                    .as_ref()
                    .is_some_and(|x| x.suppresses(&request.keys));
                suppressed[*i] = out;
                !out
            })
            .map(|(_, request)| request)
            .collect();
        Prepared {
            cleaned,
            attributions,
            requests,
            suppressed,
        }
    }

    /// Processes `events`, prepared by [`Processor::prepare`]: identity, assignment and the
    /// records, in event order.
    pub fn finish(
        &self,
        events: &[IntakeEvent],
        prepared: Prepared,
    ) -> Result<Attributed, PipelineError> {
        self.records(events, self.resolve(prepared)?)
    }

    /// The identity step of [`Processor::finish`]: resolves prepared events in order.
    pub fn resolve(&self, prepared: Prepared) -> Result<Resolved, PipelineError> {
        let Prepared {
            cleaned,
            attributions,
            requests,
            suppressed,
        } = prepared;
        let resolutions = self.identity.resolve(&requests)?;
        Ok(Resolved {
            cleaned,
            attributions,
            resolutions,
            suppressed,
        })
    }

    /// The rest of [`Processor::finish`]: assignment and the records of resolved events. It needs
    /// no identity store, so it may run beside the resolution of the next events.
    pub fn records(
        &self,
        events: &[IntakeEvent],
        resolved: Resolved,
    ) -> Result<Attributed, PipelineError> {
        self.records_with(events, resolved, |_, e, _| e.payload.clone())
    }

    /// [`Processor::records`] for events the caller owns: the payload of each event published
    /// as a clean record moves into its record (`Value::Null` is left in the event); the others
    /// keep theirs (a rejected row's goes in the import's report).
    pub fn records_taking(
        &self,
        events: &mut [IntakeEvent],
        resolved: Resolved,
    ) -> Result<Attributed, PipelineError> {
        let mut raws: Vec<serde_json::Value> = events
            .iter_mut()
            .map(|e| std::mem::take(&mut e.payload))
            .collect();
        let out = self.records_with(events, resolved, |i, _, clean| {
            if clean {
                std::mem::take(&mut raws[i])
            } else {
                raws[i].clone()
            }
        });
        for (e, raw) in events.iter_mut().zip(raws) {
            e.payload = raw;
        }
        out
    }

    /// `raw(i, event, clean)` gives the payload of the record of `events[i]` (`clean`: a clean
    /// record).
    fn records_with(
        &self,
        events: &[IntakeEvent],
        resolved: Resolved,
        mut raw: impl FnMut(usize, &IntakeEvent, bool) -> serde_json::Value,
    ) -> Result<Attributed, PipelineError> {
        let Resolved {
            cleaned,
            mut attributions,
            resolutions,
            suppressed,
        } = resolved;
        let mut resolutions = resolutions.into_iter();

        // Stage every event, then assign the clean ones in one batch, then serialize in order.
        enum Staged {
            Duplicate,
            Suppressed,
            Test(Box<LeadRecord>),
            Rejected(Box<LeadRecord>),
            Clean(Box<LeadRecord>, Option<MergedRecord>),
        }
        let mut staged = Vec::with_capacity(events.len());
        for (i, ((event, (lead, custom)), suppressed)) in
            events.iter().zip(cleaned).zip(suppressed).enumerate()
        {
            if suppressed {
                let flag = self
                    .erasures
                    .as_ref()
                    .is_some_and(|x| x.mode() == crate::erasure::Suppression::Flag);
                if !flag {
                    tracing::debug!(event_id = %event.event_id, "lead of an erased person dropped");
                    staged.push(Staged::Suppressed);
                    continue;
                }
                let mut record = record_of(event, lead, custom, raw(i, event, false));
                record.reasons = Some(vec![suppressed_issue()]);
                staged.push(Staged::Rejected(Box::new(record)));
                continue;
            }
            if event.test {
                let mut record = record_of(event, lead, custom, raw(i, event, false));
                if record.contact.phone.is_none() && record.contact.email.is_none() {
                    // The marketer testing a form sees that its real leads would be rejected.
                    record.issues.push(Issue::new(
                        "contact",
                        "contact.unreachable",
                        "no usable phone number and no usable email: a real lead like this one would be rejected",
                    ));
                }
                staged.push(Staged::Test(Box::new(record)));
                continue;
            }
            let resolution = resolutions.next().unwrap_or(Resolution::Unresolved);
            let outcome = match resolution {
                Resolution::Duplicate { first_event_id } => {
                    tracing::debug!(event_id = %event.event_id, %first_event_id, "platform redelivery dropped");
                    staged.push(Staged::Duplicate);
                    continue;
                }
                Resolution::Person(o) => Some(o),
                Resolution::Unresolved => None,
            };
            let reachable = lead.is_reachable();
            let mut record = record_of(event, lead, custom, raw(i, event, outcome.is_some()));
            let Some(outcome) = outcome else {
                record.reasons = Some(rejection_reasons(&record.issues, reachable));
                staged.push(Staged::Rejected(Box::new(record)));
                continue;
            };
            record.lead_id = Some(outcome.lead_id.clone());
            let merged = (!outcome.merged_lead_ids.is_empty()).then(|| MergedRecord {
                schema_version: SCHEMA_VERSION.into(),
                lead_id: outcome.lead_id.clone(),
                merged_lead_ids: outcome.merged_lead_ids.clone(),
                event_id: event.event_id.clone(),
                merged_at: now_rfc3339(),
            });
            record.identity = Some(outcome);
            staged.push(Staged::Clean(Box::new(record), merged));
        }
        let mut clean: Vec<&mut LeadRecord> = staged
            .iter_mut()
            .filter_map(|s| match s {
                Staged::Clean(r, _) => Some(&mut **r),
                _ => None,
            })
            .collect();
        self.assigner.assign(&mut clean)?;

        let mut records = Vec::with_capacity(events.len() + 1);
        let mut dispositions = Vec::with_capacity(events.len());
        for ((event, s), attribution) in events.iter().zip(staged).zip(&mut attributions) {
            match s {
                Staged::Duplicate => dispositions.push(Disposition::Duplicate),
                Staged::Suppressed => dispositions.push(Disposition::Rejected {
                    codes: vec![SUPPRESSED.to_owned()],
                }),
                Staged::Test(record) => {
                    let topic = self.test_topic(event).unwrap_or(&self.topics.test);
                    records.push(self.out(topic, record.event_id.clone(), &record, event)?);
                    dispositions.push(Disposition::Test);
                }
                Staged::Rejected(record) => {
                    let codes = record
                        .reasons
                        .iter()
                        .flatten()
                        .map(|r| r.code.to_string())
                        .collect();
                    dispositions.push(Disposition::Rejected { codes });
                    records.push(self.out(
                        &self.topics.rejected,
                        record.event_id.clone(),
                        &record,
                        event,
                    )?);
                }
                Staged::Clean(record, merged) => {
                    let key = record.lead_id.clone().unwrap_or_default();
                    let assignment = match &record.assignment {
                        Some(a) => Some(a.rule_id.clone()),
                        None if record
                            .issues
                            .iter()
                            .any(|i| i.code == "assignment.unmatched") =>
                        {
                            Some(None)
                        }
                        None => None,
                    };
                    let identity = record.identity.as_ref().map(|o| o.status);
                    *attribution = std::mem::take(attribution).assigned(&record);
                    records.push(self.out(&self.topics.clean, key, &record, event)?);
                    if let Some(m) = &merged {
                        records.push(self.out(&self.topics.merged, m.lead_id.clone(), m, event)?);
                    }
                    dispositions.push(Disposition::Accepted {
                        merged: merged.is_some(),
                        identity,
                        assignment,
                    });
                }
            }
        }
        Ok((
            records,
            dispositions.into_iter().zip(attributions).collect(),
        ))
    }

    fn out<T: serde::Serialize>(
        &self,
        topic: &str,
        key: String,
        value: &T,
        event: &IntakeEvent,
    ) -> Result<OutRecord, PipelineError> {
        Ok(OutRecord {
            topic: topic.to_owned(),
            key,
            value: serde_json::value::to_raw_value(value)?,
            headers: vec![
                ("event_id", event.event_id.clone()),
                ("source", event.connector.clone()),
                ("schema_version", SCHEMA_VERSION.to_owned()),
            ],
        })
    }
}

/// The reason code of a lead whose phone or address was erased (the suppression list).
pub const SUPPRESSED: &str = "privacy.suppressed";

fn suppressed_issue() -> Issue {
    Issue::new(
        "contact",
        SUPPRESSED,
        "this phone number or address was erased at the person's request (suppression list); the lead is not processed",
    )
}

/// The reasons of a lead rejected for want of a usable contact: that, and its issues with the
/// phone, the email or the body that explain it.
/// Why a lead is rejected: its consent first (when its connector requires one it did not give),
/// then, when nobody can reach it, `contact.unreachable` and what made its phone and email
/// unusable.
fn rejection_reasons(issues: &[Issue], reachable: bool) -> Vec<Issue> {
    let mut reasons: Vec<Issue> = issues
        .iter()
        .filter(|i| i.code == "consent.missing")
        .cloned()
        .collect();
    if !reasons.is_empty() {
        reasons.extend(
            issues
                .iter()
                .filter(|i| i.code == "consent.unreadable")
                .cloned(),
        );
    }
    if !reachable {
        reasons.push(Issue::new(
            "contact",
            "contact.unreachable",
            "no usable phone number and no usable email",
        ));
        reasons.extend(
            issues
                .iter()
                .filter(|i| matches!(&*i.field, "phone" | "email" | "body"))
                .cloned(),
        );
    }
    reasons
}

/// The record of a cleaned event, before identity and assignment.
fn record_of(
    event: &IntakeEvent,
    lead: NormalizedLead,
    custom: serde_json::Map<String, serde_json::Value>,
    raw: serde_json::Value,
) -> LeadRecord {
    LeadRecord {
        schema_version: SCHEMA_VERSION.into(),
        event_id: event.event_id.clone(),
        lead_id: None,
        received_at: event.received_at.clone(),
        source: SourceRef {
            connector: event.connector.clone(),
            kind: event.kind,
            external_id: event.external_id.clone(),
            revision: event.revision.clone(),
            test: event.test,
        },
        contact: lead.contact,
        consent: lead.consent,
        custom,
        raw,
        issues: if event.issues.is_empty() {
            lead.issues
        } else {
            event.issues.iter().cloned().chain(lead.issues).collect()
        },
        identity: None,
        segments: None,
        score: None,
        assignment: None,
        reasons: None,
    }
}

/// The code a rejection is counted under: the reason after the generic `contact.unreachable`
/// (what made the contact unusable), or that one alone.
pub fn verdict(codes: &[String]) -> &str {
    match codes.first().map(String::as_str) {
        Some("contact.unreachable") => codes.get(1).or(codes.first()).map_or("", String::as_str),
        first => first.unwrap_or(""),
    }
}

/// Counts of dispositions, for `import`'s summary.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub accepted: u64,
    pub merged: u64,
    pub duplicates: u64,
    /// Test leads sent to the test topic.
    pub tests: u64,
    pub rejected: BTreeMap<String, u64>,
}

impl Summary {
    pub fn add(&mut self, d: &Disposition) {
        match d {
            Disposition::Accepted { merged, .. } => {
                self.accepted += 1;
                self.merged += u64::from(*merged);
            }
            Disposition::Duplicate => self.duplicates += 1,
            Disposition::Test => self.tests += 1,
            Disposition::Rejected { codes } => {
                *self.rejected.entry(verdict(codes).to_owned()).or_default() += 1;
            }
        }
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}
