//! Rope family: the rotary-position kernel on the CPU twin and the GPU against the op's f64 reference and
//! each other (`check_op`), rotating back with sign −1 restores the input, and bad shapes are refused.
//!
//! Tolerance: 1e-6 absolute + 1e-6 relative. Each output is x1·cos − x2·sin (or x2·cos + x1·sin) with
//! inputs in [−1, 1] and table entries in [−1, 1]: two products and one sum, each rounded once (or fused
//! on the GPU), so at most a few ulp of 2 (2.4e-7 each). v is copied exactly.
mod common;
use common::*;
use tigel::ops::rope::{rope, rope_table};
use tigel::{Device, Tensor};

const TOL: Tol = Tol { atol: 1e-6, rtol: 1e-6 };

#[test]
fn rope_matches_reference_on_cpu_and_gpu() {
    // (B, T, heads, head size, context): one head of 2, odd sizes, a table longer than T, a grid of many
    // workgroups.
    for (b, t, h, d, ctx) in
        [(1, 1, 1, 2, 1), (2, 5, 2, 4, 7), (3, 13, 3, 6, 13), (4, 128, 4, 32, 128), (1, 7, 5, 10, 9)]
    {
        let c = h * d;
        check_op(
            &format!("rope B={b} T={t} heads={h} D={d} context={ctx}"),
            &[uniform(&[b, t, 3 * c], -1.0, 1.0), uniform(&[ctx, d / 2, 2], -1.0, 1.0)],
            TOL,
            |g, x| g.rope(x[0], x[1], h),
        );
    }
}

#[test]
fn rope_back_restores_and_bad_shapes_are_refused() {
    let run = |dev: &Device| {
        let (b, t, h, d) = (2, 9, 3, 8);
        let c = h * d;
        let mut rng = Rng::new(seed());
        let x = rng.vec(b * t * 3 * c, -1.0, 1.0);
        let xt = Tensor::from_f32(dev, &[b, t, 3 * c], &x).unwrap();
        let table = Tensor::from_f32(dev, &[t, d / 2, 2], &rope_table(t, d, 10_000.0)).unwrap();
        let y = rope(dev, &xt, &table, h, 1.0).unwrap();
        let yv = y.to_f32(dev).unwrap();
        // Position 0 turns by 0 and v is copied: the first row's values and every v are unchanged.
        assert_eq!(&yv[..3 * c], &x[..3 * c]);
        for r in 0..b * t {
            assert_eq!(&yv[r * 3 * c + 2 * c..(r + 1) * 3 * c], &x[r * 3 * c + 2 * c..(r + 1) * 3 * c]);
        }
        let back = rope(dev, &y, &table, h, -1.0).unwrap().to_f32(dev).unwrap();
        assert_close("rope then rope back", &back, &x, 1e-6, 1e-6);

        for (shape, tshape, heads) in [
            (vec![2, 9, 3 * c], vec![8, d / 2, 2], h), // table shorter than T
            (vec![2, 9, 3 * c], vec![t, d / 2, 2], 5), // C = 24 is not a multiple of 5 heads
            (vec![2, 9, 3 * 9], vec![t, 1, 2], 3),     // odd head size 3
            (vec![18, 3 * c], vec![t, d / 2, 2], h),   // not rank 3
        ] {
            let xs = Tensor::from_f32(dev, &shape, &vec![0.0; shape.iter().product()]).unwrap();
            let ts = Tensor::from_f32(dev, &tshape, &vec![0.0; tshape.iter().product()]).unwrap();
            let e = rope(dev, &xs, &ts, heads, 1.0).err().unwrap().to_string();
            assert!(e.contains("rope"), "{shape:?} {tshape:?}: {e}");
        }
    };
    run(&cpu());
    with_gpu(run);
}
