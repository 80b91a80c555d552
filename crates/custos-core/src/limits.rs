//! Per-address shares of a limited resource (connections, checks in flight):
//! one source address must not take every slot of a front door. A slot is a
//! guard; dropping it gives the share back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// At most `per_address` slots at once for any one address.
#[derive(Clone)]
pub struct PerAddress {
    per_address: usize,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One slot of one address; released on drop.
pub struct AddressSlot {
    ip: IpAddr,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Counts stay plain numbers even if a holder panicked: keep using them.
fn lock(m: &Mutex<HashMap<IpAddr, usize>>) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PerAddress {
    pub fn new(per_address: usize) -> PerAddress {
        PerAddress {
            per_address: per_address.max(1),
            held: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A slot for `ip`, or `None` when it holds its share already.
    pub fn try_enter(&self, ip: IpAddr) -> Option<AddressSlot> {
        let mut held = lock(&self.held);
        let n = held.entry(ip).or_insert(0);
        if *n >= self.per_address {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            ip,
            held: self.held.clone(),
        })
    }

    /// Slots `ip` holds now.
    pub fn held_by(&self, ip: IpAddr) -> usize {
        lock(&self.held).get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut held = lock(&self.held);
        if let Some(n) = held.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_share() {
        let limits = PerAddress::new(2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.1".parse().unwrap();
        let one = limits.try_enter(a).unwrap();
        let _two = limits.try_enter(a).unwrap();
        assert!(limits.try_enter(a).is_none());
        assert!(limits.try_enter(b).is_some());
        drop(one);
        assert_eq!(limits.held_by(a), 1);
        assert!(limits.try_enter(a).is_some());
    }
}
