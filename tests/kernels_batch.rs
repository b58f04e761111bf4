//! Batch family (text_windows): GPU and CPU give identical windows, the windows are the corpus bytes and
//! their next-byte targets at the starts the Philox stream prescribes, every byte read lies inside the
//! requested range, the step counter is read when the kernel runs (captured steps draw new windows at each
//! replay), and bad input. Everything is integer: results are compared exactly.
mod common;
use common::*;
use tigel::host::philox as crng;
use tigel::ops::batch::{pack_bytes, text_windows};
use tigel::ops::optim::{advance_step, step_counter};
use tigel::{Device, Tensor};

/// A corpus of `n` bytes: values below 0xFF inside [start, start + len), 0xFF outside, so a byte read
/// from outside the range shows as 0xFF.
fn corpus(rng: &mut Rng, n: usize, start: usize, len: usize) -> Vec<u8> {
    (0..n).map(|p| if p >= start && p < start + len { rng.below(255) as u8 } else { 0xFF }).collect()
}

struct Case {
    bytes: Vec<u8>,
    start: u64,
    len: u64,
    batch: usize,
    context: usize,
    seed: u64,
}

fn windows(d: &Device, k: &Case, step: u32) -> (Vec<u32>, Vec<u32>) {
    let c = Tensor::from_u32(d, &[k.bytes.len().div_ceil(4)], &pack_bytes(&k.bytes)).unwrap();
    let s = step_counter(d, step).unwrap();
    let (x, y) = text_windows(d, &c, k.start, k.len, k.batch, k.context, k.seed, &s).unwrap();
    assert_eq!(
        (x.shape.as_slice(), y.shape.as_slice()),
        ([k.batch, k.context].as_slice(), [k.batch, k.context].as_slice())
    );
    (x.to_u32(d).unwrap(), y.to_u32(d).unwrap())
}

/// The documented window start of row b: start + (element b of the Philox bit stream (seed, step * stride))
/// % (len - context), stride = batch rounded up to 4; element b is lane (offset + b) % 4 of block
/// (offset + b) / 4, computed here from the raw Philox function.
fn expected_start(k: &Case, step: u32, b: usize) -> u64 {
    let offset = step as u64 * k.batch.next_multiple_of(4) as u64 + b as u64;
    let block = offset / 4;
    let words = crng::philox4x32([block as u32, (block >> 32) as u32, 0, 0], [k.seed as u32, (k.seed >> 32) as u32]);
    k.start + words[(offset % 4) as usize] as u64 % (k.len - k.context as u64)
}

/// Checks x and y against the corpus bytes at the expected starts.
fn check_against_corpus(what: &str, k: &Case, step: u32, x: &[u32], y: &[u32]) {
    let t = k.context;
    for b in 0..k.batch {
        let o = expected_start(k, step, b) as usize;
        assert!(o as u64 >= k.start && (o + t + 1) as u64 <= k.start + k.len, "{what}: row {b} start {o}");
        let want_x: Vec<u32> = k.bytes[o..o + t].iter().map(|&v| v as u32).collect();
        let want_y: Vec<u32> = k.bytes[o + 1..o + t + 1].iter().map(|&v| v as u32).collect();
        assert_eq!(&x[b * t..(b + 1) * t], want_x, "{what}: x row {b} (start {o})");
        assert_eq!(&y[b * t..(b + 1) * t], want_y, "{what}: y row {b} (start {o})");
        assert!(
            x[b * t..(b + 1) * t].iter().chain(&y[b * t..(b + 1) * t]).all(|&v| v < 0xFF),
            "{what}: row {b} read outside"
        );
        // y is x shifted by one.
        assert_eq!(&y[b * t..(b + 1) * t - 1], &x[b * t + 1..(b + 1) * t], "{what}: row {b} shift");
    }
}

fn cases(rng: &mut Rng) -> Vec<Case> {
    let mut v = Vec::new();
    // (corpus bytes, start, len, batch, context): tight ranges (len = T + 1: one possible window),
    // unaligned starts and ends, odd batch sizes, a batch over one workgroup of threads.
    for (n, start, len, batch, context) in [
        (10, 0, 10, 1, 1),
        (9, 1, 7, 3, 6),
        (1000, 3, 997, 5, 13),
        (4099, 17, 4000, 13, 64),
        (20000, 0, 20000, 33, 130),
        (5000, 1001, 3001, 7, 257),
    ] {
        v.push(Case {
            bytes: corpus(rng, n, start, len),
            start: start as u64,
            len: len as u64,
            batch,
            context,
            seed: rng.next_u64(),
        });
    }
    v
}

#[test]
fn batch_gpu_and_cpu_windows_are_identical_and_are_the_corpus() {
    let Some(gpu) = gpu() else { return };
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for k in cases(&mut rng) {
        // Steps near 2^32 make step * stride carry into the offset's high word.
        for step in [0, 1, 7, u32::MAX - 1, rng.next_u64() as u32] {
            let what = format!(
                "n={} start={} len={} B={} T={} step={step}",
                k.bytes.len(),
                k.start,
                k.len,
                k.batch,
                k.context
            );
            let (xc, yc) = windows(&cpu, &k, step);
            let (xg, yg) = windows(&gpu, &k, step);
            assert_eq!(xg, xc, "{what}: x");
            assert_eq!(yg, yc, "{what}: y");
            check_against_corpus(&what, &k, step, &xc, &yc);
        }
    }
}

#[test]
fn batch_cpu_windows_are_the_corpus() {
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for k in cases(&mut rng) {
        for step in [0, 3, u32::MAX, rng.next_u64() as u32] {
            let (x, y) = windows(&cpu, &k, step);
            check_against_corpus(&format!("B={} T={} step={step}", k.batch, k.context), &k, step, &x, &y);
        }
    }
}

#[test]
fn batch_steps_draw_different_windows_covering_the_range() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    for d in &devs {
        // 64 windows of 8 bytes over 10000 bytes: two steps sharing every start has probability ~0.
        let k = Case { bytes: corpus(&mut rng, 10000, 0, 10000), start: 0, len: 10000, batch: 64, context: 8, seed: 1 };
        let w0 = windows(d, &k, 0);
        let w1 = windows(d, &k, 1);
        assert_ne!(w0.0, w1.0, "{}: steps 0 and 1 gave the same windows", d.name());
        // Six possible starts and 300 rows: every start, first and last included, appears.
        let k = Case { bytes: corpus(&mut rng, 64, 10, 14), start: 10, len: 14, batch: 300, context: 8, seed: 2 };
        let (x, _) = windows(d, &k, 5);
        let mut seen = [false; 6];
        for b in 0..k.batch {
            let o = (0..6).find(|&o| x[b * 8..b * 8 + 8].iter().zip(&k.bytes[10 + o..]).all(|(&a, &c)| a == c as u32));
            seen[o.unwrap_or_else(|| panic!("{}: row {b} is no window of the range", d.name()))] = true;
        }
        assert_eq!(seen, [true; 6], "{}: starts seen", d.name());
    }
}

#[test]
fn batch_captured_step_reads_the_counter_at_each_replay() {
    let mut devs = vec![cpu()];
    devs.extend(gpu());
    let mut rng = Rng::new(seed());
    for d in &devs {
        let k = Case { bytes: corpus(&mut rng, 3000, 5, 2990), start: 5, len: 2990, batch: 9, context: 31, seed: 77 };
        let c = Tensor::from_u32(d, &[750], &pack_bytes(&k.bytes)).unwrap();
        let step = step_counter(d, 4).unwrap();
        let ((x, y), rec) = d
            .capture(|| {
                let out = text_windows(d, &c, k.start, k.len, k.batch, k.context, k.seed, &step)?;
                advance_step(d, &step, 1)?;
                Ok(out)
            })
            .unwrap();
        for s in 4..7 {
            d.replay(&rec).unwrap();
            let (xs, ys) = (x.to_u32(d).unwrap(), y.to_u32(d).unwrap());
            check_against_corpus(&format!("{} replay at step {s}", d.name()), &k, s, &xs, &ys);
        }
        assert_eq!(step.to_u32(d).unwrap(), [7]);
    }
}

#[test]
fn batch_pack_bytes_is_little_endian() {
    assert_eq!(pack_bytes(&[]), Vec::<u32>::new());
    assert_eq!(pack_bytes(&[1, 2, 3, 4, 5]), [0x0403_0201, 0x05]);
    assert_eq!(pack_bytes(&[0xFF; 8]), [u32::MAX; 2]);
}

#[test]
fn batch_bad_input_is_an_error() {
    let d = Device::cpu();
    let c = Tensor::from_u32(&d, &[25], &pack_bytes(&[7; 100])).unwrap();
    let s = step_counter(&d, 0).unwrap();
    let err = |r: tigel::Result<(Tensor, Tensor)>| r.unwrap_err().to_string();
    // len < context + 1.
    let e = err(text_windows(&d, &c, 0, 10, 2, 10, 0, &s));
    assert!(e.contains("10 bytes") && e.contains("context 10"), "{e}");
    // The range leaves the corpus.
    let e = err(text_windows(&d, &c, 50, 51, 2, 10, 0, &s));
    assert!(e.contains("[25]") && e.contains("100 bytes") && e.contains("50"), "{e}");
    let e = err(text_windows(&d, &c, u64::MAX, 2, 2, 1, 0, &s));
    assert!(e.contains("outside"), "{e}");
    // Dtypes and the step counter.
    let f = Tensor::from_f32(&d, &[25], &[0.0; 25]).unwrap();
    let e = err(text_windows(&d, &f, 0, 100, 2, 10, 0, &s));
    assert!(e.contains("f32") && e.contains("u32"), "{e}");
    let e = err(text_windows(&d, &c, 0, 100, 2, 10, 0, &Tensor::from_u32(&d, &[2], &[0, 0]).unwrap()));
    assert!(e.contains("step") && e.contains("[2]"), "{e}");
    let e = err(text_windows(&d, &c, 0, 100, 2, 10, 0, &Tensor::from_f32(&d, &[1], &[0.0]).unwrap()));
    assert!(e.contains("step") && e.contains("f32"), "{e}");
    // The exact fit is fine: one possible window.
    let (x, y) = text_windows(&d, &c, 89, 11, 3, 10, 0, &s).unwrap();
    assert_eq!((x.to_u32(&d).unwrap(), y.to_u32(&d).unwrap()), (vec![7; 30], vec![7; 30]));
}
