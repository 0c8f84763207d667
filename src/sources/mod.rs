//! Sources: how leads enter. One module per connector kind; each turns its input into
//! [`IntakeEvent`](crate::lead::IntakeEvent)s for the journal or the pipeline.

pub mod file;
pub mod google_ads;
pub mod http_pull;
#[cfg(feature = "mysql")]
pub mod mysql;
pub mod pull;
pub mod status;
pub mod webhook;
