//! A bucket as its versions and delete markers: what a bucket writer cannot erase once versioning is
//! on. A plain `DeleteObject` (allowed even on an object under COMPLIANCE retention) only puts a
//! delete marker over the object, and a `PutObject` over it only adds a newer version: the bot's own
//! version stays, and the readers that prove the archive look at it, naming whatever stands over it.
//! The bot writes create-only, so its version of a key is the oldest there: readers take versions
//! oldest first, and a pile of versions put over it cannot push it out of view.
//!
//! An unversioned bucket is listed as it is, with that said in the report: there a deletion leaves
//! no trace in the bucket, and only a chain head kept elsewhere shows a cut-off end. A store that
//! does not list versions at all (`NotImplemented`) is listed as it is too, and said so; any other
//! failure to list versions (a denied `s3:ListBucketVersions`, say) is an error, never a quiet
//! fallback to what a delete marker can hide.

use std::collections::BTreeMap;

use aws_sdk_s3::types::BucketVersioningStatus;

use crate::aws::{AwsFailure, failure};
use crate::decrypt::{Archive, ObjectError, Opened, Streamed, stream_keeping};
use crate::envelope::gcm::TAG_LEN;

/// Data versions of one key kept (and read) at most, the oldest: the bot writes one per key (a
/// shredding record a few), so a pile of versions over an object costs its readers little.
pub(crate) const VERSIONS_READ: usize = 16;

/// Whether the bucket keeps versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Versioning {
    Enabled,
    /// Versions written while it was on are kept; new writes replace.
    Suspended,
    /// Never enabled: a deletion or replacement leaves nothing behind.
    Off,
    /// The store does not list versions (`NotImplemented`).
    Unknown,
}

impl Versioning {
    /// What the report says about a bucket whose deletions cannot be seen in it, if so.
    pub fn note(self) -> Option<&'static str> {
        match self {
            Versioning::Enabled => None,
            Versioning::Suspended => Some(
                "versioning is SUSPENDED on this bucket: objects written since are replaced or deleted without a trace; enable it again",
            ),
            Versioning::Off => Some(
                "this bucket keeps no versions: an object deleted or replaced leaves no trace in the bucket itself, so a cut-off end shows only against a chain head kept elsewhere (verify --head, the bot's chain-head events, the daemon's own check); enable versioning (and Object Lock) to make deletions visible",
            ),
            Versioning::Unknown => Some(
                "this store does not list versions: an object deleted or replaced leaves no trace a reader can see, so a cut-off end shows only against a chain head kept elsewhere (verify --head, the bot's chain-head events, the daemon's own check)",
            ),
        }
    }
}

/// One version of an object, or a delete marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// `None` on an unversioned bucket (the object as it is).
    pub id: Option<String>,
    pub size: u64,
    pub marker: bool,
    /// When it was written (seconds since the epoch; 0 when the store did not say).
    pub modified: i64,
}

impl Version {
    /// The version id as a report names it.
    pub fn label(&self) -> &str {
        self.id.as_deref().unwrap_or("null")
    }

    /// The object as it is (on an unversioned bucket, or its current version).
    pub fn current(size: u64) -> Self {
        Version {
            id: None,
            size,
            marker: false,
            modified: 0,
        }
    }
}

/// One key's versions, as far as the readers need them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyVersions {
    /// What readers see: the newest version, or the delete marker over them.
    pub newest: Version,
    /// The versions holding data, oldest first, at most [`VERSIONS_READ`].
    pub data: Vec<Version>,
    /// Data versions beyond those kept: only a writer piling versions on a key makes any.
    pub dropped: usize,
}

/// Every key under the prefix that holds data in some version.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub versioning: Option<Versioning>,
    pub keys: BTreeMap<String, KeyVersions>,
}

/// One key's versions as a listing arrives, in any order.
#[derive(Default)]
struct Gathering {
    /// The newest seen: (latest as S3 says, when, version).
    newest: Option<((bool, When), Version)>,
    /// Data versions seen, with when: the oldest kept.
    data: Vec<(When, Version)>,
    dropped: usize,
}

/// When a version was written, as far as a listing tells: its time (to the second on AWS), then,
/// for two in one second, the place in the listing, which gives a key's versions newest first.
type When = (i64, u32, std::cmp::Reverse<u64>);

impl Gathering {
    fn add(&mut self, latest: bool, time: When, version: Version) {
        let rank = (latest, time);
        if self.newest.as_ref().is_none_or(|(r, _)| rank > *r) {
            self.newest = Some((rank, version.clone()));
        }
        if version.marker {
            return;
        }
        self.data.push((time, version));
        if self.data.len() > VERSIONS_READ {
            // Keep the oldest: the bot's version is the first at its key.
            self.data.sort_by_key(|(t, _)| *t);
            self.data.pop();
            self.dropped += 1;
        }
    }

    fn finish(mut self) -> Option<KeyVersions> {
        if self.data.is_empty() {
            // Delete markers over nothing: nothing the archive holds.
            return None;
        }
        self.data.sort_by_key(|(t, _)| *t);
        let mut newest = self.newest?.1;
        let mut data: Vec<Version> = self.data.into_iter().map(|(_, v)| v).collect();
        // The "null" version of an unversioned object, current: read as the object itself (not
        // every store takes `versionId=null`).
        if newest.id.as_deref() == Some("null") && !newest.marker {
            for v in data.iter_mut().filter(|v| **v == newest) {
                v.id = None;
            }
            newest.id = None;
        }
        Some(KeyVersions {
            newest,
            data,
            dropped: self.dropped,
        })
    }
}

impl Listing {
    /// Lists the archive: every version and delete marker (AWS lists versions on any bucket), or
    /// the objects as they are on a store that does not list versions.
    pub async fn read(archive: &Archive, s3: &aws_sdk_s3::Client) -> Result<Listing, AwsFailure> {
        let said = versioning(archive, s3).await;
        let mut listing = Listing::default();
        match listing.read_versions(s3, &archive.bucket, &archive.prefix, false).await {
            Ok(()) => {
                // A store that would not say (or said it oddly) but keeps versions does keep them.
                let kept = listing.keys.values().any(|k| k.data.iter().any(|v| v.id.is_some()));
                listing.versioning = Some(match said {
                    Some(v) => v,
                    None if kept => Versioning::Enabled,
                    None => Versioning::Off,
                });
            }
            Err(e) if e.is("NotImplemented") && !matches!(said, Some(Versioning::Enabled | Versioning::Suspended)) => {
                listing.keys.clear();
                listing.versioning = Some(Versioning::Unknown);
                for (key, size) in archive.list(s3).await? {
                    listing.keys.insert(
                        key,
                        KeyVersions {
                            newest: Version::current(size),
                            data: vec![Version::current(size)],
                            dropped: 0,
                        },
                    );
                }
            }
            Err(e) => return Err(e),
        }
        Ok(listing)
    }

    /// The versions of one key.
    pub(crate) async fn of_key(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Listing, AwsFailure> {
        let mut listing = Listing::default();
        listing.read_versions(s3, bucket, key, true).await?;
        Ok(listing)
    }

    /// Every version and delete marker under `prefix` (of the one key `prefix` when `exact`).
    async fn read_versions(
        &mut self,
        s3: &aws_sdk_s3::Client,
        bucket: &str,
        prefix: &str,
        exact: bool,
    ) -> Result<(), AwsFailure> {
        let mut gathering: BTreeMap<String, Gathering> = BTreeMap::new();
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        let time = |t: Option<&aws_sdk_s3::primitives::DateTime>| t.map_or((0, 0), |t| (t.secs(), t.subsec_nanos()));
        let mut listed = 0u64;
        loop {
            let page = s3
                .list_object_versions()
                .bucket(bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| failure(&format!("list the versions in s3://{bucket}/{prefix}"), e))?;
            let versions = page.versions().iter().map(|v| {
                let t = time(v.last_modified());
                let version = Version {
                    id: v.version_id().map(str::to_owned),
                    size: v.size().unwrap_or(0).max(0) as u64,
                    marker: false,
                    modified: t.0,
                };
                (v.key(), v.is_latest() == Some(true), t, version)
            });
            let markers = page.delete_markers().iter().map(|m| {
                let t = time(m.last_modified());
                let version = Version {
                    id: m.version_id().map(str::to_owned),
                    size: 0,
                    marker: true,
                    modified: t.0,
                };
                (m.key(), m.is_latest() == Some(true), t, version)
            });
            for (key, latest, (secs, nanos), version) in versions.chain(markers) {
                listed += 1;
                let Some(key) = key.filter(|k| !exact || *k == prefix) else {
                    continue;
                };
                let when = (secs, nanos, std::cmp::Reverse(listed));
                gathering.entry(key.to_owned()).or_default().add(latest, when, version);
            }
            let more = page.is_truncated() == Some(true) && page.next_key_marker().is_some();
            key_marker = page.next_key_marker().map(str::to_owned);
            version_marker = page.next_version_id_marker().map(str::to_owned);
            // Keys before the next page's first are complete: kept in their short form.
            let done: Vec<String> = match (&key_marker, more) {
                (Some(next), true) => gathering.range(..next.clone()).map(|(k, _)| k.clone()).collect(),
                _ => gathering.keys().cloned().collect(),
            };
            for key in done {
                if let Some(versions) = gathering.remove(&key).and_then(Gathering::finish) {
                    self.keys.insert(key, versions);
                }
            }
            if !more {
                return Ok(());
            }
        }
    }

    /// The version readers see (the newest), unless it is a delete marker.
    pub fn current(&self, key: &str) -> Option<&Version> {
        Some(&self.keys.get(key)?.newest).filter(|v| !v.marker)
    }

    /// The objects a plain listing shows: key and stored size of the current version.
    pub fn present(&self) -> Vec<(String, u64)> {
        self.keys
            .iter()
            .filter(|(_, k)| !k.newest.marker)
            .map(|(key, k)| (key.clone(), k.newest.size))
            .collect()
    }

    /// Every key that holds data in some version (current or not).
    pub(crate) fn with_data(&self) -> impl Iterator<Item = &String> {
        self.keys.keys()
    }

    /// The versions of `key` holding data, oldest first (the bot's is the oldest).
    pub(crate) fn data_versions(&self, key: &str) -> impl DoubleEndedIterator<Item = &Version> {
        self.keys.get(key).into_iter().flat_map(|k| k.data.iter())
    }

    /// How many data versions of `key` were beyond what is read.
    pub fn dropped(&self, key: &str) -> usize {
        self.keys.get(key).map_or(0, |k| k.dropped)
    }

    /// A listing of objects as they are (no versions), for a reader that took its own listing.
    pub fn unversioned(objects: &[(String, u64)]) -> Listing {
        let mut listing = Listing::default();
        for (key, size) in objects {
            listing.keys.insert(
                key.clone(),
                KeyVersions {
                    newest: Version::current(*size),
                    data: vec![Version::current(*size)],
                    dropped: 0,
                },
            );
        }
        listing
    }
}

/// What stands over a version that is not the current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Over {
    /// A delete marker (its version id).
    Marker(String),
    /// A newer version with other content (its version id).
    Newer(String),
}

impl Listing {
    /// What stands over `version` of `key`, if it is not the current one.
    pub fn over(&self, key: &str, version: &Version) -> Option<Over> {
        let newest = &self.keys.get(key)?.newest;
        if newest == version {
            return None;
        }
        let id = newest.label().to_owned();
        Some(if newest.marker {
            Over::Marker(id)
        } else {
            Over::Newer(id)
        })
    }
}

/// Reads versions of one bucket's objects, decrypting in memory.
#[derive(Clone)]
pub(crate) struct ObjectReader {
    pub s3: aws_sdk_s3::Client,
    pub kms: aws_sdk_kms::Client,
    pub bucket: String,
}

impl ObjectReader {
    /// One version (or the object as it is) read through: its length, SHA-256 and, up to `keep`
    /// bytes, its plaintext (a larger one is refused before it is read).
    pub async fn stream(&self, key: &str, version: &Version, keep: Option<u64>) -> Result<Streamed, ObjectError> {
        stream_keeping(&self.s3, &self.kms, &self.bucket, key, version.id.as_deref(), keep).await
    }

    /// One version read whole, refused unread above `cap` (the most the bot writes in such an
    /// object).
    pub(crate) async fn read_whole(&self, key: &str, version: &Version, cap: u64) -> Result<Streamed, ObjectError> {
        if version.size > cap + TAG_LEN as u64 {
            return Err(ObjectError::TooLarge {
                size: version.size,
                limit: cap,
            });
        }
        self.stream(key, version, Some(cap)).await
    }

    /// One version opened for reading chunk by chunk.
    pub async fn open(&self, key: &str, version: &Version) -> Result<Opened, ObjectError> {
        Opened::open(&self.s3, &self.kms, &self.bucket, key, version.id.as_deref()).await
    }

    /// `s3://bucket/key`, as reports name an object.
    pub fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }
}

/// What the bucket says of its versioning; `None` when it would not say (or said it in a shape the
/// SDK does not take: moto names its answer's root element otherwise than AWS).
async fn versioning(archive: &Archive, s3: &aws_sdk_s3::Client) -> Option<Versioning> {
    match s3.get_bucket_versioning().bucket(&archive.bucket).send().await {
        Ok(out) => Some(match out.status() {
            Some(BucketVersioningStatus::Enabled) => Versioning::Enabled,
            Some(BucketVersioningStatus::Suspended) => Versioning::Suspended,
            _ => Versioning::Off,
        }),
        Err(e) => {
            tracing::debug!(error = %crate::error_chain::Chain(&failure("read the bucket's versioning", e)), "versioning unknown");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(id: &str, marker: bool, modified: i64) -> Version {
        Version {
            id: Some(id.into()),
            size: 3,
            marker,
            modified,
        }
    }

    fn gathered(versions: &[(bool, Version)]) -> Option<KeyVersions> {
        let mut g = Gathering::default();
        for (listed, (latest, version)) in versions.iter().enumerate() {
            g.add(
                *latest,
                (version.modified, 0, std::cmp::Reverse(listed as u64)),
                version.clone(),
            );
        }
        g.finish()
    }

    #[test]
    fn the_current_version_is_the_newest_unless_a_marker_hides_it_and_data_reads_oldest_first() {
        let mut listing = Listing::default();
        let a = gathered(&[(false, v("1", false, 1)), (true, v("m", true, 2))]).unwrap();
        let b = gathered(&[(true, v("2", false, 2)), (false, v("1", false, 1))]).unwrap();
        assert!(gathered(&[(true, v("m", true, 2))]).is_none(), "markers over nothing");
        listing.keys.insert("a".into(), a);
        listing.keys.insert("b".into(), b);
        assert_eq!(listing.current("a"), None);
        assert_eq!(listing.current("b"), Some(&v("2", false, 2)));
        assert_eq!(listing.present(), vec![("b".to_owned(), 3)]);
        assert_eq!(listing.with_data().collect::<Vec<_>>(), ["a", "b"]);
        let ids: Vec<&str> = listing.data_versions("b").map(Version::label).collect();
        assert_eq!(ids, ["1", "2"]);
        assert_eq!(listing.over("a", &v("1", false, 1)), Some(Over::Marker("m".into())));
        assert_eq!(listing.over("b", &v("1", false, 1)), Some(Over::Newer("2".into())));
        assert_eq!(listing.over("b", &v("2", false, 2)), None);
        assert!(Versioning::Off.note().is_some() && Versioning::Enabled.note().is_none());
    }

    #[test]
    fn a_pile_of_versions_over_the_bots_cannot_push_it_out_and_is_counted() {
        let mut versions = vec![(false, v("bot", false, 100))];
        for i in 0..1000 {
            versions.push((false, v(&format!("p{i}"), i % 2 == 0, 200 + i)));
        }
        versions.push((true, v("top", true, 5000)));
        let k = gathered(&versions).unwrap();
        assert_eq!(k.data.len(), VERSIONS_READ);
        assert_eq!(k.data[0].label(), "bot");
        assert_eq!(k.dropped, 500 - (VERSIONS_READ - 1));
        assert_eq!(k.newest.label(), "top");
    }

    /// AWS lists times to the second: a record scheduled and cancelled in one second must still
    /// read as cancelled. A key's versions are listed newest first.
    #[test]
    fn versions_of_one_second_are_ordered_as_listed() {
        let k = gathered(&[(true, v("cancelled", false, 7)), (false, v("scheduled", false, 7))]).unwrap();
        let ids: Vec<&str> = k.data.iter().map(Version::label).collect();
        assert_eq!(ids, ["scheduled", "cancelled"]);
    }
}
