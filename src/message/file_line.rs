//! A file message's line: the producer's text with `file.localfilename` set to where the bot saved
//! the attachment, as the original does. Only the top level and the `file` object are taken apart
//! (into raw slices of the text, in their order); every other value is copied as received.

use super::check::compact_json;
use serde_json::value::RawValue;

use super::entries::Entries;

/// The `file.filename` a checked file message names, if it is a string.
pub fn file_name(text: &[u8]) -> Option<String> {
    let top: Entries = serde_json::from_slice(text).ok()?;
    let file: Entries = serde_json::from_str(top.get("file")?.get()).ok()?;
    serde_json::from_str(file.get("filename")?.get()).ok()
}

/// The line of a checked file message `text` with `file.localfilename` set to `local` (replacing
/// one the producer sent, in its place; else last in `file`), compact and ending in a newline.
pub fn with_local_filename(text: &[u8], local: &str) -> Result<Vec<u8>, serde_json::Error> {
    let top: Entries = serde_json::from_slice(text)?;
    let mut out = Vec::with_capacity(text.len() + local.len() + 32);
    write_object(&top, &mut out, |name, value, out| {
        if name != "file" {
            return Ok(false);
        }
        let file: Entries = serde_json::from_str(value.get())?;
        let mut replaced = false;
        write_object(&file, out, |name, _, out| {
            if name != "localfilename" {
                return Ok(false);
            }
            replaced = true;
            serde_json::to_writer(&mut *out, local)?;
            Ok(true)
        })?;
        if !replaced {
            out.pop(); // the closing brace
            if !file.0.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(b"\"localfilename\":");
            serde_json::to_writer(&mut *out, local)?;
            out.push(b'}');
        }
        Ok(true)
    })?;
    out.push(b'\n');
    Ok(out)
}

/// Writes `entries` as a compact object; `special` may write a value itself (returning true).
fn write_object(
    entries: &Entries,
    out: &mut Vec<u8>,
    mut special: impl FnMut(&str, &RawValue, &mut Vec<u8>) -> Result<bool, serde_json::Error>,
) -> Result<(), serde_json::Error> {
    out.push(b'{');
    for (i, (name, value)) in entries.0.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, name.as_ref())?;
        out.push(b':');
        if !special(name, value, out)? {
            compact_json(value.get().as_bytes(), out);
        }
    }
    out.push(b'}');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_the_local_file_name_and_keeps_the_rest_as_received() {
        let text = br#"{ "msgtype": 6000, "message_id": "m", "msg_ts": "1", "sender": "a",
            "file": { "filename": "r\u00e9sum\u00e9.pdf", "guid": "g", "size": 1.50 }, "n": 12345678901234567890123 }"#;
        assert_eq!(file_name(text).as_deref(), Some("résumé.pdf"));
        let line = with_local_filename(text, "/d/attachment_1_résumé.pdf").unwrap();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"msgtype\":6000,\"message_id\":\"m\",\"msg_ts\":\"1\",\"sender\":\"a\",\"file\":{\"filename\":\"r\\u00e9sum\\u00e9.pdf\",\"guid\":\"g\",\"size\":1.50,\"localfilename\":\"/d/attachment_1_résumé.pdf\"},\"n\":12345678901234567890123}\n"
        );
    }

    #[test]
    fn a_producers_local_file_name_is_replaced_in_place() {
        let text = br#"{"msgtype":6000,"file":{"localfilename":"/etc/passwd","filename":"x"}}"#;
        let line = String::from_utf8(with_local_filename(text, "/d/a").unwrap()).unwrap();
        assert_eq!(
            line,
            "{\"msgtype\":6000,\"file\":{\"localfilename\":\"/d/a\",\"filename\":\"x\"}}\n"
        );
        let empty = String::from_utf8(with_local_filename(br#"{"file":{}}"#, "/d/a").unwrap()).unwrap();
        assert_eq!(empty, "{\"file\":{\"localfilename\":\"/d/a\"}}\n");
    }
}
