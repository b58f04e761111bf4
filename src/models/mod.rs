//! Models, one readable file each.

pub mod mlp;
