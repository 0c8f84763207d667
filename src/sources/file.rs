//! File input for `leadgate import`: CSV (UTF-8, or GB18030 as Chinese Excel exports it) and JSON
//! lines. Each row becomes an object of fields, in column order; a row that cannot be read is
//! reported with its line and still flows on as a rejected lead, so nothing is dropped silently.

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

/// Reads every row of `text` in `format`.
pub fn rows(text: &str, format: Format, path: &Path) -> Result<Vec<Row>, FileError> {
    match format {
        Format::Csv => csv_rows(text, path),
        Format::Jsonl => Ok(jsonl_rows(text)),
    }
}

fn csv_rows(text: &str, path: &Path) -> Result<Vec<Row>, FileError> {
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
    let headers: Vec<String> = headers.iter().map(|h| h.trim().to_owned()).collect();
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
    Ok(out)
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
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].line, 2);
        assert_eq!(
            rows[1].payload,
            serde_json::json!({"姓名": "李,四", "手机": "139"})
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
