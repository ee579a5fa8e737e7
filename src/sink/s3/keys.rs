//! How a file's name becomes its object's last key segment, and back: the tools that read the archive
//! (`verify s3://`, `legal-hold`) find a manifest entry's object by the same rule the sink names it.
//!
//! Attachment names are a producer's and may repeat (the same name in the same millisecond on two
//! hosts of one bot, or after the clock stepped back), so their keys also carry the bot's tag and the
//! start of the file's SHA-256: `attachment_<time>_<name>` becomes
//! `attachment_<time>_<bot tag>-<16 hex digits>_<name>`. Different files never share a key, and an
//! upload of the same file again lands on the same key. Every other file keeps its name.

/// Hex digits of a file's SHA-256 in its attachment key.
const KEY_HASH_DIGITS: usize = 16;
const ATTACHMENT_PREFIX: &str = "attachment_";

/// The object name of an attachment file named `name` (`attachment_...`) with content `sha256`.
pub fn attachment_object_name(name: &str, bot_tag: &str, sha256: &str) -> String {
    let rest = name.strip_prefix(ATTACHMENT_PREFIX).unwrap_or(name);
    let hash: String = sha256.chars().take(KEY_HASH_DIGITS).collect();
    let unique = format!("{bot_tag}-{hash}");
    match rest.split_once('_') {
        Some((time, original)) => format!("{ATTACHMENT_PREFIX}{time}_{unique}_{original}"),
        None => format!("{ATTACHMENT_PREFIX}{unique}_{rest}"),
    }
}

/// The key's last segment: the object's name under its folder.
pub fn object_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// Among `keys`, the object of the file a manifest entry lists (`name`, `sha256`), whichever bot
/// uploaded it.
pub fn find_listed<'a>(name: &str, sha256: &str, keys: &'a [String]) -> Option<&'a String> {
    if let Some(key) = keys.iter().find(|k| object_name(k) == name) {
        return Some(key);
    }
    let (time, original) = name.strip_prefix(ATTACHMENT_PREFIX)?.split_once('_')?;
    let hash = sha256.get(..KEY_HASH_DIGITS)?;
    let start = format!("{ATTACHMENT_PREFIX}{time}_");
    let tag_end = format!("-{hash}");
    keys.iter().find(|k| {
        object_name(k)
            .strip_prefix(&start)
            .and_then(|rest| rest.split_once('_'))
            .is_some_and(|(tag, rest)| tag.ends_with(&tag_end) && rest == original)
    })
}

/// The file name an object name stands for: an attachment's without the bot's tag and hash
/// (`None` for anything else).
pub fn listed_name(object: &str) -> Option<String> {
    let (time, rest) = object.strip_prefix(ATTACHMENT_PREFIX)?.split_once('_')?;
    let (unique, original) = rest.split_once('_')?;
    let (_tag, hash) = unique.split_once('-')?;
    (hash.len() == KEY_HASH_DIGITS && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("{ATTACHMENT_PREFIX}{time}_{original}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attachment_entry_finds_the_object_its_name_became() {
        let sha = "0123456789abcdef0123";
        let name = attachment_object_name("attachment_20261125_report.pdf", "ab12cd34", sha);
        assert_eq!(name, "attachment_20261125_ab12cd34-0123456789abcdef_report.pdf");
        let keys = vec![
            "f/receivedMessages_1_x.txt".to_owned(),
            format!("f/{name}"),
            "f/attachment_20261125_ab12cd34-ffffffffffffffff_report.pdf".to_owned(),
        ];
        assert_eq!(
            find_listed("attachment_20261125_report.pdf", sha, &keys),
            Some(&keys[1])
        );
        assert_eq!(find_listed("receivedMessages_1_x.txt", "", &keys), Some(&keys[0]));
        assert_eq!(find_listed("attachment_20261125_other.pdf", sha, &keys), None);
        assert_eq!(object_name("a/b/c.txt"), "c.txt");
        assert_eq!(listed_name(&name).as_deref(), Some("attachment_20261125_report.pdf"));
        assert_eq!(listed_name("receivedMessages_1_x.txt"), None);
    }
}
