//! Support code for the workspace's examples, benches and integration tests: the choice of
//! tensor backend, made once by cargo feature, and the timed LoRA update.

pub mod backend;
pub mod lora_update;
