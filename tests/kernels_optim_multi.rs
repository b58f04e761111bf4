//! The multi-tensor optimizer kernels (`ops::optim_multi`): on each device, one dispatch over several
//! tensors gives exactly (bit for bit) what one dispatch per tensor gives, since each element runs the
//! same formula; and the GPU against the CPU twin with kernels_optim.rs's tolerances (see its header).
mod common;
use common::*;
use tigel::kernels::optim::{ADAM_SLOTS_WIDE, EMA_SLOTS_WIDE, SLOTS, SUMSQ_SLOTS_WIDE};
use tigel::ops::optim::{self as k, AdamConfig, Schedule, SgdConfig};
use tigel::ops::optim_multi as multi;
use tigel::{DType, Device, Tensor};

/// Sizes of one group: empty, tiny, a workgroup's worth plus or minus one, a prime, one past several
/// sumsq chunks.
const SIZES: [usize; 7] = [1, 255, 0, 257, 4099, 7, 20_000];
const SCHED: Schedule = Schedule::Cosine { lr: 0.01, warmup: 3, total: 20, min_lr: 0.001 };

fn f32s(d: &Device, v: &[f32]) -> Tensor {
    Tensor::from_f32(d, &[v.len()], v).unwrap()
}

fn reads(d: &Device, ts: &[Tensor]) -> Vec<Vec<f32>> {
    ts.iter().map(|t| t.to_f32(d).unwrap()).collect()
}

fn refs(ts: &[Tensor]) -> Vec<&Tensor> {
    ts.iter().collect()
}

fn data(rng: &mut Rng, lo: f32, hi: f32) -> Vec<Vec<f32>> {
    SIZES.iter().map(|&n| rng.vec(n, lo, hi)).collect()
}

fn close(what: &str, a: &[Vec<f32>], b: &[Vec<f32>], atol: f32, rtol: f32) {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_close(&format!("{what} tensor {i}"), x, y, atol, rtol);
    }
}

fn devices() -> Vec<Device> {
    let mut v = vec![cpu()];
    v.extend(gpu());
    v
}

#[test]
fn adam_multi_equals_one_dispatch_per_tensor() {
    assert_eq!(SIZES.len(), SLOTS);
    let mut rng = Rng::new(seed());
    let cfg = AdamConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, decoupled: true };
    let (p, g, m, v) =
        (data(&mut rng, -1.0, 1.0), data(&mut rng, -2.0, 2.0), data(&mut rng, -0.5, 0.5), data(&mut rng, 0.01, 1.0));
    let mut results = Vec::new();
    for d in devices() {
        let run = |multi_kernel: bool| {
            let up = |x: &Vec<Vec<f32>>| x.iter().map(|x| f32s(&d, x)).collect::<Vec<_>>();
            let (tp, tg, tm, tv) = (up(&p), up(&g), up(&m), up(&v));
            let step = k::step_counter(&d, 4).unwrap();
            let clip = f32s(&d, &[0.7, 0.0]);
            if multi_kernel {
                multi::adam_multi(&d, &SCHED, &cfg, &refs(&tp), &refs(&tg), &refs(&tm), &refs(&tv), &step, &clip)
                    .unwrap();
            } else {
                for i in 0..SLOTS {
                    k::adam(&d, &SCHED, &cfg, &tp[i], &tg[i], &tm[i], &tv[i], &step, &clip).unwrap();
                }
            }
            (reads(&d, &tp), reads(&d, &tm), reads(&d, &tv))
        };
        let (one, all) = (run(false), run(true));
        assert_eq!(one, all, "adam_multi vs adam on {}", d.name());
        results.push(all);
    }
    if let [c, gp] = &results[..] {
        close("adam param", &gp.0, &c.0, 1e-4 * 0.01, 1e-6);
        close("adam m", &gp.1, &c.1, 0.0, 1e-6);
        close("adam v", &gp.2, &c.2, 0.0, 1e-6);
    }
}

/// `adam_multi` past SLOTS tensors: the wide kernel, on the devices that bind its 62 storage buffers
/// (the CPU always), against one dispatch per tensor, and the GPU against the CPU twin where it runs.
#[test]
fn adam_multi_wide_equals_one_dispatch_per_tensor() {
    let mut rng = Rng::new(seed());
    let sizes: Vec<usize> = (0..ADAM_SLOTS_WIDE).map(|i| SIZES[i % SIZES.len()] + 3 * i).collect();
    let cfg = AdamConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, decoupled: true };
    let gen = |rng: &mut Rng, lo: f32, hi: f32| sizes.iter().map(|&n| rng.vec(n, lo, hi)).collect::<Vec<_>>();
    let (p, g, m, v) =
        (gen(&mut rng, -1.0, 1.0), gen(&mut rng, -2.0, 2.0), gen(&mut rng, -0.5, 0.5), gen(&mut rng, 0.01, 1.0));
    let mut results = Vec::new();
    for d in devices() {
        if multi::adam_per_dispatch(&d) < ADAM_SLOTS_WIDE {
            continue;
        }
        let run = |multi_kernel: bool| {
            let up = |x: &Vec<Vec<f32>>| x.iter().map(|x| f32s(&d, x)).collect::<Vec<_>>();
            let (tp, tg, tm, tv) = (up(&p), up(&g), up(&m), up(&v));
            let step = k::step_counter(&d, 4).unwrap();
            let clip = f32s(&d, &[0.7, 0.0]);
            if multi_kernel {
                multi::adam_multi(&d, &SCHED, &cfg, &refs(&tp), &refs(&tg), &refs(&tm), &refs(&tv), &step, &clip)
                    .unwrap();
            } else {
                for i in 0..sizes.len() {
                    k::adam(&d, &SCHED, &cfg, &tp[i], &tg[i], &tm[i], &tv[i], &step, &clip).unwrap();
                }
            }
            (reads(&d, &tp), reads(&d, &tm), reads(&d, &tv))
        };
        let (one, all) = (run(false), run(true));
        assert_eq!(one, all, "adam_multi_wide vs adam on {}", d.name());
        results.push(all);
    }
    assert!(!results.is_empty(), "the CPU binds any number of buffers");
    if let [c, gp] = &results[..] {
        close("adam param", &gp.0, &c.0, 1e-4 * 0.01, 1e-6);
        close("adam m", &gp.1, &c.1, 0.0, 1e-6);
        close("adam v", &gp.2, &c.2, 0.0, 1e-6);
    }
}

#[test]
fn sgd_multi_equals_one_dispatch_per_tensor() {
    let mut rng = Rng::new(seed());
    let (p, g, b) = (data(&mut rng, -1.0, 1.0), data(&mut rng, -2.0, 2.0), data(&mut rng, -0.5, 0.5));
    for cfg in [
        SgdConfig { momentum: 0.0, dampening: 0.0, nesterov: false, weight_decay: 0.01 },
        SgdConfig { momentum: 0.9, dampening: 0.0, nesterov: true, weight_decay: 0.0 },
    ] {
        let mut results = Vec::new();
        for d in devices() {
            let run = |multi_kernel: bool| {
                let up = |x: &Vec<Vec<f32>>| x.iter().map(|x| f32s(&d, x)).collect::<Vec<_>>();
                let (tp, tg, tb) = (up(&p), up(&g), up(&b));
                let moms = if cfg.momentum == 0.0 { vec![] } else { refs(&tb) };
                let step = k::step_counter(&d, 5).unwrap();
                let clip = f32s(&d, &[0.6, 0.0]);
                if multi_kernel {
                    multi::sgd_multi(&d, &SCHED, &cfg, &refs(&tp), &refs(&tg), &moms, &step, &clip).unwrap();
                } else {
                    for i in 0..SLOTS {
                        let m = moms.get(i).copied();
                        k::sgd(&d, &SCHED, &cfg, &tp[i], &tg[i], m, &step, &clip).unwrap();
                    }
                }
                (reads(&d, &tp), reads(&d, &tb))
            };
            let (one, all) = (run(false), run(true));
            assert_eq!(one, all, "sgd_multi vs sgd {cfg:?} on {}", d.name());
            results.push(all);
        }
        if let [c, gp] = &results[..] {
            close("sgd param", &gp.0, &c.0, 1e-7, 1e-6);
            close("sgd momentum", &gp.1, &c.1, 0.0, 1e-6);
        }
    }
}

#[test]
fn ema_multi_equals_one_dispatch_per_tensor() {
    let mut rng = Rng::new(seed());
    let (a, p) = (data(&mut rng, -1.0, 1.0), data(&mut rng, -1.0, 1.0));
    // Fewer tensors than slots: the unused slots are bound to stand-ins.
    let n = SLOTS - 2;
    let mut results = Vec::new();
    for d in devices() {
        let run = |multi_kernel: bool| {
            let ta: Vec<Tensor> = a[..n].iter().map(|x| f32s(&d, x)).collect();
            let tp: Vec<Tensor> = p[..n].iter().map(|x| f32s(&d, x)).collect();
            let step = k::step_counter(&d, 7).unwrap();
            if multi_kernel {
                multi::ema_multi(&d, &refs(&ta), &refs(&tp), &step, 0.99, true).unwrap();
            } else {
                for i in 0..n {
                    k::ema(&d, &ta[i], &tp[i], &step, 0.99, true).unwrap();
                }
            }
            reads(&d, &ta)
        };
        let (one, all) = (run(false), run(true));
        assert_eq!(one, all, "ema_multi vs ema on {}", d.name());
        results.push(all);
    }
    if let [c, gp] = &results[..] {
        close("ema", gp, c, 1e-7, 1e-6);
    }
}

/// `ema_multi` past SLOTS tensors: the wide kernel where the device binds it (the CPU and lavapipe),
/// against one dispatch per tensor, and the GPU against the CPU twin.
#[test]
fn ema_multi_wide_equals_one_dispatch_per_tensor() {
    let mut rng = Rng::new(seed());
    let sizes: Vec<usize> = (0..EMA_SLOTS_WIDE - 1).map(|i| SIZES[i % SIZES.len()] + 5 * i).collect();
    let gen = |rng: &mut Rng| sizes.iter().map(|&n| rng.vec(n, -1.0, 1.0)).collect::<Vec<_>>();
    let (a, p) = (gen(&mut rng), gen(&mut rng));
    let mut results = Vec::new();
    for d in devices() {
        if multi::ema_per_dispatch(&d) < EMA_SLOTS_WIDE {
            continue;
        }
        let run = |multi_kernel: bool| {
            let ta: Vec<Tensor> = a.iter().map(|x| f32s(&d, x)).collect();
            let tp: Vec<Tensor> = p.iter().map(|x| f32s(&d, x)).collect();
            let step = k::step_counter(&d, 7).unwrap();
            if multi_kernel {
                multi::ema_multi(&d, &refs(&ta), &refs(&tp), &step, 0.99, true).unwrap();
            } else {
                for i in 0..sizes.len() {
                    k::ema(&d, &ta[i], &tp[i], &step, 0.99, true).unwrap();
                }
            }
            reads(&d, &ta)
        };
        let (one, all) = (run(false), run(true));
        assert_eq!(one, all, "ema_multi_wide vs ema on {}", d.name());
        results.push(all);
    }
    assert!(!results.is_empty(), "the CPU binds any number of buffers");
    if let [c, gp] = &results[..] {
        close("ema", gp, c, 1e-7, 1e-6);
    }
}

#[test]
fn sumsq_multi_equals_one_dispatch_per_tensor() {
    let mut rng = Rng::new(seed());
    let x = data(&mut rng, -1.0, 1.0);
    let first = 3; // slots before `first` belong to nobody
    let mut slots = Vec::new();
    let mut at = first;
    for &n in &SIZES {
        slots.push(at);
        at += k::sumsq_layout(n).1;
    }
    let mut results = Vec::new();
    for d in devices() {
        let run = |multi_kernel: bool| {
            let tx: Vec<Tensor> = x.iter().map(|x| f32s(&d, x)).collect();
            let partials = Tensor::empty(&d, &[at], DType::F32).unwrap();
            if multi_kernel {
                assert_eq!(multi::sumsq_multi(&d, &refs(&tx), &slots, &partials).unwrap(), at - first);
            } else {
                for (t, &s) in tx.iter().zip(&slots) {
                    k::sumsq_partial(&d, t, &partials, s).unwrap();
                }
            }
            partials.to_f32(&d).unwrap()[first..].to_vec()
        };
        let (one, all) = (run(false), run(true));
        assert_eq!(one, all, "sumsq_multi vs sumsq_partial on {}", d.name());
        results.push(all);
    }
    if let [c, gp] = &results[..] {
        assert_close("sumsq partials", gp, c, 0.0, 1e-6);
    }
}

/// `sumsq_multi` past SLOTS tensors (the wide kernel, where the device binds it) against one dispatch
/// per tensor, and the GPU against the CPU twin.
#[test]
fn sumsq_multi_wide_equals_one_dispatch_per_tensor() {
    let mut rng = Rng::new(seed());
    let sizes: Vec<usize> = (0..SUMSQ_SLOTS_WIDE).map(|i| SIZES[i % SIZES.len()] + i).collect();
    let x: Vec<Vec<f32>> = sizes.iter().map(|&n| rng.vec(n, -1.0, 1.0)).collect();
    let first = 2;
    let mut slots = Vec::new();
    let mut at = first;
    for &n in &sizes {
        slots.push(at);
        at += k::sumsq_layout(n).1;
    }
    let mut results = Vec::new();
    for d in devices() {
        let per = multi::sumsq_per_dispatch(&d);
        if per < SUMSQ_SLOTS_WIDE {
            continue;
        }
        let run = |multi_kernel: bool| {
            let tx: Vec<Tensor> = x.iter().map(|x| f32s(&d, x)).collect();
            let partials = Tensor::empty(&d, &[at], DType::F32).unwrap();
            if multi_kernel {
                assert_eq!(multi::sumsq_multi(&d, &refs(&tx), &slots, &partials).unwrap(), at - first);
            } else {
                for (t, &s) in tx.iter().zip(&slots) {
                    k::sumsq_partial(&d, t, &partials, s).unwrap();
                }
            }
            partials.to_f32(&d).unwrap()[first..].to_vec()
        };
        let (one, all) = (run(false), run(true));
        assert_eq!(one, all, "sumsq_multi_wide vs sumsq_partial on {}", d.name());
        results.push(all);
    }
    assert!(!results.is_empty(), "the CPU binds any number of buffers");
    if let [c, gp] = &results[..] {
        assert_close("sumsq_multi_wide partials", gp, c, 0.0, 1e-6);
    }
}

#[test]
fn multi_refuses_bad_lists() {
    let d = cpu();
    let t = f32s(&d, &[1.0, 2.0]);
    let u = f32s(&d, &[1.0]);
    let step = k::step_counter(&d, 0).unwrap();
    let cfg = AdamConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.0, decoupled: true };
    let e = multi::adam_multi(&d, &SCHED, &cfg, &[&t], &[&u], &[&t], &[&t], &step, &t).unwrap_err().to_string();
    assert!(e.contains("adam_multi") && e.contains("gradient"), "{e}");
    // One past what a dispatch takes on the CPU (the wide kernels' counts; SGD has no wide form).
    let many: Vec<&Tensor> = (0..EMA_SLOTS_WIDE + 1).map(|_| &t).collect();
    let e = multi::ema_multi(&d, &many, &many, &step, 0.9, false).unwrap_err().to_string();
    assert!(e.contains("at most"), "{e}");
    let many: Vec<&Tensor> = (0..SLOTS + 1).map(|_| &t).collect();
    let sgd = SgdConfig { momentum: 0.0, dampening: 0.0, nesterov: false, weight_decay: 0.0 };
    let e = multi::sgd_multi(&d, &SCHED, &sgd, &many, &many, &[], &step, &t).unwrap_err().to_string();
    assert!(e.contains("at most"), "{e}");
    let many: Vec<&Tensor> = (0..ADAM_SLOTS_WIDE + 1).map(|_| &t).collect();
    let e = multi::adam_multi(&d, &SCHED, &cfg, &many, &many, &many, &many, &step, &t).unwrap_err().to_string();
    assert!(e.contains("at most"), "{e}");
    let many: Vec<&Tensor> = (0..SUMSQ_SLOTS_WIDE + 1).map(|_| &t).collect();
    let first: Vec<usize> = (0..many.len()).collect();
    let e = multi::sumsq_multi(&d, &many, &first, &t).unwrap_err().to_string();
    assert!(e.contains("at most"), "{e}");
}
