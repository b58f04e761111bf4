//! Elementwise family: GPU vs CPU twin on random inputs. Tolerance: 2e-6 relative + 1e-6 absolute for
//! arithmetic, 2e-5 for transcendental functions (GPU exp/log/sin/pow are not correctly rounded).
mod common;
use common::*;
use tigel::ops::elementwise::{self as ew, Binary, Unary};
use tigel::{Device, Tensor};

const SIZES: [usize; 6] = [1, 7, 255, 256, 257, 4099];

fn domain(op: Unary) -> (f32, f32) {
    match op {
        Unary::Log | Unary::Sqrt | Unary::Rsqrt => (0.05, 10.0),
        Unary::Recip => (0.25, 4.0),
        Unary::Exp => (-10.0, 10.0),
        _ => (-6.0, 6.0),
    }
}

fn run_unary(d: &Device, op: Unary, shape: &[usize], x: &[f32]) -> Vec<f32> {
    let t = Tensor::from_f32(d, shape, x).unwrap();
    ew::unary_with(d, op, &t, 0.2).unwrap().to_f32(d).unwrap()
}

#[test]
fn unary_ops_match_cpu_twin() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for op in Unary::ALL {
        for n in SIZES {
            let (lo, hi) = domain(op);
            let x = rng.vec(n, lo, hi);
            let want = run_unary(&cpu, op, &[n], &x);
            let got = run_unary(&gpu, op, &[n], &x);
            assert_close(&format!("{op:?} n={n}"), &got, &want, 2e-5, 2e-5);
        }
    }
}

#[test]
fn binary_broadcasting_matches_cpu_twin() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    let cases: &[(&[usize], &[usize])] = &[
        (&[1], &[1]),
        (&[257], &[257]),
        (&[3, 5, 7], &[3, 5, 7]),
        (&[13, 1], &[1, 11]),
        (&[2, 3, 1, 5], &[3, 4, 1]),
        (&[31, 17], &[17]),
        (&[1], &[4, 9]),
        (&[2, 1, 3, 1, 2, 1, 2, 3], &[1, 2, 1, 2, 1, 3, 1, 1]),
    ];
    for op in Binary::ALL {
        for (sa, sb) in cases {
            let na: usize = sa.iter().product();
            let nb: usize = sb.iter().product();
            let lo = if op == Binary::Pow { 0.1 } else { -3.0 };
            let a = rng.vec(na, lo, 3.0);
            let mut b = rng.vec(nb, -3.0, 3.0);
            if op == Binary::Div {
                b.iter_mut().for_each(|v| *v = v.signum() * (v.abs() + 0.5));
            }
            if op == Binary::Equal {
                // Make some elements equal so both outcomes are exercised.
                for v in b.iter_mut().step_by(2) {
                    *v = a[0];
                }
            }
            let f = |d: &Device| {
                let ta = Tensor::from_f32(d, sa, &a).unwrap();
                let tb = Tensor::from_f32(d, sb, &b).unwrap();
                let out = ew::binary(d, op, &ta, &tb).unwrap();
                (out.shape.clone(), out.to_f32(d).unwrap())
            };
            let (shape_c, want) = f(&cpu);
            let (shape_g, got) = f(&gpu);
            assert_eq!(shape_c, shape_g);
            let tol = if op == Binary::Pow { 2e-5 } else { 2e-6 };
            assert_close(&format!("{op:?} {sa:?} {sb:?}"), &got, &want, tol, tol);
        }
    }
}

#[test]
fn broadcast_matches_a_direct_reference() {
    // The CPU twin's odometer against an index-by-index evaluation of numpy's rule.
    let cpu = Device::cpu();
    let mut rng = Rng::new(seed());
    let (sa, sb) = (vec![4usize, 1, 3], vec![5usize, 1]);
    let a = rng.vec(12, -1.0, 1.0);
    let b = rng.vec(5, -1.0, 1.0);
    let out =
        ew::sub(&cpu, &Tensor::from_f32(&cpu, &sa, &a).unwrap(), &Tensor::from_f32(&cpu, &sb, &b).unwrap()).unwrap();
    assert_eq!(out.shape, vec![4, 5, 3]);
    let got = out.to_f32(&cpu).unwrap();
    for i in 0..4 {
        for j in 0..5 {
            for k in 0..3 {
                assert_eq!(got[(i * 5 + j) * 3 + k], a[i * 3 + k] - b[j]);
            }
        }
    }
}

#[test]
fn same_shape_binary_on_cpu_is_exact_at_large_sizes() {
    // Large same-shape ops take bigger pieces per thread and, from 2^21 elements, non-temporal stores
    // (device/cpu/stream.rs): one piece, several, streamed with an unaligned head and a ragged tail,
    // every element as one f32 operation gives it.
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    let host = |op: Binary, x: f32, y: f32| match op {
        Binary::Add => x + y,
        Binary::Sub => x - y,
        Binary::Mul => x * y,
        Binary::Div => x / y,
        Binary::Max => x.max(y),
        Binary::Min => x.min(y),
        Binary::Pow => x.powf(y),
        Binary::Greater => (x > y) as u32 as f32,
        Binary::Less => (x < y) as u32 as f32,
        Binary::Equal => (x == y) as u32 as f32,
    };
    for n in [(1 << 20) - 1, (1 << 20) + 17, (1 << 21) + 37, (5 << 20) + 3] {
        let a = rng.vec(n, 0.1, 3.0);
        let mut b = rng.vec(n, -3.0, 3.0);
        b.iter_mut().step_by(7).for_each(|v| *v = a[0]);
        let (ta, tb) = (Tensor::from_f32(&cpu, &[n], &a).unwrap(), Tensor::from_f32(&cpu, &[n], &b).unwrap());
        for op in Binary::ALL {
            let got = ew::binary(&cpu, op, &ta, &tb).unwrap().to_f32(&cpu).unwrap();
            for (i, &g) in got.iter().enumerate() {
                let w = host(op, a[i], b[i]);
                assert_eq!(g.to_bits(), w.to_bits(), "{op:?} n={n} element {i}: {g} but {w}");
            }
        }
    }
}

#[test]
fn scalar_forms_match_cpu_twin() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for op in Binary::ALL {
        for reverse in [false, true] {
            let n = 1031;
            let x = rng.vec(n, 0.1, 3.0);
            let s = rng.uniform(0.5, 2.0);
            let f = |d: &Device| {
                ew::scalar(d, op, &Tensor::from_f32(d, &[n], &x).unwrap(), s, reverse).unwrap().to_f32(d).unwrap()
            };
            assert_close(&format!("{op:?} reverse={reverse}"), &f(&gpu), &f(&cpu), 2e-5, 2e-5);
        }
    }
}

#[test]
fn scale_broadcast_matches_cpu_twin_and_broadcast_then_scale() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for (shape, axis, extent) in [(vec![1], 0, 1031), (vec![3, 1, 5], 1, 7), (vec![4, 1], 1, 9), (vec![1, 6], 0, 3)] {
        let x = rng.vec(shape.iter().product(), -2.0, 2.0);
        let s = rng.uniform(0.1, 2.0);
        let fused = |d: &Device| {
            let t = Tensor::from_f32(d, &shape, &x).unwrap();
            ew::scale_broadcast(d, &t, axis, extent, s).unwrap().to_f32(d).unwrap()
        };
        let mut full = shape.clone();
        full[axis] = extent;
        let unfused = |d: &Device| {
            let t = ew::broadcast_to(d, &Tensor::from_f32(d, &shape, &x).unwrap(), &full).unwrap();
            ew::scalar(d, Binary::Mul, &t, s, false).unwrap().to_f32(d).unwrap()
        };
        let name = format!("scale_broadcast {shape:?} axis {axis}");
        assert_close(&name, &fused(&gpu), &fused(&cpu), 2e-6, 2e-6);
        assert_eq!(fused(&cpu), unfused(&cpu), "{name}: fused vs unfused");
    }
}

#[test]
fn mismatched_shapes_are_an_error_naming_both() {
    let cpu = Device::cpu();
    let a = Tensor::from_f32(&cpu, &[2, 3], &[0.0; 6]).unwrap();
    let b = Tensor::from_f32(&cpu, &[4], &[0.0; 4]).unwrap();
    let e = ew::add(&cpu, &a, &b).unwrap_err().to_string();
    assert!(e.contains("[2, 3]") && e.contains("[4]"), "{e}");
}
