//! Who is asking: the one authentication component behind both front doors.
//!
//! HTTP (`Authorization: Basic` / `Bearer`) and DICOM user identities (PS3.7
//! D.3.3.7: username + passcode, JWT) hand their credentials to
//! [`Authenticator::authenticate`], which checks passwords (argon2id), API
//! tokens (SHA-256, constant-time) and OpenID Connect JWTs, refuses disabled
//! users and expired or revoked tokens, and applies the same lockout to both:
//! a password guessed over DICOM counts against the same user and address as
//! one guessed over HTTP.
//!
//! Password checks are expensive by design, so they are rationed: an attempt
//! is counted before argon2 runs, at most [`throttle::MAX_IN_FLIGHT_PER_ADDRESS`]
//! run for one address, at most one per core run at all (on blocking threads,
//! never on the async workers), and concurrent checks of the same user and
//! password share one verification. A verified password is remembered for
//! [`CACHE_TTL`] so that Basic auth does not cost argon2 on every request.
#![forbid(unsafe_code)]

pub mod oidc;
pub mod session;
mod throttle;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tokio::sync::{OnceCell, Semaphore};

use custos_core::Principal;
use custos_core::credentials::{
    MAX_PASSWORD_LEN, constant_time_eq, parse_token, random_text, token_secret_matches,
    verify_dummy, verify_password,
};
use custos_index::Registry;

pub use oidc::{Oidc, OidcConfig, OidcError};
pub use session::{NewSession, SessionPolicy};
pub use throttle::{LockoutPolicy, MAX_IN_FLIGHT_PER_ADDRESS, MAX_TRACKED};

/// How long a verified password (or a token login) is trusted without a new check.
pub const CACHE_TTL: Duration = Duration::from_secs(300);

/// Longest user name looked up.
const MAX_USER_LEN: usize = 64;

pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Credentials as a front door received them.
#[derive(Clone, Copy)]
pub enum Secret<'a> {
    /// HTTP Basic, or a DICOM username + passcode identity.
    Password { user: &'a str, password: &'a str },
    /// HTTP Bearer, or a DICOM JWT identity: a Custos API token or an OpenID
    /// Connect JWT.
    Bearer(&'a str),
}

/// A proven principal.
#[derive(Debug, Clone)]
pub struct Verified {
    pub principal: Principal,
    /// How it was proven, for the audit trail ("password verified",
    /// "API token <id>", "OpenID Connect token").
    pub method: String,
    /// A login worth recording: the first use of this password, token or JWT
    /// within [`CACHE_TTL`].
    pub first_use: bool,
}

/// Why credentials were not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Too many failures on this user or address; try again after this long.
    Locked { retry_after: Duration },
    /// Too many checks in flight from this address.
    Busy,
    /// Wrong, unknown, disabled, expired or revoked. `claimed` is the user the
    /// attempt named or the token belonged to; `delay` is the slow-down to
    /// impose before answering.
    Invalid {
        claimed: Option<String>,
        delay: Duration,
    },
    /// The user registry could not be read.
    Unavailable(String),
}

/// A recent successful password check: the PHC hash it was verified against,
/// SHA-256 of the process key and the password, and when.
type Remembered = (String, [u8; 32], Instant);

/// A user name and the keyed digest of the password tried.
type Attempt = (String, [u8; 32]);

pub struct Authenticator {
    accounts: Arc<dyn Registry>,
    oidc: Option<Oidc>,
    throttle: throttle::Throttle,
    argon2: Semaphore,
    /// Verifications running now, by (user, password digest): a burst of
    /// requests with the same credentials waits for one check.
    pending: Mutex<HashMap<Attempt, Arc<OnceCell<bool>>>>,
    remembered: Mutex<HashMap<String, Remembered>>,
    cache_key: [u8; 32],
    token_logins: Mutex<HashMap<String, Instant>>,
    sessions: session::Sessions,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned map only means a check panicked; its entries are still valid.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Authenticator {
    pub fn new(accounts: Arc<dyn Registry>, oidc: Option<Oidc>, policy: LockoutPolicy) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut cache_key = [0u8; 32];
        cache_key.copy_from_slice(random_text(32).as_bytes());
        Authenticator {
            accounts,
            oidc,
            throttle: throttle::Throttle::new(policy),
            argon2: Semaphore::new(cores),
            pending: Mutex::new(HashMap::new()),
            remembered: Mutex::new(HashMap::new()),
            cache_key,
            token_logins: Mutex::new(HashMap::new()),
            sessions: session::Sessions::new(SessionPolicy::default()),
        }
    }

    /// Browser sessions live as `policy` says (30 minutes idle, 12 hours at
    /// most by default).
    pub fn with_session_policy(mut self, policy: SessionPolicy) -> Self {
        self.sessions = session::Sessions::new(policy);
        self
    }

    /// Opens a browser session for `user`, whose password was just verified.
    pub async fn open_session(&self, user: &str) -> Result<NewSession, Refusal> {
        let account = self
            .accounts
            .user(user)
            .await
            .map_err(|e| Refusal::Unavailable(e.to_string()))?
            .filter(|u| !u.disabled)
            .ok_or(Refusal::Invalid {
                claimed: Some(user.to_string()),
                delay: Duration::ZERO,
            })?;
        Ok(self.sessions.open(user, &account.password_hash))
    }

    /// The principal of browser session `id`, the session's CSRF token, and
    /// whether its password was given recently (`SessionPolicy::confirmed_for`).
    /// A session whose user was disabled, removed or given a new password
    /// since login is ended. An unknown id is not counted as a failure: it is
    /// far too long to guess, and a restart leaves stale cookies behind.
    pub async fn session(&self, id: &str) -> Result<(Principal, String, bool), Refusal> {
        let gone = || Refusal::Invalid {
            claimed: None,
            delay: Duration::ZERO,
        };
        let live = self.sessions.touch(id).ok_or_else(gone)?;
        let account = self
            .accounts
            .user(&live.user)
            .await
            .map_err(|e| Refusal::Unavailable(e.to_string()))?;
        match account {
            Some(u) if !u.disabled && session::same_credential(&live, &u.password_hash) => Ok((
                Principal::User {
                    name: u.name,
                    role: u.role,
                    read_only: false,
                },
                live.csrf,
                live.recent,
            )),
            _ => {
                self.sessions.close_user(&live.user);
                Err(gone())
            }
        }
    }

    /// Records that browser session `id`'s user, `user`, just gave their
    /// password again (checked by the caller); whether the session is live
    /// and `user`'s.
    pub fn confirm_session(&self, id: &str, user: &str) -> bool {
        self.sessions.confirm(id, user)
    }

    /// Ends browser session `id` (logout); returns its user.
    pub fn close_session(&self, id: &str) -> Option<String> {
        self.sessions.close(id)
    }

    /// Lockouts begun since start (users and addresses), for `/metrics`.
    pub fn lockouts(&self) -> u64 {
        self.throttle.lockouts()
    }

    /// Time left of a lockout on this user or address, if either is locked.
    pub fn locked(&self, user: Option<&str>, source: Option<IpAddr>) -> Option<Duration> {
        self.throttle.locked(&keys(user, source))
    }

    /// Checks credentials from `source`.
    pub async fn authenticate(
        &self,
        secret: Secret<'_>,
        source: Option<IpAddr>,
    ) -> Result<Verified, Refusal> {
        match secret {
            Secret::Password { user, password } => self.password(user, password, source).await,
            Secret::Bearer(text) => self.bearer(text.trim(), source).await,
        }
    }

    async fn password(
        &self,
        name: &str,
        password: &str,
        source: Option<IpAddr>,
    ) -> Result<Verified, Refusal> {
        let keys = keys(Some(name), source);
        if let Some(retry_after) = self.throttle.locked(&keys) {
            return Err(Refusal::Locked { retry_after });
        }
        if name.is_empty() || name.len() > MAX_USER_LEN || password.len() > MAX_PASSWORD_LEN {
            return Err(self.invalid(&keys, Some(name)));
        }
        let user = self
            .accounts
            .user(name)
            .await
            .map_err(|e| Refusal::Unavailable(e.to_string()))?;
        let digest = self.digest(password);
        let user = user.filter(|u| !u.disabled);
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        if let Some(u) = &user
            && self.remembers(name, &u.password_hash, &digest)
        {
            self.throttle.succeed(&keys);
            return Ok(user_verified(u, false));
        }
        // One verification for concurrent attempts with the same credentials.
        let cell = lock(&self.pending)
            .entry((name.to_string(), digest))
            .or_default()
            .clone();
        let outcome = cell
            .get_or_try_init(|| self.verify(hash.clone(), password, &keys, source))
            .await
            .copied();
        lock(&self.pending).remove(&(name.to_string(), digest));
        match (outcome, user) {
            (Ok(true), Some(u)) => {
                self.throttle.succeed(&keys);
                lock(&self.remembered).insert(
                    name.to_string(),
                    (u.password_hash.clone(), digest, Instant::now()),
                );
                Ok(user_verified(&u, true))
            }
            (Ok(_), _) => Err(Refusal::Invalid {
                claimed: Some(name.to_string()),
                delay: self.throttle.delay(&keys),
            }),
            (Err(refusal), _) => Err(refusal),
        }
    }

    /// Counts the attempt, then runs argon2 (against a dummy hash when the
    /// user is unknown or disabled, so both take the same time).
    async fn verify(
        &self,
        hash: Option<String>,
        password: &str,
        keys: &[String],
        source: Option<IpAddr>,
    ) -> Result<bool, Refusal> {
        let _slot = match source {
            Some(ip) => Some(self.throttle.enter(ip).ok_or(Refusal::Busy)?),
            None => None,
        };
        self.throttle
            .begin(keys)
            .map_err(|retry_after| Refusal::Locked { retry_after })?;
        let _permit = self
            .argon2
            .acquire()
            .await
            .map_err(|_| Refusal::Unavailable("shutting down".into()))?;
        let password = password.to_string();
        tokio::task::spawn_blocking(move || match hash {
            Some(h) => verify_password(&h, &password),
            None => {
                verify_dummy(&password);
                false
            }
        })
        .await
        .map_err(|e| Refusal::Unavailable(e.to_string()))
    }

    /// A token or JWT is checked before any lockout applies: its secret is
    /// far too long to guess, and a valid one proves its holder even while
    /// strangers at the same address are locked out. Only failures meet the
    /// lockout.
    async fn bearer(&self, text: &str, source: Option<IpAddr>) -> Result<Verified, Refusal> {
        let keys = keys(None, source);
        let refuse = |claimed: Option<String>, owner: Option<String>| {
            if let Some(retry_after) = self.throttle.locked(&keys) {
                return Refusal::Locked { retry_after };
            }
            self.throttle.fail(&keys);
            if let Some(owner) = owner {
                self.throttle.fail(&[format!("user:{owner}")]);
            }
            self.invalid_counted(&keys, claimed)
        };
        let Some((id, secret)) = parse_token(text) else {
            if let Some(oidc) = &self.oidc
                && Oidc::looks_like_jwt(text)
                && let Some(principal) = oidc.principal(text).await
            {
                let key = format!(
                    "oidc:{}",
                    custos_core::credentials::sha256_hex(text.as_bytes())
                );
                return Ok(Verified {
                    principal,
                    method: "OpenID Connect token".into(),
                    first_use: self.first_token_use(key),
                });
            }
            return Err(refuse(None, None));
        };
        let token = self
            .accounts
            .token(id)
            .await
            .map_err(|e| Refusal::Unavailable(e.to_string()))?;
        let Some(token) = token else {
            return Err(refuse(None, None));
        };
        if !token_secret_matches(&token, secret) || token.revoked || token.expires <= now_unix() {
            return Err(refuse(Some(token.user.clone()), Some(token.user)));
        }
        let user = self
            .accounts
            .user(&token.user)
            .await
            .map_err(|e| Refusal::Unavailable(e.to_string()))?;
        let Some(user) = user.filter(|u| !u.disabled) else {
            return Err(refuse(Some(token.user), None));
        };
        Ok(Verified {
            principal: Principal::User {
                name: user.name,
                role: user.role,
                read_only: token.read_only,
            },
            method: format!("API token {id}"),
            first_use: self.first_token_use(format!("token:{id}")),
        })
    }

    /// A refusal for an attempt that never reached argon2: counted now.
    fn invalid(&self, keys: &[String], claimed: Option<&str>) -> Refusal {
        self.throttle.fail(keys);
        self.invalid_counted(keys, claimed.map(str::to_string))
    }

    fn invalid_counted(&self, keys: &[String], claimed: Option<String>) -> Refusal {
        Refusal::Invalid {
            // A name no user can have is not recorded: a stranger could
            // otherwise write a megabyte into the audit trail per attempt.
            claimed: claimed.filter(|name| name.len() <= MAX_USER_LEN),
            delay: self.throttle.delay(keys),
        }
    }

    fn remembers(&self, name: &str, hash: &str, digest: &[u8; 32]) -> bool {
        lock(&self.remembered).get(name).is_some_and(|(h, d, at)| {
            h == hash && at.elapsed() < CACHE_TTL && constant_time_eq(d, digest)
        })
    }

    fn digest(&self, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.cache_key);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Whether `key` (a token or JWT) was not used within [`CACHE_TTL`].
    fn first_token_use(&self, key: String) -> bool {
        let mut seen = lock(&self.token_logins);
        if seen.len() > 10_000 {
            seen.retain(|_, at| at.elapsed() < CACHE_TTL);
        }
        let recent = seen.get(&key).is_some_and(|at| at.elapsed() < CACHE_TTL);
        if !recent {
            seen.insert(key, Instant::now());
        }
        !recent
    }
}

/// A user whose password verified.
fn user_verified(user: &custos_core::User, first_use: bool) -> Verified {
    Verified {
        principal: Principal::User {
            name: user.name.clone(),
            role: user.role,
            read_only: false,
        },
        method: "password verified".into(),
        first_use,
    }
}

/// The throttling keys of an attempt.
fn keys(user: Option<&str>, source: Option<IpAddr>) -> Vec<String> {
    let mut keys = Vec::with_capacity(2);
    if let Some(ip) = source {
        keys.push(format!("ip:{ip}"));
    }
    if let Some(u) = user.filter(|u| !u.is_empty() && u.len() <= MAX_USER_LEN) {
        keys.push(format!("user:{u}"));
    }
    keys
}
