//! Passwords and API tokens: argon2id hashes, a password policy, and tokens of
//! which only a SHA-256 is kept. Every comparison is constant-time.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::ApiToken;

pub const MIN_PASSWORD_LEN: usize = 12;
/// Longer passwords are refused: hashing megabytes would be a cheap attack.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Passwords too common to accept whatever their length (lower-cased; a
/// password that contains one of these as most of its length is refused too).
const COMMON: &[&str] = &[
    "password",
    "passw0rd",
    "123456",
    "12345678",
    "123456789",
    "1234567890",
    "qwerty",
    "qwertyuiop",
    "abc123",
    "letmein",
    "welcome",
    "admin",
    "administrator",
    "iloveyou",
    "monkey",
    "dragon",
    "football",
    "baseball",
    "sunshine",
    "princess",
    "trustno1",
    "changeme",
    "default",
    "orthanc",
    "dcm4chee",
    "pacs",
    "radiology",
    "hospital",
    "secret",
    "111111",
    "000000",
    "qwerty123",
    "password1",
    "password123",
    "1q2w3e4r",
    "zaq12wsx",
];

/// Checks a new password: long enough, not a common one, not the user name.
pub fn check_password_policy(user: &str, password: &str) -> Result<(), crate::Invalid> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(crate::invalid!(
            "a password needs at least {MIN_PASSWORD_LEN} characters"
        ));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(crate::invalid!(
            "a password has at most {MAX_PASSWORD_LEN} bytes"
        ));
    }
    let lower = password.to_lowercase();
    if user.len() >= 3 && lower.contains(&user.to_lowercase()) {
        return Err("a password must not contain the user name".into());
    }
    let distinct: std::collections::HashSet<char> = lower.chars().collect();
    if distinct.len() < 4 {
        return Err("a password needs more than three different characters".into());
    }
    for word in COMMON {
        if lower.contains(word) && word.len() * 2 >= lower.len() {
            return Err("that password is on the list of common passwords".into());
        }
    }
    Ok(())
}

fn argon2() -> Argon2<'static> {
    // OWASP's argon2id recommendation: 19 MiB, 2 passes, 1 lane.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// An argon2id PHC string for `password`.
pub fn hash_password(password: &str) -> Result<String, crate::Invalid> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| crate::Invalid(e.to_string()))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| crate::Invalid(e.to_string()))
}

/// Whether `password` matches the PHC string `hash` (constant-time inside argon2).
pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Spends the time of one verification, for unknown users (no timing oracle).
pub fn verify_dummy(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = DUMMY.get_or_init(|| hash_password("custos-dummy-password").unwrap_or_default());
    let _ = verify_password(hash, password);
}

const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";

/// `n` random characters from an unambiguous alphabet (OS randomness).
pub fn random_text(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| {
            // Rejection sampling keeps the choice uniform.
            loop {
                let b = (rng.next_u32() & 0xff) as usize;
                if b < 256 - 256 % ALPHABET.len() {
                    return ALPHABET[b % ALPHABET.len()] as char;
                }
            }
        })
        .collect()
}

/// A new DICOM UID under the UUID-derived root 2.25 (PS3.5 B.2), random.
pub fn random_uid() -> String {
    let mut rng = rand::rng();
    let high = u128::from(rng.next_u64()) << 64;
    format!("2.25.{}", high | u128::from(rng.next_u64()))
}

/// A new password that passes the policy (about 119 bits).
pub fn random_password() -> String {
    random_text(20)
}

/// Lower-case hex SHA-256 (token secrets, certificate fingerprints).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Token text: `custos_<id>_<secret>`.
const TOKEN_PREFIX: &str = "custos_";

/// A freshly made token: `text` is shown once, `token` is what is stored.
pub struct NewToken {
    pub text: String,
    pub token: ApiToken,
}

pub fn new_token(user: &str, read_only: bool, created: i64, expires: i64) -> NewToken {
    let id = random_text(12);
    let secret = random_text(40);
    NewToken {
        text: format!("{TOKEN_PREFIX}{id}_{secret}"),
        token: ApiToken {
            id,
            user: user.to_string(),
            secret_sha256: sha256_hex(secret.as_bytes()),
            read_only,
            created,
            expires,
            revoked: false,
        },
    }
}

/// Splits token text into (id, secret); `None` if it is not one of ours.
pub fn parse_token(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| ALPHABET.contains(&b));
    (ok(id, 12) && ok(secret, 40)).then_some((id, secret))
}

/// Whether `secret` belongs to `token` (constant-time).
pub fn token_secret_matches(token: &ApiToken, secret: &str) -> bool {
    sha256_hex(secret.as_bytes())
        .as_bytes()
        .ct_eq(token.secret_sha256.as_bytes())
        .into()
}

/// Constant-time equality of two byte strings.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_policy() {
        assert!(check_password_policy("alice", "short").is_err());
        assert!(check_password_policy("alice", "password1234").is_err());
        assert!(check_password_policy("alice", "alice-is-great-42").is_err());
        assert!(check_password_policy("alice", "aaaaaaaaaaaaaaa").is_err());
        assert!(check_password_policy("alice", "correct horse battery").is_ok());
        assert!(check_password_policy("admin", &random_password()).is_ok());
    }

    #[test]
    fn hashes_verify_and_salt() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse battery"));
        assert!(!verify_password(&h, "correct horse batterx"));
        assert_ne!(h, hash_password("correct horse battery").unwrap());
        assert!(!verify_password("not a hash", "x"));
    }

    #[test]
    fn tokens() {
        let t = new_token("alice", true, 0, 10);
        let (id, secret) = parse_token(&t.text).unwrap();
        assert_eq!(id, t.token.id);
        assert!(token_secret_matches(&t.token, secret));
        assert!(!token_secret_matches(&t.token, &random_text(40)));
        assert!(!t.text.contains(&t.token.secret_sha256));
        assert!(parse_token("custos_abc_def").is_none());
        assert!(parse_token("Bearer x").is_none());
    }
}
