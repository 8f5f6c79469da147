//! The one integration-test binary. Each module is one capability's tests.

#[path = "../support/mod.rs"]
#[allow(dead_code)]
mod support;

mod apply;
mod aws;
mod backstage;
mod cli;
mod data_faults;
mod diff;
mod logging;
mod observe;
mod pgtools;
mod render;
mod roles;
mod schema;
mod substrate;
