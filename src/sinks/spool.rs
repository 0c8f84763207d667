//! The embedded output: each topic is a JSON-lines file under `<data_dir>/output/`, appended and
//! fsynced before delivery is confirmed. It needs nothing installed, so a newcomer can see clean
//! records a second after posting a lead.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{OutRecord, SinkError};

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

    pub fn deliver(&mut self, records: &[OutRecord]) -> Result<(), SinkError> {
        let mut buffers: HashMap<&str, Vec<u8>> = HashMap::new();
        for r in records {
            let buf = buffers.entry(r.topic.as_str()).or_default();
            buf.extend_from_slice(r.value.get().as_bytes());
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
                        let f = OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&path)
                            .map_err(io)?;
                        self.files.entry(topic.to_owned()).or_insert(f)
                    }
                };
                file.write_all(&buf).map_err(io)?;
                file.sync_data().map_err(io)?;
            }
            Ok(())
        })
    }
}
