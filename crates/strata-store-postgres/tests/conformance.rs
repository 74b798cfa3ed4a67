//! The metadata port's conformance suite on a real PostgreSQL (`DATABASE_URL`), each case
//! in a fresh schema.

mod common;

use common::open;

strata_store_testkit::metadata_store_conformance!(open);
