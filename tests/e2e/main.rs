//! Integration tests: the real binary, a real Kafka-protocol broker (tansu) and a real client
//! (rdkafka). Run them all with `scripts/test`, which installs and starts what they need.

mod assignment;
mod config;
mod console;
mod erasure;
mod forms;
#[cfg(feature = "mysql")]
mod ha;
mod hostile;
mod identity;
mod import;
mod kafka;
mod lifecycle;
mod linkedin;
mod meta;
mod metrics;
#[cfg(feature = "mysql")]
mod mysql_source;
mod normalize;
mod oauth;
mod oauth_platforms;
mod platforms;
mod privacy;
#[cfg(feature = "mysql")]
mod shared_mysql;
mod stats;
mod support;
mod tencent;
mod tiktok;
mod webhooks;
