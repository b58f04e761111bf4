// 2-D convolution (NCHW, square K x K kernel, stride, zero padding, dilation 1) and, through the same
// three kernels, transposed convolution (its forward is conv2d_bwd_input, its backward to the input is
// conv2d_fwd, its backward to the weights is conv2d_bwd_weight with x and dy swapped).
//
// Every size below names the convolution in its forward direction: input x [n, ci, h, w], weights
// w [co, ci, k, k], output y [n, co, ho, wo], ho = (h + 2 pad - k) / stride + 1 (floored).
//
// All three are implicit GEMMs on common/gemm_blocks.wgsl, the tiling core of matmul.wgsl with its sizes as
// constants (the family's form: 64 x 64 tile per workgroup, 16 x 16 threads with a 4 x 4 register block
// each, 16-deep steps through workgroup memory):
//   conv2d_fwd         y[co, pixel]  = sum over (ci, kh, kw)            of w[co, ci, kh, kw] * x[...]
//   conv2d_bwd_input   dx[ci, pixel] = sum over (co, th, tw)            of w[co, ci, kh, kw] * dy[...]
//   conv2d_bwd_weight  dw[co, (ci, kh, kw)] = sum over (n, oh, ow)      of dy[n, co, oh, ow] * x[...]
// The im2col matrix is never stored: each TK-deep step gathers its slice from x (or dy) on the fly.
// Implicit GEMM rather than a direct loop (one thread per output element, looping over ci, kh, kw):
// measured on lavapipe (2 busy cores) at N=16, 64->128 channels, 14x14, k=4, s=2, p=1 (205 MFLOP), a
// direct forward took 2010 ms (0.10 GFLOP/s), this one 555 ms (0.37 GFLOP/s), as fast as matmul on the
// same plain GEMM (590 ms): a direct kernel makes two global loads per multiply-add, the tiled one two
// workgroup-memory vec4 loads per 16 multiply-adds and gathers each input once per 64 output channels.
//
// Index decoding (divisions, which a software rasteriser runs one lane at a time) is kept out of the
// inner loops: a thread's pixel (or tap) columns are decoded once before the reduction loop, and its
// single reduction index per depth row of a step once per step.
//
// conv2d_bwd_input splits dx by stride phase (ih + pad) mod s, (iw + pad) mod s (one phase per z of the
// grid): within a phase, exactly the taps kh = rh + s*th, kw = rw + s*tw reach a pixel, so the GEMM has
// no structurally zero terms (a gather over all k*k taps would do s*s times the work, mostly on zeros).
//
// conv2d_bwd_weight reduces over n*ho*wo. For parallelism when the weight gradient is small, z splits
// the batch into groups of images; each split writes its own partial sum (partial[z, co, ci, kh, kw]) and
// a reduce::sum dispatch adds the splits in a fixed order: the result is deterministic (no atomics).
//
// Epilogue of conv2d_fwd and conv2d_bwd_input (the transposed convolution's forward): each result is
// written as act(acc + b[channel]) (`epilogue`), so a layer's bias and activation cost no dispatch of
// their own; the bias may also be one per (image, channel) (a per-sample offset such as a diffusion
// model's time embedding), and conv2d_fwd may add a residual r of the output's shape last. Without a
// bias or a residual the weights are bound in their slots and not read.

// Variants (the tuner picks one per dispatch size on the running GPU, device::tune): k32 steps 32 deep
// per pass through workgroup memory (half the barriers and loop overhead; unpadded rows keep both tiles
// at 16 KiB, WebGPU's default limit), k32p the same with padded rows (17 KiB, for adapters with more
// workgroup memory), k8 8 deep (8 threads side by side along the depth of a tile load). r8x4 and r8x8
// keep the 64 x 64 block with 8 x 4 (128 threads) or 8 x 8 (64 threads) per thread; t128x64 (rows:
// output channels, or input channels for conv2d_bwd_input) and t64x128 (columns: pixels, or taps for
// conv2d_bwd_weight) take blocks of two of the family's tiles with 8 x 4 or 4 x 8 per thread, t128x128
// four with 8 x 8, unpadded (16 KiB; padded it would be 16.5), t128x128k8 the same 8 deep and padded
// (8.25 KiB). The three kernels number their tiles alike (first_block: one axis, folded into y), so
// `grid=F,1,1` divides it by the F tiles a block holds, a workgroup walking the blocks the rounding
// leaves over. Every form adds the terms in the same order of depth; a compiler may still contract or
// unroll the loops differently, so they agree within the GEMM's rounding, not bit for bit. All stay
// within 16 KiB but k32p (17 KiB, left to the device-limit check).
//#variant k8 TK=8u KL=8u
//#variant k32 TK=32u PAD=0u
//#variant k32p TK=32u
//#variant r8x4 RM=8u
//#variant r8x8 RM=8u RN=8u
//#variant t128x64 TM=128u RM=8u grid=2,1,1
//#variant t64x128 TN=128u RN=8u grid=2,1,1
//#variant t128x128 TM=128u TN=128u RM=8u RN=8u PAD=0u grid=4,1,1
//#variant t128x128k8 TM=128u TN=128u RM=8u RN=8u TK=8u KL=8u grid=4,1,1

//#include "common/gemm_blocks.wgsl"
//#include "common/activation.wgsl"

struct ConvParams {
    n: u32,
    ci: u32,
    h: u32,
    w: u32,
    co: u32,
    ho: u32,
    wo: u32,
    k: u32,
    stride: u32,
    pad: u32,
    row_tiles: u32,       // 64-row tiles along the result's rows
    col_tiles: u32,       // 64-column tiles along its columns (for bwd_input, of the largest phase)
    imgs_per_split: u32,  // bwd_weight: images per z slice
    splits: u32,          // bwd_weight: z slices (partial sums)
    accumulate: u32,      // bwd_weight with one split: add into the output (a folded gradient sum)
    bias: u32,            // fwd, bwd_input: 1: add the channel bias b[channel] to each result; 2: b[image, channel]
    act: u32,             // fwd, bwd_input: 0: none; else the fused activation's unary op code + 1
    alpha: f32,           // the fused activation's parameter (LeakyRelu's slope)
    residual: u32,        // fwd: 1: add r (of y's shape) to each result after the activation
    _pad2: u32,
}

// The sizes, shared by the three kernels (each binds its own buffers at 1..3).
@group(0) @binding(0) var<uniform> cv: ConvParams;

// A result of output channel `ch` through the fused bias and activation.
fn epilogue(v: f32, b: f32) -> f32 {
    let z = select(v, v + b, cv.bias != 0u);
    return select(z, unary_op(cv.act - 1u, z, cv.alpha), cv.act != 0u);
}

// Where the bias of image `img`, channel `ch` of `c` sits: b[ch], or b[img, ch] (bias 2).
fn bias_at(img: u32, ch: u32, c: u32) -> u32 {
    return select(ch, img * c + ch, cv.bias == 2u);
}

// The blocks of this form along the result's rows and columns: the host counts 64 x 64 tiles, a
// TM x TN block holds (TM / 64) x (TN / 64) of them.
fn blocks() -> vec2<u32> {
    return vec2<u32>((cv.row_tiles + TM / 64u - 1u) / (TM / 64u), (cv.col_tiles + TN / 64u - 1u) / (TN / 64u));
}

// Block number t as (row block, column block); rows vary fastest so neighbouring workgroups share the
// gathered column tile.
fn block_at(t: u32, nb: vec2<u32>) -> vec2<u32> {
    return vec2<u32>(t % nb.x, t / nb.x);
}

// The first block of a workgroup, from a grid folded into y past the per-dimension limit
// (kernels::groups_1d); a workgroup then takes every (nwg.x * nwg.y)-th block: one in the family's form,
// and where a variant's divided grid rounds below its number of blocks, the ones left over.
fn first_block(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.y * nwg.x + wid.x;
}

// v as (v / per, r / inner, r % inner, r) with r = v % per: a flat index split into its outer index and
// the row and column inside it, each division done once.
fn split3(v: u32, per: u32, inner: u32) -> vec4<u32> {
    let hi = v / per;
    let r = v - hi * per;
    let a = r / inner;
    return vec4<u32>(hi, a, r - a * inner, r);
}

// (iy, ix) lies in the zero padding or past the edges of an hh x ww plane.
fn outside(iy: i32, ix: i32, hh: u32, ww: u32) -> bool {
    return iy < 0 || ix < 0 || iy >= i32(hh) || ix >= i32(ww);
}

// Spatial position of a pixel column: image base offset (0xffffffff past the end), and the top-left
// input coordinates its window starts at (may be negative: padding).
struct Pix {
    base: u32,
    y0: i32,
    x0: i32,
}

// ---------------------------------------------------------------------------------------------
// conv2d_fwd: y [n, co, ho, wo] = conv(x [n, ci, h, w], w [co, ci, k, k]).
// GEMM rows: co; columns: pixels (n, oh, ow) flattened; depth: (ci, kh, kw), w's own layout.

@group(0) @binding(1) var<storage, read> fx: array<f32>;
@group(0) @binding(2) var<storage, read> fw: array<f32>;
@group(0) @binding(3) var<storage, read> fb: array<f32>;
@group(0) @binding(4) var<storage, read> fr: array<f32>;
@group(0) @binding(5) var<storage, read_write> fy: array<f32>;

// Pixel `pix` of y: x's image base and the window's top-left corner.
fn fwd_pixel(pix: u32) -> Pix {
    let howo = cv.ho * cv.wo;
    if pix >= cv.n * howo { return Pix(0xffffffffu, 0, 0); }
    let d = split3(pix, howo, cv.wo);  // (img, oh, ow)
    return Pix(d.x * cv.ci * cv.h * cv.w, i32(d.y * cv.stride) - i32(cv.pad), i32(d.z * cv.stride) - i32(cv.pad));
}

// x at tap (ci, kh, kw) of pixel px, 0 in the padding and past the ends.
fn fwd_gather(px: Pix, cbase: u32, kh: u32, kw: u32, ok: bool) -> f32 {
    let iy = px.y0 + i32(kh);
    let ix = px.x0 + i32(kw);
    if !ok || px.base == 0xffffffffu || outside(iy, ix, cv.h, cv.w) { return 0.0; }
    return fx[px.base + cbase + u32(iy) * cv.w + u32(ix)];
}

// One block of y: output channels m0 .., pixels n0 ...
fn fwd_block(m0: u32, n0: u32, lid3: vec3<u32>, lid: u32) {
    let kk2 = cv.k * cv.k;
    let depth = cv.ci * kk2;
    // Loads: this thread fills depth rows kq, kq + KL, .. (TK / KL of them) of both tiles, at
    // rows/columns r + RL q (q < LA, LB).
    let kq = lid % KL;
    let r = lid / KL;
    var px: array<Pix, LB>;
    for (var q = 0u; q < LB; q++) { px[q] = fwd_pixel(n0 + r + RL * q); }

    var acc = Acc();
    for (var k0 = 0u; k0 < depth; k0 += TK) {
        for (var kr = kq; kr < TK; kr += KL) {
            let kk = k0 + kr;
            let ok = kk < depth;
            let d = split3(kk, kk2, cv.k);  // (c, kh, kw)
            let kh = d.y;
            let kw = d.z;
            let cbase = d.x * cv.h * cv.w;
            for (var q = 0u; q < LA; q++) {
                let i = r + RL * q;
                var v = 0.0;
                if ok && m0 + i < cv.co { v = fw[(m0 + i) * depth + kk]; }
                put_a(kr, i, v);
            }
            for (var q = 0u; q < LB; q++) { put_b(kr, r + RL * q, fwd_gather(px[q], cbase, kh, kw, ok)); }
        }
        workgroupBarrier();
        acc = multiply_tiles(acc, lid3.x, lid3.y);
        workgroupBarrier();
    }

    let howo = cv.ho * cv.wo;
    for (var j = 0u; j < RN; j++) {
        let pix = n0 + acc_col_of(lid3.x, j);
        if pix >= cv.n * howo { break; }
        let d = split3(pix, howo, 1u);  // (img, .., .., pixel in image)
        for (var i = 0u; i < RM; i++) {
            let ch = m0 + acc_row_of(lid3.y, i);
            if ch >= cv.co { break; }
            let b = select(0.0, fb[bias_at(d.x, ch, cv.co)], cv.bias != 0u);
            let at = (d.x * cv.co + ch) * howo + d.w;
            let v = epilogue(acc_at(acc, i, j), b);
            fy[at] = select(v, v + fr[at], cv.residual == 1u);
        }
    }
}

@compute @workgroup_size(WX, WY)
fn conv2d_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid3: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let nb = blocks();
    for (var t = first_block(wid, nwg); t < nb.x * nb.y; t += nwg.x * nwg.y) {
        let b = block_at(t, nb);
        fwd_block(b.x * TM, b.y * TN, lid3, lid);
    }
}

// ---------------------------------------------------------------------------------------------
// conv2d_bwd_input: dx [n, ci, h, w] from dy [n, co, ho, wo] and w [co, ci, k, k].
// z = stride phase (rh, rw). Pixels of the phase: ih = qh*s + rh - pad for qh in [qh_lo, qh_hi) (same
// for iw); the taps that reach them: kh = rh + s*th, th < th_n; then oh = qh - th.
// GEMM rows: ci; columns: the phase's pixels (n, qh, qw) flattened; depth: (co, th, tw).

@group(0) @binding(1) var<storage, read> bdy: array<f32>;
@group(0) @binding(2) var<storage, read> bw: array<f32>;
@group(0) @binding(3) var<storage, read> bb: array<f32>;
@group(0) @binding(4) var<storage, read_write> bdx: array<f32>;

// One stride phase along one axis of extent `len`: first q, number of q, number of taps.
fn phase_axis(len: u32, rem: u32) -> vec3<u32> {
    let s = cv.stride;
    // ceil((pad - rem) / s) when pad > rem, else 0; rem < s, so nothing below underflows.
    let lo = (cv.pad + s - 1u - rem) / s;
    let hi = (len + cv.pad + s - 1u - rem) / s;
    let taps = (cv.k + s - 1u - rem) / s;
    return vec3<u32>(lo, select(0u, hi - lo, hi > lo), taps);
}

// Pixel `pix` of the phase: dy's image base, and (qh, qw) as the window's origin (oh = qh - th).
fn bwd_pixel(pix: u32, ah: vec3<u32>, aw: vec3<u32>) -> Pix {
    let per = ah.y * aw.y;
    if pix >= cv.n * per { return Pix(0xffffffffu, 0, 0); }
    let d = split3(pix, per, aw.y);  // (img, qh - qh_lo, qw - qw_lo)
    return Pix(d.x * cv.co * cv.ho * cv.wo, i32(ah.x + d.y), i32(aw.x + d.z));
}

fn bwd_gather(px: Pix, cbase: u32, th: u32, tw: u32, ok: bool) -> f32 {
    let oy = px.y0 - i32(th);
    let ox = px.x0 - i32(tw);
    if !ok || px.base == 0xffffffffu || outside(oy, ox, cv.ho, cv.wo) { return 0.0; }
    return bdy[px.base + cbase + u32(oy) * cv.wo + u32(ox)];
}

// One block of dx in stride phase z: input channels m0 .., the phase's pixels n0 ...
fn bwd_input_block(m0: u32, n0: u32, z: u32, lid3: vec3<u32>, lid: u32) {
    let s = cv.stride;
    let rh = z / s;
    let rw = z - rh * s;
    let ah = phase_axis(cv.h, rh);
    let aw = phase_axis(cv.w, rw);
    let npix = cv.n * ah.y * aw.y;
    // Every workgroup of this z takes the same branch.
    if n0 >= npix { return; }
    let taps = ah.z * aw.z;
    let depth = cv.co * taps;
    let kq = lid % KL;
    let r = lid / KL;
    var px: array<Pix, LB>;
    for (var q = 0u; q < LB; q++) { px[q] = bwd_pixel(n0 + r + RL * q, ah, aw); }
    let hw_o = cv.ho * cv.wo;

    var acc = Acc();
    for (var k0 = 0u; k0 < depth; k0 += TK) {
        for (var kr = kq; kr < TK; kr += KL) {
            let kk = k0 + kr;
            let ok = kk < depth;
            // max(.., 1): a phase without taps has depth 0 and never gets here.
            let d = split3(kk, max(taps, 1u), max(aw.z, 1u));  // (c, th, tw)
            let c = d.x;
            let th = d.y;
            let tw = d.z;
            // w[c, ci, rh + s*th, rw + s*tw] for ci = m0 + i: consecutive ci are k*k apart.
            let wtap = (c * cv.ci * cv.k + rh + s * th) * cv.k + rw + s * tw;
            for (var q = 0u; q < LA; q++) {
                let i = r + RL * q;
                var v = 0.0;
                if ok && m0 + i < cv.ci { v = bw[wtap + (m0 + i) * cv.k * cv.k]; }
                put_a(kr, i, v);
            }
            let cbase = c * hw_o;
            for (var q = 0u; q < LB; q++) { put_b(kr, r + RL * q, bwd_gather(px[q], cbase, th, tw, ok)); }
        }
        workgroupBarrier();
        acc = multiply_tiles(acc, lid3.x, lid3.y);
        workgroupBarrier();
    }

    // A phase without taps (stride > k) gets no terms: its pixels are written as 0.
    let per = ah.y * aw.y;
    let hw = cv.h * cv.w;
    for (var j = 0u; j < RN; j++) {
        let pix = n0 + acc_col_of(lid3.x, j);
        if pix >= npix { break; }
        let d = split3(pix, per, aw.y);
        let iy = (ah.x + d.y) * s + rh - cv.pad;
        let ix = (aw.x + d.z) * s + rw - cv.pad;
        let at = iy * cv.w + ix;
        for (var i = 0u; i < RM; i++) {
            let ch = m0 + acc_row_of(lid3.y, i);
            if ch >= cv.ci { break; }
            let b = select(0.0, bb[bias_at(d.x, ch, cv.ci)], cv.bias != 0u);
            bdx[(d.x * cv.ci + ch) * hw + at] = epilogue(acc_at(acc, i, j), b);
        }
    }
}

@compute @workgroup_size(WX, WY)
fn conv2d_bwd_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid3: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let nb = blocks();
    for (var t = first_block(wid, nwg); t < nb.x * nb.y; t += nwg.x * nwg.y) {
        let b = block_at(t, nb);
        bwd_input_block(b.x * TM, b.y * TN, wid.z, lid3, lid);
    }
}

// ---------------------------------------------------------------------------------------------
// conv2d_bwd_weight: partial[z, co, ci, kh, kw] = sum over the images of split z and their (oh, ow) of
// dy[n, co, oh, ow] * x[n, ci, oh*s - pad + kh, ow*s - pad + kw].
// GEMM rows: co; columns: taps (ci, kh, kw), w's layout; depth: pixels (n, oh, ow) of the split.

@group(0) @binding(1) var<storage, read> wx: array<f32>;
@group(0) @binding(2) var<storage, read> wdy: array<f32>;
@group(0) @binding(3) var<storage, read_write> wpart: array<f32>;

// Tap column `col`: offset of its channel plane in an image of x, and (kh, kw); base 0xffffffff past
// the end.
fn tap_of(col: u32) -> Pix {
    let kk2 = cv.k * cv.k;
    if col >= cv.ci * kk2 { return Pix(0xffffffffu, 0, 0); }
    let d = split3(col, kk2, cv.k);  // (c, kh, kw)
    return Pix(d.x * cv.h * cv.w, i32(d.y), i32(d.z));
}

fn wgt_gather(tap: Pix, xbase: u32, y0: i32, x0: i32, ok: bool) -> f32 {
    let iy = y0 + tap.y0;
    let ix = x0 + tap.x0;
    if !ok || tap.base == 0xffffffffu || outside(iy, ix, cv.h, cv.w) { return 0.0; }
    return wx[xbase + tap.base + u32(iy) * cv.w + u32(ix)];
}

// One block of split z's partial sum: output channels m0 .., taps n0 ...
fn bwd_weight_block(m0: u32, n0: u32, z: u32, lid3: vec3<u32>, lid: u32) {
    let howo = cv.ho * cv.wo;
    let first = z * cv.imgs_per_split;
    let last = min(first + cv.imgs_per_split, cv.n);
    let kend = select(0u, last * howo, last > first);
    let kq = lid % KL;
    let r = lid / KL;
    var tap: array<Pix, LB>;
    for (var q = 0u; q < LB; q++) { tap[q] = tap_of(n0 + r + RL * q); }
    let chw = cv.ci * cv.h * cv.w;

    var acc = Acc();
    for (var k0 = first * howo; k0 < kend; k0 += TK) {
        for (var kr = kq; kr < TK; kr += KL) {
            let pix = k0 + kr;
            let ok = pix < kend;
            let d = split3(pix, howo, cv.wo);  // (img, oh, ow, pixel in image)
            let img = d.x;
            let oh = d.y;
            let ow = d.z;
            // dy[img, co, oh, ow] for co = m0 + i: consecutive co are ho*wo apart.
            let dyat = img * cv.co * howo + d.w;
            for (var q = 0u; q < LA; q++) {
                let i = r + RL * q;
                var v = 0.0;
                if ok && m0 + i < cv.co { v = wdy[dyat + (m0 + i) * howo]; }
                put_a(kr, i, v);
            }
            let xbase = img * chw;
            let y0 = i32(oh * cv.stride) - i32(cv.pad);
            let x0 = i32(ow * cv.stride) - i32(cv.pad);
            for (var q = 0u; q < LB; q++) { put_b(kr, r + RL * q, wgt_gather(tap[q], xbase, y0, x0, ok)); }
        }
        workgroupBarrier();
        acc = multiply_tiles(acc, lid3.x, lid3.y);
        workgroupBarrier();
    }

    let cols = cv.ci * cv.k * cv.k;
    let zbase = z * cv.co * cols;
    for (var i = 0u; i < RM; i++) {
        let ch = m0 + acc_row_of(lid3.y, i);
        if ch >= cv.co { break; }
        for (var j = 0u; j < RN; j++) {
            let col = n0 + acc_col_of(lid3.x, j);
            if col >= cols { break; }
            let at = zbase + ch * cols + col;
            if cv.accumulate == 1u {
                wpart[at] += acc_at(acc, i, j);
            } else {
                wpart[at] = acc_at(acc, i, j);
            }
        }
    }
}

@compute @workgroup_size(WX, WY)
fn conv2d_bwd_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_id) lid3: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let nb = blocks();
    for (var t = first_block(wid, nwg); t < nb.x * nb.y; t += nwg.x * nwg.y) {
        let b = block_at(t, nb);
        bwd_weight_block(b.x * TM, b.y * TN, wid.z, lid3, lid);
    }
}
