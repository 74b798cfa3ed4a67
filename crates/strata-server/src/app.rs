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
use strata_core::tokens::TokenIssuer;
use strata_core::{Clock, SnapshotService, SystemClock};
use strata_store_embedded::{EmbeddedStore, FsChunkStore, RedbMetadataStore};
use strata_types::AccountId;
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::credentials::{KeyRing, RootKeySource, root_key, write_private};
use crate::dispatch;

/// The service over the embedded stores.
pub type EmbeddedService = SnapshotService<RedbMetadataStore, FsChunkStore>;

/// What every request handler shares.
pub struct AppState {
    /// The snapshot service.
    pub service: EmbeddedService,
    /// Accepted keys.
    pub keys: KeyRing,
    /// How long a request body may stall.
    pub body_timeout: Duration,
    /// The clock (shared with the service, so tests can move time).
    pub clock: Arc<dyn Clock>,
    /// The root account (the only one allowed to run GC through the admin API).
    pub root_account: AccountId,
    /// How garbage collection runs.
    pub gc_options: GcOptions,
    /// Body deadline and memory budget of requests in flight.
    pub limits: crate::limits::RequestLimits,
}

const TOKEN_KEY_FILE: &str = "token-key";

/// The key that authenticates block and page tokens, kept in the data directory so tokens
/// survive restarts.
fn token_key(data_dir: &Path) -> anyhow::Result<[u8; 32]> {
    let path = data_dir.join(TOKEN_KEY_FILE);
    if !path.exists() {
        let key: [u8; 32] = rand::rng().random();
        write_private(&path, &hex::encode(key))?;
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key)
        .with_context(|| format!("{} is damaged", path.display()))?;
    Ok(key)
}

/// Open everything under `settings.data_dir` and build the shared state.
pub fn open_state(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<AppState> {
    let store = EmbeddedStore::open(&settings.data_dir).with_context(|| {
        format!(
            "cannot open the data directory {}",
            settings.data_dir.display()
        )
    })?;
    let (root, source) = root_key(
        &settings.data_dir,
        &settings.root_account,
        settings.root_key_from_env.clone(),
    )?;
    if source == RootKeySource::Generated {
        // Printed once, on the first start, so a new user can `aws configure` with it.
        println!(
            "Generated root credentials (saved in {}):\n  aws_access_key_id = {}\n  aws_secret_access_key = {}",
            settings.data_dir.join("root-credentials").display(),
            root.access_key_id,
            root.secret_access_key
        );
    }
    tracing::info!(access_key_id = %root.access_key_id, account = %root.account, "root account");
    let keys = KeyRing::new(std::iter::once(root).chain(settings.extra_keys.iter().cloned()))?;
    let tokens = TokenIssuer::new(token_key(&settings.data_dir)?);
    let service = SnapshotService::new(
        Arc::new(store.metadata),
        Arc::new(store.chunks),
        tokens,
        Arc::clone(&clock),
    );
    Ok(AppState {
        service,
        keys,
        body_timeout: settings.body_timeout,
        clock,
        root_account: settings.root_account.clone(),
        gc_options: GcOptions {
            chunk_grace: settings.gc_grace,
        },
        limits: crate::limits::RequestLimits::new(&settings.limits),
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
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    background: tokio::task::JoinHandle<()>,
    stop_background: tokio::sync::watch::Sender<bool>,
}

impl RunningServer {
    /// Stop accepting, finish in-flight requests, and wait.
    pub async fn stop(self) -> anyhow::Result<()> {
        // The receiver is gone only if the server already stopped.
        let _ = self.shutdown.send(());
        self.task.await.context("server task failed")??;
        let _ = self.stop_background.send(true);
        self.background.await.context("background task failed")?;
        Ok(())
    }
}

/// Bind `settings.listen` and serve until [`RunningServer::stop`].
pub async fn start(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<RunningServer> {
    let state = Arc::new(open_state(settings, clock)?);
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
    let (stop_background, stopped) = tokio::sync::watch::channel(false);
    let background = tokio::spawn(crate::background::run(
        Arc::clone(&state),
        settings.gc_interval,
        stopped,
    ));
    let app = router(state);
    let limits = settings.limits;
    let task = tokio::spawn(crate::connections::serve(listener, app, limits, async {
        let _ = signal.await;
    }));
    tracing::info!(%addr, "strata is listening");
    Ok(RunningServer {
        addr,
        shutdown,
        task,
        background,
        stop_background,
    })
}

/// `strata serve`: run until SIGINT or SIGTERM, then drain in-flight requests.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let server = start(&settings, Arc::new(SystemClock)).await?;
    println!(
        "Strata is serving the EBS direct APIs on http://{} (data in {})",
        server.addr,
        settings.data_dir.display()
    );
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    server.stop().await
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
