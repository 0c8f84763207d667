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
}

impl Format {
    /// Guesses from the extension: `.csv` / `.txt` → CSV, `.jsonl` / `.ndjson` / `.json` → JSON lines.
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" | "txt" => Some(Self::Csv),
            "jsonl" | "ndjson" | "json" => Some(Self::Jsonl),
            _ => None,
        }
    }
}

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

/// The decoded text of a file: UTF-8 (a BOM is dropped), else GB18030; and the hex SHA-256 of
/// its bytes, which names this version of the file (see `import`).
pub fn read_text(path: &Path) -> Result<(String, String), FileError> {
    use sha2::Digest;
    let bytes = std::fs::read(path).map_err(|source| FileError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    Ok((decode(bytes), digest))
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
        quotes.feed(chunk);
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

/// Opens `path` for reading rows in `format`, decoded as `scan` found it.
pub fn open(path: &Path, format: Format, scan: &Scan, read: &std::sync::Arc<std::sync::atomic::AtomicU64>) -> Result<RowReader, FileError> {
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

/// The rows of a decoded stream, one at a time: memory holds one row, whatever the file's size.
pub struct RowReader {
    kind: Kind,
    /// What the reader noticed (a repeated column name), each with its `file:line`.
    pub notes: Vec<String>,
}

enum Kind {
    Csv {
        reader: csv::Reader<Box<dyn std::io::Read + Send>>,
        headers: Vec<String>,
        record: csv::StringRecord,
        done: bool,
    },
    Jsonl {
        reader: std::io::BufReader<Box<dyn std::io::Read + Send>>,
        line: u64,
        offset: u64,
        buf: String,
    },
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
                let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
                let header = reader
                    .headers()
                    .map_err(|e| FileError::Header {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    })?
                    .clone();
                let headers = column_names(header.iter(), path, &mut notes)
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
                Kind::Csv {
                    reader,
                    headers,
                    record: csv::StringRecord::new(),
                    done: false,
                }
            }
            Format::Jsonl => Kind::Jsonl {
                reader: std::io::BufReader::with_capacity(1 << 16, input),
                line: 0,
                offset: 0,
                buf: String::new(),
            },
        };
        Ok(Self { kind, notes })
    }
}

impl Iterator for RowReader {
    type Item = Row;

    fn next(&mut self) -> Option<Row> {
        match &mut self.kind {
            Kind::Csv {
                reader,
                headers,
                record,
                done,
            } => {
                if *done {
                    return None;
                }
                let line = reader.position().line();
                match reader.read_record(record) {
                    Ok(false) => {
                        *done = true;
                        None
                    }
                    Ok(true) => {
                        let mut obj = Map::new();
                        for (i, cell) in record.iter().enumerate() {
                            let name = headers
                                .get(i)
                                .cloned()
                                .unwrap_or_else(|| format!("column_{}", i + 1));
                            obj.insert(name, Value::String(cell.to_owned()));
                        }
                        Some(Row {
                            line,
                            offset: reader.position().byte(),
                            payload: Value::Object(obj),
                            error: None,
                        })
                    }
                    Err(e) => {
                        *done = e.is_io_error();
                        Some(Row {
                            line,
                            offset: reader.position().byte(),
                            payload: Value::String(String::new()),
                            error: Some(e.to_string()),
                        })
                    }
                }
            }
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
}

impl QuoteScan {
    fn feed(&mut self, chunk: &[u8]) {
        if self.line == 0 {
            (self.line, self.field) = (1, 1);
        }
        for &b in chunk {
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
                (false, b'\n') => {
                    self.field = 1;
                    self.mid_field = false;
                    self.line += 1;
                    continue;
                }
                (true, b'\n') => self.line += 1,
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

/// The header's names, trimmed; a repeated name gets its column's number (`phone`, `phone_2`),
/// so no column's values are lost, and a note says so.
fn column_names<'a>(
    header: impl Iterator<Item = &'a str>,
    path: &Path,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (i, h) in header.enumerate() {
        let name = h.trim().to_owned();
        if !name.is_empty() && names.contains(&name) {
            let renamed = format!("{name}_{}", i + 1);
            notes.push(format!(
                "{}:1: column {} repeats the name `{name}`; its values are read as `{renamed}`",
                path.display(),
                i + 1
            ));
            names.push(renamed);
        } else {
            names.push(name);
        }
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
    fn gb18030_files_decode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gbk.csv");
        let (bytes, _, _) = encoding_rs::GB18030.encode("姓名,手机\n张三,13800138000\n");
        std::fs::write(&p, &bytes).unwrap();
        let (text, digest) = read_text(&p).unwrap();
        assert!(text.starts_with("姓名"));
        assert_eq!(digest.len(), 64);
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
        let rows: Vec<Row> = open(&p, Format::Csv, &found, &read).unwrap().collect();
        assert_eq!(rows[0].payload["姓名"], "张三");
        // UTF-16 LE with its byte order mark, as Excel's "Unicode text" writes it.
        let mut utf16 = vec![0xFF, 0xFE];
        for unit in "姓名,手机\n李四,13900139000\n".encode_utf16() {
            utf16.extend_from_slice(&unit.to_le_bytes());
        }
        std::fs::write(&p, &utf16).unwrap();
        let found = super::scan(&p, Format::Csv).unwrap();
        assert_eq!(found.encoding, Encoding::Utf16);
        let rows: Vec<Row> = open(&p, Format::Csv, &found, &read).unwrap().collect();
        assert_eq!(rows[0].payload["手机"], "13900139000");
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
