//! Matmul family: each of the four kernels (matmul_blocked in every tile variant) forced directly, GPU vs CPU twin, and the CPU twin (sgemm)
//! against an f64 reference.
//!
//! Tolerance: an f32 dot product of K terms has a rounding error of about sqrt(K) * eps * sum|terms|
//! with random signs (at most K * eps * sum|terms|). Each element is therefore compared with
//!   atol = R * (1 + sqrt(K)) * max over C of (|alpha| * sum_p |a_ip * b_pj| + |c_old|)
//! with R = 1e-6 (about 8 eps) against the f64 reference and R = 2e-6 between the GPU and the CPU
//! twin (two f32 results, each with its own summation order). A single missing or doubled term of
//! random inputs in [-1, 1) is off by ~|a||b| ~ mag / K * 4, hundreds of times over that bound.
mod common;
use common::*;
use tigel::ops::matmul::{self as mm, KernelChoice, MatmulOpts};
use tigel::{DType, Device, Tensor};

const KERNELS: [KernelChoice; 4] =
    [KernelChoice::Tiled, KernelChoice::TiledVec4, KernelChoice::Small, KernelChoice::Blocked];
const TRANS: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];

/// (M, N, K): ones, vectors, primes, sizes around the 64x64 tile and the 16-deep K step, shapes the vec4
/// kernel can take with partial tiles (multiples of 4 that are not of 64), and a few larger ones.
const SHAPES: [(usize, usize, usize); 24] = [
    (1, 1, 1),
    (1, 67, 1),
    (1, 31, 13),
    (61, 1, 7),
    (4, 4, 4),
    (7, 7, 7),
    (13, 13, 13),
    (31, 31, 31),
    (61, 61, 61),
    (67, 67, 67),
    (7, 61, 13),
    (31, 67, 13),
    (63, 63, 63),
    (64, 64, 64),
    (65, 65, 65),
    (64, 64, 17),
    (65, 63, 33),
    (12, 20, 36),
    (68, 132, 20),
    (60, 124, 44),
    (67, 64, 12),
    (64, 128, 96),
    (127, 127, 127),
    (129, 129, 129),
];

/// Operands as stored: A [..,M,K] or [..,K,M] (trans_a), B [..,K,N] or [..,N,K] (trans_b). `za`, `zb` are
/// the batch axes (None: rank 2).
#[derive(Clone, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    za: Option<usize>,
    zb: Option<usize>,
    ta: bool,
    tb: bool,
    alpha: f32,
    a: Vec<f32>,
    b: Vec<f32>,
    /// Old C for accumulate.
    c0: Option<Vec<f32>>,
}

impl Case {
    fn new(rng: &mut Rng, (m, n, k): (usize, usize, usize), za: Option<usize>, zb: Option<usize>) -> Case {
        let batch = za.unwrap_or(1).max(zb.unwrap_or(1));
        let c_len = batch * m * n;
        Case {
            m,
            n,
            k,
            za,
            zb,
            ta: false,
            tb: false,
            alpha: 1.0,
            a: rng.vec(za.unwrap_or(1) * m * k, -1.0, 1.0),
            b: rng.vec(zb.unwrap_or(1) * k * n, -1.0, 1.0),
            c0: Some(rng.vec(c_len, -1.0, 1.0)),
        }
    }
    fn with(&self, ta: bool, tb: bool, acc: bool, alpha: f32) -> Case {
        Case { ta, tb, alpha, c0: if acc { self.c0.clone() } else { None }, ..self.clone() }
    }
    fn batch(&self) -> usize {
        self.za.unwrap_or(1).max(self.zb.unwrap_or(1))
    }
    fn a_shape(&self) -> Vec<usize> {
        let mat = if self.ta { [self.k, self.m] } else { [self.m, self.k] };
        self.za.into_iter().chain(mat).collect()
    }
    fn b_shape(&self) -> Vec<usize> {
        let mat = if self.tb { [self.n, self.k] } else { [self.k, self.n] };
        self.zb.into_iter().chain(mat).collect()
    }
    fn opts(&self) -> MatmulOpts {
        MatmulOpts { trans_a: self.ta, trans_b: self.tb, alpha: self.alpha }
    }
    fn vec4_ok(&self) -> bool {
        mm::vec4_aligned(self.m, self.n, self.k, self.ta, self.tb)
    }
    fn name(&self, kernel: KernelChoice) -> String {
        format!(
            "{kernel:?} M={} N={} K={} A{:?} B{:?} ta={} tb={} alpha={} acc={}",
            self.m,
            self.n,
            self.k,
            self.a_shape(),
            self.b_shape(),
            self.ta,
            self.tb,
            self.alpha,
            self.c0.is_some()
        )
    }

    /// Runs on `dev` with the kernel forced; C starts poisoned unless accumulating.
    fn run(&self, dev: &Device, kernel: KernelChoice) -> Vec<f32> {
        let a = Tensor::from_f32(dev, &self.a_shape(), &self.a).unwrap();
        let b = Tensor::from_f32(dev, &self.b_shape(), &self.b).unwrap();
        let out = match &self.c0 {
            Some(c0) => {
                let shape = mm::matmul_shape(&a.shape, &b.shape, &self.opts()).unwrap().out_shape;
                let out = Tensor::from_f32(dev, &shape, c0).unwrap();
                mm::matmul_into_with(dev, &a, &b, self.opts(), &out, true, kernel).unwrap();
                out
            }
            None => mm::matmul_with(dev, &a, &b, self.opts(), kernel).unwrap(),
        };
        out.to_f32(dev).unwrap()
    }

    /// f64 reference C and, per element, the magnitude |alpha| * sum|a*b| + |c_old| of its terms.
    fn reference(&self) -> (Vec<f32>, f64) {
        let (m, n, k) = (self.m, self.n, self.k);
        let sa = if self.za.is_some_and(|z| z > 1) { m * k } else { 0 };
        let sb = if self.zb.is_some_and(|z| z > 1) { k * n } else { 0 };
        let mut want = Vec::with_capacity(self.batch() * m * n);
        let mut mag_max = 0f64;
        for z in 0..self.batch() {
            for i in 0..m {
                for j in 0..n {
                    let (mut s, mut mag) = (0f64, 0f64);
                    for p in 0..k {
                        let av = if self.ta { self.a[z * sa + p * m + i] } else { self.a[z * sa + i * k + p] };
                        let bv = if self.tb { self.b[z * sb + j * k + p] } else { self.b[z * sb + p * n + j] };
                        let t = av as f64 * bv as f64;
                        s += t;
                        mag += t.abs();
                    }
                    let alpha = self.alpha as f64;
                    let old = self.c0.as_ref().map_or(0.0, |c| c[(z * m + i) * n + j] as f64);
                    want.push((alpha * s + old) as f32);
                    mag_max = mag_max.max(alpha.abs() * mag + old.abs());
                }
            }
        }
        (want, mag_max)
    }

    /// The operands and output on `dev`; C poisoned unless accumulating.
    fn tensors(&self, dev: &Device) -> (Tensor, Tensor, Tensor) {
        let a = Tensor::from_f32(dev, &self.a_shape(), &self.a).unwrap();
        let b = Tensor::from_f32(dev, &self.b_shape(), &self.b).unwrap();
        let shape = mm::matmul_shape(&a.shape, &b.shape, &self.opts()).unwrap().out_shape;
        let n: usize = shape.iter().product();
        let c = Tensor::from_f32(dev, &shape, self.c0.as_deref().unwrap_or(&vec![f32::NAN; n])).unwrap();
        (a, b, c)
    }

    fn atol(&self, r: f64, mag_max: f64) -> f32 {
        (r * (1.0 + (self.k as f64).sqrt()) * mag_max).max(1e-30) as f32
    }
}

/// Every transpose combination, accumulate on and off, alpha 1 and not 1.
fn variants(base: &Case) -> Vec<Case> {
    let mut v = Vec::new();
    for (ta, tb) in TRANS {
        for acc in [false, true] {
            for alpha in [1.0, -0.625] {
                v.push(base.with(ta, tb, acc, alpha));
            }
        }
    }
    v
}

/// GPU result of each applicable kernel against the CPU twin.
fn check_gpu(gpu: &Device, cpu: &Device, c: &Case) {
    let want = c.run(cpu, KernelChoice::Tiled);
    let (_, mag) = c.reference();
    for kernel in KERNELS {
        if kernel == KernelChoice::TiledVec4 && !c.vec4_ok() {
            continue;
        }
        let got = c.run(gpu, kernel);
        assert_close(&c.name(kernel), &got, &want, c.atol(2e-6, mag), 0.0);
    }
}

#[test]
fn kernels_match_cpu_twin() {
    // matmul_blocked in every tile variant (and the others once each), same assertions.
    for_each_variant(&[&tigel::kernels::matmul::MATMUL_BLOCKED], |_| kernels_match_cpu_twin_once());
}

fn kernels_match_cpu_twin_once() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for shape in SHAPES {
        let base = Case::new(&mut rng, shape, None, None);
        for c in variants(&base) {
            check_gpu(&gpu, &cpu, &c);
        }
    }
}

/// Batch forms: both batched, A or B shared as rank 2, A or B shared as a batch of 1.
fn batch_cases(rng: &mut Rng) -> Vec<Case> {
    let mut v = Vec::new();
    for shape in [(5, 12, 8), (33, 68, 20), (17, 9, 31)] {
        for (za, zb) in [(Some(3), Some(3)), (None, Some(4)), (Some(3), None), (Some(1), Some(2)), (Some(2), Some(1))] {
            v.push(Case::new(rng, shape, za, zb));
        }
    }
    v
}

#[test]
fn batched_and_broadcast_match_cpu_twin() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for base in batch_cases(&mut rng) {
        for c in variants(&base) {
            check_gpu(&gpu, &cpu, &c);
        }
    }
}

#[test]
fn cpu_twin_matches_f64_reference() {
    // All three twin names (one implementation) through sgemm's direct and packed paths.
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    let mut cases: Vec<Case> = SHAPES.iter().map(|&s| Case::new(&mut rng, s, None, None)).collect();
    cases.push(Case::new(&mut rng, (150, 70, 300), None, None));
    cases.extend(batch_cases(&mut rng));
    for base in &cases {
        for c in variants(base) {
            let (want, mag) = c.reference();
            for kernel in KERNELS {
                if kernel == KernelChoice::TiledVec4 && !c.vec4_ok() {
                    continue;
                }
                assert_close(&c.name(kernel), &c.run(&cpu, kernel), &want, c.atol(1e-6, mag), 0.0);
            }
        }
    }
}

#[test]
fn automatic_choice_matches_reference() {
    // The op as users call it, on both devices, for shapes that take each kernel.
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    for shape in [(3, 40, 9), (20, 20, 20), (65, 66, 67), (64, 68, 20)] {
        let c = Case::new(&mut rng, shape, None, None).with(false, true, false, 1.0);
        let (want, mag) = c.reference();
        for d in &devs {
            let a = Tensor::from_f32(d, &c.a_shape(), &c.a).unwrap();
            let b = Tensor::from_f32(d, &c.b_shape(), &c.b).unwrap();
            let got = mm::matmul(d, &a, &b, c.opts()).unwrap();
            assert_eq!(got.shape, vec![c.m, c.n]);
            assert_close(&c.name(KernelChoice::Auto), &got.to_f32(d).unwrap(), &want, c.atol(2e-6, mag), 0.0);
        }
    }
}

#[test]
fn k_zero_gives_zero_or_keeps_c() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    let base = Case::new(&mut rng, (20, 24, 0), None, None);
    for d in &devs {
        for kernel in [KernelChoice::Tiled, KernelChoice::Small] {
            let c = base.with(false, false, false, 1.0);
            assert_eq!(c.run(d, kernel), vec![0.0; 20 * 24], "{kernel:?} on {}", d.name());
            let c = base.with(true, true, true, 2.0);
            assert_eq!(c.run(d, kernel), base.c0.clone().unwrap(), "{kernel:?} on {}", d.name());
        }
        let c = base.with(false, false, false, 1.0);
        assert!(c.run(d, KernelChoice::Auto).iter().all(|&v| v == 0.0));
    }
}

/// The chooser's alignment rule written out independently: the stored row of A, of B and of C.
fn aligned(m: usize, n: usize, k: usize, ta: bool, tb: bool) -> bool {
    let a_row = if ta { m } else { k };
    let b_row = if tb { k } else { n };
    k > 0 && a_row.is_multiple_of(4) && b_row.is_multiple_of(4) && n.is_multiple_of(4)
}

#[test]
fn chooser_takes_vec4_only_when_aligned() {
    use KernelChoice::*;
    let sizes = [0, 1, 3, 4, 15, 16, 17, 32, 33, 63, 64, 65, 66, 68, 128, 130, 4096];
    for &m in &sizes {
        for &n in &sizes {
            for &k in &sizes {
                for (ta, tb) in TRANS {
                    let ch = mm::choose_kernel(m, n, k, ta, tb);
                    assert_eq!(mm::vec4_aligned(m, n, k, ta, tb), aligned(m, n, k, ta, tb));
                    let small = m < 16 || n < 16 || m * n <= 1024;
                    let want = if small {
                        Small
                    } else if aligned(m, n, k, ta, tb) {
                        TiledVec4
                    } else {
                        Blocked
                    };
                    assert_eq!(ch, want, "M={m} N={n} K={k} ta={ta} tb={tb}");
                }
            }
        }
    }
    // Spot checks of the rule's intent.
    assert_eq!(mm::choose_kernel(64, 64, 64, false, false), TiledVec4);
    assert_eq!(mm::choose_kernel(63, 64, 64, false, false), TiledVec4); // M is no row length here
    assert_eq!(mm::choose_kernel(63, 64, 64, true, false), Blocked); // A stored [K,M]: rows of 63
    assert_eq!(mm::choose_kernel(64, 64, 63, false, false), Blocked);
    assert_eq!(mm::choose_kernel(64, 64, 63, true, false), TiledVec4); // A [K,M], B [K,N]: K counts rows
    assert_eq!(mm::choose_kernel(64, 66, 64, false, false), Blocked); // C rows of 66
    assert_eq!(mm::choose_kernel(1, 4096, 4096, false, false), Small);
    assert_eq!(mm::choose_kernel(4096, 8, 512, false, false), Small);
    assert_eq!(mm::choose_kernel(32, 32, 4096, false, false), Small);
    // Forcing vec4 on an unaligned shape is an error, not a wrong result.
    let cpu = Device::cpu();
    let a = Tensor::from_f32(&cpu, &[8, 6], &[0.5; 48]).unwrap();
    let b = Tensor::from_f32(&cpu, &[6, 8], &[0.5; 48]).unwrap();
    let e = mm::matmul_with(&cpu, &a, &b, MatmulOpts::default(), TiledVec4).unwrap_err().to_string();
    assert!(e.contains("[8, 6]") && e.contains("multiples of 4"), "{e}");
}

fn err(a: &[usize], b: &[usize], opts: MatmulOpts) -> String {
    let cpu = Device::cpu();
    let ta = Tensor::from_f32(&cpu, a, &vec![1.0; a.iter().product()]).unwrap();
    let tb = Tensor::from_f32(&cpu, b, &vec![1.0; b.iter().product()]).unwrap();
    mm::matmul(&cpu, &ta, &tb, opts).unwrap_err().to_string()
}

#[test]
fn bad_input_is_an_error_naming_the_shapes() {
    let d = MatmulOpts::default();
    let e = err(&[2, 3], &[4, 5], d);
    assert!(e.contains("inner dimensions differ: A [2, 3] has K=3, B [4, 5] has K=4"), "{e}");
    let e = err(&[3, 2], &[4, 5], MatmulOpts { trans_a: true, ..d });
    assert!(e.contains("A [3, 2] (transposed) has K=3") && e.contains("K=4"), "{e}");
    let e = err(&[5], &[5, 3], d);
    assert!(e.contains("rank 1") && e.contains("[5]") && e.contains("[5, 3]"), "{e}");
    let e = err(&[2, 2, 3, 4], &[4, 5], d);
    assert!(e.contains("rank 4") && e.contains("[2, 2, 3, 4]") && e.contains("[4, 5]"), "{e}");
    let e = err(&[3, 2, 2], &[4, 2, 2], d);
    assert!(e.contains("batch") && e.contains("[3, 2, 2]") && e.contains("[4, 2, 2]"), "{e}");

    let cpu = Device::cpu();
    let au = Tensor::from_u32(&cpu, &[2, 3], &[1; 6]).unwrap();
    let bf = Tensor::from_f32(&cpu, &[3, 4], &[1.0; 12]).unwrap();
    let e = mm::matmul(&cpu, &au, &bf, d).unwrap_err().to_string();
    assert!(e.contains("u32") && e.contains("[2, 3]") && e.contains("[3, 4]"), "{e}");
    let e = mm::matmul(&cpu, &bf, &au, MatmulOpts { trans_a: true, trans_b: true, ..d }).unwrap_err().to_string();
    assert!(e.contains("u32") && e.contains("[2, 3]") && e.contains("[3, 4]"), "{e}");

    // matmul_into: wrong output shape, output aliasing an operand.
    let af = Tensor::from_f32(&cpu, &[2, 3], &[1.0; 6]).unwrap();
    let out = Tensor::empty(&cpu, &[2, 5], DType::F32).unwrap();
    let e = mm::matmul_into(&cpu, &af, &bf, d, &out, false).unwrap_err().to_string();
    assert!(e.contains("[2, 5]") && e.contains("[2, 4]"), "{e}");
    let sq = Tensor::from_f32(&cpu, &[3, 3], &[1.0; 9]).unwrap();
    let e = mm::matmul_into(&cpu, &sq, &sq, d, &sq, true).unwrap_err().to_string();
    assert!(e.contains("shares its buffer"), "{e}");
}

#[test]
fn batch_of_one_and_rank_two_broadcast_shapes() {
    let d = MatmulOpts::default();
    let s = mm::matmul_shape(&[1, 2, 3], &[4, 3, 5], &d).unwrap();
    assert_eq!((s.out_shape, s.stride_a, s.stride_b), (vec![4, 2, 5], 0, 15));
    let s = mm::matmul_shape(&[4, 2, 3], &[3, 5], &d).unwrap();
    assert_eq!((s.out_shape, s.stride_a, s.stride_b), (vec![4, 2, 5], 6, 0));
    let s = mm::matmul_shape(&[2, 3], &[3, 5], &d).unwrap();
    assert_eq!((s.out_shape, s.batch), (vec![2, 5], 1));
    let s = mm::matmul_shape(&[1, 3, 2], &[1, 5, 3], &MatmulOpts { trans_a: true, trans_b: true, alpha: 1.0 }).unwrap();
    assert_eq!((s.out_shape, s.m, s.n, s.k), (vec![1, 2, 5], 2, 5, 3));
}

#[test]
fn grid_over_the_device_limit_is_an_error_naming_the_sizes() {
    // 70000 batch matrices of 1x1: the batch axis of the grid exceeds the CPU device's 65535.
    let cpu = Device::cpu();
    let a = Tensor::from_f32(&cpu, &[70000, 1, 1], &vec![1.0; 70000]).unwrap();
    let e = mm::matmul(&cpu, &a, &a, MatmulOpts::default()).unwrap_err().to_string();
    assert!(e.contains("batch=70000") && e.contains("[70000, 1, 1]") && e.contains("65535"), "{e}");
}

/// Two products in one `matmul_pair` dispatch on `dev`, and how many dispatches that took.
fn run_pair(dev: &Device, p: &Case, q: &Case) -> (Vec<f32>, Vec<f32>, usize) {
    let (a0, b0, c0) = p.tensors(dev);
    let (a1, b1, c1) = q.tensors(dev);
    let job = |c: &Case, a, b, out| mm::MatmulJob { a, b, opts: c.opts(), out, accumulate: c.c0.is_some() };
    let jobs = [job(p, &a0, &b0, &c0), job(q, &a1, &b1, &c1)];
    let n = mm::matmul_pair_dispatches(dev, jobs).unwrap().len();
    mm::matmul_pair_into(dev, jobs).unwrap();
    (c0.to_f32(dev).unwrap(), c1.to_f32(dev).unwrap(), n)
}

/// Pairs of different shapes, batches, transposes, accumulation and alpha (a linear layer's dX and dW
/// among them).
fn pair_cases(rng: &mut Rng) -> Vec<(Case, Case)> {
    let shapes = [(65, 63, 33), (7, 61, 13), (128, 64, 96), (1, 1, 1), (129, 129, 129), (12, 20, 36)];
    let mut v = Vec::new();
    for (i, &s) in shapes.iter().enumerate() {
        let t = shapes[(i + 1) % shapes.len()];
        let base0 = Case::new(rng, s, None, None);
        let base1 = Case::new(rng, t, None, None);
        let (v0, v1) = (variants(&base0), variants(&base1));
        for (j, c) in v0.iter().enumerate() {
            v.push((c.clone(), v1[(j * 5 + i) % v1.len()].clone()));
        }
    }
    let b0 = Case::new(rng, (33, 68, 20), Some(3), Some(3));
    let b1 = Case::new(rng, (17, 9, 31), None, Some(2));
    v.push((b0.with(false, true, true, 0.5), b1.with(true, false, false, 1.0)));
    v.push((b1.with(false, false, true, 1.0), b0.clone()));
    v
}

#[test]
fn pair_matches_single_products() {
    // CPU: the pair's twin gives exactly the single products' numbers; GPU: one dispatch, within the
    // GPU-vs-twin tolerance of them.
    let cpu = cpu();
    let gpu = gpu();
    let mut rng = Rng::new(seed());
    for (p, q) in pair_cases(&mut rng) {
        let (w0, w1) = (p.run(&cpu, KernelChoice::Tiled), q.run(&cpu, KernelChoice::Tiled));
        let (g0, g1, n) = run_pair(&cpu, &p, &q);
        assert_eq!(n, 1, "{} | {}: one dispatch", p.name(KernelChoice::Auto), q.name(KernelChoice::Auto));
        assert_eq!(g0, w0, "cpu pair, first: {}", p.name(KernelChoice::Auto));
        assert_eq!(g1, w1, "cpu pair, second: {}", q.name(KernelChoice::Auto));
        if let Some(gpu) = &gpu {
            let (g0, g1, _) = run_pair(gpu, &p, &q);
            assert_close(
                &format!("pair first {}", p.name(KernelChoice::Auto)),
                &g0,
                &w0,
                p.atol(2e-6, p.reference().1),
                0.0,
            );
            assert_close(
                &format!("pair second {}", q.name(KernelChoice::Auto)),
                &g1,
                &w1,
                q.atol(2e-6, q.reference().1),
                0.0,
            );
        }
    }
}

#[test]
fn pair_falls_back_to_two_dispatches_when_an_output_is_read() {
    // wgpu refuses a buffer bound read-write and read in one dispatch: product 1 reads product 0's C.
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    let p = Case::new(&mut rng, (8, 8, 8), None, None);
    let (a0, b0, c0) = p.tensors(&cpu);
    let (_, b1, c1) = p.tensors(&cpu);
    let job = |a, b, out| mm::MatmulJob { a, b, opts: MatmulOpts::default(), out, accumulate: false };
    let jobs = [job(&a0, &b0, &c0), job(&c0, &b1, &c1)];
    assert_eq!(mm::matmul_pair_dispatches(&cpu, jobs).unwrap().len(), 2);
}
