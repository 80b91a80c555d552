//! Passwords and API tokens: argon2id hashes, a password policy, and tokens of
//! which only a SHA-256 is kept. Every comparison is constant-time.

use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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

/// OWASP's argon2id recommendation: 19 MiB, 2 passes, 1 lane.
fn params() -> Params {
    Params::new(19 * 1024, 2, 1, None).unwrap_or_default()
}

/// Largest argon2 memory a stored hash may ask for when verified (KiB): a
/// row edited to claim gigabytes is refused, not allocated.
const MAX_M_COST_KIB: u32 = 256 * 1024;

/// Most passes a stored hash may ask for: with the memory cap, one
/// verification stays within seconds instead of holding a hashing slot for
/// as long as a forged row says.
const MAX_T_COST: u32 = 10;

/// argon2's working memory for `blocks` blocks of 1 KiB. Reserved with room
/// for 33 MiB, above the largest threshold glibc's malloc adapts its mmap
/// threshold to (32 MiB on 64-bit), so it is always a mapping of its own and
/// goes back to the system when freed; only the 19 MiB used are ever touched.
/// Taken from the heap (as the argon2 crate does), the second verification
/// onwards came from an arena that kept it: 19 MiB more RSS for good, seen
/// in the sustained trial when the verified-password cache expired.
fn work_memory(blocks: usize) -> Vec<Block> {
    const MAPPED_BLOCKS: usize = 33 * 1024;
    let mut memory = Vec::with_capacity(blocks.max(MAPPED_BLOCKS));
    memory.resize(blocks, Block::default());
    memory
}

/// argon2 of `password` and `salt` with these parameters, in [`work_memory`].
fn argon2_output(
    algorithm: Algorithm,
    version: Version,
    params: Params,
    password: &[u8],
    salt: Salt<'_>,
    len: usize,
) -> argon2::password_hash::Result<Output> {
    let mut salt_buf = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_buf)?;
    let mut memory = work_memory(params.block_count());
    let argon2 = Argon2::new(algorithm, version, params);
    Output::init_with(len, |out| {
        Ok(argon2.hash_password_into_with_memory(password, salt, out, &mut memory)?)
    })
}

/// An argon2id PHC string for `password`.
pub fn hash_password(password: &str) -> Result<String, crate::Invalid> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let invalid = |e: argon2::password_hash::Error| crate::Invalid(e.to_string());
    let salt = SaltString::encode_b64(&salt).map_err(invalid)?;
    let params = params();
    let output = argon2_output(
        Algorithm::Argon2id,
        Version::V0x13,
        params.clone(),
        password.as_bytes(),
        salt.as_salt(),
        Params::DEFAULT_OUTPUT_LEN,
    )
    .map_err(invalid)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(invalid)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `hash` (the outputs compared in
/// constant time by `Output`'s equality).
pub fn verify_password(hash: &str, password: &str) -> bool {
    let check = || -> argon2::password_hash::Result<bool> {
        let parsed = PasswordHash::new(hash)?;
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Ok(false);
        };
        let algorithm = Algorithm::try_from(parsed.algorithm)?;
        let version = match parsed.version {
            Some(v) => Version::try_from(v)?,
            None => Version::default(),
        };
        let params = Params::try_from(&parsed)?;
        // The stored string says how much memory and time to take: not
        // without limit.
        if params.m_cost() > MAX_M_COST_KIB || params.t_cost() > MAX_T_COST {
            return Ok(false);
        }
        let computed = argon2_output(
            algorithm,
            version,
            params,
            password.as_bytes(),
            salt,
            expected.len(),
        )?;
        Ok(computed == expected)
    };
    check().unwrap_or(false)
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

    /// Hashes made here are what the argon2 crate makes and verifies, and
    /// the other way round (its own allocation, ours in `work_memory`).
    #[test]
    fn hashes_agree_with_the_argon2_crate() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let ours = hash_password("correct horse battery").unwrap();
        let crate_argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params());
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            crate_argon2
                .verify_password(b"correct horse battery", &parsed)
                .is_ok()
        );
        assert!(
            crate_argon2
                .verify_password(b"correct horse batterx", &parsed)
                .is_err()
        );
        let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
        let theirs = crate_argon2
            .hash_password(b"correct horse battery", &salt)
            .unwrap()
            .to_string();
        assert!(verify_password(&theirs, "correct horse battery"));
        assert!(!verify_password(&theirs, "correct horse batterx"));
        // Other parameters in the string are honoured (a cheaper hash from elsewhere).
        let cheap = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"correct horse battery", &salt)
        .unwrap()
        .to_string();
        assert!(verify_password(&cheap, "correct horse battery"));
        assert!(!verify_password(&cheap, "correct horse batterx"));
        // A hash asking for more memory than MAX_M_COST_KIB is not computed.
        let greedy = cheap.replace("m=1024", "m=4194304");
        assert!(greedy.contains("m=4194304"));
        assert!(!verify_password(&greedy, "correct horse battery"));
        // So is one asking for more passes than MAX_T_COST (computed, this
        // would take tens of minutes).
        let slow = cheap.replace("t=1", "t=1000000");
        assert!(slow.contains("t=1000000"));
        assert!(!verify_password(&slow, "correct horse battery"));
        // A hash without its output, or of another algorithm, never matches.
        assert!(!verify_password(
            cheap.rsplit_once('$').unwrap().0,
            "correct horse battery"
        ));
        assert!(!verify_password(
            &cheap.replace("argon2id", "scrypt"),
            "correct horse battery"
        ));
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
