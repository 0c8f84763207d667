//! The MySQL/MariaDB identity store, for several gateways sharing identities.
//!
//! The algorithm is the same as the embedded store's ([`super::resolve`]); this file only reads
//! and writes. A batch is one InnoDB transaction at REPEATABLE READ: keys and people are read
//! `FOR UPDATE`, so two gateways resolving the same new person at once cannot both create it.
//! InnoDB lets one of them through and rolls the other back as a deadlock (or a lock wait
//! timeout); that batch is retried from the start and finds the person the first one created.
//!
//! `mysql_async` is asynchronous and the store interface is not (the pipeline calls it from a
//! blocking task, `import` from async code): the store owns a one-thread runtime and drives it from
//! a scoped thread of its own, so it works from either.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Opts, Pool, Transaction, TxOpts};
use tokio::runtime::{Handle, Runtime};

use super::resolve::{
    self, Cluster, Graph, GraphRead, KeyLinks, Member, Person, Resolution, decode, encode,
};
use super::{IdentityError, IdentityRequest, IdentityStore, Policy};
use crate::lead::IdentityOutcome;

/// Tables are created when missing. Keys are binary: `wx-A` and `wx-a` are different ids, which a
/// case-insensitive collation would fold.
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS leadgate_identity_keys (
        k VARBINARY(768) NOT NULL PRIMARY KEY, v MEDIUMBLOB NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS leadgate_people (
        lead_id VARBINARY(64) NOT NULL PRIMARY KEY, v MEDIUMBLOB NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS leadgate_members (
        lead_id VARBINARY(64) NOT NULL, event_id VARBINARY(128) NOT NULL, v BLOB NOT NULL,
        PRIMARY KEY (lead_id, event_id)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS leadgate_outcomes (
        event_id VARBINARY(128) NOT NULL PRIMARY KEY, v BLOB NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS leadgate_sources (
        k VARBINARY(768) NOT NULL PRIMARY KEY, event_id VARBINARY(128) NOT NULL) ENGINE=InnoDB",
];

/// How often a batch that lost a lock conflict is tried again before the error reaches the
/// delivery loop (which then retries it with backoff, forever).
const ATTEMPTS: u32 = 8;

pub struct MysqlIdentityStore {
    pool: Pool,
    handle: Handle,
    /// Shut down in the background on drop: dropping a runtime inside another one's async code
    /// would panic.
    runtime: Option<Runtime>,
    policy: Policy,
}

fn db(e: mysql_async::Error) -> IdentityError {
    match &e {
        // Deadlock, lock wait timeout: another writer won; the batch can be retried.
        mysql_async::Error::Server(s) if s.code == 1213 || s.code == 1205 => {
            IdentityError::Conflict(s.message.clone())
        }
        _ => IdentityError::Storage(format!("mysql: {e}")),
    }
}

impl MysqlIdentityStore {
    /// Connects to `url` (`mysql://user:password@host:3306/database`) and creates the tables
    /// that are missing.
    pub fn connect(url: &str, policy: Policy) -> Result<Self, IdentityError> {
        let opts = Opts::from_url(url)
            .map_err(|e| IdentityError::Storage(format!("the MySQL URL is not valid: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("leadgate-mysql")
            .enable_all()
            .build()
            .map_err(|e| IdentityError::Storage(e.to_string()))?;
        let pool = {
            let _in = runtime.enter();
            Pool::new(opts)
        };
        let store = Self {
            pool,
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            policy,
        };
        store.on_own_thread(|h| {
            h.block_on(async {
                let mut conn = store.pool.get_conn().await.map_err(db)?;
                for statement in SCHEMA {
                    conn.query_drop(*statement).await.map_err(db)?;
                }
                Ok(())
            })
        })?;
        Ok(store)
    }

    /// Runs `f` on a thread outside any async runtime, so that it may block on this store's.
    fn on_own_thread<T: Send>(
        &self,
        f: impl FnOnce(&Handle) -> Result<T, IdentityError> + Send,
    ) -> Result<T, IdentityError> {
        let handle = &self.handle;
        std::thread::scope(|s| {
            s.spawn(|| f(handle))
                .join()
                .unwrap_or_else(|_| Err(IdentityError::Storage("the MySQL worker panicked".into())))
        })
    }

    fn resolve_once(
        &self,
        h: &Handle,
        requests: &[IdentityRequest],
    ) -> Result<Vec<Resolution>, IdentityError> {
        let mut opts = TxOpts::default();
        opts.with_isolation_level(mysql_async::IsolationLevel::RepeatableRead);
        let tx = h.block_on(self.pool.start_transaction(opts)).map_err(db)?;
        let mut g = MyTxn {
            h,
            tx,
            last_order: 0,
        };
        let out: Result<Vec<_>, _> = requests
            .iter()
            .map(|r| resolve::resolve(&mut g, r, &self.policy))
            .collect();
        match out {
            Ok(out) => {
                h.block_on(g.tx.commit()).map_err(db)?;
                Ok(out)
            }
            Err(e) => {
                let _ = h.block_on(g.tx.rollback());
                Err(e)
            }
        }
    }
}

struct MyTxn<'h> {
    h: &'h Handle,
    tx: Transaction<'static>,
    last_order: u64,
}

impl MyTxn<'_> {
    fn first_blob(
        &mut self,
        sql: &str,
        params: impl Into<mysql_async::Params> + Send,
    ) -> Result<Option<Vec<u8>>, IdentityError> {
        self.h
            .block_on(self.tx.exec_first::<Vec<u8>, _, _>(sql, params))
            .map_err(db)
    }

    fn run(
        &mut self,
        sql: &str,
        params: impl Into<mysql_async::Params> + Send,
    ) -> Result<(), IdentityError> {
        self.h.block_on(self.tx.exec_drop(sql, params)).map_err(db)
    }
}

impl GraphRead for MyTxn<'_> {
    fn person(&mut self, lead_id: &str) -> Result<Option<Person>, IdentityError> {
        self.first_blob(
            "SELECT v FROM leadgate_people WHERE lead_id = ? FOR UPDATE",
            (lead_id,),
        )?
        .map(|b| decode(&b))
        .transpose()
    }

    fn key(&mut self, key: &str) -> Result<KeyLinks, IdentityError> {
        Ok(self
            .first_blob(
                "SELECT v FROM leadgate_identity_keys WHERE k = ? FOR UPDATE",
                (key,),
            )?
            .map(|b| decode(&b))
            .transpose()?
            .unwrap_or_default())
    }

    fn members(&mut self, lead_id: &str) -> Result<Vec<Member>, IdentityError> {
        let rows: Vec<Vec<u8>> = self
            .h
            .block_on(self.tx.exec(
                "SELECT v FROM leadgate_members WHERE lead_id = ? ORDER BY event_id",
                (lead_id,),
            ))
            .map_err(db)?;
        rows.iter().map(|b| decode(b)).collect()
    }
}

impl Graph for MyTxn<'_> {
    fn outcome(&mut self, event_id: &str) -> Result<Option<IdentityOutcome>, IdentityError> {
        self.first_blob(
            "SELECT v FROM leadgate_outcomes WHERE event_id = ?",
            (event_id,),
        )?
        .map(|b| decode(&b))
        .transpose()
    }

    fn put_outcome(&mut self, event_id: &str, o: &IdentityOutcome) -> Result<(), IdentityError> {
        self.run(
            "INSERT INTO leadgate_outcomes (event_id, v) VALUES (?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v)",
            (event_id, encode(o)),
        )
    }

    fn claim_source(&mut self, key: &str, event_id: &str) -> Result<String, IdentityError> {
        // A concurrent claim of the same key waits on the row lock, then sees the winner.
        self.run(
            "INSERT IGNORE INTO leadgate_sources (k, event_id) VALUES (?, ?)",
            (key, event_id),
        )?;
        let first = self.first_blob(
            "SELECT event_id FROM leadgate_sources WHERE k = ? FOR UPDATE",
            (key,),
        )?;
        Ok(first
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|| event_id.to_owned()))
    }

    fn put_key(&mut self, key: &str, links: &KeyLinks) -> Result<(), IdentityError> {
        self.run(
            "INSERT INTO leadgate_identity_keys (k, v) VALUES (?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v)",
            (key, encode(links)),
        )
    }

    fn put_person(&mut self, lead_id: &str, p: &Person) -> Result<(), IdentityError> {
        self.run(
            "INSERT INTO leadgate_people (lead_id, v) VALUES (?, ?) ON DUPLICATE KEY UPDATE v = VALUES(v)",
            (lead_id, encode(p)),
        )
    }

    fn add_member(&mut self, lead_id: &str, m: &Member) -> Result<(), IdentityError> {
        self.run(
            "INSERT IGNORE INTO leadgate_members (lead_id, event_id, v) VALUES (?, ?, ?)",
            (lead_id, m.event_id.as_str(), encode(m)),
        )
    }

    /// Creation order across gateways: microseconds since the epoch, strictly increasing within
    /// a batch. Clocks of different hosts may disagree by a little; the oldest person still wins
    /// a merge up to that skew, and the choice is stored, so it never changes afterwards.
    fn next_order(&mut self) -> Result<u64, IdentityError> {
        let now = jiff::Timestamp::now().as_microsecond().max(0) as u64;
        self.last_order = now.max(self.last_order + 1);
        Ok(self.last_order)
    }
}

impl IdentityStore for MysqlIdentityStore {
    fn resolve(&self, requests: &[IdentityRequest]) -> Result<Vec<Resolution>, IdentityError> {
        self.on_own_thread(|h| {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self.resolve_once(h, requests) {
                    Err(IdentityError::Conflict(why)) if attempt < ATTEMPTS => {
                        tracing::debug!(%why, attempt, "identity batch lost a lock conflict; retrying");
                        std::thread::sleep(Duration::from_millis(
                            5 * u64::from(attempt) + fastrand::u64(..20),
                        ));
                    }
                    other => return other,
                }
            }
        })
    }

    fn explain(&self, lead_id: &str) -> Result<Option<Cluster>, IdentityError> {
        self.on_own_thread(|h| {
            let tx = h
                .block_on(self.pool.start_transaction(TxOpts::default()))
                .map_err(db)?;
            let mut g = MyTxn {
                h,
                tx,
                last_order: 0,
            };
            let out = resolve::explain(&mut g, lead_id);
            let _ = h.block_on(g.tx.rollback());
            out
        })
    }
}

impl Drop for MysqlIdentityStore {
    fn drop(&mut self) {
        let pool = self.pool.clone();
        let _ = self.on_own_thread(|h| {
            let _ = h.block_on(pool.disconnect());
            Ok(())
        });
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
