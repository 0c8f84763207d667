//! The embedded output: each topic is a JSON-lines file under `<data_dir>/output/`, appended and
//! fsynced before delivery is confirmed. It needs nothing installed, so a newcomer can see clean
//! records a second after posting a lead.
//!
//! A file never keeps a torn record. A write that fails part-way (a full disk) is cut back to
//! where it started, and the file is opened afresh for the next attempt; a file found ending
//! inside a record when it is opened (a write cut short by a crash or by a cut that failed too)
//! is cut back to its last whole line. Neither record was confirmed, so the journal delivers it
//! again.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{Landed, OutRecord, Positions, SinkError};

/// A record's line: its JSON, or with a key configured (`[privacy] encryption_key`) the base64
/// of the sealed JSON. `leadgate output` reads both.
pub(crate) fn line_of(json: &str) -> Result<Vec<u8>, SinkError> {
    use base64::Engine;
    match crate::seal::keys() {
        None => Ok(json.as_bytes().to_vec()),
        Some(k) => k
            .seal(json.as_bytes())
            .map(|s| {
                base64::engine::general_purpose::STANDARD
                    .encode(s)
                    .into_bytes()
            })
            .map_err(|source| SinkError::Io {
                path: "(sealing a record)".into(),
                source,
            }),
    }
}

/// The record of a line of an output file: JSON, or sealed (see [`line_of`]).
pub fn record_of(line: &[u8]) -> Result<serde_json::Value, String> {
    use base64::Engine;
    if line.first() == Some(&b'{') {
        return serde_json::from_slice(line).map_err(|e| e.to_string());
    }
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(line.trim_ascii())
        .map_err(|_| "neither JSON nor a sealed record".to_owned())?;
    let plain = crate::seal::open_stored(&sealed).map_err(|e| e.to_string())?;
    serde_json::from_slice(&plain).map_err(|e| e.to_string())
}

pub struct SpoolSink {
    dir: PathBuf,
    files: HashMap<String, File>,
}

impl SpoolSink {
    pub fn open(dir: &Path) -> Result<Self, SinkError> {
        std::fs::create_dir_all(dir).map_err(|source| SinkError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            files: HashMap::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds `topic`.
    pub fn path_of(&self, topic: &str) -> PathBuf {
        self.dir.join(format!("{topic}.jsonl"))
    }

    /// Each topic's file length (0 for a file not written yet).
    pub fn positions(&self, topics: &[&str]) -> Result<Positions, SinkError> {
        let mut files = std::collections::BTreeMap::new();
        for topic in topics {
            let path = self.path_of(topic);
            let len = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Err(source) => {
                    return Err(SinkError::Io {
                        path: path.display().to_string(),
                        source,
                    });
                }
            };
            files.insert((*topic).to_owned(), len);
        }
        Ok(Positions {
            files,
            ..Default::default()
        })
    }

    /// The records in the whole lines after `at`'s lengths.
    pub fn landed(&self, at: &Positions) -> Result<Landed, SinkError> {
        let mut landed = Landed::new();
        for (topic, &len) in &at.files {
            let path = self.path_of(topic);
            let io = |source| SinkError::Io {
                path: path.display().to_string(),
                source,
            };
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(e)),
            };
            file.seek(SeekFrom::Start(len)).map_err(io)?;
            for line in std::io::BufRead::lines(std::io::BufReader::new(file)) {
                let line = line.map_err(io)?;
                let Ok(value) = record_of(line.as_bytes()) else {
                    continue; // a torn last line: not delivered
                };
                if let Some(id) = value["event_id"].as_str() {
                    landed.insert((topic.clone(), id.to_owned()));
                }
            }
        }
        Ok(landed)
    }

    pub fn deliver(&mut self, records: &[OutRecord]) -> Result<(), SinkError> {
        let mut buffers: HashMap<&str, Vec<u8>> = HashMap::new();
        for r in records.iter().filter(|r| !r.is_tombstone()) {
            let buf = buffers.entry(r.topic.as_str()).or_default();
            buf.extend_from_slice(&line_of(r.value.get())?);
            buf.push(b'\n');
        }
        // The blocking writes are short (one append and one fsync per topic per batch).
        tokio::task::block_in_place(|| {
            for (topic, buf) in buffers {
                let path = self.path_of(topic);
                let io = |source| SinkError::Io {
                    path: path.display().to_string(),
                    source,
                };
                let file = match self.files.get_mut(topic) {
                    Some(f) => f,
                    None => {
                        let f = open_whole(&path).map_err(io)?;
                        self.files.entry(topic.to_owned()).or_insert(f)
                    }
                };
                let start = file.metadata().map_err(io)?.len();
                if let Err(e) = file.write_all(&buf).and_then(|()| file.sync_data()) {
                    // Cut the part that was written; if even that fails, the next open does it.
                    let _ = file.set_len(start);
                    self.files.remove(topic);
                    return Err(io(e));
                }
            }
            Ok(())
        })
    }
}

impl SpoolSink {
    /// Rewrites every topic's file without the records `drop` picks (an erasure): each file is
    /// written anew beside itself, synced and renamed over the old one, so that nothing of a
    /// dropped record is left in the directory. Returns how many were dropped.
    pub fn erase(&mut self, drop: impl Fn(&serde_json::Value) -> bool) -> Result<u64, SinkError> {
        self.files.clear();
        erase_in(&self.dir, drop)
    }
}

/// Rewrites every `*.jsonl` file of `dir` (JSON or sealed lines, see [`line_of`]) without the
/// records `drop` picks; how many went. A missing `dir` has nothing to drop.
pub fn erase_in(dir: &Path, drop: impl Fn(&serde_json::Value) -> bool) -> Result<u64, SinkError> {
    use std::io::BufRead;
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| SinkError::Io { path, source }
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut dropped = 0;
    for entry in entries {
        let path = entry.map_err(io(dir))?.path();
        if path.extension().is_none_or(|x| x != "jsonl") {
            continue;
        }
        let mut removed = 0;
        crate::storefile::replace_with(&path, |file| {
            let mut out = std::io::BufWriter::new(file);
            for line in std::io::BufReader::new(File::open(&path)?).split(b'\n') {
                let line = line?;
                if record_of(&line).is_ok_and(|v| drop(&v)) {
                    removed += 1;
                } else if !line.is_empty() {
                    out.write_all(&line)?;
                    out.write_all(b"\n")?;
                }
            }
            let file = out.into_inner().map_err(|e| e.into_error())?;
            Ok((removed > 0).then_some(file))
        })
        .map_err(io(&path))?;
        dropped += removed;
    }
    Ok(dropped)
}

/// Opens `path` for appending, first cutting a torn last record (one without its newline).
fn open_whole(path: &Path) -> std::io::Result<File> {
    let mut f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(f);
    }
    // Find the last newline, reading backwards in blocks.
    let mut end = len;
    let mut block = vec![0u8; 64 * 1024];
    let whole = loop {
        let from = end.saturating_sub(block.len() as u64);
        let chunk = &mut block[..(end - from) as usize];
        f.seek(SeekFrom::Start(from))?;
        f.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            break from + i as u64 + 1;
        }
        if from == 0 {
            break 0;
        }
        end = from;
    };
    if whole < len {
        tracing::warn!(file = %path.display(), bytes = len - whole,
            "the output file ended inside a record (an interrupted write); cut back to its last whole record, which the journal delivers again");
        f.set_len(whole)?;
        f.sync_data()?;
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn record(n: u32) -> OutRecord {
        OutRecord {
            topic: "leads.clean".into(),
            key: n.to_string(),
            value: RawValue::from_string(format!("{{\"n\":{n}}}")).unwrap(),
            headers: Vec::new(),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_torn_last_record_is_cut_before_more_are_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leads.clean.jsonl");
        std::fs::write(&path, "{\"n\":1}\n{\"n\":2").unwrap();
        let mut sink = SpoolSink::open(dir.path()).unwrap();
        sink.deliver(&[record(2), record(3)]).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n"
        );
        // A file that is one torn record, longer than a read block.
        std::fs::write(&path, "x".repeat(100_000)).unwrap();
        let mut sink = SpoolSink::open(dir.path()).unwrap();
        sink.deliver(&[record(4)]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":4}\n");
    }
}
