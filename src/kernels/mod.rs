//! The kernels layer, below both the device and the ops: the registry of what build.rs learned from
//! every `shaders/*.wgsl` (entry points, workgroup sizes, bindings, struct sizes), the `Kernel` type that
//! names one WGSL entry point, `ALL_KERNELS`, and one module per shader family (`kernels::<family>`)
//! holding its `Kernel` statics, the `#[repr(C)]` twins of its uniform structs and the constants that
//! the shader, its CPU twin (`device::cpu::<family>`) and its ops (`ops::<family>`) share. Nothing
//! here names an engine or imports from a layer above.
//!
//! Binding convention, checked when a kernel is first used: binding 0 is the kernel's uniform `params`
//! struct; bindings 1.. are storage buffers in the order the shader declares them. A dispatch lists its
//! buffers in that same order, and both engines split them the same way into read-only inputs and
//! read-write outputs, so a CPU twin's argument order is the shader's binding order.

pub mod attention;
pub mod batch;
pub mod chnorm;
pub mod conv;
pub mod diffusion;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod layout;
pub mod loss;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod reduce;
pub mod rng;
pub mod sample;
pub mod softmax;

use crate::error::{Error, Result};

/// How a shader binds a global variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingKind {
    /// The uniform params struct (binding 0).
    Uniform,
    /// A read-only storage buffer.
    StorageRead,
    /// A read-write storage buffer.
    StorageReadWrite,
}

/// One binding of an entry point.
#[derive(Debug)]
pub struct BindingInfo {
    /// Binding index in group 0.
    pub binding: u32,
    /// Name in the shader.
    pub name: &'static str,
    /// Uniform, read-only or read-write.
    pub kind: BindingKind,
    /// Size in bytes as naga lays the type out (runtime-sized arrays count one element's stride).
    pub size: u32,
}

/// One compute entry point as naga saw it.
#[derive(Debug)]
pub struct EntryInfo {
    /// The entry point's name.
    pub name: &'static str,
    /// Its `@workgroup_size`.
    pub workgroup_size: [u32; 3],
    /// Bytes of `var<workgroup>` memory the entry point uses.
    pub workgroup_memory: u32,
    /// The bindings it uses, in binding order.
    pub bindings: &'static [BindingInfo],
}

/// One shader family (one `shaders/*.wgsl`), composed and validated by build.rs.
#[derive(Debug)]
pub struct ShaderInfo {
    /// The family name: the file stem under shaders/.
    pub name: &'static str,
    /// The composed WGSL source (snippets from shaders/common included).
    pub source: &'static str,
    /// Its compute entry points.
    pub entries: &'static [EntryInfo],
    /// Every named struct of the module with its size in bytes.
    pub structs: &'static [(&'static str, u32)],
}

include!(concat!(env!("OUT_DIR"), "/registry_data.rs"));

/// The shader family called `name`.
pub fn shader(name: &str) -> Option<&'static ShaderInfo> {
    SHADERS.iter().find(|s| s.name == name)
}

/// Size in bytes naga computes for struct `name` in shader family `shader`.
pub fn struct_size(shader_name: &str, name: &str) -> Option<u32> {
    shader(shader_name)?.structs.iter().find(|s| s.0 == name).map(|s| s.1)
}

/// One WGSL entry point, named by its shader family and entry. The CPU engine finds the twin of a kernel
/// itself (its `twin` table), so this layer names no engine.
pub struct Kernel {
    /// Shader family: the file stem under shaders/.
    pub shader: &'static str,
    /// Entry point name in that shader.
    pub entry: &'static str,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}::{}", self.shader, self.entry)
    }
}

impl Kernel {
    /// "shader::entry", for messages.
    pub fn name(&self) -> String {
        format!("{}::{}", self.shader, self.entry)
    }

    /// The registry entry for this kernel, checked against the binding convention.
    pub fn info(&self) -> Result<&'static EntryInfo> {
        let s =
            shader(self.shader).ok_or_else(|| Error::Other(format!("no shader family `{}` was built", self.shader)))?;
        let e =
            s.entries.iter().find(|e| e.name == self.entry).ok_or_else(|| {
                Error::Other(format!("shaders/{}.wgsl has no entry point `{}`", self.shader, self.entry))
            })?;
        match e.bindings.first() {
            Some(b) if b.kind == BindingKind::Uniform => Ok(e),
            _ => Err(Error::Other(format!("{}: binding 0 must be the uniform params struct", self.name()))),
        }
    }

    /// The entry point's workgroup size ([1, 1, 1] if the registry lacks it).
    pub fn workgroup_size(&self) -> [u32; 3] {
        self.info().map(|e| e.workgroup_size).unwrap_or([1, 1, 1])
    }
}

/// Split a 1-D grid of `n` invocations into workgroups of `wg`, folding into y when x would exceed the
/// per-dimension limit. Shaders recover the flat index with `flat_id` from shaders/common/index.wgsl.
pub fn groups_1d(n: usize, wg: u32, max_per_dim: u32) -> [u32; 3] {
    let groups = n.div_ceil(wg as usize).max(1) as u64;
    if groups <= max_per_dim as u64 {
        [groups as u32, 1, 1]
    } else {
        let y = groups.div_ceil(max_per_dim as u64);
        let x = groups.div_ceil(y);
        [x as u32, y as u32, 1]
    }
}

/// Every kernel of every family (a test checks that each WGSL entry point is here and has a CPU twin;
/// tools walk it).
pub static ALL_KERNELS: &[&Kernel] = &[
    &attention::ATTENTION_FWD,
    &attention::ATTENTION_BWD_DQ,
    &attention::ATTENTION_BWD_DKV,
    &batch::TEXT_WINDOWS,
    &chnorm::CHNORM_STATS_PARTIAL,
    &chnorm::CHNORM_STATS_FINAL,
    &chnorm::CHNORM_APPLY,
    &chnorm::CHNORM_BWD_PARTIAL,
    &chnorm::CHNORM_BWD_PARAMS,
    &chnorm::CHNORM_BWD_COEFFS,
    &chnorm::CHNORM_BWD_DX,
    &chnorm::CHNORM_UPDATE_RUNNING,
    &conv::CONV2D_FWD,
    &conv::CONV2D_BWD_INPUT,
    &conv::CONV2D_BWD_WEIGHT,
    &diffusion::SCHEDULE,
    &diffusion::Q_SAMPLE,
    &diffusion::TIMESTEP_EMBEDDING,
    &diffusion::DDPM_STEP,
    &diffusion::DDIM_STEP,
    &diffusion::V_CONVERT,
    &dropout::DROPOUT_FWD,
    &dropout::DROPOUT_BWD,
    &elementwise::UNARY,
    &elementwise::UNARY_BACKWARD,
    &elementwise::BINARY,
    &elementwise::BINARY_SAME,
    &elementwise::SCALAR,
    &embedding::EMBEDDING_FWD,
    &embedding::EMBEDDING_BWD,
    &layout::COPY,
    &layout::FILL,
    &layout::PERMUTE,
    &layout::TRANSPOSE_TILED,
    &layout::REGION,
    &loss::CROSS_ENTROPY_FWD,
    &loss::CROSS_ENTROPY_BWD,
    &loss::BCE_LOGITS_FWD,
    &loss::BCE_LOGITS_BWD,
    &matmul::MATMUL_TILED,
    &matmul::MATMUL_TILED_VEC4,
    &matmul::MATMUL_SMALL,
    &norm::LAYER_NORM_FWD,
    &norm::LAYER_NORM_BWD_DX,
    &norm::LAYER_NORM_BWD_PARTIAL,
    &norm::LAYER_NORM_BWD_PARAMS,
    &optim::ADVANCE_STEP,
    &optim::SGD,
    &optim::ADAM,
    &optim::SUMSQ_PARTIAL,
    &optim::CLIP_SCALE,
    &optim::EMA,
    &reduce::REDUCE_ROWS,
    &reduce::REDUCE_STRIDED,
    &rng::BITS,
    &rng::UNIFORM,
    &rng::NORMAL,
    &rng::PER_ELEMENT,
    &rng::UNIFORM_STEP,
    &rng::NORMAL_STEP,
    &sample::GATHER_ROWS,
    &sample::GATHER_LABELS,
    &softmax::SOFTMAX_ROWS,
];
