//! What a CPU twin receives: the dispatch's params bytes and its storage buffers, split the way the
//! shader declares them (read-only inputs, read-write outputs), each in binding order.

/// Read-only inputs and read-write outputs of one dispatch, each in binding order, as 32-bit words.
pub struct CpuArgs<'a> {
    /// Bytes of the kernel's uniform params struct (binding 0).
    pub params: &'a [u8],
    /// Read-only storage bindings, in binding order.
    pub ins: Vec<&'a [u32]>,
    /// Read-write storage bindings, in binding order.
    pub outs: Vec<&'a mut [u32]>,
}

impl<'a> CpuArgs<'a> {
    /// The params struct, read from the bytes (no alignment needed).
    pub fn params<P: bytemuck::Pod>(&self) -> P {
        bytemuck::pod_read_unaligned(&self.params[..std::mem::size_of::<P>()])
    }
    /// Input `i` as f32 words.
    pub fn f32_in(&self, i: usize) -> &'a [f32] {
        bytemuck::cast_slice(self.ins[i])
    }
    /// Input `i` as u32 words.
    pub fn u32_in(&self, i: usize) -> &'a [u32] {
        self.ins[i]
    }
    /// Takes output `i` out of the argument list (outputs are distinct buffers, so several can be held).
    pub fn f32_out(&mut self, i: usize) -> &'a mut [f32] {
        bytemuck::cast_slice_mut(std::mem::take(&mut self.outs[i]))
    }
    /// Takes output `i` as u32 words (see `f32_out`).
    pub fn u32_out(&mut self, i: usize) -> &'a mut [u32] {
        std::mem::take(&mut self.outs[i])
    }
}

/// A CPU twin: runs the whole dispatch (all workgroups) on the host.
pub type CpuTwin = fn(&mut CpuArgs);
