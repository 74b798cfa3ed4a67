//! Integration tests of the Strata server through real clients: `aws-sdk-ebs` (SigV4 and
//! serialization as AWS ships them) and raw signed HTTP for inputs the SDK will not send.

mod arbitrary_requests;
mod backup;
mod cluster;
mod connections;
mod console;
mod ec2;
mod encryption;
mod errors;
mod external_clients;
mod gc;
mod harness;
mod hostile_input;
mod lineage;
mod metrics;
mod migrate;
mod operations;
mod overload;
mod persistence;
mod quotas;
mod s3_faults;
mod scopes;
mod scrub;
mod sdk;
mod socket;
