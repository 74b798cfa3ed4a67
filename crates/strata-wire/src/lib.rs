//! The EBS direct API wire contract (restJson1, API version 2019-11-02), as
//! `shared/spec/ebs-2019-11-02.json` defines it: the route table, header and query names,
//! request and response bodies, and error shapes.
//!
//! This crate knows nothing of Strata's domain or of any server framework: it turns a
//! method, path and query into an [`Operation`], and defines the JSON documents exactly
//! as AWS spells them. The server converts these into domain types once, at the edge.

pub mod admin;
pub mod ec2;
pub mod error;
pub mod headers;
pub mod query;
pub mod routes;
pub mod types;

pub use error::{ErrorCode, Reason, WireError};
pub use routes::{Operation, route};

/// The only `BlockSize` the service reports, and the only `DataLength` it accepts.
pub const BLOCK_SIZE: i32 = 524_288;
