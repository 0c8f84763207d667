//! What each connector is doing, for operators: `GET /v1/connectors` and
//! `GET /v1/connectors/{name}`. Pull connectors report every page they read and every error
//! they retry; the API reads a snapshot. One connector failing never stops the others, so its
//! failure is only visible here (and in the logs).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use crate::lead::now_rfc3339;
use crate::sources::ConnectorConfig;

/// What a connector is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Receives pushes (webhooks) or runs on demand (files).
    Passive,
    /// Connecting, or reading its checkpoint.
    Starting,
    /// Reading the whole table once (a backfill).
    Snapshot,
    /// Following changes (incremental polls or the binlog).
    Following,
    /// The last attempt failed; it is retried with backoff.
    Failing,
    /// Stopped by a problem retrying cannot fix (see `last_error`).
    Stopped,
    /// Paused by an operator (`POST /v1/connectors/{name}/pause`): it reads nothing until
    /// resumed. Its webhook, if it has one, still takes leads.
    Paused,
    /// Another gateway holds its lease (`[coordination]`) and reads for it; this one takes over
    /// if that one goes away. Its webhook, if it has one, still takes leads here.
    Standby,
}

/// Progress of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct SnapshotProgress {
    pub rows_done: u64,
    /// Rows in the table when the snapshot started.
    pub rows_total: u64,
}

/// One connector's health.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ConnectorStatus {
    pub name: String,
    /// `webhook`, `file`, `mysql`, `google_ads`, `http_pull`, `meta`, `oceanengine`, `linkedin`, `tiktok` or `tencent`.
    #[serde(rename = "type")]
    pub kind: String,
    /// For MySQL: `incremental` or `binlog`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    pub state: State,
    /// When a read last succeeded (RFC 3339 UTC).
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// Failures since the last success.
    pub consecutive_errors: u64,
    /// Times one of its tasks panicked or ended early and was started again since the gateway
    /// started.
    pub task_restarts: u64,
    /// Rows read from the source since the gateway started.
    pub rows_read: u64,
    /// Events written to the journal since the gateway started (re-reads of the safety window
    /// that were already delivered are not counted).
    pub events_journaled: u64,
    /// How far behind the source the checkpoint is, in seconds (incremental: now minus the
    /// newest timestamp read, in the server's clock as leadgate reads it).
    pub lag_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotProgress>,
    /// The stored checkpoint, as the connector writes it.
    pub checkpoint: Option<Value>,
    /// Meta: leads notified by webhook and not fetched yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbox: Option<u64>,
    /// APIs that shrink pages while throttled: the page size now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u32>,
    /// Connectors that take pushes: the path of their webhook (`/v1/webhooks/{name}`), the URL
    /// to paste into the platform or form tool under this gateway's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// API connectors: the platform token as last seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenHealth>,
    /// Whether an operator can pause it (it reads from somewhere: an API, a database).
    pub pausable: bool,
    /// When an operator paused it (RFC 3339 UTC); absent while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_at: Option<String>,
    /// With `[coordination]`: which gateway holds this connector's lease (and so reads for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseStatus>,
}

/// A leased connector's lease, as this gateway sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct LeaseStatus {
    /// This gateway's name.
    pub gateway: String,
    /// The gateway that took the lease last (it may have died since: then another takes it
    /// within the lease).
    pub holder: Option<String>,
    /// Increases with every acquisition.
    pub epoch: u64,
    /// This gateway holds it now.
    pub held_here: bool,
}

/// A platform token's health.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub struct TokenHealth {
    /// Set when the platform refused the token (expired or revoked), with its answer; cleared by
    /// the next accepted request.
    pub refused: Option<String>,
    /// When the access token expires (RFC 3339 UTC), where the platform tells (a refresh's
    /// answer, Meta's `debug_token`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// A token that cannot be refreshed ends soon (within 7 days; Meta: 14): get a new one with
    /// `leadgate auth <connector>`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub expiring_soon: bool,
    /// OAuth connectors: when the refresh token expires (RFC 3339 UTC), where the platform says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_expires_at: Option<String>,
    /// When the access token was last refreshed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_refresh_at: Option<String>,
    /// Why the last refresh failed, until one succeeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_refresh_error: Option<String>,
    /// The refresh token expires within 7 days: a person must authorize again
    /// (`leadgate auth <connector>`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub refresh_expiring_soon: bool,
}

impl ConnectorStatus {
    fn of(c: &ConnectorConfig) -> Self {
        let (kind, mode, state) = (c.kind(), c.get().mode(), c.get().initial_state());
        Self {
            name: c.name().to_owned(),
            kind: kind.into(),
            mode,
            state,
            last_success_at: None,
            last_error: None,
            last_error_at: None,
            consecutive_errors: 0,
            task_restarts: 0,
            rows_read: 0,
            events_journaled: 0,
            lag_seconds: None,
            snapshot: None,
            checkpoint: None,
            inbox: None,
            page_size: None,
            webhook: None,
            token: None,
            pausable: state != State::Passive,
            paused_at: None,
            lease: None,
        }
    }
}

/// Every connector's status, and which are paused; cheap to clone.
#[derive(Clone, Default)]
pub struct Statuses {
    map: Arc<Mutex<BTreeMap<String, ConnectorStatus>>>,
    pauses: Arc<Pauses>,
}

/// The paused connectors (name -> when), watched by their tasks, and the file that keeps them
/// over a restart.
#[derive(Default)]
struct Pauses {
    paused: tokio::sync::watch::Sender<BTreeMap<String, String>>,
    file: Mutex<Option<std::path::PathBuf>>,
}

/// Why a pause or a resume was refused.
#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    #[error("no connector named `{0}`")]
    Unknown(String),
    #[error("`{0}` takes pushes or files and reads nothing on its own: there is nothing to pause")]
    NotPausable(String),
    #[error("cannot record the pause in {path}: {error}")]
    Io { path: String, error: std::io::Error },
}

impl Statuses {
    pub fn new(connectors: &[ConnectorConfig]) -> Self {
        let map = connectors
            .iter()
            .map(|c| (c.name().to_owned(), ConnectorStatus::of(c)))
            .collect();
        Self {
            map: Arc::new(Mutex::new(map)),
            pauses: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, ConnectorStatus>> {
        // A panic while holding the lock cannot leave a status half-written in a harmful way.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the pauses kept in `file` (written by [`Statuses::set_paused`] from now on). Names
    /// no longer configured, or of connectors that cannot pause, are dropped.
    pub fn keep_pauses_in(&self, file: std::path::PathBuf) -> Result<(), PauseError> {
        let io = |error| PauseError::Io {
            path: file.display().to_string(),
            error,
        };
        let kept: BTreeMap<String, String> = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io(e)),
        };
        let kept: BTreeMap<String, String> = kept
            .into_iter()
            .filter(|(name, _)| self.get(name).is_some_and(|s| s.pausable))
            .collect();
        for (name, at) in &kept {
            self.update(name, |s| {
                s.state = State::Paused;
                s.paused_at = Some(at.clone());
            });
        }
        self.pauses.paused.send_replace(kept);
        *self.pauses.file.lock().unwrap_or_else(|p| p.into_inner()) = Some(file);
        Ok(())
    }

    /// Pauses (or resumes) `name`: its tasks stop reading at their next step and wait. Kept over
    /// a restart. Pausing a paused connector, or resuming a running one, changes nothing.
    pub fn set_paused(&self, name: &str, paused: bool) -> Result<ConnectorStatus, PauseError> {
        let Some(status) = self.get(name) else {
            return Err(PauseError::Unknown(name.to_owned()));
        };
        if !status.pausable {
            return Err(PauseError::NotPausable(name.to_owned()));
        }
        // Held from the read of the paused set to its change: two changes at once would each
        // write the set they read, and one would be lost.
        let file = self.pauses.file.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = self.pauses.paused.borrow().clone();
        let at = now_rfc3339();
        let changed = if paused {
            next.insert(name.to_owned(), at.clone()).is_none()
        } else {
            next.remove(name).is_some()
        };
        if changed {
            if let Some(file) = &*file {
                crate::storefile::replace(
                    file,
                    &serde_json::to_vec_pretty(&next).expect("names serialize"),
                )
                .map_err(|error| PauseError::Io {
                    path: file.display().to_string(),
                    error,
                })?;
            }
            self.update(name, |s| {
                if paused {
                    s.state = State::Paused;
                    s.paused_at = Some(at);
                } else {
                    s.state = State::Starting;
                    s.paused_at = None;
                }
            });
            self.pauses.paused.send_replace(next);
        }
        drop(file);
        Ok(self.get(name).expect("it was there"))
    }

    pub fn is_paused(&self, name: &str) -> bool {
        self.pauses.paused.borrow().contains_key(name)
    }

    /// Changes of the paused set, for a task that must stop what it is doing when paused.
    pub fn pauses(&self) -> tokio::sync::watch::Receiver<BTreeMap<String, String>> {
        self.pauses.paused.subscribe()
    }

    /// Returns at once when `name` is not paused; otherwise waits until it is resumed or the
    /// gateway stops (`false` then).
    pub async fn while_paused(
        &self,
        name: &str,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> bool {
        let mut pauses = self.pauses();
        loop {
            if !pauses.borrow_and_update().contains_key(name) {
                return !*shutdown.borrow();
            }
            self.update(name, |s| s.state = State::Paused);
            tokio::select! {
                _ = pauses.changed() => {}
                _ = shutdown.changed() => return false,
            }
        }
    }

    pub fn all(&self) -> Vec<ConnectorStatus> {
        self.lock().values().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<ConnectorStatus> {
        self.lock().get(name).cloned()
    }

    /// Changes `name`'s status in place.
    pub fn update(&self, name: &str, f: impl FnOnce(&mut ConnectorStatus)) {
        if let Some(s) = self.lock().get_mut(name) {
            f(s);
        }
    }

    /// A successful read: clears the error streak.
    pub fn success(&self, name: &str, state: State) {
        self.update(name, |s| {
            s.state = state;
            s.last_success_at = Some(now_rfc3339());
            s.consecutive_errors = 0;
        });
    }

    /// A failed attempt that will be retried (`stopped` false) or not.
    pub fn failure(&self, name: &str, error: &str, stopped: bool) {
        self.update(name, |s| {
            s.state = if stopped {
                State::Stopped
            } else {
                State::Failing
            };
            s.last_error = Some(error.to_owned());
            s.last_error_at = Some(now_rfc3339());
            s.consecutive_errors += 1;
        });
    }
}
