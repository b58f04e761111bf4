//! Mixture sampling and metrics, MMD² and k-NN precision/recall: against brute-force f64 references on small
//! sets, and on cases whose answer is known (perfect samples, collapse, disjoint sets).

mod common;

use std::time::Instant;

use common::Rng;
use tigel::data::mixture::Mixture;
use tigel::metrics::{mixture_metrics, mmd2, precision_recall_k, GaussianMixture};

const MIXES: [Mixture; 2] = [Mixture::Ring8, Mixture::Grid25];

/// -ln K - ln(2πσ²) - 1: E[log p(x)] for x from the mixture when the modes are far apart.
fn expected_log_density(mix: Mixture) -> f64 {
    let var = (mix.std() as f64).powi(2);
    -(mix.num_modes() as f64).ln() - (std::f64::consts::TAU * var).ln() - 1.0
}

#[test]
fn parse_modes_and_std() {
    assert_eq!(Mixture::parse("ring8").unwrap(), Mixture::Ring8);
    assert_eq!(Mixture::parse("Grid25").unwrap(), Mixture::Grid25);
    let e = Mixture::parse("ring9").unwrap_err().to_string();
    assert!(e.contains("ring9") && e.contains("grid25"), "{e}");
    let ring = Mixture::Ring8.modes();
    assert_eq!(ring.len(), 8);
    for (k, m) in ring.iter().enumerate() {
        assert!((m[0].hypot(m[1]) - 2.0).abs() < 1e-6, "mode {k} off the circle: {m:?}");
    }
    assert!((ring[2][0]).abs() < 1e-6 && (ring[2][1] - 2.0).abs() < 1e-6);
    let grid = Mixture::Grid25.modes();
    assert_eq!(grid.len(), 25);
    assert_eq!((grid[0], grid[24], grid[7]), ([-4.0, -4.0], [4.0, 4.0], [-2.0, 0.0]));
    assert_eq!((Mixture::Ring8.std(), Mixture::Grid25.std()), (0.02, 0.05));
}

#[test]
fn sampling_is_reproducible_and_offsets_continue_the_sequence() {
    let seed = common::seed();
    for mix in MIXES {
        let a = mix.sample(300, seed, 0);
        assert_eq!(a.len(), 600);
        assert_eq!(a, mix.sample(300, seed, 0));
        let tail = mix.sample(100, seed, 200);
        assert_eq!(&a[400..], &tail[..]);
        let other = mix.sample(300, seed.wrapping_add(1), 0);
        assert!(a.iter().zip(&other).filter(|(x, y)| x != y).count() > 500);
    }
}

#[test]
fn samples_have_the_right_component_statistics() {
    let seed = common::seed();
    for mix in MIXES {
        let n = 20_000;
        let s = mix.sample(n, seed, 7);
        let modes = mix.modes();
        let mut sum = vec![[0f64; 4]; modes.len()]; // count, dx, dy, dx² + dy²
        for p in s.chunks(2) {
            let (k, _) = modes
                .iter()
                .enumerate()
                .map(|(k, m)| (k, (p[0] - m[0]).powi(2) + (p[1] - m[1]).powi(2)))
                .fold((0, f32::MAX), |a, b| if b.1 < a.1 { b } else { a });
            let (dx, dy) = ((p[0] - modes[k][0]) as f64, (p[1] - modes[k][1]) as f64);
            sum[k][0] += 1.0;
            sum[k][1] += dx;
            sum[k][2] += dy;
            sum[k][3] += dx * dx + dy * dy;
        }
        let per = n as f64 / modes.len() as f64;
        for (k, v) in sum.iter().enumerate() {
            assert!((v[0] - per).abs() < 5.0 * per.sqrt(), "{mix:?} mode {k}: {} samples, expected {per}", v[0]);
            let std = (v[3] / (2.0 * v[0])).sqrt();
            assert!((std / mix.std() as f64 - 1.0).abs() < 0.1, "{mix:?} mode {k}: std {std}");
            let bias = (v[1].abs() + v[2].abs()) / v[0];
            assert!(bias < 0.2 * mix.std() as f64, "{mix:?} mode {k}: mean offset {bias}");
        }
    }
}

#[test]
fn log_density_matches_a_direct_sum() {
    let mut rng = Rng::new(common::seed());
    for mix in MIXES {
        let var = (mix.std() as f64).powi(2);
        let modes = mix.modes();
        // At a mode the other components are negligible.
        let at = mix.log_density(&modes[3]);
        let peak = -(modes.len() as f64).ln() - (std::f64::consts::TAU * var).ln();
        assert!((at - peak).abs() < 1e-9, "{mix:?}: {at} vs {peak}");
        for _ in 0..200 {
            let m = modes[rng.below(modes.len())];
            let x = [m[0] + rng.uniform(-0.2, 0.2), m[1] + rng.uniform(-0.2, 0.2)];
            let direct: f64 = modes
                .iter()
                .map(|m| {
                    let d2 = (x[0] as f64 - m[0] as f64).powi(2) + (x[1] as f64 - m[1] as f64).powi(2);
                    (-d2 / (2.0 * var)).exp() / (std::f64::consts::TAU * var)
                })
                .sum::<f64>()
                / modes.len() as f64;
            if direct > 1e-250 {
                let got = mix.log_density(&x);
                assert!(
                    (got - direct.ln()).abs() < 1e-9 * (1.0 + got.abs()),
                    "{mix:?} at {x:?}: {got} vs {}",
                    direct.ln()
                );
            }
        }
        // Far away the direct sum underflows; log-sum-exp does not.
        let far = mix.log_density(&[50.0, 50.0]);
        assert!(far.is_finite() && far < -1e5, "{far}");
    }
}

#[test]
fn true_samples_score_full_coverage() {
    let seed = common::seed();
    for mix in MIXES {
        let s = mix.sample(2000, seed, 0);
        let m = mixture_metrics(&s, mix).unwrap();
        let k = mix.num_modes();
        assert_eq!((m.modes_covered, m.num_modes), (k, k), "{mix:?}: {m:?}");
        // P(chi²₂ ≤ 9) = 1 - e^-4.5 = 0.9889.
        assert!((m.high_quality - 0.9889).abs() < 0.012, "{mix:?}: high quality {}", m.high_quality);
        assert!(m.reverse_kl < 0.03, "{mix:?}: reverse KL {}", m.reverse_kl);
        let want = expected_log_density(mix);
        assert!((m.mean_log_density - want).abs() < 0.1, "{mix:?}: mean log density {} vs {want}", m.mean_log_density);
        assert_eq!(m.mode_counts.iter().sum::<usize>() as f64, (m.high_quality * 2000.0).round());
    }
}

/// The samples moved so that their nearest mode becomes `target(i)`.
fn moved(mix: Mixture, s: &[f32], target: impl Fn(usize) -> usize) -> Vec<f32> {
    let modes = mix.modes();
    let mut out = Vec::with_capacity(s.len());
    for (i, p) in s.chunks(2).enumerate() {
        let near = modes
            .iter()
            .min_by(|a, b| {
                let da = (p[0] - a[0]).powi(2) + (p[1] - a[1]).powi(2);
                let db = (p[0] - b[0]).powi(2) + (p[1] - b[1]).powi(2);
                da.total_cmp(&db)
            })
            .unwrap();
        let t = modes[target(i)];
        out.push(p[0] - near[0] + t[0]);
        out.push(p[1] - near[1] + t[1]);
    }
    out
}

#[test]
fn collapse_scores_one_mode_and_large_kl() {
    let seed = common::seed();
    for mix in MIXES {
        let k = mix.num_modes();
        let s = moved(mix, &mix.sample(2000, seed, 0), |_| 3);
        let m = mixture_metrics(&s, mix).unwrap();
        assert_eq!(m.modes_covered, 1, "{mix:?}: {m:?}");
        assert!(m.high_quality > 0.97, "{mix:?}: {}", m.high_quality);
        assert!((m.reverse_kl - (k as f64).ln()).abs() < 1e-9, "{mix:?}: reverse KL {}", m.reverse_kl);
        // Log density: all the mass of the samples sits on 1/K of the mixture, same per-point density.
        assert!((m.mean_log_density - expected_log_density(mix)).abs() < 0.1);

        // Half the modes (the even ones), evenly: KL = ln(K / (K/2)).
        let target = |i: usize| 2 * (i % (k / 2));
        let half = moved(mix, &mix.sample(2000, seed, 0), target);
        let covered: std::collections::BTreeSet<usize> = (0..2000).map(target).collect();
        let m = mixture_metrics(&half, mix).unwrap();
        assert_eq!(m.modes_covered, covered.len(), "{mix:?}: {m:?}");
        let q = covered.len() as f64;
        assert!((m.reverse_kl - (k as f64 / q).ln()).abs() < 0.05, "{mix:?}: {} vs ln({k}/{q})", m.reverse_kl);
    }
}

#[test]
fn coverage_threshold_is_one_percent_of_samples() {
    let mix = Mixture::Ring8;
    let modes = mix.modes();
    // 2000 samples: 20 at mode 0 (covered), 19 at mode 1 (not), the rest at mode 2, none elsewhere.
    let mut s = Vec::new();
    for i in 0..2000 {
        let m = if i < 20 {
            modes[0]
        } else if i < 39 {
            modes[1]
        } else {
            modes[2]
        };
        s.extend_from_slice(&m);
    }
    let m = mixture_metrics(&s, mix).unwrap();
    assert_eq!(m.mode_counts, [20, 19, 1961, 0, 0, 0, 0, 0]);
    assert_eq!(m.modes_covered, 2);
    assert_eq!(m.high_quality, 1.0);
    // Below 200 samples one is enough: the first 150 are 20, 19 and 111 at modes 0, 1, 2.
    let m = mixture_metrics(&s[..2 * 150], mix).unwrap();
    assert_eq!(m.modes_covered, 3);
    let few: Vec<f32> = modes.iter().flat_map(|m| [m[0], m[1]]).collect();
    let m = mixture_metrics(&few, mix).unwrap();
    assert_eq!((m.modes_covered, m.reverse_kl), (8, 0.0));
}

#[test]
fn far_samples_are_never_high_quality() {
    for mix in MIXES {
        // Just outside 3σ of a mode, and far away.
        let m0 = mix.modes()[0];
        let r = 3.05 * mix.std();
        let s = [m0[0] + r, m0[1], 100.0, 100.0, f32::NAN, 0.0];
        let m = mixture_metrics(&s, mix).unwrap();
        assert_eq!((m.modes_covered, m.high_quality), (0, 0.0), "{mix:?}");
        assert_eq!(m.reverse_kl, (mix.num_modes() as f64).ln());
        assert!(m.mean_log_density.is_nan());
        let m = mixture_metrics(&s[..4], mix).unwrap();
        assert!(m.mean_log_density < -1e5);
        let inside = [m0[0] + 2.95 * mix.std(), m0[1]];
        assert_eq!(mixture_metrics(&inside, mix).unwrap().modes_covered, 1);
    }
    assert!(mixture_metrics(&[], Mixture::Ring8).is_err());
    assert!(mixture_metrics(&[1.0, 2.0, 3.0], Mixture::Ring8).is_err());
}

// -------------------------------------------------------------------------------------------------------
// MMD², precision and recall

fn d2(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum()
}

/// Brute force, f64, the definitions of `mmd2`'s docs.
fn mmd2_reference(a: &[f32], b: &[f32], dim: usize) -> f64 {
    let z: Vec<&[f32]> = a.chunks(dim).chain(b.chunks(dim)).collect();
    let mut pairs = Vec::new();
    for i in 0..z.len() {
        for j in i + 1..z.len() {
            pairs.push(d2(z[i], z[j]));
        }
    }
    pairs.sort_by(f64::total_cmp);
    let s2 = pairs[pairs.len() / 2];
    let k = |x: &[f32], y: &[f32]| (-d2(x, y) / (2.0 * s2)).exp();
    let (m, n) = (a.len() / dim, b.len() / dim);
    let (mut kaa, mut kbb, mut kab) = (0.0, 0.0, 0.0);
    for i in 0..m {
        for j in 0..m {
            if i != j {
                kaa += k(&a[i * dim..][..dim], &a[j * dim..][..dim]);
            }
        }
        for j in 0..n {
            kab += k(&a[i * dim..][..dim], &b[j * dim..][..dim]);
        }
    }
    for i in 0..n {
        for j in 0..n {
            if i != j {
                kbb += k(&b[i * dim..][..dim], &b[j * dim..][..dim]);
            }
        }
    }
    let (m, n) = (m as f64, n as f64);
    kaa / (m * (m - 1.0)) + kbb / (n * (n - 1.0)) - 2.0 * kab / (m * n)
}

fn pr_reference(real: &[f32], fake: &[f32], dim: usize, k: usize) -> (f64, f64) {
    let radii = |x: &[f32]| -> Vec<f64> {
        let rows: Vec<&[f32]> = x.chunks(dim).collect();
        (0..rows.len())
            .map(|i| {
                let mut d: Vec<f64> = (0..rows.len()).filter(|&j| j != i).map(|j| d2(rows[i], rows[j])).collect();
                d.sort_by(f64::total_cmp);
                d[k - 1]
            })
            .collect()
    };
    let inside = |p: &[f32], set: &[f32], r: &[f64]| set.chunks(dim).zip(r).any(|(q, &r)| d2(p, q) <= r);
    let (rr, rf) = (radii(real), radii(fake));
    let prec = fake.chunks(dim).filter(|p| inside(p, real, &rr)).count() as f64 / (fake.len() / dim) as f64;
    let rec = real.chunks(dim).filter(|p| inside(p, fake, &rf)).count() as f64 / (real.len() / dim) as f64;
    (prec, rec)
}

/// `n` points in `dim` dimensions, each coordinate uniform in [lo, hi).
fn cloud(rng: &mut Rng, n: usize, dim: usize, lo: f32, hi: f32) -> Vec<f32> {
    rng.vec(n * dim, lo, hi)
}

#[test]
fn mmd2_matches_brute_force() {
    let mut rng = Rng::new(common::seed());
    for (m, n, dim) in [(37, 23, 5), (2, 2, 1), (64, 70, 33), (40, 40, 600)] {
        let a = cloud(&mut rng, m, dim, -1.0, 1.0);
        let b = cloud(&mut rng, n, dim, -0.8, 1.0);
        let got = mmd2(&a, &b, dim).unwrap();
        let want = mmd2_reference(&a, &b, dim);
        assert!((got - want).abs() < 1e-6, "m {m} n {n} dim {dim}: {got} vs {want}");
    }
}

#[test]
fn mmd2_is_near_zero_for_one_distribution_and_positive_for_two() {
    let mut rng = Rng::new(common::seed());
    let dim = 16;
    let x = cloud(&mut rng, 1000, dim, -1.0, 1.0);
    let (a, b) = x.split_at(500 * dim);
    let same = mmd2(a, b, dim).unwrap();
    let far = mmd2(a, &cloud(&mut rng, 500, dim, 2.0, 4.0), dim).unwrap();
    let near = mmd2(a, &cloud(&mut rng, 500, dim, -0.8, 1.2), dim).unwrap();
    eprintln!("mmd2: same {same:.2e}, shifted by 0.2 {near:.2e}, disjoint {far:.2e}");
    assert!(same.abs() < 2e-3, "same distribution: {same}");
    assert!(near > 5.0 * same.abs().max(1e-3), "shifted by 0.2: {near} vs {same}");
    assert!(far > 0.5, "disjoint: {far}");
    assert!(far > near);
    // Identical points everywhere: 0.
    assert_eq!(mmd2(&[0.5; 12], &[0.5; 8], 4).unwrap(), 0.0);
    // Past 4096 pooled points the median comes from a strided subset; the estimate behaves the same.
    let big = cloud(&mut rng, 5000, 3, -1.0, 1.0);
    let (a, b) = big.split_at(2500 * 3);
    let same = mmd2(a, b, 3).unwrap();
    let other = mmd2(a, &cloud(&mut rng, 2500, 3, -0.5, 1.5), 3).unwrap();
    assert!(same.abs() < 2e-3 && other > 0.02, "big: same {same}, shifted {other}");
    // Errors.
    assert!(mmd2(&[0.0; 6], &[0.0; 6], 4).is_err());
    assert!(mmd2(&[0.0; 4], &[0.0; 8], 4).is_err());
    assert!(mmd2(&[0.0, f32::NAN, 0.0, 0.0], &[0.0; 4], 2).unwrap_err().to_string().contains("non-finite"));
    assert!(mmd2(&[0.0; 4], &[0.0; 4], 0).is_err());
}

#[test]
fn precision_recall_matches_brute_force() {
    let mut rng = Rng::new(common::seed());
    for (nr, nf, dim, k) in [(60, 50, 4, 3), (10, 40, 2, 1), (45, 45, 100, 5)] {
        let real = cloud(&mut rng, nr, dim, -1.0, 1.0);
        let fake = cloud(&mut rng, nf, dim, -0.5, 1.5);
        let got = precision_recall_k(&real, &fake, dim, k).unwrap();
        assert_eq!(got, pr_reference(&real, &fake, dim, k), "nr {nr} nf {nf} dim {dim} k {k}");
    }
}

#[test]
fn precision_recall_separate_quality_from_coverage() {
    let mut rng = Rng::new(common::seed());
    let dim = 4;
    let real = cloud(&mut rng, 1000, dim, -1.0, 1.0);
    let same = precision_recall_k(&real, &cloud(&mut rng, 1000, dim, -1.0, 1.0), dim, 3).unwrap();
    assert!(same.0 > 0.85 && same.1 > 0.85, "same distribution: {same:?}");
    assert_eq!(precision_recall_k(&real, &real, dim, 3).unwrap(), (1.0, 1.0));
    let disjoint = precision_recall_k(&real, &cloud(&mut rng, 1000, dim, 3.0, 5.0), dim, 3).unwrap();
    assert_eq!(disjoint, (0.0, 0.0));
    // Mode collapse: fakes all in a corner of the real support: precise, poor recall.
    let corner = precision_recall_k(&real, &cloud(&mut rng, 1000, dim, -1.0, -0.2), dim, 3).unwrap();
    assert!(corner.0 > 0.85 && corner.1 < 0.1, "collapsed: {corner:?}");
    // Spread past the support: poor precision, full recall.
    let wide = precision_recall_k(&real, &cloud(&mut rng, 1000, dim, -3.0, 3.0), dim, 3).unwrap();
    assert!(wide.0 < 0.2 && wide.1 > 0.85, "too wide: {wide:?}");
    eprintln!("precision/recall: same {same:?}, collapsed {corner:?}, wide {wide:?}");
    assert!(precision_recall_k(&real, &real[..3 * dim], dim, 3).is_err());
    assert!(precision_recall_k(&real, &real, dim, 0).is_err());
}

/// The size the GAN regime evaluates at: 2,000 × 2,000 Fashion-MNIST-sized images.
#[test]
fn image_metrics_at_scale() {
    let mut rng = Rng::new(common::seed());
    let dim = 784;
    let real = cloud(&mut rng, 2000, dim, -1.0, 1.0);
    let fake = cloud(&mut rng, 2000, dim, -1.0, 1.0);
    let shifted = cloud(&mut rng, 2000, dim, -0.9, 1.0);
    let t = Instant::now();
    let same = mmd2(&real, &fake, dim).unwrap();
    let t_mmd = t.elapsed();
    let other = mmd2(&real, &shifted, dim).unwrap();
    let t = Instant::now();
    let pr = precision_recall_k(&real, &fake, dim, 3).unwrap();
    let t_pr = t.elapsed();
    eprintln!(
        "2000×2000×784 on {} threads: mmd2 {t_mmd:.2?} ({same:.2e}, shifted {other:.2e}), precision/recall \
         {t_pr:.2?} ({pr:?})",
        rayon::current_num_threads()
    );
    assert!(same.abs() < 1e-4, "{same}");
    assert!(other > 10.0 * same.abs(), "{other} vs {same}");
    assert!(pr.0 > 0.5 && pr.1 > 0.5, "{pr:?}");
}
