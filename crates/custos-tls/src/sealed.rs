//! Secrets the server must read back — webhook signing secrets, which it
//! needs whole to sign each delivery, so they cannot be hashed like passwords
//! — kept sealed in the index: AES-256-GCM under a key in the data folder
//! (`secrets.key`, 0600), so that a copy or dump of the database alone does
//! not give them away. Nodes that share an index share the key file too.

use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::error::{Context, Result, TlsError};

/// The key's file in the data folder.
pub const KEY_FILE: &str = "secrets.key";

/// What a sealed value starts with; anything else is a value stored before
/// sealing (read as it is).
const PREFIX: &str = "sealed:v1:";

/// Binds a sealed value to what it is for.
const AAD: &[u8] = b"custos sealed secret";

pub struct SecretBox(LessSafeKey);

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// Reads the data folder's key, or makes one.
    pub fn open_or_create(dir: &Path) -> Result<SecretBox> {
        let path = dir.join(KEY_FILE);
        let hex_key = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| TlsError::invalid("no randomness for a new secrets key"))?;
                let text = hex::encode(key);
                crate::write_private(&path, &text)?;
                text
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let key = hex::decode(&hex_key)
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| {
                TlsError::invalid(format!(
                    "{} is not a secrets key (64 hexadecimal digits)",
                    path.display()
                ))
            })?;
        Self::from_key(&key)
    }

    fn from_key(key: &[u8]) -> Result<SecretBox> {
        let key = UnboundKey::new(&AES_256_GCM, key)
            .map_err(|_| TlsError::invalid("a secrets key has 32 bytes"))?;
        Ok(SecretBox(LessSafeKey::new(key)))
    }

    /// `plain` sealed under a fresh random nonce, as text for the index.
    pub fn seal(&self, plain: &str) -> Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| TlsError::invalid("no randomness for a nonce"))?;
        let mut data = plain.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut data,
            )
            .map_err(|_| TlsError::invalid("sealing a secret failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!("{PREFIX}{}", hex::encode(out)))
    }

    /// The secret `stored` holds; a value stored before sealing is returned
    /// as it is. Fails for a value sealed under another key.
    pub fn open(&self, stored: &str) -> Result<String> {
        let Some(hex_text) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_string());
        };
        let wrong = || {
            TlsError::invalid(format!(
                "a sealed secret does not open with this data folder's {KEY_FILE} (copy the file from the node that sealed it)"
            ))
        };
        let bytes = hex::decode(hex_text).map_err(|_| wrong())?;
        if bytes.len() < NONCE_LEN {
            return Err(wrong());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| wrong())?;
        let mut data = sealed.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(AAD), &mut data)
            .map_err(|_| wrong())?;
        String::from_utf8(plain.to_vec()).map_err(|_| wrong())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_with_their_key_only() {
        let a = SecretBox::from_key(&[7u8; 32]).unwrap();
        let b = SecretBox::from_key(&[8u8; 32]).unwrap();
        let sealed = a.seal("a webhook secret of some length").unwrap();
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("webhook"));
        assert_ne!(sealed, a.seal("a webhook secret of some length").unwrap());
        assert_eq!(a.open(&sealed).unwrap(), "a webhook secret of some length");
        assert!(b.open(&sealed).is_err());
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        assert!(a.open(&String::from_utf8(flipped).unwrap()).is_err());
        assert_eq!(
            a.open("stored before sealing").unwrap(),
            "stored before sealing"
        );
    }

    #[test]
    fn the_key_file_is_made_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("custos-sealed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = SecretBox::open_or_create(&dir).unwrap();
        let sealed = first.seal("kept across restarts").unwrap();
        let again = SecretBox::open_or_create(&dir).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), "kept across restarts");
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
