//! Identity: which person a lead belongs to. Keys are derived from the normalized contact; the
//! store resolves them to a `lead_id`, merging people that one lead proves to be the same.
//!
//! The store is a trait so that several gateways can later share one (MySQL); the embedded redb
//! backend is the default.

mod embedded;

pub use embedded::EmbeddedIdentityStore;

use std::fmt;

use crate::lead::IdentityOutcome;
use crate::normalize::NormalizedLead;

/// Which kind of value a key is; also what `identity.matched_on` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyKind {
    Phone,
    Email,
}

impl KeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Phone => "phone",
            Self::Email => "email",
        }
    }
}

/// A normalized value that identifies one person, e.g. `phone:+8613800138000`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdentityKey {
    pub kind: KeyKind,
    pub value: String,
}

impl fmt::Display for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.value)
    }
}

/// The keys of a cleaned lead. Switchboard numbers (400/800) and role mailboxes (sales@, info@)
/// identify companies, not people, and are left out.
pub fn keys_of(lead: &NormalizedLead) -> Vec<IdentityKey> {
    let mut keys = Vec::with_capacity(2);
    if let Some(p) = lead.phone.as_ref().filter(|p| p.kind().identifies_person()) {
        keys.push(IdentityKey {
            kind: KeyKind::Phone,
            value: p.e164().to_owned(),
        });
    }
    if let Some(e) = lead.email.as_ref().filter(|e| !e.is_role()) {
        keys.push(IdentityKey {
            kind: KeyKind::Email,
            value: e.identity_key().to_owned(),
        });
    }
    keys
}

/// One event to resolve.
#[derive(Debug, Clone)]
pub struct IdentityRequest {
    pub event_id: String,
    pub keys: Vec<IdentityKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the data directory is in use by another leadgate process (identity store {0})")]
    Locked(String),
    #[error("identity store: {0}")]
    Storage(String),
}

/// Resolves events to people. Implementations must be idempotent per `event_id`: resolving an
/// event again (after a crash, before its delivery was acknowledged) gives the first outcome.
pub trait IdentityStore: Send + Sync {
    /// Resolves `requests` in order, atomically; an error means none of them was applied.
    fn resolve(&self, requests: &[IdentityRequest]) -> Result<Vec<IdentityOutcome>, IdentityError>;
}
