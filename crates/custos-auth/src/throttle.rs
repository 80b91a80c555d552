//! Failure counting, lockout and per-address concurrency for credential checks.
//!
//! Keys are `user:<name>` and `ip:<address>`. An attempt that will cost an
//! argon2 verification is counted *before* it runs, so a burst of concurrent
//! guesses cannot all slip in under the limit; a success clears its keys. The
//! map is bounded: names are attacker-chosen, so past [`MAX_TRACKED`] keys the
//! expired ones go first and then the least recently failed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};

use custos_core::limits::{AddressSlot, PerAddress};
use std::time::{Duration, Instant};

/// Most keys remembered at once.
pub const MAX_TRACKED: usize = 65_536;

/// Most credential checks in flight from one address at once.
pub const MAX_IN_FLIGHT_PER_ADDRESS: usize = 4;

#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    /// Failures on one key before it is locked.
    pub after: u32,
    /// How long a lock lasts (and how long failures are remembered).
    pub duration: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

pub(crate) struct Throttle {
    policy: LockoutPolicy,
    failures: Mutex<HashMap<String, Failures>>,
    in_flight: PerAddress,
    /// Lockouts begun (a user or address reaching the failure limit).
    lockouts: std::sync::atomic::AtomicU64,
}

/// A poisoned lock only means another check panicked; the counts are still
/// plain numbers, so keep using them.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Throttle {
    pub(crate) fn new(policy: LockoutPolicy) -> Throttle {
        Throttle {
            policy: LockoutPolicy {
                after: policy.after.max(1),
                duration: policy.duration,
            },
            failures: Mutex::new(HashMap::new()),
            in_flight: PerAddress::new(MAX_IN_FLIGHT_PER_ADDRESS),
            lockouts: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Lockouts begun since start.
    pub(crate) fn lockouts(&self) -> u64 {
        self.lockouts.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn live(&self, f: &Failures) -> bool {
        f.last.elapsed() < self.policy.duration
    }

    /// Time left of a lockout on any of `keys`.
    pub(crate) fn locked(&self, keys: &[String]) -> Option<Duration> {
        let map = lock(&self.failures);
        keys.iter()
            .filter_map(|k| map.get(k))
            .filter(|f| f.count >= self.policy.after && self.live(f))
            .map(|f| self.policy.duration.saturating_sub(f.last.elapsed()))
            .max()
    }

    /// Counts an attempt on every key before it is verified; `Err` with the
    /// time left when one of them is locked already.
    pub(crate) fn begin(&self, keys: &[String]) -> Result<(), Duration> {
        let mut map = lock(&self.failures);
        let mut wait = None;
        for k in keys {
            if let Some(f) = map.get(k)
                && f.count >= self.policy.after
                && self.live(f)
            {
                let left = self.policy.duration.saturating_sub(f.last.elapsed());
                wait = Some(wait.map_or(left, |w: Duration| w.max(left)));
            }
        }
        if let Some(w) = wait {
            return Err(w);
        }
        for k in keys {
            self.bump(&mut map, k);
        }
        Ok(())
    }

    /// Counts a failure on `keys` for an attempt that `begin` did not count
    /// (one refused without argon2: a bad token, the owner of a token that did
    /// not match).
    pub(crate) fn fail(&self, keys: &[String]) {
        let mut map = lock(&self.failures);
        for k in keys {
            self.bump(&mut map, k);
        }
    }

    fn bump(&self, map: &mut HashMap<String, Failures>, key: &str) {
        if !map.contains_key(key) && map.len() >= MAX_TRACKED {
            self.evict(map);
        }
        let now = Instant::now();
        let f = map.entry(key.to_string()).or_insert(Failures {
            count: 0,
            last: now,
        });
        if !self.live(f) {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
        if f.count == self.policy.after {
            self.lockouts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Makes room: expired entries first, then the least recently failed
    /// tenth of those not locked out — a flood of cheap failures from many
    /// addresses must not clear a user's lockout — and only when nearly every
    /// entry is a lockout, the least recent of all.
    fn evict(&self, map: &mut HashMap<String, Failures>) {
        map.retain(|_, f| self.live(f));
        if map.len() < MAX_TRACKED {
            return;
        }
        let after = self.policy.after;
        let mut ages: Vec<Instant> = map
            .values()
            .filter(|f| f.count < after)
            .map(|f| f.last)
            .collect();
        let spare_locked = ages.len() < map.len() / 10;
        if spare_locked {
            ages = map.values().map(|f| f.last).collect();
        }
        let cut = ages.len() / 10;
        let (_, oldest_kept, _) = ages.select_nth_unstable(cut);
        let oldest_kept = *oldest_kept;
        map.retain(|_, f| f.last >= oldest_kept || (!spare_locked && f.count >= after));
    }

    /// Clears the keys of a verified attempt.
    pub(crate) fn succeed(&self, keys: &[String]) {
        let mut map = lock(&self.failures);
        for k in keys {
            map.remove(k);
        }
    }

    /// The slow-down to impose after a failure on `keys`: none for the first
    /// half of the allowance, then 250 ms doubling up to 4 s.
    pub(crate) fn delay(&self, keys: &[String]) -> Duration {
        let map = lock(&self.failures);
        let worst = keys
            .iter()
            .filter_map(|k| map.get(k))
            .map(|f| f.count)
            .max()
            .unwrap_or(0);
        let free = self.policy.after / 2;
        if worst <= free {
            Duration::ZERO
        } else {
            Duration::from_millis(250u64 << (worst - free - 1).min(4))
        }
    }

    /// Takes one of the address's check slots, or `None` when it has
    /// [`MAX_IN_FLIGHT_PER_ADDRESS`] in flight.
    pub(crate) fn enter(&self, ip: IpAddr) -> Option<AddressSlot> {
        self.in_flight.try_enter(ip)
    }

    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        lock(&self.failures).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> Throttle {
        Throttle::new(LockoutPolicy {
            after: 3,
            duration: Duration::from_secs(60),
        })
    }

    #[test]
    fn attempts_count_before_verification_and_lock() {
        let t = throttle();
        let keys = vec!["user:a".to_string()];
        // Three attempts in flight at once are all counted...
        for _ in 0..3 {
            assert!(t.begin(&keys).is_ok());
        }
        // ...so a fourth is refused before any of them finished.
        assert!(t.begin(&keys).is_err());
        assert!(t.locked(&keys).is_some());
        // Another user is not affected.
        assert!(t.begin(&["user:b".to_string()]).is_ok());
    }

    #[test]
    fn success_clears() {
        let t = throttle();
        let keys = vec!["user:a".to_string(), "ip:127.0.0.1".to_string()];
        t.begin(&keys).unwrap();
        t.begin(&keys).unwrap();
        t.succeed(&keys);
        assert_eq!(t.tracked(), 0);
        assert_eq!(t.delay(&keys), Duration::ZERO);
    }

    #[test]
    fn delays_grow_after_half_the_allowance() {
        let t = Throttle::new(LockoutPolicy {
            after: 10,
            duration: Duration::from_secs(60),
        });
        let keys = vec!["ip:127.0.0.1".to_string()];
        for _ in 0..5 {
            t.begin(&keys).unwrap();
        }
        assert_eq!(t.delay(&keys), Duration::ZERO);
        t.begin(&keys).unwrap();
        assert_eq!(t.delay(&keys), Duration::from_millis(250));
        t.begin(&keys).unwrap();
        assert_eq!(t.delay(&keys), Duration::from_millis(500));
    }

    /// A flood of cheap failures (bad tokens from many addresses) fills the
    /// map; a user locked out meanwhile stays locked out.
    #[test]
    fn a_flood_of_failures_does_not_clear_a_lockout() {
        let t = throttle();
        let alice = vec!["user:alice".to_string()];
        for _ in 0..3 {
            t.fail(&alice);
        }
        assert!(t.locked(&alice).is_some());
        for i in 0..(MAX_TRACKED + 5_000) {
            t.fail(&[format!("ip:10.0.{}.{}", i / 256, i % 256)]);
        }
        assert!(t.tracked() <= MAX_TRACKED, "{}", t.tracked());
        assert!(t.locked(&alice).is_some(), "the lockout was evicted");
    }

    #[test]
    fn the_map_is_bounded() {
        let t = throttle();
        for i in 0..(MAX_TRACKED + 5_000) {
            t.begin(&[format!("user:n{i}")]).unwrap();
        }
        assert!(t.tracked() <= MAX_TRACKED, "{}", t.tracked());
        // The newest names are still remembered.
        let newest = vec![format!("user:n{}", MAX_TRACKED + 4_999)];
        t.begin(&newest).unwrap();
        t.begin(&newest).unwrap();
        assert!(t.locked(&newest).is_some());
    }

    #[test]
    fn in_flight_per_address() {
        let t = throttle();
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let slots: Vec<_> = (0..MAX_IN_FLIGHT_PER_ADDRESS)
            .map(|_| t.enter(ip).unwrap())
            .collect();
        assert!(t.enter(ip).is_none());
        assert!(t.enter("127.0.0.8".parse().unwrap()).is_some());
        drop(slots);
        assert!(t.enter(ip).is_some());
    }
}
