//! Limits on the requests in flight: how long a body may take as a whole, and how much
//! memory bodies and block reads may hold together.
//!
//! The memory budget is a semaphore of 64 KiB units. A PutSnapshotBlock takes a block's
//! worth before its body is read, a GetSnapshotBlock before the block is read from the
//! store (and keeps it until the answer is sent), a small body (StartSnapshot, EC2 forms,
//! admin calls) what its `content-length` announces, before it is read. When the budget is
//! spent a request is answered `RequestThrottledException` at once, which every SDK retries
//! with backoff: the server never queues unbounded work or memory behind a slow client.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use strata_types::BLOCK_SIZE;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Limits;

/// The budget's unit: small bodies are charged in these, a block is 8 of them.
const UNIT_BYTES: usize = 64 * 1024;

/// The request-level limits every handler shares (part of `AppState`).
#[derive(Debug, Clone)]
pub struct RequestLimits {
    /// How long a whole request body may take.
    pub body_deadline: Duration,
    budget: Arc<Semaphore>,
    units: u32,
}

/// The memory budget is spent: answer `RequestThrottledException`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    /// The whole budget, in bytes (for the message).
    pub budget_bytes: usize,
}

impl From<Busy> for crate::error::ApiError {
    fn from(busy: Busy) -> Self {
        Self(strata_wire::WireError::new(
            strata_wire::ErrorCode::RequestThrottledException,
            None,
            busy.to_string(),
        ))
    }
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "The server is busy: the {} MiB of memory for requests in flight are in use; retry \
             with backoff.",
            // Whole MiB as configured; a budget below one MiB (tests) with its fraction.
            (self.budget_bytes as f64 / 1_048_576.0 * 100.0).round() / 100.0
        )
    }
}

/// A share of the memory budget, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    _permit: Option<OwnedSemaphorePermit>,
}

impl RequestLimits {
    /// The limits of `limits`; the budget always holds at least one block.
    pub fn new(limits: &Limits) -> Self {
        let units = (limits.body_budget_bytes / UNIT_BYTES).max(BLOCK_SIZE / UNIT_BYTES);
        let units = u32::try_from(units)
            .unwrap_or(u32::MAX)
            .min(u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX));
        Self {
            body_deadline: limits.body_deadline,
            budget: Arc::new(Semaphore::new(units as usize)),
            units,
        }
    }

    /// Reserve `bytes` of the budget without waiting (0 bytes reserve nothing).
    pub fn try_reserve(&self, bytes: usize) -> Result<Reservation, Busy> {
        if bytes == 0 {
            return Ok(Reservation { _permit: None });
        }
        let wanted = u32::try_from(bytes.div_ceil(UNIT_BYTES))
            .unwrap_or(u32::MAX)
            .min(self.units);
        Arc::clone(&self.budget)
            .try_acquire_many_owned(wanted)
            .map(|permit| Reservation {
                _permit: Some(permit),
            })
            .map_err(|_| Busy {
                budget_bytes: self.units as usize * UNIT_BYTES,
            })
    }

    /// Reserve one block's worth.
    pub fn try_reserve_block(&self) -> Result<Reservation, Busy> {
        self.try_reserve(BLOCK_SIZE)
    }
}

/// A response body that keeps its reservation until it has been sent (or dropped).
pub struct ReservedBody {
    inner: Body,
    _reservation: Reservation,
}

impl ReservedBody {
    /// `data` as a body holding `reservation`.
    pub fn body(data: Bytes, reservation: Reservation) -> Body {
        Body::new(Self {
            inner: Body::from(data),
            _reservation: reservation,
        })
    }
}

impl http_body::Body for ReservedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(budget: usize) -> RequestLimits {
        RequestLimits::new(&Limits {
            body_budget_bytes: budget,
            ..Limits::default()
        })
    }

    #[test]
    fn the_budget_is_spent_and_given_back() {
        let limits = limits(2 * BLOCK_SIZE);
        let first = limits.try_reserve_block().expect("room for one");
        let second = limits.try_reserve_block().expect("room for two");
        assert!(limits.try_reserve_block().is_err());
        assert!(limits.try_reserve(1).is_err(), "not even a small body");
        assert!(limits.try_reserve(0).is_ok(), "an empty body needs nothing");
        drop(first);
        let small = limits.try_reserve(100).expect("one unit");
        assert!(limits.try_reserve_block().is_err(), "a block needs 8 units");
        drop((small, second));
        assert!(limits.try_reserve_block().is_ok());
    }

    #[test]
    fn a_tiny_budget_still_holds_one_block() {
        let limits = limits(1);
        let block = limits.try_reserve_block().expect("one block");
        assert!(limits.try_reserve_block().is_err());
        drop(block);
        // A body larger than the whole budget takes all of it rather than never fitting.
        assert!(limits.try_reserve(10 * BLOCK_SIZE).is_ok());
    }
}
