//! Test substrate (see docs/testing.md).
#[path = "../mod.rs"]
#[allow(dead_code)]
mod support;
fn main() {}
