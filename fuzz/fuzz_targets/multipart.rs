//! The multipart framing guard: never a panic, and whatever the chunking (the first byte picks the
//! chunk size), a body is refused only once a preamble or part headers ran past the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retention_bot::fuzzing::{Framing, MAX_FRAMING};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else { return };
    let cut = usize::from(cut).max(1);
    let mut whole = Framing::new("bNd");
    let whole_ok = whole.follow(body).is_ok();
    let mut pieces = Framing::new("bNd");
    let pieces_ok = body.chunks(cut).all(|c| pieces.follow(c).is_ok());
    if body.len() <= MAX_FRAMING {
        assert!(whole_ok && pieces_ok, "a body within the limit was refused");
    }
    let _ = multer::parse_boundary(String::from_utf8_lossy(body).as_ref());
});
