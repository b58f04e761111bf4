//! The `norm` kernel family (shaders/norm.wgsl): its entry points, the `#[repr(C)]` twins of its
//! uniform structs (sizes checked against naga by tests/params_layout.rs) and the constants the shader,
//! its CPU twin and its ops share.

use bytemuck::{Pod, Zeroable};

use super::Kernel;

/// Uniform params of `NormParams` in shaders/norm.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct NormParams {
    /// WGSL field `rows`.
    pub rows: u32,
    /// Features per row (the last axis), >= 1.
    pub c: u32,
    /// WGSL field `eps`.
    pub eps: f32,
    /// Rows per column partial in the backward (>= 1).
    pub chunk: u32,
}

/// Entry point `layer_norm_fwd` of shaders/norm.wgsl.
pub static LAYER_NORM_FWD: Kernel = Kernel { shader: "norm", entry: "layer_norm_fwd" };

/// Entry point `layer_norm_bwd_dx` of shaders/norm.wgsl.
pub static LAYER_NORM_BWD_DX: Kernel = Kernel { shader: "norm", entry: "layer_norm_bwd_dx" };

/// Entry point `layer_norm_bwd_partial` of shaders/norm.wgsl.
pub static LAYER_NORM_BWD_PARTIAL: Kernel = Kernel { shader: "norm", entry: "layer_norm_bwd_partial" };

/// Entry point `layer_norm_bwd_params` of shaders/norm.wgsl.
pub static LAYER_NORM_BWD_PARAMS: Kernel = Kernel { shader: "norm", entry: "layer_norm_bwd_params" };
