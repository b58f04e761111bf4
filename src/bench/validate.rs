//! Validation: a benchmarked result against the CPU twin on the same inputs, or, on the CPU backend, a
//! host reference (f64 where it matters), with the tolerances the family tests state.

use crate::device::Device;
use crate::error::{Error, Result};
use crate::ops::elementwise::{self as ew, Unary};
use crate::ops::matmul::{self as mm, MatmulOpts};
use crate::tensor::Tensor;

use super::Check;

/// Compares element by element: every |got - want| must be within `tol(i)`; a NaN in `got` where
/// `want` has none (an unwritten, poisoned element) fails. Returns the largest difference.
pub(super) fn compare(what: &str, got: &[f32], want: &[f32], tol: impl Fn(usize) -> f64) -> Result<f64> {
    if got.len() != want.len() {
        return Err(Error::Other(format!("{} elements where {what} has {}", got.len(), want.len())));
    }
    let mut max_err = 0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g.is_nan() && w.is_nan() {
            continue;
        }
        let err = (g as f64 - w as f64).abs();
        let t = tol(i);
        if err.is_nan() || err > t {
            return Err(Error::Other(format!(
                "wrong result: element {i} is {g} where {what} gives {w} (|difference| {err:e}, tolerance {t:e}; \
                 {} elements)",
                got.len()
            )));
        }
        max_err = max_err.max(err);
    }
    Ok(max_err)
}

/// Rounding bound of a row sum as `reduce_rows` adds it: ceil(len/256) strided terms per thread, then 8
/// tree levels, each rounding at most u = 2^-24 of the running magnitude (tests/kernels_reduce.rs).
fn row_sum_bound(len: usize, abs_sum: f64) -> f64 {
    1.01 * (len.div_ceil(256) + 8) as f64 * (1.0 / (1u64 << 24) as f64) * abs_sum
}

fn abs_row_sums(x: &[f32], len: usize) -> Vec<f64> {
    x.chunks(len).map(|r| r.iter().map(|v| v.abs() as f64).sum()).collect()
}

/// Softmax: 1e-6 absolute + 1e-5 relative (tests/kernels_softmax.rs: GPU exp is a few ulp off, the sum
/// carries len/256 + 8 roundings, the division one).
fn softmax_tol(want: f32) -> f64 {
    1e-6 + 1e-5 * want.abs() as f64
}

/// Benchmarked device vs the CPU twin on the same inputs. Tolerances as the family tests state them.
pub(super) fn against_twin(
    check: Check,
    cpu: &Device,
    cin: &[Tensor],
    data: &[Vec<f32>],
    got: &[f32],
    want: &[f32],
) -> Result<f64> {
    const TWIN: &str = "the CPU twin";
    match check {
        // A dot product of K terms rounds to about sqrt(K)·eps·Σ|a||b| with random signs; each side of
        // two f32 results is within that, so R = 2e-6 ≈ 16 eps (tests/kernels_matmul.rs). Σ|a||b| is a
        // product of |A| and |B|, computed on the CPU backend.
        Check::Matmul { k, trans_a, trans_b, .. } => {
            let abs_a = ew::unary(cpu, Unary::Abs, &cin[0])?;
            let abs_b = ew::unary(cpu, Unary::Abs, &cin[1])?;
            let mag = mm::matmul(cpu, &abs_a, &abs_b, MatmulOpts { trans_a, trans_b, alpha: 1.0 })?.to_f32(cpu)?;
            let mag = mag.iter().fold(0f64, |m, &v| m.max(v as f64));
            let tol = 2e-6 * (1.0 + (k as f64).sqrt()) * mag;
            compare(TWIN, got, want, |_| tol)
        }
        // exp is not correctly rounded on GPUs; 2e-5 absolute + relative (tests/kernels_elementwise.rs).
        Check::Elementwise { .. } => compare(TWIN, got, want, |i| 2e-5 + 2e-5 * want[i].abs() as f64),
        // Each side within the bound of the exact sum, so twice it apart.
        Check::SumRows { len } => {
            let abs = abs_row_sums(&data[0], len);
            compare(TWIN, got, want, |r| 2.0 * row_sum_bound(len, abs[r]))
        }
        Check::Softmax { .. } => compare(TWIN, got, want, |i| softmax_tol(want[i])),
        // Data movement and the Philox generator (bit-identical by design): exact.
        Check::Transpose { .. } | Check::Copy | Check::Normal { .. } => compare(TWIN, got, want, |_| 0.0),
        Check::Attention(a) => {
            let tol = a.twin_tol(want);
            compare(TWIN, got, want, |_| tol)
        }
        Check::Conv(c) => {
            let tol = c.twin_tol(cpu, cin)?;
            compare(TWIN, got, want, |_| tol)
        }
        Check::Adam(a) => compare(TWIN, got, want, |i| a.tol(data, i, want[i] as f64)),
    }
}

/// The CPU backend's result vs a host reference (comparing the CPU backend with its own twin would
/// check nothing).
pub(super) fn against_host(check: Check, data: &[Vec<f32>], got: &[f32]) -> Result<(&'static str, f64)> {
    const HOST: &str = "the host reference";
    let exact = |want: Vec<f32>| compare(HOST, got, &want, |_| 0.0);
    let err = match check {
        Check::Attention(a) => return Ok(("host-f64-rows", a.against_host(data, got)?)),
        Check::Conv(c) => return Ok(("host-f64-elements", c.against_host(data, got)?)),
        Check::Adam(a) => return Ok(("host-f64-elements", a.against_host(data, got)?)),
        // f64 product of rows 0..8 and the last row of each batch matrix (the last row ends in the
        // partial tile, if any), within R·(1 + sqrt(K))·Σ|a||b| with R = 1e-6 ≈ 8 eps.
        Check::Matmul { batch, m, n, k, trans_a, trans_b } => {
            let (a, b) = (&data[0], &data[1]);
            // Element (i, p) of op(A) and (p, j) of op(B) in batch z.
            let a_at = |z: usize, i: usize, p: usize| a[z * m * k + if trans_a { p * m + i } else { i * k + p }];
            let b_at = |z: usize, p: usize, j: usize| b[z * k * n + if trans_b { j * k + p } else { p * n + j }];
            let mut rows: Vec<usize> = (0..m.min(8)).collect();
            if m > 8 {
                rows.push(m - 1);
            }
            let mut max_err = 0f64;
            for z in 0..batch {
                for &i in &rows {
                    for j in 0..n {
                        let (mut s, mut mag) = (0f64, 0f64);
                        for p in 0..k {
                            let t = a_at(z, i, p) as f64 * b_at(z, p, j) as f64;
                            s += t;
                            mag += t.abs();
                        }
                        let idx = z * m * n + i * n + j;
                        let g = got[idx];
                        let want = [s as f32];
                        let tol = 1e-6 * (1.0 + (k as f64).sqrt()) * mag;
                        let e = compare(HOST, &[g], &want, |_| tol)
                            .map_err(|_| Error::Other(format!("wrong result: C[{z}, {i}, {j}] is {g} where the f64 product gives {s} (tolerance {tol:e})")))?;
                        max_err = max_err.max(e);
                    }
                }
            }
            return Ok(("host-f64-rows", max_err));
        }
        Check::Elementwise { host } => {
            let want: Vec<f32> = (0..got.len()).map(|i| host(data, i)).collect();
            compare(HOST, got, &want, |i| 2e-5 + 2e-5 * want[i].abs() as f64)?
        }
        Check::SumRows { len } => {
            let want: Vec<f64> = data[0].chunks(len).map(|r| r.iter().map(|&v| v as f64).sum()).collect();
            let abs = abs_row_sums(&data[0], len);
            let want32: Vec<f32> = want.iter().map(|&v| v as f32).collect();
            // The f32 rounding of the f64 reference adds half an ulp.
            compare(HOST, got, &want32, |r| row_sum_bound(len, abs[r]) + want[r].abs() * 6e-8)?
        }
        Check::Softmax { len } => {
            let mut want = Vec::with_capacity(got.len());
            for row in data[0].chunks(len) {
                let m = row.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
                let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
                want.extend(row.iter().map(|&v| ((v as f64 - m).exp() / s) as f32));
            }
            compare(HOST, got, &want, |i| softmax_tol(want[i]))?
        }
        Check::Transpose { rows, cols } => {
            let x = &data[0];
            exact((0..rows * cols).map(|o| x[(o % rows) * cols + o / rows]).collect())?
        }
        Check::Copy => exact(data[0].clone())?,
        // Element by element through the one-at-a-time Philox helper (a different path from the twin's
        // block loop), and the moments of a standard normal: mean within 6/sqrt(n), variance within
        // 6·sqrt(2/n) of 1.
        Check::Normal { seed } => {
            use crate::host::philox::{normal_at, split64};
            let key = split64(seed);
            let e = exact((0..got.len()).map(|i| normal_at(key, [0, 0], i as u32)).collect())?;
            let n = got.len() as f64;
            let mean = got.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = got.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            if mean.abs() > 6.0 / n.sqrt() || (var - 1.0).abs() > 6.0 * (2.0 / n).sqrt() {
                return Err(Error::Other(format!(
                    "normal samples have mean {mean} and variance {var} over {n} values"
                )));
            }
            e
        }
    };
    Ok(("host-reference", err))
}
