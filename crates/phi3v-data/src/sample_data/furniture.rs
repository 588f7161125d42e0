//! The second sample preset: a furniture catalogue whose columns, answer and field types are
//! not Burberry's, so that a task file over other columns has learnable data of its own.
//!
//! Columns (parquet, in this order): `sku` (text, `FRN-00012`: the group of the split),
//! `name` (text: "Large Walnut Table"), `type` (the category: Chair, Table, Sofa, Lamp,
//! Shelf), `room` (text the prompt may mention, unrelated to the picture), `width_cm` (an
//! integer: the piece's width in centimetres, 25 to 240), `price_eur` (a float, not part of
//! `tasks/furniture.toml`'s answer) and `photo` (the picture, relative to the folder).
//!
//! The same rows are also written as conversation records ([`CONVERSATIONS_FILE`], see
//! [`crate::conversations`]): the user turn and the answer of `tasks/furniture.toml`, with
//! `<image>` for the picture and the photo's path relative to the folder, so the two forms
//! train the same thing and their runs compare.
//!
//! As with the Burberry preset, everything the answer asks for is visible: the silhouette
//! says the type, the colour and grain say the finish, and the width in the frame says the
//! size, which with the type fixes `width_cm`.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use image::RgbImage;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;

use super::draw::{Shape, V2};
use crate::DataError;

/// Type of a piece; decides the silhouette.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    Chair,
    Table,
    Sofa,
    Lamp,
    Shelf,
}

impl Piece {
    pub const ALL: [Piece; 5] = [
        Piece::Chair,
        Piece::Table,
        Piece::Sofa,
        Piece::Lamp,
        Piece::Shelf,
    ];

    /// The `type` column (and the last word of the name).
    pub fn word(self) -> &'static str {
        match self {
            Piece::Chair => "Chair",
            Piece::Table => "Table",
            Piece::Sofa => "Sofa",
            Piece::Lamp => "Lamp",
            Piece::Shelf => "Shelf",
        }
    }

    /// Widths in centimetres of the small, medium and large piece.
    fn widths_cm(self) -> [i64; 3] {
        match self {
            Piece::Chair => [45, 55, 65],
            Piece::Table => [90, 140, 200],
            Piece::Sofa => [160, 200, 240],
            Piece::Lamp => [25, 35, 45],
            Piece::Shelf => [60, 90, 120],
        }
    }

    fn finishes(self) -> &'static [Finish] {
        use Finish::*;
        match self {
            Piece::Chair => &[Oak, Walnut, Black, White],
            Piece::Table => &[Oak, Walnut, White, Black],
            Piece::Sofa => &[Grey, Blue, Mustard, Green],
            Piece::Lamp => &[Brass, Black, White],
            Piece::Shelf => &[Oak, Walnut, White],
        }
    }

    fn base_price(self) -> f64 {
        match self {
            Piece::Chair => 120.0,
            Piece::Table => 420.0,
            Piece::Sofa => 990.0,
            Piece::Lamp => 80.0,
            Piece::Shelf => 240.0,
        }
    }
}

/// Surface: a wood with grain, a paint, a fabric or a metal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Oak,
    Walnut,
    White,
    Black,
    Grey,
    Blue,
    Mustard,
    Green,
    Brass,
}

impl Finish {
    fn word(self) -> &'static str {
        match self {
            Finish::Oak => "Oak",
            Finish::Walnut => "Walnut",
            Finish::White => "White",
            Finish::Black => "Black",
            Finish::Grey => "Grey",
            Finish::Blue => "Blue",
            Finish::Mustard => "Mustard",
            Finish::Green => "Green",
            Finish::Brass => "Brass",
        }
    }

    fn rgb(self) -> [f32; 3] {
        let c = |r: u8, g: u8, b: u8| [r as f32 / 255.0, g as f32 / 255.0, b as f32 / 255.0];
        match self {
            Finish::Oak => c(200, 156, 100),
            Finish::Walnut => c(96, 62, 40),
            Finish::White => c(236, 234, 228),
            Finish::Black => c(34, 34, 38),
            Finish::Grey => c(130, 132, 136),
            Finish::Blue => c(40, 70, 140),
            Finish::Mustard => c(212, 160, 40),
            Finish::Green => c(60, 110, 70),
            Finish::Brass => c(190, 150, 60),
        }
    }

    fn is_wood(self) -> bool {
        matches!(self, Finish::Oak | Finish::Walnut)
    }

    fn price_factor(self) -> f64 {
        match self {
            Finish::Walnut | Finish::Brass => 1.4,
            Finish::Oak => 1.2,
            _ => 1.0,
        }
    }
}

const SIZES: [&str; 3] = ["Small", "Medium", "Large"];
const ROOMS: [&str; 4] = ["Living", "Dining", "Bedroom", "Office"];

/// One sample piece of furniture.
#[derive(Debug, Clone, PartialEq)]
pub struct FurnitureSpec {
    pub index: usize,
    pub piece: Piece,
    pub finish: Finish,
    /// 0 small, 1 medium, 2 large.
    pub size: usize,
    pub room: &'static str,
    /// Placement jitter in image fractions.
    pub offset: V2,
    pub grain_seed: f32,
}

impl FurnitureSpec {
    /// Draws the attributes of row `index` from `rng`.
    pub fn random(rng: &mut StdRng, index: usize) -> Self {
        let piece = *Piece::ALL.choose(rng).expect("non-empty");
        Self {
            index,
            piece,
            finish: *piece.finishes().choose(rng).expect("non-empty"),
            size: rng.random_range(0..3),
            room: ROOMS.choose(rng).expect("non-empty"),
            offset: [rng.random_range(-0.03..0.03), rng.random_range(-0.02..0.02)],
            grain_seed: rng.random_range(0.0..100.0),
        }
    }

    pub fn sku(&self) -> String {
        format!("FRN-{:05}", self.index)
    }

    /// "Large Walnut Table".
    pub fn name(&self) -> String {
        format!(
            "{} {} {}",
            SIZES[self.size],
            self.finish.word(),
            self.piece.word()
        )
    }

    pub fn width_cm(&self) -> i64 {
        self.piece.widths_cm()[self.size]
    }

    /// Price in euros: base price of the type, times finish and size, to 9.99 endings.
    pub fn price_eur(&self) -> f64 {
        let raw =
            self.piece.base_price() * self.finish.price_factor() * (0.8 + 0.3 * self.size as f64);
        (raw / 10.0).round() * 10.0 - 0.01
    }

    /// The parts of the picture (back to front) with their colour, centred at (0.5, 0.6).
    fn parts(&self) -> Vec<(Shape, [f32; 3])> {
        let colour = self.finish.rgb();
        let dark = colour.map(|v| v * 0.7);
        let leg = if self.finish.is_wood() || self.piece == Piece::Sofa {
            dark
        } else {
            colour.map(|v| v * 0.85)
        };
        // Half the width in the frame: the size shows as extent.
        let w = 0.18 + 0.09 * self.size as f32;
        let rect = |cx: f32, cy: f32, hw: f32, hh: f32, r: f32| Shape::RoundRect {
            c: [cx, cy],
            half: [hw, hh],
            r,
        };
        let capsule = |a: V2, b: V2, r: f32| Shape::Capsule { a, b, r };
        let floor = 0.82;
        match self.piece {
            Piece::Chair => vec![
                (rect(0.5 + w * 0.8, 0.42, 0.035, 0.2, 0.02), dark),
                (
                    capsule([0.5 - w * 0.8, 0.62], [0.5 - w * 0.8, floor], 0.02),
                    leg,
                ),
                (
                    capsule([0.5 + w * 0.8, 0.62], [0.5 + w * 0.8, floor], 0.02),
                    leg,
                ),
                (rect(0.5, 0.6, w, 0.035, 0.015), colour),
            ],
            Piece::Table => vec![
                (
                    capsule([0.5 - w * 0.85, 0.5], [0.5 - w * 0.85, floor], 0.025),
                    leg,
                ),
                (
                    capsule([0.5 + w * 0.85, 0.5], [0.5 + w * 0.85, floor], 0.025),
                    leg,
                ),
                (rect(0.5, 0.48, w, 0.03, 0.01), colour),
            ],
            Piece::Sofa => vec![
                (rect(0.5, 0.5, w, 0.14, 0.04), dark),
                (rect(0.5, 0.66, w, 0.1, 0.04), colour),
                (rect(0.5 - w, 0.62, 0.05, 0.13, 0.04), colour),
                (rect(0.5 + w, 0.62, 0.05, 0.13, 0.04), colour),
                (
                    capsule([0.5 - w * 0.8, 0.76], [0.5 - w * 0.8, floor], 0.015),
                    [0.2; 3],
                ),
                (
                    capsule([0.5 + w * 0.8, 0.76], [0.5 + w * 0.8, floor], 0.015),
                    [0.2; 3],
                ),
            ],
            Piece::Lamp => vec![
                (capsule([0.5, 0.35], [0.5, floor - 0.02], 0.012), leg),
                (rect(0.5, floor - 0.01, w * 0.45, 0.015, 0.01), leg),
                (
                    Shape::Polygon {
                        points: vec![
                            [0.5 - w * 0.45, 0.2],
                            [0.5 + w * 0.45, 0.2],
                            [0.5 + w * 0.75, 0.4],
                            [0.5 - w * 0.75, 0.4],
                        ],
                        round: 0.005,
                    },
                    colour,
                ),
            ],
            Piece::Shelf => {
                let mut parts = vec![
                    (rect(0.5 - w, 0.5, 0.02, 0.32, 0.005), colour),
                    (rect(0.5 + w, 0.5, 0.02, 0.32, 0.005), colour),
                ];
                for k in 0..4 {
                    let y = 0.2 + 0.2 * k as f32;
                    parts.push((rect(0.5, y, w, 0.015, 0.004), colour));
                }
                parts
            }
        }
    }
}

/// Draws the photo of `spec`, `size` pixels square: a studio backdrop, then each part with
/// anti-aliased edges (coverage from its signed distance), wood with a grain.
pub fn render(spec: &FurnitureSpec, size: u32) -> RgbImage {
    let parts: Vec<(Shape, [f32; 3], (V2, V2))> = spec
        .parts()
        .into_iter()
        .map(|(shape, colour)| {
            let bounds = shape.bounds();
            (shape, colour, bounds)
        })
        .collect();
    let px = 1.0 / size as f32;
    RgbImage::from_fn(size, size, |x, y| {
        let p = [(x as f32 + 0.5) * px, (y as f32 + 0.5) * px];
        let q = [p[0] - spec.offset[0], p[1] - spec.offset[1]];
        let b = if q[1] > 0.83 {
            0.86
        } else {
            0.95 - 0.05 * p[1]
        };
        let mut col = [b, b * 0.99, b * 0.97];
        for (shape, colour, (lo, hi)) in &parts {
            if q[0] < lo[0] - px || q[1] < lo[1] - px || q[0] > hi[0] + px || q[1] > hi[1] + px {
                continue;
            }
            let coverage = (0.5 - shape.sdf(q) / px).clamp(0.0, 1.0);
            if coverage <= 0.0 {
                continue;
            }
            let shade = if spec.finish.is_wood() {
                0.9 + 0.1 * (q[1] * 90.0 + (q[0] * 7.0 + spec.grain_seed).sin() * 3.0).sin()
            } else if spec.finish == Finish::Brass {
                1.0 + 0.25 * (-((q[0] - 0.47) / 0.03).powi(2)).exp()
            } else {
                1.0
            };
            for k in 0..3 {
                col[k] += (colour[k] * shade - col[k]) * coverage;
            }
        }
        image::Rgb(col.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8))
    })
}

/// The arrow schema of the furniture catalogue.
pub(crate) fn schema() -> Schema {
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    Schema::new(vec![
        text("sku"),
        text("name"),
        text("type"),
        text("room"),
        Field::new("width_cm", DataType::Int64, false),
        Field::new("price_eur", DataType::Float64, false),
        text("photo"),
    ])
}

/// Writes the catalogue of `specs` (photos at `photos[i]`) as parquet at `path`, atomically.
pub fn write_catalogue(
    path: &Path,
    specs: &[FurnitureSpec],
    photos: &[String],
) -> Result<(), DataError> {
    phi3v_io::write_atomic(path, |tmp| {
        let parquet_err = |source| DataError::Parquet {
            path: path.to_path_buf(),
            source,
        };
        let schema = Arc::new(schema());
        let strings = |f: &dyn Fn(&FurnitureSpec) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(specs.iter().map(f)))
        };
        let columns: Vec<ArrayRef> = vec![
            strings(&|s| s.sku()),
            strings(&|s| s.name()),
            strings(&|s| s.piece.word().to_string()),
            strings(&|s| s.room.to_string()),
            Arc::new(Int64Array::from_iter_values(
                specs.iter().map(|s| s.width_cm()),
            )),
            Arc::new(Float64Array::from_iter_values(
                specs.iter().map(|s| s.price_eur()),
            )),
            Arc::new(StringArray::from_iter_values(photos.iter())),
        ];
        let batch =
            RecordBatch::try_new(schema.clone(), columns).map_err(|source| DataError::Arrow {
                path: path.to_path_buf(),
                row: 0,
                source,
            })?;
        let file = File::create(tmp).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let mut writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(parquet_err)?;
        writer.write(&batch).map_err(parquet_err)?;
        writer.close().map_err(parquet_err)?;
        Ok(())
    })
}

/// File name of the conversation form of the furniture catalogue, beside the catalogue.
pub const CONVERSATIONS_FILE: &str = "conversations.jsonl";

/// The user turn of a conversation record: `tasks/furniture.toml`'s `[prompt] user` with
/// `<image>` where the picture goes.
fn user_turn(spec: &FurnitureSpec) -> String {
    format!("<image>A piece for the {} room. What is it?", spec.room)
}

/// The assistant turn: `tasks/furniture.toml`'s `[prompt] answer` of the row.
fn answer(spec: &FurnitureSpec) -> String {
    format!(
        "{} | type: {} | width: {} cm",
        spec.name(),
        spec.piece.word(),
        spec.width_cm()
    )
}

/// Writes the conversation records of `specs` (photos at `photos[i]`, relative to the
/// folder of `path`) as JSON lines at `path`, atomically.
pub fn write_conversations(
    path: &Path,
    specs: &[FurnitureSpec],
    photos: &[String],
) -> Result<(), DataError> {
    let mut text = String::new();
    for (spec, photo) in specs.iter().zip(photos) {
        let record = serde_json::json!({
            "messages": [
                {"role": "user", "content": user_turn(spec)},
                {"role": "assistant", "content": answer(spec)},
            ],
            "images": [photo],
        });
        text.push_str(&record.to_string());
        text.push('\n');
    }
    phi3v_io::write_atomic(path, |tmp| {
        std::fs::write(tmp, &text).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_answer_is_a_function_of_what_is_drawn() {
        let mut rng = StdRng::seed_from_u64(1);
        let spec = FurnitureSpec {
            piece: Piece::Table,
            finish: Finish::Walnut,
            ..FurnitureSpec::random(&mut rng, 12)
        };
        let name = spec.name();
        assert!(name.ends_with(spec.piece.word()), "{name}");
        assert!(name.starts_with(SIZES[spec.size]), "{name}");
        assert_eq!(spec.sku(), "FRN-00012");
        // A larger piece covers more of the backdrop than a smaller one of the same kind.
        let covered = |size: usize| {
            let s = FurnitureSpec {
                size,
                offset: [0.0, 0.0],
                ..spec.clone()
            };
            let img = render(&s, 64);
            img.pixels().filter(|p| p.0[0] < 150).count()
        };
        assert!(covered(2) > covered(0), "{} vs {}", covered(2), covered(0));
        let widths = Piece::Table.widths_cm();
        assert!(widths.windows(2).all(|w| w[0] < w[1]));
    }
}
