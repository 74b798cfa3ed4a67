//! `start`: StartSnapshot + CompleteSnapshot(0 blocks) round trips, each durable.

use super::{RunContext, Scenario, Window, measurement, run_pool};
use crate::report::Measurement;
use crate::targets::Instance;

/// Pairs at the start concurrency; a pair's latency is both requests.
pub async fn run(context: &RunContext<'_>, instance: &Instance) -> anyhow::Result<Measurement> {
    let options = context.options;
    let client = instance.client();
    let window = Window::open(context, instance);
    let outcome = run_pool(
        options.start_concurrency,
        options.start_pairs,
        context.deadline(),
        move |_| {
            let client = client.clone();
            async move {
                let snapshot = client.start_snapshot(1, None).await?;
                client.complete(&snapshot, 0).await?;
                Ok(0)
            }
        },
    )
    .await;
    let window = window.close();
    Ok(measurement(
        Scenario::Start,
        context,
        instance,
        outcome,
        window,
        Vec::new(),
    ))
}
