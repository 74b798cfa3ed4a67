//! [`Announcements`]: the announced Puts of one process, and the digests condemned for
//! deletion, for the adapters whose store is opened by one process only (the embedded and
//! in-memory ones). Both sit behind one lock, so an announcement and a condemnation are
//! atomic with respect to each other: a condemnation sees every announcement made before
//! it, and every announcement after it is refused until the deletion is finalized. A
//! store shared by many processes keeps them where every process sees them instead
//! (ADR 0004).

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
    condemned: HashSet<ChunkDigest>,
}

impl Announcements {
    /// Announce `digest`, unless it is condemned (`None`).
    pub fn announce(&self, digest: ChunkDigest) -> Option<AnnouncementId> {
        let mut state = self.lock();
        if state.condemned.contains(&digest) {
            return None;
        }
        state.next += 1;
        let id = AnnouncementId(state.next);
        state.live.insert(id, digest);
        Some(id)
    }

    /// Mark as condemned each of `digests` that is neither announced nor condemned
    /// already; returns those.
    pub fn condemn(&self, digests: impl IntoIterator<Item = ChunkDigest>) -> Vec<ChunkDigest> {
        let mut state = self.lock();
        let announced: HashSet<ChunkDigest> = state.live.values().copied().collect();
        digests
            .into_iter()
            .filter(|digest| !announced.contains(digest) && state.condemned.insert(*digest))
            .collect()
    }

    /// Whether `digest` is condemned.
    pub fn is_condemned(&self, digest: &ChunkDigest) -> bool {
        self.lock().condemned.contains(digest)
    }

    /// Lift the condemnation of `digests` (finalized, or never stored).
    pub fn absolve(&self, digests: &[ChunkDigest]) {
        let mut state = self.lock();
        for digest in digests {
            state.condemned.remove(digest);
        }
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
        let a = set.announce(digest).expect("announced");
        let b = set.announce(digest).expect("announced");
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

    #[test]
    fn a_condemned_digest_cannot_be_announced_and_an_announced_one_is_not_condemned() {
        let set = Announcements::default();
        let (busy, idle) = (ChunkDigest::of(b"busy"), ChunkDigest::of(b"idle"));
        let held = set.announce(busy).expect("announced");
        assert_eq!(set.condemn([busy, idle, idle]), vec![idle]);
        assert!(set.announce(idle).is_none());
        assert!(set.condemn([idle]).is_empty(), "condemned once");
        set.withdraw(held);
        set.absolve(&[idle]);
        assert!(set.announce(idle).is_some());
        assert!(!set.is_condemned(&idle));
    }
}
