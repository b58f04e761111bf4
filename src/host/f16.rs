//! Half-precision storage on the host: f16 values packed two to a 32-bit word, element 2i in the low
//! half of word i (what WGSL's `pack2x16float` / `unpack2x16float` read and write). Rounding is to
//! nearest, ties to even (the `half` crate), the rounding the CPU twins use when they store f16.

use half::f16;

/// Words that hold `n` f16 values: ceil(n / 2).
pub fn words(n: usize) -> usize {
    n.div_ceil(2)
}

/// `x` rounded to the nearest f16 (ties to even) and widened back: the value an f16 store keeps.
pub fn round(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Packs `values` as f16 pairs (rounded to nearest even); an odd count leaves the last high half 0.
pub fn pack(values: &[f32]) -> Vec<u32> {
    values
        .chunks(2)
        .map(|p| {
            let lo = f16::from_f32(p[0]).to_bits() as u32;
            let hi = p.get(1).map_or(0, |&v| f16::from_f32(v).to_bits() as u32);
            lo | (hi << 16)
        })
        .collect()
}

/// Element `i` of packed f16 words, widened to f32.
pub fn get(words: &[u32], i: usize) -> f32 {
    f16::from_bits((words[i / 2] >> (16 * (i % 2))) as u16).to_f32()
}

/// The first `n` f16 values of packed words, widened to f32.
pub fn unpack(words: &[u32], n: usize) -> Vec<f32> {
    (0..n).map(|i| get(words, i)).collect()
}
