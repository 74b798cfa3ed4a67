//! `put` and `get` on the raw S3 target: 512 KiB objects straight to the bucket at the
//! same concurrency and with the same payloads as Strata's runs, verified the same way.
//! There is no `put-dup` here: S3 stores every PUT, so the report compares Strata's
//! dedup puts with this `put` rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{PoolOutcome, RunContext, Scenario, Window, measurement, run_pool};
use crate::payloads::PayloadSet;
use crate::report::{Measurement, to_u64};
use crate::s3::S3Client;
use crate::targets::Instance;

/// The key of object `n` under `prefix`.
fn key(prefix: &str, n: usize) -> String {
    format!("{prefix}obj-{n}")
}

/// PUT objects `0..count` (payload `n` at key `n`) at `concurrency` until `deadline`.
async fn put_objects(
    client: &S3Client,
    prefix: &str,
    payloads: &PayloadSet,
    count: usize,
    concurrency: usize,
    deadline: Instant,
) -> PoolOutcome {
    let (client, prefix, payloads) = (
        client.clone(),
        Arc::new(prefix.to_owned()),
        payloads.clone(),
    );
    run_pool(concurrency, count, deadline, move |n| {
        let (client, prefix) = (client.clone(), Arc::clone(&prefix));
        let payload = payloads.get(n);
        async move {
            client.put_object(&key(&prefix, n), &payload).await?;
            Ok(to_u64(payload.data.len()))
        }
    })
    .await
}

/// `put`: N distinct objects at concurrency C.
pub async fn put(context: &RunContext<'_>, instance: &Instance) -> anyhow::Result<Measurement> {
    let options = context.options;
    let (client, prefix) = instance.object_store()?;
    let window = Window::open(context, instance);
    let outcome = put_objects(
        &client,
        &prefix,
        context.payloads,
        options.blocks,
        options.concurrency,
        context.deadline(),
    )
    .await;
    let window = window.close();
    Ok(measurement(
        Scenario::Put,
        context,
        instance,
        outcome,
        window,
        Vec::new(),
    ))
}

/// `get`: N objects stored first (untimed), then N verified GETs at concurrency C.
pub async fn get(context: &RunContext<'_>, instance: &Instance) -> anyhow::Result<Measurement> {
    let options = context.options;
    let (client, prefix) = instance.object_store()?;
    let far = Instant::now() + Duration::from_secs(24 * 3600);
    put_objects(
        &client,
        &prefix,
        context.payloads,
        options.blocks,
        options.concurrency,
        far,
    )
    .await
    .require_success("setup upload")?;
    let window = Window::open(context, instance);
    let outcome = {
        let (client, prefix, payloads) =
            (client.clone(), Arc::new(prefix), context.payloads.clone());
        run_pool(
            options.concurrency,
            options.blocks,
            context.deadline(),
            move |n| {
                let (client, prefix) = (client.clone(), Arc::clone(&prefix));
                let payload = payloads.get(n);
                async move {
                    let bytes = client.get_object(&key(&prefix, n), &payload.digest).await?;
                    Ok(to_u64(bytes))
                }
            },
        )
        .await
    };
    let window = window.close();
    Ok(measurement(
        Scenario::Get,
        context,
        instance,
        outcome,
        window,
        Vec::new(),
    ))
}
