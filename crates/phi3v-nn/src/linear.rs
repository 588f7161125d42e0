//! A linear layer stored as burn lays it out (`[in, out]`), loadable from PyTorch's
//! `[out, in]` weights.
//!
//! Both the decoder and the vision tower use this one type, so that adapters added to
//! linear layers (LoRA) reach every projection through a single place.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor};

use crate::lora::LoraAdapter;
use crate::mixed::{frozen_matmul, is_quantized, rounded_matmul, MixedMatmul};
use crate::view::{Init, WeightsView};
use crate::weights::WeightsError;
use crate::ProductDtype;

/// `y = x W + b`, plus `s (x A) B` when a LoRA adapter is attached.
///
/// The adapter is applied as two thin products rather than by merging `W + s A B`: a
/// merged weight would cost a full copy of `W` per layer under autodiff, while the
/// factored form costs only the adapters and their activations.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// `[d_input, d_output]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[d_output]`, when the layer has a bias.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// A low-rank adapter, when one is attached.
    pub lora: Option<LoraAdapter<B>>,
    /// The Hugging Face module name (`model.layers.3.self_attn.qkv_proj`): the path of the
    /// [`WeightsView`] the layer was built from. Adapter plans, PEFT exports and merges
    /// address the layer by it.
    #[module(skip)]
    name: String,
    /// The arithmetic of the product with a frozen weight (see [`ProductDtype`]); a
    /// trainable weight multiplies in its own dtype.
    #[module(skip)]
    products: ProductDtype,
}

impl<B: Backend> Linear<B> {
    /// The Hugging Face module name the layer was built under (empty for a layer made from
    /// tensors and not named since).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same layer under module name `name`.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The arithmetic of the product with the weight while it is frozen.
    pub fn products(&self) -> ProductDtype {
        self.products
    }

    /// Multiplies by the weight in `products` while it is frozen (see [`ProductDtype`]).
    pub fn set_products(&mut self, products: ProductDtype) {
        self.products = products;
    }

    /// Input and output widths.
    pub fn dims(&self) -> (usize, usize) {
        let [i, o] = self.weight.dims();
        (i, o)
    }

    /// An unnamed layer from a weight (`[d_input, d_output]`) and an optional bias (see
    /// [`Linear::with_name`]).
    pub fn from_tensors(weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            bias: bias.map(Param::from_tensor),
            lora: None,
            name: String::new(),
            products: ProductDtype::F32,
        }
    }
}

impl<B: MixedMatmul> Linear<B> {
    /// The layer under `vb`'s path: `weight` (`[out, in]` in the weights) and, when
    /// `bias`, `bias`. Random layers draw the weight from `N(0, std^2)` with a zero bias.
    pub fn new(
        vb: WeightsView<'_>,
        d_input: usize,
        d_output: usize,
        bias: bool,
        device: &B::Device,
    ) -> Result<Self, WeightsError> {
        let weight = vb.linear_weight("weight", d_input, d_output, device)?;
        let bias = if bias {
            Some(vb.tensor("bias", [d_output], Init::Zeros, device)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            lora: None,
            name: vb.path().to_string(),
            products: ProductDtype::F32,
        })
    }

    /// An unnamed random layer ([`Linear::new`] on [`WeightsView::random`]), for tests.
    pub fn random(
        d_input: usize,
        d_output: usize,
        bias: bool,
        std: f64,
        device: &B::Device,
    ) -> Self {
        Self::new(WeightsView::random(std), d_input, d_output, bias, device)
            .expect("random initialisation reads no weights")
    }

    /// Stores the weight (not the bias) in `dtype`, keeping its parameter id: a frozen base
    /// held in bf16 while activations, biases and adapters stay f32, or a quantized weight
    /// widened to f32 to be trained in full.
    pub fn cast_weight(&mut self, dtype: FloatDType) {
        if self.weight.dtype() != DType::from(dtype) {
            let (id, weight, _) = self.weight.clone().consume();
            let require_grad = weight.is_require_grad();
            let weight = B::widen(weight, dtype)
                .detach()
                .set_require_grad(require_grad);
            self.weight = Param::initialized(id, weight);
        }
    }

    /// `x W + b (+ s (x A) B)`, in `x`'s dtype.
    ///
    /// A frozen weight is multiplied as [`Linear::products`] says, through
    /// [`frozen_matmul`]: in f32, a weight stored in a narrower dtype (a frozen bf16 base,
    /// see [`Linear::cast_weight`]) goes through the backend's [`MixedMatmul`], where on flex
    /// the bf16 values are read in place and accumulated in f32, without an f32 copy of the
    /// weight; in bf16, both operands are rounded to bf16 (twice f32's rate on hardware with
    /// bf16 dot products). Under autodiff either is one node that saves nothing but the
    /// weight it already holds. A weight that requires a gradient multiplies in its own
    /// dtype: a narrow one (not a frozen base) takes the differentiable path, `x` rounded to
    /// the weight's dtype and back.
    ///
    /// # Shapes
    /// - `x`: `[..., d_input]`
    /// - returns `[..., d_output]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let d_output = self.weight.dims()[1];
        let [y] = self.forward_split(x, [d_output]);
        y
    }

    /// [`Linear::forward`] cut along its output into `N` parts of the given widths (which
    /// sum to `d_output`), each from its own product over a column slice of the weight.
    ///
    /// Why: each part comes out contiguous. On flex an element-wise op over a column slice
    /// of one wide output walks it element by element on one core: the gated MLP's
    /// `silu(gate) * up` and the rotation of the queries and keys were 1.3 s of a 2,523-token
    /// prefill at the released widths. The products cost the same, and a LoRA adapter's
    /// first factor (and its dropout) is computed once for all parts.
    ///
    /// # Shapes
    /// - `x`: `[..., d_input]`
    /// - returns `[..., widths[i]]` for each part
    pub fn forward_split<const D: usize, const N: usize>(
        &self,
        x: Tensor<B, D>,
        widths: [usize; N],
    ) -> [Tensor<B, D>; N] {
        let weight = self.weight.val();
        let dims = x.dims();
        let [d_input, d_output] = weight.dims();
        assert_eq!(
            widths.iter().sum::<usize>(),
            d_output,
            "{}: parts {widths:?} do not make the output width {d_output}",
            self.name
        );
        // Every product runs on 2-D rows. burn's `module::linear` would reshape the weight
        // to x's rank, and the weight is the transposed view of PyTorch's `[out, in]`
        // layout: reshaping a non-contiguous tensor makes flex copy the whole weight on
        // every call (5% of a LoRA step at the released widths), where a 2-D product
        // reads it through its strides.
        let rows = x.reshape([dims.iter().product::<usize>() / d_input, d_input]);
        let lora_hidden = self.lora.as_ref().map(|lora| lora.down(rows.clone()));
        let whole = N == 1;
        // A quantized weight's blocks cannot be cut along its columns: its whole product is
        // cut instead.
        let quantized_product =
            (!whole && is_quantized(&weight)).then(|| self.product(rows.clone(), weight.clone()));
        let mut start = 0;
        widths.map(|width| {
            let columns = start..start + width;
            start += width;
            let mut y = match (&quantized_product, whole) {
                (Some(y), _) => y.clone().slice([0..y.dims()[0], columns.clone()]),
                (None, true) => self.product(rows.clone(), weight.clone()),
                (None, false) => self.product(
                    rows.clone(),
                    weight.clone().slice([0..d_input, columns.clone()]),
                ),
            };
            if let Some(bias) = &self.bias {
                let bias = bias.val();
                let bias = if whole {
                    bias
                } else {
                    bias.slice([columns.clone()])
                };
                y = y + bias.unsqueeze();
            }
            if let (Some(lora), Some(hidden)) = (&self.lora, &lora_hidden) {
                y = y + lora.up(hidden.clone(), columns);
            }
            let mut out_dims = dims;
            out_dims[D - 1] = width;
            y.reshape(out_dims)
        })
    }

    /// `rows w` for `w` the weight or a column slice of it, in the arithmetic [`Linear::forward`]
    /// describes.
    ///
    /// # Shapes
    /// - `rows`: `[rows, d_input]`, `w`: `[d_input, width]`; returns `[rows, width]`
    fn product(&self, rows: Tensor<B, 2>, w: Tensor<B, 2>) -> Tensor<B, 2> {
        if !w.is_require_grad() {
            frozen_matmul(rows, w, self.products)
        } else if rows.dtype() == w.dtype() {
            rows.matmul(w)
        } else {
            rounded_matmul(rows, w)
        }
    }
}
