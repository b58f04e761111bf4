//! CPU twin of shaders/rng.wgsl. The Philox arithmetic it shares with the shader snippet
//! shaders/common/philox.wgsl lives in `crate::host::philox`, so twins and host code draw the same numbers.

use super::par_chunks;
use super::CpuArgs;
use crate::host::philox::*;
use crate::kernels::rng::{RngParams, RngStepParams};

/// The four Philox words of invocation t's block.
fn block_words(p: &RngParams, t: u32) -> [u32; 4] {
    let b = add64(p.block0, t);
    philox4x32([b[0], b[1], p.ctr_hi[0], p.ctr_hi[1]], p.key)
}

/// Runs the shader's invocations over `out`: output element i is lane (i + lane0) % 4 of invocation
/// (i + lane0) / 4. Each parallel chunk computes a block once and takes its lanes in order.
fn fill<T: Copy + Send>(p: &RngParams, out: &mut [T], values: impl Fn([u32; 4]) -> [T; 4] + Sync + Send) {
    par_chunks(&mut out[..p.n as usize], |s, ch| {
        let mut cached: Option<(u32, [T; 4])> = None;
        for (k, o) in ch.iter_mut().enumerate() {
            let j = (s + k) as u32 + p.lane0;
            let t = j >> 2;
            let v = match cached {
                Some((ct, v)) if ct == t => v,
                _ => {
                    let v = values(block_words(p, t));
                    cached = Some((t, v));
                    v
                }
            };
            *o = v[(j & 3) as usize];
        }
    });
}

/// Bindings: params, bits_out (read_write, u32).
pub fn bits(args: &mut CpuArgs) {
    let p: RngParams = args.params();
    let out = args.u32_out(0);
    fill(&p, out, |x| x);
}

/// Bindings: params, out (read_write, f32).
pub fn uniform_f32(args: &mut CpuArgs) {
    let p: RngParams = args.params();
    let out = args.f32_out(0);
    fill(&p, out, |x| uniform_from_bits(x).map(|u| p.shift + p.scale * u));
}

/// Bindings: params, out (read_write, f32).
pub fn normal(args: &mut CpuArgs) {
    let p: RngParams = args.params();
    let out = args.f32_out(0);
    fill(&p, out, |x| normal_from_bits(x).map(|z| p.shift + p.scale * z));
}

/// Bindings: params, bits_out (read_write, u32; 3n words).
pub fn per_element(args: &mut CpuArgs) {
    let p: RngParams = args.params();
    let out = args.u32_out(0);
    let n = p.n as usize;
    let offset = [(p.block0[0] << 2) | p.lane0, (p.block0[1] << 2) | (p.block0[0] >> 30)];
    let (b, rest) = out[..3 * n].split_at_mut(n);
    let (u, z) = rest.split_at_mut(n);
    par_chunks(b, |s, ch| ch.iter_mut().enumerate().for_each(|(k, o)| *o = bits_at(p.key, offset, (s + k) as u32)));
    par_chunks(u, |s, ch| {
        ch.iter_mut().enumerate().for_each(|(k, o)| *o = uniform_at(p.key, offset, (s + k) as u32).to_bits())
    });
    par_chunks(z, |s, ch| {
        ch.iter_mut().enumerate().for_each(|(k, o)| *o = normal_at(p.key, offset, (s + k) as u32).to_bits())
    });
}

/// The four Philox words of invocation t's block at step `step` (the shader's `step_block_words`).
fn step_block_words(p: &RngStepParams, step: u32, t: u32) -> [u32; 4] {
    let block0 = block_of(step_offset(step, p.stride), 0);
    bits4(p.key, add64(block0, t))
}

/// Invocation t writes lanes 4t..4t + 4 of the output; each parallel chunk computes a block once.
fn fill_step(p: &RngStepParams, step: u32, out: &mut [f32], values: impl Fn([u32; 4]) -> [f32; 4] + Sync + Send) {
    par_chunks(&mut out[..p.n as usize], |s, ch| {
        let mut cached: Option<(u32, [f32; 4])> = None;
        for (k, o) in ch.iter_mut().enumerate() {
            let i = (s + k) as u32;
            let t = i >> 2;
            let v = match cached {
                Some((ct, v)) if ct == t => v,
                _ => {
                    let v = values(step_block_words(p, step, t));
                    cached = Some((t, v));
                    v
                }
            };
            *o = v[(i & 3) as usize];
        }
    });
}

/// Bindings: params, step (read, u32, one word), step_out (read_write, f32).
pub fn uniform_step(args: &mut CpuArgs) {
    let p: RngStepParams = args.params();
    let step = args.u32_in(0)[0];
    let out = args.f32_out(0);
    fill_step(&p, step, out, |x| uniform_from_bits(x).map(|u| p.shift + p.scale * u));
}

/// Bindings: params, step (read, u32, one word), step_out (read_write, f32).
pub fn normal_step(args: &mut CpuArgs) {
    let p: RngStepParams = args.params();
    let step = args.u32_in(0)[0];
    let out = args.f32_out(0);
    fill_step(&p, step, out, |x| normal_from_bits(x).map(|z| p.shift + p.scale * z));
}
