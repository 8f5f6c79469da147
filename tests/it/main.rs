//! The one integration-test binary. Each module is one capability's tests.

#[path = "../support/mod.rs"]
#[allow(dead_code)]
mod support;

mod apply;
mod aws;
mod backstage;
mod backups;
mod cli;
mod data_faults;
mod datapath;
mod diff;
mod effects;
mod exec;
mod hostile;
mod logging;
mod messages;
mod observe;
mod pgtools;
mod preflight;
mod redaction;
mod render;
mod roles;
mod run;
mod safety;
mod saved_plan;
mod schema;
mod state;
mod substrate;
mod tidy;
mod yaml11;
