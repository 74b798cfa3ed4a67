//! A restart loses nothing: pending snapshots stay pending with their blocks, completed
//! ones stay readable, and tokens issued before the restart still work.

use crate::harness::{Harness, block};
use crate::sdk::{complete, get, list_all, put, start};

#[tokio::test]
async fn restart_keeps_pending_and_completed_snapshots() {
    let harness = Harness::new();
    let client = harness.client();
    let done = start(&client, 1, None).await;
    put(&client, &done, 1, &block(1)).await;
    complete(&client, &done, 1, None).await;
    let tokens = list_all(&client, &done, 100).await;
    let pending = start(&client, 1, Some(&done)).await;
    put(&client, &pending, 2, &block(2)).await;
    drop(client);

    let harness = harness.restart();
    let client = harness.client();
    // The block token from before the restart still reads the block.
    assert_eq!(get(&client, &done, 1, &tokens[0].1).await, block(1));
    // The pending snapshot still has its block and accepts more.
    put(&client, &pending, 3, &block(3)).await;
    complete(&client, &pending, 2, None).await;
    let blocks = list_all(&client, &pending, 100).await;
    assert_eq!(
        blocks.iter().map(|b| b.0).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(get(&client, &pending, 2, &blocks[1].1).await, block(2));
    drop(client);

    // And once more, after completion.
    let harness = harness.restart();
    let client = harness.client();
    let blocks = list_all(&client, &pending, 100).await;
    assert_eq!(blocks.len(), 3);
    assert_eq!(get(&client, &pending, 3, &blocks[2].1).await, block(3));
}
