//! Reading back what the bot wrote: file names, message files (open and closed) and their lines.

use std::path::Path;

/// File names in `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Every line of every closed message file, in file-name order. Panics on a line that is not
/// valid JSON, or on a file that does not end in a newline.
pub fn closed_lines(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for name in closed_message_files(dir) {
        let text = std::fs::read_to_string(dir.join(&name)).unwrap();
        assert!(text.ends_with('\n'), "{name} ends in a torn line");
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("{name}: invalid line {line:?}: {e}"));
            lines.push(line.to_owned());
        }
    }
    lines
}

/// Every complete line written so far, in open and closed message files alike (the open file's torn
/// tail, if any, is not a line yet).
pub fn written_lines(dir: &Path) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    for name in file_names(dir)
        .into_iter()
        .filter(|n| n.starts_with("receivedMessages_"))
    {
        let text = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        lines.extend(complete.lines().map(|l| serde_json::from_str(l).unwrap()));
    }
    lines
}

/// Closed message files (not manifests, not open files), in name order.
pub fn closed_message_files(dir: &Path) -> Vec<String> {
    file_names(dir)
        .into_iter()
        .filter(|n| n.starts_with("receivedMessages_") && n.ends_with(".txt"))
        .collect()
}

/// Open message files (the manifest's own open file is not counted).
pub fn open_files(dir: &Path) -> Vec<String> {
    file_names(dir)
        .into_iter()
        .filter(|n| n.starts_with("receivedMessages_") && n.ends_with(".open"))
        .collect()
}

/// The file names a manifest's text lists, in order.
pub fn manifest_names(text: &[u8]) -> Vec<String> {
    std::str::from_utf8(text)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["name"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}
