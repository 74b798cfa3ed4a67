//! The conformance suite of the two ports: one case per sentence of their rustdoc in
//! `strata_core::ports`. An adapter crate runs every case with one line:
//!
//! ```ignore
//! async fn open() -> (RedbMetadataStore, tempfile::TempDir) { /* a fresh store */ }
//! strata_store_testkit::metadata_store_conformance!(open);
//! ```
//!
//! `open` is an async function returning a fresh, empty store and a guard kept alive for
//! the test (a temporary directory, a database schema, ...). Each case becomes one
//! `#[tokio::test]` named after it, so a failure names the broken sentence.

/// Instantiate every case of [`metadata`] for one adapter (see the module docs).
#[macro_export]
macro_rules! metadata_store_conformance {
    ($open:path) => {
        $crate::metadata_store_conformance!(@cases $open;
            created_snapshots_read_back,
            records_keep_any_text_the_model_allows,
            client_tokens_bind_per_owner_until_the_snapshot_is_deleted,
            updates_see_the_stored_record_and_may_decline,
            deletion_removes_the_record_its_writes_and_its_token,
            writes_to_missing_or_sealed_snapshots_are_refused,
            the_last_write_wins_and_pending_writes_are_ascending_and_unique,
            pending_checksums_follow_their_writes_and_go_with_the_seal,
            each_write_bumps_the_sequence_progress_and_activity,
            a_seal_stores_nodes_and_record_and_drops_the_writes,
            a_raced_seal_stores_nothing,
            a_seal_of_a_snapshot_not_pending_stores_nothing,
            snapshots_are_listed_by_owner_in_id_order,
            the_gc_view_shows_records_pending_digests_and_nodes,
            node_deletion_spares_nodes_written_since_the_cutoff,
            nodes_sealed_after_a_gc_view_are_stamped_at_or_after_its_start,
            a_write_past_the_deadline_is_refused,
            a_seal_completes_the_record_as_stored,
            a_child_is_created_only_on_its_intact_parent,
            announcements_say_whether_a_chunk_is_registered,
            a_write_relying_on_the_registry_needs_a_registered_chunk,
            condemnation_spares_announced_and_reused_chunks,
            withdrawn_announcements_stop_protecting_their_chunk,
            leases_are_exclusive_renewable_and_expire,
            the_first_secret_stored_wins,
            keys_are_created_once_listed_by_owner_and_enabled_or_disabled,
            pending_writes_are_dropped_only_for_snapshots_in_error,
            pending_writes_come_in_pages_of_one_sequence,
            staged_subtrees_are_kept_while_pending_and_taken_over_by_the_seal,
            staged_roots_go_with_a_deletion_a_drop_and_a_timeout,
            a_missing_node_is_corruption,
        );
    };
    (@cases $open:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let (store, _guard) = $open().await;
                $crate::conformance::metadata::$case(&store).await;
            }
        )*
    };
}

/// Instantiate every case of [`chunks`] for one adapter (see the module docs).
#[macro_export]
macro_rules! chunk_store_conformance {
    ($open:path) => {
        $crate::chunk_store_conformance!(@cases $open;
            stored_chunks_read_back_and_absent_ones_are_none,
            put_is_idempotent,
            the_listing_pages_every_chunk_in_digest_order_with_its_size,
            deletion_is_idempotent_and_reports_the_bytes_freed,
        );
    };
    (@cases $open:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let (store, _guard) = $open().await;
                $crate::conformance::chunks::$case(&store).await;
            }
        )*
    };
}

/// Builders shared by the cases (and by service-level tests).
pub mod fixtures {
    use strata_core::ports::BlockWrite;
    use strata_core::snapshot::{SnapshotRecord, SnapshotStatus};
    use strata_types::{AccountId, BLOCK_SIZE, BlockIndex, ChunkDigest, SnapshotId, VolumeSize};

    /// An account id from a number (`000000000007`).
    pub fn account(n: u64) -> AccountId {
        AccountId::parse(&format!("{n:012}")).expect("twelve digits")
    }

    /// A snapshot id from a number (`snap-00…07`).
    pub fn snapshot_id(n: u64) -> SnapshotId {
        SnapshotId::parse(&format!("snap-{n:017x}")).expect("hex id")
    }

    /// A pending 1 GiB snapshot record of `owner`, started at `now_ms`.
    pub fn pending(id: &SnapshotId, owner: &AccountId, now_ms: i64) -> SnapshotRecord {
        SnapshotRecord {
            id: id.clone(),
            owner: owner.clone(),
            status: SnapshotStatus::Pending,
            volume_size: VolumeSize::from_gib(1).expect("1 GiB"),
            parent: None,
            lineage: id.clone(),
            description: None,
            tags: Vec::new(),
            encrypted: false,
            kms_key_arn: None,
            encryption_key: None,
            timeout_minutes: 60,
            client_token: None,
            start_fingerprint: String::new(),
            start_time_ms: now_ms,
            last_activity_ms: now_ms,
            completion_time_ms: None,
            progress: None,
            write_sequence: 0,
            changed_blocks: 0,
            root: None,
            base_root: None,
            status_message: None,
        }
    }

    /// Deterministic block content for `seed` (never the zero block).
    pub fn content(seed: u32) -> Vec<u8> {
        let mut data = vec![0u8; BLOCK_SIZE];
        for (n, chunk) in data.chunks_mut(4).enumerate() {
            let word = seed.wrapping_mul(0x9E37_79B9) ^ (n as u32);
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        data[0] = 1;
        data
    }

    /// A digest standing for content `seed` (the bytes are not needed by metadata).
    pub fn digest(seed: u32) -> ChunkDigest {
        ChunkDigest::of(&seed.to_le_bytes())
    }

    /// A write of content `seed` to `index` of `snapshot` at `at_ms`, which stored its
    /// chunk (so the record registers it).
    pub fn write(snapshot: &SnapshotId, index: u32, seed: u32, at_ms: i64) -> BlockWrite {
        BlockWrite {
            snapshot: snapshot.clone(),
            index: BlockIndex::new(index),
            digest: digest(seed),
            progress: None,
            at_ms,
            stored_size: Some(BLOCK_SIZE as u64),
            checksum: None,
        }
    }
}

/// The cases of the metadata port.
pub mod metadata {
    use strata_core::block_map::{self, NodeHash, NodeSource};
    use strata_core::encryption::{KeyRecord, MasterKey};
    use strata_core::ports::{
        BlockWrite, CreateOutcome, MetadataStore, RecordBlockError, RecordChange, Seal, SealError,
        StoreError,
    };
    use strata_core::snapshot::{SnapshotRecord, SnapshotStatus, Tag};
    use strata_types::{BLOCK_SIZE, BlockIndex, SnapshotId};

    use super::fixtures::{account, digest, pending, snapshot_id, write};

    const T0: i64 = 1_767_225_600_000;

    async fn create<M: MetadataStore>(store: &M, record: SnapshotRecord) {
        assert!(matches!(
            store.create_snapshot(record).await.expect("create"),
            CreateOutcome::Created
        ));
    }

    /// A seal of everything written to `id` so far (tree built from the store's nodes).
    async fn seal_of<M: MetadataStore>(store: &M, id: &strata_types::SnapshotId) -> Seal {
        let record = store.snapshot(id).await.expect("read").expect("exists");
        let writes = store.pending_writes(id).await.expect("pending");
        let nodes = store.nodes().expect("nodes");
        let update =
            block_map::apply(&nodes, record.base_root, &writes.blocks, 1 << 20).expect("tree");
        Seal {
            snapshot: id.clone(),
            expected_sequence: writes.sequence,
            root: update.root,
            changed_blocks: writes.blocks.len() as u64,
            completed_at_ms: T0 + 1,
            new_nodes: update.new_nodes,
        }
    }

    /// A snapshot `n`, block 0 written with content 1 and sealed: its id and the hashes
    /// of the nodes its seal stored.
    async fn sealed_with_one_block<M: MetadataStore>(
        store: &M,
        n: u64,
    ) -> (strata_types::SnapshotId, Vec<NodeHash>) {
        let id = snapshot_id(n);
        create(store, pending(&id, &account(1), T0)).await;
        store
            .record_block(write(&id, 0, 1, T0))
            .await
            .expect("write");
        let seal = seal_of(store, &id).await;
        let hashes = seal.new_nodes.iter().map(|(h, _)| *h).collect();
        store.seal_snapshot(seal).await.expect("seal");
        (id, hashes)
    }

    /// `create_snapshot` stores the record; `snapshot` returns it; unknown ids are `None`.
    pub async fn created_snapshots_read_back<M: MetadataStore>(store: &M) {
        let record = pending(&snapshot_id(1), &account(1), T0);
        create(store, record.clone()).await;
        assert_eq!(
            store.snapshot(&record.id).await.expect("read"),
            Some(record)
        );
        assert_eq!(store.snapshot(&snapshot_id(2)).await.expect("read"), None);
    }

    /// A description, tag or client token may hold any character the model allows
    /// (`[\S\s]*`): NUL, other C0 controls, U+FFFF. Each is stored, updated, listed and
    /// read back unchanged (PostgreSQL's `jsonb` refused `\u0000`, failing such a
    /// StartSnapshot with a storage error).
    pub async fn records_keep_any_text_the_model_allows<M: MetadataStore>(store: &M) {
        let odd = "nul\u{0}esc\u{1b}[31m\rcr\ttab\u{7f}\u{ffff}\u{10ffff}end";
        let mut record = pending(&snapshot_id(1), &account(1), T0);
        record.description = Some(odd.into());
        record.client_token = Some("token\u{0}\u{1b}\u{7f}\u{ffff}".into()); // no spaces: `[\S]+`
        record.tags = vec![Tag {
            key: format!("k{odd}"),
            value: "\u{0}".into(),
        }];
        create(store, record.clone()).await;
        assert_eq!(
            store.snapshot(&record.id).await.expect("read"),
            Some(record.clone())
        );
        let retag: RecordChange = Box::new(|stored: &SnapshotRecord| {
            let mut changed = stored.clone();
            changed.tags.push(Tag {
                key: "second\u{0}".into(),
                value: "\u{0}\u{0}".into(),
            });
            Some(changed)
        });
        let updated = store
            .update_snapshot(&record.id, retag)
            .await
            .expect("update")
            .expect("exists");
        assert_eq!(updated.tags.len(), 2);
        assert_eq!(
            store.list_snapshots(Some(&account(1))).await.expect("list"),
            vec![updated]
        );
    }

    /// The same owner reusing a client token gets the snapshot it created and nothing is
    /// written; another owner's token is independent; a deleted snapshot's token binds
    /// nothing any more.
    pub async fn client_tokens_bind_per_owner_until_the_snapshot_is_deleted<M: MetadataStore>(
        store: &M,
    ) {
        let with_token = |n, owner| {
            let mut record = pending(&snapshot_id(n), &account(owner), T0);
            record.client_token = Some("token".into());
            record
        };
        create(store, with_token(1, 1)).await;
        match store
            .create_snapshot(with_token(2, 1))
            .await
            .expect("create")
        {
            CreateOutcome::ClientTokenExists(existing) => assert_eq!(existing.id, snapshot_id(1)),
            other => panic!("expected the first snapshot, got {other:?}"),
        }
        assert_eq!(store.snapshot(&snapshot_id(2)).await.expect("read"), None);
        create(store, with_token(3, 2)).await;
        assert!(
            store
                .delete_snapshot(&snapshot_id(1))
                .await
                .expect("delete")
        );
        create(store, with_token(4, 1)).await;
    }

    /// `update_snapshot` hands the stored record to the change and stores its result; a
    /// change that declines, or an unknown id, changes nothing and returns `None`.
    pub async fn updates_see_the_stored_record_and_may_decline<M: MetadataStore>(store: &M) {
        let id = snapshot_id(1);
        create(store, pending(&id, &account(1), T0)).await;
        let add_tag: RecordChange = Box::new(|stored: &SnapshotRecord| {
            let mut record = stored.clone();
            record.tags.push(Tag {
                key: "k".into(),
                value: format!("{}", stored.tags.len()),
            });
            Some(record)
        });
        let updated = store.update_snapshot(&id, add_tag).await.expect("update");
        assert_eq!(updated.map(|r| r.tags.len()), Some(1));
        let decline: RecordChange = Box::new(|_| None);
        assert!(
            store
                .update_snapshot(&id, decline)
                .await
                .expect("update")
                .is_none()
        );
        let stored = store.snapshot(&id).await.expect("read").expect("exists");
        assert_eq!(stored.tags.len(), 1);
        let any: RecordChange = Box::new(|r| Some(r.clone()));
        assert!(
            store
                .update_snapshot(&snapshot_id(9), any)
                .await
                .expect("update")
                .is_none()
        );
    }

    /// `delete_snapshot` removes a snapshot in any state with its pending writes, and says
    /// false for one that does not exist.
    pub async fn deletion_removes_the_record_its_writes_and_its_token<M: MetadataStore>(store: &M) {
        let id = snapshot_id(1);
        create(store, pending(&id, &account(1), T0)).await;
        store
            .record_block(write(&id, 3, 1, T0))
            .await
            .expect("write");
        assert!(store.delete_snapshot(&id).await.expect("delete"));
        assert_eq!(store.snapshot(&id).await.expect("read"), None);
        assert!(
            store
                .pending_writes(&id)
                .await
                .expect("pending")
                .blocks
                .is_empty()
        );
        assert!(!store.delete_snapshot(&id).await.expect("delete again"));
    }

    /// `record_block` refuses a snapshot that does not exist or is no longer pending.
    pub async fn writes_to_missing_or_sealed_snapshots_are_refused<M: MetadataStore>(store: &M) {
        assert!(matches!(
            store.record_block(write(&snapshot_id(1), 0, 1, T0)).await,
            Err(RecordBlockError::NotFound)
        ));
        let id = snapshot_id(2);
        create(store, pending(&id, &account(1), T0)).await;
        store
            .record_block(write(&id, 0, 1, T0))
            .await
            .expect("write");
        let seal = seal_of(store, &id).await;
        store.seal_snapshot(seal).await.expect("seal");
        assert!(matches!(
            store.record_block(write(&id, 1, 2, T0)).await,
            Err(RecordBlockError::NotPending(record)) if record.status == SnapshotStatus::Completed
        ));
    }

    /// Later writes to an index replace earlier ones; the pending writes are read in
    /// ascending index order, one per index.
    pub async fn the_last_write_wins_and_pending_writes_are_ascending_and_unique<
        M: MetadataStore,
    >(
        store: &M,
    ) {
        let id = snapshot_id(1);
        create(store, pending(&id, &account(1), T0)).await;
        for (index, seed) in [(9, 1), (2, 2), (9, 3), (5, 4), (2, 5)] {
            store
                .record_block(write(&id, index, seed, T0))
                .await
                .expect("write");
        }
        let writes = store.pending_writes(&id).await.expect("pending");
        assert_eq!(
            writes.blocks,
            vec![
                (BlockIndex::new(2), digest(5)),
                (BlockIndex::new(5), digest(4)),
                (BlockIndex::new(9), digest(3)),
            ]
        );
        assert_eq!(writes.sequence, 5);
    }

    /// A write's checksum is kept with it until the seal: a later write at the same index
    /// replaces it, and one without a checksum removes it; other indexes and other
    /// snapshots keep theirs; a refused write leaves none. The pending writes list them
    /// ascending, one per index whose final write carried one. The seal,
    /// `drop_pending_writes` and `delete_snapshot` drop them with the writes.
    pub async fn pending_checksums_follow_their_writes_and_go_with_the_seal<M: MetadataStore>(
        store: &M,
    ) {
        let checked = |id: &SnapshotId, index, seed, checksum: Option<[u8; 32]>| BlockWrite {
            checksum,
            ..write(id, index, seed, T0)
        };
        let checksums = |pairs: &[(u32, u8)]| -> Vec<(BlockIndex, [u8; 32])> {
            pairs
                .iter()
                .map(|(index, fill)| (BlockIndex::new(*index), [*fill; 32]))
                .collect()
        };
        let (sealed, other, dropped, deleted) = (
            snapshot_id(1),
            snapshot_id(2),
            snapshot_id(3),
            snapshot_id(4),
        );
        for id in [&sealed, &other, &dropped, &deleted] {
            create(store, pending(id, &account(1), T0)).await;
        }
        for (index, seed, checksum) in [
            (9, 1, Some([9; 32])),
            (2, 2, Some([2; 32])),
            (5, 3, None),
            (7, 4, Some([7; 32])),
        ] {
            store
                .record_block(checked(&sealed, index, seed, checksum))
                .await
                .expect("write");
        }
        for id in [&other, &dropped, &deleted] {
            store
                .record_block(checked(id, 2, 5, Some([42; 32])))
                .await
                .expect("write");
        }
        let writes = store.pending_writes(&sealed).await.expect("pending");
        assert_eq!(writes.checksums, checksums(&[(2, 2), (7, 7), (9, 9)]));

        // Replaced, removed, added where there was none.
        for (index, seed, checksum) in [(9, 6, Some([10; 32])), (7, 7, None), (5, 8, Some([5; 32]))]
        {
            store
                .record_block(checked(&sealed, index, seed, checksum))
                .await
                .expect("rewrite");
        }
        // Refused (it relies on a chunk nobody registered): no checksum either.
        let refused = BlockWrite {
            stored_size: None,
            ..checked(&sealed, 11, 99, Some([11; 32]))
        };
        assert!(matches!(
            store.record_block(refused).await,
            Err(RecordBlockError::ChunkNotRegistered)
        ));
        let writes = store.pending_writes(&sealed).await.expect("pending");
        assert_eq!(writes.checksums, checksums(&[(2, 2), (5, 5), (9, 10)]));
        assert_eq!(writes.blocks.len(), 4, "every write is still there");
        assert_eq!(
            store
                .pending_writes(&other)
                .await
                .expect("pending")
                .checksums,
            checksums(&[(2, 42)]),
            "another snapshot's checksums are its own"
        );

        let seal = seal_of(store, &sealed).await;
        store.seal_snapshot(seal).await.expect("seal");
        assert!(
            store
                .pending_writes(&sealed)
                .await
                .expect("pending")
                .checksums
                .is_empty(),
            "gone with the seal"
        );
        let to_error: RecordChange = Box::new(|r| {
            let mut record = r.clone();
            record.status = SnapshotStatus::Error;
            Some(record)
        });
        store
            .update_snapshot(&dropped, to_error)
            .await
            .expect("update");
        store
            .drop_pending_writes(vec![dropped.clone()])
            .await
            .expect("drop");
        assert!(
            store
                .pending_writes(&dropped)
                .await
                .expect("pending")
                .checksums
                .is_empty(),
            "dropped with the writes"
        );
        assert!(store.delete_snapshot(&deleted).await.expect("delete"));
        assert!(
            store
                .pending_writes(&deleted)
                .await
                .expect("pending")
                .checksums
                .is_empty(),
            "deleted with the snapshot"
        );
        assert_eq!(
            store
                .pending_writes(&other)
                .await
                .expect("pending")
                .checksums,
            checksums(&[(2, 42)]),
            "untouched by the others' seal, drop and delete"
        );
    }

    /// Every recorded write bumps the write sequence, keeps the latest activity time and
    /// the last progress sent.
    pub async fn each_write_bumps_the_sequence_progress_and_activity<M: MetadataStore>(store: &M) {
        let id = snapshot_id(1);
        create(store, pending(&id, &account(1), T0)).await;
        let mut with_progress = write(&id, 0, 1, T0 + 500);
        with_progress.progress = Some(40);
        store.record_block(with_progress).await.expect("write");
        store
            .record_block(write(&id, 1, 2, T0 + 200))
            .await
            .expect("write");
        let record = store.snapshot(&id).await.expect("read").expect("exists");
        assert_eq!(record.write_sequence, 2);
        assert_eq!(
            record.last_activity_ms,
            T0 + 500,
            "activity never goes back"
        );
        assert_eq!(record.progress, Some(40));
    }

    /// A seal stores the nodes and the completed record and drops the pending writes, in
    /// one step.
    pub async fn a_seal_stores_nodes_and_record_and_drops_the_writes<M: MetadataStore>(store: &M) {
        let id = snapshot_id(1);
        create(store, pending(&id, &account(1), T0)).await;
        store
            .record_block(write(&id, 7, 1, T0))
            .await
            .expect("write");
        let seal = seal_of(store, &id).await;
        let root = seal.root.expect("a tree");
        store.seal_snapshot(seal).await.expect("seal");
        let record = store.snapshot(&id).await.expect("read").expect("exists");
        assert_eq!(record.status, SnapshotStatus::Completed);
        assert_eq!(record.root, Some(root));
        assert_eq!(record.changed_blocks, 1);
        assert_eq!(record.completion_time_ms, Some(T0 + 1));
        assert!(
            store
                .pending_writes(&id)
                .await
                .expect("pending")
                .blocks
                .is_empty()
        );
        let nodes = store.nodes().expect("nodes");
        assert_eq!(
            block_map::lookup(&nodes, Some(root), BlockIndex::new(7)).expect("lookup"),
            Some(digest(1))
        );
    }

    /// A seal whose snapshot was written after its tree was built is `Raced` and stores
    /// nothing: the record stays pending, with every write.
    pub async fn a_raced_seal_stores_nothing<M: MetadataStore>(store: &M) {
        let id = snapshot_id(1);
        create(store, pending(&id, &account(1), T0)).await;
        store
            .record_block(write(&id, 0, 1, T0))
            .await
            .expect("write");
        let seal = seal_of(store, &id).await;
        let root = seal.root.expect("a tree");
        store
            .record_block(write(&id, 1, 2, T0))
            .await
            .expect("a write in between");
        assert!(matches!(
            store.seal_snapshot(seal).await,
            Err(SealError::Raced)
        ));
        let record = store.snapshot(&id).await.expect("read").expect("exists");
        assert_eq!(record.status, SnapshotStatus::Pending);
        assert_eq!(
            store
                .pending_writes(&id)
                .await
                .expect("pending")
                .blocks
                .len(),
            2
        );
        assert!(
            store.nodes().expect("nodes").load(&root).is_err(),
            "no node stored"
        );
    }

    /// A seal of a snapshot that is gone or not pending is `NotPending`.
    pub async fn a_seal_of_a_snapshot_not_pending_stores_nothing<M: MetadataStore>(store: &M) {
        let id = snapshot_id(1);
        create(store, pending(&id, &account(1), T0)).await;
        let seal = seal_of(store, &id).await;
        let again = seal_of(store, &id).await;
        store.seal_snapshot(seal).await.expect("seal");
        assert!(matches!(
            store.seal_snapshot(again).await,
            Err(SealError::NotPending)
        ));
        store.delete_snapshot(&id).await.expect("delete");
        let gone = Seal {
            snapshot: id.clone(),
            expected_sequence: 0,
            root: None,
            changed_blocks: 0,
            completed_at_ms: T0,
            new_nodes: Vec::new(),
        };
        assert!(matches!(
            store.seal_snapshot(gone).await,
            Err(SealError::NotPending)
        ));
    }

    /// `list_snapshots` gives one owner's snapshots (everyone's for `None`), by id.
    pub async fn snapshots_are_listed_by_owner_in_id_order<M: MetadataStore>(store: &M) {
        for (n, owner) in [(3, 1), (1, 1), (2, 2)] {
            create(store, pending(&snapshot_id(n), &account(owner), T0)).await;
        }
        let ids =
            |records: Vec<SnapshotRecord>| records.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.list_snapshots(Some(&account(1))).await.expect("list")),
            vec![snapshot_id(1), snapshot_id(3)]
        );
        assert_eq!(
            ids(store.list_snapshots(None).await.expect("list")),
            vec![snapshot_id(1), snapshot_id(2), snapshot_id(3)]
        );
    }

    /// The GC view holds every record, the digests of every snapshot's pending writes,
    /// every stored node, and a reader of those nodes.
    pub async fn the_gc_view_shows_records_pending_digests_and_nodes<M: MetadataStore>(store: &M) {
        let (_, stored_nodes) = sealed_with_one_block(store, 1).await;
        let open = snapshot_id(2);
        create(store, pending(&open, &account(1), T0)).await;
        store
            .record_block(write(&open, 4, 2, T0))
            .await
            .expect("write");
        store
            .record_block(write(&open, 5, 3, T0))
            .await
            .expect("write");

        let view = store.gc_view().await.expect("view");
        assert_eq!(view.records.len(), 2);
        assert_eq!(view.pending, vec![(open, vec![digest(2), digest(3)])]);
        let mut in_view: Vec<NodeHash> = view.nodes.iter().map(|(h, _)| *h).collect();
        in_view.sort();
        let mut expected = stored_nodes.clone();
        expected.sort();
        assert_eq!(in_view, expected);
        for hash in &stored_nodes {
            view.reader.load(hash).expect("readable through the view");
        }
    }

    /// `delete_nodes` deletes the listed nodes stamped before the cutoff and keeps the
    /// rest; it returns how many it deleted.
    pub async fn node_deletion_spares_nodes_written_since_the_cutoff<M: MetadataStore>(store: &M) {
        let (_, hashes) = sealed_with_one_block(store, 1).await;
        let view = store.gc_view().await.expect("view");
        let stamp = view.nodes.iter().map(|(_, s)| *s).max().expect("nodes");
        assert!(
            stamp < view.start,
            "a node visible in the view is stamped before it"
        );
        let kept = store
            .delete_nodes(hashes.clone(), stamp)
            .await
            .expect("delete");
        assert_eq!(kept, 0, "stamped at the cutoff: kept");
        let deleted = store
            .delete_nodes(hashes.clone(), view.start)
            .await
            .expect("delete");
        assert_eq!(deleted, hashes.len());
        assert!(store.nodes().expect("nodes").load(&hashes[0]).is_err());
        let again = store
            .delete_nodes(hashes, view.start)
            .await
            .expect("delete");
        assert_eq!(again, 0, "idempotent");
    }

    /// A node a seal writes after a GC view was taken — even one that was stored already
    /// and is re-written — is stamped at or after the view's start, so the collection
    /// planned from that view cannot delete it.
    pub async fn nodes_sealed_after_a_gc_view_are_stamped_at_or_after_its_start<
        M: MetadataStore,
    >(
        store: &M,
    ) {
        let (_, hashes) = sealed_with_one_block(store, 1).await;
        // The same content again: the same nodes, prepared before the view is taken.
        let second = snapshot_id(2);
        create(store, pending(&second, &account(1), T0)).await;
        store
            .record_block(write(&second, 0, 1, T0))
            .await
            .expect("write");
        let again = seal_of(store, &second).await;
        let view = store.gc_view().await.expect("view");
        store
            .seal_snapshot(again)
            .await
            .expect("seal after the view");
        let deleted = store
            .delete_nodes(hashes.clone(), view.start)
            .await
            .expect("delete");
        assert_eq!(deleted, 0, "re-written after the view: kept");
        let nodes = store.nodes().expect("nodes");
        for hash in &hashes {
            nodes.load(hash).expect("still stored");
        }
    }

    /// `record_block` refuses a write whose time is past the snapshot's deadline (the
    /// record as of that time says `error`), and records nothing.
    pub async fn a_write_past_the_deadline_is_refused<M: MetadataStore>(store: &M) {
        let id = snapshot_id(1);
        let record = pending(&id, &account(1), T0);
        let deadline = record.deadline_ms();
        create(store, record).await;
        store
            .record_block(write(&id, 0, 1, T0))
            .await
            .expect("before the deadline");
        let late = store.record_block(write(&id, 1, 2, deadline + 1)).await;
        assert!(
            matches!(&late, Err(RecordBlockError::NotPending(r)) if r.status == SnapshotStatus::Error),
            "{late:?}"
        );
        let writes = store.pending_writes(&id).await.expect("pending");
        assert_eq!(writes.blocks, vec![(BlockIndex::new(0), digest(1))]);
    }

    /// A seal completes the record as stored when it commits: a tag added after the tree
    /// was built survives.
    pub async fn a_seal_completes_the_record_as_stored<M: MetadataStore>(store: &M) {
        let id = snapshot_id(1);
        create(store, pending(&id, &account(1), T0)).await;
        let seal = seal_of(store, &id).await;
        let tag: RecordChange = Box::new(|r| {
            let mut record = r.clone();
            record.tags.push(Tag {
                key: "k".into(),
                value: "v".into(),
            });
            Some(record)
        });
        store.update_snapshot(&id, tag).await.expect("tag");
        store.seal_snapshot(seal).await.expect("seal");
        let record = store.snapshot(&id).await.expect("read").expect("exists");
        assert_eq!(record.status, SnapshotStatus::Completed);
        assert_eq!(record.tags.len(), 1);
        assert_eq!(record.progress, Some(100));
    }

    /// A record naming a parent is created only if the parent is there, completed, of the
    /// same owner, with the record's `base_root` as its root.
    pub async fn a_child_is_created_only_on_its_intact_parent<M: MetadataStore>(store: &M) {
        let parent = snapshot_id(1);
        create(store, pending(&parent, &account(1), T0)).await;
        store
            .record_block(write(&parent, 0, 1, T0))
            .await
            .expect("write");
        let child_of = |n, root| {
            let mut child = pending(&snapshot_id(n), &account(1), T0);
            child.parent = Some(parent.clone());
            child.lineage = parent.clone();
            child.base_root = root;
            child
        };
        let outcome = store
            .create_snapshot(child_of(2, None))
            .await
            .expect("create");
        assert!(
            matches!(outcome, CreateOutcome::ParentGone),
            "pending parent: {outcome:?}"
        );
        let seal = seal_of(store, &parent).await;
        let root = seal.root;
        store.seal_snapshot(seal).await.expect("seal");
        let outcome = store
            .create_snapshot(child_of(3, None))
            .await
            .expect("create");
        assert!(
            matches!(outcome, CreateOutcome::ParentGone),
            "other root: {outcome:?}"
        );
        let mut foreign = child_of(4, root);
        foreign.owner = account(2);
        let outcome = store.create_snapshot(foreign).await.expect("create");
        assert!(
            matches!(outcome, CreateOutcome::ParentGone),
            "other owner: {outcome:?}"
        );
        create(store, child_of(5, root)).await;
        store.delete_snapshot(&parent).await.expect("delete");
        let outcome = store
            .create_snapshot(child_of(6, root))
            .await
            .expect("create");
        assert!(
            matches!(outcome, CreateOutcome::ParentGone),
            "deleted: {outcome:?}"
        );
        assert_eq!(store.snapshot(&snapshot_id(6)).await.expect("read"), None);
    }

    /// `drop_pending_writes` drops the writes of snapshots stored in `error` and leaves
    /// every other snapshot's alone.
    pub async fn pending_writes_are_dropped_only_for_snapshots_in_error<M: MetadataStore>(
        store: &M,
    ) {
        let (failed, alive) = (snapshot_id(1), snapshot_id(2));
        for id in [&failed, &alive] {
            create(store, pending(id, &account(1), T0)).await;
            store
                .record_block(write(id, 0, 1, T0))
                .await
                .expect("write");
            store
                .record_block(write(id, 1, 2, T0))
                .await
                .expect("write");
        }
        let to_error: RecordChange = Box::new(|r| {
            let mut record = r.clone();
            record.status = SnapshotStatus::Error;
            Some(record)
        });
        store
            .update_snapshot(&failed, to_error)
            .await
            .expect("update");
        let dropped = store
            .drop_pending_writes(vec![failed.clone(), alive.clone()])
            .await
            .expect("drop");
        assert_eq!(dropped, 2);
        assert!(
            store
                .pending_writes(&failed)
                .await
                .expect("pending")
                .blocks
                .is_empty()
        );
        assert_eq!(
            store
                .pending_writes(&alive)
                .await
                .expect("pending")
                .blocks
                .len(),
            2
        );
    }

    /// `pending_writes_page` pages through the writes in ascending order, each page with
    /// the checksums of its own writes and the same sequence while nothing is written; a
    /// write moves the sequence of later pages; a sealed or deleted snapshot has none.
    pub async fn pending_writes_come_in_pages_of_one_sequence<M: MetadataStore>(store: &M) {
        let id = snapshot_id(1);
        create(store, pending(&id, &account(1), T0)).await;
        for index in [9, 2, 7, 0, 4, 5, 11] {
            let mut block = write(&id, index, index + 1, T0);
            if index % 2 == 1 {
                block.checksum = Some([index as u8; 32]);
            }
            store.record_block(block).await.expect("write");
        }
        let whole = store.pending_writes(&id).await.expect("pending");
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .pending_writes_page(&id, after, 3)
                .await
                .expect("page");
            assert_eq!(page.sequence, whole.sequence);
            assert!(page.blocks.len() <= 3);
            for (index, checksum) in &page.checksums {
                assert!(
                    page.blocks.iter().any(|(i, _)| i == index),
                    "its own writes"
                );
                assert_eq!(*checksum, [index.get() as u8; 32]);
            }
            paged.extend(page.blocks.iter().copied());
            let Some((last, _)) = page.blocks.last() else {
                break;
            };
            after = Some(*last);
        }
        assert_eq!(paged, whole.blocks);
        let indexes: Vec<u32> = paged.iter().map(|(i, _)| i.get()).collect();
        assert_eq!(indexes, vec![0, 2, 4, 5, 7, 9, 11]);

        store
            .record_block(write(&id, 1, 50, T0))
            .await
            .expect("write");
        let later = store
            .pending_writes_page(&id, Some(BlockIndex::new(4)), 3)
            .await
            .expect("page");
        assert_ne!(later.sequence, whole.sequence);
        let empty = store
            .pending_writes_page(&id, Some(BlockIndex::new(u32::MAX)), 3)
            .await
            .expect("page");
        assert!(empty.blocks.is_empty());

        let seal = seal_of(store, &id).await;
        store.seal_snapshot(seal).await.expect("seal");
        let sealed = store
            .pending_writes_page(&id, None, 100)
            .await
            .expect("page");
        assert!(sealed.blocks.is_empty() && sealed.checksums.is_empty());

        let gone = snapshot_id(2);
        create(store, pending(&gone, &account(1), T0)).await;
        store
            .record_block(write(&gone, 3, 1, T0))
            .await
            .expect("write");
        assert!(store.delete_snapshot(&gone).await.expect("delete"));
        let deleted = store
            .pending_writes_page(&gone, None, 100)
            .await
            .expect("page");
        assert!(deleted.blocks.is_empty());
    }

    /// Writes at block 0 and 5,000 (two level-1 subtrees): the first subtree is finished
    /// once the second starts, and is staged.
    async fn staged_first_subtree<M: MetadataStore>(
        store: &M,
        id: &SnapshotId,
    ) -> (NodeHash, block_map::TreeBuilder) {
        create(store, pending(id, &account(1), T0)).await;
        for (index, seed) in [(0, 1), (5_000, 2)] {
            store
                .record_block(write(id, index, seed, T0))
                .await
                .expect("write");
        }
        let writes = store.pending_writes(id).await.expect("pending");
        let nodes = store.nodes().expect("nodes");
        let mut builder = block_map::TreeBuilder::new(None, 1 << 20);
        builder.push(&nodes, &writes.blocks).expect("build");
        let batch = builder.take_batch();
        assert_eq!(batch.roots.len(), 1);
        let root = batch.roots[0];
        store
            .stage_nodes(id, batch.roots, batch.nodes)
            .await
            .expect("stage");
        (root, builder)
    }

    /// `stage_nodes` stores nodes ahead of a seal, stamped by the store like a seal's, and
    /// while the snapshot is pending the GC view lists their root as staged (and can
    /// read them); the seal may then reference them and the view stops listing them.
    /// Staging on a snapshot that is not pending is refused and stores nothing.
    pub async fn staged_subtrees_are_kept_while_pending_and_taken_over_by_the_seal<
        M: MetadataStore,
    >(
        store: &M,
    ) {
        let id = snapshot_id(1);
        let before = store.gc_view().await.expect("view").start;
        let (root, builder) = staged_first_subtree(store, &id).await;
        let view = store.gc_view().await.expect("view");
        assert_eq!(view.staged, vec![root]);
        let stamp = view
            .nodes
            .iter()
            .find(|(hash, _)| *hash == root)
            .map(|(_, stamp)| *stamp)
            .expect("the staged root is stored");
        assert!(stamp > before && stamp < view.start);
        view.reader.load(&root).expect("readable through the view");

        let nodes = store.nodes().expect("nodes");
        let update = builder.finish(&nodes).expect("finish");
        let sequence = store.pending_writes(&id).await.expect("pending").sequence;
        store
            .seal_snapshot(Seal {
                snapshot: id.clone(),
                expected_sequence: sequence,
                root: update.root,
                changed_blocks: 2,
                completed_at_ms: T0 + 1,
                new_nodes: update.new_nodes,
            })
            .await
            .expect("seal");
        let view = store.gc_view().await.expect("view");
        assert!(view.staged.is_empty());
        let nodes = store.nodes().expect("nodes");
        for (index, seed) in [(0, 1), (5_000, 2)] {
            assert_eq!(
                block_map::lookup(&nodes, update.root, BlockIndex::new(index)).expect("lookup"),
                Some(digest(seed))
            );
        }

        let node_count = view.nodes.len();
        let (hash, encoded) = (NodeHash([7; 32]), vec![0u8, 1, 0, 0, 0, 0, 0, 0, 0]);
        for refused in [&id, &snapshot_id(9)] {
            let result = store
                .stage_nodes(refused, vec![hash], vec![(hash, encoded.clone())])
                .await;
            assert!(matches!(result, Err(SealError::NotPending)), "{result:?}");
        }
        let view = store.gc_view().await.expect("view");
        assert_eq!(
            view.nodes.len(),
            node_count,
            "a refused staging stores no node"
        );
        assert!(view.staged.is_empty());
    }

    /// A deletion forgets the snapshot's staged roots; so does a drop of the pending
    /// writes of a snapshot in error; and a snapshot stored in `error` has none in the
    /// GC view even before the drop.
    pub async fn staged_roots_go_with_a_deletion_a_drop_and_a_timeout<M: MetadataStore>(store: &M) {
        let (deleted, failed) = (snapshot_id(1), snapshot_id(2));
        staged_first_subtree(store, &deleted).await;
        staged_first_subtree(store, &failed).await;
        assert_eq!(store.gc_view().await.expect("view").staged.len(), 2);
        assert!(store.delete_snapshot(&deleted).await.expect("delete"));
        assert_eq!(store.gc_view().await.expect("view").staged.len(), 1);
        let to_error: RecordChange = Box::new(|r| {
            let mut record = r.clone();
            record.status = SnapshotStatus::Error;
            Some(record)
        });
        store
            .update_snapshot(&failed, to_error)
            .await
            .expect("update");
        assert!(store.gc_view().await.expect("view").staged.is_empty());
        store
            .drop_pending_writes(vec![failed.clone()])
            .await
            .expect("drop");
        // Back to pending (no path of the service does this): nothing is staged any more.
        let to_pending: RecordChange = Box::new(|r| {
            let mut record = r.clone();
            record.status = SnapshotStatus::Pending;
            Some(record)
        });
        store
            .update_snapshot(&failed, to_pending)
            .await
            .expect("update");
        assert!(store.gc_view().await.expect("view").staged.is_empty());
    }

    /// `announce_put` says whether the chunk is registered: not before a write record
    /// stored it, yes after; each announcement is its own. The GC view lists registered
    /// chunks with their size, stamped before the view.
    pub async fn announcements_say_whether_a_chunk_is_registered<M: MetadataStore>(store: &M) {
        let first = store.announce_put(digest(1)).await.expect("announce");
        assert!(!first.registered);
        let id = snapshot_id(1);
        create(store, pending(&id, &account(1), T0)).await;
        store
            .record_block(write(&id, 0, 1, T0))
            .await
            .expect("write");
        store.withdraw_put(first.id);
        let second = store.announce_put(digest(1)).await.expect("announce");
        assert!(second.registered);
        assert_ne!(first.id, second.id);
        store.withdraw_put(second.id);
        let view = store.gc_view().await.expect("view");
        let listed: Vec<_> = view.chunks.iter().map(|c| (c.digest, c.size)).collect();
        assert_eq!(listed, vec![(digest(1), BLOCK_SIZE as u64)]);
        assert!(view.chunks[0].stamp < view.start);
    }

    /// A write that relied on the registry (`stored_size: None`) is recorded only while
    /// its chunk is registered: refused, with nothing recorded, before it is and after
    /// `forget_chunk`.
    pub async fn a_write_relying_on_the_registry_needs_a_registered_chunk<M: MetadataStore>(
        store: &M,
    ) {
        let id = snapshot_id(1);
        create(store, pending(&id, &account(1), T0)).await;
        let reuse = |index, seed| BlockWrite {
            stored_size: None,
            ..write(&id, index, seed, T0)
        };
        assert!(matches!(
            store.record_block(reuse(0, 1)).await,
            Err(RecordBlockError::ChunkNotRegistered)
        ));
        let sequence = store.pending_writes(&id).await.expect("pending").sequence;
        assert_eq!(sequence, 0, "nothing recorded");
        store
            .record_block(write(&id, 1, 1, T0))
            .await
            .expect("stored");
        store.record_block(reuse(2, 1)).await.expect("re-used");
        store.forget_chunk(digest(1)).await.expect("forget");
        store.forget_chunk(digest(1)).await.expect("forget twice");
        assert!(matches!(
            store.record_block(reuse(3, 1)).await,
            Err(RecordBlockError::ChunkNotRegistered)
        ));
        assert!(
            !store
                .announce_put(digest(1))
                .await
                .expect("announce")
                .registered
        );
        let indexes: Vec<u32> = store
            .pending_writes(&id)
            .await
            .expect("pending")
            .blocks
            .iter()
            .map(|(i, _)| i.get())
            .collect();
        assert_eq!(indexes, vec![1, 2]);
    }

    /// `condemn_chunks` keeps an announced chunk and one re-used by a write stamped at
    /// or after its cutoff, and condemns the rest (registered or not) once; while
    /// condemned, announcements and writes of them are refused; `finalize_chunks` ends it.
    pub async fn condemnation_spares_announced_and_reused_chunks<M: MetadataStore>(store: &M) {
        let id = snapshot_id(1);
        create(store, pending(&id, &account(1), T0)).await;
        for seed in 1..=3 {
            store
                .record_block(write(&id, seed, seed, T0))
                .await
                .expect("write");
        }
        let view = store.gc_view().await.expect("view");
        let busy = store.announce_put(digest(2)).await.expect("announce");
        store
            .record_block(BlockWrite {
                stored_size: None,
                ..write(&id, 10, 3, T0)
            })
            .await
            .expect("re-use after the view");
        let all = vec![digest(1), digest(2), digest(3), digest(4)];
        let mut condemned = store
            .condemn_chunks(all.clone(), view.start)
            .await
            .expect("condemn");
        condemned.sort();
        let mut expected = vec![digest(1), digest(4)];
        expected.sort();
        assert_eq!(condemned, expected, "1 idle, 4 unregistered");
        assert!(
            store
                .condemn_chunks(all, view.start)
                .await
                .expect("again")
                .is_empty(),
            "condemned once"
        );
        let mut left = store.condemned_chunks().await.expect("condemned");
        left.sort();
        assert_eq!(left, expected);
        assert!(matches!(
            store.announce_put(digest(1)).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            store.record_block(write(&id, 11, 1, T0)).await,
            Err(RecordBlockError::ChunkNotRegistered)
        ));
        let registered: Vec<_> = store
            .gc_view()
            .await
            .expect("view")
            .chunks
            .iter()
            .map(|c| c.digest)
            .collect();
        assert!(!registered.contains(&digest(1)));
        store
            .finalize_chunks(expected.clone())
            .await
            .expect("finalize");
        store
            .finalize_chunks(expected)
            .await
            .expect("finalize twice");
        assert!(
            store
                .condemned_chunks()
                .await
                .expect("condemned")
                .is_empty()
        );
        let again = store.announce_put(digest(1)).await.expect("announce");
        assert!(!again.registered);
        store.withdraw_put(again.id);
        store.withdraw_put(busy.id);
    }

    /// Once its announcement is withdrawn, a chunk is condemned like any other (a
    /// withdrawal may take effect a little later in a shared store: within 5 s here).
    pub async fn withdrawn_announcements_stop_protecting_their_chunk<M: MetadataStore>(store: &M) {
        let id = snapshot_id(1);
        create(store, pending(&id, &account(1), T0)).await;
        store
            .record_block(write(&id, 0, 1, T0))
            .await
            .expect("write");
        store.delete_snapshot(&id).await.expect("delete");
        let first = store.announce_put(digest(1)).await.expect("announce");
        let second = store.announce_put(digest(1)).await.expect("announce");
        let start = store.gc_view().await.expect("view").start;
        store.withdraw_put(first.id);
        assert!(
            store
                .condemn_chunks(vec![digest(1)], start)
                .await
                .expect("condemn")
                .is_empty(),
            "the second announcement still holds it"
        );
        store.withdraw_put(second.id);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let condemned = store
                .condemn_chunks(vec![digest(1)], start)
                .await
                .expect("condemn");
            if condemned == vec![digest(1)] {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "a withdrawn announcement still protects its chunk after 5 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// A lease is held by one holder at a time; its holder renews it; a release frees it;
    /// an expired lease goes to the next holder that asks.
    pub async fn leases_are_exclusive_renewable_and_expire<M: MetadataStore>(store: &M) {
        let long = std::time::Duration::from_secs(60);
        let short = std::time::Duration::from_millis(50);
        assert!(store.acquire_lease("gc", "a", long).await.expect("acquire"));
        assert!(!store.acquire_lease("gc", "b", long).await.expect("acquire"));
        assert!(store.acquire_lease("gc", "a", short).await.expect("renew"));
        assert!(
            store
                .acquire_lease("sweep", "b", long)
                .await
                .expect("acquire"),
            "leases are independent"
        );
        store
            .release_lease("gc", "b")
            .await
            .expect("release by a non-holder");
        assert!(!store.acquire_lease("gc", "b", long).await.expect("acquire"));
        tokio::time::sleep(std::time::Duration::from_millis(120)).await;
        assert!(
            store.acquire_lease("gc", "b", long).await.expect("acquire"),
            "a's lease expired"
        );
        assert!(!store.acquire_lease("gc", "a", long).await.expect("acquire"));
        store.release_lease("gc", "b").await.expect("release");
        assert!(store.acquire_lease("gc", "a", long).await.expect("acquire"));
    }

    /// `secret` stores the first candidate for a name and returns it to every later
    /// caller, whatever they propose; names are independent.
    pub async fn the_first_secret_stored_wins<M: MetadataStore>(store: &M) {
        let first = store
            .secret("token-key", vec![1; 32])
            .await
            .expect("secret");
        assert_eq!(first, vec![1; 32]);
        let later = store
            .secret("token-key", vec![2; 32])
            .await
            .expect("secret");
        assert_eq!(
            later,
            vec![1; 32],
            "the stored secret, not the new candidate"
        );
        let other = store.secret("other", vec![3]).await.expect("secret");
        assert_eq!(other, vec![3]);
    }

    /// `create_key` stores a key unless one with its id exists and returns the key as
    /// stored (the first wins, whatever the second holds); `key` reads it back; `keys`
    /// lists one owner's keys (everyone's for `None`) in id order, by bytes (ids differ
    /// in case and punctuation here, which a locale's collation orders otherwise);
    /// `set_key_enabled` changes only `enabled`, keeps it, and is `None` for an unknown id.
    pub async fn keys_are_created_once_listed_by_owner_and_enabled_or_disabled<M: MetadataStore>(
        store: &M,
    ) {
        let master = MasterKey::generate();
        let key = |id: &str, owner| {
            KeyRecord::create(
                &master,
                id.into(),
                "us-east-1",
                account(owner),
                Some(format!("key {id}\u{0}")),
                false,
                T0,
            )
        };
        let first = key("k-b", 1);
        assert_eq!(
            store.create_key(first.clone()).await.expect("create"),
            first
        );
        let rival = KeyRecord {
            description: Some("the rival".into()),
            account_default: true,
            created_ms: T0 + 1,
            ..key("k-b", 2)
        };
        assert_ne!(rival, first);
        assert_eq!(
            store.create_key(rival).await.expect("create again"),
            first,
            "the first stored wins"
        );
        assert_eq!(store.key("k-b").await.expect("read"), Some(first.clone()));
        let (upper, after, other) = (key("kA", 1), key("k-c", 1), key("kz", 2));
        for created in [&upper, &after, &other] {
            assert_eq!(
                &store.create_key(created.clone()).await.expect("create"),
                created
            );
        }
        // By bytes: '-' < 'A' < 'z'.
        assert_eq!(
            store.keys(Some(&account(1))).await.expect("list"),
            vec![first.clone(), after.clone(), upper.clone()]
        );
        assert_eq!(
            store.keys(Some(&account(2))).await.expect("list"),
            vec![other.clone()],
            "the refused rival left nothing under its owner"
        );
        assert!(
            store
                .keys(Some(&account(3)))
                .await
                .expect("list")
                .is_empty()
        );
        assert_eq!(
            store.keys(None).await.expect("list"),
            vec![first.clone(), after.clone(), upper.clone(), other.clone()]
        );

        let disabled = KeyRecord {
            enabled: false,
            ..first.clone()
        };
        assert_eq!(
            store.set_key_enabled("k-b", false).await.expect("disable"),
            Some(disabled.clone())
        );
        assert_eq!(
            store.set_key_enabled("k-b", false).await.expect("again"),
            Some(disabled.clone())
        );
        assert_eq!(
            store.key("k-b").await.expect("read"),
            Some(disabled.clone())
        );
        assert_eq!(
            store.keys(Some(&account(1))).await.expect("list"),
            vec![disabled, after.clone(), upper.clone()],
            "only that key changed"
        );
        assert_eq!(
            store.set_key_enabled("k-b", true).await.expect("enable"),
            Some(first.clone())
        );
        assert_eq!(store.key("k-b").await.expect("read"), Some(first));
        assert_eq!(
            store
                .set_key_enabled("k-none", false)
                .await
                .expect("unknown"),
            None
        );
        assert_eq!(store.key("k-none").await.expect("read"), None);
        assert_eq!(
            store.keys(None).await.expect("list").len(),
            4,
            "none created"
        );
    }

    /// Loading a node that is not stored is corruption, never a silent gap.
    pub async fn a_missing_node_is_corruption<M: MetadataStore>(store: &M) {
        let nodes = store.nodes().expect("nodes");
        assert!(matches!(
            nodes.load(&NodeHash([7; 32])),
            Err(StoreError::Corrupt(_))
        ));
    }
}

/// The cases of the chunk port.
pub mod chunks {
    use std::time::{Duration, SystemTime};

    use bytes::Bytes;
    use strata_core::ports::ChunkStore;
    use strata_types::ChunkDigest;

    use super::fixtures::content;

    fn chunk(seed: u32) -> (ChunkDigest, Bytes) {
        let data = content(seed);
        (ChunkDigest::of(&data), Bytes::from(data))
    }

    /// What `put` stored, `get` returns byte for byte; an absent digest is `None`.
    pub async fn stored_chunks_read_back_and_absent_ones_are_none<C: ChunkStore>(store: &C) {
        let (digest, data) = chunk(1);
        store.put(digest, data.clone()).await.expect("put");
        assert_eq!(store.get(digest).await.expect("get"), Some(data));
        assert_eq!(store.get(chunk(2).0).await.expect("get"), None);
    }

    /// Storing the same content twice stores it once and changes nothing readable.
    pub async fn put_is_idempotent<C: ChunkStore>(store: &C) {
        let (digest, data) = chunk(1);
        store.put(digest, data.clone()).await.expect("put");
        store.put(digest, data.clone()).await.expect("put again");
        assert_eq!(store.list(None, 10).await.expect("list").len(), 1);
        assert_eq!(store.get(digest).await.expect("get"), Some(data));
    }

    /// `list` pages through every stored chunk once, in ascending digest order, with its
    /// size and a write time no later than now (nor much earlier than the put: some
    /// object stores keep whole seconds).
    pub async fn the_listing_pages_every_chunk_in_digest_order_with_its_size<C: ChunkStore>(
        store: &C,
    ) {
        let before = SystemTime::now() - Duration::from_secs(2);
        let mut expected = Vec::new();
        for seed in 1..=5 {
            let (digest, data) = chunk(seed);
            expected.push((digest, data.len() as u64));
            store.put(digest, data).await.expect("put");
        }
        expected.sort();
        let mut listed = Vec::new();
        let mut after = None;
        loop {
            let page = store.list(after, 2).await.expect("list");
            assert!(page.len() <= 2);
            let Some(last) = page.last() else { break };
            after = Some(last.digest);
            for chunk in &page {
                assert!(
                    chunk.written >= before
                        && chunk.written <= SystemTime::now() + Duration::from_secs(2)
                );
            }
            listed.extend(page.iter().map(|c| (c.digest, c.size)));
        }
        assert_eq!(listed, expected);
        assert!(
            store
                .list(Some(expected[4].0), 2)
                .await
                .expect("list")
                .is_empty()
        );
    }

    /// `delete` removes what it names, skips what is absent or named twice, reports the
    /// bytes freed, and may be repeated.
    pub async fn deletion_is_idempotent_and_reports_the_bytes_freed<C: ChunkStore>(store: &C) {
        let (gone, data) = chunk(1);
        let size = data.len() as u64;
        let (kept, kept_data) = chunk(2);
        store.put(gone, data).await.expect("put");
        store.put(kept, kept_data.clone()).await.expect("put");
        let freed = store
            .delete(vec![gone, gone, chunk(3).0])
            .await
            .expect("delete");
        assert!(
            freed == size || freed == 0,
            "bytes freed as far as known: {freed}"
        );
        assert_eq!(store.get(gone).await.expect("get"), None);
        assert_eq!(store.get(kept).await.expect("get"), Some(kept_data));
        store.delete(vec![gone]).await.expect("delete again");
        let listed: Vec<_> = store
            .list(None, 10)
            .await
            .expect("list")
            .into_iter()
            .map(|c| c.digest)
            .collect();
        assert_eq!(listed, vec![kept]);
    }
}
