//! How a file's name becomes its object's last key segment, and back: the tools that read the archive
//! (`verify s3://`, `legal-hold`) find a manifest entry's object by the same rule the sink names it.
//!
//! Attachment names are a producer's and may repeat (the same name in the same millisecond on two
//! hosts of one bot, or after the clock stepped back), so their keys also carry the bot's tag and the
//! start of the file's SHA-256: `attachment_<time>_<name>` becomes
//! `attachment_<time>_<bot tag>-<16 hex digits>_<name>`. Different files never share a key, and an
//! upload of the same file again lands on the same key. Every other file keeps its name.

use std::collections::HashMap;

/// Hex digits of a file's SHA-256 in its attachment key.
const KEY_HASH_DIGITS: usize = 16;
const ATTACHMENT_PREFIX: &str = "attachment_";

/// The object name of an attachment file named `name` (`attachment_...`) with content `sha256`.
pub(crate) fn attachment_object_name(name: &str, bot_tag: &str, sha256: &str) -> String {
    let rest = name.strip_prefix(ATTACHMENT_PREFIX).unwrap_or(name);
    let hash: String = sha256.chars().take(KEY_HASH_DIGITS).collect();
    let unique = format!("{bot_tag}-{hash}");
    match rest.split_once('_') {
        Some((time, original)) => format!("{ATTACHMENT_PREFIX}{time}_{unique}_{original}"),
        None => format!("{ATTACHMENT_PREFIX}{unique}_{rest}"),
    }
}

/// The key's last segment: the object's name under its folder.
pub(crate) fn object_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// The objects under a folder, by the file name each stands for, to find a manifest entry's object
/// at once however many objects there are.
#[derive(Debug, Default)]
pub(crate) struct ListedObjects {
    by_file: HashMap<String, Vec<String>>,
}

impl ListedObjects {
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a String>) -> Self {
        let mut by_file: HashMap<String, Vec<String>> = HashMap::new();
        for key in keys {
            let name = object_name(key);
            let file = listed_name(name).unwrap_or_else(|| name.to_owned());
            by_file.entry(file).or_default().push(key.clone());
        }
        Self { by_file }
    }

    /// The object of the file an entry lists (`name`, `sha256`) as the bot with `bot_tag` uploaded
    /// it: an attachment under its name with the start of `sha256` and that tag (another bot's copy
    /// of the same file is not this one's); anything else, or an attachment an older version uploaded
    /// untagged, under its own name.
    pub fn find(&self, name: &str, sha256: &str, bot_tag: Option<&str>) -> Option<&String> {
        self.tagged(name, sha256)
            .find(|(tag, _)| bot_tag.is_none_or(|want| *tag == want))
            .map(|(_, key)| key)
            .or_else(|| self.untagged(name))
    }

    /// Every object that may be the file an entry lists, whichever bot uploaded it (legal holds take
    /// them all).
    pub(crate) fn find_all(&self, name: &str, sha256: &str) -> Vec<&String> {
        let tagged: Vec<&String> = self.tagged(name, sha256).map(|(_, key)| key).collect();
        if tagged.is_empty() {
            self.untagged(name).into_iter().collect()
        } else {
            tagged
        }
    }

    /// Attachment objects of the file: (their bot tag, key), those whose hash matches.
    fn tagged<'s>(&'s self, name: &str, sha256: &str) -> impl Iterator<Item = (&'s str, &'s String)> {
        let hash = sha256.get(..KEY_HASH_DIGITS);
        self.by_file.get(name).into_iter().flatten().filter_map(move |key| {
            let (tag, h) = attachment_unique(object_name(key))?;
            (Some(h) == hash).then_some((tag, key))
        })
    }

    fn untagged(&self, name: &str) -> Option<&String> {
        self.by_file.get(name)?.iter().find(|k| object_name(k) == name)
    }
}

/// An attachment object name's `<bot tag>` and `<hash>`.
fn attachment_unique(object: &str) -> Option<(&str, &str)> {
    let (_time, rest) = object.strip_prefix(ATTACHMENT_PREFIX)?.split_once('_')?;
    let (unique, _original) = rest.split_once('_')?;
    let (tag, hash) = unique.split_once('-')?;
    (hash.len() == KEY_HASH_DIGITS && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some((tag, hash))
}

/// The file name an object name stands for: an attachment's without the bot's tag and hash
/// (`None` for anything else).
pub(crate) fn listed_name(object: &str) -> Option<String> {
    attachment_unique(object)?;
    let (time, rest) = object.strip_prefix(ATTACHMENT_PREFIX)?.split_once('_')?;
    let (_unique, original) = rest.split_once('_')?;
    Some(format!("{ATTACHMENT_PREFIX}{time}_{original}"))
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
            "f/attachment_20261125_99999999-0123456789abcdef_report.pdf".to_owned(),
        ];
        let objects = ListedObjects::new(&keys);
        let entry = "attachment_20261125_report.pdf";
        assert_eq!(objects.find(entry, sha, Some("ab12cd34")), Some(&keys[1]));
        assert_eq!(
            objects.find(entry, sha, Some("99999999")),
            Some(&keys[3]),
            "the other bot's copy"
        );
        assert_eq!(
            objects.find(entry, sha, Some("00000000")),
            None,
            "a third bot's is missing"
        );
        assert_eq!(objects.find("receivedMessages_1_x.txt", "", None), Some(&keys[0]));
        assert_eq!(objects.find("attachment_20261125_other.pdf", sha, None), None);
        assert_eq!(
            objects.find_all(entry, sha),
            vec![&keys[1], &keys[3]],
            "both bots' copies"
        );
        // An untagged object under the entry's own name (an older upload, or a planted one) does not
        // shadow the tagged one; it is taken only where nothing tagged matches.
        let mut shadowed = keys.clone();
        shadowed.insert(0, format!("f/{entry}"));
        let objects = ListedObjects::new(&shadowed);
        assert_eq!(objects.find(entry, sha, Some("ab12cd34")), Some(&shadowed[2]));
        assert_eq!(objects.find(entry, &"9".repeat(64), None), Some(&shadowed[0]));
        assert_eq!(object_name("a/b/c.txt"), "c.txt");
        assert_eq!(listed_name(&name).as_deref(), Some("attachment_20261125_report.pdf"));
        assert_eq!(listed_name("receivedMessages_1_x.txt"), None);
    }
}
