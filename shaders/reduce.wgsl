// Reductions along one axis: sum, mean, max and argmax. The tensor is viewed as [outer, len, inner] and
// reduced over `len`; the output holds outer * inner elements in row-major order.
//
// Two entry points share the bindings:
// * reduce_rows (inner == 1): one workgroup per row. Each thread strides over the row (coalesced across
//   the workgroup), then the 256 partials meet in a tree reduction in workgroup memory.
// * reduce_strided (inner > 1): one thread per output element walks the axis; neighbouring threads read
//   neighbouring addresses, so every step of the loop is a coalesced load.
//
// The op is a uniform switch. The output buffer is u32 words: argmax writes an index, the other ops write
// the bits of an f32 (bitcast), so one entry point serves all four ops.
// Max and argmax expect finite inputs: WGSL comparisons with NaN are implementation-defined, and an
// implementation may assume NaN is absent, so a NaN input gives an unspecified result.
//#include "common/index.wgsl"

const WG: u32 = 256u;

const OP_SUM: u32 = 0u;
const OP_MEAN: u32 = 1u;
const OP_MAX: u32 = 2u;
const OP_ARGMAX: u32 = 3u;

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

var<workgroup> sv: array<f32, WG>;
var<workgroup> si: array<u32, WG>;

@compute @workgroup_size(256)
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
        for (var k = lid; k < rp.len; k += WG) {
            let v = rx[base + k];
            if v > acc { acc = v; idx = k; }
        }
    } else {
        for (var k = lid; k < rp.len; k += WG) {
            acc += rx[base + k];
        }
    }
    sv[lid] = acc;
    si[lid] = idx;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if lid < s {
            let o = lid + s;
            if op >= OP_MAX {
                if beats(sv[o], si[o], sv[lid], si[lid]) {
                    sv[lid] = sv[o];
                    si[lid] = si[o];
                }
            } else {
                sv[lid] = sv[lid] + sv[o];
            }
        }
        workgroupBarrier();
    }
    if lid == 0u {
        rout[row] = finish(op, sv[0], si[0], rp.len);
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
    if rp.op >= OP_MAX {
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
    rout[o] = finish(rp.op, acc, idx, rp.len);
}
