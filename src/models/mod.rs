//! Models, one readable file each.

pub mod gpt;
pub mod mlp;
