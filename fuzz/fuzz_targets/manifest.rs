//! Manifest entries as verify reads them: parsing and signature checking never panic, and no
//! entry but one signed with the key verifies.
#![no_main]

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use retention_bot::manifest::{Entry, line_hash};

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[7u8; 32]).verifying_key();
    for line in data.split(|b| *b == b'\n') {
        let Ok(text) = std::str::from_utf8(line) else { continue };
        let _ = line_hash(text);
        if let Ok(entry) = serde_json::from_str::<Entry>(text) {
            assert!(!entry.verify(&key), "a forged entry verified");
            let _ = entry.to_line();
        }
    }
});
