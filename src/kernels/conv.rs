//! The `conv` kernel family (shaders/conv.wgsl): its entry points, the `#[repr(C)]` twins of its
//! uniform structs (sizes checked against naga by tests/params_layout.rs) and the constants the shader,
//! its CPU twin and its ops share.

use bytemuck::{Pod, Zeroable};

use super::Kernel;

/// Result tile of one workgroup (shaders/conv.wgsl TM x TN).
pub const TILE: usize = 64;

/// Uniform params of `ConvParams` in shaders/conv.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ConvParams {
    /// WGSL field `n`.
    pub n: u32,
    /// WGSL field `ci`.
    pub ci: u32,
    /// WGSL field `h`.
    pub h: u32,
    /// WGSL field `w`.
    pub w: u32,
    /// WGSL field `co`.
    pub co: u32,
    /// WGSL field `ho`.
    pub ho: u32,
    /// WGSL field `wo`.
    pub wo: u32,
    /// WGSL field `k`.
    pub k: u32,
    /// WGSL field `stride`.
    pub stride: u32,
    /// WGSL field `pad`.
    pub pad: u32,
    /// Tiles along the result's rows (TM each)
    pub row_tiles: u32,
    /// Tiles along its columns (TN each; for bwd_input, of the largest phase)
    pub col_tiles: u32,
    /// Bwd_weight: images per z slice
    pub imgs_per_split: u32,
    /// Bwd_weight: z slices (partial sums)
    pub splits: u32,
    /// Padding to the WGSL layout.
    pub _pad: [u32; 2],
}

/// Entry point `conv2d_fwd` of shaders/conv.wgsl.
pub static CONV2D_FWD: Kernel = Kernel { shader: "conv", entry: "conv2d_fwd" };

/// Entry point `conv2d_bwd_input` of shaders/conv.wgsl.
pub static CONV2D_BWD_INPUT: Kernel = Kernel { shader: "conv", entry: "conv2d_bwd_input" };

/// Entry point `conv2d_bwd_weight` of shaders/conv.wgsl.
pub static CONV2D_BWD_WEIGHT: Kernel = Kernel { shader: "conv", entry: "conv2d_bwd_weight" };
