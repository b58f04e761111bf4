//! Diffusion family: noise schedules, q_sample, timestep embedding, DDPM and DDIM steps, v-prediction
//! conversions. GPU vs CPU twin, the CPU twin against f64 references of the published formulas, the random
//! streams against their definition, replays of a recorded training step, statistics and bad input.
//!
//! Tolerances (GPU vs CPU):
//! * random numbers (q_sample's t and eps) and the timestep embedding: bit for bit. Both are integer
//!   arithmetic with exact conversions to f32 (Philox; fixed-point cosines).
//! * schedule, q_sample's xt, v conversions: atol 1e-5 + rtol 1e-5 (alpha_bar: rtol 1e-5, atol 1e-30 for
//!   the subnormal tail). ddpm_step and ddim_step: 1e-5 of the magnitude of the terms they sum (plus 1e-7),
//!   since x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar) scales by up to 1 / sqrt(abar_t) and may cancel.
//!   These use f32 division and sqrt, which WGSL allows a few ulp (about 3e-7 relative), and a driver may
//!   fuse a multiply-add; a handful of such roundings stays far below 1e-5, while a wrong index, schedule
//!   value or formula term is off by far more. (On lavapipe the results are in fact identical.)
//!
//! Against f64 references (CPU twin): betas within 2e-6 and alpha_bar within 1e-5 relative, the step
//! formulas within 8 f32 roundings of their terms; the embedding within 1.5e-7 of the exact cos/sin
//! (fixed-point error about 1e-9 plus the f32 rounding, at most 6e-8).
mod common;
use common::*;
use tigel::ops::diffusion::{self as df, QSample, Schedule, ScheduleTensors};
use tigel::ops::optim::{advance_step, step_counter};
use tigel::ops::rng;
use tigel::{DType, Device, Tensor};

fn bits_of(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn devices() -> Vec<Device> {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    devs
}

fn read(d: &Device, s: &ScheduleTensors) -> [Vec<f32>; 3] {
    [s.betas.to_f32(d).unwrap(), s.alphas.to_f32(d).unwrap(), s.alpha_bar.to_f32(d).unwrap()]
}

/// |got - want| <= tol(i) for every element, want in f64.
#[track_caller]
fn close64_by(what: &str, got: &[f32], want: &[f64], tol: impl Fn(usize) -> f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= tol(i),
            "{what}: element {i} is {g} but should be {w} (error {err:.3e}, tolerance {:.3e})",
            tol(i)
        );
    }
}

/// GPU vs CPU for results that sum terms whose magnitudes add to `scale`: 1e-5 of that size.
const GPU_REL: f64 = 1e-5;

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// A few f32 roundings (8 ulp) of a sum of terms whose magnitudes add to `scale`.
const ROUNDINGS: f64 = 8.0 * f32::EPSILON as f64;

/// assert_close on f64 values.
#[track_caller]
fn close64(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(err <= atol + rtol * w.abs(), "{what}: element {i} is {g} but should be {w} (error {err:.3e})");
    }
}

// ---------------------------------------------------------------------------------------------------------
// schedule

/// betas, alphas, alpha_bar in f64 from the published formulas.
fn schedule_f64(kind: Schedule, t: usize) -> [Vec<f64>; 3] {
    let betas: Vec<f64> = match kind {
        Schedule::Linear { beta_start, beta_end } => {
            let (a, b) = (beta_start as f64, beta_end as f64);
            (0..t).map(|i| if t == 1 { a } else { a + (b - a) * i as f64 / (t - 1) as f64 }).collect()
        }
        Schedule::Cosine { s } => {
            let s = s as f64;
            let f = |i: usize| (((i as f64 / t as f64) + s) / (1.0 + s) * std::f64::consts::FRAC_PI_2).cos().powi(2);
            (0..t).map(|i| (1.0 - f(i + 1) / f(i)).min(0.999f32 as f64)).collect()
        }
    };
    let alphas: Vec<f64> = betas.iter().map(|b| 1.0 - b).collect();
    let alpha_bar = alphas
        .iter()
        .scan(1.0, |acc, a| {
            *acc *= a;
            Some(*acc)
        })
        .collect();
    [betas, alphas, alpha_bar]
}

const KINDS: [Schedule; 5] = [
    Schedule::LINEAR,
    Schedule::Linear { beta_start: 0.001, beta_end: 0.05 },
    Schedule::COSINE,
    Schedule::Cosine { s: 0.0 },
    Schedule::Cosine { s: 0.1 },
];

#[test]
fn schedule_matches_cpu_twin_and_f64_formulas() {
    let cpu = cpu();
    let gpu = gpu();
    for kind in KINDS {
        for t in [1usize, 2, 10, 257, 1000, 4000] {
            let what = format!("{kind:?} T {t}");
            let c = read(&cpu, &df::schedule(&cpu, kind, t).unwrap());
            let want = schedule_f64(kind, t);
            // betas to rtol 2e-6 (a few f32 roundings; atol 1e-9 for the rounding of a linspace value), alphas
            // to the betas' error plus the rounding of 1 - beta, alpha_bar relative: its relative error is the
            // sum of the alphas' (measured: 5e-7, 6e-8 and 3e-6 at T = 4000). Below 1e-30 (reached only by
            // long, steep schedules) f32 goes subnormal and a GPU may flush it to 0.
            close64(&format!("cpu betas {what}"), &c[0], &want[0], 1e-9, 2e-6);
            close64_by(&format!("cpu alphas {what}"), &c[1], &want[1], |i| 1e-9 + 2e-6 * want[0][i] + 6e-8);
            close64(&format!("cpu alpha_bar {what}"), &c[2], &want[2], 1e-30, 1e-5);
            for (i, (&a, &b)) in c[1].iter().zip(&c[0]).enumerate() {
                assert_eq!(a, 1.0 - b, "{what}: alphas = 1 - betas at {i}");
            }
            if let Some(gpu) = &gpu {
                let g = read(gpu, &df::schedule(gpu, kind, t).unwrap());
                assert_close(&format!("gpu betas {what}"), &g[0], &c[0], 1e-5, 1e-5);
                assert_close(&format!("gpu alphas {what}"), &g[1], &c[1], 1e-5, 1e-5);
                assert_close(&format!("gpu alpha_bar {what}"), &g[2], &c[2], 1e-30, 1e-5);
            }
        }
    }
    // The linear endpoints are the given betas.
    let c = read(&cpu, &df::schedule(&cpu, Schedule::LINEAR, 1000).unwrap());
    assert_eq!(c[0][0], 1e-4);
    assert!((c[0][999] - 0.02).abs() < 1e-9);
    // The cosine schedule clips its last beta at 0.999.
    let c = read(&cpu, &df::schedule(&cpu, Schedule::COSINE, 1000).unwrap());
    assert_eq!(c[0][999], 0.999);
}

// ---------------------------------------------------------------------------------------------------------
// q_sample

const BATCH_SHAPES: [&[usize]; 6] = [&[1, 1], &[3, 5], &[7, 2, 3], &[64, 33], &[1000], &[5, 1031]];

fn q_sample_on(d: &Device, x0: &[f32], shape: &[usize], sched: &ScheduleTensors, seed: u64, s: u32) -> QSample {
    let tx = Tensor::from_f32(d, shape, x0).unwrap();
    let st = step_counter(d, s).unwrap();
    df::q_sample(d, &tx, &sched.alpha_bar, seed, &st).unwrap()
}

#[test]
fn q_sample_matches_cpu_twin_and_its_definition() {
    let cpu = cpu();
    let gpu = gpu();
    let mut rng = Rng::new(seed());
    let t_count = 1000;
    let sc = df::schedule(&cpu, Schedule::LINEAR, t_count).unwrap();
    let abar = sc.alpha_bar.to_f32(&cpu).unwrap();
    let sg = gpu.as_ref().map(|g| df::schedule(g, Schedule::LINEAR, t_count).unwrap());
    for shape in BATCH_SHAPES {
        let n: usize = shape.iter().product();
        let (b, d) = (shape[0], n / shape[0]);
        let x0 = rng.vec(n, -2.0, 2.0);
        let seed = rng.next_u64();
        for s in [0u32, 1, rng.next_u64() as u32] {
            let what = format!("shape {shape:?} step {s}");
            let q = q_sample_on(&cpu, &x0, shape, &sc, seed, s);
            assert_eq!((q.xt.shape.as_slice(), q.eps.shape.as_slice(), q.t.shape.as_slice()), (shape, shape, &[b][..]));
            assert_eq!(q.t.dtype, DType::U32);
            let (xt, eps, t) = (q.xt.to_f32(&cpu).unwrap(), q.eps.to_f32(&cpu).unwrap(), q.t.to_u32(&cpu).unwrap());
            // The definition: t_r = bits(seed, s * stride + r) mod T, eps_i = normal(seed, s * stride +
            // eps_offset + i), both from the plain streams of ops::rng.
            let (stride, eps_offset) = df::q_sample_stream(shape);
            let base = (s as u64).wrapping_mul(stride);
            let want_t: Vec<u32> =
                rng::bits(&cpu, &[b], seed, base).unwrap().to_u32(&cpu).unwrap().iter().map(|w| w % 1000).collect();
            assert_eq!(t, want_t, "cpu t {what}");
            let want_eps = rng::normal(&cpu, &[n], seed, base.wrapping_add(eps_offset), 0.0, 1.0).unwrap();
            assert_eq!(bits_of(&eps), bits_of(&want_eps.to_f32(&cpu).unwrap()), "cpu eps {what}");
            // xt in f64 from the same abar (f32 values) and noise: a few f32 roundings of O(1) terms.
            let want_xt: Vec<f64> = (0..n)
                .map(|i| {
                    let ab = abar[t[i / d] as usize] as f64;
                    ab.sqrt() * x0[i] as f64 + (1.0 - ab).sqrt() * eps[i] as f64
                })
                .collect();
            close64(&format!("cpu xt {what}"), &xt, &want_xt, 1e-6, 1e-6);
            if let (Some(g), Some(sg)) = (&gpu, &sg) {
                let qg = q_sample_on(g, &x0, shape, sg, seed, s);
                assert_eq!(qg.t.to_u32(g).unwrap(), t, "gpu t {what}");
                assert_eq!(bits_of(&qg.eps.to_f32(g).unwrap()), bits_of(&eps), "gpu eps {what}");
                assert_close(&format!("gpu xt {what}"), &qg.xt.to_f32(g).unwrap(), &xt, 1e-5, 1e-5);
            }
        }
    }
}

#[test]
fn q_sample_into_and_different_steps() {
    let mut rng = Rng::new(seed());
    for d in &devices() {
        let sc = df::schedule(d, Schedule::COSINE, 50).unwrap();
        let shape = [9, 4];
        let x0 = rng.vec(36, -1.0, 1.0);
        let tx = Tensor::from_f32(d, &shape, &x0).unwrap();
        let seed = rng.next_u64();
        let out = QSample::empty(d, &shape).unwrap();
        let mut seen = Vec::new();
        for s in 0..3u32 {
            let st = step_counter(d, s).unwrap();
            df::q_sample_into(d, &tx, &sc.alpha_bar, seed, &st, &out).unwrap();
            let q = df::q_sample(d, &tx, &sc.alpha_bar, seed, &st).unwrap();
            let eps = out.eps.to_f32(d).unwrap();
            assert_eq!(bits_of(&eps), bits_of(&q.eps.to_f32(d).unwrap()), "{}: step {s}", d.name());
            assert_eq!(out.t.to_u32(d).unwrap(), q.t.to_u32(d).unwrap(), "{}: step {s}", d.name());
            assert_eq!(bits_of(&out.xt.to_f32(d).unwrap()), bits_of(&q.xt.to_f32(d).unwrap()));
            assert!(!seen.contains(&eps), "{}: step {s} repeats an earlier step's noise", d.name());
            seen.push(eps);
        }
        // An empty batch is fine and writes nothing.
        let empty = Tensor::from_f32(d, &[0, 4], &[]).unwrap();
        let q = df::q_sample(d, &empty, &sc.alpha_bar, seed, &step_counter(d, 0).unwrap()).unwrap();
        assert_eq!((q.xt.shape, q.t.shape), (vec![0, 4], vec![0]));
    }
}

/// The point of the step counter: a recorded training step (q_sample, then advance_step) draws new
/// timesteps and noise at each replay, those of the eager q_sample at that step.
#[test]
fn replayed_q_sample_draws_new_noise_per_step() {
    let mut rng = Rng::new(seed());
    for d in &devices() {
        let sc = df::schedule(d, Schedule::LINEAR, 1000).unwrap();
        let shape = [16, 10];
        let tx = Tensor::from_f32(d, &shape, &rng.vec(160, -1.0, 1.0)).unwrap();
        let (seed, s0) = (rng.next_u64(), rng.next_u64() as u32 % 1000);
        let step = step_counter(d, s0).unwrap();
        let out = QSample::empty(d, &shape).unwrap();
        let ((), rec) = d
            .capture(|| {
                df::q_sample_into(d, &tx, &sc.alpha_bar, seed, &step, &out)?;
                advance_step(d, &step, 1)
            })
            .unwrap();
        let mut seen = Vec::new();
        for k in 0..3u32 {
            d.replay(&rec).unwrap();
            let eager = df::q_sample(d, &tx, &sc.alpha_bar, seed, &step_counter(d, s0 + k).unwrap()).unwrap();
            let (eps, t) = (out.eps.to_f32(d).unwrap(), out.t.to_u32(d).unwrap());
            assert_eq!(bits_of(&eps), bits_of(&eager.eps.to_f32(d).unwrap()), "{}: replay {k} eps", d.name());
            assert_eq!(t, eager.t.to_u32(d).unwrap(), "{}: replay {k} t", d.name());
            assert_eq!(bits_of(&out.xt.to_f32(d).unwrap()), bits_of(&eager.xt.to_f32(d).unwrap()));
            assert!(!seen.contains(&(eps.clone(), t.clone())), "{}: replay {k} repeats", d.name());
            seen.push((eps, t));
        }
    }
}

#[test]
fn q_sample_timesteps_cover_every_value_and_noise_is_standard() {
    let mut rng = Rng::new(seed());
    for d in &devices() {
        // 8192 rows over T = 100: each value expected 82 times, so a missing one means a broken draw.
        let sc = df::schedule(d, Schedule::LINEAR, 100).unwrap();
        let tx = Tensor::from_f32(d, &[8192, 13], &rng.vec(8192 * 13, -1.0, 1.0)).unwrap();
        let st = step_counter(d, rng.next_u64() as u32).unwrap();
        let q = df::q_sample(d, &tx, &sc.alpha_bar, rng.next_u64(), &st).unwrap();
        let mut counts = [0usize; 100];
        q.t.to_u32(d).unwrap().iter().for_each(|&t| counts[t as usize] += 1);
        assert!(counts.iter().all(|&c| c > 0), "{}: timestep counts {counts:?}", d.name());
        // Binomial(8192, 1/100): sd 9; every count within 6 sd of 82.
        assert!(counts.iter().all(|&c| (c as f64 - 81.92).abs() < 54.0), "{}: {counts:?}", d.name());
        let eps = q.eps.to_f32(d).unwrap();
        let n = eps.len() as f64;
        let mean = eps.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = eps.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 5.0 / n.sqrt() && (var - 1.0).abs() < 5.0 * (2.0 / n).sqrt(), "{mean} {var}");
    }
}

// ---------------------------------------------------------------------------------------------------------
// timestep embedding

fn embedding_f64(t: &[u32], dim: usize, max_period: f32) -> Vec<f64> {
    let half = dim / 2;
    let mut out = Vec::new();
    for &tv in t {
        let arg = |k: usize| tv as f64 * (max_period as f64).powf(-(k as f64) / half as f64);
        out.extend((0..half).map(|k| arg(k).cos()));
        out.extend((0..half).map(|k| arg(k).sin()));
    }
    out
}

#[test]
fn timestep_embedding_is_bit_identical_and_matches_f64() {
    let cpu = cpu();
    let gpu = gpu();
    let mut rng = Rng::new(seed());
    let mut ts: Vec<u32> = vec![0, 1, 2, 999, 1000, 4095, 65535];
    ts.extend((0..40).map(|_| rng.below(1000) as u32));
    ts.extend((0..5).map(|_| rng.below(65536) as u32));
    for (dim, max_period) in [(2usize, 10000.0f32), (6, 10000.0), (8, 100.0), (64, 10000.0), (320, 10000.0), (16, 1.5)]
    {
        let what = format!("dim {dim} max_period {max_period}");
        let tt = Tensor::from_u32(&cpu, &[ts.len()], &ts).unwrap();
        let e = df::timestep_embedding(&cpu, &tt, dim, max_period).unwrap();
        assert_eq!(e.shape, vec![ts.len(), dim]);
        let c = e.to_f32(&cpu).unwrap();
        close64(&format!("cpu {what}"), &c, &embedding_f64(&ts, dim, max_period), 1.5e-7, 0.0);
        if let Some(g) = &gpu {
            // Extreme timesteps too: the arithmetic is the same integer code on both engines.
            let mut all = ts.clone();
            all.extend([u32::MAX, u32::MAX - 1, 1 << 31, rng.next_u64() as u32]);
            let run = |d: &Device| {
                let tt = Tensor::from_u32(d, &[all.len()], &all).unwrap();
                bits_of(&df::timestep_embedding(d, &tt, dim, max_period).unwrap().to_f32(d).unwrap())
            };
            assert_eq!(run(g), run(&cpu), "gpu vs cpu {what}");
        }
    }
}

#[test]
fn timestep_embedding_pieces_are_exact() {
    use tigel::device::cpu::diffusion as cd;
    let mut rng = Rng::new(seed());
    // 1 / 2pi in Q0.64.
    assert!((cd::INV_2PI as f64 / 2f64.powi(64) - 1.0 / std::f64::consts::TAU).abs() < 1e-18);
    // The exact integer-to-float conversion rounds to nearest (ties to even), as `as f32` does.
    for x in [0u32, 1, 255, 256, (1 << 24) + 1, (1 << 24) + 3, u32::MAX, 0x8000_0000, 0x7FFF_FFC0] {
        assert_eq!(cd::f32_of_u32(x), x as f32, "{x:#x}");
    }
    for _ in 0..100_000 {
        let x = rng.next_u64() as u32;
        assert_eq!(cd::f32_of_u32(x), x as f32, "{x:#x}");
    }
    // freq_turns is 2^-64-accurate powers: compare with f64 for the first frequencies.
    let ratio = 10000f64.powf(-1.0 / 32.0);
    let rq = (ratio * 2f64.powi(64)).round() as u64;
    for k in 0..32u32 {
        let g = cd::freq_turns(rq, k) as f64 / 2f64.powi(64);
        let want = ratio.powi(k as i32) / std::f64::consts::TAU;
        assert!((g - want).abs() < 1e-15, "k {k}: {g} vs {want}");
    }
}

// ---------------------------------------------------------------------------------------------------------
// ddpm_step, ddim_step

struct Case {
    shape: Vec<usize>,
    xt: Vec<f32>,
    eps: Vec<f32>,
}

fn cases(rng: &mut Rng) -> Vec<Case> {
    [vec![1usize], vec![3, 5], vec![4, 2, 33], vec![2, 1031]]
        .into_iter()
        .map(|shape| {
            let n = shape.iter().product();
            Case { shape, xt: rng.vec(n, -3.0, 3.0), eps: rng.vec(n, -2.0, 2.0) }
        })
        .collect()
}

fn tensors(d: &Device, c: &Case) -> (Tensor, Tensor) {
    (Tensor::from_f32(d, &c.shape, &c.xt).unwrap(), Tensor::from_f32(d, &c.shape, &c.eps).unwrap())
}

#[test]
fn ddpm_step_matches_cpu_twin_and_f64() {
    let cpu = cpu();
    let gpu = gpu();
    let mut rng = Rng::new(seed());
    for (kind, t_count) in [(Schedule::LINEAR, 1000usize), (Schedule::COSINE, 100)] {
        let sc = df::schedule(&cpu, kind, t_count).unwrap();
        let [betas, alphas, abar] = read(&cpu, &sc);
        let sg = gpu.as_ref().map(|g| df::schedule(g, kind, t_count).unwrap());
        for c in cases(&mut rng) {
            let n = c.xt.len();
            // clip 0: the eps form; 1: through the clamped x0_hat (x_t and eps span [-3, 3] and [-2, 2], so
            // some elements clamp at every t); 1e6: nothing clamps.
            for clip in [0.0f32, 1.0, 1e6] {
                for t in [0, 1, t_count / 2, t_count - 1] {
                    let (seed, offset) = (rng.next_u64(), rng.next_u64() >> 1);
                    let what = format!("{kind:?} shape {:?} t {t} clip {clip}", c.shape);
                    let (x, e) = tensors(&cpu, &c);
                    let step = |d: &Device, x: &Tensor, e: &Tensor, sc: &ScheduleTensors, offset: u64| {
                        df::ddpm_step_clipped(d, x, e, t, sc, seed, offset, clip).unwrap().to_f32(d).unwrap()
                    };
                    let got = step(&cpu, &x, &e, &sc, offset);
                    let z = rng::normal(&cpu, &[n], seed, offset, 0.0, 1.0).unwrap().to_f32(&cpu).unwrap();
                    let (b, a, ab) = (betas[t] as f64, alphas[t] as f64, abar[t] as f64);
                    let ab_prev = if t > 0 { abar[t - 1] as f64 } else { 1.0 };
                    let (c0, c1) = (ab_prev.sqrt() * b / (1.0 - ab), a.sqrt() * (1.0 - ab_prev) / (1.0 - ab));
                    let noise = |i: usize| if t > 0 { b.sqrt() * z[i] as f64 } else { 0.0 };
                    let want: Vec<f64> = (0..n)
                        .map(|i| {
                            let (xt, ep) = (c.xt[i] as f64, c.eps[i] as f64);
                            let mean = if clip > 0.0 {
                                let x0 = ((xt - (1.0 - ab).sqrt() * ep) / ab.sqrt()).clamp(-clip as f64, clip as f64);
                                c0 * x0 + c1 * xt
                            } else {
                                (xt - b / (1.0 - ab).sqrt() * ep) / a.sqrt()
                            };
                            mean + noise(i)
                        })
                        .collect();
                    // A few roundings of each term: x_t / sqrt(alpha), the noise prediction's and z's terms;
                    // in the x0_hat form, x0_hat's terms times c0 and c1 x_t.
                    let scale = |i: usize| {
                        let (xa, ea) = (c.xt[i].abs() as f64, c.eps[i].abs() as f64);
                        let m = if clip > 0.0 {
                            c0 * (xa + (1.0 - ab).sqrt() * ea) / ab.sqrt() + c1 * xa
                        } else {
                            (xa + b / (1.0 - ab).sqrt() * ea) / a.sqrt()
                        };
                        m + b.sqrt() * z[i].abs() as f64
                    };
                    close64_by(&format!("cpu {what}"), &got, &want, |i| ROUNDINGS * scale(i));
                    if clip == 1.0 {
                        let clamped = (0..n)
                            .filter(|&i| {
                                ((c.xt[i] as f64 - (1.0 - ab).sqrt() * c.eps[i] as f64) / ab.sqrt()).abs() > 1.0
                            })
                            .count();
                        assert!(n < 4 || clamped > 0, "{what}: the case clamps nothing");
                    }
                    if let (Some(g), Some(sg)) = (&gpu, &sg) {
                        let (x, e) = tensors(g, &c);
                        let gg = step(g, &x, &e, sg, offset);
                        close64_by(&format!("gpu {what}"), &gg, &to64(&got), |i| GPU_REL * scale(i) + 1e-7);
                    }
                    // The noise follows the offset, except at t = 0 where there is none.
                    let other = step(&cpu, &x, &e, &sc, offset + 4);
                    assert_eq!(other == got, t == 0, "{what}: another offset");
                    // ddpm_step is the unclipped step.
                    if clip == 0.0 {
                        let plain = df::ddpm_step(&cpu, &x, &e, t, &sc, seed, offset).unwrap().to_f32(&cpu).unwrap();
                        assert_eq!(bits_of(&plain), bits_of(&got), "{what}: ddpm_step vs clip 0");
                    }
                }
            }
        }
    }
}

#[test]
fn ddim_step_matches_cpu_twin_and_f64() {
    let cpu = cpu();
    let gpu = gpu();
    let mut rng = Rng::new(seed());
    for (kind, t_count) in [(Schedule::LINEAR, 1000usize), (Schedule::COSINE, 100)] {
        let sc = df::schedule(&cpu, kind, t_count).unwrap();
        let abar = sc.alpha_bar.to_f32(&cpu).unwrap();
        let sg = gpu.as_ref().map(|g| df::schedule(g, kind, t_count).unwrap());
        for c in cases(&mut rng) {
            let n = c.xt.len();
            let steps = [
                (t_count - 1, Some(t_count - 2)),
                (t_count / 2, Some(t_count / 4)),
                (5, Some(0)),
                (3, None),
                (0, None),
            ];
            for (t, t_prev) in steps {
                for clip in [0.0f32, 1.0] {
                    let what = format!("{kind:?} shape {:?} t {t} t_prev {t_prev:?} clip {clip}", c.shape);
                    let (x, e) = tensors(&cpu, &c);
                    let got = df::ddim_step_clipped(&cpu, &x, &e, t, t_prev, &sc, clip).unwrap().to_f32(&cpu).unwrap();
                    let ab = abar[t] as f64;
                    let abp = t_prev.map_or(1.0, |tp| abar[tp] as f64);
                    let want: Vec<f64> = (0..n)
                        .map(|i| {
                            let mut x0 = (c.xt[i] as f64 - (1.0 - ab).sqrt() * c.eps[i] as f64) / ab.sqrt();
                            let mut ep = c.eps[i] as f64;
                            if clip > 0.0 {
                                // The clamped x0_hat and the eps that, with it, reconstructs x_t.
                                x0 = x0.clamp(-clip as f64, clip as f64);
                                ep = (c.xt[i] as f64 - ab.sqrt() * x0) / (1.0 - ab).sqrt();
                            }
                            if t_prev.is_none() {
                                return x0;
                            }
                            abp.sqrt() * x0 + (1.0 - abp).sqrt() * ep
                        })
                        .collect();
                    // A few roundings of each term; x0_hat's are scaled by sqrt(abar_prev / abar_t), up to
                    // 30 at the cosine schedule's last step; the recomputed eps's by sqrt((1 - abar_prev) /
                    // (1 - abar_t)).
                    let scale = |i: usize| {
                        let (x, e) = (c.xt[i].abs() as f64, c.eps[i].abs() as f64);
                        let mut s = abp.sqrt() * (x + (1.0 - ab).sqrt() * e) / ab.sqrt() + (1.0 - abp).sqrt() * e;
                        if clip > 0.0 {
                            s += (1.0 - abp).sqrt() * (x + ab.sqrt() * clip as f64) / (1.0 - ab).sqrt();
                        }
                        s
                    };
                    close64_by(&format!("cpu {what}"), &got, &want, |i| ROUNDINGS * scale(i));
                    if t_prev.is_none() && clip > 0.0 {
                        assert!(got.iter().all(|v| v.abs() <= clip), "{what}: clipped x0_hat");
                    }
                    if let (Some(g), Some(sg)) = (&gpu, &sg) {
                        let (x, e) = tensors(g, &c);
                        let gg = df::ddim_step_clipped(g, &x, &e, t, t_prev, sg, clip).unwrap().to_f32(g).unwrap();
                        close64_by(&format!("gpu {what}"), &gg, &to64(&got), |i| GPU_REL * scale(i) + 1e-7);
                    }
                }
            }
            // ddim_step is the unclipped step.
            let (x, e) = tensors(&cpu, &c);
            let a = df::ddim_step(&cpu, &x, &e, 7, Some(3), &sc).unwrap().to_f32(&cpu).unwrap();
            let b = df::ddim_step_clipped(&cpu, &x, &e, 7, Some(3), &sc, 0.0).unwrap().to_f32(&cpu).unwrap();
            assert_eq!(bits_of(&a), bits_of(&b));
        }
    }
}

/// DDIM from the exact noise recovers x0: x_t built from x0 and eps, one step to t_prev = None gives x0.
#[test]
fn ddim_with_the_true_noise_recovers_x0() {
    let mut rng = Rng::new(seed());
    for d in &devices() {
        let sc = df::schedule(d, Schedule::LINEAR, 1000).unwrap();
        let x0 = Tensor::from_f32(d, &[32, 8], &rng.vec(256, -1.0, 1.0)).unwrap();
        let q = df::q_sample(d, &x0, &sc.alpha_bar, rng.next_u64(), &step_counter(d, 3).unwrap()).unwrap();
        let t = q.t.to_u32(d).unwrap();
        // One row at a time: ddim_step takes one timestep.
        let (xt, eps, want) = (q.xt.to_f32(d).unwrap(), q.eps.to_f32(d).unwrap(), x0.to_f32(d).unwrap());
        for r in [0usize, 7, 31] {
            let row = |v: &[f32]| Tensor::from_f32(d, &[1, 8], &v[r * 8..r * 8 + 8]).unwrap();
            let got = df::ddim_step(d, &row(&xt), &row(&eps), t[r] as usize, None, &sc).unwrap().to_f32(d).unwrap();
            // x0_hat amplifies xt's rounding by 1 / sqrt(abar_t) (up to 160 at t = 999).
            let tol = 2e-6 / sc.alpha_bar.to_f32(d).unwrap()[t[r] as usize].sqrt();
            assert_close(&format!("{} row {r} t {}", d.name(), t[r]), &got, &want[r * 8..r * 8 + 8], tol, 1e-5);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// v-prediction

#[test]
fn v_conversions_match_cpu_twin_f64_and_invert() {
    let cpu = cpu();
    let gpu = gpu();
    let mut rng = Rng::new(seed());
    let t_count = 200;
    let sc = df::schedule(&cpu, Schedule::COSINE, t_count).unwrap();
    let abar = sc.alpha_bar.to_f32(&cpu).unwrap();
    let sg = gpu.as_ref().map(|g| df::schedule(g, Schedule::COSINE, t_count).unwrap());
    for shape in [vec![1usize, 1], vec![6, 7], vec![3, 2, 50]] {
        let n: usize = shape.iter().product();
        let (b, d) = (shape[0], n / shape[0]);
        let (a, x) = (rng.vec(n, -2.0, 2.0), rng.vec(n, -2.0, 2.0));
        // Row 0 at t = T - 1, and a t past the end, which reads abar[T - 1].
        let mut t: Vec<u32> = (0..b).map(|_| rng.below(t_count) as u32).collect();
        t[0] = t_count as u32 - 1;
        t[b - 1] = if b > 1 { 5000 } else { t[b - 1] };
        let run = |dev: &Device, sched: &ScheduleTensors, to_eps: bool| {
            let (ta, tb) = (Tensor::from_f32(dev, &shape, &a).unwrap(), Tensor::from_f32(dev, &shape, &x).unwrap());
            let tt = Tensor::from_u32(dev, &[b], &t).unwrap();
            let r = if to_eps {
                df::v_to_eps(dev, &ta, &tb, &tt, &sched.alpha_bar)
            } else {
                df::v_target(dev, &tb, &ta, &tt, &sched.alpha_bar)
            };
            r.unwrap().to_f32(dev).unwrap()
        };
        for to_eps in [true, false] {
            let what = format!("{} shape {shape:?}", if to_eps { "v_to_eps" } else { "v_target" });
            let got = run(&cpu, &sc, to_eps);
            let sign = if to_eps { 1.0 } else { -1.0 };
            let want: Vec<f64> = (0..n)
                .map(|i| {
                    let ab = abar[(t[i / d] as usize).min(t_count - 1)] as f64;
                    ab.sqrt() * a[i] as f64 + sign * (1.0 - ab).sqrt() * x[i] as f64
                })
                .collect();
            close64(&format!("cpu {what}"), &got, &want, 1e-6, 1e-6);
            if let (Some(g), Some(sg)) = (&gpu, &sg) {
                assert_close(&format!("gpu {what}"), &run(g, sg, to_eps), &got, 1e-5, 1e-5);
            }
        }
    }
    // The target's inverse: v_to_eps(v_target(x0, eps), xt) = eps for xt from q_sample.
    for d in &devices() {
        let sched = df::schedule(d, Schedule::COSINE, t_count).unwrap();
        let x0 = Tensor::from_f32(d, &[16, 5], &rng.vec(80, -1.0, 1.0)).unwrap();
        let q = df::q_sample(d, &x0, &sched.alpha_bar, rng.next_u64(), &step_counter(d, 1).unwrap()).unwrap();
        let v = df::v_target(d, &x0, &q.eps, &q.t, &sched.alpha_bar).unwrap();
        let eps = df::v_to_eps(d, &v, &q.xt, &q.t, &sched.alpha_bar).unwrap();
        assert_close(
            &format!("{} round trip", d.name()),
            &eps.to_f32(d).unwrap(),
            &q.eps.to_f32(d).unwrap(),
            1e-5,
            1e-5,
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// bad input

#[test]
fn bad_diffusion_input_is_an_error_naming_it() {
    let d = Device::cpu();
    let f = |shape: &[usize]| Tensor::from_f32(&d, shape, &vec![0.5; shape.iter().product()]).unwrap();
    let u = |shape: &[usize]| Tensor::from_u32(&d, shape, &vec![0; shape.iter().product()]).unwrap();
    let sc = df::schedule(&d, Schedule::LINEAR, 10).unwrap();
    let st = u(&[1]);

    // schedule
    let e = df::schedule(&d, Schedule::LINEAR, 0).unwrap_err().to_string();
    assert!(e.contains("timesteps = 0"), "{e}");
    let e = df::schedule(&d, Schedule::Linear { beta_start: 0.1, beta_end: 1.5 }, 10).unwrap_err().to_string();
    assert!(e.contains("1.5") && e.contains("[0, 1)"), "{e}");
    let e = df::schedule(&d, Schedule::Cosine { s: -0.1 }, 10).unwrap_err().to_string();
    assert!(e.contains("s = -0.1"), "{e}");
    let e = df::schedule(&d, Schedule::LINEAR, (1 << 24) + 1).unwrap_err().to_string();
    assert!(e.contains("timesteps = 16777217"), "{e}");

    // q_sample: step counter, alpha_bar, x0 and output shapes
    let e = df::q_sample(&d, &f(&[4, 3]), &sc.alpha_bar, 0, &f(&[1])).unwrap_err().to_string();
    assert!(e.contains("step counter") && e.contains("f32"), "{e}");
    let e = df::q_sample(&d, &f(&[4, 3]), &sc.alpha_bar, 0, &u(&[2])).unwrap_err().to_string();
    assert!(e.contains("step counter") && e.contains("[2]"), "{e}");
    let e = df::q_sample(&d, &f(&[4, 3]), &f(&[2, 5]), 0, &st).unwrap_err().to_string();
    assert!(e.contains("alpha_bar") && e.contains("[2, 5]"), "{e}");
    let e = df::q_sample(&d, &f(&[4, 3]), &u(&[10]), 0, &st).unwrap_err().to_string();
    assert!(e.contains("u32") && e.contains("f32"), "{e}");
    let e = df::q_sample(&d, &f(&[4, 0]), &sc.alpha_bar, 0, &st).unwrap_err().to_string();
    assert!(e.contains("[4, 0]"), "{e}");
    let bad = QSample { xt: f(&[4, 3]), eps: f(&[3, 4]), t: u(&[4]) };
    let e = df::q_sample_into(&d, &f(&[4, 3]), &sc.alpha_bar, 0, &st, &bad).unwrap_err().to_string();
    assert!(e.contains("[4, 3]") && e.contains("[3, 4]") && e.contains("eps"), "{e}");
    let bad = QSample { xt: f(&[4, 3]), eps: f(&[4, 3]), t: u(&[3]) };
    let e = df::q_sample_into(&d, &f(&[4, 3]), &sc.alpha_bar, 0, &st, &bad).unwrap_err().to_string();
    assert!(e.contains("[4, 3]") && e.contains("[3]"), "{e}");

    // timestep_embedding
    let e = df::timestep_embedding(&d, &u(&[4]), 7, 10000.0).unwrap_err().to_string();
    assert!(e.contains("dim = 7") && e.contains("even"), "{e}");
    let e = df::timestep_embedding(&d, &u(&[4]), 0, 10000.0).unwrap_err().to_string();
    assert!(e.contains("dim = 0"), "{e}");
    let e = df::timestep_embedding(&d, &f(&[4]), 8, 10000.0).unwrap_err().to_string();
    assert!(e.contains("f32") && e.contains("u32"), "{e}");
    let e = df::timestep_embedding(&d, &u(&[4, 1]), 8, 10000.0).unwrap_err().to_string();
    assert!(e.contains("[4, 1]"), "{e}");
    let e = df::timestep_embedding(&d, &u(&[4]), 8, 1.0).unwrap_err().to_string();
    assert!(e.contains("max_period = 1"), "{e}");

    // ddpm_step / ddim_step: t out of range, t_prev, shapes
    let e = df::ddpm_step(&d, &f(&[2, 3]), &f(&[2, 3]), 10, &sc, 0, 0).unwrap_err().to_string();
    assert!(e.contains("t = 10") && e.contains("T = 10"), "{e}");
    let e = df::ddpm_step(&d, &f(&[2, 3]), &f(&[3, 2]), 1, &sc, 0, 0).unwrap_err().to_string();
    assert!(e.contains("[2, 3]") && e.contains("[3, 2]"), "{e}");
    let e = df::ddim_step(&d, &f(&[2, 3]), &f(&[2, 3]), 12, None, &sc).unwrap_err().to_string();
    assert!(e.contains("t = 12") && e.contains("T = 10"), "{e}");
    let e = df::ddim_step(&d, &f(&[2, 3]), &f(&[2, 3]), 5, Some(5), &sc).unwrap_err().to_string();
    assert!(e.contains("t_prev = 5") && e.contains("t = 5"), "{e}");
    let e = df::ddim_step(&d, &f(&[2, 3]), &f(&[2]), 5, Some(1), &sc).unwrap_err().to_string();
    assert!(e.contains("[2, 3]") && e.contains("[2]"), "{e}");
    let e = df::ddim_step_clipped(&d, &f(&[2]), &f(&[2]), 5, None, &sc, -1.0).unwrap_err().to_string();
    assert!(e.contains("clip = -1"), "{e}");
    let e = df::ddpm_step_clipped(&d, &f(&[2]), &f(&[2]), 5, &sc, 0, 0, f32::NAN).unwrap_err().to_string();
    assert!(e.contains("ddpm_step") && e.contains("clip = NaN"), "{e}");
    let short = ScheduleTensors { betas: f(&[9]), ..sc.clone() };
    let e = df::ddpm_step(&d, &f(&[2]), &f(&[2]), 1, &short, 0, 0).unwrap_err().to_string();
    assert!(e.contains("betas") && e.contains("[9]") && e.contains("[10]"), "{e}");

    // v conversions
    let e = df::v_to_eps(&d, &f(&[4, 3]), &f(&[4, 2]), &u(&[4]), &sc.alpha_bar).unwrap_err().to_string();
    assert!(e.contains("[4, 3]") && e.contains("[4, 2]"), "{e}");
    let e = df::v_target(&d, &f(&[4, 3]), &f(&[4, 3]), &u(&[3]), &sc.alpha_bar).unwrap_err().to_string();
    assert!(e.contains("[4, 3]") && e.contains("[3]"), "{e}");
    let e = df::v_target(&d, &f(&[4, 3]), &f(&[4, 3]), &f(&[4]), &sc.alpha_bar).unwrap_err().to_string();
    assert!(e.contains("f32") && e.contains("u32"), "{e}");
}
