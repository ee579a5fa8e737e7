//! A bucket as its versions and delete markers: what a bucket writer cannot erase once versioning is
//! on. A plain `DeleteObject` (allowed even on an object under COMPLIANCE retention) only puts a
//! delete marker over the object, and a `PutObject` over it only adds a newer version: the bot's own
//! version stays, and the readers that prove the archive look at it, naming whatever stands over it.
//! An unversioned bucket is listed as it is, with that said in the report: there a deletion leaves
//! no trace in the bucket, and only a chain head kept elsewhere shows a cut-off end.

use std::collections::BTreeMap;

use aws_sdk_s3::types::BucketVersioningStatus;

use crate::aws::{AwsFailure, failure};
use crate::decrypt::{Archive, ObjectError, Opened, Streamed, stream_keeping};
use crate::envelope::gcm::TAG_LEN;

/// Versions of one object read at most: a planted pile of versions costs little.
pub const VERSIONS_READ: usize = 16;

/// Whether the bucket keeps versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Versioning {
    Enabled,
    /// Versions written while it was on are kept; new writes replace.
    Suspended,
    /// Never enabled: a deletion or replacement leaves nothing behind.
    Off,
    /// The store would not say (an S3-compatible store without `GetBucketVersioning`).
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
            Versioning::Off | Versioning::Unknown => Some(
                "this bucket keeps no versions: an object deleted or replaced leaves no trace in the bucket itself, so a cut-off end shows only against a chain head kept elsewhere (verify --head, the bot's chain-head events, the daemon's own check); enable versioning (and Object Lock) to make deletions visible",
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
}

impl Version {
    /// The version id as a report names it.
    pub fn label(&self) -> &str {
        self.id.as_deref().unwrap_or("null")
    }
}

/// Every key under the prefix with its versions, newest first.
#[derive(Debug, Default)]
pub struct Listing {
    pub versioning: Option<Versioning>,
    pub keys: BTreeMap<String, Vec<Version>>,
}

impl Listing {
    /// Lists the archive: every version and delete marker when the store lists versions (AWS does,
    /// on any bucket), else its objects as they are.
    pub async fn read(archive: &Archive, s3: &aws_sdk_s3::Client) -> Result<Listing, AwsFailure> {
        let said = versioning(archive, s3).await;
        let mut listing = Listing::default();
        match listing.read_versions(archive, s3).await {
            Ok(()) => {
                // A store that would not say (or said it oddly) but keeps versions does keep them.
                let kept = listing.keys.values().flatten().any(|v| v.id.is_some());
                listing.versioning = Some(match said {
                    Some(v) => v,
                    None if kept => Versioning::Enabled,
                    None => Versioning::Off,
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "the store does not list versions; listing the objects as they are");
                listing.keys.clear();
                listing.versioning = Some(Versioning::Unknown);
                for (key, size) in archive.list(s3).await? {
                    listing.keys.entry(key).or_default().push(Version {
                        id: None,
                        size,
                        marker: false,
                    });
                }
            }
        }
        Ok(listing)
    }

    async fn read_versions(&mut self, archive: &Archive, s3: &aws_sdk_s3::Client) -> Result<(), AwsFailure> {
        // Per key, each version with its time: a page lists versions and markers apart.
        let mut found: BTreeMap<String, Vec<(i64, u32, bool, Version)>> = BTreeMap::new();
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        loop {
            let page = s3
                .list_object_versions()
                .bucket(&archive.bucket)
                .prefix(&archive.prefix)
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| {
                    failure(
                        &format!("list the versions in s3://{}/{}", archive.bucket, archive.prefix),
                        &e,
                    )
                })?;
            let time =
                |t: Option<&aws_sdk_s3::primitives::DateTime>| t.map_or((0, 0), |t| (t.secs(), t.subsec_nanos()));
            for v in page.versions() {
                let Some(key) = v.key() else { continue };
                let (secs, nanos) = time(v.last_modified());
                let version = Version {
                    id: v.version_id().map(str::to_owned),
                    size: v.size().unwrap_or(0).max(0) as u64,
                    marker: false,
                };
                found
                    .entry(key.to_owned())
                    .or_default()
                    .push((secs, nanos, v.is_latest() == Some(true), version));
            }
            for m in page.delete_markers() {
                let Some(key) = m.key() else { continue };
                let (secs, nanos) = time(m.last_modified());
                let version = Version {
                    id: m.version_id().map(str::to_owned),
                    size: 0,
                    marker: true,
                };
                found
                    .entry(key.to_owned())
                    .or_default()
                    .push((secs, nanos, m.is_latest() == Some(true), version));
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            version_marker = page.next_version_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                break;
            }
        }
        for (key, mut versions) in found {
            // Newest first: the latest as S3 says, then by time (S3 lists a key's versions newest
            // first; markers come apart, so the order is rebuilt).
            versions.sort_by_key(|v| std::cmp::Reverse((v.2, v.0, v.1)));
            let mut versions: Vec<Version> = versions.into_iter().map(|(.., v)| v).collect();
            // The "null" version of an unversioned object, current: read as the object itself
            // (not every store takes `versionId=null`).
            if let Some(newest) = versions.first_mut().filter(|v| v.id.as_deref() == Some("null")) {
                newest.id = None;
            }
            self.keys.insert(key, versions);
        }
        Ok(())
    }

    /// The version readers see (the newest), unless it is a delete marker.
    pub fn current(&self, key: &str) -> Option<&Version> {
        self.keys.get(key)?.first().filter(|v| !v.marker)
    }

    /// The objects a plain listing shows: key and stored size of the current version.
    pub fn present(&self) -> Vec<(String, u64)> {
        self.keys
            .iter()
            .filter_map(|(k, versions)| {
                let v = versions.first().filter(|v| !v.marker)?;
                Some((k.clone(), v.size))
            })
            .collect()
    }

    /// Every key that has a version holding data (current or not).
    pub fn with_data(&self) -> impl Iterator<Item = &String> {
        self.keys
            .iter()
            .filter(|(_, versions)| versions.iter().any(|v| !v.marker))
            .map(|(k, _)| k)
    }

    /// The versions of `key` holding data, newest first.
    pub fn data_versions(&self, key: &str) -> impl Iterator<Item = &Version> {
        self.keys.get(key).into_iter().flatten().filter(|v| !v.marker)
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
        let newest = self.keys.get(key)?.first()?;
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
pub struct ObjectReader {
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

    /// The versions of `key` holding data, newest first (at most [`VERSIONS_READ`]), each read
    /// whole: one larger than `cap` (the most the bot writes in such an object) is refused unread.
    pub async fn read_versions<'l>(
        &self,
        listing: &'l Listing,
        key: &str,
        cap: u64,
    ) -> Vec<(&'l Version, Result<Streamed, ObjectError>)> {
        let mut out = Vec::new();
        for version in listing.data_versions(key).take(VERSIONS_READ) {
            let read = if version.size > cap + TAG_LEN as u64 {
                Err(ObjectError::TooLarge {
                    size: version.size,
                    limit: cap,
                })
            } else {
                self.stream(key, version, Some(cap)).await
            };
            out.push((version, read));
        }
        out
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

impl Listing {
    /// A listing of objects as they are (no versions), for a reader that took its own listing.
    pub fn unversioned(objects: &[(String, u64)]) -> Listing {
        let mut listing = Listing::default();
        for (key, size) in objects {
            listing.keys.entry(key.clone()).or_default().push(Version {
                id: None,
                size: *size,
                marker: false,
            });
        }
        listing
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
            tracing::debug!(error = %failure("read the bucket's versioning", &e), "versioning unknown");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(id: &str, marker: bool) -> Version {
        Version {
            id: Some(id.into()),
            size: 3,
            marker,
        }
    }

    #[test]
    fn the_current_version_is_the_newest_unless_a_marker_hides_it() {
        let mut listing = Listing::default();
        listing.keys.insert("a".into(), vec![v("m", true), v("1", false)]);
        listing.keys.insert("b".into(), vec![v("2", false), v("1", false)]);
        listing.keys.insert("c".into(), vec![v("m", true)]);
        assert_eq!(listing.current("a"), None);
        assert_eq!(listing.current("b"), Some(&v("2", false)));
        assert_eq!(listing.present(), vec![("b".to_owned(), 3)]);
        assert_eq!(listing.with_data().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(listing.over("a", &v("1", false)), Some(Over::Marker("m".into())));
        assert_eq!(listing.over("b", &v("1", false)), Some(Over::Newer("2".into())));
        assert_eq!(listing.over("b", &v("2", false)), None);
        assert!(Versioning::Off.note().is_some() && Versioning::Enabled.note().is_none());
    }
}
