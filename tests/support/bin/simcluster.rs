#[path = "../mod.rs"]
#[allow(dead_code)]
mod support;
fn main() {}
