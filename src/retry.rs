//! How leadgate spaces retries that must not give up: the delivery loop, the Kafka sink, and the
//! sources' task loops. Its own module, so that sources and sinks need not import the pipeline.

use std::time::Duration;

/// Exponential with jitter, from 200 ms up to 10 s (20 s with jitter), forever: giving up would
/// drop acknowledged leads.
pub fn forever() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}
