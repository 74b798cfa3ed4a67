//! Strata's chunk store on an S3-compatible object store: Ceph RGW, AWS S3, MinIO, Garage, ...
//!
//! Each chunk is one object named by its content, `PREFIX/chunks/HEX-SHA256`, holding the
//! chunk's bytes and nothing else. Because the name is the content's digest:
//!
//! - a put is idempotent (storing the same name twice stores the same bytes), so
//!   correctness never depends on conditional writes: Garage ignores `If-None-Match`, Ceph
//!   honours `If-None-Match: *`; neither is sent;
//! - every read is verified by hashing what came back and comparing it with the name;
//! - a listing in key order is a listing in digest order (lower-case hex sorts as the
//!   bytes do), which is what [`ChunkStore::list`] promises.
//!
//! Errors are sorted so that the service's one retry policy
//! ([`strata_core::retry::RetryPolicy`]) can act on them: a timeout, a refused or reset
//! connection, a truncated body, a 5xx or a throttling answer are
//! [`StoreError::Unavailable`]; only bytes that arrived whole and hash wrong twice in a row
//! are [`StoreError::Corrupt`]. The SDK's own retries are switched off, so that the
//! attempts of the two layers do not multiply: the adapter makes one attempt per call and
//! the service repeats what is retryable.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    retry::RetryConfig, timeout::TimeoutConfig,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use bytes::{Bytes, BytesMut};
use strata_core::ports::{ChunkStore, StoreError, StoredChunk};
use strata_types::ChunkDigest;

/// Deletions in flight at once during [`ChunkStore::delete`] (one request per object:
/// multi-object delete needs a `Content-MD5` some S3-compatible stores insist on and the
/// SDK no longer sends).
const DELETES_IN_FLIGHT: usize = 16;

/// Objects asked for per listing request (S3's maximum).
const LIST_PAGE: i32 = 1000;

/// Where the chunks live: `s3://BUCKET[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket; it must exist.
    pub bucket: String,
    /// Prepended to every key: empty, or ending in `/`.
    pub prefix: String,
}

impl S3Location {
    /// Parse `s3://BUCKET` or `s3://BUCKET/PREFIX` (a trailing `/` is optional).
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| format!("'{text}' is not an s3://BUCKET[/PREFIX] location"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid_bucket {
            return Err(format!(
                "'{bucket}' is not a bucket name (3 to 63 lower-case letters, digits, '-' and '.')"
            ));
        }
        let prefix = prefix.trim_matches('/');
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// How to reach the object store. `Debug` never shows the secret.
#[derive(Clone)]
pub struct S3Settings {
    /// Bucket and prefix.
    pub location: S3Location,
    /// The S3 endpoint, e.g. `http://127.0.0.1:7480`; `None`: AWS's for the region.
    /// Requests use path-style addressing (`ENDPOINT/BUCKET/KEY`), which every
    /// S3-compatible store understands.
    pub endpoint: Option<String>,
    /// The signing region (`us-east-1` for most S3-compatible stores).
    pub region: String,
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// How long one request may take before it is abandoned as unavailable.
    pub request_timeout: Duration,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
}

impl S3Settings {
    /// Settings with the default timeouts.
    pub fn new(
        location: S3Location,
        endpoint: Option<String>,
        region: impl Into<String>,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        Self {
            location,
            endpoint,
            region: region.into(),
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("location", &self.location.to_string())
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<hidden>")
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// The chunk port on an S3 bucket. Cheap to clone (the SDK client is shared).
#[derive(Clone)]
pub struct S3ChunkStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// `PREFIX/chunks/`: every chunk's key starts with it.
    chunk_prefix: String,
    /// For messages: where the bucket is.
    endpoint: String,
}

impl fmt::Debug for S3ChunkStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3ChunkStore")
            .field("bucket", &self.bucket)
            .field("chunk_prefix", &self.chunk_prefix)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl S3ChunkStore {
    /// Connect and check that the bucket exists and the credentials may use it. A missing
    /// bucket or refused credentials are [`StoreError::Backend`] with a message saying
    /// what to do; an unreachable endpoint is [`StoreError::Unavailable`].
    pub async fn connect(settings: &S3Settings) -> Result<Self, StoreError> {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let credentials = Credentials::new(
            settings.access_key_id.clone(),
            settings.secret_access_key.clone(),
            None,
            None,
            "strata-settings",
        );
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .credentials_provider(credentials)
            .http_client(http)
            .force_path_style(true)
            // One attempt per call: the service's RetryPolicy repeats what is retryable.
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(settings.connect_timeout)
                    .operation_attempt_timeout(settings.request_timeout)
                    .build(),
            )
            // The content is verified by its SHA-256 name on every read; the SDK's default
            // CRC32 trailers (aws-chunked bodies) are not understood by every S3-compatible
            // store, and would hash every block once more.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint);
        }
        let store = Self {
            client: aws_sdk_s3::Client::from_conf(config.build()),
            bucket: settings.location.bucket.clone(),
            chunk_prefix: format!("{}chunks/", settings.location.prefix),
            endpoint: settings
                .endpoint
                .clone()
                .unwrap_or_else(|| format!("AWS S3 ({})", settings.region)),
        };
        store.check_bucket().await?;
        Ok(store)
    }

    async fn check_bucket(&self) -> Result<(), StoreError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(context)) if context.raw().status().as_u16() == 404 => {
                Err(StoreError::Backend(format!(
                    "the bucket '{}' does not exist at {}: create it first (e.g. `aws s3 mb s3://{}`)",
                    self.bucket, self.endpoint, self.bucket
                )))
            }
            Err(SdkError::ServiceError(context)) if context.raw().status().as_u16() == 403 => {
                Err(StoreError::Backend(format!(
                    "access to the bucket '{}' at {} is denied: check STRATA_S3_ACCESS_KEY_ID and STRATA_S3_SECRET_ACCESS_KEY",
                    self.bucket, self.endpoint
                )))
            }
            Err(error) => Err(self.classify("reach the bucket", error)),
        }
    }

    /// The key of a chunk.
    pub fn key(&self, digest: &ChunkDigest) -> String {
        format!("{}{}", self.chunk_prefix, digest.to_hex())
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The SDK client, for tests that reach past the port (damaging an object, say).
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// Sort an SDK failure into the kinds the retry policy acts on.
    fn classify<E>(
        &self,
        what: &str,
        error: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let message = format!(
            "cannot {what} in s3://{} at {}: {}",
            self.bucket,
            self.endpoint,
            DisplayErrorContext(&error)
        );
        match &error {
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => StoreError::unavailable(message, error),
            SdkError::ServiceError(context) => {
                let status = context.raw().status().as_u16();
                let code = context.err().code().unwrap_or_default();
                let transient = status >= 500
                    || status == 429
                    || matches!(code, "SlowDown" | "RequestTimeout" | "ServiceUnavailable");
                if transient {
                    StoreError::unavailable(message, error)
                } else {
                    StoreError::Backend(message)
                }
            }
            _ => StoreError::Backend(message),
        }
    }

    /// One GET of `key`: `None` if absent; the whole body, or Unavailable if it was cut short.
    async fn fetch(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let output = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(output) => output,
            Err(SdkError::ServiceError(context)) if context.err().is_no_such_key() => {
                return Ok(None);
            }
            Err(error) => return Err(self.classify("read a chunk", error)),
        };
        let expected = output
            .content_length()
            .and_then(|length| usize::try_from(length).ok());
        let mut body = output.body;
        let mut data = BytesMut::with_capacity(expected.unwrap_or(0));
        loop {
            match body.next().await {
                None => break,
                Some(Ok(piece)) => data.extend_from_slice(&piece),
                Some(Err(error)) => {
                    return Err(StoreError::unavailable(
                        format!("the body of {key} was cut off after {} bytes", data.len()),
                        error,
                    ));
                }
            }
        }
        if let Some(expected) = expected
            && data.len() != expected
        {
            return Err(StoreError::Unavailable {
                message: format!(
                    "the body of {key} ended after {} of its {expected} bytes",
                    data.len()
                ),
                source: None,
            });
        }
        Ok(Some(data.freeze()))
    }
}

impl ChunkStore for S3ChunkStore {
    async fn put(&self, digest: ChunkDigest, data: Bytes) -> Result<(), StoreError> {
        let length = i64::try_from(data.len())
            .map_err(|_| StoreError::Backend("a chunk larger than i64::MAX bytes".to_owned()))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.key(&digest))
            .content_length(length)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|error| self.classify("store a chunk", error))?;
        Ok(())
    }

    async fn get(&self, digest: ChunkDigest) -> Result<Option<Bytes>, StoreError> {
        let key = self.key(&digest);
        // Bytes that arrived whole but hash wrong are read once more before they are called
        // corrupt: a flipped bit on the way (a proxy, a NIC) is not rot in the bucket, and
        // calling it corrupt would make the service forget the chunk.
        for attempt in 0..2 {
            let Some(data) = self.fetch(&key).await? else {
                return Ok(None);
            };
            if ChunkDigest::of(&data) == digest {
                return Ok(Some(data));
            }
            tracing::warn!(%key, attempt, "a chunk read from S3 does not match its digest");
        }
        Err(StoreError::Corrupt(format!(
            "the object {key} in s3://{} holds bytes whose SHA-256 is not {digest} (read twice)",
            self.bucket
        )))
    }

    async fn delete(&self, digests: Vec<ChunkDigest>) -> Result<u64, StoreError> {
        let mut keys: Vec<String> = digests.iter().map(|d| self.key(d)).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut in_flight = tokio::task::JoinSet::new();
        let mut first_error = None;
        let mut keys = keys.into_iter();
        loop {
            while in_flight.len() < DELETES_IN_FLIGHT {
                let Some(key) = keys.next() else { break };
                let store = self.clone();
                in_flight.spawn(async move {
                    store
                        .client
                        .delete_object()
                        .bucket(&store.bucket)
                        .key(key)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|error| store.classify("delete a chunk", error))
                });
            }
            let Some(joined) = in_flight.join_next().await else {
                break;
            };
            let outcome = joined.unwrap_or_else(|panic| {
                Err(StoreError::Backend(format!(
                    "a deletion task failed: {panic}"
                )))
            });
            if let Err(error) = outcome {
                first_error.get_or_insert(error);
            }
        }
        match first_error {
            // Deleting an absent object succeeds, so a repeated call is harmless.
            Some(error) => Err(error),
            // S3 does not say how large a deleted object was; the caller knows from its plan.
            None => Ok(0),
        }
    }

    async fn list(
        &self,
        after: Option<ChunkDigest>,
        limit: usize,
    ) -> Result<Vec<StoredChunk>, StoreError> {
        let mut chunks = Vec::new();
        let mut start_after = after.map(|digest| self.key(&digest));
        while chunks.len() < limit {
            let want = i32::try_from(limit - chunks.len()).unwrap_or(LIST_PAGE);
            let mut request = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&self.chunk_prefix)
                .max_keys(want.min(LIST_PAGE));
            if let Some(key) = &start_after {
                request = request.start_after(key);
            }
            let page = request
                .send()
                .await
                .map_err(|error| self.classify("list chunks", error))?;
            let objects = page.contents();
            let Some(last) = objects.last().and_then(|o| o.key()) else {
                break;
            };
            start_after = Some(last.to_owned());
            for object in objects {
                let Some(key) = object.key() else { continue };
                let name = key.strip_prefix(&self.chunk_prefix).unwrap_or(key);
                // Something else under our prefix (an operator's file): not ours to list.
                let Ok(digest) = ChunkDigest::from_hex(name) else {
                    tracing::debug!(%key, "an object under the chunk prefix is not a chunk");
                    continue;
                };
                let written = object
                    .last_modified()
                    .and_then(|time| SystemTime::try_from(*time).ok())
                    // No time: as if just written, so GC's grace period keeps it.
                    .unwrap_or_else(SystemTime::now);
                chunks.push(StoredChunk {
                    digest,
                    size: object
                        .size()
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(0),
                    written,
                });
            }
            if page.is_truncated() != Some(true) {
                break;
            }
        }
        chunks.truncate(limit);
        Ok(chunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_with_and_without_a_prefix() {
        let plain = S3Location::parse("s3://strata-chunks").expect("parse");
        assert_eq!(
            (plain.bucket.as_str(), plain.prefix.as_str()),
            ("strata-chunks", "")
        );
        let nested = S3Location::parse("s3://strata-chunks/cluster/a/").expect("parse");
        assert_eq!(nested.prefix, "cluster/a/");
        assert_eq!(nested.to_string(), "s3://strata-chunks/cluster/a/");
        for wrong in [
            "strata-chunks",
            "s3://",
            "s3://UPPER",
            "s3://a",
            "http://b/c",
        ] {
            assert!(S3Location::parse(wrong).is_err(), "{wrong} parsed");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let settings = S3Settings::new(
            S3Location::parse("s3://bucket").expect("parse"),
            Some("http://127.0.0.1:1".to_owned()),
            "us-east-1",
            "AKIDEXAMPLE",
            "very-secret-value",
        );
        let shown = format!("{settings:?}");
        assert!(shown.contains("AKIDEXAMPLE") && !shown.contains("very-secret-value"));
    }
}
