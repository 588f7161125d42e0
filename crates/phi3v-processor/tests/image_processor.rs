//! Parity of the image processor with the Python reference (PIL + PyTorch).
//!
//! Fixtures: `tests/data/images/*.png` and `tests/data/processor_expected.safetensors`, written
//! by `scripts/make_processor_fixtures.py` (see its header for the command and the key layout).
//!
//! What is checked, per image (portrait, landscape, square, tiny, 10:1 wide, RGBA, gray,
//! palette) and per `num_crops` (1, 4, 16):
//! - `image_size`, `crops`, `num_tokens` and the output shape;
//! - the padded `u8` HD image (PIL's bilinear resize + white padding): a 64-bit FNV-1a hash of
//!   every byte must match, and a subset of rows is stored to compare byte by byte;
//! - `pixel_values` at 1536 sampled positions (half in the global view, half over the crops
//!   and the zero padding), within `TOL`.
//!
//! Also: 40 PIL bilinear resizes of small random images (up, down, one axis, Pillow 13's
//! vertical-first order), byte for byte.
//!
//! And once: a complete `pixel_values` tensor (landscape, `num_crops` 1) and a complete global
//! view (square, `num_crops` 16: 1344x1344 -> 336x336) within `TOL`; the normalisation table exactly (which, with
//! the exact `u8` image, makes every crop value exact); PIL's `convert("RGB")` for gray, LA,
//! palette, RGBA, 1-bit, 16-bit gray and 16-bit RGB files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use phi3v_processor::image_processor::{
    load_image, resize_bilinear_rgb8, stack_pixel_values, to_rgb8, ImageProcessor, ProcessorConfig,
};
use phi3v_processor::{PreprocessorConfig, ProcessorError};
use phi3v_testkit::max_diff as max_abs_diff;
use safetensors::{Dtype, SafeTensors};

/// Absolute tolerance on normalised pixel values: values are O(1) in f32, and the only
/// rounding the reference and we may do differently is in the 16 products of the bicubic sum.
const TOL: f32 = 1e-5;

const PROCESSED: [&str; 8] = [
    "portrait",
    "landscape",
    "square",
    "tiny",
    "wide",
    "rgba",
    "gray",
    "palette",
];

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn image_path(name: &str) -> PathBuf {
    data_dir().join("images").join(format!("{name}.png"))
}

/// The fixture file, decoded into owned typed arrays.
struct Expected {
    tensors: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
}

impl Expected {
    fn load() -> Self {
        let bytes = std::fs::read(data_dir().join("processor_expected.safetensors"))
            .expect("fixture file; regenerate with scripts/make_processor_fixtures.py");
        let st = SafeTensors::deserialize(&bytes).expect("valid safetensors");
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                (
                    name,
                    (view.dtype(), view.shape().to_vec(), view.data().to_vec()),
                )
            })
            .collect();
        Self { tensors }
    }

    fn get(&self, key: &str, dtype: Dtype) -> (&[usize], &[u8]) {
        let (dt, shape, data) = self
            .tensors
            .get(key)
            .unwrap_or_else(|| panic!("fixture has no tensor {key}"));
        assert_eq!(*dt, dtype, "{key}");
        (shape, data)
    }

    fn f32(&self, key: &str) -> (Vec<usize>, Vec<f32>) {
        let (shape, data) = self.get(key, Dtype::F32);
        let v = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (shape.to_vec(), v)
    }

    fn i64(&self, key: &str) -> Vec<i64> {
        let (_, data) = self.get(key, Dtype::I64);
        data.chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    fn u8(&self, key: &str) -> (Vec<usize>, Vec<u8>) {
        let (shape, data) = self.get(key, Dtype::U8);
        (shape.to_vec(), data.to_vec())
    }
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn processor(num_crops: usize) -> ImageProcessor {
    ImageProcessor::new(ProcessorConfig {
        num_crops,
        ..ProcessorConfig::default()
    })
    .unwrap()
}

#[test]
fn normalization_table_matches_torch_exactly() {
    let exp = Expected::load();
    let (shape, table) = exp.f32("norm_table");
    assert_eq!(shape, [3, 256]);
    let p = processor(16);
    for c in 0..3 {
        for v in 0..256 {
            assert_eq!(
                p.normalization_table()[c][v].to_bits(),
                table[c * 256 + v].to_bits(),
                "channel {c} value {v}"
            );
        }
    }
}

#[test]
fn rgb_conversion_matches_pil() {
    let exp = Expected::load();
    for name in [
        "rgba", "gray", "palette", "gray16", "la", "bilevel", "rgb16",
    ] {
        let (shape, want) = exp.u8(&format!("convert.{name}"));
        let img = load_image(image_path(name)).unwrap();
        let rgb = to_rgb8(&img).unwrap();
        assert_eq!(
            [rgb.height() as usize, rgb.width() as usize, 3],
            shape[..],
            "{name}"
        );
        let mismatches = rgb
            .as_raw()
            .iter()
            .zip(&want)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            mismatches,
            0,
            "{name} ({:?}): bytes differing from PIL",
            img.color()
        );
    }
}

#[test]
fn bilinear_resize_matches_pil_exactly() {
    let exp = Expected::load();
    let mut n = 0;
    while exp.tensors.contains_key(&format!("resize.{n}.src")) {
        let (s, src) = exp.u8(&format!("resize.{n}.src"));
        let (o, want) = exp.u8(&format!("resize.{n}.out"));
        let got = resize_bilinear_rgb8(&src, s[1], s[0], o[1], o[0]);
        let bad = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(got.len(), want.len());
        assert_eq!(bad, 0, "case {n}: {}x{} -> {}x{}", s[1], s[0], o[1], o[0]);
        n += 1;
    }
    assert!(n >= 40, "only {n} resize cases in the fixture");
}

#[test]
fn rgba_alpha_is_dropped_not_composited() {
    let img = image::DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
        3,
        2,
        image::Rgba([10, 20, 30, 0]),
    ));
    let rgb = to_rgb8(&img).unwrap();
    assert!(rgb.pixels().all(|p| p.0 == [10, 20, 30]));
}

#[test]
fn sixteen_bit_rules() {
    // PIL: I;16 -> RGB clips at 255; 16-bit colour keeps the high byte.
    let g =
        image::ImageBuffer::<image::Luma<u16>, _>::from_raw(4, 1, vec![0, 200, 255, 256]).unwrap();
    let rgb = to_rgb8(&image::DynamicImage::ImageLuma16(g)).unwrap();
    assert_eq!(
        rgb.as_raw(),
        &[0, 0, 0, 200, 200, 200, 255, 255, 255, 255, 255, 255]
    );
    let c = image::ImageBuffer::<image::Rgb<u16>, _>::from_raw(1, 1, vec![0x12ff, 0x00ff, 0xffff])
        .unwrap();
    let rgb = to_rgb8(&image::DynamicImage::ImageRgb16(c)).unwrap();
    assert_eq!(rgb.as_raw(), &[0x12, 0x00, 0xff]);
}

#[test]
fn hd_images_and_pixel_values_match_reference() {
    let exp = Expected::load();
    let mut worst_sample = 0f32;
    let mut report = Vec::new();
    for name in PROCESSED {
        let img = load_image(image_path(name)).unwrap();
        let rgb = to_rgb8(&img).unwrap();
        for nc in [1usize, 4, 16] {
            let key = format!("{name}.nc{nc}");
            let p = processor(nc);
            let out = p.process(&img).unwrap();

            let size = exp.i64(&format!("{key}.image_size"));
            let crops = exp.i64(&format!("{key}.crops"));
            let tokens = exp.i64(&format!("{key}.num_tokens"));
            assert_eq!(
                out.image_size.map(|v| v as i64)[..],
                size[..],
                "{key} image_size"
            );
            assert_eq!(
                [out.crops.0 as i64, out.crops.1 as i64][..],
                crops[..],
                "{key} crops"
            );
            assert_eq!(out.num_tokens as i64, tokens[0], "{key} num_tokens");
            assert_eq!(out.shape, [nc + 1, 3, 336, 336], "{key} shape");
            assert_eq!(out.pixel_values.len(), (nc + 1) * 3 * 336 * 336);

            // u8 HD image: exact.
            let hd = p.hd_image(&rgb).unwrap();
            assert_eq!(
                [hd.height() as usize, hd.width() as usize],
                out.image_size,
                "{key} hd size"
            );
            let rows = exp.i64(&format!("{key}.hd_row_index"));
            let (rshape, rdata) = exp.u8(&format!("{key}.hd_rows"));
            let w = hd.width() as usize;
            assert_eq!(rshape, [rows.len(), w, 3], "{key} hd_rows shape");
            let mut max_u8_err = 0i32;
            for (r, &y) in rows.iter().enumerate() {
                let ours = &hd.as_raw()[y as usize * w * 3..(y as usize + 1) * w * 3];
                let theirs = &rdata[r * w * 3..(r + 1) * w * 3];
                for (a, b) in ours.iter().zip(theirs) {
                    max_u8_err = max_u8_err.max((*a as i32 - *b as i32).abs());
                }
            }
            assert_eq!(max_u8_err, 0, "{key}: stored HD rows differ from PIL");
            let want_hash = exp.i64(&format!("{key}.hd_fnv1a64"))[0] as u64;
            assert_eq!(
                fnv1a64(hd.as_raw()),
                want_hash,
                "{key}: HD image hash differs from PIL"
            );

            // Sampled pixel values (global view, crops, zero padding).
            let idx = exp.i64(&format!("{key}.pv_index"));
            let (_, vals) = exp.f32(&format!("{key}.pv_values"));
            let ours: Vec<f32> = idx.iter().map(|&i| out.pixel_values[i as usize]).collect();
            let err = max_abs_diff(&ours, &vals);
            worst_sample = worst_sample.max(err);
            report.push(format!("{key}: sampled max |err| {err:e}"));
            assert!(
                err <= TOL,
                "{key}: sampled pixel_values max |err| {err} > {TOL}"
            );

            // Padding tiles are exactly zero; real tiles are not.
            let real = out.num_real_tiles();
            assert!(
                (real..=nc).all(|t| out.tile(t).iter().all(|&v| v == 0.0)),
                "{key}"
            );
        }
    }
    eprintln!("{}", report.join("\n"));
    eprintln!("worst sampled |err| over all cases: {worst_sample:e}");
}

#[test]
fn full_tensors_match_reference() {
    let exp = Expected::load();

    let img = load_image(image_path("landscape")).unwrap();
    let out = processor(1).process(&img).unwrap();
    let (shape, want) = exp.f32("full.landscape.nc1.pixel_values");
    assert_eq!(shape, out.shape.to_vec());
    let err_global = max_abs_diff(out.tile(0), &want[..3 * 336 * 336]);
    let err_crop = max_abs_diff(out.tile(1), &want[3 * 336 * 336..]);
    eprintln!("landscape nc1: global max |err| {err_global:e}, crop max |err| {err_crop:e}");
    assert!(err_global <= TOL, "global view max |err| {err_global}");
    assert_eq!(err_crop, 0.0, "crop values must be exact");

    // 1344x1344 -> 336x336: every output value is a 16-tap bicubic sum.
    let img = load_image(image_path("square")).unwrap();
    let out = processor(16).process(&img).unwrap();
    let (shape, want) = exp.f32("full.square.nc16.global");
    assert_eq!(shape, [3, 336, 336]);
    let err = max_abs_diff(out.tile(0), &want);
    let exact = out
        .tile(0)
        .iter()
        .zip(&want)
        .filter(|(a, b)| a == b)
        .count();
    eprintln!(
        "square nc16 global view: max |err| {err:e}, {exact}/{} values bit-identical",
        want.len()
    );
    assert!(err <= TOL, "global view max |err| {err}");
}

#[test]
fn token_counts() {
    let c = ProcessorConfig::default();
    assert_eq!(c.tokens_per_crop(), 144);
    assert_eq!(c.num_image_tokens(4, 4), 2509);
    assert_eq!(c.num_image_tokens(1, 1), 313);
    // (h*w + 1) * 144 + 1 + (h + 1) * 12
    assert_eq!(c.num_image_tokens(2, 3), 7 * 144 + 1 + 3 * 12);
    assert_eq!(c.num_image_tokens(1, 10), 11 * 144 + 1 + 2 * 12);
    assert_eq!(c.num_image_tokens(10, 1), 11 * 144 + 1 + 11 * 12);
    assert_eq!(c.num_image_tokens_for_size(1000, 1000).unwrap(), 2509);
    assert_eq!(
        c.num_image_tokens_for_size(40, 30).unwrap(),
        (12 + 1) * 144 + 1 + 4 * 12
    );
    let one = ProcessorConfig {
        num_crops: 1,
        ..ProcessorConfig::default()
    };
    assert_eq!(one.num_image_tokens_for_size(1234, 77).unwrap(), 313);
    // tiny test model: crop 56, patch 14 -> 2x2 merged grid, T = 4
    let tiny = ProcessorConfig {
        crop_size: 56,
        ..ProcessorConfig::default()
    };
    assert_eq!(tiny.tokens_per_crop(), 4);
    assert_eq!(tiny.num_image_tokens(4, 4), 17 * 4 + 1 + 5 * 2);
}

#[test]
fn tiny_crop_size_shapes() {
    let cfg = ProcessorConfig {
        num_crops: 4,
        crop_size: 56,
        ..ProcessorConfig::default()
    };
    let p = ImageProcessor::new(cfg).unwrap();
    let img =
        image::RgbImage::from_fn(90, 50, |x, y| image::Rgb([x as u8, y as u8, (x + y) as u8]));
    let out = p.process_rgb(&img).unwrap();
    // ratio 1.8: scale 2 (2 * ceil(2 / 1.8) = 4 <= 4), new 112 x 62 -> padded 112 x 112
    assert_eq!(out.image_size, [112, 112]);
    assert_eq!(out.crops, (2, 2));
    assert_eq!(out.shape, [5, 3, 56, 56]);
    assert_eq!(out.pixel_values.len(), 5 * 3 * 56 * 56);
    assert_eq!(out.num_tokens, 5 * 4 + 1 + 3 * 2);
}

#[test]
fn batch_matches_single_and_stacks() {
    let p = processor(4);
    let images: Vec<_> = ["portrait", "wide", "rgba"]
        .iter()
        .map(|n| load_image(image_path(n)).unwrap())
        .collect();
    let batch = p.process_batch(&images).unwrap();
    for (im, out) in images.iter().zip(&batch) {
        assert_eq!(&p.process(im).unwrap(), out);
    }
    let (stacked, shape) = stack_pixel_values(&batch);
    assert_eq!(shape, [3, 5, 3, 336, 336]);
    assert_eq!(stacked.len(), shape.iter().product::<usize>());

    let paths: Vec<_> = ["portrait", "wide"].iter().map(|n| image_path(n)).collect();
    let from_paths = p.process_paths(&paths).unwrap();
    assert_eq!(from_paths[1], batch[1]);
}

#[test]
fn errors_name_the_culprit() {
    let p = processor(16);
    let missing = data_dir().join("images/does_not_exist.png");
    let err = p.process_path(&missing).unwrap_err();
    assert!(matches!(err, ProcessorError::Io { .. }));
    assert!(err.to_string().contains("does_not_exist.png"), "{err}");

    let not_an_image = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let err = p.process_path(&not_an_image).unwrap_err();
    assert!(err.to_string().contains("Cargo.toml"), "{err}");

    let err = p
        .process_rgb(&image::RgbImage::new(100_000, 1))
        .unwrap_err();
    assert!(err.to_string().contains("100000x1"), "{err}");

    let err = p.process_rgb_bytes(vec![0; 10], 2, 2).unwrap_err();
    assert!(
        matches!(
            err,
            ProcessorError::BufferSize {
                expected: 12,
                actual: 10,
                ..
            }
        ),
        "{err}"
    );

    let images = vec![
        image::DynamicImage::new_rgb8(10, 10),
        image::DynamicImage::new_rgb8(0, 5),
    ];
    let err = p.process_batch(&images).unwrap_err();
    assert!(
        matches!(err, ProcessorError::InBatch { index: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("0x5"), "{err}");

    let bad = ProcessorConfig {
        crop_size: 50,
        ..ProcessorConfig::default()
    };
    assert!(matches!(
        ImageProcessor::new(bad),
        Err(ProcessorError::InvalidConfig(_))
    ));
}

#[test]
fn config_reads_hf_preprocessor_config() {
    // The released model's preprocessor_config.json (unknown keys are ignored).
    let json = r#"{
        "do_convert_rgb": true,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "Phi3VImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "num_crops": 16,
        "num_img_tokens": 144,
        "processor_class": "Phi3VProcessor"
    }"#;
    // The crop and patch size come from the vision tower (336 and 14 in the released model).
    let read = |json: &str| {
        ProcessorConfig::from_preprocessor(
            &PreprocessorConfig::from_json_str(json).unwrap(),
            336,
            14,
        )
    };
    let cfg = read(json);
    assert_eq!(cfg, ProcessorConfig::default());
    let cfg = read(r#"{"num_crops": 4}"#);
    assert_eq!(cfg.num_crops, 4);
    assert_eq!(cfg.crop_size, 336);
}
