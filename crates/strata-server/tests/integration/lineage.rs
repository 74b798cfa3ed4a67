//! Incremental snapshots: a three-generation lineage, inherited blocks, and
//! ListChangedBlocks in both directions.

use std::collections::BTreeMap;

use aws_sdk_ebs::Client;
use aws_sdk_ebs::error::ProvideErrorMetadata;

use crate::harness::{Harness, block};
use crate::sdk::{complete, get, list_all, put, start};

/// (index, first token?, second token?) for every changed block, through the paginator.
async fn changed(
    client: &Client,
    first: Option<&str>,
    second: &str,
    page: i32,
) -> Vec<(i32, Option<String>, Option<String>)> {
    let pages: Vec<_> = client
        .list_changed_blocks()
        .set_first_snapshot_id(first.map(str::to_owned))
        .second_snapshot_id(second)
        .max_results(page)
        .into_paginator()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("ListChangedBlocks");
    pages
        .iter()
        .flat_map(|p| p.changed_blocks())
        .map(|b| {
            (
                b.block_index().expect("index"),
                b.first_block_token().map(str::to_owned),
                b.second_block_token().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test]
async fn three_generations_inherit_and_diff_both_ways() {
    let harness = Harness::new();
    let client = harness.client();

    // A: blocks 0..10 with content i.
    let a = start(&client, 1, None).await;
    for i in 0..10 {
        put(&client, &a, i, &block(i as u64)).await;
    }
    complete(&client, &a, 10, None).await;
    // B (child of A): rewrites 2 and 3, adds 20; rewrites 4 with identical content.
    let b = start(&client, 1, Some(&a)).await;
    put(&client, &b, 2, &block(102)).await;
    put(&client, &b, 3, &block(103)).await;
    put(&client, &b, 20, &block(120)).await;
    put(&client, &b, 4, &block(4)).await;
    complete(&client, &b, 4, None).await;
    // C (child of B): sets 3 back to A's content, adds 21.
    let c = start(&client, 1, Some(&b)).await;
    put(&client, &c, 3, &block(3)).await;
    put(&client, &c, 21, &block(121)).await;
    complete(&client, &c, 2, None).await;

    // C lists every block of its lineage, with its own content.
    let mut expected_c: BTreeMap<i32, Vec<u8>> = (0..10).map(|i| (i, block(i as u64))).collect();
    expected_c.insert(2, block(102));
    expected_c.insert(20, block(120));
    expected_c.insert(21, block(121));
    let listed = list_all(&client, &c, 100).await;
    assert_eq!(
        listed.iter().map(|b| b.0).collect::<Vec<_>>(),
        expected_c.keys().copied().collect::<Vec<_>>()
    );
    for (index, token) in &listed {
        assert_eq!(&get(&client, &c, *index, token).await, &expected_c[index]);
    }

    // A -> C: content changed at 2, 20, 21 (3 is back to A's content; 4 never changed).
    let a_to_c = changed(&client, Some(&a), &c, 100).await;
    assert_eq!(
        a_to_c.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![2, 20, 21]
    );
    let (_, first, second) = &a_to_c[0];
    let first = first.as_deref().expect("A has block 2");
    let second = second.as_deref().expect("C has block 2");
    assert_eq!(get(&client, &a, 2, first).await, block(2));
    assert_eq!(get(&client, &c, 2, second).await, block(102));
    assert!(
        a_to_c[1].1.is_none() && a_to_c[1].2.is_some(),
        "20 is only in C"
    );

    // C -> A: the same indexes; blocks only in the first snapshot carry only FirstBlockToken.
    let c_to_a = changed(&client, Some(&c), &a, 100).await;
    assert_eq!(
        c_to_a.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![2, 20, 21]
    );
    assert!(c_to_a[1].1.is_some() && c_to_a[1].2.is_none());
    let only_first = c_to_a[1].1.as_deref().expect("token");
    assert_eq!(get(&client, &c, 20, only_first).await, block(120));

    // B -> C and siblings' view.
    let b_to_c = changed(&client, Some(&b), &c, 100).await;
    assert_eq!(b_to_c.iter().map(|c| c.0).collect::<Vec<_>>(), vec![3, 21]);

    // Without a first snapshot: every block of the second, SecondBlockToken only.
    let all = changed(&client, None, &c, 100).await;
    assert_eq!(all.len(), expected_c.len());
    assert!(all.iter().all(|c| c.1.is_none() && c.2.is_some()));

    // ChangedBlocks of a snapshot with itself: nothing.
    assert!(changed(&client, Some(&c), &c, 100).await.is_empty());

    // Unrelated snapshots are refused.
    let other = start(&client, 1, None).await;
    complete(&client, &other, 0, None).await;
    let error = client
        .list_changed_blocks()
        .first_snapshot_id(&a)
        .second_snapshot_id(&other)
        .send()
        .await
        .expect_err("unrelated");
    assert_eq!(error.code(), Some("ValidationException"));
    assert_eq!(
        error.message(),
        Some(format!("{a} and {other} are not related").as_str())
    );
}

#[tokio::test]
async fn changed_blocks_page_through_a_large_diff() {
    let harness = Harness::new();
    let client = harness.client();
    let parent = start(&client, 1, None).await;
    complete(&client, &parent, 0, None).await;
    let child = start(&client, 1, Some(&parent)).await;
    let zero = vec![0u8; crate::harness::BLOCK];
    for i in 0..350 {
        put(&client, &child, i * 5, &zero).await;
    }
    complete(&client, &child, 350, None).await;
    let found = changed(&client, Some(&parent), &child, 100).await;
    assert_eq!(found.len(), 350);
    assert_eq!(
        found.iter().map(|c| c.0).collect::<Vec<_>>(),
        (0..350).map(|i| i * 5).collect::<Vec<_>>()
    );
    let page = client
        .list_changed_blocks()
        .first_snapshot_id(&parent)
        .second_snapshot_id(&child)
        .starting_block_index(1000)
        .max_results(100)
        .send()
        .await
        .expect("page");
    assert_eq!(
        page.changed_blocks().first().and_then(|b| b.block_index()),
        Some(1000)
    );
    assert_eq!(page.changed_blocks().len(), 100);
    assert!(page.next_token().is_some());
    assert_eq!(page.volume_size(), Some(1));
}
