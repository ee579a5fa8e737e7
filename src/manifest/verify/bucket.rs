//! `verify s3://BUCKET/PREFIX`: the archive checked where it lies, without restoring it. Objects are
//! listed, then streamed (and decrypted, when encrypted, in memory) and hashed as they arrive: no
//! plaintext touches the disk, and memory stays at a few chunks per object being checked, whatever the
//! objects' sizes. The checks are the directory's (signatures, chains, heads, sizes, SHA-256, unlisted
//! objects), plus each object's Object Lock retention, which `--min-retention-days` holds to a floor.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::types::ChecksumMode;
use ed25519_dalek::VerifyingKey;
use futures_util::StreamExt as _;
use sha2::{Digest, Sha256};

use super::chain::Chains;
use super::{Problem, Report};
use crate::aws::{self, AwsFailure, failure};
use crate::decrypt::{Archive, ObjectError, Plaintext};
use crate::manifest::entry::{Entry, MANIFEST_BASENAME};
use crate::manifest::head::{is_head_record, manifest_of};
use crate::sink::s3::keys::{find_listed, listed_name, object_name};

/// Objects checked at once.
const AT_ONCE: usize = 4;
const DAY: Duration = Duration::from_secs(24 * 3600);

/// What `verify` found about one object besides its content.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ObjectFacts {
    pub key: String,
    /// Bytes stored (ciphertext and tag, when encrypted).
    pub size: u64,
    pub lock_mode: Option<String>,
    pub retain_until: Option<String>,
}

/// A bucket's report: the directory's, and what each object carries.
#[derive(Debug, Default)]
pub struct BucketReport {
    pub report: Report,
    pub objects: Vec<ObjectFacts>,
    pub bytes: u64,
}

/// How far the check has come, for a progress line.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub objects: usize,
    pub objects_total: usize,
    pub bytes: u64,
    pub bytes_total: u64,
}

/// One listed object.
struct Listed {
    key: String,
    size: u64,
}

/// An object's content, hashed as it streamed, and its retention.
struct Fetched {
    plain_len: u64,
    sha256: String,
    text: Option<Vec<u8>>,
    lock_mode: Option<String>,
    retain_until: Option<SystemTime>,
    last_modified: Option<SystemTime>,
}

pub struct BucketCheck<'a> {
    pub archive: &'a Archive,
    pub keys: &'a [VerifyingKey],
    pub extra_heads: &'a [PathBuf],
    pub min_retention_days: Option<u64>,
    /// The daemon's own check: what is still on its way to the bucket.
    pub in_flight: Option<&'a InFlight>,
}

/// What a running bot has not uploaded yet: the files still on its disk and the entries of its
/// manifests not uploaded yet (the open one, and closed ones waiting). Their absence from the bucket,
/// or an object listed only by them, is not a problem of the bucket.
#[derive(Debug, Default)]
pub struct InFlight {
    /// Names of the files on local disk (message files, attachments, manifests).
    pub files: HashSet<String>,
    /// Names the local manifests list.
    pub listed: HashSet<String>,
}

impl InFlight {
    fn waiting(&self, name: &str) -> bool {
        self.files.contains(name)
    }

    /// An object (by its name) that a local manifest lists: an attachment's object name carries the
    /// bot's tag and hash, which its file name does not.
    fn listed_here(&self, object: &str) -> bool {
        self.listed.contains(object) || listed_name(object).is_some_and(|name| self.listed.contains(&name))
    }
}

impl BucketCheck<'_> {
    pub async fn run(&self, progress: &(dyn Fn(Progress) + Sync)) -> Result<BucketReport, AwsFailure> {
        let (s3, kms) = self.archive.clients().await;
        let listed = self.list(&s3).await?;
        let bytes_total = listed.iter().map(|o| o.size).sum();
        let mut out = BucketReport::default();
        let mut done = Progress {
            objects: 0,
            objects_total: listed.len(),
            bytes: 0,
            bytes_total,
        };
        let keys: Vec<String> = listed.iter().map(|o| o.key.clone()).collect();
        let mut manifests: Vec<&Listed> = listed.iter().filter(|o| is_manifest(&o.key)).collect();
        manifests.sort_by(|a, b| object_name(&a.key).cmp(object_name(&b.key)));
        // A head whose manifest is still on its way up says nothing yet.
        let heads: Vec<&Listed> = listed
            .iter()
            .filter(|o| is_head_record(object_name(&o.key)))
            .filter(|o| {
                !self
                    .in_flight
                    .is_some_and(|f| f.waiting(&manifest_of(object_name(&o.key))))
            })
            .collect();
        out.report.manifests = manifests.len();
        // A running bot whose first manifest has not closed yet has nothing in the bucket to prove.
        if manifests.is_empty() && self.in_flight.is_none() {
            out.report.problems.push(Problem::NothingToVerify {
                dir: PathBuf::from(self.location("")),
            });
            return Ok(out);
        }
        let fetch = |key: String, keep: bool| {
            let (s3, kms) = (s3.clone(), kms.clone());
            let bucket = self.archive.bucket.clone();
            async move {
                let fetched = fetch(&s3, &kms, &bucket, &key, keep).await;
                (key, fetched)
            }
        };

        // The manifests, in order, one at a time: the chains are built in order.
        let mut chains = Chains::new(self.keys);
        let mut entries: Vec<(Entry, String)> = Vec::new();
        let mut seen = HashSet::new();
        for manifest in &manifests {
            let (key, fetched) = fetch(manifest.key.clone(), true).await;
            let fetched = self.facts(&key, manifest.size, fetched, &mut out, &mut done, progress);
            let fetched = self.readable(&key, fetched, &mut out);
            seen.insert(key.clone());
            let Some(text) = fetched.and_then(|f| f.text) else {
                continue;
            };
            for (i, line) in text.split(|b| *b == b'\n').enumerate() {
                let at = format!("{}:{}", self.location(&key), i + 1);
                if let Some(entry) = chains.take(at, line, &mut out.report.problems) {
                    match find_listed(&entry.body.name, &entry.body.sha256, &keys) {
                        Some(object) => entries.push((entry, object.clone())),
                        None if self.in_flight.is_some_and(|f| f.waiting(&entry.body.name)) => {}
                        None => out.report.problems.push(Problem::Missing {
                            name: entry.body.name.clone(),
                            seq: entry.body.seq,
                        }),
                    }
                }
            }
        }
        let mut head_texts = Vec::new();
        for head in &heads {
            let (key, fetched) = fetch(head.key.clone(), true).await;
            seen.insert(key.clone());
            let text = match self.facts(&key, head.size, fetched, &mut out, &mut done, progress) {
                Ok(f) => Ok(String::from_utf8_lossy(&f.text.unwrap_or_default()).into_owned()),
                Err(e) => Err(e.to_string()),
            };
            head_texts.push((self.location(&key), text));
        }
        head_texts.extend(self.extra_heads.iter().map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(p).map_err(|e| e.to_string()),
            )
        }));
        chains.check_heads(head_texts, &mut out.report.problems);
        out.report.entries = chains.entries;
        out.report.entries_by_key = chains.entries_by_key;

        // The listed files, several at a time, each against its entry.
        let size_of = |key: &str| listed.iter().find(|o| o.key == key).map_or(0, |o| o.size);
        let mut checks = futures_util::stream::iter(entries.into_iter().map(|(entry, key)| {
            let fetching = fetch(key, false);
            async move { (entry, fetching.await) }
        }))
        .buffer_unordered(AT_ONCE);
        while let Some((entry, (key, fetched))) = checks.next().await {
            seen.insert(key.clone());
            let size = size_of(&key);
            let (name, seq) = (format!("{} ({})", entry.body.name, self.location(&key)), entry.body.seq);
            match self.facts(&key, size, fetched, &mut out, &mut done, progress) {
                // The GCM tag or the stated length refuted the object: it was altered.
                Err(e @ (ObjectError::Cipher(_) | ObjectError::Truncated | ObjectError::Length { .. })) => {
                    out.report.problems.push(Problem::Altered {
                        name,
                        seq,
                        why: format!("it does not decrypt: {e}"),
                    });
                }
                Err(e) => out.report.problems.push(Problem::Unreadable {
                    at: self.location(&key),
                    why: e.to_string(),
                }),
                Ok(f) if f.plain_len != entry.body.size => {
                    out.report.problems.push(Problem::Altered {
                        name,
                        seq,
                        why: format!("{} bytes, listed as {}", f.plain_len, entry.body.size),
                    });
                }
                Ok(f) if f.sha256 != entry.body.sha256 => {
                    out.report.problems.push(Problem::Altered {
                        name,
                        seq,
                        why: "content differs (SHA-256 mismatch)".into(),
                    });
                }
                Ok(_) => {}
            }
        }
        drop(checks);
        let in_flight = |key: &str| {
            self.in_flight.is_some_and(|f| f.listed_here(object_name(key))) || is_head_record(object_name(key))
        };
        for object in listed.iter().filter(|o| !seen.contains(&o.key) && !in_flight(&o.key)) {
            out.report.problems.push(Problem::Unlisted {
                path: PathBuf::from(self.location(&object.key)),
            });
        }
        Ok(out)
    }

    async fn list(&self, s3: &aws_sdk_s3::Client) -> Result<Vec<Listed>, AwsFailure> {
        let archive = self.archive;
        let mut listed = Vec::new();
        let mut pages = s3
            .list_objects_v2()
            .bucket(&archive.bucket)
            .prefix(&archive.prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| failure(&format!("list {}", self.location("")), &e))?;
            listed.extend(page.contents().iter().filter_map(|o| {
                Some(Listed {
                    key: o.key()?.to_owned(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                })
            }));
        }
        Ok(listed)
    }

    fn location(&self, key: &str) -> String {
        if key.is_empty() {
            format!("s3://{}/{}", self.archive.bucket, self.archive.prefix)
        } else {
            format!("s3://{}/{key}", self.archive.bucket)
        }
    }

    /// Records an object's facts, retention and progress, and hands the result on.
    fn facts(
        &self,
        key: &str,
        size: u64,
        fetched: Result<Fetched, ObjectError>,
        out: &mut BucketReport,
        done: &mut Progress,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Fetched, ObjectError> {
        done.objects += 1;
        done.bytes += size;
        out.bytes += size;
        progress(*done);
        let fetched = fetched?;
        let until = fetched
            .retain_until
            .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339());
        out.objects.push(ObjectFacts {
            key: key.to_owned(),
            size,
            lock_mode: fetched.lock_mode.clone(),
            retain_until: until.clone(),
        });
        if let Some(days) = self.min_retention_days {
            let floor = fetched
                .last_modified
                .map(|t| t + DAY * u32::try_from(days).unwrap_or(u32::MAX));
            let why = match (fetched.retain_until, floor) {
                (None, _) => Some("no Object Lock retention".to_owned()),
                (Some(u), Some(floor)) if u < floor => Some(format!(
                    "retained until {}, less than {days} days after it was written",
                    until.unwrap_or_default()
                )),
                _ => None,
            };
            if let Some(why) = why {
                out.report.problems.push(Problem::ShortRetention {
                    at: self.location(key),
                    why,
                });
            }
        }
        Ok(fetched)
    }

    /// A manifest or head that could not be read is a problem of its own.
    fn readable(&self, key: &str, fetched: Result<Fetched, ObjectError>, out: &mut BucketReport) -> Option<Fetched> {
        fetched
            .map_err(|e| {
                out.report.problems.push(Problem::Unreadable {
                    at: self.location(key),
                    why: e.to_string(),
                })
            })
            .ok()
    }
}

fn is_manifest(key: &str) -> bool {
    let name = object_name(key);
    name.strip_prefix(MANIFEST_BASENAME)
        .is_some_and(|rest| rest.starts_with('_'))
        && name.ends_with(crate::spool::naming::CLOSED_SUFFIX)
}

/// Streams one object through its decryption and a hash; keeps the plaintext only if `keep` (small
/// objects: manifests and heads).
async fn fetch(
    s3: &aws_sdk_s3::Client,
    kms: &aws_sdk_kms::Client,
    bucket: &str,
    key: &str,
    keep: bool,
) -> Result<Fetched, ObjectError> {
    let object = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .map_err(|e| failure(&format!("download s3://{bucket}/{key}"), &e))?;
    let metadata = object.metadata().cloned().unwrap_or_default();
    let lock_mode = object.object_lock_mode().map(|m| m.as_str().to_owned());
    let to_time = |t: &aws_sdk_s3::primitives::DateTime| SystemTime::try_from(*t).ok();
    let retain_until = object.object_lock_retain_until_date().and_then(to_time);
    let last_modified = object.last_modified().and_then(to_time);
    let mut plain = Plaintext::of(&metadata, kms).await?;
    let mut hasher = Sha256::new();
    let mut text = keep.then(Vec::new);
    let mut plain_len = 0u64;
    let mut body = object.body;
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|e| AwsFailure::new(aws::Retry::Soon, format!("download s3://{bucket}/{key}: {e}")))?
    {
        let data = plain.next(&chunk)?;
        hasher.update(&data);
        plain_len += data.len() as u64;
        if let Some(text) = &mut text {
            text.extend_from_slice(&data);
        }
    }
    plain.finish()?;
    Ok(Fetched {
        plain_len,
        sha256: hex::encode(hasher.finalize()),
        text,
        lock_mode,
        retain_until,
        last_modified,
    })
}
