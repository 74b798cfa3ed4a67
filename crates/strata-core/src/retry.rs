//! The one retry policy for storage calls: a call that failed with a retryable
//! [`StoreError`] (see [`StoreError::is_retryable`]: conflicts, an unavailable backend, an
//! interrupted I/O) is repeated a bounded number of times, after exponentially growing
//! delays with full jitter, so that many requests failing at once do not retry in step.
//! Anything else is returned at once: a corrupt chunk or a full disk does not get better
//! by asking again, and a transient error is never turned into a different kind.

use std::time::Duration;

use rand::Rng;

use crate::ports::StoreError;

/// How often and how patiently a storage call is repeated.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Calls made in all, the first included (at least 1).
    pub attempts: u32,
    /// The ceiling of the first delay; each later ceiling doubles, up to `max_delay`.
    pub first_delay: Duration,
    /// The largest delay ceiling.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Four calls within about a second and a half at most: long enough to ride out a
    /// serialization failure or a dropped connection, short enough that the client's
    /// own deadline (and its own retries) stay in charge of anything longer.
    fn default() -> Self {
        Self {
            attempts: 4,
            first_delay: Duration::from_millis(25),
            max_delay: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// No retries at all (tests that count calls).
    pub const NONE: RetryPolicy = RetryPolicy {
        attempts: 1,
        first_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
    };

    /// The bookkeeping of one call's attempts under this policy.
    pub fn attempts(&self) -> Attempts {
        Attempts {
            policy: *self,
            made: 1,
            ceiling: self.first_delay,
        }
    }
}

/// The attempts of one storage call so far; see [`with_retries!`](crate::with_retries).
#[derive(Debug)]
pub struct Attempts {
    policy: RetryPolicy,
    made: u32,
    ceiling: Duration,
}

impl Attempts {
    /// After a failed attempt: how long to wait before the next one, or `None` when the
    /// error is not retryable or the attempts are used up (the error is then final).
    pub fn after_failure<E: AsStoreError>(&mut self, what: &str, error: &E) -> Option<Duration> {
        let store_error = error.as_store_error()?;
        if self.made >= self.policy.attempts || !store_error.is_retryable() {
            return None;
        }
        let delay = jittered(self.ceiling);
        tracing::warn!(
            what,
            attempt = self.made,
            of = self.policy.attempts,
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            error = %store_error,
            "retrying a storage call"
        );
        self.ceiling = (self.ceiling * 2).min(self.policy.max_delay);
        self.made += 1;
        Some(delay)
    }
}

/// `with_retries!(policy, "what", call)`: evaluate the future expression `call` until it
/// succeeds, fails for good, or the policy's attempts are used up (see [`RetryPolicy`]).
/// `call` is written out again for each attempt, so it must be cheap to rebuild (clone
/// its arguments). A macro rather than a function over closures: a closure that returns a
/// future borrowing its captures defeats the compiler's `Send` proof for the request
/// futures the service's callers spawn.
#[macro_export]
macro_rules! with_retries {
    ($policy:expr, $what:expr, $call:expr) => {{
        let mut attempts = $crate::retry::RetryPolicy::attempts(&$policy);
        loop {
            match $call.await {
                Err(error) => match attempts.after_failure($what, &error) {
                    Some(delay) => ::tokio::time::sleep(delay).await,
                    None => break Err(error),
                },
                done => break done,
            }
        }
    }};
}

/// Errors that may carry a [`StoreError`] (the ports' operation-specific error enums).
pub trait AsStoreError {
    /// The storage failure inside, if this is one.
    fn as_store_error(&self) -> Option<&StoreError>;
}

impl AsStoreError for StoreError {
    fn as_store_error(&self) -> Option<&StoreError> {
        Some(self)
    }
}

/// A delay drawn uniformly from `0..=ceiling` ("full jitter").
fn jittered(ceiling: Duration) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::sync::Arc;

    fn unavailable() -> StoreError {
        StoreError::unavailable("down", std::io::Error::other("refused"))
    }

    #[tokio::test]
    async fn retryable_errors_are_repeated_until_success_within_the_bound() {
        let policy = RetryPolicy {
            attempts: 4,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        };
        let calls = Cell::new(0);
        let outcome = crate::with_retries!(policy, "test", async {
            calls.set(calls.get() + 1);
            if calls.get() < 3 {
                Err(unavailable())
            } else {
                Ok(calls.get())
            }
        });
        assert_eq!(outcome.ok(), Some(3));

        let calls = Cell::new(0);
        let outcome: Result<(), _> = crate::with_retries!(policy, "test", async {
            calls.set(calls.get() + 1);
            Err(StoreError::Conflict("again".into()))
        });
        assert!(matches!(outcome, Err(StoreError::Conflict(_))));
        assert_eq!(calls.get(), 4, "four attempts in all");
    }

    #[tokio::test]
    async fn permanent_errors_are_returned_at_once_and_unchanged() {
        let policy = RetryPolicy::default();
        for error in [
            StoreError::Corrupt("bad".into()),
            StoreError::Backend("no".into()),
            StoreError::Closed("stopped".into()),
            StoreError::io("write", std::io::Error::from_raw_os_error(libc_enospc())),
        ] {
            let calls = Cell::new(0);
            let expected = error.to_string();
            let outcome: Result<(), _> = crate::with_retries!(policy, "test", async {
                calls.set(calls.get() + 1);
                Err(error.clone())
            });
            assert_eq!(calls.get(), 1, "{expected}");
            assert_eq!(outcome.err().map(|e| e.to_string()), Some(expected));
        }
    }

    #[test]
    fn io_errors_are_retryable_only_when_they_mean_not_now() {
        let io = |kind| StoreError::Io {
            operation: "read".into(),
            source: Arc::new(std::io::Error::from(kind)),
        };
        assert!(io(std::io::ErrorKind::Interrupted).is_retryable());
        assert!(io(std::io::ErrorKind::TimedOut).is_retryable());
        assert!(!io(std::io::ErrorKind::NotFound).is_retryable());
        assert!(!StoreError::io("read", std::io::Error::from_raw_os_error(5)).is_retryable());
    }

    /// ENOSPC on Linux.
    fn libc_enospc() -> i32 {
        28
    }
}
