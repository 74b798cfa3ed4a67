//! The composition root: opens the stores, builds the service and the router, runs the
//! listener until shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use rand::Rng;
use strata_core::gc::GcOptions;
use strata_core::ports::MetadataStore;
use strata_core::tokens::TokenIssuer;
use strata_core::{Clock, SnapshotService, SystemClock};
use strata_types::AccountId;
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::credentials::{
    AccessKey, Keys, RootKeySource, decode_root_key, encode_root_key, root_key,
};
use crate::dispatch;
use crate::stores::{Chunks, Metadata, MetadataBackend, Stores};
use crate::tls::ReloadableCert;

/// The service over the configured stores.
pub type StrataService = SnapshotService<Metadata, Chunks>;

/// What every request handler shares.
pub struct AppState {
    /// The snapshot service.
    pub service: StrataService,
    /// Accepted keys (replaced on SIGHUP).
    pub keys: Keys,
    /// How long a request body may stall.
    pub body_timeout: Duration,
    /// The clock (shared with the service, so tests can move time).
    pub clock: Arc<dyn Clock>,
    /// The root account (the only one allowed to run GC through the admin API).
    pub root_account: AccountId,
    /// How garbage collection runs.
    pub gc_options: GcOptions,
    /// This process's name as a lease holder (unique per start): background work that
    /// runs once per cluster takes its lease under it.
    pub node_id: String,
    /// Body deadline and memory budget of requests in flight.
    pub limits: crate::limits::RequestLimits,
    /// What `/metrics` reports.
    pub metrics: crate::metrics::Metrics,
    /// Request-rate quotas and their buckets.
    pub quotas: crate::quotas::Quotas,
    /// How fast a scrub reads unless its request says otherwise (bytes per second;
    /// `None`: unpaced).
    pub scrub_rate: Option<u64>,
    /// What `strata store backup` copies (the embedded stores, or why it cannot).
    pub backup_source: crate::backup::BackupSource,
    /// The chunk store the service writes to, for the console's storage figures (bytes
    /// stored).
    pub chunks: Arc<Chunks>,
    /// The web console's session tokens.
    pub sessions: crate::console::Sessions,
}

/// Where the first format kept the token key.
const TOKEN_KEY_FILE: &str = "token-key";
/// The token key's name as a cluster secret of the metadata store.
pub(crate) const TOKEN_KEY_SECRET: &str = "token-key";

/// The root credentials' name as a cluster secret of the metadata store.
pub(crate) const ROOT_CREDENTIALS_SECRET: &str = "root-credentials";

/// The key that authenticates block and page tokens: a cluster secret of the metadata
/// store, so tokens survive restarts and every node sharing the store accepts every
/// node's tokens. A data directory of the first format keeps it in its `token-key` file,
/// which then seeds the secret, so the tokens issued before stay valid.
pub(crate) async fn token_key(
    metadata: &impl MetadataStore,
    data_dir: &Path,
) -> anyhow::Result<[u8; 32]> {
    let path = data_dir.join(TOKEN_KEY_FILE);
    let candidate: [u8; 32] = if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut key)
            .with_context(|| format!("{} is damaged", path.display()))?;
        key
    } else {
        rand::rng().random()
    };
    let stored = metadata
        .secret(TOKEN_KEY_SECRET, candidate.to_vec())
        .await
        .context("cannot read the token key from the metadata store")?;
    stored
        .try_into()
        .map_err(|_| anyhow::anyhow!("the stored token key is not 32 bytes long"))
}

/// The root account's keys: a cluster secret of the metadata store, so every node of a
/// cluster accepts the same. The first node to start proposes them — from
/// `STRATA_ROOT_ACCESS_KEY_ID`/`STRATA_ROOT_SECRET_ACCESS_KEY`, the data directory's
/// `root-credentials` file (embedded stores, which keep writing it so the operator can
/// read them), or generated — and prints generated ones once. A node whose environment
/// names other keys than the stored ones accepts both: the stored ones (the cluster's)
/// and its own (the operator's explicit choice for this node).
async fn root_keys(metadata: &Metadata, settings: &Settings) -> anyhow::Result<Vec<AccessKey>> {
    let embedded = settings.metadata == MetadataBackend::Embedded;
    let (candidate, source) = root_key(
        &settings.data_dir,
        &settings.root_account,
        settings.root_key_from_env.clone(),
        embedded,
    )?;
    let proposed = encode_root_key(&candidate);
    let stored = metadata
        .secret(ROOT_CREDENTIALS_SECRET, proposed.clone().into_bytes())
        .await
        .context("cannot read the root credentials from the metadata store")?;
    if stored == proposed.as_bytes() {
        if source == RootKeySource::Generated {
            // Printed once, on the cluster's first start, so a new user can `aws configure`.
            let saved = if embedded {
                format!(
                    "saved in {}",
                    settings.data_dir.join("root-credentials").display()
                )
            } else {
                "stored in the metadata database".to_owned()
            };
            println!(
                "Generated root credentials ({saved}):\n  aws_access_key_id = {}\n  aws_secret_access_key = {}",
                candidate.access_key_id, candidate.secret_access_key
            );
        }
        return Ok(vec![candidate]);
    }
    let text = String::from_utf8(stored).context("the stored root credentials are not text")?;
    let cluster = decode_root_key(&text, &settings.root_account)?;
    let mut keys = vec![cluster];
    if source == RootKeySource::Environment && keys[0].access_key_id != candidate.access_key_id {
        keys.push(candidate);
    }
    Ok(keys)
}

/// Open the configured stores and build the shared state. Runs on the server's runtime
/// (a remote store starts tasks on it).
pub async fn open_state(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<AppState> {
    let chunks = settings.chunks.resolve()?;
    let stores = Stores::open(&settings.data_dir, &settings.metadata, &chunks).await?;
    let roots = root_keys(&stores.metadata, settings).await?;
    for root in &roots {
        tracing::info!(access_key_id = %root.access_key_id, account = %root.account, "root account");
    }
    let keys = Keys::new(
        roots,
        settings.extra_keys.clone(),
        settings.config_file.clone(),
    )?;
    let token_key = token_key(&stores.metadata, &settings.data_dir).await?;
    let sessions = crate::console::Sessions::new(&token_key);
    let tokens = TokenIssuer::new(token_key);
    let backup_source =
        crate::backup::BackupSource::of(&stores.metadata, &stores.chunks, &settings.data_dir);
    let chunks = Arc::new(stores.chunks);
    let mut service = SnapshotService::new(
        Arc::new(stores.metadata),
        Arc::clone(&chunks),
        tokens,
        Arc::clone(&clock),
    );
    if let Some(limit) = settings.pending_snapshot_limit {
        service = service.with_pending_limit(limit);
    }
    match crate::master_key::encryption_config(settings)? {
        Some((config, source)) => {
            use crate::master_key::MasterKeySource;
            match &source {
                MasterKeySource::Generated(path) => tracing::warn!(
                    file = %path.display(),
                    "generated the master key that wraps the encryption keys; keep a copy \
                     away from the data (without it encrypted snapshots cannot be read), or \
                     give --master-key-file to keep it elsewhere"
                ),
                MasterKeySource::File(path) => {
                    tracing::info!(file = %path.display(), "encryption at rest: master key from a file");
                }
                MasterKeySource::Environment => {
                    tracing::info!("encryption at rest: master key from STRATA_MASTER_KEY");
                }
            }
            if config.by_default {
                tracing::info!("every new snapshot is encrypted at rest (encryption by default)");
            }
            service = service.with_encryption(config);
        }
        None => tracing::info!(
            "no master key (--master-key-file or STRATA_MASTER_KEY): requests to encrypt are refused"
        ),
    }
    let metrics = crate::metrics::Metrics::new(service.clone());
    Ok(AppState {
        service,
        metrics,
        keys,
        body_timeout: settings.body_timeout,
        clock,
        root_account: settings.root_account.clone(),
        gc_options: GcOptions {
            chunk_grace: settings.gc_grace,
        },
        node_id: format!("strata-{}", uuid::Uuid::new_v4()),
        limits: crate::limits::RequestLimits::new(&settings.limits),
        quotas: crate::quotas::Quotas::new(settings.quota_rates.clone()),
        scrub_rate: (settings.scrub_rate_mib > 0)
            .then_some(settings.scrub_rate_mib.saturating_mul(1 << 20)),
        backup_source,
        chunks,
        sessions,
    })
}

/// The HTTP router over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    dispatch::router(state)
}

/// A server running in the background (used by `strata serve` and by tests).
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The bound address of the metrics listener, when `metrics_listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    metrics_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    background: tokio::task::JoinHandle<()>,
    stop_background: tokio::sync::watch::Sender<bool>,
    tls: Option<Arc<ReloadableCert>>,
    state: Arc<AppState>,
}

impl RunningServer {
    /// Whether the listener speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// What SIGHUP does: read the TLS certificate and key again (new connections get the
    /// new pair), and the config file's access keys (the next request sees them). A part
    /// that fails keeps what is in use, is logged, and makes the result an error.
    pub fn reload(&self) -> anyhow::Result<()> {
        let mut failed = None;
        match self.state.keys.reload() {
            Ok(count) => tracing::info!(access_keys = count, "reloaded the access keys"),
            Err(error) => {
                tracing::error!(
                    error = %format!("{error:#}"),
                    "access key reload failed; the keys in force stay"
                );
                failed = Some(error);
            }
        }
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(()) => tracing::info!(
                    cert = %tls.files().cert.display(),
                    "reloaded the TLS certificate and key"
                ),
                Err(error) => {
                    tracing::error!(
                        error = %format!("{error:#}"),
                        "TLS reload failed; still serving the previous certificate"
                    );
                    failed = Some(error);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Stop accepting, finish in-flight requests, and wait.
    pub async fn stop(self) -> anyhow::Result<()> {
        // The receivers are gone only if the listeners already stopped.
        let _ = self.shutdown.send(true);
        self.task.await.context("server task failed")??;
        if let Some(task) = self.metrics_task {
            task.await.context("metrics listener task failed")??;
        }
        let _ = self.stop_background.send(true);
        self.background.await.context("background task failed")?;
        Ok(())
    }
}

/// Bind `settings.listen` and serve until [`RunningServer::stop`].
pub async fn start(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<RunningServer> {
    // Files holding secrets first, before anything is created.
    if let Some(path) = &settings.config_file
        && crate::config::ConfigFile::load(path)?.holds_secrets()
    {
        crate::credentials::check_private(path, "the config file (it holds secret keys)")?;
    }
    let root_credentials = settings
        .data_dir
        .join(crate::credentials::ROOT_CREDENTIALS_FILE);
    if root_credentials.exists() {
        crate::credentials::check_private(&root_credentials, "the root credentials file")?;
    }
    let tls = settings.tls.clone().map(ReloadableCert::load).transpose()?;
    let acceptor = tls.as_ref().map(ReloadableCert::acceptor).transpose()?;
    create_data_dir(&settings.data_dir)?;
    let state = Arc::new(open_state(settings, clock).await?);
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match settings.metrics_listen {
        Some(metrics_listen) => Some(
            TcpListener::bind(metrics_listen)
                .await
                .with_context(|| format!("cannot listen on {metrics_listen} (metrics)"))?,
        ),
        None => None,
    };
    let (shutdown, signal) = tokio::sync::watch::channel(false);
    let (stop_background, stopped) = tokio::sync::watch::channel(false);
    let background = tokio::spawn(crate::background::run(
        Arc::clone(&state),
        crate::background::Intervals {
            gc: settings.gc_interval,
            scrub: settings.scrub_interval,
        },
        stopped,
    ));
    let stopped = |mut signal: tokio::sync::watch::Receiver<bool>| async move {
        let _ = signal.wait_for(|stop| *stop).await;
    };
    let limits = settings.limits;
    let mut metrics_addr = None;
    let mut metrics_task = None;
    if let Some(metrics_listener) = metrics_listener {
        let bound = metrics_listener.local_addr()?;
        metrics_addr = Some(bound);
        metrics_task = Some(tokio::spawn(crate::connections::serve(
            metrics_listener,
            dispatch::metrics_router(Arc::clone(&state)),
            limits,
            None,
            stopped(signal.clone()),
        )));
        tracing::info!(addr = %bound, "metrics are served without authentication");
    }
    let app = router(Arc::clone(&state));
    let task = tokio::spawn(crate::connections::serve(
        listener,
        app,
        limits,
        acceptor,
        stopped(signal),
    ));
    tracing::info!(%addr, tls = tls.is_some(), "strata is listening");
    Ok(RunningServer {
        addr,
        metrics_addr,
        shutdown,
        task,
        metrics_task,
        background,
        stop_background,
        tls,
        state,
    })
}

/// Create the data directory, and any missing parent, with mode 0700. An existing one
/// that others may enter is kept as it is, with a warning.
fn create_data_dir(data_dir: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !data_dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(data_dir)
                .with_context(|| format!("cannot create {}", data_dir.display()))?;
        }
        let mode = std::fs::metadata(data_dir)
            .with_context(|| format!("cannot read {}", data_dir.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                data_dir = %data_dir.display(),
                mode = %format!("{:04o}", mode & 0o7777),
                "the data directory is open to other users; chmod 700 it"
            );
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    Ok(())
}

/// `strata serve`: run until SIGINT or SIGTERM, then drain in-flight requests; reload the
/// TLS certificate and the config file's keys on SIGHUP. Sets the process's umask to
/// 0077 first, so every file and directory the server creates (metadata.redb, chunk
/// segments and indexes, root-credentials) is its user's only: 0600 and 0700.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    tracing::info!(
        version = crate::build::VERSION,
        commit = crate::build::COMMIT,
        "strata starting"
    );
    log_settings(&settings);
    let server = start(&settings, Arc::new(SystemClock)).await?;
    println!(
        "Strata is serving the EBS direct APIs on {}://{} (data in {}; metadata: {}; chunks: {})",
        if server.is_tls() { "https" } else { "http" },
        server.addr,
        settings.data_dir.display(),
        settings.metadata.describe(),
        settings
            .chunks
            .resolve()
            .map_or_else(|_| "?".to_owned(), |chunks| chunks.describe())
    );
    run_until_shutdown(&server).await;
    tracing::info!("shutting down: finishing in-flight requests");
    let stopped = server.stop().await;
    match &stopped {
        Ok(()) => tracing::info!("stopped"),
        Err(error) => tracing::error!(error = %format!("{error:#}"), "stopped with an error"),
    }
    stopped
}

/// One log line with what the server runs with; never a secret.
fn log_settings(settings: &Settings) {
    let limits = &settings.limits;
    let metrics_listen = settings
        .metrics_listen
        .map_or_else(|| "-".to_owned(), |addr| addr.to_string());
    let accounts: std::collections::BTreeSet<&str> = settings
        .extra_keys
        .iter()
        .map(|key| key.account.as_str())
        .chain(std::iter::once(settings.root_account.as_str()))
        .collect();
    tracing::info!(
        listen = %settings.listen,
        metrics_listen = %metrics_listen,
        data_dir = %settings.data_dir.display(),
        metadata = %settings.metadata.describe(),
        chunks = %settings.chunks.resolve().map_or_else(|_| "?".to_owned(), |chunks| chunks.describe()),
        root_account = %settings.root_account,
        root_key = if settings.root_key_from_env.is_some() { "given" } else { "stored or generated" },
        accounts = accounts.len(),
        access_keys = settings.extra_keys.len() + 1,
        gc_interval_secs = settings.gc_interval.map_or(0, |d| d.as_secs()),
        gc_grace_secs = settings.gc_grace.as_secs(),
        body_timeout_secs = settings.body_timeout.as_secs(),
        body_deadline_secs = limits.body_deadline.as_secs(),
        body_budget_mib = limits.body_budget_bytes >> 20,
        header_read_timeout_secs = limits.header_read_timeout.as_secs(),
        idle_timeout_secs = limits.idle_timeout.as_secs(),
        max_connections = limits.max_connections,
        "configuration"
    );
}

/// Wait for SIGINT or SIGTERM; reload on every SIGHUP meanwhile.
async fn run_until_shutdown(server: &RunningServer) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangup) => {
                let shutdown = shutdown_signal();
                tokio::pin!(shutdown);
                loop {
                    tokio::select! {
                        () = &mut shutdown => return,
                        _ = hangup.recv() => {
                            tracing::info!("SIGHUP: reloading");
                            // A failure is logged by `reload` and changes nothing.
                            let _ = server.reload();
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGHUP; reloading needs a restart");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = server;
    shutdown_signal().await;
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::credentials::write_private;
    use strata_core::SystemClock;

    fn settings(data_dir: &Path) -> Settings {
        let mut settings = Settings::new(data_dir.to_path_buf()).expect("settings");
        settings.root_key_from_env = Some(("AKIATESTROOT".into(), "secret".into()));
        settings
    }

    async fn stored_token_key(data_dir: &Path) -> Vec<u8> {
        let state = open_state(&settings(data_dir), Arc::new(SystemClock))
            .await
            .expect("open");
        // Any candidate: the stored key comes back.
        let key = state
            .service
            .metadata()
            .secret(TOKEN_KEY_SECRET, vec![0; 32])
            .await;
        key.expect("secret")
    }

    /// The token key is a secret of the metadata store: the same across restarts, and
    /// no key file is written for a new data directory.
    #[tokio::test]
    async fn the_token_key_is_a_cluster_secret_that_survives_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = stored_token_key(dir.path()).await;
        assert_eq!(first.len(), 32);
        assert_ne!(first, vec![0; 32], "generated, not the probe's candidate");
        assert_eq!(stored_token_key(dir.path()).await, first);
        assert!(!dir.path().join(TOKEN_KEY_FILE).exists());
    }

    /// A data directory of the first format keeps its key: the tokens it issued stay valid.
    #[tokio::test]
    async fn the_key_file_of_the_first_format_seeds_the_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_private(&dir.path().join(TOKEN_KEY_FILE), &hex::encode([7u8; 32])).expect("key file");
        assert_eq!(stored_token_key(dir.path()).await, vec![7; 32]);
    }
}
