// Learning-rate schedules, evaluated per step from the step counter (a storage buffer), so a recorded
// training step follows the schedule on every replay without being rebuilt. CPU twin:
// device::cpu::optim::schedule_lr (same operations in the same order).
//
// lr(step), step = 0-based index of the current optimizer step:
// * constant (kind 0): base_lr;
// * warmup (kinds 1 and 2, step < warmup): base_lr * (step + 1) / warmup;
// * linear (kind 1), after warmup: min_lr + (base_lr - min_lr) * (1 - progress);
// * cosine (kind 2), after warmup: min_lr + (base_lr - min_lr) * 0.5 * (1 + cos(pi * progress));
// with start = max(warmup, hold) and progress = (step - start) / (total - start) clamped to [0, 1] (1 when
// total <= start); before start (hold > warmup: warmup-stable-decay) the rate is base_lr.

const SCHED_CONSTANT: u32 = 0u;
const SCHED_LINEAR: u32 = 1u;
const SCHED_COSINE: u32 = 2u;

// The schedule fields of an optimizer kernel's params (32 bytes, so the fields after it stay aligned).
struct ScheduleParams {
    kind: u32,
    warmup: u32,
    total: u32,
    hold: u32,
    base_lr: f32,
    min_lr: f32,
    _pad1: u32,
    _pad2: u32,
}

const HALF_PI: f32 = 1.5707964;

// cos(x) and sin(x) for 0 <= x <= pi/4 by their Taylor series (truncation below 1e-10). WGSL only
// promises 2^-11 absolute error for the builtins, and a GPU's fast cos differs from the host's; this is
// the same arithmetic everywhere. Coefficients are the f32 values of 1/k!, written out so both sides parse
// the same numbers.
fn sched_cos(x: f32) -> f32 {
    let x2 = x * x;
    return 1.0 + x2 * (-0.5 + x2 * (0.041666668 + x2 * (-0.0013888889 + x2 * (2.4801588e-5 + x2 * -2.755732e-7))));
}

fn sched_sin(x: f32) -> f32 {
    let x2 = x * x;
    return x * (1.0 + x2 * (-0.16666667 + x2 * (0.008333334 + x2 * (-1.984127e-4 + x2 * (2.7557319e-6 + x2 * -2.5052108e-8)))));
}

// 0.5 * (1 + cos(pi * p)) for p in [0, 1], given q = 1 - p exactly: that is cos^2(pi p / 2) = sin^2(pi q / 2).
// The second form near p = 1 keeps the factor's relative accuracy as it goes to 0 (the floor matters there).
fn cosine_factor(p: f32, q: f32) -> f32 {
    if p <= 0.5 {
        let c = sched_cos(HALF_PI * p);
        return c * c;
    }
    let s = sched_sin(HALF_PI * q);
    return s * s;
}

fn schedule_lr(kind: u32, base_lr: f32, min_lr: f32, warmup: u32, hold: u32, total: u32, step: u32) -> f32 {
    if kind == SCHED_CONSTANT {
        return base_lr;
    }
    if step < warmup {
        return base_lr * f32(step + 1u) / f32(warmup);
    }
    let start = max(warmup, hold);
    if step < start {
        return base_lr;
    }
    let span = total - min(start, total);
    var p = 1.0;
    var q = 0.0;
    if span > 0u {
        // Progress and its complement each from integers with one division: no cancellation in 1 - p.
        let s = min(step, total);
        p = f32(s - start) / f32(span);
        q = f32(total - s) / f32(span);
    }
    if kind == SCHED_LINEAR {
        return min_lr + (base_lr - min_lr) * q;
    }
    return min_lr + (base_lr - min_lr) * cosine_factor(p, q);
}

fn schedule_lr_of(s: ScheduleParams, step: u32) -> f32 {
    return schedule_lr(s.kind, s.base_lr, s.min_lr, s.warmup, s.hold, s.total, step);
}
