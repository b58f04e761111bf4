//! A text corpus from arbitrary bytes, its split, context check and windows: an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tigel::data::text::Corpus;

fuzz_target!(|data: &[u8]| {
    let Some((&ctx, rest)) = data.split_first() else { return };
    if let Ok(c) = Corpus::from_bytes("fuzz.txt".into(), rest.to_vec()) {
        let (train, held) = c.split();
        for context in [ctx as usize, usize::MAX] {
            let _ = c.check_context(context);
            for part in [train, held] {
                for (o, n) in c.windows(part, context) {
                    assert!(n >= 1 && o + n < c.len());
                }
            }
        }
    }
});
