//! [`PostgresMetadataStore`]: Strata's metadata port ([`strata_core::ports::MetadataStore`])
//! on PostgreSQL, so that several stateless `strata serve` nodes share one database
//! (ADR 0004, issue 11). Every SQL string of Strata is in this crate.
//!
//! # Schema (migrations/)
//! | table | key | value |
//! |---|---|---|
//! | `snapshots` | `id` | `owner` (for listings), `record`: the `SnapshotRecord` as JSON text (not `jsonb`, which refuses `\u0000`) |
//! | `client_tokens` | (`owner`, `token`: its UTF-8 bytes, since text cannot hold NUL) | `snapshot` (indexed, for deletion) |
//! | `pending_writes` | (`snapshot`, `block_index`) | `digest` (32 bytes), `checksum` (the final write's `BlockWrite::checksum`, 32 bytes, or NULL) |
//! | `nodes` | `hash` (32 bytes) | `stamp` of the last write, `bytes`: the encoded node |
//! | `kms_keys` | `id` | `owner` (for listings), `record`: the `KeyRecord` as JSON text |
//! | `staged_roots` | (`snapshot`, `root`) | none: a subtree stored ahead of the snapshot's seal, kept by GC while it is pending |
//! | `strata_schema_version` | `version` | `name`, `applied_at`: the migrations applied |
//!
//! and the sequence `strata_stamps`. The tables live in the connection's `search_path`
//! (by default `public`), so one database can hold several stores in several schemas.
//!
//! Migrations are plain SQL files embedded with `include_str!` and applied in order by
//! [`PostgresMetadataStore::connect`], all in one transaction that first takes a
//! transaction-level advisory lock: when two nodes start at once, the second waits, then
//! finds them recorded in `strata_schema_version` and applies nothing. A database whose
//! schema is newer than the build is refused.
//!
//! # Transactions and errors
//! Every call is one transaction run by one helper (`persistence::transact`), at the
//! isolation level it states, which reruns the transaction after a serialization failure
//! (SQLSTATE 40001) or a deadlock (40P01) up to 8 times with exponential backoff and full
//! jitter, then answers [`StoreError::Conflict`](strata_core::ports::StoreError::Conflict). Writers run at READ COMMITTED and take a
//! row lock (`SELECT … FOR UPDATE`) on every snapshot record they decide on before they
//! decide, so that writers of one snapshot (parallel Puts) queue on that lock instead of
//! failing to serialize. Locks are taken records first, several records in id order,
//! nodes in hash order, so writers of this crate do not deadlock each other (a 40P01 would
//! be retried anyway). Multi-statement reads that must agree (`pending_writes`, the GC
//! view) run at REPEATABLE READ. Not SERIALIZABLE, which the style guide suggests: there,
//! every Put of a snapshot whose record another Put updated since the transaction began
//! fails to serialize, so N parallel Puts of one snapshot cost O(N²) attempts; with the
//! row locks the same decisions are taken one after the other and never fail.
//! `update_snapshot`'s change is `FnOnce`: a rerun re-applies the first run's outcome if
//! the record is still the one that change saw, and is a `Conflict` otherwise.
//!
//! Errors map to [`StoreError`](strata_core::ports::StoreError) kinds by the rule on it (retryable only when repeating
//! the call is safe): a lost connection, SQLSTATE class 08 or 53, or a server shutting
//! down is `Unavailable` with the client error as source; serialization failures left
//! after the retries and 55P03 are `Conflict`; data that does not decode (a record, a
//! digest, a node that does not match its hash) is `Corrupt`; anything else is `Backend`.
//! A connection that breaks *during COMMIT* leaves the outcome unknown: that is
//! `Unavailable` only for calls that are safe to repeat (reads, `record_block`,
//! `delete_nodes`, `drop_pending_writes`), and `Backend` for the others.
//!
//! # Stamps
//! Stamps come from the sequence `strata_stamps`. A plain `nextval` is not enough for
//! the GC-view rule ("every node write the view cannot see is stamped at or after the
//! view's stamp"): a seal could take its stamp before a view takes its own and commit
//! after the view's snapshot was taken, and GC would then delete a node that seal just
//! re-wrote. So stamps are ordered with commits by an advisory lock, the *fence* (its key
//! is derived from the sequence's OID, one per schema):
//!
//! - a seal takes the fence **shared** at transaction level (`pg_advisory_xact_lock_shared`,
//!   held until it commits or rolls back), and only then its stamp (`nextval`);
//! - a GC view takes the fence **exclusive** at session level (`pg_advisory_lock`), then
//!   starts a REPEATABLE READ transaction whose first statement takes the stamp `S0`
//!   (`nextval`) — that statement also takes the transaction's snapshot — and then
//!   releases the fence (`pg_advisory_unlock`) and reads the view in that snapshot.
//!
//! Lock grants are totally ordered. A seal granted the fence before the view was had to
//! commit (or roll back) before the view's exclusive lock was granted, so before the
//! view's snapshot: it is visible, and its stamp, taken before its commit, is below `S0`.
//! A seal granted the fence after the view waits for the release, which comes after the
//! view took its snapshot and `S0`: its stamp is above `S0` and it cannot be visible
//! (it commits after the snapshot). So a node write is visible in the view exactly when
//! its stamp is below `S0`. The exclusive lock must be taken *before* the transaction
//! because a REPEATABLE READ snapshot is taken when the first statement starts: a
//! `pg_advisory_xact_lock` as that statement would take the snapshot before waiting.
//! The fence is held only from the grant to the `nextval`, not while the view is read.
//! `gc_view` runs in a task of its own, so a caller giving up cannot leave the session
//! lock on a pooled connection, and a view that fails closes its connection instead of
//! returning it to the pool. `delete_nodes` checks `stamp < S0` in its `DELETE`, which
//! at READ COMMITTED re-checks a row a concurrent seal re-stamped (or waits for it).
//!
//! # Node readers
//! [`MetadataStore::nodes`](strata_core::ports::MetadataStore::nodes) is synchronous and
//! its reader is called from blocking threads (and, in the conformance suite, from the
//! test's own runtime thread). The reader sends each read to a dedicated thread of the
//! store with its own current-thread runtime and pool of 4 connections, and waits on a
//! std channel; each reader has a cache of up to 4096 decoded nodes. Nodes are verified
//! against their hash. ADR 0004 replaces this by an async, batched `load_many`.
//!
//! The reader of a GC view reads the nodes *as currently stored*, not in the view's
//! snapshot. That is equivalent: nodes are immutable and content-addressed (a read
//! returns the node of that hash or nothing, and is verified), and only `delete_nodes`
//! removes them. A node visible in the view can be gone later only if a collection
//! deleted it after the view; then the walk gets `Corrupt` and the GC fails closed,
//! before it deletes anything.
//!
//! # Record writes (group commit)
//! `record_block` calls go to one writer task per store, which takes every call queued at
//! the moment (up to 512) and records them in **one transaction**: the records of the
//! snapshots concerned locked in id order (`FOR UPDATE`), each write checked and applied
//! in memory in arrival order (as if alone: a write sees the records as the writes before
//! it left them), then one upsert of all pending writes and one update of all changed
//! records; every caller is answered after the commit. A write to a snapshot that is
//! missing, not pending at the write's time, or whose record does not decode fails alone;
//! the rest of its group commits. Across nodes, groups of different stores queue on the
//! same row locks. The deadline check compares `write.at_ms` with the stored record's
//! deadline, as the embedded store does. The writer task is spawned on the runtime that
//! calls [`PostgresMetadataStore::connect`], which must be the runtime that uses the store.
//!
//! # Tests
//! `cargo test -p strata-store-postgres` needs a PostgreSQL server named by the
//! environment variable `DATABASE_URL` (a role that may `CREATE SCHEMA` in that
//! database); without it every test fails with a message naming the variable. Each test
//! works in a fresh schema `s_<random>` (left behind: the cluster is meant to be
//! throwaway, as `ci/postgres.sh` makes it).
//!
//! # PostgreSQL features relied on
//! Plain SQL otherwise: `text`, `bigint`, `bytea` (no JSON types or operators), one sequence, `INSERT … ON CONFLICT`, `SELECT … FOR UPDATE / FOR
//! SHARE`, arrays as parameters (`= ANY($1)`, multi-argument `unnest` in `INSERT … SELECT`
//! and `UPDATE … FROM`), `COLLATE "C"`, `::regclass`, READ
//! COMMITTED and REPEATABLE READ (snapshot isolation), and advisory locks
//! (`pg_advisory_xact_lock`, `pg_advisory_xact_lock_shared`, `pg_advisory_lock` /
//! `pg_advisory_unlock`). The advisory locks are the part a PostgreSQL-compatible
//! distributed database is least likely to have; they are used only for migrations and
//! the stamp fence. No extensions.

mod nodes;
mod persistence;
mod store;
mod writes;

pub use nodes::PgNodes;
pub use store::PostgresMetadataStore;

/// How many schema migrations this build applies (one row each in `strata_schema_version`).
pub const MIGRATION_COUNT: usize = persistence::MIGRATIONS.len();

#[doc(hidden)]
pub mod testing {
    //! For this crate's own tests only: the transaction helper, to provoke real
    //! serialization failures through it.
    pub use crate::persistence::{ATTEMPTS, Body, Failure, Repeat, transact};
}
