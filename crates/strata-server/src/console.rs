//! The web console: its assets (`crates/strata-server/console/`, embedded in the binary, so
//! nothing is fetched from elsewhere) under `/console/`, and the session cookie that
//! authenticates the console's admin API requests.
//!
//! Sign-in never sends the secret: the browser signs `POST /_strata/v1/session` with SigV4
//! itself (WebCrypto), and the answer sets `strata_session`, an HMAC-sealed token of the
//! access key id and an expiry (`HttpOnly; SameSite=Strict`, [`SESSION_LIFETIME_MS`]). A
//! request carrying it is authenticated as the key's account only on the admin API, only
//! without an `Authorization` header, and only with the `x-strata-console: 1` header, which
//! a cross-site form or image cannot send (CSRF, beside `SameSite=Strict`).

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use sha2::{Digest, Sha256};
use strata_sigv4::PayloadHash;
use strata_wire::{ErrorCode, Reason, WireError};

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ApiError;

/// Where the console lives.
pub const PATH: &str = "/console";
/// The cookie's name.
pub const COOKIE: &str = "strata_session";
/// The header every cookie-authenticated request must carry.
pub const CONSOLE_HEADER: &str = "x-strata-console";
/// How long a session lasts.
pub const SESSION_LIFETIME_MS: i64 = 60 * 60 * 1000;

/// Only the console's own files, no inline script or style, no framing, no other origin.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The embedded assets: name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../console/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/app.js"),
    ),
    (
        "sigv4.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/sigv4.js"),
    ),
    (
        "lineage.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../console/lineage.js"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_bytes!("../console/icon.svg"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../console/style.css"),
    ),
];

/// Whether `path` is the console's.
pub fn is_console_path(path: &str) -> bool {
    path == PATH || path.starts_with("/console/")
}

/// Answer a request for the console's files (no authentication: they hold no data).
pub fn serve(method: &Method, path: &str) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    if path == PATH {
        let mut response = plain(StatusCode::MOVED_PERMANENTLY, "");
        response.headers_mut().insert(
            http::header::LOCATION,
            HeaderValue::from_static("/console/"),
        );
        return response;
    }
    let name = match path.strip_prefix("/console/") {
        Some("") => "index.html",
        Some(name) => name,
        None => return plain(StatusCode::NOT_FOUND, "not found\n"),
    };
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    let mut response = Response::new(Body::from(*bytes));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    // The files change with the binary: revalidate rather than keep a stale console.
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    security_headers(headers);
    response
}

fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// HMAC-SHA256 (RFC 2104) over sha2, the one primitive the sessions need (the server
/// has no HMAC crate of its own; the core's token issuer is for block and page tokens).
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    for part in parts {
        inner.update(part);
    }
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Issues, opens and revokes session tokens. The key is derived from the cluster's token
/// key, so every node sharing a store accepts every node's sessions; a revocation (sign
/// out) is known to the node that took it, and every session ends at its expiry anyway.
pub struct Sessions {
    key: [u8; 32],
    /// Revoked tokens' MACs with their expiry (pruned as they expire).
    revoked: Mutex<HashMap<[u8; 32], i64>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions(..)")
    }
}

impl Sessions {
    /// Sessions sealed with a key derived from the token key.
    pub fn new(token_key: &[u8; 32]) -> Self {
        Self {
            key: hmac_sha256(token_key, &[b"strata console session v1"]),
            revoked: Mutex::new(HashMap::new()),
        }
    }

    fn mac(&self, access_key_id: &str, expires_ms: i64) -> [u8; 32] {
        hmac_sha256(
            &self.key,
            &[
                &expires_ms.to_be_bytes(),
                &(access_key_id.len() as u64).to_be_bytes(),
                access_key_id.as_bytes(),
            ],
        )
    }

    /// A token for `access_key_id` valid until `expires_ms`: `EXPIRY.KEYHEX.MACHEX`.
    pub fn issue(&self, access_key_id: &str, expires_ms: i64) -> String {
        format!(
            "{expires_ms}.{}.{}",
            hex::encode(access_key_id),
            hex::encode(self.mac(access_key_id, expires_ms))
        )
    }

    /// The access key id of a valid, unexpired, unrevoked token.
    pub fn open(&self, token: &str, now_ms: i64) -> Option<String> {
        let (expires, mac) = self.parse(token)?;
        let (expires_ms, access_key_id) = expires;
        if now_ms > expires_ms {
            return None;
        }
        let revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
        (!revoked.contains_key(&mac)).then_some(access_key_id)
    }

    /// Revoke a token (sign-out); invalid ones are ignored.
    pub fn revoke(&self, token: &str, now_ms: i64) {
        if let Some(((expires_ms, _), mac)) = self.parse(token) {
            let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
            revoked.retain(|_, expiry| *expiry >= now_ms);
            revoked.insert(mac, expires_ms);
        }
    }

    /// Expiry and key id of a token whose MAC is right (whatever its expiry), and the MAC.
    fn parse(&self, token: &str) -> Option<((i64, String), [u8; 32])> {
        let mut parts = token.split('.');
        let (expires, key_hex, mac_hex) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || mac_hex.len() != 64 {
            return None;
        }
        let expires_ms: i64 = expires.parse().ok()?;
        let access_key_id = String::from_utf8(hex::decode(key_hex).ok()?).ok()?;
        let mut mac = [0u8; 32];
        hex::decode_to_slice(mac_hex, &mut mac).ok()?;
        let expected = self.mac(&access_key_id, expires_ms);
        // Constant time: the comparison must not tell how many leading bytes were right.
        let difference = expected
            .iter()
            .zip(mac.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // Only the spelling issued opens (hex::decode also takes upper case).
        if difference != 0 || self.issue(&access_key_id, expires_ms) != token {
            return None;
        }
        Some(((expires_ms, access_key_id), mac))
    }
}

/// The session token of a request's `Cookie` header, if it has one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then_some(value)
        })
}

/// Authenticate an admin request by its session cookie (the caller checked that it has
/// no `Authorization` header and has a cookie).
pub fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    token: &str,
) -> Result<Caller, ApiError> {
    require_console_header(headers)?;
    let expired = || {
        ApiError(WireError::new(
            ErrorCode::AccessDeniedException,
            Some(Reason::UnauthorizedAccount),
            "The console session is invalid, expired or ended; sign in again.",
        ))
    };
    let access_key_id = state
        .sessions
        .open(token, state.clock.now_ms())
        .ok_or_else(expired)?;
    // The key is looked up now, so a session ends with its key (removed on a reload).
    let keys = state.keys.current();
    let key = keys.get(&access_key_id).ok_or_else(expired)?;
    Ok(Caller {
        account: key.account.clone(),
        allow: key.allow.clone(),
        access_key_id,
        payload_hash: PayloadHash::Sha256Hex(strata_sigv4::sha256_hex(b"")),
    })
}

/// Refuse a cookie-carrying request without `x-strata-console: 1` (a cross-site request
/// cannot set it without a CORS preflight, which this server never grants).
fn require_console_header(headers: &HeaderMap) -> Result<(), ApiError> {
    if headers.get(CONSOLE_HEADER).and_then(|v| v.to_str().ok()) == Some("1") {
        return Ok(());
    }
    Err(ApiError(WireError::new(
        ErrorCode::AccessDeniedException,
        Some(Reason::UnauthorizedAccount),
        format!(
            "A request authenticated by the console's session cookie must carry the \
             header '{CONSOLE_HEADER}: 1'."
        ),
    )))
}

/// `POST /session`: a 204 setting the cookie for the signed caller.
pub fn start_session(state: &AppState, caller: &Caller) -> Result<Response, ApiError> {
    let expires_ms = state.clock.now_ms().saturating_add(SESSION_LIFETIME_MS);
    let token = state.sessions.issue(&caller.access_key_id, expires_ms);
    tracing::info!(access_key_id = %caller.access_key_id, account = %caller.account, "console session started");
    cookie_response(&format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_LIFETIME_MS / 1000
    ))
}

/// `POST /session/end`: revoke the request's session and clear the cookie.
pub fn end_session(state: &AppState, headers: &HeaderMap) -> Result<Response, ApiError> {
    require_console_header(headers)?;
    if let Some(token) = session_cookie(headers) {
        state.sessions.revoke(token, state.clock.now_ms());
    }
    cookie_response(&format!(
        "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
    ))
}

fn cookie_response(cookie: &str) -> Result<Response, ApiError> {
    let mut response = Response::default();
    *response.status_mut() = StatusCode::NO_CONTENT;
    let value = HeaderValue::from_str(cookie)
        .map_err(|_| ApiError::internal("the session cookie is not a header value"))?;
    response
        .headers_mut()
        .insert(http::header::SET_COOKIE, value);
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_session_opens_until_it_expires_or_is_revoked_and_never_when_altered() {
        let sessions = Sessions::new(&[7; 32]);
        let token = sessions.issue("AKIDEXAMPLE", 1_000);
        assert_eq!(sessions.open(&token, 999).as_deref(), Some("AKIDEXAMPLE"));
        assert_eq!(sessions.open(&token, 1_001), None);
        assert_eq!(sessions.open(&token.to_uppercase(), 0), None);
        let other_key = Sessions::new(&[8; 32]);
        assert_eq!(other_key.open(&token, 0), None);
        let longer = token.replacen("1000.", "2000.", 1);
        assert_eq!(sessions.open(&longer, 0), None);
        for bad in ["", "1.2", "x.41.00", &format!("{token}.")] {
            assert_eq!(sessions.open(bad, 0), None, "{bad}");
        }
        sessions.revoke(&token, 0);
        assert_eq!(sessions.open(&token, 0), None);
        let fresh = sessions.issue("AKIDEXAMPLE", 2_000);
        assert!(sessions.open(&fresh, 0).is_some());
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            HeaderValue::from_static("a=b; strata_session=tok; c=d"),
        );
        assert_eq!(session_cookie(&headers), Some("tok"));
    }
}
