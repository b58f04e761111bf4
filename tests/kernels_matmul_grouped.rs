//! The grouped GEMM (`ops::matmul_grouped`): random tables of problems of mixed shapes, transposes,
//! alphas and betas, the CPU twin against an f64 reference and the GPU (lavapipe) against the twin;
//! every element outside the problems' C regions stays as it was; bad tables and arenas are refused.
//!
//! Tolerance (as tests/kernels_matmul.rs): an f32 dot product of K terms is off by about
//! sqrt(K)·eps·sum|terms|, so each problem's elements are compared with
//!   atol = R·(1 + sqrt(K))·max over its C of (|alpha|·sum_p |a_ip·b_pj| + |beta·d|)
//! with R = 1e-6 against the f64 reference and R = 2e-6 between the GPU and the CPU twin.
mod common;
use common::*;
use tigel::kernels::matmul_grouped::PROBLEM_WORDS;
use tigel::ops::matmul_grouped::{GemmProblem, GroupedGemm};
use tigel::{Device, Tensor};

/// (M, N, K): ones, vectors, odd sizes around the 64x64 tile and the 16-deep K step, a few larger.
const SHAPES: [(usize, usize, usize); 12] = [
    (1, 1, 1),
    (1, 37, 5),
    (29, 1, 3),
    (7, 13, 5),
    (16, 16, 16),
    (63, 65, 17),
    (64, 64, 64),
    (65, 3, 70),
    (3, 130, 33),
    (100, 90, 8),
    (128, 64, 129),
    (40, 40, 0),
];

/// A random table over all of SHAPES (shuffled), with gaps between the regions, and the arenas'
/// sizes (A, B, C, D).
fn table(rng: &mut Rng) -> (Vec<GemmProblem>, [usize; 4]) {
    let mut order: Vec<usize> = (0..SHAPES.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut at = [0usize; 4];
    let mut out = Vec::new();
    for &s in &order {
        let (m, n, k) = SHAPES[s];
        let beta = if rng.below(3) == 0 { 0.0 } else { rng.uniform(-1.5, 1.5) };
        let p = GemmProblem {
            m,
            n,
            k,
            off_a: at[0] + rng.below(5),
            off_b: at[1] + rng.below(5),
            off_c: at[2] + rng.below(5),
            off_d: at[3] + rng.below(5),
            trans_a: rng.below(2) == 1,
            trans_b: rng.below(2) == 1,
            trans_c: rng.below(2) == 1,
            alpha: rng.uniform(-2.0, 2.0),
            beta,
        };
        at = [p.off_a + m * k, p.off_b + k * n, p.off_c + m * n, p.off_d + m * n];
        out.push(p);
    }
    (out, at.map(|v| v + 3))
}

/// The f64 result of every problem written over `c`, and per element the magnitude bound of the
/// tolerance (0 outside every problem).
fn reference(ps: &[GemmProblem], a: &[f32], b: &[f32], d: &[f32], c: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let mut want: Vec<f64> = c.iter().map(|&v| v as f64).collect();
    let mut tol = vec![0f64; c.len()];
    for p in ps {
        let mut mag = 0f64;
        let mut vals = Vec::with_capacity(p.m * p.n);
        for i in 0..p.m {
            for j in 0..p.n {
                let (mut s, mut sa) = (0f64, 0f64);
                for q in 0..p.k {
                    let x = a[p.off_a + if p.trans_a { q * p.m + i } else { i * p.k + q }] as f64;
                    let y = b[p.off_b + if p.trans_b { j * p.k + q } else { q * p.n + j }] as f64;
                    s += x * y;
                    sa += (x * y).abs();
                }
                let at = if p.trans_c { j * p.m + i } else { i * p.n + j };
                let dv = if p.beta != 0.0 { p.beta as f64 * d[p.off_d + at] as f64 } else { 0.0 };
                mag = mag.max(p.alpha.abs() as f64 * sa + dv.abs());
                vals.push((p.off_c + at, p.alpha as f64 * s + dv));
            }
        }
        for (at, v) in vals {
            want[at] = v;
            tol[at] = (1.0 + (p.k as f64).sqrt()) * mag;
        }
    }
    (want, tol)
}

fn run(dev: &Device, ps: &[GemmProblem], a: &[f32], b: &[f32], d: &[f32], c: &[f32]) -> Vec<f32> {
    let t = |v: &[f32]| Tensor::from_f32(dev, &[v.len()], v).unwrap();
    let (ta, tb, td, tc) = (t(a), t(b), t(d), t(c));
    GroupedGemm::new(dev, ps).unwrap().run(dev, &ta, &tb, Some(&td), &tc).unwrap();
    tc.to_f32(dev).unwrap()
}

#[track_caller]
fn check(what: &str, got: &[f32], want: &[f64], tol: &[f64], r: f64) {
    for (i, ((&g, &w), &t)) in got.iter().zip(want).zip(tol).enumerate() {
        let bound = if t == 0.0 { 0.0 } else { r * t + 1e-30 };
        assert!((g as f64 - w).abs() <= bound, "{what}: element {i}: {g} vs {w} (bound {bound})");
    }
}

#[test]
fn grouped_matmul_matches_reference_and_gpu_matches_cpu_twin() {
    let mut rng = Rng::new(seed());
    let gpu = gpu();
    for round in 0..3 {
        let (ps, [na, nb, nc, nd]) = table(&mut rng);
        let (a, b, d) = (rng.vec(na, -1.0, 1.0), rng.vec(nb, -1.0, 1.0), rng.vec(nd, -1.0, 1.0));
        // Sentinels: what no problem writes must stay.
        let c = vec![7.5f32; nc];
        let (want, tol) = reference(&ps, &a, &b, &d, &c);
        let got = run(&cpu(), &ps, &a, &b, &d, &c);
        check(&format!("round {round}: CPU twin vs f64"), &got, &want, &tol, 1e-6);
        if let Some(g) = &gpu {
            let on_gpu = run(g, &ps, &a, &b, &d, &c);
            let twin: Vec<f64> = got.iter().map(|&v| v as f64).collect();
            check(&format!("round {round}: GPU vs CPU twin"), &on_gpu, &twin, &tol, 2e-6);
        }
    }
}

#[test]
fn grouped_matmul_refuses_bad_tables_and_arenas() {
    let dev = cpu();
    let p = GemmProblem {
        m: 4,
        n: 4,
        k: 4,
        off_a: 0,
        off_b: 0,
        off_c: 0,
        off_d: 0,
        trans_a: false,
        trans_b: false,
        trans_c: false,
        alpha: 1.0,
        beta: 0.0,
    };
    let e = GroupedGemm::new(&dev, &[p, GemmProblem { off_c: 15, ..p }]).unwrap_err().to_string();
    assert!(e.contains("overlapping"), "{e}");
    let e = GroupedGemm::new(&dev, &[GemmProblem { alpha: f32::NAN, ..p }]).unwrap_err().to_string();
    assert!(e.contains("finite"), "{e}");
    let t = |n: usize| Tensor::from_f32(&dev, &[n], &vec![1.0; n]).unwrap();
    let g = GroupedGemm::new(&dev, &[p, GemmProblem { off_c: 16, ..p }]).unwrap();
    let e = g.run(&dev, &t(16), &t(16), None, &t(20)).unwrap_err().to_string();
    assert!(e.contains("C arena") && e.contains("32"), "{e}");
    g.run(&dev, &t(16), &t(16), None, &t(32)).unwrap();
    let g = GroupedGemm::new(&dev, &[GemmProblem { beta: 0.5, ..p }]).unwrap();
    let e = g.run(&dev, &t(16), &t(16), None, &t(16)).unwrap_err().to_string();
    assert!(e.contains("no D arena"), "{e}");
    // The table's words are the WGSL struct's.
    assert_eq!(tigel::kernels::struct_size("matmul_grouped", "GemmProblem"), Some(4 * PROBLEM_WORDS as u32));
}
