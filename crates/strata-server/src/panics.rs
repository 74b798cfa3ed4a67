//! A panic while handling a request becomes an answer, not a dropped connection.
//!
//! [`catch_panics`] wraps every request of the router: if the handler's future panics, the
//! panic is logged (with the request line) and the client gets `500
//! InternalServerException` (EC2 requests: `InternalError` in the EC2 XML envelope), with
//! a request id. The connection stays usable. The rest of the process is unaffected:
//! handlers share no lock a panic could poison (`std::sync` locks inside the stores
//! are the stores' own concern).

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderValue, Request};
use strata_wire::ec2::{Ec2Error, Ec2ErrorCode};
use strata_wire::headers::REQUEST_ID;
use strata_wire::{ErrorCode, WireError};

/// Middleware: run the rest of the stack, turning a panic into a 500 answer.
pub async fn catch_panics(request: Request<Body>, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let ec2 = method == http::Method::POST && path == "/";
    match CatchUnwind(Box::pin(next.run(request))).await {
        Ok(response) => response,
        Err(panic) => {
            let request_id = uuid::Uuid::new_v4().to_string();
            tracing::error!(
                %request_id,
                %method,
                %path,
                panic = panic_message(panic.as_ref()),
                "request handler panicked; answered InternalServerException"
            );
            let mut response = if ec2 {
                crate::ec2::error_response(
                    &Ec2Error::new(
                        Ec2ErrorCode::InternalError,
                        "An internal error has occurred; retry later.",
                    ),
                    &request_id,
                )
            } else {
                crate::dispatch::error_response(&WireError::new(
                    ErrorCode::InternalServerException,
                    None,
                    "The server failed while handling the request; retry later.",
                ))
            };
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert(REQUEST_ID, value);
            }
            response
        }
    }
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// A future that completes with `Err(payload)` if polling `F` panics (it is not polled
/// again afterwards). Boxed, so it is `Unpin` without unsafe pin projection.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        // AssertUnwindSafe: after a panic the future is dropped unpolled, and the answer
        // is built from nothing it touched.
        match std::panic::catch_unwind(AssertUnwindSafe(move || inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}
