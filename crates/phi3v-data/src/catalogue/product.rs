//! The catalogue row of the Burberry task: 17 typed columns.

use serde::{Deserialize, Serialize};

/// The type of a catalogue column, as the Burberry parquet file stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColumnType {
    /// UTF-8 string.
    Utf8,
    /// 64-bit signed integer.
    Int64,
    /// 64-bit float.
    Float64,
}

/// The 17 columns of `DBQ/Burberry.Product.prices.United.States`, in file order, with their
/// types. The sample-data generator writes exactly this schema, and the readers fill a
/// [`Product`] from any subset of it.
pub const BURBERRY_SCHEMA: [(&str, ColumnType); 17] = [
    ("website_name", ColumnType::Utf8),
    ("competence_date", ColumnType::Utf8),
    ("country_code", ColumnType::Utf8),
    ("currency_code", ColumnType::Utf8),
    ("brand", ColumnType::Utf8),
    ("category1_code", ColumnType::Utf8),
    ("category2_code", ColumnType::Utf8),
    ("category3_code", ColumnType::Utf8),
    ("product_code", ColumnType::Int64),
    ("title", ColumnType::Utf8),
    ("itemurl", ColumnType::Utf8),
    ("imageurl", ColumnType::Utf8),
    ("full_price", ColumnType::Float64),
    ("price", ColumnType::Float64),
    ("full_price_eur", ColumnType::Float64),
    ("price_eur", ColumnType::Float64),
    ("flg_discount", ColumnType::Int64),
];

/// One product of the catalogue: the 17 columns of the Burberry US dataset.
///
/// The rest of the pipeline reads the task's fields from here: `title`, `category3_code` and
/// `full_price` make the answer, `product_code` identifies the product (deduplication, the
/// train/validation split), `imageurl` says where the picture came from. For a catalogue with
/// other column names, the [`ColumnMapping`](super::ColumnMapping) routes its columns into
/// these fields; columns the file lacks keep their default (empty string, 0, 0.0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// Shop the row was scraped from ("BURBERRY").
    pub website_name: String,
    /// Date of the price observation ("2023-11-17").
    pub competence_date: String,
    /// ISO country code of the shop ("USA").
    pub country_code: String,
    /// ISO currency of `full_price` and `price` ("USD").
    pub currency_code: String,
    /// Brand ("BURBERRY").
    pub brand: String,
    /// Top-level category (for example the department).
    pub category1_code: String,
    /// Second-level category.
    pub category2_code: String,
    /// Finest category: the "Category" of the task's answer.
    pub category3_code: String,
    /// Product identifier; unique after loading.
    pub product_code: i64,
    /// Product title: the "Product" of the task's answer.
    pub title: String,
    /// Product page.
    pub itemurl: String,
    /// Where the image is: a URL, or a path relative to the catalogue's folder.
    pub imageurl: String,
    /// Price before any discount, in `currency_code`: the "Full Price" of the task's answer.
    pub full_price: f64,
    /// Current selling price, in `currency_code`.
    pub price: f64,
    /// `full_price` in euros.
    pub full_price_eur: f64,
    /// `price` in euros.
    pub price_eur: f64,
    /// 1 when `price < full_price`, else 0.
    pub flg_discount: i64,
}

/// A typed value for one [`Product`] field, as a reader found it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FieldValue {
    Str(String),
    Int(i64),
    Float(f64),
}

impl Product {
    /// Sets the field named `column` (a [`BURBERRY_SCHEMA`] name). The reader has already
    /// converted the value to the column's type; other names are ignored.
    pub(crate) fn set(&mut self, column: &str, value: FieldValue) {
        use FieldValue::*;
        match (column, value) {
            ("website_name", Str(v)) => self.website_name = v,
            ("competence_date", Str(v)) => self.competence_date = v,
            ("country_code", Str(v)) => self.country_code = v,
            ("currency_code", Str(v)) => self.currency_code = v,
            ("brand", Str(v)) => self.brand = v,
            ("category1_code", Str(v)) => self.category1_code = v,
            ("category2_code", Str(v)) => self.category2_code = v,
            ("category3_code", Str(v)) => self.category3_code = v,
            ("title", Str(v)) => self.title = v,
            ("itemurl", Str(v)) => self.itemurl = v,
            ("imageurl", Str(v)) => self.imageurl = v,
            ("product_code", Int(v)) => self.product_code = v,
            ("flg_discount", Int(v)) => self.flg_discount = v,
            ("full_price", Float(v)) => self.full_price = v,
            ("price", Float(v)) => self.price = v,
            ("full_price_eur", Float(v)) => self.full_price_eur = v,
            ("price_eur", Float(v)) => self.price_eur = v,
            _ => {}
        }
    }
}

/// Every column by its Burberry name, so a prompt template can name any of them
/// (`{title}`, `{category3_code}`, `{full_price}`, ...). Prices are floats, written as Python
/// writes them (`890.0`), as in the reference prompts.
impl phi3v_processor::prompt::Fields for Product {
    fn field(&self, name: &str) -> Option<phi3v_processor::prompt::FieldValue> {
        use phi3v_processor::prompt::FieldValue as V;
        Some(match name {
            "website_name" => V::from(self.website_name.as_str()),
            "competence_date" => V::from(self.competence_date.as_str()),
            "country_code" => V::from(self.country_code.as_str()),
            "currency_code" => V::from(self.currency_code.as_str()),
            "brand" => V::from(self.brand.as_str()),
            "category1_code" => V::from(self.category1_code.as_str()),
            "category2_code" => V::from(self.category2_code.as_str()),
            "category3_code" => V::from(self.category3_code.as_str()),
            "product_code" => V::Int(self.product_code),
            "title" => V::from(self.title.as_str()),
            "itemurl" => V::from(self.itemurl.as_str()),
            "imageurl" => V::from(self.imageurl.as_str()),
            "full_price" => V::Float(self.full_price),
            "price" => V::Float(self.price),
            "full_price_eur" => V::Float(self.full_price_eur),
            "price_eur" => V::Float(self.price_eur),
            "flg_discount" => V::Int(self.flg_discount),
            _ => return None,
        })
    }
}
