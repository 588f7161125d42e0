//! Which catalogue column plays which role.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::product::{ColumnType, BURBERRY_SCHEMA};
use crate::DataError;

/// Which columns of a catalogue hold the product id, title, category, price and image.
///
/// The default is the Burberry dataset's mapping. For another catalogue, name its columns:
/// the mapped values land in the [`Product`](super::Product) fields that play the same role in
/// the Burberry task (`product_code`, `title`, `category3_code`, `full_price`, `imageurl`), so
/// the prompt and the split work unchanged. Other Burberry-named columns present in the file
/// are read as well; absent ones keep their defaults.
///
/// Deserialises from JSON/TOML with missing keys taking the Burberry defaults, e.g.
/// `{"title": "name", "price": "list_price", "image": "image"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ColumnMapping {
    /// Integer product identifier (an integer column, or strings holding integers).
    pub product_id: String,
    /// Product title.
    pub title: String,
    /// Category the model learns to name; `None` when the catalogue has none.
    pub category: Option<String>,
    /// Price the model learns to tell (for Burberry the full price, before discounts).
    pub price: String,
    /// Image: a URL or path string, binary image bytes, or a Hugging Face image struct
    /// `{bytes, path}`.
    pub image: String,
}

impl Default for ColumnMapping {
    fn default() -> Self {
        Self::burberry()
    }
}

impl ColumnMapping {
    /// The mapping of `DBQ/Burberry.Product.prices.United.States`: `product_code`, `title`,
    /// `category3_code`, `full_price`, `imageurl`.
    pub fn burberry() -> Self {
        Self {
            product_id: "product_code".into(),
            title: "title".into(),
            category: Some("category3_code".into()),
            price: "full_price".into(),
            image: "imageurl".into(),
        }
    }

    /// The mapped roles as `(role, column, Product field)`.
    fn roles(&self) -> Vec<(&'static str, &str, &'static str)> {
        let mut roles = vec![
            ("product id", self.product_id.as_str(), "product_code"),
            ("title", self.title.as_str(), "title"),
            ("price", self.price.as_str(), "full_price"),
            ("image", self.image.as_str(), "imageurl"),
        ];
        if let Some(category) = &self.category {
            roles.push(("category", category.as_str(), "category3_code"));
        }
        roles
    }

    /// Resolves the mapping against a file's column names. Errors name the file, the missing
    /// column and its role, and list the columns the file does have.
    pub(crate) fn plan(&self, path: &Path, columns: &[String]) -> Result<ReadPlan, DataError> {
        let find = |name: &str| columns.iter().position(|c| c == name);
        let roles = self.roles();
        let mut fields = Vec::with_capacity(BURBERRY_SCHEMA.len());
        for (role, column, _) in &roles {
            if find(column).is_none() {
                return Err(DataError::MissingColumn {
                    path: path.to_path_buf(),
                    column: column.to_string(),
                    role: role.to_string(),
                    available: columns.join(", "),
                });
            }
        }
        for (field, ty) in BURBERRY_SCHEMA {
            if field == "imageurl" {
                // Filled from the image column (see `ReadPlan::image`).
                continue;
            }
            let source = match roles.iter().find(|(_, _, f)| *f == field) {
                Some((_, column, _)) => find(column),
                None => find(field),
            };
            if let Some(index) = source {
                fields.push(PlannedField {
                    field,
                    ty,
                    column: index,
                });
            }
        }
        let image = find(&self.image).expect("checked above");
        Ok(ReadPlan {
            fields,
            image,
            product_id: find(&self.product_id).expect("checked above"),
            price: find(&self.price).expect("checked above"),
            names: columns.to_vec(),
        })
    }
}

/// One [`Product`](super::Product) field and the file column it is read from.
#[derive(Debug, Clone)]
pub(crate) struct PlannedField {
    pub field: &'static str,
    pub ty: ColumnType,
    pub column: usize,
}

/// The mapping resolved against one file's columns (indices into the file's columns).
#[derive(Debug, Clone)]
pub(crate) struct ReadPlan {
    pub fields: Vec<PlannedField>,
    pub image: usize,
    pub product_id: usize,
    pub price: usize,
    pub names: Vec<String>,
}

impl ReadPlan {
    /// The file columns the plan reads, sorted and deduplicated (for a parquet projection).
    pub fn used_columns(&self) -> Vec<usize> {
        let mut used: Vec<usize> = self.fields.iter().map(|f| f.column).collect();
        used.push(self.image);
        used.sort_unstable();
        used.dedup();
        used
    }
}
