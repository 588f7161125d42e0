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
    fn plan(&self, path: &Path, columns: &[String]) -> Result<ReadPlan, DataError> {
        let find = |name: &str| columns.iter().position(|c| c == name);
        let roles = self.roles();
        let mut fields = Vec::with_capacity(BURBERRY_SCHEMA.len());
        for (role, column, _) in &roles {
            find_column(path, columns, column, role)?;
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
            product_id: find(&self.product_id),
            price: find(&self.price),
            kept: Vec::new(),
            names: columns.to_vec(),
        })
    }
}

/// The position of `column` among a file's `columns`, or the error that names the file, the
/// column, what it was wanted for and the columns the file has.
fn find_column(
    path: &Path,
    columns: &[String],
    column: &str,
    role: &str,
) -> Result<usize, DataError> {
    columns
        .iter()
        .position(|c| c == column)
        .ok_or_else(|| DataError::MissingColumn {
            path: path.to_path_buf(),
            column: column.to_string(),
            role: role.to_string(),
            available: columns.join(", "),
        })
}

/// What a cell of a [`RecordColumn`] must hold for its row to be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CellKind {
    /// Any scalar (text, number, boolean), or nothing: a column a prompt merely mentions.
    Any,
    /// A value that is not missing or blank: a text or category the model must write.
    Value,
    /// A finite number (a numeric cell, or text that reads as one, `12` or `12.5`): a
    /// quantity the model must write. Integers stay integers, so that `4` is written `4`
    /// as Python writes an `int`, and a float `1240.0` stays `1240.0`.
    Number,
}

/// A column read by name into each row's [`Record`](super::Record), and what its cells
/// must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordColumn {
    /// The column's name in the file.
    pub name: String,
    pub kind: CellKind,
    /// What the column is for, for the error when the file lacks it
    /// (`placeholder {title} of the answer in task.toml`).
    pub role: String,
}

/// The columns of a catalogue read as a [`Record`](super::Record) per row, for tasks that
/// are not the product mapping's: an image column and any named columns.
///
/// Rows sharing a value are not deduplicated here (a task says what stays together through
/// its own group column), and no column plays the role of a title, category or price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordLayout {
    /// The image column: URL, path relative to the catalogue, bytes or a `{bytes, path}`
    /// struct.
    pub image: String,
    pub columns: Vec<RecordColumn>,
}

impl RecordLayout {
    fn plan(&self, path: &Path, columns: &[String]) -> Result<ReadPlan, DataError> {
        let image = find_column(path, columns, &self.image, "image")?;
        let mut kept: Vec<(usize, CellKind)> = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            let index = find_column(path, columns, &c.name, &c.role)?;
            // A column named twice (a placeholder in both the prompt and the answer) must
            // hold the stricter of its kinds.
            match kept.iter_mut().find(|(i, _)| *i == index) {
                Some((_, kind)) => *kind = (*kind).max_strict(c.kind),
                None => kept.push((index, c.kind)),
            }
        }
        Ok(ReadPlan {
            fields: Vec::new(),
            image,
            product_id: None,
            price: None,
            kept,
            names: columns.to_vec(),
        })
    }
}

impl CellKind {
    fn max_strict(self, other: CellKind) -> CellKind {
        use CellKind::*;
        match (self, other) {
            (Number, _) | (_, Number) => Number,
            (Value, _) | (_, Value) => Value,
            _ => Any,
        }
    }
}

/// How a catalogue's rows are read: into the product mapping's fields, or as records of
/// named columns.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Layout<'a> {
    Product(&'a ColumnMapping),
    Record(&'a RecordLayout),
}

impl Layout<'_> {
    /// Resolves the layout against a file's column names (see [`find_column`] for the
    /// error of a missing one).
    pub(crate) fn plan(&self, path: &Path, columns: &[String]) -> Result<ReadPlan, DataError> {
        match self {
            Layout::Product(mapping) => mapping.plan(path, columns),
            Layout::Record(layout) => layout.plan(path, columns),
        }
    }
}

/// One [`Product`](super::Product) field and the file column it is read from.
#[derive(Debug, Clone)]
pub(crate) struct PlannedField {
    pub field: &'static str,
    pub ty: ColumnType,
    pub column: usize,
}

/// The layout resolved against one file's columns (indices into the file's columns).
#[derive(Debug, Clone)]
pub(crate) struct ReadPlan {
    /// Product fields (the product mapping; none for records).
    pub fields: Vec<PlannedField>,
    pub image: usize,
    /// The product id and price columns of the product mapping.
    pub product_id: Option<usize>,
    pub price: Option<usize>,
    /// Columns kept as the row's record, with what they must hold (records only).
    pub kept: Vec<(usize, CellKind)>,
    pub names: Vec<String>,
}

impl ReadPlan {
    /// The file columns the plan reads, sorted and deduplicated (for a parquet projection).
    pub fn used_columns(&self) -> Vec<usize> {
        let mut used: Vec<usize> = self.fields.iter().map(|f| f.column).collect();
        used.extend(self.kept.iter().map(|(c, _)| *c));
        used.push(self.image);
        used.sort_unstable();
        used.dedup();
        used
    }
}
