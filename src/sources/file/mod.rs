//! File input for `leadgate import`: CSV (UTF-8, or GB18030 as Chinese Excel exports it) and JSON
//! lines. Each row becomes an object of fields, in column order; a row that cannot be read is
//! reported with its line and still flows on as a rejected lead, so nothing is dropped silently.

pub mod config;

pub use config::FileConnector;

use std::path::Path;

use serde_json::{Map, Value};

/// Input file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
    /// A spreadsheet: `.xlsx`, `.xlsm`, `.xls` or `.ods` (one sheet, the first by default).
    Sheet,
}

impl Format {
    /// Guesses from the extension: `.csv` / `.txt` / `.tsv` → CSV, `.jsonl` / `.ndjson` / `.json`
    /// → JSON lines, `.xlsx` / `.xlsm` / `.xls` / `.ods` → a spreadsheet.
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" | "txt" | "tsv" => Some(Self::Csv),
            "jsonl" | "ndjson" | "json" => Some(Self::Jsonl),
            "xlsx" | "xlsm" | "xls" | "ods" => Some(Self::Sheet),
            _ => None,
        }
    }

    /// Its name for `--format` and an upload's `format=`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Jsonl => "jsonl",
            Self::Sheet => "sheet",
        }
    }

    /// The format called `name` (see [`Format::name`]).
    pub fn named(name: &str) -> Option<Self> {
        [Self::Csv, Self::Jsonl, Self::Sheet]
            .into_iter()
            .find(|f| f.name() == name)
    }

    /// What it is, for messages.
    pub fn label(self) -> &'static str {
        match self {
            Self::Csv => "CSV",
            Self::Jsonl => "JSON lines",
            Self::Sheet => "a spreadsheet",
        }
    }

    /// An upload's format: the one `given` by name, else the file name's; why not, when neither
    /// tells it.
    pub fn of_upload(given: Option<&str>, file_name: Option<&str>) -> Result<Self, String> {
        match given {
            Some(g) => Self::named(g)
                .ok_or_else(|| format!("`{g}` is not a format: use csv, jsonl or sheet")),
            None => file_name
                .and_then(|n| Self::from_path(Path::new(n)))
                .ok_or_else(|| {
                    format!(
                        "cannot tell the format of {}; give format=csv, jsonl or sheet (or a file name ending in .csv, .jsonl, .xlsx...)",
                        file_name.map_or("an upload without a file name".to_owned(), |n| format!("`{n}`"))
                    )
                }),
        }
    }
}

/// Rows looked at for the header: the first that fills most columns among them is the header;
/// the rows above it (a report's title, its date) are skipped.
const HEADER_WINDOW: usize = 20;

/// One input row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// 1-based line of the row's start in the file.
    pub line: u64,
    /// Bytes of the (decoded) file read so far, for progress.
    pub offset: u64,
    /// An object of fields; a `String` holding the original text when the row could not be read.
    pub payload: Value,
    /// Why the row could not be read.
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:1: cannot read the CSV header: {message}")]
    Header { path: String, message: String },
    #[error("{path}: cannot read the spreadsheet: {message}")]
    Sheet { path: String, message: String },
    /// A quote that is never closed: the csv reader would read the rest of the file as one field.
    #[error(
        "{path}:{line}: field {field}: a quote opens here and is never closed, so the rest of the file would be one field; nothing was imported (close the quote, or double a quote inside a field: \"\")"
    )]
    UnclosedQuote {
        path: String,
        line: u64,
        field: usize,
    },
}

/// Text from bytes: UTF-8 (a BOM is dropped), else GB18030.
pub fn decode(bytes: Vec<u8>) -> String {
    let bytes = bytes
        .strip_prefix(b"\xEF\xBB\xBF")
        .map(<[u8]>::to_vec)
        .unwrap_or(bytes);
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => encoding_rs::GB18030.decode(e.as_bytes()).0.into_owned(),
    }
}

/// A file's rows, and what the reader noticed on the way (each with its `file:line`).
#[derive(Debug, Default)]
pub struct Rows {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

/// Reads every row of `text` in `format`.
pub fn rows(text: &str, format: Format, path: &Path) -> Result<Rows, FileError> {
    if format == Format::Csv
        && let Some((line, field)) = unclosed_quote(text.as_bytes())
    {
        return Err(FileError::UnclosedQuote {
            path: path.display().to_string(),
            line,
            field,
        });
    }
    let input = std::io::Cursor::new(text.as_bytes().to_vec());
    let reader = RowReader::new(Box::new(input), format, path)?;
    let notes = reader.notes.clone();
    Ok(Rows {
        rows: reader.collect(),
        notes,
    })
}

/// How a file's bytes are text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8, with or without a byte order mark.
    Utf8,
    /// UTF-16 with its byte order mark, as Excel's "Unicode text" writes it.
    Utf16,
    /// Not UTF-8 and no byte order mark: GB18030 (GBK's superset), as Chinese Excel exports.
    Gb18030,
}

/// What one streaming pass over a file found: the hex SHA-256 of its bytes (which names this
/// version of the file, see `import`), its size and encoding, and (CSV) a quote that never closes.
#[derive(Debug, Clone)]
pub struct Scan {
    pub digest: String,
    pub bytes: u64,
    pub encoding: Encoding,
    pub unclosed_quote: Option<(u64, usize)>,
}

/// Reads `path` once, in 1 MiB blocks: memory does not grow with the file.
pub fn scan(path: &Path, format: Format) -> Result<Scan, FileError> {
    use sha2::Digest;
    use std::io::Read;
    let io = |source| FileError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hash = sha2::Sha256::new();
    let mut block = vec![0u8; 1 << 20];
    let (mut bytes, mut head, mut utf8) = (0u64, Vec::new(), Utf8Check::default());
    let mut quotes = QuoteScan::default();
    loop {
        let n = file.read(&mut block).map_err(io)?;
        if n == 0 {
            break;
        }
        let chunk = &block[..n];
        hash.update(chunk);
        if head.len() < 4 {
            head.extend_from_slice(&chunk[..n.min(4 - head.len())]);
        }
        utf8.feed(chunk);
        if format == Format::Csv {
            quotes.feed(chunk);
        }
        bytes += n as u64;
    }
    let encoding = if head.starts_with(b"\xFF\xFE") || head.starts_with(b"\xFE\xFF") {
        Encoding::Utf16
    } else if utf8.valid() {
        Encoding::Utf8
    } else {
        Encoding::Gb18030
    };
    Ok(Scan {
        digest: hex::encode(hash.finalize()),
        bytes,
        encoding,
        // In UTF-16 a quote is not one byte; the reader's own errors stand there.
        unclosed_quote: (format == Format::Csv && encoding != Encoding::Utf16)
            .then(|| quotes.unclosed())
            .flatten(),
    })
}

/// Whether a stream of bytes is UTF-8, checked block by block (a sequence cut by a block's end
/// is carried to the next).
#[derive(Default)]
struct Utf8Check {
    carry: Vec<u8>,
    bad: bool,
}

impl Utf8Check {
    fn feed(&mut self, chunk: &[u8]) {
        if self.bad {
            return;
        }
        let joined;
        let data = if self.carry.is_empty() {
            chunk
        } else {
            joined = [std::mem::take(&mut self.carry).as_slice(), chunk].concat();
            &joined[..]
        };
        match std::str::from_utf8(data) {
            Ok(_) => {}
            // A sequence cut at the end: keep it for the next block.
            Err(e) if e.error_len().is_none() => {
                self.carry = data[e.valid_up_to()..].to_vec();
            }
            Err(_) => self.bad = true,
        }
    }

    fn valid(&self) -> bool {
        !self.bad && self.carry.is_empty()
    }
}

/// Opens `path` for reading rows in `format`, decoded as `scan` found it (a spreadsheet: its
/// `sheet`, the first when `None`). `read` counts the bytes read, for progress.
pub fn open(
    path: &Path,
    format: Format,
    sheet: Option<&str>,
    scan: &Scan,
    read: &std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Result<RowReader, FileError> {
    if format == Format::Sheet {
        read.store(scan.bytes, std::sync::atomic::Ordering::Relaxed);
        return RowReader::sheet(path, sheet);
    }
    let file = std::fs::File::open(path).map_err(|source| FileError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let counted = Counted {
        inner: file,
        read: read.clone(),
    };
    let decoded: Box<dyn std::io::Read + Send> = {
        let mut builder = encoding_rs_io::DecodeReaderBytesBuilder::new()
            .bom_sniffing(true)
            .strip_bom(true)
            .clone();
        match scan.encoding {
            Encoding::Gb18030 => Box::new(
                builder
                    .encoding(Some(encoding_rs::GB18030))
                    .build(counted),
            ),
            // UTF-8 passes through (a BOM is dropped); UTF-16 is told by its BOM.
            Encoding::Utf8 | Encoding::Utf16 => Box::new(builder.build(counted)),
        }
    };
    RowReader::new(decoded, format, path)
}

/// A reader that counts the bytes read through it (the progress of an import).
struct Counted<R> {
    inner: R,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// The rows of a decoded stream, one at a time: memory holds a few rows, whatever the file's
/// size.
pub struct RowReader {
    kind: Kind,
    /// What the reader noticed (a repeated column name, title rows skipped), each with its
    /// `file:line`.
    pub notes: Vec<String>,
}

enum Kind {
    Table(Table),
    Jsonl {
        reader: std::io::BufReader<Box<dyn std::io::Read + Send>>,
        line: u64,
        offset: u64,
        buf: String,
    },
}

/// A record of a table: its 1-based line (a sheet's row number) and its cells, or why it could
/// not be read.
type Record = (u64, Result<Vec<String>, String>);

/// Where a table's records come from.
enum Records {
    Csv {
        reader: csv::Reader<std::io::BufReader<Tee>>,
        record: csv::StringRecord,
        lines: Lines,
        done: bool,
    },
    /// A spreadsheet, read on a thread of its own (the workbook owns what its cell reader
    /// borrows).
    Sheet(std::sync::mpsc::Receiver<Record>),
}

impl Records {
    fn next(&mut self) -> Option<Record> {
        match self {
            Records::Csv {
                reader,
                record,
                lines,
                done,
            } => {
                if *done {
                    return None;
                }
                let read = reader.read_record(record);
                // The csv crate's own line is the end of the record before, blank lines and a
                // CRLF's `\n` not yet passed: off by one in every Excel CSV.
                let line = lines.record(reader.position().byte());
                match read {
                    Ok(false) => {
                        *done = true;
                        None
                    }
                    Ok(true) => Some((line, Ok(record.iter().map(str::to_owned).collect()))),
                    Err(e) => {
                        *done = e.is_io_error();
                        Some((line, Err(e.to_string())))
                    }
                }
            }
            Records::Sheet(rx) => rx.recv().ok(),
        }
    }

    fn offset(&self) -> u64 {
        match self {
            Records::Csv { reader, .. } => reader.position().byte(),
            Records::Sheet(_) => 0,
        }
    }
}

/// The bytes a CSV reader has taken in, as it takes them (see [`Lines`]).
struct Tee {
    inner: Box<dyn std::io::Read + Send>,
    lines: Lines,
}

impl std::io::Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.lines.lock().unread.extend(&buf[..n]);
        Ok(n)
    }
}

/// The line each CSV record starts on, counted from the bytes themselves: `\n`, `\r\n` and a
/// lone `\r` each end a line, blank lines count, and so do line breaks inside quoted fields. It
/// holds the bytes read ahead of the records (the reader's buffers, and one record).
#[derive(Clone, Default)]
struct Lines(std::sync::Arc<std::sync::Mutex<LineCount>>);

#[derive(Default)]
struct LineCount {
    unread: std::collections::VecDeque<u8>,
    /// The offset of `unread`'s first byte; the line it is on (0-based); whether the byte before
    /// it was `\r` (a `\n` right after it ends no other line).
    at: u64,
    line: u64,
    after_cr: bool,
}

impl Lines {
    fn lock(&self) -> std::sync::MutexGuard<'_, LineCount> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Passes the bytes up to `end` (where the record just read ends): the 1-based line of the
    /// record's first byte, past the line breaks before it.
    fn record(&self, end: u64) -> u64 {
        let mut c = self.lock();
        let n = usize::try_from(end.saturating_sub(c.at))
            .unwrap_or(usize::MAX)
            .min(c.unread.len());
        let (mut line, mut after_cr, mut start) = (c.line, c.after_cr, None);
        let (a, b) = c.unread.as_slices();
        for &byte in a.iter().chain(b).take(n) {
            match byte {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => line += 1,
                _ if start.is_none() => start = Some(line),
                _ => {}
            }
            after_cr = byte == b'\r';
        }
        c.unread.drain(..n);
        c.at += n as u64;
        (c.line, c.after_cr) = (line, after_cr);
        start.unwrap_or(line) + 1
    }
}

/// A table: its records, the header found among the first of them, and the records read ahead
/// to find it.
struct Table {
    records: Records,
    headers: Vec<String>,
    ahead: std::collections::VecDeque<Record>,
}

impl Table {
    /// Reads up to [`HEADER_WINDOW`] records and takes the header: the first record whose
    /// non-empty cells number at least 60% of the widest record's (and two).
    fn new(mut records: Records, path: &Path, notes: &mut Vec<String>) -> Result<Self, FileError> {
        let mut ahead = std::collections::VecDeque::new();
        while ahead.len() < HEADER_WINDOW
            && let Some(r) = records.next()
        {
            ahead.push_back(r);
        }
        let filled = |r: &Record| match &r.1 {
            Ok(cells) => cells.iter().filter(|c| !c.trim().is_empty()).count(),
            Err(_) => 0,
        };
        let widest = ahead.iter().map(filled).max().unwrap_or(0);
        let need = (widest * 3).div_ceil(5).max(2.min(widest)).max(1);
        let Some(at) = ahead.iter().position(|r| filled(r) >= need) else {
            return Err(FileError::Header {
                path: path.display().to_string(),
                message: "the file has no row to take column names from".into(),
            });
        };
        let skipped: Vec<Record> = ahead.drain(..at).collect();
        let (line, header) = ahead.pop_front().expect("found above");
        let header = header.map_err(|message| FileError::Header {
            path: path.display().to_string(),
            message,
        })?;
        if let (Some(first), Some(last)) = (skipped.first(), skipped.last()) {
            let lines = if first.0 == last.0 {
                first.0.to_string()
            } else {
                format!("{}-{}", first.0, last.0)
            };
            notes.push(format!(
                "{}:{lines}: rows above the table (a title?) skipped; the column names are on line {line}",
                path.display()
            ));
        }
        let headers = column_names(header.iter().map(String::as_str), line, path, notes)
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                if h.is_empty() {
                    format!("column_{}", i + 1)
                } else {
                    h
                }
            })
            .collect();
        Ok(Self {
            records,
            headers,
            ahead,
        })
    }

    fn next(&mut self) -> Option<Row> {
        loop {
            let (line, cells) = self.ahead.pop_front().or_else(|| self.records.next())?;
            let offset = self.records.offset();
            return Some(match cells {
                Ok(cells) => {
                    if cells.iter().all(|c| c.trim().is_empty()) {
                        // A blank row (common at a sheet's end): nothing to import.
                        continue;
                    }
                    let mut obj = Map::new();
                    for (i, cell) in cells.into_iter().enumerate() {
                        let name = self
                            .headers
                            .get(i)
                            .cloned()
                            .unwrap_or_else(|| format!("column_{}", i + 1));
                        obj.insert(name, Value::String(cell));
                    }
                    Row {
                        line,
                        offset,
                        payload: Value::Object(obj),
                        error: None,
                    }
                }
                Err(e) => Row {
                    line,
                    offset,
                    payload: Value::String(String::new()),
                    error: Some(e),
                },
            });
        }
    }
}

/// The delimiter of CSV text from its first lines: the one of `,` `;` tab `|` found most often
/// outside quotes, as long as it is on every sampled line; `,` otherwise.
fn sniff_delimiter(sample: &[u8]) -> u8 {
    let lines: Vec<&[u8]> = sample.split(|&b| b == b'\n').take(10).collect();
    // The last piece may be cut short by the sample's end.
    let lines = &lines[..lines.len().saturating_sub(1).max(1).min(lines.len())];
    let mut best = (b',', 0usize);
    for d in [b',', b';', b'\t', b'|'] {
        let counts: Vec<usize> = lines
            .iter()
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
            .map(|l| {
                let mut quoted = false;
                l.iter()
                    .filter(|&&b| {
                        if b == b'"' {
                            quoted = !quoted;
                        }
                        b == d && !quoted
                    })
                    .count()
            })
            .collect();
        let total: usize = counts.iter().sum();
        if !counts.is_empty() && counts.iter().all(|&c| c > 0) && total > best.1 {
            best = (d, total);
        }
    }
    best.0
}

/// The records of `sheet` (the first when `None`) of the workbook at `path`, sent on a channel
/// from a thread that owns the workbook.
fn sheet_records(path: &Path, sheet: Option<&str>) -> Result<Records, FileError> {
    use calamine::Reader;
    let error = |message: String| FileError::Sheet {
        path: path.display().to_string(),
        message,
    };
    let mut workbook = calamine::open_workbook_auto(path).map_err(|e| error(e.to_string()))?;
    let names = workbook.sheet_names();
    let name = match sheet {
        Some(want) => names
            .iter()
            .find(|n| n.as_str() == want)
            .cloned()
            .ok_or_else(|| {
                error(format!(
                    "there is no sheet `{want}`; the sheets are: {}",
                    names.join(", ")
                ))
            })?,
        None => names
            .first()
            .cloned()
            .ok_or_else(|| error("the workbook has no sheet".into()))?,
    };
    let (tx, rx) = std::sync::mpsc::sync_channel::<Record>(1024);
    let reading = std::thread::Builder::new().name("sheet-reader".into());
    let sheet_path = path.display().to_string();
    let spawned = reading.spawn(move || {
        let text = |d: &calamine::Data| -> String {
            match d {
                calamine::Data::Empty => String::new(),
                // Whole numbers (phone numbers typed as numbers) without a `.0`.
                calamine::Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => {
                    format!("{}", *f as i64)
                }
                calamine::Data::DateTime(dt) if dt.is_datetime() => excel_time(dt.as_f64()),
                other => other.to_string(),
            }
        };
        if let calamine::Sheets::Xlsx(xlsx) = &mut workbook {
            // Cell by cell: the sheet is never held whole.
            let mut cells = match xlsx.worksheet_cells_reader(&name) {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send((1, Err(format!("{sheet_path}: {e}"))));
                    return;
                }
            };
            let mut row: Vec<String> = Vec::new();
            let mut at: Option<u32> = None;
            loop {
                match cells.next_cell() {
                    Ok(Some(cell)) => {
                        let (r, c) = cell.get_position();
                        if at.is_some_and(|a| a != r) {
                            let line = u64::from(at.unwrap_or(0)) + 1;
                            if tx.send((line, Ok(std::mem::take(&mut row)))).is_err() {
                                return;
                            }
                        }
                        at = Some(r);
                        let c = c as usize;
                        if row.len() <= c {
                            row.resize(c + 1, String::new());
                        }
                        row[c] = text(&calamine::Data::from(cell.get_value().clone()));
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let line = u64::from(at.unwrap_or(0)) + 1;
                        let _ = tx.send((line, Err(e.to_string())));
                        return;
                    }
                }
            }
            if let Some(r) = at {
                let _ = tx.send((u64::from(r) + 1, Ok(row)));
            }
            return;
        }
        match workbook.worksheet_range(&name) {
            Ok(range) => {
                let first = range.start().map_or(0, |(r, _)| r);
                let first_col = range.start().map_or(0, |(_, c)| c) as usize;
                for (i, cells) in range.rows().enumerate() {
                    let mut row = vec![String::new(); first_col];
                    row.extend(cells.iter().map(&text));
                    if tx.send((u64::from(first) + i as u64 + 1, Ok(row))).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send((1, Err(e.to_string())));
            }
        }
    });
    spawned.map_err(|e| error(e.to_string()))?;
    Ok(Records::Sheet(rx))
}

/// An Excel date serial (days since 1899-12-30, the fraction the time of day) as
/// `YYYY-MM-DD HH:MM:SS`, or `YYYY-MM-DD` at midnight.
fn excel_time(serial: f64) -> String {
    let base = jiff::civil::date(1899, 12, 30).at(0, 0, 0, 0);
    let millis = (serial * 86_400_000.0).round() as i64;
    match base.checked_add(jiff::SignedDuration::from_millis(millis)) {
        Ok(t) if t.time() == jiff::civil::Time::midnight() => t.date().to_string(),
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S").to_string(),
        Err(_) => serial.to_string(),
    }
}

impl RowReader {
    fn new(
        input: Box<dyn std::io::Read + Send>,
        format: Format,
        path: &Path,
    ) -> Result<Self, FileError> {
        let mut notes = Vec::new();
        let kind = match format {
            Format::Csv => {
                use std::io::Read;
                // The first 64 KiB tell the delimiter (a decoder may hand out a few bytes per
                // read at first, so read until the sample is full or the input ends).
                let mut input = input;
                let mut sample = vec![0u8; 1 << 16];
                let mut filled = 0;
                while filled < sample.len() {
                    match input.read(&mut sample[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(source) => {
                            return Err(FileError::Io {
                                path: path.display().to_string(),
                                source,
                            });
                        }
                    }
                }
                sample.truncate(filled);
                let delimiter = sniff_delimiter(&sample);
                let lines = Lines::default();
                let input = Tee {
                    inner: Box::new(std::io::Cursor::new(sample).chain(input)),
                    lines: lines.clone(),
                };
                let reader = csv::ReaderBuilder::new()
                    .flexible(true)
                    .has_headers(false)
                    .delimiter(delimiter)
                    .from_reader(std::io::BufReader::with_capacity(1 << 16, input));
                let records = Records::Csv {
                    reader,
                    record: csv::StringRecord::new(),
                    lines,
                    done: false,
                };
                Kind::Table(Table::new(records, path, &mut notes)?)
            }
            Format::Jsonl => Kind::Jsonl {
                reader: std::io::BufReader::with_capacity(1 << 16, input),
                line: 0,
                offset: 0,
                buf: String::new(),
            },
            Format::Sheet => {
                return Err(FileError::Header {
                    path: path.display().to_string(),
                    message: "a spreadsheet is read from its file (file::open)".into(),
                });
            }
        };
        Ok(Self { kind, notes })
    }

    /// The rows of a spreadsheet's `sheet` (the first when `None`).
    pub fn sheet(path: &Path, sheet: Option<&str>) -> Result<Self, FileError> {
        let mut notes = Vec::new();
        let table = Table::new(sheet_records(path, sheet)?, path, &mut notes)?;
        Ok(Self {
            kind: Kind::Table(table),
            notes,
        })
    }
}

impl Iterator for RowReader {
    type Item = Row;

    fn next(&mut self) -> Option<Row> {
        match &mut self.kind {
            Kind::Table(table) => table.next(),
            Kind::Jsonl {
                reader,
                line,
                offset,
                buf,
            } => loop {
                use std::io::BufRead;
                buf.clear();
                let n = match reader.read_line(buf) {
                    Ok(0) => return None,
                    Ok(n) => n,
                    Err(e) => {
                        *line += 1;
                        // Not UTF-8 after all, or the disk failed: this row says why, and the
                        // reading stops.
                        let row = Row {
                            line: *line,
                            offset: *offset,
                            payload: Value::String(String::new()),
                            error: Some(format!("cannot read the line: {e}")),
                        };
                        *reader = std::io::BufReader::new(Box::new(std::io::empty()));
                        return Some(row);
                    }
                };
                *line += 1;
                *offset += n as u64;
                let trimmed = buf.trim();
                if trimmed.is_empty() {
                    continue;
                }
                let row = |payload, error| Row {
                    line: *line,
                    offset: *offset,
                    payload,
                    error,
                };
                return Some(match serde_json::from_str::<Value>(trimmed) {
                    Ok(v @ Value::Object(_)) => row(v, None),
                    Ok(_) => row(
                        Value::String(trimmed.to_owned()),
                        Some("not a JSON object".into()),
                    ),
                    Err(e) => row(
                        Value::String(trimmed.to_owned()),
                        Some(format!("not valid JSON: {e}")),
                    ),
                });
            },
        }
    }
}

/// Where a quote opens that is never closed: the 1-based line and field, if there is one. The
/// csv reader takes such a quote to run to the end of the file, silently.
fn unclosed_quote(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut scan = QuoteScan::default();
    scan.feed(bytes);
    scan.unclosed()
}

/// [`unclosed_quote`] over a stream, block by block. It reads bytes: `"`, `,` and newlines are
/// single bytes in UTF-8 and never part of a GB18030 sequence.
#[derive(Default)]
struct QuoteScan {
    line: u64,
    field: usize,
    quoted: Option<(u64, usize)>,
    /// A `"` inside quotes at the end of the last block: a doubled quote or the closing one.
    pending_quote: bool,
    /// The next byte starts a field.
    mid_field: bool,
    /// The last byte was `\r` (a `\n` after it ends the same line).
    after_cr: bool,
}

impl QuoteScan {
    fn feed(&mut self, chunk: &[u8]) {
        if self.line == 0 {
            (self.line, self.field) = (1, 1);
        }
        for &b in chunk {
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            if self.pending_quote {
                self.pending_quote = false;
                if b == b'"' {
                    // A doubled quote: still quoted.
                    continue;
                }
                self.quoted = None;
            }
            match (self.quoted.is_some(), b) {
                (true, b'"') => self.pending_quote = true,
                (false, b'"') if !self.mid_field => self.quoted = Some((self.line, self.field)),
                (false, b',') => {
                    self.field += 1;
                    self.mid_field = false;
                    continue;
                }
                // `\n`, `\r\n` and a lone `\r` end a line, as they do for the rows' lines.
                (false, b'\n' | b'\r') => {
                    self.field = 1;
                    self.mid_field = false;
                    if !(b == b'\n' && after_cr) {
                        self.line += 1;
                    }
                    continue;
                }
                (true, b'\n') if after_cr => {}
                (true, b'\n' | b'\r') => self.line += 1,
                _ => {}
            }
            self.mid_field = true;
        }
    }

    fn unclosed(&self) -> Option<(u64, usize)> {
        if self.pending_quote {
            None
        } else {
            self.quoted
        }
    }
}

/// The names of a header's columns (on `line`), trimmed; a repeated name gets its column's
/// number (`phone_2`, then `phone_2_` if a column is called that already), so no two columns
/// share a name. Linear in the columns, however many a hostile file has; the first 20 renames
/// are noted one by one.
fn column_names<'a>(
    header: impl Iterator<Item = &'a str>,
    line: u64,
    path: &Path,
    notes: &mut Vec<String>,
) -> Vec<String> {
    const NOTED: usize = 20;
    let header: Vec<&str> = header.map(str::trim).collect();
    let given: std::collections::HashSet<&str> = header.iter().copied().collect();
    let mut seen = std::collections::HashSet::new();
    let mut renamed = std::collections::HashSet::new();
    let mut names = Vec::with_capacity(header.len());
    for (i, &name) in header.iter().enumerate() {
        if name.is_empty() || seen.insert(name) {
            names.push(name.to_owned());
            continue;
        }
        let mut new = format!("{name}_{}", i + 1);
        while given.contains(new.as_str()) || renamed.contains(&new) {
            new.push('_');
        }
        if renamed.len() < NOTED {
            notes.push(format!(
                "{}:{line}: column {} repeats the name `{name}`; its values are read as `{new}`",
                path.display(),
                i + 1
            ));
        }
        renamed.insert(new.clone());
        names.push(new);
    }
    if renamed.len() > NOTED {
        notes.push(format!(
            "{}:{line}: {} more columns repeat a name; each is read as its name and its column's number",
            path.display(),
            renamed.len() - NOTED
        ));
    }
    names
}

#[cfg(test)]
fn jsonl_rows(text: &str) -> Vec<Row> {
    rows(text, Format::Jsonl, Path::new("x.jsonl"))
        .map(|r| r.rows)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_keep_column_order_and_lines() {
        let rows = rows(
            "\u{FEFF}姓名,手机\n张三,138\n\"李,四\",139\n",
            Format::Csv,
            Path::new("x.csv"),
        )
        .unwrap()
        .rows;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].line, 2);
        assert_eq!(
            rows[1].payload,
            serde_json::json!({"姓名": "李,四", "手机": "139"})
        );
    }

    #[test]
    fn an_unclosed_quote_is_an_error_at_its_line_not_a_swallowed_file() {
        let p = Path::new("expo.csv");
        let err = rows(
            "姓名,手机\n张三,138\n\"李四,139\n王五,137\n",
            Format::Csv,
            p,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                FileError::UnclosedQuote {
                    line: 3,
                    field: 1,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().starts_with("expo.csv:3: field 1:"), "{err}");
        // The same line with CRLF or CR line ends, and after a quoted field over two lines.
        for (text, at) in [
            ("姓名,手机\r\n张三,138\r\n\"李四,139\r\n王五,137\r\n", "3: field 1:"),
            ("姓名,手机\r张三,138\r\"李四,139\r王五,137\r", "3: field 1:"),
            ("姓名,手机\r\n\"张\r\n三\",138\r\n王五,\"137\r\n", "4: field 2:"),
        ] {
            let err = rows(text, Format::Csv, p).unwrap_err();
            assert!(err.to_string().starts_with(&format!("expo.csv:{at}")), "{err}");
        }
        let err = rows("\"姓名,手机\n张三,138\n", Format::Csv, p).unwrap_err();
        assert!(
            matches!(err, FileError::UnclosedQuote { line: 1, .. }),
            "{err}"
        );
        // Quotes that close, doubled quotes, and a quote inside an unquoted field are fine.
        let ok = rows(
            "a,b\n\"x \"\"y\"\" z\",\"two\nlines\"\n5\" screen,c\n",
            Format::Csv,
            p,
        )
        .unwrap()
        .rows;
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].payload["b"], "two\nlines");
        assert_eq!(ok[1].payload["a"], "5\" screen");
    }

    #[test]
    fn a_repeated_column_name_keeps_both_columns() {
        let r = rows(
            "phone,phone,email\n1,2,a@b.cn\n",
            Format::Csv,
            Path::new("x.csv"),
        )
        .unwrap();
        assert_eq!(
            r.notes,
            ["x.csv:1: column 2 repeats the name `phone`; its values are read as `phone_2`"]
        );
        assert_eq!(
            r.rows[0].payload,
            serde_json::json!({"phone": "1", "phone_2": "2", "email": "a@b.cn"})
        );
    }

    #[test]
    fn a_rows_line_is_where_it_starts_whatever_ends_the_lines() {
        // Rows 张三 (line 2), 李四 (line 4, a blank line before it), "王\n五" (lines 5-6), 赵六
        // (line 7), each file with other line ends.
        for (ends, text) in [
            ("LF", "姓名,手机\n张三,1\n\n李四,2\n\"王\n五\",3\n赵六,4\n"),
            ("CRLF", "姓名,手机\r\n张三,1\r\n\r\n李四,2\r\n\"王\r\n五\",3\r\n赵六,4\r\n"),
            ("CR", "姓名,手机\r张三,1\r\r李四,2\r\"王\r五\",3\r赵六,4\r"),
            ("no end", "姓名,手机\r\n张三,1\r\n\r\n李四,2\n\"王\n五\",3\r\n赵六,4"),
        ] {
            let r = rows(text, Format::Csv, Path::new("x.csv")).unwrap().rows;
            let got: Vec<(u64, &str)> = r
                .iter()
                .map(|r| (r.line, r.payload["手机"].as_str().unwrap()))
                .collect();
            assert_eq!(got, [(2, "1"), (4, "2"), (5, "3"), (7, "4")], "{ends}");
        }
        // Below title rows, in a file of CRLF lines as Excel writes them (the header's line too).
        let text = "线索导出\r\n2026-12-03\r\n姓名,手机,手机\r\n张三,1,2\r\n";
        let r = rows(text, Format::Csv, Path::new("x.csv")).unwrap();
        assert_eq!(r.rows[0].line, 4);
        assert!(r.notes[0].starts_with("x.csv:1-2: rows above the table"), "{:?}", r.notes);
        assert_eq!(
            r.notes[1],
            "x.csv:3: column 3 repeats the name `手机`; its values are read as `手机_3`"
        );
        // Line ends across the reader's 64 KiB blocks.
        let mut text = String::from("name,phone\r\n");
        for i in 0..20_000 {
            text.push_str(&format!("客户{i},{i}\r\n"));
        }
        let r = rows(&text, Format::Csv, Path::new("x.csv")).unwrap().rows;
        assert!(r.iter().enumerate().all(|(i, r)| r.line == i as u64 + 2));
    }

    #[test]
    fn repeated_column_names_stay_apart_in_a_header_of_any_width() {
        // 60,000 columns: `x` everywhere, and a column already called what the third `x` would
        // be renamed to.
        let mut header: Vec<String> = vec!["x".into(); 60_000];
        header[1] = "x_3".into();
        let text = format!("{}\n{}\n", header.join(","), vec!["1"; 60_000].join(","));
        let r = rows(&text, Format::Csv, Path::new("wide.csv")).unwrap();
        let payload = r.rows[0].payload.as_object().unwrap();
        assert_eq!(payload.len(), 60_000, "every column kept");
        assert!(payload.contains_key("x_3") && payload.contains_key("x_3_"));
        assert_eq!(r.notes.len(), 21);
        assert_eq!(
            r.notes[20],
            "wide.csv:1: 59978 more columns repeat a name; each is read as its name and its column's number"
        );
    }

    #[test]
    fn a_scan_tells_the_encoding_across_block_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.csv");
        // "姓" (3 bytes in UTF-8) straddles the first 1 MiB block's end.
        let mut text = String::from("姓名,手机\n");
        text.push_str(&"a".repeat((1 << 20) - text.len() - 1));
        text.push_str("姓,138\n");
        std::fs::write(&p, &text).unwrap();
        let scan = scan(&p, Format::Csv).unwrap();
        assert_eq!(scan.encoding, Encoding::Utf8);
        assert_eq!(scan.bytes, text.len() as u64);
        let (gb, _, _) = encoding_rs::GB18030.encode("姓名,手机\n张三,13800138000\n");
        std::fs::write(&p, &gb).unwrap();
        let found = super::scan(&p, Format::Csv).unwrap();
        assert_eq!(found.encoding, Encoding::Gb18030);
        let read = std::sync::Arc::default();
        let rows: Vec<Row> = open(&p, Format::Csv, None, &found, &read)
            .unwrap()
            .collect();
        assert_eq!(rows[0].payload["姓名"], "张三");
        // UTF-16 LE with its byte order mark, as Excel's "Unicode text" writes it.
        let mut utf16 = vec![0xFF, 0xFE];
        for unit in "姓名,手机\n李四,13900139000\n".encode_utf16() {
            utf16.extend_from_slice(&unit.to_le_bytes());
        }
        std::fs::write(&p, &utf16).unwrap();
        let found = super::scan(&p, Format::Csv).unwrap();
        assert_eq!(found.encoding, Encoding::Utf16);
        let rows: Vec<Row> = open(&p, Format::Csv, None, &found, &read)
            .unwrap()
            .collect();
        assert_eq!(rows[0].payload["手机"], "13900139000");
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/import")
            .join(name)
    }

    fn read_all(name: &str, sheet: Option<&str>) -> (Vec<Row>, Vec<String>) {
        let p = fixture(name);
        let format = Format::from_path(&p).unwrap();
        let found = scan(&p, format).unwrap();
        let reader = open(&p, format, sheet, &found, &std::sync::Arc::default()).unwrap();
        let notes = reader.notes.clone();
        (reader.collect(), notes)
    }

    #[test]
    fn a_spreadsheet_is_read_below_its_title_rows() {
        let (rows, notes) = read_all("expo.xlsx", None);
        assert_eq!(rows.len(), 3, "the blank row is skipped: {rows:?}");
        assert_eq!(rows[0].line, 4);
        assert_eq!(rows[0].payload["姓名"], "张伟");
        // A phone typed as a number keeps its digits; dates read as dates.
        assert_eq!(rows[0].payload["手机"], "13800138000");
        assert_eq!(rows[0].payload["到访时间"], "2026-11-18 10:30:00");
        assert_eq!(rows[1].payload["到访时间"], "2026-11-19");
        assert_eq!(rows[2].payload["手机"], "+86 137-0013-7000");
        assert_eq!(rows[2].line, 7);
        assert!(
            notes[0].ends_with("expo.xlsx:1-2: rows above the table (a title?) skipped; the column names are on line 3"),
            "{notes:?}"
        );
        let (other, _) = read_all("expo.xlsx", Some("备注"));
        assert_eq!(other[0].payload["说明"], "只含线索名单");
        let p = fixture("expo.xlsx");
        let found = scan(&p, Format::Sheet).unwrap();
        let err = open(&p, Format::Sheet, Some("Sheet9"), &found, &std::sync::Arc::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("线索, 备注"), "{err}");
    }

    #[test]
    fn a_gb18030_csv_with_a_title_and_a_semicolon_csv_are_read() {
        let (rows, notes) = read_all("expo-gb18030.csv", None);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].line, 4);
        assert_eq!(
            rows[0].payload,
            serde_json::json!({"姓名": "陈静", "手机": "13800138001", "城市": "广州"})
        );
        assert!(notes[0].contains(":1: rows above the table"), "{notes:?}");
        let (rows, _) = read_all("semicolon.csv", None);
        assert_eq!(rows[1].payload["name"], "Li; Lei");
        assert_eq!(rows[0].payload["city"], "Berlin");
    }

    #[test]
    fn delimiters_are_sniffed_from_the_first_lines() {
        assert_eq!(sniff_delimiter(b"a,b,c\n1,2,3\n"), b',');
        assert_eq!(sniff_delimiter(b"a;b;c\n1;2,5;3\n"), b';');
        assert_eq!(sniff_delimiter(b"a\tb\n1\t2\n"), b'\t');
        assert_eq!(sniff_delimiter(b"\"x,y\";b\n\"1,2\";3\n"), b';');
        // One column: nothing to split, the comma stays.
        assert_eq!(sniff_delimiter(b"phone\n138\n"), b',');
    }

    #[test]
    fn quotes_are_followed_across_blocks() {
        let text = b"a,b\n\"x \"\"y\"\" z\",c\n\"open,d\n";
        for cut in 0..text.len() {
            let mut q = QuoteScan::default();
            q.feed(&text[..cut]);
            q.feed(&text[cut..]);
            assert_eq!(q.unclosed(), Some((3, 1)), "cut at {cut}");
        }
        let closed = b"a\n\"one \"\"two\"\"\"\n";
        for cut in 0..closed.len() {
            let mut q = QuoteScan::default();
            q.feed(&closed[..cut]);
            q.feed(&closed[cut..]);
            assert_eq!(q.unclosed(), None, "cut at {cut}");
        }
    }

    #[test]
    fn bad_json_lines_are_kept_with_their_line() {
        let rows = jsonl_rows("{\"a\":1}\n\nnot json\n[1]\n");
        assert_eq!(rows.len(), 3);
        assert_eq!(
            (rows[1].line, rows[1].payload.clone()),
            (3, Value::String("not json".into()))
        );
        assert!(
            rows[1]
                .error
                .as_deref()
                .unwrap()
                .starts_with("not valid JSON")
        );
        assert_eq!(rows[2].error.as_deref(), Some("not a JSON object"));
    }
}
