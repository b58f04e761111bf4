// The subgroup form of common/workgroup_reduce.wgsl (same functions, same contract), which subgroup
// variants (`//#variant NAME subgroups`) compose instead of it on adapters with SUBGROUP. Correct for any
// subgroup size and any mapping of invocations to subgroups: nothing assumes the size or that subgroups
// are runs of local_invocation_index. Each subgroup reduces its values with one subgroup operation and
// leaves its result in the scratch slot of every member (max: copies are harmless) or of its first
// active lane only (sum: the others hold 0); after one barrier every subgroup reduces the whole scratch
// array the same way, its lanes striding by the subgroup's active count. Two barriers per call instead
// of log2(WG_REDUCE) + 2.
//#enable subgroups

const WG_REDUCE: u32 = 256u;

var<workgroup> wg_scratch: array<f32, WG_REDUCE>;

// This invocation's lane among the active invocations of its subgroup, and their count. All
// invocations are active at the call sites (uniform control flow).
fn sg_lane() -> vec2<u32> {
    return vec2<u32>(subgroupExclusiveAdd(1u), subgroupAdd(1u));
}

fn wg_max(lid: u32, v: f32) -> f32 {
    wg_scratch[lid] = subgroupMax(v);
    workgroupBarrier();
    let l = sg_lane();
    var m = wg_scratch[l.x];
    for (var k = l.x + l.y; k < WG_REDUCE; k += l.y) {
        m = max(m, wg_scratch[k]);
    }
    let r = subgroupMax(m);
    workgroupBarrier();
    return r;
}

fn wg_sum(lid: u32, v: f32) -> f32 {
    let l = sg_lane();
    let s = subgroupAdd(v);
    wg_scratch[lid] = select(0.0, s, l.x == 0u);
    workgroupBarrier();
    var acc = 0.0;
    for (var k = l.x; k < WG_REDUCE; k += l.y) {
        acc += wg_scratch[k];
    }
    let r = subgroupAdd(acc);
    workgroupBarrier();
    return r;
}
