//! MySQL/MariaDB plumbing the shared stores (identity, assignment) have in common.
//!
//! `mysql_async` is asynchronous and the stores' interfaces are not: the pipeline calls them from
//! blocking tasks, `import` from async code. So a [`Mysql`] owns a one-thread runtime and drives
//! it from a scoped thread of its own, which works from either. A [`Mysql::transaction`] is one
//! InnoDB transaction at REPEATABLE READ; one that loses a lock conflict to another writer (a
//! deadlock or a lock wait timeout) is retried from the start, a few times.

use std::time::Duration;

use mysql_async::prelude::{FromRow, Queryable};
use mysql_async::{Opts, Params, Pool, Transaction, TxOpts};
use tokio::runtime::{Handle, Runtime};

/// What went wrong talking to MySQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlError {
    /// Another writer won a lock; retrying the transaction resolves it.
    Conflict(String),
    Other(String),
}

impl SqlError {
    fn of(e: mysql_async::Error) -> Self {
        match &e {
            mysql_async::Error::Server(s) if s.code == 1213 || s.code == 1205 => {
                Self::Conflict(s.message.clone())
            }
            _ => Self::Other(format!("mysql: {e}")),
        }
    }
}

/// A store error that may say "retry me".
pub trait Retryable: From<SqlError> {
    fn is_conflict(&self) -> bool;
}

/// Plain SQL work (no store error of its own) retries its conflicts too.
impl Retryable for SqlError {
    fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict(_))
    }
}

/// How often a transaction that lost a lock conflict is tried before the error is returned.
const ATTEMPTS: u32 = 8;

pub struct Mysql {
    pool: Pool,
    handle: Handle,
    /// Shut down in the background on drop: dropping a runtime inside another one's async code
    /// would panic.
    runtime: Option<Runtime>,
}

impl Mysql {
    /// Connects to `url` (`mysql://user:password@host:3306/database`) and runs `schema` (the
    /// `CREATE TABLE IF NOT EXISTS` statements of a store).
    pub fn connect(url: &str, schema: &[&str]) -> Result<Self, SqlError> {
        let opts = Opts::from_url(url)
            .map_err(|e| SqlError::Other(format!("the MySQL URL is not valid: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("leadgate-mysql")
            .enable_all()
            .build()
            .map_err(|e| SqlError::Other(e.to_string()))?;
        let pool = {
            let _in = runtime.enter();
            Pool::new(opts)
        };
        let db = Self {
            pool,
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        };
        db.on_own_thread(|h| {
            h.block_on(async {
                let mut conn = db.pool.get_conn().await.map_err(SqlError::of)?;
                for statement in schema {
                    conn.query_drop(*statement).await.map_err(SqlError::of)?;
                }
                Ok(())
            })
        })?;
        Ok(db)
    }

    /// Runs `f` on a thread outside any async runtime, so that it may block on this one's.
    fn on_own_thread<T: Send, E: From<SqlError> + Send>(
        &self,
        f: impl FnOnce(&Handle) -> Result<T, E> + Send,
    ) -> Result<T, E> {
        let handle = &self.handle;
        std::thread::scope(|s| {
            s.spawn(|| f(handle))
                .join()
                .unwrap_or_else(|_| Err(SqlError::Other("the MySQL worker panicked".into()).into()))
        })
    }

    /// Runs `f` in a transaction: committed when `commit` and `f` succeed, rolled back otherwise;
    /// started again when it lost a lock conflict.
    pub fn transaction<T: Send, E: Retryable + Send>(
        &self,
        commit: bool,
        f: impl Fn(&mut Tx<'_>) -> Result<T, E> + Sync,
    ) -> Result<T, E> {
        self.on_own_thread(|h| {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self.once(h, commit, &f) {
                    Err(e) if e.is_conflict() && attempt < ATTEMPTS => {
                        tracing::debug!(
                            attempt,
                            "a MySQL transaction lost a lock conflict; retrying"
                        );
                        std::thread::sleep(Duration::from_millis(
                            5 * u64::from(attempt) + fastrand::u64(..20),
                        ));
                    }
                    other => return other,
                }
            }
        })
    }

    fn once<T, E: Retryable>(
        &self,
        h: &Handle,
        commit: bool,
        f: &impl Fn(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut opts = TxOpts::default();
        opts.with_isolation_level(mysql_async::IsolationLevel::RepeatableRead);
        let tx = h
            .block_on(self.pool.start_transaction(opts))
            .map_err(SqlError::of)?;
        let mut t = Tx { h, tx };
        match f(&mut t) {
            Ok(out) if commit => {
                h.block_on(t.tx.commit()).map_err(SqlError::of)?;
                Ok(out)
            }
            Ok(out) => {
                let _ = h.block_on(t.tx.rollback());
                Ok(out)
            }
            Err(e) => {
                let _ = h.block_on(t.tx.rollback());
                Err(e)
            }
        }
    }
}

impl Drop for Mysql {
    fn drop(&mut self) {
        let pool = self.pool.clone();
        let _ = self.on_own_thread(|h| -> Result<(), SqlError> {
            let _ = h.block_on(pool.disconnect());
            Ok(())
        });
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// One open transaction.
pub struct Tx<'h> {
    h: &'h Handle,
    tx: Transaction<'static>,
}

impl Tx<'_> {
    /// The first column of the first row, as bytes.
    pub fn first_blob(
        &mut self,
        sql: &str,
        params: impl Into<Params> + Send,
    ) -> Result<Option<Vec<u8>>, SqlError> {
        self.h
            .block_on(self.tx.exec_first::<Vec<u8>, _, _>(sql, params))
            .map_err(SqlError::of)
    }

    pub fn rows<T: FromRow + Send + 'static>(
        &mut self,
        sql: &str,
        params: impl Into<Params> + Send,
    ) -> Result<Vec<T>, SqlError> {
        self.h
            .block_on(self.tx.exec(sql, params))
            .map_err(SqlError::of)
    }

    pub fn run(&mut self, sql: &str, params: impl Into<Params> + Send) -> Result<(), SqlError> {
        self.h
            .block_on(self.tx.exec_drop(sql, params))
            .map_err(SqlError::of)
    }

    /// Rows the last statement changed.
    pub fn affected(&self) -> u64 {
        self.tx.affected_rows()
    }
}
