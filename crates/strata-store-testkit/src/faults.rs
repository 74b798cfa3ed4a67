//! Fault-injecting wrappers around any adapter of the two ports, and the gates that make
//! races deterministic.
//!
//! A [`Faults`] handle is shared by the test and the wrappers ([`FaultyMetadata`],
//! [`FaultyChunks`]). Each call of an operation ([`Op`]) is counted, and a rule for its Nth
//! call can
//! - fail it before it reaches the wrapped store ([`Faults::fail`]): nothing happened;
//! - fail it after the wrapped store did it ([`Faults::fail_after`]): the effect is there,
//!   the caller is told otherwise (a lost reply, a crash after commit);
//! - hold it at a [`Gate`] before it reaches the store ([`Faults::gate`]) or after the store
//!   answered and before the caller sees the answer ([`Faults::gate_after`]), until the test
//!   opens the gate. [`Gate::reached`] tells the test the call is parked there.
//!
//! The wrappers delegate everything else unchanged, so a test of the service over
//! `FaultyMetadata<RedbMetadataStore>` exercises the real adapter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use strata_core::block_map::NodeHash;
use strata_core::encryption::KeyRecord;
use strata_core::ports::{
    Announced, AnnouncementId, BlockWrite, ChunkStore, CreateOutcome, GcView, MetadataStore,
    PendingWrites, RecordBlockError, RecordChange, Seal, SealError, Stamp, StoreError, StoredChunk,
};
use strata_core::snapshot::SnapshotRecord;
use strata_types::{AccountId, BlockIndex, ChunkDigest, SnapshotId};
use tokio::sync::watch;

/// An operation of either port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Op {
    CreateSnapshot,
    Snapshot,
    UpdateSnapshot,
    DeleteSnapshot,
    RecordBlock,
    /// Each page read ([`MetadataStore::pending_writes_page`]).
    PendingWrites,
    StageNodes,
    SealSnapshot,
    AnnouncePut,
    WithdrawPut,
    AcquireLease,
    ReleaseLease,
    Secret,
    CreateKey,
    Key,
    Keys,
    SetKeyEnabled,
    Nodes,
    ListSnapshots,
    GcView,
    DeleteNodes,
    DropPendingWrites,
    CondemnChunks,
    CondemnedChunks,
    FinalizeChunks,
    ForgetChunk,
    PutChunk,
    GetChunk,
    ListChunks,
    DeleteChunks,
}

/// A point where one call waits until the test lets it go.
#[derive(Debug, Clone)]
pub struct Gate {
    reached: watch::Sender<bool>,
    open: watch::Sender<bool>,
}

impl Gate {
    fn new() -> Self {
        Self {
            reached: watch::Sender::new(false),
            open: watch::Sender::new(false),
        }
    }

    /// Wait until the gated call is parked at the gate.
    pub async fn reached(&self) {
        let mut reached = self.reached.subscribe();
        // The sender lives in `self`: the wait can only end by the flag turning true.
        let _ = reached.wait_for(|r| *r).await;
    }

    /// Let the parked call (or the one still to come) through.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    async fn pass(&self) {
        self.reached.send_replace(true);
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|o| *o).await;
    }
}

enum Action {
    Fail(StoreError),
    FailAfter(StoreError),
    Gate(Gate),
    GateAfter(Gate),
}

struct Rule {
    op: Op,
    nth: usize,
    action: Action,
}

#[derive(Default)]
struct State {
    calls: HashMap<Op, usize>,
    rules: Vec<Rule>,
}

/// The test's handle on what the wrappers do. Clones share the same rules and counters.
#[derive(Clone, Default)]
pub struct Faults {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Faults")
    }
}

/// What a wrapper does with one call, decided when the call starts.
#[derive(Default)]
struct Plan {
    fail: Option<StoreError>,
    fail_after: Option<StoreError>,
    gate: Option<Gate>,
    gate_after: Option<Gate>,
}

impl Faults {
    /// No rules yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, op: Op, nth: usize, action: Action) {
        self.lock().rules.push(Rule { op, nth, action });
    }

    /// The `nth` call (1-based, counted from the wrapper's creation) of `op` fails with
    /// `error` before reaching the store.
    pub fn fail(&self, op: Op, nth: usize, error: StoreError) {
        self.add(op, nth, Action::Fail(error));
    }

    /// The `nth` call of `op` reaches the store, which does it; then `error` is returned.
    pub fn fail_after(&self, op: Op, nth: usize, error: StoreError) {
        self.add(op, nth, Action::FailAfter(error));
    }

    /// The `nth` call of `op` waits at the returned gate before reaching the store.
    pub fn gate(&self, op: Op, nth: usize) -> Gate {
        let gate = Gate::new();
        self.add(op, nth, Action::Gate(gate.clone()));
        gate
    }

    /// The `nth` call of `op` reaches the store, then waits at the returned gate before
    /// its answer is returned.
    pub fn gate_after(&self, op: Op, nth: usize) -> Gate {
        let gate = Gate::new();
        self.add(op, nth, Action::GateAfter(gate.clone()));
        gate
    }

    /// The next call of `op` (counted from now) waits at the returned gate.
    pub fn gate_next(&self, op: Op) -> Gate {
        let next = self.calls(op) + 1;
        self.gate(op, next)
    }

    /// How many calls of `op` started so far.
    pub fn calls(&self, op: Op) -> usize {
        self.lock().calls.get(&op).copied().unwrap_or(0)
    }

    fn plan(&self, op: Op) -> Plan {
        let mut state = self.lock();
        let count = state.calls.entry(op).or_insert(0);
        *count += 1;
        let nth = *count;
        let mut plan = Plan::default();
        for rule in state.rules.iter().filter(|r| r.op == op && r.nth == nth) {
            match &rule.action {
                Action::Fail(error) => plan.fail = Some(error.clone()),
                Action::FailAfter(error) => plan.fail_after = Some(error.clone()),
                Action::Gate(gate) => plan.gate = Some(gate.clone()),
                Action::GateAfter(gate) => plan.gate_after = Some(gate.clone()),
            }
        }
        plan
    }

    /// Run `call` under the rules for `op`; `lift` turns an injected storage error into
    /// the operation's own error type.
    async fn around<T, E>(
        &self,
        op: Op,
        lift: impl Fn(StoreError) -> E,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let plan = self.plan(op);
        if let Some(gate) = &plan.gate {
            gate.pass().await;
        }
        if let Some(error) = plan.fail {
            return Err(lift(error));
        }
        let outcome = call.await;
        if let Some(gate) = &plan.gate_after {
            gate.pass().await;
        }
        match plan.fail_after {
            Some(error) => Err(lift(error)),
            None => outcome,
        }
    }
}

fn same(error: StoreError) -> StoreError {
    error
}

/// A metadata store whose calls follow the rules of a [`Faults`] handle.
#[derive(Debug, Clone)]
pub struct FaultyMetadata<M> {
    inner: M,
    faults: Faults,
}

impl<M> FaultyMetadata<M> {
    /// Wrap `inner`.
    pub fn new(inner: M, faults: Faults) -> Self {
        Self { inner, faults }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &M {
        &self.inner
    }
}

impl<M: MetadataStore> MetadataStore for FaultyMetadata<M> {
    type Nodes = M::Nodes;

    async fn create_snapshot(&self, record: SnapshotRecord) -> Result<CreateOutcome, StoreError> {
        let call = self.inner.create_snapshot(record);
        self.faults.around(Op::CreateSnapshot, same, call).await
    }

    async fn snapshot(&self, id: &SnapshotId) -> Result<Option<SnapshotRecord>, StoreError> {
        let call = self.inner.snapshot(id);
        self.faults.around(Op::Snapshot, same, call).await
    }

    async fn update_snapshot(
        &self,
        id: &SnapshotId,
        change: RecordChange,
    ) -> Result<Option<SnapshotRecord>, StoreError> {
        let call = self.inner.update_snapshot(id, change);
        self.faults.around(Op::UpdateSnapshot, same, call).await
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> Result<bool, StoreError> {
        let call = self.inner.delete_snapshot(id);
        self.faults.around(Op::DeleteSnapshot, same, call).await
    }

    async fn record_block(&self, write: BlockWrite) -> Result<(), RecordBlockError> {
        let call = self.inner.record_block(write);
        self.faults
            .around(Op::RecordBlock, RecordBlockError::Store, call)
            .await
    }

    async fn pending_writes_page(
        &self,
        id: &SnapshotId,
        after: Option<BlockIndex>,
        limit: usize,
    ) -> Result<PendingWrites, StoreError> {
        let call = self.inner.pending_writes_page(id, after, limit);
        self.faults.around(Op::PendingWrites, same, call).await
    }

    async fn stage_nodes(
        &self,
        id: &SnapshotId,
        roots: Vec<NodeHash>,
        nodes: Vec<(NodeHash, Vec<u8>)>,
    ) -> Result<(), SealError> {
        let call = self.inner.stage_nodes(id, roots, nodes);
        self.faults
            .around(Op::StageNodes, SealError::Store, call)
            .await
    }

    async fn seal_snapshot(&self, seal: Seal) -> Result<(), SealError> {
        let call = self.inner.seal_snapshot(seal);
        self.faults
            .around(Op::SealSnapshot, SealError::Store, call)
            .await
    }

    async fn announce_put(&self, digest: ChunkDigest) -> Result<Announced, StoreError> {
        let call = self.inner.announce_put(digest);
        self.faults.around(Op::AnnouncePut, same, call).await
    }

    fn withdraw_put(&self, id: AnnouncementId) {
        // Cannot fail by contract: only counted.
        self.faults.plan(Op::WithdrawPut);
        self.inner.withdraw_put(id);
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let call = self.inner.acquire_lease(name, holder, ttl);
        self.faults.around(Op::AcquireLease, same, call).await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let call = self.inner.release_lease(name, holder);
        self.faults.around(Op::ReleaseLease, same, call).await
    }

    async fn secret(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let call = self.inner.secret(name, candidate);
        self.faults.around(Op::Secret, same, call).await
    }

    async fn create_key(&self, key: KeyRecord) -> Result<KeyRecord, StoreError> {
        let call = self.inner.create_key(key);
        self.faults.around(Op::CreateKey, same, call).await
    }

    async fn key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let call = self.inner.key(id);
        self.faults.around(Op::Key, same, call).await
    }

    async fn keys(&self, owner: Option<&AccountId>) -> Result<Vec<KeyRecord>, StoreError> {
        let call = self.inner.keys(owner);
        self.faults.around(Op::Keys, same, call).await
    }

    async fn set_key_enabled(
        &self,
        id: &str,
        enabled: bool,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let call = self.inner.set_key_enabled(id, enabled);
        self.faults.around(Op::SetKeyEnabled, same, call).await
    }

    fn nodes(&self) -> Result<Self::Nodes, StoreError> {
        // Synchronous: counted and failed, never gated.
        let plan = self.faults.plan(Op::Nodes);
        match plan.fail {
            Some(error) => Err(error),
            None => self.inner.nodes(),
        }
    }

    async fn list_snapshots(
        &self,
        owner: Option<&AccountId>,
    ) -> Result<Vec<SnapshotRecord>, StoreError> {
        let call = self.inner.list_snapshots(owner);
        self.faults.around(Op::ListSnapshots, same, call).await
    }

    async fn gc_view(&self) -> Result<GcView<Self::Nodes>, StoreError> {
        let call = self.inner.gc_view();
        self.faults.around(Op::GcView, same, call).await
    }

    async fn delete_nodes(
        &self,
        hashes: Vec<NodeHash>,
        stamped_before: Stamp,
    ) -> Result<usize, StoreError> {
        let call = self.inner.delete_nodes(hashes, stamped_before);
        self.faults.around(Op::DeleteNodes, same, call).await
    }

    async fn drop_pending_writes(&self, ids: Vec<SnapshotId>) -> Result<usize, StoreError> {
        let call = self.inner.drop_pending_writes(ids);
        self.faults.around(Op::DropPendingWrites, same, call).await
    }

    async fn condemn_chunks(
        &self,
        digests: Vec<ChunkDigest>,
        stamped_before: Stamp,
    ) -> Result<Vec<ChunkDigest>, StoreError> {
        let call = self.inner.condemn_chunks(digests, stamped_before);
        self.faults.around(Op::CondemnChunks, same, call).await
    }

    async fn condemned_chunks(&self) -> Result<Vec<ChunkDigest>, StoreError> {
        let call = self.inner.condemned_chunks();
        self.faults.around(Op::CondemnedChunks, same, call).await
    }

    async fn finalize_chunks(&self, digests: Vec<ChunkDigest>) -> Result<(), StoreError> {
        let call = self.inner.finalize_chunks(digests);
        self.faults.around(Op::FinalizeChunks, same, call).await
    }

    async fn forget_chunk(&self, digest: ChunkDigest) -> Result<(), StoreError> {
        let call = self.inner.forget_chunk(digest);
        self.faults.around(Op::ForgetChunk, same, call).await
    }
}

/// A chunk store whose calls follow the rules of a [`Faults`] handle.
#[derive(Debug, Clone)]
pub struct FaultyChunks<C> {
    inner: C,
    faults: Faults,
}

impl<C> FaultyChunks<C> {
    /// Wrap `inner`.
    pub fn new(inner: C, faults: Faults) -> Self {
        Self { inner, faults }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &C {
        &self.inner
    }
}

impl<C: ChunkStore> ChunkStore for FaultyChunks<C> {
    async fn put(&self, digest: ChunkDigest, data: Bytes) -> Result<(), StoreError> {
        let call = self.inner.put(digest, data);
        self.faults.around(Op::PutChunk, same, call).await
    }

    async fn get(&self, digest: ChunkDigest) -> Result<Option<Bytes>, StoreError> {
        let call = self.inner.get(digest);
        self.faults.around(Op::GetChunk, same, call).await
    }

    async fn delete(&self, digests: Vec<ChunkDigest>) -> Result<u64, StoreError> {
        let call = self.inner.delete(digests);
        self.faults.around(Op::DeleteChunks, same, call).await
    }

    async fn list(
        &self,
        after: Option<ChunkDigest>,
        limit: usize,
    ) -> Result<Vec<StoredChunk>, StoreError> {
        let call = self.inner.list(after, limit);
        self.faults.around(Op::ListChunks, same, call).await
    }
}
