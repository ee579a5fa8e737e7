//! The bot's own object metadata: `wickrio-type` (what the object holds), `wickrio-file-path` (the
//! file's name, where `decrypt` and Wickr's decryption sample restore it), `wickrio-content-mac` (a
//! keyed hash of the file's plaintext, by which a create-only upload that finds its key taken tells
//! its own earlier upload from other content: see `create_only`) and `wickrio-closed-at` (when the file
//! was closed, which its Object Lock retention counts from).
//!
//! User metadata travels as `x-amz-meta-*` HTTP headers, and S3 takes only US-ASCII there: AWS's
//! documentation says to use US-ASCII for metadata sent over REST, and a header with other bytes is
//! signed differently by the SDK and by S3, so S3 answers 403 SignatureDoesNotMatch (real S3; moto
//! accepts it). A file name is user input (`résumé.pdf`, `報告.txt`), so the value is percent-encoded:
//! every byte outside printable ASCII, the space and `%` itself become `%XX` (UTF-8 bytes, as in a URL),
//! and `wickrio-file-path-encoding: percent` says so, so that names of objects written before this
//! (which may hold a `%`) are never decoded. A name with nothing to encode is sent as it is, unmarked.

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use std::collections::HashMap;

pub const TYPE: &str = "wickrio-type";
pub(crate) const FILE_PATH: &str = "wickrio-file-path";
/// The keyed hash of the file's content before encryption (`create_only::ContentMac`).
pub(crate) const CONTENT_MAC: &str = "wickrio-content-mac";
/// When the file was closed (its last modification, RFC 3339 UTC): what its Object Lock retention
/// counts from, for `verify --min-retention-days`.
pub(crate) const CLOSED_AT: &str = "wickrio-closed-at";
/// Present (`percent`) when `wickrio-file-path` is percent-encoded.
pub(crate) const FILE_PATH_ENCODING: &str = "wickrio-file-path-encoding";
const PERCENT: &str = "percent";

/// Bytes encoded besides everything outside ASCII (which `utf8_percent_encode` always encodes).
const ENCODED: &AsciiSet = &CONTROLS.add(b' ').add(b'%');

/// The bot's metadata for a file of `kind` named `name` whose content's keyed hash is `content_mac`,
/// in US-ASCII.
pub fn for_file(kind: &str, name: &str, content_mac: &str) -> HashMap<String, String> {
    let mut metadata = HashMap::from([
        (TYPE.to_owned(), kind.to_owned()),
        (CONTENT_MAC.to_owned(), content_mac.to_owned()),
    ]);
    let encoded = encode_value(name);
    if encoded != name {
        metadata.insert(FILE_PATH_ENCODING.to_owned(), PERCENT.to_owned());
    }
    metadata.insert(FILE_PATH.to_owned(), encoded);
    metadata
}

/// The file name an object's metadata gives, decoded if it was encoded.
pub fn file_path(metadata: &HashMap<String, String>) -> Option<String> {
    let value = metadata.get(FILE_PATH)?;
    Some(match metadata.get(FILE_PATH_ENCODING).map(String::as_str) {
        Some(PERCENT) => percent_decode_str(value).decode_utf8_lossy().into_owned(),
        _ => value.clone(),
    })
}

/// A time as `wickrio-closed-at` holds it.
pub(crate) fn time_value(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A metadata value S3 takes: printable US-ASCII only.
fn encode_value(value: &str) -> String {
    utf8_percent_encode(value, ENCODED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_encoded_byte_is_printable_ascii_and_the_name_comes_back() {
        for name in [
            "attachment_20261125120000000_résumé 報告.pdf",
            "100% done.txt",
            "tab\there",
            "plain-name_1.pdf",
            "emoji 😀.png",
        ] {
            let metadata = for_file("file", name, "ab12");
            for value in metadata.values() {
                assert!(value.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{value}");
            }
            assert_eq!(file_path(&metadata).as_deref(), Some(name));
        }
        let plain = for_file("file", "plain-name_1.pdf", "ab12");
        assert_eq!(plain[FILE_PATH], "plain-name_1.pdf");
        assert!(
            !plain.contains_key(FILE_PATH_ENCODING),
            "nothing to encode, nothing marked"
        );
        let encoded = for_file("file", "résumé 報告.pdf", "ab12");
        assert_eq!(encoded[FILE_PATH], "r%C3%A9sum%C3%A9%20%E5%A0%B1%E5%91%8A.pdf");
        assert_eq!(encoded[FILE_PATH_ENCODING], "percent");
    }

    #[test]
    fn names_from_before_the_encoding_are_taken_as_they_are() {
        for old in ["50%off.pdf", "a%20b.txt", "x%2Fy"] {
            let metadata = HashMap::from([(FILE_PATH.to_owned(), old.to_owned())]);
            assert_eq!(file_path(&metadata).as_deref(), Some(old));
        }
    }
}
