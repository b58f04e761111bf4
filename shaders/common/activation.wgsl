// The unary ops and their derivatives by op code (the codes of ops::elementwise::Unary), shared by the
// elementwise family and the kernels that fuse an activation (chnorm).

// tanh written through exp so large |x| gives +-1 on every driver (some return NaN for builtin tanh).
fn stable_tanh(x: f32) -> f32 {
    let e = exp(-2.0 * abs(x));
    return sign(x) * (1.0 - e) / (1.0 + e);
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

fn unary_op(op: u32, x: f32, alpha: f32) -> f32 {
    switch op {
        case 0u: { return -x; }
        case 1u: { return abs(x); }
        case 2u: { return exp(x); }
        case 3u: { return log(x); }
        case 4u: { return sqrt(x); }
        case 5u: { return inverseSqrt(x); }
        case 6u: { return 1.0 / x; }
        case 7u: { return sin(x); }
        case 8u: { return cos(x); }
        case 9u: { return stable_tanh(x); }
        case 10u: { return sigmoid(x); }
        case 11u: { return max(x, 0.0); }
        case 12u: { return 0.5 * x * (1.0 + stable_tanh(0.7978845608 * (x + 0.044715 * x * x * x))); }
        case 13u: { return x * sigmoid(x); }
        case 14u: { return x * x; }
        case 15u: { return sign(x); }
        case 16u: { return select(alpha * x, x, x > 0.0); }
        default: { return x; }
    }
}

// f'(x) of unary_op. Where the textbook form cancels (1 - tanh^2, s (1 - s), 1 + tanh near -1) it is
// rewritten through e = exp(-2|u|) or sigmoid(-x), which keep full relative precision in the tails.
// Kinks take the one-sided value a training loop expects: abs' = sign (0 at 0), relu' = 0 at 0,
// leaky_relu' = alpha at 0; sign' = 0.
fn unary_deriv(op: u32, x: f32, alpha: f32) -> f32 {
    switch op {
        case 0u: { return -1.0; }
        case 1u: { return sign(x); }
        case 2u: { return exp(x); }
        case 3u: { return 1.0 / x; }
        case 4u: { return 0.5 * inverseSqrt(x); }
        case 5u: { return -0.5 * inverseSqrt(x) / x; }
        case 6u: { return -1.0 / (x * x); }
        case 7u: { return cos(x); }
        case 8u: { return -sin(x); }
        case 9u: {
            // 1 - tanh(x)^2 = 4e / (1 + e)^2 with e = exp(-2|x|).
            let e = exp(-2.0 * abs(x));
            let d = 1.0 + e;
            return 4.0 * e / (d * d);
        }
        case 10u: { return sigmoid(x) * sigmoid(-x); }
        case 11u: { return select(0.0, 1.0, x > 0.0); }
        case 12u: {
            // f = 0.5 x (1 + tanh(u)), u = c (x + k x^3): f' = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) u'.
            let u = 0.7978845608 * (x + 0.044715 * x * x * x);
            let du = 0.7978845608 * (1.0 + 0.134145 * x * x);  // 0.134145 = 3 * 0.044715
            let e = exp(-2.0 * abs(u));
            let d = 1.0 + e;
            let one_plus_t = select(2.0 * e, 2.0, u >= 0.0) / d;
            let sech2 = 4.0 * e / (d * d);
            return 0.5 * one_plus_t + 0.5 * x * sech2 * du;
        }
        case 13u: {
            // (x s)' = s + x s (1 - s) = s (1 + x sigmoid(-x)).
            return sigmoid(x) * (1.0 + x * sigmoid(-x));
        }
        case 14u: { return 2.0 * x; }
        case 15u: { return 0.0; }
        case 16u: { return select(alpha, 1.0, x > 0.0); }
        default: { return 1.0; }
    }
}

// act'(z) from y = act(z), by unary op code, for the activations whose derivative the output alone
// gives: tanh' = 1 - y^2, sigmoid' = y (1 - y), and relu and leaky relu with a positive slope keep the
// sign, so y > 0 exactly where z > 0. The fused epilogues' backwards keep y and never store z for these.
fn deriv_from_out(op: u32, y: f32, alpha: f32) -> f32 {
    switch op {
        case 9u: { return 1.0 - y * y; }
        case 10u: { return y * (1.0 - y); }
        case 11u: { return select(0.0, 1.0, y > 0.0); }
        case 16u: { return select(alpha, 1.0, y > 0.0); }
        default: { return 1.0; }
    }
}
