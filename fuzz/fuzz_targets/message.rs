//! Message validation and NDJSON splitting: never a panic; every batch accepted is one line per
//! message, each valid JSON meaning exactly what its input line meant, and the output never longer
//! than the input (it is made in place).
#![no_main]

use libfuzzer_sys::fuzz_target;
use retention_bot::message::{check_line, parse_ndjson, parse_one, with_local_filename};

fuzz_target!(|data: &[u8]| {
    if let Ok(lines) = parse_ndjson(data.to_vec()) {
        assert!(lines.bytes.len() <= data.len() + 1);
        let inputs = data.split(|b| *b == b'\n').map(<[u8]>::trim_ascii).filter(|l| !l.is_empty());
        let outputs = lines.bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty());
        let mut count = 0;
        for (input, output) in inputs.zip(outputs) {
            let a: serde_json::Value = serde_json::from_slice(input).expect("an accepted line parses");
            let b: serde_json::Value = serde_json::from_slice(output).expect("its compact line parses");
            assert_eq!(a, b, "compaction changed the message");
            count += 1;
        }
        assert_eq!(count, lines.count);
    }
    if let Ok((lines, checked)) = parse_one(data.to_vec()) {
        assert_eq!(lines.bytes.iter().filter(|b| **b == b'\n').count(), 1);
        if checked.msgtype == 6000 {
            let line = with_local_filename(data, "/spool/attachment_1_x").expect("a checked file message");
            let v: serde_json::Value = serde_json::from_slice(&line).expect("its line parses");
            assert_eq!(v["file"]["localfilename"], "/spool/attachment_1_x");
        }
    }
    let _ = check_line(data, 1);
});
