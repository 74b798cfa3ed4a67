//! Optional request-rate quotas, shaped like AWS's (`[quotas]` in the config file): per
//! account and per snapshot, per operation, in requests per second. A request over a
//! quota is answered `RequestThrottledException` at once — `ACCOUNT_THROTTLED` or
//! `RESOURCE_LEVEL_THROTTLE` — which every SDK retries with backoff.
//!
//! Each quota is a token bucket holding one second's worth of requests (so a burst of up
//! to the rate is allowed), refilled continuously. The buckets live in this process: a
//! cluster of N nodes behind a load balancer admits up to N times the configured rates.
//! (The pending-snapshots quota is cluster-wide: it is counted in the metadata store, see
//! `SnapshotService::with_pending_limit`.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use strata_types::AccountId;
use strata_wire::{ErrorCode, Reason, WireError};

/// Operations a per-account quota may name.
pub const ACCOUNT_OPERATIONS: &[&str] = &[
    "StartSnapshot",
    "PutSnapshotBlock",
    "CompleteSnapshot",
    "GetSnapshotBlock",
    "ListSnapshotBlocks",
    "ListChangedBlocks",
];

/// Operations a per-snapshot quota may name (those that name a snapshot).
pub const SNAPSHOT_OPERATIONS: &[&str] = &[
    "PutSnapshotBlock",
    "CompleteSnapshot",
    "GetSnapshotBlock",
    "ListSnapshotBlocks",
    "ListChangedBlocks",
];

/// Buckets kept before idle (full) ones are dropped.
const MAX_BUCKETS: usize = 100_000;

/// The configured rates, validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuotaRates {
    /// Requests per second per account, by operation.
    pub per_account: BTreeMap<String, f64>,
    /// Requests per second per snapshot, by operation.
    pub per_snapshot: BTreeMap<String, f64>,
}

impl QuotaRates {
    /// Check the operation names and rates of a config file's `[quotas]`.
    pub fn new(
        per_account: BTreeMap<String, f64>,
        per_snapshot: BTreeMap<String, f64>,
    ) -> anyhow::Result<Self> {
        for (table, rates, allowed) in [
            (
                "requests_per_second_per_account",
                &per_account,
                ACCOUNT_OPERATIONS,
            ),
            (
                "requests_per_second_per_snapshot",
                &per_snapshot,
                SNAPSHOT_OPERATIONS,
            ),
        ] {
            for (operation, rate) in rates {
                anyhow::ensure!(
                    allowed.contains(&operation.as_str()),
                    "quotas.{table}: unknown operation '{operation}' (one of {})",
                    allowed.join(", ")
                );
                anyhow::ensure!(
                    rate.is_finite() && *rate > 0.0,
                    "quotas.{table}.{operation} must be a positive number of requests per second"
                );
            }
        }
        Ok(Self {
            per_account,
            per_snapshot,
        })
    }

    /// Whether no rate is configured.
    pub fn is_empty(&self) -> bool {
        self.per_account.is_empty() && self.per_snapshot.is_empty()
    }
}

/// Which quota a request ran into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Throttled {
    /// The account's rate for the operation.
    Account {
        /// The operation.
        operation: &'static str,
        /// The rate, requests per second.
        rate: String,
    },
    /// The snapshot's rate for the operation.
    Snapshot {
        /// The operation.
        operation: &'static str,
        /// The rate, requests per second.
        rate: String,
    },
}

impl From<Throttled> for crate::error::ApiError {
    fn from(throttled: Throttled) -> Self {
        let (reason, message) = match throttled {
            Throttled::Account { operation, rate } => (
                Reason::AccountThrottled,
                format!(
                    "Rate exceeded: the account's quota for {operation} is {rate} requests per second; retry with backoff."
                ),
            ),
            Throttled::Snapshot { operation, rate } => (
                Reason::ResourceLevelThrottle,
                format!(
                    "Rate exceeded: the snapshot's quota for {operation} is {rate} requests per second; retry with backoff."
                ),
            ),
        };
        Self(WireError::new(
            ErrorCode::RequestThrottledException,
            Some(reason),
            message,
        ))
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// The bucket refilled up to now at `rate` (capacity: one second's worth, at least 1).
    fn refilled(self, rate: f64, now: Instant) -> Self {
        let capacity = rate.max(1.0);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        Self {
            tokens: (self.tokens + elapsed * rate).min(capacity),
            at: now,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(&'static str, AccountId),
    Snapshot(&'static str, String),
}

/// The quotas in force and their buckets (part of `AppState`).
#[derive(Debug, Default)]
pub struct Quotas {
    rates: QuotaRates,
    buckets: Mutex<HashMap<Key, Bucket>>,
}

impl Quotas {
    /// Quotas at `rates`.
    pub fn new(rates: QuotaRates) -> Self {
        Self {
            rates,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Admit one request of `operation` by `account` (on `snapshot`, if it names one), or
    /// say which quota it is over. A refused request takes nothing from any bucket.
    pub fn admit(
        &self,
        operation: &'static str,
        account: &AccountId,
        snapshot: Option<&str>,
    ) -> Result<(), Throttled> {
        if self.rates.is_empty() {
            return Ok(());
        }
        let mut wanted: Vec<(Key, f64, bool)> = Vec::with_capacity(2);
        if let Some(rate) = self.rates.per_snapshot.get(operation)
            && let Some(snapshot) = snapshot
        {
            wanted.push((Key::Snapshot(operation, snapshot.to_owned()), *rate, true));
        }
        if let Some(rate) = self.rates.per_account.get(operation) {
            wanted.push((Key::Account(operation, account.clone()), *rate, false));
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let mut refilled = Vec::with_capacity(wanted.len());
        for (key, rate, per_snapshot) in wanted {
            let bucket = buckets
                .get(&key)
                .copied()
                .unwrap_or(Bucket {
                    tokens: rate.max(1.0),
                    at: now,
                })
                .refilled(rate, now);
            if bucket.tokens < 1.0 {
                let rate = format!("{rate}");
                return Err(if per_snapshot {
                    Throttled::Snapshot { operation, rate }
                } else {
                    Throttled::Account { operation, rate }
                });
            }
            refilled.push((key, bucket));
        }
        if buckets.len() >= MAX_BUCKETS {
            // Drop the buckets that are full again: forgetting them changes nothing.
            let rates = &self.rates;
            buckets.retain(|key, bucket| {
                let rate = match key {
                    Key::Account(op, _) => rates.per_account.get(*op),
                    Key::Snapshot(op, _) => rates.per_snapshot.get(*op),
                }
                .copied()
                .unwrap_or(1.0);
                bucket.refilled(rate, now).tokens < rate.max(1.0)
            });
        }
        for (key, mut bucket) in refilled {
            bucket.tokens -= 1.0;
            buckets.insert(key, bucket);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(account: &[(&str, f64)], snapshot: &[(&str, f64)]) -> QuotaRates {
        let map =
            |pairs: &[(&str, f64)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        QuotaRates::new(map(account), map(snapshot)).expect("valid")
    }

    #[test]
    fn a_bucket_admits_a_second_of_requests_then_refills_at_its_rate() {
        let start = Instant::now();
        let bucket = Bucket {
            tokens: 0.0,
            at: start,
        };
        let later = start + std::time::Duration::from_millis(500);
        assert!((bucket.refilled(10.0, later).tokens - 5.0).abs() < 1e-9);
        let much_later = start + std::time::Duration::from_secs(60);
        assert!((bucket.refilled(10.0, much_later).tokens - 10.0).abs() < 1e-9);
        assert!((bucket.refilled(0.1, much_later).tokens - 1.0).abs() < 1e-9);
    }

    #[test]
    fn quotas_throttle_per_snapshot_and_per_account_and_refusals_cost_nothing() {
        let account = AccountId::parse("111122223333").expect("account");
        let other = AccountId::parse("444455556666").expect("account");
        let quotas = Quotas::new(rates(
            &[("PutSnapshotBlock", 0.01)],
            &[("GetSnapshotBlock", 0.01)],
        ));
        assert!(
            quotas
                .admit("GetSnapshotBlock", &account, Some("snap-a"))
                .is_ok()
        );
        assert!(matches!(
            quotas.admit("GetSnapshotBlock", &account, Some("snap-a")),
            Err(Throttled::Snapshot { .. })
        ));
        assert!(
            quotas
                .admit("GetSnapshotBlock", &account, Some("snap-b"))
                .is_ok()
        );
        assert!(
            quotas
                .admit("PutSnapshotBlock", &account, Some("snap-a"))
                .is_ok()
        );
        assert!(matches!(
            quotas.admit("PutSnapshotBlock", &account, Some("snap-b")),
            Err(Throttled::Account { .. })
        ));
        assert!(
            quotas
                .admit("PutSnapshotBlock", &other, Some("snap-c"))
                .is_ok()
        );
        assert!(
            quotas
                .admit("ListSnapshotBlocks", &account, Some("snap-a"))
                .is_ok()
        );
    }

    #[test]
    fn unknown_operations_and_rates_that_are_not_positive_are_refused() {
        let bad = |account: &[(&str, f64)], snapshot: &[(&str, f64)]| {
            let map =
                |pairs: &[(&str, f64)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
            QuotaRates::new(map(account), map(snapshot)).is_err()
        };
        assert!(bad(&[("PutBlock", 1.0)], &[]));
        assert!(bad(&[], &[("StartSnapshot", 1.0)]));
        assert!(bad(&[("StartSnapshot", 0.0)], &[]));
        assert!(bad(&[("StartSnapshot", f64::NAN)], &[]));
        assert!(!bad(
            &[("StartSnapshot", 10.0)],
            &[("PutSnapshotBlock", 1000.0)]
        ));
    }
}
