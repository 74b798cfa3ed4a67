//! Integration tests of `strata_sigv4::verify_request` against the real `aws-sigv4` signer
//! and the AWS SigV4 test suite. One test binary keeps link time down.

mod aws_test_suite;
mod garbage;
mod negative;
mod properties;
mod round_trip;
mod signer;
