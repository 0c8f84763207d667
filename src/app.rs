//! `leadgate run`: opens the data directory, starts the delivery loop and the HTTP API, and stops
//! both cleanly on Ctrl-C or SIGTERM.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::{AppState, serve};
use crate::assign::{Assigner, AssignmentStore, EmbeddedAssignmentStore};
use crate::config::{OutputSettings, Settings, StoreSettings};
use crate::identity::{EmbeddedIdentityStore, IdentityStore, Policy};
use crate::intake::Journal;
use crate::pipeline::{Processor, deliver_forever};
use crate::sinks::{HealthReport, KafkaSink, Sink, SpoolSink};

/// Where things live under the data directory.
pub struct DataDir(pub PathBuf);

impl DataDir {
    pub fn journal(&self) -> PathBuf {
        self.0.join("journal.redb")
    }
    pub fn identity(&self) -> PathBuf {
        self.0.join("identity.redb")
    }

    pub fn assignment(&self) -> PathBuf {
        self.0.join("assignment.redb")
    }
    /// Erasure requests and the suppression list (salted hashes only).
    pub fn erasures(&self) -> PathBuf {
        self.0.join("erasures.redb")
    }
    pub fn output(&self) -> PathBuf {
        self.0.join("output")
    }
    pub fn dead_letter(&self) -> PathBuf {
        self.0.join("dead-letter")
    }
}

/// The configured sink: the embedded spool or Kafka.
pub async fn build_sink(
    settings: &Settings,
    data: &DataDir,
    shutdown: watch::Receiver<bool>,
    health: HealthReport,
) -> anyhow::Result<Sink> {
    Ok(match &settings.output {
        OutputSettings::Embedded => Sink::Spool(SpoolSink::open(&data.output())?),
        OutputSettings::Kafka(k) => Sink::Kafka(
            KafkaSink::connect(k, &settings.topics, &data.dead_letter(), shutdown, health).await?,
        ),
    })
}

pub fn open_identity(
    settings: &Settings,
    data: &DataDir,
) -> anyhow::Result<Arc<dyn IdentityStore>> {
    let policy = Policy::new(&settings.identity);
    Ok(match &settings.identity.store {
        StoreSettings::Embedded => {
            let path = data.identity();
            check_store_file(&path, "identity store")?;
            Arc::new(
                EmbeddedIdentityStore::open(&path, policy).with_context(|| {
                    format!("cannot open the identity store {}", path.display())
                })?,
            )
        }
        #[cfg(feature = "mysql")]
        StoreSettings::Mysql { url } => {
            use secrecy::ExposeSecret;
            Arc::new(
                crate::identity::MysqlIdentityStore::connect(url.expose_secret(), policy)
                    .context("cannot open the MySQL identity store ([identity.store])")?,
            )
        }
        #[cfg(not(feature = "mysql"))]
        StoreSettings::Mysql { .. } => anyhow::bail!(
            "[identity.store] type = \"mysql\" needs a leadgate built with the `mysql` feature"
        ),
    })
}

/// The assignment rules, owners, teams and counters: under the data directory, or in MySQL.
pub fn open_assignment(
    settings: &Settings,
    data: &DataDir,
) -> anyhow::Result<Arc<dyn AssignmentStore>> {
    let store = open_assignment_store(settings, data)?;
    let written = crate::assign::segments::apply_settings(&*store, &settings.assignment).context(
        "cannot write [[assignment.segments]] and [[assignment.scores]] to the assignment store",
    )?;
    if written > 0 {
        tracing::info!(
            written,
            "segments and score groups from the settings written to the assignment store"
        );
    }
    Ok(store)
}

fn open_assignment_store(
    settings: &Settings,
    data: &DataDir,
) -> anyhow::Result<Arc<dyn AssignmentStore>> {
    Ok(match &settings.assignment.store {
        StoreSettings::Embedded => {
            let path = data.assignment();
            check_store_file(&path, "assignment store")?;
            Arc::new(
                EmbeddedAssignmentStore::open(&path).with_context(|| {
                    format!("cannot open the assignment store {}", path.display())
                })?,
            )
        }
        #[cfg(feature = "mysql")]
        StoreSettings::Mysql { url } => {
            use secrecy::ExposeSecret;
            Arc::new(
                crate::assign::MysqlAssignmentStore::connect(url.expose_secret())
                    .context("cannot open the MySQL assignment store ([assignment.store])")?,
            )
        }
        #[cfg(not(feature = "mysql"))]
        StoreSettings::Mysql { .. } => anyhow::bail!(
            "[assignment.store] type = \"mysql\" needs a leadgate built with the `mysql` feature"
        ),
    })
}

/// Refuses a store file that exists but cannot hold a store: redb opens an empty (0-byte) file,
/// or one cut shorter than its header, as a new, empty database, and every lead and person it
/// held would be gone without a word. A missing file is a first start and fine.
pub fn check_store_file(path: &Path, what: &str) -> anyhow::Result<()> {
    /// redb's header (its magic number and both commit slots) alone is longer; a new store is
    /// tens of KiB. Anything shorter was cut.
    const SMALLEST: u64 = 512;
    match std::fs::metadata(path) {
        Ok(m) if m.len() < SMALLEST => anyhow::bail!(
            "the {what} {} is {} bytes long: it was cut short (a full disk, a bad copy), so what it held \
             cannot be read. Restore it from a backup; or, to start with an empty {what} and accept the loss, \
             move it aside (mv {0} {0}.broken) and start again",
            path.display(),
            m.len()
        ),
        _ => Ok(()),
    }
}

/// Creates the data directory if needed.
pub fn create_data_dir(dir: &Path) -> anyhow::Result<DataDir> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    Ok(DataDir(dir.to_owned()))
}

/// Runs the gateway on `settings.listen` until `shutdown` resolves.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    run_on(settings, listener, shutdown).await
}

/// Runs the gateway on an already bound `listener` (tests and benchmarks bind port 0).
pub async fn run_on(
    settings: Settings,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let data = create_data_dir(&settings.data_dir)?;
    // Before any store that seals is opened.
    settings.privacy.install()?;
    if settings.metrics.enabled {
        crate::telemetry::start();
    }
    // Meanwhile, load what the first lead's normalization would otherwise wait for.
    tokio::task::spawn_blocking(crate::normalize::warm_up);
    check_store_file(&data.journal(), "journal")?;
    let journal = Journal::open(&data.journal(), settings.intake.idempotency_retention)
        .with_context(|| {
            format!(
                "cannot open the journal {} (if it is damaged: restore it from a backup, or move it \
                 aside to start with an empty journal and accept the loss)",
                data.journal().display()
            )
        })?;
    let identity = open_identity(&settings, &data)?;
    let identity_at_exit = identity.clone();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (health, health_rx) = HealthReport::new();
    let sink = build_sink(&settings, &data, stop_rx.clone(), health.clone()).await?;
    let output = sink.describe();
    let assignment = open_assignment(&settings, &data)?;
    let erasures = crate::erasure::Erasures::open(&data.erasures(), settings.privacy.suppression)
        .context("cannot open the erasure requests (erasures.redb)")?;
    // Gateways sharing a MySQL identity store share the suppression list too.
    #[cfg(feature = "mysql")]
    let erasures = match &settings.identity.store {
        StoreSettings::Mysql { url } => {
            use secrecy::ExposeSecret;
            let list = crate::erasure::shared::SharedList::connect(url.expose_secret())
                .map_err(|e| anyhow::anyhow!("{e:?}"))
                .context("cannot open the shared suppression list ([identity.store])")?;
            erasures
                .share(list)
                .context("cannot read the shared suppression list")?
        }
        StoreSettings::Embedded => erasures,
    };
    let erasures = Arc::new(erasures);
    if erasures.is_shared() {
        let (e, mut stop) = (erasures.clone(), stop_rx.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stop.changed() => return,
                }
                let e = e.clone();
                match tokio::task::spawn_blocking(move || e.refresh()).await {
                    Ok(Err(why)) => {
                        tracing::warn!(error = %why, "cannot read the shared suppression list; tried again in 2s")
                    }
                    Err(why) => {
                        tracing::warn!(error = %why, "reading the shared suppression list panicked")
                    }
                    Ok(Ok(_)) => {}
                }
            }
        });
    }
    let processor = Arc::new(
        Processor::new(
            &settings.connectors,
            settings.topics.clone(),
            identity.clone(),
            Policy::new(&settings.identity),
            Assigner::new(assignment.clone()).with_max_total(settings.assignment.max_score),
        )
        .with_erasures(erasures.clone())
        .with_retention(settings.privacy.retention()),
    );
    let gateway = settings.coordination.as_ref().map(|c| match c {
        crate::config::CoordinationSettings::Mysql { gateway, .. } => crate::coord::gateway_name(
            gateway.as_deref(),
            listener.local_addr().map_or(0, |a| a.port()),
        ),
    });
    #[cfg(feature = "mysql")]
    if let Some(crate::config::CoordinationSettings::Mysql { url, .. }) = &settings.coordination {
        use secrecy::ExposeSecret;
        // Before the connectors open their token files.
        crate::coord::tokens::SharedTokens::connect(url.expose_secret())
            .map_err(|e| {
                anyhow::anyhow!("cannot open the shared token store ([coordination] url): {e:?}")
            })?
            .install();
    }
    let (sources, supervisor, leases) = crate::sources::start_leased(
        &settings.connectors,
        &journal,
        &data.0,
        settings.intake.max_backlog,
        &stop_rx,
        gateway.as_deref(),
    )?;
    let coordination = match (&settings.coordination, leases) {
        (Some(c), Some(leases)) => Some(start_coordination(
            c,
            leases,
            journal.clone(),
            sources.statuses.clone(),
            stop_rx.clone(),
        )?),
        _ => None,
    };
    // Reassignments (回收) go out through a sink of their own, on their own topic; the main
    // sink already creates the topics.
    let mut quiet = settings.clone();
    if let OutputSettings::Kafka(k) = &mut quiet.output {
        k.create_topics = false;
    }
    let follow_up_sink = build_sink(&quiet, &data, stop_rx.clone(), HealthReport::new().0).await?;
    let lifecycle = tokio::spawn(crate::lifecycle::follow_ups(
        assignment.clone(),
        follow_up_sink,
        settings.topics.assignments.clone(),
        settings.lifecycle.check_every,
        stop_rx.clone(),
    ));
    let status_consumer = match &settings.output {
        OutputSettings::Kafka(k) if settings.lifecycle.consume_status => {
            Some(tokio::spawn(crate::lifecycle::consume_status(
                k.clone(),
                settings.topics.status.clone(),
                settings.lifecycle.status_group.clone(),
                assignment.clone(),
                stop_rx.clone(),
            )))
        }
        _ => None,
    };
    let delivery = tokio::spawn(deliver_forever(
        journal.clone(),
        processor.clone(),
        sink,
        settings.intake.batch_size,
        settings.stats.clone(),
        health,
        stop_rx,
    ));

    let addr = listener.local_addr()?;
    println!(
        "leadgate {} listening on http://{addr}",
        env!("CARGO_PKG_VERSION")
    );
    let base = format!("http://{addr}");
    for line in settings
        .connectors
        .iter()
        .filter_map(|c| c.get().banner(&base))
    {
        println!("  {line}");
    }
    println!("  console: http://{addr}/console");
    println!("  management API: http://{addr}/openapi.json (leads, assignment rules)");
    println!(
        "  data directory: {} (journal, identity and assignment stores)",
        data.0.display()
    );
    println!("  {output}");
    if let Some(g) = &gateway {
        println!("  coordination: gateway {g}; pull connectors run on one gateway at a time");
    }
    if let OutputSettings::Embedded = settings.output {
        println!(
            "  clean leads: {}",
            data.output()
                .join(format!("{}.jsonl", settings.topics.clean))
                .display()
        );
    }
    let backlog = journal.backlog();
    if backlog > 0 {
        println!("  resuming delivery of {backlog} journaled leads");
    }

    let imports = crate::imports::Imports::new(
        &data.0,
        journal.clone(),
        processor.clone(),
        settings.intake.max_backlog,
        &settings.connectors,
    )
    .context("cannot prepare the imports directory")?;
    imports.resume();
    let access = crate::access::AccessAudit::open(&data.0.join("access-audit.redb"))
        .context("cannot open the access audit")?;
    let state = AppState::new(
        &settings,
        journal,
        health_rx,
        identity,
        assignment,
        processor.clone(),
        sources,
    )
    .with_access_audit(Arc::new(access))
    .with_imports(imports)
    .with_erasures(erasures);
    let served = serve(listener, state, shutdown).await;
    stop_tx.send_replace(true);
    // The sources' tasks finish the page or batch they are on; what they committed stays.
    let aborted = supervisor.stop(Duration::from_secs(10)).await;
    if aborted > 0 {
        tracing::warn!(
            tasks = aborted,
            "source tasks did not stop within 10s; they resume from their last checkpoint"
        );
    }
    if tokio::time::timeout(Duration::from_secs(10), delivery)
        .await
        .is_err()
    {
        tracing::warn!(
            "delivery did not stop within 10s; undelivered leads stay in the journal for the next start"
        );
    }
    // Durable, and ready for a quick start (the embedded store writes its index's snapshot).
    match tokio::task::spawn_blocking(move || identity_at_exit.close()).await {
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "closing the identity store failed; the next start replays its log")
        }
        Err(e) => tracing::warn!(error = %e, "closing the identity store panicked"),
        Ok(Ok(())) => {}
    }
    if let Some(c) = coordination {
        // After the sources' tasks stopped: the locks go last.
        let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
    }
    for task in std::iter::once(lifecycle).chain(status_consumer) {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    served.context("the HTTP server failed")
}

/// Starts the leases of the pull connectors (`[coordination]`).
fn start_coordination(
    settings: &crate::config::CoordinationSettings,
    leases: crate::coord::Leases,
    journal: Journal,
    statuses: crate::sources::status::Statuses,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    leases.install();
    tracing::info!(
        gateway = leases.gateway(),
        connectors = leases.connectors().count(),
        "coordination: the pull connectors run under leases"
    );
    match settings {
        #[cfg(feature = "mysql")]
        crate::config::CoordinationSettings::Mysql { url, lease, .. } => {
            use secrecy::ExposeSecret;
            let (url, lease) = (url.expose_secret().to_owned(), *lease);
            Ok(tokio::spawn(async move {
                // A database that is down at start is retried: the connectors wait in standby.
                let mut backoff = crate::retry::forever();
                loop {
                    let stop2 = stop.clone();
                    match crate::coord::mysql::run(
                        &url,
                        lease,
                        leases.clone(),
                        journal.clone(),
                        statuses.clone(),
                        stop2,
                    )
                    .await
                    {
                        Ok(()) => return,
                        Err(e) => {
                            let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                            tracing::error!(error = %e, retry_in = ?delay, "coordination: cannot reach the database; the pull connectors wait in standby");
                            tokio::time::sleep(delay).await;
                            if *stop.borrow() {
                                return;
                            }
                        }
                    }
                }
            }))
        }
        #[cfg(not(feature = "mysql"))]
        crate::config::CoordinationSettings::Mysql { .. } => {
            let _ = (leases, journal, statuses, stop);
            anyhow::bail!(
                "[coordination] type = \"mysql\" needs a leadgate built with the `mysql` feature"
            )
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
