//! TensorBoard event files, written without TensorFlow or a protobuf crate.
//!
//! An event file is a sequence of TFRecords, each holding one serialised `tensorflow.Event`
//! protobuf. Only the handful of fields TensorBoard needs for scalars and images are encoded,
//! by a tiny hand-written protobuf writer (`ProtoWriter`). The record framing's CRC-32C comes
//! from the `crc32c` crate; TFRecord's masking of it is [`masked_crc32c`].
//!
//! Compatibility was checked by hand against the real reader (not in the test suite: CI has
//! no Python). The file was written by an ignored test of `tests/tracking.rs`:
//!
//! ```text
//! $ ~/venv/bin/pip install tensorboard            # tensorboard 2.21.0
//! $ TB_SAMPLE_DIR=/tmp/tb-check cargo test -p phi3v-track --test tracking \
//!       -- --ignored write_tensorboard_sample
//! $ ~/venv/bin/python - <<'EOF'
//! from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
//! acc = EventAccumulator("/tmp/tb-check", size_guidance={"scalars": 0, "images": 0})
//! acc.Reload()
//! print(acc.Tags())
//! for tag in acc.Tags()["scalars"]:
//!     print(tag, [(e.step, round(e.value, 4)) for e in acc.Scalars(tag)])
//! for tag in acc.Tags()["images"]:
//!     print(tag, [(e.step, e.width, e.height, len(e.encoded_image_string)) for e in acc.Images(tag)])
//! EOF
//! {'images': ['eval/sample'], 'audio': [], 'histograms': [], 'scalars': ['train/loss', 'train/lr'],
//!  'distributions': [], 'tensors': [], 'graph': False, 'meta_graph': False, 'run_metadata': []}
//! train/loss [(0, 2.5), (1, 2.25), (2, 2.0), (3, 1.75), (4, 1.5)]
//! train/lr [(0, 0.0001), (1, 0.0001), (2, 0.0001), (3, 0.0001), (4, 0.0001)]
//! eval/sample [(0, 48, 24, 285), (4, 48, 24, 285)]
//! ```
//!
//! The same file also loads through `plugin_event_accumulator` (the path the TensorBoard web
//! UI uses): scalars and images are listed under their plugins and the image bytes decode
//! with PIL as a 48x24 RGB PNG. TensorBoard's own reader verifies the framing too: with one
//! byte of record 1 flipped, `RawEventFileLoader` stops after record 0 (13 records intact).
//! (`wandb sync --sync-tensorboard` was not run here: it needs network access and an
//! account; it parses event files with TensorBoard's own reader.)

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// TFRecord's masked CRC-32C (Castagnoli, *not* zlib's CRC-32: TensorBoard rejects records
/// framed with the wrong one). TensorFlow masks the CRC so that a CRC computed over data that
/// itself embeds CRCs does not degenerate; readers compare against the masked value.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
        .rotate_right(15)
        .wrapping_add(0xA282_EAD8)
}

/// The version string TensorBoard expects in the first event of every file.
const FILE_VERSION: &str = "brain.Event:2";

/// `Summary.Image.colorspace` for RGB.
const COLORSPACE_RGB: u64 = 3;

/// Appends TensorBoard events (scalars and PNG images) to one event file.
///
/// Each `add_*` call flushes, so a run killed mid-training (OOM, Ctrl-C) keeps every point it
/// logged; the cost is one small `write` syscall per point, negligible next to a training step.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Creates `dir` if needed and a new event file in it, named the way TensorBoard and
    /// `wandb sync` discover them: `events.out.tfevents.{unix_secs}.{hostname}.{pid}`. Two
    /// writers opened in the same second by one process get a `.1`, `.2`... suffix instead
    /// of overwriting each other. Writes the `brain.Event:2` version record.
    pub fn create(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let (path, file) = create_unique(dir, &event_file_name())?;
        let mut writer = Self {
            path,
            out: BufWriter::new(file),
        };
        let mut event = event_header(wall_time(), 0);
        event.string(3, FILE_VERSION);
        writer.write_event(&event)?;
        Ok(writer)
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logs one scalar point (a loss, a learning rate) under `tag` at `step`.
    pub fn add_scalar(&mut self, tag: &str, value: f32, step: i64) -> io::Result<()> {
        let mut value_msg = ProtoWriter::default();
        value_msg.string(1, tag);
        value_msg.float(2, value);
        self.write_summary(&value_msg, step)
    }

    /// Logs one already-encoded PNG image (see [`crate::thumbnail_png`]) under `tag`.
    /// `width` and `height` are the PNG's own dimensions; TensorBoard shows them as metadata.
    pub fn add_image(
        &mut self,
        tag: &str,
        png: &[u8],
        width: u32,
        height: u32,
        step: i64,
    ) -> io::Result<()> {
        let mut image = ProtoWriter::default();
        image.varint_field(1, u64::from(height));
        image.varint_field(2, u64::from(width));
        image.varint_field(3, COLORSPACE_RGB);
        image.bytes(4, png);
        let mut value_msg = ProtoWriter::default();
        value_msg.string(1, tag);
        value_msg.message(4, &image);
        self.write_summary(&value_msg, step)
    }

    /// Flushes buffered records to the operating system.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Wraps one `Summary.Value` in a `Summary` and an `Event`, writes and flushes it.
    fn write_summary(&mut self, value_msg: &ProtoWriter, step: i64) -> io::Result<()> {
        let mut summary = ProtoWriter::default();
        summary.message(1, value_msg);
        let mut event = event_header(wall_time(), step);
        event.message(5, &summary);
        self.write_event(&event)?;
        self.flush()
    }

    fn write_event(&mut self, event: &ProtoWriter) -> io::Result<()> {
        write_record(&mut self.out, &event.buf)
    }
}

/// `Event.wall_time` (field 1) and `Event.step` (field 2), common to every event.
fn event_header(wall_time: f64, step: i64) -> ProtoWriter {
    let mut event = ProtoWriter::default();
    event.double(1, wall_time);
    event.varint_field(2, step as u64);
    event
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn event_file_name() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "events.out.tfevents.{secs}.{}.{}",
        hostname(),
        std::process::id()
    )
}

/// The host name without a crate: Linux exposes it in `/proc`, other Unixes usually set
/// `$HOSTNAME`. Characters that do not belong in a file name are replaced by `_`.
fn hostname() -> String {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "localhost".to_owned()
    } else {
        clean
    }
}

/// Creates `dir/name`, or `dir/name.N` for the first free `N`, never truncating an existing
/// file.
fn create_unique(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    const MAX_ATTEMPTS: u32 = 1000;
    for attempt in 0..MAX_ATTEMPTS {
        let path = match attempt {
            0 => dir.join(name),
            n => dir.join(format!("{name}.{n}")),
        };
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{}: {MAX_ATTEMPTS} event files named {name}* already exist",
            dir.display()
        ),
    ))
}

/// Frames `data` as one TFRecord: `u64 LE length`, masked CRC of the length bytes, the data,
/// masked CRC of the data (both CRCs little-endian u32).
fn write_record(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    let len = (data.len() as u64).to_le_bytes();
    out.write_all(&len)?;
    out.write_all(&masked_crc32c(&len).to_le_bytes())?;
    out.write_all(data)?;
    out.write_all(&masked_crc32c(data).to_le_bytes())
}

/// Reads every TFRecord of an event file, verifying both CRCs of each. Used by tests and to
/// check a run's logs; a mismatch or truncation is an `InvalidData` error naming the file and
/// the record's 0-based index.
pub fn read_records(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let bytes = fs::read(path)?;
    let mut records = Vec::new();
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let (record, tail) = split_record(rest).map_err(|why| {
            invalid_data(format!(
                "{}: record {}: {why}",
                path.display(),
                records.len()
            ))
        })?;
        records.push(record.to_vec());
        rest = tail;
    }
    Ok(records)
}

/// Splits one verified record off the front of `bytes`: `(data, remaining bytes)`.
fn split_record(bytes: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let (len_bytes, rest) = take(bytes, 8, "length")?;
    let (len_crc, rest) = take(rest, 4, "length CRC")?;
    check_crc(len_bytes, len_crc, "length")?;
    let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
    let len = usize::try_from(len).map_err(|_| format!("length {len} does not fit in memory"))?;
    let (data, rest) = take(rest, len, "data")?;
    let (data_crc, rest) = take(rest, 4, "data CRC")?;
    check_crc(data, data_crc, "data")?;
    Ok((data, rest))
}

fn take<'a>(bytes: &'a [u8], n: usize, what: &str) -> Result<(&'a [u8], &'a [u8]), String> {
    if bytes.len() < n {
        return Err(format!(
            "truncated {what}: need {n} bytes, {} left",
            bytes.len()
        ));
    }
    Ok(bytes.split_at(n))
}

fn check_crc(data: &[u8], stored: &[u8], what: &str) -> Result<(), String> {
    let stored = u32::from_le_bytes(stored.try_into().expect("4 bytes"));
    let computed = masked_crc32c(data);
    if stored == computed {
        Ok(())
    } else {
        Err(format!(
            "{what} CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ))
    }
}

fn invalid_data(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Protobuf wire types used here.
const WIRE_VARINT: u64 = 0;
const WIRE_FIXED64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_FIXED32: u64 = 5;

/// A minimal protobuf encoder: enough for `Event`, `Summary`, `Summary.Value` and
/// `Summary.Image`. Nested messages are encoded bottom-up into their own buffer and then
/// embedded as length-delimited bytes, so no length has to be known in advance.
#[derive(Default)]
struct ProtoWriter {
    buf: Vec<u8>,
}

impl ProtoWriter {
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.buf.push((value as u8 & 0x7F) | 0x80);
            value >>= 7;
        }
        self.buf.push(value as u8);
    }

    fn key(&mut self, field: u32, wire_type: u64) {
        self.varint(u64::from(field) << 3 | wire_type);
    }

    /// `int32`/`int64`/`uint*` field. Negative signed values must be passed sign-extended to
    /// 64 bits (`i64 as u64`), which is how protobuf encodes them (ten bytes).
    fn varint_field(&mut self, field: u32, value: u64) {
        self.key(field, WIRE_VARINT);
        self.varint(value);
    }

    fn double(&mut self, field: u32, value: f64) {
        self.key(field, WIRE_FIXED64);
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    fn float(&mut self, field: u32, value: f32) {
        self.key(field, WIRE_FIXED32);
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    fn bytes(&mut self, field: u32, value: &[u8]) {
        self.key(field, WIRE_LEN);
        self.varint(value.len() as u64);
        self.buf.extend_from_slice(value);
    }

    fn string(&mut self, field: u32, value: &str) {
        self.bytes(field, value.as_bytes());
    }

    fn message(&mut self, field: u32, message: &ProtoWriter) {
        self.bytes(field, &message.buf);
    }
}

#[cfg(test)]
mod tests {
    use super::ProtoWriter;

    /// Byte-exact encodings from the protobuf encoding guide ("150" is `08 96 01`).
    #[test]
    fn protobuf_encodings_match_the_spec() {
        let mut w = ProtoWriter::default();
        w.varint_field(1, 150);
        assert_eq!(w.buf, [0x08, 0x96, 0x01]);

        let mut w = ProtoWriter::default();
        w.string(2, "testing");
        assert_eq!(w.buf, b"\x12\x07testing");

        let mut w = ProtoWriter::default();
        w.varint_field(2, -1i64 as u64);
        assert_eq!(w.buf.len(), 1 + 10, "negative int64 is ten varint bytes");
        assert_eq!(*w.buf.last().unwrap(), 0x01);

        let mut w = ProtoWriter::default();
        w.float(2, 1.0);
        assert_eq!(w.buf, [0x15, 0x00, 0x00, 0x80, 0x3F]);

        let mut w = ProtoWriter::default();
        w.double(1, 1.0);
        assert_eq!(w.buf, [0x09, 0, 0, 0, 0, 0, 0, 0xF0, 0x3F]);
    }
}
