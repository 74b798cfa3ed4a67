//! The chunk-store conformance suite of the test kit on a real S3-compatible server (the
//! `S3_*` variables of ci/ceph-rgw.sh), each case under a fresh prefix.

mod common;

strata_store_testkit::chunk_store_conformance!(common::fresh_store);
