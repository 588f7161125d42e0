//! The memory-efficient attention as fused CubeCL kernels, forward and backward, for the
//! GPU backends (wgpu and CUDA).
//!
//! On these backends the tiled kernel of [`super::tiled`] is hundreds of small launches
//! per layer (a matmul, a mask, a softmax and a merge per tile), and burn's own fused
//! attention has no backward. These kernels do what the tiled kernel and its backward do,
//! in three launches, with the mask generated from its rules inside the kernel:
//!
//! - [`flash_forward`]: one cube per block of [`ROWS`] queries of one (batch, head), one
//!   unit per query. The key and value tiles pass through shared memory, [`KEY_TILE`]
//!   keys at a time; each unit keeps its scaled query and its output in registers and
//!   merges each tile into its row by the online softmax. It writes the output and the
//!   row's log-sum-exp, the only state the backward needs besides the inputs.
//! - The backward is FlashAttention-2's, split in two launches so that no gradient is
//!   accumulated across cubes (no float atomics, which wgpu lacks), at the price of
//!   recomputing the scores twice:
//!   - [`flash_key_grads`]: one unit per key, which walks the query tiles and sums
//!     `dV_j += p_ij dO_i` and `dK_j += ds_ij scale q_i`;
//!   - [`flash_query_grads`]: one unit per query, which walks the key tiles and sums
//!     `dq_i += scale ds_ij k_j`.
//!
//!   With `p_ij = exp(scale q_i.k_j - lse_i)` (exact, from the saved log-sum-exp),
//!   `D_i = dO_i.O_i` and `ds_ij = p_ij (dO_i.v_j - D_i)`.
//!
//! A cube visits only the tiles its rows can see: a causal mask ends the walk at the
//! cube's last query, a sliding window starts it at its first query's window, so a causal
//! forward does about half the work. Masked keys get no weight; rows that see no key
//! leave the kernel with a zero output and [`EMPTY_ROW_LSE`], and the caller gives them
//! the tiled kernel's answer (the mean of the values, and its uniform gradient), which is
//! known from the mask's host-side rules.
//!
//! Everything is computed in the tensors' float type (f32 on our backends), with each
//! unit summing its own row in a fixed order, so results do not depend on scheduling.

mod kernels;

use burn::tensor::{Bool, Tensor};
use burn_cubecl::cubecl::prelude::{CubeCount, CubeDim};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};

use super::backend::AttentionResiduals;
use super::backward::empty_rows_value_grad;
use super::mask::AttentionMask;
use super::tiled::{TiledOptions, EMPTY_ROW_LSE};
use kernels::{flash_forward_kernel, flash_key_grads_kernel, flash_query_grads_kernel};

/// Queries per cube in the forward and the query-gradient kernel, and keys per cube in
/// the key-gradient kernel: one unit each.
pub const ROWS: usize = 64;
/// Keys (forward, query gradients) or queries (key gradients) staged in shared memory
/// at a time: two `[KEY_TILE, head_dim]` tiles and two `[KEY_TILE]` rows.
pub const KEY_TILE: usize = 32;
/// The largest head dimension the kernels take. Each unit keeps up to four rows of it in
/// registers, and the shared tiles (4 * 32 * (2 * 120 + 2) bytes, 30.3 KiB in f32) stay
/// within every backend's shared memory (Metal's, 32 KiB, is the smallest). Phi-3's head
/// dimension is 96, CLIP ViT-L's 64.
pub const MAX_HEAD_DIM: usize = 120;

type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;
/// A float tensor of rank 4 on a CubeCL backend.
type Cube4<R, F, I, BT> = Tensor<Cube<R, F, I, BT>, 4>;
/// The forward's output and log-sum-exp.
type OutputAndLse<R, F, I, BT> = (Cube4<R, F, I, BT>, Cube4<R, F, I, BT>);

fn primitive<R, F, I, BT>(tensor: Cube4<R, F, I, BT>) -> CubeTensor<R>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    tensor.into_primitive().tensor()
}

/// The padding as the kernels read it, `[batch or 1, k_len]` floats, 1 at padding; a
/// one-element placeholder (never read) without padding.
fn padding_arg<R, F, I, BT>(
    mask: &AttentionMask<Cube<R, F, I, BT>>,
    device: &R::Device,
) -> CubeTensor<R>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let padding = match mask.padding() {
        Some(padding) => padding.clone().float(),
        None => Tensor::zeros([1, 1], device),
    };
    padding.into_primitive().tensor()
}

/// Whether the fused kernels take these inputs: values shaped like keys, and a head
/// dimension of at most [`MAX_HEAD_DIM`].
///
/// # Shapes
/// - `q`: `[batch, heads, q_len, head_dim]`; `k`, `v`: `[batch, heads, k_len, head_dim]`
pub(crate) fn takes<B: burn::tensor::backend::Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
) -> bool {
    q.dims()[3] <= MAX_HEAD_DIM && k.dims()[3] == q.dims()[3] && v.dims() == k.dims()
}

/// Checks the head dimension and returns the launch grid for `len` rows per (batch, head).
fn grid(batch: usize, heads: usize, len: usize, head_dim: usize) -> (CubeCount, CubeDim) {
    assert!(
        head_dim <= MAX_HEAD_DIM,
        "the fused attention kernels take a head dimension of at most {MAX_HEAD_DIM}, got \
         {head_dim}"
    );
    let count = CubeCount::Static(len.div_ceil(ROWS) as u32, (batch * heads) as u32, 1);
    (count, CubeDim::new_1d(ROWS as u32))
}

/// The fused forward: the output and the per-row log-sum-exp, as
/// [`tiled_forward`](super::tiled_forward) gives them.
///
/// # Shapes
/// - `q`: `[batch, heads, q_len, head_dim]`
/// - `k`, `v`: `[batch, heads, k_len, head_dim]`
/// - returns `[batch, heads, q_len, head_dim]` and `[batch, heads, q_len, 1]`
pub fn flash_forward<R, F, I, BT>(
    q: Cube4<R, F, I, BT>,
    k: Cube4<R, F, I, BT>,
    v: Cube4<R, F, I, BT>,
    mask: &AttentionMask<Cube<R, F, I, BT>>,
    options: TiledOptions,
) -> OutputAndLse<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let [batch, heads, q_len, head_dim] = q.dims();
    let k_len = k.dims()[2];
    assert_eq!(
        k.dims(),
        [batch, heads, k_len, head_dim],
        "keys must be like q"
    );
    assert_eq!(
        v.dims(),
        k.dims(),
        "the fused kernels take values shaped like keys"
    );
    mask.check(batch, k_len);
    let device = q.device();
    if q_len == 0 || k_len == 0 {
        return (
            Tensor::zeros([batch, heads, q_len, head_dim], &device),
            Tensor::full([batch, heads, q_len, 1], EMPTY_ROW_LSE, &device),
        );
    }
    let out = Cube4::<R, F, I, BT>::empty([batch, heads, q_len, head_dim], &device);
    let lse = Cube4::<R, F, I, BT>::empty([batch, heads, q_len, 1], &device);
    let padding = padding_arg(mask, &device);
    let (out_p, lse_p) = (primitive(out.clone()), primitive(lse.clone()));
    let client = out_p.client.clone();
    let dtype = out_p.dtype;
    let (count, dim) = grid(batch, heads, q_len, head_dim);
    flash_forward_kernel::launch::<R>(
        &client,
        count,
        dim,
        primitive(q).into_tensor_arg(),
        primitive(k).into_tensor_arg(),
        primitive(v.clone()).into_tensor_arg(),
        padding.into_tensor_arg(),
        out_p.into_tensor_arg(),
        lse_p.into_tensor_arg(),
        options.scale as f32,
        mask.past_len() as u32,
        mask.sliding_window().unwrap_or(0) as u32,
        head_dim,
        mask.is_causal(),
        mask.sliding_window().is_some(),
        mask.padding().is_some(),
        dtype.into(),
    );
    let out = match empty_rows(mask, &lse, k_len) {
        Some(rows) => {
            let shape = out.dims();
            out.mask_where(rows.expand(shape), v.mean_dim(2).expand(shape))
        }
        None => out,
    };
    (out, lse)
}

/// The fused backward: the gradients of `q`, `k` and `v`, as
/// [`tiled_backward`](super::tiled_backward) gives them.
///
/// # Shapes
/// - `saved`: as [`AttentionResiduals`] documents
/// - `grad`: `[batch, heads, q_len, head_dim]`, the gradient of the output
/// - returns `[dq, dk, dv]`, shaped like `q`, `k`, `v`
pub fn flash_backward<R, F, I, BT>(
    saved: AttentionResiduals<Cube<R, F, I, BT>>,
    grad: Cube4<R, F, I, BT>,
    mask: &AttentionMask<Cube<R, F, I, BT>>,
    options: TiledOptions,
) -> [Cube4<R, F, I, BT>; 3]
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let AttentionResiduals { q, k, v, out, lse } = saved;
    let [batch, heads, q_len, head_dim] = q.dims();
    let k_len = k.dims()[2];
    assert_eq!(
        v.dims(),
        k.dims(),
        "the fused kernels take values shaped like keys"
    );
    if q_len == 0 || k_len == 0 {
        return [q.zeros_like(), k.zeros_like(), v.zeros_like()];
    }
    let device = q.device();
    // D_i = dO_i . O_i, the softmax backward's row term.
    let row_dot = (grad.clone() * out).sum_dim(3);
    let dq = Cube4::<R, F, I, BT>::empty(q.dims(), &device);
    let dk = Cube4::<R, F, I, BT>::empty(k.dims(), &device);
    let dv = Cube4::<R, F, I, BT>::empty(v.dims(), &device);
    let padding = padding_arg(mask, &device);
    let saved_lse = lse.clone();
    let [q_p, k_p, v_p, g_p, lse_p, dot_p] = [q, k, v, grad.clone(), lse, row_dot].map(primitive);
    let [dq_p, dk_p, dv_p] = [dq.clone(), dk.clone(), dv.clone()].map(primitive);
    let client = dq_p.client.clone();
    let dtype = dq_p.dtype;
    let scale = options.scale as f32;
    let (past_len, window) = (
        mask.past_len() as u32,
        mask.sliding_window().unwrap_or(0) as u32,
    );
    let (causal, windowed) = (mask.is_causal(), mask.sliding_window().is_some());
    let padded = mask.padding().is_some();

    let (count, dim) = grid(batch, heads, q_len, head_dim);
    flash_query_grads_kernel::launch::<R>(
        &client,
        count,
        dim,
        q_p.clone().into_tensor_arg(),
        k_p.clone().into_tensor_arg(),
        v_p.clone().into_tensor_arg(),
        g_p.clone().into_tensor_arg(),
        lse_p.clone().into_tensor_arg(),
        dot_p.clone().into_tensor_arg(),
        padding.clone().into_tensor_arg(),
        dq_p.into_tensor_arg(),
        scale,
        past_len,
        window,
        head_dim,
        causal,
        windowed,
        padded,
        dtype.into(),
    );
    let (count, dim) = grid(batch, heads, k_len, head_dim);
    flash_key_grads_kernel::launch::<R>(
        &client,
        count,
        dim,
        q_p.into_tensor_arg(),
        k_p.into_tensor_arg(),
        v_p.into_tensor_arg(),
        g_p.into_tensor_arg(),
        lse_p.into_tensor_arg(),
        dot_p.into_tensor_arg(),
        padding.into_tensor_arg(),
        dk_p.into_tensor_arg(),
        dv_p.into_tensor_arg(),
        scale,
        past_len,
        window,
        head_dim,
        causal,
        windowed,
        padded,
        dtype.into(),
    );
    let dv = match empty_rows(mask, &saved_lse, k_len) {
        Some(rows) => dv + empty_rows_value_grad(&grad, rows, k_len),
        None => dv,
    };
    [dq, dk, dv]
}

/// The rows that see no key, which the tiled kernel gives the mean of the values (and
/// their uniform gradient): `[batch or 1, heads or 1, q_len, 1]`, `None` when no row can
/// be one. With padding they are read from the log-sum-exp on the device, where the
/// kernels wrote [`EMPTY_ROW_LSE`] for them, so that the padding never has to come to
/// the host; otherwise they follow from the structural rules alone.
///
/// # Shapes
/// - `lse`: `[batch, heads, q_len, 1]`
fn empty_rows<R, F, I, BT>(
    mask: &AttentionMask<Cube<R, F, I, BT>>,
    lse: &Cube4<R, F, I, BT>,
    k_len: usize,
) -> Option<Tensor<Cube<R, F, I, BT>, 4, Bool>>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    if mask.padding().is_some() {
        return Some(lse.clone().greater_equal_elem(EMPTY_ROW_LSE));
    }
    let q_len = lse.dims()[2];
    mask.fully_masked_rows(q_len, k_len, &lse.device())
        .map(|rows| rows.reshape([1, 1, q_len, 1]))
}
