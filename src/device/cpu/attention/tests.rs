//! The portable inner loops against the AVX2 ones.

use super::*;
use crate::host::Rng;

/// Largest |a - b| over max |b| (at least 1: inputs are O(1), and some outputs are all ~0, as dQ
/// for T = 1).
fn rel(a: &[f32], b: &[f32]) -> f32 {
    let m = b.iter().fold(1f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f32, |e, (x, y)| e.max((x - y).abs())) / m
}

/// The portable inner loops give the AVX2 ones' results (which tests/kernels_attention.rs checks
/// against an f64 reference) on every head function: within 1e-5 of each tensor's scale (or of 1), a few
/// roundings of sums of at most 70 terms apart (FMA against separate multiply and add).
#[test]
fn portable_matches_avx2() {
    if !avx2_fma() {
        return;
    }
    let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
    for (t, d, causal) in
        [(1, 8, true), (7, 6, true), (33, 32, false), (20, 40, true), (17, 128, false), (70, 16, true)]
    {
        let g = Geo { t, h: 1, d, dp: round_up(d, LANES), causal, scale: 1.0 / (d as f32).sqrt() };
        let (qkv, dout) = (rng.vec(t * 3 * d, -1.5, 1.5), rng.vec(t * d, -1.5, 1.5));
        let pack = |src: &[f32], at: (usize, usize)| {
            let mut m = Packed::default();
            m.fill(&g, src, at, true, true);
            m
        };
        let (q, k, v, dor) =
            (pack(&qkv, (0, 3 * d)), pack(&qkv, (d, 3 * d)), pack(&qkv, (2 * d, 3 * d)), pack(&dout, (0, d)));
        let what = format!("t={t} d={d} causal={causal}");

        let fwd = |avx: bool| {
            let (mut o, mut l) = (vec![0f32; t * d], vec![0f32; t]);
            let m = (&q.rows[0][..], &k.panels[0][..], &v.rows[0][..]);
            with_kern!(avx, fwd_head(&g, m, &mut o, &mut l));
            (o, l)
        };
        let ((o, l), (o2, l2)) = (fwd(true), fwd(false));
        assert!(rel(&o2, &o) < 1e-5 && rel(&l2, &l) < 1e-5, "fwd {what}");

        let delta: Vec<f32> = (0..t).map(|i| (0..d).map(|c| dout[i * d + c] * o[i * d + c]).sum()).collect();
        let dq = |avx: bool| {
            let mut dq = vec![0f32; t * d];
            let m = (&q.rows[0][..], &dor.rows[0][..], &k.panels[0][..], &k.rows[0][..], &v.panels[0][..]);
            with_kern!(avx, dq_head(&g, m, (&l, &delta), &mut dq));
            dq
        };
        assert!(rel(&dq(false), &dq(true)) < 1e-5, "dq {what}");

        let dkv = |avx: bool| {
            let (mut dk, mut dv) = (vec![0f32; t * d], vec![0f32; t * d]);
            let m = (
                &k.rows[0][..],
                &v.rows[0][..],
                &q.rows[0][..],
                &q.panels[0][..],
                &dor.rows[0][..],
                &dor.panels[0][..],
            );
            with_kern!(avx, dkv_head(&g, m, (&l, &delta), &mut dk, &mut dv));
            (dk, dv)
        };
        let ((dk, dv), (dk2, dv2)) = (dkv(true), dkv(false));
        assert!(rel(&dk2, &dk) < 1e-5 && rel(&dv2, &dv) < 1e-5, "dkv {what}");
    }
}
