//! Muon: its kernels GPU vs CPU twin on random inputs (the multi-matrix ones in both groupings, which
//! agree bit for bit on the CPU), one optimizer step (CPU twin) against an f64 reference of Nesterov
//! momentum, Newton-Schulz and the update, for two matrices and for many shapes at once, the same step
//! GPU vs CPU, the split of tensors between Muon and AdamW, and bad hyper-parameters.
//!
//! Tolerances:
//! * muon_momentum, muon_update: 1e-6 relative plus 1e-7 absolute (a handful of correctly rounded f32
//!   operations; `a + b` may cancel towards 0, hence the absolute term at the operands' ulp scale).
//! * muon_normalize: 1e-6 relative (a sum of partials in the same order, a sqrt and a division, which a
//!   driver may round a couple of ulp differently).
//! * One Muon step against the f64 reference: 2e-3 of the largest update, absolute, on the parameters'
//!   change. Five Newton-Schulz iterations multiply f32 rounding by up to |a| + |b| + |c| ≈ 10 each in the
//!   worst direction; the f32 matmuls' sums of 128 products carry ~1e-6 relative error, so 1e-6 · 10^3
//!   bounds it with room to spare. GPU vs CPU: the same bound (both sides round independently).
mod common;
use common::*;
use tigel::kernels::muon::{MUON_MOMENTUM_MULTI, MUON_MOMENTUM_MULTI_WIDE, MUON_UPDATE_MULTI, MUON_UPDATE_MULTI_WIDE};
use tigel::kernels::optim::{MUON_MOMENTUM_SLOTS_WIDE, MUON_UPDATE_SLOTS_WIDE, SLOTS};
use tigel::kernels::Kernel;
use tigel::ops::muon as mk;
use tigel::ops::optim as k;
use tigel::optim::muon::{MuonConfig, NS_COEFFS};
use tigel::optim::{Optimizer, OptimizerKind, Schedule};
use tigel::{Device, Tensor};

fn f32s(d: &Device, shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_f32(d, shape, v).unwrap()
}

fn read(d: &Device, t: &Tensor) -> Vec<f32> {
    t.to_f32(d).unwrap()
}

/// Sizes of the matrices the multi-matrix tests pack into one arena: ones, odd, bigger than a chunk,
/// more than MUON_MOMENTUM_SLOTS_WIDE of them.
const PACK: [usize; 17] = [1, 7, 1000, 20_000, 300, 257, 5, 4096, 64, 3, 129, 511, 2, 640, 33, 1, 90];

/// Arena offsets of PACK with gaps between the regions, and the arena's size.
fn packed(rng: &mut Rng) -> (Vec<usize>, usize) {
    let mut at = 0;
    let offs = PACK
        .iter()
        .map(|&n| {
            let o = at + rng.below(9);
            at = o + n;
            o
        })
        .collect();
    (offs, at + 3)
}

/// The groupings a device runs: one matrix per dispatch, SLOTS where it binds the multi kernel `narrow`
/// and `wide_slots` where it binds its wide form `wide`; `per` (what the op picks) is the widest.
fn groupings(d: &Device, narrow: &Kernel, wide: &Kernel, wide_slots: usize, per: usize) -> Vec<usize> {
    use tigel::ops::optim_multi::fits;
    let mut v = vec![1];
    if fits(d, narrow) {
        v.push(SLOTS);
    }
    if fits(d, wide) {
        v.push(wide_slots);
    }
    assert_eq!(per, *v.last().unwrap(), "the op takes the widest grouping");
    v
}

fn momentum_groupings(d: &Device) -> Vec<usize> {
    groupings(
        d,
        &MUON_MOMENTUM_MULTI,
        &MUON_MOMENTUM_MULTI_WIDE,
        MUON_MOMENTUM_SLOTS_WIDE,
        mk::momentum_per_dispatch(d),
    )
}

fn update_groupings(d: &Device) -> Vec<usize> {
    groupings(d, &MUON_UPDATE_MULTI, &MUON_UPDATE_MULTI_WIDE, MUON_UPDATE_SLOTS_WIDE, mk::update_per_dispatch(d))
}

#[test]
fn muon_momentum_matches_cpu_twin_in_both_groupings() {
    let cpu = cpu();
    let gpu = gpu();
    let mut rng = Rng::new(seed());
    let (offs, len) = packed(&mut rng);
    for nesterov in [false, true] {
        let gs: Vec<Vec<f32>> = PACK.iter().map(|&n| rng.vec(n, -2.0, 2.0)).collect();
        let ms: Vec<Vec<f32>> = PACK.iter().map(|&n| rng.vec(n, -1.0, 1.0)).collect();
        let (mu, scale) = (rng.uniform(0.5, 0.99), rng.uniform(0.2, 1.0));
        let sentinel = vec![5.0f32; len];
        let run = |d: &Device, per: usize| {
            let tg: Vec<Tensor> = gs.iter().map(|g| f32s(d, &[g.len()], g)).collect();
            let tm: Vec<Tensor> = ms.iter().map(|m| f32s(d, &[m.len()], m)).collect();
            let (arena, clip) = (f32s(d, &[len], &sentinel), f32s(d, &[2], &[scale, 0.0]));
            let (g, m): (Vec<&Tensor>, Vec<&Tensor>) = (tg.iter().collect(), tm.iter().collect());
            mk::momentum_per(d, per, &g, &m, &clip, &arena, &offs, mu, nesterov).unwrap();
            (tm.iter().map(|t| read(d, t)).collect::<Vec<_>>(), read(d, &arena))
        };
        let (mc, ac) = run(&cpu, 1);
        for per in momentum_groupings(&cpu).into_iter().skip(1) {
            assert_eq!(run(&cpu, per), (mc.clone(), ac.clone()), "CPU, {per} per dispatch vs 1");
        }
        if let Some(g) = &gpu {
            for per in momentum_groupings(g) {
                let (mg, ag) = run(g, per);
                let what = format!("muon_momentum nesterov={nesterov} per={per}");
                for (k, (x, y)) in mg.iter().zip(&mc).enumerate() {
                    assert_close(&format!("{what} m{k}"), x, y, 1e-7, 1e-6);
                }
                assert_close(&format!("{what} arena"), &ag, &ac, 1e-7, 1e-6);
            }
        }
        // The formula, and the gaps untouched.
        let mut covered = vec![false; len];
        for (k, &o) in offs.iter().enumerate() {
            for i in [0, PACK[k] / 2, PACK[k] - 1] {
                let want_m = mu * ms[k][i] + gs[k][i] * scale;
                let want_o = if nesterov { gs[k][i] * scale + mu * want_m } else { want_m };
                assert!((mc[k][i] - want_m).abs() <= 1e-6 * (1.0 + want_m.abs()), "m {} vs {want_m}", mc[k][i]);
                assert!((ac[o + i] - want_o).abs() <= 1e-6 * (1.0 + want_o.abs()), "out {} vs {want_o}", ac[o + i]);
            }
            covered[o..o + PACK[k]].iter_mut().for_each(|c| *c = true);
        }
        assert!(ac.iter().zip(&covered).all(|(&v, &c)| c || v == 5.0), "a gap of the arena was written");
    }
}

#[test]
fn muon_unit_norm_matches_cpu_twin_and_gives_unit_norms() {
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    let (offs, len) = packed(&mut rng);
    let x = rng.vec(len, -3.0, 3.0);
    let regions: Vec<(usize, usize)> = offs.iter().zip(PACK).map(|(&o, n)| (o, n)).collect();
    let run = |d: &Device| {
        let seg = mk::Segments::new(d, &regions).unwrap();
        let (tx, partials) = (f32s(d, &[len], &x), Tensor::empty(d, &[seg.partials()], tigel::DType::F32).unwrap());
        mk::unit_norm(d, &seg, &tx, &partials, 1e-7).unwrap();
        read(d, &tx)
    };
    let b = run(&cpu);
    if let Some(g) = gpu() {
        assert_close("muon_normalize", &run(&g), &b, 0.0, 1e-6);
    }
    let mut covered = vec![false; len];
    for &(o, n) in &regions {
        let norm = b[o..o + n].iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "region at {o} of {n}: norm {norm}");
        covered[o..o + n].iter_mut().for_each(|c| *c = true);
    }
    assert!(b.iter().zip(&x).zip(&covered).all(|((v, w), &c)| c || v == w), "a gap of the arena was written");
    // Each region's scale is its own norm's: the same as one region at a time (the one-tensor sums).
    let (o, n) = regions[3];
    let (t, p) =
        (f32s(&cpu, &[n], &x[o..o + n]), Tensor::empty(&cpu, &[k::sumsq_layout(n).1], tigel::DType::F32).unwrap());
    let slots = k::sumsq_partial(&cpu, &t, &p, 0).unwrap();
    let s: f32 = read(&cpu, &p)[..slots].iter().fold(0.0, |s, &v| s + v);
    let want: Vec<f32> = x[o..o + n].iter().map(|&v| v * (1.0 / (s.sqrt() + 1e-7))).collect();
    assert_eq!(&b[o..o + n], &want[..], "region 3 against sumsq_partial's sums");
}

#[test]
fn muon_update_matches_cpu_twin_in_both_groupings() {
    let cpu = cpu();
    let gpu = gpu();
    let mut rng = Rng::new(seed());
    let (offs, len) = packed(&mut rng);
    let o = rng.vec(len, -1.0, 1.0);
    let ps: Vec<Vec<f32>> = PACK.iter().map(|&n| rng.vec(n, -1.0, 1.0)).collect();
    let step = 4;
    for wd in [0.0, 0.3] {
        let run = |d: &Device, per: usize| {
            let tp: Vec<Tensor> = ps.iter().map(|p| f32s(d, &[p.len()], p)).collect();
            let (arena, st) = (f32s(d, &[len], &o), k::step_counter(d, step).unwrap());
            let p: Vec<&Tensor> = tp.iter().collect();
            mk::update_per(d, per, &SCHED, wd, &p, &arena, &offs, &st).unwrap();
            tp.iter().map(|t| read(d, t)).collect::<Vec<_>>()
        };
        let c = run(&cpu, 1);
        for per in update_groupings(&cpu).into_iter().skip(1) {
            assert_eq!(run(&cpu, per), c, "CPU, {per} per dispatch vs 1");
        }
        if let Some(g) = &gpu {
            for per in update_groupings(g) {
                for (kk, (x, y)) in run(g, per).iter().zip(&c).enumerate() {
                    assert_close(&format!("muon_update wd={wd} per={per} p{kk}"), x, y, 1e-7, 1e-6);
                }
            }
        }
        let lr = SCHED.lr_at(step);
        for (kk, &at) in offs.iter().enumerate() {
            let i = PACK[kk] / 2;
            let want = ps[kk][i] - lr * (o[at + i] + wd * ps[kk][i]);
            assert!((c[kk][i] - want).abs() <= 1e-6 * (1.0 + want.abs()), "p{kk}: {} vs {want}", c[kk][i]);
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
    let (clip, arena) = (f32s(&dev, &[2], &[1.0, 0.0]), f32s(&dev, &[8], &[0.0; 8]));
    let e = mk::momentum(&dev, &[&x], &[&short], &clip, &arena, &[0], 0.9, true).unwrap_err().to_string();
    assert!(e.contains("muon_momentum"), "{e}");
    let e = mk::momentum(&dev, &[&x], &[&x], &clip, &arena, &[4], 0.9, true).unwrap_err().to_string();
    assert!(e.contains("arena elements 4..9 of 8"), "{e}");
    let st = k::step_counter(&dev, 0).unwrap();
    let e = mk::update_per(&dev, 3, &SCHED, 0.0, &[&x], &arena, &[0], &st).unwrap_err().to_string();
    assert!(e.contains("per dispatch"), "{e}");
}

fn refs(v: &[Tensor]) -> Vec<&Tensor> {
    v.iter().collect()
}

#[test]
fn muon_many_shapes_at_once_match_f64_reference_on_both_backends() {
    let mut rng = Rng::new(seed());
    let shapes: [[usize; 2]; 10] =
        [[24, 56], [40, 16], [30, 8], [16, 16], [8, 64], [64, 8], [33, 33], [1, 5], [5, 1], [70, 20]];
    let step = 6;
    let mats: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = shapes
        .iter()
        .map(|s| {
            let n = s[0] * s[1];
            (rng.vec(n, -0.5, 0.5), rng.vec(n, -1.0, 1.0), rng.vec(n, -0.3, 0.3))
        })
        .collect();
    let run = |d: &Device| {
        let t = |s: &[usize], v: &[f32]| f32s(d, s, v);
        let params: Vec<Tensor> = shapes.iter().zip(&mats).map(|(s, m)| t(s, &m.0)).collect();
        let grads: Vec<Tensor> = shapes.iter().zip(&mats).map(|(s, m)| t(s, &m.1)).collect();
        let moms: Vec<Tensor> = shapes.iter().zip(&mats).map(|(s, m)| t(s, &m.2)).collect();
        let sh: Vec<&[usize]> = shapes.iter().map(|s| &s[..]).collect();
        let muon = tigel::optim::muon::Muon::new(d, config(), SCHED, &sh).unwrap();
        let (st, clip) = (k::step_counter(d, step).unwrap(), f32s(d, &[2], &[1.0, 0.0]));
        muon.update(d, &refs(&params), &refs(&grads), &refs(&moms), &st, &clip).unwrap();
        (params.iter().map(|t| read(d, t)).collect::<Vec<_>>(), moms.iter().map(|t| read(d, t)).collect::<Vec<_>>())
    };
    let mut devices = vec![("CPU", cpu())];
    devices.extend(gpu().map(|g| ("GPU", g)));
    for (name, d) in &devices {
        let (after, moms) = run(d);
        for (i, (s, (p, g, m))) in shapes.iter().zip(&mats).enumerate() {
            let (want_p, want_m) = reference(p, g, m, s[0], s[1], step, &config());
            let delta: Vec<f32> = want_p.iter().zip(p).map(|(w, p)| w - p).collect();
            let big = delta.iter().fold(0f32, |a, v| a.max(v.abs()));
            let got: Vec<f32> = after[i].iter().zip(p).map(|(a, p)| a - p).collect();
            assert_close(&format!("{name}: matrix {i} {s:?} update"), &got, &delta, 2e-3 * big, 0.0);
            assert_close(&format!("{name}: matrix {i} momentum"), &moms[i], &want_m, 1e-7, 1e-6);
        }
    }
}
