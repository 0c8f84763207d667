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
}

/// Owns the running tasks.
pub struct Supervisor {
    tasks: JoinSet<()>,
    statuses: Statuses,
    shutdown: watch::Receiver<bool>,
}

impl Supervisor {
    /// Tasks run until `shutdown` turns true.
    pub fn new(statuses: Statuses, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            tasks: JoinSet::new(),
            statuses,
            shutdown,
        }
    }

    pub fn spawn(&mut self, task: Task) {
        let (statuses, shutdown) = (self.statuses.clone(), self.shutdown.clone());
        self.tasks.spawn(supervised(task, statuses, shutdown));
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
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
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
