//! The `batch` kernel family (shaders/batch.wgsl): its entry points, the `#[repr(C)]` twins of its
//! uniform structs (sizes checked against naga by tests/params_layout.rs) and the constants the shader,
//! its CPU twin and its ops share.

use bytemuck::{Pod, Zeroable};

use super::Kernel;

/// Uniform params of `WindowParams` in shaders/batch.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct WindowParams {
    /// WGSL field `batch`.
    pub batch: u32,
    /// WGSL field `context`.
    pub context: u32,
    /// Stream elements per step: the batch rounded up to 4.
    pub stride: u32,
    /// len - context, >= 1.
    pub span: u32,
    /// First byte of the range (the op keeps start + len <= 2^32)
    pub start: u32,
    /// Padding to the WGSL layout.
    pub _pad: u32,
    /// (lo, hi)
    pub seed: [u32; 2],
}

/// Entry point `text_windows` of shaders/batch.wgsl.
pub static TEXT_WINDOWS: Kernel = Kernel { shader: "batch", entry: "text_windows" };
