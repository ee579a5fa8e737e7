//! An RSMF file's RFC 5322 header lines, from names an archive's producers chose: nothing they
//! write can add a header, a fake address or an encoding a reader would decode.
//!
//! Text that is not plain (printable ASCII without the characters that mean something in an
//! address: `"`, `<`, `>`, `(`, `)`, `,`, `;`, `:`, `\`, or `=?`) goes as
//! RFC 2047 words, `=?utf-8?b?...?=`, the only spelling Relativity's RSMF reader decodes (lower case,
//! base64; never quoted-printable). A word is at most 75 characters (RFC 2047), and a header line is
//! folded before 78 (RFC 5322), between words or after a list's commas.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// Bytes of text in one encoded word: 30 bytes are 40 base64 characters, 52 with the markers, so
/// that a first word fits beside the longest header name.
const WORD_BYTES: usize = 30;
/// Where a header line is folded.
const LINE: usize = 76;

/// Whether `text` goes into a header as it is.
fn plain(text: &str) -> bool {
    !text.is_empty()
        && text.trim() == text
        && !text.contains("=?")
        && text
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && !b"\"<>(),;:\\".contains(&b))
}

/// `text` as header text, on a line `start` characters in: as it is when plain and it fits, else
/// encoded words separated by folds (which a reader joins without space between two encoded words).
pub(crate) fn header_text(text: &str, start: usize) -> String {
    if plain(text) && start + text.len() <= LINE {
        return text.to_owned();
    }
    let mut words = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + WORD_BYTES).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        words.push(format!("=?utf-8?b?{}?=", B64.encode(&text.as_bytes()[start..end])));
        start = end;
    }
    words.join("\r\n ")
}

/// A comma list of header texts on a line `start` characters in, folded after a comma when a line
/// would grow past [`LINE`].
pub(crate) fn header_list<'a>(start: usize, items: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    let mut line = start;
    for (i, item) in items.into_iter().enumerate() {
        let text = header_text(item, 2);
        let first_line = text.split("\r\n").next().unwrap_or_default().len();
        if i > 0 {
            out.push(',');
            if line + 2 + first_line > LINE {
                out.push_str("\r\n ");
                line = 1;
            } else {
                out.push(' ');
                line += 2;
            }
        }
        out.push_str(&text);
        line = match text.rsplit_once("\r\n") {
            Some((_, last)) => last.len(),
            None => line + text.len(),
        };
    }
    out
}

/// An address header's value, on a line `start` characters in: the names that are addresses as
/// they are, folded; `fallback` (an address of its own) when none is.
pub(crate) fn addresses<'a>(start: usize, names: impl IntoIterator<Item = &'a str>, fallback: &str) -> String {
    let list: Vec<&str> = names.into_iter().filter(|n| is_rsmf_email(n)).collect();
    if list.is_empty() {
        return fallback.to_owned();
    }
    header_list(start, list)
}

/// Whether a name can stand in `X-RSMF-Participants`, which the reader splits on commas and trims.
pub(crate) fn listable(name: &str) -> bool {
    !name.is_empty() && !name.contains(',') && name.trim() == name && !name.chars().any(char::is_control)
}

/// Whether RSMF's reader takes `text` for an e-mail address (exactly one `@`, a local part of the
/// characters it allows, a domain of letters, digits and hyphens): an address it refuses fails the
/// whole file, so anything else is no address.
pub(crate) fn is_rsmf_email(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".!#$%&'*+/=?^_`{|}~-".contains(&b));
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    local_ok && !domain.is_empty() && domain.split('.').all(label_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(value: &str) -> String {
        let mut out = Vec::new();
        for word in value.split("\r\n ") {
            let b64 = word
                .strip_prefix("=?utf-8?b?")
                .and_then(|w| w.strip_suffix("?="))
                .unwrap();
            out.extend(B64.decode(b64).unwrap());
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn addresses_are_what_the_reader_takes_for_one() {
        assert!(is_rsmf_email("alice@example") && is_rsmf_email("bob+x@example.com."));
        for bad in [
            "",
            "a",
            "a b@x.com",
            "bob@exa_mple.com",
            "bob@-bad.com",
            "bob@@x.com",
            "@x.com",
            "bob@[1.2.3.4]",
        ] {
            assert!(!is_rsmf_email(bad), "{bad}");
        }
        assert_eq!(
            addresses(4, ["alice@example", "Eve <ceo@corp.example>"], "x@y.invalid"),
            "alice@example"
        );
        assert_eq!(addresses(4, ["Eve <ceo@corp.example>"], "x@y.invalid"), "x@y.invalid");
    }

    #[test]
    fn header_text_cannot_add_a_header_an_address_or_an_encoding() {
        assert_eq!(header_text("Bob", 9), "Bob");
        assert_eq!(header_text("Zoë", 9), "=?utf-8?b?Wm/Dqw==?=");
        for hostile in [
            "a\r\nX-Evil: 1",
            "Eve <ceo@corp.example>",
            "\"quoted\"; x",
            "=?utf-8?b?QUJD?=",
            " padded ",
            &"long name ".repeat(30),
            &"ü".repeat(100),
        ] {
            let text = header_text(hostile, 26);
            assert!(26 + text.split("\r\n").next().unwrap().len() <= 78, "{text}");
            assert!(text.split("\r\n").all(|l| l.len() <= LINE), "{text}");
            assert!(text.split("\r\n").skip(1).all(|l| l.starts_with(' ')), "{text}");
            assert!(text.split("\r\n ").all(|w| w.len() <= 75), "{text}");
            assert_eq!(decode(&text), hostile);
        }
        assert!(listable("Bob") && !listable("Bob, Jr") && !listable(" Bob") && !listable(""));
    }

    #[test]
    fn a_long_list_is_folded_after_its_commas() {
        let names: Vec<String> = (0..40).map(|i| format!("participant{i}")).collect();
        let list = header_list(21, names.iter().map(String::as_str));
        assert!(21 + list.split("\r\n").next().unwrap().len() <= LINE, "{list}");
        assert!(list.split("\r\n").all(|l| l.len() <= LINE), "{list}");
        let items: Vec<&str> = list.split(',').map(str::trim).collect();
        assert_eq!(items, names);
    }
}
