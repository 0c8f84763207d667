//! Encryption at rest (`[privacy] encryption_key`): ChaCha20-Poly1305 (RustCrypto's
//! `chacha20poly1305`) over what leadgate keeps on disk, with keys that rotate.
//!
//! A sealed value is `LGSEAL1` ‖ the key's id (the first 8 bytes of the key's SHA-256) ‖ a random
//! 96-bit nonce ‖ the ciphertext with its 16-byte tag. It is written with the current key and read
//! with whichever configured key its id names, so a key is rotated by making it the current one
//! and listing the old one in `previous_keys` until every value was written again. A value that is
//! not sealed (written before a key was configured) is read as it is and sealed the next time it is
//! written.
//!
//! It protects the stored OAuth tokens (token files and the shared `leadgate_tokens`), the
//! journal's events and quarantine, the identity log and its index snapshot (in chunks: see
//! [`ChunkWriter`]). See `docs/privacy.md`.

use std::sync::{Arc, OnceLock};

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::Digest;

const MAGIC: &[u8; 7] = b"LGSEAL1";
const ID: usize = 8;
const NONCE: usize = 12;

/// A configured key: its id and its cipher.
struct Sealer {
    id: [u8; ID],
    cipher: ChaCha20Poly1305,
}

/// The keys: the current one seals, every one opens.
pub struct Keys {
    current: Sealer,
    previous: Vec<Sealer>,
}

/// What is wrong with a key as configured.
pub fn parse_key(text: &str) -> Result<[u8; 32], String> {
    use base64::Engine;
    let t = text.trim();
    let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(t).map_err(|e| e.to_string())?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(t)
            .map_err(|_| "not base64 or 64 hex digits".to_owned())?
    };
    bytes.try_into().map_err(|b: Vec<u8>| {
        format!(
            "{} bytes; a key is 32 random bytes (`openssl rand -base64 32`)",
            b.len()
        )
    })
}

fn sealer(key: &[u8; 32]) -> Sealer {
    let digest = sha2::Sha256::digest(key);
    let mut id = [0u8; ID];
    id.copy_from_slice(&digest[..ID]);
    Sealer {
        id,
        cipher: ChaCha20Poly1305::new(Key::from_slice(key)),
    }
}

impl Keys {
    pub fn new(current: &[u8; 32], previous: &[[u8; 32]]) -> Self {
        Self {
            current: sealer(current),
            previous: previous.iter().map(sealer).collect(),
        }
    }

    /// `plain`, encrypted with the current key.
    pub fn seal(&self, plain: &[u8]) -> std::io::Result<Vec<u8>> {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .current
            .cipher
            .encrypt(&nonce, plain)
            .map_err(|_| std::io::Error::other("encryption failed"))?;
        let mut out = Vec::with_capacity(MAGIC.len() + ID + NONCE + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.current.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plain bytes of `stored`: opened with the key it names, or as they are when they were
    /// never sealed.
    pub fn open(&self, stored: Vec<u8>) -> std::io::Result<Vec<u8>> {
        let Some(rest) = stored.strip_prefix(MAGIC.as_slice()) else {
            return Ok(stored);
        };
        let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned());
        if rest.len() < ID + NONCE + 16 {
            return Err(bad("a sealed value is cut short"));
        }
        let (id, rest) = rest.split_at(ID);
        let (nonce, sealed) = rest.split_at(NONCE);
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| {
                bad(&format!(
                    "sealed with a key that is not configured (key id {}): set it as [privacy] encryption_key or list it in previous_keys",
                    hex::encode(id)
                ))
            })?;
        key.cipher
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| {
                bad("a sealed value does not verify (damaged, or changed outside leadgate)")
            })
    }
}

/// Whether `stored` is a sealed value (to tell a gateway without a key why it cannot read it).
pub fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(MAGIC)
}

static GLOBAL: OnceLock<Arc<Keys>> = OnceLock::new();

/// Makes `keys` the ones the stores seal with (once per process).
pub fn install(keys: Keys) {
    let _ = GLOBAL.set(Arc::new(keys));
}

/// The installed keys, if a key is configured.
pub fn keys() -> Option<Arc<Keys>> {
    GLOBAL.get().cloned()
}

/// `plain`, sealed with the installed key; as it is without one (what a store writes).
pub fn seal_stored(plain: Vec<u8>) -> std::io::Result<Vec<u8>> {
    match keys() {
        Some(k) => k.seal(&plain),
        None => Ok(plain),
    }
}

/// What a store reads: a sealed value opened with the installed keys, anything else as it is.
/// A sealed value without a key is an error that says so.
pub fn open_stored(stored: &[u8]) -> std::io::Result<std::borrow::Cow<'_, [u8]>> {
    if !is_sealed(stored) {
        return Ok(std::borrow::Cow::Borrowed(stored));
    }
    match keys() {
        Some(k) => k.open(stored.to_vec()).map(std::borrow::Cow::Owned),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "this data is encrypted, and no [privacy] encryption_key is configured",
        )),
    }
}

/// The start of a file written by a [`ChunkWriter`].
const STREAM_MAGIC: &[u8; 8] = b"LGSEALS1";
/// Plain bytes per sealed chunk.
const CHUNK: usize = 1 << 20;

/// A large file (the identity index snapshot) sealed as it is written: [`STREAM_MAGIC`], then
/// chunks of up to 1 MiB, each `u32` length (little endian) ‖ a sealed value of `u64` chunk
/// number ‖ the bytes; a last, empty chunk ends it, so that a file cut short is found.
pub struct ChunkWriter<W: std::io::Write> {
    out: W,
    keys: Arc<Keys>,
    buf: Vec<u8>,
    n: u64,
    started: bool,
}

impl<W: std::io::Write> ChunkWriter<W> {
    pub fn new(out: W, keys: Arc<Keys>) -> Self {
        Self {
            out,
            keys,
            buf: Vec::with_capacity(CHUNK + 8),
            n: 0,
            started: false,
        }
    }

    fn flush_chunk(&mut self) -> std::io::Result<()> {
        if !self.started {
            self.out.write_all(STREAM_MAGIC)?;
            self.started = true;
        }
        let mut plain = Vec::with_capacity(8 + self.buf.len());
        plain.extend_from_slice(&self.n.to_le_bytes());
        plain.append(&mut self.buf);
        let sealed = self.keys.seal(&plain)?;
        let len = u32::try_from(sealed.len()).map_err(std::io::Error::other)?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&sealed)?;
        self.n += 1;
        Ok(())
    }

    /// Writes the rest and the end mark; the inner writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        if !self.buf.is_empty() {
            self.flush_chunk()?;
        }
        self.flush_chunk()?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: std::io::Write> std::io::Write for ChunkWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Reads what a [`ChunkWriter`] wrote.
pub struct ChunkReader<R: std::io::Read> {
    inner: R,
    keys: Arc<Keys>,
    plain: Vec<u8>,
    at: usize,
    n: u64,
    ended: bool,
}

impl<R: std::io::Read> ChunkReader<R> {
    /// `inner` positioned after [`STREAM_MAGIC`] (see [`sealed_stream`]).
    pub fn new(inner: R, keys: Arc<Keys>) -> Self {
        Self {
            inner,
            keys,
            plain: Vec::new(),
            at: 0,
            n: 0,
            ended: false,
        }
    }

    fn next_chunk(&mut self) -> std::io::Result<()> {
        let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned());
        let mut len = [0u8; 4];
        self.inner
            .read_exact(&mut len)
            .map_err(|_| bad("a sealed file is cut short"))?;
        let len = u32::from_le_bytes(len) as usize;
        if len > CHUNK + 1024 {
            return Err(bad("a sealed chunk is too long"));
        }
        let mut sealed = vec![0u8; len];
        self.inner
            .read_exact(&mut sealed)
            .map_err(|_| bad("a sealed file is cut short"))?;
        let plain = self.keys.open(sealed)?;
        let (n, rest) = plain
            .split_first_chunk::<8>()
            .ok_or_else(|| bad("a sealed chunk without its number"))?;
        if u64::from_le_bytes(*n) != self.n {
            return Err(bad("sealed chunks out of order"));
        }
        self.n += 1;
        self.ended = rest.is_empty();
        self.plain = rest.to_vec();
        self.at = 0;
        Ok(())
    }
}

impl<R: std::io::Read> std::io::Read for ChunkReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.plain.len() {
            if self.ended {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let n = out.len().min(self.plain.len() - self.at);
        out[..n].copy_from_slice(&self.plain[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Whether a file's first bytes say a [`ChunkWriter`] wrote it.
pub fn sealed_stream(head: &[u8]) -> bool {
    head.starts_with(STREAM_MAGIC)
}

pub const STREAM_MAGIC_LEN: usize = STREAM_MAGIC.len();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_stream_reads_back_whole_and_refuses_cuts_and_reordering() {
        use std::io::{Read, Write};
        let keys = Arc::new(Keys::new(&[5u8; 32], &[]));
        let data: Vec<u8> = (0..(3 * CHUNK + 123)).map(|i| (i % 251) as u8).collect();
        let mut w = ChunkWriter::new(Vec::new(), keys.clone());
        for part in data.chunks(70_000) {
            w.write_all(part).unwrap();
        }
        let file = w.finish().unwrap();
        assert!(sealed_stream(&file));
        assert!(!file.windows(64).any(|w| w == &data[1000..1064]));
        let read = |bytes: &[u8]| {
            let mut out = Vec::new();
            ChunkReader::new(&bytes[STREAM_MAGIC_LEN..], keys.clone())
                .read_to_end(&mut out)
                .map(|_| out)
        };
        assert_eq!(read(&file).unwrap(), data);
        assert!(read(&file[..file.len() - 40]).is_err(), "cut short");
        // The second chunk first: refused.
        let first = 4 + u32::from_le_bytes(file[8..12].try_into().unwrap()) as usize;
        let second =
            4 + u32::from_le_bytes(file[8 + first..12 + first].try_into().unwrap()) as usize;
        let mut swapped = file[..8].to_vec();
        swapped.extend_from_slice(&file[8 + first..8 + first + second]);
        swapped.extend_from_slice(&file[8..8 + first]);
        swapped.extend_from_slice(&file[8 + first + second..]);
        assert!(read(&swapped).is_err());
    }

    #[test]
    fn sealed_values_open_with_current_and_previous_keys_only() {
        let (a, b) = ([7u8; 32], [9u8; 32]);
        let k = Keys::new(&a, &[]);
        let plain = br#"{"access_token":"at-secret-1"}"#;
        let sealed = k.seal(plain).unwrap();
        assert!(
            !sealed.windows(9).any(|w| w == b"at-secret"),
            "the plain text shows"
        );
        assert_ne!(k.seal(plain).unwrap(), sealed, "a fresh nonce each time");
        assert_eq!(k.open(sealed.clone()).unwrap(), plain);
        // Never sealed: read as it is.
        assert_eq!(k.open(plain.to_vec()).unwrap(), plain);
        // Rotated: b is current, a previous.
        let rotated = Keys::new(&b, &[a]);
        assert_eq!(rotated.open(sealed.clone()).unwrap(), plain);
        let resealed = rotated.seal(plain).unwrap();
        // A gateway that only knows a cannot read b's values, and says why.
        let e = k.open(resealed).unwrap_err().to_string();
        assert!(e.contains("not configured"), "{e}");
        // Tampering is found.
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(k.open(bad).is_err());
        assert!(k.open(sealed[..20].to_vec()).is_err());
    }

    #[test]
    fn keys_are_read_as_base64_or_hex_of_32_bytes() {
        use base64::Engine;
        let key = [3u8; 32];
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        assert_eq!(parse_key(&b64).unwrap(), key);
        assert_eq!(parse_key(&hex::encode(key)).unwrap(), key);
        assert!(parse_key("c2hvcnQ=").unwrap_err().contains("5 bytes"));
        assert!(parse_key("not a key!").is_err());
    }
}
