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
//! Today it protects the stored OAuth tokens (token files and the shared `leadgate_tokens`); the
//! journal, identity and assignment stores are not encrypted yet (see `docs/privacy.md`).

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

#[cfg(test)]
mod tests {
    use super::*;

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
