//! Support code for the workspace's examples, benches and integration tests: the choice of
//! tensor backend, made once by cargo feature.

pub mod backend;
