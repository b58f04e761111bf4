//! Optim family: every kernel GPU vs CPU twin, the CPU twin (through `Optimizer`) vs an f64 reference
//! over 20 steps, a captured step replayed with the schedule advancing, global-norm clipping, a quadratic
//! minimised by each optimizer, and bad hyper-parameters.
//!
//! Tolerances, GPU vs CPU twin (the same formulas in the same order on both sides):
//! * advance_step: exact (integer add).
//! * sgd, ema, sumsq_partial, clip_scale, and Adam's m and v: 1e-6 relative, plus an absolute 1e-7 for
//!   the parameters. Each result is a handful of correctly rounded f32 operations (WGSL rounds +, -, *
//!   exactly; a driver may fuse a*b+c into one rounding, and / and sqrt may be off by a couple of ulp),
//!   so the two sides differ by a few ulp (u = 6e-8) of the operands. `p - lr * g` can cancel towards 0,
//!   where a few ulp of the O(1) operands is no longer small relative to the result: hence the
//!   absolute term at the operands' ulp scale.
//! * the learning-rate schedule: 1e-6 relative. Both sides evaluate the cosine with the same polynomial
//!   (the WGSL builtin only promises 2^-11 absolute error), so only a few roundings differ.
//! * adam's parameters: 1e-6 relative plus an absolute `ADAM_ATOL` = 1e-4 · lr. The bias corrections
//!   1 - β^t use the GPU's pow, which is exp2(t·log2 β) with a few ulp of error near 1; subtracting from 1
//!   multiplies that relative error by 1/(1 - β^t), up to 1/(1 - 0.999) = 1000 at t = 1, so bc2 may be
//!   off by ~1e-4 relatively (half of it after the sqrt). That error scales the update (|update| <= lr
//!   · ~1 for Adam), not the parameter, so the bound is on the step size.
//! * CPU twin vs the f64 reference over 20 steps: 1e-5 (absolute and relative), as asked; the f32
//!   roundings of 20 updates of size lr stay far below it.
mod common;
use common::*;
use tigel::ops::elementwise as ew;
use tigel::ops::optim::{self as k, AdamConfig, SgdConfig};
use tigel::optim::{Ema, Optimizer, OptimizerKind, Schedule};
use tigel::{DType, Device, Tensor};

const SIZES: [usize; 4] = [1, 7, 1000, 4099];

const COSINE: Schedule = Schedule::Cosine { lr: 0.05, warmup: 3, total: 20, min_lr: 0.005 };

fn f32s(d: &Device, shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_f32(d, shape, v).unwrap()
}

fn read(d: &Device, t: &Tensor) -> Vec<f32> {
    t.to_f32(d).unwrap()
}

// ---------------------------------------------------------------------------------------------------
// GPU vs CPU twin, kernel by kernel

#[test]
fn advance_step_matches_cpu_twin() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for by in [1u32, 3] {
        let start = rng.below(1 << 20) as u32;
        let run = |d: &Device| {
            let s = k::step_counter(d, start).unwrap();
            k::advance_step(d, &s, by).unwrap();
            k::advance_step(d, &s, by).unwrap();
            s.to_u32(d).unwrap()
        };
        assert_eq!(run(&gpu), vec![start + 2 * by]);
        assert_eq!(run(&cpu), vec![start + 2 * by]);
    }
}

/// Step indices that land in the warmup, the decay and past the end of `COSINE`.
fn steps(rng: &mut Rng) -> [u32; 3] {
    [rng.below(3) as u32, 3 + rng.below(17) as u32, 20 + rng.below(10) as u32]
}

#[test]
fn sgd_matches_cpu_twin() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    let cfgs = [
        SgdConfig { momentum: 0.0, dampening: 0.0, nesterov: false, weight_decay: 0.0 },
        SgdConfig { momentum: 0.0, dampening: 0.0, nesterov: false, weight_decay: 0.02 },
        SgdConfig { momentum: 0.9, dampening: 0.0, nesterov: false, weight_decay: 0.01 },
        SgdConfig { momentum: 0.9, dampening: 0.1, nesterov: false, weight_decay: 0.0 },
        SgdConfig { momentum: 0.8, dampening: 0.0, nesterov: true, weight_decay: 0.05 },
    ];
    for cfg in cfgs {
        for n in SIZES {
            for s in steps(&mut rng) {
                let p = rng.vec(n, -1.0, 1.0);
                let g = rng.vec(n, -2.0, 2.0);
                let m = rng.vec(n, -1.0, 1.0);
                let scale = rng.uniform(0.2, 1.0);
                let run = |d: &Device| {
                    let (tp, tg, tm) = (f32s(d, &[n], &p), f32s(d, &[n], &g), f32s(d, &[n], &m));
                    let step = k::step_counter(d, s).unwrap();
                    let clip = f32s(d, &[2], &[scale, 0.0]);
                    k::sgd(d, &COSINE, &cfg, &tp, &tg, Some(&tm), &step, &clip).unwrap();
                    (read(d, &tp), read(d, &tm))
                };
                let ((pg, mg), (pc, mc)) = (run(&gpu), run(&cpu));
                let what = format!("sgd {cfg:?} n={n} step={s}");
                assert_close(&format!("{what} param"), &pg, &pc, 1e-7, 1e-6);
                if cfg.momentum == 0.0 {
                    // Not touched: still the input.
                    assert_eq!(mg, m, "{what}: momentum buffer written with momentum 0");
                    assert_eq!(mc, m, "{what}: momentum buffer written with momentum 0 (cpu)");
                } else {
                    assert_close(&format!("{what} momentum"), &mg, &mc, 0.0, 1e-6);
                }
            }
        }
    }
}

const ADAM_LR: f32 = 0.01;
const ADAM_ATOL: f32 = 1e-4 * ADAM_LR;

#[test]
fn adam_matches_cpu_twin() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    let sched = Schedule::Cosine { lr: ADAM_LR, warmup: 3, total: 20, min_lr: 0.001 };
    let cfgs = [
        AdamConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false },
        AdamConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, decoupled: false },
        AdamConfig { beta1: 0.8, beta2: 0.95, eps: 1e-6, weight_decay: 0.1, decoupled: true },
        AdamConfig { beta1: 0.0, beta2: 0.99, eps: 1e-8, weight_decay: 0.0, decoupled: true },
    ];
    for cfg in cfgs {
        for n in SIZES {
            for s in steps(&mut rng) {
                let p = rng.vec(n, -1.0, 1.0);
                let g = rng.vec(n, -2.0, 2.0);
                let m = rng.vec(n, -0.5, 0.5);
                let v = rng.vec(n, 0.01, 1.0);
                let scale = rng.uniform(0.2, 1.0);
                let run = |d: &Device| {
                    let (tp, tg) = (f32s(d, &[n], &p), f32s(d, &[n], &g));
                    let (tm, tv) = (f32s(d, &[n], &m), f32s(d, &[n], &v));
                    let step = k::step_counter(d, s).unwrap();
                    let clip = f32s(d, &[2], &[scale, 0.0]);
                    k::adam(d, &sched, &cfg, &tp, &tg, &tm, &tv, &step, &clip).unwrap();
                    (read(d, &tp), read(d, &tm), read(d, &tv))
                };
                let ((pg, mg, vg), (pc, mc, vc)) = (run(&gpu), run(&cpu));
                let what = format!("adam {cfg:?} n={n} step={s}");
                assert_close(&format!("{what} param"), &pg, &pc, ADAM_ATOL, 1e-6);
                assert_close(&format!("{what} m"), &mg, &mc, 0.0, 1e-6);
                assert_close(&format!("{what} v"), &vg, &vc, 0.0, 1e-6);
            }
        }
    }
}

#[test]
fn sumsq_partial_and_clip_scale_match_cpu_twin() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    // One tensor past MIN_CHUNK * MAX_SLOTS_PER_TENSOR, so its chunks grow past the minimum.
    let big = k::MIN_CHUNK * k::MAX_SLOTS_PER_TENSOR + 2049;
    assert!(k::sumsq_layout(big).0 > k::MIN_CHUNK);
    let sizes: Vec<usize> = SIZES.iter().copied().chain([big]).collect();
    let xs: Vec<Vec<f32>> = sizes.iter().map(|&n| rng.vec(n, -1.0, 1.0)).collect();
    let total_slots: usize = sizes.iter().map(|&n| k::sumsq_layout(n).1).sum();
    let first = 3; // slots before `first` belong to nobody: checks the slot offset
    for max_norm in [1.0f32, 1e6] {
        let run = |d: &Device| {
            let partials = Tensor::empty(d, &[first + total_slots], DType::F32).unwrap();
            let mut slot = first;
            for (x, &n) in xs.iter().zip(&sizes) {
                slot += k::sumsq_partial(d, &f32s(d, &[n], x), &partials, slot).unwrap();
            }
            assert_eq!(slot, first + total_slots);
            let clip = k::clip_buffer(d).unwrap();
            // Reads the first slots too: fill them with zeros for this check.
            let padded = Tensor::empty(d, &[first + total_slots], DType::F32).unwrap();
            let mut words = vec![0f32; first];
            words.extend_from_slice(&read(d, &partials)[first..]);
            d.write(&padded.buf, &words).unwrap();
            k::clip_scale(d, &padded, first + total_slots, max_norm, &clip).unwrap();
            (read(d, &partials)[first..].to_vec(), read(d, &clip))
        };
        let ((pg, cg), (pc, cc)) = (run(&gpu), run(&cpu));
        assert_close(&format!("partials max_norm={max_norm}"), &pg, &pc, 0.0, 1e-6);
        assert_close(&format!("clip max_norm={max_norm}"), &cg, &cc, 0.0, 1e-6);
        // The twin's partials against f64 sums of each chunk.
        let mut at = 0;
        for (x, &n) in xs.iter().zip(&sizes) {
            let (chunk, slots) = k::sumsq_layout(n);
            for w in 0..slots {
                let want: f64 = x[w * chunk..((w + 1) * chunk).min(n)].iter().map(|&v| (v as f64).powi(2)).sum();
                let got = pc[at + w] as f64;
                assert!((got - want).abs() <= 1e-6 * want, "partial {w} of n={n}: {got} vs {want}");
            }
            at += slots;
        }
    }
}

#[test]
fn ema_matches_cpu_twin() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for warmup in [false, true] {
        for n in SIZES {
            let s = rng.below(200) as u32;
            let decay = rng.uniform(0.9, 0.999);
            let (a, p) = (rng.vec(n, -1.0, 1.0), rng.vec(n, -1.0, 1.0));
            let run = |d: &Device| {
                let (ta, tp) = (f32s(d, &[n], &a), f32s(d, &[n], &p));
                k::ema(d, &ta, &tp, &k::step_counter(d, s).unwrap(), decay, warmup).unwrap();
                read(d, &ta)
            };
            let (g, c) = (run(&gpu), run(&cpu));
            assert_close(&format!("ema warmup={warmup} n={n} step={s}"), &g, &c, 1e-7, 1e-6);
            // And the twin against the formula in f64.
            let dt = if warmup { (decay as f64).min((1.0 + s as f64) / (10.0 + s as f64)) } else { decay as f64 };
            let want: Vec<f32> =
                a.iter().zip(&p).map(|(&a, &p)| (dt * a as f64 + (1.0 - dt) * p as f64) as f32).collect();
            assert_close(&format!("ema twin vs f64 warmup={warmup} n={n}"), &c, &want, 1e-6, 1e-6);
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Learning-rate schedules

fn ref_lr(s: &Schedule, step: u32) -> f64 {
    match *s {
        Schedule::Constant { lr } => lr as f64,
        Schedule::Linear { lr, warmup, total, min_lr }
        | Schedule::Cosine { lr, warmup, total, min_lr }
        | Schedule::Wsd { lr, warmup, total, min_lr, .. } => {
            let (lr, min_lr) = (lr as f64, min_lr as f64);
            if step < warmup {
                return lr * (step + 1) as f64 / warmup as f64;
            }
            // Warmup-stable-decay: lr until `hold`, then the linear decay over the rest.
            let start = if let Schedule::Wsd { hold, .. } = *s { hold.max(warmup) } else { warmup };
            if step < start {
                return lr;
            }
            let span = total.saturating_sub(start) as f64;
            let p = if span == 0.0 { 1.0 } else { ((step - start) as f64 / span).clamp(0.0, 1.0) };
            let f = match s {
                Schedule::Linear { .. } | Schedule::Wsd { .. } => 1.0 - p,
                _ => 0.5 * (1.0 + (std::f64::consts::PI * p).cos()),
            };
            min_lr + (lr - min_lr) * f
        }
    }
}

const SCHEDULES: [Schedule; 10] = [
    Schedule::Constant { lr: 0.1 },
    Schedule::Linear { lr: 0.1, warmup: 0, total: 20, min_lr: 0.0 },
    Schedule::Linear { lr: 0.1, warmup: 3, total: 20, min_lr: 0.01 },
    Schedule::Linear { lr: 0.1, warmup: 5, total: 20, min_lr: 0.1 },
    Schedule::Cosine { lr: 0.1, warmup: 3, total: 20, min_lr: 0.0 },
    Schedule::Cosine { lr: 0.3, warmup: 0, total: 17, min_lr: 0.003 },
    Schedule::Cosine { lr: 0.1, warmup: 4, total: 4, min_lr: 0.02 },
    Schedule::Wsd { lr: 0.1, warmup: 3, hold: 12, total: 20, min_lr: 0.01 },
    Schedule::Wsd { lr: 0.1, warmup: 0, hold: 25, total: 25, min_lr: 0.0 },
    Schedule::Wsd { lr: 0.1, warmup: 6, hold: 2, total: 18, min_lr: 0.0 },
];

#[test]
fn schedule_twin_matches_f64_formula() {
    for s in SCHEDULES {
        for step in 0..30 {
            let (got, want) = (s.lr_at(step) as f64, ref_lr(&s, step));
            // A few f32 roundings; near the end of a decay to 0 the value is itself tiny.
            assert!((got - want).abs() <= 1e-6 * want.abs() + 1e-9, "{s:?} step {step}: {got} vs {want}");
        }
    }
}

/// The learning rate the kernels compute at `step`: one SGD step (no momentum, no decay) from p = 0 with
/// gradient 1 leaves p = -lr.
fn kernel_lrs(d: &Device, s: &Schedule, steps: u32) -> Vec<f32> {
    let cfg = SgdConfig { momentum: 0.0, dampening: 0.0, nesterov: false, weight_decay: 0.0 };
    let n = steps as usize;
    let ones = f32s(d, &[1], &[1.0]);
    let clip = k::clip_buffer(d).unwrap();
    let step = k::step_counter(d, 0).unwrap();
    let ps: Vec<Tensor> = (0..n).map(|_| f32s(d, &[1], &[0.0])).collect();
    for p in &ps {
        k::sgd(d, s, &cfg, p, &ones, None, &step, &clip).unwrap();
        k::advance_step(d, &step, 1).unwrap();
    }
    ps.iter().map(|p| -read(d, p)[0]).collect()
}

#[test]
fn schedule_in_kernels_matches_host() {
    let cpu = cpu();
    let gpu = gpu();
    for s in SCHEDULES {
        let host: Vec<f32> = (0..30).map(|i| s.lr_at(i)).collect();
        assert_eq!(kernel_lrs(&cpu, &s, 30), host, "{s:?}: cpu kernel vs Schedule::lr_at");
        if let Some(gpu) = &gpu {
            assert_close(&format!("{s:?}: gpu kernel vs host"), &kernel_lrs(gpu, &s, 30), &host, 0.0, 1e-6);
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// f64 reference optimizer

struct RefOpt {
    kind: OptimizerKind,
    sched: Schedule,
    clip: Option<f32>,
    p: Vec<Vec<f64>>,
    s1: Vec<Vec<f64>>,
    s2: Vec<Vec<f64>>,
    step: u32,
    last_norm: f64,
}

impl RefOpt {
    fn new(kind: OptimizerKind, sched: Schedule, clip: Option<f32>, p: &[Vec<f32>]) -> RefOpt {
        let p: Vec<Vec<f64>> = p.iter().map(|t| t.iter().map(|&v| v as f64).collect()).collect();
        let z: Vec<Vec<f64>> = p.iter().map(|t| vec![0.0; t.len()]).collect();
        RefOpt { kind, sched, clip, s1: z.clone(), s2: z, p, step: 0, last_norm: 0.0 }
    }

    fn step(&mut self, grads: &[Vec<f32>]) {
        let lr = ref_lr(&self.sched, self.step);
        let norm = grads.iter().flatten().map(|&g| (g as f64).powi(2)).sum::<f64>().sqrt();
        self.last_norm = norm;
        let scale = match self.clip {
            Some(mx) => (mx as f64 / (norm + 1e-6)).min(1.0),
            None => 1.0,
        };
        let t = (self.step + 1) as i32;
        for (ti, g) in grads.iter().enumerate() {
            for (i, &gi) in g.iter().enumerate() {
                let p = &mut self.p[ti][i];
                let mut g = gi as f64 * scale;
                match self.kind {
                    OptimizerKind::Sgd { momentum, nesterov, weight_decay } => {
                        let (mo, wd) = (momentum as f64, weight_decay as f64);
                        g += wd * *p;
                        if mo != 0.0 {
                            let b = &mut self.s1[ti][i];
                            *b = mo * *b + g;
                            g = if nesterov { g + mo * *b } else { *b };
                        }
                        *p -= lr * g;
                    }
                    OptimizerKind::Adam { beta1, beta2, eps, weight_decay }
                    | OptimizerKind::AdamW { beta1, beta2, eps, weight_decay } => {
                        let (b1, b2, eps, wd) = (beta1 as f64, beta2 as f64, eps as f64, weight_decay as f64);
                        if matches!(self.kind, OptimizerKind::AdamW { .. }) {
                            *p *= 1.0 - lr * wd;
                        } else {
                            g += wd * *p;
                        }
                        let m = &mut self.s1[ti][i];
                        *m = b1 * *m + (1.0 - b1) * g;
                        let v = &mut self.s2[ti][i];
                        *v = b2 * *v + (1.0 - b2) * g * g;
                        let mhat = *m / (1.0 - b1.powi(t));
                        let vhat = *v / (1.0 - b2.powi(t));
                        *p -= lr * mhat / (vhat.sqrt() + eps);
                    }
                    OptimizerKind::Muon(_) => {
                        unreachable!("an element-wise reference; tests/kernels_muon.rs checks Muon")
                    }
                }
            }
        }
        self.step += 1;
    }

    fn params_f32(&self, ti: usize) -> Vec<f32> {
        self.p[ti].iter().map(|&v| v as f32).collect()
    }
}

fn kinds() -> [OptimizerKind; 5] {
    [
        OptimizerKind::Sgd { momentum: 0.0, nesterov: false, weight_decay: 0.01 },
        OptimizerKind::Sgd { momentum: 0.9, nesterov: false, weight_decay: 0.01 },
        OptimizerKind::Sgd { momentum: 0.9, nesterov: true, weight_decay: 0.05 },
        OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 },
        OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 },
    ]
}

fn is_adam(kind: &OptimizerKind) -> bool {
    !matches!(kind, OptimizerKind::Sgd { .. })
}

/// The schedule used against the reference: warmup 3, cosine to step 20 (smaller lr for Adam, whose
/// update is ~lr per element whatever the gradient's size).
fn sched_for(kind: &OptimizerKind) -> Schedule {
    let lr = if is_adam(kind) { 0.01 } else { 0.05 };
    Schedule::Cosine { lr, warmup: 3, total: 20, min_lr: lr / 10.0 }
}

/// Gradients of step `i`: alternately small and large, so a clip of 2.5 applies on some steps only.
fn grads_at(rng: &mut Rng, sizes: &[usize], i: usize) -> Vec<Vec<f32>> {
    let amp = if i & 1 == 0 { 0.3 } else { 3.0 };
    sizes.iter().map(|&n| rng.vec(n, -amp, amp)).collect()
}

const TENSORS: [usize; 2] = [7, 33];
const CLIP: f32 = 2.5;

#[test]
fn cpu_twin_matches_f64_reference_over_20_steps() {
    let dev = cpu();
    let mut rng = Rng::new(seed());
    for kind in kinds() {
        for clip in [None, Some(CLIP)] {
            let sched = sched_for(&kind);
            let p0: Vec<Vec<f32>> = TENSORS.iter().map(|&n| rng.vec(n, -1.0, 1.0)).collect();
            let ps: Vec<Tensor> = p0.iter().zip(TENSORS).map(|(v, n)| f32s(&dev, &[n], v)).collect();
            let pr: Vec<&Tensor> = ps.iter().collect();
            let opt = Optimizer::new(&dev, kind, sched, clip, &pr).unwrap();
            let mut reference = RefOpt::new(kind, sched, clip, &p0);
            let (mut clipped, mut unclipped) = (0, 0);
            for i in 0..20 {
                let g = grads_at(&mut rng, &TENSORS, i);
                let gs: Vec<Tensor> = g.iter().zip(TENSORS).map(|(v, n)| f32s(&dev, &[n], v)).collect();
                opt.step(&dev, &pr, &gs.iter().collect::<Vec<_>>()).unwrap();
                reference.step(&g);
                for (ti, p) in ps.iter().enumerate() {
                    let what = format!("{kind:?} clip={clip:?} step {i} tensor {ti}");
                    assert_close(&what, &read(&dev, p), &reference.params_f32(ti), 1e-5, 1e-5);
                }
                let c = read(&dev, opt.clip_tensor());
                if clip.is_some() {
                    assert!((c[1] as f64 - reference.last_norm).abs() <= 1e-5 * reference.last_norm, "norm {c:?}");
                    if reference.last_norm > CLIP as f64 {
                        clipped += 1;
                        assert!(c[0] < 1.0, "step {i}: norm {} over {CLIP} but scale {}", c[1], c[0]);
                    } else {
                        unclipped += 1;
                        assert_eq!(c[0], 1.0, "step {i}: norm {} under {CLIP} but scale {}", c[1], c[0]);
                    }
                } else {
                    assert_eq!(c, vec![1.0, 0.0], "clipping off leaves the clip buffer alone");
                }
            }
            if clip.is_some() {
                assert!(clipped > 0 && unclipped > 0, "clipped {clipped}, unclipped {unclipped}");
            }
            assert_eq!(opt.current_step(&dev).unwrap(), 20);
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Captured step, replayed

/// Captures one step (clip + update + advance_step) once and replays it 10 times with fresh gradients
/// written into the same buffers; the parameters follow the f64 reference at every step.
fn replay_follows_reference(dev: &Device, rng: &mut Rng) {
    for kind in kinds() {
        let sched =
            Schedule::Cosine { lr: if is_adam(&kind) { 0.01 } else { 0.05 }, warmup: 3, total: 10, min_lr: 0.0 };
        let p0: Vec<Vec<f32>> = TENSORS.iter().map(|&n| rng.vec(n, -1.0, 1.0)).collect();
        let ps: Vec<Tensor> = p0.iter().zip(TENSORS).map(|(v, n)| f32s(dev, &[n], v)).collect();
        let gs: Vec<Tensor> = TENSORS.iter().map(|&n| f32s(dev, &[n], &vec![0.0; n])).collect();
        let (pr, gr): (Vec<&Tensor>, Vec<&Tensor>) = (ps.iter().collect(), gs.iter().collect());
        let opt = Optimizer::new(dev, kind, sched, Some(CLIP), &pr).unwrap();
        let ((), rec) = dev.capture(|| opt.step(dev, &pr, &gr)).unwrap();
        // sumsq per group of up to `sumsq_per_dispatch` tensors and the update per group of up to SLOTS
        // (per tensor where the device cannot bind a multi-tensor kernel), clip_scale, advance_step.
        let groups = if tigel::ops::optim_multi::supported(dev) {
            TENSORS.len().div_ceil(tigel::ops::optim_multi::sumsq_per_dispatch(dev))
                + TENSORS.len().div_ceil(tigel::kernels::optim::SLOTS)
        } else {
            2 * TENSORS.len()
        };
        assert_eq!(rec.len(), groups + 2, "{kind:?}: {rec:?}");
        let mut reference = RefOpt::new(kind, sched, Some(CLIP), &p0);
        for i in 0..10 {
            let g = grads_at(rng, &TENSORS, i);
            for (t, v) in gs.iter().zip(&g) {
                dev.write(&t.buf, v).unwrap();
            }
            let before = dev.stats();
            dev.replay(&rec).unwrap();
            let after = dev.stats();
            if !dev.is_cpu() {
                assert_eq!(after.submissions - before.submissions, 1, "{kind:?} step {i}: submissions per replay");
            }
            assert_eq!(after.blocking_waits, before.blocking_waits, "{kind:?} step {i}: replay waited");
            reference.step(&g);
            for (ti, p) in ps.iter().enumerate() {
                let what = format!("{} {kind:?} replay {i} tensor {ti}", dev.backend_name());
                assert_close(&what, &read(dev, p), &reference.params_f32(ti), 1e-5, 1e-5);
            }
        }
        assert_eq!(opt.current_step(dev).unwrap(), 10);
    }
}

#[test]
fn captured_step_replays_with_the_schedule_advancing_cpu() {
    replay_follows_reference(&cpu(), &mut Rng::new(seed()));
}

#[test]
fn captured_step_replays_with_the_schedule_advancing_gpu() {
    let Some(gpu) = gpu() else { return };
    replay_follows_reference(&gpu, &mut Rng::new(seed()));
}

/// EMA inside the captured step, between the update and the step counter's increment.
fn ema_in_captured_step(dev: &Device, rng: &mut Rng) {
    let n = 37;
    let p0 = rng.vec(n, -1.0, 1.0);
    let p = f32s(dev, &[n], &p0);
    let g = f32s(dev, &[n], &vec![0.0; n]);
    let kind = OptimizerKind::Sgd { momentum: 0.9, nesterov: false, weight_decay: 0.0 };
    let sched = Schedule::Constant { lr: 0.1 };
    let opt = Optimizer::new(dev, kind, sched, None, &[&p]).unwrap();
    let ema = Ema::new(dev, &[&p], 0.99, true).unwrap();
    let ((), rec) = dev
        .capture(|| {
            opt.update(dev, &[&p], &[&g])?;
            ema.update(dev, &[&p], opt.step_tensor())?;
            opt.advance(dev)
        })
        .unwrap();
    let mut reference = RefOpt::new(kind, sched, None, std::slice::from_ref(&p0));
    let mut avg: Vec<f64> = p0.iter().map(|&v| v as f64).collect();
    for s in 0..8u32 {
        let gv = rng.vec(n, -1.0, 1.0);
        dev.write(&g.buf, &gv).unwrap();
        dev.replay(&rec).unwrap();
        reference.step(&[gv]);
        let d = 0.99f64.min((1.0 + s as f64) / (10.0 + s as f64));
        for (a, &pv) in avg.iter_mut().zip(&reference.p[0]) {
            *a = d * *a + (1.0 - d) * pv;
        }
        let want: Vec<f32> = avg.iter().map(|&v| v as f32).collect();
        assert_close(&format!("{} ema step {s}", dev.backend_name()), &read(dev, &ema.tensors()[0]), &want, 1e-5, 1e-5);
    }
    assert_eq!(ema.state_tensors(&["w"])[0].0, "ema.w");
}

#[test]
fn ema_in_captured_step_follows_reference() {
    let mut rng = Rng::new(seed());
    ema_in_captured_step(&cpu(), &mut rng);
    if let Some(gpu) = gpu() {
        ema_in_captured_step(&gpu, &mut rng);
    }
}

// ---------------------------------------------------------------------------------------------------
// Clipping

fn clipping_on(dev: &Device, rng: &mut Rng) {
    let sizes = [1usize, 7, 1000, 4099];
    let xs: Vec<Vec<f32>> = sizes.iter().map(|&n| rng.vec(n, -1.0, 1.0)).collect();
    let norm = xs.iter().flatten().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
    let ts: Vec<Tensor> = xs.iter().zip(sizes).map(|(v, n)| f32s(dev, &[n], v)).collect();
    let slots: usize = sizes.iter().map(|&n| k::sumsq_layout(n).1).sum();
    let partials = Tensor::empty(dev, &[slots], DType::F32).unwrap();
    for (factor, applies) in [(2.0, false), (1.0 + 1e-3, false), (1.0 - 1e-3, true), (1.0 / 3.0, true)] {
        let max_norm = (norm * factor) as f32;
        let mut slot = 0;
        for t in &ts {
            slot += k::sumsq_partial(dev, t, &partials, slot).unwrap();
        }
        let clip = k::clip_buffer(dev).unwrap();
        k::clip_scale(dev, &partials, slot, max_norm, &clip).unwrap();
        let c = read(dev, &clip);
        let what = format!("{} max_norm = {factor} * norm", dev.backend_name());
        // The f32 norm: 256-way strided partials and trees, ~20 roundings deep.
        assert!((c[1] as f64 - norm).abs() <= 2e-6 * norm, "{what}: norm {} vs f64 {norm}", c[1]);
        if applies {
            let want = max_norm as f64 / (norm + 1e-6);
            assert!((c[0] as f64 - want).abs() <= 2e-6 * want, "{what}: scale {} vs {want}", c[0]);
        } else {
            assert_eq!(c[0], 1.0, "{what}: scale applied under max_norm");
        }
    }
}

#[test]
fn global_norm_over_several_tensors_matches_f64() {
    let mut rng = Rng::new(seed());
    clipping_on(&cpu(), &mut rng);
    if let Some(gpu) = gpu() {
        clipping_on(&gpu, &mut rng);
    }
}

// ---------------------------------------------------------------------------------------------------
// A quadratic, minimised

/// f(p) = ½‖p - target‖², gradient p - target computed inside the captured step.
fn quadratic_converges(dev: &Device, rng: &mut Rng) {
    let n = 64;
    let steps = 200;
    let setups = [
        (OptimizerKind::Sgd { momentum: 0.0, nesterov: false, weight_decay: 0.0 }, 0.2, None),
        (OptimizerKind::Sgd { momentum: 0.9, nesterov: false, weight_decay: 0.0 }, 0.1, Some(5.0)),
        (OptimizerKind::Sgd { momentum: 0.9, nesterov: true, weight_decay: 0.0 }, 0.1, None),
        (OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }, 0.1, Some(1.0)),
        (OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-4 }, 0.1, None),
    ];
    for (kind, lr, clip) in setups {
        let target_v = rng.vec(n, -2.0, 2.0);
        let p0 = rng.vec(n, -2.0, 2.0);
        let target = f32s(dev, &[n], &target_v);
        let p = f32s(dev, &[n], &p0);
        let sched = Schedule::Cosine { lr, warmup: 10, total: steps, min_lr: 0.0 };
        let opt = Optimizer::new(dev, kind, sched, clip, &[&p]).unwrap();
        let ((), rec) = dev
            .capture(|| {
                let g = ew::sub(dev, &p, &target)?;
                opt.step(dev, &[&p], &[&g])
            })
            .unwrap();
        let dist = |v: &[f32]| v.iter().zip(&target_v).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
        let d0 = dist(&p0);
        for _ in 0..steps {
            dev.replay(&rec).unwrap();
        }
        let d1 = dist(&read(dev, &p));
        // AdamW's decay pulls towards 0 by ~lr·wd·|p| per step: a small bias, well under this bound.
        assert!(d1 < 1e-3 * d0, "{} {kind:?}: distance {d0} -> {d1} after {steps} steps", dev.backend_name());
    }
}

#[test]
fn quadratic_is_minimised_by_each_optimizer() {
    let mut rng = Rng::new(seed());
    quadratic_converges(&cpu(), &mut rng);
    if let Some(gpu) = gpu() {
        quadratic_converges(&gpu, &mut rng);
    }
}

// ---------------------------------------------------------------------------------------------------
// State, resuming, errors

#[test]
fn set_step_resumes_the_schedule_and_state_is_named() {
    let dev = cpu();
    let p = f32s(&dev, &[3], &[0.0; 3]);
    let g = f32s(&dev, &[3], &[1.0; 3]);
    let sched = Schedule::Linear { lr: 0.1, warmup: 2, total: 10, min_lr: 0.0 };
    let opt = Optimizer::new(
        &dev,
        OptimizerKind::Sgd { momentum: 0.0, nesterov: false, weight_decay: 0.0 },
        sched,
        None,
        &[&p],
    )
    .unwrap();
    opt.set_step(&dev, 6).unwrap();
    opt.step(&dev, &[&p], &[&g]).unwrap();
    assert_eq!(read(&dev, &p), vec![-opt.lr_at(6); 3]);
    assert_eq!(opt.lr_at(6), sched.lr_at(6));
    assert_eq!(opt.current_step(&dev).unwrap(), 7);
    let names: Vec<String> = opt.state_tensors().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec!["step"]);

    let adam = OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
    let q = f32s(&dev, &[2, 2], &[0.0; 4]);
    let opt = Optimizer::new(&dev, adam, sched, Some(1.0), &[&p, &q]).unwrap();
    let state = opt.state_tensors();
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec!["step", "0.m", "0.v", "1.m", "1.v"]);
    assert_eq!(state[3].1.shape, vec![2, 2]);
    assert_eq!(read(&dev, &state[4].1), vec![0.0; 4], "state starts at zero");
    let sgd = OptimizerKind::Sgd { momentum: 0.5, nesterov: true, weight_decay: 0.0 };
    let opt = Optimizer::new(&dev, sgd, sched, None, &[&p]).unwrap();
    let names: Vec<String> = opt.state_tensors().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec!["step", "0.momentum"]);
}

fn err<T: std::fmt::Debug>(r: tigel::Result<T>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn bad_hyper_parameters_are_clear_errors() {
    let dev = Device::cpu();
    let p = f32s(&dev, &[3], &[0.0; 3]);
    let sgd = OptimizerKind::Sgd { momentum: 0.9, nesterov: false, weight_decay: 0.0 };
    let adam = |beta1, beta2, eps, weight_decay| OptimizerKind::Adam { beta1, beta2, eps, weight_decay };
    let ok = Schedule::Constant { lr: 0.1 };
    let new = |kind, sched, clip| err(Optimizer::new(&dev, kind, sched, clip, &[&p]));
    let cases: Vec<(String, &[&str])> = vec![
        (new(sgd, Schedule::Constant { lr: -0.1 }, None), &["lr = -0.1"]),
        (new(sgd, Schedule::Constant { lr: f32::NAN }, None), &["lr = NaN"]),
        (
            new(sgd, Schedule::Cosine { lr: 0.1, warmup: 30, total: 20, min_lr: 0.0 }, None),
            &["warmup = 30", "total = 20"],
        ),
        (new(sgd, Schedule::Linear { lr: 0.1, warmup: 0, total: 20, min_lr: 0.5 }, None), &["min_lr = 0.5"]),
        (new(sgd, Schedule::Linear { lr: 0.1, warmup: 0, total: 20, min_lr: -1.0 }, None), &["min_lr = -1"]),
        (new(sgd, Schedule::Wsd { lr: 0.1, warmup: 0, hold: 21, total: 20, min_lr: 0.0 }, None), &["hold = 21"]),
        (new(adam(1.0, 0.999, 1e-8, 0.0), ok, None), &["beta1 = 1", "[0, 1)"]),
        (new(adam(-0.1, 0.999, 1e-8, 0.0), ok, None), &["beta1 = -0.1"]),
        (new(adam(0.9, 1.5, 1e-8, 0.0), ok, None), &["beta2 = 1.5"]),
        (new(adam(0.9, 0.999, 0.0, 0.0), ok, None), &["eps = 0"]),
        (new(adam(0.9, 0.999, -1e-8, 0.0), ok, None), &["eps = -0.00000001"]),
        (new(adam(0.9, 0.999, 1e-8, -0.1), ok, None), &["weight_decay = -0.1"]),
        (new(OptimizerKind::Sgd { momentum: 1.5, nesterov: false, weight_decay: 0.0 }, ok, None), &["momentum = 1.5"]),
        (
            new(OptimizerKind::Sgd { momentum: 0.0, nesterov: true, weight_decay: 0.0 }, ok, None),
            &["nesterov", "momentum = 0"],
        ),
        (new(sgd, ok, Some(0.0)), &["max_norm = 0"]),
        (new(sgd, ok, Some(f32::INFINITY)), &["max_norm = inf"]),
        (err(Ema::new(&dev, &[&p], 1.5, false)), &["decay = 1.5"]),
    ];
    for (msg, wants) in &cases {
        for w in *wants {
            assert!(msg.contains(w), "`{msg}` should mention `{w}`");
        }
    }

    let opt = Optimizer::new(&dev, sgd, ok, Some(1.0), &[&p]).unwrap();
    let g3 = f32s(&dev, &[3], &[0.0; 3]);
    let g4 = f32s(&dev, &[4], &[0.0; 4]);
    let e = err(opt.step(&dev, &[&p], &[&g4]));
    assert!(e.contains("[3]") && e.contains("[4]"), "{e}");
    let e = err(opt.step(&dev, &[&p, &p], &[&g3, &g3]));
    assert!(e.contains("1 parameter tensors") && e.contains("got 2"), "{e}");
    let e = err(opt.step(&dev, &[&p], &[]));
    assert!(e.contains("0 gradients"), "{e}");
    let q4 = f32s(&dev, &[4], &[0.0; 4]);
    let e = err(opt.step(&dev, &[&q4], &[&g4]));
    assert!(e.contains("[3]") && e.contains("[4]"), "{e}");
    let u = Tensor::from_u32(&dev, &[3], &[0; 3]).unwrap();
    let e = err(opt.step(&dev, &[&p], &[&u]));
    assert!(e.contains("u32"), "{e}");

    // Host writes are not recordable: set_step and new refuse inside a capture.
    let e = err(dev.capture(|| opt.set_step(&dev, 3)));
    assert!(e.contains("set_step"), "{e}");
    let e = err(dev.capture(|| Optimizer::new(&dev, sgd, ok, None, &[&p])));
    assert!(e.contains("before capture"), "{e}");

    // Low-level ops check their buffers.
    let step = k::step_counter(&dev, 0).unwrap();
    let clip = k::clip_buffer(&dev).unwrap();
    let cfg = SgdConfig { momentum: 0.9, dampening: 0.0, nesterov: false, weight_decay: 0.0 };
    let e = err(k::sgd(&dev, &ok, &cfg, &p, &g3, None, &step, &clip));
    assert!(e.contains("momentum buffer"), "{e}");
    let e = err(k::sgd(&dev, &ok, &cfg, &p, &g3, Some(&g4), &step, &clip));
    assert!(e.contains("[3]") && e.contains("[4]"), "{e}");
    let e = err(k::sgd(&dev, &ok, &cfg, &p, &g3, Some(&g3), &clip, &clip));
    assert!(e.contains("u32"), "{e}");
    let e = err(k::sgd(&dev, &ok, &cfg, &p, &g3, Some(&g3), &step, &p));
    assert!(e.contains("clip buffer") && e.contains("[3]"), "{e}");
    let partials = Tensor::empty(&dev, &[1], DType::F32).unwrap();
    let e = err(k::clip_scale(&dev, &partials, 1, -1.0, &clip));
    assert!(e.contains("max_norm = -1"), "{e}");
    let e = err(k::sumsq_partial(&dev, &p, &partials, 1));
    assert!(e.contains("slots 1..2"), "{e}");
}
