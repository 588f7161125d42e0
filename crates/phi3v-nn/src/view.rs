//! A scoped view of a model's weights, in the manner of candle's `VarBuilder`.
//!
//! Each block takes a [`WeightsView`] and asks it for its tensors by their short names
//! (`weight`, `bias`, `class_embedding`); it hands sub-blocks a view pushed one path segment
//! further (`vb.pp("self_attn")`). A tensor's full name in the weights is therefore spelt
//! once, by the nesting of the constructors, and that one naming serves three purposes:
//!
//! - **loading** ([`WeightsView::load`]): tensors are read from [`Weights`],
//!   with errors naming the tensor and the file;
//! - **random initialisation** ([`WeightsView::random`]): norm weights one, biases zero, the
//!   rest `N(0, std^2)` from the backend's generator, as Hugging Face initialises with
//!   `initializer_range`;
//! - **recording** ([`WeightsView::record`]): every tensor's name, stored shape and
//!   [`Init`] kind is appended to a [`Recorder`] in construction order, and the model's
//!   parameters stay lazy (never allocated). Test kits write random weights of any size
//!   from this list.
//!
//! Linear layers keep the path they were built under as their module name, so the walk
//! over named linears ([`crate::NamedLinears`]) needs no names of its own.

use std::cell::RefCell;
use std::fmt::Display;

use burn::module::{Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

use crate::mixed::MixedMatmul;
use crate::weights::{Weights, WeightsError};

/// How a tensor starts in a random model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// `N(0, std^2)`: weights, embeddings, separators.
    Normal,
    /// All ones: norm weights.
    Ones,
    /// All zeros: biases.
    Zeros,
}

/// One tensor of the weights as a [`Recorder`] saw it built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// The full tensor name in the weights (`model.layers.0.self_attn.qkv_proj.weight`).
    pub name: String,
    /// The shape in the weights, in PyTorch's layout (`[out, in]` for a linear weight).
    pub shape: Vec<usize>,
    pub init: Init,
}

/// Collects the tensors a model is built from, in construction order (see
/// [`WeightsView::record`]).
#[derive(Debug, Default)]
pub struct Recorder {
    specs: RefCell<Vec<TensorSpec>>,
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The tensors recorded so far, in construction order.
    pub fn into_specs(self) -> Vec<TensorSpec> {
        self.specs.into_inner()
    }

    fn push(&self, name: String, shape: &[usize], init: Init) {
        self.specs.borrow_mut().push(TensorSpec {
            name,
            shape: shape.to_vec(),
            init,
        });
    }
}

/// Where the tensors of a view come from.
#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    Load(&'a Weights),
    Random { std: f64 },
    Record(&'a Recorder),
}

/// A view of the weights under one module path (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct WeightsView<'a> {
    source: Source<'a>,
    /// Dot-separated module path; empty at the root.
    path: String,
}

impl<'a> WeightsView<'a> {
    /// Tensors read from [`Weights`].
    pub fn load(weights: &'a Weights) -> Self {
        Self::root(Source::Load(weights))
    }

    /// Random tensors: norm weights one, biases zero, the rest `N(0, std^2)` from the
    /// backend's generator, drawn in the model's layout (`[in, out]` for a linear weight).
    pub fn random(std: f64) -> Self {
        Self::root(Source::Random { std })
    }

    /// Records every tensor into `recorder` and builds the model with lazy parameters that
    /// are never allocated unless read: a model of the released size costs nothing to
    /// describe.
    pub fn record(recorder: &'a Recorder) -> Self {
        Self::root(Source::Record(recorder))
    }

    fn root(source: Source<'a>) -> Self {
        Self {
            source,
            path: String::new(),
        }
    }

    /// The view one path segment further down (`segment` may itself hold dots, or be empty
    /// for the same path).
    pub fn pp(&self, segment: impl Display) -> Self {
        Self {
            source: self.source,
            path: self.name(&segment.to_string()),
        }
    }

    /// This view's module path: a linear layer's Hugging Face module name.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The full tensor name of `leaf` under this view.
    pub fn name(&self, leaf: &str) -> String {
        match (self.path.is_empty(), leaf.is_empty()) {
            (true, _) => leaf.to_string(),
            (false, true) => self.path.clone(),
            (false, false) => format!("{}.{leaf}", self.path),
        }
    }

    /// Whether the weights hold `leaf` under this view. A random or recorded model holds
    /// every tensor it asks for, so this is always true for them.
    pub fn contains(&self, leaf: &str) -> bool {
        match self.source {
            Source::Load(weights) => weights.contains(&self.name(leaf)),
            Source::Random { .. } | Source::Record(_) => true,
        }
    }

    /// A view for tensors that the weights hold but the model never reads (CLIP's last
    /// layer behind Phi-3-V's `hidden_states[-2]`): only a recorder sees them, so written
    /// weights are complete, while loading skips them and random models draw nothing for
    /// them.
    pub fn unused(&self) -> Option<Self> {
        match self.source {
            Source::Record(_) => Some(self.clone()),
            Source::Load(_) | Source::Random { .. } => None,
        }
    }

    /// A float tensor stored as `shape`, held as it is stored.
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        leaf: &str,
        shape: [usize; D],
        init: Init,
        device: &B::Device,
    ) -> Result<Param<Tensor<B, D>>, WeightsError> {
        self.tensor_mapped(leaf, shape, shape, init, |t| t, device)
    }

    /// A float tensor stored as `stored` and held as `held` after `map` (a reshape or a
    /// transpose to the layout the model computes with). A random model draws `held`
    /// directly.
    pub fn tensor_mapped<B: Backend, const D: usize, const E: usize>(
        &self,
        leaf: &str,
        stored: [usize; D],
        held: [usize; E],
        init: Init,
        map: impl FnOnce(Tensor<B, D>) -> Tensor<B, E>,
        device: &B::Device,
    ) -> Result<Param<Tensor<B, E>>, WeightsError> {
        Ok(match self.source {
            Source::Load(weights) => {
                Param::from_tensor(map(weights.tensor(&self.name(leaf), stored, device)?))
            }
            Source::Random { std } => Param::from_tensor(random(held, init, std, device)),
            Source::Record(recorder) => {
                recorder.push(self.name(leaf), &stored, init);
                lazy(held, device)
            }
        })
    }

    /// A large 2-D tensor (the token embedding), read in the weights' matrix dtype (see
    /// [`Weights::set_storage`]); random as `N(0, std^2)`.
    pub fn matrix<B: Backend>(
        &self,
        leaf: &str,
        shape: [usize; 2],
        device: &B::Device,
    ) -> Result<Param<Tensor<B, 2>>, WeightsError> {
        match self.source {
            Source::Load(weights) => Ok(Param::from_tensor(weights.matrix(
                &self.name(leaf),
                shape,
                device,
            )?)),
            _ => self.tensor(leaf, shape, Init::Normal, device),
        }
    }

    /// A PyTorch `nn.Linear` weight, stored `[d_output, d_input]` and held as burn's
    /// `[d_input, d_output]`, in the matrix dtype; random as `N(0, std^2)`.
    pub fn linear_weight<B: MixedMatmul>(
        &self,
        leaf: &str,
        d_input: usize,
        d_output: usize,
        device: &B::Device,
    ) -> Result<Param<Tensor<B, 2>>, WeightsError> {
        match self.source {
            Source::Load(weights) => Ok(Param::from_tensor(weights.linear_weight(
                &self.name(leaf),
                d_input,
                d_output,
                device,
            )?)),
            _ => self.tensor_mapped(
                leaf,
                [d_output, d_input],
                [d_input, d_output],
                Init::Normal,
                |t| t.transpose(),
                device,
            ),
        }
    }
}

fn random<B: Backend, const D: usize>(
    shape: [usize; D],
    init: Init,
    std: f64,
    device: &B::Device,
) -> Tensor<B, D> {
    match init {
        Init::Normal => Tensor::random(shape, Distribution::Normal(0.0, std), device),
        Init::Ones => Tensor::ones(shape, device),
        Init::Zeros => Tensor::zeros(shape, device),
    }
}

/// A parameter that is allocated (as zeros) only if something reads it.
fn lazy<B: Backend, const D: usize>(shape: [usize; D], device: &B::Device) -> Param<Tensor<B, D>> {
    Param::uninitialized(
        ParamId::new(),
        move |device, require_grad| Tensor::zeros(shape, device).set_require_grad(require_grad),
        device.clone(),
        true,
        shape.into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::{save_f32, SINGLE_FILE};
    use std::collections::BTreeMap;

    type B = burn::backend::Flex;

    #[test]
    fn paths_join_with_dots_and_empty_segments_vanish() {
        let recorder = Recorder::new();
        let root = WeightsView::record(&recorder);
        assert_eq!(root.name("lm_head"), "lm_head");
        let layer = root.pp("model").pp("layers").pp(3);
        assert_eq!(layer.path(), "model.layers.3");
        assert_eq!(layer.pp("").path(), "model.layers.3");
        assert_eq!(layer.name("weight"), "model.layers.3.weight");
        assert_eq!(root.pp("").pp("a.b").name("c"), "a.b.c");
    }

    #[test]
    fn record_lists_weight_shapes_without_allocating() {
        let recorder = Recorder::new();
        let vb = WeightsView::record(&recorder).pp("proj");
        let w = vb
            .linear_weight::<B>("weight", 3, 5, &Default::default())
            .unwrap();
        let b = vb
            .tensor::<B, 1>("bias", [5], Init::Zeros, &Default::default())
            .unwrap();
        assert!(!w.is_initialized() && !b.is_initialized());
        assert!(vb.unused().is_some());
        assert_eq!(
            recorder.into_specs(),
            vec![
                TensorSpec {
                    name: "proj.weight".into(),
                    shape: vec![5, 3],
                    init: Init::Normal
                },
                TensorSpec {
                    name: "proj.bias".into(),
                    shape: vec![5],
                    init: Init::Zeros
                },
            ]
        );
    }

    #[test]
    fn load_reads_the_mapped_tensor_and_random_draws_the_held_shape() {
        let dir = tempfile::tempdir().unwrap();
        let mut map = BTreeMap::new();
        map.insert("a.g".to_string(), (vec![1, 1, 2], vec![3.0f32, 4.0]));
        save_f32(&dir.path().join(SINGLE_FILE), &map, None).unwrap();
        let weights = Weights::open(dir.path()).unwrap();
        let device = Default::default();
        let vb = WeightsView::load(&weights).pp("a");
        assert!(vb.contains("g") && !vb.contains("h") && vb.unused().is_none());
        let g = vb
            .tensor_mapped::<B, 3, 1>(
                "g",
                [1, 1, 2],
                [2],
                Init::Normal,
                |t| t.reshape([2]),
                &device,
            )
            .unwrap();
        assert_eq!(g.val().into_data().to_vec::<f32>().unwrap(), vec![3.0, 4.0]);
        let err = vb
            .tensor::<B, 1>("h", [2], Init::Ones, &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`a.h`"), "{err}");

        let random = WeightsView::random(0.5);
        let ones = random
            .tensor::<B, 1>("n", [3], Init::Ones, &device)
            .unwrap();
        assert_eq!(
            ones.val().into_data().to_vec::<f32>().unwrap(),
            vec![1.0; 3]
        );
        let w = random.linear_weight::<B>("w", 4, 6, &device).unwrap();
        assert_eq!(w.dims(), [4, 6]);
    }
}
