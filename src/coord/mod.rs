//! Several gateways, one set of pull connectors: each pull connector runs on one gateway at a
//! time, under a lease (a MySQL named lock, see [`mysql`]). A dead gateway's locks go with its
//! connection; a frozen one stops pinging, so the server drops its session (its `wait_timeout`
//! is the lease) while the gateway itself stops trusting its leases at half that time.
//!
//! [`Leases`] is what the rest of the gateway sees: per leased connector, the lease this gateway
//! holds now (its epoch, and until when it may trust it), changed by the coordinator's loop. The
//! supervisor runs a leased connector's tasks only while it holds the lease and stops them when
//! it ends; requests to a platform check [`may_use`] first, so that a gateway that was frozen
//! past its lease does not spend a token it no longer owns.

#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "mysql")]
pub mod tokens;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::watch;

/// What this gateway holds of one connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Increases with every acquisition, by any gateway: what the shared checkpoint's writes
    /// are fenced with.
    pub epoch: u64,
    /// Trusted until then (renewed by each successful ping of the lock's connection).
    pub valid_until: Instant,
}

impl Lease {
    pub fn valid(&self) -> bool {
        Instant::now() < self.valid_until
    }
}

struct Slot {
    lease: watch::Sender<Option<Lease>>,
    /// Runs of its tasks under way (the lock is released only once they ended).
    running: AtomicUsize,
}

/// The leased connectors and this gateway's leases; cheap to clone.
#[derive(Clone)]
pub struct Leases {
    inner: Arc<Inner>,
}

struct Inner {
    gateway: String,
    slots: BTreeMap<String, Slot>,
}

/// The task roles that read from a platform or a database, and so run under the lease: polls,
/// the MySQL source's readers and token refreshes. Inbox fetches work on what this gateway's own
/// webhook took in, and run everywhere.
pub const LEASED_ROLES: &[&str] = &["poll", "incremental read", "binlog read", "token refresh"];

static GLOBAL: OnceLock<Leases> = OnceLock::new();

impl Leases {
    pub fn new(gateway: &str, connectors: impl IntoIterator<Item = String>) -> Self {
        let slots = connectors
            .into_iter()
            .map(|c| {
                (
                    c,
                    Slot {
                        lease: watch::channel(None).0,
                        running: AtomicUsize::new(0),
                    },
                )
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                gateway: gateway.to_owned(),
                slots,
            }),
        }
    }

    /// Makes these the leases [`may_use`] consults (once per process).
    pub fn install(&self) {
        let _ = GLOBAL.set(self.clone());
    }

    pub fn gateway(&self) -> &str {
        &self.inner.gateway
    }

    /// The leased connectors.
    pub fn connectors(&self) -> impl Iterator<Item = &str> {
        self.inner.slots.keys().map(String::as_str)
    }

    pub fn covers(&self, connector: &str) -> bool {
        self.inner.slots.contains_key(connector)
    }

    /// The lease held now, if it is still to be trusted.
    pub fn current(&self, connector: &str) -> Option<Lease> {
        let slot = self.inner.slots.get(connector)?;
        (*slot.lease.borrow()).filter(Lease::valid)
    }

    pub fn subscribe(&self, connector: &str) -> Option<watch::Receiver<Option<Lease>>> {
        self.inner.slots.get(connector).map(|s| s.lease.subscribe())
    }

    /// Sets (or ends, with `None`) this gateway's lease of `connector`.
    pub fn set(&self, connector: &str, lease: Option<Lease>) {
        if let Some(slot) = self.inner.slots.get(connector) {
            slot.lease.send_if_modified(|now| {
                let changed = *now != lease;
                *now = lease;
                changed
            });
        }
    }

    /// Runs of `connector`'s tasks under way.
    pub fn running(&self, connector: &str) -> usize {
        self.inner
            .slots
            .get(connector)
            .map_or(0, |s| s.running.load(Ordering::SeqCst))
    }

    /// Counts a run of one of `connector`'s tasks until the guard is dropped.
    pub fn run_guard(&self, connector: &str) -> RunGuard {
        if let Some(s) = self.inner.slots.get(connector) {
            s.running.fetch_add(1, Ordering::SeqCst);
        }
        RunGuard {
            leases: self.clone(),
            connector: connector.to_owned(),
        }
    }

    /// Waits until this gateway holds a lease of `connector` it may trust; `None` at shutdown.
    pub async fn acquired(
        &self,
        connector: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Lease> {
        let mut rx = self.subscribe(connector)?;
        loop {
            if *shutdown.borrow() {
                return None;
            }
            if let Some(l) = (*rx.borrow_and_update()).filter(Lease::valid) {
                return Some(l);
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = shutdown.changed() => {}
                // A lease that ran out is replaced by the next ping's; look again then.
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        }
    }

    /// Resolves when the lease with `epoch` ends: another epoch or none is set, or it is not
    /// renewed in time.
    pub async fn lost(&self, connector: &str, epoch: u64) {
        let Some(mut rx) = self.subscribe(connector) else {
            return std::future::pending().await;
        };
        loop {
            let now = *rx.borrow_and_update();
            let Some(l) = now.filter(|l| l.epoch == epoch && l.valid()) else {
                return;
            };
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(l.valid_until)) => {}
            }
        }
    }
}

pub struct RunGuard {
    leases: Leases,
    connector: String,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if let Some(s) = self.leases.inner.slots.get(&self.connector) {
            s.running.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Whether this gateway may call `connector`'s platform now: always without coordination, and
/// with it only while it holds a lease it may trust.
pub fn may_use(connector: &str) -> bool {
    match GLOBAL.get() {
        Some(l) if l.covers(connector) => l.current(connector).is_some(),
        _ => true,
    }
}

/// The epoch of the lease this gateway holds of `connector` now, if it may trust it.
pub fn held_epoch(connector: &str) -> Option<u64> {
    GLOBAL.get()?.current(connector).map(|l| l.epoch)
}

/// This gateway's name: the configured one, else `$HOSTNAME` (a Kubernetes pod's name), else
/// the host name, with the port it listens on.
pub fn gateway_name(configured: Option<&str>, port: u16) -> String {
    if let Some(g) = configured.filter(|g| !g.trim().is_empty()) {
        return g.trim().to_owned();
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".into());
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_lease_is_lost_when_replaced_ended_or_not_renewed() {
        let leases = Leases::new("gw-1", ["meta".to_owned()]);
        let (_stop, mut shutdown) = watch::channel(false);
        assert!(leases.current("meta").is_none());
        assert!(leases.covers("meta") && !leases.covers("webform"));
        let soon = Instant::now() + Duration::from_millis(300);
        leases.set(
            "meta",
            Some(Lease {
                epoch: 4,
                valid_until: soon,
            }),
        );
        let got = leases.acquired("meta", &mut shutdown).await.unwrap();
        assert_eq!(got.epoch, 4);
        // Not renewed: lost when it runs out (a frozen gateway's, after it thaws).
        let started = Instant::now();
        leases.lost("meta", 4).await;
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert!(
            leases.current("meta").is_none(),
            "an expired lease is not trusted"
        );
        // Replaced by another epoch: lost at once.
        let later = Instant::now() + Duration::from_secs(60);
        leases.set(
            "meta",
            Some(Lease {
                epoch: 5,
                valid_until: later,
            }),
        );
        let waiting = {
            let l = leases.clone();
            tokio::spawn(async move { l.lost("meta", 5).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        leases.set("meta", None);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap()
            .unwrap();
        {
            let _run = leases.run_guard("meta");
            assert_eq!(leases.running("meta"), 1);
        }
        assert_eq!(leases.running("meta"), 0);
    }
}
