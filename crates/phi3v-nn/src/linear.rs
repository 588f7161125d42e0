//! A linear layer stored as burn lays it out (`[in, out]`), loadable from PyTorch's
//! `[out, in]` weights.
//!
//! Both the decoder and the vision tower use this one type, so that adapters added to
//! linear layers (LoRA) reach every projection through a single place.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor};

use crate::lora::LoraAdapter;
use crate::mixed::{rounded_matmul, MixedMatmul};
use crate::view::{Init, WeightsView};
use crate::weights::WeightsError;

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
    /// A weight stored in a narrower dtype than `x` (a frozen bf16 base, see
    /// [`Linear::cast_weight`]) goes through the backend's [`MixedMatmul`]: on flex the bf16
    /// values are read in place and accumulated in f32, without an f32 copy of the weight,
    /// and under autodiff the product is one node that saves nothing but the weight it
    /// already holds. A narrow weight that still requires a gradient (not a frozen base)
    /// takes the differentiable path: `x` rounded to the weight's dtype and back.
    ///
    /// # Shapes
    /// - `x`: `[..., d_input]`
    /// - returns `[..., d_output]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let weight = self.weight.val();
        let dims = x.dims();
        let [d_input, d_output] = weight.dims();
        // Every product runs on 2-D rows. burn's `module::linear` would reshape the weight
        // to x's rank, and the weight is the transposed view of PyTorch's `[out, in]`
        // layout: reshaping a non-contiguous tensor makes flex copy the whole weight on
        // every call (5% of a LoRA step at the released widths), where a 2-D product
        // reads it through its strides.
        let rows = x
            .clone()
            .reshape([dims.iter().product::<usize>() / d_input, d_input]);
        let y = if x.dtype() == weight.dtype() {
            rows.matmul(weight)
        } else if weight.is_require_grad() {
            rounded_matmul(rows, weight)
        } else {
            B::mixed_matmul(rows, weight)
        };
        let mut out_dims = dims;
        out_dims[D - 1] = d_output;
        let y = y.reshape(out_dims);
        let base = match self.bias.as_ref().map(|b| b.val()) {
            Some(b) => y + b.unsqueeze(),
            None => y,
        };
        match &self.lora {
            Some(lora) => base + lora.forward(x),
            None => base,
        }
    }
}
