//! pgplan: declarative plan/apply for PostgreSQL on Kubernetes and AWS RDS.
//!
//! See ARCHITECTURE.md for the data flow and the invariants between modules.

// The pure core: data in, data out; no IO, no tokio/kube/aws.
pub mod addr;
pub mod diff;
pub mod graph;
pub mod names;
pub mod observed;
pub mod plan;
pub mod preflight;
pub mod quantity;
pub mod redact;
pub mod render;
pub mod spec;
pub mod yaml;

// The edge: command line, operations, embedded examples, adapters.
pub mod apply;
pub mod aws;
pub mod cli;
pub mod cluster;
pub mod examples;
pub mod logging;
pub mod ops;
pub mod pgtools;
pub mod private;
pub mod testhooks;
