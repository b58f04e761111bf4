//! CPU twin of shaders/reduce.wgsl. The row kernel is mirrored thread by thread: 256 strided partials,
//! then the same tree, so sums are added in the shader's order and max/argmax resolve ties the same way.

use rayon::prelude::*;

use super::CpuArgs;
use super::{par_chunks, CHUNK};
use crate::kernels::reduce::{ReduceParams, WG};

const OP_MEAN: u32 = 1;
const OP_MAX: u32 = 2;
const OP_ARGMAX: u32 = 3;
const OP_SUM_ACC: u32 = 4;

/// True when candidate (bv, bi) beats (av, ai) for argmax: larger value, or equal value at a lower index.
fn beats(bv: f32, bi: u32, av: f32, ai: u32) -> bool {
    bv > av || (bv == av && bi < ai)
}

fn finish(op: u32, v: f32, i: u32, len: u32) -> u32 {
    match op {
        OP_MEAN => (v / len as f32).to_bits(),
        OP_ARGMAX => i,
        _ => v.to_bits(),
    }
}

/// Rows per rayon task, so that each task reads about `CHUNK` elements.
pub(super) fn rows_per_task(len: usize) -> usize {
    (CHUNK / len.max(1)).max(1)
}

/// One workgroup of `reduce_rows`: `row` is the row's elements.
fn reduce_row(op: u32, row: &[f32]) -> u32 {
    let len = row.len();
    let mut sv = [0f32; WG];
    let mut si = [0u32; WG];
    for lid in 0..WG {
        let (mut acc, mut idx) = (0f32, 0u32);
        if op >= OP_MAX {
            // The shader reads the row's first element; the ops layer never reduces an empty axis here.
            acc = row.first().copied().unwrap_or(0.0);
            for k in (lid..len).step_by(WG) {
                if row[k] > acc {
                    acc = row[k];
                    idx = k as u32;
                }
            }
        } else {
            for k in (lid..len).step_by(WG) {
                acc += row[k];
            }
        }
        sv[lid] = acc;
        si[lid] = idx;
    }
    let mut s = WG / 2;
    while s > 0 {
        for lid in 0..s {
            let o = lid + s;
            if op >= OP_MAX {
                if beats(sv[o], si[o], sv[lid], si[lid]) {
                    sv[lid] = sv[o];
                    si[lid] = si[o];
                }
            } else {
                sv[lid] += sv[o];
            }
        }
        s >>= 1;
    }
    finish(op, sv[0], si[0], len as u32)
}

/// Bindings: params, x (read), out (read_write, u32 words: f32 bits or argmax indices).
pub fn reduce_rows(args: &mut CpuArgs) {
    let p: ReduceParams = args.params();
    let x = args.f32_in(0);
    let out = args.u32_out(0);
    let (rows, len) = (p.outer as usize, p.len as usize);
    let per = rows_per_task(len);
    out[..rows].par_chunks_mut(per).enumerate().for_each(|(c, ch)| {
        for (j, o) in ch.iter_mut().enumerate() {
            let base = (c * per + j) * len;
            *o = reduce_row(p.op, &x[base..base + len]);
        }
    });
}

/// Bindings: params, x (read), out (read_write).
pub fn reduce_strided(args: &mut CpuArgs) {
    let p: ReduceParams = args.params();
    let x = args.f32_in(0);
    let out = args.u32_out(0);
    let (len, inner) = (p.len as usize, p.inner as usize);
    let n = p.outer as usize * inner;
    par_chunks(&mut out[..n], |s, ch| {
        // (outer block, inner index) of s, then stepped: a division per element costs more than the sum.
        let (mut ob, mut ii) = (s / inner, s % inner);
        for o in ch.iter_mut() {
            let mut at = ob * len * inner + ii;
            ii += 1;
            if ii == inner {
                (ob, ii) = (ob + 1, 0);
            }
            let (mut acc, mut idx) = (0f32, 0u32);
            if p.op == OP_MAX || p.op == OP_ARGMAX {
                acc = x[at];
                for k in 1..len {
                    at += inner;
                    if x[at] > acc {
                        acc = x[at];
                        idx = k as u32;
                    }
                }
            } else {
                for _ in 0..len {
                    acc += x[at];
                    at += inner;
                }
            }
            *o = if p.op == OP_SUM_ACC { (f32::from_bits(*o) + acc).to_bits() } else { finish(p.op, acc, idx, p.len) };
        }
    });
}
