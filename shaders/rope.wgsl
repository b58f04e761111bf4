// Rotary position embeddings on a packed q|k|v projection [rows, 3C] (rows = B·T, row r at position r mod
// T), heads of D = C / heads values: in q and in k, each head's pair (x_j, x_{j+D/2}), j < D/2, turns by
// the angle of its position, sign · θ(pos, j); v is copied. The angles come as a table [context, D/2, 2]
// of (cos, sin), so both engines read the same numbers. sign = -1 is the transpose (the inverse
// rotation): the backward of sign = +1.
//
// rope_qkv: one thread per output element.
//#include "common/index.wgsl"

const WG: u32 = 256u;

struct RopeParams {
    n: u32,      // output elements, rows · 3C
    t: u32,      // sequence length (positions 0..t)
    c: u32,      // width C (q, k and v each)
    hd: u32,     // head size D, even
    sign: f32,   // +1: rotate, -1: rotate back
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> rp: RopeParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn rope_qkv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= rp.n { return; }
    let w = 3u * rp.c;
    let r = i / w;
    let col = i - r * w;
    if col >= 2u * rp.c {
        out[i] = x[i];
        return;
    }
    let half = rp.hd / 2u;
    let d = col % rp.hd;
    let j = d % half;
    let base = i - d;  // the head's first value
    let pos = r % rp.t;
    let cs = table[(pos * half + j) * 2u];
    let sn = rp.sign * table[(pos * half + j) * 2u + 1u];
    let x1 = x[base + j];
    let x2 = x[base + j + half];
    if d < half {
        out[i] = x1 * cs - x2 * sn;
    } else {
        out[i] = x2 * cs + x1 * sn;
    }
}
