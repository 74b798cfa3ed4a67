//! Shared by the test binaries: a store on the test bucket under a prefix of its own.

#![allow(dead_code)]

use strata_core::ports::ChunkStore;
use strata_store_s3::{S3ChunkStore, S3Location, S3Settings};

/// The variables that name the test object store (exported by `ceph_up` in ci/ceph-rgw.sh).
pub const VARS: [&str; 5] = [
    "S3_ENDPOINT",
    "S3_REGION",
    "S3_BUCKET",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
];

/// A variable of [`VARS`]. Fails (never skips) without it: these tests need a real store.
pub fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the S3 tests need an S3-compatible server \
             (`source ci/ceph-rgw.sh && ceph_install && ceph_up` exports {})",
            VARS.join(", ")
        )
    })
}

/// Settings for the test bucket under `prefix`.
pub fn settings(prefix: &str) -> S3Settings {
    let location = S3Location::parse(&format!("s3://{}/{prefix}", var("S3_BUCKET")))
        .expect("test bucket location");
    S3Settings::new(
        location,
        Some(var("S3_ENDPOINT")),
        var("S3_REGION"),
        var("S3_ACCESS_KEY"),
        var("S3_SECRET_KEY"),
    )
}

/// A fresh prefix, so tests running at once never see each other's chunks.
pub fn fresh_prefix() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}

/// Removes every chunk under its prefix when the test ends.
pub struct Cleanup(pub S3Settings);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let settings = self.0.clone();
        // A thread and a client of their own: Drop may run inside the test's runtime, which
        // then cannot drive the connections of the test's client.
        let cleaned = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let store = S3ChunkStore::connect(&settings).await?;
                loop {
                    let page = store.list(None, 1000).await?;
                    if page.is_empty() {
                        return Ok::<_, strata_core::ports::StoreError>(());
                    }
                    store
                        .delete(page.iter().map(|c| c.digest).collect())
                        .await?;
                }
            })
        })
        .join();
        if !matches!(cleaned, Ok(Ok(()))) && !std::thread::panicking() {
            panic!("cannot clean up the test prefix: {cleaned:?}");
        }
    }
}

/// A store on the test bucket under a fresh prefix, emptied when the guard drops.
pub async fn fresh_store() -> (S3ChunkStore, Cleanup) {
    let settings = settings(&fresh_prefix());
    let store = S3ChunkStore::connect(&settings)
        .await
        .expect("connect to the test bucket");
    (store, Cleanup(settings))
}

/// Run `work` on a runtime of its own, from synchronous code (the race kit's probes).
pub fn block_on<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(work)
    })
    .join()
    .expect("probe thread")
}
