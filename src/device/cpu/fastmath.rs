//! Branch-free f32 math for the CPU twins' hot loops. Written so LLVM vectorizes a loop that calls
//! them (no libm calls, no data-dependent branches): `exp` and what is built on it run 8 lanes at a
//! time under AVX2 instead of one libm call per element. Accuracy: `exp` is within 2 ulp of the
//! correctly rounded value on its whole range (checked against f64 in tests/kernels_elementwise.rs).

const LOG2E: f32 = std::f32::consts::LOG2_E;
// ln 2 split in two (Cody–Waite): k·LN2_HI is exact for |k| < 2^9, so r = x − k·ln 2 keeps its bits.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5·2^23: adding and subtracting it rounds an f32 of magnitude < 2^22 to the nearest integer.
const ROUND: f32 = 12_582_912.0;

/// e^x. Below −87.3 (where e^x is under f32's smallest normal) it is 0; above 88.7, +inf.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let xc = x.clamp(-87.33, 88.72);
    // k ≤ 127 keeps 2^k finite at the top of the range (r then reaches 0.7, still within 2e-7).
    let k = ((xc * LOG2E + ROUND) - ROUND).min(127.0);
    let r = (xc - k * LN2_HI) - k * LN2_LO;
    // e^r on |r| <= ln2/2 by its Taylor polynomial to degree 7 (error < 2e-9 relative).
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668 + r * (0.008_333_334 + r * (0.001_388_889 + r * 0.000_198_412_7))))));
    // 2^k from k's bits after the rounding add: k + 1.5·2^23 holds k in its low mantissa bits, so the
    // exponent field is those bits + 127 − (1.5·2^23's own bits). Integer ops only: `k as i32` (a
    // saturating cast) would stop LLVM from vectorizing the loop, and k is already an exact integer
    // in [−126, 127].
    let scale = f32::from_bits(((k + ROUND).to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127)) << 23);
    let y = p * scale;
    if x < -87.33 {
        0.0
    } else if x > 88.72 {
        f32::INFINITY
    } else {
        y
    }
}

/// tanh(x) = sign(x)·(1 − e^−2|x|)/(1 + e^−2|x|): no cancellation for large |x|.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let e = exp(-2.0 * x.abs());
    let t = (1.0 - e) / (1.0 + e);
    if x < 0.0 {
        -t
    } else {
        t
    }
}

/// 1 / (1 + e^−x), without overflow for large |x|.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// GELU, tanh form.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + tanh(0.797_884_6 * (x + 0.044715 * x * x * x)))
}

/// d GELU / dx, tanh form, with the tails written so they do not cancel.
#[inline(always)]
pub fn gelu_deriv(x: f32) -> f32 {
    let u = 0.797_884_6 * (x + 0.044715 * x * x * x);
    let du = 0.797_884_6 * (1.0 + 0.134145 * x * x);
    let e = exp(-2.0 * u.abs());
    let d = 1.0 + e;
    let one_plus_t = if u >= 0.0 { 2.0 } else { 2.0 * e } / d;
    let sech2 = 4.0 * e / (d * d);
    0.5 * one_plus_t + 0.5 * x * sech2 * du
}

/// Largest element (8 running maxima, so the loop vectorizes).
#[inline]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            acc[l] = acc[l].max(c[l]);
        }
    }
    let mut m = acc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &v in chunks.remainder() {
        m = m.max(v);
    }
    m
}

/// Σ e^(x − m), 8 running sums.
#[inline]
pub fn sum_exp(x: &[f32], m: f32) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            acc[l] += exp(c[l] - m);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for &v in chunks.remainder() {
        s += exp(v - m);
    }
    s
}

/// Σ a·b, 8 running sums.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}
