//! Muon: its kernels GPU vs CPU twin on random inputs, one optimizer step (CPU twin) against an f64
//! reference of Nesterov momentum, Newton-Schulz and the update, the same step GPU vs CPU, the split of
//! tensors between Muon and AdamW, and bad hyper-parameters.
//!
//! Tolerances:
//! * muon_momentum, axpby: 1e-6 relative plus 1e-7 absolute (a handful of correctly rounded f32
//!   operations; `a + b` may cancel towards 0, hence the absolute term at the operands' ulp scale).
//! * muon_normalize: 1e-6 relative (a sum of partials in the same order, a sqrt and a division, which a
//!   driver may round a couple of ulp differently).
//! * One Muon step against the f64 reference: 2e-3 of the largest update, absolute, on the parameters'
//!   change. Five Newton-Schulz iterations multiply f32 rounding by up to |a| + |b| + |c| ≈ 10 each in the
//!   worst direction; the f32 matmuls' sums of 128 products carry ~1e-6 relative error, so 1e-6 · 10^3
//!   bounds it with room to spare. GPU vs CPU: the same bound (both sides round independently).
mod common;
use common::*;
use tigel::ops::muon as mk;
use tigel::ops::optim as k;
use tigel::optim::muon::{MuonConfig, NS_COEFFS};
use tigel::optim::{Optimizer, OptimizerKind, Schedule};
use tigel::{Device, Tensor};

const SIZES: [usize; 4] = [1, 7, 1000, 20_000];

fn f32s(d: &Device, shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_f32(d, shape, v).unwrap()
}

fn read(d: &Device, t: &Tensor) -> Vec<f32> {
    t.to_f32(d).unwrap()
}

#[test]
fn muon_momentum_matches_cpu_twin() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for n in SIZES {
        for nesterov in [false, true] {
            let (g, m) = (rng.vec(n, -2.0, 2.0), rng.vec(n, -1.0, 1.0));
            let (mu, scale) = (rng.uniform(0.5, 0.99), rng.uniform(0.2, 1.0));
            let run = |d: &Device| {
                let (tg, tm, out) =
                    (f32s(d, &[n], &g), f32s(d, &[n], &m), Tensor::empty(d, &[n], tigel::DType::F32).unwrap());
                let clip = f32s(d, &[2], &[scale, 0.0]);
                mk::momentum(d, &tg, &clip, &tm, &out, mu, nesterov).unwrap();
                (read(d, &tm), read(d, &out))
            };
            let ((mg, og), (mc, oc)) = (run(&gpu), run(&cpu));
            assert_close(&format!("muon_momentum n={n} nesterov={nesterov} m"), &mg, &mc, 1e-7, 1e-6);
            assert_close(&format!("muon_momentum n={n} nesterov={nesterov} out"), &og, &oc, 1e-7, 1e-6);
            // And the formula.
            let i = n / 2;
            let want_m = mu * m[i] + g[i] * scale;
            let want_o = if nesterov { g[i] * scale + mu * want_m } else { want_m };
            assert!((mc[i] - want_m).abs() <= 1e-6 * (1.0 + want_m.abs()), "m {} vs {want_m}", mc[i]);
            assert!((oc[i] - want_o).abs() <= 1e-6 * (1.0 + want_o.abs()), "out {} vs {want_o}", oc[i]);
        }
    }
}

#[test]
fn muon_normalize_matches_cpu_twin_and_gives_unit_norm() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for n in SIZES {
        let x = rng.vec(n, -3.0, 3.0);
        let run = |d: &Device| {
            let tx = f32s(d, &[n], &x);
            let partials = Tensor::empty(d, &[k::sumsq_layout(n).1 + 3], tigel::DType::F32).unwrap();
            let slots = k::sumsq_partial(d, &tx, &partials, 3).unwrap();
            mk::normalize(d, &tx, &partials, 3, slots, 1e-7).unwrap();
            read(d, &tx)
        };
        let (a, b) = (run(&gpu), run(&cpu));
        assert_close(&format!("muon_normalize n={n}"), &a, &b, 0.0, 1e-6);
        let norm = b.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "n={n}: norm {norm}");
    }
}

#[test]
fn muon_axpby_matches_cpu_twin() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for n in SIZES {
        for beta in [0.0, 1.0, -0.7] {
            let (x, y) = (rng.vec(n, -2.0, 2.0), rng.vec(n, -2.0, 2.0));
            let alpha = rng.uniform(-3.0, 3.0);
            let run = |d: &Device| {
                let (tx, ty) = (f32s(d, &[n], &x), f32s(d, &[n], &y));
                mk::axpby(d, alpha, &tx, beta, &ty).unwrap();
                read(d, &ty)
            };
            let (a, b) = (run(&gpu), run(&cpu));
            assert_close(&format!("muon_axpby n={n} beta={beta}"), &a, &b, 1e-7, 1e-6);
            let want: Vec<f32> = x.iter().zip(&y).map(|(&xi, &yi)| alpha * xi + beta * yi).collect();
            assert_close(&format!("muon_axpby n={n} beta={beta} formula"), &b, &want, 1e-6, 1e-6);
        }
    }
}

fn config() -> MuonConfig {
    MuonConfig {
        momentum: 0.9,
        nesterov: true,
        ns_steps: 5,
        lr_ratio: 4.0,
        weight_decay: 0.1,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        adamw_names: &["emb"],
    }
}

const SCHED: Schedule = Schedule::Cosine { lr: 0.01, warmup: 2, total: 10, min_lr: 0.001 };

/// Row-major f64 matrix product of [m, k] and [k, n].
fn mm(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for p in 0..k {
            let x = a[i * k + p];
            for j in 0..n {
                c[i * n + j] += x * b[p * n + j];
            }
        }
    }
    c
}

fn transpose(a: &[f64], r: usize, c: usize) -> Vec<f64> {
    (0..c * r).map(|i| a[(i % r) * c + i / r]).collect()
}

/// The f64 reference of one Muon update of a [r, c] matrix: (new p, new m).
fn reference(p: &[f32], g: &[f32], m: &[f32], r: usize, c: usize, step: u32, cfg: &MuonConfig) -> (Vec<f32>, Vec<f32>) {
    let mu = cfg.momentum as f64;
    let m2: Vec<f64> = m.iter().zip(g).map(|(&m, &g)| mu * m as f64 + g as f64).collect();
    let u: Vec<f64> = g.iter().zip(&m2).map(|(&g, &m)| g as f64 + mu * m).collect();
    let norm = u.iter().map(|v| v * v).sum::<f64>().sqrt();
    // Iterate on the wide orientation.
    let (wide, rr, cc) = if r <= c { (true, r, c) } else { (false, c, r) };
    let mut x: Vec<f64> = u.iter().map(|v| v / (norm + 1e-7)).collect();
    if !wide {
        x = transpose(&x, r, c);
    }
    let (a, b, cq) = (NS_COEFFS.0 as f64, NS_COEFFS.1 as f64, NS_COEFFS.2 as f64);
    for _ in 0..cfg.ns_steps {
        let gram = mm(&x, &transpose(&x, rr, cc), rr, cc, rr);
        let g2 = mm(&gram, &gram, rr, rr, rr);
        let bm: Vec<f64> = gram.iter().zip(&g2).map(|(&g1, &g2)| b * g1 + cq * g2).collect();
        let bx = mm(&bm, &x, rr, rr, cc);
        x = x.iter().zip(&bx).map(|(&x, &y)| a * x + y).collect();
    }
    if !wide {
        x = transpose(&x, c, r);
    }
    let scale = (c as f64 / r as f64).max(1.0).sqrt();
    let lr = SCHED.lr_at(step) as f64;
    let wd = cfg.weight_decay as f64;
    let newp =
        p.iter().zip(&x).map(|(&p, &o)| (p as f64 * (1.0 - lr * wd) - lr * cfg.lr_ratio as f64 * scale * o) as f32);
    (newp.collect(), m2.iter().map(|&v| v as f32).collect())
}

/// Optimizer state tensors by name, read back.
type State = Vec<(String, Vec<f32>)>;

/// One Muon step over a wide and a tall matrix, an "embedding" (AdamW) and a vector (AdamW, no decay).
/// Returns every tensor after the step.
fn muon_step(d: &Device, inputs: &[(Vec<usize>, Vec<f32>, Vec<f32>)], step: u32) -> (Vec<Vec<f32>>, State) {
    let params: Vec<Tensor> = inputs.iter().map(|(s, p, _)| f32s(d, s, p)).collect();
    let grads: Vec<Tensor> = inputs.iter().map(|(s, _, g)| f32s(d, s, g)).collect();
    let pr: Vec<&Tensor> = params.iter().collect();
    let gr: Vec<&Tensor> = grads.iter().collect();
    let names = ["h.w1", "h.w2", "emb", "h.ln"];
    let st = k::step_counter(d, step).unwrap();
    let opt = Optimizer::with_names(d, OptimizerKind::Muon(config()), SCHED, None, &pr, &names, st).unwrap();
    opt.step(d, &pr, &gr).unwrap();
    let state = opt.state_tensors().into_iter().filter(|(n, _)| n != "step").map(|(n, t)| (n, read(d, &t))).collect();
    (params.iter().map(|t| read(d, t)).collect(), state)
}

fn inputs(rng: &mut Rng) -> Vec<(Vec<usize>, Vec<f32>, Vec<f32>)> {
    [vec![24, 56], vec![40, 16], vec![30, 8], vec![8]]
        .into_iter()
        .map(|s| {
            let n = s.iter().product();
            (s, rng.vec(n, -0.5, 0.5), rng.vec(n, -1.0, 1.0))
        })
        .collect()
}

#[test]
fn muon_step_matches_f64_reference_and_splits_the_tensors() {
    let dev = cpu();
    let mut rng = Rng::new(seed());
    let ins = inputs(&mut rng);
    let step = 3;
    let (after, state) = muon_step(&dev, &ins, step);
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["0.muon", "1.muon", "2.m", "2.v", "3.m", "3.v"]);
    for (i, (shape, p, g)) in ins.iter().take(2).enumerate() {
        let (want_p, want_m) = reference(p, g, &vec![0.0; p.len()], shape[0], shape[1], step, &config());
        let delta: Vec<f32> = want_p.iter().zip(p).map(|(w, p)| w - p).collect();
        let big = delta.iter().fold(0f32, |a, v| a.max(v.abs()));
        let got: Vec<f32> = after[i].iter().zip(p).map(|(a, p)| a - p).collect();
        assert_close(&format!("matrix {i} {shape:?} update"), &got, &delta, 2e-3 * big, 0.0);
        assert_close(&format!("matrix {i} momentum"), &state[i].1, &want_m, 1e-7, 1e-6);
    }
    // The rank-1 tensor takes AdamW with no weight decay: from zero moments at t = step + 1, the update
    // is lr·m̂/sqrt(v̂) = lr·sign(g)·f; the decay would add lr·wd·p.
    let lr = SCHED.lr_at(step) as f64;
    let (c, t) = (config(), (step + 1) as i32);
    let (b1, b2) = (c.beta1 as f64, c.beta2 as f64);
    let f = ((1.0 - b1) / (1.0 - b1.powi(t))) / ((1.0 - b2) / (1.0 - b2.powi(t))).sqrt();
    for ((&a, &p), &g) in after[3].iter().zip(&ins[3].1).zip(&ins[3].2) {
        let want = p as f64 - lr * f * (g as f64).signum();
        assert!((a as f64 - want).abs() < 1e-4 * lr + 1e-6, "vector: {a} vs {want} (p {p}, g {g})");
    }
}

#[test]
fn muon_step_matches_cpu_twin() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(seed());
    let ins = inputs(&mut rng);
    let (a, sa) = muon_step(&gpu, &ins, 5);
    let (b, sb) = muon_step(&cpu(), &ins, 5);
    for (i, ((x, y), (_, p, _))) in a.iter().zip(&b).zip(&ins).enumerate() {
        let dx: Vec<f32> = x.iter().zip(p).map(|(x, p)| x - p).collect();
        let dy: Vec<f32> = y.iter().zip(p).map(|(y, p)| y - p).collect();
        let big = dy.iter().fold(0f32, |a, v| a.max(v.abs()));
        assert_close(&format!("tensor {i} update, GPU vs CPU"), &dx, &dy, 2e-3 * big, 0.0);
    }
    for ((n, x), (_, y)) in sa.iter().zip(&sb) {
        assert_close(&format!("state {n}, GPU vs CPU"), x, y, 1e-7, 1e-5);
    }
}

#[test]
fn muon_bad_hyper_parameters_are_refused_by_name() {
    let dev = cpu();
    let p = f32s(&dev, &[4, 4], &[0.5; 16]);
    let new = |c: MuonConfig| {
        Optimizer::new(&dev, OptimizerKind::Muon(c), SCHED, None, &[&p])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    for (c, want) in [
        (MuonConfig { momentum: 1.0, ..config() }, "muon momentum"),
        (MuonConfig { momentum: 0.0, ..config() }, "Nesterov"),
        (MuonConfig { ns_steps: 0, ..config() }, "ns_steps"),
        (MuonConfig { lr_ratio: f32::NAN, ..config() }, "lr_ratio"),
        (MuonConfig { beta2: 1.5, ..config() }, "beta2"),
    ] {
        let e = new(c);
        assert!(e.contains(want), "{c:?}: {e}");
    }
    let x = f32s(&dev, &[5], &[1.0; 5]);
    let short = f32s(&dev, &[4], &[1.0; 4]);
    let e = mk::axpby(&dev, 1.0, &x, 1.0, &short).unwrap_err().to_string();
    assert!(e.contains("muon_axpby"), "{e}");
    let e = mk::axpby(&dev, 1.0, &x, 1.0, &x).unwrap_err().to_string();
    assert!(e.contains("share a buffer"), "{e}");
}
