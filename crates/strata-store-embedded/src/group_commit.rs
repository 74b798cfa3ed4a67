//! The thread that owns a redb database's writes, shared by the metadata store and the
//! chunk index: requests arrive on a channel, the thread takes every request queued at
//! the moment as one group, applies the group in one transaction and answers each request
//! only after the commit. Dropping the handle closes the channel; the thread finishes its
//! group and exits, and the drop waits for it, so the database file is released.
//!
//! A panic while a group is committed is caught: that group's requests are dropped
//! unanswered (their callers see the channel closed, an error), its transaction is dropped
//! uncommitted, and the thread goes on with the next group. Before, the thread died and
//! every later write failed until a restart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use redb::Database;
use strata_core::ports::StoreError;

/// Most requests applied in one group commit.
const MAX_GROUP: usize = 512;

/// A running group-commit thread and the channel to it.
pub(crate) struct GroupCommitThread<R> {
    requests: Option<mpsc::Sender<R>>,
    thread: Option<JoinHandle<()>>,
    name: &'static str,
    /// Groups handed to `commit` so far (what grouping saves is requests ÷ groups).
    groups: Arc<AtomicU64>,
}

impl<R: Send + 'static> GroupCommitThread<R> {
    /// Start thread `name`, which calls `commit` with each group of requests.
    pub(crate) fn spawn(
        name: &'static str,
        db: Arc<Database>,
        mut commit: impl FnMut(&Database, Vec<R>) + Send + 'static,
    ) -> Result<Self, StoreError> {
        let (sender, requests) = mpsc::channel::<R>();
        let groups = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&groups);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Some(group) = next_group(&requests) {
                    counted.fetch_add(1, Ordering::Relaxed);
                    // Unwind safety: the group is moved in and dropped by the unwinding; the
                    // database is only reached through transactions, which a panic drops
                    // (uncommitted); what `commit` keeps across groups must stay usable
                    // after a panic (the chunk committer's locks ignore poisoning).
                    let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        commit(&db, group);
                    }));
                    if committed.is_err() {
                        tracing::error!(
                            thread = name,
                            "a group commit panicked; its requests failed, the thread goes on"
                        );
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start {name}: {e}")))?;
        Ok(Self {
            requests: Some(sender),
            thread: Some(thread),
            name,
            groups,
        })
    }

    /// How many groups the thread has taken so far.
    pub(crate) fn groups(&self) -> u64 {
        self.groups.load(Ordering::Relaxed)
    }

    /// Queue `request`; fails only if the thread has stopped.
    pub(crate) fn send(&self, request: R) -> Result<(), StoreError> {
        self.requests
            .as_ref()
            .and_then(|requests| requests.send(request).ok())
            .ok_or_else(|| StoreError::Backend(format!("{} has stopped", self.name)))
    }
}

/// The next group: wait for one request, then take whatever else is queued (up to
/// [`MAX_GROUP`]). `None` once every sender is gone.
fn next_group<R>(requests: &mpsc::Receiver<R>) -> Option<Vec<R>> {
    let mut group = vec![requests.recv().ok()?];
    while group.len() < MAX_GROUP {
        match requests.try_recv() {
            Ok(next) => group.push(next),
            Err(_) => break,
        }
    }
    Some(group)
}

impl<R> Drop for GroupCommitThread<R> {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop; wait so the database is released.
        self.requests.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(thread = self.name, "a group-commit thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request of the test committer: whether to panic, and where to answer.
    type Request = (bool, mpsc::Sender<u32>);

    #[test]
    fn a_panicking_group_fails_its_requests_and_the_thread_carries_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Arc::new(Database::create(dir.path().join("db.redb")).expect("db"));
        let thread = GroupCommitThread::spawn("test-committer", db, |_, group: Vec<Request>| {
            for (panic, answer) in group {
                assert!(!panic, "injected panic");
                let _ = answer.send(1);
            }
        })
        .expect("spawn");
        let (answer, answered) = mpsc::channel();
        thread.send((true, answer)).expect("send");
        // Its request is dropped unanswered: the caller sees an error, not a hang.
        assert!(answered.recv().is_err());
        for _ in 0..3 {
            let (answer, answered) = mpsc::channel();
            thread.send((false, answer)).expect("still running");
            assert_eq!(answered.recv(), Ok(1));
        }
    }
}
