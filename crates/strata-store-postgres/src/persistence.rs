//! The one place that talks to PostgreSQL's transaction machinery: the pool, the
//! migrations, the transaction helper that retries serialization failures, and the mapping
//! of every client error to a [`StoreError`] kind.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Transaction};
use rand::Rng;
use strata_core::ports::StoreError;
use tokio_postgres::error::SqlState;
use tokio_postgres::{IsolationLevel, NoTls};

/// The migrations, in order: (version, name, SQL). A version once released is never
/// edited; a change is a new file.
pub(crate) const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial", include_str!("../migrations/0001_initial.sql")),
    (
        2,
        "liveness",
        include_str!("../migrations/0002_liveness.sql"),
    ),
    (
        3,
        "chunk registry",
        include_str!("../migrations/0003_chunk_registry.sql"),
    ),
    (
        4,
        "any text",
        include_str!("../migrations/0004_any_text.sql"),
    ),
    (5, "keys", include_str!("../migrations/0005_keys.sql")),
    (
        6,
        "staged_roots",
        include_str!("../migrations/0006_staged_roots.sql"),
    ),
];

/// The advisory lock that serializes migrations of one database (any value, fixed
/// forever: every version of Strata must use the same one). "strata-m" in ASCII.
const MIGRATION_LOCK: i64 = 0x7374_7261_7461_2d6d;

/// How many times a transaction is run when it keeps failing to serialize.
pub const ATTEMPTS: u32 = 8;

/// Connections per store (each node of a cluster has its own pool).
const POOL_SIZE: usize = 16;

/// A failure inside a transaction body: a client error (classified by [`transact`]) or a
/// store error the body decided on (a record that does not decode, ...).
#[derive(Debug)]
pub enum Failure {
    /// A client error.
    Db(tokio_postgres::Error),
    /// A decision of the body.
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(error: tokio_postgres::Error) -> Self {
        Failure::Db(error)
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure::Store(error)
    }
}

/// The future a transaction body returns (boxed: it borrows the transaction).
pub type Body<'t, T> = Pin<Box<dyn Future<Output = Result<T, Failure>> + Send + 't>>;

/// Whether repeating a whole call has the effect of running it once: decides the kind of
/// a failure whose outcome is unknown (the connection broke during COMMIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Repeating is harmless (reads; writes whose second run changes nothing more).
    Safe,
    /// Repeating may do the write twice or report it differently.
    Unsafe,
}

/// Build the pool for `config`. No connection is made yet.
pub(crate) fn pool(config: tokio_postgres::Config, size: usize) -> Result<Pool, StoreError> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            // A connection that broke is noticed by `is_closed` and replaced; a session
            // lock is never left on a connection that goes back (see `gc_view`).
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .build()
        .map_err(|e| StoreError::Backend(format!("cannot build the PostgreSQL pool: {e}")))
}

/// The pool size of a store.
pub(crate) fn pool_size() -> usize {
    POOL_SIZE
}

/// A connection from `pool`, or `Unavailable` (the database cannot be reached, or the pool
/// is exhausted past its wait) / `Closed`.
pub(crate) async fn connection(pool: &Pool) -> Result<deadpool_postgres::Client, StoreError> {
    use deadpool_postgres::PoolError;
    pool.get().await.map_err(|error| match error {
        PoolError::Backend(error) => classify(error, "connect to PostgreSQL"),
        PoolError::Closed => StoreError::Closed("the PostgreSQL pool was closed".into()),
        other => StoreError::unavailable("no PostgreSQL connection", other),
    })
}

/// Run `body` in a transaction at `isolation` and commit it; run it again (with a
/// backoff) while it fails to serialize (SQLSTATE 40001, or 40P01 for a deadlock), at
/// most [`ATTEMPTS`] times, then answer `Conflict`. Every other failure is mapped once
/// (see `classify`); a failure of the COMMIT itself whose outcome is unknown is
/// `Unavailable` only if `repeat` says repeating the call is safe.
///
/// `body` runs once per attempt, so it must not have effects outside the transaction.
pub async fn transact<T, F>(
    pool: &Pool,
    operation: &'static str,
    isolation: IsolationLevel,
    repeat: Repeat,
    mut body: F,
) -> Result<T, StoreError>
where
    T: Send,
    F: for<'t> FnMut(&'t Transaction<'t>) -> Body<'t, T> + Send,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let error = match attempt_once(pool, isolation, &mut body).await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let (Attempt::Body(Failure::Db(db)) | Attempt::Commit(Failure::Db(db))) = &error else {
            return Err(final_error(error, operation, repeat));
        };
        if !is_serialization_failure(db) {
            return Err(final_error(error, operation, repeat));
        }
        if attempt >= ATTEMPTS {
            return Err(StoreError::Conflict(format!(
                "{operation}: still failing to serialize after {ATTEMPTS} attempts: {db}"
            )));
        }
        tracing::debug!(operation, attempt, error = %db, "serialization failure; running the transaction again");
        tokio::time::sleep(backoff(attempt)).await;
    }
}

/// Where an attempt failed.
enum Attempt {
    /// Before COMMIT was sent: nothing was written.
    Body(Failure),
    /// The COMMIT itself: for a lost connection, the outcome is unknown.
    Commit(Failure),
}

async fn attempt_once<T, F>(
    pool: &Pool,
    isolation: IsolationLevel,
    body: &mut F,
) -> Result<T, Attempt>
where
    F: for<'t> FnMut(&'t Transaction<'t>) -> Body<'t, T>,
{
    let mut client = connection(pool)
        .await
        .map_err(|e| Attempt::Body(Failure::Store(e)))?;
    let txn = client
        .build_transaction()
        .isolation_level(isolation)
        .start()
        .await
        .map_err(|e| Attempt::Body(e.into()))?;
    // On an error the transaction is dropped, which rolls it back.
    let value = body(&txn).await.map_err(Attempt::Body)?;
    txn.commit().await.map_err(|e| Attempt::Commit(e.into()))?;
    Ok(value)
}

fn final_error(error: Attempt, operation: &str, repeat: Repeat) -> StoreError {
    match error {
        Attempt::Body(Failure::Store(error)) | Attempt::Commit(Failure::Store(error)) => error,
        Attempt::Body(Failure::Db(error)) => classify(error, operation),
        Attempt::Commit(Failure::Db(error)) => {
            let kind = classify(error, operation);
            // A COMMIT that got an answer failed for sure (rolled back); one that lost its
            // connection may or may not have committed.
            if matches!(kind, StoreError::Unavailable { .. }) && repeat == Repeat::Unsafe {
                StoreError::Backend(format!(
                    "{operation}: the connection broke during COMMIT, so whether it committed is unknown: {kind}"
                ))
            } else {
                kind
            }
        }
    }
}

/// SQLSTATE 40001 (serialization_failure) or 40P01 (deadlock_detected): the transaction
/// was rolled back and may succeed when run again.
pub(crate) fn is_serialization_failure(error: &tokio_postgres::Error) -> bool {
    matches!(
        error.code(),
        Some(code) if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// The [`StoreError`] kind of a client error that is final for its call.
///
/// - no SQLSTATE (the connection broke, a socket error, a timeout), class 08 (connection
///   exception), 53 (insufficient resources: too many connections, out of memory or disk),
///   57P01–57P03 (the server is shutting down or starting): `Unavailable`, with the source;
/// - 40001 / 40P01 (after the retries), 55P03 (lock not available): `Conflict`;
/// - anything else (a constraint, a syntax error, a type mismatch): `Backend`.
pub(crate) fn classify(error: tokio_postgres::Error, operation: &str) -> StoreError {
    let Some(code) = error.code().cloned() else {
        return StoreError::unavailable(format!("{operation}: PostgreSQL connection"), error);
    };
    let class = &code.code()[..2];
    if class == "08"
        || class == "53"
        || code == SqlState::ADMIN_SHUTDOWN
        || code == SqlState::CRASH_SHUTDOWN
        || code == SqlState::CANNOT_CONNECT_NOW
    {
        StoreError::unavailable(format!("{operation}: PostgreSQL unavailable"), error)
    } else if is_serialization_failure(&error) || code == SqlState::LOCK_NOT_AVAILABLE {
        StoreError::Conflict(format!("{operation}: {error}"))
    } else {
        StoreError::Backend(format!("{operation}: {}", describe(&error)))
    }
}

/// The server's message of a database error (tokio-postgres' `Display` says only "db
/// error"), with its SQLSTATE.
pub(crate) fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

/// Exponential backoff with full jitter: up to 2, 4, 8 … ms, at most 200 ms.
fn backoff(attempt: u32) -> Duration {
    let ceiling_ms = (2u64 << attempt.min(7)).min(200);
    Duration::from_millis(rand::rng().random_range(1..=ceiling_ms))
}

/// Apply the migrations not applied yet, in order, each recorded in
/// `strata_schema_version`, all in one transaction under an advisory lock: two processes
/// opening the same database at once apply them once (the second waits for the lock,
/// then finds them recorded). Refuses a database whose schema is newer than this build.
pub(crate) async fn migrate(pool: &Pool) -> Result<i32, StoreError> {
    let mut client = connection(pool).await?;
    let op = "apply the migrations";
    let txn = client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await
        .map_err(|e| classify(e, op))?;
    // First, so that everything below sees the state after any other migrating process.
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| classify(e, op))?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS strata_schema_version (
             version    integer     PRIMARY KEY,
             name       text        NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(|e| classify(e, op))?;
    let row = txn
        .query_one(
            "SELECT coalesce(max(version), 0) FROM strata_schema_version",
            &[],
        )
        .await
        .map_err(|e| classify(e, op))?;
    let current: i32 = row.try_get(0).map_err(|e| classify(e, op))?;
    let latest = MIGRATIONS.last().map_or(0, |(v, _, _)| *v);
    if current > latest {
        return Err(StoreError::Backend(format!(
            "the database's schema is at version {current}, newer than this build knows ({latest}): upgrade Strata"
        )));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v > current) {
        txn.batch_execute(sql).await.map_err(|e| {
            StoreError::Backend(format!("migration {version} ({name}): {}", describe(&e)))
        })?;
        txn.execute(
            "INSERT INTO strata_schema_version (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .map_err(|e| classify(e, op))?;
        tracing::info!(version, name, "applied metadata schema migration");
    }
    txn.commit().await.map_err(|e| classify(e, op))?;
    Ok(latest)
}
