//! `leadgate import FILE`: runs a CSV or JSON-lines file through the same pipeline as webhooks,
//! with a progress bar on a terminal and a summary at the end. `--dry-run` publishes nothing and
//! writes each record that would be published as `{"topic", "key", "value"}`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use crate::app::{build_sink, create_data_dir, open_assignment, open_identity};
use crate::assign::{Assigner, AssignmentStore, EmbeddedAssignmentStore};
use crate::config::Settings;
use crate::identity::{EmbeddedIdentityStore, IdentityStore, Policy};
use crate::lead::{IntakeEvent, SourceKind};
use crate::pipeline::{Processor, Summary};
use crate::sinks::{DryRunSink, HealthReport, Sink};
use crate::sources::file::{Format, read_text, rows};
use crate::sources::webhook::field_text;

pub struct ImportOptions {
    pub file: PathBuf,
    pub format: Option<Format>,
    /// The connector name the leads are attributed to; its mapping applies if it is configured.
    pub source: String,
    pub dry_run: bool,
    /// With `dry_run`: where the records go (`-` is stdout, the default).
    pub output: Option<PathBuf>,
}

pub async fn import(settings: Settings, opts: ImportOptions) -> anyhow::Result<Summary> {
    if opts.output.is_some() && !opts.dry_run {
        bail!(
            "--output goes with --dry-run (without it, records are published to the configured output)"
        );
    }
    let format = match opts.format.or_else(|| Format::from_path(&opts.file)) {
        Some(f) => f,
        None => bail!(
            "{}: cannot tell the format from the extension; pass --format csv or --format jsonl",
            opts.file.display()
        ),
    };
    let started = Instant::now();
    let text = read_text(&opts.file)?;
    let rows = rows(&text, format, &opts.file)?;

    let (_stop_tx, stop_rx) = watch::channel(false);
    let (identity, assignment, mut sink): (Arc<dyn IdentityStore>, Arc<dyn AssignmentStore>, Sink) =
        if opts.dry_run {
            let out: Box<dyn Write + Send> = match opts.output.as_deref() {
                None => Box::new(std::io::stdout()),
                Some(p) if p.as_os_str() == "-" => Box::new(std::io::stdout()),
                Some(p) => Box::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?,
                ),
            };
            let label = opts
                .output
                .as_ref()
                .map_or("stdout".into(), |p| p.display().to_string());
            (
                Arc::new(EmbeddedIdentityStore::in_memory(Policy::new(
                    &settings.identity,
                ))?),
                Arc::new(EmbeddedAssignmentStore::in_memory()?),
                Sink::DryRun(DryRunSink::new(out, &label)),
            )
        } else {
            let data = create_data_dir(&settings.data_dir)?;
            (
                open_identity(&settings, &data)?,
                open_assignment(&settings, &data)?,
                build_sink(&settings, &data, stop_rx, HealthReport::new().0).await?,
            )
        };
    let connector = settings.connector(&opts.source);
    let external_id_field = connector
        .and_then(|c| c.external_id_field())
        .map(str::to_owned);
    let processor = Processor::new(
        &settings.connectors,
        settings.topics.clone(),
        identity,
        Policy::new(&settings.identity),
        Assigner::new(assignment),
    );

    let progress = ProgressBar::new(text.len() as u64);
    progress.set_style(
        ProgressStyle::with_template(
            "{bar:40} {percent:>3}% {pos}/{len} bytes, {per_sec}, eta {eta}",
        )
        .unwrap_or(ProgressStyle::default_bar()),
    );
    let mut summary = Summary::default();
    let path = opts.file.display().to_string();
    for chunk in rows.chunks(settings.intake.batch_size) {
        let events: Vec<IntakeEvent> = chunk
            .iter()
            .map(|row| {
                if let Some(err) = &row.error {
                    progress.suspend(|| {
                        eprintln!("{path}:{}: {err}; kept as a rejected lead", row.line)
                    });
                }
                let external_id = external_id_field
                    .as_deref()
                    .and_then(|f| field_text(&row.payload, f));
                IntakeEvent::new(
                    &opts.source,
                    SourceKind::File,
                    external_id,
                    row.payload.clone(),
                )
            })
            .collect();
        let (records, dispositions) = processor.process(&events)?;
        // No journal holds these rows: their identities are made durable before they leave.
        processor.sync()?;
        sink.deliver(&records).await?;
        dispositions.iter().for_each(|d| summary.add(d));
        progress.set_position(chunk.last().map_or(0, |r| r.offset));
    }
    progress.finish_and_clear();

    let total = summary.accepted + summary.rejected_total() + summary.duplicates;
    eprintln!(
        "imported {path}: {total} rows in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "  accepted {:>8} (merged into an earlier lead: {})",
        summary.accepted, summary.merged
    );
    if summary.duplicates > 0 {
        eprintln!(
            "  skipped  {:>8} (already ingested: same connector and external id)",
            summary.duplicates
        );
    }
    eprintln!("  rejected {:>8}", summary.rejected_total());
    for (code, n) in &summary.rejected {
        eprintln!("    {code:<24} {n:>8}");
    }
    if opts.dry_run {
        eprintln!("dry run: nothing was published");
    } else {
        eprintln!("{}", sink.describe());
    }
    Ok(summary)
}
