//! The `diffusion` kernel family (shaders/diffusion.wgsl): its entry points, the `#[repr(C)]` twins of its
//! uniform structs (sizes checked against naga by tests/params_layout.rs) and the constants the shader,
//! its CPU twin and its ops share.

use bytemuck::{Pod, Zeroable};

use super::Kernel;

/// Threads per workgroup (shaders/diffusion.wgsl `WG`).
pub const WG: usize = 256;

/// Uniform params of `SchedParams` in shaders/diffusion.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct SchedParams {
    /// T
    pub timesteps: u32,
    /// 0 linear, 1 cosine
    pub kind: u32,
    /// Linear
    pub beta_start: f32,
    /// Linear: (beta_end - beta_start) / (T - 1), 0 when T = 1
    pub delta: f32,
    /// Cosine: upper clip of beta
    pub max_beta: f32,
    /// Padding to the WGSL layout.
    pub _pad: u32,
    /// Cosine: D / 2pi = 1 / (4 T (1 + s)) in Q0.64 (lo, hi)
    pub turn_step: [u32; 2],
}

/// Uniform params of `QSampleParams` in shaders/diffusion.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct QSampleParams {
    /// B * D
    pub n: u32,
    /// D > 0
    pub row_len: u32,
    /// T
    pub timesteps: u32,
    /// B rounded up to 4
    pub eps_offset: u32,
    /// (lo, hi)
    pub seed: [u32; 2],
    /// Eps_offset + B * D rounded up to 4 (lo, hi)
    pub stride: [u32; 2],
}

/// Uniform params of `EmbedParams` in shaders/diffusion.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct EmbedParams {
    /// B * dim
    pub n: u32,
    /// WGSL field `dim`.
    pub dim: u32,
    /// Dim / 2
    pub half: u32,
    /// Padding to the WGSL layout.
    pub _pad: u32,
    /// Max_period^(-1 / half) in Q0.64 (lo, hi)
    pub ratio: [u32; 2],
}

/// Uniform params of `DdpmParams` in shaders/diffusion.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct DdpmParams {
    /// WGSL field `n`.
    pub n: u32,
    /// WGSL field `t`.
    pub t: u32,
    /// 0: the ε form; > 0: the posterior mean through x̂_0 clamped to [-clip, clip].
    pub clip: f32,
    /// Padding to the WGSL layout.
    pub _pad1: u32,
    /// (lo, hi)
    pub seed: [u32; 2],
    /// (lo, hi)
    pub offset: [u32; 2],
}

/// Uniform params of `DdimParams` in shaders/diffusion.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct DdimParams {
    /// WGSL field `n`.
    pub n: u32,
    /// WGSL field `t`.
    pub t: u32,
    /// WGSL field `t_prev`.
    pub t_prev: u32,
    /// 0: abar_prev = 1
    pub has_prev: u32,
    /// 0: no clipping
    pub clip: f32,
    /// Padding to the WGSL layout.
    pub _pad0: u32,
    /// Padding to the WGSL layout.
    pub _pad1: u32,
    /// Padding to the WGSL layout.
    pub _pad2: u32,
}

/// Uniform params of `VParams` in shaders/diffusion.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct VParams {
    /// B * D
    pub n: u32,
    /// D > 0
    pub row_len: u32,
    /// T
    pub timesteps: u32,
    /// WGSL field `mode`.
    pub mode: u32,
}

/// `SchedParams::kind` values.
pub const SCHED_LINEAR: u32 = 0;

/// Shared with shaders/diffusion.wgsl and the CPU twin.
pub const SCHED_COSINE: u32 = 1;

/// `VParams::mode` values.
pub const V_TO_EPS: u32 = 0;

/// Shared with shaders/diffusion.wgsl and the CPU twin.
pub const V_TARGET: u32 = 1;

/// Entry point `schedule` of shaders/diffusion.wgsl.
pub static SCHEDULE: Kernel = Kernel { shader: "diffusion", entry: "schedule" };

/// Entry point `q_sample` of shaders/diffusion.wgsl.
pub static Q_SAMPLE: Kernel = Kernel { shader: "diffusion", entry: "q_sample" };

/// Entry point `timestep_embedding` of shaders/diffusion.wgsl.
pub static TIMESTEP_EMBEDDING: Kernel = Kernel { shader: "diffusion", entry: "timestep_embedding" };

/// Entry point `ddpm_step` of shaders/diffusion.wgsl.
pub static DDPM_STEP: Kernel = Kernel { shader: "diffusion", entry: "ddpm_step" };

/// Entry point `ddim_step` of shaders/diffusion.wgsl.
pub static DDIM_STEP: Kernel = Kernel { shader: "diffusion", entry: "ddim_step" };

/// Entry point `v_convert` of shaders/diffusion.wgsl.
pub static V_CONVERT: Kernel = Kernel { shader: "diffusion", entry: "v_convert" };
