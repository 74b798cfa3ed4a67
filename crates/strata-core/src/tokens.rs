//! Block tokens and page tokens: opaque, authenticated, expiring.
//!
//! Both are `[0-9a-f]` text (a subset of the model's `^[A-Za-z0-9+/=]+$`, chosen so no
//! client can mangle them in a URL), made of a small payload and a truncated HMAC-SHA256
//! over the payload *and* the context it is valid for. A token presented in another
//! context (another snapshot, index or listing), altered in any bit, or past its expiry
//! fails to open. No other module builds or parses tokens.
//!
//! - block token = hex(`1` ‖ expiry ms (i64 BE) ‖ chunk digest (32) ‖ mac (16)), 57 bytes
//!   → 114 characters. The mac covers the snapshot id and block index. Carrying the digest
//!   lets GetSnapshotBlock fetch the chunk without walking the block map.
//! - page token = hex(`1` ‖ expiry ms ‖ next index (u32 BE) ‖ mac (16)), 29 bytes → 58
//!   characters. The mac covers which listing it continues (operation and snapshot ids).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use strata_types::{BlockIndex, ChunkDigest, SnapshotId};
use subtle::ConstantTimeEq;

/// How long a block token stays valid: 7 days (EBS direct APIs FAQ).
pub const BLOCK_TOKEN_LIFETIME_MS: i64 = 7 * 24 * 3600 * 1000;
/// How long a page token stays valid: 60 minutes (EBS direct APIs FAQ).
pub const PAGE_TOKEN_LIFETIME_MS: i64 = 60 * 60 * 1000;

const VERSION: u8 = 1;
const MAC_LEN: usize = 16;
const BLOCK_TOKEN_LEN: usize = 1 + 8 + 32 + MAC_LEN;
const PAGE_TOKEN_LEN: usize = 1 + 8 + 4 + MAC_LEN;

/// Why a token was refused. Deliberately uninformative towards clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token we issued for this context, or altered.
    #[error("the token is not valid")]
    Invalid,
    /// Issued by us for this context, but expired.
    #[error("the token has expired")]
    Expired,
}

/// Which listing a page token continues.
#[derive(Debug, Clone, Copy)]
pub enum Listing<'a> {
    /// ListSnapshotBlocks of one snapshot.
    Blocks(&'a SnapshotId),
    /// ListChangedBlocks between two snapshots (first optional).
    Changed {
        /// `firstSnapshotId`, if given.
        first: Option<&'a SnapshotId>,
        /// The snapshot in the path.
        second: &'a SnapshotId,
    },
}

/// Issues and opens tokens with one secret key (kept by the server across restarts, so
/// tokens survive them).
#[derive(Clone)]
pub struct TokenIssuer {
    /// The HMAC state after absorbing the key, cloned per token: listings issue thousands of
    /// tokens per page, and setting the key up each time was a quarter of their cost.
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenIssuer(..)")
    }
}

impl TokenIssuer {
    /// An issuer using `key`.
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            keyed: <Hmac<Sha256> as Mac>::new_from_slice(&key)
                .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length")),
        }
    }

    fn mac(&self, context: &[&[u8]], payload: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = self.keyed.clone();
        for part in context {
            // Length-prefix each part so no two contexts serialize alike.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.update(payload);
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    fn seal(&self, context: &[&[u8]], payload: Vec<u8>) -> String {
        let mac = self.mac(context, &payload);
        let mut token = payload;
        token.extend_from_slice(&mac);
        let mut text = vec![0u8; token.len() * 2];
        hex::encode_to_slice(&token, &mut text)
            .unwrap_or_else(|_| unreachable!("the buffer is exactly twice the input"));
        String::from_utf8(text).unwrap_or_else(|_| unreachable!("hex is ASCII"))
    }

    /// Check length, version, mac and expiry; return the payload after the version byte
    /// and expiry.
    fn open(
        &self,
        token: &str,
        expected_len: usize,
        context: &[&[u8]],
        now_ms: i64,
    ) -> Result<Vec<u8>, TokenError> {
        // Only the spelling we issue opens: `hex::decode` also takes uppercase digits, which
        // would give every token 2^n spellings that all open (found by the `tokens` fuzz
        // target), while the contract is that a token altered in any character is refused.
        let lowercase_hex = token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if token.len() != expected_len * 2 || !lowercase_hex {
            return Err(TokenError::Invalid);
        }
        let bytes = hex::decode(token).map_err(|_| TokenError::Invalid)?;
        let (payload, mac) = bytes.split_at(expected_len - MAC_LEN);
        let expected = self.mac(context, payload);
        if payload[0] != VERSION || !bool::from(expected.ct_eq(mac)) {
            return Err(TokenError::Invalid);
        }
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&payload[1..9]);
        if now_ms > i64::from_be_bytes(expiry) {
            return Err(TokenError::Expired);
        }
        Ok(payload[9..].to_vec())
    }

    /// A token for reading `index` of `snapshot`, whose content is `digest`.
    pub fn block_token(
        &self,
        snapshot: &SnapshotId,
        index: BlockIndex,
        digest: ChunkDigest,
        expires_at_ms: i64,
    ) -> String {
        let mut payload = Vec::with_capacity(BLOCK_TOKEN_LEN);
        payload.push(VERSION);
        payload.extend_from_slice(&expires_at_ms.to_be_bytes());
        payload.extend_from_slice(&digest.0);
        let index_bytes = index.get().to_be_bytes();
        self.seal(&block_context(snapshot, &index_bytes), payload)
    }

    /// Open a block token presented for (`snapshot`, `index`): the digest it names.
    pub fn open_block_token(
        &self,
        token: &str,
        snapshot: &SnapshotId,
        index: BlockIndex,
        now_ms: i64,
    ) -> Result<ChunkDigest, TokenError> {
        let index_bytes = index.get().to_be_bytes();
        let rest = self.open(
            token,
            BLOCK_TOKEN_LEN,
            &block_context(snapshot, &index_bytes),
            now_ms,
        )?;
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&rest);
        Ok(ChunkDigest(digest))
    }

    /// A token continuing `listing` at `next`.
    pub fn page_token(&self, listing: Listing<'_>, next: BlockIndex, expires_at_ms: i64) -> String {
        let mut payload = Vec::with_capacity(PAGE_TOKEN_LEN);
        payload.push(VERSION);
        payload.extend_from_slice(&expires_at_ms.to_be_bytes());
        payload.extend_from_slice(&next.get().to_be_bytes());
        self.seal(&page_context(listing), payload)
    }

    /// Open a page token presented for `listing`: where the listing continues.
    pub fn open_page_token(
        &self,
        token: &str,
        listing: Listing<'_>,
        now_ms: i64,
    ) -> Result<BlockIndex, TokenError> {
        let rest = self.open(token, PAGE_TOKEN_LEN, &page_context(listing), now_ms)?;
        let mut next = [0u8; 4];
        next.copy_from_slice(&rest);
        Ok(BlockIndex::new(u32::from_be_bytes(next)))
    }
}

fn block_context<'a>(snapshot: &'a SnapshotId, index_bytes: &'a [u8; 4]) -> [&'a [u8]; 3] {
    [b"block", snapshot.as_str().as_bytes(), index_bytes]
}

fn page_context(listing: Listing<'_>) -> Vec<&[u8]> {
    match listing {
        Listing::Blocks(snapshot) => vec![b"list-blocks", snapshot.as_str().as_bytes()],
        Listing::Changed { first, second } => vec![
            b"list-changed",
            first.map_or(&b""[..], |f| f.as_str().as_bytes()),
            second.as_str().as_bytes(),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn snap(text: &str) -> SnapshotId {
        SnapshotId::parse(text).expect("valid id")
    }

    #[test]
    fn block_tokens_round_trip_and_bind_their_context() {
        let issuer = TokenIssuer::new([7; 32]);
        let a = snap("snap-0a");
        let digest = ChunkDigest::of(b"x");
        let token = issuer.block_token(&a, BlockIndex::new(5), digest, 1_000);
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(token.len() <= 256);
        assert_eq!(
            issuer.open_block_token(&token, &a, BlockIndex::new(5), 1_000),
            Ok(digest)
        );
        assert_eq!(
            issuer.open_block_token(&token, &a, BlockIndex::new(5), 1_001),
            Err(TokenError::Expired)
        );
        assert_eq!(
            issuer.open_block_token(&token, &a, BlockIndex::new(6), 0),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            issuer.open_block_token(&token, &snap("snap-0b"), BlockIndex::new(5), 0),
            Err(TokenError::Invalid)
        );
        let other_key = TokenIssuer::new([8; 32]);
        assert_eq!(
            other_key.open_block_token(&token, &a, BlockIndex::new(5), 0),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            issuer.open_block_token("not-a-token", &a, BlockIndex::new(5), 0),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn page_tokens_bind_their_listing() {
        let issuer = TokenIssuer::new([1; 32]);
        let a = snap("snap-0a");
        let b = snap("snap-0b");
        let token = issuer.page_token(Listing::Blocks(&a), BlockIndex::new(100), 50);
        assert_eq!(
            issuer.open_page_token(&token, Listing::Blocks(&a), 10),
            Ok(BlockIndex::new(100))
        );
        assert_eq!(
            issuer.open_page_token(&token, Listing::Blocks(&b), 10),
            Err(TokenError::Invalid)
        );
        let changed = Listing::Changed {
            first: None,
            second: &a,
        };
        assert_eq!(
            issuer.open_page_token(&token, changed, 10),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            issuer.open_page_token(&token, Listing::Blocks(&a), 51),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn only_the_issued_spelling_opens() {
        // Regression (fuzz target `tokens`): uppercase hex digits decoded to the same bytes,
        // so an upper-cased token opened.
        let issuer = TokenIssuer::new([5; 32]);
        let a = snap("snap-0a");
        let digest = ChunkDigest::of(b"z");
        let block = issuer.block_token(&a, BlockIndex::new(3), digest, i64::MAX);
        assert_eq!(
            issuer.open_block_token(&block, &a, BlockIndex::new(3), 0),
            Ok(digest)
        );
        assert_eq!(
            issuer.open_block_token(&block.to_ascii_uppercase(), &a, BlockIndex::new(3), 0),
            Err(TokenError::Invalid)
        );
        let page = issuer.page_token(Listing::Blocks(&a), BlockIndex::new(9), i64::MAX);
        assert_eq!(
            issuer.open_page_token(&page.to_ascii_uppercase(), Listing::Blocks(&a), 0),
            Err(TokenError::Invalid)
        );
    }

    /// A token's text with the character at `position` (modulo its length) replaced.
    fn edited(token: &str, position: usize, with: char) -> String {
        let position = position % token.len();
        let mut text = token.to_owned();
        text.replace_range(position..position + 1, with.encode_utf8(&mut [0; 4]));
        text
    }

    proptest! {
        /// Text nobody issued opens as no token, in any context, and never panics.
        #[test]
        fn presented_text_never_opens(
            text in prop_oneof!["[0-9a-fA-F]{58}", "[0-9a-fA-F]{114}", "\\PC{0,120}", any::<String>()],
            index in any::<u32>(),
            now in any::<i64>(),
        ) {
            let issuer = TokenIssuer::new([9; 32]);
            let a = snap("snap-0a");
            let b = snap("snap-0b");
            prop_assert!(issuer.open_block_token(&text, &a, BlockIndex::new(index), now).is_err());
            prop_assert!(issuer.open_page_token(&text, Listing::Blocks(&a), now).is_err());
            let changed = Listing::Changed { first: Some(&b), second: &a };
            prop_assert!(issuer.open_page_token(&text, changed, now).is_err());
        }

        /// An issued token opens to what it was issued for until it expires, and with any
        /// one character replaced by any other character it opens no more.
        #[test]
        fn issued_tokens_round_trip_and_any_edit_breaks_them(
            key in any::<[u8; 32]>(),
            index in any::<u32>(),
            next in any::<u32>(),
            digest in any::<[u8; 32]>(),
            expires in any::<i64>(),
            now in any::<i64>(),
            position in any::<usize>(),
            with in any::<char>(),
        ) {
            let issuer = TokenIssuer::new(key);
            let a = snap("snap-0123456789abcdef0");
            let index = BlockIndex::new(index);
            let digest = ChunkDigest(digest);
            let next = BlockIndex::new(next);
            let block = issuer.block_token(&a, index, digest, expires);
            let page = issuer.page_token(Listing::Blocks(&a), next, expires);
            let live = now <= expires;
            prop_assert_eq!(
                issuer.open_block_token(&block, &a, index, now),
                if live { Ok(digest) } else { Err(TokenError::Expired) }
            );
            prop_assert_eq!(
                issuer.open_page_token(&page, Listing::Blocks(&a), now),
                if live { Ok(next) } else { Err(TokenError::Expired) }
            );
            let block_edited = edited(&block, position, with);
            prop_assume!(block_edited != block);
            prop_assert_eq!(
                issuer.open_block_token(&block_edited, &a, index, now),
                Err(TokenError::Invalid)
            );
            let page_edited = edited(&page, position, with);
            if page_edited != page {
                prop_assert_eq!(
                    issuer.open_page_token(&page_edited, Listing::Blocks(&a), now),
                    Err(TokenError::Invalid)
                );
            }
        }

        /// Upper-casing any letter of a token (the same bytes, spelt otherwise) breaks it.
        #[test]
        fn no_other_spelling_opens(key in any::<[u8; 32]>(), which in any::<usize>()) {
            let issuer = TokenIssuer::new(key);
            let a = snap("snap-0a");
            let token = issuer.block_token(&a, BlockIndex::new(1), ChunkDigest::of(b"w"), i64::MAX);
            let letters: Vec<usize> = token
                .char_indices()
                .filter(|(_, c)| c.is_ascii_alphabetic())
                .map(|(i, _)| i)
                .collect();
            prop_assume!(!letters.is_empty());
            let position = letters[which % letters.len()];
            let upper = token[position..=position].to_ascii_uppercase();
            let respelt = edited(&token, position, upper.chars().next().unwrap_or('A'));
            prop_assert_eq!(
                issuer.open_block_token(&respelt, &a, BlockIndex::new(1), 0),
                Err(TokenError::Invalid)
            );
        }

        /// Any single altered character of a token makes it invalid.
        #[test]
        fn tampered_tokens_are_rejected(position in 0usize..114, replacement in 0u8..16) {
            let issuer = TokenIssuer::new([3; 32]);
            let a = snap("snap-0123456789abcdef0");
            let token = issuer.block_token(&a, BlockIndex::new(42), ChunkDigest::of(b"y"), i64::MAX);
            let mut chars: Vec<char> = token.chars().collect();
            let new_char = char::from_digit(u32::from(replacement), 16).expect("hex digit");
            prop_assume!(chars[position] != new_char);
            chars[position] = new_char;
            let tampered: String = chars.into_iter().collect();
            prop_assert_eq!(
                issuer.open_block_token(&tampered, &a, BlockIndex::new(42), 0),
                Err(TokenError::Invalid)
            );
        }
    }
}
