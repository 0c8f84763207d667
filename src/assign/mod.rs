//! Assignment (线索分配): who gets a clean lead. Rules are tried in priority order; the first whose
//! conditions hold and whose action finds an available owner decides. Rules, owners and teams are
//! managed through `/v1/assignment/` and live in an [`AssignmentStore`]; a change applies to the
//! next batch of leads.

mod embedded;
pub mod engine;
pub mod model;
#[cfg(feature = "mysql")]
mod mysql;
pub mod store;

#[cfg(feature = "mysql")]
pub use mysql::MysqlAssignmentStore;

pub use embedded::EmbeddedAssignmentStore;
pub use engine::{Decision, RuleTrace};
pub use store::{
    AssignBatch, AssignError, AssignRequest, AssignmentStore, AuditEntry, AuditFrom, Expect,
    Versioned, Written,
};

use std::sync::Arc;

use crate::lead::{Assignment, Issue, LeadRecord};

/// Decides the owners of clean leads, through the store.
#[derive(Clone)]
pub struct Assigner {
    store: Arc<dyn AssignmentStore>,
}

impl Assigner {
    pub fn new(store: Arc<dyn AssignmentStore>) -> Self {
        Self { store }
    }

    /// Assigns `records` (clean, with their `lead_id`) in one store transaction. A record no rule
    /// matches keeps `assignment: null` and gets an `assignment.unmatched` issue, once any rule
    /// exists.
    pub fn assign(&self, records: &mut [&mut LeadRecord]) -> Result<(), AssignError> {
        // Most gateways start without rules: then no record is serialized and nothing is written.
        if records.is_empty() || !self.store.has_rules()? {
            return Ok(());
        }
        let requests: Vec<AssignRequest> = records
            .iter()
            .map(|r| AssignRequest {
                event_id: r.event_id.clone(),
                lead_id: r.lead_id.clone(),
                lead: serde_json::to_value(&**r).unwrap_or_default(),
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
