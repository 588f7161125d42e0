//! # phi3v-cli
//!
//! The command line of the toolkit: the `phi3v` binary, and the pieces the examples share
//! with it so that both accept the same flags with the same meaning.
//!
//! Owns all clap code ([`train_args`]), the presets that fill in what a user leaves out
//! ([`presets`]: the tiny random model, the sample catalogue, the tiny training preset),
//! the one backend dispatch ([`with_backend!`], [`backend::BackendChoice`]) and the run
//! summary printer ([`summary`]).
//!
//! May depend on every other crate of the workspace; nothing depends on it.

pub mod backend;
pub mod presets;
pub mod summary;
pub mod task_choice;
pub mod train_args;
pub mod training;

pub use backend::BackendChoice;
pub use train_args::TrainArgs;

/// A file of the repository, for unit tests that read the committed task files.
#[cfg(test)]
pub(crate) fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}
