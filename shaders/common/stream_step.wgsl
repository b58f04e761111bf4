// Step-indexed Philox streams: the draw of training step s starts at stream element s * stride, s being read
// at run time from the one-word u32 step counter (ops::optim::step_counter), so a recorded step draws fresh
// numbers at every replay although its params are frozen. CPU twin: device::cpu::rng::step_offset.
//#include "common/philox.wgsl"

// step * stride in 64 bits (wrapping), stride as (lo, hi): the low word's full product from the snippet's
// 32x32 -> 64 multiply, plus the low word of step * stride.hi.
fn rng_step_offset(step: u32, stride: vec2<u32>) -> vec2<u32> {
    let lo = mul32x32(step, stride.x);
    return vec2<u32>(lo.x, lo.y + step * stride.y);
}
