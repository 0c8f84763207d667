//! leadgate: a lead-ingestion gateway.
//!
//! sources → durable intake → normalize/validate → identity → assign → sinks.
//! The modules below follow that order.

pub mod access;
pub mod api;
pub mod app;
pub mod assign;
pub mod config;
pub mod consent;
pub mod coord;
pub mod erasure;
/// What the fuzz targets check: test and fuzzing support, not part of the gateway.
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod http_error;
pub mod identity;
pub mod import;
pub mod imports;
pub mod intake;
pub mod lead;
pub mod lifecycle;
pub mod mapping;
pub mod mask;
pub mod normalize;
pub mod pipeline;
pub mod reopen;
pub mod retry;
pub mod seal;
pub mod sinks;
pub mod sources;
#[cfg(feature = "mysql")]
pub mod sql;
pub mod stats;
pub mod storefile;
pub mod telemetry;
