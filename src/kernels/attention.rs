//! The `attention` kernel family (shaders/attention.wgsl): its entry points, the `#[repr(C)]` twins of its
//! uniform structs (sizes checked against naga by tests/params_layout.rs) and the constants the shader,
//! its CPU twin and its ops share.

use bytemuck::{Pod, Zeroable};

use super::Kernel;

/// Largest head dim D the kernels support (their workgroup tiles are sized for it).
pub const MAX_HEAD_DIM: usize = 128;

/// Owner rows per workgroup (queries in the forward and dQ kernels, keys in the dK/dV kernel).
pub const TILE: usize = 16;

/// Uniform params of `AttentionParams` in shaders/attention.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct AttentionParams {
    /// WGSL field `batch`.
    pub batch: u32,
    /// T
    pub seq: u32,
    /// H
    pub heads: u32,
    /// D, 1..=MAX_D
    pub head_dim: u32,
    /// 1: query i sees keys j <= i.
    pub causal: u32,
    /// Score scale, 1/sqrt(head_dim).
    pub scale: f32,
    /// Owner tiles per (b, h): ceil(seq / TILE).
    pub tiles: u32,
    /// tiles * batch * heads: workgroups with work.
    pub groups: u32,
}

/// Entry point `attention_fwd` of shaders/attention.wgsl.
pub static ATTENTION_FWD: Kernel = Kernel { shader: "attention", entry: "attention_fwd" };

/// Entry point `attention_bwd_dq` of shaders/attention.wgsl.
pub static ATTENTION_BWD_DQ: Kernel = Kernel { shader: "attention", entry: "attention_bwd_dq" };

/// Entry point `attention_bwd_dkv` of shaders/attention.wgsl.
pub static ATTENTION_BWD_DKV: Kernel = Kernel { shader: "attention", entry: "attention_bwd_dkv" };
