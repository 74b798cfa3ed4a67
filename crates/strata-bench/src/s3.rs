//! The raw S3 baseline's client: the load client's connection pool and `aws-sigv4`
//! signing ([`crate::client`]), sending 512 KiB objects straight to a bucket, path-style
//! (`/BUCKET/KEY`), as Strata's S3 chunk store does. Measured in the same run at the same
//! concurrency, it is the ceiling of Strata on that store, as the sink is for HTTP.
//!
//! Both paths cost the client the same: a PUT carries the body's SHA-256 in
//! `x-amz-content-sha256` (which the store checks, as Strata checks `x-amz-Checksum`),
//! taken from the precomputed payload, so neither hashes what it sends; a GET body is
//! hashed and compared with the digest of what was put, as a GetSnapshotBlock's is.

use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SigningSettings,
    UriPathNormalizationMode,
};
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

use crate::client::{
    ClientError, Endpoint, HttpPool, Response, Signer, exchange, expect_success, http_pool,
    identity,
};
use crate::payloads::Payload;

/// A key in a path: unreserved characters and `/` stay, the rest is encoded once (S3
/// signs the path as sent, without SigV4's second encoding).
const KEY_PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');
/// A query value: only unreserved characters stay.
const QUERY_VALUE: &AsciiSet = &KEY_PATH.add(b'/');
/// Deletions in flight when a prefix is emptied.
const DELETE_CONCURRENCY: usize = 16;

/// A signed S3 client for one bucket over one shared connection pool.
#[derive(Clone)]
pub struct S3Client {
    http: HttpPool,
    endpoint: Endpoint,
    identity: Identity,
    bucket: String,
}

impl std::fmt::Debug for S3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Client")
            .field("authority", &self.endpoint.authority)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl S3Client {
    /// A client of `bucket` at `endpoint` (plain HTTP).
    pub fn new(endpoint: Endpoint, bucket: impl Into<String>) -> Self {
        Self {
            http: http_pool(),
            identity: identity(&endpoint),
            endpoint,
            bucket: bucket.into(),
        }
    }

    /// PutObject of a precomputed payload at `key`.
    pub async fn put_object(&self, key: &str, payload: &Payload) -> Result<(), ClientError> {
        let response = self
            .send(
                Method::PUT,
                &self.object_path(key),
                payload.data.clone(),
                Some(hex::encode(payload.digest)),
            )
            .await?;
        expect_success("PutObject", &response)
    }

    /// GetObject of `key`, verified: the body's SHA-256 must be `digest`. Returns the
    /// number of bytes read.
    pub async fn get_object(&self, key: &str, digest: &[u8; 32]) -> Result<usize, ClientError> {
        let response = self
            .send(Method::GET, &self.object_path(key), Bytes::new(), None)
            .await?;
        expect_success("GetObject", &response)?;
        if Sha256::digest(&response.body).as_slice() != digest {
            return Err(ClientError::Verification(format!(
                "the {} bytes of {key} are not what was put",
                response.body.len()
            )));
        }
        Ok(response.body.len())
    }

    /// DeleteObject of `key` (S3 answers success for a key that is absent).
    pub async fn delete_object(&self, key: &str) -> Result<(), ClientError> {
        let response = self
            .send(Method::DELETE, &self.object_path(key), Bytes::new(), None)
            .await?;
        expect_success("DeleteObject", &response)
    }

    /// Every key under `prefix` (ListObjectsV2, following continuation tokens).
    pub async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, ClientError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            // Query parameters in their sorted order, as SigV4 canonicalizes them.
            let mut target = format!("/{}?", self.bucket);
            if let Some(token) = &token {
                target.push_str("continuation-token=");
                target.extend(utf8_percent_encode(token, QUERY_VALUE));
                target.push('&');
            }
            target.push_str("list-type=2&prefix=");
            target.extend(utf8_percent_encode(prefix, QUERY_VALUE));
            let response = self.send(Method::GET, &target, Bytes::new(), None).await?;
            expect_success("ListObjectsV2", &response)?;
            let page = ListPage::parse(&response.body)?;
            keys.extend(page.keys);
            match page.next {
                Some(next) => token = Some(next),
                None => return Ok(keys),
            }
        }
    }

    /// Delete every object under `prefix`, a few at a time; returns how many there were.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<usize, ClientError> {
        let keys = self.list_keys(prefix).await?;
        for batch in keys.chunks(DELETE_CONCURRENCY) {
            let mut deletions = tokio::task::JoinSet::new();
            for key in batch {
                let (client, key) = (self.clone(), key.clone());
                deletions.spawn(async move { client.delete_object(&key).await });
            }
            while let Some(joined) = deletions.join_next().await {
                joined.map_err(|e| ClientError::Http(format!("a deletion task failed: {e}")))??;
            }
        }
        Ok(keys.len())
    }

    fn object_path(&self, key: &str) -> String {
        format!("/{}/{}", self.bucket, utf8_percent_encode(key, KEY_PATH))
    }

    /// Sign (for service `s3`) and send one request. `content_sha256`: the body's hex
    /// SHA-256 if already known (otherwise the signer hashes the body, empty but for PUTs).
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Bytes,
        content_sha256: Option<String>,
    ) -> Result<Response, ClientError> {
        let authority = &self.endpoint.authority;
        let uri = format!("http://{authority}{path_and_query}");
        let mut request = Request::builder()
            .method(method)
            .uri(&uri)
            .header(http::header::HOST, authority)
            .body(Full::new(body.clone()))
            .map_err(|e| ClientError::Request(e.to_string()))?;
        // S3 wants the payload hash in a header on every request, and signs the path as
        // sent (no second encoding, no normalization), unlike the other services.
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let signable_body = match content_sha256 {
            Some(hash) => SignableBody::Precomputed(hash),
            None => SignableBody::Bytes(&body),
        };
        let signer = Signer {
            identity: &self.identity,
            region: &self.endpoint.region,
            service: "s3",
            settings,
        };
        signer.sign(&mut request, &uri, signable_body)?;
        exchange(&self.http, request).await
    }
}

/// One page of ListObjectsV2.
#[derive(Debug, PartialEq)]
struct ListPage {
    keys: Vec<String>,
    /// `NextContinuationToken`, when `IsTruncated`.
    next: Option<String>,
}

impl ListPage {
    fn parse(body: &[u8]) -> Result<Self, ClientError> {
        let decode = |detail: String| ClientError::Decode {
            operation: "ListObjectsV2",
            detail,
        };
        let text = std::str::from_utf8(body).map_err(|e| decode(e.to_string()))?;
        let document = roxmltree::Document::parse(text).map_err(|e| decode(e.to_string()))?;
        let root = document.root_element();
        let child_text = |node: roxmltree::Node<'_, '_>, name: &str| {
            node.children()
                .find(|c| c.tag_name().name() == name)
                .and_then(|c| c.text())
                .map(str::to_owned)
        };
        let keys = root
            .children()
            .filter(|c| c.tag_name().name() == "Contents")
            .filter_map(|c| child_text(c, "Key"))
            .collect();
        let truncated = child_text(root, "IsTruncated").as_deref() == Some("true");
        let next = if truncated {
            Some(
                child_text(root, "NextContinuationToken")
                    .ok_or_else(|| decode("truncated without NextContinuationToken".into()))?,
            )
        } else {
            None
        };
        Ok(Self { keys, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_pages_give_keys_and_the_next_token() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount><IsTruncated>true</IsTruncated>
  <NextContinuationToken>tok/1=</NextContinuationToken>
  <Contents><Key>p/obj-0</Key><Size>1</Size></Contents>
  <Contents><Key>p/obj-1</Key><Size>1</Size></Contents>
</ListBucketResult>"#;
        let page = ListPage::parse(body).expect("parses");
        assert_eq!(page.keys, ["p/obj-0", "p/obj-1"]);
        assert_eq!(page.next.as_deref(), Some("tok/1="));
        let last = br#"<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>"#;
        assert_eq!(
            ListPage::parse(last).expect("parses"),
            ListPage {
                keys: Vec::new(),
                next: None
            }
        );
    }

    #[test]
    fn keys_keep_their_slashes_and_queries_do_not() {
        let client = S3Client::new(
            Endpoint {
                authority: "127.0.0.1:1".into(),
                access_key_id: "k".into(),
                secret_access_key: "s".into(),
                region: "us-east-1".into(),
            },
            "bucket",
        );
        assert_eq!(client.object_path("a/b c/obj-1"), "/bucket/a/b%20c/obj-1");
        assert_eq!(utf8_percent_encode("a/b", QUERY_VALUE).to_string(), "a%2Fb");
    }
}
