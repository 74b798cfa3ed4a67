//! Retries: bounded attempts, a deadline on each attempt, jittered exponential backoff.
//!
//! The SDK's own retries are switched off (see [`crate::connect`]) so that this is the one
//! place that decides. Why our own loop: an attempt here covers the whole exchange including
//! reading and verifying a block's body (the SDK's attempt ends when the headers arrive), a
//! checksum mismatch is retried like a network error, and every retry is reported to the
//! caller. Users of coldsnap lost hours to requests that never finished (coldsnap#437) and to
//! permanent errors retried a dozen times (coldsnap#216): here every attempt has a deadline,
//! and only transient failures are retried.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use crate::error::ApiError;
use crate::progress::{ProgressEvent, Reporter, RetryNotice};

/// How calls are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, including the first (at least 1).
    pub max_attempts: u32,
    /// The first backoff; doubles per attempt.
    pub base_delay: Duration,
    /// The largest backoff.
    pub max_delay: Duration,
    /// Deadline of one attempt, from sending the request to the last byte of the answer.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    /// 10 attempts, backoff 250 ms doubling to 8 s (about 40 s of waiting in all), 30 s per
    /// attempt: enough to ride out a server restart, short enough to fail clearly.
    fn default() -> Self {
        Self {
            max_attempts: 10,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            attempt_timeout: Duration::from_secs(30),
        }
    }
}

/// The [`ApiError::code`] of a block whose content did not match its checksum (a client-side
/// finding, not a service error code).
pub const BLOCK_VERIFICATION_FAILED: &str = "BlockVerificationFailed";

/// Why one attempt failed.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub message: String,
    pub code: Option<String>,
    pub retryable: bool,
    /// Nothing answered at the address (refused, or the name did not resolve).
    pub unreachable: bool,
}

impl Failure {
    pub(crate) fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: None,
            retryable: true,
            unreachable: false,
        }
    }

    /// The service answered with a block that fails verification: retried (it may be a
    /// transmission error), and reported with the code [`BLOCK_VERIFICATION_FAILED`].
    pub(crate) fn corrupt(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: Some(BLOCK_VERIFICATION_FAILED.to_owned()),
            retryable: true,
            unreachable: false,
        }
    }

    pub(crate) fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: None,
            retryable: false,
            unreachable: false,
        }
    }
}

impl RetryPolicy {
    /// The pause after failed attempt number `attempt` (1-based): "equal jitter", half fixed
    /// and half random, so many workers hitting the same outage do not retry in lockstep,
    /// yet none retries immediately.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(20);
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << exponent)
            .min(self.max_delay);
        let half = ceiling / 2;
        let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::rng().random_range(0..=jitter_ms))
    }

    /// Run `attempt` until it succeeds, fails permanently, or attempts run out. `call`
    /// names the call in notices and errors.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        call: &(dyn Fn() -> String + Sync),
        reporter: &Reporter,
        mut attempt: F,
    ) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let max_attempts = self.max_attempts.max(1);
        let mut number = 1;
        loop {
            let failure = match tokio::time::timeout(self.attempt_timeout, attempt()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(failure)) => failure,
                Err(_) => Failure::transient(format!(
                    "no complete answer within {} s",
                    self.attempt_timeout.as_secs_f32()
                )),
            };
            if !failure.retryable || number >= max_attempts {
                return Err(ApiError {
                    call: call(),
                    code: failure.code,
                    message: failure.message,
                    attempts: number,
                    retryable: failure.retryable,
                });
            }
            let delay = self.delay(number);
            reporter.report(ProgressEvent::Retrying(RetryNotice {
                call: call(),
                attempt: number,
                max_attempts,
                delay,
                error: failure.message,
            }));
            tokio::time::sleep(delay).await;
            number += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
            attempt_timeout: Duration::from_millis(200),
        }
    }

    #[test]
    fn delays_grow_and_stay_within_the_cap() {
        let policy = RetryPolicy::default();
        for attempt in 1..40 {
            let delay = policy.delay(attempt);
            let ceiling = (policy.base_delay * (1 << (attempt - 1).min(20))).min(policy.max_delay);
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{attempt}: {delay:?}"
            );
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_success() {
        let calls = Arc::new(AtomicU32::new(0));
        let retries = Arc::new(AtomicU32::new(0));
        let seen = Arc::clone(&retries);
        let reporter = Reporter::new(move |event| {
            if matches!(event, ProgressEvent::Retrying(_)) {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        });
        let counter = Arc::clone(&calls);
        let result = fast()
            .run(&|| "Test".to_owned(), &reporter, || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        Err(Failure::transient("flaky"))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(result.ok(), Some(2));
        assert_eq!(retries.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = fast()
            .run(&|| "Test".to_owned(), &Reporter::silent(), || {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(Failure::permanent("denied")) }
            })
            .await;
        let error = result.expect_err("fails");
        assert_eq!((error.attempts, error.retryable), (1, false));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(error.to_string(), "Test failed: denied");
    }

    #[tokio::test]
    async fn a_hanging_attempt_times_out_and_attempts_are_bounded() {
        let result: Result<(), _> = fast()
            .run(&|| "Hang".to_owned(), &Reporter::silent(), || async {
                std::future::pending::<()>().await;
                Ok(())
            })
            .await;
        let error = result.expect_err("gives up");
        assert_eq!(error.attempts, 4);
        assert!(error.retryable);
        assert!(
            error
                .to_string()
                .starts_with("Hang failed after 4 attempts: no complete answer")
        );
    }
}
