//! A JSON object read as its entries, in order, each value the raw text it was: how the check and
//! the file line take apart only what they need, and how a key named twice is caught.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Most fields a message, or its `file` object, may have (a WickrIO message has about fifteen): the
/// check keeps their names, which must not cost more memory than the body.
pub(crate) const MAX_FIELDS: usize = 1024;

/// A key, borrowed from the text unless it had escapes.
pub(super) struct Key<'de>(pub(super) Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// An object's entries in order, each value the raw text it was.
pub(super) struct Entries<'a>(pub(super) Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Entries<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<'de>, A::Error> {
                let mut entries = Vec::new();
                while let Some((Key(k), v)) = map.next_entry::<Key, &RawValue>()? {
                    entries.push((k, v));
                }
                Ok(Entries(entries))
            }
        }
        d.deserialize_map(EntriesVisitor)
    }
}

impl<'a> Entries<'a> {
    pub(super) fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
}

/// Whether an object's text (valid JSON) names a key twice, or has more keys than a message may:
/// the problem, if so. A `file` object read two ways (first or last `filename`) would name one file
/// to the bot and another to a reader of the archive.
pub(super) fn duplicate_key(object: &str) -> Option<String> {
    let Ok(entries) = serde_json::from_str::<Entries>(object) else {
        return Some("is not an object".into());
    };
    if entries.0.len() > MAX_FIELDS {
        return Some(format!("has more than {} keys", MAX_FIELDS));
    }
    let mut seen = KeySet::default();
    entries
        .0
        .iter()
        .find(|(k, _)| !seen.insert(Cow::Borrowed(k.as_ref())))
        .map(|(k, _)| format!("key `{k}` appears more than once"))
}

/// Keys this many or fewer are searched in a list: a message has about fifteen, and comparing a
/// few short strings costs less than hashing each. Past it a hash set bounds the work (a line of
/// [`MAX_FIELDS`] keys is a few thousand comparisons per key otherwise).
const LIST_UP_TO: usize = 24;

/// The keys an object has named so far, to catch one named twice.
#[derive(Default)]
pub(super) struct KeySet<'a> {
    few: Vec<Cow<'a, str>>,
    many: Option<HashSet<Cow<'a, str>>>,
}

impl<'a> KeySet<'a> {
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn len(&self) -> usize {
        self.many.as_ref().map_or(self.few.len(), HashSet::len)
    }

    /// Adds `key`; false if the object named it before.
    pub(super) fn insert(&mut self, key: Cow<'a, str>) -> bool {
        if let Some(many) = &mut self.many {
            return many.insert(key);
        }
        if self.few.contains(&key) {
            return false;
        }
        self.few.push(key);
        if self.few.len() > LIST_UP_TO {
            self.many = Some(self.few.drain(..).collect());
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_set_catches_a_repeat_before_and_after_it_turns_into_a_hash_set() {
        for n in [3, LIST_UP_TO + 10] {
            let mut keys = KeySet::default();
            for i in 0..n {
                assert!(keys.insert(Cow::Owned(format!("k{i}"))), "k{i} is new");
            }
            assert_eq!(keys.len(), n);
            assert!(!keys.insert(Cow::Borrowed("k0")), "the first key again, with {n} keys");
            assert!(!keys.insert(Cow::Owned(format!("k{}", n - 1))), "the last key again");
            assert_eq!(keys.len(), n);
        }
    }
}
