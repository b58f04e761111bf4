//! The kernel registry: what build.rs learned from every `shaders/*.wgsl` (entry points, workgroup sizes,
//! bindings, struct sizes), and the `Kernel` type that ties one WGSL entry point to its CPU twin.
//!
//! Binding convention, checked when a kernel is first used: binding 0 is the kernel's uniform `params`
//! struct; bindings 1.. are storage buffers in the order the shader declares them. A dispatch lists its
//! buffers in that same order, and both engines split them the same way into read-only inputs and
//! read-write outputs, so a CPU twin's argument order is the shader's binding order.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingKind {
    Uniform,
    StorageRead,
    StorageReadWrite,
}

#[derive(Debug)]
pub struct BindingInfo {
    pub binding: u32,
    pub name: &'static str,
    pub kind: BindingKind,
    /// Size in bytes as naga lays the type out (runtime-sized arrays count one element's stride).
    pub size: u32,
}

#[derive(Debug)]
pub struct EntryInfo {
    pub name: &'static str,
    pub workgroup_size: [u32; 3],
    /// Bytes of `var<workgroup>` memory the entry point uses.
    pub workgroup_memory: u32,
    pub bindings: &'static [BindingInfo],
}

#[derive(Debug)]
pub struct ShaderInfo {
    pub name: &'static str,
    /// The composed WGSL source (snippets from shaders/common included).
    pub source: &'static str,
    pub entries: &'static [EntryInfo],
    /// Every named struct of the module with its size in bytes.
    pub structs: &'static [(&'static str, u32)],
}

include!(concat!(env!("OUT_DIR"), "/registry_data.rs"));

pub fn shader(name: &str) -> Option<&'static ShaderInfo> {
    SHADERS.iter().find(|s| s.name == name)
}

/// Size in bytes naga computes for struct `name` in shader family `shader`.
pub fn struct_size(shader_name: &str, name: &str) -> Option<u32> {
    shader(shader_name)?.structs.iter().find(|s| s.0 == name).map(|s| s.1)
}

/// Read-only inputs and read-write outputs of one dispatch, each in binding order, as 32-bit words.
pub struct CpuArgs<'a> {
    pub params: &'a [u8],
    pub ins: Vec<&'a [u32]>,
    pub outs: Vec<&'a mut [u32]>,
}

impl<'a> CpuArgs<'a> {
    pub fn params<P: bytemuck::Pod>(&self) -> P {
        bytemuck::pod_read_unaligned(&self.params[..std::mem::size_of::<P>()])
    }
    pub fn f32_in(&self, i: usize) -> &'a [f32] {
        bytemuck::cast_slice(self.ins[i])
    }
    pub fn u32_in(&self, i: usize) -> &'a [u32] {
        self.ins[i]
    }
    /// Takes output `i` out of the argument list (outputs are distinct buffers, so several can be held).
    pub fn f32_out(&mut self, i: usize) -> &'a mut [f32] {
        bytemuck::cast_slice_mut(std::mem::take(&mut self.outs[i]))
    }
    pub fn u32_out(&mut self, i: usize) -> &'a mut [u32] {
        std::mem::take(&mut self.outs[i])
    }
}

/// A CPU twin: runs the whole dispatch (all workgroups) on the host.
pub type CpuTwin = fn(&mut CpuArgs);

/// One WGSL entry point and its CPU twin.
pub struct Kernel {
    pub shader: &'static str,
    pub entry: &'static str,
    pub cpu: CpuTwin,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}::{}", self.shader, self.entry)
    }
}

impl Kernel {
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
