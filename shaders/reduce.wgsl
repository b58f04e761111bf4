// Reductions along one axis: sum, mean, max and argmax. The tensor is viewed as [outer, len, inner] and
// reduced over `len`; the output holds outer * inner elements in row-major order.
//
// Two entry points share the bindings:
// * reduce_rows (inner == 1): one workgroup per row. Each thread strides over the row (coalesced across
//   the workgroup), then the partials meet in `combine` (a tree in workgroup memory, or subgroups).
// * reduce_strided (inner > 1): one thread per output element walks the axis; neighbouring threads read
//   neighbouring addresses, so every step of the loop is a coalesced load.
//
// The op is a uniform switch. The output buffer is u32 words: argmax writes an index, the other ops write
// the bits of an f32 (bitcast), so one entry point serves all four ops.
// Max and argmax expect finite inputs: WGSL comparisons with NaN are implementation-defined, and an
// implementation may assume NaN is absent, so a NaN input gives an unspecified result.
// reduce_rows has variants (64, 128 or 256 threads per row; workgroup-memory tree or subgroup
// operations, common/reduce_combine.wgsl or its `_sg` form), all with the same row grid.
//#include "common/index.wgsl"
//#include "common/reduce_combine.wgsl"

const WG: u32 = 256u;
// Threads per row of reduce_rows (the variants set it).
const WG_ROWS: u32 = 256u;
//#variant sg subgroups entries=reduce_rows
//#variant sg128 subgroups WG_ROWS=128u entries=reduce_rows
//#variant sg64 subgroups WG_ROWS=64u entries=reduce_rows
//#variant wg128 WG_ROWS=128u entries=reduce_rows
//#variant wg64 WG_ROWS=64u entries=reduce_rows

const OP_SUM: u32 = 0u;
const OP_MEAN: u32 = 1u;
const OP_MAX: u32 = 2u;
const OP_ARGMAX: u32 = 3u;
const OP_SUM_ACC: u32 = 4u;  // reduce_strided only: out += the sum (a gradient sum folded into the reduction)

struct ReduceParams {
    outer: u32,
    len: u32,    // extent of the reduced axis (>= 1 for mean, max and argmax)
    inner: u32,
    op: u32,
}

@group(0) @binding(0) var<uniform> rp: ReduceParams;
@group(0) @binding(1) var<storage, read> rx: array<f32>;
@group(0) @binding(2) var<storage, read_write> rout: array<u32>;

// True when candidate (bv, bi) beats (av, ai) for argmax: larger value, or equal value at a lower index,
// so the first maximum along the axis wins whatever order the partials meet in.
fn beats(bv: f32, bi: u32, av: f32, ai: u32) -> bool {
    return bv > av || (bv == av && bi < ai);
}

fn finish(op: u32, v: f32, i: u32, len: u32) -> u32 {
    switch op {
        case OP_MEAN: { return bitcast<u32>(v / f32(len)); }
        case OP_ARGMAX: { return i; }
        default: { return bitcast<u32>(v); }
    }
}

@compute @workgroup_size(WG_ROWS)
fn reduce_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    // Rows beyond the per-dimension limit fold into y (kernels::groups_1d with one row per workgroup).
    let row = flat_id(wid, nwg, 0u, 1u);
    if row >= rp.outer { return; }  // uniform: the whole workgroup leaves together
    let base = row * rp.len;
    let op = rp.op;
    var acc = 0.0;
    var idx = 0u;
    if op >= OP_MAX {
        // Every thread starts from the row's first element (a real candidate at the lowest index), so
        // threads past the end of a short row need no sentinel value.
        acc = rx[base];
        for (var k = lid; k < rp.len; k += WG_ROWS) {
            let v = rx[base + k];
            if v > acc { acc = v; idx = k; }
        }
    } else {
        for (var k = lid; k < rp.len; k += WG_ROWS) {
            acc += rx[base + k];
        }
    }
    let r = combine(lid, op >= OP_MAX, acc, idx);
    if lid == 0u {
        rout[row] = finish(op, r.v, r.i, rp.len);
    }
}

@compute @workgroup_size(256)
fn reduce_strided(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let o = flat_id(wid, nwg, lid, WG);
    if o >= rp.outer * rp.inner { return; }
    let ob = o / rp.inner;
    let ii = o - ob * rp.inner;
    var p = ob * rp.len * rp.inner + ii;
    var acc = 0.0;
    var idx = 0u;
    if rp.op == OP_MAX || rp.op == OP_ARGMAX {
        // Scan in axis order with a strict comparison: the first maximum is kept.
        acc = rx[p];
        for (var k = 1u; k < rp.len; k++) {
            p += rp.inner;
            let v = rx[p];
            if v > acc { acc = v; idx = k; }
        }
    } else {
        for (var k = 0u; k < rp.len; k++) {
            acc += rx[p];
            p += rp.inner;
        }
    }
    if rp.op == OP_SUM_ACC {
        rout[o] = bitcast<u32>(bitcast<f32>(rout[o]) + acc);
        return;
    }
    rout[o] = finish(rp.op, acc, idx, rp.len);
}
