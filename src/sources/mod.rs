//! Sources: how leads enter. One module per connector kind; each turns its input into
//! [`IntakeEvent`](crate::lead::IntakeEvent)s for the journal or the pipeline.

pub mod file;
pub mod google_ads;
pub mod http_pull;
pub mod inbox;
pub mod linkedin;
pub mod meta;
#[cfg(feature = "mysql")]
pub mod mysql;
pub mod oceanengine;
pub mod pull;
pub mod status;
pub mod tencent;
pub mod tiktok;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{ConnectorConfig, FieldMapping};

/// What the API needs of the running sources: their statuses, and the inboxes of platforms whose
/// webhooks hand notified ids to a fetcher (Meta, LinkedIn), by connector name.
#[derive(Clone, Default)]
pub struct Running {
    pub statuses: status::Statuses,
    pub inboxes: HashMap<String, Arc<inbox::Inbox>>,
}

/// Starts every source that runs on its own (pulls, binlog readers, fetchers of notified leads),
/// and returns what the API needs of them. A connector that cannot start is an error here; one
/// that fails later only shows it in its status.
pub fn spawn_all(
    connectors: &[ConnectorConfig],
    journal: &crate::intake::Journal,
    max_backlog: u64,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Running> {
    use anyhow::Context;
    let statuses = status::Statuses::new(connectors);
    let (j, st, m, s) = (journal, &statuses, max_backlog, shutdown);
    #[cfg(feature = "mysql")]
    mysql::spawn(connectors, j, st, m, s).context("cannot start the MySQL connectors")?;
    http_pull::spawn(connectors, j, st, m, s).context("cannot start the HTTP pulls")?;
    tiktok::spawn(connectors, j, st, m, s).context("cannot start the TikTok downloads")?;
    tencent::spawn(connectors, j, st, m, s).context("cannot start the Tencent Ads pulls")?;
    let mut inboxes = meta::spawn(connectors, j, st, m, s)
        .context("cannot start the Meta connectors")?
        .inboxes;
    inboxes.extend(
        linkedin::spawn(connectors, j, st, m, s).context("cannot start the LinkedIn connectors")?,
    );
    Ok(Running { statuses, inboxes })
}

/// How a connector's payloads are read: the field mapping (the connector's own names first, then
/// a platform's preset) and, for platforms whose answers are nested, the function that flattens a
/// payload into fields. A new platform adds its arm here; the pipeline does not change.
pub fn shape(c: &ConnectorConfig) -> (FieldMapping, Option<crate::mapping::FieldsFn>) {
    match c {
        ConnectorConfig::GoogleAds(g) => (
            google_ads::mapping_with_preset(&g.mapping),
            Some(Arc::new(google_ads::fields)),
        ),
        ConnectorConfig::HttpPull(h) => (
            http_pull::mapping_of(h),
            Some(Arc::new(http_pull::fields_of(&h.fields))),
        ),
        ConnectorConfig::Meta(m) => (
            meta::mapping_with_preset(&m.mapping),
            Some(Arc::new(meta::fields)),
        ),
        ConnectorConfig::Tencent(t) => (
            tencent::mapping_with_preset(&t.mapping),
            Some(Arc::new(tencent::fields)),
        ),
        ConnectorConfig::Tiktok(t) => (
            tiktok::mapping_with_preset(&t.mapping),
            Some(Arc::new(tiktok::fields)),
        ),
        ConnectorConfig::Linkedin(l) => (
            linkedin::mapping_with_preset(&l.mapping),
            Some(Arc::new(linkedin::fields)),
        ),
        ConnectorConfig::Oceanengine(o) => {
            let pull = oceanengine::pull_config(o);
            (
                http_pull::mapping_of(&pull),
                Some(Arc::new(http_pull::fields_of(&pull.fields))),
            )
        }
        _ => (c.mapping().clone(), None),
    }
}

/// The generic pull a connector runs, if any: its own (`http_pull`) or a platform preset's.
pub fn pull_of(
    c: &ConnectorConfig,
) -> Option<std::borrow::Cow<'_, crate::config::HttpPullConnector>> {
    match c {
        ConnectorConfig::HttpPull(h) => Some(std::borrow::Cow::Borrowed(&**h)),
        ConnectorConfig::Oceanengine(o) if o.pull => {
            Some(std::borrow::Cow::Owned(oceanengine::pull_config(o)))
        }
        _ => None,
    }
}

/// A platform's id as text: ids come as strings or as numbers.
pub fn id_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The top-level scalars of a payload (its ids, times, flat answers), the start of the fields a
/// platform's mapping reads.
pub fn scalars(
    obj: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    obj.iter()
        .filter(|(_, v)| !v.is_array() && !v.is_object())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `mapping` first, then a platform's preset names for each contact field.
pub fn with_preset(
    mapping: &FieldMapping,
    preset: &[(crate::mapping::ContactField, &[&str])],
) -> FieldMapping {
    let mut out = mapping.clone();
    for (field, names) in preset {
        out.entry(*field)
            .or_default()
            .extend(names.iter().map(|n| (*n).to_owned()));
    }
    out
}

/// Adds `full` as `first last` when a form asked for the two parts only.
pub fn join_name(
    fields: &mut serde_json::Map<String, serde_json::Value>,
    full: &str,
    first: &str,
    last: &str,
) {
    if fields.contains_key(full) {
        return;
    }
    let part = |k: &str| {
        fields
            .get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .trim()
    };
    let joined = format!("{} {}", part(first), part(last));
    if !joined.trim().is_empty() {
        fields.insert(
            full.to_owned(),
            serde_json::Value::String(joined.trim().to_owned()),
        );
    }
}

/// A recorded payload of `platform` from `connectors/fixtures/` (for unit tests).
#[cfg(test)]
pub(crate) fn fixture_bytes(platform: &str, name: &str) -> Vec<u8> {
    let path = format!(
        "{}/connectors/fixtures/{platform}/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// [`fixture_bytes`] as JSON.
#[cfg(test)]
pub(crate) fn fixture_json(platform: &str, name: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture_bytes(platform, name)).expect("a JSON fixture")
}
