//! What the port's conformance suite cannot see: several stores on one database,
//! serialization failures, durability across connections, the stamp fence under a
//! concurrent seal, parallel writes to one snapshot, concurrent creates of one key, an
//! upgrade from an older schema.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::Schema;
use strata_core::block_map::{self, NodeSource};
use strata_core::encryption::{KeyRecord, MasterKey};
use strata_core::ports::{BlockWrite, MetadataStore, Seal, Stamp, StoreError};
use strata_core::snapshot::SnapshotStatus;
use strata_store_postgres::testing::{ATTEMPTS, Failure, Repeat, transact};
use strata_store_testkit::conformance::fixtures::{account, digest, pending, snapshot_id, write};
use strata_types::BlockIndex;
use tokio_postgres::IsolationLevel;

const T0: i64 = 1_767_225_600_000;

/// Four stores opened on one empty schema at the same moment: the migrations are applied
/// once (concurrent `CREATE TABLE`s would fail), and every store works on the same data.
#[tokio::test]
async fn stores_opened_at_once_on_one_database_migrate_once_and_share_it() {
    let schema = Schema::create().await;
    let (a, b, c, d) = tokio::join!(
        schema.store(),
        schema.store(),
        schema.store(),
        schema.store()
    );
    let versions: i64 = schema
        .admin
        .query_one("SELECT count(*) FROM strata_schema_version", &[])
        .await
        .expect("versions")
        .get(0);
    let migrations = strata_store_postgres::MIGRATION_COUNT;
    assert_eq!(
        versions,
        i64::try_from(migrations).expect("count"),
        "each migration recorded once"
    );
    assert!(
        [&b, &c, &d]
            .iter()
            .all(|s| s.stamp_fence() == a.stamp_fence()),
        "every node of one database shares the stamp fence"
    );

    let id = snapshot_id(1);
    a.create_snapshot(pending(&id, &account(1), T0))
        .await
        .expect("create through a");
    b.record_block(write(&id, 0, 1, T0))
        .await
        .expect("write through b");
    c.record_block(write(&id, 1, 2, T0))
        .await
        .expect("write through c");
    let writes = d.pending_writes(&id).await.expect("read through d");
    assert_eq!(writes.sequence, 2);
    assert_eq!(writes.blocks.len(), 2);
}

/// A schema newer than the build is refused, not written to.
#[tokio::test]
async fn a_schema_newer_than_the_build_is_refused() {
    let schema = Schema::create().await;
    drop(schema.store().await);
    schema
        .admin
        .execute(
            "INSERT INTO strata_schema_version (version, name) VALUES (999, 'future')",
            &[],
        )
        .await
        .expect("insert");
    let refused = strata_store_postgres::PostgresMetadataStore::connect_with(schema.config()).await;
    assert!(
        matches!(&refused, Err(StoreError::Backend(m)) if m.contains("999")),
        "{refused:?}"
    );
}

/// Two transactions at REPEATABLE READ read the same counter, then both increment it:
/// the second gets a real serialization failure (40001) from PostgreSQL, and the helper
/// runs it again, so both increments land.
#[tokio::test]
async fn a_serialization_failure_is_retried_until_the_transaction_commits() {
    let schema = Schema::create().await;
    let store = schema.store().await;
    schema
        .admin
        .batch_execute("CREATE TABLE counter (n integer NOT NULL); INSERT INTO counter VALUES (0)")
        .await
        .expect("table");
    let both_read = Arc::new(tokio::sync::Barrier::new(2));
    let runs = Arc::new(AtomicU32::new(0));
    let increment = || {
        let (both_read, runs) = (Arc::clone(&both_read), Arc::clone(&runs));
        let pool = store.pool().clone();
        async move {
            transact(
                &pool,
                "increment",
                IsolationLevel::RepeatableRead,
                Repeat::Unsafe,
                move |txn| {
                    let both_read = Arc::clone(&both_read);
                    let first_run = runs.fetch_add(1, Ordering::SeqCst) < 2;
                    Box::pin(async move {
                        let n: i32 = txn.query_one("SELECT n FROM counter", &[]).await?.get(0);
                        if first_run {
                            // Both snapshots are taken before either writes.
                            both_read.wait().await;
                        }
                        txn.execute("UPDATE counter SET n = $1", &[&(n + 1)])
                            .await?;
                        Ok(())
                    })
                },
            )
            .await
        }
    };
    let (first, second) = tokio::join!(increment(), increment());
    first.expect("first");
    second.expect("second");
    let n: i32 = schema
        .admin
        .query_one("SELECT n FROM counter", &[])
        .await
        .expect("read")
        .get(0);
    assert_eq!(n, 2, "both increments, none lost");
    assert_eq!(runs.load(Ordering::SeqCst), 3, "the loser ran twice");
}

/// A transaction that keeps failing to serialize is run `ATTEMPTS` times, then is a
/// `Conflict` (retryable); other errors are mapped at once and never retried.
#[tokio::test]
async fn the_helper_gives_up_after_its_attempts_and_maps_other_errors_at_once() {
    let schema = Schema::create().await;
    let store = schema.store().await;
    let raising = |code: &'static str| {
        let runs = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&runs);
        let pool = store.pool().clone();
        async move {
            let result: Result<(), StoreError> = transact(
                &pool,
                "raise",
                IsolationLevel::ReadCommitted,
                Repeat::Unsafe,
                move |txn| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let sql = format!(
                        "DO $$ BEGIN RAISE EXCEPTION 'provoked' USING ERRCODE = '{code}'; END $$"
                    );
                    Box::pin(async move {
                        txn.batch_execute(&sql).await.map_err(Failure::Db)?;
                        Ok(())
                    })
                },
            )
            .await;
            (result, runs.load(Ordering::SeqCst))
        }
    };
    let (result, runs) = raising("40001").await;
    assert!(
        matches!(&result, Err(StoreError::Conflict(_))),
        "{result:?}"
    );
    assert!(result.as_ref().is_err_and(StoreError::is_retryable));
    assert_eq!(runs, ATTEMPTS);
    let (result, runs) = raising("40P01").await;
    assert!(
        matches!(&result, Err(StoreError::Conflict(_))),
        "{result:?}"
    );
    assert_eq!(runs, ATTEMPTS);
    let (result, runs) = raising("23505").await;
    assert!(matches!(&result, Err(StoreError::Backend(_))), "{result:?}");
    assert_eq!(runs, 1);
    let (result, runs) = raising("53300").await;
    assert!(
        matches!(
            &result,
            Err(StoreError::Unavailable {
                source: Some(_),
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(runs, 1);
}

/// A server that cannot be reached is `Unavailable` (retryable), with the client's error
/// as source, and the password appears in no error.
#[tokio::test]
async fn an_unreachable_server_is_unavailable_and_the_password_is_not_shown() {
    let result = strata_store_postgres::PostgresMetadataStore::connect(
        "postgres://strata:s3cret-pw@127.0.0.1:1/strata?connect_timeout=2",
    )
    .await;
    let error = result.expect_err("nothing listens on port 1");
    assert!(
        matches!(
            &error,
            StoreError::Unavailable {
                source: Some(_),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_retryable());
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("s3cret-pw"), "{shown}");
}

/// Everything a store acknowledged is read back by a new store on a new pool.
#[tokio::test]
async fn acknowledged_writes_survive_a_reconnect() {
    let schema = Schema::create().await;
    let (sealed, open) = (snapshot_id(1), snapshot_id(2));
    let root = {
        let store = schema.store().await;
        store
            .create_snapshot(pending(&sealed, &account(1), T0))
            .await
            .expect("create");
        store
            .record_block(write(&sealed, 5, 1, T0))
            .await
            .expect("write");
        let writes = store.pending_writes(&sealed).await.expect("pending");
        let update = {
            let nodes = store.nodes().expect("nodes");
            tokio::task::spawn_blocking(move || {
                block_map::apply(&nodes, None, &writes.blocks, 1 << 20).expect("tree")
            })
            .await
            .expect("walk")
        };
        store
            .seal_snapshot(Seal {
                snapshot: sealed.clone(),
                expected_sequence: 1,
                root: update.root,
                changed_blocks: 1,
                completed_at_ms: T0 + 1,
                new_nodes: update.new_nodes,
            })
            .await
            .expect("seal");
        store
            .create_snapshot(pending(&open, &account(1), T0))
            .await
            .expect("create");
        store
            .record_block(write(&open, 9, 2, T0))
            .await
            .expect("write");
        update.root
    };
    let store = schema.store().await;
    let record = store.snapshot(&sealed).await.expect("read").expect("kept");
    assert_eq!(record.status, SnapshotStatus::Completed);
    assert_eq!(record.root, root);
    let nodes = store.nodes().expect("nodes");
    let found = tokio::task::spawn_blocking(move || {
        block_map::lookup(&nodes, root, BlockIndex::new(5)).expect("lookup")
    })
    .await
    .expect("walk");
    assert_eq!(found, Some(digest(1)));
    let writes = store.pending_writes(&open).await.expect("pending");
    assert_eq!(writes.blocks, vec![(BlockIndex::new(9), digest(2))]);
    assert_eq!(writes.sequence, 1);
}

/// The stamp fence, with a seal in flight: a transaction that took the fence shared and
/// its stamp (as a seal does) and has not committed holds the GC view back; once it
/// commits, the view sees its node, stamped before the view. Without the fence (or with
/// the exclusive lock taken inside the view's snapshot) the view would start at once and
/// miss a node stamped before it, which GC would then delete.
#[tokio::test]
async fn a_gc_view_waits_for_seals_in_flight_and_sees_what_they_stamped() {
    let schema = Schema::create().await;
    let store = schema.store().await;
    let mut sealer = common::client(&schema.config()).await;
    let txn = sealer.transaction().await.expect("begin");
    txn.execute(
        "SELECT pg_advisory_xact_lock_shared($1)",
        &[&store.stamp_fence()],
    )
    .await
    .expect("fence");
    let stamp: i64 = txn
        .query_one("SELECT nextval('strata_stamps')", &[])
        .await
        .expect("stamp")
        .get(0);

    let viewer = store.clone();
    let view = tokio::spawn(async move { viewer.gc_view().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!view.is_finished(), "the view waits for the seal in flight");

    txn.execute(
        "INSERT INTO nodes (hash, stamp, bytes) VALUES ($1, $2, $3)",
        &[&[7u8; 32].as_slice(), &stamp, &[0u8].as_slice()],
    )
    .await
    .expect("node");
    txn.commit().await.expect("commit");
    let view = view.await.expect("task").expect("view");
    let seen: Vec<Stamp> = view.nodes.iter().map(|(_, s)| *s).collect();
    assert_eq!(seen, vec![Stamp(u64::try_from(stamp).expect("positive"))]);
    assert!(seen[0] < view.start, "visible, so stamped before the view");

    // A seal that starts after the view took its stamp is stamped after it.
    let id = snapshot_id(1);
    store
        .create_snapshot(pending(&id, &account(1), T0))
        .await
        .expect("create");
    store
        .record_block(write(&id, 0, 1, T0))
        .await
        .expect("write");
    let writes = store.pending_writes(&id).await.expect("pending");
    let update = {
        let nodes = store.nodes().expect("nodes");
        tokio::task::spawn_blocking(move || {
            block_map::apply(&nodes, None, &writes.blocks, 1 << 20).expect("tree")
        })
        .await
        .expect("walk")
    };
    let hashes: Vec<_> = update.new_nodes.iter().map(|(h, _)| *h).collect();
    store
        .seal_snapshot(Seal {
            snapshot: id,
            expected_sequence: 1,
            root: update.root,
            changed_blocks: 1,
            completed_at_ms: T0,
            new_nodes: update.new_nodes,
        })
        .await
        .expect("seal");
    assert_eq!(
        store
            .delete_nodes(hashes, view.start)
            .await
            .expect("delete"),
        0,
        "sealed after the view: kept"
    );
}

/// Many Puts to one snapshot at once, through two stores (two nodes), and some to a
/// snapshot whose record is damaged: every good write is recorded, the sequence counts each once, none fails (they queue
/// instead of failing to serialize), they are grouped into fewer transactions than
/// writes, and a damaged record fails only the writes to it.
#[tokio::test]
async fn parallel_writes_are_grouped_all_recorded_and_fail_alone() {
    let schema = Schema::create().await;
    let store = schema.store().await;
    let id = snapshot_id(1);
    store
        .create_snapshot(pending(&id, &account(1), T0))
        .await
        .expect("create");
    let damaged = snapshot_id(2);
    schema
        .admin
        .execute(
            "INSERT INTO snapshots (id, owner, record) VALUES ($1, '000000000001', '{}')",
            &[&damaged.as_str()],
        )
        .await
        .expect("insert");
    let other = schema.store().await;
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..64u32 {
        let node = if index % 2 == 0 { &store } else { &other };
        let (good, id) = (node.clone(), id.clone());
        tasks.spawn(async move { (true, good.record_block(write(&id, index, index, T0)).await) });
        if index % 16 == 0 {
            let (bad, id) = (store.clone(), damaged.clone());
            tasks.spawn(async move { (false, bad.record_block(write(&id, index, 1, T0)).await) });
        }
    }
    while let Some(result) = tasks.join_next().await {
        match result.expect("task") {
            (true, outcome) => outcome.expect("write"),
            (false, outcome) => assert!(
                matches!(
                    outcome,
                    Err(strata_core::ports::RecordBlockError::Store(
                        StoreError::Corrupt(_)
                    ))
                ),
                "{outcome:?}"
            ),
        }
    }
    let writes = store.pending_writes(&id).await.expect("pending");
    assert_eq!(writes.sequence, 64);
    let expected: Vec<_> = (0..64).map(|i| (BlockIndex::new(i), digest(i))).collect();
    assert_eq!(writes.blocks, expected);
    let groups = store.write_groups() + other.write_groups();
    assert!(groups < 64, "grouped: {groups} transactions");
}

/// A node whose stored bytes do not match its hash is `Corrupt`, never returned.
#[tokio::test]
async fn a_damaged_node_is_corruption() {
    let schema = Schema::create().await;
    let store = schema.store().await;
    let hash = [3u8; 32];
    schema
        .admin
        .execute(
            "INSERT INTO nodes (hash, stamp, bytes) VALUES ($1, 1, $2)",
            &[&hash.as_slice(), &[1u8, 2, 3].as_slice()],
        )
        .await
        .expect("insert");
    let nodes = store.nodes().expect("nodes");
    let loaded = tokio::task::spawn_blocking(move || {
        nodes
            .load(&strata_core::block_map::NodeHash(hash))
            .map(|_| ())
    })
    .await
    .expect("walk");
    assert!(matches!(loaded, Err(StoreError::Corrupt(_))), "{loaded:?}");
}

/// A record that does not decode is `Corrupt` (not retryable).
#[tokio::test]
async fn a_damaged_record_is_corruption() {
    let schema = Schema::create().await;
    let store = schema.store().await;
    schema
        .admin
        .execute(
            "INSERT INTO snapshots (id, owner, record) VALUES ('snap-0a', '000000000001', '{\"x\": 1}')",
            &[],
        )
        .await
        .expect("insert");
    let id = strata_types::SnapshotId::parse("snap-0a").expect("id");
    let read = store.snapshot(&id).await;
    assert!(matches!(read, Err(StoreError::Corrupt(_))), "{read:?}");
    let written = store.record_block(write(&id, 0, 1, T0)).await;
    assert!(
        matches!(
            written,
            Err(strata_core::ports::RecordBlockError::Store(
                StoreError::Corrupt(_)
            ))
        ),
        "{written:?}"
    );
}

/// A caller that gives up on a GC view while it waits for the fence (a timeout) does not
/// leave the fence held on a pooled connection: seals still go through afterwards.
#[tokio::test]
async fn a_gc_view_given_up_while_waiting_leaves_no_lock_behind() {
    let schema = Schema::create().await;
    let store = schema.store().await;
    let mut sealer = common::client(&schema.config()).await;
    let txn = sealer.transaction().await.expect("begin");
    txn.execute(
        "SELECT pg_advisory_xact_lock_shared($1)",
        &[&store.stamp_fence()],
    )
    .await
    .expect("fence");
    let given_up = tokio::time::timeout(Duration::from_millis(200), store.gc_view()).await;
    assert!(given_up.is_err(), "the view waited for the seal in flight");
    txn.commit().await.expect("commit");

    // Seals of several snapshots at once, so that every pooled connection is used: one
    // of them would be the view's, were it back in the pool with the fence.
    let mut seals = tokio::task::JoinSet::new();
    for n in 1..=8 {
        let id = snapshot_id(n);
        store
            .create_snapshot(pending(&id, &account(1), T0))
            .await
            .expect("create");
        let seal = Seal {
            snapshot: id,
            expected_sequence: 0,
            root: None,
            changed_blocks: 0,
            completed_at_ms: T0,
            new_nodes: Vec::new(),
        };
        let store = store.clone();
        seals.spawn(async move {
            tokio::time::timeout(Duration::from_secs(5), store.seal_snapshot(seal)).await
        });
    }
    while let Some(outcome) = seals.join_next().await {
        outcome
            .expect("task")
            .expect("a seal is not blocked by a leftover lock")
            .expect("sealed");
    }
    let view = tokio::time::timeout(Duration::from_secs(5), store.gc_view())
        .await
        .expect("a later view is not blocked either")
        .expect("view");
    assert_eq!(view.records.len(), 8);
}

/// An account's default key is created by whichever node needs it first, maybe by several
/// at once: every create of one id, on several stores of one database at the same time
/// and each with other key material, answers the same key, the one stored (one row).
#[tokio::test]
async fn creates_of_one_key_on_several_stores_at_once_all_get_the_first() {
    let schema = Schema::create().await;
    let stores = [
        schema.store().await,
        schema.store().await,
        schema.store().await,
    ];
    let master = MasterKey::generate();
    let mut creates = tokio::task::JoinSet::new();
    for attempt in 0..24 {
        let store = stores[attempt % stores.len()].clone();
        // Fresh material and another description each time: the contents differ.
        let key = KeyRecord::create(
            &master,
            "default-key".into(),
            "us-east-1",
            account(1),
            Some(format!("attempt {attempt}")),
            true,
            T0,
        );
        creates.spawn(async move { store.create_key(key).await });
    }
    let mut answers = Vec::new();
    while let Some(answer) = creates.join_next().await {
        answers.push(answer.expect("task").expect("create"));
    }
    let stored = stores[0]
        .key("default-key")
        .await
        .expect("read")
        .expect("stored");
    assert!(
        answers.iter().all(|answer| *answer == stored),
        "every create answered the stored key"
    );
    let rows: i64 = schema
        .admin
        .query_one("SELECT count(*) FROM kms_keys", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 1);
}

/// A database of schema version 4 (before encryption at rest) is upgraded on connect:
/// its pending writes read back unchanged, without checksums, and take checksums from
/// then on; it holds no keys and takes them.
#[tokio::test]
async fn a_schema_of_version_4_upgrades_keeping_its_pending_writes() {
    let schema = Schema::create().await;
    let version_4 = [
        (1, "initial", include_str!("../migrations/0001_initial.sql")),
        (
            2,
            "liveness",
            include_str!("../migrations/0002_liveness.sql"),
        ),
        (
            3,
            "chunk registry",
            include_str!("../migrations/0003_chunk_registry.sql"),
        ),
        (
            4,
            "any text",
            include_str!("../migrations/0004_any_text.sql"),
        ),
    ];
    schema
        .admin
        .batch_execute(
            "CREATE TABLE strata_schema_version (
                 version    integer     PRIMARY KEY,
                 name       text        NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .expect("version table");
    for (version, name, sql) in version_4 {
        schema.admin.batch_execute(sql).await.expect("migration");
        schema
            .admin
            .execute(
                "INSERT INTO strata_schema_version (version, name) VALUES ($1, $2)",
                &[&version, &name],
            )
            .await
            .expect("record the migration");
    }
    // What version 4 wrote for a pending snapshot with one block write.
    let id = snapshot_id(1);
    let record = serde_json::to_string(&pending(&id, &account(1), T0)).expect("record");
    schema
        .admin
        .execute(
            "INSERT INTO snapshots (id, owner, record) VALUES ($1, $2, $3)",
            &[&id.as_str(), &account(1).as_str(), &record],
        )
        .await
        .expect("record");
    schema
        .admin
        .execute(
            "INSERT INTO pending_writes (snapshot, block_index, digest) VALUES ($1, 3, $2)",
            &[&id.as_str(), &digest(1).0.as_slice()],
        )
        .await
        .expect("pending write");

    let store = schema.store().await;
    let latest: i32 = schema
        .admin
        .query_one("SELECT max(version) FROM strata_schema_version", &[])
        .await
        .expect("version")
        .get(0);
    assert_eq!(
        usize::try_from(latest).expect("version"),
        strata_store_postgres::MIGRATION_COUNT
    );
    let writes = store.pending_writes(&id).await.expect("pending");
    assert_eq!(writes.blocks, vec![(BlockIndex::new(3), digest(1))]);
    assert!(writes.checksums.is_empty());
    store
        .record_block(BlockWrite {
            checksum: Some([4; 32]),
            ..write(&id, 4, 2, T0)
        })
        .await
        .expect("write");
    let writes = store.pending_writes(&id).await.expect("pending");
    assert_eq!(writes.blocks.len(), 2);
    assert_eq!(writes.checksums, vec![(BlockIndex::new(4), [4; 32])]);
    assert!(store.keys(None).await.expect("keys").is_empty());
    let key = KeyRecord::create(
        &MasterKey::generate(),
        "k1".into(),
        "us-east-1",
        account(1),
        None,
        false,
        T0,
    );
    assert_eq!(store.create_key(key.clone()).await.expect("create"), key);
}
