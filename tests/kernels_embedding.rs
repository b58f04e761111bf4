//! Embedding family: lookup and scatter-add backward, GPU vs CPU twin, the CPU twin vs a reference,
//! repeated and unused ids, out-of-range ids, the folded workgroup grid, and bad input.
//!
//! Tolerances: the lookup is a copy, compared bit for bit. The backward adds each table element's
//! contributions in increasing position order starting from 0 on both engines, with additions only (nothing
//! to fuse), so GPU and CPU are compared bit for bit too. Against the f64 reference the backward's error is
//! at most (k - 1) u Σ|terms| for a sum of k terms (u = 2^-24, sequential summation), plus u |sum| for the
//! reference's own rounding to f32.
mod common;
use common::*;
use tigel::ops::embedding::{embedding, embedding_backward};
use tigel::{Device, Tensor};

const FEATURES: [usize; 5] = [1, 7, 64, 130, 768];
const IDS: [&[usize]; 4] = [&[1], &[13], &[300], &[3, 100]];

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Ids in [0, vocab), with about one in 16 out of range (>= vocab, up to u32::MAX) to exercise clamping.
fn random_ids(rng: &mut Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|_| match rng.below(16) {
            0 => (vocab + rng.below(3)) as u32,
            1 if rng.below(4) == 0 => u32::MAX,
            _ => rng.below(vocab) as u32,
        })
        .collect()
}

/// (lookup, dtable) on one device.
fn run(d: &Device, shape: &[usize], ids: &[u32], table: &[f32], vocab: usize, dout: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let c = table.len() / vocab;
    let ids_t = Tensor::from_u32(d, shape, ids).unwrap();
    let table_t = Tensor::from_f32(d, &[vocab, c], table).unwrap();
    let out = embedding(d, &ids_t, &table_t).unwrap();
    let mut out_shape = shape.to_vec();
    out_shape.push(c);
    assert_eq!(out.shape, out_shape);
    let dout_t = Tensor::from_f32(d, &out_shape, dout).unwrap();
    let dtable = embedding_backward(d, &ids_t, &dout_t, vocab).unwrap();
    assert_eq!(dtable.shape, [vocab, c]);
    (out.to_f32(d).unwrap(), dtable.to_f32(d).unwrap())
}

/// Reference lookup, f64 scatter-add, and the backward's error bound per table element.
fn reference(ids: &[u32], table: &[f32], vocab: usize, dout: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let c = table.len() / vocab;
    let row = |id: u32| (id as usize).min(vocab - 1);
    let mut out = Vec::new();
    for &id in ids {
        out.extend_from_slice(&table[row(id) * c..(row(id) + 1) * c]);
    }
    let (mut sum, mut abs, mut count) = (vec![0f64; vocab * c], vec![0f64; vocab * c], vec![0usize; vocab]);
    for (n, &id) in ids.iter().enumerate() {
        let v = row(id);
        count[v] += 1;
        for k in 0..c {
            sum[v * c + k] += dout[n * c + k] as f64;
            abs[v * c + k] += (dout[n * c + k] as f64).abs();
        }
    }
    let u = 1.0 / (1u64 << 24) as f64;
    let bound = (0..vocab * c).map(|i| (count[i / c].saturating_sub(1) as f64 * u * abs[i] + u * sum[i].abs()) as f32);
    (out, sum.iter().map(|&v| v as f32).collect(), bound.collect())
}

#[track_caller]
fn assert_within(what: &str, got: &[f32], want: &[f32], bound: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        assert!((g - w).abs() <= b, "{what}: element {i} is {g} but should be {w} (tolerance {b})");
    }
}

#[test]
fn embedding_gpu_matches_cpu_twin_bit_for_bit() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for c in FEATURES {
        for shape in IDS {
            let vocab = [1, 5, 257][rng.below(3)];
            let n: usize = shape.iter().product();
            let ids = random_ids(&mut rng, n, vocab);
            let table = rng.vec(vocab * c, -1.0, 1.0);
            let dout = rng.vec(n * c, -1.0, 1.0);
            let (fc, bc) = run(&cpu, shape, &ids, &table, vocab, &dout);
            let (fg, bg) = run(&gpu, shape, &ids, &table, vocab, &dout);
            assert_eq!(bits(&fg), bits(&fc), "lookup {shape:?} C={c} V={vocab}");
            assert_eq!(bits(&bg), bits(&bc), "backward {shape:?} C={c} V={vocab}");
        }
    }
}

#[test]
fn embedding_cpu_twin_matches_reference() {
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for c in FEATURES {
        for shape in IDS.iter().copied().chain([&[8, 256][..]]) {
            let vocab = [1, 5, 257][rng.below(3)];
            let n: usize = shape.iter().product();
            let ids = random_ids(&mut rng, n, vocab);
            let table = rng.vec(vocab * c, -1.0, 1.0);
            let dout = rng.vec(n * c, -1.0, 1.0);
            let (f, b) = run(&cpu, shape, &ids, &table, vocab, &dout);
            let (wf, wb, bound) = reference(&ids, &table, vocab, &dout);
            assert_eq!(bits(&f), bits(&wf), "lookup {shape:?} C={c} V={vocab}");
            assert_within(&format!("backward {shape:?} C={c} V={vocab}"), &b, &wb, &bound);
        }
    }
}

#[test]
fn embedding_backward_repeated_and_unused_ids() {
    // 300 positions over ids 3..8 of a 20-row table: heavy repetition, rows 0..3 and 8..20 never used and
    // exactly 0 (their poisoned memory must be overwritten), out-of-range ids landing on the last row.
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    let (n, c, vocab) = (300, 130, 20);
    let mut ids: Vec<u32> = (0..n).map(|_| 3 + rng.below(5) as u32).collect();
    ids[7] = 20;
    ids[100] = 1000;
    let table = rng.vec(vocab * c, -1.0, 1.0);
    let dout = rng.vec(n * c, -1.0, 1.0);
    let (wf, wb, bound) = reference(&ids, &table, vocab, &dout);
    let mut results = Vec::new();
    for d in &devs {
        let (f, b) = run(d, &[n], &ids, &table, vocab, &dout);
        assert_eq!(bits(&f), bits(&wf), "{} lookup", d.name());
        assert_within(&format!("{} backward", d.name()), &b, &wb, &bound);
        for v in (0..3).chain(8..19) {
            assert!(b[v * c..(v + 1) * c].iter().all(|&x| x.to_bits() == 0), "{}: row {v} is not zero", d.name());
        }
        // The last row gets exactly the out-of-range positions' gradients, in position order.
        let last: Vec<f32> = (0..c).map(|k| 0.0 + dout[7 * c + k] + dout[100 * c + k]).collect();
        assert_eq!(bits(&b[19 * c..]), bits(&last), "{}: clamped ids", d.name());
        results.push(b);
    }
    if let [a, b] = &results[..] {
        assert_eq!(bits(a), bits(b), "GPU and CPU differ");
    }
}

#[test]
fn embedding_backward_sums_in_position_order() {
    // Terms whose sum depends on the order: 1, 2^-24 (lost next to 1), then -1 ... added in position order
    // from 0 give (0 + 1 + 2^-24) - 1 = 0, while the reverse order gives 2^-24. Both engines must give the
    // position-order result.
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let dout = [1.0, 2f32.powi(-24), -1.0, 5.0];
    let ids = [0u32, 0, 0, 1];
    for d in &devs {
        let i = Tensor::from_u32(d, &[4], &ids).unwrap();
        let g = Tensor::from_f32(d, &[4, 1], &dout).unwrap();
        let got = embedding_backward(d, &i, &g, 2).unwrap().to_f32(d).unwrap();
        assert_eq!(got, [0.0, 5.0], "{}", d.name());
    }
}

#[test]
fn embedding_backward_grid_folds_past_the_dimension_limit() {
    // 70000 table rows, one workgroup each: the grid folds into y.
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    let (n, c, vocab) = (13, 1, 70000);
    let ids: Vec<u32> = (0..n).map(|_| rng.below(vocab) as u32).collect();
    let table = rng.vec(vocab * c, -1.0, 1.0);
    let dout = rng.vec(n * c, -1.0, 1.0);
    let (fc, bc) = run(&cpu, &[n], &ids, &table, vocab, &dout);
    let (fg, bg) = run(&gpu, &[n], &ids, &table, vocab, &dout);
    let (wf, wb, bound) = reference(&ids, &table, vocab, &dout);
    assert_eq!(bits(&fc), bits(&wf));
    assert_within("cpu backward", &bc, &wb, &bound);
    assert_eq!(bits(&fg), bits(&fc));
    assert_eq!(bits(&bg), bits(&bc));
}

#[test]
fn embedding_bad_input_is_an_error() {
    let d = Device::cpu();
    let ids = Tensor::from_u32(&d, &[2, 3], &[0, 1, 2, 0, 1, 2]).unwrap();
    let table = Tensor::from_f32(&d, &[4, 5], &[0.5; 20]).unwrap();
    let f_ids = Tensor::from_f32(&d, &[2, 3], &[0.0; 6]).unwrap();
    let e = embedding(&d, &f_ids, &table).unwrap_err().to_string();
    assert!(e.contains("f32") && e.contains("u32"), "{e}");
    let e = embedding(&d, &ids, &Tensor::from_f32(&d, &[20], &[0.5; 20]).unwrap()).unwrap_err().to_string();
    assert!(e.contains("[20]") && e.contains("[2, 3]"), "{e}");
    let e = embedding(&d, &ids, &Tensor::from_u32(&d, &[4, 5], &[0; 20]).unwrap()).unwrap_err().to_string();
    assert!(e.contains("u32") && e.contains("f32"), "{e}");
    let e = embedding(&d, &ids, &Tensor::from_f32(&d, &[0, 5], &[]).unwrap()).unwrap_err().to_string();
    assert!(e.contains("[0, 5]"), "{e}");

    let dout = Tensor::from_f32(&d, &[2, 3, 5], &[0.5; 30]).unwrap();
    let wrong = Tensor::from_f32(&d, &[3, 2, 5], &[0.5; 30]).unwrap();
    let e = embedding_backward(&d, &ids, &wrong, 4).unwrap_err().to_string();
    assert!(e.contains("[2, 3]") && e.contains("[3, 2, 5]"), "{e}");
    let e = embedding_backward(&d, &ids, &dout, 0).unwrap_err().to_string();
    assert!(e.contains("vocab"), "{e}");
    let e = embedding_backward(&d, &f_ids, &dout, 4).unwrap_err().to_string();
    assert!(e.contains("f32") && e.contains("u32"), "{e}");
    let e = embedding_backward(&d, &ids, &Tensor::from_u32(&d, &[2, 3, 5], &[0; 30]).unwrap(), 4).unwrap_err();
    assert!(e.to_string().contains("u32"), "{e}");
    // Good input still works, and no ids give an empty lookup and a zero table gradient.
    assert_eq!(embedding(&d, &ids, &table).unwrap().shape, [2, 3, 5]);
    let none = Tensor::from_u32(&d, &[0], &[]).unwrap();
    assert_eq!(embedding(&d, &none, &table).unwrap().shape, [0, 5]);
    let g = embedding_backward(&d, &none, &Tensor::from_f32(&d, &[0, 5], &[]).unwrap(), 4).unwrap();
    assert_eq!(g.to_f32(&d).unwrap(), [0.0; 20]);
}
