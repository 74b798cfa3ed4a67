//! The light load client: hyper (HTTP/1.1, pooled keep-alive connections) with SigV4
//! signing by `aws-sigv4`, the way the AWS SDKs send the EBS direct APIs.
//!
//! PutSnapshotBlock is signed with `x-amz-content-sha256: UNSIGNED-PAYLOAD` (as the SDKs do
//! for it), so the client never hashes a body it sends; the block's checksum is
//! precomputed ([`crate::payloads`]). GetSnapshotBlock bodies are hashed and compared with
//! `x-amz-Checksum`, as a careful client would, and that cost is the client's.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use strata_types::BLOCK_SIZE;
use strata_wire::headers::{
    CHANGED_BLOCKS_COUNT, CHECKSUM, CHECKSUM_ALGORITHM, DATA_LENGTH, SHA256,
};

use crate::payloads::Payload;

/// Everything but RFC 3986 unreserved characters is encoded, as SigV4 expects.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Where to send requests and as whom.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port` (the benchmark only ever targets 127.0.0.1).
    pub authority: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Signing region.
    pub region: String,
}

/// Why a request did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connection or protocol failure.
    #[error("HTTP failure: {0}")]
    Http(String),
    /// The server answered with an unexpected status.
    #[error("{operation} answered {status}: {body}")]
    Status {
        /// Operation name.
        operation: &'static str,
        /// HTTP status.
        status: u16,
        /// Start of the response body.
        body: String,
    },
    /// A GetSnapshotBlock body did not match its checksum or length.
    #[error("GetSnapshotBlock returned a block that fails verification: {0}")]
    Verification(String),
    /// A response body could not be decoded.
    #[error("cannot decode the {operation} response: {detail}")]
    Decode {
        /// Operation name.
        operation: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// The request could not be built or signed.
    #[error("cannot build the request: {0}")]
    Request(String),
}

/// One page of ListSnapshotBlocks.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BlockPage {
    /// Blocks on this page.
    #[serde(default)]
    pub blocks: Vec<ListedBlock>,
    /// Where the listing continues.
    pub next_token: Option<String>,
}

/// One `Block` of ListSnapshotBlocks.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListedBlock {
    /// Index.
    #[serde(deserialize_with = "index_number_or_text")]
    pub block_index: u32,
    /// Token for GetSnapshotBlock.
    pub block_token: String,
}

/// One page of ListChangedBlocks.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChangedPage {
    /// Changed blocks on this page.
    #[serde(default)]
    pub changed_blocks: Vec<serde_json::Value>,
    /// Where the listing continues.
    pub next_token: Option<String>,
}

/// A `BlockIndex` as the model's integer, or as the decimal string moto sends.
fn index_number_or_text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Index {
        Number(u32),
        Text(String),
    }
    match Index::deserialize(deserializer)? {
        Index::Number(n) => Ok(n),
        Index::Text(text) => text.parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StartResponse {
    snapshot_id: String,
}

/// The HTTP side of both clients: one pool of keep-alive connections.
pub(crate) type HttpPool = Client<HttpConnector, Full<Bytes>>;

/// A pool of keep-alive connections, any number per host (the load decides).
pub(crate) fn http_pool() -> HttpPool {
    let mut connector = HttpConnector::new();
    // Small requests (Start, Complete, List) must not wait for Nagle.
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .build(connector)
}

/// The authorities of the nodes of one deployment, taken in turn: what a round-robin load
/// balancer in front of stateless nodes would do, request by request.
#[derive(Debug, Clone)]
struct RoundRobin {
    authorities: Arc<[String]>,
    next: Arc<AtomicUsize>,
}

impl RoundRobin {
    fn new(authorities: Vec<String>) -> Self {
        Self {
            authorities: authorities.into(),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn pick(&self) -> &str {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        &self.authorities[n % self.authorities.len()]
    }
}

/// A signed EBS direct API client over one shared connection pool.
#[derive(Clone)]
pub struct EbsClient {
    http: HttpPool,
    endpoint: Endpoint,
    identity: Identity,
    nodes: RoundRobin,
}

impl std::fmt::Debug for EbsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbsClient")
            .field("nodes", &self.nodes.authorities)
            .finish_non_exhaustive()
    }
}

impl EbsClient {
    /// A client for `endpoint`. Connections are kept alive and reused across requests.
    pub fn new(endpoint: Endpoint) -> Self {
        let authorities = vec![endpoint.authority.clone()];
        Self::round_robin(endpoint, authorities)
    }

    /// A client for the nodes at `authorities` (all sharing `endpoint`'s keys and
    /// region), sending each request to the next node in turn. Any node may serve any
    /// request of a deployment on shared stores, so a snapshot started on one node gets
    /// its blocks and its completion through the others.
    pub fn round_robin(endpoint: Endpoint, mut authorities: Vec<String>) -> Self {
        if authorities.is_empty() {
            authorities.push(endpoint.authority.clone());
        }
        Self {
            http: http_pool(),
            identity: identity(&endpoint),
            endpoint,
            nodes: RoundRobin::new(authorities),
        }
    }

    /// StartSnapshot; returns the snapshot id.
    pub async fn start_snapshot(
        &self,
        volume_size_gib: u64,
        parent: Option<&str>,
    ) -> Result<String, ClientError> {
        let mut body = serde_json::json!({ "VolumeSize": volume_size_gib });
        if let Some(parent) = parent {
            body["ParentSnapshotId"] = parent.into();
        }
        let body = Bytes::from(body.to_string());
        let response = self
            .send(Method::POST, "/snapshots".into(), Vec::new(), body, false)
            .await?;
        expect_success("StartSnapshot", &response)?;
        let start: StartResponse = decode("StartSnapshot", &response.body)?;
        Ok(start.snapshot_id)
    }

    /// PutSnapshotBlock of a precomputed payload.
    pub async fn put_block(
        &self,
        snapshot: &str,
        index: u32,
        payload: &Payload,
    ) -> Result<(), ClientError> {
        let headers = vec![
            (DATA_LENGTH, HeaderValue::from(payload.data.len())),
            (CHECKSUM, payload.checksum.clone()),
            (CHECKSUM_ALGORITHM, HeaderValue::from_static(SHA256)),
        ];
        let response = self
            .send(
                Method::PUT,
                format!("/snapshots/{snapshot}/blocks/{index}"),
                headers,
                payload.data.clone(),
                true,
            )
            .await?;
        expect_success("PutSnapshotBlock", &response)
    }

    /// CompleteSnapshot with `changed_blocks` written blocks (no aggregate checksum).
    pub async fn complete(&self, snapshot: &str, changed_blocks: u64) -> Result<(), ClientError> {
        let headers = vec![(CHANGED_BLOCKS_COUNT, HeaderValue::from(changed_blocks))];
        let response = self
            .send(
                Method::POST,
                format!("/snapshots/completion/{snapshot}"),
                headers,
                Bytes::new(),
                false,
            )
            .await?;
        expect_success("CompleteSnapshot", &response)
    }

    /// One page of ListSnapshotBlocks.
    pub async fn list_blocks(
        &self,
        snapshot: &str,
        max_results: u32,
        page_token: Option<&str>,
    ) -> Result<BlockPage, ClientError> {
        let mut target = format!("/snapshots/{snapshot}/blocks?maxResults={max_results}");
        if let Some(token) = page_token {
            target.push_str("&pageToken=");
            target.extend(utf8_percent_encode(token, QUERY_VALUE));
        }
        let response = self
            .send(Method::GET, target, Vec::new(), Bytes::new(), false)
            .await?;
        expect_success("ListSnapshotBlocks", &response)?;
        decode("ListSnapshotBlocks", &response.body)
    }

    /// Every block of a snapshot, following page tokens.
    pub async fn list_all_blocks(
        &self,
        snapshot: &str,
        max_results: u32,
    ) -> Result<Vec<ListedBlock>, ClientError> {
        let mut blocks = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .list_blocks(snapshot, max_results, token.as_deref())
                .await?;
            blocks.extend(page.blocks);
            match page.next_token {
                Some(next) => token = Some(next),
                None => return Ok(blocks),
            }
        }
    }

    /// One page of ListChangedBlocks between `first` and `second`.
    pub async fn list_changed(
        &self,
        first: &str,
        second: &str,
        max_results: u32,
        page_token: Option<&str>,
    ) -> Result<ChangedPage, ClientError> {
        let mut target = format!(
            "/snapshots/{second}/changedblocks?firstSnapshotId={}&maxResults={max_results}",
            utf8_percent_encode(first, QUERY_VALUE)
        );
        if let Some(token) = page_token {
            target.push_str("&pageToken=");
            target.extend(utf8_percent_encode(token, QUERY_VALUE));
        }
        let response = self
            .send(Method::GET, target, Vec::new(), Bytes::new(), false)
            .await?;
        expect_success("ListChangedBlocks", &response)?;
        decode("ListChangedBlocks", &response.body)
    }

    /// GetSnapshotBlock, verified: the body must be one block whose SHA-256 is the
    /// `x-amz-Checksum` the server sent. Returns the number of bytes read.
    pub async fn get_block(
        &self,
        snapshot: &str,
        index: u32,
        token: &str,
    ) -> Result<usize, ClientError> {
        let target = format!(
            "/snapshots/{snapshot}/blocks/{index}?blockToken={}",
            utf8_percent_encode(token, QUERY_VALUE)
        );
        let response = self
            .send(Method::GET, target, Vec::new(), Bytes::new(), false)
            .await?;
        expect_success("GetSnapshotBlock", &response)?;
        if response.body.len() != BLOCK_SIZE {
            return Err(ClientError::Verification(format!(
                "{} bytes instead of {BLOCK_SIZE}",
                response.body.len()
            )));
        }
        let claimed = response
            .headers
            .get(CHECKSUM)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| STANDARD.decode(v).ok())
            .ok_or_else(|| ClientError::Verification("no usable x-amz-Checksum".into()))?;
        if Sha256::digest(&response.body).as_slice() != claimed.as_slice() {
            return Err(ClientError::Verification(
                "the body's SHA-256 differs from x-amz-Checksum".into(),
            ));
        }
        Ok(response.body.len())
    }

    /// Sign and send one request to the next node, and read the whole response.
    async fn send(
        &self,
        method: Method,
        path_and_query: String,
        headers: Vec<(&'static str, HeaderValue)>,
        body: Bytes,
        unsigned_payload: bool,
    ) -> Result<Response, ClientError> {
        let authority = self.nodes.pick();
        let uri = format!("http://{authority}{path_and_query}");
        let mut request = Request::builder()
            .method(method)
            .uri(&uri)
            .header(http::header::HOST, authority)
            .body(Full::new(body.clone()))
            .map_err(|e| ClientError::Request(e.to_string()))?;
        for (name, value) in headers {
            request.headers_mut().insert(name, value);
        }
        let mut settings = SigningSettings::default();
        let signable_body = if unsigned_payload {
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
            SignableBody::UnsignedPayload
        } else {
            SignableBody::Bytes(&body)
        };
        let signer = Signer {
            identity: &self.identity,
            region: &self.endpoint.region,
            service: "ebs",
            settings,
        };
        signer.sign(&mut request, &uri, signable_body)?;
        exchange(&self.http, request).await
    }
}

/// The credentials of `endpoint` as the signer takes them.
pub(crate) fn identity(endpoint: &Endpoint) -> Identity {
    Credentials::new(
        &endpoint.access_key_id,
        &endpoint.secret_access_key,
        None,
        None,
        "strata-bench",
    )
    .into()
}

/// How one request is signed: as whom, where, for which service.
pub(crate) struct Signer<'a> {
    pub(crate) identity: &'a Identity,
    pub(crate) region: &'a str,
    pub(crate) service: &'a str,
    pub(crate) settings: SigningSettings,
}

impl Signer<'_> {
    /// Add the SigV4 headers to `request` (sent to `uri`) for `body`.
    pub(crate) fn sign(
        self,
        request: &mut Request<Full<Bytes>>,
        uri: &str,
        body: SignableBody<'_>,
    ) -> Result<(), ClientError> {
        let params = v4::SigningParams::builder()
            .identity(self.identity)
            .region(self.region)
            .name(self.service)
            .time(SystemTime::now())
            .settings(self.settings)
            .build()
            .map_err(|e| ClientError::Request(e.to_string()))?
            .into();
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let signable = SignableRequest::new(
            request.method().as_str(),
            uri,
            headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            body,
        )
        .map_err(|e| ClientError::Request(e.to_string()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| ClientError::Request(e.to_string()))?
            .into_parts();
        instructions.apply_to_request_http1x(request);
        Ok(())
    }
}

/// A response read to its end.
pub(crate) struct Response {
    pub(crate) status: StatusCode,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: Bytes,
}

/// Send a signed request and read the whole response.
pub(crate) async fn exchange(
    http: &HttpPool,
    request: Request<Full<Bytes>>,
) -> Result<Response, ClientError> {
    let response = http
        .request(request)
        .await
        .map_err(|e| ClientError::Http(format!("{e:?}")))?;
    let (parts, incoming) = response.into_parts();
    // Reading the body to its end is also what returns the connection to the pool.
    let body = incoming
        .collect()
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?
        .to_bytes();
    Ok(Response {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// Any 2xx is success: Strata answers with the model's exact codes (its own tests check
/// them), while moto answers 200 where the model says 201.
pub(crate) fn expect_success(
    operation: &'static str,
    response: &Response,
) -> Result<(), ClientError> {
    if response.status.is_success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&response.body);
    Err(ClientError::Status {
        operation,
        status: response.status.as_u16(),
        body: text.chars().take(300).collect(),
    })
}

fn decode<T: serde::de::DeserializeOwned>(
    operation: &'static str,
    body: &[u8],
) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Decode {
        operation,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_go_to_each_node_in_turn() {
        let nodes = RoundRobin::new(vec!["a:1".into(), "b:2".into()]);
        let shared = nodes.clone();
        let picked: Vec<&str> = (0..5).map(|_| nodes.pick()).collect();
        assert_eq!(picked, ["a:1", "b:2", "a:1", "b:2", "a:1"]);
        // Clones of one client share the turn, as the workers of one scenario do.
        assert_eq!(shared.pick(), "b:2");
    }
}
