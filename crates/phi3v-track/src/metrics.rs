//! The run's own metrics log, `metrics.jsonl`: one JSON object per line,
//!
//! ```text
//! {"step":120,"time":1732420000.25,"split":"train","name":"loss","value":1.8125}
//! ```
//!
//! It is the source of truth for `report.html` and for anything a script wants to plot later:
//! plain text, appendable, readable by `jq`/pandas, and robust to the ways a training run
//! dies. A killed run can leave a half-written last line, which readers skip and
//! [`MetricsLog::open`] cuts off before appending; a resumed run calls [`truncate_after`] so
//! the steps it repeats are not logged twice.
//!
//! Non-finite values (a NaN loss is exactly what one wants to see in the log) are written as
//! the strings `"NaN"`, `"inf"` and `"-inf"`, because JSON numbers cannot express them and
//! `serde_json` would otherwise write `null`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::json::non_finite_f64;
use phi3v_io::replace_file;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRecord {
    /// Optimiser step the value belongs to.
    pub step: u64,
    /// Unix time in seconds when it was logged (wall-clock, so resumed runs stay ordered).
    pub time: f64,
    /// `"train"`, `"val"`, `"eval"`...
    pub split: String,
    /// `"loss"`, `"lr"`, `"tokens_per_sec"`...
    pub name: String,
    /// The value; may be NaN or infinite (see the module docs).
    #[serde(with = "non_finite_f64")]
    pub value: f64,
}

/// Appends [`MetricRecord`]s to a `metrics.jsonl` file, one flushed line each.
pub struct MetricsLog {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsLog {
    /// Opens `path` for appending, creating it (and its directory) if needed, so a resumed
    /// run continues the same file. A truncated last line left by a killed run is cut off
    /// first; otherwise the next record would be glued to it and corrupt the middle of the
    /// file.
    pub fn open(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        drop_partial_last_line(&mut file)?;
        Ok(Self {
            path: path.to_owned(),
            out: BufWriter::new(file),
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record stamped with the current Unix time and flushes it, so a killed run
    /// keeps everything logged up to the kill.
    pub fn log(&mut self, step: u64, split: &str, name: &str, value: f64) -> io::Result<()> {
        let record = MetricRecord {
            step,
            time: unix_seconds(),
            split: split.to_owned(),
            name: name.to_owned(),
            value,
        };
        self.append(&record)
    }

    /// Appends a prepared record (its `time` is kept as given) and flushes it.
    pub fn append(&mut self, record: &MetricRecord) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        self.out.write_all(&line)?;
        self.out.flush()
    }
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Truncates `file` after its last `\n` if it does not end with one. Only the tail is read
/// when the file is intact (the common case), so opening a long log stays cheap.
fn drop_partial_last_line(file: &mut File) -> io::Result<()> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 || last_byte(file, len)? == b'\n' {
        return Ok(());
    }
    let mut contents = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut contents)?;
    let keep = contents
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    file.set_len(keep as u64)
}

fn last_byte(file: &mut File, len: u64) -> io::Result<u8> {
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut byte)?;
    Ok(byte[0])
}

/// Reads every record of a `metrics.jsonl` file, in file order.
///
/// A final line without a newline that does not parse is a write cut short by a kill and is
/// skipped. Any other malformed line is an `InvalidData` error naming the file and the 1-based
/// line number: that is real corruption, and silently dropping it would bend the curves.
/// Blank lines are ignored.
pub fn read_metrics(path: &Path) -> io::Result<Vec<MetricRecord>> {
    let bytes = fs::read(path)?;
    let ends_with_newline = bytes.last() == Some(&b'\n');
    let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    let mut records = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<MetricRecord>(line) {
            Ok(record) => records.push(record),
            Err(_) if index + 1 == lines.len() && !ends_with_newline => {}
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: line {}: {e}", path.display(), index + 1),
                ))
            }
        }
    }
    Ok(records)
}

/// Rewrites `path` keeping only the records with `step <= step`, and returns how many were
/// removed.
///
/// Used when a run resumes from a checkpoint older than the last logged step: without it the
/// repeated steps would be logged twice and the curves would fold back on themselves. The new
/// contents go to a temporary file in the same directory that then replaces the old one, so a
/// crash mid-way leaves either the old or the new file, never half of one. A missing file is
/// nothing to truncate (`Ok(0)`). Call it before [`MetricsLog::open`], not while a log is open.
pub fn truncate_after(path: &Path, step: u64) -> io::Result<usize> {
    let records = match read_metrics(path) {
        Ok(records) => records,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let kept: Vec<&MetricRecord> = records.iter().filter(|r| r.step <= step).collect();
    let removed = records.len() - kept.len();
    replace_file(path, |out| {
        for record in kept {
            serde_json::to_writer(&mut *out, record).map_err(io::Error::other)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    })?;
    Ok(removed)
}
