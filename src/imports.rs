//! Imports through the running gateway: `POST /v1/imports` streams the uploaded file to
//! `<data_dir>/imports/uploads/`, answers with an import id, and a task reads the file's rows into
//! the journal, where the delivery loop takes them like any webhook's leads. `GET
//! /v1/imports/{id}` shows the progress, then the summary; `GET /v1/imports/{id}/rejected.csv` is
//! the report of the rows that would be rejected, with their lines and reasons.
//!
//! **Exactly once into the journal.** Rows are journaled in batches, each in the same transaction
//! as the import's checkpoint (the last line journaled, keyed by the source and the file's
//! SHA-256): a gateway killed at any point resumes the import at its next start after that line,
//! and the same file uploaded again goes on where the first stopped (or, imported to its end, is
//! not journaled again). Each row's `event_id` derives from the source, the file's SHA-256 and
//! the line, as for the offline `leadgate import`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::intake::Journal;
use crate::pipeline::Processor;
use crate::sources::file::Format;

/// Rewrites the rejected-rows reports under `<data_dir>/imports/uploads/` without the rows that
/// have a cell `hit` picks (an erasure); returns how many rows went.
pub fn erase_reports(data_dir: &Path, hit: impl Fn(&str) -> bool) -> std::io::Result<u64> {
    let dir = data_dir.join("imports").join("uploads");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(0);
    };
    let mut dropped = 0;
    for entry in entries {
        let path = entry?.path();
        if !path.to_string_lossy().ends_with(".rejected.csv") {
            continue;
        }
        let bytes = std::fs::read(&path)?;
        let sealed = bytes.starts_with(SEALED_REPORT);
        let records = report_records(bytes)?;
        let keep: Vec<&csv::StringRecord> =
            records.iter().filter(|r| !r.iter().any(&hit)).collect();
        let removed = (records.len() - keep.len()) as u64;
        if removed == 0 {
            continue;
        }
        crate::storefile::replace_with(&path, |file| {
            let mut out = ReportFile::new(file, sealed)?;
            for r in keep {
                out.write(r)?;
            }
            out.finish().map(Some)
        })?;
        dropped += removed;
    }
    Ok(dropped)
}

/// Rows journaled per transaction.
const BATCH: usize = 500;

/// What is asked of an import.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The connector the leads are attributed to (its mapping applies if it is configured).
    pub source: String,
    /// The uploaded file's name, for the format and the messages.
    pub file_name: String,
    #[serde(default)]
    pub sheet: Option<String>,
    /// `csv`, `jsonl` or `sheet`; from the file name when absent.
    #[serde(default)]
    pub format: Option<String>,
}

/// Where an import stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Uploaded, waiting for its turn.
    #[default]
    Queued,
    /// Its rows are being journaled.
    Importing,
    /// Every row is journaled (delivery goes on as for any lead).
    Done,
    /// It stopped on an error (`error` says which); nothing after `through_line` was journaled.
    Failed,
}

/// An import's progress and, at the end, its summary.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Status {
    pub id: String,
    pub source: String,
    pub file_name: String,
    /// The file's SHA-256 (known once it is read): the same file uploaded again is the same
    /// import.
    #[serde(default)]
    pub sha256: String,
    pub state: State,
    /// Bytes uploaded, and how far the reading got.
    pub bytes: u64,
    pub bytes_read: u64,
    /// Rows read from the file (all of them once done).
    pub rows_read: u64,
    /// Rows journaled by this import (a resumed or repeated upload journals only the rest).
    pub rows_journaled: u64,
    /// The last line journaled.
    pub through_line: u64,
    /// Rows that would be rejected (no usable phone or email, or unreadable), in the report;
    /// counted over the whole file, by every upload of it.
    pub rows_rejected: u64,
    /// The reader's notes: title rows skipped, repeated column names.
    #[serde(default)]
    pub notes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// The imports of a gateway.
#[derive(Clone)]
pub struct Imports {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    journal: Journal,
    processor: Arc<Processor>,
    max_backlog: u64,
    /// The connector's external id field, by connector name.
    external_ids: HashMap<String, String>,
    statuses: Mutex<HashMap<String, Status>>,
    /// One import reads at a time; the others wait their turn.
    turn: tokio::sync::Mutex<()>,
}

impl Imports {
    pub fn new(
        data_dir: &Path,
        journal: Journal,
        processor: Arc<Processor>,
        max_backlog: u64,
        connectors: &[crate::config::ConnectorConfig],
    ) -> std::io::Result<Self> {
        let dir = data_dir.join("imports").join("uploads");
        std::fs::create_dir_all(&dir)?;
        let external_ids = connectors
            .iter()
            .filter_map(|c| Some((c.name().to_owned(), c.get().external_id_field()?.to_owned())))
            .collect();
        let imports = Self {
            inner: Arc::new(Inner {
                dir,
                journal,
                processor,
                max_backlog,
                external_ids,
                statuses: Mutex::new(HashMap::new()),
                turn: tokio::sync::Mutex::new(()),
            }),
        };
        Ok(imports)
    }

    fn statuses(&self) -> std::sync::MutexGuard<'_, HashMap<String, Status>> {
        self.inner
            .statuses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new import's id.
    pub fn new_id() -> String {
        uuid::Uuid::now_v7().simple().to_string()
    }

    /// Where import `id`'s upload is stored: named by the id, with the extension of the file's
    /// own name (a spreadsheet is opened by it).
    pub fn upload_path(&self, id: &str, file_name: &str) -> PathBuf {
        let ext = Path::new(file_name)
            .extension()
            .and_then(|e| e.to_str())
            .filter(|e| e.len() <= 8 && e.bytes().all(|b| b.is_ascii_alphanumeric()))
            .unwrap_or("dat")
            .to_ascii_lowercase();
        self.inner.dir.join(format!("{id}.{ext}"))
    }

    pub fn get(&self, id: &str) -> Option<Status> {
        if let Some(s) = self.statuses().get(id) {
            return Some(s.clone());
        }
        // Finished before a restart: its last status is on disk.
        let bytes = std::fs::read(self.status_path(id)?).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn status_path(&self, id: &str) -> Option<PathBuf> {
        id.bytes()
            .all(|b| b.is_ascii_hexdigit())
            .then(|| self.inner.dir.join(format!("{id}.json")))
    }

    /// The rejected-rows report of `id`, when there is one.
    pub fn report(&self, id: &str) -> Option<PathBuf> {
        let status = self.get(id)?;
        let path = self.report_path(&status.source, &status.sha256);
        (status.rows_rejected > 0 && path.exists()).then_some(path)
    }

    /// The rejected-rows report of a file (by its SHA-256) imported as `source`.
    fn report_path(&self, source: &str, sha256: &str) -> PathBuf {
        let safe: String = source
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.inner.dir.join(format!("{safe}-{sha256}.rejected.csv"))
    }

    fn save(&self, status: &Status) {
        self.statuses().insert(status.id.clone(), status.clone());
        if let Some(path) = self.status_path(&status.id) {
            let tmp = path.with_extension("json.tmp");
            let written = serde_json::to_vec(status)
                .map_err(std::io::Error::other)
                .and_then(|b| std::fs::write(&tmp, b))
                .and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(e) = written {
                tracing::warn!(import = %status.id, error = %e, "cannot write the import's status");
            }
        }
    }

    /// Starts importing the uploaded `path` (of `bytes`) as `id`.
    pub fn start(&self, id: String, path: PathBuf, bytes: u64, request: Request) -> Status {
        let status = Status {
            id: id.clone(),
            source: request.source.clone(),
            file_name: request.file_name.clone(),
            bytes,
            created_at: crate::lead::now_rfc3339(),
            ..Status::default()
        };
        if let Ok(json) = serde_json::to_vec(&request) {
            let _ = std::fs::write(path.with_extension("request.json"), json);
        }
        self.save(&status);
        let this = self.clone();
        tokio::spawn(async move { this.run(id, path, request).await });
        status
    }

    /// Imports started before a restart and not finished go on.
    pub fn resume(&self) {
        let Ok(dir) = std::fs::read_dir(&self.inner.dir) else {
            return;
        };
        for entry in dir.flatten() {
            let path = entry.path();
            if !path.to_string_lossy().ends_with(".request.json") {
                continue;
            }
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".request.json"))
                .map(str::to_owned)
            else {
                continue;
            };
            let Some(status) = self.get(&id) else {
                continue;
            };
            if matches!(status.state, State::Done | State::Failed) {
                continue;
            }
            let Ok(request) = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Request>(&b).map_err(|e| e.to_string()))
            else {
                continue;
            };
            // Stored under the id with the file's own extension (see `upload_path`).
            let upload = self.upload_path(&id, &request.file_name);
            if !upload.exists() {
                continue;
            }
            tracing::info!(import = %id, file = %request.file_name, "resuming an import stopped by a restart");
            self.statuses().insert(id.clone(), status);
            let this = self.clone();
            tokio::spawn(async move { this.run(id, upload, request).await });
        }
    }

    async fn run(self, id: String, path: PathBuf, request: Request) {
        let _turn = self.inner.turn.lock().await;
        let mut status = self.get(&id).unwrap_or_default();
        status.state = State::Importing;
        self.save(&status);
        let outcome = self.import(&mut status, &path, &request).await;
        match outcome {
            Ok(()) => status.state = State::Done,
            Err(e) => {
                tracing::error!(import = %id, error = %e, "the import stopped");
                status.state = State::Failed;
                status.error = Some(e);
            }
        }
        status.finished_at = Some(crate::lead::now_rfc3339());
        self.save(&status);
        let _ = std::fs::remove_file(path.with_extension("request.json"));
        // Its rows are in the journal (or the report): the upload is not kept (PIPL Art. 19).
        let _ = std::fs::remove_file(&path);
    }

    async fn import(
        &self,
        status: &mut Status,
        path: &Path,
        request: &Request,
    ) -> Result<(), String> {
        let format = Format::of_upload(request.format.as_deref(), Some(&request.file_name))?;
        // The file's errors name it as uploaded, not as stored.
        let stored = path.display().to_string();
        let named =
            |e: crate::sources::file::FileError| e.to_string().replace(&stored, &request.file_name);
        let (file, fmt) = (path.to_owned(), format);
        let scan = tokio::task::spawn_blocking(move || crate::sources::file::scan(&file, fmt))
            .await
            .map_err(|e| e.to_string())?
            .map_err(named)?;
        if let Some((line, field)) = scan.unclosed_quote {
            return Err(format!(
                "{}:{line}: field {field}: a quote opens here and is never closed; nothing was imported",
                request.file_name
            ));
        }
        let digest = scan.digest.clone();
        status.sha256 = digest.clone();
        let checkpoint_key = format!("import\u{1f}{}\u{1f}{digest}", request.source);
        let journal = self.inner.journal.clone();
        let key = checkpoint_key.clone();
        let done: Option<Checkpoint> =
            tokio::task::spawn_blocking(move || journal.checkpoint(&key))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?
                .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(d) = done.as_ref().filter(|d| d.complete) {
            status.notes.push(format!(
                "{}: already imported to its end as `{}`; nothing journaled again",
                request.file_name, request.source
            ));
            status.through_line = d.through_line;
            status.rows_rejected = d.rejected;
            return Ok(());
        }
        let resume_after = done.as_ref().map_or(0, |d| d.through_line);
        status.rows_rejected = done.as_ref().map_or(0, |d| d.rejected);
        // The rows are read, and made events, on a thread of their own, in batches.
        let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (file, sheet, counter) = (path.to_owned(), request.sheet.clone(), read.clone());
        let reader = tokio::task::spawn_blocking(move || {
            crate::sources::file::open(&file, format, sheet.as_deref(), &scan, &counter)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(named)?;
        status.notes.extend(
            reader
                .notes
                .iter()
                .map(|n| n.replace(&stored, &request.file_name)),
        );
        let mut rx = crate::import::read_ahead(
            reader,
            BATCH,
            resume_after,
            crate::import::RowEvents::new(
                &request.source,
                &digest,
                self.inner.external_ids.get(&request.source).cloned(),
            ),
            None,
        )
        .map_err(|e| e.to_string())?;
        let mut report = Report::open(
            self.report_path(&request.source, &digest),
            resume_after,
            true,
        )
        .map_err(|e| format!("cannot write the rejected-rows report: {e}"))?;
        let mut last_line = resume_after;
        while let Some(ahead) = rx.recv().await {
            let (batch, read_so_far) = match ahead {
                crate::import::Ahead::Rows { rows, read } => (rows, read),
                crate::import::Ahead::End { last_line: l, read } => {
                    (last_line, status.rows_read) = (l, read);
                    continue;
                }
            };
            status.rows_read = read_so_far;
            let crate::import::Rows {
                lines,
                errors,
                events,
                ..
            } = batch;
            for ((line, error), event) in lines.into_iter().zip(errors).zip(&events) {
                last_line = line;
                let reasons = match &error {
                    Some(e) => Some(vec![format!("unreadable: {e}")]),
                    None => self.inner.processor.rejection(event).map(|issues| {
                        issues
                            .iter()
                            .map(|i| format!("{}: {}", i.code, i.message))
                            .collect()
                    }),
                };
                if let Some(reasons) = reasons {
                    status.rows_rejected += 1;
                    report
                        .row(line, &reasons, &event.payload)
                        .map_err(|e| format!("cannot write the rejected-rows report: {e}"))?;
                }
            }
            report
                .flush()
                .map_err(|e| format!("cannot write the rejected-rows report: {e}"))?;
            let n = events.len() as u64;
            let checkpoint = serde_json::to_vec(&Checkpoint {
                through_line: last_line,
                complete: false,
                rejected: status.rows_rejected,
            })
            .map_err(|e| e.to_string())?;
            self.inner.journal.wait_below(self.inner.max_backlog).await;
            self.inner
                .journal
                .append_pulled(&checkpoint_key, events, checkpoint)
                .await
                .map_err(|e| {
                    format!(
                        "cannot journal rows after line {}: {e}",
                        status.through_line
                    )
                })?;
            status.rows_journaled += n;
            status.through_line = last_line;
            status.bytes_read = read.load(std::sync::atomic::Ordering::Relaxed);
            self.save(status);
        }
        let checkpoint = serde_json::to_vec(&Checkpoint {
            through_line: last_line,
            complete: true,
            rejected: status.rows_rejected,
        })
        .map_err(|e| e.to_string())?;
        self.inner
            .journal
            .append_pulled(&checkpoint_key, Vec::new(), checkpoint)
            .await
            .map_err(|e| e.to_string())?;
        status.bytes_read = status.bytes;
        Ok(())
    }
}

/// An import's position, stored with its rows in the journal.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    through_line: u64,
    complete: bool,
    /// Rows reported as rejected through `through_line`.
    #[serde(default)]
    rejected: u64,
}

/// The first line of a sealed report (`[privacy] encryption_key`): each CSV record after it is a
/// line of its own, the base64 of the sealed record. [`report_text`] reads both kinds.
const SEALED_REPORT: &[u8] = b"LGSEALED-CSV\n";
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A report's CSV (with its byte order mark) from the file's bytes: a sealed one is opened. A
/// last line cut short by a crash is left out.
pub fn report_text(bytes: Vec<u8>) -> std::io::Result<Vec<u8>> {
    use base64::Engine;
    let Some(rest) = bytes.strip_prefix(SEALED_REPORT) else {
        return Ok(bytes);
    };
    let mut out = BOM.to_vec();
    let lines: Vec<&[u8]> = rest.split(|b| *b == b'\n').collect();
    let whole = lines.len().saturating_sub(1); // after the last newline: a torn line or nothing
    for line in &lines[..whole] {
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(line)
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "a sealed report line is not base64",
                )
            })?;
        out.extend_from_slice(&crate::seal::open_stored(&sealed)?);
    }
    Ok(out)
}

/// Writes CSV records to a report file, sealed or not.
struct ReportFile {
    file: std::io::BufWriter<std::fs::File>,
    sealed: bool,
}

impl ReportFile {
    /// A new report in `file` (its first line or byte order mark written).
    fn new(file: std::fs::File, sealed: bool) -> std::io::Result<Self> {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(file);
        file.write_all(if sealed { SEALED_REPORT } else { BOM })?;
        Ok(Self::on(file, sealed))
    }

    fn on(file: std::io::BufWriter<std::fs::File>, sealed: bool) -> Self {
        Self { file, sealed }
    }

    fn write<I: AsRef<[u8]>>(
        &mut self,
        record: impl IntoIterator<Item = I>,
    ) -> std::io::Result<()> {
        use base64::Engine;
        use std::io::Write;
        let mut csv = csv::WriterBuilder::new()
            .flexible(true)
            .from_writer(Vec::new());
        csv.write_record(record).map_err(std::io::Error::other)?;
        let bytes = csv.into_inner().map_err(|e| e.into_error())?;
        if self.sealed {
            let sealed = crate::seal::seal_stored(bytes)?;
            self.file.write_all(
                base64::engine::general_purpose::STANDARD
                    .encode(sealed)
                    .as_bytes(),
            )?;
            self.file.write_all(b"\n")
        } else {
            self.file.write_all(&bytes)
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        self.file.flush()
    }

    fn finish(mut self) -> std::io::Result<std::fs::File> {
        self.flush()?;
        self.file.into_inner().map_err(|e| e.into_error())
    }
}

/// The records of a report file (sealed or not).
fn report_records(bytes: Vec<u8>) -> std::io::Result<Vec<csv::StringRecord>> {
    let text = report_text(bytes)?;
    let text = text.strip_prefix(BOM).unwrap_or(&text);
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(false)
        .from_reader(text);
    Ok(reader.records().flatten().collect())
}

/// The rejected-rows report: `line,reasons,` then the row's own columns (those of the first
/// rejected row, in its order; a later row's other fields go to `other_fields` as JSON), UTF-8
/// with a byte order mark for Excel. Sealed, with a key configured, when it is kept in the data
/// directory (an import through the API).
pub(crate) struct Report {
    out: ReportFile,
    /// The report's columns, in order (a set: a hostile file may have hundreds of thousands).
    columns: Option<indexmap::IndexSet<String>>,
}

impl Report {
    /// Opens the report for rows after `through_line`: the rows it holds up to that line are
    /// kept (written before the journal took them), later ones (written before a crash, and
    /// read again now) are dropped. `sealed`: written sealed when a key is configured.
    pub(crate) fn open(path: PathBuf, through_line: u64, sealed: bool) -> std::io::Result<Self> {
        let sealed = sealed && crate::seal::keys().is_some();
        let mut kept: Vec<csv::StringRecord> = Vec::new();
        let mut columns = None;
        if through_line > 0
            && let Ok(bytes) = std::fs::read(&path)
        {
            for (i, record) in report_records(bytes)?.into_iter().enumerate() {
                let line = record.get(0).and_then(|l| l.parse::<u64>().ok());
                if i == 0 {
                    columns = Some(
                        record
                            .iter()
                            .skip(2)
                            .take(record.len().saturating_sub(3))
                            .map(str::to_owned)
                            .collect(),
                    );
                    kept.push(record);
                } else if line.is_some_and(|l| l <= through_line) {
                    kept.push(record);
                }
            }
        }
        crate::storefile::replace_with(&path, |file| {
            let mut out = ReportFile::new(file, sealed)?;
            for r in &kept {
                out.write(r)?;
            }
            out.finish().map(Some)
        })?;
        let file = std::fs::OpenOptions::new().append(true).open(&path)?;
        Ok(Self {
            out: ReportFile::on(std::io::BufWriter::new(file), sealed),
            columns: columns.filter(|_| !kept.is_empty()),
        })
    }

    pub(crate) fn row(
        &mut self,
        line: u64,
        reasons: &[String],
        payload: &serde_json::Value,
    ) -> std::io::Result<()> {
        let fields = payload.as_object();
        let columns = match &mut self.columns {
            Some(columns) => columns,
            None => {
                let names: indexmap::IndexSet<String> = fields
                    .map(|f| f.keys().cloned().collect())
                    .unwrap_or_default();
                let mut head = vec!["line".to_owned(), "reasons".to_owned()];
                head.extend(names.iter().cloned());
                head.push("other_fields".to_owned());
                self.out.write(&head)?;
                self.columns.insert(names)
            }
        };
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => crate::stats::spreadsheet_safe(s),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        let mut record = vec![line.to_string(), reasons.join("; ")];
        let mut other = serde_json::Map::new();
        if let Some(f) = fields {
            record.extend(
                columns
                    .iter()
                    .map(|c| f.get(c).map(text).unwrap_or_default()),
            );
            for (k, v) in f {
                if !columns.contains(k) {
                    other.insert(k.clone(), v.clone());
                }
            }
        } else {
            record.extend(columns.iter().map(|_| String::new()));
            other.insert("row".into(), payload.clone());
        }
        record.push(if other.is_empty() {
            String::new()
        } else {
            serde_json::Value::Object(other).to_string()
        });
        self.out.write(&record)
    }

    pub(crate) fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}
