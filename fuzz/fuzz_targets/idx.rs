//! IDX images and labels (gzipped or not) from arbitrary bytes: an error or a consistent set, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = tigel::data::images::images_from_bytes(Path::new("images.idx"), data) {
        assert_eq!(s.pixels.len(), s.n * s.image_len());
    }
    let _ = tigel::data::images::labels_from_bytes(Path::new("labels.idx"), data);
});
