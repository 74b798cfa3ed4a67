//! [`Announcements`]: the announced Puts of one process, for the adapters whose store is
//! opened by one process only (the embedded and in-memory ones). A store shared by many
//! processes keeps them where every process sees them instead (ADR 0004).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use strata_types::ChunkDigest;

use crate::ports::AnnouncementId;

/// Announced digests, by announcement.
#[derive(Debug, Default)]
pub struct Announcements {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    live: HashMap<AnnouncementId, ChunkDigest>,
}

impl Announcements {
    /// Announce `digest`.
    pub fn announce(&self, digest: ChunkDigest) -> AnnouncementId {
        let mut state = self.lock();
        state.next += 1;
        let id = AnnouncementId(state.next);
        state.live.insert(id, digest);
        id
    }

    /// Withdraw an announcement (a second withdrawal does nothing).
    pub fn withdraw(&self, id: AnnouncementId) {
        self.lock().live.remove(&id);
    }

    /// The digests announced and not withdrawn.
    pub fn digests(&self) -> HashSet<ChunkDigest> {
        self.lock().live.values().copied().collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is one statement: consistent even after a panicking holder.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_announcement_counts_until_withdrawn() {
        let set = Announcements::default();
        let digest = ChunkDigest::of(b"x");
        let a = set.announce(digest);
        let b = set.announce(digest);
        set.withdraw(a);
        assert!(set.digests().contains(&digest), "b still announces it");
        set.withdraw(a);
        assert!(
            set.digests().contains(&digest),
            "withdrawing twice is harmless"
        );
        set.withdraw(b);
        assert!(set.digests().is_empty());
    }
}
