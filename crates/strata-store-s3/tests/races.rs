//! The race scenarios of the test kit (`strata_store_testkit::races`) with the chunks in a
//! real S3 bucket (the metadata in memory): the chunk side of ADR 0004 on an object store,
//! where "damage" is an object overwritten with other bytes.

mod common;

use aws_sdk_s3::primitives::ByteStream;
use strata_store_s3::S3ChunkStore;
use strata_store_testkit::MemoryMetadataStore;
use strata_store_testkit::races::ChunkProbe;

async fn s3() -> (
    MemoryMetadataStore,
    S3ChunkStore,
    ChunkProbe,
    common::Cleanup,
) {
    let (chunks, cleanup) = common::fresh_store().await;
    // The probes run on threads of their own (they are synchronous, called from the test's
    // runtime), each with a client of its own: the test's client's connections belong to
    // the test's runtime, which is blocked while a probe runs.
    let (has, damage) = (cleanup.0.clone(), cleanup.0.clone());
    let probe = ChunkProbe {
        has: Box::new(move |digest| {
            let (settings, digest) = (has.clone(), *digest);
            common::block_on(async move {
                let store = S3ChunkStore::connect(&settings).await.expect("connect");
                let key = store.key(&digest);
                match store
                    .client()
                    .head_object()
                    .bucket(store.bucket())
                    .key(key)
                    .send()
                    .await
                {
                    Ok(_) => true,
                    Err(error) if error.as_service_error().is_some_and(|e| e.is_not_found()) => {
                        false
                    }
                    Err(error) => panic!("head object: {error:?}"),
                }
            })
        }),
        // The object replaced by bytes of the same length with one bit flipped.
        damage: Box::new(move |digest| {
            let (settings, digest) = (damage.clone(), *digest);
            common::block_on(async move {
                let store = S3ChunkStore::connect(&settings).await.expect("connect");
                let key = store.key(&digest);
                let object = store
                    .client()
                    .get_object()
                    .bucket(store.bucket())
                    .key(&key)
                    .send()
                    .await
                    .expect("get object");
                let mut bytes = object.body.collect().await.expect("body").to_vec();
                bytes[0] ^= 1;
                store
                    .client()
                    .put_object()
                    .bucket(store.bucket())
                    .key(&key)
                    .body(ByteStream::from(bytes))
                    .send()
                    .await
                    .expect("put damaged object");
            })
        }),
    };
    (MemoryMetadataStore::new(), chunks, probe, cleanup)
}

strata_store_testkit::race_scenarios!(s3);
