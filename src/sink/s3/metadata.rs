//! The bot's own object metadata: `wickrio-type` (what the object holds) and `wickrio-file-path` (the
//! file's name, where `decrypt` and Wickr's decryption sample restore it).
//!
//! User metadata travels as `x-amz-meta-*` HTTP headers, and S3 takes only US-ASCII there: AWS's
//! documentation says to use US-ASCII for metadata sent over REST, and a header with other bytes is
//! signed differently by the SDK and by S3, so S3 answers 403 SignatureDoesNotMatch (real S3; moto
//! accepts it). A file name is user input (`résumé.pdf`, `報告.txt`), so the value is percent-encoded:
//! every byte outside printable ASCII, the space and `%` itself become `%XX` (UTF-8 bytes, as in a URL).
//! A name that was ASCII already (and has no `%`) is sent unchanged.

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

pub const TYPE: &str = "wickrio-type";
pub const FILE_PATH: &str = "wickrio-file-path";

/// Bytes encoded besides everything outside ASCII (which `utf8_percent_encode` always encodes).
const ENCODED: &AsciiSet = &CONTROLS.add(b' ').add(b'%');

/// A metadata value S3 takes: printable US-ASCII only.
pub fn encode_value(value: &str) -> String {
    utf8_percent_encode(value, ENCODED).to_string()
}

/// The value as it was before [`encode_value`]. A `%` not followed by two hex digits is kept as is
/// (objects written before the encoding existed); bytes that do not decode to UTF-8 are replaced.
pub fn decode_value(value: &str) -> String {
    percent_decode_str(value).decode_utf8_lossy().into_owned()
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
            let encoded = encode_value(name);
            assert!(encoded.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{encoded}");
            assert_eq!(decode_value(&encoded), name);
        }
        assert_eq!(encode_value("plain-name_1.pdf"), "plain-name_1.pdf");
        assert_eq!(
            encode_value("résumé 報告.pdf"),
            "r%C3%A9sum%C3%A9%20%E5%A0%B1%E5%91%8A.pdf"
        );
    }

    #[test]
    fn names_from_before_the_encoding_decode_to_themselves() {
        assert_eq!(decode_value("50%off.pdf"), "50%off.pdf");
        assert_eq!(decode_value("a%zz"), "a%zz");
    }
}
