//! Block and page tokens (`strata_core::tokens`): any presented text fails to open without
//! a panic; a token we issued opens to exactly what it was issued for until it expires; a
//! token with any character changed, or presented in another context, does not open.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use strata_core::tokens::{Listing, TokenError, TokenIssuer};
use strata_types::{BlockIndex, ChunkDigest, SnapshotId};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    key: [u8; 32],
    /// Tried as a snapshot id; an invalid one falls back to a fixed id.
    snapshot: &'a str,
    index: u32,
    now_ms: i64,
    mode: Mode<'a>,
}

#[derive(Arbitrary, Debug)]
enum Mode<'a> {
    /// Text a client presents as a token.
    Presented(&'a str),
    /// A token we issue, then optionally one character of it replaced.
    Issued {
        digest: [u8; 32],
        next: u32,
        expires_at_ms: i64,
        edit: Option<(usize, char)>,
    },
}

/// `token` with the character at `position` (modulo its length) replaced by `with`.
fn edited(token: &str, position: usize, with: char) -> String {
    let position = position % token.len();
    let mut text = token.to_owned();
    text.replace_range(position..position + 1, with.encode_utf8(&mut [0; 4]));
    text
}

fuzz_target!(|input: Input<'_>| {
    let issuer = TokenIssuer::new(input.key);
    let snapshot = SnapshotId::parse(input.snapshot)
        .unwrap_or_else(|_| SnapshotId::parse("snap-0123456789abcdef0").expect("a valid id"));
    let other = if snapshot.as_str() == "snap-f" {
        "snap-e"
    } else {
        "snap-f"
    };
    let other = SnapshotId::parse(other).expect("a valid id");
    let index = BlockIndex::new(input.index);
    let now = input.now_ms;
    let changed = Listing::Changed {
        first: Some(&other),
        second: &snapshot,
    };
    match input.mode {
        Mode::Presented(text) => {
            // Nobody without the key can make a mac: presented text never opens.
            assert!(
                issuer
                    .open_block_token(text, &snapshot, index, now)
                    .is_err()
            );
            assert!(
                issuer
                    .open_page_token(text, Listing::Blocks(&snapshot), now)
                    .is_err()
            );
            assert!(issuer.open_page_token(text, changed, now).is_err());
        }
        Mode::Issued {
            digest,
            next,
            expires_at_ms,
            edit,
        } => {
            let digest = ChunkDigest(digest);
            let next = BlockIndex::new(next);
            let live = now <= expires_at_ms;
            let block = issuer.block_token(&snapshot, index, digest, expires_at_ms);
            let page = issuer.page_token(Listing::Blocks(&snapshot), next, expires_at_ms);
            for token in [&block, &page] {
                assert!(
                    token
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                );
            }
            assert_eq!(block.len(), 114);
            assert_eq!(page.len(), 58);
            let opened = issuer.open_block_token(&block, &snapshot, index, now);
            assert_eq!(
                opened,
                if live {
                    Ok(digest)
                } else {
                    Err(TokenError::Expired)
                }
            );
            let opened = issuer.open_page_token(&page, Listing::Blocks(&snapshot), now);
            assert_eq!(
                opened,
                if live {
                    Ok(next)
                } else {
                    Err(TokenError::Expired)
                }
            );

            // Another context: another index, snapshot or listing.
            let elsewhere = BlockIndex::new(input.index ^ 1);
            assert_eq!(
                issuer.open_block_token(&block, &snapshot, elsewhere, now),
                Err(TokenError::Invalid)
            );
            assert_eq!(
                issuer.open_block_token(&block, &other, index, now),
                Err(TokenError::Invalid)
            );
            assert_eq!(
                issuer.open_page_token(&page, changed, now),
                Err(TokenError::Invalid)
            );
            // A block token is no page token and the other way round.
            assert!(
                issuer
                    .open_page_token(&block, Listing::Blocks(&snapshot), now)
                    .is_err()
            );
            assert!(
                issuer
                    .open_block_token(&page, &snapshot, index, now)
                    .is_err()
            );

            if let Some((position, with)) = edit {
                let block_edited = edited(&block, position, with);
                if block_edited != block {
                    assert_eq!(
                        issuer.open_block_token(&block_edited, &snapshot, index, now),
                        Err(TokenError::Invalid),
                        "{block_edited}"
                    );
                }
                let page_edited = edited(&page, position, with);
                if page_edited != page {
                    assert_eq!(
                        issuer.open_page_token(&page_edited, Listing::Blocks(&snapshot), now),
                        Err(TokenError::Invalid),
                        "{page_edited}"
                    );
                }
            }
        }
    }
});
