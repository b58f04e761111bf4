//! Models, one readable file each.

pub mod mlp;
pub mod gpt;
