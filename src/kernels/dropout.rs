//! The `dropout` kernel family (shaders/dropout.wgsl): its entry points, the `#[repr(C)]` twins of its
//! uniform structs (sizes checked against naga by tests/params_layout.rs) and the constants the shader,
//! its CPU twin and its ops share.

use bytemuck::{Pod, Zeroable};

use super::Kernel;

/// Uniform params of `DropoutParams` in shaders/dropout.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct DropoutParams {
    /// WGSL field `n`.
    pub n: u32,
    /// Stream elements per step: >= n, a multiple of 4
    pub stride: u32,
    /// Drop probability in [0, 1)
    pub p: f32,
    /// 1 / (1 - p), rounded to f32
    pub scale: f32,
    /// (lo, hi)
    pub seed: [u32; 2],
    /// Stream offset at step 0 (lo, hi)
    pub offset: [u32; 2],
}

/// Entry point `dropout_fwd` of shaders/dropout.wgsl.
pub static DROPOUT_FWD: Kernel = Kernel { shader: "dropout", entry: "dropout_fwd" };

/// Entry point `dropout_bwd` of shaders/dropout.wgsl.
pub static DROPOUT_BWD: Kernel = Kernel { shader: "dropout", entry: "dropout_bwd" };
