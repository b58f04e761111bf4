//! The numeric inner loops of the attention twin: the `Kern` interface and its portable version.

use super::{KW, R};

/// The numeric inner loops. `Portable` is plain Rust; `Avx2` (x86-64 with AVX2 and FMA, detected at
/// run time) is written with intrinsics, which do not depend on the optimiser (the dev profile's
/// opt-level 2 does not SLP-vectorise register-blocked loops).
pub(super) trait Kern {
    /// out[r * ld + j] = sum_k a[r][k] * B[j][k] for r < R and j in p0*KW .. p1*KW, where B is packed
    /// by `Packed::fill` (`bp`) and each a[r] holds d values.
    fn scores(a: [&[f32]; R], bp: &[f32], d: usize, p0: usize, p1: usize, out: &mut [f32], ld: usize);
    /// out[r * dp + c] = sum_{j in j0..j1} w[r * ld + j] * m[j * ms + c] for r < R, c < dp (a multiple
    /// of LANES).
    #[allow(clippy::too_many_arguments)]
    fn accumulate(w: &[f32], ld: usize, j0: usize, j1: usize, m: &[f32], ms: usize, dp: usize, out: &mut [f32]);
    /// Softmax of one score row in place (length a multiple of LANES): with m = max(row) * scale,
    /// row[j] = exp(row[j] * scale - m); returns (m, sum of the row).
    fn softmax_row(row: &mut [f32], scale: f32) -> (f32, f32);
    /// dS of one query row in place: s[j] = exp(s[j] * scale - lse) * (dp[j] - delta) (length a multiple
    /// of LANES).
    fn ds_row(s: &mut [f32], dp: &[f32], scale: f32, lse: f32, delta: f32);
    /// P and dS of one key against queries: p[i] = exp(p[i] * scale - lse[i]), ds[i] = p[i] * (ds[i] -
    /// delta[i]) (lengths equal, a multiple of LANES).
    fn p_ds_row(p: &mut [f32], ds: &mut [f32], lse: &[f32], delta: &[f32], scale: f32);
}

/// e^x, within about 1 ulp for -87 <= x <= 88 and 0 below -87 (where e^x leaves f32's normal range):
/// Cody-Waite reduction x = n ln2 + r and Cephes' expf polynomial (as `avx2::exp8`, lane by lane).
pub(super) fn exp(x: f32) -> f32 {
    let xc = x.clamp(-87.0, 88.0);
    let t = xc * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = EXP_POLY[0];
    for &c in &EXP_POLY[1..] {
        p = p * r + c;
    }
    let y = p * r * r + r + 1.0;
    // t holds ROUND + n: its low mantissa bits are n, which becomes the exponent of 2^n.
    let pow2 = f32::from_bits(((t.to_bits() as i32 - ROUND.to_bits() as i32 + 127) << 23) as u32);
    if x < -87.0 {
        0.0
    } else {
        y * pow2
    }
}

/// Adding 1.5 * 2^23 rounds an f32 of magnitude < 2^22 to an integer held in the low mantissa bits.
pub(super) const ROUND: f32 = 12_582_912.0;
/// ln 2 = LN2_HI + LN2_LO, LN2_HI with few mantissa bits so that n * LN2_HI is exact.
pub(super) const LN2_HI: f32 = 0.693_359_4; // 355/512 exactly
pub(super) const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes' expf: e^r = 1 + r + r^2 * poly(r) on |r| <= ln2 / 2, highest degree first.
pub(super) const EXP_POLY: [f32; 6] =
    [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];

/// Plain Rust inner loops, for any CPU.
pub(super) struct Portable;

impl Kern for Portable {
    fn scores(a: [&[f32]; R], bp: &[f32], d: usize, p0: usize, p1: usize, out: &mut [f32], ld: usize) {
        for p in p0..p1 {
            let panel = &bp[p * d * KW..(p + 1) * d * KW];
            for (r, a) in a.iter().enumerate() {
                let o = &mut out[r * ld + p * KW..r * ld + p * KW + KW];
                o.fill(0.0);
                for (&x, prow) in a[..d].iter().zip(panel.chunks_exact(KW)) {
                    for (o, &b) in o.iter_mut().zip(prow) {
                        *o += x * b;
                    }
                }
            }
        }
    }

    fn accumulate(w: &[f32], ld: usize, j0: usize, j1: usize, m: &[f32], ms: usize, dp: usize, out: &mut [f32]) {
        for (r, orow) in out.chunks_exact_mut(dp).take(R).enumerate() {
            orow.fill(0.0);
            for (j, &x) in w[r * ld + j0..r * ld + j1].iter().enumerate() {
                for (o, &v) in orow.iter_mut().zip(&m[(j0 + j) * ms..][..dp]) {
                    *o += x * v;
                }
            }
        }
    }

    fn softmax_row(row: &mut [f32], scale: f32) -> (f32, f32) {
        let m = row.iter().fold(f32::MIN, |a, &b| a.max(b)) * scale;
        let mut l = 0.0;
        for x in row.iter_mut() {
            *x = exp(*x * scale - m);
            l += *x;
        }
        (m, l)
    }

    fn ds_row(s: &mut [f32], dp: &[f32], scale: f32, lse: f32, delta: f32) {
        for (x, &d) in s.iter_mut().zip(dp) {
            *x = exp(*x * scale - lse) * (d - delta);
        }
    }

    fn p_ds_row(p: &mut [f32], ds: &mut [f32], lse: &[f32], delta: &[f32], scale: f32) {
        for (((x, d), &l), &dl) in p.iter_mut().zip(ds.iter_mut()).zip(lse).zip(delta) {
            *x = exp(*x * scale - l);
            *d = *x * (*d - dl);
        }
    }
}
