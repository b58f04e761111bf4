//! The `sample` kernel family (shaders/sample.wgsl): its entry points, the `#[repr(C)]` twins of its
//! uniform structs (sizes checked against naga by tests/params_layout.rs) and the constants the shader,
//! its CPU twin and its ops share.

use bytemuck::{Pod, Zeroable};

use super::Kernel;

/// Uniform params of `SampleParams` in shaders/sample.wgsl (binding 0), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct SampleParams {
    /// Values written: batch * row_len (gather_rows) or batch (gather_labels)
    pub n: u32,
    /// D: elements per data row
    pub row_len: u32,
    /// N: rows of the data set
    pub nrows: u32,
    /// Padding to the WGSL layout.
    pub _pad: u32,
    /// (lo, hi)
    pub seed: [u32; 2],
    /// Stream elements per step (lo, hi)
    pub stride: [u32; 2],
}

/// Entry point `gather_rows` of shaders/sample.wgsl.
pub static GATHER_ROWS: Kernel = Kernel { shader: "sample", entry: "gather_rows" };

/// Entry point `gather_labels` of shaders/sample.wgsl.
pub static GATHER_LABELS: Kernel = Kernel { shader: "sample", entry: "gather_labels" };
