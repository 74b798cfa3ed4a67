//! The files under `packaging/`: the example config loads through the server's own loader
//! (as it is, and with its optional lines enabled) and names every key; the systemd unit
//! passes `systemd-analyze verify` and its offline security review; the sysusers file
//! creates the user the unit runs as.
//!
//! Without the systemd tools the unit tests fail, naming the tool (`ci/test` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use strata_server::Settings;
use strata_server::config::{ConfigFile, DEFAULT_LISTEN, LogFormat};

fn packaging(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../packaging")
        .join(file)
}

/// The example with every `#key = value` / `#[table]` line enabled.
fn with_optional_lines(text: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '[') => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_example_config_loads_and_states_the_defaults() {
    let path = packaging("strata.toml");
    let file = ConfigFile::load(&path).expect("the example loads");
    let settings = Settings::from_config_file(&file).expect("the example is valid");
    let defaults = Settings::new("/var/lib/strata").expect("defaults");
    assert_eq!(settings.data_dir, Path::new("/var/lib/strata"));
    assert_eq!(
        settings.listen,
        DEFAULT_LISTEN.parse().expect("default listen")
    );
    assert_eq!(settings.listen, defaults.listen);
    assert_eq!(settings.root_account, defaults.root_account);
    assert_eq!(settings.gc_interval, defaults.gc_interval);
    assert_eq!(settings.gc_grace, defaults.gc_grace);
    assert_eq!(settings.body_timeout, defaults.body_timeout);
    assert_eq!(
        settings.limits, defaults.limits,
        "the limits are the defaults"
    );
    assert_eq!(settings.metrics_listen, None);
    assert!(settings.root_key_from_env.is_none());
    assert!(settings.extra_keys.is_empty());
    assert_eq!(file.log_format, Some(LogFormat::Text));
}

#[test]
fn the_example_config_with_its_optional_lines_names_every_key() {
    let text = std::fs::read_to_string(packaging("strata.toml")).expect("read");
    let file: ConfigFile = toml::from_str(&with_optional_lines(&text)).expect("parses");
    let settings = Settings::from_config_file(&file).expect("valid");
    assert_eq!(
        settings.metrics_listen,
        Some("127.0.0.1:9556".parse().expect("addr"))
    );
    assert!(settings.root_key_from_env.is_some());
    assert_eq!(settings.extra_keys.len(), 1);
    assert_eq!(settings.extra_keys[0].account.as_str(), "111122223333");
    assert!(
        settings.extra_keys[0].allow.is_some(),
        "the example shows an allow list"
    );
    assert_eq!(settings.pending_snapshot_limit, Some(100));
    assert_eq!(
        settings.quota_rates.per_snapshot.get("PutSnapshotBlock"),
        Some(&1000.0)
    );
    assert_eq!(settings.quota_rates.per_account.len(), 6);
    // Every key of the file format is in the example: a new key does not compile here
    // until it is listed, and is not set until the example shows it.
    let ConfigFile {
        listen,
        data_dir,
        metadata,
        chunks,
        s3_endpoint,
        s3_region,
        s3_access_key_id,
        s3_secret_access_key,
        metrics_listen,
        log_format,
        root_account_id,
        root_access_key_id,
        root_secret_access_key,
        accounts,
        body_timeout_secs,
        gc_interval_secs,
        gc_grace_secs,
        scrub_interval_secs,
        scrub_rate_mib,
        header_read_timeout_secs,
        idle_timeout_secs,
        max_connections,
        body_deadline_secs,
        body_budget_mib,
        tls_cert,
        tls_key,
        master_key_file,
        encrypt_by_default,
        region,
        quotas,
    } = file;
    let set = [
        ("listen", listen.is_some()),
        ("data_dir", data_dir.is_some()),
        ("metadata", metadata.is_some()),
        ("chunks", chunks.is_some()),
        ("s3_endpoint", s3_endpoint.is_some()),
        ("s3_region", s3_region.is_some()),
        ("s3_access_key_id", s3_access_key_id.is_some()),
        ("s3_secret_access_key", s3_secret_access_key.is_some()),
        ("metrics_listen", metrics_listen.is_some()),
        ("log_format", log_format.is_some()),
        ("root_account_id", root_account_id.is_some()),
        ("root_access_key_id", root_access_key_id.is_some()),
        ("root_secret_access_key", root_secret_access_key.is_some()),
        ("accounts", !accounts.is_empty()),
        ("body_timeout_secs", body_timeout_secs.is_some()),
        ("gc_interval_secs", gc_interval_secs.is_some()),
        ("gc_grace_secs", gc_grace_secs.is_some()),
        ("scrub_interval_secs", scrub_interval_secs.is_some()),
        ("scrub_rate_mib", scrub_rate_mib.is_some()),
        (
            "header_read_timeout_secs",
            header_read_timeout_secs.is_some(),
        ),
        ("idle_timeout_secs", idle_timeout_secs.is_some()),
        ("max_connections", max_connections.is_some()),
        ("body_deadline_secs", body_deadline_secs.is_some()),
        ("body_budget_mib", body_budget_mib.is_some()),
        ("tls_cert", tls_cert.is_some()),
        ("tls_key", tls_key.is_some()),
        ("master_key_file", master_key_file.is_some()),
        ("encrypt_by_default", encrypt_by_default.is_some()),
        ("region", region.is_some()),
        ("quotas", quotas.is_some()),
    ];
    for (key, present) in set {
        assert!(present, "packaging/strata.toml does not show `{key}`");
    }
}

/// `strata serve --config` with the example (its listen address and data directory
/// overridden by flags) starts and stops: the flags win over the file.
#[test]
fn serve_starts_with_the_example_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(packaging("strata.toml"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("STRATA_ROOT_ACCESS_KEY_ID", "AKIDPACKAGING")
        .env("STRATA_ROOT_SECRET_ACCESS_KEY", "packaging-secret")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("strata serve starts");
    let mut banner = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut banner,
    )
    .expect("banner");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("strata serve did not stop");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(banner.contains("serving"), "{banner}");
    assert!(
        !banner.contains("127.0.0.1:9555"),
        "--listen wins: {banner}"
    );
    assert!(dir.path().join("data/metadata.redb").is_file());
}

/// The path of a systemd tool; its absence fails the test, here as under CI.
fn systemd_tool(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from("/usr/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: this test needs it (Debian package systemd; `bash ci/test` installs it)",
        path.display()
    );
    Some(path)
}

/// The unit as shipped, with `ExecStart` pointing at the binary just built (verify checks
/// that the command exists and is executable).
fn unit_with_built_binary(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(packaging("strata.service")).expect("read the unit");
    assert!(
        text.contains("ExecStart=/usr/local/bin/strata serve --config /etc/strata/strata.toml")
    );
    let unit = dir.join("strata.service");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/strata", env!("CARGO_BIN_EXE_strata")),
    )
    .expect("write the unit");
    unit
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let Some(analyze) = systemd_tool("systemd-analyze") else {
        return;
    };
    let text = std::fs::read_to_string(packaging("strata.service")).expect("read the unit");
    for directive in [
        "User=strata",
        "StateDirectory=strata",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    ] {
        assert!(text.contains(directive), "the unit lacks {directive:?}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_with_built_binary(dir.path());
    let verify = Command::new(&analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "verify failed:\n{stderr}");
    // Unknown or misspelt directives are only warnings (exit 0): refuse them too.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("strata.service"))
        .collect();
    assert!(about_unit.is_empty(), "verify warns:\n{stderr}");

    // The offline security review: exposure at most 2.0 of 10 ("OK" is below 4.0).
    let security = Command::new(&analyze)
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze security runs");
    let report = String::from_utf8_lossy(&security.stdout);
    assert!(
        security.status.success(),
        "exposure above 2.0:\n{report}{}",
        String::from_utf8_lossy(&security.stderr)
    );
    assert!(report.contains("Overall exposure level"), "{report}");
}

#[test]
fn the_sysusers_file_creates_the_units_user() {
    let Some(sysusers) = systemd_tool("systemd-sysusers") else {
        return;
    };
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(root.path().join("etc")).expect("etc");
    let created = Command::new(sysusers)
        .arg(format!("--root={}", root.path().display()))
        .arg(packaging("strata.sysusers"))
        .output()
        .expect("systemd-sysusers runs");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).expect("passwd");
    let user = passwd
        .lines()
        .find(|l| l.starts_with("strata:"))
        .unwrap_or_else(|| panic!("no strata user:\n{passwd}"));
    assert!(
        user.ends_with(":/var/lib/strata:/usr/sbin/nologin"),
        "{user}"
    );
    let group = std::fs::read_to_string(root.path().join("etc/group")).expect("group");
    assert!(group.lines().any(|l| l.starts_with("strata:")), "{group}");
}

/// A config file with a typo is a configuration mistake: exit 2, one `error:` line naming
/// the file, and nothing created.
#[test]
fn a_config_file_with_an_unknown_key_fails_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("strata.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nmax_conections = 10\n").expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .expect("strata runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error: invalid config file"), "{stderr}");
    assert!(stderr.contains("max_conections"), "{stderr}");
    assert!(!dir.path().join("data").exists());
}
