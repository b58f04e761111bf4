// Denoising diffusion: the noise schedule, the forward process q(x_t | x_0) for training, the sinusoidal
// timestep embedding, and the reverse steps of DDPM (Ho et al. 2020) and deterministic DDIM (Song et al.
// 2021). CPU twin: src/device/cpu/diffusion.rs, function by function.
//
// Precision. GPU transcendentals are loose (WGSL allows cos/sin an absolute error of 2^-11) and differ
// between drivers, so no builtin cos, sin, exp or pow is used: angles are exact fixed-point fractions of a
// turn (Q0.64), reduced exactly, and evaluated either by the Philox snippet's integer `rng_cos_sin` (timestep
// embedding: integer end to end, bit-identical on every device) or by short f32 polynomials (the cosine
// schedule, which needs relative precision for tiny sines). Integers become f32 through a correctly rounded
// conversion (`f32_of_u32`). Otherwise the kernels use +, *, / and sqrt in f32: a GPU's division and sqrt
// are within a few ulp and a driver may fuse a multiply-add, so those results agree with the CPU twin to a
// few ulp, not bit for bit. Random numbers (q_sample's timesteps and noise, DDPM's z) come from Philox and
// are bit-identical.
//#include "common/index.wgsl"
//#include "common/philox.wgsl"
//#include "common/stream_step.wgsl"

const WG: u32 = 256u;

// Exact u32 -> f32 with one rounding to nearest: both parts convert exactly (below 2^24), the scaling by 256
// is exact, so the sum is the only rounding (and a fused multiply-add rounds the same exact value).
fn f32_of_u32(x: u32) -> f32 {
    return f32(x >> 8u) * 256.0 + f32(x & 255u);
}

// ---------------------------------------------------------------------------------------------------------
// schedule: betas, alphas = 1 - betas and alpha_bar = cumulative product of alphas, for T timesteps, in one
// workgroup. Linear (kind 0): beta_i = beta_start + i * delta. Cosine (kind 1, Nichol & Dhariwal 2021):
// beta_i = min(1 - f(i + 1) / f(i), max_beta) with f(i) = cos^2(theta_i), theta_i = (i / T + s) / (1 + s) * pi/2.
// Since pi/2 - theta_i = m * D with m = T - i and D = pi / (2 T (1 + s)), cos(theta_i) = sin(m D) and
//   beta_i = 1 - sin^2((m - 1) D) / sin^2(m D) = sin(D) sin((2m - 1) D) / sin^2(m D)
// (sin^2 a - sin^2 b = sin(a - b) sin(a + b)): no cancellation, so every beta keeps f32's relative precision,
// the tiny first ones and the last ones near the clip alike. The angles k D are exact Q0.64 turns (k times
// D / 2pi, which the host computes in f64), reduced exactly to [0, 1/8] turn before a short f32 polynomial.
//
// The cumulative product is mirrored exactly by the CPU twin: thread l owns timesteps [l * per, (l + 1) * per)
// and multiplies them up in order; thread 0 then turns the 256 chunk products into exclusive prefixes in
// order, and each thread scales its chunk by its prefix.

const SCHED_LINEAR: u32 = 0u;
const TAU_2POW32: f32 = 1.462918119976564e-9;  // f32(2pi) * 2^-32, exact

struct SchedParams {
    timesteps: u32,        // T
    kind: u32,             // 0 linear, 1 cosine
    beta_start: f32,       // linear
    delta: f32,            // linear: (beta_end - beta_start) / (T - 1), 0 when T = 1
    max_beta: f32,         // cosine: upper clip of beta
    _pad: u32,
    turn_step: vec2<u32>,  // cosine: D / 2pi = 1 / (4 T (1 + s)) in Q0.64 (lo, hi)
}

@group(0) @binding(0) var<uniform> scp: SchedParams;
@group(0) @binding(1) var<storage, read_write> betas_out: array<f32>;
@group(0) @binding(2) var<storage, read_write> alphas_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> alpha_bar_out: array<f32>;

var<workgroup> chunk_prod: array<f32, 256>;

// 64-bit a - b (wrapping), both as (lo, hi).
fn u64_sub(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    return vec2<u32>(a.x - b.x, a.y - b.y - select(0u, 1u, a.x < b.x));
}

// sin(x) and cos(x) for 0 <= x <= pi/4, Taylor to x^9 and x^10 (truncation below 3e-9 relative).
fn poly_sin(x: f32) -> f32 {
    let x2 = x * x;
    return x * (1.0 + x2 * (-0.16666667 + x2 * (0.008333334 + x2 * (-1.984127e-4 + x2 * 2.7557319e-6))));
}

fn poly_cos(x: f32) -> f32 {
    let x2 = x * x;
    return 1.0 + x2 * (-0.5 + x2 * (0.041666668 + x2 * (-0.0013888889 + x2 * (2.4801588e-5 + x2 * -2.755732e-7))));
}

// sin(2pi u) for a Q0.64 turn u in [0, 1/2]: u past 1/4 becomes 1/2 - u, then past 1/8 the cosine of 1/4 - u
// (both exact), and the reduced turn goes to f32 within 2^-23 relative.
fn sin_turn(turn: vec2<u32>) -> f32 {
    var u = turn;
    if u.y >= 0x40000000u {
        u = u64_sub(vec2<u32>(0u, 0x80000000u), u);
    }
    var use_cos = false;
    if u.y >= 0x20000000u {
        u = u64_sub(vec2<u32>(0u, 0x40000000u), u);
        use_cos = true;
    }
    // u * 2^32 = hi + lo * 2^-32; the scalings by powers of two are exact (fused or not).
    let x = (f32_of_u32(u.y) + f32_of_u32(u.x) * (1.0 / 4294967296.0)) * TAU_2POW32;
    if use_cos {
        return poly_cos(x);
    }
    return poly_sin(x);
}

// k D as a Q0.64 turn: k * turn_step (below 1/2 for k < 2T, so nothing wraps).
fn cosine_turn(k: u32) -> vec2<u32> {
    let lo = mul32x32(k, scp.turn_step.x);
    return vec2<u32>(lo.x, lo.y + k * scp.turn_step.y);
}

fn schedule_beta(i: u32) -> f32 {
    if scp.kind == SCHED_LINEAR {
        return scp.beta_start + f32(i) * scp.delta;
    }
    let m = scp.timesteps - i;
    let sm = sin_turn(cosine_turn(m));
    let beta = sin_turn(cosine_turn(1u)) * sin_turn(cosine_turn(2u * m - 1u)) / (sm * sm);
    return min(beta, scp.max_beta);
}

@compute @workgroup_size(256)
fn schedule(@builtin(local_invocation_index) lid: u32) {
    let per = (scp.timesteps + WG - 1u) / WG;
    let start = min(lid * per, scp.timesteps);
    let end = min(start + per, scp.timesteps);
    var prod = 1.0;
    for (var i = start; i < end; i++) {
        let beta = schedule_beta(i);
        let alpha = 1.0 - beta;
        betas_out[i] = beta;
        alphas_out[i] = alpha;
        prod = prod * alpha;
        alpha_bar_out[i] = prod;
    }
    chunk_prod[lid] = prod;
    workgroupBarrier();
    if lid == 0u {
        var acc = 1.0;
        for (var c = 0u; c < WG; c++) {
            let v = chunk_prod[c];
            chunk_prod[c] = acc;
            acc = acc * v;
        }
    }
    workgroupBarrier();
    let pre = chunk_prod[lid];
    for (var i = start; i < end; i++) {
        alpha_bar_out[i] = pre * alpha_bar_out[i];
    }
}

// ---------------------------------------------------------------------------------------------------------
// q_sample: the forward process for a training step. Row r of x0 ([B, D]) gets t_r = bits(seed, base + r)
// mod T and noise eps_i = normal(seed, base + eps_offset + i), base = step * stride read at run time, and
// xt = sqrt(abar[t_r]) * x0 + sqrt(1 - abar[t_r]) * eps. Per step the stream window is [base, base + stride):
// the B timestep words first, then (from eps_offset = B rounded up to 4) the B * D normals.

struct QSampleParams {
    n: u32,               // B * D
    row_len: u32,         // D > 0
    timesteps: u32,       // T
    eps_offset: u32,      // B rounded up to 4
    seed: vec2<u32>,      // (lo, hi)
    stride: vec2<u32>,    // eps_offset + B * D rounded up to 4 (lo, hi)
}

@group(0) @binding(0) var<uniform> qp: QSampleParams;
@group(0) @binding(1) var<storage, read> x0: array<f32>;
@group(0) @binding(2) var<storage, read> q_alpha_bar: array<f32>;
@group(0) @binding(3) var<storage, read> q_step: array<u32>;
@group(0) @binding(4) var<storage, read_write> xt_out: array<f32>;
@group(0) @binding(5) var<storage, read_write> eps_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> t_out: array<u32>;

// One invocation per element; each recomputes its row's timestep (one Philox block), and the row's first
// element stores it.
@compute @workgroup_size(256)
fn q_sample(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= qp.n { return; }
    let base = rng_step_offset(q_step[0], qp.stride);
    let r = i / qp.row_len;
    let t = rng_bits_at(qp.seed, base, r) % qp.timesteps;
    let z = rng_normal_at(qp.seed, rng_add64(base, qp.eps_offset), i);
    let ab = q_alpha_bar[t];
    xt_out[i] = sqrt(ab) * x0[i] + sqrt(1.0 - ab) * z;
    eps_out[i] = z;
    if i == r * qp.row_len {
        t_out[r] = t;
    }
}

// ---------------------------------------------------------------------------------------------------------
// timestep_embedding: row b of t ([B], u32) becomes [cos(t f_0) .. cos(t f_{h-1}), sin(t f_0) .. sin(t f_{h-1})],
// h = dim / 2, f_k = max_period^(-k / h). All integer: g_k = f_k / 2pi = INV_2PI * ratio^k in Q0.64 (ratio =
// max_period^(-1 / h) from the host, the power by squaring with products truncated to 64 bits), then the
// angle's turn t * g_k mod 1 to Q0.32, then `rng_cos_sin`. Accuracy: about 1e-9 before the f32 rounding
// for t below 2^16; bit-identical on every device.

const INV_2PI: vec2<u32> = vec2<u32>(0x9391054Au, 0x28BE60DBu);  // 1 / 2pi in Q0.64 (lo, hi), rounded

struct EmbedParams {
    n: u32,              // B * dim
    dim: u32,
    half: u32,           // dim / 2
    _pad: u32,
    ratio: vec2<u32>,    // max_period^(-1 / half) in Q0.64 (lo, hi)
}

@group(0) @binding(0) var<uniform> ep: EmbedParams;
@group(0) @binding(1) var<storage, read> t_in: array<u32>;
@group(0) @binding(2) var<storage, read_write> emb_out: array<f32>;

// High 64 bits of the 128-bit product of a and b (both (lo, hi)): Q0.64 times Q0.64, truncated.
fn mul64hi(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let p00 = mul32x32(a.x, b.x);
    let p01 = mul32x32(a.x, b.y);
    let p10 = mul32x32(a.y, b.x);
    let p11 = mul32x32(a.y, b.y);
    // Word 1 of the product: p00.hi + p01.lo + p10.lo, keeping its carries (0..2).
    let s1 = p00.y + p01.x;
    let s1b = s1 + p10.x;
    let c1 = select(0u, 1u, s1 < p01.x) + select(0u, 1u, s1b < p10.x);
    // Word 2: p01.hi + p10.hi + p11.lo + c1, and its carries into word 3.
    let s2 = p01.y + p10.y;
    let s2b = s2 + p11.x;
    let s2c = s2b + c1;
    let c2 = select(0u, 1u, s2 < p10.y) + select(0u, 1u, s2b < p11.x) + select(0u, 1u, s2c < c1);
    return vec2<u32>(s2c, p11.y + c2);
}

// g_k = f_k / 2pi in Q0.64.
fn freq_turns(k: u32) -> vec2<u32> {
    var acc = INV_2PI;
    var base = ep.ratio;
    var e = k;
    while e != 0u {
        if (e & 1u) == 1u {
            acc = mul64hi(acc, base);
        }
        e = e >> 1u;
        base = mul64hi(base, base);
    }
    return acc;
}

// (t * g) mod 1 as a Q0.32 turn, rounded: bits 32..63 of the product t * g (g in Q0.64) plus bit 31.
fn embed_turn(t: u32, g: vec2<u32>) -> u32 {
    let l = mul32x32(t, g.x);
    let h = mul32x32(t, g.y);
    return h.x + l.y + (l.x >> 31u);
}

// A Q1.31 magnitude and its sign as f32 (the scaling by 2^-31 is exact).
fn signed_q31(m: u32, neg: u32) -> f32 {
    let v = f32_of_u32(m) * (1.0 / 2147483648.0);
    return select(v, -v, neg == 1u);
}

@compute @workgroup_size(256)
fn timestep_embedding(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= ep.n { return; }
    let b = i / ep.dim;
    let j = i - b * ep.dim;
    let is_sin = j >= ep.half;
    let k = select(j, j - ep.half, is_sin);
    let cs = rng_cos_sin(embed_turn(t_in[b], freq_turns(k)));
    if is_sin {
        emb_out[i] = signed_q31(cs.y, cs.w);
    } else {
        emb_out[i] = signed_q31(cs.x, cs.z);
    }
}

// ---------------------------------------------------------------------------------------------------------
// ddpm_step: x_{t-1} = 1 / sqrt(alpha_t) * (x_t - beta_t / sqrt(1 - abar_t) * eps) + sigma_t z, sigma_t = sqrt(beta_t)
// for t > 0 and 0 at t = 0, z_i = normal(seed, offset + i). With clip > 0 the mean is the posterior mean
// through x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) clamped to [-clip, clip]:
// c0 * x0_hat + c1 * x_t, c0 = sqrt(abar_{t-1}) beta_t / (1 - abar_t), c1 = sqrt(alpha_t) (1 - abar_{t-1}) /
// (1 - abar_t), abar_{-1} = 1 (equal to the eps form when nothing is clamped). The timestep is a host value
// (sampling is not a replayed step); the schedule values are read from the device tensors.

struct DdpmParams {
    n: u32,
    t: u32,
    clip: f32,           // 0: the eps form
    _pad1: u32,
    seed: vec2<u32>,     // (lo, hi)
    offset: vec2<u32>,   // (lo, hi)
}

@group(0) @binding(0) var<uniform> dpp: DdpmParams;
@group(0) @binding(1) var<storage, read> d_xt: array<f32>;
@group(0) @binding(2) var<storage, read> d_eps: array<f32>;
@group(0) @binding(3) var<storage, read> d_betas: array<f32>;
@group(0) @binding(4) var<storage, read> d_alphas: array<f32>;
@group(0) @binding(5) var<storage, read> d_alpha_bar: array<f32>;
@group(0) @binding(6) var<storage, read_write> d_out: array<f32>;

@compute @workgroup_size(256)
fn ddpm_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= dpp.n { return; }
    let beta = d_betas[dpp.t];
    let alpha = d_alphas[dpp.t];
    let ab = d_alpha_bar[dpp.t];
    var mean = 0.0;
    if dpp.clip > 0.0 {
        var ab_prev = 1.0;
        if dpp.t > 0u {
            ab_prev = d_alpha_bar[dpp.t - 1u];
        }
        let x0_hat = clamp((d_xt[i] - sqrt(1.0 - ab) * d_eps[i]) / sqrt(ab), -dpp.clip, dpp.clip);
        mean = sqrt(ab_prev) * beta / (1.0 - ab) * x0_hat + sqrt(alpha) * (1.0 - ab_prev) / (1.0 - ab) * d_xt[i];
    } else {
        mean = (1.0 / sqrt(alpha)) * (d_xt[i] - beta / sqrt(1.0 - ab) * d_eps[i]);
    }
    var noise = 0.0;
    if dpp.t > 0u {
        noise = sqrt(beta) * rng_normal_at(dpp.seed, dpp.offset, i);
    }
    d_out[i] = mean + noise;
}

// ---------------------------------------------------------------------------------------------------------
// ddim_step (eta = 0): x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), and x_prev = sqrt(abar_prev) x0_hat
// + sqrt(1 - abar_prev) eps, abar_prev = abar[t_prev] or 1 when there is no previous step (the result is then
// x0_hat). With clip > 0, x0_hat is clamped to [-clip, clip] and eps recomputed from it, eps = (x_t -
// sqrt(abar_t) x0_hat) / sqrt(1 - abar_t), so that the pair still reconstructs x_t.

struct DdimParams {
    n: u32,
    t: u32,
    t_prev: u32,
    has_prev: u32,   // 0: abar_prev = 1
    clip: f32,       // 0: no clipping
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> dip: DdimParams;
@group(0) @binding(1) var<storage, read> i_xt: array<f32>;
@group(0) @binding(2) var<storage, read> i_eps: array<f32>;
@group(0) @binding(3) var<storage, read> i_alpha_bar: array<f32>;
@group(0) @binding(4) var<storage, read_write> i_out: array<f32>;

@compute @workgroup_size(256)
fn ddim_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= dip.n { return; }
    let ab = i_alpha_bar[dip.t];
    var ab_prev = 1.0;
    if dip.has_prev == 1u {
        ab_prev = i_alpha_bar[dip.t_prev];
    }
    var e = i_eps[i];
    var x0_hat = (i_xt[i] - sqrt(1.0 - ab) * e) / sqrt(ab);
    if dip.clip > 0.0 {
        x0_hat = clamp(x0_hat, -dip.clip, dip.clip);
        if dip.has_prev == 0u {
            i_out[i] = x0_hat;
            return;
        }
        e = (i_xt[i] - sqrt(ab) * x0_hat) / sqrt(1.0 - ab);
    }
    i_out[i] = sqrt(ab_prev) * x0_hat + sqrt(1.0 - ab_prev) * e;
}

// ---------------------------------------------------------------------------------------------------------
// v-prediction (Salimans & Ho 2022) conversions with a per-row timestep t ([B], u32; clamped to T - 1):
// mode 0, v_to_eps: eps = sqrt(abar) v + sqrt(1 - abar) x_t (a = v, b = x_t);
// mode 1, v_target: v = sqrt(abar) eps - sqrt(1 - abar) x_0 (a = eps, b = x_0).

const V_TO_EPS: u32 = 0u;

struct VParams {
    n: u32,          // B * D
    row_len: u32,    // D > 0
    timesteps: u32,  // T
    mode: u32,
}

@group(0) @binding(0) var<uniform> vp: VParams;
@group(0) @binding(1) var<storage, read> v_a: array<f32>;
@group(0) @binding(2) var<storage, read> v_b: array<f32>;
@group(0) @binding(3) var<storage, read> v_t: array<u32>;
@group(0) @binding(4) var<storage, read> v_alpha_bar: array<f32>;
@group(0) @binding(5) var<storage, read_write> v_out: array<f32>;

@compute @workgroup_size(256)
fn v_convert(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid, WG);
    if i >= vp.n { return; }
    let ab = v_alpha_bar[min(v_t[i / vp.row_len], vp.timesteps - 1u)];
    let sb = sqrt(1.0 - ab);
    v_out[i] = sqrt(ab) * v_a[i] + select(-sb, sb, vp.mode == V_TO_EPS) * v_b[i];
}
