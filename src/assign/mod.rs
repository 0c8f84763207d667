//! Assignment (线索分配): who gets a clean lead. Rules are tried in priority order; the first whose
//! conditions hold and whose action finds an available owner decides. Rules, owners and teams are
//! managed through `/v1/assignment/` and live in an [`AssignmentStore`]; a change applies to the
//! next batch of leads.

mod embedded;
pub mod engine;
pub mod lifecycle;
pub mod model;
#[cfg(feature = "mysql")]
mod mysql;
pub mod segments;
pub mod store;

#[cfg(feature = "mysql")]
pub use mysql::MysqlAssignmentStore;

pub use embedded::EmbeddedAssignmentStore;
pub use engine::{Decision, RuleTrace};
pub use store::{
    AssignBatch, AssignError, AssignRequest, AssignmentStore, AuditEntry, AuditFrom, Definitions,
    Expect, Versioned, Written,
};

use std::sync::Arc;

use crate::lead::{Assignment, Issue, LeadRecord};

/// Decides the owners of clean leads, through the store.
#[derive(Clone)]
pub struct Assigner {
    store: Arc<dyn AssignmentStore>,
    max_total: i64,
}

/// A score's total is kept within 0 and this, unless `[scoring] max_total` says otherwise.
pub const MAX_TOTAL: i64 = 100;

impl Assigner {
    pub fn new(store: Arc<dyn AssignmentStore>) -> Self {
        Self {
            store,
            max_total: MAX_TOTAL,
        }
    }

    /// With the score's total kept within `0..=max_total`.
    /// The store it assigns with.
    pub fn store(&self) -> &Arc<dyn AssignmentStore> {
        &self.store
    }

    pub fn with_max_total(mut self, max_total: i64) -> Self {
        self.max_total = max_total;
        self
    }

    /// The segments and score groups in force, to classify leads with, and whether any rule
    /// exists.
    pub fn classifier(&self) -> Result<(segments::Classifier, bool), AssignError> {
        let d = self.store.definitions()?;
        Ok((
            segments::Classifier {
                segments: d.segments,
                groups: d.groups,
                max_total: self.max_total,
            },
            d.rules,
        ))
    }

    /// Classifies `records` (clean, with their `lead_id`: their segments and score) and assigns
    /// them in one store transaction. A record no rule matches keeps `assignment: null` and gets
    /// an `assignment.unmatched` issue, once any rule exists.
    pub fn assign(&self, records: &mut [&mut LeadRecord]) -> Result<(), AssignError> {
        if records.is_empty() {
            return Ok(());
        }
        let (classifier, rules) = self.classifier()?;
        // Most gateways start without rules: then no record is serialized and nothing is written.
        if classifier.is_empty() && !rules {
            return Ok(());
        }
        let mut leads: Vec<serde_json::Value> = records
            .iter()
            .map(|r| serde_json::to_value(&**r).unwrap_or_default())
            .collect();
        if !classifier.is_empty() {
            for (record, lead) in records.iter_mut().zip(&mut leads) {
                let found = classifier.classify(lead);
                record.segments = found.segments;
                record.score = found.score;
                // Rules see them: `segments.id`, `score.total`.
                lead["segments"] = serde_json::to_value(&record.segments).unwrap_or_default();
                lead["score"] = serde_json::to_value(&record.score).unwrap_or_default();
            }
        }
        if !rules {
            return Ok(());
        }
        let requests: Vec<AssignRequest> = records
            .iter()
            .zip(leads)
            .map(|(r, lead)| AssignRequest {
                event_id: r.event_id.clone(),
                lead_id: r.lead_id.clone(),
                lead,
            })
            .collect();
        let batch = self.store.assign(&requests)?;
        for (record, decision) in records.iter_mut().zip(batch.decisions) {
            match decision {
                Some(d) => {
                    record.assignment = Some(Assignment {
                        owner: Some(d.owner),
                        team: d.team,
                        rule_id: Some(d.rule_id),
                        strategy: d.strategy.map(|s| s.as_str().to_owned()),
                        reason: d.reason,
                    });
                }
                None if batch.rules > 0 => record.issues.push(Issue::new(
                    "assignment",
                    "assignment.unmatched",
                    "no assignment rule matched, or no owner was available",
                )),
                None => {}
            }
        }
        Ok(())
    }
}
