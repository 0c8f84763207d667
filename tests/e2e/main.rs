//! Integration tests: the real binary, a real Kafka-protocol broker (tansu) and a real client
//! (rdkafka). Run them all with `scripts/test`, which installs and starts what they need.

mod assignment;
mod config;
mod identity;
#[cfg(feature = "mysql")]
mod identity_mysql;
mod import;
mod kafka;
mod normalize;
mod support;
mod webhooks;
