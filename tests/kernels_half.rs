//! f16 storage: the casts (shaders/cast.wgsl) and the matmul with f16 operands (shaders/matmul_half.wgsl),
//! GPU (lavapipe) vs CPU twin vs reference.
//!
//! Tolerances. A cast to f16 rounds to one of the two neighbours of an inexact value: the CPU twin to the
//! nearest (ties to even), the GPU's pack2x16float either way (WGSL leaves it to the implementation), so
//! each is within one f16 ulp of the exact value: rtol 2^-10 for normal values, atol 2^-24 (the
//! subnormal spacing) near zero. f16 -> f32 is exact. The half matmul widens its f16 operands exactly and
//! multiplies in f32, so its CPU twin equals the f32 matmul of the f16-rounded operands bit for bit, and
//! the GPU agrees with the twin within the f32 matmul's own tolerance (tests/kernels_matmul.rs: 2e-6 *
//! (1 + sqrt K) * the magnitude of the terms).
mod common;
use common::*;
use tigel::host::f16;
use tigel::ops::cast::cast;
use tigel::ops::matmul::{self as mm, MatmulOpts};
use tigel::{DType, Device, Tensor};

const F16_TOL: Tol = Tol { atol: 6e-8, rtol: 1.0 / 1024.0 };

#[test]
fn cast_f32_to_f16_and_back() {
    // Sizes of 1, odd counts (a half-filled last word), workgroup boundaries (256 words = 512 elements).
    for n in [1usize, 2, 3, 255, 511, 512, 513, 1024, 100_003] {
        let c =
            check_op(&format!("cast f16 [{n}]"), &[uniform(&[n], -4.0, 4.0)], F16_TOL, |g, x| g.cast(x[0], DType::F16));
        // The twin rounds to nearest even exactly as the half crate does.
        let Data::F32(_, x) = &c.inputs[0] else { unreachable!() };
        let want: Vec<f32> = x.iter().map(|&v| f16::round(v)).collect();
        assert_eq!(c.cpu, want, "cast f16 [{n}]: the twin rounds to nearest even");
        // Over most of the f16 range (the round trip's only error is the f16 rounding).
        check_op(&format!("cast f16 -> f32 [{n}]"), &[uniform(&[n], -60000.0, 60000.0)], F16_TOL, |g, x| {
            let h = g.cast(x[0], DType::F16)?;
            g.cast(h, DType::F32)
        });
    }
}

#[test]
fn cast_edge_values() {
    // Exact f16 values survive both ways bit for bit on both engines; the range's ends overflow to inf.
    let exact = [0.0f32, -0.0, 1.0, -2.5, 65504.0, -65504.0, 6.1035156e-5, 5.9604645e-8, 1.0009766];
    let big = [1e6f32, -1e6];
    let run = |d: &Device, v: &[f32]| {
        let t = Tensor::from_f32(d, &[v.len()], v).unwrap();
        let h = cast(d, &t, DType::F16).unwrap();
        (h.to_f32(d).unwrap(), cast(d, &h, DType::F32).unwrap().to_f32(d).unwrap())
    };
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    for d in &devs {
        let (h, f) = run(d, &exact);
        assert_eq!(h.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), exact.map(f32::to_bits).to_vec());
        assert_eq!(f.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), exact.map(f32::to_bits).to_vec());
        let (h, _) = run(d, &big);
        assert_eq!(h, vec![f32::INFINITY, f32::NEG_INFINITY]);
    }
}

#[test]
fn cast_refusals() {
    let d = cpu();
    let ids = Tensor::from_u32(&d, &[3], &[1, 2, 3]).unwrap();
    assert!(cast(&d, &ids, DType::F16).is_err());
    let x = Tensor::from_f32(&d, &[3], &[1.0, 2.0, 3.0]).unwrap();
    assert!(cast(&d, &x, DType::U32).is_err());
    // A cast to the tensor's own dtype shares it.
    assert!(cast(&d, &x, DType::F32).unwrap().buf.same(&x.buf));
    let mut g = tigel::graph::Graph::new();
    let n = g.input(&ids);
    assert!(g.cast(n, DType::F16).is_err());
    // Kernels that move one word per element refuse f16, naming the op.
    let h = cast(&d, &x, DType::F16).unwrap();
    let e = tigel::ops::layout::copy(&d, &h).unwrap_err().to_string();
    assert!(e.contains("copy") && e.contains("f16"), "{e}");
    assert!(tigel::ops::layout::slice(&d, &h, 0, 0, 1).is_err());
    // A matmul's result is f32; matmul_half needs an f16 operand.
    let a = Tensor::from_f32_as_f16(&d, &[2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    let b = Tensor::from_f32(&d, &[2, 2], &[1.0, 0.0, 0.0, 1.0]).unwrap();
    let out16 = Tensor::empty(&d, &[2, 2], DType::F16).unwrap();
    assert!(mm::matmul_into(&d, &a, &b, MatmulOpts::default(), &out16, false).is_err());
    assert!(mm::matmul_with(&d, &b, &b, MatmulOpts::default(), mm::KernelChoice::Half).is_err());
    let c = mm::matmul(&d, &a, &b, MatmulOpts::default()).unwrap();
    assert_eq!((c.dtype, c.to_f32(&d).unwrap()), (DType::F32, vec![1.0, 2.0, 3.0, 4.0]));
}

/// One half-matmul case: A [za?, M, K] (or [.., K, M]), B likewise, each f16 or f32.
struct Case {
    shape_a: Vec<usize>,
    shape_b: Vec<usize>,
    a: Vec<f32>,
    b: Vec<f32>,
    half_a: bool,
    half_b: bool,
    opts: MatmulOpts,
    k: usize,
}

impl Case {
    fn tensor(d: &Device, shape: &[usize], v: &[f32], half: bool) -> Tensor {
        if half {
            Tensor::from_f32_as_f16(d, shape, v).unwrap()
        } else {
            Tensor::from_f32(d, shape, v).unwrap()
        }
    }
    /// (C with the half kernel, C of the f32 kernels on the f16-rounded operands), accumulated onto `c0`.
    fn run(&self, d: &Device, c0: Option<&[f32]>) -> (Vec<f32>, Vec<f32>) {
        let round =
            |v: &[f32], on: bool| -> Vec<f32> { v.iter().map(|&x| if on { f16::round(x) } else { x }).collect() };
        let a = Case::tensor(d, &self.shape_a, &self.a, self.half_a);
        let b = Case::tensor(d, &self.shape_b, &self.b, self.half_b);
        let ar = Tensor::from_f32(d, &self.shape_a, &round(&self.a, self.half_a)).unwrap();
        let br = Tensor::from_f32(d, &self.shape_b, &round(&self.b, self.half_b)).unwrap();
        let s = mm::matmul_shape(&self.shape_a, &self.shape_b, &self.opts).unwrap();
        let out = |x: &Tensor, y: &Tensor| {
            let c = match c0 {
                Some(c0) => Tensor::from_f32(d, &s.out_shape, c0).unwrap(),
                None => Tensor::empty(d, &s.out_shape, DType::F32).unwrap(),
            };
            mm::matmul_into(d, x, y, self.opts, &c, c0.is_some()).unwrap();
            c.to_f32(d).unwrap()
        };
        (out(&a, &b), out(&ar, &br))
    }
}

#[test]
fn matmul_half_operands_gpu_vs_twin() {
    let mut rng = Rng::new(seed());
    let gpu = gpu();
    let cpu = cpu();
    let shapes = [(1, 1, 1), (7, 61, 13), (31, 67, 13), (64, 64, 64), (65, 63, 33), (67, 64, 12), (129, 129, 129)];
    for (m, n, k) in shapes {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            for (half_a, half_b) in [(true, true), (true, false), (false, true)] {
                for (za, zb) in [(None, None), (Some(3), Some(3)), (Some(2), None)] {
                    let st = |z: Option<usize>, r: usize, c: usize| -> Vec<usize> {
                        z.map_or(vec![r, c], |z| vec![z, r, c])
                    };
                    let shape_a = if ta { st(za, k, m) } else { st(za, m, k) };
                    let shape_b = if tb { st(zb, n, k) } else { st(zb, k, n) };
                    let na: usize = shape_a.iter().product();
                    let nb: usize = shape_b.iter().product();
                    let c = Case {
                        a: rng.vec(na, -1.0, 1.0),
                        b: rng.vec(nb, -1.0, 1.0),
                        shape_a,
                        shape_b,
                        half_a,
                        half_b,
                        opts: MatmulOpts { trans_a: ta, trans_b: tb, alpha: if za.is_some() { 0.7 } else { 1.0 } },
                        k,
                    };
                    let what = format!("matmul_half {m}x{n}x{k} ta={ta} tb={tb} f16 a={half_a} b={half_b} za={za:?}");
                    let accumulate = za == Some(2);
                    let out_n = za.map_or(1, |z| z) * m * n;
                    let c0 = accumulate.then(|| rng.vec(out_n, -1.0, 1.0));
                    let (half, want) = c.run(&cpu, c0.as_deref());
                    // The twin widens exactly, then runs the f32 product: bit for bit.
                    assert_eq!(half, want, "{what}: twin vs f32 matmul of the rounded operands");
                    if let Some(g) = &gpu {
                        let (got, _) = c.run(g, c0.as_deref());
                        // |terms| <= 1, so |alpha| * sum_p |a b| + |c_old| <= K + 1.
                        let mag = (c.k + 1) as f32;
                        assert_close(&what, &got, &want, 2e-6 * (1.0 + (c.k as f32).sqrt()) * mag, 0.0);
                    }
                }
            }
        }
    }
}

/// The SwiGLU backward with u and v stored as f16 (what a mixed-precision plan keeps for the backward):
/// the twin equals the f32 backward of the widened values bit for bit, and the GPU (lavapipe) agrees
/// with the twin within tests/kernels_gated.rs' tolerance for the f32 backward (1e-5).
#[test]
fn silu_gate_backward_reads_f16_projections() {
    use tigel::host::Rng;
    use tigel::ops::gated::silu_gate_backward;
    // Odd counts (a half-filled last word), a workgroup boundary (256), and many workgroups.
    for n in [1usize, 3, 256, 257, 70_001] {
        let mut rng = Rng::new(seed() ^ n as u64);
        let mut draw = |lo: f32, hi: f32| (0..n).map(|_| rng.uniform(lo, hi)).collect::<Vec<f32>>();
        let (u, v, dy) = (draw(-6.0, 6.0), draw(-3.0, 3.0), draw(-1.0, 1.0));
        let run = |d: &Device, half: bool| -> (Vec<f32>, Vec<f32>) {
            let t = |x: &[f32]| {
                if half {
                    Tensor::from_f32_as_f16(d, &[n], x).unwrap()
                } else {
                    Tensor::from_f32(d, &[n], &x.iter().map(|&x| f16::round(x)).collect::<Vec<_>>()).unwrap()
                }
            };
            let dyt = Tensor::from_f32(d, &[n], &dy).unwrap();
            let (du, dv) = silu_gate_backward(d, &t(&u), &t(&v), &dyt).unwrap();
            (du.to_f32(d).unwrap(), dv.to_f32(d).unwrap())
        };
        let c = cpu();
        let (half, full) = (run(&c, true), run(&c, false));
        assert_eq!(half, full, "n={n}: the f16 twin is the f32 backward of the widened values");
        if let Some((du, dv)) = with_gpu(|g| run(g, true)) {
            assert_close(&format!("n={n} du: gpu vs cpu twin"), &du, &half.0, 1e-5, 1e-5);
            assert_close(&format!("n={n} dv: gpu vs cpu twin"), &dv, &half.1, 1e-5, 1e-5);
        }
    }
    // Only both or neither: one f16 projection with an f32 one is refused, naming the op.
    let d = cpu();
    let h = Tensor::from_f32_as_f16(&d, &[4], &[0.0; 4]).unwrap();
    let f = Tensor::from_f32(&d, &[4], &[0.0; 4]).unwrap();
    let e = silu_gate_backward(&d, &h, &f, &f).unwrap_err().to_string();
    assert!(e.contains("silu_gate_backward"), "{e}");
}

/// The fused residual-norm backward reading the sum as f16 (`layer_norm_bwd_fused_half`): its twin is
/// the f32 backward of the widened sum bit for bit, and the GPU agrees with the twin within the f32
/// kernel's own tolerance against the twin (tests/kernels_norm.rs: column sums of N terms of size ≤ 20
/// in another order, atol 4e-6·N·20, rtol 1e-5), with and without an accumulated r.
#[test]
fn fused_norm_backward_reads_an_f16_sum() {
    use tigel::host::Rng;
    use tigel::ops::resnorm::{add_layer_norm, layer_norm_backward_fused};
    // Odd sizes (a half-filled last word), a row longer than a workgroup, more rows than one.
    for (n, c) in [(1usize, 7usize), (13, 65), (301, 130), (5, 769)] {
        let mut rng = Rng::new(seed() ^ (n * c) as u64);
        let mut draw = |k: usize, lo: f32, hi: f32| (0..k).map(|_| rng.uniform(lo, hi)).collect::<Vec<f32>>();
        let (x, g, b) = (draw(n * c, -3.0, 3.0), draw(c, -2.0, 2.0), draw(c, -1.0, 1.0));
        let (dy, r) = (draw(n * c, -1.0, 1.0), draw(n * c, -1.0, 1.0));
        let run = |d: &Device, half: bool, acc: bool| -> Vec<Vec<f32>> {
            let t = |s: &[usize], v: &[f32]| Tensor::from_f32(d, s, v).unwrap();
            let zero = t(&[n, c], &vec![0.0; n * c]);
            let (gt, bt) = (t(&[c], &g), t(&[c], &b));
            let (_, _, stats) = add_layer_norm(d, &t(&[n, c], &x), &zero, &gt, &bt, 1e-5).unwrap();
            let s = if half {
                Tensor::from_f32_as_f16(d, &[n, c], &x).unwrap()
            } else {
                t(&[n, c], &x.iter().map(|&v| f16::round(v)).collect::<Vec<_>>())
            };
            let rt = t(&[n, c], &r);
            let (dx, dg, db) =
                layer_norm_backward_fused(d, &s, &gt, &stats, &t(&[n, c], &dy), acc.then_some(&rt)).unwrap();
            [dx, dg, db].iter().map(|v| v.to_f32(d).unwrap()).collect()
        };
        for acc in [false, true] {
            let c0 = cpu();
            let half = run(&c0, true, acc);
            assert_eq!(
                half,
                run(&c0, false, acc),
                "[{n}, {c}] acc {acc}: the f16 twin is the f32 backward of the widened sum"
            );
            if let Some(gpu) = with_gpu(|d| run(d, true, acc)) {
                for (k, (a, w)) in gpu.iter().zip(&half).enumerate() {
                    let what = format!("[{n}, {c}] acc {acc} {}: gpu vs cpu twin", ["dx", "dgamma", "dbeta"][k]);
                    assert_close(&what, a, w, 4e-6 * n as f32 * 20.0, 1e-5);
                }
            }
        }
    }
}

/// The QK-norm backward reading the packed projection as f16 (`qk_norm_bwd_{dx,params,fused}_half`):
/// the twin is the f32 backward of the widened qkv bit for bit, on both paths (one dispatch and two),
/// and the GPU agrees with the twin within the f32 kernels' own tolerance against the twin
/// (tests/kernels_qknorm.rs: 1e-4 absolute + 1e-4 relative). Odd sizes, with and without rope.
#[test]
fn qk_norm_backward_reads_an_f16_projection() {
    use tigel::host::Rng;
    use tigel::ops::qknorm::{qk_norm, qk_norm_backward_with};
    use tigel::ops::rope::rope_table;
    for (b, t, h, d, rope) in
        [(1usize, 1usize, 1usize, 2usize, true), (3, 7, 3, 5, false), (2, 9, 3, 8, true), (5, 33, 4, 32, true)]
    {
        let c = h * d;
        let n = b * t * 3 * c;
        let mut rng = Rng::new(seed() ^ n as u64);
        let mut draw = |k: usize, lo: f32, hi: f32| (0..k).map(|_| rng.uniform(lo, hi)).collect::<Vec<f32>>();
        let (x, dy) = (draw(n, -1.0, 1.0), draw(n, -1.0, 1.0));
        let (gq, bq, gk, bk) = (draw(d, 0.5, 2.0), draw(d, -1.0, 1.0), draw(d, 0.5, 2.0), draw(d, -1.0, 1.0));
        let run = |dev: &Device, half: bool, one: bool| -> Vec<Vec<f32>> {
            let f = |s: &[usize], v: &[f32]| Tensor::from_f32(dev, s, v).unwrap();
            let ps = [f(&[d], &gq), f(&[d], &bq), f(&[d], &gk), f(&[d], &bk)];
            let table = rope.then(|| f(&[t, d / 2, 2], &rope_table(t, d, 10_000.0)));
            let (_, stats) =
                qk_norm(dev, &f(&[b, t, 3 * c], &x), [&ps[0], &ps[1], &ps[2], &ps[3]], table.as_ref(), h, 1e-5)
                    .unwrap();
            let xs = if half {
                Tensor::from_f32_as_f16(dev, &[b, t, 3 * c], &x).unwrap()
            } else {
                f(&[b, t, 3 * c], &x.iter().map(|&v| f16::round(v)).collect::<Vec<_>>())
            };
            let (dx, g) = qk_norm_backward_with(
                dev,
                &xs,
                [&ps[0], &ps[2]],
                &stats,
                table.as_ref(),
                &f(&[b, t, 3 * c], &dy),
                h,
                one,
            )
            .unwrap();
            std::iter::once(&dx).chain(&g).map(|v| v.to_f32(dev).unwrap()).collect()
        };
        let what = format!("{:?}", (b, t, h, d, rope));
        for one in [true, false] {
            let c0 = cpu();
            let half = run(&c0, true, one);
            assert_eq!(
                half,
                run(&c0, false, one),
                "{what} one dispatch {one}: the f16 twin is the f32 backward of the widened qkv"
            );
            if let Some(gpu) = with_gpu(|dev| run(dev, true, one)) {
                for (k, (a, w)) in gpu.iter().zip(&half).enumerate() {
                    let name = ["dqkv", "dgamma_q", "dbeta_q", "dgamma_k", "dbeta_k"][k];
                    assert_close(&format!("{what} one dispatch {one} {name}: gpu vs cpu twin"), a, w, 1e-4, 1e-4);
                }
            }
        }
    }
}

/// The attention backward reading qkv and its output as f16 (`attention_bwd_half`, both tile sizes):
/// the twin is the f32 backward of the widened values bit for bit, and the GPU agrees with the twin
/// within the f32 backward's own tolerance against the twin (tests/kernels_attention.rs: 2e-5 of the
/// largest |dqkv|, on inputs in [-1.5, 1.5)); the small tiles (a device with WebGPU's default 16 KiB of
/// workgroup memory) as well. Odd sequence lengths and head dims (a half-filled last word), causal and
/// full.
#[test]
fn attention_backward_reads_f16_qkv_and_output() {
    use tigel::host::Rng;
    use tigel::ops::attention::{attention, attention_backward};
    let shapes =
        [(1usize, 1usize, 1usize, 3usize, true), (2, 17, 3, 5, true), (1, 33, 2, 64, false), (3, 9, 1, 96, true)];
    for (b, t, h, d, causal) in shapes {
        let c = h * d;
        let mut rng = Rng::new(seed() ^ (b * t * c) as u64);
        let mut draw = |k: usize| (0..k).map(|_| rng.uniform(-1.5, 1.5)).collect::<Vec<f32>>();
        let (x, dout) = (draw(b * t * 3 * c), draw(b * t * c));
        // The forward once, on the CPU, of the f16 values: both engines' backwards read the same out
        // and lse (as the f32 test's do), and lse matches the qkv they read.
        let xr: Vec<f32> = x.iter().map(|&v| f16::round(v)).collect();
        let c0 = cpu();
        let (out, lse) = attention(&c0, &Tensor::from_f32(&c0, &[b, t, 3 * c], &xr).unwrap(), h, causal).unwrap();
        let (o, lse) = (out.to_f32(&c0).unwrap(), lse.to_f32(&c0).unwrap());
        let run = |dev: &Device, half: bool| -> Vec<f32> {
            let f = |s: &[usize], v: &[f32]| Tensor::from_f32(dev, s, v).unwrap();
            let lse = f(&[b, h, t], &lse);
            let stored = |v: &[f32], s: &[usize]| {
                if half {
                    Tensor::from_f32_as_f16(dev, s, v).unwrap()
                } else {
                    f(s, &v.iter().map(|&v| f16::round(v)).collect::<Vec<_>>())
                }
            };
            let (q, o) = (stored(&x, &[b, t, 3 * c]), stored(&o, &[b, t, c]));
            attention_backward(dev, &q, &o, &lse, &f(&[b, t, c], &dout), h, causal).unwrap().to_f32(dev).unwrap()
        };
        let what = format!("{:?}", (b, t, h, d, causal));
        let half = run(&c0, true);
        assert_eq!(half, run(&c0, false), "{what}: the f16 twin is the f32 backward of the widened values");
        let atol = 2e-5 * half.iter().fold(0f32, |m, v| m.max(v.abs()));
        if let Some(full) = gpu() {
            assert_close(&format!("{what}: gpu vs cpu twin"), &run(&full, true), &half, atol, 0.0);
            if d <= tigel::kernels::attention::SMALL_MAX_HEAD_DIM {
                let small = webgpu_defaults_device(&full);
                assert_close(&format!("{what}: gpu small tiles vs cpu twin"), &run(&small, true), &half, atol, 0.0);
            }
        }
    }
}
