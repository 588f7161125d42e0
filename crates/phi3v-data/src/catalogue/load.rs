//! From catalogue rows to usable items: checks, image fetching, decoding, deduplication.

use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;

use super::{Catalogue, CatalogueRow, ColumnMapping, ImageSource, Product};
use crate::images::{
    check_decodes, progress_bar, FetchFailure, Fetched, ImageData, ImageFetcher, ReadyImage,
};
use crate::report::{DropReason, Report};
use crate::DataError;

/// Rows checked together: their downloads run concurrently and their images decode in
/// parallel, while memory stays bounded by one chunk of rows.
const CHUNK_ROWS: usize = 256;

/// A usable catalogue row: checked fields and an image that decodes.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogueItem {
    /// 0-based index of the row in the catalogue file.
    pub row: usize,
    /// The product (finite price, non-empty title, unique product code).
    pub product: Product,
    /// The image, fetched and checked.
    pub image: ReadyImage,
}

/// The usable rows of a catalogue and the report of the dropped ones.
#[derive(Debug, Clone)]
pub struct LoadedCatalogue {
    /// Usable rows, in file order.
    pub items: Vec<CatalogueItem>,
    /// Every dropped row and why.
    pub report: Report,
}

impl Catalogue {
    /// Reads every row, drops (and reports) those that cannot be used, and returns the rest
    /// with their images fetched and checked.
    ///
    /// Checks, in this order, the first failing one naming the row's drop reason: the row
    /// parses; its cells have their column's type; it has a product code, a non-empty title,
    /// a finite price and an image; the image can be read (file) or downloaded (URL); it
    /// decodes. Of usable rows sharing a product code, the first is kept and the others are
    /// reported as duplicates. Errors are reserved for the catalogue as a whole (unreadable
    /// file, missing mapped column).
    pub fn load(&self, fetcher: &ImageFetcher) -> Result<LoadedCatalogue, DataError> {
        let mut rows = self.rows()?;
        let bar = progress_bar(
            rows.total().map(|n| n as u64),
            fetcher.config().progress,
            "loading catalogue",
        );
        let mut report = Report::new(&self.path);
        let mut items = Vec::new();
        let mut first_row_of: HashMap<i64, usize> = HashMap::new();
        let mut rows_read = 0;
        loop {
            let chunk: Vec<CatalogueRow> =
                rows.by_ref().take(CHUNK_ROWS).collect::<Result<_, _>>()?;
            if chunk.is_empty() {
                break;
            }
            rows_read += chunk.len();
            let n = chunk.len() as u64;
            self.load_chunk(chunk, fetcher, &mut report, &mut items, &mut first_row_of);
            bar.inc(n);
        }
        bar.finish_and_clear();
        report.finish(rows_read);
        Ok(LoadedCatalogue { items, report })
    }

    fn load_chunk(
        &self,
        chunk: Vec<CatalogueRow>,
        fetcher: &ImageFetcher,
        report: &mut Report,
        items: &mut Vec<CatalogueItem>,
        first_row_of: &mut HashMap<i64, usize>,
    ) {
        let mut candidates = Vec::with_capacity(chunk.len());
        for row in chunk {
            match field_problem(&row, &self.mapping) {
                Some(reason) => report.drop_row(row.index, row.product_code, reason),
                None => candidates.push(row),
            }
        }
        let urls: Vec<String> = candidates
            .iter()
            .filter_map(|row| match &row.image {
                ImageSource::Url(url) => Some(url.clone()),
                _ => None,
            })
            .collect();
        let fetched: HashMap<String, Result<Fetched, FetchFailure>> = if urls.is_empty() {
            HashMap::new()
        } else {
            let hidden = indicatif::ProgressBar::hidden();
            let results = fetcher.fetch_many_with(&urls, &hidden);
            urls.into_iter().zip(results).collect()
        };
        let checked: Vec<Result<ReadyImage, DropReason>> = candidates
            .par_iter()
            .map(|row| ready_image(&row.image, &fetched))
            .collect();
        for (row, image) in candidates.into_iter().zip(checked) {
            let code = row.product.product_code;
            let result = image.and_then(|image| match first_row_of.get(&code) {
                Some(&first_row) => Err(DropReason::DuplicateProductCode { first_row }),
                None => Ok(image),
            });
            match result {
                Ok(image) => {
                    first_row_of.insert(code, row.index);
                    items.push(CatalogueItem {
                        row: row.index,
                        product: row.product,
                        image,
                    });
                }
                Err(reason) => report.drop_row(row.index, row.product_code, reason),
            }
        }
    }
}

/// The first problem of a row's fields, in the order of [`DropKind`](crate::report::DropKind)
/// (parse problems before missing values before bad values).
fn field_problem(row: &CatalogueRow, mapping: &ColumnMapping) -> Option<DropReason> {
    let mut problems = row.problems.clone();
    if row.product.title.trim().is_empty() {
        problems.push(DropReason::EmptyTitle {
            column: mapping.title.clone(),
        });
    }
    let price = row.product.full_price;
    if !price.is_finite() {
        problems.push(DropReason::NonFinitePrice {
            column: mapping.price.clone(),
            value: price.to_string(),
        });
    }
    if row.image == ImageSource::Missing {
        problems.push(DropReason::MissingImage {
            column: mapping.image.clone(),
        });
    }
    problems.into_iter().min_by_key(DropReason::kind)
}

/// Reads (or takes the download of) a row's image and checks that it decodes.
fn ready_image(
    source: &ImageSource,
    fetched: &HashMap<String, Result<Fetched, FetchFailure>>,
) -> Result<ReadyImage, DropReason> {
    let undecodable = |error: image::ImageError| DropReason::UndecodableImage {
        image: source.describe(),
        error: error.to_string(),
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| DropReason::ImageFileUnreadable {
            path: path.to_path_buf(),
            error: e.to_string(),
        })
    };
    let (data, (width, height)) = match source {
        ImageSource::Embedded { bytes, .. } => {
            let size = check_decodes(bytes).map_err(undecodable)?;
            (ImageData::Bytes(Arc::from(bytes.as_slice())), size)
        }
        ImageSource::File(path) => {
            let bytes = read(path)?;
            (
                ImageData::File(path.clone()),
                check_decodes(&bytes).map_err(undecodable)?,
            )
        }
        ImageSource::Url(url) => match fetched.get(url) {
            Some(Ok(fetched)) => {
                let bytes = read(&fetched.path)?;
                let size = check_decodes(&bytes).map_err(undecodable)?;
                (ImageData::File(fetched.path.clone()), size)
            }
            Some(Err(failure)) => {
                return Err(DropReason::DownloadFailed {
                    url: url.clone(),
                    error: failure.error.to_string(),
                    attempts: failure.attempts,
                })
            }
            None => unreachable!("every URL of the chunk was fetched"),
        },
        ImageSource::Missing => unreachable!("rows without an image are dropped before"),
    };
    Ok(ReadyImage {
        data,
        width,
        height,
    })
}
