//! CI runs the harness end to end in its smoke mode: every scenario against the sink and
//! an in-process Strata at tiny sizes, asserting that no operation failed (not timings).

#[test]
fn smoke_mode_runs_every_scenario_without_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = strata_bench::BenchOptions::smoke(dir.path().to_path_buf());
    let mut lines = Vec::new();
    let results = strata_bench::run(&options, &mut |line| lines.push(line.to_owned()));
    let output = lines.join("\n");
    let results = results.unwrap_or_else(|e| panic!("smoke run failed: {e:#}\n{output}"));
    assert_eq!(results.total_errors(), 0, "{output}");
    for scenario in ["put", "put-dup", "get", "list", "start", "mixed"] {
        assert!(
            output.contains(&format!("run scenario={scenario} target=strata")),
            "no strata run of {scenario}:\n{output}"
        );
    }
    assert!(output.contains("run scenario=put target=sink"), "{output}");
    assert!(output.contains("disk run=1 mode="), "{output}");
    assert!(
        output.contains("ratio scenario=put target=strata to=sink"),
        "{output}"
    );
}

/// The overload scenario (its own server, tight limits): every idle or half-open
/// connection is closed by the server at the head deadline, a trickled body is cut at the
/// body deadline with a ValidationException, and of ten times the memory budget in Puts
/// no more than the budget holds are accepted, none answered with a 5xx other than the
/// 503 of the connection cap.
#[test]
fn the_overload_scenario_reports_the_server_holding_its_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = strata_bench::BenchOptions::smoke(dir.path().to_path_buf());
    options.scenarios = vec![strata_bench::scenarios::Scenario::Overload];
    options.sink = false;
    options.disk_bytes = 0;
    let mut lines = Vec::new();
    let results = strata_bench::run(&options, &mut |line| lines.push(line.to_owned()));
    let output = lines.join("\n");
    results.unwrap_or_else(|e| panic!("overload run failed: {e:#}\n{output}"));
    let phase = |name: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("overload phase={name} ")))
            .unwrap_or_else(|| panic!("no {name} line:\n{output}"))
            .clone()
    };
    let field = |line: &str, key: &str| -> String {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {line}"))
            .to_owned()
    };
    let idle = phase("idle_connections");
    assert_eq!(field(&idle, "still_open_after_30s"), "0", "{idle}");
    assert_eq!(
        field(&idle, "closed_by_server"),
        field(&idle, "opened"),
        "{idle}"
    );
    let heads = phase("half_open_heads");
    assert_eq!(
        field(&heads, "closed_by_server"),
        field(&heads, "opened"),
        "{heads}"
    );
    let trickle = phase("trickled_body");
    assert_eq!(field(&trickle, "status"), "400", "{trickle}");
    assert_eq!(
        field(&trickle, "error_type"),
        "ValidationException",
        "{trickle}"
    );
    let lived: f64 = field(&trickle, "lived_s").parse().expect("seconds");
    assert!(
        (3.5..10.0).contains(&lived),
        "cut at the 4 s body deadline: {trickle}"
    );
    let overload = phase("ten_times_the_budget");
    let created: u64 = field(&overload, "created").parse().expect("count");
    assert!(
        created > 0 && created <= 32,
        "the 16 MiB budget holds 32 blocks: {overload}"
    );
    let throttled: u64 = field(&overload, "throttled").parse().expect("count");
    assert!(throttled > 0, "{overload}");
    let kinds = field(&overload, "other_kinds");
    assert!(
        kinds == "none" || kinds == "reset_before_the_answer",
        "no other answers (no 5xx, no hang): {overload}"
    );
}

/// A variable of the engines the next test needs. A missing one fails the test by name:
/// tests that need engines never skip.
fn engine_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: this test needs PostgreSQL (DATABASE_URL, from \
             `source ci/postgres.sh && pg_up`) and an S3 store (S3_ENDPOINT, S3_REGION, \
             S3_BUCKET, S3_ACCESS_KEY, S3_SECRET_KEY, from `source ci/ceph-rgw.sh && ceph_up`)"
        )
    })
}

/// The benchmark's schemas (`bench_…`) in the database.
fn bench_schemas(runtime: &tokio::runtime::Runtime, url: &str) -> Vec<String> {
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect to DATABASE_URL");
        let driver = tokio::spawn(connection);
        let rows = client
            .query(
                "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'bench\\_%'",
                &[],
            )
            .await
            .expect("list schemas");
        drop(client);
        let _ = driver.await;
        rows.iter().map(|row| row.get(0)).collect()
    })
}

/// The smoke sizes on PostgreSQL + S3 with two nodes, and the raw S3 baseline beside
/// them: every operation succeeds, the ratios to raw S3 are reported, and each run's
/// schema and objects are gone afterwards.
#[test]
fn smoke_on_postgres_and_s3_with_two_nodes_measures_raw_s3_too() {
    use strata_bench::engines::{S3Bucket, SharedEngines};
    use strata_bench::scenarios::Scenario;

    let database = engine_var("DATABASE_URL");
    let (endpoint, region, bucket) = (
        engine_var("S3_ENDPOINT"),
        engine_var("S3_REGION"),
        engine_var("S3_BUCKET"),
    );
    let (key, secret) = (engine_var("S3_ACCESS_KEY"), engine_var("S3_SECRET_KEY"));
    let prefix = format!("bench-smoke-{:016x}", rand::random::<u64>());
    let s3 = S3Bucket::parse(
        &format!("s3://{bucket}/{prefix}"),
        Some(&endpoint),
        &region,
        key,
        secret,
    )
    .expect("the S3 variables make a location");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let schemas_before = bench_schemas(&runtime, &database);

    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = strata_bench::BenchOptions::smoke(dir.path().to_path_buf());
    options.scenarios = vec![
        Scenario::Put,
        Scenario::PutDup,
        Scenario::Get,
        Scenario::Start,
    ];
    options.sink = false;
    options.disk_bytes = 0;
    options.nodes = 2;
    options.engines = SharedEngines {
        postgres: Some(database.clone()),
        s3: Some(s3.clone()),
    };
    let mut lines = Vec::new();
    let results = strata_bench::run(&options, &mut |line| lines.push(line.to_owned()));
    let output = lines.join("\n");
    let results = results.unwrap_or_else(|e| panic!("smoke run failed: {e:#}\n{output}"));
    assert_eq!(results.total_errors(), 0, "{output}");

    assert!(
        output.contains("metadata=postgres chunks=s3 nodes=2"),
        "{output}"
    );
    for scenario in ["put", "put-dup", "get", "start"] {
        assert!(
            output.contains(&format!("run scenario={scenario} target=strata")),
            "no strata run of {scenario}:\n{output}"
        );
    }
    for scenario in ["put", "get"] {
        assert!(
            output.contains(&format!("run scenario={scenario} target=raw-s3")),
            "no raw S3 run of {scenario}:\n{output}"
        );
    }
    // Raw S3 has no dedup path: its put is the reference of Strata's put-dup.
    assert!(
        !output.contains("run scenario=put-dup target=raw-s3"),
        "{output}"
    );
    for ratio in [
        "ratio scenario=put target=strata to=raw-s3 ",
        "ratio scenario=get target=strata to=raw-s3 ",
        "ratio scenario=put-dup target=strata to=raw-s3-put ",
    ] {
        assert!(output.contains(ratio), "no `{ratio}`:\n{output}");
    }

    let left = runtime
        .block_on(s3.client().list_keys(&format!("{prefix}/")))
        .expect("list the test's prefix");
    assert!(left.is_empty(), "objects left behind: {left:?}");
    let stray: Vec<String> = bench_schemas(&runtime, &database)
        .into_iter()
        .filter(|schema| !schemas_before.contains(schema))
        .collect();
    assert!(stray.is_empty(), "schemas left behind: {stray:?}");
}
