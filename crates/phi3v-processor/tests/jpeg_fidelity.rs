//! JPEG decoding parity with PIL, refusal of damaged files, and the read and pixel limits.
//!
//! Fixtures: `tests/data/jpeg/`, written by `scripts/make_jpeg_fixtures.py` (see its header):
//! small JPEGs covering each decoder path (4:2:0, 4:2:2, 4:4:4, 4:4:0, 4:1:1, progressive,
//! restart markers, RGB, grayscale, Adobe CMYK, EXIF-rotated, odd sizes, arithmetic coding),
//! PIL's `convert("RGB")` pixels of each, and damaged files with PIL's verdict on them.

use std::fs;
use std::path::{Path, PathBuf};

use image::DynamicImage;
use phi3v_processor::image_processor::{
    decode_image, decode_image_with_limits, load_image, load_image_with_limits, to_rgb8,
    DecodeLimits, MAX_IMAGE_FILE_BYTES, MAX_IMAGE_PIXELS,
};
use phi3v_processor::{ImageDecodeError, ProcessorError};
use serde_json::Value;

/// Every fixture PIL decodes. Listed here (not only read from the manifest) so that a
/// regenerated fixture set that lost a file, such as the arithmetic-coded ones when
/// `jpegtran` is missing, fails instead of silently checking less.
const DECODABLE: [&str; 17] = [
    "baseline_420",
    "baseline_422",
    "baseline_444",
    "quality_50_420",
    "progressive_420",
    "restart_420",
    "rgb_444",
    "gray",
    "cmyk_adobe",
    "exif_orientation_6",
    "odd_33x17_420",
    "odd_17x33_422",
    "odd_1x1",
    "sampling_440",
    "sampling_411",
    "arithmetic_420",
    "arithmetic_progressive",
];

/// Damaged files that PIL decodes anyway (libjpeg only warns) and that are refused here.
const STRICTER_THAN_PIL: [&str; 1] = ["corrupt_eoi_in_scan"];

/// Files PIL refuses, so that must be errors here.
const PIL_REFUSES: [&str; 3] = ["truncated", "truncated_no_eoi", "corrupt_marker"];

fn jpeg_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jpeg")
}

fn fixture(name: &str) -> PathBuf {
    jpeg_dir().join(format!("{name}.jpg"))
}

fn manifest() -> Value {
    let text = fs::read_to_string(jpeg_dir().join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The manifest entry of `name`.
fn entry(name: &str) -> Value {
    manifest()["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in manifest.json"))
        .clone()
}

/// Pixels that differ and the largest difference of one channel, between two RGB buffers.
fn compare(ours: &[u8], pil: &[u8]) -> (usize, u8) {
    let differing = ours
        .chunks_exact(3)
        .zip(pil.chunks_exact(3))
        .filter(|(a, b)| a != b)
        .count();
    let max = ours
        .iter()
        .zip(pil)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap_or(0);
    (differing, max)
}

#[test]
fn manifest_records_what_pil_decodes_and_refuses() {
    for name in DECODABLE.iter().chain(&STRICTER_THAN_PIL) {
        assert_eq!(entry(name)["pil"], "ok", "{name}");
    }
    for name in PIL_REFUSES {
        assert_eq!(entry(name)["pil"], "error", "{name}");
    }
    let listed = manifest()["files"].as_array().unwrap().len();
    assert_eq!(
        listed,
        DECODABLE.len() + STRICTER_THAN_PIL.len() + PIL_REFUSES.len(),
        "a fixture is neither expected to decode nor to fail: list it in this test"
    );
}

#[test]
fn every_decodable_fixture_has_exactly_pils_pixels() {
    let mut failures = Vec::new();
    for name in DECODABLE {
        let e = entry(name);
        let (w, h) = (e["width"].as_u64().unwrap(), e["height"].as_u64().unwrap());
        let pil = fs::read(jpeg_dir().join(format!("{name}.rgb"))).unwrap();
        let decoded = load_image(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ours = to_rgb8(&decoded).unwrap();
        assert_eq!(
            (u64::from(ours.width()), u64::from(ours.height())),
            (w, h),
            "{name}"
        );
        let (differing, max) = compare(ours.as_raw(), &pil);
        if max != 0 {
            failures.push(format!(
                "{name}: {differing} of {} pixels differ, by up to {max}",
                w * h
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn jpeg_pixel_types_follow_pils_modes() {
    // Gray stays gray (PIL's `L`, replicated by convert); CMYK comes back already as PIL's
    // RGB; the EXIF orientation is not applied, so the size is the stored 40x30, not 30x40.
    assert!(matches!(
        load_image(fixture("gray")).unwrap(),
        DynamicImage::ImageLuma8(_)
    ));
    assert!(matches!(
        load_image(fixture("cmyk_adobe")).unwrap(),
        DynamicImage::ImageRgb8(_)
    ));
    let rotated = load_image(fixture("exif_orientation_6")).unwrap();
    assert_eq!((rotated.width(), rotated.height()), (40, 30));
    assert_eq!(entry("cmyk_adobe")["mode"], "CMYK");
    assert_eq!(entry("gray")["mode"], "L");
}

#[test]
fn files_pil_refuses_are_errors_naming_the_file() {
    for name in PIL_REFUSES {
        let path = fixture(name);
        let err = load_image(&path).expect_err(name);
        assert!(
            matches!(
                &err,
                ProcessorError::ImageDecode {
                    source: ImageDecodeError::Jpeg { .. } | ImageDecodeError::JpegWarning { .. },
                    ..
                }
            ),
            "{name}: {err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
    }
    // A truncated file is libjpeg's "Premature end of JPEG file" warning, refused like PIL's
    // "image file is truncated".
    let err = decode_image(&fs::read(fixture("truncated")).unwrap()).unwrap_err();
    assert!(
        matches!(&err, ImageDecodeError::JpegWarning { message } if message.contains("Premature end")),
        "{err:?}"
    );
}

#[test]
fn damage_that_pil_tolerates_is_refused_too() {
    for name in STRICTER_THAN_PIL {
        let err = decode_image(&fs::read(fixture(name)).unwrap()).expect_err(name);
        assert!(
            matches!(err, ImageDecodeError::JpegWarning { .. }),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn bytes_after_the_end_marker_are_ignored_like_pil() {
    // PIL decodes a JPEG followed by anything (MPO files, appended data) from its first image.
    let mut bytes = fs::read(fixture("baseline_420")).unwrap();
    bytes.extend_from_slice(b"trailing bytes that are not JPEG data");
    let ours = to_rgb8(&decode_image(&bytes).unwrap()).unwrap();
    let pil = fs::read(jpeg_dir().join("baseline_420.rgb")).unwrap();
    assert_eq!(compare(ours.as_raw(), &pil), (0, 0));
}

#[test]
fn cut_at_every_length_is_an_error_never_a_panic() {
    // Any prefix of a JPEG file lacks at least its EOI marker.
    let bytes = fs::read(fixture("progressive_420")).unwrap();
    for len in 0..bytes.len() {
        assert!(
            decode_image(&bytes[..len]).is_err(),
            "prefix of {len} bytes"
        );
    }
}

/// `bytes` with the frame size of its first SOF0/SOF2 header replaced.
fn with_declared_size(mut bytes: Vec<u8>, width: u16, height: u16) -> Vec<u8> {
    let sof = bytes
        .windows(2)
        .position(|m| m == [0xFF, 0xC0] || m == [0xFF, 0xC2])
        .unwrap();
    // FF Cn, length (2), precision (1), height (2), width (2).
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    bytes
}

#[test]
fn huge_declared_size_is_refused_before_decoding() {
    // 60000 x 60000 = 3.6e9 pixels (10.8 GB as RGB) claimed by a 1.4 KB file.
    let bomb = with_declared_size(fs::read(fixture("baseline_420")).unwrap(), 60_000, 60_000);
    let err = decode_image(&bomb).unwrap_err();
    assert!(
        matches!(
            err,
            ImageDecodeError::TooManyPixels {
                width: 60_000,
                height: 60_000,
                limit: MAX_IMAGE_PIXELS
            }
        ),
        "{err:?}"
    );
    // PIL's threshold: DecompressionBombError above 2 * Image.MAX_IMAGE_PIXELS.
    assert_eq!(MAX_IMAGE_PIXELS, 2 * 89_478_485);
}

#[test]
fn pixel_limit_counts_like_pil_for_jpeg_and_other_formats() {
    let jpeg = fs::read(fixture("baseline_420")).unwrap(); // 40 x 30 = 1200 pixels
    let mut png = Vec::new();
    image::RgbImage::new(40, 30)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    for bytes in [&jpeg, &png] {
        let limits = |max_pixels| DecodeLimits {
            max_pixels,
            ..DecodeLimits::default()
        };
        assert!(decode_image_with_limits(bytes, &limits(1200)).is_ok());
        assert!(matches!(
            decode_image_with_limits(bytes, &limits(1199)),
            Err(ImageDecodeError::TooManyPixels {
                width: 40,
                height: 30,
                limit: 1199
            })
        ));
    }
}

#[test]
fn over_cap_file_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    // A sparse file one byte over the cap: refused from its size, nothing read.
    let huge = dir.path().join("huge.jpg");
    fs::File::create(&huge)
        .unwrap()
        .set_len(MAX_IMAGE_FILE_BYTES + 1)
        .unwrap();
    let err = load_image(&huge).unwrap_err();
    assert!(
        matches!(&err, ProcessorError::FileTooLarge { path, limit } if *path == huge && *limit == MAX_IMAGE_FILE_BYTES),
        "{err:?}"
    );
    assert!(err.to_string().contains("huge.jpg"), "{err}");

    // The cap is inclusive: a file of exactly `max_file_bytes` is read and decoded.
    let small = fixture("baseline_420");
    let len = fs::metadata(&small).unwrap().len();
    let limits = |max_file_bytes| DecodeLimits {
        max_file_bytes,
        ..DecodeLimits::default()
    };
    assert!(load_image_with_limits(&small, &limits(len)).is_ok());
    assert!(matches!(
        load_image_with_limits(&small, &limits(len - 1)),
        Err(ProcessorError::FileTooLarge { .. })
    ));
}

#[cfg(unix)]
#[test]
fn devices_are_not_read() {
    // /dev/zero never ends; it is refused before it is opened, with its path.
    let err = load_image("/dev/zero").unwrap_err();
    assert!(
        matches!(&err, ProcessorError::Io { source, .. } if source.kind() == std::io::ErrorKind::InvalidInput),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("/dev/zero") && text.contains("not a regular file"),
        "{text}"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn a_fifo_is_refused_without_waiting_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.jpg");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    // Opening a FIFO blocks until a writer comes, so load in a thread and bound the wait.
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || tx.send(load_image(&path).map(|_| ())).unwrap());
    let result = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("load_image blocked on a FIFO");
    assert!(
        matches!(result, Err(ProcessorError::Io { ref path, .. }) if *path == fifo),
        "{result:?}"
    );
}

#[test]
fn not_an_image_is_an_error() {
    assert!(decode_image(b"").is_err());
    assert!(decode_image(b"<html>not an image</html>").is_err());
    // A JPEG signature and nothing else.
    assert!(decode_image(&[0xFF, 0xD8, 0xFF]).is_err());
}
