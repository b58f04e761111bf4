//! Models, one readable file each.

pub mod gan;
pub mod gpt;
pub mod mlp;
