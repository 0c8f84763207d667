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
    match format {
        Format::Csv => csv_rows(text, path),
        Format::Jsonl => Ok(Rows {
            rows: jsonl_rows(text),
            notes: Vec::new(),
        }),
    }
}

/// Where a quote opens that is never closed: the 1-based line and field, if there is one. The
/// csv reader takes such a quote to run to the end of the file, silently.
fn unclosed_quote(text: &str) -> Option<(u64, usize)> {
    let (mut line, mut field) = (1u64, 1usize);
    let mut quoted: Option<(u64, usize)> = None;
    let mut at_field_start = true;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted.is_some(), c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
            }
            (true, '"') => quoted = None,
            (false, '"') if at_field_start => quoted = Some((line, field)),
            (false, ',') => {
                field += 1;
                at_field_start = true;
                continue;
            }
            (false, '\n') => {
                field = 1;
                at_field_start = true;
                line += 1;
                continue;
            }
            (true, '\n') => line += 1,
            _ => {}
        }
        at_field_start = false;
    }
    quoted
}

fn csv_rows(text: &str, path: &Path) -> Result<Rows, FileError> {
    if let Some((line, field)) = unclosed_quote(text) {
        return Err(FileError::UnclosedQuote {
            path: path.display().to_string(),
            line,
            field,
        });
    }
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| FileError::Header {
            path: path.display().to_string(),
            message: e.to_string(),
        })?
        .clone();
    let mut notes = Vec::new();
    let headers = column_names(headers.iter(), path, &mut notes);
    let mut out = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let mut obj = Map::new();
                for (i, cell) in record.iter().enumerate() {
                    let name = headers
                        .get(i)
                        .filter(|h| !h.is_empty())
                        .cloned()
                        .unwrap_or_else(|| format!("column_{}", i + 1));
                    obj.insert(name, Value::String(cell.to_owned()));
                }
                let offset = reader.position().byte();
                out.push(Row {
                    line,
                    offset,
                    payload: Value::Object(obj),
                    error: None,
                });
            }
            Err(e) => {
                let offset = reader.position().byte();
                out.push(Row {
                    line,
                    offset,
                    payload: Value::String(String::new()),
                    error: Some(e.to_string()),
                });
                if e.is_io_error() {
                    break;
                }
            }
        }
    }
    Ok(Rows { rows: out, notes })
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

fn jsonl_rows(text: &str) -> Vec<Row> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        offset += line.len() as u64;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let row = |payload, error| Row {
            line: i as u64 + 1,
            offset,
            payload,
            error,
        };
        out.push(match serde_json::from_str::<Value>(trimmed) {
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
    }
    out
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
