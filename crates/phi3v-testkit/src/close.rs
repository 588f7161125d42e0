//! Closeness checks shared by the parity and kernel tests of every crate.
//!
//! Each test states its own tolerance; these functions only measure and report. A NaN
//! difference counts as the worst one, so a NaN anywhere fails a `<= tol` check instead of
//! being skipped by `f32::max`.

#[cfg(feature = "tensor")]
use burn::tensor::{backend::Backend, Tensor};

/// The largest elementwise `|a - b|` of two equally long slices and its flat index (NaN
/// wins). Panics when the lengths differ.
pub fn max_diff_at(a: &[f32], b: &[f32]) -> (f32, usize) {
    assert_eq!(a.len(), b.len(), "compared slices differ in length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .enumerate()
        .fold((0.0f32, 0), |worst, (i, d)| {
            if d > worst.0 || d.is_nan() && !worst.0.is_nan() {
                (d, i)
            } else {
                worst
            }
        })
}

/// The largest elementwise `|a - b|` of two equally long slices (NaN wins).
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    max_diff_at(a, b).0
}

#[cfg(feature = "tensor")]
/// A tensor's shape and values as `f32`.
pub fn values<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
    let shape = tensor.dims().to_vec();
    let values = tensor
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("float tensor data");
    (shape, values)
}

#[cfg(feature = "tensor")]
/// The largest elementwise `|a - b|` of two tensors of the same shape.
pub fn tensor_max_diff<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    assert_eq!(a.dims(), b.dims(), "compared tensors differ in shape");
    max_diff(&values(a).1, &values(b).1)
}

#[cfg(feature = "tensor")]
/// Asserts that `actual` has `expected`'s shape and lies within `tol` of its values
/// everywhere, and prints the worst error (so passing runs show their margin).
pub fn assert_close<B: Backend, const D: usize>(
    what: &str,
    actual: Tensor<B, D>,
    expected: (Vec<usize>, Vec<f32>),
    tol: f32,
) {
    let (shape, actual) = values(actual);
    assert_eq!(shape, expected.0, "{what}: shape");
    let (worst, at) = max_diff_at(&actual, &expected.1);
    eprintln!("{what}: max abs error {worst:e}");
    assert!(
        worst <= tol,
        "{what}: max |rust - reference| = {worst:e} at flat index {at} (tolerance {tol:e})"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_difference_and_its_index() {
        assert_eq!(max_diff_at(&[1.0, 2.0, 3.0], &[1.0, 2.5, 2.0]), (1.0, 2));
        assert_eq!(max_diff(&[], &[]), 0.0);
        let (d, i) = max_diff_at(&[0.0, f32::NAN, 5.0], &[0.0, 0.0, 0.0]);
        assert!(d.is_nan() && i == 1);
    }

    #[test]
    #[should_panic(expected = "differ in length")]
    fn lengths_must_match() {
        max_diff(&[1.0], &[1.0, 2.0]);
    }

    #[cfg(feature = "tensor")]
    #[test]
    fn tensors_compare_by_value() {
        type B = burn::backend::Flex;
        let device = Default::default();
        let a = Tensor::<B, 2>::from_data([[1.0, 2.0], [3.0, 4.0]], &device);
        let b = Tensor::<B, 2>::from_data([[1.0, 2.0], [3.0, 4.25]], &device);
        assert_eq!(tensor_max_diff(a.clone(), b.clone()), 0.25);
        assert_close("a vs b", a, values(b), 0.25);
    }

    #[cfg(feature = "tensor")]
    #[test]
    #[should_panic(expected = "at flat index 3 (tolerance 1e-1)")]
    fn a_worse_error_fails_naming_its_index() {
        type B = burn::backend::Flex;
        let device = Default::default();
        let a = Tensor::<B, 1>::from_data([1.0, 2.0, 3.0, 4.0], &device);
        assert_close("a vs b", a, (vec![4], vec![1.0, 2.0, 3.0, 4.25]), 0.1);
    }
}
