//! `strata snapshots list|show|delete` and `strata gc` against a running server.

use std::process::Command;
use std::sync::Arc;

use strata_core::service::StartSnapshotInput;
use strata_core::{Clock, SystemClock};
use strata_server::Settings;
use strata_server::app::{open_state, start};
use strata_types::AccountId;

const KEY: &str = "AKIDCLITEST";
const SECRET: &str = "cli-test-secret";

/// The keys come from the environment, as for every client command.
fn strata(endpoint: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .args(["--endpoint", endpoint])
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env_remove("STRATA_ENDPOINT")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("strata runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_commands_list_show_delete_and_collect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = Settings::new(dir.path().join("data")).expect("settings");
    settings.listen = "127.0.0.1:0".parse().expect("addr");
    settings.root_key_from_env = Some((KEY.into(), SECRET.into()));
    settings.gc_interval = None;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let root = AccountId::parse("000000000000").expect("account");

    // Create two snapshots directly through the service, then serve the data directory.
    let (done, pending) = {
        let state = open_state(&settings, clock.clone()).await.expect("state");
        let input = || StartSnapshotInput {
            volume_size_gib: 2,
            description: Some("cli".into()),
            tags: vec![strata_core::snapshot::Tag {
                key: "env".into(),
                value: "test".into(),
            }],
            ..StartSnapshotInput::default()
        };
        let done = state
            .service
            .start_snapshot(&root, input())
            .await
            .expect("start")
            .id;
        state
            .service
            .complete_snapshot(&root, &done, 0, None)
            .await
            .expect("complete");
        // A later start time, so "newest first" has one answer.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let pending = state
            .service
            .start_snapshot(&root, input())
            .await
            .expect("start")
            .id;
        (done.to_string(), pending.to_string())
    };
    let server = start(&settings, clock).await.expect("server");
    let endpoint = format!("http://{}", server.addr);

    let endpoint_for_task = endpoint.clone();
    let list =
        tokio::task::spawn_blocking(move || strata(&endpoint_for_task, &["snapshots", "list"]))
            .await
            .expect("join");
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let text = String::from_utf8_lossy(&list.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("ID"), "{text}");
    assert_eq!(lines.len(), 3, "{text}");
    assert!(text.contains(&done) && text.contains(&pending));
    assert!(lines.iter().any(|l| l.contains(&done)
        && l.contains("completed")
        && l.contains("2 GiB")
        && l.contains("env=test")));

    // JSON, filtered, newest first, RFC 3339 times (issue 13, item 5).
    let e = endpoint.clone();
    let listed = tokio::task::spawn_blocking(move || {
        strata(
            &e,
            &["snapshots", "list", "--json", "--status", "completed"],
        )
    })
    .await
    .expect("join");
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    let listed = listed.as_array().expect("array");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], done.as_str());
    assert_eq!(listed[0]["tags"]["env"], "test");
    let started = listed[0]["start_time"].as_str().expect("start_time");
    assert!(
        started.len() == 24 && started.ends_with('Z') && started.as_bytes()[10] == b'T',
        "{started}"
    );
    let first_row = String::from_utf8_lossy(&list.stdout)
        .lines()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    assert!(first_row.starts_with(&pending), "newest first: {first_row}");

    let (e, p) = (endpoint.clone(), pending.clone());
    let show = tokio::task::spawn_blocking(move || strata(&e, &["snapshots", "show", &p]))
        .await
        .expect("join");
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).expect("JSON");
    assert_eq!(shown["id"], pending.as_str());
    assert_eq!(shown["status"], "pending");

    let (e, p) = (endpoint.clone(), pending.clone());
    let delete = tokio::task::spawn_blocking(move || strata(&e, &["snapshots", "delete", &p]))
        .await
        .expect("join");
    assert!(delete.status.success());
    let (e, p) = (endpoint.clone(), pending.clone());
    let gone = tokio::task::spawn_blocking(move || strata(&e, &["snapshots", "show", &p]))
        .await
        .expect("join");
    assert_eq!(gone.status.code(), Some(1));
    let error = String::from_utf8_lossy(&gone.stderr).into_owned();
    assert!(
        error.starts_with("error: ") && error.contains("does not exist"),
        "{error}"
    );
    assert_eq!(error.lines().count(), 1, "one-line errors");

    let e = endpoint.clone();
    let dry = tokio::task::spawn_blocking(move || strata(&e, &["gc", "--dry-run", "--json"]))
        .await
        .expect("join");
    let summary: serde_json::Value = serde_json::from_slice(&dry.stdout).expect("JSON");
    assert_eq!(summary["dry_run"], true, "{summary}");
    let e = endpoint.clone();
    let dry = tokio::task::spawn_blocking(move || strata(&e, &["gc", "--dry-run"]))
        .await
        .expect("join");
    assert!(dry.status.success());
    assert!(String::from_utf8_lossy(&dry.stdout).contains("dry run: nothing was deleted"));
    let e = endpoint.clone();
    let collected = tokio::task::spawn_blocking(move || strata(&e, &["gc"]))
        .await
        .expect("join");
    assert!(String::from_utf8_lossy(&collected.stdout).contains("deleted:"));
    server.stop().await.expect("stop");
}
