//! The suppression list of gateways that share a MySQL identity store: an erasure asked of one
//! gateway suppresses the person on all of them. The salt and the hashes are kept in
//! `leadgate_privacy` and `leadgate_suppressed`; each gateway reads the new hashes every few
//! seconds ([`super::Erasures::refresh`]).

use super::Hash;
use crate::sql::{Mysql, SqlError};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS leadgate_privacy (
        k VARBINARY(64) NOT NULL PRIMARY KEY, v VARBINARY(255) NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS leadgate_suppressed (
        seq BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
        h BINARY(32) NOT NULL UNIQUE, request_id VARBINARY(128) NOT NULL) ENGINE=InnoDB",
];

pub struct SharedList {
    db: Mysql,
}

impl SharedList {
    pub fn connect(url: &str) -> Result<Self, SqlError> {
        Ok(Self {
            db: Mysql::connect(url, SCHEMA)?,
        })
    }

    /// The shared salt: `candidate` if no gateway made one before.
    pub fn salt(&self, candidate: [u8; 32]) -> Result<[u8; 32], SqlError> {
        self.db.transaction(true, |tx| {
            tx.run(
                "INSERT IGNORE INTO leadgate_privacy (k, v) VALUES ('salt', ?)",
                (candidate.to_vec(),),
            )?;
            let salt = tx
                .first_blob("SELECT v FROM leadgate_privacy WHERE k = 'salt'", ())?
                .unwrap_or_default();
            <[u8; 32]>::try_from(salt.as_slice())
                .map_err(|_| SqlError::Other("leadgate_privacy: the salt is not 32 bytes".into()))
        })
    }

    pub fn add(&self, request_id: &str, hashes: &[Hash]) -> Result<(), SqlError> {
        if hashes.is_empty() {
            return Ok(());
        }
        self.db.transaction(true, |tx| {
            for h in hashes {
                tx.run(
                    "INSERT IGNORE INTO leadgate_suppressed (h, request_id) VALUES (?, ?)",
                    (h.to_vec(), request_id),
                )?;
            }
            Ok(())
        })
    }

    /// The hashes added after `seq`, with their sequence numbers, oldest first.
    pub fn since(&self, seq: u64) -> Result<Vec<(u64, Vec<u8>)>, SqlError> {
        self.db.transaction(false, |tx| {
            tx.rows(
                "SELECT seq, h FROM leadgate_suppressed WHERE seq > ? ORDER BY seq LIMIT 10000",
                (seq,),
            )
        })
    }
}
