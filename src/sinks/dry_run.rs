//! `import --dry-run`: each record that would be published becomes one JSON line
//! `{"topic": ..., "key": ..., "value": ...}`, in input order, on a file or stdout.

use std::io::{BufWriter, Write};

use serde::Serialize;
use serde_json::value::RawValue;

use super::{OutRecord, SinkError};

pub struct DryRunSink {
    out: BufWriter<Box<dyn Write + Send>>,
    label: String,
}

#[derive(Serialize)]
struct Line<'a> {
    topic: &'a str,
    key: &'a str,
    value: &'a RawValue,
}

impl DryRunSink {
    pub fn new(out: Box<dyn Write + Send>, label: &str) -> Self {
        Self {
            out: BufWriter::new(out),
            label: label.to_owned(),
        }
    }

    pub fn deliver(&mut self, records: &[OutRecord]) -> Result<(), SinkError> {
        let io = |source| SinkError::Io {
            path: self.label.clone(),
            source,
        };
        for r in records {
            let line = Line {
                topic: &r.topic,
                key: &r.key,
                value: &r.value,
            };
            serde_json::to_writer(&mut self.out, &line).map_err(|e| io(e.into()))?;
            self.out.write_all(b"\n").map_err(io)?;
        }
        self.out.flush().map_err(io)
    }
}
