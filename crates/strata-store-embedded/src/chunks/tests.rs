use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};

use super::*;

fn block(byte: u8) -> Bytes {
    // Aligned like the receive buffers, so the O_DIRECT path is the one tested.
    let mut buffer = strata_core::buffers::aligned_buffer(strata_types::BLOCK_SIZE);
    buffer.resize(strata_types::BLOCK_SIZE, byte);
    buffer[0] = byte.wrapping_add(1);
    buffer.freeze()
}

fn small_segments() -> ChunkStoreOptions {
    ChunkStoreOptions {
        segment_bytes: 3 * strata_types::BLOCK_SIZE as u64,
    }
}

/// Bytes the segment files occupy on disk (holes excluded), in whole blocks (leaving out
/// the file system's few KiB of extent blocks).
fn allocated(root: &Path) -> u64 {
    let bytes: u64 = fs::read_dir(root.join("segments"))
        .expect("segments")
        .map(|e| e.expect("entry").metadata().expect("stat").blocks() * 512)
        .sum();
    let block = strata_types::BLOCK_SIZE as u64;
    bytes / block * block
}

/// Where `data` is stored (it must be).
fn location_of(store: &FsChunkStore, data: &[u8]) -> ChunkLocation {
    store
        .locate(&ChunkDigest::of(data))
        .expect("locate")
        .expect("stored")
}

/// Every chunk of `expected` reads back identical.
async fn assert_reads_back(store: &FsChunkStore, expected: impl IntoIterator<Item = &Bytes>) {
    for data in expected {
        let read = store.get(ChunkDigest::of(data)).await.expect("get");
        assert_eq!(read.as_ref(), Some(data));
    }
}

#[tokio::test]
async fn chunks_round_trip_and_writes_are_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsChunkStore::open(dir.path().join("chunks")).expect("open");
    for data in [Bytes::from(vec![9u8; 1000]), block(1)] {
        let digest = ChunkDigest::of(&data);
        assert_eq!(store.get(digest).await.expect("get"), None);
        store.put(digest, data.clone()).await.expect("put");
        let first = store.locate(&digest).expect("locate");
        store.put(digest, data.clone()).await.expect("put again");
        assert_eq!(store.locate(&digest).expect("locate"), first, "stored once");
        assert_eq!(store.get(digest).await.expect("get"), Some(data.clone()));
        let location = store.locate(&digest).expect("locate").expect("stored");
        assert_eq!(location.len, data.len() as u64);
        assert_eq!(location.offset % 4096, 0);
    }
    assert_eq!(store.list(None, 10).await.expect("list").len(), 2);
}

#[tokio::test]
async fn chunks_survive_a_reopen_and_fill_segment_after_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("chunks");
    let blocks: Vec<Bytes> = (0..7).map(block).collect();
    {
        let store = FsChunkStore::open_with(&root, small_segments()).expect("open");
        for data in &blocks[..5] {
            store
                .put(ChunkDigest::of(data), data.clone())
                .await
                .expect("put");
        }
    }
    let store = FsChunkStore::open_with(&root, small_segments()).expect("reopen");
    for data in &blocks[5..] {
        store
            .put(ChunkDigest::of(data), data.clone())
            .await
            .expect("put");
    }
    let mut segments = Vec::new();
    for data in &blocks {
        let digest = ChunkDigest::of(data);
        assert_eq!(store.get(digest).await.expect("get").as_ref(), Some(data));
        segments.push(store.locate(&digest).expect("locate").expect("stored").path);
    }
    segments.dedup();
    // 3 + 2 before the reopen; after it, a new segment (never appending to an old one).
    assert_eq!(segments.len(), 3, "{segments:?}");
}

#[tokio::test]
async fn damaged_or_missing_bytes_are_never_returned_and_an_upload_repairs_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("chunks");
    // Two chunks per segment: `flipped` and `cut` share one, `lost` has the next.
    let options = ChunkStoreOptions {
        segment_bytes: 2 * strata_types::BLOCK_SIZE as u64,
    };
    let store = FsChunkStore::open_with(&root, options).expect("open");
    let (flipped, cut, lost) = (block(7), block(8), block(9));
    for data in [&flipped, &cut, &lost] {
        store
            .put(ChunkDigest::of(data), data.clone())
            .await
            .expect("put");
    }
    let (at_flipped, at_cut, at_lost) = (
        location_of(&store, &flipped),
        location_of(&store, &cut),
        location_of(&store, &lost),
    );
    assert_eq!(at_flipped.path, at_cut.path);
    assert_ne!(at_cut.path, at_lost.path);

    // Each kind of damage is reported, and the damaged chunk forgotten: a later read finds
    // nothing, so the next upload stores it again.
    let file = fs::OpenOptions::new()
        .write(true)
        .open(&at_flipped.path)
        .expect("segment");
    file.write_all_at(&[0x55], at_flipped.offset + 1234)
        .expect("corrupt one byte");
    file.set_len(at_cut.offset + 100).expect("truncate");
    let expect_damage = async |data: &Bytes, symptom: &str| {
        let digest = ChunkDigest::of(data);
        let error = store.get(digest).await.expect_err("damaged");
        assert!(
            matches!(&error, StoreError::Corrupt(why) if why.contains(symptom)),
            "{error:?}"
        );
        assert_eq!(store.get(digest).await.expect("get"), None, "forgotten");
        assert!(store.locate(&digest).expect("locate").is_none());
    };
    expect_damage(&flipped, "failed its checksum").await;
    expect_damage(&cut, "ends before").await;
    // The segment file gone (reopened, so no cached descriptor still reaches it).
    drop((file, store));
    fs::remove_file(&at_lost.path).expect("remove");
    let store = FsChunkStore::open_with(&root, options).expect("reopen");
    let error = store
        .get(ChunkDigest::of(&lost))
        .await
        .expect_err("missing");
    assert!(
        matches!(&error, StoreError::Corrupt(why) if why.contains("is missing")),
        "{error:?}"
    );
    assert_eq!(store.get(ChunkDigest::of(&lost)).await.expect("get"), None);

    // Uploading the same content again repairs all three, in new segments: none reuses
    // the id of the missing one.
    for data in [&flipped, &cut, &lost] {
        store
            .put(ChunkDigest::of(data), data.clone())
            .await
            .expect("put again");
        let placed = location_of(&store, data);
        assert!(![&at_flipped.path, &at_lost.path].contains(&&placed.path));
    }
    assert_reads_back(&store, [&flipped, &cut, &lost]).await;
}

#[tokio::test]
async fn deletion_frees_the_space_of_what_it_names_and_a_put_stores_it_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("chunks");
    let store = FsChunkStore::open(&root).expect("open");
    let (kept, doomed) = (block(1), block(2));
    for data in [&kept, &doomed] {
        store
            .put(ChunkDigest::of(data), data.clone())
            .await
            .expect("put");
    }
    let (kept_digest, doomed_digest) = (ChunkDigest::of(&kept), ChunkDigest::of(&doomed));
    let listed = store.list(None, 10).await.expect("list");
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|c| c.size == strata_types::BLOCK_SIZE as u64)
    );
    let full = allocated(&root);
    let freed = store
        .delete(vec![doomed_digest, doomed_digest])
        .await
        .expect("delete");
    assert_eq!(freed, strata_types::BLOCK_SIZE as u64);
    assert_eq!(store.get(doomed_digest).await.expect("get"), None);
    assert_eq!(
        store.get(kept_digest).await.expect("get"),
        Some(kept.clone())
    );
    assert_eq!(allocated(&root), full - strata_types::BLOCK_SIZE as u64);
    // A put after the deletion stores it again.
    store
        .put(doomed_digest, doomed.clone())
        .await
        .expect("put again");
    assert_eq!(store.get(doomed_digest).await.expect("get"), Some(doomed));
    let freed = store
        .delete(vec![kept_digest, doomed_digest])
        .await
        .expect("delete");
    assert_eq!(freed, 2 * strata_types::BLOCK_SIZE as u64);
    assert!(store.list(None, 10).await.expect("list").is_empty());
}

#[tokio::test]
async fn reopening_reclaims_interrupted_writes_and_empty_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("chunks");
    let (first, second, third) = (block(1), block(2), block(3));
    let orphan_segment;
    {
        let store = FsChunkStore::open_with(&root, small_segments()).expect("open");
        for data in [&first, &second, &third] {
            store
                .put(ChunkDigest::of(data), data.clone())
                .await
                .expect("put");
        }
        // Segment 1 is full; free the middle chunk, then fake an interrupted write: bytes
        // past the last entry that no entry covers, and a segment with no entry at all.
        store
            .delete(vec![ChunkDigest::of(&second)])
            .await
            .expect("delete");
        let location = location_of(&store, &third);
        let segment = fs::OpenOptions::new()
            .write(true)
            .open(&location.path)
            .expect("segment");
        segment
            .write_all_at(&second, location.offset + location.len)
            .expect("write an unindexed slot");
        orphan_segment = root.join("segments").join(segments::file_name(40));
        fs::write(&orphan_segment, &second[..]).expect("orphan");
        // A segment created but never written to (a rollover interrupted), and one whose
        // every slot is a hole: no data in either.
        fs::write(root.join("segments").join(segments::file_name(41)), b"").expect("empty");
        let holes =
            fs::File::create(root.join("segments").join(segments::file_name(42))).expect("holes");
        holes.set_len(3 * 4096).expect("sparse");
    }
    let before = allocated(&root);
    let store = FsChunkStore::open_with(&root, small_segments()).expect("reopen");
    let block_bytes = strata_types::BLOCK_SIZE as u64;
    assert_eq!(before - allocated(&root), 2 * block_bytes);
    assert_eq!(allocated(&root), 2 * block_bytes);
    // The segment with bytes but no entry is moved aside, not deleted (the index may be
    // older than it); those without data are removed.
    assert!(!orphan_segment.exists());
    let kept = root.join("lost+found").join(segments::file_name(40));
    assert_eq!(fs::read(&kept).expect("moved aside"), second[..]);
    for id in [41, 42] {
        assert!(!root.join("segments").join(segments::file_name(id)).exists());
        assert!(
            !root
                .join("lost+found")
                .join(segments::file_name(id))
                .exists()
        );
    }
    assert_reads_back(&store, [&first, &third]).await;
    // New writes go after every segment seen, the removed ones included.
    store
        .put(ChunkDigest::of(&second), second.clone())
        .await
        .expect("put");
    let location = location_of(&store, &second);
    assert_eq!(
        location.path,
        root.join("segments").join(segments::file_name(43))
    );
}

/// Every segment file of `root` and its bytes.
fn segment_files(root: &Path) -> Vec<(std::ffi::OsString, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(root.join("segments"))
        .expect("segments")
        .map(|entry| {
            let entry = entry.expect("entry");
            (entry.file_name(), fs::read(entry.path()).expect("read"))
        })
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn a_missing_index_refuses_to_open_and_deletes_no_segment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("chunks");
    let blocks: Vec<Bytes> = (1..=4).map(block).collect();
    {
        let store = FsChunkStore::open_with(&root, small_segments()).expect("open");
        for data in &blocks {
            store
                .put(ChunkDigest::of(data), data.clone())
                .await
                .expect("put");
        }
    }
    let before = segment_files(&root);
    assert_eq!(before.len(), 2, "two segments were written");
    fs::remove_file(root.join("index.redb")).expect("lose the index");

    // Refused every time (no empty index is left behind to be trusted the next time), and
    // every segment byte is still there.
    for _ in 0..2 {
        let error = FsChunkStore::open_with(&root, small_segments()).expect_err("refused");
        assert!(
            matches!(&error, StoreError::Backend(why) if why.contains("index.redb is missing") && why.contains("Restore index.redb")),
            "{error:?}"
        );
        assert!(!root.join("index.redb").exists());
        assert_eq!(segment_files(&root), before);
    }
    // An index that is there but empty (a zero-length file) is missing too.
    fs::write(root.join("index.redb"), b"").expect("empty index");
    let error = FsChunkStore::open_with(&root, small_segments()).expect_err("refused");
    assert!(
        matches!(&error, StoreError::Backend(why) if why.contains("index.redb")),
        "{error:?}"
    );
    assert_eq!(segment_files(&root), before);
}

#[tokio::test]
async fn chunk_files_of_format_1_are_imported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("chunks");
    let good = block(4);
    let digest = ChunkDigest::of(&good);
    let hex = digest.to_hex();
    let fan_out = root.join(&hex[0..2]).join(&hex[2..4]);
    fs::create_dir_all(&fan_out).expect("fan-out");
    fs::create_dir_all(root.join("tmp")).expect("tmp");
    fs::write(fan_out.join(&hex), &good).expect("v1 chunk");
    fs::write(root.join("tmp").join("half-written"), b"partial").expect("tmp file");
    // A damaged file is kept, not imported.
    let damaged_digest = ChunkDigest::of(b"something else");
    let damaged_hex = damaged_digest.to_hex();
    let damaged_dir = root.join(&damaged_hex[0..2]).join(&damaged_hex[2..4]);
    fs::create_dir_all(&damaged_dir).expect("fan-out");
    fs::write(damaged_dir.join(&damaged_hex), b"not that").expect("damaged");

    let store = FsChunkStore::open(&root).expect("open");
    assert_eq!(store.get(digest).await.expect("get"), Some(good));
    assert!(!fan_out.exists());
    assert!(!root.join("tmp").exists());
    assert!(damaged_dir.join(&damaged_hex).exists());
    assert_eq!(store.get(damaged_digest).await.expect("get"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_share_group_commits_and_all_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("chunks");
    let store = FsChunkStore::open_with(&root, small_segments()).expect("open");
    let blocks: Vec<Bytes> = (0..48).map(|n| block(n % 16)).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for data in blocks.clone() {
        let store = store.clone();
        tasks.spawn(async move { store.put(ChunkDigest::of(&data), data).await });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("task").expect("put");
    }
    assert_reads_back(&store, &blocks).await;
    assert_eq!(store.list(None, 100).await.expect("list").len(), 16);
    // Each content was written once: the puts of the same content that ran concurrently
    // waited for the first and found it stored.
    assert_eq!(allocated(&root), 16 * strata_types::BLOCK_SIZE as u64);
    // Shared: 16 new chunks (plus the index creation's group, if any) in fewer groups
    // than chunks. One commit per chunk would make this 16 or more.
    let groups = store.commit_groups();
    assert!(groups < 16, "{groups} commit groups for 16 new chunks");
}

/// The names of the segment files of `root`.
fn segment_names(root: &Path) -> Vec<std::ffi::OsString> {
    segment_files(root)
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

#[tokio::test]
async fn a_failed_rollover_does_not_block_later_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("chunks");
    let store = FsChunkStore::open_with(&root, small_segments()).expect("open");
    let data = block(1);
    let digest = ChunkDigest::of(&data);
    // The new segment's file is created, then the rollover fails.
    store
        .inner
        .segments
        .faults
        .rollover
        .store(true, std::sync::atomic::Ordering::SeqCst);
    store
        .put(digest, data.clone())
        .await
        .expect_err("the rollover fails");
    assert!(store.locate(&digest).expect("locate").is_none());
    // The next put rolls over again, to a new segment, and the half-made one is gone.
    store
        .put(digest, data.clone())
        .await
        .expect("a put after a failed rollover");
    assert_reads_back(&store, [&data]).await;
    let placed = location_of(&store, &data);
    assert_eq!(
        segment_names(&root),
        vec![placed.path.file_name().expect("name").to_owned()]
    );
}

#[tokio::test]
async fn a_media_error_forgets_the_chunk_and_a_transient_error_does_not() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("chunks");
    let store = FsChunkStore::open(&root).expect("open");
    let (kept, lost) = (block(1), block(2));
    for data in [&kept, &lost] {
        store
            .put(ChunkDigest::of(data), data.clone())
            .await
            .expect("put");
    }
    let faults = Arc::clone(&store.inner.segments.faults);

    // Errors of the moment (no descriptors, no memory, try again) say nothing about the
    // bytes: reported, nothing forgotten.
    let digest = ChunkDigest::of(&kept);
    for errno in [libc::EMFILE, libc::ENOMEM, libc::EAGAIN] {
        faults.read_errno.store(errno, SeqCst);
        let error = store.get(digest).await.expect_err("a transient error");
        assert!(
            matches!(&error, StoreError::Io { .. }),
            "an I/O error, not corruption: {error:?}"
        );
        faults.read_errno.store(0, SeqCst);
        assert!(store.locate(&digest).expect("locate").is_some(), "{errno}");
    }
    assert_reads_back(&store, [&kept]).await;

    // A media error (EIO) is damage: reported as such and forgotten, so the next upload of
    // the content stores it again.
    let digest = ChunkDigest::of(&lost);
    let at_first = location_of(&store, &lost);
    faults.read_errno.store(libc::EIO, SeqCst);
    let error = store.get(digest).await.expect_err("a media error");
    faults.read_errno.store(0, SeqCst);
    assert!(matches!(&error, StoreError::Corrupt(_)), "{error:?}");
    assert!(
        store.locate(&digest).expect("locate").is_none(),
        "forgotten"
    );
    assert_eq!(store.get(digest).await.expect("get"), None);
    store.put(digest, lost.clone()).await.expect("put again");
    assert_ne!(location_of(&store, &lost), at_first, "stored afresh");
    assert_reads_back(&store, [&kept, &lost]).await;
}
