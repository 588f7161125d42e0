//! Fuzzing of the image decoder on the stable toolchain: the committed fixtures, mutated (bit
//! flips, byte writes, truncation, insertions, deletions, splices from other fixtures) and fed
//! to `decode_image`. Whatever the bytes, the result must be `Ok` or `Err`: no abort (the test
//! binary would die), no panic (counted by a panic hook, since the JPEG path turns a panic into
//! an error and would hide it otherwise), and no image above the pixel limit.
//!
//! Cases per property: `PHI3V_FUZZ_CASES` (default 4096, a fraction of a second). A long run:
//!
//! ```text
//! PHI3V_FUZZ_CASES=20000 cargo test -p phi3v-processor --test integration fuzz_image_decode -- --nocapture
//! ```

use std::cell::Cell;
use std::path::Path;
use std::sync::{Once, OnceLock};

use phi3v_processor::image_processor::{decode_image_with_limits, DecodeLimits};
use phi3v_testkit::mutate::{apply_bytes, byte_edit, Edit};
use proptest::prelude::*;
use proptest::test_runner::Config;

/// Pixels allowed per decoded image: small, so that a mutated header claiming a large frame
/// costs little (the limit itself is tested in `jpeg_fidelity.rs`).
const MAX_PIXELS: u64 = 1 << 22;

thread_local! {
    /// Real panics seen on this thread (libjpeg's errors unwind with `resume_unwind`, which
    /// skips the hook). Per thread, because the other tests of the binary run beside these
    /// and may panic on purpose.
    static PANICS: Cell<usize> = const { Cell::new(0) };
}

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.with(|n| n.set(n.get() + 1));
            default(info);
        }));
    });
}

fn config() -> Config {
    let cases = std::env::var("PHI3V_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    Config {
        cases,
        // No regression files written into the source tree; a failure prints its input.
        failure_persistence: None,
        ..Config::default()
    }
}

/// Every committed JPEG fixture (good and damaged) and a few small PNGs.
fn fixtures() -> &'static [Vec<u8>] {
    static FIXTURES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        let mut paths: Vec<_> = std::fs::read_dir(data.join("jpeg"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
            .collect();
        paths.sort();
        assert!(paths.len() >= 20, "JPEG fixtures missing: {paths:?}");
        for png in ["tiny", "bilevel", "gray16"] {
            paths.push(data.join("images").join(format!("{png}.png")));
        }
        paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
    })
}

/// One edit of a file. Positions and lengths are taken modulo the file's length.
#[derive(Debug, Clone)]
enum Mutation {
    /// A plain byte edit, shared with the other fuzz tests (phi3v-testkit).
    Bytes(Edit),
    Overwrite {
        at: usize,
        bytes: Vec<u8>,
    },
    /// A chunk of another fixture written over this one (headers, tables, scans mixed).
    Splice {
        donor: usize,
        from: usize,
        at: usize,
        len: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        7 => byte_edit().prop_map(Mutation::Bytes),
        2 => (at, prop_oneof![Just(0xFF), Just(0x00)])
            .prop_map(|(at, value)| Mutation::Bytes(Edit::SetByte { at, value })),
        1 => (at, proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Overwrite { at, bytes }),
        1 => (any::<usize>(), any::<usize>(), at, 1usize..256)
            .prop_map(|(donor, from, at, len)| Mutation::Splice { donor, from, at, len }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let n = bytes.len();
    match m {
        Mutation::Bytes(edit) => apply_bytes(bytes, edit),
        Mutation::Overwrite { at, bytes: new } => {
            let at = at % n;
            let end = (at + new.len()).min(n);
            bytes[at..end].copy_from_slice(&new[..end - at]);
        }
        Mutation::Splice {
            donor,
            from,
            at,
            len,
        } => {
            let donor = &fixtures()[donor % fixtures().len()];
            let from = from % donor.len();
            let at = at % n;
            let len = (*len).min(donor.len() - from).min(n - at);
            bytes[at..at + len].copy_from_slice(&donor[from..from + len]);
        }
    }
}

/// Decodes, and checks what must hold whatever the input.
fn decode_cleanly(bytes: &[u8]) -> Result<(), TestCaseError> {
    count_panics();
    let before = PANICS.with(Cell::get);
    let limits = DecodeLimits {
        max_pixels: MAX_PIXELS,
        ..DecodeLimits::default()
    };
    if let Ok(image) = decode_image_with_limits(bytes, &limits) {
        let pixels = u64::from(image.width()) * u64::from(image.height());
        prop_assert!(pixels <= MAX_PIXELS, "{pixels} pixels decoded");
    }
    prop_assert_eq!(
        PANICS.with(Cell::get),
        before,
        "the decoder panicked (the hook printed where)"
    );
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_fixtures_decode_or_fail_cleanly(
        file in any::<usize>(),
        mutations in proptest::collection::vec(mutation(), 1..5),
    ) {
        let mut bytes = fixtures()[file % fixtures().len()].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        decode_cleanly(&bytes)?;
    }

    #[test]
    fn random_bytes_after_a_jpeg_signature_fail_cleanly(
        tail in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = vec![0xFF, 0xD8, 0xFF];
        bytes.extend(tail);
        decode_cleanly(&bytes)?;
    }
}
