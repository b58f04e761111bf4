// Row statistics of attention_fwd's score tiles (common/attention_kernels.wgsl): the FWD_BS lanes of
// owner row o hold one score each, and every lane needs the row's largest score and then the sum of
// the row's probabilities. This form reads the row back from workgroup memory;
// common/attention_rows_sg.wgsl is the subgroup form (the families' `sg` variants). Call each from
// uniform control flow (they may contain barriers).

// Once per workgroup, before the first tile.
fn rows_setup(lid: u32) {}

// The largest of the row's scores s: each lane writes its own, then reads the row.
fn row_max(o: u32, lane: u32, s: f32) -> f32 {
    f_s[o * FWD_BS + lane] = s;
    workgroupBarrier();
    var mt = NEG;
    for (var c = 0u; c < FWD_BS; c++) {
        mt = max(mt, f_s[o * FWD_BS + c]);
    }
    return mt;
}

// With the lane's probability p, before the barrier that publishes f_p: nothing to do here.
fn row_sum_start(o: u32, lane: u32, p: f32) {}

// After that barrier: the row's probabilities in f_p, added in lane order.
fn row_sum(o: u32) -> f32 {
    var psum = 0.0;
    for (var c = 0u; c < FWD_BS; c++) {
        psum += f_p[o * FWD_BS + c];
    }
    return psum;
}
