// Layout kernels: copy, fill, axis permutation (a strided gather for any permutation and a tiled batched
// 2-D transpose) and region copies along one axis (slice, slice_into, concat).
// They move 32-bit words without interpreting them, so every buffer is `array<u32>` and one pipeline
// serves f32 and u32 tensors alike; f32 bit patterns, NaN payloads included, pass through unchanged.
//#include "common/index.wgsl"

const WG: u32 = 256u;

// Tiled transpose: a 32x32 tile per workgroup of 32x8 threads, each thread moving 4 words per phase.
const TILE: u32 = 32u;
const TILE_ROWS: u32 = 8u;
// One word of padding per tile row: the column-wise read of phase two then hits 32 different banks.
const TILE_STRIDE: u32 = 33u;

struct CopyParams {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct FillParams {
    n: u32,
    value: u32,  // the word to write (an f32's bits for f32 tensors)
    _pad0: u32,
    _pad1: u32,
}

struct PermuteParams {
    n: u32,
    rank: u32,
    _pad0: u32,
    _pad1: u32,
    shape: array<vec4<u32>, 2>,    // output shape, up to rank 8
    strides: array<vec4<u32>, 2>,  // input element stride of the input axis that becomes output axis d
}

struct TileParams {
    batch: u32,  // input is [batch, rows, cols], output [batch, cols, rows]
    rows: u32,
    cols: u32,
    _pad: u32,
}

// Both tensors are seen as [outer, axis, inner]; the kernel copies axis positions
// src_start..src_start+len of the source to dst_start..dst_start+len of the destination.
struct RegionParams {
    n: u32,  // outer * len * inner
    outer: u32,
    len: u32,
    inner: u32,
    src_axis: u32,
    src_start: u32,
    dst_axis: u32,
    dst_start: u32,
}

@group(0) @binding(0) var<uniform> cp: CopyParams;
@group(0) @binding(1) var<storage, read> csrc: array<u32>;
@group(0) @binding(2) var<storage, read_write> cdst: array<u32>;

@compute @workgroup_size(256)
fn copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= cp.n { return; }
    cdst[i] = csrc[i];
}

@group(0) @binding(0) var<uniform> fp: FillParams;
@group(0) @binding(1) var<storage, read_write> fdst: array<u32>;

@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= fp.n { return; }
    fdst[i] = fp.value;
}

@group(0) @binding(0) var<uniform> pp: PermuteParams;
@group(0) @binding(1) var<storage, read> psrc: array<u32>;
@group(0) @binding(2) var<storage, read_write> pdst: array<u32>;

// One thread per output element: writes are coalesced, reads follow the permuted strides.
@compute @workgroup_size(256)
fn permute(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= pp.n { return; }
    // Walk the output index from the last axis outwards, accumulating the input offset.
    var rem = i;
    var src = 0u;
    for (var d = pp.rank; d > 0u; d--) {
        let ax = d - 1u;
        let extent = dim8(pp.shape, ax);
        src += (rem % extent) * dim8(pp.strides, ax);
        rem = rem / extent;
    }
    pdst[i] = psrc[src];
}

@group(0) @binding(0) var<uniform> tp: TileParams;
@group(0) @binding(1) var<storage, read> tsrc: array<u32>;
@group(0) @binding(2) var<storage, read_write> tdst: array<u32>;

var<workgroup> tile: array<u32, 1056>;  // TILE * TILE_STRIDE

// Workgroup (x, y, z) moves the tile at input rows y*32.., columns x*32.. of plane z. Phase one reads
// 32 consecutive input columns per row, phase two writes 32 consecutive output columns (input rows), so
// both sides of the transpose are coalesced; the tile in workgroup memory does the reordering.
@compute @workgroup_size(32, 8)
fn transpose_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let base = wid.z * tp.rows * tp.cols;
    let r0 = wid.y * TILE;
    let c0 = wid.x * TILE;
    for (var k = 0u; k < TILE; k += TILE_ROWS) {
        let r = r0 + lid.y + k;
        let c = c0 + lid.x;
        if r < tp.rows && c < tp.cols {
            tile[(lid.y + k) * TILE_STRIDE + lid.x] = tsrc[base + r * tp.cols + c];
        }
    }
    workgroupBarrier();
    for (var k = 0u; k < TILE; k += TILE_ROWS) {
        let orow = c0 + lid.y + k;  // output row = input column
        let ocol = r0 + lid.x;      // output column = input row
        if orow < tp.cols && ocol < tp.rows {
            tdst[base + orow * tp.rows + ocol] = tile[lid.x * TILE_STRIDE + lid.y + k];
        }
    }
}

@group(0) @binding(0) var<uniform> rp: RegionParams;
@group(0) @binding(1) var<storage, read> rsrc: array<u32>;
@group(0) @binding(2) var<storage, read_write> rdst: array<u32>;

// One thread per element of the region; destination words outside it are left as they are.
@compute @workgroup_size(256)
fn region(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= rp.n { return; }
    let e = i % rp.inner;
    let t = i / rp.inner;
    let a = t % rp.len;
    let o = t / rp.len;
    rdst[(o * rp.dst_axis + rp.dst_start + a) * rp.inner + e] = rsrc[(o * rp.src_axis + rp.src_start + a) * rp.inner + e];
}
