//! The tasks that ship with the trainer. Each is one module implementing
//! [`Task`](crate::task::Task); a new task is a new module here (or in the user's own crate).

pub mod burberry;

pub use burberry::BurberryTask;
