// Embedding lookup and its backward (scatter-add into the table), over ids [N] (u32) and a table [V, C].
//
// Out-of-range ids: an id >= V is read as V - 1 (the last row) by both kernels, so no id can index outside
// the table; the lookup then returns row V - 1 and the backward adds that position's gradient to row V - 1,
// consistently wrong but bounded. Ids are expected to be validated where they are made (the data
// pipeline), never inside a training step.
//
// embedding_fwd: one thread per output element, out[n, c] = table[row_of(ids[n]), c].
// embedding_bwd: dtable[v, c] = Σ dout[n, c] over the n with row_of(ids[n]) == v, added in increasing n
//   starting from 0 (no atomics, so the sums are deterministic and the CPU twin adds in the same order).
//   One workgroup per (table row v, block of 256 columns), workgroups numbered v * cblocks + block and
//   folded into y past the per-dimension limit (kernels::groups_1d with one item per workgroup); each
//   thread owns one column. The ids go through workgroup memory 256 at a time, and every thread walks the
//   staged ids in order, so the match test is uniform across the workgroup and a matching position's row
//   of dout is read coalesced. Rows that no id selects come out 0. Every workgroup reads all N ids: the
//   cost is V * N id reads, cheap for byte- and small-vocabulary models.
//#include "common/index.wgsl"

const WG: u32 = 256u;

struct EmbeddingParams {
    n: u32,        // ids
    c: u32,        // features per table row, >= 1
    vocab: u32,    // table rows, >= 1
    cblocks: u32,  // embedding_bwd: column blocks of WG per table row
}

@group(0) @binding(0) var<uniform> ep: EmbeddingParams;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// The table row of an id, clamped into the table (see the header).
fn row_of(id: u32) -> u32 {
    return min(id, ep.vocab - 1u);
}

@compute @workgroup_size(256)
fn embedding_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= ep.n * ep.c { return; }  // the op keeps n * c below 2^32
    let t = i / ep.c;
    let col = i - t * ep.c;
    out[i] = table[row_of(ids[t]) * ep.c + col];
}

@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read_write> dtable: array<f32>;

var<workgroup> staged: array<u32, WG>;

@compute @workgroup_size(256)
fn embedding_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let g = flat_id(wid, nwg, 0u, 1u);
    if g >= ep.vocab * ep.cblocks { return; }  // uniform: the whole workgroup leaves together
    let v = g / ep.cblocks;
    let col = (g - v * ep.cblocks) * WG + lid;
    let live = col < ep.c;
    var acc = 0.0;
    for (var s = 0u; s < ep.n; s += WG) {
        if s + lid < ep.n {
            staged[lid] = row_of(ids[s + lid]);
        }
        workgroupBarrier();
        let m = min(WG, ep.n - s);
        for (var j = 0u; j < m; j++) {
            if staged[j] == v && live {
                acc += dout[(s + j) * ep.c + col];
            }
        }
        // Everyone is done with this chunk before it is overwritten.
        workgroupBarrier();
    }
    if live {
        dtable[v * ep.c + col] = acc;
    }
}
