//! Strata's HTTP server: the EBS direct APIs over HTTP/1.1, SigV4 authentication, and
//! the composition root that wires the domain service to the configured stores
//! ([`stores`]: embedded, or PostgreSQL shared by several nodes).
//!
//! Request flow: [`dispatch`] assigns a request id, routes the request line to an
//! operation (`strata_wire::route`), verifies its signature ([`auth`]), runs the
//! operation's handler ([`handlers`]), which converts wire values into domain values and
//! calls `strata_core::SnapshotService`, and maps any error through [`error`], the single
//! place where internal errors become EBS exceptions.

pub mod admin;
pub mod app;
pub mod auth;
pub mod background;
pub mod backup;
pub mod build;
pub mod config;
pub mod connections;
pub mod console;
pub mod credentials;
pub mod dispatch;
pub mod ec2;
pub mod error;
pub mod handlers;
pub mod limits;
pub mod master_key;
pub mod metrics;
pub mod migrate;
pub mod panics;
pub mod quotas;
pub mod stores;
pub mod tls;

pub use app::{RunningServer, serve, start};
pub use config::Settings;
