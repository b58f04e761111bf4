// Counter-based random numbers: Philox4x32-10 and exact integer transforms of its words to uniform and
// normal f32. src/device/cpu/rng.rs mirrors this file function by function; keep the two in step.
//
// Stream convention. A stream is (seed, offset), both 64-bit; 64-bit values travel as vec2<u32>(lo, hi).
// Element i of the stream is lane (offset + i) % 4 of the counter block (offset + i) / 4, where block b's
// four words are philox4x32(ctr = (b.lo, b.hi, 0, 0), key = (seed.lo, seed.hi)). Any kernel can therefore
// compute element i on its own (rng_*_at below), and element i of the stream at offset o is element 0 of
// the stream at offset o + i. The 64-bit block counter does not wrap in any realistic training run.
//
// Kinds of value drawn from a block's words (w0, w1, w2, w3):
// - bits:    lane l is w_l.
// - uniform: lane l is (w_l >> 8) * 2^-24, in [0, 1). u32 -> f32 of a value below 2^24 is exact and the
//            scale is a power of two, so every device gives the same bits.
// - normal:  Box-Muller on the pairs (w0, w1) and (w2, w3): lanes 0 and 1 are r cos(theta) and r sin(theta)
//            of the first pair, lanes 2 and 3 of the second, with u1 = (a + 1) / 2^32 in (0, 1],
//            theta = 2 pi b / 2^32 and r = sqrt(-2 ln u1). GPU transcendentals are not correctly rounded
//            and drivers may fuse multiply-adds, so all of it is integer fixed point (exact everywhere):
//            ln through repeated squaring (log2 bit by bit) or, for u1 near 1, a series in 1 - u1 that keeps
//            r's precision as r goes to 0; r from an exact integer square root (Q3.26); sin and cos from
//            octant-reduced Taylor polynomials in Q1.31; the product rounded to a Q3.20 integer (|z| < 8)
//            and converted by f32(i32) * 2^-20, both exact. |z - exact Box-Muller| < 2^-21 + 1e-7.
// Uniform and normal draws over the same block reuse its words: give unrelated draws disjoint offsets
// rounded to whole blocks (ops::rng::RngState does this).

const PHILOX_M0: u32 = 0xD2511F53u;
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;
const PHILOX_W1: u32 = 0xBB67AE85u;

// Full product a * b as (lo, hi) from 16-bit halves: WGSL has no u64 and no mulhi.
fn mul32x32(a: u32, b: u32) -> vec2<u32> {
    let al = a & 0xFFFFu;
    let ah = a >> 16u;
    let bl = b & 0xFFFFu;
    let bh = b >> 16u;
    let ll = al * bl;
    let lh = al * bh;
    let hl = ah * bl;
    let hh = ah * bh;
    // Carry out of the low word: the three terms that land in bits 16..47 summed at bit 16.
    let mid = (ll >> 16u) + (lh & 0xFFFFu) + (hl & 0xFFFFu);
    let hi = hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
    return vec2<u32>(a * b, hi);
}

fn philox_round(ctr: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    let p0 = mul32x32(PHILOX_M0, ctr.x);
    let p1 = mul32x32(PHILOX_M1, ctr.z);
    return vec4<u32>(p1.y ^ ctr.y ^ key.x, p1.x, p0.y ^ ctr.w ^ key.y, p0.x);
}

// Philox4x32-10: ten rounds, the key bumped by the Weyl constants between rounds.
fn philox4x32(ctr: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = philox_round(ctr, key);
    var k = key;
    for (var r = 1u; r < 10u; r++) {
        k += vec2<u32>(PHILOX_W0, PHILOX_W1);
        c = philox_round(c, k);
    }
    return c;
}

// 64-bit a + b (wrapping), a as (lo, hi).
fn rng_add64(a: vec2<u32>, b: u32) -> vec2<u32> {
    let lo = a.x + b;
    return vec2<u32>(lo, a.y + select(0u, 1u, lo < b));
}

// Counter block and lane of element i of the stream at `offset`: offset / 4 + (offset % 4 + i) / 4, which is
// (offset + i) / 4 and, past offset + i = 2^64, keeps counting blocks in 64 bits as the block kernels do.
fn rng_block_of(offset: vec2<u32>, i: u32) -> vec2<u32> {
    let b = vec2<u32>((offset.x >> 2u) | (offset.y << 30u), offset.y >> 2u);
    return rng_add64(b, (i >> 2u) + (((offset.x & 3u) + (i & 3u)) >> 2u));
}

fn rng_lane_of(offset: vec2<u32>, i: u32) -> u32 {
    return (offset.x + i) & 3u;
}

fn rng_uniform_from_bits(x: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(x >> vec4<u32>(8u)) * (1.0 / 16777216.0);
}

const RNG_ONE: u32 = 0x80000000u;    // 1.0 in Q1.31
const RNG_LN2X2: u32 = 0xB17217F8u;  // 2 ln 2 in Q1.31, rounded
const RNG_PI4: u32 = 0xC90FDAA2u;    // pi / 4 in Q0.32, rounded

// a * b for Q1.31 operands whose product is below 2, truncated.
fn q31_mul(a: u32, b: u32) -> u32 {
    let p = mul32x32(a, b);
    return (p.y << 1u) | (p.x >> 31u);
}

// floor(sqrt(v)) for v = (lo, hi) below 2^58, digit by digit: two bits of v per step, 29 root bits.
// The remainder stays at most 2 * root, so it and the trial value fit in 32 bits throughout.
fn rng_isqrt58(v: vec2<u32>) -> u32 {
    var root = 0u;
    var rem = 0u;
    for (var i = 0u; i < 29u; i++) {
        let sh = 56u - 2u * i;
        var two: u32;
        if sh >= 32u {
            two = (v.y >> (sh - 32u)) & 3u;
        } else {
            two = (v.x >> sh) & 3u;
        }
        rem = (rem << 2u) | two;
        let trial = (root << 2u) | 1u;
        if rem >= trial {
            rem -= trial;
            root = (root << 1u) | 1u;
        } else {
            root = root << 1u;
        }
    }
    return root;
}

// log2(m) for m = x / 2^31 in [1, 2), as a 27-bit fraction: square m, and a square of 2 or more is a 1 bit
// (then halve). Each squaring truncates at 2^-31 relative, which costs under 2^-31 / ln 2 in the result.
fn rng_log2_frac27(x: u32) -> u32 {
    var m = x;
    var lg = 0u;
    for (var i = 0u; i < 27u; i++) {
        let sq = mul32x32(m, m);  // m^2 in Q2.62
        let ge2 = sq.y >= 0x80000000u;
        lg = (lg << 1u) | select(0u, 1u, ge2);
        m = select((sq.y << 1u) | (sq.x >> 31u), sq.y, ge2);
    }
    return lg;
}

// r = sqrt(-2 ln u1) with u1 = (a + 1) / 2^32, in Q3.26 (r <= sqrt(64 ln 2) < 6.7).
fn rng_radius(a: u32) -> u32 {
    let w = ~a;  // (1 - u1) * 2^32, exact
    var p: vec2<u32>;  // r^2 * 2^52 as (lo, hi)
    if w < 0x01000000u {
        // 1 - u1 < 2^-8: -ln(u1) = w g(w), g = 1 + w/2 + w^2/3 + w^3/4 (next term < 2^-34 relative). A
        // relative error in r^2 stays relative in r, so tiny radii keep their precision.
        let w31 = w >> 1u;
        var g = 0x20000000u;
        g = 0x2AAAAAABu + q31_mul(w31, g);
        g = 0x40000000u + q31_mul(w31, g);
        g = RNG_ONE + q31_mul(w31, g);
        let prod = mul32x32(w, g);  // w * g in Q1.63 = r^2 * 2^62
        p = vec2<u32>((prod.x >> 10u) | (prod.y << 22u), prod.y >> 10u);
    } else {
        // u1 = 2^-(z+1) * m with m in [1, 2): -log2(u1) = z + 1 - log2(m), in Q6.26 (at most 32).
        let v = a + 1u;
        let z = countLeadingZeros(v);
        let lg = (rng_log2_frac27(v << z) + 1u) >> 1u;
        let y = ((z + 1u) << 26u) - lg;
        let prod = mul32x32(y, RNG_LN2X2);  // r^2 = 2 ln2 * -log2(u1), here times 2^57
        p = vec2<u32>((prod.x >> 5u) | (prod.y << 27u), prod.y >> 5u);
    }
    return rng_isqrt58(p);
}

// cos and sin of theta = 2 pi b / 2^32 as (|cos|, |sin|) in Q1.31 and their signs (1: negative).
fn rng_cos_sin(b: u32) -> vec4<u32> {
    let oct = b >> 29u;
    // Angle past the start of the octant, in Q0.32; odd octants are measured back from their end so the
    // polynomials only see [0, pi/4].
    var x = mul32x32(b << 3u, RNG_PI4).y;
    if (oct & 1u) == 1u {
        x = RNG_PI4 - x;
    }
    let x31 = x >> 1u;
    let y = q31_mul(x31, x31);
    // Taylor series to x^11 and x^12 (truncation < 1e-11 on [0, pi/4]) in nested form, so every partial
    // value lies in (0, 1] and unsigned Q1.31 suffices.
    var s = RNG_ONE - y / 110u;
    s = RNG_ONE - q31_mul(y / 72u, s);
    s = RNG_ONE - q31_mul(y / 42u, s);
    s = RNG_ONE - q31_mul(y / 20u, s);
    s = RNG_ONE - q31_mul(y / 6u, s);
    s = q31_mul(x31, s);
    var c = RNG_ONE - y / 132u;
    c = RNG_ONE - q31_mul(y / 90u, c);
    c = RNG_ONE - q31_mul(y / 56u, c);
    c = RNG_ONE - q31_mul(y / 30u, c);
    c = RNG_ONE - q31_mul(y / 12u, c);
    c = RNG_ONE - q31_mul(y >> 1u, c);
    // psi = theta - quadrant * pi/2 in [0, pi/2): an odd octant has psi = pi/2 - x.
    var cp = c;
    var sp = s;
    if (oct & 1u) == 1u {
        cp = s;
        sp = c;
    }
    switch oct >> 1u {
        case 0u: { return vec4<u32>(cp, sp, 0u, 0u); }
        case 1u: { return vec4<u32>(sp, cp, 1u, 0u); }
        case 2u: { return vec4<u32>(cp, sp, 1u, 1u); }
        default: { return vec4<u32>(sp, cp, 0u, 1u); }
    }
}

// r (Q3.26) times a Q1.31 magnitude, rounded to Q3.20, clamped below 8, signed, then f32: both exact.
fn rng_q20(r: u32, m: u32, neg: u32) -> f32 {
    let hi = mul32x32(r, m).y;  // r * m * 2^25, floored
    let mag = min((hi + 16u) >> 5u, 0x7FFFFFu);
    let z = select(i32(mag), -i32(mag), neg == 1u);
    return f32(z) * (1.0 / 1048576.0);
}

// The two normals (cos branch, sin branch) of the word pair (a, b).
fn rng_normal_pair(a: u32, b: u32) -> vec2<f32> {
    let r = rng_radius(a);
    let cs = rng_cos_sin(b);
    return vec2<f32>(rng_q20(r, cs.x, cs.z), rng_q20(r, cs.y, cs.w));
}

fn rng_normal_from_bits(x: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(rng_normal_pair(x.x, x.y), rng_normal_pair(x.z, x.w));
}

// The four words of counter block `block` (64-bit) of stream `seed`.
fn rng_bits4(seed: vec2<u32>, block: vec2<u32>) -> vec4<u32> {
    return philox4x32(vec4<u32>(block, 0u, 0u), seed);
}

fn rng_uniform4(seed: vec2<u32>, block: vec2<u32>) -> vec4<f32> {
    return rng_uniform_from_bits(rng_bits4(seed, block));
}

fn rng_normal4(seed: vec2<u32>, block: vec2<u32>) -> vec4<f32> {
    return rng_normal_from_bits(rng_bits4(seed, block));
}

// Element i of stream (seed, offset), one at a time: for kernels with one invocation per element. A kernel
// that handles whole blocks should call the *4 forms once per block instead.
fn rng_bits_at(seed: vec2<u32>, offset: vec2<u32>, i: u32) -> u32 {
    return rng_bits4(seed, rng_block_of(offset, i))[rng_lane_of(offset, i)];
}

fn rng_uniform_at(seed: vec2<u32>, offset: vec2<u32>, i: u32) -> f32 {
    return rng_uniform4(seed, rng_block_of(offset, i))[rng_lane_of(offset, i)];
}

// Computes only the pair the lane needs.
fn rng_normal_at(seed: vec2<u32>, offset: vec2<u32>, i: u32) -> f32 {
    let x = rng_bits4(seed, rng_block_of(offset, i));
    let lane = rng_lane_of(offset, i);
    var z: vec2<f32>;
    if lane >= 2u {
        z = rng_normal_pair(x.z, x.w);
    } else {
        z = rng_normal_pair(x.x, x.y);
    }
    return z[lane & 1u];
}
