// The workgroup step of reduce_rows (shaders/reduce.wgsl): WG_ROWS threads' partials meet in a tree in
// workgroup memory. common/reduce_combine_sg.wgsl is the subgroup form. Call from uniform control flow.

// A reduction's value and, for argmax, its index.
struct Best {
    v: f32,
    i: u32,
}

var<workgroup> sv: array<f32, WG_ROWS>;
var<workgroup> si: array<u32, WG_ROWS>;

// The workgroup's sum of `acc` (best = false) or its best (acc, idx) by `beats` (best = true, uniform);
// valid in thread 0.
fn combine(lid: u32, best: bool, acc: f32, idx: u32) -> Best {
    sv[lid] = acc;
    si[lid] = idx;
    workgroupBarrier();
    for (var s = WG_ROWS / 2u; s > 0u; s = s >> 1u) {
        if lid < s {
            let o = lid + s;
            if best {
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
    return Best(sv[0], si[0]);
}
