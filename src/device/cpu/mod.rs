//! The CPU engine: one twin per shader family, same names, same binding order as the WGSL, each
//! running a whole dispatch on the host with rayon. Each file reads side by side with its shader.
//!
//! This layer looks only down: the twins read their params structs and constants from
//! `crate::kernels::<family>` and use the host building blocks (`crate::host::philox`,
//! `crate::host::gemm`); `twin` maps a kernel of the registry to its twin, so a `Kernel` itself names no
//! engine. Helpers shared by several twins (parallel chunks, the AVX2 switch, fast f32 math) live here.

pub mod args;
pub mod attention;
pub mod batch;
pub mod bce_mean;
pub mod cast;
pub mod chnorm;
pub mod conv;
pub mod conv_acc;
pub mod conv_epilogue;
pub mod diffusion;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod fastmath;
pub mod gated;
pub mod layout;
pub mod loss;
pub mod matmul;
pub mod matmul_grouped;
pub mod muon;
pub mod norm;
pub mod optim;
pub mod optim_multi;
pub mod qknorm;
pub mod reduce;
pub mod resnorm;
pub mod rng;
pub mod rope;
pub mod sample;
pub mod softmax;
pub mod stream;

use rayon::prelude::*;

use crate::kernels::Kernel;
pub use args::{CpuArgs, CpuTwin};

/// The CPU twin of `k`, matched on (shader family, entry point); None for an entry point without one
/// (the device refuses to dispatch it on the CPU engine, naming the kernel).
pub fn twin(k: &Kernel) -> Option<CpuTwin> {
    // A variant (`family@variant`) computes what its family does: the family's twin serves it.
    let f: CpuTwin = match (crate::kernels::family_of(k.shader), k.entry) {
        // The small-tile variant computes the same results: one twin serves both.
        ("attention" | "attention_small", "attention_fwd") => attention::attention_fwd,
        ("attention" | "attention_small", "attention_bwd") => attention::attention_bwd,
        ("attention" | "attention_small", "attention_bwd_half") => attention::attention_bwd_half,
        ("batch", "text_windows") => batch::text_windows,
        ("cast", "cast_f32_to_f16") => cast::cast_f32_to_f16,
        ("cast", "cast_f16_to_f32") => cast::cast_f16_to_f32,
        ("chnorm", "chnorm_stats") => chnorm::chnorm_stats,
        ("chnorm", "chnorm_stats_apply") => chnorm::chnorm_stats_apply,
        ("chnorm", "chnorm_apply") => chnorm::chnorm_apply,
        ("chnorm", "chnorm_bwd_partial") => chnorm::chnorm_bwd_partial,
        ("chnorm", "chnorm_bwd_partial_act") => chnorm::chnorm_bwd_partial_act,
        ("chnorm", "chnorm_bwd_reduce") => chnorm::chnorm_bwd_reduce,
        ("chnorm", "chnorm_bwd_group") => chnorm::chnorm_bwd_group,
        ("chnorm", "chnorm_bwd_group_acc") => chnorm::chnorm_bwd_group_acc,
        ("chnorm", "chnorm_bwd_dx") => chnorm::chnorm_bwd_dx,
        ("chnorm", "chnorm_bwd_dx_acc") => chnorm::chnorm_bwd_dx_acc,
        ("chnorm", "chnorm_update_running") => chnorm::chnorm_update_running,
        ("conv", "conv2d_fwd") => conv::conv2d_fwd,
        ("conv", "conv2d_bwd_input") => conv::conv2d_bwd_input,
        ("conv", "conv2d_bwd_weight") => conv_acc::conv2d_bwd_weight,
        ("conv_epilogue", "conv_act_bias_bwd") => conv_epilogue::conv_act_bias_bwd,
        ("diffusion", "schedule") => diffusion::schedule,
        ("diffusion", "q_sample") => diffusion::q_sample,
        ("diffusion", "timestep_embedding") => diffusion::timestep_embedding,
        ("diffusion", "ddpm_step") => diffusion::ddpm_step,
        ("diffusion", "ddim_step") => diffusion::ddim_step,
        ("diffusion", "v_convert") => diffusion::v_convert,
        ("dropout", "dropout_fwd") => dropout::dropout_fwd,
        ("dropout", "dropout_bwd") => dropout::dropout_bwd,
        ("elementwise", "unary") => elementwise::unary,
        ("elementwise", "unary_backward") => elementwise::unary_backward,
        ("elementwise", "binary") => elementwise::binary,
        ("elementwise", "binary_same") => elementwise::binary_same,
        ("elementwise", "scalar") => elementwise::scalar,
        ("embedding", "embedding_fwd") => embedding::embedding_fwd,
        ("embedding", "embedding_bwd") => embedding::embedding_bwd,
        ("layout", "copy") => layout::copy,
        ("layout", "fill") => layout::fill,
        ("layout", "permute") => layout::permute,
        ("layout", "transpose_tiled") => layout::transpose_tiled,
        ("layout", "region") => layout::region,
        ("loss", "cross_entropy_fwd") => loss::cross_entropy_fwd,
        ("loss", "cross_entropy_bwd") => loss::cross_entropy_bwd,
        ("loss", "bce_logits_fwd") => loss::bce_logits_fwd,
        ("loss", "bce_logits_bwd") => loss::bce_logits_bwd,
        ("bce_mean", "bce_mean_fwd") => bce_mean::bce_mean_fwd,
        ("bce_mean", "bce_mean_bwd") => bce_mean::bce_mean_bwd,
        ("matmul", "matmul_tiled") | ("matmul_blocked", "matmul_blocked") => matmul::matmul_tiled,
        ("matmul", "matmul_tiled_vec4") => matmul::matmul_tiled_vec4,
        ("matmul", "matmul_small") => matmul::matmul_small,
        ("matmul_half", "matmul_half") => matmul::matmul_half,
        (
            "matmul",
            "matmul_tiled_bias_act"
            | "matmul_tiled_vec4_bias_act"
            | "matmul_small_bias_act"
            | "matmul_tiled_bias_act_keep"
            | "matmul_small_bias_act_keep",
        )
        | ("matmul_blocked", "matmul_blocked_bias_act" | "matmul_blocked_bias_act_keep") => matmul::matmul_bias_act,
        ("matmul_bias_bwd", "matmul_act_bias_bwd") => matmul::matmul_act_bias_bwd,
        ("matmul_pair", "matmul_pair") => matmul::matmul_pair,
        ("matmul_pair", "matmul_pair_silu_gate") => matmul::matmul_pair_silu_gate,
        ("matmul_pair_gate", "matmul_pair_silu_gate_bwd") => matmul::matmul_pair_silu_gate_bwd,
        ("norm", "layer_norm_fwd") => norm::layer_norm_fwd,
        ("norm", "layer_norm_fwd_stats") => norm::layer_norm_fwd_stats,
        ("norm", "layer_norm_bwd_dx") => norm::layer_norm_bwd_dx,
        ("norm", "layer_norm_bwd_partial") => norm::layer_norm_bwd_partial,
        ("norm", "layer_norm_bwd_params") => norm::layer_norm_bwd_params,
        ("matmul_grouped", "matmul_grouped") => matmul_grouped::matmul_grouped,
        ("muon", "muon_momentum") => muon::muon_momentum,
        ("muon", "muon_momentum_multi") | ("muon", "muon_momentum_multi_wide") => muon::muon_momentum_multi,
        ("muon", "muon_sumsq") => muon::muon_sumsq,
        ("muon", "muon_normalize") => muon::muon_normalize,
        ("muon", "muon_update") => muon::muon_update,
        ("muon", "muon_update_multi") | ("muon", "muon_update_multi_wide") => muon::muon_update_multi,
        ("optim", "advance_step") => optim::advance_step,
        ("optim", "sgd") => optim::sgd,
        ("optim", "adam") => optim::adam,
        ("optim", "sumsq_partial") => optim::sumsq_partial,
        ("optim", "clip_scale") => optim::clip_scale,
        ("optim", "clip_guard") => optim::clip_guard,
        ("optim", "clip_guard_scaled") => optim::clip_guard_scaled,
        ("optim", "ema") => optim::ema,
        ("optim", "guard_finite") => optim::guard_finite,
        ("optim", "adam_multi") | ("optim", "adam_multi_wide") => optim_multi::adam_multi,
        ("optim", "sgd_multi") => optim_multi::sgd_multi,
        ("optim", "ema_multi") | ("optim", "ema_multi_wide") => optim_multi::ema_multi,
        ("optim", "sumsq_multi") | ("optim", "sumsq_multi_wide") => optim_multi::sumsq_multi,
        ("reduce", "reduce_rows") => reduce::reduce_rows,
        ("reduce", "reduce_strided") => reduce::reduce_strided,
        ("rng", "bits") => rng::bits,
        ("rng", "uniform_f32") => rng::uniform_f32,
        ("rng", "normal") => rng::normal,
        ("rng", "per_element") => rng::per_element,
        ("rng", "uniform_step") => rng::uniform_step,
        ("rng", "normal_step") => rng::normal_step,
        ("rope", "rope_qkv") => rope::rope_qkv,
        ("gated", "silu_gate_fwd") => gated::silu_gate_fwd,
        ("gated", "silu_gate_bwd") => gated::silu_gate_bwd,
        ("gated", "silu_gate_bwd_half") => gated::silu_gate_bwd_half,
        ("resnorm", "add_layer_norm_fwd") => resnorm::add_layer_norm_fwd,
        ("resnorm", "layer_norm_bwd_fused") => resnorm::layer_norm_bwd_fused,
        ("resnorm", "layer_norm_bwd_fused_half") => resnorm::layer_norm_bwd_fused_half,
        ("qknorm", "qk_norm_fwd") => qknorm::qk_norm_fwd,
        ("qknorm", "qk_norm_bwd_dx") => qknorm::qk_norm_bwd_dx,
        ("qknorm", "qk_norm_bwd_params") => qknorm::qk_norm_bwd_params,
        ("qknorm", "qk_norm_bwd_fused") => qknorm::qk_norm_bwd_fused,
        ("qknorm", "qk_norm_bwd_dx_half") => qknorm::qk_norm_bwd_dx_half,
        ("qknorm", "qk_norm_bwd_params_half") => qknorm::qk_norm_bwd_params_half,
        ("qknorm", "qk_norm_bwd_fused_half") => qknorm::qk_norm_bwd_fused_half,
        ("sample", "gather_rows") => sample::gather_rows,
        ("sample", "gather_labels") => sample::gather_labels,
        ("softmax", "softmax_rows") => softmax::softmax_rows,
        _ => return None,
    };
    Some(f)
}

/// Elements per parallel task: big enough that rayon's per-task cost vanishes, small enough that both
/// cores get work on mid-sized tensors.
pub const CHUNK: usize = 1 << 14;

/// Runs `f(start_index, chunk)` over `out` in parallel chunks, each under `simd`: at least `CHUNK`
/// elements, and no more chunks than four per thread (fewer tasks for rayon to hand out on large
/// tensors; an elementwise loop's results do not depend on where it is split).
pub fn par_chunks<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync + Send) {
    par_chunks_min(out, CHUNK, f)
}

/// `par_chunks` with chunks of at least `min` elements (a multiple of `CHUNK`): loops that only move
/// memory split later, since one core already streams a mid-sized tensor about as fast as two.
pub fn par_chunks_min<T: Send>(out: &mut [T], min: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    if out.len() <= min {
        simd(|| f(0, out));
    } else {
        let chunk = out.len().div_ceil(4 * rayon::current_num_threads()).next_multiple_of(CHUNK).max(min);
        out.par_chunks_mut(chunk).enumerate().for_each(|(c, ch)| simd(|| f(c * chunk, ch)));
    }
}

/// Runs `f` compiled for AVX2 and FMA when the CPU has them (checked once), else as is. The build
/// targets baseline x86-64 (SSE2) so the binary runs anywhere; a loop inlined into `f` is vectorized
/// 8 lanes wide here instead of 4. Rust never contracts a·b + c into an FMA on its own, so both paths
/// round identically.
#[inline(always)]
pub fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: the features were detected on this CPU.
            return unsafe { with_avx2(f) };
        }
    }
    f()
}

/// Whether this CPU has AVX2 and FMA (checked once).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx2() -> bool {
    static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX2.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Whether this CPU has AVX-512F (checked once).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx512() -> bool {
    static AVX512: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX512.get_or_init(|| has_avx2() && is_x86_feature_detected!("avx512f"))
}

/// Walks the flat indices s, s + 1, ... of a row-major `shape`, keeping each element's offset under K
/// stride sets. The shaders decompose every flat index anew; stepping gives the same offsets without the
/// divisions. Ranks up to 8.
pub(crate) struct Odometer<'a, const K: usize> {
    shape: &'a [u32],
    strides: [&'a [u32]; K],
    idx: [usize; 8],
    /// The current element's offset under each stride set.
    pub at: [usize; K],
}

impl<'a, const K: usize> Odometer<'a, K> {
    /// Starts at flat index `s` of `shape` (the first `shape.len()` entries of each stride set count).
    pub(crate) fn new(s: usize, shape: &'a [u32], strides: [&'a [u32]; K]) -> Self {
        let mut idx = [0usize; 8];
        let mut rem = s;
        for d in (0..shape.len()).rev() {
            idx[d] = rem % shape[d] as usize;
            rem /= shape[d] as usize;
        }
        let at = strides.map(|st| (0..shape.len()).map(|d| idx[d] * st[d] as usize).sum());
        Odometer { shape, strides, idx, at }
    }

    /// Moves to the next flat index.
    #[inline]
    pub(crate) fn step(&mut self) {
        for d in (0..self.shape.len()).rev() {
            self.idx[d] += 1;
            for (a, st) in self.at.iter_mut().zip(&self.strides) {
                *a += st[d] as usize;
            }
            if self.idx[d] < self.shape[d] as usize {
                break;
            }
            for (a, st) in self.at.iter_mut().zip(&self.strides) {
                *a -= self.idx[d] * st[d] as usize;
            }
            self.idx[d] = 0;
        }
    }
}
