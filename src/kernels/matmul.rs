//! The `matmul` kernel family (shaders/matmul.wgsl): its entry points, the `#[repr(C)]` twins of its
//! uniform structs (sizes checked against naga by tests/params_layout.rs) and the constants the shader,
//! its CPU twin and its ops share.

use bytemuck::{Pod, Zeroable};

use super::Kernel;

/// C tile of one workgroup of the tiled kernels (shaders/matmul.wgsl TM, TN).
pub const TILE: usize = 64;

/// Uniform params of `MatmulParams` in shaders/matmul.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct MatmulParams {
    /// WGSL field `m`.
    pub m: u32,
    /// WGSL field `n`.
    pub n: u32,
    /// WGSL field `k`.
    pub k: u32,
    /// WGSL field `batch`.
    pub batch: u32,
    /// 1: A is stored [K,M]
    pub trans_a: u32,
    /// 1: B is stored [N,K]
    pub trans_b: u32,
    /// 1: C += alpha*A*B; 0: C = alpha*A*B (C is not read)
    pub accumulate: u32,
    /// WGSL field `alpha`.
    pub alpha: f32,
    /// Elements between consecutive batch matrices; 0 shares one matrix over the batch.
    pub stride_a: u32,
    /// WGSL field `stride_b`.
    pub stride_b: u32,
    /// WGSL field `stride_c`.
    pub stride_c: u32,
    /// Padding to the WGSL layout.
    pub _pad: u32,
}

/// Entry point `matmul_tiled` of shaders/matmul.wgsl.
pub static MATMUL_TILED: Kernel = Kernel { shader: "matmul", entry: "matmul_tiled" };

/// Entry point `matmul_tiled_vec4` of shaders/matmul.wgsl.
pub static MATMUL_TILED_VEC4: Kernel = Kernel { shader: "matmul", entry: "matmul_tiled_vec4" };

/// Entry point `matmul_small` of shaders/matmul.wgsl.
pub static MATMUL_SMALL: Kernel = Kernel { shader: "matmul", entry: "matmul_small" };
