//! The `layout` kernel family (shaders/layout.wgsl): its entry points, the `#[repr(C)]` twins of its
//! uniform structs (sizes checked against naga by tests/params_layout.rs) and the constants the shader,
//! its CPU twin and its ops share.

use bytemuck::{Pod, Zeroable};

use super::Kernel;

/// Shared with shaders/layout.wgsl and the CPU twin.
pub const MAX_RANK: usize = 8;

/// Edge of the tiled transpose's tile (shaders/layout.wgsl `TILE`).
pub const TILE: usize = 32;

/// Uniform params of `CopyParams` in shaders/layout.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct CopyParams {
    /// WGSL field `n`.
    pub n: u32,
    /// Padding to the WGSL layout.
    pub _pad: [u32; 3],
}

/// Uniform params of `FillParams` in shaders/layout.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct FillParams {
    /// WGSL field `n`.
    pub n: u32,
    /// The word to write (an f32's bits for f32 tensors)
    pub value: u32,
    /// Padding to the WGSL layout.
    pub _pad: [u32; 2],
}

/// Uniform params of `PermuteParams` in shaders/layout.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct PermuteParams {
    /// WGSL field `n`.
    pub n: u32,
    /// WGSL field `rank`.
    pub rank: u32,
    /// Padding to the WGSL layout.
    pub _pad: [u32; 2],
    /// Output shape.
    pub shape: [u32; MAX_RANK],
    /// Input element stride of the input axis that becomes output axis d.
    pub strides: [u32; MAX_RANK],
}

/// Uniform params of `TileParams` in shaders/layout.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct TileParams {
    /// Input is [batch, rows, cols], output [batch, cols, rows]
    pub batch: u32,
    /// WGSL field `rows`.
    pub rows: u32,
    /// WGSL field `cols`.
    pub cols: u32,
    /// Padding to the WGSL layout.
    pub _pad: u32,
}

/// Uniform params of `RegionParams` in shaders/layout.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RegionParams {
    /// Outer * len * inner
    pub n: u32,
    /// WGSL field `outer`.
    pub outer: u32,
    /// WGSL field `len`.
    pub len: u32,
    /// WGSL field `inner`.
    pub inner: u32,
    /// WGSL field `src_axis`.
    pub src_axis: u32,
    /// WGSL field `src_start`.
    pub src_start: u32,
    /// WGSL field `dst_axis`.
    pub dst_axis: u32,
    /// WGSL field `dst_start`.
    pub dst_start: u32,
}

/// Entry point `copy` of shaders/layout.wgsl.
pub static COPY: Kernel = Kernel { shader: "layout", entry: "copy" };

/// Entry point `fill` of shaders/layout.wgsl.
pub static FILL: Kernel = Kernel { shader: "layout", entry: "fill" };

/// Entry point `permute` of shaders/layout.wgsl.
pub static PERMUTE: Kernel = Kernel { shader: "layout", entry: "permute" };

/// Entry point `transpose_tiled` of shaders/layout.wgsl.
pub static TRANSPOSE_TILED: Kernel = Kernel { shader: "layout", entry: "transpose_tiled" };

/// Entry point `region` of shaders/layout.wgsl.
pub static REGION: Kernel = Kernel { shader: "layout", entry: "region" };
