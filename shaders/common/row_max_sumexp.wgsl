// The two stable passes that softmax and cross-entropy share over one row per workgroup of WG_REDUCE
// threads: the row max, then the sum of exp(x - max). The row is read from `row_in` (binding 1 of the
// including family). Needs common/workgroup_reduce.wgsl (or its `_sg` form); call from uniform control
// flow (wg_max and wg_sum hold barriers).

@group(0) @binding(1) var<storage, read> row_in: array<f32>;

// (max, sum of exp(x - max)) of row_in[base .. base + len], the same in every thread of the workgroup.
fn row_max_sumexp(lid: u32, base: u32, len: u32) -> vec2<f32> {
    // Every thread starts from the row's first element, so threads past the end of a short row hold a
    // real value and no -inf sentinel is needed.
    var m = row_in[base];
    for (var k = lid; k < len; k += WG_REDUCE) {
        m = max(m, row_in[base + k]);
    }
    m = wg_max(lid, m);

    var acc = 0.0;
    for (var k = lid; k < len; k += WG_REDUCE) {
        acc += exp(row_in[base + k] - m);
    }
    return vec2<f32>(m, wg_sum(lid, acc));
}
