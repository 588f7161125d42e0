//! Collation: padding sides, masks, positions, labels and the real-tile pixel layout.
//!
//! Images are made by the real image processor with 56-pixel crops (14-pixel patches: 4 tokens
//! per crop), so the token counts and tile layouts are the processor's own while staying small.

use std::path::PathBuf;
use std::sync::OnceLock;

use image::{Rgb, RgbImage};
use phi3v_processor::batch::{collate, collate_generation, collate_training, Padding, SampleRef};
use phi3v_processor::image_processor::{ImageProcessor, ProcessedImage, ProcessorConfig};
use phi3v_processor::prompt::{generation_prompt, RenderedPrompt};
use phi3v_processor::sample::{
    generation_example, training_example, GenerationExample, IGNORE_INDEX,
};
use phi3v_processor::tokenize::{Phi3Tokenizer, PAD_ID};
use phi3v_processor::ProcessorError;

const S: usize = 56;

fn tokenizer() -> &'static Phi3Tokenizer {
    static TOKENIZER: OnceLock<Phi3Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let path =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tokenizer/tokenizer.json");
        Phi3Tokenizer::from_file(path).unwrap()
    })
}

fn processor(num_crops: usize) -> ImageProcessor {
    ImageProcessor::new(ProcessorConfig {
        num_crops,
        crop_size: S,
        ..ProcessorConfig::default()
    })
    .unwrap()
}

/// A `w x h` image of one colour.
fn image(num_crops: usize, w: u32, h: u32, shade: u8) -> ProcessedImage {
    let rgb = RgbImage::from_pixel(w, h, Rgb([shade, 255 - shade, shade / 2]));
    processor(num_crops).process_rgb(&rgb).unwrap()
}

fn rendered(user: &str, answer: &str) -> RenderedPrompt {
    RenderedPrompt::new(generation_prompt(None, user), answer)
}

#[test]
fn training_batch_pads_right() {
    // Square 4x4 crops: (16 + 1) * 4 + 1 + 5 * 2 = 79 tokens; wide 1x2: 3*4 + 1 + 2*2 = 17.
    let square = image(16, 200, 200, 10);
    let wide = image(4, 300, 150, 200);
    assert_eq!((square.crops, square.num_tokens), ((4, 4), 79));
    assert_eq!((wide.crops, wide.num_tokens), ((1, 2), 17));

    let tok = tokenizer();
    let a = training_example(
        tok,
        "a",
        &rendered(
            "<|image_1|>What is shown in this image?",
            "Product: Check Cotton Shirt",
        ),
        &[square.num_tokens],
        None,
    )
    .unwrap();
    let b = training_example(
        tok,
        "b",
        &rendered("<|image_1|>Name?", "Scarf"),
        &[wide.num_tokens],
        None,
    )
    .unwrap();
    assert!(a.len() > b.len());

    let images_a = [square.clone()];
    let images_b = [wide.clone()];
    let batch = collate_training(&[
        SampleRef::training(&a, &images_a),
        SampleRef::training(&b, &images_b),
    ])
    .unwrap();
    let t = a.len();
    assert_eq!(batch.ids_shape(), [2, t]);
    assert_eq!(batch.padding, Padding::Right);

    // Row 0: unpadded.
    assert_eq!(batch.input_ids_row(0), a.input_ids.as_slice());
    assert!(batch.attention_mask[..t].iter().all(|&m| m == 1));
    let labels = batch.labels.as_ref().unwrap();
    assert_eq!(&labels[..t], a.labels.as_slice());
    assert_eq!(batch.position_ids[..t], (0..t as i64).collect::<Vec<_>>());

    // Row 1: its ids, then padding on the right.
    let n = b.len();
    assert_eq!(&batch.input_ids[t..t + n], b.input_ids.as_slice());
    assert!(batch.input_ids[t + n..].iter().all(|&id| id == PAD_ID));
    assert!(batch.attention_mask[t..t + n].iter().all(|&m| m == 1));
    assert!(batch.attention_mask[t + n..].iter().all(|&m| m == 0));
    assert_eq!(&labels[t..t + n], b.labels.as_slice());
    assert!(labels[t + n..].iter().all(|&l| l == IGNORE_INDEX));
    assert_eq!(
        batch.position_ids[t..t + n],
        (0..n as i64).collect::<Vec<_>>()
    );
    assert!(batch.position_ids[t + n..].iter().all(|&p| p == 1));

    // Images: only the real tiles, sample order.
    assert_eq!(batch.image_grids, vec![(4, 4), (1, 2)]);
    assert_eq!(batch.image_sizes, vec![[4 * S, 4 * S], [S, 2 * S]]);
    assert_eq!(batch.num_img_tokens, vec![79, 17]);
    assert_eq!(batch.images_per_sample, vec![1, 1]);
    assert_eq!(batch.num_tiles, 17 + 3);
    assert_eq!(batch.tile_size, S);
    assert_eq!(batch.pixel_values_shape(), [20, 3, S, S]);
    assert_eq!(batch.pixel_values.len(), 20 * 3 * S * S);
    assert_eq!(batch.tile_ranges(), vec![0..17, 17..20]);
    assert_eq!(batch.sample_images(1), 1..2);
    let tile = 3 * S * S;
    assert_eq!(
        &batch.pixel_values[..17 * tile],
        &square.pixel_values[..17 * tile]
    );
    assert_eq!(
        &batch.pixel_values[17 * tile..],
        &wide.pixel_values[..3 * tile]
    );
}

#[test]
fn generation_batch_pads_left() {
    let one = image(4, 120, 100, 50);
    let two = [image(4, 100, 260, 90), image(1, 80, 80, 30)];
    let tok = tokenizer();
    let short = generation_example(
        tok,
        "short",
        &generation_prompt(None, "<|image_1|>Hi"),
        &[one.num_tokens],
        None,
    )
    .unwrap();
    let long = generation_example(
        tok,
        "long",
        &generation_prompt(
            None,
            "<|image_1|>\n<|image_2|>\nWhich of these two products is the scarf?",
        ),
        &[two[0].num_tokens, two[1].num_tokens],
        None,
    )
    .unwrap();
    let images_one = [one.clone()];
    let batch = collate_generation(&[
        SampleRef::generation(&short, &images_one),
        SampleRef::generation(&long, &two),
    ])
    .unwrap();
    let t = long.input_ids.len();
    let n = short.input_ids.len();
    let pad = t - n;
    assert_eq!(batch.padding, Padding::Left);
    assert!(batch.labels.is_none());
    assert_eq!(batch.ids_shape(), [2, t]);

    // Row 0: padding first, then the prompt ending at the last column.
    assert!(batch.input_ids[..pad].iter().all(|&id| id == PAD_ID));
    assert_eq!(&batch.input_ids[pad..t], short.input_ids.as_slice());
    assert_eq!(batch.input_ids[t - 1], 32001);
    assert!(batch.attention_mask[..pad].iter().all(|&m| m == 0));
    assert!(batch.attention_mask[pad..t].iter().all(|&m| m == 1));
    // Positions restart at 0 on the first real token; padding gets 1 (reference generate()).
    assert!(batch.position_ids[..pad].iter().all(|&p| p == 1));
    assert_eq!(
        batch.position_ids[pad..t],
        (0..n as i64).collect::<Vec<_>>()
    );

    // Row 1: full.
    assert_eq!(batch.input_ids_row(1), long.input_ids.as_slice());
    assert_eq!(batch.position_ids[t..], (0..t as i64).collect::<Vec<_>>());

    // Three images, in sample then image-id order.
    assert_eq!(batch.images_per_sample, vec![1, 2]);
    assert_eq!(batch.sample_images(1), 1..3);
    assert_eq!(
        batch.image_grids,
        vec![one.crops, two[0].crops, two[1].crops]
    );
    let tiles: Vec<usize> = [&one, &two[0], &two[1]]
        .iter()
        .map(|im| im.crops.0 * im.crops.1 + 1)
        .collect();
    assert_eq!(batch.num_tiles, tiles.iter().sum::<usize>());
    let ranges = batch.tile_ranges();
    let tile = 3 * S * S;
    for (im, r) in [&one, &two[0], &two[1]].iter().zip(&ranges) {
        assert_eq!(r.len(), im.num_real_tiles());
        assert_eq!(
            &batch.pixel_values[r.start * tile..r.end * tile],
            &im.pixel_values[..r.len() * tile]
        );
    }

    // The training collator would refuse these (no labels); the generic one pads as asked.
    assert!(matches!(
        collate_training(&[SampleRef::generation(&short, &images_one)]),
        Err(ProcessorError::InvalidSample { sample: 0, .. })
    ));
    let right = collate(
        &[SampleRef::generation(&short, &images_one)],
        Padding::Right,
        PAD_ID,
    )
    .unwrap();
    assert_eq!(right.input_ids, short.input_ids);
}

#[test]
fn text_only_batch() {
    let a = GenerationExample {
        input_ids: vec![1, 32010, 15043, 32007, 32001],
        num_img_tokens: vec![],
    };
    let b = GenerationExample {
        input_ids: vec![1, 32010, 32007, 32001],
        num_img_tokens: vec![],
    };
    let batch = collate_generation(&[
        SampleRef::generation(&a, &[]),
        SampleRef::generation(&b, &[]),
    ])
    .unwrap();
    assert_eq!(
        batch.input_ids,
        vec![1, 32010, 15043, 32007, 32001, PAD_ID, 1, 32010, 32007, 32001]
    );
    assert_eq!(batch.attention_mask, vec![1, 1, 1, 1, 1, 0, 1, 1, 1, 1]);
    assert_eq!(batch.position_ids, vec![0, 1, 2, 3, 4, 1, 0, 1, 2, 3]);
    assert_eq!(batch.num_tiles, 0);
    assert!(batch.pixel_values.is_empty());
    assert_eq!(batch.pixel_values_shape(), [0, 3, 0, 0]);
}

#[test]
fn collate_errors() {
    assert!(matches!(
        collate_training(&[]),
        Err(ProcessorError::EmptyBatch)
    ));

    let im = image(4, 120, 100, 50);
    let ex = generation_example(
        tokenizer(),
        "x",
        &generation_prompt(None, "<|image_1|>Hi"),
        &[im.num_tokens],
        None,
    )
    .unwrap();

    // Placeholders that do not match the image given with them.
    let other = image(16, 200, 200, 10);
    assert_ne!(other.num_tokens, im.num_tokens);
    let images = [other];
    let err = collate_generation(&[SampleRef::generation(&ex, &images)]).unwrap_err();
    assert!(
        matches!(&err, ProcessorError::InvalidSample { sample: 0, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("tokens"), "{err}");

    // An image without placeholders, and placeholders without an image.
    let two = [im.clone(), im.clone()];
    let err = collate_generation(&[SampleRef::generation(&ex, &two)]).unwrap_err();
    assert!(
        err.to_string().contains("image 2 has no placeholders"),
        "{err}"
    );
    let err = collate_generation(&[SampleRef::generation(&ex, &[])]).unwrap_err();
    assert!(err.to_string().contains("has 0 image(s)"), "{err}");

    // Tiles of another size in the same batch.
    let big = ImageProcessor::new(ProcessorConfig {
        num_crops: 4,
        crop_size: 84,
        ..ProcessorConfig::default()
    })
    .unwrap()
    .process_rgb(&RgbImage::from_pixel(120, 100, Rgb([1, 2, 3])))
    .unwrap();
    let ex_big = generation_example(
        tokenizer(),
        "y",
        &generation_prompt(None, "<|image_1|>Hi"),
        &[big.num_tokens],
        None,
    )
    .unwrap();
    let (small_images, big_images) = ([im.clone()], [big]);
    let err = collate_generation(&[
        SampleRef::generation(&ex, &small_images),
        SampleRef::generation(&ex_big, &big_images),
    ])
    .unwrap_err();
    assert!(
        matches!(err, ProcessorError::InvalidSample { sample: 1, .. }),
        "{err}"
    );

    // Labels of the wrong length; labels on some samples only.
    let tr = training_example(
        tokenizer(),
        "t",
        &rendered("<|image_1|>Hi", "Shirt"),
        &[im.num_tokens],
        None,
    )
    .unwrap();
    let short_labels = &tr.labels[1..];
    let bad = SampleRef {
        input_ids: &tr.input_ids,
        labels: Some(short_labels),
        images: &small_images,
    };
    assert!(matches!(
        collate_training(&[bad]),
        Err(ProcessorError::InvalidSample { sample: 0, .. })
    ));
    let err = collate(
        &[
            SampleRef::training(&tr, &small_images),
            SampleRef::generation(&ex, &small_images),
        ],
        Padding::Right,
        PAD_ID,
    )
    .unwrap_err();
    assert!(
        matches!(err, ProcessorError::InvalidSample { sample: 1, .. }),
        "{err}"
    );
}
