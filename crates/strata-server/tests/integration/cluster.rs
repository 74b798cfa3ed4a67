//! Several stateless nodes over one PostgreSQL schema (`DATABASE_URL`) and one S3 prefix
//! (the `S3_*` variables of ci/ceph-rgw.sh): any node serves any request. Each node is a
//! real server behind its own socket, as a load balancer would see them; the test picks
//! which node each request goes to, so the interleavings below are exactly the ones a
//! balancer may produce.

use std::net::SocketAddr;
use std::sync::Arc;

use aws_sdk_ebs::Client;
use strata_server::Settings;
use strata_server::app::{self, RunningServer};
use strata_server::stores::MetadataBackend;
use tempfile::TempDir;

use crate::harness::{
    ROOT_KEY, ROOT_SECRET, RawRequest, TestClock, block, client_at, fresh_engines, linear, raw_at,
};
use crate::sdk;

/// Nodes sharing a fresh schema and a fresh bucket prefix.
struct Cluster {
    _dir: TempDir,
    clock: Arc<TestClock>,
    settings: Vec<Settings>,
    nodes: Vec<Option<RunningServer>>,
}

impl Cluster {
    /// `count` nodes, started at once (so the migrations and the first secrets race too).
    async fn start(count: usize) -> Self {
        let (url, chunks) = fresh_engines().await;

        let dir = tempfile::tempdir().expect("tempdir");
        let settings: Vec<Settings> = (0..count)
            .map(|n| {
                let mut settings =
                    Settings::new(dir.path().join(format!("node-{n}"))).expect("settings");
                settings.listen = "127.0.0.1:0".parse().expect("addr");
                settings.root_key_from_env = Some((ROOT_KEY.into(), ROOT_SECRET.into()));
                settings.gc_interval = None;
                settings.metadata = MetadataBackend::Postgres(url.clone());
                settings.chunks = chunks.clone();
                settings
            })
            .collect();
        let clock = TestClock::new();
        let started = futures_join_all(settings.iter().cloned().map(|settings| {
            let clock = clock.clone() as Arc<dyn strata_core::Clock>;
            async move { app::start(&settings, clock).await.expect("node starts") }
        }))
        .await;
        Self {
            _dir: dir,
            clock,
            settings,
            nodes: started.into_iter().map(Some).collect(),
        }
    }

    fn addr(&self, node: usize) -> SocketAddr {
        self.nodes[node].as_ref().expect("node running").addr
    }

    fn client(&self, node: usize) -> Client {
        client_at(self.addr(node), &self.clock)
    }

    /// Run a collection on `node` through the admin API.
    async fn collect_garbage(&self, node: usize) -> serde_json::Value {
        let response = raw_at(
            self.addr(node),
            &self.clock,
            RawRequest::admin("POST", "/gc"),
        )
        .await;
        assert_eq!(response.status, 200, "gc: {:?}", response.body);
        response.json()
    }

    /// Stop `node` and start it again on the same settings.
    async fn restart(&mut self, node: usize) {
        if let Some(server) = self.nodes[node].take() {
            server.stop().await.expect("clean stop");
        }
        let clock = self.clock.clone() as Arc<dyn strata_core::Clock>;
        self.nodes[node] = Some(
            app::start(&self.settings[node], clock)
                .await
                .expect("restart"),
        );
    }

    async fn stop(mut self) {
        for node in self.nodes.iter_mut() {
            if let Some(server) = node.take() {
                server.stop().await.expect("clean stop");
            }
        }
    }
}

/// Await every future, each on its own task (so they run at once), outputs in order.
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("task"));
    }
    outputs
}

/// EC2 DeleteSnapshot of `id` through `node`.
async fn delete(cluster: &Cluster, node: usize, id: &str) {
    let response = raw_at(
        cluster.addr(node),
        &cluster.clock,
        RawRequest::ec2(&[("Action", "DeleteSnapshot"), ("SnapshotId", id)]),
    )
    .await;
    assert_eq!(
        response.status, 200,
        "DeleteSnapshot {id}: {:?}",
        response.body
    );
}

/// Delete the test's snapshots and collect, so the bucket prefix is left empty.
async fn empty(cluster: &Cluster, ids: &[String]) {
    for id in ids {
        delete(cluster, 0, id).await;
    }
    cluster.collect_garbage(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_start_retried_to_two_nodes_starts_one_snapshot() {
    let cluster = Cluster::start(3).await;
    let token = format!("token-{}", rand::random::<u64>());
    let start = |node: usize| {
        let client = cluster.client(node);
        let token = token.clone();
        async move {
            client
                .start_snapshot()
                .volume_size(1)
                .client_token(token)
                .send()
                .await
                .expect("StartSnapshot")
                .snapshot_id()
                .expect("id")
                .to_owned()
        }
    };
    let (first, second) = tokio::join!(start(0), start(1));
    assert_eq!(
        first, second,
        "one client token, one snapshot, whichever node answers"
    );
    assert_eq!(start(2).await, first);
    empty(&cluster, &[first]).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blocks_put_through_two_nodes_complete_on_a_third_and_read_back_from_any() {
    let cluster = Cluster::start(3).await;
    let id = sdk::start(&cluster.client(0), 1, None).await;
    let blocks: Vec<Vec<u8>> = (0..8).map(|n| block(7_000 + n)).collect();
    let puts = blocks.iter().enumerate().map(|(index, data)| {
        // Even blocks through node 0, odd ones through node 1, all at once.
        let client = cluster.client(index % 2);
        let (id, data) = (id.clone(), data.clone());
        async move { sdk::put(&client, &id, i32::try_from(index).expect("index"), &data).await }
    });
    futures_join_all(puts).await;
    let views: Vec<&[u8]> = blocks.iter().map(Vec::as_slice).collect();
    // The count and the LINEAR aggregate cover writes acknowledged by other nodes.
    sdk::complete(&cluster.client(2), &id, 8, Some(linear(&views))).await;

    // Listed on one node, read on another with that node's tokens: one token key.
    let listed = sdk::list_all(&cluster.client(1), &id, 3).await;
    assert_eq!(
        listed.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
    for (index, token) in &listed {
        let node = usize::try_from(*index).expect("index") % 3;
        let data = sdk::get(&cluster.client(node), &id, *index, token).await;
        assert_eq!(data, blocks[usize::try_from(*index).expect("index")]);
    }
    empty(&cluster, &[id]).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_completing_one_snapshot_both_answer_completed() {
    let cluster = Cluster::start(2).await;
    let id = sdk::start(&cluster.client(0), 1, None).await;
    let blocks: Vec<Vec<u8>> = (0..4).map(|n| block(8_000 + n)).collect();
    for (index, data) in blocks.iter().enumerate() {
        sdk::put(
            &cluster.client(index % 2),
            &id,
            i32::try_from(index).expect("index"),
            data,
        )
        .await;
    }
    let views: Vec<&[u8]> = blocks.iter().map(Vec::as_slice).collect();
    let aggregate = linear(&views);
    let complete = |node: usize| {
        let client = cluster.client(node);
        let (id, aggregate) = (id.clone(), aggregate.clone());
        async move { sdk::complete(&client, &id, 4, Some(aggregate)).await }
    };
    tokio::join!(complete(0), complete(1));
    let listed = sdk::list_all(&cluster.client(1), &id, 100).await;
    assert_eq!(listed.len(), 4);
    for (index, token) in &listed {
        let data = sdk::get(&cluster.client(0), &id, *index, token).await;
        assert_eq!(data, blocks[usize::try_from(*index).expect("index")]);
    }
    empty(&cluster, &[id]).await;
    cluster.stop().await;
}

/// Node 0 uploads the same content again and again, each time in a new snapshot, while
/// node 1 deletes every other snapshot the moment it completes and collects: the shared
/// content is garbage for an instant, exactly while node 0 may be announcing and recording
/// it again for the next round. Every snapshot that was not deleted must read back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_on_one_node_while_another_uploads_the_same_content_loses_nothing() {
    let mut cluster = Cluster::start(2).await;
    let shared = block(9_000);
    let rounds: u64 = 12;
    let uploader = cluster.client(0);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(u64, String)>();
    let upload = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut uploaded = Vec::new();
            for round in 0..rounds {
                let id = sdk::start(&uploader, 1, None).await;
                sdk::put(&uploader, &id, 0, &shared).await;
                let own = block(9_100 + round);
                sdk::put(&uploader, &id, 1, &own).await;
                sdk::complete(&uploader, &id, 2, None).await;
                uploaded.push((round, id.clone(), own));
                done_tx.send((round, id)).expect("the collector listens");
            }
            uploaded
        })
    };
    let mut collections = 0;
    while let Some((round, id)) = done_rx.recv().await {
        if round % 2 == 0 {
            delete(&cluster, 1, &id).await;
        }
        cluster.collect_garbage(1).await;
        collections += 1;
    }
    let uploaded = upload.await.expect("uploader");
    assert_eq!(collections, rounds);
    // Node 1 restarts (none of the cluster's state lives in its memory) and collects again.
    cluster.restart(1).await;
    cluster.collect_garbage(1).await;
    let kept: Vec<_> = uploaded
        .iter()
        .filter(|(round, _, _)| round % 2 == 1)
        .collect();
    for (round, id, own) in &kept {
        for node in 0..2 {
            let listed = sdk::list_all(&cluster.client(node), id, 10).await;
            assert_eq!(listed.len(), 2, "round {round}");
            let first = sdk::get(&cluster.client(node), id, 0, &listed[0].1).await;
            let second = sdk::get(&cluster.client(node), id, 1, &listed[1].1).await;
            assert!(
                first == shared && second == *own,
                "round {round}'s snapshot reads back whole from node {node}"
            );
        }
    }
    let ids: Vec<String> = kept.iter().map(|(_, id, _)| id.clone()).collect();
    empty(&cluster, &ids).await;
    cluster.stop().await;
}
