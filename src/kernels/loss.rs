//! The `loss` kernel family (shaders/loss.wgsl): its entry points, the `#[repr(C)]` twins of its
//! uniform structs (sizes checked against naga by tests/params_layout.rs) and the constants the shader,
//! its CPU twin and its ops share.

use bytemuck::{Pod, Zeroable};

use super::Kernel;

/// Uniform params of `CrossEntropyParams` in shaders/loss.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct CrossEntropyParams {
    /// WGSL field `rows`.
    pub rows: u32,
    /// Classes per row, >= 1
    pub len: u32,
    /// Padding to the WGSL layout.
    pub _pad0: u32,
    /// Padding to the WGSL layout.
    pub _pad1: u32,
}

/// Uniform params of `BceParams` in shaders/loss.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct BceParams {
    /// WGSL field `n`.
    pub n: u32,
    /// 1: dy has one element per x; 0: dy[0] applies to all.
    pub dy_full: u32,
    /// Padding to the WGSL layout.
    pub _pad0: u32,
    /// Padding to the WGSL layout.
    pub _pad1: u32,
}

/// Entry point `cross_entropy_fwd` of shaders/loss.wgsl.
pub static CROSS_ENTROPY_FWD: Kernel = Kernel { shader: "loss", entry: "cross_entropy_fwd" };

/// Entry point `cross_entropy_bwd` of shaders/loss.wgsl.
pub static CROSS_ENTROPY_BWD: Kernel = Kernel { shader: "loss", entry: "cross_entropy_bwd" };

/// Entry point `bce_logits_fwd` of shaders/loss.wgsl.
pub static BCE_LOGITS_FWD: Kernel = Kernel { shader: "loss", entry: "bce_logits_fwd" };

/// Entry point `bce_logits_bwd` of shaders/loss.wgsl.
pub static BCE_LOGITS_BWD: Kernel = Kernel { shader: "loss", entry: "bce_logits_bwd" };
