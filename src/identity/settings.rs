//! `[identity]` and the store settings it shares with `[assignment]`: the guards of identity
//! matching and where identities live (see `docs/identity.md`).

use std::collections::BTreeMap;

use secrecy::SecretString;
use serde::Deserialize;

/// `[identity]`: the guards of identity matching (see `docs/identity.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySettings {
    /// Key values that never link people, written `kind:value`: `"phone:+8613800000000"`,
    /// `"email:test@company.cn"`. Placeholders (`0`, `null`, `138 8888 8888`, `test@...`) are
    /// always blocked.
    pub blocked_values: Vec<String>,
    /// Distinct values of a key kind one person may hold (default: phone 2, email 2, any platform
    /// id 1). A lead that would push a person past it stays apart.
    pub max_values_per_person: BTreeMap<String, usize>,
    /// People a key may be linked to before it stops being an identifier (default 1 per kind).
    pub max_people_per_key: BTreeMap<String, usize>,
    /// Jaro-Winkler similarity (0-1) of names at or above which a name supports a match.
    pub name_similarity: f64,
    /// Where identities live: the embedded store under the data directory (default), or a
    /// MySQL/MariaDB database several gateways share.
    pub store: StoreSettings,
}

/// `[identity.store]`, `[assignment.store]`: the embedded store under the data directory, or a
/// MySQL/MariaDB database several gateways share.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreSettings {
    #[default]
    Embedded,
    Mysql {
        /// `mysql://user:password@host:3306/database`; write `"${IDENTITY_MYSQL_URL}"`.
        url: SecretString,
    },
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            blocked_values: Vec::new(),
            max_values_per_person: BTreeMap::new(),
            max_people_per_key: BTreeMap::new(),
            name_similarity: 0.9,
            store: StoreSettings::Embedded,
        }
    }
}
