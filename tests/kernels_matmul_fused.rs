//! The matmul epilogue (bias and activation in each `*_bias_act` entry point, and the `_keep` forms
//! that also store the pre-activation, `ops::matmul_fused`) and
//! its backward (matmul_act_bias_bwd): each against the unfused ops it replaces on the same device, and
//! the GPU against the CPU twin, on every kernel the chooser can pick (every tile variant of the
//! blocked one), random inputs, odd shapes.
//!
//! Tolerances: the fused forward adds the bias to and applies the activation on the same f32 product
//! as the unfused ops (the same kernel's sum), so the two agree to the ulp: bit for bit on the CPU,
//! where both run the same twins; 1e-6 on the GPU. The GPU and the CPU twin sum K in different orders
//! (K ≤ 70 products of values in [-1, 1): 2e-5). dz is the same product dy·act' as the unfused
//! `unary_backward` (from the output: tanh' = 1 − y², sigmoid' = y(1 − y), a few ulps from the forms
//! at z: 1e-5 relative); the bias gradient is a sum of up to 70 rows in another order (1e-5).
mod common;
use common::*;
use tigel::kernels::matmul::{MATMUL_BLOCKED, MATMUL_BLOCKED_BIAS_ACT, MATMUL_BLOCKED_BIAS_ACT_KEEP};
use tigel::ops::chnorm::FusedAct;
use tigel::ops::elementwise::{self as ew, Unary};
use tigel::ops::matmul::{self as mm, KernelChoice, MatmulOpts};
use tigel::ops::matmul_fused::{self as mf, MatmulEpi};
use tigel::ops::reduce;
use tigel::{DType, Device, Tensor};

/// (m, n, k): a single element, primes, past one 64-tile, vec4-aligned.
const SHAPES: [(usize, usize, usize); 5] = [(1, 1, 1), (17, 33, 13), (70, 65, 31), (64, 68, 20), (5, 96, 48)];

const ACTS: [Option<(Unary, f32)>; 7] = [
    None,
    Some((Unary::Relu, 0.01)),
    Some((Unary::LeakyRelu, 0.2)),
    Some((Unary::Tanh, 0.01)),
    Some((Unary::Sigmoid, 0.01)),
    Some((Unary::Gelu, 0.01)),
    Some((Unary::Silu, 0.01)),
];

const KERNELS: [KernelChoice; 4] =
    [KernelChoice::Tiled, KernelChoice::TiledVec4, KernelChoice::Small, KernelChoice::Blocked];

fn up(d: &Device, shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_f32(d, shape, v).unwrap()
}

fn fused(a: Option<(Unary, f32)>) -> Option<FusedAct> {
    a.map(|(op, alpha)| FusedAct { op, alpha })
}

/// The fused result on kernel `kc`, and the unfused chain's (the same kernel's product, a broadcast add,
/// the unary op) on `d`.
fn forward(
    d: &Device,
    (m, n, k): (usize, usize, usize),
    o: MatmulOpts,
    kc: KernelChoice,
    act: Option<(Unary, f32)>,
    v: &[Vec<f32>; 3],
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let a = if o.trans_a { up(d, &[k, m], &v[0]) } else { up(d, &[m, k], &v[0]) };
    let b = if o.trans_b { up(d, &[n, k], &v[1]) } else { up(d, &[k, n], &v[1]) };
    let bias = up(d, &[n], &v[2]);
    let y = mf::matmul_bias_act_with(d, &a, &b, o, MatmulEpi { bias: &bias, act: fused(act), keep: None }, kc).unwrap();
    let z = ew::add(d, &mm::matmul_with(d, &a, &b, o, kc).unwrap(), &bias).unwrap();
    let want = match act {
        Some((op, alpha)) => ew::unary_with(d, op, &z, alpha).unwrap(),
        None => z.clone(),
    };
    // The `_keep` form on the same kernel choice: the same y, and z beside it.
    let zk = Tensor::empty(d, &z.shape, DType::F32).unwrap();
    let yk = mf::matmul_bias_act_with(d, &a, &b, o, MatmulEpi { bias: &bias, act: fused(act), keep: Some(&zk) }, kc)
        .unwrap();
    let (y, yk) = (y.to_f32(d).unwrap(), yk.to_f32(d).unwrap());
    // The same arithmetic (the vec4 kernel's shapes run matmul_tiled's keep form: the same sums).
    assert_close("the _keep form's output", &yk, &y, 1e-6, 1e-6);
    (y, want.to_f32(d).unwrap(), zk.to_f32(d).unwrap(), z.to_f32(d).unwrap())
}

#[test]
fn epilogue_matches_unfused_ops_and_cpu_twin() {
    let blocked = [&MATMUL_BLOCKED, &MATMUL_BLOCKED_BIAS_ACT, &MATMUL_BLOCKED_BIAS_ACT_KEEP];
    for_each_variant(&blocked, |_| epilogue_matches_once());
}

fn epilogue_matches_once() {
    let devs: Vec<Device> = std::iter::once(cpu()).chain(gpu()).collect();
    let mut rng = Rng::new(seed());
    for s @ (m, n, k) in SHAPES {
        let v = [rng.vec(m * k, -1.0, 1.0), rng.vec(k * n, -1.0, 1.0), rng.vec(n, -1.0, 1.0)];
        for (ta, tb, alpha) in [(false, false, 1.0), (true, false, 0.5), (false, true, 1.0), (true, true, 2.0)] {
            let o = MatmulOpts { trans_a: ta, trans_b: tb, alpha };
            for kc in KERNELS {
                if kc == KernelChoice::TiledVec4 && !mm::vec4_aligned(m, n, k, ta, tb) {
                    continue;
                }
                for act in ACTS {
                    let what = format!("{s:?} {o:?} {kc:?} {act:?}");
                    let mut first: Option<Vec<f32>> = None;
                    for (i, d) in devs.iter().enumerate() {
                        let (y, want, zk, z) = forward(d, s, o, kc, act, &v);
                        if i == 0 {
                            assert_eq!(y, want, "{what}: the CPU twin's fused and unfused differ");
                            assert_eq!(zk, z, "{what}: the CPU twin's kept z and the unfused one differ");
                        } else {
                            assert_close(&format!("{what}: fused vs unfused"), &y, &want, 1e-6, 1e-6);
                            assert_close(&format!("{what}: kept z vs unfused"), &zk, &z, 1e-6, 1e-6);
                        }
                        match &first {
                            None => first = Some(y),
                            Some(w) => assert_close(&format!("{what}: GPU vs CPU twin"), &y, w, 2e-5, 2e-5),
                        }
                    }
                }
            }
        }
    }
}

/// matmul_act_bias_bwd: dz = the unfused activation backward at the pre-activation, db = Σ dz over the
/// rows, from y or from z; the GPU agrees with the CPU twin. Shapes past one workgroup's 64 columns.
#[test]
fn act_bias_backward_matches_unfused_ops_and_cpu_twin() {
    let devs: Vec<Device> = std::iter::once(cpu()).chain(gpu()).collect();
    let mut rng = Rng::new(seed());
    for (rows, n) in [(1, 1), (7, 3), (70, 65), (33, 130)] {
        let z = rng.vec(rows * n, -3.0, 3.0);
        let dy = rng.vec(rows * n, -1.0, 1.0);
        for act in ACTS {
            let from_outs: &[bool] = match act {
                Some((Unary::Gelu | Unary::Silu, _)) => &[false],
                Some(_) => &[true, false],
                None => &[false],
            };
            for &from_out in from_outs {
                let what = format!("[{rows}, {n}] {act:?} from_out {from_out}");
                let mut first: Option<(Vec<f32>, Vec<f32>)> = None;
                for d in &devs {
                    let (zt, dyt) = (up(d, &[rows, n], &z), up(d, &[rows, n], &dy));
                    let t = match (act, from_out) {
                        (Some((op, alpha)), true) => ew::unary_with(d, op, &zt, alpha).unwrap(),
                        _ => zt.clone(),
                    };
                    let (dz, db) = mf::matmul_act_bias_backward(d, &t, &dyt, fused(act), from_out).unwrap();
                    let want = match act {
                        Some((op, alpha)) => ew::unary_backward(d, op, &zt, &dyt, alpha).unwrap(),
                        None => dyt.clone(),
                    };
                    let want_db = reduce::sum(d, &want, 0, false).unwrap().to_f32(d).unwrap();
                    let (dz, db) = (dz.to_f32(d).unwrap(), db.to_f32(d).unwrap());
                    let want = want.to_f32(d).unwrap();
                    if from_out {
                        assert_close(&format!("{what}: dz"), &dz, &want, 1e-6, 1e-5);
                    } else {
                        assert_eq!(dz, want, "{what}: dz differs from unary_backward's");
                    }
                    assert_close(&format!("{what}: db"), &db, &want_db, 1e-5, 1e-5);
                    match &first {
                        None => first = Some((dz, db)),
                        Some((wz, wb)) => {
                            assert_close(&format!("{what}: dz GPU vs CPU twin"), &dz, wz, 1e-5, 1e-5);
                            assert_close(&format!("{what}: db GPU vs CPU twin"), &db, wb, 1e-5, 1e-5);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn bad_input_is_an_error_naming_it() {
    let d = cpu();
    let a = up(&d, &[3, 4], &[0.5; 12]);
    let b = up(&d, &[4, 5], &[0.5; 20]);
    let o = MatmulOpts::default();
    let short = up(&d, &[4], &[0.0; 4]);
    let e = mf::matmul_bias_act(&d, &a, &b, o, &short, None).unwrap_err().to_string();
    assert!(e.contains("bias") && e.contains("N = 5"), "{e}");
    let a16 = tigel::ops::cast::cast(&d, &a, DType::F16).unwrap();
    let bias = up(&d, &[5], &[0.0; 5]);
    let e = mf::matmul_bias_act(&d, &a16, &b, o, &bias, None).unwrap_err().to_string();
    assert!(e.contains("f32"), "{e}");
    let epi = MatmulEpi { bias: &bias, act: None, keep: Some(&short) };
    let e = mf::matmul_bias_act_with(&d, &a, &b, o, epi, KernelChoice::Auto).unwrap_err().to_string();
    assert!(e.contains("pre-activation") && e.contains("[3, 5]"), "{e}");
    let y = up(&d, &[3, 5], &[0.5; 15]);
    let gelu = Some(FusedAct { op: Unary::Gelu, alpha: 0.01 });
    let e = mf::matmul_act_bias_backward(&d, &y, &y, gelu, true).unwrap_err().to_string();
    assert!(e.contains("Gelu"), "{e}");
    let e = mf::matmul_act_bias_backward(&d, &y, &bias, None, false).unwrap_err().to_string();
    assert!(e.contains("[3, 5]") && e.contains("[5]"), "{e}");
}
