//! Which task a command runs, from its `--task` and `--data`: the one place that decides, so
//! `phi3v train`, `phi3v eval` and the example agree.
//!
//! | `--data` | `--task` | task |
//! |---|---|---|
//! | conversation records (`{"messages": ...}` JSON lines) | none | [`ConversationTask`]: exact match of the last answer |
//! | conversation records | a task file | [`ConversationTask`] with the file's per-field scores |
//! | a catalogue (or none: sample data) | a task file | [`TemplateTask`] |
//! | a catalogue (or none) | none | [`BurberryTask`], the built-in task |

use std::path::Path;

use phi3v_data::conversations::is_conversation_file;
use phi3v_train::{BurberryTask, ConversationTask, TemplateTask, TrainError};

/// The task of a command, checked (a task file is read and checked before any data).
#[derive(Debug, Clone)]
pub enum TaskChoice {
    Burberry(BurberryTask),
    File(TemplateTask),
    Conversations(ConversationTask),
}

impl TaskChoice {
    /// The task for a task file (if any) over `data` (if any: without, the sample catalogue).
    ///
    /// # Errors
    /// The task file's errors; a data file that cannot be opened.
    pub fn choose(task: Option<&Path>, data: Option<&Path>) -> Result<Self, TrainError> {
        let task = task.map(TemplateTask::load).transpose()?;
        let conversations = match data {
            Some(path) => is_conversation_file(path)?,
            None => false,
        };
        Ok(match (task, conversations) {
            (Some(task), true) => Self::Conversations(ConversationTask::with_fields(task)),
            (None, true) => Self::Conversations(ConversationTask::new()),
            (Some(task), false) => Self::File(task),
            (None, false) => Self::Burberry(BurberryTask::default()),
        })
    }
}

/// Runs `$body` with `$task` bound to the chosen task's value (each arm is monomorphised
/// for its task type), as [`crate::with_backend!`] does for backends.
#[macro_export]
macro_rules! with_task {
    ($choice:expr, $task:ident => $body:expr) => {
        match $choice {
            $crate::task_choice::TaskChoice::Burberry($task) => $body,
            $crate::task_choice::TaskChoice::File($task) => $body,
            $crate::task_choice::TaskChoice::Conversations($task) => $body,
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo_file;

    #[test]
    fn conversation_records_choose_the_conversation_task_with_or_without_a_task_file() {
        let dir = tempfile::tempdir().unwrap();
        let chats = dir.path().join("chats.jsonl");
        std::fs::write(
            &chats,
            "\n{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}\n",
        )
        .unwrap();
        let rows = dir.path().join("rows.jsonl");
        std::fs::write(&rows, "{\"title\": \"Coat\", \"imageurl\": \"a.png\"}\n").unwrap();
        let furniture = repo_file("tasks/furniture.toml");
        let name = |choice: TaskChoice| match choice {
            TaskChoice::Burberry(_) => "burberry".to_string(),
            TaskChoice::File(t) => format!("file {}", phi3v_train::Task::name(&t)),
            TaskChoice::Conversations(t) => {
                format!("conversations {}", phi3v_train::Task::name(&t))
            }
        };
        let choose = |task: Option<&Path>, data: Option<&Path>| {
            name(TaskChoice::choose(task, data).unwrap())
        };
        assert_eq!(choose(None, Some(&chats)), "conversations conversations");
        assert_eq!(
            choose(Some(&furniture), Some(&chats)),
            "conversations furniture"
        );
        assert_eq!(choose(Some(&furniture), Some(&rows)), "file furniture");
        assert_eq!(choose(None, Some(&rows)), "burberry");
        assert_eq!(choose(None, None), "burberry");
        let err = TaskChoice::choose(None, Some(&dir.path().join("gone.jsonl"))).unwrap_err();
        assert!(err.to_string().contains("gone.jsonl"), "{err}");
    }
}
