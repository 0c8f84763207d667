//! Leases as MySQL/MariaDB named locks (`GET_LOCK`), held by one connection of each gateway.
//!
//! - **Bounded loss.** The lock connection's session has `wait_timeout` = the lease, and the
//!   gateway pings it every fifth of it: a killed gateway's locks go with its socket at once, a
//!   frozen one's when the server drops its idle session. The gateway trusts a lease only until
//!   half the lease after its last successful ping, so it stops before anyone else can start.
//! - **Fencing.** Each acquisition bumps the connector's epoch in `leadgate_leases`. The shared
//!   checkpoint (`leadgate_checkpoints`) and tokens are written only by the holder of the current
//!   epoch: a write by a stale holder changes no row.
//! - **Sharing out.** Gateways announce themselves in `leadgate_gateways`; each holds at most its
//!   fair share (connectors / live gateways, rounded up) and lets go of the rest once their
//!   tasks stopped, so gateways that start later or come back get some.
//! - **Checkpoints.** A connector's checkpoint is shared once the leads its page brought are
//!   delivered ([`crate::intake::Journal::delivered_checkpoint`]); a gateway that takes a lease
//!   over resumes from the shared one. The overlap after a failover (pages journaled by the old
//!   holder but not yet delivered) is read again and absorbed by the shared identity store's
//!   source idempotency.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Pool};
use sha2::Digest;
use tokio::sync::watch;

use super::{Lease, Leases};
use crate::intake::Journal;
use crate::sources::status::{LeaseStatus, Statuses};

/// Each leased connector's current epoch and its last holder (the shared tokens join it too).
pub(crate) const LEASES_TABLE: &str = "CREATE TABLE IF NOT EXISTS leadgate_leases (
        connector VARBINARY(255) NOT NULL PRIMARY KEY, epoch BIGINT UNSIGNED NOT NULL,
        holder VARBINARY(255) NOT NULL, since DATETIME(6) NOT NULL) ENGINE=InnoDB";

const SCHEMA: &[&str] = &[
    LEASES_TABLE,
    "CREATE TABLE IF NOT EXISTS leadgate_checkpoints (
        connector VARBINARY(255) NOT NULL PRIMARY KEY, epoch BIGINT UNSIGNED NOT NULL,
        v MEDIUMBLOB NOT NULL, updated DATETIME(6) NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS leadgate_gateways (
        gateway VARBINARY(255) NOT NULL PRIMARY KEY, seen DATETIME(6) NOT NULL) ENGINE=InnoDB",
];

/// The named lock of `connector`: server-wide, so it carries the database's name too.
fn lock_name(database: &str, connector: &str) -> String {
    let h = sha2::Sha256::digest(format!("{database}\u{0}{connector}").as_bytes());
    format!("leadgate:{}", &hex::encode(h)[..40])
}

/// The order in which a gateway prefers connectors (rendezvous hashing): gateways prefer
/// different ones, so their fair shares rarely collide.
fn preference(gateway: &str, connector: &str) -> [u8; 32] {
    sha2::Sha256::digest(format!("{gateway}\u{0}{connector}").as_bytes()).into()
}

struct Coordinator {
    opts: Opts,
    pool: Pool,
    database: String,
    leases: Leases,
    journal: Journal,
    statuses: Statuses,
    lease: Duration,
    /// The lock connection, and the leases it holds (connector → epoch).
    conn: Option<Conn>,
    held: BTreeMap<String, u64>,
    /// Let go of (tasks stopping), lock not yet released.
    releasing: BTreeMap<String, Instant>,
    /// What was shared last, per connector.
    shared: BTreeMap<String, Vec<u8>>,
}

/// Runs the leases of `leases`' connectors until `shutdown`, then releases them.
pub async fn run(
    url: &str,
    lease: Duration,
    leases: Leases,
    journal: Journal,
    statuses: Statuses,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let opts = Opts::from_url(url).map_err(|e| anyhow::anyhow!("[coordination] url: {e}"))?;
    let pool = Pool::new(opts.clone());
    let mut conn = pool.get_conn().await?;
    for s in SCHEMA {
        conn.query_drop(*s).await?;
    }
    let database: Option<String> = conn.query_first("SELECT DATABASE()").await?;
    drop(conn);
    let mut c = Coordinator {
        opts,
        pool,
        database: database.unwrap_or_default(),
        leases,
        journal,
        statuses,
        lease,
        conn: None,
        held: BTreeMap::new(),
        releasing: BTreeMap::new(),
        shared: BTreeMap::new(),
    };
    let tick = (lease / 5).max(Duration::from_millis(200));
    loop {
        if let Err(e) = c.round(tick).await {
            crate::telemetry::lifecycle_failed("coordination");
            tracing::warn!(error = %e, "coordination: a round failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            c.let_go_all();
            // The tasks finish the page under way; the locks go with the connection.
            if let Some(conn) = c.conn.take() {
                let _ = tokio::time::timeout(Duration::from_secs(2), conn.disconnect()).await;
            }
            return Ok(());
        }
    }
}

impl Coordinator {
    fn let_go_all(&mut self) {
        for c in std::mem::take(&mut self.held).into_keys() {
            self.leases.set(&c, None);
        }
        self.releasing.clear();
    }

    async fn round(&mut self, tick: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        if self.conn.is_none() {
            let mut conn = Conn::new(self.opts.clone()).await?;
            let secs = self.lease.as_secs().max(2);
            conn.query_drop(format!(
                "SET SESSION wait_timeout = {secs}, SESSION interactive_timeout = {secs}"
            ))
            .await?;
            self.conn = Some(conn);
        }
        let conn = self.conn.as_mut().expect("just set");
        let alive = tokio::time::timeout(tick, conn.ping()).await;
        if !matches!(alive, Ok(Ok(()))) {
            // The session (and so every lock) may be gone: stop trusting them now.
            self.conn = None;
            if !self.held.is_empty() {
                tracing::warn!(
                    held = self.held.len(),
                    "coordination: the lock connection failed; letting go of every lease"
                );
            }
            self.let_go_all();
            anyhow::bail!("the lock connection does not answer");
        }
        let valid_until = started + self.lease / 2;
        for (c, epoch) in &self.held {
            if self.releasing.contains_key(c) {
                continue; // let go of: its tasks are stopping
            }
            self.leases.set(
                c,
                Some(Lease {
                    epoch: *epoch,
                    valid_until,
                }),
            );
        }
        let gateway = self.leases.gateway().to_owned();
        let mut pool = self.pool.get_conn().await?;
        pool.exec_drop(
            "INSERT INTO leadgate_gateways (gateway, seen) VALUES (?, NOW(6)) ON DUPLICATE KEY UPDATE seen = NOW(6)",
            (gateway.as_str(),),
        )
        .await?;
        let live: Option<u64> = pool
            .exec_first(
                "SELECT COUNT(*) FROM leadgate_gateways WHERE seen > NOW(6) - INTERVAL ? MICROSECOND",
                (self.lease.as_micros() as u64,),
            )
            .await?;
        let connectors: Vec<String> = self.leases.connectors().map(str::to_owned).collect();
        let fair = connectors.len().div_ceil(live.unwrap_or(1).max(1) as usize);
        let mut order = connectors.clone();
        order.sort_by_key(|c| std::cmp::Reverse(preference(&gateway, c)));

        // Let go of what is beyond the fair share: the least preferred first. The lock is
        // released once its tasks stopped (or 60 s later), so two gateways never pull at once.
        let mut kept = 0;
        for c in &order {
            if self.held.contains_key(c) {
                kept += 1;
                if kept > fair && !self.releasing.contains_key(c) {
                    tracing::info!(connector = %c, fair, "coordination: letting another gateway take this connector");
                    self.leases.set(c, None);
                    self.releasing.insert(c.clone(), Instant::now());
                }
            }
        }
        let done: Vec<String> = self
            .releasing
            .iter()
            .filter(|(c, since)| {
                self.leases.running(c) == 0 || since.elapsed() > Duration::from_secs(60)
            })
            .map(|(c, _)| c.clone())
            .collect();
        for c in done {
            let name = lock_name(&self.database, &c);
            let conn = self.conn.as_mut().expect("checked");
            let _: Option<i64> = conn.exec_first("SELECT RELEASE_LOCK(?)", (name,)).await?;
            self.releasing.remove(&c);
            self.held.remove(&c);
            self.shared.remove(&c);
        }

        // Take free connectors up to the fair share.
        for c in &order {
            if self.held.len() >= fair {
                break;
            }
            if self.held.contains_key(c) {
                continue;
            }
            let name = lock_name(&self.database, c);
            let conn = self.conn.as_mut().expect("checked");
            // A round that failed after taking a lock left it with this session: taking it
            // again would count it twice (named locks are re-entrant), and one release would
            // then not free it.
            let mine: Option<Option<i64>> = conn
                .exec_first("SELECT IS_USED_LOCK(?) = CONNECTION_ID()", (name.as_str(),))
                .await?;
            if mine.flatten() != Some(1) {
                let got: Option<i64> = conn.exec_first("SELECT GET_LOCK(?, 0)", (name,)).await?;
                if got != Some(1) {
                    continue;
                }
            }
            pool.exec_drop(
                "INSERT INTO leadgate_leases (connector, epoch, holder, since) VALUES (?, 1, ?, NOW(6)) \
                 ON DUPLICATE KEY UPDATE epoch = epoch + 1, holder = VALUES(holder), since = VALUES(since)",
                (c.as_str(), gateway.as_str()),
            )
            .await?;
            let epoch: Option<u64> = pool
                .exec_first(
                    "SELECT epoch FROM leadgate_leases WHERE connector = ?",
                    (c.as_str(),),
                )
                .await?;
            let epoch = epoch.unwrap_or(1);
            let shared: Option<Vec<u8>> = pool
                .exec_first(
                    "SELECT v FROM leadgate_checkpoints WHERE connector = ? AND LENGTH(v) > 0",
                    (c.as_str(),),
                )
                .await?;
            if let Some(cp) = &shared {
                let (j, name, cp) = (self.journal.clone(), c.clone(), cp.clone());
                tokio::task::spawn_blocking(move || j.adopt_checkpoint(&name, &cp)).await??;
            }
            tracing::info!(connector = %c, epoch, resumes_from_shared = shared.is_some(), "coordination: took the lease");
            if let Some(cp) = shared {
                self.shared.insert(c.clone(), cp);
            }
            self.held.insert(c.clone(), epoch);
            self.leases.set(c, Some(Lease { epoch, valid_until }));
        }

        // Share the checkpoints whose leads are delivered, fenced by the epoch.
        for (c, epoch) in self.held.clone() {
            if self.releasing.contains_key(&c) || self.leases.current(&c).is_none() {
                continue;
            }
            let (j, name) = (self.journal.clone(), c.clone());
            let Some(cp) =
                tokio::task::spawn_blocking(move || j.delivered_checkpoint(&name)).await??
            else {
                continue;
            };
            if self.shared.get(&c) == Some(&cp) {
                continue;
            }
            if publish(&mut pool, &c, epoch, &cp).await? {
                self.shared.insert(c, cp);
            } else {
                tracing::warn!(connector = %c, epoch, "coordination: the lease moved on; the checkpoint is not shared");
                self.held.remove(&c);
                self.leases.set(&c, None);
            }
        }

        // Who holds what, for /v1/connectors.
        let rows: Vec<(Vec<u8>, Vec<u8>, u64)> = pool
            .query("SELECT connector, holder, epoch FROM leadgate_leases")
            .await?;
        let holders: BTreeMap<String, (String, u64)> = rows
            .into_iter()
            .map(|(c, h, e)| {
                (
                    String::from_utf8_lossy(&c).into_owned(),
                    (String::from_utf8_lossy(&h).into_owned(), e),
                )
            })
            .collect();
        for c in &connectors {
            let here = self.held.contains_key(c) && !self.releasing.contains_key(c);
            let (holder, epoch) = holders.get(c).cloned().unwrap_or_default();
            self.statuses.update(c, |s| {
                s.lease = Some(LeaseStatus {
                    gateway: gateway.clone(),
                    holder: (!holder.is_empty()).then_some(holder),
                    epoch,
                    held_here: here,
                });
            });
        }
        Ok(())
    }
}

/// Writes `cp` as `connector`'s shared checkpoint if `epoch` is still the current one; `false`
/// when another gateway took the lease meanwhile (nothing written).
pub(crate) async fn publish(
    conn: &mut Conn,
    connector: &str,
    epoch: u64,
    cp: &[u8],
) -> Result<bool, mysql_async::Error> {
    conn.exec_drop(
        "INSERT IGNORE INTO leadgate_checkpoints (connector, epoch, v, updated) VALUES (?, 0, '', NOW(6))",
        (connector,),
    )
    .await?;
    conn.exec_drop(
        "UPDATE leadgate_checkpoints c JOIN leadgate_leases l ON l.connector = c.connector \
         SET c.v = ?, c.epoch = l.epoch, c.updated = NOW(6) WHERE c.connector = ? AND l.epoch = ?",
        (cp, connector, epoch),
    )
    .await?;
    Ok(conn.affected_rows() > 0)
}
