// Softmax and log-softmax along the last axis, numerically stable: the row max is subtracted before exp,
// so the largest term is exp(0) = 1, nothing overflows and the sum is at least 1.
//
// Variants: 64, 128 or 256 threads per row, with workgroup-memory trees or subgroup operations (the
// `_sg` snippets); the row grid is the same for all of them.
// One workgroup per row (rows fold into y past the per-dimension limit, as kernels::groups_1d with one
// row per workgroup). Three passes over the row, each thread striding by the workgroup size:
//   1. row max: per-thread max, then a tree reduction in workgroup memory;
//   2. sum of exp(x - max): per-thread sums, then a tree reduction;
//   3. write exp(x - max) / sum, or x - max - log(sum) for log-softmax.
// Inputs are expected finite (WGSL comparisons with NaN are implementation-defined).
//#include "common/index.wgsl"
//#include "common/workgroup_reduce.wgsl"
//#include "common/row_max_sumexp.wgsl"

// Threads per row: WG_REDUCE of the reduction snippet, which the variants set.
const WG: u32 = WG_REDUCE;
//#variant sg subgroups
//#variant sg128 subgroups WG_REDUCE=128u
//#variant sg64 subgroups WG_REDUCE=64u
//#variant wg128 WG_REDUCE=128u
//#variant wg64 WG_REDUCE=64u

struct SoftmaxParams {
    rows: u32,
    len: u32,   // row length, >= 1
    log: u32,   // 1: log-softmax
    _pad: u32,
}

@group(0) @binding(0) var<uniform> sp: SoftmaxParams;
// Binding 1, x, is row_in of common/row_max_sumexp.wgsl.
@group(0) @binding(2) var<storage, read_write> sout: array<f32>;

@compute @workgroup_size(WG)
fn softmax_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let row = flat_id(wid, nwg, 0u, 1u);
    if row >= sp.rows { return; }  // uniform: the whole workgroup leaves together
    let base = row * sp.len;
    let len = sp.len;

    // Passes 1 and 2.
    let ms = row_max_sumexp(lid, base, len);
    let m = ms.x;
    let sum = ms.y;

    // Pass 3.
    if sp.log == 1u {
        let ls = log(sum);
        for (var k = lid; k < len; k += WG) {
            sout[base + k] = (row_in[base + k] - m) - ls;
        }
    } else {
        for (var k = lid; k < len; k += WG) {
            sout[base + k] = exp(row_in[base + k] - m) / sum;
        }
    }
}
