//! The dataset builder decodes images through the input processor's decoder: the decoding
//! check drops what PIL refuses (truncated, corrupt JPEGs) and what claims too many pixels,
//! and a loaded row decodes to the same pixels as the processor's `load_image` (PIL's).
//!
//! Fixtures: the processor's JPEG fixtures (`crates/phi3v-processor/tests/data/jpeg/`, written
//! by `scripts/make_jpeg_fixtures.py`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use phi3v_data::images::{check_decodes, ImageData, ReadyImage};
use phi3v_data::DataError;
use phi3v_processor::image_processor::{load_image, to_rgb8};
use phi3v_processor::{ImageDecodeError, ProcessorError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../phi3v-processor/tests/data/jpeg")
        .join(format!("{name}.jpg"))
}

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

#[test]
fn check_decodes_gives_the_size_of_good_jpegs() {
    assert_eq!(check_decodes(&bytes("baseline_420")).unwrap(), (40, 30));
    assert_eq!(check_decodes(&bytes("odd_33x17_420")).unwrap(), (33, 17));
    // Arithmetic coding, which the `image` crate's JPEG decoder refuses and PIL decodes.
    assert_eq!(check_decodes(&bytes("arithmetic_420")).unwrap(), (40, 30));
}

#[test]
fn check_decodes_refuses_damaged_jpegs() {
    for name in [
        "truncated",
        "truncated_no_eoi",
        "corrupt_marker",
        "corrupt_eoi_in_scan",
    ] {
        let err = check_decodes(&bytes(name)).expect_err(name);
        assert!(
            matches!(
                err,
                ImageDecodeError::Jpeg { .. } | ImageDecodeError::JpegWarning { .. }
            ),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn check_decodes_refuses_a_decompression_bomb() {
    // The 40x30 file with a frame header claiming 60000x60000.
    let mut bomb = bytes("baseline_420");
    let sof = bomb.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
    bomb[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
    assert!(matches!(
        check_decodes(&bomb),
        Err(ImageDecodeError::TooManyPixels {
            width: 60_000,
            height: 60_000,
            ..
        })
    ));
}

#[test]
fn ready_images_decode_to_the_processors_pixels() {
    let expected = to_rgb8(&load_image(fixture("baseline_420")).unwrap()).unwrap();
    let from_file = ReadyImage {
        data: ImageData::File(fixture("baseline_420")),
        width: 40,
        height: 30,
    };
    let embedded = ReadyImage {
        data: ImageData::Bytes(Arc::from(bytes("baseline_420"))),
        width: 40,
        height: 30,
    };
    for image in [from_file, embedded] {
        let decoded = to_rgb8(&image.decode().unwrap()).unwrap();
        assert_eq!(decoded.as_raw(), expected.as_raw(), "{:?}", image.data);
    }
}

#[test]
fn ready_image_errors_name_the_file() {
    let file = ReadyImage {
        data: ImageData::File(fixture("truncated")),
        width: 40,
        height: 30,
    };
    let err = file.decode().unwrap_err();
    assert!(
        matches!(
            &err,
            DataError::Processor(ProcessorError::ImageDecode { path, .. }) if *path == fixture("truncated")
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("truncated.jpg"), "{err}");

    let embedded = ReadyImage {
        data: ImageData::Bytes(Arc::from(bytes("corrupt_marker"))),
        width: 40,
        height: 30,
    };
    assert!(matches!(
        embedded.decode(),
        Err(DataError::ImageDecode { .. })
    ));
}
