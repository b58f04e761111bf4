//! The `elementwise` kernel family (shaders/elementwise.wgsl): its entry points, the `#[repr(C)]` twins of its
//! uniform structs (sizes checked against naga by tests/params_layout.rs) and the constants the shader,
//! its CPU twin and its ops share.

use bytemuck::{Pod, Zeroable};

use super::Kernel;

/// Shared with shaders/elementwise.wgsl and the CPU twin.
pub const MAX_RANK: usize = 8;

/// Uniform params of `UnaryParams` in shaders/elementwise.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct UnaryParams {
    /// WGSL field `n`.
    pub n: u32,
    /// WGSL field `op`.
    pub op: u32,
    /// Slope for leaky_relu
    pub alpha: f32,
    /// Padding to the WGSL layout.
    pub _pad: u32,
}

/// Uniform params of `BinaryParams` in shaders/elementwise.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct BinaryParams {
    /// WGSL field `n`.
    pub n: u32,
    /// WGSL field `rank`.
    pub rank: u32,
    /// WGSL field `op`.
    pub op: u32,
    /// 1: a, b and out share one shape (the host then runs binary_same)
    pub contiguous: u32,
    /// WGSL field `shape`.
    pub shape: [u32; MAX_RANK],
    /// WGSL field `a_strides`.
    pub a_strides: [u32; MAX_RANK],
    /// WGSL field `b_strides`.
    pub b_strides: [u32; MAX_RANK],
}

/// Uniform params of `ScalarParams` in shaders/elementwise.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ScalarParams {
    /// WGSL field `n`.
    pub n: u32,
    /// WGSL field `op`.
    pub op: u32,
    /// 1: out = op(s, a) instead of op(a, s)
    pub reverse: u32,
    /// Padding to the WGSL layout.
    pub _pad: u32,
    /// WGSL field `s`.
    pub s: f32,
    /// Padding to the WGSL layout.
    pub _pad1: [u32; 3],
}

/// Entry point `unary` of shaders/elementwise.wgsl.
pub static UNARY: Kernel = Kernel { shader: "elementwise", entry: "unary" };

/// Entry point `unary_backward` of shaders/elementwise.wgsl.
pub static UNARY_BACKWARD: Kernel = Kernel { shader: "elementwise", entry: "unary_backward" };

/// Entry point `binary` of shaders/elementwise.wgsl.
pub static BINARY: Kernel = Kernel { shader: "elementwise", entry: "binary" };

/// Entry point `binary_same` of shaders/elementwise.wgsl.
pub static BINARY_SAME: Kernel = Kernel { shader: "elementwise", entry: "binary_same" };

/// Entry point `scalar` of shaders/elementwise.wgsl.
pub static SCALAR: Kernel = Kernel { shader: "elementwise", entry: "scalar" };
