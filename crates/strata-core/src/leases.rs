//! [`LocalLeases`]: leases held in one process's memory, for the adapters whose store is
//! opened by one process only (the embedded and in-memory ones): there, the process *is*
//! the cluster, and a crashed holder's leases vanish with it. A store shared by many
//! processes keeps leases where all of them see them, with expiry by its own clock.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Named leases, each held by at most one holder until it expires.
#[derive(Debug, Default)]
pub struct LocalLeases {
    held: Mutex<HashMap<String, (String, Instant)>>,
}

impl LocalLeases {
    /// Take or renew `name` for `holder` until `ttl` from now; false if another holder's
    /// lease on it has not expired.
    pub fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut held = self.lock();
        match held.get(name) {
            Some((other, until)) if other != holder && *until > now => false,
            _ => {
                held.insert(name.to_owned(), (holder.to_owned(), now + ttl));
                true
            }
        }
    }

    /// Give `name` up if `holder` holds it.
    pub fn release(&self, name: &str, holder: &str) {
        let mut held = self.lock();
        if held.get(name).is_some_and(|(h, _)| h == holder) {
            held.remove(name);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
