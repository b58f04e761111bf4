//! Random-number family: Philox4x32-10 known answers, GPU vs CPU twin bit for bit, the stream/offset
//! convention, the fixed-point Box-Muller against f64, and distribution statistics.
//!
//! Tolerances: `bits`, `uniform(0, 1)` and `normal(0, 1)` are compared bit for bit (the generator is integer
//! arithmetic end to end). Scaled draws `shift + scale * x` may be fused on a GPU, so they are allowed one
//! rounding of `scale * x` plus one of the result. Fixed-point normals are compared with f64 Box-Muller
//! on the same words within 1e-6: the design bound is 2^-21 (output rounding to Q3.20) + 1e-7.
mod common;
use common::*;
use tigel::host::philox as crng;
use tigel::ops::rng::{self, RngState};
use tigel::Device;

const SIZES: [usize; 5] = [1, 3, 5, 1023, 100_003];

/// Random123's known-answer vectors for philox4x32-10: (counter, key, output).
const KAT: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
    ([0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
    ([0xffffffff; 4], [0xffffffff; 2], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
    (
        [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
        [0xa4093822, 0x299f31d0],
        [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
    ),
];

fn bits_of(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Offsets that matter: small, around the 2^32 carry of the offset, around 2^34 (where the block counter
/// itself carries into its high word), a random 64-bit one, and one whose blocks wrap past 2^64.
fn offsets(rng: &mut Rng) -> Vec<u64> {
    vec![
        rng.next_u64() % 1000,
        (1u64 << 32) - 2,
        (1u64 << 32) - 1 - rng.next_u64() % 8,
        (1u64 << 34) - 3 - rng.next_u64() % 200,
        rng.next_u64(),
        u64::MAX - 5,
    ]
}

#[test]
fn philox_known_answers_on_the_cpu_twin() {
    for (ctr, key, want) in KAT {
        assert_eq!(crng::philox4x32(ctr, key), want, "philox4x32({ctr:08x?}, {key:08x?})");
    }
}

#[test]
fn philox_known_answers_through_the_bits_kernel() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    for d in &devs {
        for (ctr, key, want) in KAT {
            let got = rng::philox_blocks(d, 1, key, ctr).unwrap().to_u32(d).unwrap();
            assert_eq!(got, want, "{}: philox4x32({ctr:08x?}, {key:08x?})", d.name());
        }
        // The 64-bit block counter carries from word 0 into word 1 (and wraps from all ones to zero).
        let got = rng::philox_blocks(d, 3, [7, 9], [0xffff_fffe, 0xffff_ffff, 1, 2]).unwrap().to_u32(d).unwrap();
        let mut want = Vec::new();
        for c in [[0xffff_fffe, 0xffff_ffff], [0xffff_ffff, 0xffff_ffff], [0, 0]] {
            want.extend(crng::philox4x32([c[0], c[1], 1, 2], [7, 9]));
        }
        assert_eq!(got, want, "{}: counter carry", d.name());
    }
}

#[test]
fn mul32x32_from_halves_is_the_full_product() {
    let mut rng = Rng::new(seed());
    let edges = [0u32, 1, 0xFFFF, 0x10000, 0xFFFF_FFFF, 0x8000_0000, crng::PHILOX_M0, crng::PHILOX_M1];
    let mut pairs: Vec<(u32, u32)> = edges.iter().flat_map(|&a| edges.iter().map(move |&b| (a, b))).collect();
    pairs.extend((0..100_000).map(|_| (rng.next_u64() as u32, rng.next_u64() as u32)));
    for (a, b) in pairs {
        let p = a as u64 * b as u64;
        assert_eq!(crng::mul32x32(a, b), (p as u32, (p >> 32) as u32), "{a:#x} * {b:#x}");
    }
}

#[test]
fn bits_uniform_normal_match_cpu_twin_bit_for_bit() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for o in offsets(&mut rng) {
        let s = rng.next_u64();
        for n in SIZES {
            let what = format!("seed {s:#x} offset {o:#x} n {n}");
            let b = |d: &Device| rng::bits(d, &[n], s, o).unwrap().to_u32(d).unwrap();
            assert_eq!(b(&gpu), b(&cpu), "bits {what}");
            let u = |d: &Device| bits_of(&rng::uniform(d, &[n], s, o, 0.0, 1.0).unwrap().to_f32(d).unwrap());
            assert_eq!(u(&gpu), u(&cpu), "uniform {what}");
            let z = |d: &Device| bits_of(&rng::normal(d, &[n], s, o, 0.0, 1.0).unwrap().to_f32(d).unwrap());
            assert_eq!(z(&gpu), z(&cpu), "normal {what}");
        }
    }
}

#[test]
fn element_i_at_offset_o_is_element_0_at_offset_o_plus_i() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    let s = rng.next_u64();
    for d in &devs {
        for o in [rng.next_u64() % 100, (1u64 << 32) - 5, (1u64 << 34) - 6, rng.next_u64() >> 1] {
            let n = 23;
            let bits = rng::bits(d, &[n], s, o).unwrap().to_u32(d).unwrap();
            let uni = bits_of(&rng::uniform(d, &[n], s, o, 0.0, 1.0).unwrap().to_f32(d).unwrap());
            let nor = bits_of(&rng::normal(d, &[n], s, o, 0.0, 1.0).unwrap().to_f32(d).unwrap());
            for i in 0..n {
                let oi = o + i as u64;
                let what = format!("{}: seed {s:#x} offset {o:#x} element {i}", d.name());
                assert_eq!(bits[i], rng::bits(d, &[1], s, oi).unwrap().to_u32(d).unwrap()[0], "bits {what}");
                let u1 = rng::uniform(d, &[1], s, oi, 0.0, 1.0).unwrap().to_f32(d).unwrap()[0];
                assert_eq!(uni[i], u1.to_bits(), "uniform {what}");
                let z1 = rng::normal(d, &[1], s, oi, 0.0, 1.0).unwrap().to_f32(d).unwrap()[0];
                assert_eq!(nor[i], z1.to_bits(), "normal {what}");
                // The one-element helpers that other kernels' CPU twins call.
                let (sk, ok) = (crng::split64(s), crng::split64(o));
                assert_eq!(bits[i], crng::bits_at(sk, ok, i as u32), "bits_at {what}");
                assert_eq!(uni[i], crng::uniform_at(sk, ok, i as u32).to_bits(), "uniform_at {what}");
                assert_eq!(nor[i], crng::normal_at(sk, ok, i as u32).to_bits(), "normal_at {what}");
            }
        }
    }
}

#[test]
fn one_element_helpers_match_the_block_kernels() {
    // rng_*_at (one invocation per element, as dropout-style kernels call them) against the block kernels,
    // on every device, across the offset carries.
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    let cpu = cpu();
    for o in offsets(&mut rng) {
        let s = rng.next_u64();
        let n = 1027;
        let mut want = rng::bits(&cpu, &[n], s, o).unwrap().to_u32(&cpu).unwrap();
        want.extend(bits_of(&rng::uniform(&cpu, &[n], s, o, 0.0, 1.0).unwrap().to_f32(&cpu).unwrap()));
        want.extend(bits_of(&rng::normal(&cpu, &[n], s, o, 0.0, 1.0).unwrap().to_f32(&cpu).unwrap()));
        for d in &devs {
            let got = rng::per_element(d, n, s, o).unwrap().to_u32(d).unwrap();
            assert_eq!(got, want, "{}: seed {s:#x} offset {o:#x}", d.name());
        }
    }
}

#[test]
fn stream_words_follow_the_block_lane_convention() {
    // Element i is lane (o + i) % 4 of philox4x32((o + i) / 4 as (lo, hi, 0, 0), seed as (lo, hi)).
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    let (s, o) = (rng.next_u64(), (1u64 << 34) - 7);
    let got = rng::bits(&cpu, &[40], s, o).unwrap().to_u32(&cpu).unwrap();
    for (i, &g) in got.iter().enumerate() {
        let e = o + i as u64;
        let b = e / 4;
        let w = crng::philox4x32([b as u32, (b >> 32) as u32, 0, 0], [s as u32, (s >> 32) as u32]);
        assert_eq!(g, w[(e % 4) as usize], "element {i}");
    }
    // Uniform is the top 24 bits of the same word; normal lanes pair words (0, 1) and (2, 3).
    let uni = rng::uniform(&cpu, &[40], s, o, 0.0, 1.0).unwrap().to_f32(&cpu).unwrap();
    for (u, w) in uni.iter().zip(&got) {
        assert_eq!(*u, (w >> 8) as f32 / 16_777_216.0);
    }
    let o4 = (1u64 << 34) + 8;
    let w = rng::bits(&cpu, &[40], s, o4).unwrap().to_u32(&cpu).unwrap();
    let z = rng::normal(&cpu, &[40], s, o4, 0.0, 1.0).unwrap().to_f32(&cpu).unwrap();
    for k in 0..20 {
        assert_eq!([z[2 * k], z[2 * k + 1]], crng::normal_pair(w[2 * k], w[2 * k + 1]), "pair {k}");
    }
}

#[test]
fn scaled_draws_agree_within_one_rounding_of_the_product() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    let (s, o, n) = (rng.next_u64(), rng.next_u64() >> 8, 4099);
    let cases = [(true, -3.0f32, 5.5f32), (true, 0.25, 0.75), (false, 2.0, 0.7), (false, -1.5, 3.0)];
    for (is_uniform, a, b) in cases {
        let draw = |d: &Device, a: f32, b: f32| {
            let t = if is_uniform { rng::uniform(d, &[n], s, o, a, b) } else { rng::normal(d, &[n], s, o, a, b) };
            t.unwrap().to_f32(d).unwrap()
        };
        let (shift, scale) = if is_uniform { (a, b - a) } else { (a, b) };
        let unit = draw(&cpu, 0.0, 1.0);
        let (g, c) = (draw(&gpu, a, b), draw(&cpu, a, b));
        for i in 0..n {
            // The CPU twin rounds the product, then the sum.
            assert_eq!(c[i], shift + scale * unit[i], "cpu element {i}");
            let tol = f32::EPSILON * ((scale * unit[i]).abs() + c[i].abs());
            assert!((g[i] - c[i]).abs() <= tol, "({is_uniform}, {a}, {b}) element {i}: gpu {} cpu {}", g[i], c[i]);
        }
    }
}

/// log(u1) etc. in f64 on the same words the fixed-point code used.
fn box_muller_f64(a: u32, b: u32) -> (f64, f64) {
    let u1 = (a as f64 + 1.0) / 4_294_967_296.0;
    let theta = 2.0 * std::f64::consts::PI * (b as f64 / 4_294_967_296.0);
    let r = (-2.0 * u1.ln()).sqrt();
    (r * theta.cos(), r * theta.sin())
}

#[test]
fn fixed_point_box_muller_is_within_1e_6_of_f64() {
    let mut rng = Rng::new(seed());
    let mut pairs: Vec<(u32, u32)> = (0..1_000_000).map(|_| (rng.next_u64() as u32, rng.next_u64() as u32)).collect();
    // Edges: u1 = 2^-32 (largest radius), u1 = 1 (radius 0), both sides of the small-(1 - u1) branch at
    // 2^-8, u1 near 1/2 and near powers of two; theta on and beside every octant boundary.
    let a_edges = [
        0u32,
        1,
        2,
        0xFFFF_FFFF,
        0xFFFF_FFFE,
        0xFEFF_FFFF,
        0xFF00_0000,
        0xFF00_0001,
        0xFEFF_FFFE,
        0x7FFF_FFFF,
        0x8000_0000,
        0x0000_FFFF,
        0x00FF_FFFF,
    ];
    let mut b_edges = vec![0u32, 1, 0xFFFF_FFFF];
    for k in 1..8u32 {
        b_edges.extend([(k << 29) - 1, k << 29, (k << 29) + 1]);
    }
    for &a in &a_edges {
        for &b in &b_edges {
            pairs.push((a, b));
        }
        for _ in 0..1000 {
            pairs.push((a, rng.next_u64() as u32));
        }
    }
    for &b in &b_edges {
        for _ in 0..1000 {
            pairs.push((rng.next_u64() as u32, b));
        }
    }
    // Randomly near 1 - u1 = 0, where r is tiny and most sensitive to errors in ln.
    for _ in 0..100_000 {
        pairs.push((!(rng.next_u64() as u32 >> rng.below(32)), rng.next_u64() as u32));
    }
    let mut worst = (0.0f64, 0u32, 0u32);
    for (a, b) in pairs {
        let [zc, zs] = crng::normal_pair(a, b);
        let (wc, ws) = box_muller_f64(a, b);
        let err = (zc as f64 - wc).abs().max((zs as f64 - ws).abs());
        if err > worst.0 {
            worst = (err, a, b);
        }
        assert!(zc.abs() < 8.0 && zs.abs() < 8.0);
    }
    eprintln!("fixed-point Box-Muller: max |z - f64| = {:.3e} at words ({:#x}, {:#x})", worst.0, worst.1, worst.2);
    assert!(worst.0 < 1e-6, "max error {:e} at words ({:#x}, {:#x})", worst.0, worst.1, worst.2);
}

#[test]
fn integer_square_root_is_exact() {
    let mut rng = Rng::new(seed());
    let mut vs: Vec<u64> = vec![0, 1, 2, 3, 4, (1 << 58) - 1, (1 << 56) - 1, 1 << 56];
    for k in 1..(1u64 << 29).isqrt() {
        vs.push(k * k);
        vs.push(k * k - 1);
    }
    vs.extend((0..200_000).map(|_| rng.next_u64() >> (6 + rng.below(58))));
    for v in vs {
        assert_eq!(crng::isqrt58([v as u32, (v >> 32) as u32]) as u64, v.isqrt(), "isqrt({v})");
    }
}

/// Normal CDF from a complementary error function with fractional error below 1.2e-7 (Chebyshev fit).
fn normal_cdf(x: f64) -> f64 {
    let z = (x / std::f64::consts::SQRT_2).abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223
        + t * (1.00002368
            + t * (0.37409196
                + t * (0.09678418
                    + t * (-0.18628806
                        + t * (0.27886807
                            + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let erfc = t * poly.exp();
    if x >= 0.0 {
        1.0 - 0.5 * erfc
    } else {
        0.5 * erfc
    }
}

#[test]
fn uniform_statistics_on_a_million_samples() {
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    let n = 1_000_000;
    let u = rng::uniform(&cpu, &[n], rng.next_u64(), rng.next_u64() >> 1, 0.0, 1.0).unwrap().to_f32(&cpu).unwrap();
    assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
    let mean = u.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
    let var = u.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
    eprintln!("uniform: mean {mean:.5}, variance {var:.5}");
    assert!((mean - 0.5).abs() < 0.002, "mean {mean}");
    assert!((var - 1.0 / 12.0).abs() < 0.002, "variance {var}");
    // Ten equal bins, each within 5 sigma of n / 10.
    let mut bins = [0usize; 10];
    u.iter().for_each(|&x| bins[(x * 10.0) as usize] += 1);
    let sigma = (n as f64 * 0.1 * 0.9).sqrt();
    for (k, &c) in bins.iter().enumerate() {
        assert!((c as f64 - n as f64 / 10.0).abs() < 5.0 * sigma, "bin {k}: {c}");
    }
}

#[test]
fn normal_statistics_on_a_million_samples() {
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    let n = 1_000_000;
    let (s, o) = (rng.next_u64(), (rng.next_u64() >> 1) & !3);
    let mut z = rng::normal(&cpu, &[n], s, o, 0.0, 1.0).unwrap().to_f32(&cpu).unwrap();
    let mean = z.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
    let std = (z.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
    eprintln!("normal: mean {mean:.5}, std {std:.5}");
    assert!(mean.abs() < 0.005, "mean {mean}");
    assert!((std - 1.0).abs() < 0.005, "std {std}");

    // The stream's normals against f64 Box-Muller on the stream's own words (offset is block-aligned, so
    // element pairs (2k, 2k + 1) are one Box-Muller pair).
    let w = rng::bits(&cpu, &[n], s, o).unwrap().to_u32(&cpu).unwrap();
    let mut worst = 0.0f64;
    for k in 0..n / 2 {
        let (c, sn) = box_muller_f64(w[2 * k], w[2 * k + 1]);
        worst = worst.max((z[2 * k] as f64 - c).abs()).max((z[2 * k + 1] as f64 - sn).abs());
    }
    eprintln!("normal stream vs f64 Box-Muller: max error {worst:.3e}");
    assert!(worst < 1e-6, "max error {worst:e}");

    // Kolmogorov-Smirnov distance to the normal CDF.
    z.sort_by(|a, b| a.total_cmp(b));
    let mut ks = 0.0f64;
    for (i, &x) in z.iter().enumerate() {
        let f = normal_cdf(x as f64);
        ks = ks.max((f - i as f64 / n as f64).abs()).max((f - (i + 1) as f64 / n as f64).abs());
    }
    eprintln!("normal: KS distance {ks:.5}");
    assert!(ks < 0.005, "KS distance {ks}");
    // Coarse histogram: bins of width 0.5 on [-4, 4] within 5 sigma of their expected counts.
    for k in 0..16 {
        let (lo, hi) = (-4.0 + 0.5 * k as f64, -3.5 + 0.5 * k as f64);
        let c = z.iter().filter(|&&x| (x as f64) >= lo && (x as f64) < hi).count() as f64;
        let p = normal_cdf(hi) - normal_cdf(lo);
        let sigma = (n as f64 * p * (1.0 - p)).sqrt().max(1.0);
        assert!((c - n as f64 * p).abs() < 5.0 * sigma + 2.0, "bin [{lo}, {hi}): {c} vs {}", n as f64 * p);
    }
}

#[test]
fn rng_state_hands_out_disjoint_block_aligned_offsets() {
    let cpu = cpu();
    let mut st = RngState::new(42);
    assert_eq!(st.take(5), 0);
    assert_eq!(st.take(1), 8);
    assert_eq!(st.take(0), 12);
    assert_eq!(st.take(4), 12);
    assert_eq!(st.offset, 16);
    // Draws through the state equal draws at the offsets it hands out, and consecutive draws differ.
    let mut st = RngState::new(7);
    let a = st.normal(&cpu, &[3, 3], 0.0, 1.0).unwrap().to_f32(&cpu).unwrap();
    let b = st.uniform(&cpu, &[2], 0.0, 1.0).unwrap().to_f32(&cpu).unwrap();
    let c = st.bits(&cpu, &[5]).unwrap().to_u32(&cpu).unwrap();
    assert_eq!(a, rng::normal(&cpu, &[3, 3], 7, 0, 0.0, 1.0).unwrap().to_f32(&cpu).unwrap());
    assert_eq!(b, rng::uniform(&cpu, &[2], 7, 12, 0.0, 1.0).unwrap().to_f32(&cpu).unwrap());
    assert_eq!(c, rng::bits(&cpu, &[5], 7, 16).unwrap().to_u32(&cpu).unwrap());
    assert_eq!(st.offset, 24);
    let again = st.normal(&cpu, &[3, 3], 0.0, 1.0).unwrap().to_f32(&cpu).unwrap();
    assert_ne!(a, again);
}

#[test]
fn shapes_and_empty_draws() {
    let cpu = cpu();
    let t = rng::normal(&cpu, &[4, 0, 3], 1, 2, 0.0, 1.0).unwrap();
    assert_eq!(t.shape, vec![4, 0, 3]);
    assert!(t.to_f32(&cpu).unwrap().is_empty());
    let t = rng::uniform(&cpu, &[2, 3, 5], 1, 2, 0.0, 1.0).unwrap();
    let flat = rng::uniform(&cpu, &[30], 1, 2, 0.0, 1.0).unwrap();
    assert_eq!(t.shape, vec![2, 3, 5]);
    assert_eq!(t.to_f32(&cpu).unwrap(), flat.to_f32(&cpu).unwrap());
    assert_eq!(rng::bits(&cpu, &[3], 1, 2).unwrap().dtype, tigel::DType::U32);
}

#[test]
fn bad_ranges_are_errors_naming_them() {
    let cpu = Device::cpu();
    let e = rng::uniform(&cpu, &[2, 3], 0, 0, 2.0, 1.0).unwrap_err().to_string();
    assert!(e.contains("[2, 1)") && e.contains("[2, 3]"), "{e}");
    let e = rng::uniform(&cpu, &[4], 0, 0, f32::NAN, 1.0).unwrap_err().to_string();
    assert!(e.contains("NaN") && e.contains("[4]"), "{e}");
    let e = rng::uniform(&cpu, &[4], 0, 0, -f32::MAX, f32::MAX).unwrap_err().to_string();
    assert!(e.contains("rng::uniform"), "{e}");
    let e = rng::normal(&cpu, &[5], 0, 0, 0.0, -1.0).unwrap_err().to_string();
    assert!(e.contains("std -1") && e.contains("[5]"), "{e}");
    let e = rng::normal(&cpu, &[5], 0, 0, f32::INFINITY, 1.0).unwrap_err().to_string();
    assert!(e.contains("mean inf"), "{e}");
}

// ---------------------------------------------------------------------------------------------------------
// Step-indexed draws: element i at step s is stream element s * stride + i. Tolerances: normal_step and
// uniform_step(0, 1) are compared bit for bit (integer Philox end to end, like the plain draws above);
// other uniform ranges within one rounding of the product, as `scaled_draws_agree...`.

/// Stride of 2^33 + 4 carries s * stride into the offset's high word from step 1 on.
fn step_cases(rng: &mut Rng) -> Vec<(usize, u64, u32)> {
    vec![
        (1, 4, 0),
        (3, 4, 1),
        (5, 8, rng.next_u64() as u32 % 1000),
        (1023, 1024, 7),
        (4099, 4100, u32::MAX),
        (17, (1u64 << 33) + 4, 3),
        (64, rng.next_u64() & !3 | 64, rng.next_u64() as u32),
    ]
}

#[test]
fn normal_step_and_uniform_step_match_cpu_twin_bit_for_bit() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for (n, stride, s) in step_cases(&mut rng) {
        let seed = rng.next_u64();
        let what = format!("n {n} stride {stride:#x} step {s} seed {seed:#x}");
        let z = |d: &Device| {
            let st = tigel::ops::optim::step_counter(d, s).unwrap();
            bits_of(&rng::normal_step(d, &[n], seed, stride, &st).unwrap().to_f32(d).unwrap())
        };
        assert_eq!(z(&gpu), z(&cpu), "normal_step {what}");
        let u = |d: &Device, lo: f32, hi: f32| {
            let st = tigel::ops::optim::step_counter(d, s).unwrap();
            rng::uniform_step(d, &[n], seed, stride, lo, hi, &st).unwrap().to_f32(d).unwrap()
        };
        assert_eq!(bits_of(&u(&gpu, 0.0, 1.0)), bits_of(&u(&cpu, 0.0, 1.0)), "uniform_step {what}");
        let unit = u(&cpu, 0.0, 1.0);
        let (g, c) = (u(&gpu, -2.0, 3.5), u(&cpu, -2.0, 3.5));
        for i in 0..n {
            assert_eq!(c[i], -2.0 + 5.5 * unit[i], "cpu uniform_step(-2, 3.5) {what} element {i}");
            let tol = f32::EPSILON * ((5.5 * unit[i]).abs() + c[i].abs());
            assert!((g[i] - c[i]).abs() <= tol, "uniform_step(-2, 3.5) {what} element {i}: {} vs {}", g[i], c[i]);
        }
    }
}

#[test]
fn step_draws_are_the_stream_at_step_times_stride() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    for d in &devs {
        for (n, stride, s) in step_cases(&mut rng) {
            let seed = rng.next_u64();
            let offset = (s as u64).wrapping_mul(stride);
            let what = format!("{}: n {n} stride {stride:#x} step {s}", d.name());
            let st = tigel::ops::optim::step_counter(d, s).unwrap();
            let z = rng::normal_step(d, &[n], seed, stride, &st).unwrap().to_f32(d).unwrap();
            let want = rng::normal(d, &[n], seed, offset, 0.0, 1.0).unwrap().to_f32(d).unwrap();
            assert_eq!(bits_of(&z), bits_of(&want), "normal_step {what}");
            let u = rng::uniform_step(d, &[n], seed, stride, 0.0, 1.0, &st).unwrap().to_f32(d).unwrap();
            let want = rng::uniform(d, &[n], seed, offset, 0.0, 1.0).unwrap().to_f32(d).unwrap();
            assert_eq!(bits_of(&u), bits_of(&want), "uniform_step {what}");
            // The step offset helper other twins use, against 64-bit arithmetic.
            assert_eq!(crng::step_offset(s, crng::split64(stride)), crng::split64(offset), "step_offset {what}");
        }
    }
}

#[test]
fn step_draws_into_existing_tensors_and_differ_between_steps() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    for d in &devs {
        let (n, seed) = (103, rng.next_u64());
        let stride = rng::step_stride(n);
        assert_eq!(stride, 104);
        let st = tigel::ops::optim::step_counter(d, 5).unwrap();
        let out = tigel::Tensor::empty(d, &[103], tigel::DType::F32).unwrap();
        rng::normal_step_into(d, &out, seed, stride, &st).unwrap();
        let want = rng::normal_step(d, &[n], seed, stride, &st).unwrap().to_f32(d).unwrap();
        assert_eq!(bits_of(&out.to_f32(d).unwrap()), bits_of(&want), "{}: normal_step_into", d.name());
        rng::uniform_step_into(d, &out, seed, stride, 1.0, 2.0, &st).unwrap();
        let want = rng::uniform_step(d, &[n], seed, stride, 1.0, 2.0, &st).unwrap().to_f32(d).unwrap();
        assert_eq!(bits_of(&out.to_f32(d).unwrap()), bits_of(&want), "{}: uniform_step_into", d.name());
        let at = |s: u32| {
            let st = tigel::ops::optim::step_counter(d, s).unwrap();
            rng::normal_step(d, &[n], seed, stride, &st).unwrap().to_f32(d).unwrap()
        };
        let (a, b, c) = (at(0), at(1), at(2));
        assert_ne!(a, b, "{}: steps 0 and 1", d.name());
        assert_ne!(b, c, "{}: steps 1 and 2", d.name());
        // Adjacent steps use adjacent windows: step 1's first values continue step 0's stream.
        let long = rng::normal(d, &[2 * n + 1], seed, 0, 0.0, 1.0).unwrap().to_f32(d).unwrap();
        assert_eq!(bits_of(&a), bits_of(&long[..n]));
        assert_eq!(bits_of(&b), bits_of(&long[104..104 + n]));
    }
}

/// The point of the step counter: a recorded draw followed by `advance_step` gives the next step's numbers
/// at each replay, equal to the eager draw at that step.
#[test]
fn replayed_step_draws_follow_the_advanced_step_counter() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    for d in &devs {
        let (n, seed, s0) = (257, rng.next_u64(), rng.next_u64() as u32 % 1000);
        let stride = rng::step_stride(n);
        let step = tigel::ops::optim::step_counter(d, s0).unwrap();
        let z = tigel::Tensor::empty(d, &[n], tigel::DType::F32).unwrap();
        let u = tigel::Tensor::empty(d, &[n], tigel::DType::F32).unwrap();
        let ((), rec) = d
            .capture(|| {
                rng::normal_step_into(d, &z, seed, stride, &step)?;
                rng::uniform_step_into(d, &u, seed ^ 1, stride, 0.0, 1.0, &step)?;
                tigel::ops::optim::advance_step(d, &step, 1)
            })
            .unwrap();
        let mut seen = Vec::new();
        for k in 0..3u32 {
            d.replay(&rec).unwrap();
            let got = z.to_f32(d).unwrap();
            let eager_step = tigel::ops::optim::step_counter(d, s0 + k).unwrap();
            let want = rng::normal_step(d, &[n], seed, stride, &eager_step).unwrap().to_f32(d).unwrap();
            assert_eq!(bits_of(&got), bits_of(&want), "{}: replay {k}", d.name());
            let want = rng::uniform_step(d, &[n], seed ^ 1, stride, 0.0, 1.0, &eager_step).unwrap().to_f32(d).unwrap();
            assert_eq!(bits_of(&u.to_f32(d).unwrap()), bits_of(&want), "{}: uniform replay {k}", d.name());
            assert!(!seen.contains(&got), "{}: replay {k} repeats an earlier draw", d.name());
            seen.push(got);
        }
        assert_eq!(step.to_u32(d).unwrap(), vec![s0 + 3]);
    }
}

#[test]
fn step_draw_statistics_on_1e5_samples() {
    // Mean within 5 standard errors (1 / sqrt(n)), variance within 5 standard errors (sqrt(2 / n) for a
    // normal, sqrt(1 / 180 / n) for a unit uniform).
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    let n = 100_000;
    for d in &devs {
        let st = tigel::ops::optim::step_counter(d, rng.next_u64() as u32).unwrap();
        let seed = rng.next_u64();
        let z = rng::normal_step(d, &[n], seed, rng::step_stride(n), &st).unwrap().to_f32(d).unwrap();
        let mean = z.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let var = z.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        eprintln!("{}: normal_step mean {mean:.5} variance {var:.5}", d.name());
        assert!(mean.abs() < 5.0 / (n as f64).sqrt(), "{}: mean {mean}", d.name());
        assert!((var - 1.0).abs() < 5.0 * (2.0 / n as f64).sqrt(), "{}: variance {var}", d.name());
        let u = rng::uniform_step(d, &[n], seed, rng::step_stride(n), 0.0, 1.0, &st).unwrap().to_f32(d).unwrap();
        let mean = u.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let var = u.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 5.0 * (1.0 / 12.0 / n as f64).sqrt(), "{}: uniform mean {mean}", d.name());
        assert!((var - 1.0 / 12.0).abs() < 5.0 * (1.0 / 180.0 / n as f64).sqrt(), "{}: uniform var {var}", d.name());
    }
}

#[test]
fn bad_step_draws_are_errors_naming_them() {
    let cpu = Device::cpu();
    let st = tigel::ops::optim::step_counter(&cpu, 0).unwrap();
    let fstep = tigel::Tensor::from_f32(&cpu, &[1], &[0.0]).unwrap();
    let e = rng::normal_step(&cpu, &[4], 0, 4, &fstep).unwrap_err().to_string();
    assert!(e.contains("step counter") && e.contains("f32"), "{e}");
    let two = tigel::Tensor::from_u32(&cpu, &[2], &[0, 0]).unwrap();
    let e = rng::uniform_step(&cpu, &[4], 0, 4, 0.0, 1.0, &two).unwrap_err().to_string();
    assert!(e.contains("step counter") && e.contains("[2]"), "{e}");
    let e = rng::normal_step(&cpu, &[2, 3], 0, 4, &st).unwrap_err().to_string();
    assert!(e.contains("stride 4") && e.contains("[2, 3]") && e.contains("gives 8"), "{e}");
    let e = rng::normal_step(&cpu, &[5], 0, 6, &st).unwrap_err().to_string();
    assert!(e.contains("stride 6") && e.contains("multiple of 4"), "{e}");
    let e = rng::uniform_step(&cpu, &[5], 0, 8, 1.0, 0.0, &st).unwrap_err().to_string();
    assert!(e.contains("[1, 0)") && e.contains("[5]"), "{e}");
    let u = tigel::Tensor::from_u32(&cpu, &[4], &[0; 4]).unwrap();
    let e = rng::normal_step_into(&cpu, &u, 0, 4, &st).unwrap_err().to_string();
    assert!(e.contains("u32") && e.contains("f32"), "{e}");
}
