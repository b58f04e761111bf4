//! CPU twins of the convolution epilogue: `apply` is the write-out of conv2d_fwd and conv2d_bwd_input
//! (shaders/conv.wgsl `epilogue`), run over the planes after the GEMM; `conv_act_bias_bwd` is
//! shaders/conv_epilogue.wgsl.

use rayon::prelude::*;

use super::elementwise::{deriv_from_out, unary_in_place};
use super::CpuArgs;
use crate::kernels::conv::{ConvParams, EpilogueParams};

/// y planes [n, c, plane] = act(y + b) in place, b = b[c] (bias 1) or b[image, c] (bias 2), when `p`
/// asks for a bias or an activation; then + r where `p` asks for a residual.
pub fn apply(p: &ConvParams, bias: &[f32], r: &[f32], y: &mut [f32], c: usize, plane: usize) {
    if p.bias == 0 && p.act == 0 && p.residual == 0 {
        return;
    }
    y.par_chunks_mut(plane).enumerate().with_min_len(16).for_each(|(pl, v)| {
        if p.bias != 0 {
            let b = bias[if p.bias == 2 { pl } else { pl % c }];
            v.iter_mut().for_each(|e| *e += b);
        }
        if p.act != 0 {
            unary_in_place(p.act - 1, p.alpha, v);
        }
        if p.residual == 1 {
            v.iter_mut().zip(&r[pl * plane..]).for_each(|(e, &a)| *e += a);
        }
    });
}

/// Bindings: params, y (read), dy (read), dz (read_write), db (read_write). Each plane's sum, then each
/// channel's over its images in order.
pub fn conv_act_bias_bwd(args: &mut CpuArgs) {
    let p: EpilogueParams = args.params();
    let (y, dy) = (args.f32_in(0), args.f32_in(1));
    let dz = args.f32_out(0);
    let db = args.f32_out(1);
    let (n, c, hw) = (p.n as usize, p.c as usize, p.hw as usize);
    let planes: Vec<f32> = dz[..n * c * hw]
        .par_chunks_mut(hw)
        .enumerate()
        .map(|(pl, out)| {
            let (ys, gs) = (&y[pl * hw..][..hw], &dy[pl * hw..][..hw]);
            let mut s = 0.0f32;
            for ((o, &yv), &g) in out.iter_mut().zip(ys).zip(gs) {
                *o = if p.act != 0 { g * deriv_from_out(p.act - 1, yv, p.alpha) } else { g };
                s += *o;
            }
            s
        })
        .collect();
    for (ch, b) in db[..c].iter_mut().enumerate() {
        *b = (0..n).map(|img| planes[img * c + ch]).sum();
    }
}
