//! Browser sessions: after a password login, a random id in a cookie stands
//! for the user. Only SHA-256 of the id is kept (a memory dump does not hand
//! out live sessions), with an idle and an absolute timeout; a session ends
//! at logout, when its user is disabled or removed, or when the password
//! changes. Each session has its own CSRF token, which state-changing
//! requests made with the cookie must echo.
//!
//! Sessions live in this node's memory: behind a load balancer, a browser
//! needs to come back to the same node (sticky sessions), and a restart logs
//! everyone out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use custos_core::credentials::{constant_time_eq, random_text, sha256_hex};

/// How long sessions live.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    /// Ended after this long without a request.
    pub idle: Duration,
    /// Ended this long after login, however active.
    pub absolute: Duration,
    /// Changes to who may do what (users, tokens, peers) made with the
    /// session need its password given this recently (at login, or again
    /// by `confirm`): a session left open on an unattended workstation, or
    /// stolen, cannot make itself a lasting way in.
    pub confirmed_for: Duration,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy {
            idle: Duration::from_secs(30 * 60),
            absolute: Duration::from_secs(12 * 3600),
            confirmed_for: Duration::from_secs(10 * 60),
        }
    }
}

/// Most sessions held at once; past it the least recently used goes.
pub const MAX_SESSIONS: usize = 10_000;

/// Most sessions one user holds; a new login past it ends that user's least
/// recently used one, so one account logging in in a loop cannot push
/// everyone else's sessions out of the map.
pub const MAX_SESSIONS_PER_USER: usize = 16;

/// A session just opened: the cookie value (shown once) and its CSRF token.
pub struct NewSession {
    pub id: String,
    pub csrf: String,
}

struct Session {
    user: String,
    /// SHA-256 of the user's password hash at login: a new password ends it.
    credential: String,
    csrf: String,
    created: Instant,
    last: Instant,
    /// When its password was last given (login, `confirm`).
    confirmed: Instant,
}

/// A live session's user and CSRF token.
pub struct SessionUser {
    pub user: String,
    pub credential: String,
    pub csrf: String,
    /// Its password was given within [`SessionPolicy::confirmed_for`].
    pub recent: bool,
}

pub(crate) struct Sessions {
    policy: SessionPolicy,
    by_hash: Mutex<HashMap<String, Session>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned map only means a request panicked; its entries are still valid.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sessions {
    pub(crate) fn new(policy: SessionPolicy) -> Sessions {
        Sessions {
            policy,
            by_hash: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn open(&self, user: &str, password_hash: &str) -> NewSession {
        let id = random_text(43);
        let csrf = random_text(43);
        let now = Instant::now();
        let mut map = lock(&self.by_hash);
        let (held, oldest_own) = map.iter().filter(|(_, s)| s.user == user).fold(
            (0, None::<(&String, Instant)>),
            |(n, oldest), (k, s)| {
                let older = oldest.is_none_or(|(_, last)| s.last < last);
                (n + 1, if older { Some((k, s.last)) } else { oldest })
            },
        );
        if held >= MAX_SESSIONS_PER_USER
            && let Some(key) = oldest_own.map(|(k, _)| k.clone())
        {
            map.remove(&key);
        }
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| self.live(s, now));
        }
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            sha256_hex(id.as_bytes()),
            Session {
                user: user.to_string(),
                credential: sha256_hex(password_hash.as_bytes()),
                csrf: csrf.clone(),
                created: now,
                last: now,
                confirmed: now,
            },
        );
        NewSession { id, csrf }
    }

    fn live(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last) < self.policy.idle
            && now.duration_since(s.created) < self.policy.absolute
    }

    /// The live session `id`, touched; an expired one is removed.
    pub(crate) fn touch(&self, id: &str) -> Option<SessionUser> {
        let key = sha256_hex(id.as_bytes());
        let now = Instant::now();
        let mut map = lock(&self.by_hash);
        let live = map.get(&key).is_some_and(|s| self.live(s, now));
        if !live {
            map.remove(&key);
            return None;
        }
        let s = map.get_mut(&key)?;
        s.last = now;
        Some(SessionUser {
            user: s.user.clone(),
            credential: s.credential.clone(),
            csrf: s.csrf.clone(),
            recent: now.duration_since(s.confirmed) < self.policy.confirmed_for,
        })
    }

    /// Marks session `id`'s password as given just now by `user`; whether
    /// it is live and theirs.
    pub(crate) fn confirm(&self, id: &str, user: &str) -> bool {
        let now = Instant::now();
        let mut map = lock(&self.by_hash);
        match map.get_mut(&sha256_hex(id.as_bytes())) {
            Some(s) if self.live(s, now) && s.user == user => {
                s.confirmed = now;
                true
            }
            _ => false,
        }
    }

    /// Ends session `id`; returns its user.
    pub(crate) fn close(&self, id: &str) -> Option<String> {
        lock(&self.by_hash)
            .remove(&sha256_hex(id.as_bytes()))
            .map(|s| s.user)
    }

    /// Ends every session of `user`.
    pub(crate) fn close_user(&self, user: &str) {
        lock(&self.by_hash).retain(|_, s| s.user != user);
    }
}

/// Whether `password_hash` is the one the session was opened with.
pub(crate) fn same_credential(live: &SessionUser, password_hash: &str) -> bool {
    constant_time_eq(
        live.credential.as_bytes(),
        sha256_hex(password_hash.as_bytes()).as_bytes(),
    )
}

/// Whether the CSRF token a request echoed is the session's.
pub fn csrf_matches(expected: &str, presented: &str) -> bool {
    constant_time_eq(expected.as_bytes(), presented.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_end_when_idle_too_long_or_too_old_or_closed() {
        let s = Sessions::new(SessionPolicy {
            idle: Duration::from_millis(200),
            absolute: Duration::from_millis(500),
            ..SessionPolicy::default()
        });
        let a = s.open("rad", "h");
        assert_eq!(s.touch(&a.id).unwrap().user, "rad");
        assert!(s.touch("not-a-session").is_none());
        // Kept alive by requests, until the absolute limit.
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(100));
            assert!(s.touch(&a.id).is_some());
        }
        std::thread::sleep(Duration::from_millis(150));
        assert!(s.touch(&a.id).is_none(), "absolute timeout");
        let b = s.open("rad", "h");
        std::thread::sleep(Duration::from_millis(250));
        assert!(s.touch(&b.id).is_none(), "idle timeout");
        let c = s.open("rad", "h");
        assert_eq!(s.close(&c.id).as_deref(), Some("rad"));
        assert!(s.touch(&c.id).is_none(), "logged out");
    }

    #[test]
    fn a_session_is_recent_after_login_or_confirmation_only() {
        let s = Sessions::new(SessionPolicy {
            confirmed_for: Duration::from_millis(150),
            ..SessionPolicy::default()
        });
        let a = s.open("boss", "h");
        assert!(s.touch(&a.id).unwrap().recent, "just logged in");
        std::thread::sleep(Duration::from_millis(200));
        assert!(!s.touch(&a.id).unwrap().recent, "a while ago");
        assert!(!s.confirm(&a.id, "rad"), "another user's password");
        assert!(!s.touch(&a.id).unwrap().recent);
        assert!(s.confirm(&a.id, "boss"));
        assert!(s.touch(&a.id).unwrap().recent, "confirmed");
        assert!(!s.confirm("not-a-session", "boss"));
    }

    #[test]
    fn the_map_is_bounded() {
        let s = Sessions::new(SessionPolicy::default());
        let first = s.open("u", "h");
        // Many users (one alone is held to MAX_SESSIONS_PER_USER).
        for i in 0..MAX_SESSIONS {
            s.open(&format!("u{i}"), "h");
        }
        assert_eq!(lock(&s.by_hash).len(), MAX_SESSIONS);
        assert!(s.touch(&first.id).is_none(), "the least recently used went");
    }

    #[test]
    fn one_user_holds_a_bounded_number_of_sessions() {
        let s = Sessions::new(SessionPolicy::default());
        let other = s.open("bob", "hash");
        let first = s.open("ann", "hash");
        let rest: Vec<_> = (0..MAX_SESSIONS_PER_USER + 5)
            .map(|_| s.open("ann", "hash"))
            .collect();
        let held = lock(&s.by_hash)
            .values()
            .filter(|x| x.user == "ann")
            .count();
        assert_eq!(held, MAX_SESSIONS_PER_USER);
        assert!(s.touch(&first.id).is_none(), "the oldest went");
        assert!(
            s.touch(&rest[rest.len() - 1].id).is_some(),
            "the newest stays"
        );
        assert!(s.touch(&other.id).is_some(), "another user's session stays");
    }

    #[test]
    fn csrf_tokens_compare_exactly() {
        assert!(csrf_matches("abc", "abc"));
        assert!(!csrf_matches("abc", "abd"));
        assert!(!csrf_matches("abc", ""));
    }
}
