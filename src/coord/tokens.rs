//! OAuth tokens of leased connectors in the coordination database, so that the gateway that
//! takes a lease over refreshes with the refresh token the last holder got (platforms that rotate
//! it, 巨量引擎 and 腾讯广告, accept each refresh token once). A write is fenced: it lands only
//! while the writer holds the connector's current lease epoch.

use std::sync::{Arc, OnceLock};

use crate::sql::{Mysql, SqlError};

const SCHEMA: &[&str] = &["CREATE TABLE IF NOT EXISTS leadgate_tokens (
        connector VARBINARY(255) NOT NULL PRIMARY KEY, generation BIGINT UNSIGNED NOT NULL,
        epoch BIGINT UNSIGNED NOT NULL, v MEDIUMBLOB NOT NULL, updated DATETIME(6) NOT NULL)
        ENGINE=InnoDB"];

fn io(e: SqlError) -> std::io::Error {
    std::io::Error::other(match e {
        SqlError::Conflict(m) | SqlError::Other(m) => format!("the shared token store: {m}"),
    })
}

pub struct SharedTokens {
    db: Mysql,
}

static GLOBAL: OnceLock<Arc<SharedTokens>> = OnceLock::new();

impl SharedTokens {
    pub fn connect(url: &str) -> Result<Self, SqlError> {
        // The leases' table is created here too: writes join it.
        let mut schema = SCHEMA.to_vec();
        schema.push(super::mysql::LEASES_TABLE);
        Ok(Self {
            db: Mysql::connect(url, &schema)?,
        })
    }

    /// Makes this the store every token file of a leased connector goes through.
    pub fn install(self) {
        let _ = GLOBAL.set(Arc::new(self));
    }

    pub fn get() -> Option<Arc<SharedTokens>> {
        GLOBAL.get().cloned()
    }

    /// The stored tokens (the token file's bytes) and their generation.
    pub fn load(&self, connector: &str) -> std::io::Result<Option<(u64, Vec<u8>)>> {
        self.db
            .transaction(false, |tx| -> Result<_, SqlError> {
                let rows: Vec<(u64, Vec<u8>)> = tx.rows(
                    "SELECT generation, v FROM leadgate_tokens WHERE connector = ?",
                    (connector,),
                )?;
                Ok(rows.into_iter().next())
            })
            .map_err(io)
    }

    /// The stored generation (0 without tokens): a cheap check before [`SharedTokens::load`].
    pub fn generation(&self, connector: &str) -> std::io::Result<u64> {
        self.db
            .transaction(false, |tx| -> Result<_, SqlError> {
                let rows: Vec<u64> = tx.rows(
                    "SELECT generation FROM leadgate_tokens WHERE connector = ?",
                    (connector,),
                )?;
                Ok(rows.first().copied().unwrap_or(0))
            })
            .map_err(io)
    }

    /// Stores `bytes` (of `generation`) if `epoch` is the connector's current lease; `false` when
    /// it is not (another gateway holds it now: nothing written).
    pub fn save(
        &self,
        connector: &str,
        generation: u64,
        bytes: &[u8],
        epoch: u64,
    ) -> std::io::Result<bool> {
        self.db
            .transaction(true, |tx| -> Result<_, SqlError> {
                tx.run(
                    "INSERT INTO leadgate_tokens (connector, generation, epoch, v, updated) \
                     SELECT l.connector, ?, l.epoch, ?, NOW(6) FROM leadgate_leases l \
                     WHERE l.connector = ? AND l.epoch = ? \
                     ON DUPLICATE KEY UPDATE generation = VALUES(generation), epoch = VALUES(epoch), \
                     v = VALUES(v), updated = VALUES(updated)",
                    (generation, bytes, connector, epoch),
                )?;
                Ok(tx.affected() > 0)
            })
            .map_err(io)
    }
}
