//! `leadgate import FILE`: runs a CSV or JSON-lines file through the same pipeline as webhooks,
//! with a progress bar on a terminal and a summary at the end. `--dry-run` publishes nothing and
//! writes each record that would be published as `{"topic", "key", "value"}`.
//!
//! An import stopped at any point (Ctrl-C, `kill -9`, a full disk) is finished by running it
//! again, without losing or repeating a row:
//! - each row's `event_id` derives from the source, the file's SHA-256 and the row's line, so a
//!   row processed again is a replay of the same event: the identity store answers it as the
//!   first time (never "already ingested"), with the same `lead_id`;
//! - after each batch is delivered, a checkpoint under `<data_dir>/imports/` records the last
//!   line delivered and where the output stands (each topic file's length, or each Kafka
//!   partition's offset), written to a temporary file, fsynced, renamed; a rerun starts after
//!   that line;
//! - the rows after it are in doubt: a stop while their batch was published may have left all,
//!   some or none of its records in the output. A rerun reads the output from the recorded
//!   positions, and the records it finds there are not published again (until all of them came
//!   by again, the checkpoint keeps those positions, so a second stop finds them too). No Kafka
//!   transactions are needed, which the broker may not offer (tansu 0.6 does not);
//! - a file imported to its end is not published again unless `--again` says so (then its rows
//!   go out again under the same event ids).

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
use crate::identity::{IdentityStore, Policy, ScratchIdentityStore, scratch};
use crate::lead::{IntakeEvent, SourceKind};
use crate::pipeline::{Disposition, Prepared, Processor, Summary};
use crate::sinks::{DryRunSink, HealthReport, Sink};
use crate::sources::file::Format;
use crate::sources::webhook::field_text;

pub struct ImportOptions {
    pub file: PathBuf,
    /// Publish a file imported to its end once more.
    pub again: bool,
    pub format: Option<Format>,
    /// A spreadsheet's sheet (the first when `None`).
    pub sheet: Option<String>,
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
            "{}: cannot tell the format from the extension; pass --format csv, jsonl or sheet",
            opts.file.display()
        ),
    };
    if opts.sheet.is_some() && format != Format::Sheet {
        bail!(
            "{}: --sheet names a sheet of a spreadsheet, and this file is read as {}",
            opts.file.display(),
            format.label()
        );
    }
    let started = Instant::now();
    // A first pass names the file (its SHA-256), finds its encoding and any quote that never
    // closes; the second reads the rows one batch at a time, so memory does not grow with it.
    let scan = crate::sources::file::scan(&opts.file, format)?;
    let path = opts.file.display().to_string();
    if let Some((line, field)) = scan.unclosed_quote {
        return Err(crate::sources::file::FileError::UnclosedQuote { path, line, field }.into());
    }
    let digest = scan.digest.clone();
    let checkpoint =
        (!opts.dry_run).then(|| Checkpoint::at(&settings.data_dir, &opts.source, &digest));
    let done = match &checkpoint {
        Some(c) => c.read()?,
        None => None,
    };
    let mut in_doubt = None;
    let resume_after = match done {
        Some(d) if d.complete && !opts.again => {
            eprintln!(
                "{path}: already imported to its end as `{}` ({} rows); nothing to do (--again publishes it once more)",
                opts.source, d.rows
            );
            return Ok(Summary::default());
        }
        Some(d) if !d.complete => {
            eprintln!(
                "{path}: an earlier import stopped after line {}; going on from there",
                d.through_line
            );
            in_doubt = d.in_doubt;
            d.through_line
        }
        _ => 0,
    };

    let (_stop_tx, stop_rx) = watch::channel(false);
    let mut erasures = None;
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
            // The dry run's people are kept in a store of its own that keeps no log, in memory
            // up to a budget and in a temporary directory ($TMPDIR) beyond it. Tests make the
            // budget small (`LEADGATE_DRY_RUN_BUDGET`, bytes) to spill a small file.
            let budget = std::env::var("LEADGATE_DRY_RUN_BUDGET")
                .ok()
                .and_then(|b| b.parse().ok())
                .unwrap_or(scratch::DEFAULT_BUDGET);
            let identity = ScratchIdentityStore::new(
                Policy::new(&settings.identity),
                &std::env::temp_dir(),
                budget,
            )?;
            (
                Arc::new(identity),
                Arc::new(EmbeddedAssignmentStore::in_memory()?),
                Sink::DryRun(DryRunSink::new(out, &label)),
            )
        } else {
            let data = create_data_dir(&settings.data_dir)?;
            // The stores seal what they write with the gateway's key.
            settings.privacy.install()?;
            // Erased people's rows are suppressed as the gateway's leads are.
            erasures = Some(Arc::new(
                crate::erasure::Erasures::open(&data.erasures(), settings.privacy.suppression)
                    .context("cannot open the erasure requests (erasures.redb)")?,
            ));
            (
                open_identity(&settings, &data)?,
                open_assignment(&settings, &data)?,
                build_sink(&settings, &data, stop_rx, HealthReport::new().0).await?,
            )
        };
    // The batch being published when an earlier run stopped may have reached the output in
    // part: its records found there are not published again.
    let topics = [
        settings.topics.clean.as_str(),
        &settings.topics.rejected,
        &settings.topics.merged,
        &settings.topics.test,
    ];
    // What arrived after the positions of the rows in doubt (their records, and any other
    // producer's), until this run is past those rows: while it is not, a stop leaves the same
    // rows in doubt, from the same positions.
    let mut landed = crate::sinks::Landed::new();
    let mut doubt_rows = 0usize;
    if let Some(doubt) = &in_doubt {
        eprintln!(
            "{path}: reading back what the stopped run had published after line {}",
            doubt.from_line - 1
        );
        landed = sink
            .landed(&doubt.positions)
            .await
            .context("cannot tell what the stopped import had published")?;
        doubt_rows = doubt.rows;
    } else if let Some(c) = &checkpoint {
        let positions = sink.positions(&topics).await?;
        let doubt = InDoubt {
            from_line: resume_after + 1,
            rows: settings.intake.batch_size,
            positions,
        };
        c.write(&path, resume_after, 0, false, Some(&doubt))?;
        in_doubt = Some(doubt);
    }
    let mut published_before = 0usize;
    let connector = settings.connector(&opts.source);
    let external_id_field = connector
        .and_then(|c| c.external_id_field())
        .map(str::to_owned);
    let mut processor = Processor::new(
        &settings.connectors,
        settings.topics.clone(),
        identity,
        Policy::new(&settings.identity),
        Assigner::new(assignment).with_max_total(settings.assignment.max_score),
    );
    if let Some(e) = erasures {
        processor = processor.with_erasures(e);
    }
    let processor = Arc::new(processor);

    let progress = ProgressBar::new(scan.bytes);
    progress.set_style(
        ProgressStyle::with_template(
            "{bar:40} {percent:>3}% {msg}, {binary_bytes_per_sec}, eta {eta}",
        )
        .unwrap_or(ProgressStyle::default_bar()),
    );
    let mut summary = Summary::default();
    // Rows are read, and their events made, on a thread of their own, a few batches (`AHEAD`)
    // ahead of the pipeline: reading and decoding run beside identity and delivery.
    let read_bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = crate::sources::file::open(
        &opts.file,
        format,
        opts.sheet.as_deref(),
        &scan,
        &read_bytes,
    )?;
    reader.notes.iter().for_each(|n| eprintln!("{n}"));
    let incoming = read_ahead(
        reader,
        settings.intake.batch_size,
        resume_after,
        RowEvents::new(&opts.source, &digest, external_id_field),
        Some(processor.clone()),
    )?;
    let (mut last_line, mut rows) = (resume_after, 0);
    let mut delivered = 0usize;
    // A fault point for tests: `LEADGATE_IMPORT_CRASH_AFTER=N` aborts the process right after
    // the Nth batch of this run is published, before its checkpoint is written.
    let crash_after: Option<u64> = std::env::var("LEADGATE_IMPORT_CRASH_AFTER")
        .ok()
        .and_then(|n| n.parse().ok());
    let mut batches = 0u64;
    // The rejected rows, with their lines and reasons, beside the file (opened at the first).
    let report_path = rejected_path(&opts.file);
    let mut report: Option<crate::imports::Report> = None;
    // Four stages at once, each a few batches ahead of the next: the reader thread reads and
    // prepares, the identity thread resolves, the records thread assigns and makes the records,
    // this task delivers and writes the checkpoint.
    let mut made = make_records(incoming, processor.clone())?;
    loop {
        let (lines, errors, events, records, dispositions) = match made.recv().await {
            None => break,
            Some(Made::End { last_line: l, read }) => {
                (last_line, rows) = (l, read as usize);
                continue;
            }
            Some(Made::Failed(e)) => return Err(e),
            Some(Made::Batch {
                lines,
                errors,
                events,
                records,
                dispositions,
            }) => {
                for (line, err) in lines.iter().zip(&errors) {
                    if let Some(err) = err {
                        progress
                            .suspend(|| eprintln!("{path}:{line}: {err}; kept as a rejected lead"));
                    }
                }
                (lines, errors, events, records, dispositions)
            }
        };
        let last = lines.last().copied().unwrap_or(0);
        for (((line, event), d), error) in lines.iter().zip(&events).zip(&dispositions).zip(&errors)
        {
            if let Disposition::Rejected { codes } = d {
                // A row that could not be read says why (as an upload's report does), not what
                // its empty lead lacks.
                let unreadable = error.as_ref().map(|e| vec![format!("unreadable: {e}")]);
                let codes = unreadable.as_ref().unwrap_or(codes);
                if report.is_none() {
                    report = Some(
                        crate::imports::Report::open(report_path.clone(), resume_after, false)
                            .with_context(|| format!("cannot write {}", report_path.display()))?,
                    );
                }
                if let Some(r) = report.as_mut() {
                    r.row(*line, codes, &event.payload)
                        .with_context(|| format!("cannot write {}", report_path.display()))?;
                }
            }
        }
        if let Some(r) = report.as_mut() {
            r.flush()
                .with_context(|| format!("cannot write {}", report_path.display()))?;
        }
        // No journal holds these rows: their identities are made durable before they leave (a dry
        // run's scratch store needs no durability).
        if !opts.dry_run {
            processor.sync()?;
        }
        let mut records = records;
        if !landed.is_empty() {
            let before = records.len();
            records.retain(|r| {
                let arrived = r.event_id().map(|id| (r.topic.clone(), id.to_owned()));
                !arrived.is_some_and(|a| landed.remove(&a))
            });
            published_before += before - records.len();
        }
        sink.deliver(&records).await?;
        batches += 1;
        if crash_after == Some(batches) {
            // The worst point to stop: a batch published, its checkpoint not written.
            eprintln!("LEADGATE_IMPORT_CRASH_AFTER={batches}: stopping as a crash would");
            std::process::abort();
        }
        delivered += events.len();
        if let Some(c) = &checkpoint {
            // Where the output stands after the batch, which is where the next batch's records
            // will be found if a stop leaves it in doubt (one batch is published at a time).
            // Until this run is past the rows an earlier stop left in doubt, they stay in doubt.
            doubt_rows = doubt_rows.saturating_sub(events.len());
            if doubt_rows == 0 {
                landed.clear();
                in_doubt = Some(InDoubt {
                    from_line: last + 1,
                    rows: settings.intake.batch_size,
                    positions: sink.positions(&topics).await?,
                });
            }
            c.write(&path, last, delivered, false, in_doubt.as_ref())?;
        }
        dispositions.iter().for_each(|d| summary.add(d));
        progress.set_position(read_bytes.load(std::sync::atomic::Ordering::Relaxed));
        progress.set_message(format!("through line {last}"));
    }
    if let Some(c) = &checkpoint {
        c.write(&path, last_line, rows, true, None)?;
    }
    progress.finish_and_clear();

    let total = summary.accepted + summary.rejected_total() + summary.duplicates;
    let from = if resume_after > 0 {
        format!("lines {} to {last_line}", resume_after + 1)
    } else {
        format!("through line {last_line}")
    };
    eprintln!(
        "imported {path}: {total} rows in {:.1}s ({from})",
        started.elapsed().as_secs_f64()
    );
    eprintln!(
        "  accepted {:>8} (merged into an earlier lead: {})",
        summary.accepted, summary.merged
    );
    if published_before > 0 {
        eprintln!(
            "  {published_before} records had been published before the earlier run stopped; not published again"
        );
    }
    if summary.duplicates > 0 {
        eprintln!(
            "  skipped  {:>8} (already ingested: same connector and external id)",
            summary.duplicates
        );
    }
    eprintln!("  rejected {:>8}", summary.rejected_total());
    if report.is_some() {
        eprintln!(
            "    (each with its line and reasons, to fix and import again: {})",
            report_path.display()
        );
    }
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

/// How a file's rows become events: imported as `source`, the file named by its SHA-256, the
/// platform id read from `external_id_field`.
pub(crate) struct RowEvents {
    source: String,
    ids: RowIds,
    external_id_field: Option<String>,
}

impl RowEvents {
    pub fn new(source: &str, digest: &str, external_id_field: Option<String>) -> Self {
        Self {
            source: source.to_owned(),
            ids: RowIds::new(source, digest),
            external_id_field,
        }
    }

    /// The event of `row`, received at `received_at` (one time for a batch of rows).
    fn event(&self, row: crate::sources::file::Row, received_at: &str) -> IntakeEvent {
        let external_id = self
            .external_id_field
            .as_deref()
            .and_then(|f| field_text(&row.payload, f));
        IntakeEvent::received(
            self.ids.of(row.line),
            received_at.to_owned(),
            &self.source,
            SourceKind::File,
            external_id,
            row.payload,
        )
    }
}

/// Rows made events: each one's line, why it could not be read (if so), and its event; with
/// their preparation (see [`Processor::prepare`]) when the reader was given a processor.
pub(crate) struct Rows {
    pub lines: Vec<u64>,
    pub errors: Vec<Option<String>>,
    pub events: Vec<IntakeEvent>,
    pub prepared: Option<Prepared>,
}

impl Rows {
    fn with_capacity(n: usize) -> Self {
        Self {
            lines: Vec::with_capacity(n),
            errors: Vec::with_capacity(n),
            events: Vec::with_capacity(n),
            prepared: None,
        }
    }
}

/// How many batches each stage of an import may run ahead of the next: enough that a stage
/// that is briefly slower (a spill of the dry run's identity store, a merge of its runs) does not
/// leave a core idle, few enough that memory holds a dozen batches at most.
const AHEAD: usize = 4;

/// What the reader of [`read_ahead`] sends.
pub(crate) enum Ahead {
    /// The next rows, and how many the file has given so far.
    Rows { rows: Rows, read: u64 },
    /// The end of the file: its last line, and its rows.
    End { last_line: u64, read: u64 },
}

/// Reads `reader`'s rows after line `after` on a thread of its own and makes them events, `size`
/// at a time, at most [`AHEAD`] batches ahead of the receiver: reading and decoding run beside
/// identity and delivery, and memory holds a few batches whatever the file's size. With a
/// processor, the thread also prepares each batch (mapping, normalization, identity requests), so
/// that only identity, assignment and delivery are left to the receiver.
pub(crate) fn read_ahead(
    reader: crate::sources::file::RowReader,
    size: usize,
    after: u64,
    events: RowEvents,
    processor: Option<Arc<Processor>>,
) -> anyhow::Result<tokio::sync::mpsc::Receiver<Ahead>> {
    let size = size.max(1);
    let (tx, rx) = tokio::sync::mpsc::channel(AHEAD);
    std::thread::Builder::new()
        .name("import-reader".into())
        .spawn(move || {
            let (mut last_line, mut read) = (after, 0u64);
            let mut batch = Rows::with_capacity(size);
            let mut received_at = String::new();
            let send = |mut rows: Rows, read: u64| {
                if let Some(p) = &processor {
                    rows.prepared = Some(p.prepare(&rows.events));
                }
                tx.blocking_send(Ahead::Rows { rows, read }).is_ok()
            };
            for row in reader {
                read += 1;
                last_line = row.line;
                if row.line <= after {
                    continue;
                }
                batch.lines.push(row.line);
                batch.errors.push(row.error.clone());
                if batch.events.is_empty() {
                    received_at = crate::lead::now_rfc3339();
                }
                batch.events.push(events.event(row, &received_at));
                if batch.events.len() >= size
                    && !send(
                        std::mem::replace(&mut batch, Rows::with_capacity(size)),
                        read,
                    )
                {
                    return;
                }
            }
            if !batch.events.is_empty() && !send(batch, read) {
                return;
            }
            let _ = tx.blocking_send(Ahead::End { last_line, read });
        })
        .context("cannot start the import's reader")?;
    Ok(rx)
}

/// What [`make_records`] gives the import's delivery loop, in the file's order.
enum Made {
    Batch {
        lines: Vec<u64>,
        errors: Vec<Option<String>>,
        events: Vec<IntakeEvent>,
        records: Vec<crate::sinks::OutRecord>,
        dispositions: Vec<Disposition>,
    },
    End {
        last_line: u64,
        read: u64,
    },
    Failed(anyhow::Error),
}

/// Resolves the batches of `incoming` on an identity thread and makes their records on a
/// records thread, each at most [`AHEAD`] batches ahead of the next: identity never waits for
/// assignment, nor either for delivery, while there is room. Assignment runs one batch at a
/// time, in order. A failure ends the stream with [`Made::Failed`].
fn make_records(
    mut incoming: tokio::sync::mpsc::Receiver<Ahead>,
    processor: Arc<Processor>,
) -> anyhow::Result<tokio::sync::mpsc::Receiver<Made>> {
    type Resolved = (Rows, crate::pipeline::Resolved);
    let (resolved_tx, mut resolved_rx) =
        tokio::sync::mpsc::channel::<Result<Resolved, Made>>(AHEAD);
    let (made_tx, made_rx) = tokio::sync::mpsc::channel(AHEAD);
    let identity = processor.clone();
    std::thread::Builder::new()
        .name("import-identity".into())
        .spawn(move || {
            while let Some(ahead) = incoming.blocking_recv() {
                let next = match ahead {
                    Ahead::End { last_line, read } => Err(Made::End { last_line, read }),
                    Ahead::Rows { mut rows, .. } => {
                        let prepared = rows
                            .prepared
                            .take()
                            .unwrap_or_else(|| identity.prepare(&rows.events));
                        match identity.resolve(prepared) {
                            Ok(resolved) => Ok((rows, resolved)),
                            Err(e) => Err(Made::Failed(e.into())),
                        }
                    }
                };
                let failed = matches!(next, Err(Made::Failed(_)));
                if resolved_tx.blocking_send(next).is_err() || failed {
                    return;
                }
            }
        })
        .context("cannot start the import's identity thread")?;
    std::thread::Builder::new()
        .name("import-records".into())
        .spawn(move || {
            while let Some(next) = resolved_rx.blocking_recv() {
                let made = match next {
                    Err(end_or_failure) => end_or_failure,
                    Ok((mut rows, resolved)) => {
                        match processor.records_taking(&mut rows.events, resolved) {
                            Ok((records, outcomes)) => Made::Batch {
                                lines: rows.lines,
                                errors: rows.errors,
                                events: rows.events,
                                records,
                                dispositions: outcomes.into_iter().map(|(d, _)| d).collect(),
                            },
                            Err(e) => Made::Failed(e.into()),
                        }
                    }
                };
                let failed = matches!(made, Made::Failed(_));
                if made_tx.blocking_send(made).is_err() || failed {
                    return;
                }
            }
        })
        .context("cannot start the import's records thread")?;
    Ok(made_rx)
}

/// The namespace of rows' event ids.
const ROW_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6c65_6164_6761_7465_2d69_6d70_6f72_7431);

/// The `event_id`s of the rows of the file whose SHA-256 is `digest`, imported as `source`: the
/// UUID v5 (namespace [`ROW_NAMESPACE`]) of `{source}\0{digest}\0{line}`, the same on every run
/// over the same file, another for any other file or source. The hash of the part before the
/// line is taken once: a row's id costs one SHA-1 block, not two.
pub(crate) struct RowIds {
    prefix: sha1_smol::Sha1,
}

impl RowIds {
    pub fn new(source: &str, digest: &str) -> Self {
        let mut prefix = sha1_smol::Sha1::new();
        prefix.update(ROW_NAMESPACE.as_bytes());
        for part in [source.as_bytes(), b"\0", digest.as_bytes(), b"\0"] {
            prefix.update(part);
        }
        Self { prefix }
    }

    /// The `event_id` of the row at `line`.
    pub fn of(&self, line: u64) -> String {
        let mut hash = self.prefix.clone();
        hash.update(itoa::Buffer::new().format(line).as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&hash.digest().bytes()[..16]);
        crate::lead::uuid_text(uuid::Builder::from_sha1_bytes(bytes).into_uuid())
    }
}

/// How far an import of one file as one source got.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Progress {
    file: String,
    sha256: String,
    source: String,
    /// The last line whose row was delivered.
    through_line: u64,
    rows: usize,
    complete: bool,
    /// The rows that may be in the output already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    in_doubt: Option<InDoubt>,
}

/// The rows after the last delivered batch: whatever of them a stop leaves published is found in
/// the output after `positions`, where it stood when that batch was delivered.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct InDoubt {
    from_line: u64,
    /// How many rows the next batch has at most (its batch size).
    #[serde(default)]
    rows: usize,
    positions: crate::sinks::Positions,
}

/// Where an import's [`Progress`] is kept: `<data_dir>/imports/<source>-<sha256>.json`.
struct Checkpoint {
    path: PathBuf,
    source: String,
    digest: String,
}

impl Checkpoint {
    fn at(data_dir: &std::path::Path, source: &str, digest: &str) -> Self {
        let safe: String = source
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Self {
            path: data_dir
                .join("imports")
                .join(format!("{safe}-{digest}.json")),
            source: source.to_owned(),
            digest: digest.to_owned(),
        }
    }

    fn read(&self) -> anyhow::Result<Option<Progress>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).with_context(|| {
                format!(
                    "{}: not an import checkpoint; delete it to start the import over",
                    self.path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.path.display())),
        }
    }

    /// Replaces the checkpoint durably: a crash leaves the old one or the new one, whole.
    fn write(
        &self,
        file: &str,
        through_line: u64,
        rows: usize,
        complete: bool,
        in_doubt: Option<&InDoubt>,
    ) -> anyhow::Result<()> {
        let progress = Progress {
            file: file.to_owned(),
            sha256: self.digest.clone(),
            source: self.source.clone(),
            through_line,
            rows,
            complete,
            in_doubt: in_doubt.cloned(),
        };
        crate::storefile::replace(&self.path, &serde_json::to_vec(&progress)?)
            .with_context(|| format!("cannot write the import checkpoint {}", self.path.display()))
    }
}

/// `leadgate import --server URL FILE`: uploads the file to a running gateway (`POST
/// /v1/imports`, streamed), follows its progress (`GET /v1/imports/{id}`) and prints the summary;
/// rows that would be rejected are written beside the file as `<file>.rejected.csv`.
pub async fn import_remote(
    server: &str,
    token: Option<&str>,
    opts: &ImportOptions,
) -> anyhow::Result<crate::imports::Status> {
    use crate::imports::{State, Status};
    let base = server.trim_end_matches('/');
    let file_name = opts
        .file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("upload")
        .to_owned();
    let file = tokio::fs::File::open(&opts.file)
        .await
        .with_context(|| format!("cannot open {}", opts.file.display()))?;
    let size = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let client = reqwest::Client::new();
    let with_token = |r: reqwest::RequestBuilder| match token {
        Some(t) => r.bearer_auth(t),
        None => r,
    };
    let mut query = vec![
        ("source", opts.source.clone()),
        ("file_name", file_name.clone()),
    ];
    if let Some(f) = opts.format {
        query.push(("format", f.name().to_owned()));
    }
    if let Some(s) = &opts.sheet {
        query.push(("sheet", s.clone()));
    }
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    let resp = with_token(client.post(format!("{base}/v1/imports")).query(&query))
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach {base}"))?;
    let answer = |status: reqwest::StatusCode, body: String| -> anyhow::Error {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or(body);
        anyhow::anyhow!("{base} answered {status}: {message}")
    };
    if !resp.status().is_success() {
        let status = resp.status();
        return Err(answer(status, resp.text().await.unwrap_or_default()));
    }
    let mut status: Status = resp.json().await.context("the gateway's answer")?;
    eprintln!(
        "uploaded {} ({size} bytes) to {base} as import {}",
        opts.file.display(),
        status.id
    );
    let progress = ProgressBar::new(size.max(1));
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {percent:>3}% {msg}, eta {eta}")
            .unwrap_or(ProgressStyle::default_bar()),
    );
    while !matches!(status.state, State::Done | State::Failed) {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let resp = with_token(client.get(format!("{base}/v1/imports/{}", status.id)))
            .send()
            .await
            .with_context(|| format!("cannot reach {base}"))?;
        if !resp.status().is_success() {
            let code = resp.status();
            return Err(answer(code, resp.text().await.unwrap_or_default()));
        }
        status = resp.json().await.context("the gateway's answer")?;
        progress.set_position(status.bytes_read);
        progress.set_message(format!(
            "{} rows, through line {}",
            status.rows_read, status.through_line
        ));
    }
    progress.finish_and_clear();
    status.notes.iter().for_each(|n| eprintln!("{n}"));
    if status.state == State::Failed {
        bail!(
            "import {} stopped after line {}: {}",
            status.id,
            status.through_line,
            status.error.as_deref().unwrap_or("no reason given")
        );
    }
    eprintln!(
        "imported {}: {} rows read, {} journaled (delivered as leads by the gateway), through line {}",
        opts.file.display(),
        status.rows_read,
        status.rows_journaled,
        status.through_line
    );
    if status.rows_rejected > 0 {
        let report =
            with_token(client.get(format!("{base}/v1/imports/{}/rejected.csv", status.id)))
                .send()
                .await
                .with_context(|| format!("cannot reach {base}"))?;
        let bytes = report.bytes().await.context("the rejected-rows report")?;
        let beside = rejected_path(&opts.file);
        std::fs::write(&beside, &bytes)
            .with_context(|| format!("cannot write {}", beside.display()))?;
        eprintln!(
            "  rejected {:>8} (their lines and reasons: {})",
            status.rows_rejected,
            beside.display()
        );
    }
    Ok(status)
}

/// `<file>.rejected.csv` beside `file`.
pub fn rejected_path(file: &std::path::Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".rejected.csv");
    file.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::{ROW_NAMESPACE, RowIds};

    /// The contract: the UUID v5 of the source, the file's digest and the line.
    fn row_event_id(source: &str, digest: &str, line: u64) -> String {
        let name = format!("{source}\u{0}{digest}\u{0}{line}");
        uuid::Uuid::new_v5(&ROW_NAMESPACE, name.as_bytes()).to_string()
    }

    #[test]
    fn a_rows_event_id_is_the_same_on_every_run_and_another_elsewhere() {
        let id = RowIds::new("expo", "ab").of(2);
        assert_eq!(id, RowIds::new("expo", "ab").of(2));
        assert_ne!(id, RowIds::new("expo", "ab").of(3));
        assert_ne!(id, RowIds::new("expo", "ac").of(2));
        assert_ne!(id, RowIds::new("other", "ab").of(2));
    }

    #[test]
    fn a_rows_event_id_is_the_uuid_v5_of_its_source_file_and_line() {
        let digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        // Prefixes of every length around a SHA-1 block (64 bytes), lines of every width.
        for source in (0..80).map(|n| "展会".repeat(n % 7) + &"s".repeat(n)) {
            let ids = RowIds::new(&source, digest);
            for line in [0, 1, 9, 10, 99, 12_345, 9_999_999, u64::MAX] {
                assert_eq!(
                    ids.of(line),
                    row_event_id(&source, digest, line),
                    "{source} {line}"
                );
            }
        }
    }
}
