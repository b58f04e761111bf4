//! The `embedding` kernel family (shaders/embedding.wgsl): its entry points, the `#[repr(C)]` twins of its
//! uniform structs (sizes checked against naga by tests/params_layout.rs) and the constants the shader,
//! its CPU twin and its ops share.

use bytemuck::{Pod, Zeroable};

use super::Kernel;

/// Uniform params of `EmbeddingParams` in shaders/embedding.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct EmbeddingParams {
    /// Ids
    pub n: u32,
    /// Features per table row, >= 1.
    pub c: u32,
    /// Table rows, >= 1.
    pub vocab: u32,
    /// Backward: column blocks of the workgroup size per table row.
    pub cblocks: u32,
}

/// Entry point `embedding_fwd` of shaders/embedding.wgsl.
pub static EMBEDDING_FWD: Kernel = Kernel { shader: "embedding", entry: "embedding_fwd" };

/// Entry point `embedding_bwd` of shaders/embedding.wgsl.
pub static EMBEDDING_BWD: Kernel = Kernel { shader: "embedding", entry: "embedding_bwd" };
