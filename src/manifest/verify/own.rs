//! Which versions of a manifest or head record are the bots' own, for the readers that prove the
//! archive (`verify s3://`, the scheduled check, `shred`'s survey). Versions are read oldest first,
//! one at a time, each refused unread above what the bot writes.
//!
//! A manifest's every version that holds an entry the bots signed goes into the chains: a version
//! put over the bot's (a copy of another manifest, a cut) adds only entries the chain already holds,
//! or breaks it, so nothing a bucket writer puts there can hide an entry. The bot's version is the
//! oldest of them (it writes create-only). A head record counts only if it is signed and is the head
//! of the manifest its name says: a copy of another head under this name is not this one's.

use ed25519_dalek::VerifyingKey;

use super::Problem;
use super::chain::Chains;
use super::versions::{Listing, ObjectReader, Version};
use crate::decrypt::{ObjectError, Streamed};
use crate::manifest::Entry;
use crate::manifest::entry::MAX_MANIFEST;
use crate::manifest::head::{HeadRecord, MAX_HEAD_RECORD, manifest_of};
use crate::objects::keys::object_name;

/// One version read, without its text (taken into the chains, or kept apart).
pub struct Read<'l> {
    pub version: &'l Version,
    pub read: Result<Streamed, ObjectError>,
}

/// What a manifest's versions gave.
pub(crate) struct TakenManifest<'l> {
    /// The entries taken, each with the key that signed it.
    pub entries: Vec<(Entry, usize)>,
    /// The bot's version, and its text when asked for.
    pub bots: Option<(&'l Version, Option<Vec<u8>>)>,
    /// Every version read (texts taken out), oldest first.
    pub reads: Vec<Read<'l>>,
}

/// Whether a manifest's text holds an entry one of `keys` signed.
pub(crate) fn has_signed_entry(text: &[u8], keys: &[VerifyingKey]) -> bool {
    text.split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Entry>(line).ok())
        .any(|entry| keys.iter().any(|k| entry.verify(k)))
}

/// Takes every version of manifest `key` that holds a signed entry into `chains` (the current
/// version too, whatever it holds: its bad lines are problems); versions no bot signed and no reader
/// sees (hidden, or under the bot's) are left aside. Problems go to `problems`; the bot's version's
/// text is kept with `keep_text`.
pub(crate) async fn take_manifest<'l>(
    reader: &ObjectReader,
    listing: &'l Listing,
    key: &str,
    chains: &mut Chains<'_>,
    problems: &mut Vec<Problem>,
    keep_text: bool,
) -> TakenManifest<'l> {
    let at = reader.location(key);
    let mut taken = TakenManifest {
        entries: Vec::new(),
        bots: None,
        reads: Vec::new(),
    };
    for version in listing.data_versions(key) {
        let mut read = reader.read_whole(key, version, MAX_MANIFEST).await;
        if let Ok(streamed) = &mut read {
            let text = streamed.text.take().unwrap_or_default();
            let signed = has_signed_entry(&text, chains.keys());
            if signed || listing.current(key) == Some(version) {
                taken.entries.extend(chains.take_all(&at, &text, problems));
            }
            if signed && taken.bots.is_none() {
                taken.bots = Some((version, keep_text.then_some(text)));
            }
        }
        taken.reads.push(Read { version, read });
    }
    taken
}

/// The texts of a head record's versions that count (signed by one of `keys`, and the head of the
/// manifest its name says), oldest first, with each version read.
pub(crate) async fn head_versions<'l>(
    reader: &ObjectReader,
    listing: &'l Listing,
    key: &str,
    keys: &[VerifyingKey],
) -> (Vec<(&'l Version, String)>, Vec<Read<'l>>) {
    let mut valid = Vec::new();
    let mut reads = Vec::new();
    for version in listing.data_versions(key) {
        let mut read = reader.read_whole(key, version, MAX_HEAD_RECORD).await;
        if let Ok(streamed) = &mut read {
            let text = String::from_utf8_lossy(&streamed.text.take().unwrap_or_default()).into_owned();
            if head_of(key, &text, keys).is_some() {
                valid.push((version, text));
            }
        }
        reads.push(Read { version, read });
    }
    (valid, reads)
}

/// The signed head record `text` is, if one of `keys` signed it and it is the head of the manifest
/// the record's name `key` says.
pub(crate) fn head_of(key: &str, text: &str, keys: &[VerifyingKey]) -> Option<HeadRecord> {
    let record: HeadRecord = serde_json::from_str(text.trim()).ok()?;
    (record.body.manifest == manifest_of(object_name(key)) && keys.iter().any(|k| record.verify(k))).then_some(record)
}

/// A key with more data versions than are read: someone piled versions on it.
pub(crate) fn piled(listing: &Listing, key: &str, at: &str) -> Option<Problem> {
    let dropped = listing.dropped(key);
    (dropped > 0).then(|| Problem::Unreadable {
        at: at.to_owned(),
        why: format!(
            "{dropped} more versions than the {} oldest read: the bot writes one (planted?); the oldest, the bot's, were checked",
            super::versions::VERSIONS_READ
        ),
    })
}
