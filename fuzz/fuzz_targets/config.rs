//! Model configs (GPT, GAN, diffusion, UNet) from arbitrary JSON text: an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = tigel::models::gpt::GptConfig::from_json(&v);
        let _ = tigel::models::gan::GanConfig::from_json(&v);
        let _ = tigel::models::ddpm::DiffusionConfig::from_json(&v);
        let _ = tigel::models::unet::UnetConfig::from_json(&v);
    }
});
