//! Crash recovery of an open message file: whatever the tail, what is kept is a prefix of the file
//! that ends a whole line, and nothing after the cut is a whole valid line (no complete line is
//! ever dropped; only a torn or invalid tail is).
#![no_main]

use libfuzzer_sys::fuzz_target;
use retention_bot::fuzzing::recover_tail;

fuzz_target!(|data: &[u8]| {
    let (kept, dropped) = recover_tail(data).expect("recovery of a temporary file");
    assert!(data.starts_with(&kept));
    assert_eq!(kept.len() as u64 + dropped, data.len() as u64);
    if !kept.is_empty() {
        assert_eq!(kept.last(), Some(&b'\n'));
    }
    let after = &data[kept.len()..];
    assert!(
        !after.split_inclusive(|b| *b == b'\n').any(|l| l.ends_with(b"\n") && serde_json::from_slice::<serde::de::IgnoredAny>(l).is_ok()),
        "a whole valid line after the cut"
    );
});
