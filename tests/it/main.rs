//! The one integration-test binary. Each module is one capability's tests.

#[path = "../support/mod.rs"]
#[allow(dead_code)]
mod support;

mod apply;
mod aws;
mod backstage;
mod cli;
mod diff;
mod exec;
mod effects;
mod observe;
mod pgtools;
mod redaction;
mod render;
mod saved_plan;
mod safety;
mod schema;
mod substrate;
