//! What a sample product is: the visible attributes, and the title, category and price they
//! determine.
//!
//! Everything the answer asks for is a function of what the picture shows, so a model can
//! learn it: the title names size, colour, pattern, material and kind; the category is the
//! kind; the price is a product of per-attribute factors. Only the discount and the gender
//! department are invisible (they are not part of the answer).

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::Rng;

use crate::catalogue::Product;

/// Kind of product; decides the shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Coat,
    Bag,
    Scarf,
    Shirt,
    Shoes,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Coat, Kind::Bag, Kind::Scarf, Kind::Shirt, Kind::Shoes];

    pub fn noun(self) -> &'static str {
        match self {
            Kind::Coat => "Coat",
            Kind::Bag => "Bag",
            Kind::Scarf => "Scarf",
            Kind::Shirt => "Shirt",
            Kind::Shoes => "Shoes",
        }
    }

    /// `category3_code`: the category of the task's answer.
    pub fn category3(self) -> &'static str {
        match self {
            Kind::Coat => "Coats",
            Kind::Bag => "Bags",
            Kind::Scarf => "Scarves",
            Kind::Shirt => "Shirts",
            Kind::Shoes => "Shoes",
        }
    }

    /// `category2_code`.
    pub fn category2(self) -> &'static str {
        match self {
            Kind::Coat | Kind::Shirt => "Clothing",
            Kind::Bag => "Bags",
            Kind::Scarf => "Accessories",
            Kind::Shoes => "Shoes",
        }
    }

    fn base_price(self) -> f64 {
        match self {
            Kind::Coat => 1890.0,
            Kind::Bag => 1450.0,
            Kind::Scarf => 490.0,
            Kind::Shirt => 590.0,
            Kind::Shoes => 750.0,
        }
    }

    fn materials(self) -> &'static [Material] {
        match self {
            Kind::Coat => &[Material::Wool, Material::Cotton, Material::Cashmere],
            Kind::Bag => &[Material::Leather, Material::Canvas],
            Kind::Scarf => &[Material::Cashmere, Material::Wool, Material::Silk],
            Kind::Shirt => &[Material::Cotton, Material::Silk],
            Kind::Shoes => &[Material::Leather, Material::Suede],
        }
    }

    fn patterns(self) -> &'static [Pattern] {
        match self {
            Kind::Shoes => &[Pattern::Plain, Pattern::Check],
            _ => &[Pattern::Plain, Pattern::Check, Pattern::Striped],
        }
    }

    fn sizes(self) -> &'static [Size] {
        match self {
            Kind::Coat => &[Size::Short, Size::Long],
            Kind::Bag => &[Size::Small, Size::Medium, Size::Large],
            _ => &[Size::Standard],
        }
    }
}

/// Surface pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Plain,
    Check,
    Striped,
}

impl Pattern {
    fn word(self) -> Option<&'static str> {
        match self {
            Pattern::Plain => None,
            Pattern::Check => Some("Check"),
            Pattern::Striped => Some("Striped"),
        }
    }

    fn factor(self) -> f64 {
        match self {
            Pattern::Plain => 0.95,
            Pattern::Check => 1.15,
            Pattern::Striped => 1.0,
        }
    }
}

/// Material; visible as surface texture (noise, weave, sheen, highlight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Material {
    Wool,
    Cotton,
    Cashmere,
    Leather,
    Canvas,
    Silk,
    Suede,
}

impl Material {
    fn word(self) -> &'static str {
        match self {
            Material::Wool => "Wool",
            Material::Cotton => "Cotton",
            Material::Cashmere => "Cashmere",
            Material::Leather => "Leather",
            Material::Canvas => "Canvas",
            Material::Silk => "Silk",
            Material::Suede => "Suede",
        }
    }

    fn factor(self) -> f64 {
        match self {
            Material::Wool => 1.0,
            Material::Cotton => 0.85,
            Material::Cashmere => 1.5,
            Material::Leather => 1.3,
            Material::Canvas => 0.9,
            Material::Silk => 1.2,
            Material::Suede => 1.15,
        }
    }
}

/// Size; visible as the product's extent in the frame (bags) or length (coats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Standard,
    Small,
    Medium,
    Large,
    Short,
    Long,
}

impl Size {
    fn word(self) -> Option<&'static str> {
        match self {
            Size::Standard => None,
            Size::Small => Some("Small"),
            Size::Medium => Some("Medium"),
            Size::Large => Some("Large"),
            Size::Short => Some("Short"),
            Size::Long => Some("Long"),
        }
    }

    fn factor(self) -> f64 {
        match self {
            Size::Standard | Size::Medium => 1.0,
            Size::Small => 0.75,
            Size::Large => 1.3,
            Size::Short => 0.85,
            Size::Long => 1.15,
        }
    }
}

/// A named colour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Colour {
    pub name: &'static str,
    pub rgb: [f32; 3],
}

const fn colour(name: &'static str, r: u8, g: u8, b: u8) -> Colour {
    Colour {
        name,
        rgb: [r as f32 / 255.0, g as f32 / 255.0, b as f32 / 255.0],
    }
}

/// The palette: far enough apart to be told from small images.
pub const PALETTE: [Colour; 8] = [
    colour("Beige", 214, 190, 150),
    colour("Camel", 176, 128, 72),
    colour("Black", 32, 32, 34),
    colour("Navy", 30, 42, 84),
    colour("Red", 160, 28, 36),
    colour("Grey", 128, 128, 130),
    colour("Olive", 96, 102, 48),
    colour("Pink", 226, 150, 170),
];

/// Everything about one sample product, including how it is placed in its picture.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductSpec {
    pub kind: Kind,
    pub pattern: Pattern,
    pub material: Material,
    pub size: Size,
    pub colour: Colour,
    /// Placement jitter (fractions of the image side) and scale, so no two pictures of the
    /// same attributes are pixel-identical.
    pub offset: [f32; 2],
    pub scale: f32,
    /// Background brightness jitter.
    pub backdrop: f32,
    /// Seed of the texture noise.
    pub texture_seed: u32,
    pub product_code: i64,
    pub department: &'static str,
    pub discounted: bool,
}

impl ProductSpec {
    /// Draws the attributes of row `index` from `rng`.
    pub fn random(rng: &mut StdRng, index: usize) -> Self {
        let kind = *Kind::ALL.choose(rng).expect("non-empty");
        Self {
            kind,
            pattern: *kind.patterns().choose(rng).expect("non-empty"),
            material: *kind.materials().choose(rng).expect("non-empty"),
            size: *kind.sizes().choose(rng).expect("non-empty"),
            colour: *PALETTE.choose(rng).expect("non-empty"),
            offset: [rng.random_range(-0.03..0.03), rng.random_range(-0.03..0.03)],
            scale: rng.random_range(0.95..1.05),
            backdrop: rng.random_range(-0.03..0.02),
            texture_seed: rng.random(),
            // Unique (16 codes per row) but not consecutive, like real product codes.
            product_code: 80_000_000 + index as i64 * 16 + rng.random_range(0..16),
            department: if rng.random_bool(0.5) { "Women" } else { "Men" },
            discounted: rng.random_bool(0.15),
        }
    }

    /// "Long Beige Check Wool Coat": size, colour, pattern, material, kind, as far as they apply.
    pub fn title(&self) -> String {
        [
            self.size.word(),
            Some(self.colour.name),
            self.pattern.word(),
            Some(self.material.word()),
            Some(self.kind.noun()),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ")
    }

    /// The full price in USD: base price of the kind times material, pattern and size
    /// factors, rounded to 10 dollars.
    pub fn full_price(&self) -> f64 {
        let raw = self.kind.base_price()
            * self.material.factor()
            * self.pattern.factor()
            * self.size.factor();
        (raw / 10.0).round() * 10.0
    }

    /// The catalogue row, with the image at `imageurl`.
    pub fn product(&self, imageurl: String) -> Product {
        let full_price = self.full_price();
        let price = if self.discounted {
            (full_price * 0.7 / 10.0).round() * 10.0
        } else {
            full_price
        };
        let eur = |usd: f64| (usd * 0.92 * 100.0).round() / 100.0;
        let slug = self.title().to_lowercase().replace(' ', "-");
        Product {
            website_name: "BURBERRY".into(),
            competence_date: "2023-11-17".into(),
            country_code: "USA".into(),
            currency_code: "USD".into(),
            brand: "BURBERRY".into(),
            category1_code: self.department.into(),
            category2_code: self.kind.category2().into(),
            category3_code: self.kind.category3().into(),
            product_code: self.product_code,
            title: self.title(),
            itemurl: format!("https://example.com/burberry/{slug}-p{}", self.product_code),
            imageurl,
            full_price,
            price,
            full_price_eur: eur(full_price),
            price_eur: eur(price),
            flg_discount: i64::from(self.discounted),
        }
    }
}
