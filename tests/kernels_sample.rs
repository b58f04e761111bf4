//! Sample family: minibatch rows drawn on the device at the step counter. GPU vs CPU twin, both against the
//! documented index (Philox bits at s * stride + r, mod N), replays of a recorded step, coverage, bad input.
//!
//! Tolerance: none. The index is integer arithmetic and the gather copies values, so batches and labels are
//! compared exactly, on the bits.
mod common;
use common::*;
use tigel::host::philox as crng;
use tigel::ops::optim::{advance_step, step_counter};
use tigel::ops::sample::{self, batch_stride};
use tigel::{DType, Device, Tensor};

/// Data whose element j of row r is r * 1000 + j (exact in f32 for these sizes), so a batch names its rows.
fn indexed_data(n: usize, row_shape: &[usize]) -> Vec<f32> {
    let d: usize = row_shape.iter().product();
    (0..n).flat_map(|r| (0..d).map(move |j| (r * 1000 + j) as f32)).collect()
}

/// The rows the batch should hold: bits(seed, s * stride + r) mod N, straight from the stream definition.
fn want_rows(n: usize, batch: usize, seed: u64, step: u32) -> Vec<usize> {
    let offset = (step as u64).wrapping_mul(batch_stride(batch));
    (0..batch).map(|r| crng::bits_at(crng::split64(seed), crng::split64(offset), r as u32) as usize % n).collect()
}

fn shape_of(first: usize, rest: &[usize]) -> Vec<usize> {
    std::iter::once(first).chain(rest.iter().copied()).collect()
}

#[test]
fn sample_rows_match_cpu_twin_and_the_stream_exactly() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    let cases: [(usize, &[usize], usize); 7] = [
        (1, &[], 3),
        (7, &[1], 1),
        (7, &[3], 5),
        (1000, &[], 257),
        (13, &[2, 5], 64),
        (997, &[17], 100),
        (50, &[4, 3, 2], 1031),
    ];
    for (n, row, batch) in cases {
        let d: usize = row.iter().product();
        let data = indexed_data(n, row);
        let labels: Vec<u32> = (0..n).map(|_| rng.next_u64() as u32).collect();
        let seed = rng.next_u64();
        for s in [0u32, 1, rng.next_u64() as u32] {
            let rows = want_rows(n, batch, seed, s);
            let mut results = Vec::new();
            for dev in &devs {
                let what = format!("{}: n {n} row {row:?} batch {batch} step {s}", dev.name());
                let td = Tensor::from_f32(dev, &shape_of(n, row), &data).unwrap();
                let tl = Tensor::from_u32(dev, &[n], &labels).unwrap();
                let st = step_counter(dev, s).unwrap();
                let (x, y) = sample::sample_rows(dev, &td, Some(&tl), batch, seed, &st).unwrap();
                assert_eq!(x.shape, shape_of(batch, row), "{what}");
                let (x, y) = (x.to_f32(dev).unwrap(), y.unwrap().to_u32(dev).unwrap());
                for (r, &src) in rows.iter().enumerate() {
                    assert_eq!(&x[r * d..(r + 1) * d], &data[src * d..(src + 1) * d], "{what}: row {r}");
                    assert_eq!(y[r], labels[src], "{what}: label {r}");
                }
                // Without labels: the same rows.
                let (x2, none) = sample::sample_rows(dev, &td, None, batch, seed, &st).unwrap();
                assert!(none.is_none());
                assert_eq!(x2.to_f32(dev).unwrap(), x, "{what}: without labels");
                results.push(x.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            }
            assert!(results.windows(2).all(|w| w[0] == w[1]), "devices disagree: n {n} batch {batch} step {s}");
        }
    }
}

#[test]
fn sample_rows_into_and_steps() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    let (n, d, batch) = (300, 6, 40);
    let data = indexed_data(n, &[d]);
    let labels: Vec<u32> = (0..n as u32).collect();
    for dev in &devs {
        let seed = rng.next_u64();
        let td = Tensor::from_f32(dev, &[n, d], &data).unwrap();
        let tl = Tensor::from_u32(dev, &[n], &labels).unwrap();
        let out = Tensor::empty(dev, &[batch, d], DType::F32).unwrap();
        let out_l = Tensor::empty(dev, &[batch], DType::U32).unwrap();
        let mut seen = Vec::new();
        for s in 0..3u32 {
            let st = step_counter(dev, s).unwrap();
            sample::sample_rows_into(dev, &td, Some(&tl), seed, &st, &out, Some(&out_l)).unwrap();
            let got = out_l.to_u32(dev).unwrap();
            let want: Vec<u32> = want_rows(n, batch, seed, s).iter().map(|&r| r as u32).collect();
            assert_eq!(got, want, "{}: step {s}", dev.name());
            let (x, _) = sample::sample_rows(dev, &td, None, batch, seed, &st).unwrap();
            assert_eq!(out.to_f32(dev).unwrap(), x.to_f32(dev).unwrap(), "{}: into vs allocating", dev.name());
            assert!(!seen.contains(&got), "{}: step {s} repeats a batch", dev.name());
            seen.push(got);
        }
        // An empty batch writes nothing and is fine.
        let st = step_counter(dev, 0).unwrap();
        let (x, y) = sample::sample_rows(dev, &td, Some(&tl), 0, seed, &st).unwrap();
        assert_eq!((x.shape, y.unwrap().shape), (vec![0, d], vec![0]));
    }
}

/// A recorded training step's prologue: gather, then advance the counter. Each replay takes the next step's
/// batch.
#[test]
fn replayed_sampling_follows_the_advanced_step_counter() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    let (n, d, batch) = (211, 3, 33);
    let data = indexed_data(n, &[d]);
    let labels: Vec<u32> = (0..n as u32).map(|r| r * 7).collect();
    for dev in &devs {
        let (seed, s0) = (rng.next_u64(), rng.next_u64() as u32 % 100);
        let td = Tensor::from_f32(dev, &[n, d], &data).unwrap();
        let tl = Tensor::from_u32(dev, &[n], &labels).unwrap();
        let step = step_counter(dev, s0).unwrap();
        let out = Tensor::empty(dev, &[batch, d], DType::F32).unwrap();
        let out_l = Tensor::empty(dev, &[batch], DType::U32).unwrap();
        let ((), rec) = dev
            .capture(|| {
                sample::sample_rows_into(dev, &td, Some(&tl), seed, &step, &out, Some(&out_l))?;
                advance_step(dev, &step, 1)
            })
            .unwrap();
        for k in 0..3u32 {
            dev.replay(&rec).unwrap();
            let rows = want_rows(n, batch, seed, s0 + k);
            let want: Vec<u32> = rows.iter().map(|&r| r as u32 * 7).collect();
            assert_eq!(out_l.to_u32(dev).unwrap(), want, "{}: replay {k}", dev.name());
            let x = out.to_f32(dev).unwrap();
            assert!(rows.iter().enumerate().all(|(r, &src)| x[r * d] == (src * 1000) as f32), "{}", dev.name());
        }
    }
}

#[test]
fn sampled_rows_cover_the_data_set_evenly() {
    // 20 rows, 20000 draws: every row appears, each count within 5 sigma of 1000 (binomial, p = 1/20).
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    let (n, batch) = (20, 20_000);
    let td = Tensor::from_f32(&cpu, &[n], &indexed_data(n, &[])).unwrap();
    let st = step_counter(&cpu, rng.next_u64() as u32).unwrap();
    let (x, _) = sample::sample_rows(&cpu, &td, None, batch, rng.next_u64(), &st).unwrap();
    let mut counts = vec![0usize; n];
    x.to_f32(&cpu).unwrap().iter().for_each(|&v| counts[v as usize / 1000] += 1);
    let (mean, sigma) = (batch as f64 / n as f64, (batch as f64 * (1.0 / n as f64) * (1.0 - 1.0 / n as f64)).sqrt());
    for (r, &c) in counts.iter().enumerate() {
        assert!((c as f64 - mean).abs() < 5.0 * sigma, "row {r} drawn {c} times of {batch}");
    }
}

#[test]
fn bad_sampling_input_is_an_error_naming_it() {
    let d = Device::cpu();
    let f = |shape: &[usize]| Tensor::from_f32(&d, shape, &vec![0.5; shape.iter().product()]).unwrap();
    let u = |shape: &[usize]| Tensor::from_u32(&d, shape, &vec![0; shape.iter().product()]).unwrap();
    let st = u(&[1]);
    let err = |r: tigel::Result<(Tensor, Option<Tensor>)>| r.unwrap_err().to_string();

    let e = err(sample::sample_rows(&d, &f(&[4, 2]), None, 3, 0, &f(&[1])));
    assert!(e.contains("step counter") && e.contains("f32"), "{e}");
    let e = err(sample::sample_rows(&d, &f(&[4, 2]), None, 3, 0, &u(&[3])));
    assert!(e.contains("step counter") && e.contains("[3]"), "{e}");
    let e = err(sample::sample_rows(&d, &f(&[0, 2]), None, 3, 0, &st));
    assert!(e.contains("no rows") && e.contains("[0, 2]"), "{e}");
    let e = err(sample::sample_rows(&d, &u(&[4, 2]), None, 3, 0, &st));
    assert!(e.contains("u32") && e.contains("f32"), "{e}");
    let e = err(sample::sample_rows(&d, &f(&[4, 2]), Some(&u(&[5])), 3, 0, &st));
    assert!(e.contains("[4, 2]") && e.contains("[5]") && e.contains("labels"), "{e}");
    let e = err(sample::sample_rows(&d, &f(&[4, 2]), Some(&f(&[4])), 3, 0, &st));
    assert!(e.contains("f32") && e.contains("u32"), "{e}");

    let e = sample::sample_rows_into(&d, &f(&[4, 2]), None, 0, &st, &f(&[3, 3]), None).unwrap_err().to_string();
    assert!(e.contains("[4, 2]") && e.contains("[3, 3]"), "{e}");
    let e = sample::sample_rows_into(&d, &f(&[4, 2]), Some(&u(&[4])), 0, &st, &f(&[3, 2]), Some(&u(&[2])))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[3, 2]") && e.contains("[2]") && e.contains("out_labels"), "{e}");
    let e =
        sample::sample_rows_into(&d, &f(&[4, 2]), Some(&u(&[4])), 0, &st, &f(&[3, 2]), None).unwrap_err().to_string();
    assert!(e.contains("without out_labels"), "{e}");
}
