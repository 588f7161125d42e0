//! The memory-efficient attention against the naive reference path, forward and
//! gradients, on `Autodiff<Flex>`.
//!
//! Tolerances: 1e-5 absolute on outputs and 1e-4 on gradients, the f32 budget for
//! reordered sums over a few hundred keys (the tiled kernel adds tile partial sums, the
//! naive one a whole row at once). Tile sizes are chosen to leave uneven remainders.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Bool, Tensor, TensorData};
use phi3v_nn::attention::{autodiff_backward_runs, AttentionKernel, AttentionMask};
use phi3v_nn::{attention, naive_attention};
use phi3v_testkit::tensor_max_diff as max_diff;

type B = Autodiff<Flex>;

const FORWARD_TOL: f32 = 1e-5;
const GRAD_TOL: f32 = 1e-4;

/// Deterministic values in [-scale, scale) from a seed (a small LCG), so tests do not
/// race on burn's global RNG.
fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn tensor(seed: u64, shape: [usize; 4], scale: f32) -> Tensor<B, 4> {
    let n = shape.iter().product();
    Tensor::from_data(
        TensorData::new(values(seed, n, scale), shape),
        &Default::default(),
    )
}

#[derive(Clone, Debug)]
struct Case {
    batch: usize,
    heads: usize,
    q_len: usize,
    past: usize,
    head_dim: usize,
    causal: bool,
    window: Option<usize>,
    /// Per batch row: (leading padding keys, trailing padding keys).
    padding: Option<Vec<(usize, usize)>>,
    block_q: usize,
    block_k: usize,
    /// Spread of the random q and k: larger values give peakier softmax rows.
    input_scale: f32,
}

impl Case {
    fn new(q_len: usize, head_dim: usize) -> Self {
        Self {
            batch: 1,
            heads: 2,
            q_len,
            past: 0,
            head_dim,
            causal: true,
            window: None,
            padding: None,
            block_q: 16,
            block_k: 24,
            input_scale: 1.0,
        }
    }

    fn k_len(&self) -> usize {
        self.past + self.q_len
    }

    fn mask(&self) -> AttentionMask<B> {
        let base = if self.causal {
            AttentionMask::causal(self.past)
        } else {
            AttentionMask::none()
        };
        let k_len = self.k_len();
        let padding = self.padding.as_ref().map(|rows| {
            let flags: Vec<bool> = rows
                .iter()
                .flat_map(|&(lead, trail)| (0..k_len).map(move |j| j < lead || j >= k_len - trail))
                .collect();
            Tensor::<B, 2, Bool>::from_data(
                TensorData::new(flags, [rows.len(), k_len]),
                &Default::default(),
            )
        });
        base.with_sliding_window(self.window).with_padding(padding)
    }
}

/// Runs `kernel` on the case's inputs and returns the output and the gradients of
/// `sum(out * w)` with respect to q, k and v.
fn run(case: &Case, kernel: AttentionKernel) -> [Tensor<Flex, 4>; 4] {
    let (b, h, d) = (case.batch, case.heads, case.head_dim);
    let q = tensor(1, [b, h, case.q_len, d], case.input_scale).require_grad();
    let k = tensor(2, [b, h, case.k_len(), d], case.input_scale).require_grad();
    let v = tensor(3, [b, h, case.k_len(), d], 1.0).require_grad();
    let w = tensor(4, [b, h, case.q_len, d], 1.0);
    let scale = 1.0 / (d as f64).sqrt();
    let out = attention(q.clone(), k.clone(), v.clone(), &case.mask(), scale, kernel);
    let grads = (out.clone() * w).sum().backward();
    [
        out.inner(),
        q.grad(&grads).expect("q has a gradient"),
        k.grad(&grads).expect("k has a gradient"),
        v.grad(&grads).expect("v has a gradient"),
    ]
}

fn check(case: Case) {
    let kernel = AttentionKernel::MemoryEfficient {
        block_q: case.block_q,
        block_k: case.block_k,
    };
    let [out, dq, dk, dv] = run(&case, kernel);
    let [out_ref, dq_ref, dk_ref, dv_ref] = run(&case, AttentionKernel::Naive);
    let errors = [
        max_diff(out, out_ref),
        max_diff(dq, dq_ref),
        max_diff(dk, dk_ref),
        max_diff(dv, dv_ref),
    ];
    eprintln!(
        "{case:?}: max |tiled - naive| out {:e}, dq {:e}, dk {:e}, dv {:e}",
        errors[0], errors[1], errors[2], errors[3]
    );
    assert!(
        errors[0] <= FORWARD_TOL,
        "forward differs by {:e}",
        errors[0]
    );
    for (name, e) in ["dq", "dk", "dv"].iter().zip(&errors[1..]) {
        assert!(*e <= GRAD_TOL, "{name} differs by {e:e}");
    }
}

#[test]
fn short_causal_head_dim_64() {
    check(Case {
        block_q: 3,
        block_k: 4,
        ..Case::new(7, 64)
    });
}

#[test]
fn causal_head_dim_96_uneven_tiles() {
    check(Case::new(64, 96));
}

#[test]
fn causal_with_past_offset() {
    check(Case {
        past: 20,
        block_q: 2,
        block_k: 7,
        ..Case::new(5, 64)
    });
}

#[test]
fn single_query_decode_step() {
    check(Case {
        past: 63,
        block_q: 1,
        block_k: 10,
        ..Case::new(1, 96)
    });
}

#[test]
fn sliding_window() {
    check(Case {
        window: Some(10),
        block_q: 8,
        block_k: 12,
        ..Case::new(64, 96)
    });
}

#[test]
fn left_padding_with_fully_masked_rows() {
    check(Case {
        batch: 2,
        padding: Some(vec![(9, 0), (0, 0)]),
        block_q: 16,
        block_k: 16,
        ..Case::new(64, 64)
    });
}

#[test]
fn padding_window_and_past_together() {
    check(Case {
        batch: 2,
        past: 30,
        window: Some(16),
        padding: Some(vec![(35, 0), (3, 0)]),
        block_q: 5,
        block_k: 9,
        ..Case::new(12, 96)
    });
}

#[test]
fn bidirectional_with_trailing_padding() {
    check(Case {
        batch: 2,
        causal: false,
        padding: Some(vec![(0, 0), (0, 10)]),
        block_q: 13,
        block_k: 11,
        ..Case::new(50, 64)
    });
}

#[test]
fn every_key_padded() {
    check(Case {
        batch: 2,
        causal: false,
        padding: Some(vec![(20, 0), (0, 0)]),
        block_q: 6,
        block_k: 7,
        ..Case::new(20, 64)
    });
}

#[test]
fn long_causal_head_dim_96() {
    check(Case {
        heads: 1,
        block_q: 128,
        block_k: 96,
        ..Case::new(600, 96)
    });
}

#[test]
fn long_window_and_padding_head_dim_64() {
    check(Case {
        batch: 2,
        heads: 1,
        window: Some(256),
        padding: Some(vec![(37, 0), (0, 0)]),
        block_q: 100,
        block_k: 64,
        ..Case::new(600, 64)
    });
}

#[test]
fn long_with_default_tiles() {
    check(Case {
        heads: 1,
        block_q: phi3v_nn::attention::DEFAULT_BLOCK_Q,
        block_k: phi3v_nn::attention::DEFAULT_BLOCK_K,
        padding: Some(vec![(5, 0)]),
        ..Case::new(600, 96)
    });
}

#[test]
fn peaked_scores_rescale_exactly() {
    // Scores spread over tens of units, so the running maximum jumps between tiles.
    check(Case {
        input_scale: 3.0,
        padding: Some(vec![(4, 0)]),
        block_q: 32,
        block_k: 40,
        ..Case::new(200, 96)
    });
}

#[test]
fn gradients_flow_through_the_custom_node() {
    let before = autodiff_backward_runs();
    let case = Case::new(40, 64);
    let [_, dq, dk, dv] = run(&case, AttentionKernel::memory_efficient());
    assert_eq!(
        autodiff_backward_runs(),
        before + 1,
        "the memory-efficient backward did not run"
    );
    for g in [dq, dk, dv] {
        let sum: f32 = g.abs().sum().into_scalar();
        assert!(sum > 0.0 && sum.is_finite(), "degenerate gradient {sum}");
    }
    // The naive path is decomposed by autodiff and does not use the node.
    let before = autodiff_backward_runs();
    run(&case, AttentionKernel::Naive);
    assert_eq!(autodiff_backward_runs(), before);
}

#[test]
fn auto_picks_by_key_count() {
    let auto = AttentionKernel::Auto { threshold: 1024 };
    assert_eq!(auto.resolve(1024), AttentionKernel::Naive);
    assert_eq!(auto.resolve(1025), AttentionKernel::memory_efficient());
    assert_eq!(
        AttentionKernel::Naive.resolve(1 << 20),
        AttentionKernel::Naive
    );
}

#[test]
fn untracked_inputs_give_the_same_output() {
    let case = Case {
        padding: Some(vec![(3, 0)]),
        ..Case::new(30, 64)
    };
    let q = tensor(1, [1, 2, 30, 64], 1.0);
    let k = tensor(2, [1, 2, 30, 64], 1.0);
    let v = tensor(3, [1, 2, 30, 64], 1.0);
    let mask = case.mask();
    let tiled = attention(
        q.clone(),
        k.clone(),
        v.clone(),
        &mask,
        0.125,
        AttentionKernel::memory_efficient(),
    );
    let naive = attention(q, k, v, &mask, 0.125, AttentionKernel::Naive);
    assert!(max_diff(tiled.inner(), naive.inner()) <= FORWARD_TOL);
}

#[test]
fn naive_attention_is_unchanged() {
    // The dense-mask entry point still takes a `[batch, 1, q, k]` mask.
    let device = Default::default();
    let mask = phi3v_nn::causal_mask::<Flex>(4, 0, None, None, &device);
    let q = tensor(5, [1, 1, 4, 8], 1.0).inner();
    let out = naive_attention(q.clone(), q.clone(), q, Some(mask), 1.0);
    assert_eq!(out.dims(), [1, 1, 4, 8]);
}
