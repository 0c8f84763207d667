//! A connector's token file: written to a temporary file readable only by the gateway's user,
//! synced, renamed over the old one and the directory synced, so a crash leaves the old file or
//! the new one whole, never a mix. Secrets never reach `Debug` output.
//!
//! The contents pass through [`Seal`] on their way to and from the disk: as they are, or, with
//! `[privacy] encryption_key` configured, ChaCha20-Poly1305 ([`crate::seal`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::Fresh;

/// How a token file's bytes are protected at rest.
pub trait Seal: Send + Sync {
    fn seal(&self, plain: Vec<u8>) -> std::io::Result<Vec<u8>>;
    fn open(&self, sealed: Vec<u8>) -> std::io::Result<Vec<u8>>;
}

/// Files as they are (readable by the gateway's user only).
pub struct Plain;

impl Seal for Plain {
    fn seal(&self, plain: Vec<u8>) -> std::io::Result<Vec<u8>> {
        Ok(plain)
    }
    fn open(&self, sealed: Vec<u8>) -> std::io::Result<Vec<u8>> {
        if crate::seal::is_sealed(&sealed) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the tokens are encrypted, and no [privacy] encryption_key is configured",
            ));
        }
        Ok(sealed)
    }
}

/// ChaCha20-Poly1305 with the configured keys ([`crate::seal`]).
pub struct Encrypted(pub std::sync::Arc<crate::seal::Keys>);

impl Seal for Encrypted {
    fn seal(&self, plain: Vec<u8>) -> std::io::Result<Vec<u8>> {
        self.0.seal(&plain)
    }
    fn open(&self, sealed: Vec<u8>) -> std::io::Result<Vec<u8>> {
        self.0.open(sealed)
    }
}

/// A connector's tokens and what is known of them. Times are unix seconds.
#[derive(Clone)]
pub struct TokenSet {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    pub access_expires_at: Option<i64>,
    pub refresh_expires_at: Option<i64>,
    /// When the last refresh answered.
    pub refreshed_at: Option<i64>,
    /// Counts the token sets this file has held: a newer file has a higher one.
    pub generation: u64,
    /// A fingerprint of the configured refresh token these tokens descend from (`None`: written
    /// by `leadgate auth`). A new refresh token in the settings starts over from it.
    pub seed: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_expires_at", &self.access_expires_at)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .field("refreshed_at", &self.refreshed_at)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// A short, one-way fingerprint of a secret (to tell whether the configured one changed).
pub fn fingerprint(secret: &str) -> String {
    hex::encode(&sha2::Sha256::digest(secret.as_bytes())[..8])
}

impl TokenSet {
    /// The tokens of the settings, expiry unknown.
    pub fn configured(
        access_token: &SecretString,
        refresh_token: Option<&SecretString>,
        seed: Option<String>,
    ) -> Self {
        Self {
            access_token: access_token.clone(),
            refresh_token: refresh_token.cloned(),
            access_expires_at: None,
            refresh_expires_at: None,
            refreshed_at: None,
            generation: 1,
            seed,
        }
    }

    /// The set after a refresh answered `fresh` at `now`: a refresh token the platform did not
    /// rotate is kept, with its expiry.
    pub fn next(&self, fresh: Fresh, now: i64) -> Self {
        let rotated = fresh.refresh_token.is_some();
        let secs = |s: u64| now.saturating_add(i64::try_from(s).unwrap_or(i64::MAX));
        Self {
            access_token: fresh.access_token,
            refresh_token: fresh.refresh_token.or_else(|| self.refresh_token.clone()),
            access_expires_at: fresh.access_expires_in.map(secs),
            refresh_expires_at: match fresh.refresh_expires_in {
                Some(s) => Some(secs(s)),
                None if rotated => None,
                None => self.refresh_expires_at,
            },
            refreshed_at: Some(now),
            generation: self.generation + 1,
            seed: self.seed.clone(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access_expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refreshed_at: Option<i64>,
    generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seed: Option<String>,
}

/// One connector's token file; with `[coordination]`, also the coordination database's copy,
/// which the gateway holding the connector's lease writes (see [`crate::coord::tokens`]).
pub struct TokenStore {
    path: PathBuf,
    seal: Box<dyn Seal>,
    #[cfg(feature = "mysql")]
    shared: Option<(std::sync::Arc<crate::coord::tokens::SharedTokens>, String)>,
}

impl TokenStore {
    pub fn new(path: PathBuf) -> Self {
        let seal: Box<dyn Seal> = match crate::seal::keys() {
            Some(k) => Box::new(Encrypted(k)),
            None => Box::new(Plain),
        };
        Self {
            path,
            seal,
            #[cfg(feature = "mysql")]
            shared: None,
        }
    }

    /// The token file at `path`, shared as `connector`'s tokens when the gateway coordinates
    /// with others.
    pub fn for_connector(path: PathBuf, connector: &str) -> Self {
        #[cfg(feature = "mysql")]
        {
            let mut s = Self::new(path);
            s.shared = crate::coord::tokens::SharedTokens::get().map(|t| (t, connector.to_owned()));
            s
        }
        #[cfg(not(feature = "mysql"))]
        {
            let _ = connector;
            Self::new(path)
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// When the file last changed (`None` without one): a cheap check before [`TokenStore::load`].
    /// With shared tokens, their generation moves it too.
    pub fn modified(&self) -> Option<std::time::SystemTime> {
        let file = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        #[cfg(feature = "mysql")]
        if let Some((shared, connector)) = &self.shared {
            let generation = shared.generation(connector).unwrap_or(0);
            return Some(
                file.unwrap_or(std::time::UNIX_EPOCH) + std::time::Duration::from_secs(generation),
            );
        }
        file
    }

    /// The saved tokens (the newer of the file's and the shared ones); `None` without any.
    pub fn load(&self) -> std::io::Result<Option<TokenSet>> {
        let file = self.load_file()?;
        #[cfg(feature = "mysql")]
        if let Some((shared, connector)) = &self.shared
            && let Some((_, bytes)) = shared.load(connector)?
        {
            let remote = self.decode(bytes)?;
            return Ok(Some(match file {
                Some(f) if f.generation > remote.generation => f,
                _ => remote,
            }));
        }
        Ok(file)
    }

    fn load_file(&self) -> std::io::Result<Option<TokenSet>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        self.decode(bytes).map(Some)
    }

    fn decode(&self, bytes: Vec<u8>) -> std::io::Result<TokenSet> {
        let disk: OnDisk = serde_json::from_slice(&self.seal.open(bytes)?).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a token file: {e}", self.path.display()),
            )
        })?;
        Ok(TokenSet {
            access_token: disk.access_token.into(),
            refresh_token: disk.refresh_token.map(Into::into),
            access_expires_at: disk.access_expires_at,
            refresh_expires_at: disk.refresh_expires_at,
            refreshed_at: disk.refreshed_at,
            generation: disk.generation,
            seed: disk.seed,
        })
    }

    /// Writes `set` durably: the file is whole and synced, and its directory synced, before this
    /// returns. Shared tokens are written too while this gateway holds the connector's lease.
    pub fn save(&self, set: &TokenSet) -> std::io::Result<()> {
        self.write(set, false)
    }

    /// [`TokenStore::save`] of a refresh's answer: with shared tokens, an error unless they are
    /// written (the old refresh token is spent; the next holder needs the new one).
    pub fn save_refreshed(&self, set: &TokenSet) -> std::io::Result<()> {
        self.write(set, true)
    }

    fn write(&self, set: &TokenSet, must_share: bool) -> std::io::Result<()> {
        #[cfg(not(feature = "mysql"))]
        let _ = must_share;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        let disk = OnDisk {
            access_token: set.access_token.expose_secret().to_owned(),
            refresh_token: set
                .refresh_token
                .as_ref()
                .map(|r| r.expose_secret().to_owned()),
            access_expires_at: set.access_expires_at,
            refresh_expires_at: set.refresh_expires_at,
            refreshed_at: set.refreshed_at,
            generation: set.generation,
            seed: set.seed.clone(),
        };
        let bytes = self
            .seal
            .seal(serde_json::to_vec_pretty(&disk).map_err(std::io::Error::other)?)?;
        let tmp = self.path.with_extension("json.new");
        {
            let mut f = private_file(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        std::fs::File::open(dir)?.sync_all()?;
        #[cfg(feature = "mysql")]
        if let Some((shared, connector)) = &self.shared {
            // Fenced: only the holder of the lease's current epoch writes the shared tokens.
            let stored = match crate::coord::held_epoch(connector) {
                Some(epoch) => shared.save(connector, set.generation, &bytes, epoch)?,
                None => !must_share,
            };
            if !stored {
                return Err(std::io::Error::other(
                    "this gateway does not hold the connector's lease: the shared tokens are not written",
                ));
            }
        }
        Ok(())
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        match std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e),
        }
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let f = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // A file left by an older run keeps its mode through `open`: set it.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(access: &str, refresh: Option<&str>) -> Fresh {
        Fresh {
            access_token: access.into(),
            refresh_token: refresh.map(Into::into),
            access_expires_in: Some(86_399),
            refresh_expires_in: refresh.map(|_| 2_591_999),
        }
    }

    #[test]
    fn a_saved_set_loads_back_private_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path().join("tokens").join("oe.json"));
        assert!(store.load().unwrap().is_none());
        let first = TokenSet::configured(&"a1".into(), Some(&"r1".into()), Some(fingerprint("r1")));
        store.save(&first).unwrap();
        let next = first.next(fresh("a2", Some("r2")), 1_000);
        store.save(&next).unwrap();
        let back = store.load().unwrap().unwrap();
        assert_eq!(back.access_token.expose_secret(), "a2");
        assert_eq!(back.refresh_token.unwrap().expose_secret(), "r2");
        assert_eq!(back.access_expires_at, Some(1_000 + 86_399));
        assert_eq!(back.refresh_expires_at, Some(1_000 + 2_591_999));
        assert_eq!(back.generation, 2);
        assert_eq!(back.seed, Some(fingerprint("r1")));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(store.path()), 0o600);
            assert_eq!(mode(&dir.path().join("tokens")), 0o700);
        }
        // A write that died before its rename leaves the old file in place.
        std::fs::write(store.path().with_extension("json.new"), b"{\"access_tok").unwrap();
        assert_eq!(store.load().unwrap().unwrap().generation, 2);
        store.save(&next.next(fresh("a3", None), 2_000)).unwrap();
        let kept = store.load().unwrap().unwrap();
        assert_eq!(
            kept.refresh_token.unwrap().expose_secret(),
            "r2",
            "not rotated: kept"
        );
        assert_eq!(kept.refresh_expires_at, Some(1_000 + 2_591_999));
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let set = TokenSet::configured(
            &"access-secret".into(),
            Some(&"refresh-secret".into()),
            None,
        );
        let shown = format!("{set:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
