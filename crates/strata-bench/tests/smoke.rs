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
