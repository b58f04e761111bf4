//! The `reduce` kernel family (shaders/reduce.wgsl): its entry points, the `#[repr(C)]` twins of its
//! uniform structs (sizes checked against naga by tests/params_layout.rs) and the constants the shader,
//! its CPU twin and its ops share.

use bytemuck::{Pod, Zeroable};

use super::Kernel;

/// Threads per workgroup (shaders/reduce.wgsl `WG`).
pub const WG: usize = 256;

/// Uniform params of `ReduceParams` in shaders/reduce.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ReduceParams {
    /// WGSL field `outer`.
    pub outer: u32,
    /// Extent of the reduced axis (>= 1 for mean, max and argmax)
    pub len: u32,
    /// WGSL field `inner`.
    pub inner: u32,
    /// WGSL field `op`.
    pub op: u32,
}

/// Entry point `reduce_rows` of shaders/reduce.wgsl.
pub static REDUCE_ROWS: Kernel = Kernel { shader: "reduce", entry: "reduce_rows" };

/// Entry point `reduce_strided` of shaders/reduce.wgsl.
pub static REDUCE_STRIDED: Kernel = Kernel { shader: "reduce", entry: "reduce_strided" };
