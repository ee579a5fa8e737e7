//! Settings: any value of any variable gives a configuration or an error naming a variable, never
//! a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retention_bot::config::{Config, SETTINGS};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join("retention-bot-fuzz-settings");
    let text = String::from_utf8_lossy(data);
    let mut pairs: Vec<(String, String)> = vec![
        ("WICKRIO_BOT_NAME".into(), "fuzz".into()),
        ("WICKRIO_COMP_MESGDEST".into(), dir.join("m").display().to_string()),
        ("WICKRIO_COMP_FILEDEST".into(), dir.join("f").display().to_string()),
        ("WICKRIO_STATE_DIR".into(), dir.join("s").display().to_string()),
    ];
    // The input is values for settings in turn (directories excepted: those stay put).
    for (setting, value) in SETTINGS.iter().zip(text.split('\u{1}')) {
        if !setting.name.ends_with("DEST") && setting.name != "WICKRIO_STATE_DIR" && setting.name != "AWS_SECRET_NAME" {
            pairs.push((setting.name.to_owned(), value.to_owned()));
        }
    }
    let lookup = |k: &str| pairs.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if let Err(e) = Config::from_lookup(lookup) {
        assert!(e.var.starts_with("WICKRIO_") || e.var.starts_with("AWS_"), "{}", e.var);
    }
});
