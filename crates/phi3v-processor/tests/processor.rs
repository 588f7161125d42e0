//! `Processor`: a prompt and its images to one unpadded batch, the same ids and tiles as the
//! parts give one by one.

use std::path::PathBuf;

use image::{DynamicImage, Rgb, RgbImage};
use phi3v_processor::image_processor::{ImageProcessor, ProcessorConfig};
use phi3v_processor::prompt::generation_prompt;
use phi3v_processor::tokenize::Phi3Tokenizer;
use phi3v_processor::{Processor, ProcessorError};

fn tokenizer() -> Phi3Tokenizer {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tokenizer/tokenizer.json");
    Phi3Tokenizer::from_file(path).unwrap()
}

fn images() -> ImageProcessor {
    ImageProcessor::new(ProcessorConfig {
        num_crops: 4,
        crop_size: 56,
        ..ProcessorConfig::default()
    })
    .unwrap()
}

#[test]
fn inputs_are_the_ids_and_the_real_tiles() {
    let processor = Processor::new(tokenizer(), Some(images()));
    // A landscape and a portrait image: different crop grids.
    let pictures = [
        DynamicImage::ImageRgb8(RgbImage::from_pixel(150, 100, Rgb([200, 10, 30]))),
        DynamicImage::ImageRgb8(RgbImage::from_pixel(60, 200, Rgb([5, 90, 250]))),
    ];
    let text = generation_prompt(None, "<|image_1|>and<|image_2|>: which is red?");
    let batch = processor.process(&text, &pictures).unwrap();

    let processed = images().process_batch(&pictures).unwrap();
    let counts: Vec<usize> = processed.iter().map(|p| p.num_tokens).collect();
    let ids = tokenizer().encode_prompt(&text, &counts).unwrap();
    assert_eq!(batch.batch_size, 1);
    assert_eq!(batch.input_ids, ids);
    assert!(batch.attention_mask.iter().all(|&m| m == 1));
    let grids: Vec<(usize, usize)> = processed.iter().map(|p| p.crops).collect();
    assert_eq!(batch.image_grids, grids);
    let mut tiles = Vec::new();
    for p in &processed {
        for t in 0..p.num_real_tiles() {
            tiles.extend_from_slice(p.tile(t));
        }
    }
    assert_eq!(batch.num_tiles, tiles.len() / (3 * 56 * 56));
    assert_eq!(batch.pixel_values, tiles);
    assert_eq!(batch.pixel_values_shape(), [batch.num_tiles, 3, 56, 56]);
}

#[test]
fn text_only_prompts_and_models() {
    let text = generation_prompt(None, "hello");
    let text_only = Processor::new(tokenizer(), None);
    let batch = text_only.process(&text, &[]).unwrap();
    assert_eq!(
        batch.input_ids,
        tokenizer().encode_prompt(&text, &[]).unwrap()
    );
    assert_eq!((batch.num_tiles, batch.tile_size), (0, 0));

    let picture = DynamicImage::new_rgb8(10, 10);
    let err = text_only.process(&text, &[picture]).unwrap_err();
    assert!(
        matches!(err, ProcessorError::NoImageProcessor { images: 1 }),
        "{err}"
    );
    let err = text_only
        .process_paths(&text, &["/no/such/picture.png"])
        .unwrap_err();
    assert!(err.to_string().contains("text-only"), "{err}");

    // A tag without its image is the tokenizer's error, as before.
    let with_images = Processor::new(tokenizer(), Some(images()));
    let err = with_images
        .process(&generation_prompt(None, "<|image_1|>?"), &[])
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProcessorError::ImageCountMismatch { tags: 1, images: 0 }
        ),
        "{err}"
    );
    let err = with_images
        .process_paths(&text, &["/no/such/picture.png"])
        .unwrap_err();
    assert!(err.to_string().contains("/no/such/picture.png"), "{err}");
}
