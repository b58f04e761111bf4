//! A checkpoint file from arbitrary bytes, and the GPT config it holds: an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(ck) = tigel::checkpoint::Checkpoint::from_bytes(Path::new("checkpoint.safetensors"), data) {
        for t in ck.tensors.values() {
            assert_eq!(t.data.len(), t.numel());
        }
        let _ = tigel::models::gpt::GptConfig::from_json(ck.config.get("model").unwrap_or(&serde_json::Value::Null));
    }
});
