pub mod bench;
pub mod demo;
pub mod diffusion;
pub mod gan;
pub mod gpt;
pub mod info;

use tigel::{BackendChoice, Device, Result};

/// The device for `--backend` (or $TIGEL_BACKEND, else auto), with its one-line note on stderr.
pub fn device(backend: Option<&str>) -> Result<Device> {
    let d = match backend {
        Some(b) => Device::new(b.parse::<BackendChoice>()?)?,
        None => Device::from_env()?,
    };
    eprintln!("{}", d.note());
    Ok(d)
}
