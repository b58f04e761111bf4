//! Norms with a fused activation (`Graph::group_norm_act`, `Graph::batch_norm_act`, their eager ops):
//! against the unfused pair (the norm, then `unary`) on each engine, and the GPU against the CPU twin.
//!
//! On the CPU the fused kernels do the unfused pair's arithmetic in the same order, so values and
//! gradients must be equal bit for bit. A GPU compiler may contract a multiply-add differently in the
//! two kernel sets, so there the pair must agree to a few f32 roundings of each value (1e-5 absolute
//! plus 1e-4 relative, for values and gradients of order one). GPU against twin: the same bound as the
//! family's twin test would give these sizes (sums of at most ~1000 terms of order 4): 2e-4 absolute plus
//! 2e-4 relative.
mod common;
use common::*;
use tigel::graph::{Graph, NodeId, Plan};
use tigel::ops::chnorm::{
    batch_norm_backward_fused, batch_norm_train_act, group_norm_act, group_norm_backward_fused, FusedAct,
};
use tigel::ops::elementwise::Unary;
use tigel::{Device, Tensor};

const EPS: f32 = 1e-5;
const ACTS: [(Unary, f32); 4] =
    [(Unary::Silu, 0.01), (Unary::Relu, 0.01), (Unary::LeakyRelu, 0.2), (Unary::Tanh, 0.01)];

/// (shape, groups: None for batch norm): every chunk count class of the kernels, both ranks.
fn cases() -> Vec<(Vec<usize>, Option<usize>)> {
    vec![
        (vec![2, 4, 3, 5], Some(2)),
        (vec![2, 4, 3, 5], None),
        (vec![3, 8, 8, 8], Some(4)),
        (vec![3, 8, 8, 8], None),
        (vec![2, 6, 20, 20], Some(3)),
        (vec![4, 16, 4, 4], None),
        (vec![9, 5], None),
        (vec![4, 6], Some(2)),
    ]
}

struct Inputs {
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    w: Vec<f32>,
}

/// x in [-3, 3] plus a per-channel offset in [-4, 4]; gamma in [-2, 2], beta in [-1, 1]; w in [-1, 1]
/// (the loss weights, so the output gradient).
fn inputs(rng: &mut Rng, shape: &[usize]) -> Inputs {
    let (c, hw) = (shape[1], shape[2..].iter().product::<usize>());
    let mut x = rng.vec(shape.iter().product(), -3.0, 3.0);
    let off = rng.vec(c, -4.0, 4.0);
    for (p, plane) in x.chunks_mut(hw).enumerate() {
        plane.iter_mut().for_each(|v| *v += off[p % c]);
    }
    let w = rng.vec(x.len(), -1.0, 1.0);
    Inputs { x, gamma: rng.vec(c, -2.0, 2.0), beta: rng.vec(c, -1.0, 1.0), w }
}

/// [y, dx, dgamma, dbeta] of loss = Σ y ⊙ w, y = act(norm(x)), fused into the norm or not.
fn run_graph(
    dev: &Device,
    shape: &[usize],
    groups: Option<usize>,
    act: FusedAct,
    fused: bool,
    i: &Inputs,
) -> Vec<Vec<f32>> {
    let c = shape[1];
    let mut g = Graph::new();
    let x = g.param(&Tensor::from_f32(dev, shape, &i.x).unwrap());
    let gamma = g.param(&Tensor::from_f32(dev, &[c], &i.gamma).unwrap());
    let beta = g.param(&Tensor::from_f32(dev, &[c], &i.beta).unwrap());
    let fa = fused.then_some(act);
    let y = match groups {
        Some(gr) => g.group_norm_act(x, gamma, beta, gr, EPS, fa),
        None => g.batch_norm_act(x, gamma, beta, EPS, None, fa),
    }
    .unwrap();
    let y = if fused { y } else { g.unary_with(act.op, y, act.alpha).unwrap() };
    let w = g.constant(&Tensor::from_f32(dev, shape, &i.w).unwrap());
    let yw = g.mul(y, w).unwrap();
    let loss = g.sum_all(yw).unwrap();
    let params: [NodeId; 3] = [x, gamma, beta];
    let grads = g.backward(loss, &params).unwrap();
    let mut outs = vec![y];
    outs.extend(&grads);
    let plan = Plan::build(dev, &g, &outs, |_| Ok(())).unwrap();
    plan.run(dev).unwrap();
    outs.iter().map(|o| plan.value(*o).to_f32(dev).unwrap()).collect()
}

const NAMES: [&str; 4] = ["y", "dx", "dgamma", "dbeta"];

#[test]
fn fused_norm_act_matches_the_unfused_pair() {
    let mut rng = Rng::new(seed());
    let devs: Vec<(&str, Device)> = std::iter::once(("cpu", cpu())).chain(gpu().map(|d| ("gpu", d))).collect();
    for (shape, groups) in cases() {
        for (op, alpha) in ACTS {
            let act = FusedAct { op, alpha };
            let inp = inputs(&mut rng, &shape);
            for (name, dev) in &devs {
                let fused = run_graph(dev, &shape, groups, act, true, &inp);
                let plain = run_graph(dev, &shape, groups, act, false, &inp);
                for ((f, p), what) in fused.iter().zip(&plain).zip(NAMES) {
                    let label = format!("{name} {shape:?} groups {groups:?} {op:?}: {what}");
                    if *name == "cpu" {
                        assert_eq!(f, p, "{label}: the CPU twins must agree bit for bit");
                    } else {
                        assert_close(&label, f, p, 1e-5, 1e-4);
                    }
                }
            }
        }
    }
}

/// [y, mean, rstd, dx, dgamma, dbeta] of the fused eager ops on `dev`, dy = w; with `acc`, dx has that
/// gradient term added in its pass.
fn run_eager(
    dev: &Device,
    shape: &[usize],
    groups: Option<usize>,
    act: FusedAct,
    i: &Inputs,
    acc: Option<&[f32]>,
) -> Vec<Vec<f32>> {
    let c = shape[1];
    let t = |d: &[f32], s: &[usize]| Tensor::from_f32(dev, s, d).unwrap();
    let (x, gamma, beta, dy) = (t(&i.x, shape), t(&i.gamma, &[c]), t(&i.beta, &[c]), t(&i.w, shape));
    let acc = acc.map(|a| t(a, shape));
    let ((y, m, r), (dx, dg, db)) = match groups {
        Some(gr) => {
            let f = group_norm_act(dev, &x, &gamma, &beta, gr, EPS, Some(act)).unwrap();
            let b = group_norm_backward_fused(dev, &x, &gamma, &beta, &f.1, &f.2, &dy, gr, Some(act), acc.as_ref());
            (f, b.unwrap())
        }
        None => {
            let f = batch_norm_train_act(dev, &x, &gamma, &beta, EPS, Some(act)).unwrap();
            let b = batch_norm_backward_fused(dev, &x, &gamma, &beta, &f.1, &f.2, &dy, Some(act), acc.as_ref());
            (f, b.unwrap())
        }
    };
    [y, m, r, dx, dg, db].iter().map(|v| v.to_f32(dev).unwrap()).collect()
}

#[test]
fn fused_norm_act_gpu_matches_cpu_twin() {
    // Each form of the reductions (workgroup memory, subgroups where the adapter has them).
    use tigel::kernels::chnorm::*;
    let reducing = [&CHNORM_STATS, &CHNORM_STATS_APPLY, &CHNORM_BWD_REDUCE, &CHNORM_BWD_GROUP, &CHNORM_BWD_GROUP_ACC];
    for_each_variant(&reducing, |_| fused_norm_act_gpu_matches_cpu_twin_once());
}

fn fused_norm_act_gpu_matches_cpu_twin_once() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for (shape, groups) in cases() {
        for (op, alpha) in ACTS {
            let act = FusedAct { op, alpha };
            let inp = inputs(&mut rng, &shape);
            let acc = rng.vec(inp.x.len(), -1.0, 1.0);
            let want = run_eager(&cpu, &shape, groups, act, &inp, Some(&acc));
            let got = run_eager(&gpu, &shape, groups, act, &inp, Some(&acc));
            for ((g, w), what) in got.iter().zip(&want).zip(["y", "mean", "rstd", "dx", "dgamma", "dbeta"]) {
                assert_close(&format!("{shape:?} groups {groups:?} {op:?}: {what}"), g, w, 2e-4, 2e-4);
            }
        }
    }
}

/// Where the device binds only WebGPU's default 8 storage buffers, a group norm's backward takes the
/// three-pass path (the one-workgroup kernel with a folded sum needs 9): the same numbers as the
/// adapter's full limits give.
#[test]
fn group_norm_backward_on_webgpu_default_limits_matches() {
    let Some(gpu) = gpu() else { return };
    let small = webgpu_defaults_device(&gpu);
    assert!(small.max_storage_buffers() < 9, "{}", small.max_storage_buffers());
    let mut rng = Rng::new(seed());
    for (shape, groups) in cases().into_iter().filter(|c| c.1.is_some()) {
        let act = FusedAct { op: Unary::Silu, alpha: 0.01 };
        let inp = inputs(&mut rng, &shape);
        let acc = rng.vec(inp.x.len(), -1.0, 1.0);
        for a in [None, Some(&acc[..])] {
            let want = run_eager(&gpu, &shape, groups, act, &inp, a);
            let got = run_eager(&small, &shape, groups, act, &inp, a);
            for ((g, w), what) in got.iter().zip(&want).zip(["y", "mean", "rstd", "dx", "dgamma", "dbeta"]) {
                assert_close(&format!("{shape:?} groups {groups:?} acc {}: {what}", a.is_some()), g, w, 2e-4, 2e-4);
            }
        }
    }
}

#[test]
fn folded_gradient_sum_matches_the_plain_sum() {
    // dx with a gradient term added in its pass against dx, then the term added on the host: bit for bit
    // on the CPU (the same f32 addition), to one rounding of the sum on the GPU.
    let mut rng = Rng::new(seed());
    let devs: Vec<(&str, Device)> = std::iter::once(("cpu", cpu())).chain(gpu().map(|d| ("gpu", d))).collect();
    for (shape, groups) in cases() {
        let act = FusedAct { op: Unary::Silu, alpha: 0.0 };
        let inp = inputs(&mut rng, &shape);
        let acc = rng.vec(inp.x.len(), -1.0, 1.0);
        for (name, dev) in &devs {
            let folded = run_eager(dev, &shape, groups, act, &inp, Some(&acc));
            let plain = run_eager(dev, &shape, groups, act, &inp, None);
            let want: Vec<f32> = acc.iter().zip(&plain[3]).map(|(a, d)| a + d).collect();
            let label = format!("{name} {shape:?} groups {groups:?}: dx + acc");
            if *name == "cpu" {
                assert_eq!(folded[3], want, "{label}");
            } else {
                assert_close(&label, &folded[3], &want, 1e-6, 1e-6);
            }
            assert_eq!(folded[4..], plain[4..], "{label}: dgamma, dbeta");
        }
    }
}

#[test]
fn fused_norm_act_bad_input_is_an_error() {
    let dev = cpu();
    let x = Tensor::from_f32(&dev, &[2, 4, 2, 2], &[0.5; 32]).unwrap();
    let c = Tensor::from_f32(&dev, &[4], &[1.0; 4]).unwrap();
    let c3 = Tensor::from_f32(&dev, &[3], &[1.0; 3]).unwrap();
    let act = FusedAct { op: Unary::Silu, alpha: 0.0 };
    let (_, m, r) = group_norm_act(&dev, &x, &c, &c, 2, EPS, Some(act)).unwrap();
    let e = group_norm_backward_fused(&dev, &x, &c, &c3, &m, &r, &x, 2, Some(act), None).unwrap_err().to_string();
    assert!(e.contains("beta") && e.contains("[4]"), "{e}");
    let e = group_norm_backward_fused(&dev, &x, &c, &c, &m, &r, &x, 2, Some(act), Some(&c)).unwrap_err().to_string();
    assert!(e.contains("acc"), "{e}");
    let e = batch_norm_train_act(&dev, &x, &c, &c3, EPS, Some(act)).unwrap_err().to_string();
    assert!(e.contains("beta"), "{e}");
}
