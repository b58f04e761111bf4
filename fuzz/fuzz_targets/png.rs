//! One PNG from arbitrary bytes: an error or a consistent image, never a panic or a huge allocation.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    // The PNG signature first, so every input reaches the PNG reader.
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend_from_slice(data.strip_prefix(&bytes[..]).unwrap_or(data));
    if let Ok(s) = tigel::data::images::images_from_bytes(Path::new("image.png"), &bytes) {
        assert_eq!(s.pixels.len(), s.n * s.image_len());
    }
});
