// The backward of the matmul families' bias and activation epilogue (common/matmul_epilogue.wgsl:
// y = act(z), z = x·W + bias[col], all row-major [rows, n]):
//   matmul_act_bias_bwd: dz = dy * act'(z) and db[col] = sum over rows of dz, in one pass.
// act' comes from the output y where the activation allows it (`from_out`: relu and leaky relu with a
// positive slope keep the sign, tanh' = 1 - y^2, sigmoid' = y (1 - y), as the conv epilogue's backward
// takes it), else from the pre-activation z the forward kept (unary_deriv: GELU, SiLU). A workgroup owns
// COLS columns; its LANES row lanes walk the rows (lane l takes rows l, l + LANES, ...) reading
// consecutive columns, and each column's LANES partial sums are added in lane order.
//#include "common/activation.wgsl"

const COLS: u32 = 64u;
const LANES: u32 = 4u;

struct MatmulBiasBwdParams {
    rows: u32,
    n: u32,
    act: u32,       // the activation's unary op code + 1 (0: none, dz = dy)
    alpha: f32,     // leaky relu's slope
    from_out: u32,  // 1: t is the output y; 0: t is the pre-activation z
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> q: MatmulBiasBwdParams;
@group(0) @binding(1) var<storage, read> t: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> dz: array<f32>;
@group(0) @binding(4) var<storage, read_write> db: array<f32>;

var<workgroup> part: array<f32, COLS * LANES>;

@compute @workgroup_size(COLS, LANES)
fn matmul_act_bias_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_id) l: vec3<u32>) {
    let col = (wid.y * nwg.x + wid.x) * COLS + l.x;
    var s = 0.0;
    if col < q.n {
        for (var r = l.y; r < q.rows; r += LANES) {
            let i = r * q.n + col;
            var d = dy[i];
            if q.act != 0u {
                if q.from_out == 1u {
                    d *= deriv_from_out(q.act - 1u, t[i], q.alpha);
                } else {
                    d *= unary_deriv(q.act - 1u, t[i], q.alpha);
                }
            }
            dz[i] = d;
            s += d;
        }
    }
    part[l.y * COLS + l.x] = s;
    workgroupBarrier();
    if l.y == 0u && col < q.n {
        var total = part[l.x];
        for (var k = 1u; k < LANES; k++) {
            total += part[k * COLS + l.x];
        }
        db[col] = total;
    }
}
