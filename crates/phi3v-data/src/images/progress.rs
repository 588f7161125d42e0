//! Progress bars that stay out of logs: drawn only on a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar on stderr, or a hidden one when `enabled` is false or stderr is not a
/// terminal (CI logs and redirected output get no control characters). `len` is `None` for a
/// count of unknown length (a spinner).
pub(crate) fn progress_bar(len: Option<u64>, enabled: bool, message: &'static str) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    match len {
        Some(len) => ProgressBar::new(len).with_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})")
                .expect("valid template")
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg}: {pos} ({per_sec})")
                .expect("valid template"),
        ),
    }
    .with_message(message)
}
