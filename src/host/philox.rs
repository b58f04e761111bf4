//! Host-side Philox4x32-10: the twin of the shared snippet shaders/common/philox.wgsl, function by
//! function (`rng_foo` in WGSL is `foo` here). Device-neutral: the CPU twins of kernels that draw random
//! numbers (rng, dropout, diffusion noise, sampling) and the host code that must draw the same numbers
//! as the GPU (data generators, models, benchmarks) all call this one definition.
//!
//! Stream convention (the snippet's header has the details): a stream is (seed, offset), both 64-bit.
//! Element i is lane (offset + i) % 4 of counter block (offset + i) / 4, whose words are
//! `philox4x32([block.lo, block.hi, 0, 0], [seed.lo, seed.hi])`. Uniform lanes are `(w >> 8) * 2^-24`;
//! normal lanes 0, 1 are Box-Muller (cos, sin) of words (w0, w1) and lanes 2, 3 of (w2, w3), in integer
//! fixed point, so the GPU and this twin agree bit for bit. Everything here is u32 arithmetic written
//! with explicit wrapping so it reads the same as the WGSL (which wraps by definition).

/// Philox4x32 round multiplier for words 0 and 1.
pub const PHILOX_M0: u32 = 0xD251_1F53;
/// Philox4x32 round multiplier for words 2 and 3.
pub const PHILOX_M1: u32 = 0xCD9E_8D57;
/// Weyl constant added to key word 0 between rounds.
pub const PHILOX_W0: u32 = 0x9E37_79B9;
/// Weyl constant added to key word 1 between rounds.
pub const PHILOX_W1: u32 = 0xBB67_AE85;

/// Full product a * b as (lo, hi) from 16-bit halves, as the shader computes it (WGSL has no u64).
pub fn mul32x32(a: u32, b: u32) -> (u32, u32) {
    let al = a & 0xFFFF;
    let ah = a >> 16;
    let bl = b & 0xFFFF;
    let bh = b >> 16;
    let ll = al * bl;
    let lh = al * bh;
    let hl = ah * bl;
    let hh = ah * bh;
    let mid = (ll >> 16) + (lh & 0xFFFF) + (hl & 0xFFFF);
    let hi = hh + (lh >> 16) + (hl >> 16) + (mid >> 16);
    (a.wrapping_mul(b), hi)
}

/// One Philox4x32 round of counter `ctr` under `key`.
pub fn philox_round(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let p0 = mul32x32(PHILOX_M0, ctr[0]);
    let p1 = mul32x32(PHILOX_M1, ctr[2]);
    [p1.1 ^ ctr[1] ^ key[0], p1.0, p0.1 ^ ctr[3] ^ key[1], p0.0]
}

/// Philox4x32-10: ten rounds, the key bumped by the Weyl constants between rounds.
pub fn philox4x32(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = philox_round(ctr, key);
    let mut k = key;
    for _ in 1..10 {
        k = [k[0].wrapping_add(PHILOX_W0), k[1].wrapping_add(PHILOX_W1)];
        c = philox_round(c, k);
    }
    c
}

/// A 64-bit value as the shader's (lo, hi) words.
pub fn split64(v: u64) -> [u32; 2] {
    [v as u32, (v >> 32) as u32]
}

/// 64-bit a + b (wrapping), a as (lo, hi).
pub fn add64(a: [u32; 2], b: u32) -> [u32; 2] {
    let lo = a[0].wrapping_add(b);
    [lo, a[1].wrapping_add((lo < b) as u32)]
}

/// Counter block of element i of the stream at `offset`: (offset + i) / 4, counting on in 64-bit blocks
/// past offset + i = 2^64.
pub fn block_of(offset: [u32; 2], i: u32) -> [u32; 2] {
    let b = [(offset[0] >> 2) | (offset[1] << 30), offset[1] >> 2];
    add64(b, (i >> 2) + (((offset[0] & 3) + (i & 3)) >> 2))
}

/// Lane (0..4) within its counter block of element i of the stream at `offset`.
pub fn lane_of(offset: [u32; 2], i: u32) -> usize {
    (offset[0].wrapping_add(i) & 3) as usize
}

/// The four uniforms in [0, 1) of a block's words: `(w >> 8) * 2^-24`.
pub fn uniform_from_bits(x: [u32; 4]) -> [f32; 4] {
    x.map(|w| (w >> 8) as f32 * (1.0 / 16_777_216.0))
}

/// 1.0 in Q1.31.
pub const ONE: u32 = 0x8000_0000;
/// 2 ln 2 in Q1.31.
pub const LN2X2: u32 = 0xB172_17F8;
/// pi / 4 in Q1.31.
pub const PI4: u32 = 0xC90F_DAA2;

/// a * b for Q1.31 operands whose product is below 2, truncated.
pub fn q31_mul(a: u32, b: u32) -> u32 {
    let p = mul32x32(a, b);
    (p.1 << 1) | (p.0 >> 31)
}

/// floor(sqrt(v)) for v = (lo, hi) below 2^58, digit by digit.
pub fn isqrt58(v: [u32; 2]) -> u32 {
    let mut root = 0u32;
    let mut rem = 0u32;
    for i in 0..29u32 {
        let sh = 56 - 2 * i;
        let two = if sh >= 32 { (v[1] >> (sh - 32)) & 3 } else { (v[0] >> sh) & 3 };
        rem = (rem << 2) | two;
        let trial = (root << 2) | 1;
        if rem >= trial {
            rem -= trial;
            root = (root << 1) | 1;
        } else {
            root <<= 1;
        }
    }
    root
}

/// log2(m) for m = x / 2^31 in [1, 2), as a 27-bit fraction, by repeated squaring.
pub fn log2_frac27(x: u32) -> u32 {
    let mut m = x;
    let mut lg = 0u32;
    for _ in 0..27 {
        let sq = mul32x32(m, m);
        let ge2 = sq.1 >= 0x8000_0000;
        lg = (lg << 1) | ge2 as u32;
        m = if ge2 { sq.1 } else { (sq.1 << 1) | (sq.0 >> 31) };
    }
    lg
}

/// r = sqrt(-2 ln u1) with u1 = (a + 1) / 2^32, in Q3.26.
pub fn radius(a: u32) -> u32 {
    let w = !a;
    let p: [u32; 2] = if w < 0x0100_0000 {
        let w31 = w >> 1;
        let mut g = 0x2000_0000u32;
        g = 0x2AAA_AAAB + q31_mul(w31, g);
        g = 0x4000_0000 + q31_mul(w31, g);
        g = ONE + q31_mul(w31, g);
        let prod = mul32x32(w, g);
        [(prod.0 >> 10) | (prod.1 << 22), prod.1 >> 10]
    } else {
        let v = a + 1;
        let z = v.leading_zeros();
        let lg = (log2_frac27(v << z) + 1) >> 1;
        let y = ((z + 1) << 26) - lg;
        let prod = mul32x32(y, LN2X2);
        [(prod.0 >> 5) | (prod.1 << 27), prod.1 >> 5]
    };
    isqrt58(p)
}

/// cos and sin of theta = 2 pi b / 2^32 as (|cos|, |sin|) in Q1.31 and their signs (1: negative).
pub fn cos_sin(b: u32) -> [u32; 4] {
    let oct = b >> 29;
    let mut x = mul32x32(b << 3, PI4).1;
    if oct & 1 == 1 {
        x = PI4 - x;
    }
    let x31 = x >> 1;
    let y = q31_mul(x31, x31);
    let mut s = ONE - y / 110;
    s = ONE - q31_mul(y / 72, s);
    s = ONE - q31_mul(y / 42, s);
    s = ONE - q31_mul(y / 20, s);
    s = ONE - q31_mul(y / 6, s);
    s = q31_mul(x31, s);
    let mut c = ONE - y / 132;
    c = ONE - q31_mul(y / 90, c);
    c = ONE - q31_mul(y / 56, c);
    c = ONE - q31_mul(y / 30, c);
    c = ONE - q31_mul(y / 12, c);
    c = ONE - q31_mul(y >> 1, c);
    let (cp, sp) = if oct & 1 == 1 { (s, c) } else { (c, s) };
    match oct >> 1 {
        0 => [cp, sp, 0, 0],
        1 => [sp, cp, 1, 0],
        2 => [cp, sp, 1, 1],
        _ => [sp, cp, 0, 1],
    }
}

/// r (Q3.26) times a Q1.31 magnitude, rounded to Q3.20, clamped below 8, signed, then f32: both exact.
pub fn q20(r: u32, m: u32, neg: u32) -> f32 {
    let hi = mul32x32(r, m).1;
    let mag = ((hi + 16) >> 5).min(0x7F_FFFF);
    let z = if neg == 1 { -(mag as i32) } else { mag as i32 };
    z as f32 * (1.0 / 1_048_576.0)
}

/// The two normals (cos branch, sin branch) of the word pair (a, b).
pub fn normal_pair(a: u32, b: u32) -> [f32; 2] {
    let r = radius(a);
    let cs = cos_sin(b);
    [q20(r, cs[0], cs[2]), q20(r, cs[1], cs[3])]
}

/// The four normals of a block's words: Box-Muller of (w0, w1) and (w2, w3).
pub fn normal_from_bits(x: [u32; 4]) -> [f32; 4] {
    let [z0, z1] = normal_pair(x[0], x[1]);
    let [z2, z3] = normal_pair(x[2], x[3]);
    [z0, z1, z2, z3]
}

/// The four words of counter block `block` of stream `seed` (both as (lo, hi)).
pub fn bits4(seed: [u32; 2], block: [u32; 2]) -> [u32; 4] {
    philox4x32([block[0], block[1], 0, 0], seed)
}

/// The four uniforms of counter block `block` of stream `seed`.
pub fn uniform4(seed: [u32; 2], block: [u32; 2]) -> [f32; 4] {
    uniform_from_bits(bits4(seed, block))
}

/// The four normals of counter block `block` of stream `seed`.
pub fn normal4(seed: [u32; 2], block: [u32; 2]) -> [f32; 4] {
    normal_from_bits(bits4(seed, block))
}

/// Element i of stream (seed, offset), one at a time.
pub fn bits_at(seed: [u32; 2], offset: [u32; 2], i: u32) -> u32 {
    bits4(seed, block_of(offset, i))[lane_of(offset, i)]
}

/// Uniform element i of stream (seed, offset), in [0, 1).
pub fn uniform_at(seed: [u32; 2], offset: [u32; 2], i: u32) -> f32 {
    uniform4(seed, block_of(offset, i))[lane_of(offset, i)]
}

/// Normal element i of stream (seed, offset).
pub fn normal_at(seed: [u32; 2], offset: [u32; 2], i: u32) -> f32 {
    let x = bits4(seed, block_of(offset, i));
    let lane = lane_of(offset, i);
    let z = if lane >= 2 { normal_pair(x[2], x[3]) } else { normal_pair(x[0], x[1]) };
    z[lane & 1]
}

/// step * stride in 64 bits (wrapping), stride as (lo, hi): `rng_step_offset` of
/// shaders/common/stream_step.wgsl, the stream offset of a step-indexed draw at training step `step`.
pub fn step_offset(step: u32, stride: [u32; 2]) -> [u32; 2] {
    let lo = mul32x32(step, stride[0]);
    [lo.0, lo.1.wrapping_add(step.wrapping_mul(stride[1]))]
}

/// `normal_at(seed, offset, i)` for a run of increasing i, computing each counter block once: what a CPU
/// twin calls where its shader calls `rng_normal_at` per element (same values, fewer Philox blocks).
pub struct NormalStream {
    seed: [u32; 2],
    offset: [u32; 2],
    cached: Option<([u32; 2], [f32; 4])>,
}

impl NormalStream {
    /// A stream at (seed, offset), no block computed yet.
    pub fn new(seed: [u32; 2], offset: [u32; 2]) -> NormalStream {
        NormalStream { seed, offset, cached: None }
    }

    /// Normal element i (i not below the previous call's).
    pub fn at(&mut self, i: u32) -> f32 {
        let b = block_of(self.offset, i);
        let z4 = match self.cached {
            Some((cb, z4)) if cb == b => z4,
            _ => {
                let z4 = normal4(self.seed, b);
                self.cached = Some((b, z4));
                z4
            }
        };
        z4[lane_of(self.offset, i)]
    }
}
