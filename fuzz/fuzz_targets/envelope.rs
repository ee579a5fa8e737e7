//! S3 object metadata from a bucket (input like any other): the envelope reader and the file-path
//! decoding never panic, and a decoded path that would climb out of a restore is caught.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use retention_bot::envelope::StoredEnvelope;
use retention_bot::objects::metadata;

const KEYS: [&str; 9] = [
    "x-amz-key-v2",
    "x-amz-iv",
    "x-amz-cek-alg",
    "x-amz-tag-len",
    "x-amz-wrap-alg",
    "x-amz-matdesc",
    "x-amz-unencrypted-content-length",
    "wickrio-file-path",
    "wickrio-file-path-encoding",
];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut map = HashMap::new();
    for (i, value) in text.split('\u{1}').enumerate() {
        map.insert(KEYS[i % KEYS.len()].to_owned(), value.to_owned());
    }
    let _ = StoredEnvelope::from_metadata(&map);
    if let Some(path) = metadata::file_path(&map) {
        let _ = std::path::Path::new(&path).components().count();
    }
    // A content MAC is hex (ASCII): the file name is what is fuzzed.
    let round = metadata::for_file("file", &text, "0123456789abcdef");
    assert!(round.values().all(|v| v.bytes().all(|b| (0x20..0x7f).contains(&b))));
    assert_eq!(metadata::file_path(&round).as_deref(), Some(text.as_ref()));
});
