//! The `rng` kernel family (shaders/rng.wgsl): its entry points, the `#[repr(C)]` twins of its
//! uniform structs (sizes checked against naga by tests/params_layout.rs) and the constants the shader,
//! its CPU twin and its ops share.

use bytemuck::{Pod, Zeroable};

use super::Kernel;

/// Uniform params of `RngParams` in shaders/rng.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RngParams {
    /// Values to write
    pub n: u32,
    /// Lane of output element 0 in its block: offset % 4
    pub lane0: u32,
    /// Counter blocks covered (one invocation each)
    pub nblocks: u32,
    /// Padding to the WGSL layout.
    pub _pad: u32,
    /// Seed (lo, hi)
    pub key: [u32; 2],
    /// Counter block of output element 0: offset / 4 (lo, hi)
    pub block0: [u32; 2],
    /// Counter words 2 and 3: zero for tensor streams (raw counter access for tests)
    pub ctr_hi: [u32; 2],
    /// Uniform: lo; normal: mean
    pub shift: f32,
    /// Uniform: hi - lo; normal: std
    pub scale: f32,
}

/// Entry point `bits` of shaders/rng.wgsl.
pub static BITS: Kernel = Kernel { shader: "rng", entry: "bits" };

/// Entry point `uniform_f32` of shaders/rng.wgsl.
pub static UNIFORM: Kernel = Kernel { shader: "rng", entry: "uniform_f32" };

/// Entry point `normal` of shaders/rng.wgsl.
pub static NORMAL: Kernel = Kernel { shader: "rng", entry: "normal" };

/// Entry point `per_element` of shaders/rng.wgsl.
pub static PER_ELEMENT: Kernel = Kernel { shader: "rng", entry: "per_element" };

/// Entry point `uniform_step` of shaders/rng.wgsl.
pub static UNIFORM_STEP: Kernel = Kernel { shader: "rng", entry: "uniform_step" };

/// Entry point `normal_step` of shaders/rng.wgsl.
pub static NORMAL_STEP: Kernel = Kernel { shader: "rng", entry: "normal_step" };

/// Uniform params of `RngStepParams` in shaders/rng.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RngStepParams {
    /// Values to write
    pub n: u32,
    /// Counter blocks covered (one invocation each)
    pub nblocks: u32,
    /// Uniform: lo; normal: 0
    pub shift: f32,
    /// Uniform: hi - lo; normal: 1
    pub scale: f32,
    /// Seed (lo, hi)
    pub key: [u32; 2],
    /// Stream elements per step, a multiple of 4 (lo, hi)
    pub stride: [u32; 2],
}
