//! Ops on tensors: shape checks, output allocation and the dispatch of one kernel each. Each family
//! file holds the `#[repr(C)]` params structs (twins of the WGSL structs, sizes checked by a test),
//! the `Kernel` definitions tying entry points to CPU twins, and the functions users call.

pub mod attention;
pub mod batch;
pub mod chnorm;
pub mod conv;
pub mod diffusion;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod layout;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod reduce;
pub mod rng;
pub mod sample;
pub mod softmax;

use crate::device::{Device, Dispatch};
use crate::error::{Error, Result};
use crate::kernels::{groups_1d, Kernel};
use crate::tensor::{DType, Tensor};

/// Every kernel of every family (tests check that each WGSL entry point is here; tools walk it).
pub static ALL_KERNELS: &[&Kernel] = &[
    &attention::ATTENTION_FWD,
    &attention::ATTENTION_BWD_DQ,
    &attention::ATTENTION_BWD_DKV,
    &elementwise::UNARY,
    &elementwise::UNARY_BACKWARD,
    &elementwise::BINARY,
    &elementwise::BINARY_SAME,
    &elementwise::SCALAR,
    &conv::CONV2D_FWD,
    &conv::CONV2D_BWD_INPUT,
    &conv::CONV2D_BWD_WEIGHT,
    &dropout::DROPOUT_FWD,
    &dropout::DROPOUT_BWD,
    &layout::COPY,
    &layout::FILL,
    &layout::PERMUTE,
    &layout::TRANSPOSE_TILED,
    &layout::REGION,
    &loss::CROSS_ENTROPY_FWD,
    &loss::CROSS_ENTROPY_BWD,
    &loss::BCE_LOGITS_FWD,
    &loss::BCE_LOGITS_BWD,
    &matmul::MATMUL_TILED,
    &matmul::MATMUL_TILED_VEC4,
    &matmul::MATMUL_SMALL,
    &optim::ADVANCE_STEP,
    &optim::SGD,
    &optim::ADAM,
    &optim::SUMSQ_PARTIAL,
    &optim::CLIP_SCALE,
    &optim::EMA,
    &reduce::REDUCE_ROWS,
    &reduce::REDUCE_STRIDED,
    &rng::BITS,
    &rng::UNIFORM,
    &rng::NORMAL,
    &rng::PER_ELEMENT,
    &rng::UNIFORM_STEP,
    &rng::NORMAL_STEP,
    &sample::GATHER_ROWS,
    &sample::GATHER_LABELS,
    &diffusion::SCHEDULE,
    &diffusion::Q_SAMPLE,
    &diffusion::TIMESTEP_EMBEDDING,
    &diffusion::DDPM_STEP,
    &diffusion::DDIM_STEP,
    &diffusion::V_CONVERT,
    &softmax::SOFTMAX_ROWS,
    &norm::LAYER_NORM_FWD,
    &norm::LAYER_NORM_BWD_DX,
    &norm::LAYER_NORM_BWD_PARTIAL,
    &norm::LAYER_NORM_BWD_PARAMS,
    &embedding::EMBEDDING_FWD,
    &embedding::EMBEDDING_BWD,
    &batch::TEXT_WINDOWS,
    &chnorm::CHNORM_STATS_PARTIAL,
    &chnorm::CHNORM_STATS_FINAL,
    &chnorm::CHNORM_APPLY,
    &chnorm::CHNORM_BWD_PARTIAL,
    &chnorm::CHNORM_BWD_PARAMS,
    &chnorm::CHNORM_BWD_COEFFS,
    &chnorm::CHNORM_BWD_DX,
    &chnorm::CHNORM_UPDATE_RUNNING,
];

pub(crate) fn want_dtype(op: &'static str, t: &Tensor, want: DType) -> Result<()> {
    if t.dtype != want {
        return Err(Error::DType { op, got: t.dtype.name(), want: want.name() });
    }
    Ok(())
}

/// Dispatches a 1-D kernel over `n` elements (one invocation each).
pub(crate) fn launch_1d<P: bytemuck::Pod>(
    dev: &Device,
    k: &'static Kernel,
    p: &P,
    bufs: &[&crate::device::Buffer],
    n: usize,
) -> Result<()> {
    let wg = k.workgroup_size()[0];
    dev.dispatch(Dispatch::new(k, p, bufs, groups_1d(n, wg, dev.max_groups_per_dim())))
}

/// u32 fields of params structs; shapes over u32 are refused with a clear error.
pub(crate) fn u32_of(op: &'static str, what: &str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::invalid(op, format!("{what} = {v} does not fit in 32 bits")))
}
