//! Chnorm family (batch norm, group norm over NCHW): GPU vs CPU twin, the CPU twin vs an f64 reference,
//! finite-difference gradient checks of both backwards against their forwards, the running-statistics
//! update and eval mode, determinism, use inside a recorded step, and bad input.
//!
//! Inputs: x in [-3, 3] plus a per-channel offset of up to ±4 and a per-(sample, channel) offset of up to
//! ±0.5 (so |mean| is comparable to the spread and the two-level variance matters), gamma in [-2, 2],
//! beta in [-1, 1], dy in [-1, 1], eps = 1e-5.
//!
//! Tolerances: first-order rounding-error bounds computed per element from the f64 reference (see
//! `reference`), the same shape of bound for both engines, as the layer norm tests. With u = 2^-24 and
//! e = (L + cg·K + K + N + 16) u, where a plane of HW elements is cut into K = plane_chunks(HW) chunks of
//! at most L = ceil(HW / K) elements (a sequential sum on the GPU, lanes on the CPU), a stat group spans
//! cg channels, and the CPU's final passes add cg·K partials per sample then N samples in order (the
//! GPU's add N·cg·K partials in 256 strided sequential sums then a workgroup tree or subgroup
//! reduction, a shallower sum for every shape here): e bounds the relative error of every sum of the
//! family (chunk, then partials, then samples, plus a few roundings for the chunk mean, the weights and
//! the division). Then, per stat group:
//! * mean: e · mean|x|.
//! * rstd: r = e (1 + 2κ) + 8u relative, κ = rstd · max|x|: the variance is Σ M2_k + Σ n_k (m_k - mean)²,
//!   whose second term is first-order sensitive to the chunk means' errors (≤ e · max|x| each), weighted
//!   by |m_k - mean| (≤ std on average), so 2eκ relative on the variance; 8u for sqrt and division.
//! * x̂ = (x - mean) · rstd: e · rstd · mean|x| + (r + 2u) |x̂|; the row's condition number enters as in
//!   layer norm (groups whose spread is small next to their values are ill-conditioned).
//! * y: |gamma| times x̂'s bound, plus 4u (|x̂ gamma| + |beta|) for the final multiply-add.
//! * dx = rstd (g - mean(g) - x̂ mean(g x̂)): r |dx|, plus rstd times the errors of mean(g) (e mean|g|),
//!   of mean(g x̂) (e mean|g x̂| + mean(|g| · x̂'s bound)), of x̂ times |mean(g x̂)|, and 3u per term for
//!   the subtractions; the terms can cancel, so the bound is in their magnitudes, not |dx|'s.
//! * dgamma = Σ dy x̂, dbeta = Σ dy per channel: e times Σ|term|, plus Σ|dy| times x̂'s bound.
//!
//! An engine is compared with the f64 reference within its bound B, and with the other engine within 2B.
//! The bounds are worst cases (typical errors are 10x smaller) yet orders of magnitude below what a
//! wrong term, index or group gives.
mod common;
use common::*;
use tigel::ops::chnorm::{
    batch_norm_backward, batch_norm_eval, batch_norm_train, batch_norm_update_running, group_norm, group_norm_backward,
    plane_chunks,
};
use tigel::{Device, Tensor};

const EPS: f32 = 1e-5;
const U: f64 = 1.0 / (1u64 << 24) as f64;
const CHANNELS: [usize; 4] = [1, 3, 6, 32];
const BATCH: [usize; 3] = [1, 2, 5];
const SPATIAL: [(usize, usize); 4] = [(1, 1), (3, 5), (8, 8), (13, 7)];

/// Group counts to test for C channels: 1, 2, 3 and C where they divide C.
fn group_counts(c: usize) -> Vec<usize> {
    let mut v: Vec<usize> = [1, 2, 3, c].into_iter().filter(|&g| c.is_multiple_of(g)).collect();
    v.dedup();
    v
}

/// x shapes for (n, c, h, w): NCHW, and [N, C] too when H = W = 1.
fn shapes(n: usize, c: usize, h: usize, w: usize) -> Vec<Vec<usize>> {
    let mut v = vec![vec![n, c, h, w]];
    if h * w == 1 {
        v.push(vec![n, c]);
    }
    v
}

struct Inputs {
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    dy: Vec<f32>,
}

fn inputs(rng: &mut Rng, n: usize, c: usize, hw: usize) -> Inputs {
    let mut x = rng.vec(n * c * hw, -3.0, 3.0);
    let chan: Vec<f32> = rng.vec(c, -4.0, 4.0);
    for (p, plane) in x.chunks_mut(hw).enumerate() {
        let off = chan[p % c] + rng.uniform(-0.5, 0.5);
        plane.iter_mut().for_each(|v| *v += off);
    }
    Inputs { x, gamma: rng.vec(c, -2.0, 2.0), beta: rng.vec(c, -1.0, 1.0), dy: rng.vec(n * c * hw, -1.0, 1.0) }
}

/// Outputs of forward and backward on one device: y, mean, rstd, dx, dgamma, dbeta.
#[derive(Default)]
struct Outputs {
    y: Vec<f32>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    dx: Vec<f32>,
    dgamma: Vec<f32>,
    dbeta: Vec<f32>,
}

/// Forward and backward of batch norm (groups None) or group norm on `d`.
fn run(d: &Device, shape: &[usize], groups: Option<usize>, inp: &Inputs) -> Outputs {
    let (n, c) = (shape[0], shape[1]);
    let t = |s: &[usize], v: &[f32]| Tensor::from_f32(d, s, v).unwrap();
    let (x, g, b, dy) = (t(shape, &inp.x), t(&[c], &inp.gamma), t(&[c], &inp.beta), t(shape, &inp.dy));
    let ((y, mean, rstd), (dx, dg, db)) = match groups {
        None => {
            let f = batch_norm_train(d, &x, &g, &b, EPS).unwrap();
            assert_eq!((f.1.shape.as_slice(), f.2.shape.as_slice()), ([c].as_slice(), [c].as_slice()));
            let bw = batch_norm_backward(d, &x, &g, &f.1, &f.2, &dy).unwrap();
            (f, bw)
        }
        Some(gr) => {
            let f = group_norm(d, &x, &g, &b, gr, EPS).unwrap();
            assert_eq!((f.1.shape.as_slice(), f.2.shape.as_slice()), ([n * gr].as_slice(), [n * gr].as_slice()));
            let bw = group_norm_backward(d, &x, &g, &f.1, &f.2, &dy, gr).unwrap();
            (f, bw)
        }
    };
    assert_eq!((y.shape.as_slice(), dx.shape.as_slice()), (shape, shape));
    assert_eq!((dg.shape.as_slice(), db.shape.as_slice()), ([c].as_slice(), [c].as_slice()));
    let v = |t: &Tensor| t.to_f32(d).unwrap();
    Outputs { y: v(&y), mean: v(&mean), rstd: v(&rstd), dx: v(&dx), dgamma: v(&dg), dbeta: v(&db) }
}

/// Straightforward f64 batch norm / group norm and their backward, with the error bounds of the header.
struct Reference {
    out: Outputs,
    bound: Outputs,
}

fn reference(n: usize, c: usize, hw: usize, groups: Option<usize>, inp: &Inputs) -> Reference {
    let (cg, per_sample) = match groups {
        None => (1, false),
        Some(g) => (c / g, true),
    };
    let gpc = c / cg;
    let stat_groups = if per_sample { n * gpc } else { gpc };
    let k = plane_chunks(hw);
    let e = (hw.div_ceil(k) + cg * k + k + n + 16) as f64 * U;
    // Element indices of stat group t.
    let members = |t: usize| -> Vec<usize> {
        let (samples, c0) = if per_sample { (t / gpc..t / gpc + 1, (t % gpc) * cg) } else { (0..n, t * cg) };
        let mut v = Vec::new();
        for nn in samples {
            for cc in c0..c0 + cg {
                v.extend((nn * c + cc) * hw..(nn * c + cc + 1) * hw);
            }
        }
        v
    };
    let f = |v: f32| v as f64;
    let chan = |i: usize| (i / hw) % c;
    let len = n * c * hw;
    let (mut o, mut b) = (Outputs::default(), Outputs::default());
    (o.y, o.dx, b.y, b.dx) = (vec![0.0; len], vec![0.0; len], vec![0.0; len], vec![0.0; len]);
    // Per element: x̂ and its bound; per channel: Σ dy x̂, Σ dy, Σ|dy x̂|, Σ|dy| · x̂ bound, Σ|dy|.
    let (mut xh, mut xh_err) = (vec![0f64; len], vec![0f64; len]);
    let (mut dg, mut db, mut sg, mut sgx, mut sb) =
        (vec![0f64; c], vec![0f64; c], vec![0f64; c], vec![0f64; c], vec![0f64; c]);
    for t in 0..stat_groups {
        let idx = members(t);
        let m = idx.len() as f64;
        let mean = idx.iter().map(|&i| f(inp.x[i])).sum::<f64>() / m;
        let var = idx.iter().map(|&i| (f(inp.x[i]) - mean).powi(2)).sum::<f64>() / m;
        let rstd = 1.0 / (var + EPS as f64).sqrt();
        let mean_abs = idx.iter().map(|&i| f(inp.x[i]).abs()).sum::<f64>() / m;
        let max_abs = idx.iter().fold(0f64, |a, &i| a.max(f(inp.x[i]).abs()));
        let r = e * (1.0 + 2.0 * rstd * max_abs) + 8.0 * U;
        o.mean.push(mean as f32);
        o.rstd.push(rstd as f32);
        b.mean.push((e * mean_abs + U * mean.abs()) as f32);
        b.rstd.push((r * rstd) as f32);
        let g = |i: usize| f(inp.dy[i]) * f(inp.gamma[chan(i)]);
        for &i in &idx {
            xh[i] = (f(inp.x[i]) - mean) * rstd;
            xh_err[i] = e * rstd * mean_abs + (r + 2.0 * U) * xh[i].abs();
        }
        let mg = idx.iter().map(|&i| g(i)).sum::<f64>() / m;
        let mgx = idx.iter().map(|&i| g(i) * xh[i]).sum::<f64>() / m;
        let g_abs = idx.iter().map(|&i| g(i).abs()).sum::<f64>() / m;
        let mg_err = e * g_abs;
        let mgx_err = (e * idx.iter().map(|&i| (g(i) * xh[i]).abs()).sum::<f64>()
            + idx.iter().map(|&i| g(i).abs() * xh_err[i]).sum::<f64>())
            / m;
        for &i in &idx {
            let (cc, gam, bet) = (chan(i), f(inp.gamma[chan(i)]), f(inp.beta[chan(i)]));
            o.y[i] = (xh[i] * gam + bet) as f32;
            b.y[i] = (gam.abs() * xh_err[i] + 4.0 * U * ((xh[i] * gam).abs() + bet.abs())) as f32;
            let dx = rstd * (g(i) - mg - xh[i] * mgx);
            o.dx[i] = dx as f32;
            let inner = mg_err
                + xh[i].abs() * mgx_err
                + mgx.abs() * xh_err[i]
                + 3.0 * U * (g(i).abs() + mg.abs() + (xh[i] * mgx).abs());
            b.dx[i] = (r * dx.abs() + rstd * inner) as f32;
            let dy = f(inp.dy[i]);
            dg[cc] += dy * xh[i];
            db[cc] += dy;
            sg[cc] += (dy * xh[i]).abs();
            sgx[cc] += dy.abs() * xh_err[i];
            sb[cc] += dy.abs();
        }
    }
    o.dgamma = dg.iter().map(|&v| v as f32).collect();
    o.dbeta = db.iter().map(|&v| v as f32).collect();
    b.dgamma = (0..c).map(|cc| (e * sg[cc] + sgx[cc]) as f32).collect();
    b.dbeta = sb.iter().map(|&v| (e * v) as f32).collect();
    Reference { out: o, bound: b }
}

/// |got - want| <= k · bound element by element (a NaN, e.g. an unwritten poisoned element, fails).
#[track_caller]
fn assert_within(what: &str, got: &[f32], want: &[f32], bound: &[f32], k: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        let tol = k * b + f32::MIN_POSITIVE;
        assert!((g - w).abs() <= tol, "{what}: element {i} is {g} but should be {w} (tolerance {tol})");
    }
}

/// Compares all six outputs within k times the reference's bounds.
#[track_caller]
fn compare(what: &str, got: &Outputs, want: &Outputs, bound: &Outputs, k: f32) {
    assert_within(&format!("{what} mean"), &got.mean, &want.mean, &bound.mean, k);
    assert_within(&format!("{what} rstd"), &got.rstd, &want.rstd, &bound.rstd, k);
    assert_within(&format!("{what} y"), &got.y, &want.y, &bound.y, k);
    assert_within(&format!("{what} dx"), &got.dx, &want.dx, &bound.dx, k);
    assert_within(&format!("{what} dgamma"), &got.dgamma, &want.dgamma, &bound.dgamma, k);
    assert_within(&format!("{what} dbeta"), &got.dbeta, &want.dbeta, &bound.dbeta, k);
}

/// Every (n, c, h, w) of the odd-shape grid.
fn grid() -> Vec<(usize, usize, usize, usize)> {
    let mut v = Vec::new();
    for c in CHANNELS {
        for n in BATCH {
            for (h, w) in SPATIAL {
                v.push((n, c, h, w));
            }
        }
    }
    v
}

fn label(groups: Option<usize>, shape: &[usize]) -> String {
    match groups {
        None => format!("batch_norm {shape:?}"),
        Some(g) => format!("group_norm {shape:?} groups {g}"),
    }
}

/// For each grid shape and norm (batch norm, then group norm with each group count), `f(shape, groups,
/// inputs, reference)`.
fn each_case(rng: &mut Rng, mut f: impl FnMut(&[usize], Option<usize>, &Inputs, &Reference)) {
    for (n, c, h, w) in grid() {
        let norms = std::iter::once(None).chain(group_counts(c).into_iter().map(Some));
        for groups in norms {
            let inp = inputs(rng, n, c, h * w);
            let r = reference(n, c, h * w, groups, &inp);
            for shape in shapes(n, c, h, w) {
                f(&shape, groups, &inp, &r);
            }
        }
    }
}

/// The kernels with a workgroup-memory and a subgroup form of their reductions.
const REDUCING: [&tigel::kernels::Kernel; 5] = [
    &tigel::kernels::chnorm::CHNORM_STATS,
    &tigel::kernels::chnorm::CHNORM_STATS_APPLY,
    &tigel::kernels::chnorm::CHNORM_BWD_REDUCE,
    &tigel::kernels::chnorm::CHNORM_BWD_GROUP,
    &tigel::kernels::chnorm::CHNORM_BWD_GROUP_ACC,
];

#[test]
fn chnorm_gpu_matches_cpu_twin() {
    // Each form of the reductions (workgroup memory, subgroups where the adapter has them), same assertions.
    for_each_variant(&REDUCING, |_| chnorm_gpu_matches_cpu_twin_once());
}

fn chnorm_gpu_matches_cpu_twin_once() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    each_case(&mut rng, |shape, groups, inp, r| {
        let want = run(&cpu, shape, groups, inp);
        let got = run(&gpu, shape, groups, inp);
        compare(&format!("gpu {}", label(groups, shape)), &got, &want, &r.bound, 2.0);
    });
}

#[test]
fn chnorm_cpu_twin_matches_f64_reference() {
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    each_case(&mut rng, |shape, groups, inp, r| {
        let got = run(&cpu, shape, groups, inp);
        compare(&format!("cpu {}", label(groups, shape)), &got, &r.out, &r.bound, 1.0);
    });
    // Every chunk count the CPU twin specialises: K = 2 with a short last row (7×7), K = 8 (16×16),
    // K = 16 (20×20), K = 32 chunks of 32 (32×32) and of 128 (64×64); a wide batch of vectors; a batch norm
    // over many samples.
    for (shape, groups) in [
        (vec![5, 6, 7, 7], Some(2)),
        (vec![5, 6, 7, 7], None),
        (vec![3, 5, 16, 16], Some(5)),
        (vec![3, 5, 16, 16], None),
        (vec![2, 4, 20, 20], Some(2)),
        (vec![2, 4, 20, 20], None),
        (vec![4, 8, 32, 32], Some(4)),
        (vec![4, 8, 32, 32], None),
        (vec![2, 3, 64, 64], Some(3)),
        (vec![2, 3, 64, 64], None),
        (vec![300, 70], None),
        (vec![64, 16, 4, 4], Some(8)),
        (vec![64, 16, 4, 4], None),
    ] {
        let (n, c) = (shape[0], shape[1]);
        let hw = shape[2..].iter().product();
        let inp = inputs(&mut rng, n, c, hw);
        let r = reference(n, c, hw, groups, &inp);
        let got = run(&cpu, &shape, groups, &inp);
        compare(&format!("cpu {}", label(groups, &shape)), &got, &r.out, &r.bound, 1.0);
    }
}

#[test]
fn chnorm_gpu_matches_f64_reference() {
    for_each_variant(&REDUCING, |_| chnorm_gpu_matches_f64_reference_once());
}

fn chnorm_gpu_matches_f64_reference_once() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(seed());
    for (shape, groups) in [
        (vec![2, 16, 32, 32], Some(4)),
        (vec![2, 16, 32, 32], None),
        (vec![3, 5, 16, 16], Some(5)),
        (vec![2, 4, 20, 20], None),
        (vec![5, 6, 13, 7], Some(3)),
        (vec![5, 6, 13, 7], None),
        (vec![70, 9], None),
    ] {
        let (n, c) = (shape[0], shape[1]);
        let hw = shape[2..].iter().product();
        let inp = inputs(&mut rng, n, c, hw);
        let r = reference(n, c, hw, groups, &inp);
        let got = run(&gpu, &shape, groups, &inp);
        compare(&format!("gpu {}", label(groups, &shape)), &got, &r.out, &r.bound, 1.0);
    }
}

#[test]
fn chnorm_cpu_partials_take_any_chunk_count() {
    // The ops cut planes into a power of two of chunks; the shader takes any count, and so does its CPU
    // twin (a plain loop per chunk). Partials for K = 3 and 5 against f64 sums of each interleaved chunk:
    // a chunk has at most 51 elements, so a sum (with up to 4 roundings inside each term) is within 64u of
    // Σ|term|. M2 uses the f32 chunk mean, whose error δ <= 64u mean|x| changes it by len · δ² only (the
    // first-order term Σ 2 (x - mean) δ vanishes).
    use tigel::device::cpu::chnorm::{chnorm_bwd_partial, chnorm_stats_partial};
    use tigel::device::cpu::CpuArgs;
    use tigel::kernels::chnorm::ChnormParams;
    let mut rng = Rng::new(seed());
    let (n, c, hw) = (2, 3, 151);
    let inp = inputs(&mut rng, n, c, hw);
    let (mean, rstd) = (rng.vec(c, -1.0, 1.0), rng.vec(c, 0.5, 2.0));
    let words = |v: &[f32]| -> Vec<u32> { v.iter().map(|x| x.to_bits()).collect() };
    let (xw, dyw, mw, rw) = (words(&inp.x), words(&inp.dy), words(&mean), words(&rstd));
    for k in [3usize, 5] {
        let p = ChnormParams { n: n as u32, c: c as u32, hw: hw as u32, chunks: k as u32, cg: 1, ..Default::default() };
        let bytes = bytemuck::bytes_of(&p);
        let (mut stats, mut grads) = (vec![0u32; 2 * n * c * k], vec![0u32; 2 * n * c * k]);
        chnorm_stats_partial(&mut CpuArgs { params: bytes, ins: vec![&xw], outs: vec![&mut stats] });
        chnorm_bwd_partial(&mut CpuArgs { params: bytes, ins: vec![&xw, &mw, &rw, &dyw], outs: vec![&mut grads] });
        for pl in 0..n * c {
            let ch = pl % c;
            for j in 0..k {
                let idx: Vec<usize> = (j..hw).step_by(k).map(|e| pl * hw + e).collect();
                let len = idx.len() as f64;
                let x = |i: usize| inp.x[i] as f64;
                let m = idx.iter().map(|&i| x(i)).sum::<f64>() / len;
                let q = idx.iter().map(|&i| (x(i) - m).powi(2)).sum::<f64>();
                let xh = |i: usize| (x(i) - mean[ch] as f64) * rstd[ch] as f64;
                let s1 = idx.iter().map(|&i| inp.dy[i] as f64).sum::<f64>();
                let s2 = idx.iter().map(|&i| inp.dy[i] as f64 * xh(i)).sum::<f64>();
                let abs = |f: &dyn Fn(usize) -> f64| idx.iter().map(|&i| f(i).abs()).sum::<f64>();
                let got = |v: &[u32], f: usize| f32::from_bits(v[(2 * pl + f) * k + j]) as f64;
                let tol = |sum_abs: f64| 64.0 * U * sum_abs + 1e-30;
                assert!((got(&stats, 0) - m).abs() <= tol(abs(&x) / len), "K {k} plane {pl} chunk {j} mean");
                let delta = 64.0 * U * abs(&x) / len;
                assert!((got(&stats, 1) - q).abs() <= tol(q) + len * delta * delta, "K {k} plane {pl} chunk {j} M2");
                assert!((got(&grads, 0) - s1).abs() <= tol(abs(&|i| inp.dy[i] as f64)), "K {k} chunk {j} Σ dy");
                let sum_abs2 = abs(&|i| inp.dy[i] as f64 * xh(i));
                assert!((got(&grads, 1) - s2).abs() <= tol(sum_abs2), "K {k} chunk {j} Σ dy x̂");
            }
        }
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn chnorm_reductions_are_deterministic() {
    for_each_variant(&REDUCING, |_| chnorm_reductions_are_deterministic_once());
}

fn chnorm_reductions_are_deterministic_once() {
    // No atomics anywhere: repeated runs give the same bits on each device.
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    let shape = [6, 12, 16, 16];
    let inp = inputs(&mut rng, 6, 12, 256);
    for d in &devs {
        for groups in [None, Some(4)] {
            let a = run(d, &shape, groups, &inp);
            let b = run(d, &shape, groups, &inp);
            for (what, u, v) in [
                ("mean", &a.mean, &b.mean),
                ("rstd", &a.rstd, &b.rstd),
                ("y", &a.y, &b.y),
                ("dx", &a.dx, &b.dx),
                ("dgamma", &a.dgamma, &b.dgamma),
                ("dbeta", &a.dbeta, &b.dbeta),
            ] {
                assert_eq!(bits(u), bits(v), "{} {} {what}", d.name(), label(groups, &shape));
            }
        }
    }
}

/// Σ w · y in f64 for the CPU norm of x with gamma and beta.
fn weighted_output(
    d: &Device,
    shape: &[usize],
    groups: Option<usize>,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    w: &[f32],
) -> f64 {
    let c = shape[1];
    let t = |s: &[usize], v: &[f32]| Tensor::from_f32(d, s, v).unwrap();
    let (x, g, b) = (t(shape, x), t(&[c], gamma), t(&[c], beta));
    let y = match groups {
        None => batch_norm_train(d, &x, &g, &b, EPS).unwrap().0,
        Some(gr) => group_norm(d, &x, &g, &b, gr, EPS).unwrap().0,
    };
    y.to_f32(d).unwrap().iter().zip(w).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// Central differences of L = Σ w · y (w fixed random, so dL/dy = w) on every element of x, gamma and beta,
/// against the backward's dx, dgamma, dbeta.
fn check_grad(shape: &[usize], groups: Option<usize>) {
    // Step h = 1e-2: truncation error h² / 6 · |L'''| is about 1e-4 here, and the f32 rounding of y (~1e-7
    // per element, at most 36 elements) divided by 2h adds about 5e-4. Tolerance: 2e-3 absolute + 1e-2
    // relative, while a wrong formula (a missing term, the wrong group) is off by O(0.1 - 1).
    let d = cpu();
    let mut rng = Rng::new(seed());
    let h = 1e-2f32;
    let (n, c) = (shape[0], shape[1]);
    let hw: usize = shape[2..].iter().product();
    let inp = inputs(&mut rng, n, c, hw);
    let w = inp.dy.clone();
    let t = |s: &[usize], v: &[f32]| Tensor::from_f32(&d, s, v).unwrap();
    let (x, g, b, wt) = (t(shape, &inp.x), t(&[c], &inp.gamma), t(&[c], &inp.beta), t(shape, &w));
    let (dx, dg, db) = match groups {
        None => {
            let (_, mean, rstd) = batch_norm_train(&d, &x, &g, &b, EPS).unwrap();
            batch_norm_backward(&d, &x, &g, &mean, &rstd, &wt).unwrap()
        }
        Some(gr) => {
            let (_, mean, rstd) = group_norm(&d, &x, &g, &b, gr, EPS).unwrap();
            group_norm_backward(&d, &x, &g, &mean, &rstd, &wt, gr).unwrap()
        }
    };
    let analytic = [dx.to_f32(&d).unwrap(), dg.to_f32(&d).unwrap(), db.to_f32(&d).unwrap()];
    for (which, name) in ["x", "gamma", "beta"].iter().enumerate() {
        let mut numeric = Vec::new();
        for i in 0..analytic[which].len() {
            let mut vals = [inp.x.clone(), inp.gamma.clone(), inp.beta.clone()];
            let f = |vals: &[Vec<f32>; 3]| weighted_output(&d, shape, groups, &vals[0], &vals[1], &vals[2], &w);
            let v0 = vals[which][i];
            vals[which][i] = v0 + h;
            let up = f(&vals);
            vals[which][i] = v0 - h;
            let down = f(&vals);
            numeric.push(((up - down) / (2.0 * h as f64)) as f32);
        }
        assert_close(&format!("d{name} {}", label(groups, shape)), &analytic[which], &numeric, 2e-3, 1e-2);
    }
}

#[test]
fn batch_norm_grad_matches_finite_differences() {
    check_grad(&[3, 2, 2, 3], None);
    check_grad(&[1, 3, 3, 5], None);
    check_grad(&[7, 3], None);
}

#[test]
fn group_norm_grad_matches_finite_differences() {
    check_grad(&[2, 6, 1, 3], Some(3));
    check_grad(&[2, 4, 2, 2], Some(1));
    check_grad(&[3, 2, 2, 3], Some(2));
}

#[test]
fn batch_norm_running_update_matches_formula_and_eval_uses_it() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    let (n, c, h, w) = (5, 6, 3, 5);
    let count = n * h * w;
    let inp = inputs(&mut rng, n, c, h * w);
    let rm0 = rng.vec(c, -1.0, 1.0);
    let rv0 = rng.vec(c, 0.5, 2.0);
    let momentum = 0.1f32;
    for d in &devs {
        let t = |s: &[usize], v: &[f32]| Tensor::from_f32(d, s, v).unwrap();
        let x = t(&[n, c, h, w], &inp.x);
        let (g, b) = (t(&[c], &inp.gamma), t(&[c], &inp.beta));
        let (_, mean, rstd) = batch_norm_train(d, &x, &g, &b, EPS).unwrap();
        let (rm, rv) = (t(&[c], &rm0), t(&[c], &rv0));
        batch_norm_update_running(d, &rm, &rv, &mean, &rstd, momentum, EPS, count).unwrap();
        let (mean, rstd) = (mean.to_f32(d).unwrap(), rstd.to_f32(d).unwrap());
        let (got_m, got_v) = (rm.to_f32(d).unwrap(), rv.to_f32(d).unwrap());
        // f64 formula from the same f32 inputs. The products and sums round a few times each (8u of each
        // term's magnitude); 1 / rstd² - eps loses 6u of (var + eps) to the reciprocal and the subtraction.
        let (m, unbias) = (momentum as f64, count as f64 / (count - 1) as f64);
        for i in 0..c {
            let var_b = 1.0 / (rstd[i] as f64).powi(2) - EPS as f64;
            let (a, bb) = ((1.0 - m) * rm0[i] as f64, m * mean[i] as f64);
            let want_m = a + bb;
            let tol_m = 8.0 * U * (a.abs() + bb.abs());
            assert!((got_m[i] as f64 - want_m).abs() <= tol_m, "{} running_mean[{i}]", d.name());
            let (a, bb) = ((1.0 - m) * rv0[i] as f64, m * var_b * unbias);
            let want_v = a + bb;
            let tol_v = 8.0 * U * (a.abs() + bb.abs()) + 6.0 * U * m * unbias * (var_b + EPS as f64);
            assert!((got_v[i] as f64 - want_v).abs() <= tol_v, "{} running_var[{i}]", d.name());
        }
        // Eval mode normalises with the running statistics, not the batch's.
        let y = batch_norm_eval(d, &x, &g, &b, &rm, &rv, EPS).unwrap().to_f32(d).unwrap();
        let hw = h * w;
        let (mut want, mut tol) = (vec![0f32; y.len()], vec![0f32; y.len()]);
        for (i, (wv, tv)) in want.iter_mut().zip(tol.iter_mut()).enumerate() {
            let ch = (i / hw) % c;
            let rs = 1.0 / (got_v[ch] as f64 + EPS as f64).sqrt();
            let xg = (inp.x[i] as f64 - got_m[ch] as f64) * rs * inp.gamma[ch] as f64;
            *wv = (xg + inp.beta[ch] as f64) as f32;
            // Subtraction, reciprocal square root (about 6u), two products and the final add.
            *tv = (16.0 * U * (xg.abs() + (inp.beta[ch] as f64).abs())) as f32;
        }
        assert_within(&format!("{} batch_norm_eval", d.name()), &y, &want, &tol, 1.0);
        // And for [N, C] input.
        let x2 = t(&[n * h * w, c], &inp.x);
        let y2 = batch_norm_eval(d, &x2, &g, &b, &rm, &rv, EPS).unwrap().to_f32(d).unwrap();
        for (i, &v) in y2.iter().enumerate() {
            let ch = i % c;
            let rs = 1.0 / (got_v[ch] as f64 + EPS as f64).sqrt();
            let xg = (inp.x[i] as f64 - got_m[ch] as f64) * rs * inp.gamma[ch] as f64;
            let want = xg + inp.beta[ch] as f64;
            let tol = 16.0 * U * (xg.abs() + (inp.beta[ch] as f64).abs());
            assert!((v as f64 - want).abs() <= tol, "{} batch_norm_eval [N, C] element {i}", d.name());
        }
    }
}

#[test]
fn batch_norm_running_update_replays_in_place() {
    // Recorded once, replayed three times: the running statistics advance three times.
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    let c = 4;
    let (mean0, rstd0) = (rng.vec(c, -1.0, 1.0), rng.vec(c, 0.5, 2.0));
    let (rm0, rv0) = (rng.vec(c, -1.0, 1.0), rng.vec(c, 0.5, 2.0));
    for d in &devs {
        let t = |v: &[f32]| Tensor::from_f32(d, &[c], v).unwrap();
        let (mean, rstd, rm, rv) = (t(&mean0), t(&rstd0), t(&rm0), t(&rv0));
        let ((), rec) = d.capture(|| batch_norm_update_running(d, &rm, &rv, &mean, &rstd, 0.5, EPS, 10)).unwrap();
        for _ in 0..3 {
            d.replay(&rec).unwrap();
        }
        let (got_m, got_v) = (rm.to_f32(d).unwrap(), rv.to_f32(d).unwrap());
        for i in 0..c {
            let var_u = (1.0 / (rstd0[i] as f64).powi(2) - EPS as f64) * 10.0 / 9.0;
            // After three steps of momentum 1/2: 1/8 of the start and 7/8 of the batch value.
            let want_m = rm0[i] as f64 / 8.0 + mean0[i] as f64 * 7.0 / 8.0;
            let want_v = rv0[i] as f64 / 8.0 + var_u * 7.0 / 8.0;
            assert!((got_m[i] as f64 - want_m).abs() <= 1e-6 * (1.0 + want_m.abs()), "{} mean[{i}]", d.name());
            assert!((got_v[i] as f64 - want_v).abs() <= 1e-6 * (1.0 + want_v.abs()), "{} var[{i}]", d.name());
        }
    }
}

#[test]
fn chnorm_bad_input_is_an_error() {
    let d = Device::cpu();
    let f = |s: &[usize]| Tensor::from_f32(&d, s, &vec![0.5; s.iter().product()]).unwrap();
    let x = f(&[2, 6, 3, 3]);
    let (g6, b6) = (f(&[6]), f(&[6]));
    let err = |r: tigel::Result<(Tensor, Tensor, Tensor)>| r.unwrap_err().to_string();

    // Forward: ranks, per-channel shapes, dtype, empty axes, eps, groups.
    for bad in [vec![6], vec![2, 6, 9], vec![1, 2, 6, 3, 3]] {
        let e = err(batch_norm_train(&d, &f(&bad), &g6, &b6, 1e-5));
        assert!(e.contains("batch_norm_train") && e.contains(&format!("{bad:?}")), "{e}");
        let e = err(group_norm(&d, &f(&bad), &g6, &b6, 2, 1e-5));
        assert!(e.contains("group_norm") && e.contains(&format!("{bad:?}")), "{e}");
    }
    let e = err(batch_norm_train(&d, &x, &f(&[3]), &b6, 1e-5));
    assert!(e.contains("[2, 6, 3, 3]") && e.contains("[3]") && e.contains("gamma"), "{e}");
    let e = err(group_norm(&d, &x, &g6, &f(&[6, 1]), 3, 1e-5));
    assert!(e.contains("[6, 1]") && e.contains("beta"), "{e}");
    let u = Tensor::from_u32(&d, &[2, 6, 3, 3], &[1; 108]).unwrap();
    let e = err(batch_norm_train(&d, &u, &g6, &b6, 1e-5));
    assert!(e.contains("u32") && e.contains("f32"), "{e}");
    let e = err(batch_norm_train(&d, &Tensor::from_f32(&d, &[0, 6, 3, 3], &[]).unwrap(), &g6, &b6, 1e-5));
    assert!(e.contains("[0, 6, 3, 3]"), "{e}");
    for eps in [0.0, -1e-5, f32::NAN] {
        let e = err(batch_norm_train(&d, &x, &g6, &b6, eps));
        assert!(e.contains("eps"), "{e}");
        let e = err(group_norm(&d, &x, &g6, &b6, 2, eps));
        assert!(e.contains("eps"), "{e}");
    }
    for groups in [0, 4, 12] {
        let e = err(group_norm(&d, &x, &g6, &b6, groups, 1e-5));
        assert!(e.contains(&format!("groups = {groups}")) && e.contains("[2, 6, 3, 3]"), "{e}");
    }

    // Backward: dy, saved statistics, gamma, groups.
    let (_, mean, rstd) = batch_norm_train(&d, &x, &g6, &b6, 1e-5).unwrap();
    let e = err(batch_norm_backward(&d, &x, &g6, &mean, &rstd, &f(&[2, 6, 9])));
    assert!(e.contains("[2, 6, 3, 3]") && e.contains("[2, 6, 9]") && e.contains("dy"), "{e}");
    let e = err(batch_norm_backward(&d, &x, &g6, &f(&[12]), &rstd, &x));
    assert!(e.contains("[12]") && e.contains("mean"), "{e}");
    let e = err(batch_norm_backward(&d, &x, &g6, &mean, &f(&[5]), &x));
    assert!(e.contains("[5]") && e.contains("rstd"), "{e}");
    let e = err(batch_norm_backward(&d, &x, &f(&[2]), &mean, &rstd, &x));
    assert!(e.contains("[2]") && e.contains("gamma"), "{e}");
    let (_, gm, gr) = group_norm(&d, &x, &g6, &b6, 3, 1e-5).unwrap();
    assert_eq!(gm.shape, [6]);
    let e = err(group_norm_backward(&d, &x, &g6, &gm, &gr, &x, 2));
    assert!(e.contains("group_norm_backward") && e.contains("[6]") && e.contains("mean"), "{e}");
    let e = err(group_norm_backward(&d, &x, &g6, &gm, &gr, &x, 5));
    assert!(e.contains("groups = 5"), "{e}");
    let e = err(group_norm_backward(&d, &x, &g6, &gm, &gr, &u, 3));
    assert!(e.contains("u32"), "{e}");

    // Running statistics and eval mode.
    let (rm, rv) = (f(&[6]), f(&[6]));
    let e = batch_norm_update_running(&d, &rm, &f(&[5]), &mean, &rstd, 0.1, 1e-5, 18).unwrap_err().to_string();
    assert!(e.contains("[6]") && e.contains("[5]") && e.contains("running_var"), "{e}");
    let e = batch_norm_update_running(&d, &f(&[2, 3]), &rv, &mean, &rstd, 0.1, 1e-5, 18).unwrap_err().to_string();
    assert!(e.contains("[2, 3]") && e.contains("running_mean"), "{e}");
    let e = batch_norm_update_running(&d, &rm, &rv, &f(&[4]), &rstd, 0.1, 1e-5, 18).unwrap_err().to_string();
    assert!(e.contains("[4]") && e.contains("mean"), "{e}");
    let e = batch_norm_update_running(&d, &rm, &rv, &mean, &rstd, 1.5, 1e-5, 18).unwrap_err().to_string();
    assert!(e.contains("momentum"), "{e}");
    let e = batch_norm_update_running(&d, &rm, &rv, &mean, &rstd, 0.1, 1e-5, 1).unwrap_err().to_string();
    assert!(e.contains("count"), "{e}");
    let e = batch_norm_update_running(&d, &rm, &rv, &mean, &rstd, 0.1, 0.0, 18).unwrap_err().to_string();
    assert!(e.contains("eps"), "{e}");
    let e = batch_norm_eval(&d, &x, &g6, &b6, &rm, &f(&[7]), 1e-5).unwrap_err().to_string();
    assert!(e.contains("[2, 6, 3, 3]") && e.contains("[7]") && e.contains("running_var"), "{e}");
    let e = batch_norm_eval(&d, &f(&[2, 6, 9]), &g6, &b6, &rm, &rv, 1e-5).unwrap_err().to_string();
    assert!(e.contains("batch_norm_eval") && e.contains("[2, 6, 9]"), "{e}");
}
