//! Dynamic loss scaling (`optim::LossScaler`, `ops::optim::clip_guard_scaled`): the clip-and-guard
//! kernel against its CPU twin, a forced overflow that skips steps without changing any weight or
//! optimizer state, the scale doubling after `interval` finite steps, and f16 gradient operands that
//! underflow without a scale and track f32 with one.
mod common;
use common::*;
use tigel::data::toy::spirals;
use tigel::graph::{Graph, Plan, Precision};
use tigel::kernels::optim::{GUARD_GRADIENT, GUARD_LOSS, STEP_SKIP};
use tigel::models::gpt::{Gpt, GptConfig, GptTrainer, OptimSettings, OptimizerChoice};
use tigel::models::mlp::{Mlp, MlpConfig};
use tigel::nn::Activation;
use tigel::ops::optim as k;
use tigel::optim::muon::MuonConfig;
use tigel::optim::{LossScale, OptimizerKind, Schedule};
use tigel::train::{TrainConfig, Trainer};
use tigel::{Device, Tensor};

/// A case: partials, loss, max_norm, the scale state before, the interval, the flag before.
type Case<'a> = (&'a [f32], f32, Option<f32>, [f32; 4], Option<u32>, [u32; 4]);

/// One `clip_guard_scaled` dispatch: (step, clip, flag, scale) after it.
#[allow(clippy::too_many_arguments)]
fn run_scaled(
    d: &Device,
    partials: &[f32],
    loss: f32,
    max_norm: Option<f32>,
    step: u32,
    scale: [f32; 4],
    interval: Option<u32>,
    flag: [u32; 4],
) -> (Vec<u32>, Vec<f32>, Vec<u32>, Vec<f32>) {
    let pt = Tensor::from_f32(d, &[partials.len()], partials).unwrap();
    let lt = Tensor::from_f32(d, &[1], &[loss]).unwrap();
    let st = k::step_counter(d, step).unwrap();
    let clip = k::clip_buffer(d).unwrap();
    let fl = Tensor::from_u32(d, &[4], &flag).unwrap();
    let sc = Tensor::from_f32(d, &[4], &scale).unwrap();
    k::clip_guard_scaled(d, &pt, partials.len(), max_norm, &lt, &st, &clip, &fl, &sc, interval, 1).unwrap();
    (st.to_u32(d).unwrap(), clip.to_f32(d).unwrap(), fl.to_u32(d).unwrap(), sc.to_f32(d).unwrap())
}

/// The cases: finite and overflowing partials, clipping on and off, dynamic and fixed scales, the
/// doubling, the floor at 1, a non-finite loss, a flag already set; 1 to 5000 partials.
#[test]
fn clip_guard_scaled_matches_its_twin() {
    let c = cpu();
    let g = gpu();
    let mut rng = tigel::host::Rng::new(seed());
    for n in [1usize, 7, 256, 257, 5000] {
        let finite: Vec<f32> = (0..n).map(|_| rng.uniform(0.0, 3.0)).collect();
        let mut inf = finite.clone();
        inf[n / 2] = f32::INFINITY;
        let mut huge = finite.clone();
        huge.iter_mut().for_each(|x| *x = 3e38); // finite partials whose sum overflows
        let s = 1024.0;
        let cases: Vec<Case> = vec![
            (&finite, 2.0, Some(0.5), [s, 0.0, 0.0, s], Some(2000), [0; 4]),
            (&finite, 2.0, None, [s, 4.0, 3.0, s], Some(5), [0; 4]),
            (&finite, 2.0, Some(1e9), [s, 0.0, 0.0, s], None, [0; 4]),
            (&inf, 2.0, Some(0.5), [s, 7.0, 2.0, s], Some(2000), [0; 4]),
            (&huge, 2.0, None, [s, 0.0, 0.0, s], Some(2000), [0; 4]),
            (&inf, 2.0, None, [1.0, 0.0, 0.0, 1.0], Some(2000), [0; 4]),
            (&inf, 2.0, None, [s, 0.0, 0.0, s], None, [0; 4]),
            (&finite, f32::NAN, None, [s, 0.0, 0.0, s], Some(2000), [0; 4]),
            (&inf, 2.0, None, [s, 0.0, 0.0, s], Some(2000), [1, 3, 3, 9]),
        ];
        for (i, &(p, loss, max_norm, scale, interval, flag)) in cases.iter().enumerate() {
            let want = run_scaled(&c, p, loss, max_norm, 4, scale, interval, flag);
            // The twin's decisions, checked by hand.
            let total: f64 = p.iter().map(|&x| x as f64).sum();
            let overflow = !p.iter().all(|x| x.is_finite()) || !(total as f32).is_finite();
            let skip = interval.is_some() && overflow;
            assert_eq!(want.0[0], if skip { 4 | STEP_SKIP } else { 4 }, "n {n} case {i}: step");
            if skip {
                assert_eq!(want.1[0], -1.0, "n {n} case {i}: a skipped step marks clip[0]");
                assert_eq!(want.3[0], (scale[0] * 0.5).max(1.0), "n {n} case {i}: the scale halves");
                assert_eq!((want.3[1], want.3[2]), (0.0, scale[2] + 1.0), "n {n} case {i}: counted");
            } else {
                let norm = (total.sqrt() / scale[0] as f64) as f32;
                let c0 = max_norm.map_or(1.0, |m| 1f32.min(m / (norm + 1e-6))) / scale[0];
                if norm.is_finite() {
                    assert_close(&format!("n {n} case {i}: clip"), &want.1[..2], &[c0, norm], 0.0, 1e-5);
                } else {
                    assert_eq!((want.1[0], want.1[1]), (c0, norm), "n {n} case {i}: clip of an infinite norm");
                }
                let good = scale[1] + 1.0;
                let doubled = interval.is_some_and(|iv| good >= iv as f32);
                let (s1, g1) = match interval {
                    None => (scale[0], scale[1]),
                    Some(_) if doubled => (scale[0] * 2.0, 0.0),
                    Some(_) => (scale[0], good),
                };
                assert_eq!((want.3[0], want.3[1]), (s1, g1), "n {n} case {i}: scale and run of finite steps");
            }
            assert_eq!(want.3[3], scale[0], "n {n} case {i}: the scale this step used");
            let trips = flag[0] == 0 && (loss.is_nan() || (overflow && (interval.is_none() || scale[0] <= 1.0)));
            let what = if loss.is_nan() { GUARD_LOSS } else { GUARD_GRADIENT };
            let index =
                if what == GUARD_GRADIENT { p.iter().position(|x| !x.is_finite()).unwrap_or(0) as u32 } else { 0 };
            let want_flag = if trips { [1, 5, what, index] } else { flag };
            assert_eq!(want.2, want_flag, "n {n} case {i}: the guard");
            if let Some(g) = &g {
                let got = run_scaled(g, p, loss, max_norm, 4, scale, interval, flag);
                assert_eq!(got.0, want.0, "n {n} case {i}: step on the GPU");
                assert_eq!(got.2, want.2, "n {n} case {i}: flag on the GPU");
                // The same sums in the same order: the same bits (inf and NaN included).
                let bits =
                    |v: &[f32]| v.iter().map(|x| if x.is_nan() { u32::MAX } else { x.to_bits() }).collect::<Vec<_>>();
                assert_eq!(bits(&got.1), bits(&want.1), "n {n} case {i}: clip on the GPU");
                assert_eq!(bits(&got.3), bits(&want.3), "n {n} case {i}: scale on the GPU");
            }
        }
    }
}

fn adamw() -> OptimizerKind {
    OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 }
}

fn muon() -> OptimizerKind {
    OptimizerKind::Muon(MuonConfig {
        momentum: 0.95,
        nesterov: true,
        ns_steps: 5,
        lr_ratio: 2.0,
        weight_decay: 0.01,
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        adamw_names: &[],
    })
}

fn optimizers() -> Vec<OptimizerKind> {
    vec![adamw(), OptimizerKind::Sgd { momentum: 0.9, nesterov: true, weight_decay: 1e-3 }, muon()]
}

/// The spirals MLP with an EMA and clipping, its loss scaled by `scale` (f32 gradients: a scale past
/// 2^64 overflows their sum of squares, which is what the skipping reads).
fn mlp_trainer(dev: &Device, optimizer: OptimizerKind, scale: LossScale) -> Trainer {
    let n = 64;
    let (xy, labels) = spirals(n, 3);
    let x = Tensor::from_f32(dev, &[n, 2], &xy).unwrap();
    let y = Tensor::from_u32(dev, &[n], &labels).unwrap();
    let mlp = Mlp::new(dev, &MlpConfig { sizes: vec![2, 16, 16, 2], activation: Activation::Gelu }, 7).unwrap();
    let mut g = Graph::new();
    let (xn, yn) = (g.input(&x), g.input(&y));
    let logits = mlp.forward(&mut g, xn).unwrap();
    let loss = g.cross_entropy_mean(logits, yn).unwrap();
    let cfg = TrainConfig {
        optimizer,
        schedule: Schedule::Cosine { lr: 1e-2, warmup: 5, total: 300, min_lr: 1e-3 },
        clip: Some(1.0),
        ema: Some(0.99),
        loss_scale: Some(scale),
    };
    Trainer::new(dev, g, loss, mlp.params(), cfg).unwrap()
}

/// Every word of the trainer's state (weights, optimizer state and step, EMA).
fn snapshot(dev: &Device, t: &Trainer) -> Vec<(String, Vec<u32>)> {
    t.state().into_iter().map(|(n, x)| (n, x.to_u32(dev).unwrap())).collect()
}

fn scale_of(dev: &Device, t: &Trainer) -> tigel::optim::ScaleState {
    t.loss_scale(&t.read_loss_scale(dev).unwrap().unwrap().wait().unwrap())
}

fn loss_of(dev: &Device, t: &Trainer) -> f32 {
    f32::from_bits(t.read_loss(dev).unwrap().wait().unwrap()[0])
}

/// Starting at 2^120 the scaled gradients' sum of squares overflows: each step is skipped (every
/// weight, moment, momentum buffer, EMA and the step counter bit for bit as before), the scale halves
/// until the sum is finite, and then the model trains; the run never trips the guard.
#[test]
fn a_forced_overflow_skips_steps_and_halves_the_scale_until_finite() {
    let devs: Vec<Device> = std::iter::once(cpu()).chain(gpu()).collect();
    for dev in &devs {
        for opt in optimizers() {
            let t = mlp_trainer(dev, opt, LossScale::Dynamic { init: 2f32.powi(120), interval: 2000 });
            let (mut skipped, mut scale, mut first) = (0, 2f32.powi(120), None);
            for i in 0..120 {
                let before = snapshot(dev, &t);
                t.step(dev).unwrap();
                let st = scale_of(dev, &t);
                let after = snapshot(dev, &t);
                if st.skipped > skipped {
                    // Skipped: nothing changed, the scale halved. (Later skips happen too: the scale
                    // sits just under the overflow, and the gradients grow as the model learns.)
                    assert_eq!(st.skipped, skipped + 1);
                    assert_eq!(before, after, "{opt:?}: skipped step {i} changed the state");
                    assert_eq!(st.scale, scale / 2.0, "{opt:?}: the scale halves at each skip");
                    skipped = st.skipped;
                } else {
                    first.get_or_insert((i, st.scale));
                    assert_ne!(before, after, "{opt:?}: a finite step {i} changed nothing");
                    assert_eq!(st.scale, scale, "{opt:?}: the scale holds");
                }
                assert_eq!(st.used, scale, "{opt:?}: step {i} carried the scale before it");
                scale = st.scale;
            }
            let (first, at) = first.expect("the scale came down to a finite sum");
            eprintln!("{opt:?}: first finite step {first} at scale 2^{}, {skipped} skipped in all", at.log2());
            // The sum of squares is S² times the true one: finite from about S = 2^63 on.
            assert!((50..=70).contains(&first), "{opt:?}: first finite step {first}");
            assert_eq!(at, 2f32.powi(120 - first));
            assert_eq!(t.optimizer().current_step(dev).unwrap(), 120 - skipped);
            let guard = t.read_guard(dev).unwrap().wait().unwrap();
            assert!(t.divergence(&guard).is_none(), "{opt:?}: an overflow tripped the guard: {guard:?}");
            // And it trains: against the same model's first finite step.
            let l0 = loss_of(dev, &t);
            for _ in 0..60 {
                t.step(dev).unwrap();
            }
            let l1 = loss_of(dev, &t);
            assert!(l1 < l0, "{opt:?}: the loss did not fall after the skips: {l0} -> {l1}");
        }
    }
}

/// With a scale that never overflows, the steps are those of an unscaled run (the unscaling by a power
/// of two is exact up to the sums' rounding), and the scale doubles after each `interval` finite steps.
#[test]
fn the_scale_doubles_after_interval_finite_steps_and_tracks_the_unscaled_run() {
    let devs: Vec<Device> = std::iter::once(cpu()).chain(gpu()).collect();
    for dev in &devs {
        let t = mlp_trainer(dev, adamw(), LossScale::Dynamic { init: 4.0, interval: 3 });
        let f = mlp_trainer(dev, adamw(), LossScale::Fixed(1.0));
        for i in 1..=10u32 {
            t.step(dev).unwrap();
            f.step(dev).unwrap();
            let st = scale_of(dev, &t);
            assert_eq!(st.skipped, 0);
            assert_eq!(st.scale, 4.0 * 2f32.powi((i / 3) as i32), "after {i} steps");
            let (a, b) = (loss_of(dev, &t), loss_of(dev, &f));
            assert!((a - b).abs() <= 1e-5 * b.abs(), "step {i}: scaled loss {a}, unscaled {b}");
        }
        assert_eq!(scale_of(dev, &f).scale, 1.0, "a fixed scale stays");
    }
}

/// The loss-scale flag: `dynamic`, `dynamic:INIT:INTERVAL`, a fixed N; bad values name the flag.
#[test]
fn loss_scale_values_parse_and_bad_ones_name_the_flag() {
    assert_eq!("dynamic".parse::<LossScale>().unwrap(), LossScale::default());
    assert_eq!("dynamic:1024:50".parse::<LossScale>().unwrap(), LossScale::Dynamic { init: 1024.0, interval: 50 });
    assert_eq!("1".parse::<LossScale>().unwrap(), LossScale::Fixed(1.0));
    assert_eq!(LossScale::Fixed(128.0).to_string().parse::<LossScale>().unwrap(), LossScale::Fixed(128.0));
    for bad in ["", "0.5", "-4", "inf", "nan", "dyn", "dynamic:8", "dynamic:8:0", "dynamic:0.5:10", "x:1:2"] {
        let e = bad.parse::<LossScale>().unwrap_err().to_string();
        assert!(e.contains("--loss-scale"), "{bad}: {e}");
    }
}

/// The tiny GPT of tests/gpt_mixed.rs, wider, on a batch of 8 windows of 32: the cross-entropy's
/// gradients are about 1/(8·32) per element at the logits and smaller further in.
fn grad_gpt() -> GptConfig {
    GptConfig {
        layers: 2,
        heads: 2,
        width: 32,
        context: 64,
        dropout: 0.0,
        rope: true,
        qk_norm: true,
        gated_mlp: true,
        ..GptConfig::default()
    }
}

/// Every parameter's gradient of the GPT's mean cross-entropy at `precision`, seeded with `scale` and
/// divided by it again (f64).
fn gpt_grads(dev: &Device, precision: Precision, scale: f32) -> Vec<Vec<f64>> {
    let cfg = grad_gpt();
    let model = Gpt::new(dev, cfg, 11).unwrap();
    let (b, t) = (64, cfg.context);
    let text = gpt_corpus(8000).bytes;
    let ids: Vec<u32> = (0..b * t).map(|i| text[(i / t) * 97 + i % t] as u32).collect();
    let tg: Vec<u32> = (0..b * t).map(|i| text[(i / t) * 97 + i % t + 1] as u32).collect();
    let x = Tensor::from_u32(dev, &[b, t], &ids).unwrap();
    let y = Tensor::from_u32(dev, &[b * t], &tg).unwrap();
    let s = Tensor::from_f32(dev, &[1], &[scale]).unwrap();
    let mut g = Graph::new();
    g.precision = precision;
    let (xn, yn) = (g.input(&x), g.input(&y));
    let logits = model.forward(&mut g, xn, None).unwrap();
    let loss = g.cross_entropy_mean(logits, yn).unwrap();
    let params: Vec<_> = model.params().iter().map(|p| g.param(&p.tensor)).collect();
    let seed = g.input(&s);
    let grads = g.backward_seeded(loss, &params, Some(seed)).unwrap();
    let plan = Plan::build(dev, &g, &grads, |_| Ok(())).unwrap();
    plan.run(dev).unwrap();
    grads
        .iter()
        .map(|&n| plan.value(n).to_f32(dev).unwrap().iter().map(|&v| v as f64 / scale as f64).collect())
        .collect()
}

/// The largest relative L2 error against f32 of the gradient of a matrix (parameters of 1024 elements
/// or more: the norms' 16-element gains carry too few terms to say much).
fn error_vs(reference: &[Vec<f64>], got: &[Vec<f64>]) -> f64 {
    let mut worst = 0f64;
    for (r, x) in reference.iter().zip(got).filter(|(r, _)| r.len() >= 1024) {
        let d2: f64 = r.iter().zip(x).map(|(a, b)| (a - b) * (a - b)).sum();
        let r2: f64 = r.iter().map(|a| a * a).sum();
        worst = worst.max((d2 / r2).sqrt());
    }
    worst
}

/// f16 gradient operands: on a batch of 64 windows of 64 the cross-entropy's gradients at the logits
/// are about 1/4096 of a probability each, mostly below f16's smallest normal (6.1e-5), where f16 keeps
/// a few bits or none; the matrices' gradients then lose accuracy. Seeded with 2^16 (the dynamic
/// default) they stay normal and track f32 as the forward's f16 operands allow. Measured: the worst
/// matrix gradient's relative error is 7.4e-3 unscaled and 5.6e-4 scaled.
#[test]
fn f16_gradient_operands_underflow_without_a_scale_and_track_f32_with_one() {
    let d = cpu();
    let reference = gpt_grads(&d, Precision::F32, 1.0);
    let e1 = error_vs(&reference, &gpt_grads(&d, Precision::Mixed, 1.0));
    let es = error_vs(&reference, &gpt_grads(&d, Precision::Mixed, 65536.0));
    eprintln!("worst relative error of a matrix gradient vs f32: scale 1 {e1:.3e}, scale 2^16 {es:.3e}");
    assert!(es <= 1.5e-3, "scaled f16 gradients: relative error {es}");
    assert!(e1 >= 5.0 * es, "unscaled f16 gradients should lose accuracy: {e1} vs {es}");
}

/// The GPT under mixed (Muon) with the dynamic default agrees with the CPU on lavapipe step for step
/// within tests/gpt_mixed.rs's 1e-4, and from 2^40 (an f16 overflow at first) both skip the same steps
/// down to the same scale, then train.
#[test]
fn scaled_gpt_agrees_on_cpu_and_gpu_and_skips_alike() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let cfg = GptConfig { layers: 2, heads: 2, width: 16, context: 12, dropout: 0.0, ..GptConfig::default() };
    let mk = |dev: &Device, init: f32| {
        let o = OptimSettings {
            optimizer: OptimizerChoice::Muon,
            loss_scale: LossScale::Dynamic { init, interval: 2000 },
            ..OptimSettings::default()
        };
        let s = gpt_settings(40, Precision::Mixed);
        GptTrainer::with_optim(dev, Gpt::new(dev, cfg, 11).unwrap(), &gpt_corpus(4000), s, o, 0).unwrap()
    };
    for init in [65536.0, 2f32.powi(40)] {
        let (a, b) = (mk(&c, init), mk(&g, init));
        let la = gpt_losses(&c, &a, 40);
        let lb = gpt_losses(&g, &b, 40);
        let (sa, sb) = (scale_of(&c, a.trainer()), scale_of(&g, b.trainer()));
        eprintln!("init {init}: cpu {la:?} {sa:?}\ngpu {lb:?} {sb:?}");
        assert_eq!(sa, sb, "init {init}: the scale state");
        if init > 1e6 {
            assert!(sa.skipped > 0, "2^40 overflows f16 at first");
        }
        assert!(la[39] < la[0] - 0.3, "init {init}: it trains: {} -> {}", la[0], la[39]);
        for (s, (x, y)) in la.iter().zip(&lb).enumerate() {
            assert!(((x - y) / x).abs() <= 1e-4, "init {init} step {s}: cpu loss {x}, gpu loss {y}");
        }
    }
}

/// Every kernel that writes weights or optimizer state, one-tensor and multi-tensor forms (and Muon's
/// momentum and update, one matrix and several per dispatch), on the CPU and lavapipe: with the step
/// counter's `STEP_SKIP` bit and clip[0] = -1 (what `clip_guard_scaled` writes on an overflow) it leaves
/// every buffer as it was; `advance_step` then clears the bit without counting; with the bit clear the
/// same dispatches change the buffers.
#[test]
fn every_update_kernel_leaves_a_skipped_step_alone() {
    use tigel::ops::muon as mk;
    use tigel::ops::optim::{AdamConfig, SgdConfig};
    use tigel::ops::optim_multi as multi;
    let devs: Vec<Device> = std::iter::once(cpu()).chain(gpu()).collect();
    let sched = Schedule::Cosine { lr: 1e-2, warmup: 2, total: 100, min_lr: 1e-3 };
    let adam = AdamConfig { beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.1, decoupled: true };
    let sgd = SgdConfig { momentum: 0.9, dampening: 0.0, nesterov: true, weight_decay: 0.01 };
    let mut rng = tigel::host::Rng::new(seed());
    let sizes = [1usize, 300, 1000];
    let vals: Vec<Vec<f32>> =
        (0..6 * sizes.len()).map(|i| (0..sizes[i % sizes.len()]).map(|_| rng.uniform(0.1, 1.0)).collect()).collect();
    for d in &devs {
        for skip in [true, false] {
            let t = |i: usize| Tensor::from_f32(d, &[vals[i].len()], &vals[i]).unwrap();
            let ts: Vec<Tensor> = (0..vals.len()).map(t).collect();
            let set = |k: usize| -> Vec<&Tensor> { ts[k * 3..k * 3 + 3].iter().collect() };
            let (p, g, m, v, b, e) = (set(0), set(1), set(2), set(3), set(4), set(5));
            let step = k::step_counter(d, if skip { 7 | STEP_SKIP } else { 7 }).unwrap();
            let clip = Tensor::from_f32(d, &[2], &[if skip { -1.0 } else { 0.5 }, 0.0]).unwrap();
            let arena = Tensor::from_f32(d, &[2600], &[0.25; 2600]).unwrap();
            let before: Vec<Vec<f32>> = ts.iter().map(|x| x.to_f32(d).unwrap()).collect();
            let after = |what: &str, run: &dyn Fn()| {
                let was: Vec<Vec<f32>> = ts.iter().map(|x| x.to_f32(d).unwrap()).collect();
                run();
                let now: Vec<Vec<f32>> = ts.iter().map(|x| x.to_f32(d).unwrap()).collect();
                assert_eq!(skip, was == now, "{what}: skip {skip}");
            };
            after("adam", &|| k::adam(d, &sched, &adam, p[0], g[0], m[0], v[0], &step, &clip).unwrap());
            after("sgd", &|| k::sgd(d, &sched, &sgd, p[1], g[1], Some(b[1]), &step, &clip).unwrap());
            after("ema", &|| k::ema(d, e[2], p[2], &step, 0.99, true).unwrap());
            after("adam_multi", &|| multi::adam_multi(d, &sched, &adam, &p, &g, &m, &v, &step, &clip).unwrap());
            after("sgd_multi", &|| multi::sgd_multi(d, &sched, &sgd, &p, &g, &b, &step, &clip).unwrap());
            after("ema_multi", &|| multi::ema_multi(d, &e, &p, &step, 0.99, true).unwrap());
            let dst = [0, 1, 301];
            for per in [1, tigel::kernels::optim::SLOTS] {
                after("muon_momentum", &|| mk::momentum_per(d, per, &g, &m, &clip, &arena, &dst, 0.9, true).unwrap());
                after("muon_update", &|| mk::update_per(d, per, &sched, 0.01, &p, &arena, &dst, &step).unwrap());
            }
            if skip {
                let now: Vec<Vec<f32>> = ts.iter().map(|x| x.to_f32(d).unwrap()).collect();
                assert_eq!(before, now);
            }
            k::advance_step(d, &step, 1).unwrap();
            assert_eq!(step.to_u32(d).unwrap()[0], if skip { 7 } else { 8 }, "advance_step");
        }
    }
}

/// `train gpt --loss-scale`: a bad value fails before training with an error naming the flag; a tiny
/// mixed run from 2^40 writes `loss_scale` and `skipped` into its training lines, skips while f16
/// overflows, and ends with a finite unscaled `grad_norm`.
#[test]
fn train_gpt_loss_scale_flag() {
    let dir = std::env::temp_dir().join(format!("tigel-loss-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.to_str().unwrap();
    let tiny = [
        "--backend",
        "cpu",
        "train",
        "gpt",
        "--precision",
        "mixed",
        "--layers",
        "1",
        "--heads",
        "1",
        "--width",
        "16",
        "--context",
        "16",
        "--batch",
        "2",
        "--steps",
        "40",
        "--log-every",
        "10",
        "--eval-every",
        "40",
        "--eval-windows",
        "2",
        "--sample-tokens",
        "0",
        "--out",
        out,
    ];
    for bad in ["0.5", "dynamic:8", "fast"] {
        let (rc, _, err) = output_of(tigel_command().args(tiny).args(["--loss-scale", bad]));
        assert!(rc != 0 && err.contains("--loss-scale"), "{bad}: rc {rc}: {err}");
    }
    let (rc, _, err) = output_of(tigel_command().args(tiny).args(["--loss-scale", "dynamic:1099511627776:2000"]));
    assert_eq!(rc, 0, "{err}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &serde_json::Value| l["kind"] == "train")
        .collect();
    let last = lines.last().unwrap();
    eprintln!("{last}");
    let skipped = last["skipped"].as_u64().unwrap();
    let scale = last["loss_scale"].as_f64().unwrap();
    assert!(skipped > 0 && scale == 2f64.powi(40 - skipped as i32), "{last}");
    assert!(last["grad_norm"].as_f64().is_some_and(|g| g.is_finite() && g < 100.0), "{last}");
    // Resumed, the run continues from the saved scale and count (the checkpoint's `optim.loss_scale`).
    let more = ["--backend", "cpu", "train", "gpt", "--precision", "mixed", "--resume", out, "--steps", "10"];
    let (rc, _, err) = output_of(tigel_command().args(more).args(["--log-every", "10", "--eval-windows", "2"]));
    assert_eq!(rc, 0, "{err}");
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let resumed: serde_json::Value = serde_json::from_str(text.lines().rev().nth(1).unwrap()).unwrap();
    assert_eq!(resumed["kind"], "train", "{resumed}");
    assert!(
        resumed["skipped"].as_u64().unwrap() >= skipped && resumed["loss_scale"].as_f64().unwrap() <= scale,
        "{resumed}"
    );
    // Exports and samples leave the scale out as optimizer state.
    let exported = dir.join("export.safetensors");
    let (rc, _, err) =
        output_of(tigel_command().args(["--backend", "cpu", "export", "--checkpoint", out, "--out"]).arg(&exported));
    assert_eq!(rc, 0, "{err}");
    let sample = ["--backend", "cpu", "sample", "gpt", "--checkpoint", out, "--tokens", "8"];
    let (rc, _, err) = output_of(tigel_command().args(sample));
    assert_eq!(rc, 0, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The loss-scale state travels in the checkpoint as an optional `loss_scale` tensor: a resumed run
/// under dynamic scaling continues from it, a fixed-scale or f32 run loads the checkpoint and leaves it,
/// and a checkpoint without it (an f32 run's, or an older one) starts the scale at its first value.
#[test]
fn a_resumed_run_continues_from_the_saved_scale() {
    use tigel::checkpoint::Checkpoint;
    let d = cpu();
    let dir = std::env::temp_dir().join(format!("tigel-loss-scale-ck-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = GptConfig { layers: 1, heads: 1, width: 16, context: 12, dropout: 0.0, ..GptConfig::default() };
    let corpus = gpt_corpus(4000);
    let mk = |precision, loss_scale| {
        let o = OptimSettings { loss_scale, ..OptimSettings::default() };
        let s = gpt_settings(10, precision);
        GptTrainer::with_optim(&d, Gpt::new(&d, cfg, 11).unwrap(), &corpus, s, o, 0).unwrap()
    };
    let dynamic = LossScale::Dynamic { init: 4.0, interval: 2 };
    let a = mk(Precision::Mixed, dynamic);
    gpt_losses(&d, &a, 5);
    let saved = scale_of(&d, a.trainer());
    assert_eq!(saved.scale, 16.0);
    let path = dir.join("mixed.safetensors");
    a.save(&d, &path, "test").unwrap();
    let ck = Checkpoint::load(&path).unwrap();
    assert!(ck.tensors.contains_key(tigel::train::LOSS_SCALE));
    let b = mk(Precision::Mixed, dynamic);
    b.restore(&d, &ck).unwrap();
    assert_eq!(scale_of(&d, b.trainer()), saved);
    let state = |t: &GptTrainer| t.trainer().scaler().unwrap().state().to_f32(&d).unwrap();
    assert_eq!(state(&b), state(&a), "the run of finite steps too");
    let c = mk(Precision::Mixed, LossScale::Fixed(8.0));
    c.restore(&d, &ck).unwrap();
    assert_eq!(scale_of(&d, c.trainer()).scale, 8.0, "a fixed scale stays");
    let f = mk(Precision::F32, dynamic);
    f.restore(&d, &ck).unwrap();
    assert!(f.trainer().read_loss_scale(&d).is_none());
    let path32 = dir.join("f32.safetensors");
    f.save(&d, &path32, "test").unwrap();
    let ck32 = Checkpoint::load(&path32).unwrap();
    assert!(!ck32.tensors.contains_key(tigel::train::LOSS_SCALE));
    let m = mk(Precision::Mixed, dynamic);
    m.restore(&d, &ck32).unwrap();
    assert_eq!(scale_of(&d, m.trainer()).scale, 4.0, "no saved scale: the first one");
    let _ = std::fs::remove_dir_all(&dir);
}
