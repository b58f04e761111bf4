//! CPU twin of shaders/sample.wgsl: the same row index (Philox bits at the step's stream offset, mod N),
//! so both engines gather the same rows.

use super::par_chunks;
use super::CpuArgs;
use crate::host::philox::{bits_at, step_offset};
use crate::kernels::sample::SampleParams;

/// Data row that batch row r takes at step `step` (the shader's `source_row`).
pub fn source_row(p: &SampleParams, step: u32, r: u32) -> u32 {
    let base = step_offset(step, p.stride);
    bits_at(p.seed, base, r) % p.nrows
}

/// Bindings: params, data (read), step (read, u32, one word), out (read_write).
pub fn gather_rows(args: &mut CpuArgs) {
    let p: SampleParams = args.params();
    let (data, step) = (args.f32_in(0), args.u32_in(1)[0]);
    let out = args.f32_out(0);
    let d = p.row_len as usize;
    // Each chunk computes a row's source once and copies the row's elements that fall in the chunk.
    par_chunks(&mut out[..p.n as usize], |s, ch| {
        let mut k = 0;
        while k < ch.len() {
            let i = s + k;
            let (r, j) = (i / d, i % d);
            let len = (d - j).min(ch.len() - k);
            let src = source_row(&p, step, r as u32) as usize * d + j;
            ch[k..k + len].copy_from_slice(&data[src..src + len]);
            k += len;
        }
    });
}

/// Bindings: params, labels (read, u32), step (read, u32, one word), out_labels (read_write, u32).
pub fn gather_labels(args: &mut CpuArgs) {
    let p: SampleParams = args.params();
    let (labels, step) = (args.u32_in(0), args.u32_in(1)[0]);
    let out = args.u32_out(0);
    par_chunks(&mut out[..p.n as usize], |s, ch| {
        for (k, o) in ch.iter_mut().enumerate() {
            *o = labels[source_row(&p, step, (s + k) as u32) as usize];
        }
    });
}
