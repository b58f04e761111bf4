// Tree reductions across one workgroup of WG_REDUCE threads (a power of two; variants set it, and
// common/workgroup_reduce_sg.wgsl is the subgroup form). Each thread passes its partial value and every
// thread gets the workgroup's result. Call from uniform control flow (they contain barriers). The
// trailing barrier lets every thread read the result before the next call reuses the scratch array.

const WG_REDUCE: u32 = 256u;

var<workgroup> wg_scratch: array<f32, WG_REDUCE>;

fn wg_max(lid: u32, v: f32) -> f32 {
    wg_scratch[lid] = v;
    workgroupBarrier();
    for (var s = WG_REDUCE / 2u; s > 0u; s = s >> 1u) {
        if lid < s {
            wg_scratch[lid] = max(wg_scratch[lid], wg_scratch[lid + s]);
        }
        workgroupBarrier();
    }
    let r = wg_scratch[0];
    workgroupBarrier();
    return r;
}

fn wg_sum(lid: u32, v: f32) -> f32 {
    wg_scratch[lid] = v;
    workgroupBarrier();
    for (var s = WG_REDUCE / 2u; s > 0u; s = s >> 1u) {
        if lid < s {
            wg_scratch[lid] = wg_scratch[lid] + wg_scratch[lid + s];
        }
        workgroupBarrier();
    }
    let r = wg_scratch[0];
    workgroupBarrier();
    return r;
}
