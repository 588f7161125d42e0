//! The product of f32 activations with a weight stored in a narrower float (bf16).
//!
//! A frozen base held in bf16 halves the model's memory, but a backend that can only
//! multiply equal dtypes must then either round the activations to bf16 or widen the whole
//! weight to f32 on every product. burn-flex does the latter inside its bf16 matmul (plus
//! a contiguous copy of a transposed weight): for one decoded token of Phi-3-V that is a
//! fresh 15 GB of f32 writes. [`MixedMatmul`] is the extension point that lets a backend
//! read the narrow weight directly and accumulate in f32, as llama.cpp and ONNX Runtime do
//! on CPUs.
//!
//! Its provided method works on any backend: it rounds the activations to the weight's
//! dtype and runs the backend's own product in that dtype (a GPU's bf16 units, with f32
//! accumulation inside the kernel). Flex overrides it with a kernel that never widens more
//! than a tile of the weight at a time (see `flex.rs`). Under autodiff the product is one
//! node whose only differentiable input is the activation: the weight is a frozen base.
//!
//! The weight may also be block-quantized (a QLoRA base, see
//! [`BaseDtype::Q4`](crate::BaseDtype::Q4)). The CubeCL backends run burn's quantized
//! product, which dequantizes inside the matmul kernel. Flex reads the blocks where they lie,
//! a tile at a time, from q4 values it packs two to a byte (see `blocks.rs`). Under autodiff
//! the backward does the same with the transposed product, so no product holds more than a
//! tile (flex) or its own layer's weight (burn's product) dequantized at a time.

#[cfg(feature = "flex")]
mod blocks;
#[cfg(all(feature = "flex", target_arch = "x86_64"))]
mod dpbf16;
#[cfg(feature = "flex")]
mod flex;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::quantization::QuantScheme;
use burn::tensor::{DType, FloatDType, Tensor, TensorPrimitive};

use crate::ProductDtype;

/// A backend that can multiply activations by a weight stored in another float dtype.
pub trait MixedMatmul: Backend {
    /// `x w`, in `x`'s dtype, where `w` may be stored in a narrower float dtype (bf16)
    /// than `x` (f32). When the dtypes are equal this is the plain product. A quantized `w`
    /// is dequantized for the product (see the module notes).
    ///
    /// # Shapes
    /// - `x`: `[m, k]`
    /// - `w`: `[k, n]`, any strides (a transposed PyTorch `[n, k]` weight is the usual case)
    /// - returns `[m, n]`
    fn mixed_matmul(x: Tensor<Self, 2>, w: Tensor<Self, 2>) -> Tensor<Self, 2> {
        rounded_matmul(x, w)
    }

    /// `x w^T`, the product the gradient of [`MixedMatmul::mixed_matmul`] takes. A quantized
    /// `w` is dequantized rather than transposed: burn transposes a block-quantized tensor
    /// by dequantizing and requantizing it along the new layout, which would round the
    /// weight a second time.
    ///
    /// # Shapes
    /// - `x`: `[m, n]`, `w`: `[k, n]`; returns `[m, k]`
    fn mixed_matmul_transposed(x: Tensor<Self, 2>, w: Tensor<Self, 2>) -> Tensor<Self, 2> {
        if is_quantized(&w) {
            widened_transposed_matmul(x, w)
        } else {
            Self::mixed_matmul(x, w.transpose())
        }
    }

    /// `w` as a float tensor of `dtype`: cast, or dequantized when it is quantized. Under
    /// autodiff the result is a constant, as the frozen weight was.
    fn widen(w: Tensor<Self, 2>, dtype: FloatDType) -> Tensor<Self, 2> {
        widened(w, dtype)
    }

    /// `x w` with `x` and `w` rounded to bf16 and the products summed in f32, in `x`'s
    /// dtype: the arithmetic of PyTorch's bf16 autocast, which hardware with bf16 units
    /// runs at twice f32's rate ([`ProductDtype::Bf16`](crate::ProductDtype::Bf16)). The
    /// provided method casts both operands and runs the backend's bf16 product (whose
    /// output is rounded to bf16 too); a quantized `w` is dequantized first. Flex overrides
    /// it with AVX512-BF16's dot products where the CPU has them (see `dpbf16.rs`).
    ///
    /// # Shapes
    /// - `x`: `[m, k]`, `w`: `[k, n]` (any strides); returns `[m, n]`
    fn bf16_matmul(x: Tensor<Self, 2>, w: Tensor<Self, 2>) -> Tensor<Self, 2> {
        rounded_bf16_matmul(x, w)
    }

    /// `x w^T` in bf16, the product the gradient of [`MixedMatmul::bf16_matmul`] takes.
    ///
    /// # Shapes
    /// - `x`: `[m, n]`, `w`: `[k, n]`; returns `[m, k]`
    fn bf16_matmul_transposed(x: Tensor<Self, 2>, w: Tensor<Self, 2>) -> Tensor<Self, 2> {
        let w = if is_quantized(&w) {
            Self::widen(w, FloatDType::BF16)
        } else {
            w
        };
        Self::bf16_matmul(x, w.transpose())
    }

    /// A frozen weight (`[k, n]`, as the loader lays it out) quantized with burn's
    /// quantizer into `scheme`, in the form this backend's products read, which may differ
    /// from the form burn's quantizer returns. The provided method keeps burn's: the CubeCL
    /// backends already pack eight 4-bit values per `u32`. Flex unpacks them to one `i8`
    /// each, as much memory as q8, so it packs them two to a byte, and quantizes row chunks
    /// on all cores where burn-flex uses one (see `blocks.rs`).
    ///
    /// A packed weight is read through [`MixedMatmul::mixed_matmul`],
    /// [`MixedMatmul::mixed_matmul_transposed`] and [`MixedMatmul::widen`]; burn's own ops
    /// on flex read only the unpacked form.
    fn quantize_frozen(w: Tensor<Self, 2>, scheme: &QuantScheme) -> Tensor<Self, 2> {
        w.quantize_dynamic(scheme)
    }
}

/// The provided [`MixedMatmul::widen`]: burn's cast, or burn's dequantization.
fn widened<B: Backend>(w: Tensor<B, 2>, dtype: FloatDType) -> Tensor<B, 2> {
    if is_quantized(&w) {
        w.dequantize().cast(dtype)
    } else {
        w.cast(dtype)
    }
}

/// The provided [`MixedMatmul::mixed_matmul`]: `x` rounded to `w`'s dtype, the backend's
/// product in that dtype, and the result cast back to `x`'s dtype.
///
/// # Shapes
/// - `x`: `[m, k]`, `w`: `[k, n]`; returns `[m, n]`
pub fn rounded_matmul<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
    let (x_dtype, w_dtype) = (x.dtype(), w.dtype());
    // burn's float-by-quantized product dequantizes `w` to `x`'s dtype.
    if x_dtype == w_dtype || is_quantized(&w) {
        return x.matmul(w);
    }
    x.cast(FloatDType::from(w_dtype))
        .matmul(w)
        .cast(FloatDType::from(x_dtype))
}

/// The provided [`MixedMatmul::bf16_matmul`]: both operands cast to bf16 (a quantized `w`
/// dequantized), the backend's bf16 product, and the result cast back to `x`'s dtype.
///
/// # Shapes
/// - `x`: `[m, k]`, `w`: `[k, n]`; returns `[m, n]`
pub fn rounded_bf16_matmul<B: MixedMatmul>(x: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
    let x_dtype = FloatDType::from(x.dtype());
    let w = if w.dtype() == DType::BF16 {
        w
    } else {
        B::widen(w, FloatDType::BF16)
    };
    x.cast(FloatDType::BF16).matmul(w).cast(x_dtype)
}

/// `x w` with a frozen `w`, in the arithmetic `products` names: the plain product when the
/// dtypes agree, [`MixedMatmul::mixed_matmul`] when `w` is narrower, or
/// [`MixedMatmul::bf16_matmul`].
///
/// # Shapes
/// - `x`: `[m, k]`, `w`: `[k, n]`; returns `[m, n]`
pub fn frozen_matmul<B: MixedMatmul>(
    x: Tensor<B, 2>,
    w: Tensor<B, 2>,
    products: ProductDtype,
) -> Tensor<B, 2> {
    match products {
        ProductDtype::F32 if x.dtype() == w.dtype() => x.matmul(w),
        ProductDtype::F32 => B::mixed_matmul(x, w),
        ProductDtype::Bf16 => B::bf16_matmul(x, w),
    }
}

/// `x w^T` through `w` widened to `x`'s dtype: the transposed product of a quantized weight
/// where no kernel reads its blocks in place.
///
/// # Shapes
/// - `x`: `[m, n]`, `w`: `[k, n]`; returns `[m, k]`
fn widened_transposed_matmul<B: MixedMatmul>(x: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
    let dtype = FloatDType::from(x.dtype());
    x.matmul(B::widen(w, dtype).transpose())
}

/// Whether `t` holds block- or tensor-quantized values (a QLoRA base's weight).
pub fn is_quantized<B: Backend, const D: usize>(t: &Tensor<B, D>) -> bool {
    matches!(t.dtype(), DType::QFloat(_))
}

/// The inner backend's view of a frozen weight: its float tensor, or its quantized tensor as
/// it is (burn's autodiff keeps quantized tensors as constants of the inner backend).
fn frozen_inner<B: Backend, C: CheckpointStrategy>(w: Tensor<Autodiff<B, C>, 2>) -> Tensor<B, 2> {
    Tensor::from_primitive(match w.into_primitive() {
        TensorPrimitive::Float(t) => TensorPrimitive::Float(t.primitive),
        TensorPrimitive::QFloat(q) => TensorPrimitive::QFloat(q),
    })
}

/// Opts backends without a mixed kernel in to the provided method (unused when only flex
/// is compiled in).
#[allow(unused_macros)]
macro_rules! rounding_mixed_matmul {
    ($($backend:ty),* $(,)?) => {
        $(impl MixedMatmul for $backend {})*
    };
}

#[cfg(feature = "ndarray")]
rounding_mixed_matmul!(burn::backend::NdArray);
#[cfg(feature = "wgpu")]
rounding_mixed_matmul!(burn::backend::Wgpu);
#[cfg(feature = "cuda")]
rounding_mixed_matmul!(burn::backend::Cuda);

/// Under autodiff the product is one node: the inner backend's mixed product forward, and
/// `dx = dy w^T` (the same mixed product, on the transposed view of the weight) backward.
/// The weight is taken as a constant: a frozen base has no gradient, so nothing is saved
/// for it beyond the reference the layer already holds.
impl<B: MixedMatmul, C: CheckpointStrategy> MixedMatmul for Autodiff<B, C> {
    fn mixed_matmul(x: Tensor<Self, 2>, w: Tensor<Self, 2>) -> Tensor<Self, 2> {
        frozen_product_node(x, w, ProductDtype::F32)
    }

    fn bf16_matmul(x: Tensor<Self, 2>, w: Tensor<Self, 2>) -> Tensor<Self, 2> {
        frozen_product_node(x, w, ProductDtype::Bf16)
    }

    /// The inner backend's widening, as a constant of the graph (burn's autodiff cannot
    /// dequantize).
    fn widen(w: Tensor<Self, 2>, dtype: FloatDType) -> Tensor<Self, 2> {
        Tensor::from_inner(B::widen(frozen_inner(w), dtype))
    }
}

/// The product with a frozen weight as one node of the graph: the inner backend's mixed or
/// bf16 product forward, and `dx = dy w^T` in the same arithmetic backward.
fn frozen_product_node<B: MixedMatmul, C: CheckpointStrategy>(
    x: Tensor<Autodiff<B, C>, 2>,
    w: Tensor<Autodiff<B, C>, 2>,
    products: ProductDtype,
) -> Tensor<Autodiff<B, C>, 2> {
    let forward = |x: Tensor<B, 2>, w: Tensor<B, 2>| match products {
        ProductDtype::F32 => B::mixed_matmul(x, w),
        ProductDtype::Bf16 => B::bf16_matmul(x, w),
    };
    let x = x.into_primitive().tensor();
    let w = frozen_inner(w);
    let x_inner = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(x.primitive.clone()));
    let out = match (FrozenProductBackward { products })
        .prepare::<C>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let out = forward(x_inner, w.clone());
            prep.finish(w, out.into_primitive().tensor())
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x_inner, w).into_primitive().tensor()),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// The autodiff node of one product with a frozen weight; its state is the weight.
#[derive(Debug)]
struct FrozenProductBackward {
    products: ProductDtype,
}

impl<B: MixedMatmul> Backward<B, 1> for FrozenProductBackward {
    type State = Tensor<B, 2>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad =
            Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(grads.consume::<B>(&ops.node)));
        let [parent] = ops.parents;
        if let Some(node) = parent {
            let dx = match self.products {
                ProductDtype::F32 => B::mixed_matmul_transposed(grad, ops.state),
                ProductDtype::Bf16 => B::bf16_matmul_transposed(grad, ops.state),
            };
            grads.register::<B>(node.id, dx.into_primitive().tensor());
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};

    type B = burn::backend::Flex;
    type A = Autodiff<B>;

    /// The reference: the product of `x` with the weight widened to f32.
    fn widened<Bk: Backend>(x: Tensor<Bk, 2>, w: Tensor<Bk, 2>) -> Tensor<Bk, 2> {
        x.matmul(w.cast(FloatDType::F32))
    }

    fn weight(k: usize, n: usize, transposed: bool) -> Tensor<B, 2> {
        let device = Default::default();
        if transposed {
            Tensor::<B, 2>::random([n, k], Distribution::Normal(0.0, 1.0), &device)
                .cast(FloatDType::BF16)
                .transpose()
        } else {
            Tensor::<B, 2>::random([k, n], Distribution::Normal(0.0, 1.0), &device)
                .cast(FloatDType::BF16)
        }
    }

    /// Every shape class the kernel distinguishes: one row and a few (the dot-product
    /// path, with lengths with and without a tail past the vector lanes), many rows (the
    /// tiled path), widths that are no multiple of a tile, and both weight orientations.
    #[test]
    fn mixed_product_equals_the_widened_product() {
        let device = Default::default();
        for (m, k, n) in [
            (1, 7, 5),
            (1, 21, 70),
            (2, 40, 37),
            (3, 96, 130),
            (4, 33, 257),
            (9, 64, 300),
            (70, 200, 129),
        ] {
            for transposed in [true, false] {
                let x = Tensor::<B, 2>::random([m, k], Distribution::Normal(0.0, 1.0), &device);
                let w = weight(k, n, transposed);
                let got = B::mixed_matmul(x.clone(), w.clone());
                assert_eq!(got.dtype(), burn::tensor::DType::F32);
                got.into_data()
                    .assert_approx_eq::<f32>(&widened(x, w).into_data(), Tolerance::absolute(1e-4));
            }
        }
    }

    /// A weight that is a slice of a larger one (an offset and a row stride wider than the
    /// view) reads the right elements.
    #[test]
    fn strided_weight_views_are_read_in_place() {
        let device = Default::default();
        let full = weight(40, 50, true);
        let w = full.slice([3..35, 5..45]);
        let x = Tensor::<B, 2>::random([6, 32], Distribution::Normal(0.0, 1.0), &device);
        B::mixed_matmul(x.clone(), w.clone())
            .into_data()
            .assert_approx_eq::<f32>(&widened(x, w).into_data(), Tolerance::absolute(1e-4));
    }

    /// The gradient reaches the activation as `dy w^T`, and never the weight.
    #[test]
    fn gradient_flows_to_the_activation_only() {
        let device = Default::default();
        let w_inner = weight(24, 40, true);
        let x0 = Tensor::<B, 2>::random([5, 24], Distribution::Normal(0.0, 1.0), &device);
        let dy = Tensor::<B, 2>::random([5, 40], Distribution::Normal(0.0, 1.0), &device);

        let x = Tensor::<A, 2>::from_inner(x0.clone()).require_grad();
        let w = Tensor::<A, 2>::from_inner(w_inner.clone());
        let y = A::mixed_matmul(x.clone(), w.clone());
        let grads = (y * Tensor::from_inner(dy.clone())).sum().backward();
        let dx = x.grad(&grads).expect("the activation has a gradient");
        assert!(w.grad(&grads).is_none(), "the frozen weight got a gradient");
        dx.into_data().assert_approx_eq::<f32>(
            &widened(dy, w_inner.transpose()).into_data(),
            Tolerance::absolute(1e-4),
        );
    }

    /// `t` (f32) with every value rounded to the nearest bf16, ties to even, kept in f32.
    /// Rounded by `half`: burn-flex 0.21's cast to bf16 rounds a few values just above a
    /// midpoint down (`0xc0268003` to `0xc026`).
    fn rounded(t: Tensor<B, 2>) -> Tensor<B, 2> {
        let shape = t.shape();
        let values: Vec<f32> = t
            .into_data()
            .to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(|v| half::bf16::from_f32(v).to_f32())
            .collect();
        Tensor::from_data(
            burn::tensor::TensorData::new(values, shape),
            &Default::default(),
        )
    }

    /// The bf16 product is the f32 product of the operands rounded to bf16, whatever the
    /// path: rows that fill the kernel's 12-row blocks or not, a `k` with an odd tail, widths
    /// across its 32-column strips and 128-column tiles, a bf16 weight in both orientations
    /// (the forward's transposed PyTorch weight and the gradient's transposed product), a
    /// strided slice, and an f32 weight rounded as it is read.
    #[test]
    fn bf16_product_equals_the_product_of_rounded_operands() {
        let device = Default::default();
        for (m, k, n) in [
            (1, 7, 5),
            (9, 64, 33),
            (12, 65, 32),
            (13, 7, 130),
            (30, 200, 257),
            (70, 33, 129),
        ] {
            let x = Tensor::<B, 2>::random([m, k], Distribution::Normal(0.0, 1.0), &device);
            let full = weight(k + 3, n + 5, true);
            let weights = [
                ("transposed", weight(k, n, true)),
                ("row-major", weight(k, n, false)),
                ("slice", full.slice([2..k + 2, 1..n + 1])),
                (
                    "f32",
                    Tensor::<B, 2>::random([n, k], Distribution::Normal(0.0, 1.0), &device)
                        .transpose(),
                ),
            ];
            for (name, w) in weights {
                let want = rounded(x.clone()).matmul(rounded(w.clone().cast(FloatDType::F32)));
                let got = B::bf16_matmul(x.clone(), w.clone());
                assert_eq!(got.dtype(), DType::F32);
                let want = want.into_data();
                assert_within_1e6_of_largest(got, &want, (m, k, n), name);
            }
        }
    }

    /// Under autodiff the bf16 product is one node: the gradient reaches the activation as
    /// the bf16 product `dy w^T`, and never the weight.
    #[test]
    fn bf16_gradient_is_the_rounded_transposed_product() {
        let device = Default::default();
        let w_inner = weight(40, 70, true);
        let x0 = Tensor::<B, 2>::random([20, 40], Distribution::Normal(0.0, 1.0), &device);
        let dy = Tensor::<B, 2>::random([20, 70], Distribution::Normal(0.0, 1.0), &device);
        let x = Tensor::<A, 2>::from_inner(x0.clone()).require_grad();
        let w = Tensor::<A, 2>::from_inner(w_inner.clone());
        let y = A::bf16_matmul(x.clone(), w.clone());
        let want = rounded(x0).matmul(w_inner.clone().cast(FloatDType::F32));
        assert_within_1e6_of_largest(y.clone().inner(), &want.into_data(), (20, 40, 70), "y");
        let grads = (y * Tensor::from_inner(dy.clone())).sum().backward();
        let dx = x.grad(&grads).expect("the activation has a gradient");
        assert!(w.grad(&grads).is_none(), "the frozen weight got a gradient");
        let want = rounded(dy).matmul(w_inner.cast(FloatDType::F32).transpose());
        assert_within_1e6_of_largest(dx, &want.into_data(), (20, 70, 40), "dx");
    }

    /// A q8 or q4 block-quantized weight as a QLoRA base holds it (`[k, n]`, blocks along
    /// `n`, q4 packed), and the same values as burn's quantizer returns them, which burn's
    /// `dequantize` reads.
    fn quantized(k: usize, n: usize, base: crate::BaseDtype) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let scheme = base
            .resolve::<B>(&Default::default())
            .unwrap()
            .quantization
            .expect("a quantized base dtype");
        let float =
            Tensor::<B, 2>::random([n, k], Distribution::Normal(0.0, 1.0), &Default::default())
                .transpose();
        let packed = B::quantize_frozen(float.clone(), &scheme);
        (packed, float.quantize_dynamic(&scheme))
    }

    /// The product with a quantized weight is the product with its dequantized values,
    /// directly and under autodiff, and so is the transposed product: one row and a few
    /// (flex's row sweep, over one and several 256-column groups) and many,
    /// one tile of columns and several with a partial last one (flex's tiles are 128 wide),
    /// and a width that is no multiple of a block (burn's own product).
    #[test]
    fn quantized_product_equals_the_dequantized_product() {
        let device = Default::default();
        for base in [crate::BaseDtype::Q8, crate::BaseDtype::Q4] {
            for (m, k, n) in [
                (1, 40, 64),
                (7, 24, 96),
                (2, 30, 544),
                (33, 70, 32),
                (9, 50, 320),
                (3, 16, 48),
            ] {
                let dy = Tensor::<B, 2>::random([m, n], Distribution::Normal(0.0, 1.0), &device);
                let (w, unpacked) = quantized(k, n, base);
                let want = dy
                    .clone()
                    .matmul(unpacked.dequantize().transpose())
                    .into_data();
                assert_within_1e6_of_largest(
                    B::mixed_matmul_transposed(dy, w),
                    &want,
                    (m, n, k),
                    "t",
                );
                let x = Tensor::<B, 2>::random([m, k], Distribution::Normal(0.0, 1.0), &device);
                let (w, unpacked) = quantized(k, n, base);
                assert!(is_quantized(&w));
                let want = x.clone().matmul(unpacked.dequantize()).into_data();
                let got = B::mixed_matmul(x.clone(), w.clone());
                assert_within_1e6_of_largest(got, &want, (m, k, n), "");
                let tracked =
                    A::mixed_matmul(Tensor::from_inner(x).require_grad(), Tensor::from_inner(w));
                assert_within_1e6_of_largest(tracked.inner(), &want, (m, k, n), "tracked");
            }
        }
    }

    /// Every entry of `got` within 1e-6 of `want`, relative to the largest output: the
    /// products sum in different orders, which shows on outputs that cancel to near zero.
    fn assert_within_1e6_of_largest(
        got: Tensor<B, 2>,
        want: &burn::tensor::TensorData,
        shape: (usize, usize, usize),
        case: &str,
    ) {
        let got = got.into_data().to_vec::<f32>().unwrap();
        let want = want.to_vec::<f32>().unwrap();
        let largest = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let diff = got
            .iter()
            .zip(&want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-6 * largest,
            "{case} {shape:?}: {diff} off, outputs up to {largest}"
        );
    }

    /// Over a quantized weight the gradient reaches the activation as `dy w^T` of the
    /// dequantized values, and the weight stays a constant of the graph.
    #[test]
    fn quantized_weight_passes_the_gradient_and_takes_none() {
        let device = Default::default();
        let (w_inner, unpacked) = quantized(24, 64, crate::BaseDtype::Q4);
        let x0 = Tensor::<B, 2>::random([5, 24], Distribution::Normal(0.0, 1.0), &device);
        let dy = Tensor::<B, 2>::random([5, 64], Distribution::Normal(0.0, 1.0), &device);
        let x = Tensor::<A, 2>::from_inner(x0).require_grad();
        let w = Tensor::<A, 2>::from_inner(w_inner.clone());
        assert!(!w.is_require_grad(), "a quantized weight is a constant");
        let y = A::mixed_matmul(x.clone(), w);
        let grads = (y * Tensor::from_inner(dy.clone())).sum().backward();
        let dx = x.grad(&grads).expect("the activation has a gradient");
        dx.into_data().assert_approx_eq::<f32>(
            &dy.matmul(unpacked.dequantize().transpose()).into_data(),
            Tolerance::absolute(1e-5),
        );
    }

    /// Widening dequantizes a quantized weight, packed or not, exactly as burn does (and
    /// casts a float one), on autodiff as a constant.
    #[test]
    fn widening_dequantizes() {
        for base in [crate::BaseDtype::Q8, crate::BaseDtype::Q4] {
            let (w, unpacked) = quantized(32, 64, base);
            let want = unpacked.dequantize().into_data();
            let widened = A::widen(Tensor::from_inner(w), FloatDType::F32);
            assert!(!widened.is_require_grad());
            assert_eq!(widened.dtype(), burn::tensor::DType::F32);
            assert_eq!(widened.inner().into_data(), want, "{base:?}");
        }
    }
}
