//! Strata's domain: snapshot lifecycle, block maps, lineage, diffs, checksums and tokens,
//! written against two storage ports.
//!
//! # Model
//! A snapshot is a map from block index to chunk digest. While `pending`, its writes are
//! kept as a flat list of (index, digest) records in the metadata store
//! ([`ports::MetadataStore::record_block`]). CompleteSnapshot turns that list into a
//! persistent, content-addressed radix tree ([`block_map`]) built on the parent's tree,
//! sharing every untouched subtree with it; the snapshot then stores only the tree's root.
//! Chunk bytes live in the [`ports::ChunkStore`], named by their SHA-256, once per
//! distinct content; all-zero blocks are recorded but never stored.
//!
//! # Invariants and what keeps them
//! | invariant | kept by |
//! |---|---|
//! | an acknowledged Put survives a crash | the chunk is durable before `record_block` is called; `record_block` returns only after its transaction is durable |
//! | a tree never references a missing chunk | chunks are written before the write record that names them; trees are built only from write records |
//! | a tree never references a missing node | [`ports::MetadataStore::seal_snapshot`] stores the nodes and the root in one transaction |
//! | a Put is never lost by a concurrent Complete | the seal only commits if the snapshot's write sequence is unchanged since the tree was built, else it is rebuilt |
//! | GC never deletes a node a tree committed after its view needs | the store stamps node writes when they commit and issues the view's stamp so that every later write is stamped at or after it; deletions check the stamp in their own transaction ([`ports::Stamp`]) |
//! | GC never frees the writes of a snapshot that can still complete | only a *stored* `error` frees pending writes; [`ports::MetadataStore::record_block`] refuses writes past the deadline, so a timed-out snapshot never comes back |
//! | a child is never built on a collected tree | [`ports::MetadataStore::create_snapshot`] checks the parent (present, completed, same root) in the creating transaction |
//! | a seal never undoes a concurrent tag change | the seal applies only the completion to the record as stored ([`snapshot::SnapshotRecord::completed`]) |
//! | readers see a snapshot exactly when it is `completed` | the status and the root change in the same transaction; reads require `completed` |
//! | no wrong byte is ever served | [`ports::ChunkStore::get`] returns only bytes that match the checksum recorded when they were stored (computed from bytes whose SHA-256 was verified), else an error |
//! | tokens cannot be forged or moved | [`tokens`]: keyed MAC over payload and context |
//! | no block of an encrypted snapshot is stored in plaintext, and none is read without its key | the Put seals the block ([`encryption::DataKey::seal`]) before the chunk store sees it, under the key chosen at StartSnapshot; the read opens it only under that key, while the key is enabled ([`service`]'s `keys.rs`) |
//!
//! # Lineage
//! Every snapshot records its `lineage`: the id of its oldest ancestor. Two snapshots are
//! related (ListChangedBlocks accepts them) exactly when their lineages are equal.

pub mod announcements;
pub mod block_map;
pub mod body;
pub mod buffers;
pub mod checksum;
pub mod clock;
pub mod encryption;
pub mod error;
pub mod gc;
pub mod leases;
pub mod migrate;
pub mod ports;
pub mod retry;
pub mod service;
pub mod snapshot;
pub mod stats;
pub mod tokens;

pub use clock::{Clock, SystemClock};
pub use error::ServiceError;
pub use service::SnapshotService;
