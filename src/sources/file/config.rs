//! A file connector's definition (`type = "file"`): a named mapping for
//! `leadgate import --source NAME`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::mapping::FieldMapping;
use crate::sources::connector::{Connector, common_fields, default_region};

/// `type = "file"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConnector {
    pub name: String,
    #[serde(default = "default_region")]
    pub default_region: String,
    #[serde(default)]
    pub mapping: FieldMapping,
    #[serde(default)]
    pub external_id_field: Option<String>,
    #[serde(default)]
    pub identity_fields: BTreeMap<String, String>,
    /// The answer that says the person agreed, and whether it is required: see
    /// `docs/privacy.md#consent`.
    #[serde(default)]
    pub consent: Option<crate::consent::ConsentMapping>,
}

common_fields!(FileConnector);

/// A file connector only names a mapping for `leadgate import --source`; it runs nothing.
impl Connector for FileConnector {
    fn external_id_field(&self) -> Option<&str> {
        self.external_id_field.as_deref()
    }

    fn banner(&self, _: &str) -> Option<String> {
        None
    }
}
