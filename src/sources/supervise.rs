//! The sources' tasks, owned: every task a connector starts (a poll, a binlog reader, a fetcher
//! of notified leads, a token watch) runs under [`Supervisor`]. A task that panics, or ends
//! before shutdown, is reported in its connector's health (`last_error`, `task_restarts`) and
//! started again after a backoff, from its durable checkpoint. At shutdown the supervisor
//! signals the tasks and waits for them, up to a deadline; what each had committed stays.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::sources::status::Statuses;

/// Starts one run of a task, until the shutdown signal it is given turns true. Called again for
/// each restart: it builds the task's state afresh (its checkpoint read again from the journal).
/// Its error ends the run the way a panic does.
type Run =
    Arc<dyn Fn(watch::Receiver<bool>) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// One of a connector's tasks.
pub struct Task {
    /// The connector it belongs to (whose health shows its failures).
    pub connector: String,
    /// What it does, for the logs and health: `poll`, `fetch`, `binlog`, `token watch`.
    pub role: &'static str,
    run: Run,
}

impl Task {
    pub fn new<F, Fut>(connector: &str, role: &'static str, run: F) -> Self
    where
        F: Fn(watch::Receiver<bool>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self::fallible(connector, role, move |stop| run(stop).map(Ok))
    }

    /// A task whose run can fail before it gets going (its checkpoint unreadable, say).
    pub fn fallible<F, Fut>(connector: &str, role: &'static str, run: F) -> Self
    where
        F: Fn(watch::Receiver<bool>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self {
            connector: connector.to_owned(),
            role,
            run: Arc::new(move |stop| run(stop).boxed()),
        }
    }

    /// One run, outside a supervisor (unit tests).
    #[cfg(test)]
    pub(crate) fn run_once(
        &self,
        stop: watch::Receiver<bool>,
    ) -> BoxFuture<'static, Result<(), String>> {
        (self.run)(stop)
    }
}

/// Owns the running tasks.
pub struct Supervisor {
    tasks: JoinSet<()>,
    statuses: Statuses,
    shutdown: watch::Receiver<bool>,
    /// With `[coordination]`: the leased connectors, whose reading tasks run only under lease.
    leases: Option<crate::coord::Leases>,
}

impl Supervisor {
    /// Tasks run until `shutdown` turns true.
    pub fn new(statuses: Statuses, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            tasks: JoinSet::new(),
            statuses,
            shutdown,
            leases: None,
        }
    }

    /// Runs the reading tasks ([`crate::coord::LEASED_ROLES`]) of `leases`' connectors only
    /// while this gateway holds their lease.
    pub fn with_leases(mut self, leases: crate::coord::Leases) -> Self {
        self.leases = Some(leases);
        self
    }

    pub fn spawn(&mut self, task: Task) {
        let (statuses, shutdown) = (self.statuses.clone(), self.shutdown.clone());
        match &self.leases {
            Some(l)
                if l.covers(&task.connector) && crate::coord::LEASED_ROLES.contains(&task.role) =>
            {
                self.tasks
                    .spawn(leased(task, l.clone(), statuses, shutdown));
            }
            _ => {
                self.tasks.spawn(supervised(task, statuses, shutdown));
            }
        }
    }

    /// Tasks running.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Waits, after the shutdown signal, for every task to finish, up to `deadline`; aborts
    /// those still running then and returns how many there were.
    pub async fn stop(mut self, deadline: Duration) -> usize {
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(deadline, all).await.is_ok() {
            return 0;
        }
        let left = self.tasks.len();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        left
    }
}

/// Runs `task` until shutdown, again after a backoff each time it panics or ends early.
async fn supervised(task: Task, statuses: Statuses, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = crate::retry::forever();
    loop {
        let outcome = AssertUnwindSafe((task.run)(shutdown.clone()))
            .catch_unwind()
            .await;
        if *shutdown.borrow() {
            return;
        }
        if !restart_after(&task, outcome, &mut backoff, &statuses, &mut shutdown).await {
            return;
        }
    }
}

/// What a run of a task ended with: `Ok` when it returned, `Err` with its panic.
type Outcome = Result<Result<(), String>, Box<dyn std::any::Any + Send>>;

/// Reports a run that ended before shutdown and waits the next backoff step; `false` when
/// shutdown came meanwhile.
async fn restart_after(
    task: &Task,
    outcome: Outcome,
    backoff: &mut backon::ExponentialBackoff,
    statuses: &Statuses,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let why = match outcome {
        Ok(Ok(())) => format!("its {} task ended", task.role),
        Ok(Err(e)) => format!("its {} task failed: {e}", task.role),
        Err(panic) => format!("its {} task panicked: {}", task.role, panic_message(panic)),
    };
    let delay = backoff.next().unwrap_or(Duration::from_secs(30));
    tracing::error!(connector = %task.connector, error = %why, restart_in = ?delay, "a source task stopped; restarting it");
    statuses.failure(
        &task.connector,
        &format!("{why}; restarting it in {delay:.1?}"),
        false,
    );
    statuses.update(&task.connector, |s| s.task_restarts += 1);
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.wait_for(|stop| *stop) => false,
    }
}

/// Runs `task` as [`supervised`] does, but only while this gateway holds the connector's lease:
/// it waits in standby for the lease, runs until the lease ends (then stops after the page under
/// way), and waits again.
async fn leased(
    task: Task,
    leases: crate::coord::Leases,
    statuses: Statuses,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = crate::retry::forever();
    loop {
        statuses.update(&task.connector, |s| {
            if s.lease.as_ref().is_none_or(|l| !l.held_here) {
                s.state = crate::sources::status::State::Standby;
            }
        });
        let Some(lease) = leases.acquired(&task.connector, &mut shutdown).await else {
            return;
        };
        tracing::info!(connector = %task.connector, role = task.role, epoch = lease.epoch, "running under the lease");
        let (stop_tx, stop) = watch::channel(false);
        let watcher = {
            let (leases, name, mut shutdown) =
                (leases.clone(), task.connector.clone(), shutdown.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = leases.lost(&name, lease.epoch) => {}
                    _ = shutdown.wait_for(|s| *s) => {}
                }
                stop_tx.send_replace(true);
            })
        };
        let outcome = {
            let _running = leases.run_guard(&task.connector);
            AssertUnwindSafe((task.run)(stop)).catch_unwind().await
        };
        watcher.abort();
        if *shutdown.borrow() {
            return;
        }
        let still = leases
            .current(&task.connector)
            .is_some_and(|l| l.epoch == lease.epoch);
        if !still {
            tracing::info!(connector = %task.connector, role = task.role, "the lease ended; the task stopped and waits for it again");
            continue;
        }
        if !restart_after(&task, outcome, &mut backoff, &statuses, &mut shutdown).await {
            return;
        }
    }
}

/// The message a panic carried.
pub fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn statuses() -> Statuses {
        let c: crate::sources::ConnectorConfig = crate::sources::ConnectorConfig::Webhook(
            Box::new(crate::sources::webhook::WebhookConnector::named("c")),
        );
        Statuses::new(&[c])
    }

    #[tokio::test]
    async fn a_task_that_panics_is_reported_and_restarted() {
        let (stop, stopped) = watch::channel(false);
        let st = statuses();
        let mut sup = Supervisor::new(st.clone(), stopped);
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        sup.spawn(Task::new("c", "poll", move |mut stop| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                assert!(n >= 2, "a bug met a bad page");
                let _ = stop.wait_for(|s| *s).await;
            }
        }));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while runs.load(Ordering::SeqCst) < 3 {
            assert!(std::time::Instant::now() < deadline, "not restarted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let s = st.get("c").unwrap();
        assert_eq!(s.task_restarts, 2);
        let error = s.last_error.unwrap();
        assert!(
            error.contains("poll task panicked: a bug met a bad page"),
            "{error}"
        );
        stop.send_replace(true);
        assert_eq!(
            sup.stop(Duration::from_secs(5)).await,
            0,
            "all stopped in time"
        );
    }

    #[tokio::test]
    async fn shutdown_waits_for_the_tasks_up_to_a_deadline() {
        let (stop, stopped) = watch::channel(false);
        let mut sup = Supervisor::new(statuses(), stopped);
        sup.spawn(Task::new("c", "poll", |_| async {
            // Ignores the signal.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }));
        let finished = Arc::new(AtomicU32::new(0));
        let f = finished.clone();
        sup.spawn(Task::new("c", "fetch", move |mut stop| {
            let f = f.clone();
            async move {
                let _ = stop.wait_for(|s| *s).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                f.fetch_add(1, Ordering::SeqCst);
            }
        }));
        assert_eq!(sup.len(), 2);
        stop.send_replace(true);
        let started = std::time::Instant::now();
        assert_eq!(
            sup.stop(Duration::from_millis(500)).await,
            1,
            "one was aborted"
        );
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "the other finished its work"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
