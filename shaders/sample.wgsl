// Minibatch sampling on the device, with replacement: row r of the batch at training step s is data row
// bits(seed, s * stride + r) mod N, bits being the raw Philox stream (common/philox.wgsl) and s the step
// counter read at run time (common/stream_step.wgsl), so a recorded training step gathers a new batch at
// every replay. stride is the batch size rounded up to 4 (ops::sample). The index is integer arithmetic, so
// every device picks the same rows, and the copy is exact.
//
// gather_rows writes the batch's data rows, gather_labels their labels; both derive the row index with
// `source_row`, so a batch and its labels always agree.
//#include "common/index.wgsl"
//#include "common/philox.wgsl"
//#include "common/stream_step.wgsl"

const WG: u32 = 256u;

struct SampleParams {
    n: u32,             // values written: batch * row_len (gather_rows) or batch (gather_labels)
    row_len: u32,       // D: elements per data row
    nrows: u32,         // N: rows of the data set
    _pad: u32,
    seed: vec2<u32>,    // (lo, hi)
    stride: vec2<u32>,  // stream elements per step (lo, hi)
}

@group(0) @binding(0) var<uniform> sp: SampleParams;
@group(0) @binding(1) var<storage, read> data: array<f32>;
@group(0) @binding(2) var<storage, read> step: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> out_labels: array<u32>;

// Data row that batch row r takes at the current step.
fn source_row(r: u32) -> u32 {
    let base = rng_step_offset(step[0], sp.stride);
    return rng_bits_at(sp.seed, base, r) % sp.nrows;
}

// One invocation per output element: element j of batch row r is element j of its source row.
@compute @workgroup_size(256)
fn gather_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= sp.n { return; }
    let r = i / sp.row_len;
    let j = i - r * sp.row_len;
    out[i] = data[source_row(r) * sp.row_len + j];
}

// One invocation per batch row.
@compute @workgroup_size(256)
fn gather_labels(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let r = flat_id(wid, nwg, lid, WG);
    if r >= sp.n { return; }
    out_labels[r] = labels[source_row(r)];
}
