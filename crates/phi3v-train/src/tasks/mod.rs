//! The tasks that ship with the trainer. Each is one module implementing
//! [`Task`](crate::task::Task); a new task is a new module here (or in the user's own crate).
//!
//! - [`burberry`]: the reference task, built in (what runs without a task file);
//! - [`conversation`]: a conversation dataset (`{messages, images}` JSON lines), every
//!   assistant turn trained, the last one scored (and its fields, given a task file);
//! - [`template_task`]: any task a [`task_file`] describes, over any catalogue, with its
//!   templates ([`template`]) and per-type scores ([`fields`]).

pub mod burberry;
pub mod conversation;
pub mod fields;
pub mod task_file;
pub mod template;
pub mod template_task;

pub use burberry::BurberryTask;
pub use conversation::ConversationTask;
pub use task_file::TaskFile;
pub use template_task::TemplateTask;
