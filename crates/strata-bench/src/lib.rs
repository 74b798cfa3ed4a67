//! Strata's benchmark harness (issue 5), behind `strata bench`.
//!
//! One invocation measures, on this machine and in the same run:
//! - **Strata**, started in-process on a temp data directory (or a server given with
//!   `--endpoint`);
//! - the **sink** ([`sink`]), the ceiling of HTTP + hashing with this client; Strata's
//!   figures are reported as a ratio to it, because the machine is shared and noisy;
//! - the **disk** ([`disk`]): streaming `O_DIRECT` writes (the put ceiling), and
//!   concurrent 512 KiB `O_DIRECT` reads (what bounds gets of uncached chunks);
//! - optionally **moto** (`--moto`), the usual emulator;
//! - with `--chunks s3://…`, the **raw S3** store itself ([`s3`]): 512 KiB PUTs and GETs
//!   straight to the bucket, the ceiling of Strata on that store. Strata then runs on it
//!   (and on PostgreSQL with `--metadata postgres://…`), as `--nodes` nodes sharing the
//!   stores, each run on a fresh schema and prefix ([`engines`]).
//!
//! The load comes from a light client ([`client`]: hyper + `aws-sigv4`, keep-alive,
//! payloads and checksums precomputed) on its own runtime, and each report line gives the
//! client's and the server's CPU ([`cpu`] says how they are told apart).
//!
//! Module map: [`options`] (flags) → [`run`] (the driver, here) → [`targets`] (what is
//! measured) and [`scenarios`] (what is done to it) → [`report`] (lines, medians, ratios,
//! the targets).

pub mod client;
pub mod cpu;
pub mod disk;
pub mod engines;
pub mod options;
pub mod payloads;
pub mod profile;
pub mod report;
pub mod s3;
pub mod scenarios;
pub mod seed;
pub mod sink;
pub mod targets;

use std::time::{Duration, Instant};

use anyhow::Context;

pub use options::{BenchArgs, BenchOptions};
use report::{DiskMeasurement, Record, Results};
use scenarios::{RunContext, Scenario, families};
use targets::{Launcher, TargetKind};

use crate::payloads::PayloadSet;

/// Threads per runtime: one per core, as a production server would have.
fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
}

fn runtime(name: &str) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads())
        .thread_name(name)
        // Blocking threads must outlive a run: the CPU of exited threads is only known in
        // the process total, which is fine for the server but would hide client time.
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .build()
        .with_context(|| format!("cannot start the {name} runtime"))
}

/// Run the benchmark, handing each output line to `emit` as it is produced. Returns
/// everything measured; fails if any operation failed (after printing the summary).
pub fn run(options: &BenchOptions, emit: &mut dyn FnMut(&str)) -> anyhow::Result<Results> {
    let client_runtime = runtime(cpu::CLIENT_THREAD)?;
    let server_runtime = runtime(cpu::SERVER_THREAD)?;
    let results = client_runtime.block_on(drive(options, server_runtime.handle().clone(), emit));
    // The client's connections go first, so the servers see them close.
    client_runtime.shutdown_timeout(Duration::from_secs(5));
    server_runtime.shutdown_timeout(Duration::from_secs(5));
    let results = results?;
    let errors = results.total_errors();
    anyhow::ensure!(
        errors == 0,
        "{errors} operations or runs failed (see the lines above)"
    );
    Ok(results)
}

async fn drive(
    options: &BenchOptions,
    server_runtime: tokio::runtime::Handle,
    emit: &mut dyn FnMut(&str),
) -> anyhow::Result<Results> {
    let mut print = |record: &Record| {
        let line = if options.json {
            record.to_json()
        } else {
            record.to_line()
        };
        emit(&line);
    };
    let mut results = Results::for_deployment(report::Deployment {
        postgres: options.engines.postgres.is_some(),
        s3: options.engines.s3.is_some(),
        nodes: options.nodes,
    });
    std::fs::create_dir_all(&options.data_parent)
        .with_context(|| format!("cannot create {}", options.data_parent.display()))?;

    if options.disk_bytes > 0 {
        for run in 1..=options.repeat {
            for disk in disk_baselines(options, run).await? {
                print(&disk.record());
                results.add_disk(disk);
            }
        }
    }

    let preparing = Instant::now();
    let resident = options.blocks.min(options.resident_blocks);
    let payloads = PayloadSet::new(families::MAIN, resident);
    let mixed_payloads = if options.scenarios.contains(&Scenario::Mixed) {
        PayloadSet::new(families::MIXED_WRITERS, (options.blocks / 2).min(resident))
    } else {
        PayloadSet::new(families::MIXED_WRITERS, 0)
    };
    let mut launcher = Launcher::new(
        server_runtime,
        options.data_parent.clone(),
        options.endpoint.clone(),
    )
    .with_engines(options.engines.clone(), options.nodes);
    if options.moto {
        launcher.start_moto()?;
    }
    let mut kinds = Vec::new();
    if options.sink {
        kinds.push(TargetKind::Sink);
    }
    kinds.push(if options.endpoint.is_some() {
        TargetKind::Endpoint
    } else {
        TargetKind::Strata
    });
    if options.moto {
        kinds.push(TargetKind::Moto);
    }
    if options.engines.s3.is_some() {
        kinds.push(TargetKind::S3);
    }
    print(&report::setup_record(options, &kinds, preparing.elapsed()));

    for scenario in &options.scenarios {
        let scenario = *scenario;
        let targets: Vec<TargetKind> = kinds
            .iter()
            .copied()
            .filter(|k| scenario.measures(*k))
            .collect();
        if scenario == Scenario::Overload {
            if targets.contains(&TargetKind::Strata) {
                for run in 1..=options.repeat {
                    match scenarios::overload::run(&launcher).await {
                        Ok(records) => {
                            for record in records {
                                print(&record.int("run", run as u64));
                            }
                        }
                        Err(error) => print(&results.failure("overload", "strata", &error)),
                    }
                }
            }
            continue;
        }
        if scenario == Scenario::CompleteBig {
            if targets.contains(&TargetKind::Strata) {
                for run in 1..=options.repeat {
                    let context = RunContext {
                        options,
                        payloads: &payloads,
                        mixed_payloads: &mixed_payloads,
                        launcher: &launcher,
                        run,
                    };
                    match scenarios::run_complete_big(&context).await {
                        Ok(measurement) => {
                            print(&measurement.record());
                            results.add(measurement);
                        }
                        Err(error) => print(&results.failure(scenario.name(), "strata", &error)),
                    }
                }
            }
            continue;
        }
        if scenario == Scenario::List {
            for kind in targets {
                let context = RunContext {
                    options,
                    payloads: &payloads,
                    mixed_payloads: &mixed_payloads,
                    launcher: &launcher,
                    run: 0,
                };
                let building = Instant::now();
                let (instance, fixture) =
                    match scenarios::prepare_list(&context, &launcher, kind).await {
                        Ok(prepared) => prepared,
                        Err(error) => {
                            print(&results.failure(scenario.name(), kind.name(), &error));
                            continue;
                        }
                    };
                print(&report::fixture_record(
                    kind.name(),
                    fixture.blocks,
                    building.elapsed(),
                ));
                for run in 1..=options.repeat {
                    let context = RunContext { run, ..context };
                    match scenarios::measure_list(&context, &instance, &fixture).await {
                        Ok(measurement) => {
                            print(&measurement.record());
                            results.add(measurement);
                        }
                        Err(error) => print(&results.failure(scenario.name(), kind.name(), &error)),
                    }
                }
                instance.stop().await?;
            }
            continue;
        }
        for run in 1..=options.repeat {
            // Alternate which target goes first, so neither always gets the warmer cache.
            let mut order = targets.clone();
            let shift = (run - 1) % order.len().max(1);
            order.rotate_left(shift);
            for kind in order {
                let context = RunContext {
                    options,
                    payloads: &payloads,
                    mixed_payloads: &mixed_payloads,
                    launcher: &launcher,
                    run,
                };
                let instance = launcher.launch(kind).await?;
                let outcome = scenarios::run(scenario, &context, &instance).await;
                instance.stop().await?;
                match outcome {
                    Ok(measurement) => {
                        print(&measurement.record());
                        results.add(measurement);
                    }
                    Err(error) => print(&results.failure(scenario.name(), kind.name(), &error)),
                }
            }
        }
    }
    for record in results.summary(!options.smoke) {
        print(&record);
    }
    Ok(results)
}

/// The disk baselines of one repeat, run on a blocking thread of the client runtime.
async fn disk_baselines(
    options: &BenchOptions,
    run: usize,
) -> anyhow::Result<Vec<DiskMeasurement>> {
    let dir = options.data_parent.clone();
    let bytes = options.disk_bytes;
    let threads = options.concurrency;
    tokio::task::spawn_blocking(move || {
        let label = dir.display().to_string();
        let direct = disk::direct_write(&dir, bytes)
            .with_context(|| format!("O_DIRECT baseline in {label}"))?;
        let read = disk::direct_read(&dir, bytes, threads)
            .with_context(|| format!("O_DIRECT read baseline in {label}"))?;
        let baselines = vec![
            DiskMeasurement {
                run,
                mode: if direct.direct {
                    report::DIRECT
                } else {
                    report::BUFFERED
                },
                rate: direct,
                dir: label.clone(),
            },
            DiskMeasurement {
                run,
                mode: if read.direct {
                    report::DIRECT_READ
                } else {
                    report::CACHED_READ
                },
                rate: read,
                dir: label,
            },
        ];
        Ok(baselines)
    })
    .await
    .context("the disk baseline thread failed")?
}
