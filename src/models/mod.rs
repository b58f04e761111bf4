//! Models, one readable file each.

pub mod ddpm;
pub mod gan;
pub mod gpt;
pub mod mlp;
pub mod unet;
