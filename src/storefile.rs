//! Opening a store's redb file so that no crash point leaves a half-made store under its name.
//!
//! `redb::Builder::create` makes a missing file in place: killed before it wrote the header, it
//! leaves a file that every later start refuses ("Not a redb database: magic number mismatch",
//! seen when `import` was killed in its first milliseconds). A new store is therefore made beside
//! its final name (`<name>.new`), synced, and renamed into place; a `.new` file left by a crash is
//! thrown away and made again. The journal, the identity store and the assignment store open their
//! files through [`open`].

use std::path::{Path, PathBuf};

use redb::{Builder, Database, DatabaseError};

/// Opens the store at `path` with `builder`, creating it atomically if it does not exist. A
/// symbolic link at `path` is followed: the store is made where it points.
pub fn open(builder: &Builder, path: &Path) -> Result<Database, DatabaseError> {
    let real = resolve(path);
    if !real.exists() {
        create(&real).map_err(|e| DatabaseError::Storage(redb::StorageError::Io(e)))?;
    }
    builder.create(&real)
}

/// Where `path` leads, following symbolic links (a few levels).
fn resolve(path: &Path) -> PathBuf {
    let mut p = path.to_owned();
    for _ in 0..8 {
        match std::fs::read_link(&p) {
            Ok(target) => {
                p = match p.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                }
            }
            Err(_) => break,
        }
    }
    p
}

/// Replaces the file at `path` with `bytes` whole or not at all: written beside it, made
/// durable, renamed over it, and the rename made durable. A crash leaves the old or the new file.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    replace_with(path, |mut f| {
        f.write_all(bytes)?;
        Ok(Some(f))
    })
    .map(drop)
}

/// Replaces the file at `path` with what `write` writes into a new file beside it
/// (`<name>.tmp`), whole or not at all: synced, renamed over `path`, the rename synced. When
/// `write` gives no file back (nothing changed), the new file is thrown away and `path` is left
/// as it is; returns whether it was replaced. Rewriting a file this way leaves nothing of the old
/// one in the directory (an erasure): its blocks go back to the filesystem.
pub fn replace_with(
    path: &Path,
    write: impl FnOnce(std::fs::File) -> std::io::Result<Option<std::fs::File>>,
) -> std::io::Result<bool> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = write(std::fs::File::create(&tmp)?);
    let Some(f) = written.inspect_err(|_| drop(std::fs::remove_file(&tmp)))? else {
        std::fs::remove_file(&tmp)?;
        return Ok(false);
    };
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(true)
}

/// Rewriting a store to leave nothing of what was taken out of it (an erasure): redb keeps old
/// pages' bytes in its free space, so the live rows are copied into a new file beside the store
/// (`<name>.erasing`), which is synced and renamed over it. The old file's blocks go back to the
/// filesystem; no file holds them.
pub struct Rewrite {
    path: PathBuf,
    new: PathBuf,
    pub db: Database,
}

impl Rewrite {
    /// Starts a new file beside `path` (one left by a crash is thrown away).
    pub fn begin(path: &Path) -> Result<Self, redb::Error> {
        let path = resolve(path);
        let mut new = path.as_os_str().to_owned();
        new.push(".erasing");
        let new = PathBuf::from(new);
        remove_if_there(&new).map_err(redb::StorageError::Io)?;
        let db = Database::create(&new)?;
        Ok(Self { path, new, db })
    }

    /// Closes the new file, makes it durable and puts it in place of the old one. The caller
    /// opens it again.
    pub fn finish(self) -> std::io::Result<()> {
        drop(self.db);
        std::fs::File::open(&self.new)?.sync_all()?;
        std::fs::rename(&self.new, &self.path)?;
        sync_dir(&self.path)
    }
}

/// Copies the rows of `def` that `keep` keeps from `from` to `to`; returns how many it left out.
pub fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    from: &redb::ReadTransaction,
    to: &redb::WriteTransaction,
    def: redb::TableDefinition<K, V>,
    mut keep: impl FnMut(&K::SelfType<'_>, &V::SelfType<'_>) -> bool,
) -> Result<u64, redb::Error> {
    use redb::ReadableTable;
    let mut out = to.open_table(def)?;
    let source = match from.open_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut dropped = 0;
    for row in source.iter()? {
        let (k, v) = row?;
        let (k, v) = (k.value(), v.value());
        if keep(&k, &v) {
            out.insert(k, v)?;
        } else {
            dropped += 1;
        }
    }
    Ok(dropped)
}

/// Removes `path` if it is there, durably.
pub fn remove_if_there(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_dir(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes the directory entry of `path` durable.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

fn create(path: &Path) -> std::io::Result<()> {
    let mut new = path.as_os_str().to_owned();
    new.push(".new");
    let new = PathBuf::from(new);
    match std::fs::remove_file(&new) {
        Ok(()) => {
            tracing::warn!(file = %new.display(), "removed a store file left half-made by a crash")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    drop(Database::create(&new).map_err(std::io::Error::other)?);
    std::fs::File::open(&new)?.sync_all()?;
    std::fs::rename(&new, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_is_made_beside_its_name_and_a_half_made_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        // A crash while making it left a file without a header.
        std::fs::write(dir.path().join("s.redb.new"), vec![0u8; 4096]).unwrap();
        drop(open(&Builder::new(), &path).unwrap());
        assert!(!dir.path().join("s.redb.new").exists());
        // Opened again as the same store.
        drop(open(&Builder::new(), &path).unwrap());
    }

    #[test]
    fn a_symbolic_link_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("disk");
        std::fs::create_dir(&elsewhere).unwrap();
        let link = dir.path().join("s.redb");
        std::os::unix::fs::symlink(elsewhere.join("s.redb"), &link).unwrap();
        drop(open(&Builder::new(), &link).unwrap());
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert!(elsewhere.join("s.redb").is_file());
    }
}
