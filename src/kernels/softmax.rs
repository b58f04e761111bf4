//! The `softmax` kernel family (shaders/softmax.wgsl): its entry points, the `#[repr(C)]` twins of its
//! uniform structs (sizes checked against naga by tests/params_layout.rs) and the constants the shader,
//! its CPU twin and its ops share.

use bytemuck::{Pod, Zeroable};

use super::Kernel;

/// Uniform params of `SoftmaxParams` in shaders/softmax.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct SoftmaxParams {
    /// WGSL field `rows`.
    pub rows: u32,
    /// Row length, >= 1
    pub len: u32,
    /// 1: log-softmax.
    pub log: u32,
    /// Padding to the WGSL layout.
    pub _pad: u32,
}

/// Entry point `softmax_rows` of shaders/softmax.wgsl.
pub static SOFTMAX_ROWS: Kernel = Kernel { shader: "softmax", entry: "softmax_rows" };
