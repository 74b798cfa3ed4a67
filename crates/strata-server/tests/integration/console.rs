//! The web console's server side: its embedded files (types, CSP, redirect), the session
//! cookie (issued only for a signature, admin API only, the console header required,
//! expiry, sign-out, tampering), and the admin reads it uses (filtered pages of
//! snapshots, lineage with changed blocks, storage, activity), with their errors.

use aws_sdk_ebs::types::Tag;

use crate::harness::{
    BLOCK, Harness, OTHER_ACCOUNT, OTHER_KEY, OTHER_SECRET, RawRequest, RawResponse, block,
    stored_chunk_bytes,
};
use crate::sdk::{complete, put};

fn unsigned(method: &'static str, target: &str) -> RawRequest {
    let mut raw = RawRequest::new(method, target);
    raw.credentials = None;
    raw
}

/// A cookie-authenticated admin request, as the console sends it.
fn with_session(method: &'static str, path: &str, cookie: &str) -> RawRequest {
    unsigned(method, &format!("/_strata/v1{path}"))
        .header("cookie", format!("strata_session={cookie}"))
        .header("x-strata-console", "1")
}

async fn sign_in(harness: &Harness, credentials: Option<(&str, &str)>) -> String {
    let mut raw = RawRequest::admin("POST", "/session");
    if let Some((key, secret)) = credentials {
        raw.credentials = Some((key.into(), secret.into()));
    }
    let response = harness.raw(raw).await;
    assert_eq!(
        response.status,
        204,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let cookie = response.headers["set-cookie"].to_str().expect("ascii");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=3600"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    cookie
        .split(';')
        .next()
        .and_then(|pair| pair.strip_prefix("strata_session="))
        .expect("the session cookie")
        .to_owned()
}

async fn json_ok(harness: &Harness, raw: RawRequest) -> serde_json::Value {
    let response = harness.raw(raw).await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()
}

/// Start a 1 GiB snapshot with tags and a description.
async fn start_tagged(
    client: &aws_sdk_ebs::Client,
    parent: Option<&str>,
    tags: &[(&str, &str)],
    description: &str,
) -> String {
    let mut request = client
        .start_snapshot()
        .volume_size(1)
        .description(description)
        .set_parent_snapshot_id(parent.map(str::to_owned));
    for (key, value) in tags {
        request = request.tags(Tag::builder().key(*key).value(*value).build());
    }
    request
        .send()
        .await
        .expect("StartSnapshot")
        .snapshot_id
        .expect("id")
}

async fn completed(
    client: &aws_sdk_ebs::Client,
    parent: Option<&str>,
    tags: &[(&str, &str)],
    description: &str,
    blocks: &[(i32, u64)],
) -> String {
    let id = start_tagged(client, parent, tags, description).await;
    for (index, seed) in blocks {
        put(client, &id, *index, &block(*seed)).await;
    }
    complete(client, &id, blocks.len() as i32, None).await;
    id
}

fn ids(list: &serde_json::Value) -> Vec<String> {
    list["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn the_console_files_are_served_with_their_types_and_a_strict_policy() {
    let harness = Harness::new();
    let redirect = harness.raw(unsigned("GET", "/console")).await;
    assert_eq!(redirect.status, 301);
    assert_eq!(redirect.headers["location"], "/console/");
    for (path, content_type, needle) in [
        (
            "/console/",
            "text/html; charset=utf-8",
            "<script type=\"module\" src=\"app.js\">",
        ),
        (
            "/console/index.html",
            "text/html; charset=utf-8",
            "sign-in-form",
        ),
        (
            "/console/app.js",
            "text/javascript; charset=utf-8",
            "x-strata-console",
        ),
        (
            "/console/sigv4.js",
            "text/javascript; charset=utf-8",
            "AWS4-HMAC-SHA256",
        ),
        (
            "/console/lineage.js",
            "text/javascript; charset=utf-8",
            "data-changed",
        ),
        (
            "/console/style.css",
            "text/css; charset=utf-8",
            "#lineage-graph",
        ),
        ("/console/icon.svg", "image/svg+xml", "<svg"),
    ] {
        let response = harness.raw(unsigned("GET", path)).await;
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(response.headers["content-type"], content_type, "{path}");
        assert_eq!(response.headers["cache-control"], "no-cache", "{path}");
        let policy = response.headers["content-security-policy"]
            .to_str()
            .expect("ascii");
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert_eq!(response.headers["x-content-type-options"], "nosniff");
        assert!(
            String::from_utf8_lossy(&response.body).contains(needle),
            "{path}"
        );
    }
    let missing = harness.raw(unsigned("GET", "/console/secret.txt")).await;
    assert_eq!(missing.status, 404);
    let outside = harness.raw(unsigned("GET", "/console/../app.rs")).await;
    assert_eq!(outside.status, 404);
    let posted = harness.raw(unsigned("POST", "/console/")).await;
    assert_eq!(posted.status, 405);
}

#[tokio::test]
async fn a_signed_request_opens_a_session_that_authenticates_only_console_admin_requests() {
    let harness = Harness::new();
    let client = harness.client();
    let id = completed(&client, None, &[], "d", &[(0, 1)]).await;
    let cookie = sign_in(&harness, None).await;

    let list = json_ok(&harness, with_session("GET", "/snapshots", &cookie)).await;
    assert_eq!(ids(&list), vec![id.clone()]);

    // Without the console header (what a cross-site form would send): refused.
    let mut bare = unsigned("GET", "/_strata/v1/snapshots");
    bare = bare.header("cookie", format!("strata_session={cookie}"));
    harness
        .raw(bare)
        .await
        .assert_error(403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT");

    // The cookie is no credential for the EBS API.
    let ebs = unsigned("GET", &format!("/snapshots/{id}/blocks"))
        .header("cookie", format!("strata_session={cookie}"))
        .header("x-strata-console", "1");
    harness
        .raw(ebs)
        .await
        .assert_error(403, "MissingAuthenticationTokenException", "");
    // Nor can a session start another (which would extend it forever).
    let renewed = harness.raw(with_session("POST", "/session", &cookie)).await;
    renewed.assert_error(403, "MissingAuthenticationTokenException", "");
    assert!(renewed.headers.get("set-cookie").is_none());

    // Tampered: refused.
    let mut forged = cookie.clone();
    let last = forged.pop().expect("non-empty");
    forged.push(if last == '0' { '1' } else { '0' });
    harness
        .raw(with_session("GET", "/snapshots", &forged))
        .await
        .assert_error(403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT");
    let longer = cookie.replacen(
        cookie.split('.').next().expect("expiry"),
        "99999999999999",
        1,
    );
    harness
        .raw(with_session("GET", "/snapshots", &longer))
        .await
        .assert_error(403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT");

    // A session is the key's account: another account's session sees its own snapshots.
    let other = sign_in(&harness, Some((OTHER_KEY, OTHER_SECRET))).await;
    let theirs = json_ok(&harness, with_session("GET", "/snapshots", &other)).await;
    assert_eq!(ids(&theirs), Vec::<String>::new());
    harness
        .raw(with_session("GET", "/storage", &other))
        .await
        .assert_error(403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT");

    // Sign-out needs the header, clears the cookie and revokes the token.
    let mut no_header = unsigned("POST", "/_strata/v1/session/end");
    no_header = no_header.header("cookie", format!("strata_session={cookie}"));
    harness
        .raw(no_header)
        .await
        .assert_error(403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT");
    let ended = harness
        .raw(with_session("POST", "/session/end", &cookie))
        .await;
    assert_eq!(ended.status, 204);
    let cleared = ended.headers["set-cookie"].to_str().expect("ascii");
    assert!(
        cleared.starts_with("strata_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    harness
        .raw(with_session("GET", "/snapshots", &cookie))
        .await
        .assert_error(403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT");
    // The other session is untouched; an hour later it has expired.
    json_ok(&harness, with_session("GET", "/snapshots", &other)).await;
    harness
        .clock
        .advance(std::time::Duration::from_secs(3600 + 1));
    harness
        .raw(with_session("GET", "/snapshots", &other))
        .await
        .assert_error(403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT");
}

#[tokio::test]
async fn a_session_needs_a_valid_signature() {
    let harness = Harness::new();
    let mut wrong = RawRequest::admin("POST", "/session");
    wrong.credentials = Some((OTHER_KEY.into(), "not-the-secret".into()));
    let response = harness.raw(wrong).await;
    response.assert_error(403, "InvalidSignatureException", "");
    assert!(response.headers.get("set-cookie").is_none());
    let anonymous = harness.raw(unsigned("POST", "/_strata/v1/session")).await;
    anonymous.assert_error(403, "MissingAuthenticationTokenException", "");
    assert!(anonymous.headers.get("set-cookie").is_none());
}

#[tokio::test]
async fn the_snapshot_list_filters_and_pages() {
    let harness = Harness::new();
    let client = harness.client();
    let mut made = Vec::new();
    for n in 0..5 {
        let tags: &[(&str, &str)] = if n % 2 == 0 {
            &[("env", "prod")]
        } else {
            &[("env", "test")]
        };
        made.push(completed(&client, None, tags, &format!("Nightly run {n}"), &[(0, n)]).await);
    }
    let pending = start_tagged(&client, None, &[("env", "prod")], "still going").await;
    let list = |query: &str| RawRequest::admin("GET", &format!("/snapshots{query}"));

    let all = json_ok(&harness, list("")).await;
    assert_eq!(all["snapshots"].as_array().map(Vec::len), Some(6));
    assert!(all.get("next_token").is_none(), "{all}");
    let prod = json_ok(&harness, list("?tag=env%3Dprod&status=completed")).await;
    let mut expected: Vec<String> = made.iter().step_by(2).cloned().collect();
    expected.sort();
    assert_eq!(ids(&prod), expected);
    let keyed = json_ok(&harness, list("?tag=env")).await;
    assert_eq!(keyed["snapshots"].as_array().map(Vec::len), Some(6));
    let pendings = json_ok(&harness, list("?status=pending")).await;
    assert_eq!(ids(&pendings), vec![pending.clone()]);
    let described = json_ok(&harness, list("?description=NIGHTLY%20RUN%203")).await;
    assert_eq!(ids(&described), vec![made[3].clone()]);

    // Pages of 4: the token continues after the last id, and the pages cover everything.
    let first = json_ok(&harness, list("?maxResults=4")).await;
    assert_eq!(first["snapshots"].as_array().map(Vec::len), Some(4));
    let token = first["next_token"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = json_ok(&harness, list(&format!("?maxResults=4&nextToken={token}"))).await;
    assert!(second.get("next_token").is_none(), "{second}");
    let mut paged = ids(&first);
    paged.extend(ids(&second));
    let mut everything: Vec<String> = made.clone();
    everything.push(pending);
    everything.sort();
    assert_eq!(paged, everything);

    for bad in [
        "?status=done",
        "?maxResults=0",
        "?maxResults=1001",
        "?maxResults=ten",
        "?nextToken=not-a-snapshot",
        "?owner=12",
    ] {
        harness.raw(list(bad)).await.assert_error(
            400,
            "ValidationException",
            "INVALID_PARAMETER_VALUE",
        );
    }
    // Root reads another account's snapshots; the other account may not read root's.
    let theirs = completed(
        &harness.client_as(OTHER_KEY, OTHER_SECRET),
        None,
        &[],
        "x",
        &[(0, 9)],
    )
    .await;
    let by_root = json_ok(&harness, list(&format!("?owner={OTHER_ACCOUNT}"))).await;
    assert_eq!(ids(&by_root), vec![theirs.clone()]);
    let described = json_ok(
        &harness,
        RawRequest::admin("GET", &format!("/snapshots/{theirs}?owner={OTHER_ACCOUNT}")),
    )
    .await;
    assert_eq!(described["owner"], OTHER_ACCOUNT);
    let mut as_other = list("?owner=123456789012");
    as_other.credentials = Some((OTHER_KEY.into(), OTHER_SECRET.into()));
    harness
        .raw(as_other)
        .await
        .assert_error(403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT");
}

#[tokio::test]
async fn the_lineage_is_the_whole_tree_with_the_blocks_each_snapshot_changed() {
    let harness = Harness::new();
    let client = harness.client();
    let root = completed(
        &client,
        None,
        &[("role", "base")],
        "base",
        &[(0, 1), (1, 2), (2, 3)],
    )
    .await;
    let child = completed(&client, Some(&root), &[], "child", &[(1, 20)]).await;
    // Rewriting a block with the content it had changes nothing.
    let same = completed(&client, Some(&child), &[], "same", &[(0, 1), (5, 50)]).await;
    let branch = completed(
        &client,
        Some(&root),
        &[("role", "branch")],
        "branch",
        &[(2, 30), (3, 31)],
    )
    .await;
    let open = start_tagged(&client, Some(&branch), &[], "open").await;
    let unrelated = completed(&client, None, &[], "other", &[(0, 7)]).await;

    let lineage = json_ok(
        &harness,
        RawRequest::admin("GET", &format!("/snapshots/{same}/lineage")),
    )
    .await;
    assert_eq!(lineage["snapshot"], same.as_str());
    assert_eq!(lineage["root"], root.as_str());
    let nodes = lineage["nodes"].as_array().expect("nodes");
    let position = |id: &str| nodes.iter().position(|n| n["snapshot"]["id"] == id);
    for node in nodes {
        if let Some(parent) = node["snapshot"]["parent"].as_str() {
            assert!(position(parent) < position(node["snapshot"]["id"].as_str().expect("id")));
        }
    }
    let mut got: Vec<(String, Option<String>, Option<u64>)> = nodes
        .iter()
        .map(|n| {
            (
                n["snapshot"]["id"].as_str().expect("id").to_owned(),
                n["snapshot"]["parent"].as_str().map(str::to_owned),
                n["changed_blocks"].as_u64(),
            )
        })
        .collect();
    got.sort();
    let mut expected = vec![
        (root.clone(), None, Some(3)),
        (child.clone(), Some(root.clone()), Some(1)),
        (same.clone(), Some(child.clone()), Some(1)),
        (branch.clone(), Some(root.clone()), Some(2)),
        (open.clone(), Some(branch.clone()), None),
    ];
    expected.sort();
    assert_eq!(got, expected);
    assert!(!got.iter().any(|(id, _, _)| *id == unrelated));
    let branch_node = &nodes[position(&branch).expect("branch")];
    assert_eq!(branch_node["snapshot"]["tags"][0]["value"], "branch");

    harness
        .raw(RawRequest::admin("GET", "/snapshots/snap-nonsense/lineage"))
        .await
        .assert_error(400, "ValidationException", "INVALID_SNAPSHOT_ID");
    let mut theirs = RawRequest::admin("GET", &format!("/snapshots/{root}/lineage"));
    theirs.credentials = Some((OTHER_KEY.into(), OTHER_SECRET.into()));
    let hidden = harness.raw(theirs).await;
    assert_eq!(
        hidden.status,
        404,
        "{}",
        String::from_utf8_lossy(&hidden.body)
    );
    assert_eq!(hidden.error_type(), "ResourceNotFoundException");
}

#[tokio::test]
async fn storage_and_activity_report_bytes_savings_and_the_last_runs_for_root_only() {
    let harness = Harness::new();
    let client = harness.client();
    let zero = vec![0u8; BLOCK];
    let first = start_tagged(&client, None, &[], "a").await;
    put(&client, &first, 0, &block(1)).await;
    put(&client, &first, 1, &block(2)).await;
    put(&client, &first, 2, &zero).await;
    complete(&client, &first, 3, None).await;
    // The same content again, later: deduplicated.
    harness.clock.advance(std::time::Duration::from_secs(1));
    completed(&client, None, &[], "b", &[(0, 1)]).await;

    let storage = json_ok(&harness, RawRequest::admin("GET", "/storage")).await;
    assert_eq!(storage["completed_snapshots"], 2, "{storage}");
    assert_eq!(storage["pending_snapshots"], 0);
    assert_eq!(storage["logical_bytes"], 4 * BLOCK as u64);
    assert_eq!(storage["chunks"], 2);
    assert_eq!(storage["physical_bytes"], stored_chunk_bytes(&harness));
    assert_eq!(storage["blocks_written"], 4);
    assert_eq!(storage["blocks_deduplicated"], 1);
    assert_eq!(storage["zero_blocks"], 1);
    assert_eq!(storage["dedup_saved_bytes"], BLOCK as u64);
    assert_eq!(storage["zero_saved_bytes"], BLOCK as u64);
    let growth = storage["growth"].as_array().expect("growth");
    assert_eq!(growth.len(), 2);
    assert_eq!(growth[0]["written_bytes"], 3 * BLOCK as u64);
    assert_eq!(growth[1]["written_bytes"], 4 * BLOCK as u64);
    assert_eq!(growth[1]["snapshots"], 2);

    let before = json_ok(&harness, RawRequest::admin("GET", "/activity")).await;
    assert!(
        before["last_gc"].is_null() && before["last_scrub"].is_null(),
        "{before}"
    );
    assert_eq!(before["blocks_written"], 4);
    json_ok(&harness, RawRequest::admin("POST", "/gc?dryRun=false")).await;
    json_ok(&harness, RawRequest::admin("POST", "/scrub?rateMiB=0")).await;
    let after = json_ok(&harness, RawRequest::admin("GET", "/activity")).await;
    assert_eq!(after["last_gc"]["result"], "ok", "{after}");
    assert_eq!(after["last_gc"]["summary"]["dry_run"], false);
    assert_eq!(after["last_scrub"]["result"], "ok");
    assert_eq!(after["last_scrub"]["summary"]["chunks_checked"], 2);
    // The activity's own requests and the runs are counted.
    assert!(
        after["requests"].as_u64() > before["requests"].as_u64(),
        "{before} {after}"
    );
    assert!(after["bytes_out"].as_u64() > before["bytes_out"].as_u64());

    for path in ["/storage", "/activity"] {
        let mut other = RawRequest::admin("GET", path);
        other.credentials = Some((OTHER_KEY.into(), OTHER_SECRET.into()));
        let refused: RawResponse = harness.raw(other).await;
        refused.assert_error(403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT");
    }
}

#[tokio::test]
async fn a_key_with_an_allow_list_cannot_open_a_console_session() {
    use std::collections::BTreeSet;
    use std::sync::Arc;
    let harness = Harness::with_settings(|settings| {
        let allow: BTreeSet<String> = ["DescribeSnapshots", "AdminListSnapshots"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        settings
            .extra_keys
            .push(strata_server::credentials::AccessKey {
                allow: Some(Arc::new(allow)),
                ..strata_server::credentials::AccessKey::new(
                    "AKIDSCOPEDREADER".into(),
                    "scoped-secret".into(),
                    strata_types::AccountId::parse(OTHER_ACCOUNT).expect("account"),
                )
            });
    });
    let mut raw = RawRequest::admin("POST", "/session");
    raw.credentials = Some(("AKIDSCOPEDREADER".into(), "scoped-secret".into()));
    let refused = harness.raw(raw).await;
    refused.assert_error(403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT");
    assert!(refused.headers.get("set-cookie").is_none());
}
