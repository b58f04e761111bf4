//! Evaluation metrics for the GAN and diffusion regimes, computed on the host.
//!
//! - 2-D mixtures ([`mixture_metrics`]): modes covered, high-quality fraction and reverse KL as in VEEGAN
//!   (Srivastava et al. 2017) and PacGAN (Lin et al. 2018), plus the mean log-density of the samples under
//!   the true mixture.
//! - Images, in pixel space: unbiased MMD² with a Gaussian kernel ([`mmd2`]) and the k-NN precision and
//!   recall of Kynkäänniemi et al. 2019 ([`precision_recall_k`]).
//!
//! The image metrics are O(n² · dim). Squared distances come in blocks of 256 rows as ‖x‖² + ‖y‖² - 2 x·y:
//! the dot products from the CPU backend's multi-threaded SGEMM (`host::gemm`, f32, AVX2+FMA where
//! the CPU has it), the norms and the sum in f64 (clamped at 0); the per-row work on a block (kernel sums,
//! k-th neighbour, ball tests) runs in parallel with rayon.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::host::gemm::{sgemm, MatRef};

/// A 2-D mixture of isotropic Gaussians with equal weights, as the mixture metrics see it: its means and
/// the per-coordinate standard deviation shared by every component. The data sets (`data::mixture`)
/// implement it one layer up, so metrics need nothing from data.
pub trait GaussianMixture {
    /// The component means.
    fn modes(&self) -> Vec<[f32; 2]>;
    /// The per-coordinate standard deviation of every component.
    fn std(&self) -> f32;

    /// log p(x) of the true mixture: `logsumexp_k(-|x - μ_k|² / 2σ²) - ln K - ln(2πσ²)`, in f64.
    /// NaN for a NaN coordinate.
    fn log_density(&self, x: &[f32; 2]) -> f64 {
        if x[0].is_nan() || x[1].is_nan() {
            return f64::NAN;
        }
        let var = (self.std() as f64).powi(2);
        let modes = self.modes();
        let e: Vec<f64> = modes
            .iter()
            .map(|m| {
                let (dx, dy) = (x[0] as f64 - m[0] as f64, x[1] as f64 - m[1] as f64);
                -(dx * dx + dy * dy) / (2.0 * var)
            })
            .collect();
        let mx = e.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        if !mx.is_finite() {
            return mx; // infinitely far away
        }
        let lse = mx + e.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
        lse - (modes.len() as f64).ln() - (std::f64::consts::TAU * var).ln()
    }
}

/// How samples from a generator match a 2-D [`GaussianMixture`]. With n samples and K modes:
#[derive(Debug, Clone, PartialEq)]
pub struct MixtureMetrics {
    /// Modes with at least `max(1, floor(n / 100))` high-quality samples nearest to them: PacGAN's rule of
    /// 20 samples out of 2,000 (1%), scaled with n; below 200 samples it is VEEGAN's "at least one".
    pub modes_covered: usize,
    /// K.
    pub num_modes: usize,
    /// Fraction of all n samples within 3 standard deviations (Euclidean distance ≤ 3σ) of their nearest
    /// mode. Samples with a NaN coordinate are never high quality.
    pub high_quality: f64,
    /// KL(q ‖ uniform) = Σ_k q_k ln(K q_k), where q is the histogram of nearest modes among the
    /// high-quality samples (0 ln 0 = 0). 0 when the high-quality samples spread evenly over the modes,
    /// ln K when they all sit at one. With no high-quality sample at all it is ln K, the maximum.
    pub reverse_kl: f64,
    /// Mean over all n samples of log p(x) under the true mixture ([`GaussianMixture::log_density`]), in nats;
    /// NaN if a sample is NaN. For samples from the mixture itself it is about -ln K - ln(2πσ²) - 1.
    pub mean_log_density: f64,
    /// High-quality samples per mode, in the order of [`GaussianMixture::modes`].
    pub mode_counts: Vec<usize>,
}

/// Scores `samples` ([n, 2] row-major, n ≥ 1) against the mixture `mix`: see [`MixtureMetrics`].
pub fn mixture_metrics(samples: &[f32], mix: impl GaussianMixture) -> Result<MixtureMetrics> {
    if samples.is_empty() || !samples.len().is_multiple_of(2) {
        return Err(Error::invalid(
            "mixture_metrics",
            format!("{} values are not a non-empty [n, 2] array of points", samples.len()),
        ));
    }
    let n = samples.len() / 2;
    let modes = mix.modes();
    let k = modes.len();
    let radius2 = (3.0 * mix.std() as f64).powi(2);
    let mut counts = vec![0usize; k];
    let mut log_density = 0.0;
    for p in samples.chunks_exact(2) {
        let (best, d2) = modes
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let (dx, dy) = (p[0] as f64 - m[0] as f64, p[1] as f64 - m[1] as f64);
                (i, dx * dx + dy * dy)
            })
            .fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
        if d2 <= radius2 {
            counts[best] += 1;
        }
        log_density += mix.log_density(&[p[0], p[1]]);
    }
    let hq: usize = counts.iter().sum();
    let threshold = (n / 100).max(1);
    let reverse_kl = if hq == 0 {
        (k as f64).ln()
    } else {
        counts
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| {
                let q = c as f64 / hq as f64;
                q * (q * k as f64).ln()
            })
            .sum::<f64>()
            .max(0.0)
    };
    Ok(MixtureMetrics {
        modes_covered: counts.iter().filter(|&&c| c >= threshold).count(),
        num_modes: k,
        high_quality: hq as f64 / n as f64,
        reverse_kl,
        mean_log_density: log_density / n as f64,
        mode_counts: counts,
    })
}

// ---------------------------------------------------------------------------------------------------------
// Pairwise distances

/// Rows of `x` (each `dim` values) with their squared norms (f64).
struct Points<'a> {
    x: &'a [f32],
    dim: usize,
    norms: Vec<f64>,
}

impl<'a> Points<'a> {
    fn new(x: &'a [f32], dim: usize) -> Points<'a> {
        let norms = x.par_chunks(dim).map(|r| r.iter().map(|&v| v as f64 * v as f64).sum()).collect();
        Points { x, dim, norms }
    }

    fn len(&self) -> usize {
        self.norms.len()
    }
}

/// Rows per block of the distance matrix: a block is BLOCK_ROWS × (all columns), made by one SGEMM.
const BLOCK_ROWS: usize = 256;

/// Row blocks of 0..n, in order.
fn row_blocks(n: usize) -> impl Iterator<Item = Range<usize>> {
    (0..n.div_ceil(BLOCK_ROWS)).map(move |b| b * BLOCK_ROWS..((b + 1) * BLOCK_ROWS).min(n))
}

/// Squared distances from rows `rows` of `a` to rows `cols` of `b`, row-major [rows.len(), cols.len()]:
/// ‖x‖² + ‖y‖² - 2 x·y, the dot products by the CPU backend's multi-threaded SGEMM (f32), the norms and
/// the sum in f64, clamped at 0.
fn dist_block(a: &Points, rows: Range<usize>, b: &Points, cols: Range<usize>) -> Vec<f64> {
    let (m, n, k) = (rows.len(), cols.len(), a.dim);
    let mut dots = vec![0f32; m * n];
    let am = MatRef { data: &a.x[rows.start * k..rows.end * k], rs: k, cs: 1 };
    let bm = MatRef { data: &b.x[cols.start * k..cols.end * k], rs: 1, cs: k };
    sgemm(m, n, k, am, bm, &mut dots, n, false);
    let mut out = vec![0f64; m * n];
    out.par_chunks_mut(n.max(1)).zip(dots.par_chunks(n.max(1))).enumerate().for_each(|(r, (o, d))| {
        let na = a.norms[rows.start + r];
        for ((o, &d), &nb) in o.iter_mut().zip(d).zip(&b.norms[cols.clone()]) {
            *o = (na + nb - 2.0 * d as f64).max(0.0);
        }
    });
    out
}

fn check_points(op: &'static str, what: &str, x: &[f32], dim: usize, min_rows: usize) -> Result<usize> {
    if dim == 0 || !x.len().is_multiple_of(dim) {
        return Err(Error::invalid(op, format!("{what}: {} values are not rows of dim {dim}", x.len())));
    }
    let n = x.len() / dim;
    if n < min_rows {
        return Err(Error::invalid(op, format!("{what}: {n} samples, at least {min_rows} are needed")));
    }
    if let Some(i) = x.par_iter().position_any(|v| !v.is_finite()) {
        return Err(Error::invalid(op, format!("{what}: non-finite value {} in sample {}", x[i], i / dim)));
    }
    Ok(n)
}

// ---------------------------------------------------------------------------------------------------------
// MMD

/// At most this many pooled points enter the median heuristic (all of them up to this count).
const MEDIAN_POINTS: usize = 4096;

/// Unbiased MMD² between samples `a` [m, dim] and `b` [n, dim] (m, n ≥ 2), with the Gaussian kernel
/// k(x, y) = exp(-‖x - y‖² / (2σ²)):
///
/// MMD²_u = Σ_{i≠j} k(a_i, a_j) / (m(m-1)) + Σ_{i≠j} k(b_i, b_j) / (n(n-1)) - 2 Σ_{i,j} k(a_i, b_j) / (mn).
///
/// Bandwidth (median heuristic): σ² is the median of ‖z_i - z_j‖² over the distinct pairs i < j of the
/// pooled set z = a ∪ b (the upper median for an even count), i.e. σ is the median pairwise distance.
/// Past 4096 pooled points the median is taken over the pairs of 4096 of them, evenly strided. Should the
/// median be 0 (over half the pairs identical), σ² is the mean of the squared distances instead; if that is
/// 0 too, every point is the same and the result is 0.
///
/// The estimate is unbiased, so it can be slightly negative when the distributions are equal.
pub fn mmd2(a: &[f32], b: &[f32], dim: usize) -> Result<f64> {
    let m = check_points("mmd2", "first set", a, dim, 2)?;
    let n = check_points("mmd2", "second set", b, dim, 2)?;
    let total = m + n;
    let mut z = Vec::with_capacity(total * dim);
    z.extend_from_slice(a);
    z.extend_from_slice(b);
    let zp = Points::new(&z, dim);

    // Bandwidth.
    let sub: Vec<f32>;
    let sp = if total <= MEDIAN_POINTS {
        None
    } else {
        sub = (0..MEDIAN_POINTS).flat_map(|t| z[t * total / MEDIAN_POINTS * dim..][..dim].iter().copied()).collect();
        Some(Points::new(&sub, dim))
    };
    let sp = sp.as_ref().unwrap_or(&zp);
    let ns = sp.len();
    let mut d2: Vec<f32> = Vec::with_capacity(ns * (ns - 1) / 2);
    for rows in row_blocks(ns) {
        let i0 = rows.start;
        let width = ns - i0;
        let d = dist_block(sp, rows.clone(), sp, i0..ns);
        for (r, i) in rows.enumerate() {
            d2.extend(d[r * width + i + 1 - i0..(r + 1) * width].iter().map(|&v| v as f32));
        }
    }
    let mid = d2.len() / 2;
    let (_, median, _) = d2.select_nth_unstable_by(mid, f32::total_cmp);
    let mut sigma2 = *median as f64;
    if sigma2 == 0.0 {
        sigma2 = d2.par_iter().map(|&v| v as f64).sum::<f64>() / d2.len() as f64;
        if sigma2 == 0.0 {
            return Ok(0.0);
        }
    }
    drop(d2);

    // Kernel sums over the pairs i < j of the pooled set: (a, a), (b, b), (a, b).
    let inv = -1.0 / (2.0 * sigma2);
    let (mut kaa, mut kbb, mut kab) = (0.0, 0.0, 0.0);
    for rows in row_blocks(total) {
        let i0 = rows.start;
        let width = total - i0;
        let d = dist_block(&zp, rows.clone(), &zp, i0..total);
        let sums = d
            .par_chunks(width)
            .enumerate()
            .map(|(r, row)| {
                let i = i0 + r;
                let mut s = (0f64, 0f64, 0f64);
                for (j, &v) in row.iter().enumerate().skip(i - i0 + 1).map(|(c, v)| (c + i0, v)) {
                    let k = (v * inv).exp();
                    match (i < m, j < m) {
                        (true, true) => s.0 += k,
                        (false, false) => s.1 += k,
                        _ => s.2 += k,
                    }
                }
                s
            })
            .reduce(|| (0.0, 0.0, 0.0), |x, y| (x.0 + y.0, x.1 + y.1, x.2 + y.2));
        kaa += sums.0;
        kbb += sums.1;
        kab += sums.2;
    }
    let (mf, nf) = (m as f64, n as f64);
    Ok(2.0 * kaa / (mf * (mf - 1.0)) + 2.0 * kbb / (nf * (nf - 1.0)) - 2.0 * kab / (mf * nf))
}

// ---------------------------------------------------------------------------------------------------------
// Precision and recall

/// Squared distance from each row to its k-th nearest other row of the same set (itself excluded;
/// duplicates count as neighbours at distance 0).
fn knn_radii2(p: &Points, k: usize) -> Vec<f64> {
    let n = p.len();
    let mut radii = Vec::with_capacity(n);
    for rows in row_blocks(n) {
        let i0 = rows.start;
        let mut d = dist_block(p, rows, p, 0..n);
        let block: Vec<f64> = d
            .par_chunks_mut(n)
            .enumerate()
            .map(|(r, row)| {
                row[i0 + r] = f64::INFINITY;
                *row.select_nth_unstable_by(k - 1, f64::total_cmp).1
            })
            .collect();
        radii.extend(block);
    }
    radii
}

/// Improved precision and recall (Kynkäänniemi et al. 2019) in pixel space, for `real` [n_r, dim] and
/// `fake` [n_f, dim], each with more than `k` samples (the paper uses k = 3):
///
/// - each sample's ball has radius the distance to its k-th nearest neighbour in its own set (itself
///   excluded); the union of the real balls is the real manifold, of the fake balls the fake manifold;
/// - precision: the fraction of fake samples inside the real manifold (within the ball of at least one
///   real sample, distance ≤ radius);
/// - recall: the fraction of real samples inside the fake manifold.
///
/// Returns (precision, recall), both in [0, 1].
pub fn precision_recall_k(real: &[f32], fake: &[f32], dim: usize, k: usize) -> Result<(f64, f64)> {
    const OP: &str = "precision_recall_k";
    if k == 0 {
        return Err(Error::invalid(OP, "k must be at least 1"));
    }
    let nr = check_points(OP, "real set", real, dim, k + 1)?;
    let nf = check_points(OP, "fake set", fake, dim, k + 1)?;
    let (rp, fp) = (Points::new(real, dim), Points::new(fake, dim));
    let (rr, rf) = (knn_radii2(&rp, k), knn_radii2(&fp, k));
    let covered: Vec<AtomicBool> = (0..nr).map(|_| AtomicBool::new(false)).collect();
    let mut precise = 0usize;
    for rows in row_blocks(nf) {
        let j0 = rows.start;
        let d = dist_block(&fp, rows, &rp, 0..nr);
        precise += d
            .par_chunks(nr)
            .enumerate()
            .map(|(r, row)| {
                let mut inside = false;
                for (i, &v) in row.iter().enumerate() {
                    inside |= v <= rr[i];
                    if v <= rf[j0 + r] {
                        covered[i].store(true, Ordering::Relaxed);
                    }
                }
                inside as usize
            })
            .sum::<usize>();
    }
    let recalled = covered.iter().filter(|c| c.load(Ordering::Relaxed)).count();
    Ok((precise as f64 / nf as f64, recalled as f64 / nr as f64))
}
