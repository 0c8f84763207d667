//! Assignment (线索分配): who gets the lead. Today a pass-through: with no rules configured every
//! lead carries `assignment: null`. Rules, strategies and their API plug in here.

use crate::lead::{Assignment, LeadRecord};

/// Decides the owner of a clean lead.
#[derive(Debug, Default, Clone)]
pub struct Assigner;

impl Assigner {
    /// The assignment for `lead`, or `None` when no rule applies.
    pub fn assign(&self, _lead: &LeadRecord) -> Option<Assignment> {
        None
    }
}
