// The mean binary cross-entropy with logits, z = x + b[column] (b: an optional bias broadcast over the
// rows, the last layer's, so that its add costs no dispatch of its own), as one loss value:
//   bce_mean_fwd: loss[0] = mean over i of max(z, 0) - z t + log(1 + exp(-|z|)) (the stable form), one
//     workgroup: 256 strided partial sums, then a tree.
//   bce_mean_bwd: dx = (sigmoid(z) - t) * (dy[0] * scale), scale = 1 / n (what a mean's backward
//     multiplies by), and db[col] = sum over the rows of dx, one thread per column.
// x [rows, cols] row-major; t has x's shape. Both kernels run one workgroup: a loss over logits is small.
//#include "common/workgroup_reduce.wgsl"

struct BceMeanParams {
    rows: u32,
    cols: u32,
    bias: u32,   // 1: add b[col] to each logit
    scale: f32,  // bce_mean_bwd: 1 / (rows * cols)
}

@group(0) @binding(0) var<uniform> mp: BceMeanParams;
@group(0) @binding(1) var<storage, read> mx: array<f32>;
@group(0) @binding(2) var<storage, read> mt: array<f32>;
@group(0) @binding(3) var<storage, read> mb: array<f32>;

fn logit(i: u32, col: u32) -> f32 {
    return select(mx[i], mx[i] + mb[col], mp.bias == 1u);
}

@group(0) @binding(4) var<storage, read_write> mloss: array<f32>;

@compute @workgroup_size(256)
fn bce_mean_fwd(@builtin(local_invocation_index) lid: u32) {
    let n = mp.rows * mp.cols;
    var s = 0.0;
    for (var i = lid; i < n; i += WG_REDUCE) {
        let z = logit(i, i % mp.cols);
        s += max(z, 0.0) - z * mt[i] + log(1.0 + exp(-abs(z)));
    }
    let total = wg_sum(lid, s);
    if lid == 0u { mloss[0] = total / f32(n); }
}

@group(0) @binding(4) var<storage, read> mdy: array<f32>;
@group(0) @binding(5) var<storage, read_write> mdx: array<f32>;
@group(0) @binding(6) var<storage, read_write> mdb: array<f32>;

@compute @workgroup_size(256)
fn bce_mean_bwd(@builtin(local_invocation_index) lid: u32) {
    let g = mdy[0] * mp.scale;
    for (var col = lid; col < mp.cols; col += 256u) {
        var s = 0.0;
        for (var r = 0u; r < mp.rows; r++) {
            let i = r * mp.cols + col;
            let d = (1.0 / (1.0 + exp(-logit(i, col))) - mt[i]) * g;
            mdx[i] = d;
            s += d;
        }
        mdb[col] = s;
    }
}
