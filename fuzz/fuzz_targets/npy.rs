//! .npy images and labels from arbitrary bytes: an error or a consistent set, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = tigel::data::images::images_from_bytes(Path::new("images.npy"), data) {
        assert_eq!(s.pixels.len(), s.n * s.image_len());
        assert!(s.pixels.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
    let _ = tigel::data::images::labels_from_bytes(Path::new("labels.npy"), data);
});
