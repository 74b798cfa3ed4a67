//! The web console end to end (issue 14): a `strata serve` process holding a chain of 50
//! snapshots and a branched tree, and Debian's Chromium, headless, driven by playwright-core
//! (`console-test/console.mjs`): sign in with an access key, find a snapshot by its tag,
//! open its lineage, check the graph's nodes and edges against the snapshots made and
//! against the API, the snapshot page, the 50-long chain, the storage and activity pages,
//! sign out; and a screenshot of the lineage, written to a temporary file, or to
//! `docs/img/console-lineage.png` (README shows it) with `STRATA_UPDATE_SCREENSHOT=1`, so an
//! ordinary run leaves the checkout as it was.
//!
//! Never skipped: without Chromium or the script's `node_modules` the test fails, naming
//! what is missing and how `ci/test` installs it.

#[path = "shared/nodes.rs"]
mod nodes;

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use strata_cli::SnapshotClient;
use strata_cli::api::StartRequest;
use strata_types::{BlockIndex, ChunkDigest, SnapshotId, VolumeSize};

use nodes::{Cluster, KEY, SECRET, admin, block, strata_binary, text};

/// Snapshots of the chain.
const CHAIN: usize = 50;
const CHROMIUM: &str = "/usr/bin/chromium";

/// What the test made of one snapshot: the graph the console must draw.
struct Made {
    id: SnapshotId,
    parent: Option<SnapshotId>,
    /// Blocks changed against the parent (each written once, with new content).
    changed: usize,
}

/// Start a snapshot, write `blocks` (index, seed) with new content, complete it.
async fn snapshot(
    client: &SnapshotClient,
    parent: Option<&SnapshotId>,
    tags: &[(&str, &str)],
    description: &str,
    blocks: &[(u32, u64)],
) -> Made {
    let started = client
        .start_snapshot(&StartRequest {
            volume_size: VolumeSize::from_gib(1).expect("size"),
            parent: parent.cloned(),
            description: Some(description.to_owned()),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            timeout_minutes: None,
            encrypted: false,
            kms_key_arn: None,
        })
        .await
        .expect("StartSnapshot");
    let id = started.snapshot;
    let mut sorted = blocks.to_vec();
    sorted.sort_unstable();
    let mut aggregate = Sha256::new();
    for (index, seed) in &sorted {
        let (data, digest) = block(*seed, *index);
        client
            .put_block(&id, BlockIndex::new(*index), &data, &digest, None, true)
            .await
            .unwrap_or_else(|e| panic!("PutSnapshotBlock {index}: {e}"));
        aggregate.update(digest.0);
    }
    client
        .complete_snapshot(
            &id,
            sorted.len() as u64,
            &ChunkDigest(aggregate.finalize().into()),
        )
        .await
        .expect("CompleteSnapshot");
    Made {
        id,
        parent: parent.cloned(),
        changed: blocks.len(),
    }
}

fn graph(made: &[Made]) -> serde_json::Value {
    made.iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id.as_str(),
                "parent": m.parent.as_ref().map(SnapshotId::as_str),
                "changed": m.changed,
            })
        })
        .collect()
}

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the repository")
        .to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_signs_in_finds_a_snapshot_by_tag_and_draws_its_lineage() {
    let script_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("console-test");
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium; ci/test does)"
    );
    assert!(
        script_dir.join("node_modules/playwright-core").is_dir(),
        "{}/node_modules/playwright-core is missing: run npm ci there (ci/test does)",
        script_dir.display()
    );

    let server = Cluster::start_embedded(strata_binary());
    let endpoint = server.endpoint(0);
    let client = server.client(0);

    // The chain: a base of 2 blocks, then 49 snapshots each rewriting one block.
    let mut chain = vec![
        snapshot(
            &client,
            None,
            &[("volume", "chain")],
            "chain base",
            &[(0, 1), (1, 2)],
        )
        .await,
    ];
    for n in 1..CHAIN {
        let parent = chain[n - 1].id.clone();
        let index = u32::try_from(n % 8).expect("small");
        chain.push(
            snapshot(
                &client,
                Some(&parent),
                &[],
                &format!("chain {n}"),
                &[(index, 1000 + n as u64)],
            )
            .await,
        );
    }
    // The tree: a base with two branches, one of which forks again.
    let base = snapshot(
        &client,
        None,
        &[("volume", "tree")],
        "tree base",
        &[(0, 11), (1, 12), (2, 13)],
    )
    .await;
    let a1 = snapshot(&client, Some(&base.id), &[], "branch a", &[(1, 21)]).await;
    let a2 = snapshot(
        &client,
        Some(&a1.id),
        &[],
        "branch a, later",
        &[(2, 22), (5, 23)],
    )
    .await;
    let b1 = snapshot(
        &client,
        Some(&base.id),
        &[],
        "branch b",
        &[(0, 31), (3, 32)],
    )
    .await;
    let b2 = snapshot(
        &client,
        Some(&b1.id),
        &[("release", "v2")],
        "release v2",
        &[(4, 33)],
    )
    .await;
    let b3 = snapshot(
        &client,
        Some(&b1.id),
        &[],
        "branch b fork",
        &[(6, 34), (7, 35), (8, 36)],
    )
    .await;
    let tagged = b2.id.clone();
    let tree = vec![base, a1, a2, b1, b2, b3];
    // Duplicate and zero content, for the storage page's savings.
    let zero = bytes::Bytes::from(vec![0u8; strata_types::BLOCK_SIZE]);
    let zero_digest = ChunkDigest(Sha256::digest(&zero).into());
    let extra = client
        .start_snapshot(&StartRequest {
            volume_size: VolumeSize::from_gib(1).expect("size"),
            parent: None,
            description: Some("duplicates and zeros".into()),
            tags: Vec::new(),
            timeout_minutes: None,
            encrypted: false,
            kms_key_arn: None,
        })
        .await
        .expect("StartSnapshot")
        .snapshot;
    let (same, same_digest) = block(11, 0);
    client
        .put_block(&extra, BlockIndex::new(0), &same, &same_digest, None, true)
        .await
        .expect("duplicate block");
    client
        .put_block(&extra, BlockIndex::new(1), &zero, &zero_digest, None, true)
        .await
        .expect("zero block");
    let mut aggregate = Sha256::new();
    aggregate.update(same_digest.0);
    aggregate.update(zero_digest.0);
    client
        .complete_snapshot(&extra, 2, &ChunkDigest(aggregate.finalize().into()))
        .await
        .expect("CompleteSnapshot");
    // A collection and a scrub, for the activity page.
    for args in [&["gc"][..], &["verify", "--all", "--rate-mib", "0"][..]] {
        let run = admin(&strata_binary(), &endpoint, args);
        assert!(run.status.success(), "{args:?}: {}", text(&run.stderr));
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let screenshot = if std::env::var_os("STRATA_UPDATE_SCREENSHOT").is_some() {
        repository_root().join("docs/img/console-lineage.png")
    } else {
        dir.path().join("console-lineage.png")
    };
    let spec = serde_json::json!({
        "endpoint": endpoint,
        "key": KEY,
        "secret": SECRET,
        "chromium": CHROMIUM,
        "tag": "release=v2",
        "tagged": tagged.as_str(),
        "tree": graph(&tree),
        "chain": graph(&chain),
        "chainTip": chain[CHAIN - 1].id.as_str(),
        "screenshot": screenshot,
    });
    let spec_file = dir.path().join("spec.json");
    std::fs::write(&spec_file, spec.to_string()).expect("spec");
    let run = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("console.mjs")
            .arg(&spec_file)
            .current_dir(&script_dir)
            .output()
    })
    .await
    .expect("joined")
    .expect("node runs (is Node.js installed?)");
    assert!(
        run.status.success(),
        "the console script failed:\n{}\n{}\nserver:\n{}",
        text(&run.stdout),
        text(&run.stderr),
        server.logs()
    );
    assert!(text(&run.stdout).contains("console checks passed"));
    let png = std::fs::read(&screenshot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
}
