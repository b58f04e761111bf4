//! The host SGEMM against an f64 reference, every path, transposes, strides and edge tiles.

use super::*;
use crate::host::Rng;

/// Runs one case: A stored transposed or not, B likewise, ldc = n + pad, and compares with
/// an f64-accumulating reference. Tolerance (relative):
///   |got - ref| <= 1e-6 * (1 + sqrt(k)) * (1 + sum_p |a_ip * b_pj| (+ |c_old|))
/// i.e. relative to the magnitude of the terms (the natural bound for an fp32 dot product,
/// whose rounding error grows ~ sqrt(k) * eps * sum|terms| with random signs); ~8 eps.
#[allow(clippy::too_many_arguments)]
fn check(path: Path, m: usize, n: usize, k: usize, ta: bool, tb: bool, acc: bool, pad: usize) {
    let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15 ^ ((m * 131 + n * 7 + k) as u64 + 1));
    let adata = rng.vec(m * k, -1.0, 1.0);
    let bdata = rng.vec(k * n, -1.0, 1.0);
    let a = if ta {
        MatRef { data: &adata, rs: 1, cs: m } // stored k x m, read transposed
    } else {
        MatRef { data: &adata, rs: k, cs: 1 }
    };
    let b = if tb { MatRef { data: &bdata, rs: 1, cs: k } } else { MatRef { data: &bdata, rs: n, cs: 1 } };
    let ldc = n + pad;
    let c0 = rng.vec(m.max(1) * ldc, -1.0, 1.0);
    let mut c = c0.clone();
    sgemm_with(path, m, n, k, a, b, &mut c, ldc, acc);

    let mut worst = 0f64;
    for i in 0..m {
        for j in 0..n {
            let mut r = if acc { c0[i * ldc + j] as f64 } else { 0.0 };
            let mut mag = r.abs();
            for p in 0..k {
                let t = a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64;
                r += t;
                mag += t.abs();
            }
            let d = (c[i * ldc + j] as f64 - r).abs();
            // fp32 accumulation error grows ~ sqrt(k) * eps * sum|terms| (random signs);
            // 1e-6 * (1 + sqrt k) * (1 + sum|terms|) is ~8 eps and far below any real bug.
            let tol = 1e-6 * (1.0 + (k as f64).sqrt()) * (1.0 + mag);
            worst = worst.max(d / tol);
            assert!(
                d <= tol,
                "{path:?} m={m} n={n} k={k} ta={ta} tb={tb} acc={acc} ({i},{j}): got {} want {r}",
                c[i * ldc + j]
            );
        }
        // Padding columns must be untouched.
        for j in n..ldc {
            assert_eq!(c[i * ldc + j], c0[i * ldc + j], "padding overwritten");
        }
    }
}

/// Every path this CPU can run: the AVX2 kernel is also tested where AVX-512 would be picked.
fn paths() -> Vec<Path> {
    let mut v = vec![Path::Direct, Path::Packed(Kernel::Scalar)];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            v.push(Path::Packed(Kernel::Avx2Fma));
        }
        if detect_kernel() == Kernel::Avx512 {
            v.push(Path::Packed(Kernel::Avx512));
        }
    }
    v
}

fn all_variants(path: Path, m: usize, n: usize, k: usize) {
    for ta in [false, true] {
        for tb in [false, true] {
            for acc in [false, true] {
                check(path, m, n, k, ta, tb, acc, if acc { 3 } else { 0 });
            }
        }
    }
}

#[test]
fn tiny_and_degenerate() {
    for path in paths() {
        for &(m, n, k) in &[(1, 1, 1), (1, 17, 1), (1, 33, 1), (5, 1, 9), (1, 1, 300), (2, 3, 4)] {
            all_variants(path, m, n, k);
        }
    }
}

#[test]
fn primes() {
    for path in paths() {
        for &s in &[7, 13, 31, 61, 127] {
            all_variants(path, s, s, s);
        }
        all_variants(path, 7, 61, 13);
        all_variants(path, 127, 13, 31);
    }
}

#[test]
fn prime_257() {
    for path in paths() {
        check(path, 257, 257, 257, false, false, false, 0);
        check(path, 257, 257, 257, true, true, true, 5);
    }
}

#[test]
fn block_boundaries() {
    // Straddle MR (6), NR (16), KC (256), MC (144) and the balanced per-thread block.
    let shapes = [
        (MR, NR, 1),
        (MR + 1, NR + 1, 2),
        (MR - 1, NR - 1, 3),
        (2 * MR, 2 * NR, KC),
        (MC, 3 * NR, KC + 1),
        (MC + 1, NR - 1, KC - 1),
        (2 * MC + 5, 2 * NR + 3, 2 * KC + 7),
        (289, 65, 511),
    ];
    // The same around the AVX-512 tile (12 x 32).
    #[cfg(target_arch = "x86_64")]
    let shapes = {
        let (mr, nr) = (MR512, avx512::NR);
        let mut v = shapes.to_vec();
        v.extend([(mr, nr, 1), (mr + 1, nr + 1, 2), (mr - 1, nr - 1, 3), (2 * mr, 2 * nr + 17, KC + 1)]);
        v
    };
    for path in paths() {
        for &(m, n, k) in &shapes {
            all_variants(path, m, n, k);
        }
    }
}

#[test]
fn nc_boundary() {
    // n > NC exercises the outer jc loop (only the fast kernels: slow in debug otherwise).
    let path = Path::Packed(detect_kernel());
    check(path, 13, NC + 21, 40, false, false, false, 0);
    check(path, 7, NC + 3, 19, true, true, true, 2);
    check(Path::Packed(Kernel::Scalar), 7, NC + 17, 5, false, true, true, 1);
}

#[test]
fn k_zero() {
    for path in paths() {
        for acc in [false, true] {
            let (m, n, ldc) = (5, 7, 9);
            let old: Vec<f32> = (0..m * ldc).map(|x| x as f32 + 0.5).collect();
            let mut c = old.clone();
            let e: [f32; 0] = [];
            let a = MatRef { data: &e, rs: 0, cs: 1 };
            sgemm_with(path, m, n, 0, a, a, &mut c, ldc, acc);
            for i in 0..m {
                for j in 0..ldc {
                    let want = if acc || j >= n { old[i * ldc + j] } else { 0.0 };
                    assert_eq!(c[i * ldc + j], want);
                }
            }
        }
    }
}

#[test]
fn overwrite_ignores_nan_in_c() {
    // accumulate = false must not read C (it may hold garbage).
    for path in paths() {
        let (m, n, k) = (13, 37, 45);
        let x = vec![1.0f32; k * m.max(n)];
        let a = MatRef { data: &x, rs: k, cs: 1 };
        let b = MatRef { data: &x, rs: n, cs: 1 };
        let mut c = vec![f32::NAN; m * n];
        sgemm_with(path, m, n, k, a, b, &mut c, n, false);
        assert!(c.iter().all(|&v| v == k as f32));
    }
}

#[test]
fn public_entry_and_general_strides() {
    // Public API on shapes on both sides of the small-problem threshold, and a view with
    // neither stride 1 (every other element of a bigger buffer).
    for &(m, n, k) in &[(3, 4, 5), (64, 64, 64), (100, 37, 300)] {
        let mut rng = Rng::new(42 + m as u64);
        let ad = rng.vec(2 * m * k * 2, -1.0, 1.0);
        let bd = rng.vec(k * n * 3, -1.0, 1.0);
        let a = MatRef { data: &ad, rs: 2 * k, cs: 2 };
        let b = MatRef { data: &bd, rs: 1, cs: 3 * k };
        let mut c = vec![0f32; m * n];
        sgemm(m, n, k, a, b, &mut c, n, false);
        let mut want = vec![0f32; m * n];
        sgemm_with(Path::Direct, m, n, k, a, b, &mut want, n, false);
        for (x, y) in c.iter().zip(&want) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }
}

#[test]
#[should_panic(expected = "too short")]
fn short_slice_panics() {
    let a = vec![1f32; 10];
    let mut c = vec![0f32; 100];
    let v = MatRef { data: &a, rs: 4, cs: 1 };
    sgemm(4, 4, 4, v, v, &mut c, 4, false);
}

#[test]
fn simd_kernels_agree_bitwise() {
    // Both SIMD kernels sum each element over k in one FMA chain per KC block: identical bits.
    #[cfg(target_arch = "x86_64")]
    if detect_kernel() == Kernel::Avx512 {
        let (m, n, k, ldc) = (77, 91, 2 * KC + 33, 95);
        let mut rng = Rng::new(7);
        let (ad, bd) = (rng.vec(m * k, -1.0, 1.0), rng.vec(k * n, -1.0, 1.0));
        let a = MatRef { data: &ad, rs: 1, cs: m };
        let b = MatRef { data: &bd, rs: n, cs: 1 };
        let c0 = rng.vec(m * ldc, -1.0, 1.0);
        for acc in [false, true] {
            let (mut x, mut y) = (c0.clone(), c0.clone());
            sgemm_with(Path::Packed(Kernel::Avx2Fma), m, n, k, a, b, &mut x, ldc, acc);
            sgemm_with(Path::Packed(Kernel::Avx512), m, n, k, a, b, &mut y, ldc, acc);
            assert!(x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()), "acc={acc}");
        }
    }
}

/// A gathered B gives the same C, bit for bit, as the packed product on the materialised B (same
/// sums in the same order), with edge tiles, two rank-KC updates and accumulation. Column offsets of
/// three kinds: scattered (16-lane gathers), runs of 7 in rows of 9 (a stride phase of an image: two
/// loads and a permute per half-sliver), with a jump between images, and a run ending at the last float
/// of the data (the window falls back to a gather rather than read past the end).
#[test]
fn gather_matches_materialised_b() {
    let (m, n, k) = (37, 45, 300);
    let mut rng = Rng::new(7);
    let data = rng.vec(4000, -1.0, 1.0);
    let rows: Vec<u32> = (0..k).map(|p| ((p * 7) % 2000) as u32).collect();
    let scattered: Vec<u32> = (0..n).map(|j| ((j * 37) % 1999) as u32).collect();
    let runs: Vec<u32> = (0..n).map(|j| ((j / 28) * 1000 + (j % 28 / 7) * 9 + j % 7) as u32).collect();
    let top = rows.iter().max().copied().unwrap();
    let end: Vec<u32> = (0..n).map(|j| 4000 - 1 - top - (n - 1 - j) as u32).collect();
    for cols in [scattered, runs, end] {
        let bmat: Vec<f32> = (0..k * n).map(|q| data[(rows[q / n] + cols[q % n]) as usize]).collect();
        let adata = rng.vec(m * k, -1.0, 1.0);
        let a = MatRef { data: &adata, rs: k, cs: 1 };
        for (acc, serial) in [(false, false), (true, true)] {
            let c0 = rng.vec(m * n, -1.0, 1.0);
            let (mut want, mut got) = (c0.clone(), c0);
            let b = MatRef { data: &bmat, rs: n, cs: 1 };
            sgemm_with(Path::Packed(detect_kernel()), m, n, k, a, b, &mut want, n, acc);
            sgemm_gather(m, n, k, a, Gather { data: &data, rows: &rows, cols: &cols, serial }, &mut got, n, acc);
            assert!(want == got, "gathered B differs (accumulate {acc}, columns {:?}..)", &cols[..4]);
        }
    }
}
