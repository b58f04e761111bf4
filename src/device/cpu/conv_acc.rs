//! The accumulating store of conv2d_bwd_weight (`ConvParams::accumulate`, one split): conv's twin computes
//! dw into scratch, then dw is added into the output, as the shader's `+=` store does.

use super::{conv, CpuArgs};
use crate::kernels::conv::ConvParams;

/// Bindings: params, x (read), dy (read), partial or dw (read_write).
pub fn conv2d_bwd_weight(args: &mut CpuArgs) {
    let p: ConvParams = args.params();
    if p.accumulate == 0 {
        return conv::conv2d_bwd_weight(args);
    }
    let wn = (p.co * p.ci * p.k * p.k) as usize;
    let out = args.f32_out(0);
    let mut dw = vec![0u32; wn];
    conv::conv2d_bwd_weight(&mut CpuArgs { params: args.params, ins: args.ins.clone(), outs: vec![&mut dw[..]] });
    for (o, d) in out[..wn].iter_mut().zip(&dw) {
        *o += f32::from_bits(*d);
    }
}
