// The subgroup form of common/attention_rows.wgsl (same functions, same contract). A row's FWD_BS lanes
// are consecutive invocations (local_invocation_index = o · FWD_BS + lane). Where the workgroup's
// subgroups hold consecutive invocations in lane order (lane = index mod size, checked once per
// workgroup in rows_setup), every run of min(size, FWD_BS) lanes of a row lies in one subgroup at an
// aligned offset: a butterfly of subgroupShuffleXor reduces each run (every lane of the run gets the
// same bits), and the row reads one value per run from workgroup memory instead of FWD_BS. Where they do
// not, each lane passes its own value and the row is read whole, as in the workgroup-memory form.
//#enable subgroups

var<workgroup> f_r: array<f32, BO * FWD_BS>;
var<workgroup> f_map: atomic<u32>;
// Lanes per run, or 0 where the subgroups are not in invocation order (then every lane is its own run).
var<private> r_run: u32;

fn rows_setup(lid: u32) {
    if lid == 0u {
        atomicStore(&f_map, 0u);
    }
    workgroupBarrier();
    // All invocations are active here (the kernel's early return is uniform), so the active count is
    // the subgroup's size and the exclusive count its lane.
    let n = subgroupAdd(1u);
    if subgroupExclusiveAdd(1u) != lid % n {
        atomicOr(&f_map, 1u);
    }
    workgroupBarrier();
    r_run = select(min(n, FWD_BS), 0u, atomicLoad(&f_map) != 0u);
}

// v reduced over its run by max (sum = false) or sum: xor partners at FWD_BS/2 .. 1 stay within an
// aligned run of FWD_BS lanes; a partner at or past the subgroup's size is the lane itself (m % n = 0)
// and is skipped.
fn run_reduce(v0: f32, sum: bool) -> f32 {
    let n = subgroupAdd(1u);
    var v = v0;
    for (var m = FWD_BS / 2u; m > 0u; m = m >> 1u) {
        let u = subgroupShuffleXor(v, m % n);
        if m < n {
            v = select(max(v, u), v + u, sum);
        }
    }
    return v;
}

fn row_max(o: u32, lane: u32, s: f32) -> f32 {
    let v = run_reduce(s, false);
    f_s[o * FWD_BS + lane] = select(s, v, r_run != 0u);
    workgroupBarrier();
    let step = max(r_run, 1u);
    var mt = NEG;
    for (var c = 0u; c < FWD_BS; c += step) {
        mt = max(mt, f_s[o * FWD_BS + c]);
    }
    return mt;
}

fn row_sum_start(o: u32, lane: u32, p: f32) {
    f_r[o * FWD_BS + lane] = run_reduce(p, true);
}

fn row_sum(o: u32) -> f32 {
    var psum = 0.0;
    if r_run == 0u {
        for (var c = 0u; c < FWD_BS; c++) {
            psum += f_p[o * FWD_BS + c];
        }
        return psum;
    }
    for (var c = 0u; c < FWD_BS; c += r_run) {
        psum += f_r[o * FWD_BS + c];
    }
    return psum;
}
