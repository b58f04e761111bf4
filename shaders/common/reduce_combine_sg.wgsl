// The subgroup form of common/reduce_combine.wgsl (same function, same contract). Correct for any
// subgroup size and any mapping of invocations to subgroups (see common/workgroup_reduce_sg.wgsl for the
// scheme): the first maximum wins as in the tree, since among equal values the lowest index is taken at
// both levels.
//#enable subgroups

// A reduction's value and, for argmax, its index.
struct Best {
    v: f32,
    i: u32,
}

var<workgroup> sv: array<f32, WG_ROWS>;
var<workgroup> si: array<u32, WG_ROWS>;

// The subgroup's best (v, i): the largest value, and the lowest index holding it.
fn sg_best(v: f32, i: u32) -> Best {
    let m = subgroupMax(v);
    return Best(m, subgroupMin(select(0xffffffffu, i, v == m)));
}

fn combine(lid: u32, best: bool, acc: f32, idx: u32) -> Best {
    let lane = subgroupExclusiveAdd(1u);
    let n = subgroupAdd(1u);
    if best {
        let b = sg_best(acc, idx);
        sv[lid] = b.v;
        si[lid] = b.i;
    } else {
        let s = subgroupAdd(acc);
        sv[lid] = select(0.0, s, lane == 0u);
    }
    workgroupBarrier();
    if best {
        var bv = sv[lane];
        var bi = si[lane];
        for (var k = lane + n; k < WG_ROWS; k += n) {
            if beats(sv[k], si[k], bv, bi) {
                bv = sv[k];
                bi = si[k];
            }
        }
        return sg_best(bv, bi);
    }
    var a = 0.0;
    for (var k = lane; k < WG_ROWS; k += n) {
        a += sv[k];
    }
    return Best(subgroupAdd(a), 0u);
}
