// Elementwise kernels: unary ops, binary ops with numpy-style broadcasting, scalar forms, and the backward
// of the unary ops (dx = dy * f'(x), same op codes).
// One thread per output element; the op is a uniform switch (every thread takes the same branch), so a
// family costs one pipeline per entry point instead of one per op.
//#include "common/index.wgsl"
//#include "common/activation.wgsl"

const WG: u32 = 256u;

struct UnaryParams {
    n: u32,
    op: u32,
    alpha: f32,   // slope for leaky_relu
    _pad: u32,
}

struct BinaryParams {
    n: u32,
    rank: u32,
    op: u32,
    contiguous: u32,                 // 1: a, b and out share one shape (the host then runs binary_same)
    shape: array<vec4<u32>, 2>,      // output shape, up to rank 8
    a_strides: array<vec4<u32>, 2>,  // element strides of a, 0 along broadcast axes
    b_strides: array<vec4<u32>, 2>,
}

struct ScalarParams {
    n: u32,
    op: u32,
    reverse: u32,  // 1: out = op(s, a) instead of op(a, s)
    _pad: u32,
    s: f32,
    rep: u32,    // > 0: x is broadcast along one axis of this extent (out = op(x[(i / (rep * inner)) * inner + i % inner], s))
    inner: u32,  // elements after that axis
    _pad3: u32,
}

// The element of x that output i reads: itself, or its broadcast source when sp.rep > 0.
fn scalar_src(i: u32) -> u32 {
    if sp.rep == 0u { return i; }
    return (i / (sp.rep * sp.inner)) * sp.inner + i % sp.inner;
}

fn binary_op(op: u32, a: f32, b: f32) -> f32 {
    switch op {
        case 0u: { return a + b; }
        case 1u: { return a - b; }
        case 2u: { return a * b; }
        case 3u: { return a / b; }
        case 4u: { return max(a, b); }
        case 5u: { return min(a, b); }
        case 6u: { return pow(a, b); }
        case 7u: { return select(0.0, 1.0, a > b); }
        case 8u: { return select(0.0, 1.0, a < b); }
        case 9u: { return select(0.0, 1.0, a == b); }
        default: { return a; }
    }
}

@group(0) @binding(0) var<uniform> up: UnaryParams;
@group(0) @binding(1) var<storage, read> ux: array<f32>;
@group(0) @binding(2) var<storage, read_write> uout: array<f32>;

@compute @workgroup_size(256)
fn unary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= up.n { return; }
    uout[i] = unary_op(up.op, ux[i], up.alpha);
}

// Reuses UnaryParams (n, op, alpha) and its `up` binding.
@group(0) @binding(1) var<storage, read> ubx: array<f32>;
@group(0) @binding(2) var<storage, read> ubdy: array<f32>;
@group(0) @binding(3) var<storage, read_write> ubdx: array<f32>;

@compute @workgroup_size(256)
fn unary_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= up.n { return; }
    ubdx[i] = ubdy[i] * unary_deriv(up.op, ubx[i], up.alpha);
}

@group(0) @binding(0) var<uniform> bp: BinaryParams;
@group(0) @binding(1) var<storage, read> ba: array<f32>;
@group(0) @binding(2) var<storage, read> bb: array<f32>;
@group(0) @binding(3) var<storage, read_write> bout: array<f32>;

// Operands of the output's own shape: no index math (a separate entry point, so the broadcast path's
// loop does not weigh on the common case's code generation).
@compute @workgroup_size(256)
fn binary_same(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= bp.n { return; }
    bout[i] = binary_op(bp.op, ba[i], bb[i]);
}

@compute @workgroup_size(256)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= bp.n { return; }
    // Walk the output index from the last axis outwards, accumulating each operand's offset.
    var rem = i;
    var ia = 0u;
    var ib = 0u;
    for (var d = bp.rank; d > 0u; d--) {
        let ax = d - 1u;
        let extent = dim8(bp.shape, ax);
        let c = rem % extent;
        rem = rem / extent;
        ia += c * dim8(bp.a_strides, ax);
        ib += c * dim8(bp.b_strides, ax);
    }
    bout[i] = binary_op(bp.op, ba[ia], bb[ib]);
}

@group(0) @binding(0) var<uniform> sp: ScalarParams;
@group(0) @binding(1) var<storage, read> sx: array<f32>;
@group(0) @binding(2) var<storage, read_write> sout: array<f32>;

@compute @workgroup_size(256)
fn scalar(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= sp.n { return; }
    let v = sx[scalar_src(i)];
    if sp.reverse == 1u {
        sout[i] = binary_op(sp.op, sp.s, v);
    } else {
        sout[i] = binary_op(sp.op, v, sp.s);
    }
}
