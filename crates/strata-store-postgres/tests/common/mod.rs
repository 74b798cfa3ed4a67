//! Shared by the test binaries: a fresh, empty store in a schema of its own.

#![allow(dead_code)]

use strata_store_postgres::PostgresMetadataStore;
use tokio_postgres::{Config, NoTls};

/// The variable that names the test database.
pub const URL_VAR: &str = "DATABASE_URL";

/// The database URL. Fails (never skips) without it: these tests need a real server.
pub fn url() -> String {
    std::env::var(URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{URL_VAR} is not set: the PostgreSQL tests need a server \
             (`source ci/postgres.sh && pg_install && pg_up` exports {URL_VAR})"
        )
    })
}

/// A schema that exists only for one test (the cluster is throwaway; schemas are left
/// behind for a post-mortem).
pub struct Schema {
    pub name: String,
    pub admin: tokio_postgres::Client,
}

impl Schema {
    /// A new empty schema, with an administrative connection to it.
    pub async fn create() -> Self {
        let name = format!("s_{:016x}", rand::random::<u64>());
        let admin = client(&config(&name)).await;
        admin
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .expect("create schema");
        Self { name, admin }
    }

    /// The store's configuration: the test URL with this schema as `search_path`.
    pub fn config(&self) -> Config {
        config(&self.name)
    }

    /// A store on this schema (running the migrations it lacks).
    pub async fn store(&self) -> PostgresMetadataStore {
        PostgresMetadataStore::connect_with(self.config())
            .await
            .expect("connect the store")
    }
}

fn config(schema: &str) -> Config {
    let mut config: Config = url().parse().expect("a valid DATABASE_URL");
    config.options(format!("-c search_path={schema}"));
    config
}

/// A plain client for `config`, driven by the calling runtime.
pub async fn client(config: &Config) -> tokio_postgres::Client {
    let (client, connection) = config.connect(NoTls).await.expect("connect");
    tokio::spawn(async move {
        // Ends when the client is dropped.
        let _ = connection.await;
    });
    client
}

/// What the conformance macro needs: a fresh store and a guard.
pub async fn open() -> (PostgresMetadataStore, Schema) {
    let schema = Schema::create().await;
    let store = schema.store().await;
    (store, schema)
}
