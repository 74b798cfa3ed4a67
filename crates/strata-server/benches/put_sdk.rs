//! PutSnapshotBlock throughput with 64 concurrent `aws-sdk-ebs` clients against a real
//! `strata` server on 127.0.0.1 (embedded store on the local disk, durable on ack).
//!
//! ```sh
//! cargo bench -p strata-server --bench put_sdk
//! STRATA_BENCH_BLOCKS=8192 STRATA_BENCH_RUNS=5 cargo bench -p strata-server --bench put_sdk
//! ```
//! Each run uploads distinct random blocks (no dedup) into a fresh data directory, then
//! completes the snapshot. The clients compute each block's SHA-256 as real clients do, on
//! the same two cores as the server, so this is an end-to-end figure, not the server's
//! ceiling (issue 5's harness measures that against a sink).

#[allow(dead_code)]
#[path = "../tests/integration/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use aws_sdk_ebs::types::ChecksumAlgorithm;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct RunResult {
    blocks_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn run_once(blocks: usize, concurrency: usize) -> RunResult {
    let server = harness::Harness::new().into_socket().await;
    let setup = server.client();
    let id = setup
        .start_snapshot()
        .volume_size(64)
        .send()
        .await
        .expect("start")
        .snapshot_id()
        .expect("id")
        .to_owned();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            // One client (and connection pool) per worker: 64 independent SDK clients.
            let client = server.client();
            let id = id.clone();
            let next = next.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut data = harness::block(worker as u64 + 1);
                loop {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if index >= blocks {
                        break latencies;
                    }
                    // Distinct content per block: stamp the index into the buffer.
                    data[..8].copy_from_slice(&(index as u64).to_le_bytes());
                    let checksum = harness::checksum(&data);
                    let sent = Instant::now();
                    client
                        .put_snapshot_block()
                        .snapshot_id(&id)
                        .block_index(i32::try_from(index).expect("index"))
                        .block_data(data.clone().into())
                        .data_length(524_288)
                        .checksum(checksum)
                        .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
                        .send()
                        .await
                        .expect("put");
                    latencies.push(sent.elapsed());
                }
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.expect("worker"));
    }
    let elapsed = started.elapsed();
    setup
        .complete_snapshot()
        .snapshot_id(&id)
        .changed_blocks_count(i32::try_from(blocks).expect("count"))
        .send()
        .await
        .expect("complete");
    drop(setup);
    server.stop().await;
    latencies.sort_unstable();
    let percentile = |p: f64| {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i].as_secs_f64() * 1000.0
    };
    RunResult {
        blocks_per_sec: blocks as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
    }
}

fn main() {
    let blocks = env_number("STRATA_BENCH_BLOCKS", 4096);
    let concurrency = env_number("STRATA_BENCH_CONCURRENCY", 64);
    let runs = env_number("STRATA_BENCH_RUNS", 3).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut results = Vec::new();
    for run in 1..=runs {
        let result = runtime.block_on(run_once(blocks, concurrency));
        println!(
            "run={run} blocks={blocks} concurrency={concurrency} blocks_per_s={:.0} MiB_per_s={:.0} p50_ms={:.1} p99_ms={:.1}",
            result.blocks_per_sec,
            result.blocks_per_sec / 2.0,
            result.p50_ms,
            result.p99_ms
        );
        results.push(result);
    }
    results.sort_by(|a, b| a.blocks_per_sec.total_cmp(&b.blocks_per_sec));
    let median = &results[results.len() / 2];
    let (low, high) = (&results[0], &results[results.len() - 1]);
    println!(
        "put_sdk median: blocks_per_s={:.0} (range {:.0}..{:.0}) MiB_per_s={:.0} p50_ms={:.1} p99_ms={:.1}",
        median.blocks_per_sec,
        low.blocks_per_sec,
        high.blocks_per_sec,
        median.blocks_per_sec / 2.0,
        median.p50_ms,
        median.p99_ms
    );
}
