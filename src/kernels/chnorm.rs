//! The `chnorm` kernel family (shaders/chnorm.wgsl): its entry points, the `#[repr(C)]` twins of its
//! uniform structs (sizes checked against naga by tests/params_layout.rs) and the constants the shader,
//! its CPU twin and its ops share.

use bytemuck::{Pod, Zeroable};

use super::Kernel;

/// Uniform params of `ChnormParams` in shaders/chnorm.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ChnormParams {
    /// WGSL field `n`.
    pub n: u32,
    /// WGSL field `c`.
    pub c: u32,
    /// H·W, elements per plane.
    pub hw: u32,
    /// Interleaved chunks per plane (`plane_chunks`: a power of two, 1 <= chunks <= hw).
    pub chunks: u32,
    /// Channels per stat group: 1 for batch norm, C / G for group norm.
    pub cg: u32,
    /// 1: statistics per sample (group norm); 0: over the batch (batch norm).
    pub per_sample: u32,
    /// chnorm_apply: 1 when the rstd binding holds variances (eval mode).
    pub var_in: u32,
    /// Padding to the WGSL layout.
    pub _pad0: u32,
    /// WGSL field `eps`.
    pub eps: f32,
    /// Padding to the WGSL layout.
    pub _pad1: [u32; 3],
}

/// Uniform params of `RunningParams` in shaders/chnorm.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RunningParams {
    /// WGSL field `c`.
    pub c: u32,
    /// WGSL field `momentum`.
    pub momentum: f32,
    /// WGSL field `eps`.
    pub eps: f32,
    /// count / (count - 1): the biased batch variance to the unbiased one.
    pub unbias: f32,
}

/// Entry point `chnorm_stats_partial` of shaders/chnorm.wgsl.
pub static CHNORM_STATS_PARTIAL: Kernel = Kernel { shader: "chnorm", entry: "chnorm_stats_partial" };

/// Entry point `chnorm_stats_final` of shaders/chnorm.wgsl.
pub static CHNORM_STATS_FINAL: Kernel = Kernel { shader: "chnorm", entry: "chnorm_stats_final" };

/// Entry point `chnorm_apply` of shaders/chnorm.wgsl.
pub static CHNORM_APPLY: Kernel = Kernel { shader: "chnorm", entry: "chnorm_apply" };

/// Entry point `chnorm_bwd_partial` of shaders/chnorm.wgsl.
pub static CHNORM_BWD_PARTIAL: Kernel = Kernel { shader: "chnorm", entry: "chnorm_bwd_partial" };

/// Entry point `chnorm_bwd_params` of shaders/chnorm.wgsl.
pub static CHNORM_BWD_PARAMS: Kernel = Kernel { shader: "chnorm", entry: "chnorm_bwd_params" };

/// Entry point `chnorm_bwd_coeffs` of shaders/chnorm.wgsl.
pub static CHNORM_BWD_COEFFS: Kernel = Kernel { shader: "chnorm", entry: "chnorm_bwd_coeffs" };

/// Entry point `chnorm_bwd_dx` of shaders/chnorm.wgsl.
pub static CHNORM_BWD_DX: Kernel = Kernel { shader: "chnorm", entry: "chnorm_bwd_dx" };

/// Entry point `chnorm_update_running` of shaders/chnorm.wgsl.
pub static CHNORM_UPDATE_RUNNING: Kernel = Kernel { shader: "chnorm", entry: "chnorm_update_running" };
