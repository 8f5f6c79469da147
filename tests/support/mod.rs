//! Test substrate (see docs/testing.md).
