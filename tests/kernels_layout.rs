//! Layout family: copy, fill, transpose (both kernels), slice, slice_into, concat.
//!
//! Tolerance: none. These kernels move 32-bit words without arithmetic, so every result is compared bit
//! for bit, f32 data included (random bit patterns with NaN payloads, quiet and signalling, and both
//! signs). Each op runs on the CPU twin and is checked against an index-by-index reference written here;
//! when a GPU adapter is present the GPU result must equal the twin's word for word. Outputs start
//! poisoned, so an unwritten element differs from the reference.
mod common;
use common::*;
use tigel::device::POISON;
use tigel::ops::layout::{self as lo, TransposeKernel};
use tigel::{DType, Device, Tensor};

const SHAPES: [&[usize]; 7] = [&[1], &[7], &[1, 1], &[5, 7], &[64, 64], &[65, 33], &[3, 5, 7]];

/// Random words that are never the poison value, with NaN payloads planted among them.
fn words(rng: &mut Rng, n: usize) -> Vec<u32> {
    (0..n)
        .map(|i| {
            let r = rng.next_u64() as u32;
            let w = match i % 5 {
                // NaNs: exponent all ones, a random non-zero payload (quiet or signalling), either sign.
                0 => 0x7F80_0000 | (r & 0x807F_FFFF) | 1,
                _ => r,
            };
            if w == POISON {
                w ^ 1
            } else {
                w
            }
        })
        .collect()
}

fn upload(d: &Device, shape: &[usize], data: &[u32], dtype: DType) -> Tensor {
    match dtype {
        DType::U32 => Tensor::from_u32(d, shape, data).unwrap(),
        DType::F32 => {
            let f: Vec<f32> = data.iter().map(|&w| f32::from_bits(w)).collect();
            Tensor::from_f32(d, shape, &f).unwrap()
        }
        DType::F16 => unreachable!("the layout tests cover f32 and u32"),
    }
}

/// Reads any tensor back as raw words (to_u32 reads the buffer without converting).
fn bits(d: &Device, t: &Tensor) -> Vec<u32> {
    t.to_u32(d).unwrap()
}

#[track_caller]
fn assert_bits(what: &str, got: &[u32], want: &[u32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        let poison = if got[i] == POISON { " (poison: never written)" } else { "" };
        panic!(
            "{what}: element {i} is {:#010x}{poison} but should be {:#010x} ({} elements)",
            got[i],
            want[i],
            got.len()
        );
    }
}

/// Runs `f` on the CPU twin (checked against `want`) and, when there is one, on the GPU (checked against
/// the twin word for word). `f` returns the output tensor; its dtype must be `dtype`.
#[track_caller]
fn check(what: &str, gpu: &Option<Device>, cpu: &Device, dtype: DType, want: &[u32], f: impl Fn(&Device) -> Tensor) {
    let c = f(cpu);
    assert_eq!(c.dtype, dtype, "{what}: cpu output dtype");
    let cw = bits(cpu, &c);
    assert_bits(&format!("{what} [cpu twin vs reference]"), &cw, want);
    if let Some(g) = gpu {
        let t = f(g);
        assert_eq!(t.dtype, dtype, "{what}: gpu output dtype");
        assert_eq!(t.shape, c.shape, "{what}: gpu output shape");
        assert_bits(&format!("{what} [gpu vs cpu twin]"), &bits(g, &t), &cw);
    }
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut st = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        st[d] = st[d + 1] * shape[d + 1];
    }
    st
}

/// out[j] = x[idx] with idx[perm[d]] = j[d], one output element at a time.
fn ref_transpose(x: &[u32], shape: &[usize], perm: &[usize]) -> Vec<u32> {
    let out_shape: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
    let (ist, ost) = (strides(shape), strides(&out_shape));
    let n: usize = shape.iter().product();
    (0..n)
        .map(|j| {
            let mut src = 0;
            for d in 0..perm.len() {
                let jd = (j / ost[d]) % out_shape[d];
                src += jd * ist[perm[d]];
            }
            x[src]
        })
        .collect()
}

/// [outer, axis, inner] view of a shape around `axis`.
fn view(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product())
}

fn ref_slice(x: &[u32], shape: &[usize], axis: usize, start: usize, len: usize) -> Vec<u32> {
    let (outer, extent, inner) = view(shape, axis);
    let mut out = Vec::new();
    for o in 0..outer {
        for a in start..start + len {
            for i in 0..inner {
                out.push(x[(o * extent + a) * inner + i]);
            }
        }
    }
    out
}

fn ref_concat(parts: &[(&[u32], &[usize])], axis: usize) -> Vec<u32> {
    let outer = view(parts[0].1, axis).0;
    let mut out = Vec::new();
    for o in 0..outer {
        for (x, shape) in parts {
            let (_, extent, inner) = view(shape, axis);
            out.extend_from_slice(&x[o * extent * inner..(o + 1) * extent * inner]);
        }
    }
    out
}

fn permutations(r: usize) -> Vec<Vec<usize>> {
    if r == 0 {
        return vec![vec![]];
    }
    let mut all = Vec::new();
    for p in permutations(r - 1) {
        for pos in 0..=p.len() {
            let mut q = p.clone();
            q.insert(pos, r - 1);
            all.push(q);
        }
    }
    all
}

fn random_perm(rng: &mut Rng, r: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..r).collect();
    for i in (1..r).rev() {
        p.swap(i, rng.below(i + 1));
    }
    p
}

const DTYPES: [DType; 2] = [DType::F32, DType::U32];

#[test]
fn copy_and_fill_match_reference_and_twin() {
    let gpu = gpu();
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for dtype in DTYPES {
        for shape in SHAPES.iter().copied().chain([&[300usize, 257][..]]) {
            let n: usize = shape.iter().product();
            let x = words(&mut rng, n);
            let what = format!("copy {shape:?} {dtype:?}");
            check(&what, &gpu, &cpu, dtype, &x, |d| lo::copy(d, &upload(d, shape, &x, dtype)).unwrap());
            // copy_into a tensor of another shape with the same element count.
            let what = format!("copy_into {shape:?} -> [{n}] {dtype:?}");
            check(&what, &gpu, &cpu, dtype, &x, |d| {
                let dst = Tensor::empty(d, &[n], dtype).unwrap();
                lo::copy_into(d, &upload(d, shape, &x, dtype), &dst).unwrap();
                dst
            });
            let v = words(&mut rng, 1)[0];
            let what = format!("fill {shape:?} {v:#x}");
            match dtype {
                DType::F32 => {
                    check(&what, &gpu, &cpu, dtype, &vec![v; n], |d| lo::fill(d, shape, f32::from_bits(v)).unwrap())
                }
                DType::U32 => check(&what, &gpu, &cpu, dtype, &vec![v; n], |d| lo::fill_u32(d, shape, v).unwrap()),
                DType::F16 => unreachable!("the layout tests cover f32 and u32"),
            }
            let what = format!("fill_into {shape:?} {dtype:?} {v:#x}");
            check(&what, &gpu, &cpu, dtype, &vec![v; n], |d| {
                let t = upload(d, shape, &x, dtype);
                lo::fill_into(d, &t, v).unwrap();
                t
            });
        }
    }
}

/// Every op on every path for one (shape, perm): `transpose` (whatever it picks), the gather kernel, and
/// the tiled kernel when the permutation swaps the last two axes.
fn check_transpose(gpu: &Option<Device>, cpu: &Device, rng: &mut Rng, shape: &[usize], perm: &[usize]) {
    let n: usize = shape.iter().product();
    let r = shape.len();
    let swaps_last_two = r >= 2 && perm[..r - 2].iter().enumerate().all(|(i, &a)| a == i) && perm[r - 2] == r - 1;
    for dtype in DTYPES {
        let x = words(rng, n);
        let want = ref_transpose(&x, shape, perm);
        let out_shape: Vec<usize> = perm.iter().map(|&a| shape[a]).collect();
        let chosen = lo::transpose_kernel(cpu, shape, perm).unwrap();
        check(&format!("transpose {shape:?} {perm:?} {dtype:?} ({chosen:?})"), gpu, cpu, dtype, &want, |d| {
            let t = lo::transpose(d, &upload(d, shape, &x, dtype), perm).unwrap();
            assert_eq!(t.shape, out_shape);
            t
        });
        check(&format!("transpose_gather {shape:?} {perm:?} {dtype:?}"), gpu, cpu, dtype, &want, |d| {
            lo::transpose_gather(d, &upload(d, shape, &x, dtype), perm).unwrap()
        });
        if swaps_last_two {
            check(&format!("transpose_tiled {shape:?} {dtype:?}"), gpu, cpu, dtype, &want, |d| {
                lo::transpose_tiled(d, &upload(d, shape, &x, dtype)).unwrap()
            });
            check(&format!("transpose2d {shape:?} {dtype:?}"), gpu, cpu, dtype, &want, |d| {
                lo::transpose2d(d, &upload(d, shape, &x, dtype)).unwrap()
            });
        }
    }
}

#[test]
fn transpose_every_permutation_of_small_shapes() {
    let gpu = gpu();
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for shape in SHAPES {
        for perm in permutations(shape.len()) {
            check_transpose(&gpu, &cpu, &mut rng, shape, &perm);
        }
    }
    // Extent-1 axes among others, which the op layer drops before choosing a kernel.
    for perm in permutations(4) {
        check_transpose(&gpu, &cpu, &mut rng, &[3, 1, 4, 1], &perm);
    }
}

#[test]
fn transpose_high_rank_random_perms() {
    let gpu = gpu();
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for _ in 0..6 {
        let perm = random_perm(&mut rng, 5);
        check_transpose(&gpu, &cpu, &mut rng, &[2, 3, 4, 5, 6], &perm);
    }
    check_transpose(&gpu, &cpu, &mut rng, &[2, 3, 4, 5, 6], &[0, 1, 2, 4, 3]);
    check_transpose(&gpu, &cpu, &mut rng, &[3, 2, 5, 7, 4], &[4, 3, 2, 1, 0]);
    for _ in 0..3 {
        let perm = random_perm(&mut rng, 8);
        check_transpose(&gpu, &cpu, &mut rng, &[2, 1, 3, 2, 1, 2, 3, 2], &perm);
    }
}

#[test]
fn transpose_tiled_large_and_batched() {
    let gpu = gpu();
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    for shape in [&[300usize, 257][..], &[3, 33, 65], &[2, 1, 40, 31], &[1, 32], &[32, 1]] {
        let r = shape.len();
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 2, r - 1);
        check_transpose(&gpu, &cpu, &mut rng, shape, &perm);
    }
    // Merged axes: [64, 32, 33] by [1, 2, 0] is a 2-D transpose of [64, 1056].
    check_transpose(&gpu, &cpu, &mut rng, &[64, 32, 33], &[1, 2, 0]);
}

#[test]
fn transpose_kernel_choice() {
    let cpu = Device::cpu();
    // The op layer's tile edge (used for the choice and by the CPU twin) is the shader's.
    assert_eq!(tigel::kernels::layout::TRANSPOSE_TILED.workgroup_size(), [tigel::kernels::layout::TILE as u32, 8, 1]);
    let k = |shape: &[usize], perm: &[usize]| lo::transpose_kernel(&cpu, shape, perm).unwrap();
    assert_eq!(k(&[300, 257], &[1, 0]), TransposeKernel::Tiled);
    assert_eq!(k(&[64, 64], &[1, 0]), TransposeKernel::Tiled);
    assert_eq!(k(&[4, 64, 40], &[0, 2, 1]), TransposeKernel::Tiled);
    assert_eq!(k(&[64, 32, 33], &[1, 2, 0]), TransposeKernel::Tiled);
    assert_eq!(k(&[2, 3, 40, 50], &[0, 1, 3, 2]), TransposeKernel::Tiled);
    assert_eq!(k(&[5, 7], &[1, 0]), TransposeKernel::Gather);
    assert_eq!(k(&[65, 31], &[1, 0]), TransposeKernel::Gather);
    assert_eq!(k(&[64, 64, 3], &[1, 0, 2]), TransposeKernel::Gather);
    assert_eq!(k(&[3, 5, 7], &[2, 0, 1]), TransposeKernel::Gather);
    assert_eq!(k(&[3, 5, 7], &[0, 1, 2]), TransposeKernel::Copy);
    assert_eq!(k(&[3, 1, 7], &[1, 0, 2]), TransposeKernel::Copy);
    assert_eq!(k(&[1, 1], &[1, 0]), TransposeKernel::Copy);
    assert_eq!(k(&[], &[]), TransposeKernel::Copy);
    // Rank 9 that merges to rank 2 is fine; one that stays rank 9 is refused.
    assert_eq!(k(&[2; 9], &[1, 2, 3, 4, 5, 6, 7, 8, 0]), TransposeKernel::Gather);
    let x = Tensor::from_u32(&cpu, &[2; 9], &[7; 512]).unwrap();
    let e = lo::transpose(&cpu, &x, &[8, 7, 6, 5, 4, 3, 2, 1, 0]).unwrap_err().to_string();
    assert!(e.contains("rank 9"), "{e}");
}

#[test]
fn slice_slice_into_and_concat() {
    let gpu = gpu();
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    let shapes: [&[usize]; 6] = [&[7], &[5, 7], &[65, 33], &[3, 5, 7], &[2, 3, 4, 5, 6], &[300, 257]];
    for dtype in DTYPES {
        for shape in shapes {
            let n: usize = shape.iter().product();
            let x = words(&mut rng, n);
            for axis in 0..shape.len() {
                let extent = shape[axis];
                let start = rng.below(extent);
                let len = 1 + rng.below(extent - start);
                let what = format!("slice {shape:?} axis {axis} [{start}, {}) {dtype:?}", start + len);
                let want = ref_slice(&x, shape, axis, start, len);
                check(&what, &gpu, &cpu, dtype, &want, |d| {
                    lo::slice(d, &upload(d, shape, &x, dtype), axis, start, len).unwrap()
                });

                // slice_into a filled destination: the region is the source, the rest keeps the fill.
                let mut part_shape = shape.to_vec();
                part_shape[axis] = len;
                let part = words(&mut rng, want.len());
                let background = words(&mut rng, 1)[0];
                let (outer, _, inner) = view(shape, axis);
                let mut want_into = vec![background; n];
                for o in 0..outer {
                    for a in 0..len {
                        for i in 0..inner {
                            want_into[(o * extent + start + a) * inner + i] = part[(o * len + a) * inner + i];
                        }
                    }
                }
                let what = format!("slice_into {part_shape:?} -> {shape:?} axis {axis} at {start} {dtype:?}");
                check(&what, &gpu, &cpu, dtype, &want_into, |d| {
                    let dst = Tensor::empty(d, shape, dtype).unwrap();
                    lo::fill_into(d, &dst, background).unwrap();
                    lo::slice_into(d, &upload(d, &part_shape, &part, dtype), &dst, axis, start).unwrap();
                    dst
                });

                // Round trips: cut x into up to three pieces along the axis; writing each piece back with
                // slice_into, and concatenating the pieces, both give x again.
                let cuts = {
                    let mut c = vec![0, rng.below(extent + 1), rng.below(extent + 1), extent];
                    c.sort();
                    c
                };
                let pieces: Vec<(usize, usize)> = cuts.windows(2).map(|w| (w[0], w[1] - w[0])).collect();
                let what = format!("slice/slice_into round trip {shape:?} axis {axis} cuts {cuts:?} {dtype:?}");
                check(&what, &gpu, &cpu, dtype, &x, |d| {
                    let t = upload(d, shape, &x, dtype);
                    let back = Tensor::empty(d, shape, dtype).unwrap();
                    for &(s, l) in &pieces {
                        lo::slice_into(d, &lo::slice(d, &t, axis, s, l).unwrap(), &back, axis, s).unwrap();
                    }
                    back
                });
                let what = format!("concat of slices {shape:?} axis {axis} cuts {cuts:?} {dtype:?}");
                check(&what, &gpu, &cpu, dtype, &x, |d| {
                    let t = upload(d, shape, &x, dtype);
                    let parts: Vec<Tensor> =
                        pieces.iter().map(|&(s, l)| lo::slice(d, &t, axis, s, l).unwrap()).collect();
                    lo::concat(d, &parts.iter().collect::<Vec<_>>(), axis).unwrap()
                });
            }
        }
    }
}

#[test]
fn concat_matches_reference() {
    let gpu = gpu();
    let cpu = cpu();
    let mut rng = Rng::new(seed());
    let cases: [(&[&[usize]], usize); 5] = [
        (&[&[1], &[7], &[3]], 0),
        (&[&[5, 7], &[5, 1], &[5, 13]], 1),
        (&[&[2, 5, 7], &[3, 5, 7]], 0),
        (&[&[3, 5, 7], &[3, 2, 7], &[3, 0, 7], &[3, 9, 7]], 1),
        (&[&[65, 33], &[65, 33]], 1),
    ];
    for dtype in DTYPES {
        for (shapes, axis) in cases {
            let data: Vec<Vec<u32>> = shapes.iter().map(|s| words(&mut rng, s.iter().product())).collect();
            let parts: Vec<(&[u32], &[usize])> = data.iter().map(|v| &v[..]).zip(shapes.iter().copied()).collect();
            let want = ref_concat(&parts, axis);
            check(&format!("concat {shapes:?} axis {axis} {dtype:?}"), &gpu, &cpu, dtype, &want, |d| {
                let ts: Vec<Tensor> = parts.iter().map(|(x, s)| upload(d, s, x, dtype)).collect();
                let out = lo::concat(d, &ts.iter().collect::<Vec<_>>(), axis).unwrap();
                let mut total = shapes[0].to_vec();
                total[axis] = shapes.iter().map(|s| s[axis]).sum();
                assert_eq!(out.shape, total);
                out
            });
        }
    }
}

#[test]
fn bad_input_is_an_error_naming_it() {
    let cpu = Device::cpu();
    let a = Tensor::from_f32(&cpu, &[2, 3], &[1.0; 6]).unwrap();
    let b = Tensor::from_f32(&cpu, &[2, 4], &[1.0; 8]).unwrap();
    let u = Tensor::from_u32(&cpu, &[2, 3], &[1; 6]).unwrap();
    let err = |r: tigel::Result<Tensor>| r.unwrap_err().to_string();
    let has = |e: &str, parts: &[&str]| assert!(parts.iter().all(|p| e.contains(p)), "{e} should name {parts:?}");

    has(&err(lo::transpose(&cpu, &a, &[0, 0])), &["perm [0, 0]", "[2, 3]"]);
    has(&err(lo::transpose(&cpu, &a, &[1])), &["perm [1]", "[2, 3]"]);
    has(&err(lo::transpose(&cpu, &a, &[0, 2])), &["perm [0, 2]"]);
    has(&err(lo::transpose_gather(&cpu, &a, &[2, 1, 0])), &["perm [2, 1, 0]"]);
    has(&err(lo::transpose_kernel(&cpu, &[2, 3], &[1, 1]).map(|_| a.clone())), &["perm [1, 1]"]);
    has(&err(lo::transpose2d(&cpu, &Tensor::from_f32(&cpu, &[4], &[0.0; 4]).unwrap())), &["[4]", "rank 1"]);
    has(&err(lo::transpose_tiled(&cpu, &Tensor::from_f32(&cpu, &[4], &[0.0; 4]).unwrap())), &["[4]", "rank 1"]);

    has(&err(lo::slice(&cpu, &a, 2, 0, 1)), &["axis 2", "[2, 3]"]);
    has(&err(lo::slice(&cpu, &a, 1, 2, 2)), &["axis 1", "extent 3", "[2, 3]"]);
    has(&err(lo::slice(&cpu, &a, 1, usize::MAX, 2)), &["axis 1", "[2, 3]"]);

    let into =
        |src: &Tensor, dst: &Tensor, axis, start| lo::slice_into(&cpu, src, dst, axis, start).unwrap_err().to_string();
    has(&into(&a, &b, 1, 2), &["[2, 3]", "[2, 4]", "axis 1"]);
    has(&into(&a, &b, 0, 0), &["[2, 3]", "[2, 4]", "axis 1"]);
    has(&into(&a, &b, 3, 0), &["axis 3"]);
    has(&into(&u, &b, 1, 0), &["u32", "f32", "[2, 3]"]);
    has(&into(&a, &a.reshape(&[2, 3]).unwrap(), 1, 0), &["share"]);

    has(&err(lo::concat(&cpu, &[&a, &b], 0)), &["[2, 3]", "[2, 4]", "axis 0"]);
    has(&err(lo::concat(&cpu, &[&a, &Tensor::from_f32(&cpu, &[6], &[0.0; 6]).unwrap()], 0)), &["[2, 3]", "[6]"]);
    has(&err(lo::concat(&cpu, &[&a, &u], 1)), &["input 1", "u32", "f32"]);
    has(&err(lo::concat(&cpu, &[&a], 2)), &["axis 2", "[2, 3]"]);
    has(&err(lo::concat(&cpu, &[], 0)), &["empty"]);

    let e = lo::copy_into(&cpu, &a, &b).unwrap_err().to_string();
    has(&e, &["[2, 3]", "[2, 4]", "6", "8"]);
    let e = lo::copy_into(&cpu, &a, &u).unwrap_err().to_string();
    has(&e, &["f32", "u32"]);
}

#[test]
fn empty_tensors_are_fine() {
    let cpu = cpu();
    let x = Tensor::empty(&cpu, &[3, 0, 4], DType::F32).unwrap();
    assert_eq!(lo::transpose(&cpu, &x, &[2, 0, 1]).unwrap().shape, vec![4, 3, 0]);
    assert_eq!(lo::transpose_tiled(&cpu, &x).unwrap().shape, vec![3, 4, 0]);
    assert_eq!(lo::copy(&cpu, &x).unwrap().shape, vec![3, 0, 4]);
    assert_eq!(lo::fill(&cpu, &[0, 5], 1.0).unwrap().numel(), 0);
    let y = Tensor::from_f32(&cpu, &[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let s = lo::slice(&cpu, &y, 1, 2, 0).unwrap();
    assert_eq!(s.shape, vec![3, 0]);
    assert_eq!(lo::concat(&cpu, &[&s, &y, &s], 1).unwrap().to_f32(&cpu).unwrap(), y.to_f32(&cpu).unwrap());
}
