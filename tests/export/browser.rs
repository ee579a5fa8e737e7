//! A real browser over the transcript: headless Chromium (Debian `chromium`) loads a page from disk
//! and gives back the DOM it built (`--dump-dom`), a screenshot, or the page printed to PDF (read
//! back with poppler's `pdftotext`). The DOM is what a reader's browser makes of the page: an
//! element there that the exporter did not write would have come from the archive's content.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs Chromium headless on `page` with `args`; returns its standard output.
fn chromium(page: &Path, args: &[String]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.canonicalize().unwrap().display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium is missing: scripts/test installs it (Debian package chromium)");
    let out = child.stdout.take().unwrap();
    let reading = std::thread::spawn(move || std::io::read_to_string(out).unwrap());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium failed on {}: {status}", page.display());
            return reading.join().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish {} in 90 s", page.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The DOM Chromium built from `page`, serialised.
pub(super) fn dom(page: &Path) -> String {
    let dom = chromium(page, &["--dump-dom".into()]);
    assert!(dom.contains("</html>"), "{}: {dom}", page.display());
    dom
}

/// A screenshot of `page`, kept under `target/test-artefacts/` as `name` (for a person to look at).
pub(super) fn screenshot(page: &Path, name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(name);
    let _ = std::fs::remove_file(&out);
    chromium(
        page,
        &[
            format!("--screenshot={}", out.display()),
            "--window-size=1100,1600".into(),
        ],
    );
    assert!(std::fs::metadata(&out).is_ok_and(|m| m.len() > 0), "{}", out.display());
    out
}

/// `page` printed to PDF (the print stylesheet, no browser header or footer), as `pdftotext` reads
/// it: pages apart by form feeds.
pub(super) fn printed_text(page: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let pdf = dir.path().join("page.pdf");
    chromium(
        page,
        &[
            format!("--print-to-pdf={}", pdf.display()),
            "--no-pdf-header-footer".into(),
        ],
    );
    let out = Command::new("pdftotext")
        .args(["-layout"])
        .arg(&pdf)
        .arg("-")
        .output()
        .expect("pdftotext is missing: scripts/test installs it (Debian package poppler-utils)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// An element of a serialised DOM: its tag and attributes (values unescaped).
#[derive(Debug)]
pub(super) struct Element {
    pub(super) tag: String,
    pub(super) attributes: Vec<(String, String)>,
}

impl Element {
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.attributes.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Every element of a serialised DOM, in order. In a serialisation, a `<` in text is `&lt;`, so
/// each `<` followed by a letter opens an element (the `<style>` holds no `<`).
pub(super) fn elements(dom: &str) -> Vec<Element> {
    let mut out = Vec::new();
    let bytes = dom.as_bytes();
    let mut i = 0;
    while let Some(at) = dom[i..].find('<') {
        let start = i + at + 1;
        i = start;
        if !bytes.get(start).is_some_and(u8::is_ascii_alphabetic) {
            continue;
        }
        // The tag runs to the first `>` outside a quoted value.
        let mut quote = None;
        let mut end = start;
        while end < bytes.len() {
            match (bytes[end], quote) {
                (b'"', None) => quote = Some(b'"'),
                (b'\'', None) => quote = Some(b'\''),
                (q, Some(open)) if q == open => quote = None,
                (b'>', None) => break,
                _ => {}
            }
            end += 1;
        }
        out.push(parse_tag(&dom[start..end]));
        i = end;
    }
    out
}

fn parse_tag(text: &str) -> Element {
    let text = text.trim_end_matches('/');
    let (tag, mut rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let mut attributes = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let name_end = rest.find(|c: char| c == '=' || c.is_whitespace()).unwrap_or(rest.len());
        let name = rest[..name_end].to_lowercase();
        rest = &rest[name_end..];
        let value = match rest.strip_prefix('=') {
            Some(v) if v.starts_with(['"', '\'']) => {
                let q = v.chars().next().unwrap();
                let close = v[1..].find(q).map_or(v.len(), |c| c + 1);
                rest = v.get(close + 1..).unwrap_or("");
                unescape(&v[1..close])
            }
            Some(v) => {
                let end = v.find(char::is_whitespace).unwrap_or(v.len());
                rest = &v[end..];
                unescape(&v[..end])
            }
            None => String::new(),
        };
        attributes.push((name, value));
    }
    Element {
        tag: tag.to_lowercase(),
        attributes,
    }
}

/// The text a reader sees in a serialised DOM's body: tags dropped, entities decoded.
pub(super) fn body_text(dom: &str) -> String {
    let body = dom.split("<body>").nth(1).unwrap_or(dom);
    let mut text = String::new();
    let mut in_tag = false;
    for c in body.chars() {
        match (c, in_tag) {
            ('<', false) => in_tag = true,
            ('>', true) => in_tag = false,
            (c, false) => text.push(c),
            _ => {}
        }
    }
    unescape(&text)
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}
