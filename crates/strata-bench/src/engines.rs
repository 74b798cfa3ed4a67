//! Strata on shared engines (`--metadata postgres://…`, `--chunks s3://…`): what the flags
//! name ([`SharedEngines`]), and a fresh place on them for every measured run
//! ([`EngineLease`]): a PostgreSQL schema and a bucket key prefix of its own, so that no
//! run inherits another's data (a warm chunk index would turn `put` into a dedup run),
//! both removed when the run's instance stops.

use anyhow::Context;
use strata_server::stores::{ChunkOptions, MetadataBackend};

use crate::client::Endpoint;
use crate::s3::S3Client;

/// The engines a benchmark runs Strata on; either may be absent (embedded instead).
#[derive(Clone, Default)]
pub struct SharedEngines {
    /// The PostgreSQL URL given (`--metadata`); each run gets a schema in it.
    pub postgres: Option<String>,
    /// The bucket given (`--chunks`); each run gets a key prefix in it.
    pub s3: Option<S3Bucket>,
}

impl std::fmt::Debug for SharedEngines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL (it may hold a password) nor the S3 secret.
        f.debug_struct("SharedEngines")
            .field("postgres", &self.postgres.as_ref().map(|_| "postgres://.."))
            .field("s3", &self.s3)
            .finish()
    }
}

impl SharedEngines {
    /// Whether Strata runs on embedded stores only.
    pub fn is_embedded(&self) -> bool {
        self.postgres.is_none() && self.s3.is_none()
    }

    /// `metadata=… chunks=…` for the setup line: kinds, never a credential.
    pub fn describe(&self) -> (&'static str, &'static str) {
        (
            if self.postgres.is_some() {
                "postgres"
            } else {
                "embedded"
            },
            if self.s3.is_some() { "s3" } else { "embedded" },
        )
    }
}

/// A bucket on an S3-compatible store reached over plain HTTP, and where in it to work.
#[derive(Clone)]
pub struct S3Bucket {
    /// The bucket (it must exist).
    pub bucket: String,
    /// Key prefix given after the bucket, without slashes at either end (may be empty).
    pub prefix: String,
    /// `http://HOST:PORT`, as Strata's S3 client takes it.
    pub endpoint_url: String,
    /// The same for the raw client: authority, keys and signing region.
    pub endpoint: Endpoint,
}

impl std::fmt::Debug for S3Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Bucket")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint_url", &self.endpoint_url)
            .finish_non_exhaustive()
    }
}

impl S3Bucket {
    /// Parse `s3://BUCKET[/PREFIX]` at `endpoint_url`. The raw baseline's client speaks
    /// plain HTTP only, so the endpoint must be an `http://` one.
    pub fn parse(
        location: &str,
        endpoint_url: Option<&str>,
        region: &str,
        access_key_id: String,
        secret_access_key: String,
    ) -> anyhow::Result<Self> {
        let rest = location
            .strip_prefix("s3://")
            .context("--chunks must be s3://BUCKET[/PREFIX]")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        anyhow::ensure!(
            !bucket.is_empty(),
            "--chunks must be s3://BUCKET[/PREFIX]: the bucket is missing"
        );
        let endpoint_url = endpoint_url
            .context("--chunks needs --s3-endpoint http://HOST:PORT (the store to measure)")?
            .trim_end_matches('/');
        let authority = endpoint_url.strip_prefix("http://").context(
            "--s3-endpoint must be http://HOST:PORT: the raw S3 baseline's client speaks plain HTTP",
        )?;
        anyhow::ensure!(
            !authority.is_empty() && !authority.contains('/'),
            "--s3-endpoint must be http://HOST:PORT, without a path"
        );
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            endpoint_url: endpoint_url.to_owned(),
            endpoint: Endpoint {
                authority: authority.to_owned(),
                access_key_id,
                secret_access_key,
                region: region.to_owned(),
            },
        })
    }

    /// A client of the bucket.
    pub fn client(&self) -> S3Client {
        S3Client::new(self.endpoint.clone(), self.bucket.clone())
    }

    /// `PREFIX/NAME/` (or `NAME/` without a prefix): a place of its own in the bucket.
    pub fn key_prefix(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            format!("{name}/")
        } else {
            format!("{}/{name}/", self.prefix)
        }
    }

    /// A fresh place for one run of one target, whose objects [`ObjectPrefix::remove`]
    /// deletes.
    pub fn fresh_prefix(&self, target: &str) -> ObjectPrefix {
        ObjectPrefix {
            bucket: self.clone(),
            prefix: self.key_prefix(&format!("bench-{}-{target}", run_id())),
        }
    }
}

/// Objects of one run under a key prefix of their own.
#[derive(Debug, Clone)]
pub struct ObjectPrefix {
    /// Where.
    pub bucket: S3Bucket,
    /// The prefix, ending in `/`.
    pub prefix: String,
}

impl ObjectPrefix {
    /// Delete everything under the prefix.
    pub async fn remove(&self) -> anyhow::Result<()> {
        self.bucket
            .client()
            .delete_prefix(&self.prefix)
            .await
            .with_context(|| format!("cannot empty s3://{}/{}", self.bucket.bucket, self.prefix))?;
        Ok(())
    }
}

/// 64 random bits in hex: names of schemas and prefixes no other run uses.
fn run_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The fresh schema and prefix of one Strata run, and what its nodes' settings need.
#[derive(Debug)]
pub struct EngineLease {
    schema: Option<Schema>,
    objects: Option<ObjectPrefix>,
    /// `--metadata` of the nodes: the schema's URL, or embedded.
    pub metadata: MetadataBackend,
    /// `--chunks` and `--s3-*` of the nodes.
    pub chunks: ChunkOptions,
}

struct Schema {
    admin_url: String,
    name: String,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl EngineLease {
    /// Create a schema (if on PostgreSQL) and choose a prefix (if on S3) for one run.
    pub async fn create(engines: &SharedEngines) -> anyhow::Result<Self> {
        let id = run_id();
        let (schema, metadata) = match &engines.postgres {
            Some(admin_url) => {
                let name = format!("bench_{id}");
                execute(admin_url, &format!("CREATE SCHEMA {name}"))
                    .await
                    .with_context(|| format!("cannot create the schema {name}"))?;
                // Every connection of the nodes' pools then works in the new schema only,
                // as the cluster tests do (strata-server/tests/integration/cluster.rs).
                let separator = if admin_url.contains('?') { '&' } else { '?' };
                let url = format!("{admin_url}{separator}options=-c%20search_path%3D{name}");
                let schema = Schema {
                    admin_url: admin_url.clone(),
                    name,
                };
                (Some(schema), MetadataBackend::Postgres(url))
            }
            None => (None, MetadataBackend::Embedded),
        };
        let (objects, chunks) = match &engines.s3 {
            Some(bucket) => {
                let objects = ObjectPrefix {
                    bucket: bucket.clone(),
                    prefix: bucket.key_prefix(&format!("bench-{id}-strata")),
                };
                let chunks = ChunkOptions {
                    chunks: Some(format!("s3://{}/{}", bucket.bucket, objects.prefix)),
                    s3_endpoint: Some(bucket.endpoint_url.clone()),
                    s3_region: Some(bucket.endpoint.region.clone()),
                    s3_access_key_id: Some(bucket.endpoint.access_key_id.clone()),
                    s3_secret_access_key: Some(bucket.endpoint.secret_access_key.clone()),
                };
                (Some(objects), chunks)
            }
            None => (None, ChunkOptions::default()),
        };
        Ok(Self {
            schema,
            objects,
            metadata,
            chunks,
        })
    }

    /// Drop the schema and delete the chunks (after every node stopped). Both are tried
    /// even if the first fails.
    pub async fn release(self) -> anyhow::Result<()> {
        let dropped = match &self.schema {
            Some(schema) => execute(
                &schema.admin_url,
                &format!("DROP SCHEMA {} CASCADE", schema.name),
            )
            .await
            .with_context(|| format!("cannot drop the schema {}", schema.name)),
            None => Ok(()),
        };
        let emptied = match &self.objects {
            Some(objects) => objects.remove().await,
            None => Ok(()),
        };
        dropped.and(emptied)
    }
}

/// Run `sql` on a connection of its own to `url`.
async fn execute(url: &str, sql: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("cannot connect to the --metadata database")?;
    let driver = tokio::spawn(connection);
    let result = client.batch_execute(sql).await;
    drop(client);
    // The connection ends once the client is gone; its own error adds nothing here.
    let _ = driver.await;
    result.map_err(anyhow::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(location: &str, endpoint: Option<&str>) -> anyhow::Result<S3Bucket> {
        S3Bucket::parse(location, endpoint, "us-east-1", "k".into(), "s".into())
    }

    #[test]
    fn locations_give_bucket_prefix_and_authority() {
        let b = bucket("s3://b/some/prefix/", Some("http://127.0.0.1:7480/")).expect("parses");
        assert_eq!((b.bucket.as_str(), b.prefix.as_str()), ("b", "some/prefix"));
        assert_eq!(b.endpoint.authority, "127.0.0.1:7480");
        assert_eq!(b.key_prefix("run"), "some/prefix/run/");
        let bare = bucket("s3://b", Some("http://h:1")).expect("parses");
        assert_eq!(bare.key_prefix("run"), "run/");
        assert_ne!(
            bare.fresh_prefix("raw-s3").prefix,
            bare.fresh_prefix("raw-s3").prefix
        );
    }

    #[test]
    fn locations_the_raw_client_cannot_reach_are_refused() {
        for (location, endpoint, says) in [
            ("b/p", Some("http://h:1"), "s3://BUCKET"),
            ("s3:///p", Some("http://h:1"), "bucket is missing"),
            ("s3://b", None, "--s3-endpoint"),
            ("s3://b", Some("https://h:1"), "plain HTTP"),
            ("s3://b", Some("http://h:1/path"), "without a path"),
        ] {
            let error = bucket(location, endpoint).expect_err(location);
            assert!(error.to_string().contains(says), "{location}: {error}");
        }
    }
}
