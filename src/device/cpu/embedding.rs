//! CPU twin of shaders/embedding.wgsl. The backward adds each table element's contributions in increasing
//! position order starting from 0, as every GPU thread does, so the two engines agree bit for bit.

use rayon::prelude::*;

use super::reduce::rows_per_task;
use super::CpuArgs;
use crate::kernels::embedding::EmbeddingParams;

/// The table row of an id, clamped into the table as the shader's `row_of`.
fn row_of(id: u32, vocab: u32) -> usize {
    id.min(vocab - 1) as usize
}

/// Bindings: params, ids (read, u32), table (read), out (read_write).
pub fn embedding_fwd(args: &mut CpuArgs) {
    let p: EmbeddingParams = args.params();
    let (ids, table) = (args.u32_in(0), args.f32_in(1));
    let out = args.f32_out(0);
    let (n, c) = (p.n as usize, p.c as usize);
    if n == 0 || c == 0 {
        return;
    }
    let per = rows_per_task(c);
    out[..n * c].par_chunks_mut(per * c).enumerate().for_each(|(t, oc)| {
        for (j, o) in oc.chunks_mut(c).enumerate() {
            let v = row_of(ids[t * per + j], p.vocab);
            o.copy_from_slice(&table[v * c..(v + 1) * c]);
        }
    });
}

/// Bindings: params, ids (read, u32), dout (read), dtable (read_write).
///
/// The positions are bucketed by table row with a stable counting sort (positions stay in increasing
/// order within a row), then table rows are filled in parallel, each adding its positions' rows of dout
/// in that order: the shader's summation order at O(N + V) cost rather than a scan of all ids per row.
pub fn embedding_bwd(args: &mut CpuArgs) {
    let p: EmbeddingParams = args.params();
    let (ids, dout) = (args.u32_in(0), args.f32_in(1));
    let dtable = args.f32_out(0);
    let (n, c, vocab) = (p.n as usize, p.c as usize, p.vocab as usize);
    if c == 0 || vocab == 0 {
        return;
    }
    // first[v]..first[v + 1] indexes the positions of row v in `order`.
    let mut first = vec![0u32; vocab + 1];
    for &id in &ids[..n] {
        first[row_of(id, p.vocab) + 1] += 1;
    }
    for v in 0..vocab {
        first[v + 1] += first[v];
    }
    let mut next = first.clone();
    let mut order = vec![0u32; n];
    for (pos, &id) in ids[..n].iter().enumerate() {
        let v = row_of(id, p.vocab);
        order[next[v] as usize] = pos as u32;
        next[v] += 1;
    }
    let per = rows_per_task(c);
    dtable[..vocab * c].par_chunks_mut(per * c).enumerate().for_each(|(t, dc)| {
        for (j, row) in dc.chunks_mut(c).enumerate() {
            let v = t * per + j;
            row.fill(0.0);
            for &pos in &order[first[v] as usize..first[v + 1] as usize] {
                let src = &dout[pos as usize * c..(pos as usize + 1) * c];
                row.iter_mut().zip(src).for_each(|(o, &d)| *o += d);
            }
        }
    });
}
