//! `verify s3://BUCKET/PREFIX`: the archive checked where it lies, without restoring it. Objects are
//! listed, then streamed (and decrypted, when encrypted, in memory) and hashed as they arrive: no
//! plaintext touches the disk, and memory stays at a few chunks per object being checked, whatever the
//! objects' sizes (plus a few hundred bytes per object and entry for the listing and the chains). The checks are the directory's (signatures, chains, heads, sizes, SHA-256, unlisted
//! objects), plus each object's Object Lock retention, which `--min-retention-days` holds to a floor.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use futures_util::StreamExt as _;

use super::chain::Chains;
use super::shredded::ShredRecords;
use super::{Problem, Report};
use crate::aws::AwsFailure;
use crate::decrypt::{Archive, ObjectError, Streamed, stream};
use crate::manifest::entry::{Entry, is_manifest_name};
use crate::manifest::head::{is_head_record, manifest_of};
use crate::sink::s3::keys::{ListedObjects, listed_name, object_name};

/// Objects checked at once.
const AT_ONCE: usize = 4;
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The signing bot's tag in its attachments' object names: the first 8 hex digits of its public key.
pub fn bot_tag(key: &VerifyingKey) -> String {
    hex::encode(&key.as_bytes()[..4])
}

/// What is wrong with a file (at `location`) read against the entry that lists it, given its
/// plaintext's length and SHA-256, or why it could not be read.
pub fn content_problem(entry: &Entry, location: &str, read: Result<(u64, &str), &ObjectError>) -> Option<Problem> {
    let (name, seq) = (format!("{} ({location})", entry.body.name), entry.body.seq);
    let altered = |why: String| Some(Problem::Altered { name, seq, why });
    match read {
        // The GCM tag or the stated length refuted the object: it was altered.
        Err(e @ (ObjectError::Cipher(_) | ObjectError::Truncated | ObjectError::Length { .. })) => {
            altered(format!("it does not decrypt: {e}"))
        }
        Err(e) => Some(Problem::Unreadable {
            at: location.to_owned(),
            why: e.to_string(),
        }),
        Ok((len, _)) if len != entry.body.size => altered(format!("{len} bytes, listed as {}", entry.body.size)),
        Ok((_, sha256)) if sha256 != entry.body.sha256 => altered("content differs (SHA-256 mismatch)".into()),
        Ok(_) => None,
    }
}

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

/// Where the check stands: what it found so far and how far it has come.
struct Tally<'p> {
    out: BucketReport,
    done: Progress,
    progress: &'p (dyn Fn(Progress) + Sync),
    /// Objects read (or found missing) so far: the rest are unlisted.
    seen: HashSet<String>,
}

impl BucketCheck<'_> {
    pub async fn run(&self, progress: &(dyn Fn(Progress) + Sync)) -> Result<BucketReport, AwsFailure> {
        let (s3, kms) = self.archive.clients().await;
        let listed = self.archive.list(&s3).await?;
        let sizes: HashMap<&str, u64> = listed.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        let mut tally = Tally {
            out: BucketReport::default(),
            done: Progress {
                objects: 0,
                objects_total: listed.len(),
                bytes: 0,
                bytes_total: sizes.values().sum(),
            },
            progress,
            seen: HashSet::new(),
        };
        let mut manifests: Vec<&String> = listed
            .iter()
            .map(|(k, _)| k)
            .filter(|k| is_manifest_name(object_name(k)))
            .collect();
        manifests.sort_by(|a, b| object_name(a).cmp(object_name(b)));
        tally.out.report.manifests = manifests.len();
        // A running bot whose first manifest has not closed yet has nothing in the bucket to prove.
        if manifests.is_empty() && self.in_flight.is_none() {
            tally.out.report.problems.push(Problem::NothingToVerify {
                dir: PathBuf::from(self.location("")),
            });
            return Ok(tally.out);
        }
        let fetch = |key: String, keep: bool| {
            let (s3, kms) = (s3.clone(), kms.clone());
            let bucket = self.archive.bucket.clone();
            async move {
                let fetched = stream(&s3, &kms, &bucket, &key, keep).await;
                (key, fetched)
            }
        };
        let objects = ListedObjects::new(listed.iter().map(|(k, _)| k));
        let mut chains = Chains::new(self.keys);
        let shreds = ShredRecords::load(
            &s3,
            &kms,
            &self.archive.bucket,
            &listed,
            self.keys,
            &mut tally.out.report.problems,
        )
        .await;
        tally.seen.extend(shreds.records.iter().cloned());
        tally.out.report.shredded.clone_from(&shreds.periods);
        // A shredded period's manifest or head: the record's copy.
        let kept = |key: &str, tally: &mut Tally<'_>| {
            let text = shreds.kept.get(key)?;
            tally.seen.insert(key.to_owned());
            Some(text.clone().into_bytes())
        };

        // The manifests, in order, one at a time: the chains are built in order.
        let mut entries: Vec<(Entry, String)> = Vec::new();
        for manifest in manifests {
            let text = match kept(manifest, &mut tally) {
                Some(text) => text,
                None => {
                    let (key, fetched) = fetch(manifest.clone(), true).await;
                    let fetched = self.facts(&key, sizes[key.as_str()], fetched, &mut tally);
                    let Some(text) = self.readable(&key, fetched, &mut tally).and_then(|f| f.text) else {
                        continue;
                    };
                    text
                }
            };
            for (entry, signer) in chains.take_all(&self.location(manifest), &text, &mut tally.out.report.problems) {
                match objects.find(&entry.body.name, &entry.body.sha256, Some(&bot_tag(&self.keys[signer]))) {
                    Some(object) if shreds.objects.contains(object) => {
                        tally.seen.insert(object.clone());
                    }
                    Some(object) => entries.push((entry, object.clone())),
                    None if self.in_flight.is_some_and(|f| f.waiting(&entry.body.name)) => {}
                    None => tally.out.report.problems.push(Problem::Missing {
                        name: entry.body.name.clone(),
                        seq: entry.body.seq,
                    }),
                }
            }
        }

        // The heads (a head whose manifest is still on its way up says nothing yet).
        let mut head_texts = Vec::new();
        let heads = listed.iter().map(|(k, _)| k).filter(|k| {
            is_head_record(object_name(k)) && !self.in_flight.is_some_and(|f| f.waiting(&manifest_of(object_name(k))))
        });
        for head in heads {
            if let Some(text) = kept(head, &mut tally) {
                head_texts.push((self.location(head), Ok(String::from_utf8_lossy(&text).into_owned())));
                continue;
            }
            let (key, fetched) = fetch(head.clone(), true).await;
            let text = match self.facts(&key, sizes[key.as_str()], fetched, &mut tally) {
                Ok(f) => Ok(String::from_utf8_lossy(&f.text.unwrap_or_default()).into_owned()),
                Err(e) => Err(e.to_string()),
            };
            head_texts.push((self.location(&key), text));
        }
        head_texts.extend(super::read_heads(self.extra_heads));
        chains.check_heads(head_texts, &mut tally.out.report.problems);
        chains.check_every_key_signed(&mut tally.out.report.problems);
        tally.out.report.entries = chains.entries;
        tally.out.report.entries_by_key = chains.entries_by_key.clone();

        // The listed files, several at a time, each against its entry.
        let mut checks = futures_util::stream::iter(entries.into_iter().map(|(entry, key)| {
            let fetching = fetch(key, false);
            async move { (entry, fetching.await) }
        }))
        .buffer_unordered(AT_ONCE);
        while let Some((entry, (key, fetched))) = checks.next().await {
            let fetched = self.facts(&key, sizes[key.as_str()], fetched, &mut tally);
            self.compare(&entry, &key, fetched, &mut tally.out.report.problems);
        }
        drop(checks);

        let in_flight = |key: &str| {
            self.in_flight.is_some_and(|f| f.listed_here(object_name(key)))
                || is_head_record(object_name(key))
                || shreds.objects.contains(key)
        };
        for (key, _) in listed.iter().filter(|(k, _)| !tally.seen.contains(k) && !in_flight(k)) {
            tally.out.report.problems.push(Problem::Unlisted {
                path: PathBuf::from(self.location(key)),
            });
        }
        Ok(tally.out)
    }

    /// An object read against the entry that lists it.
    fn compare(&self, entry: &Entry, key: &str, fetched: Result<Streamed, ObjectError>, problems: &mut Vec<Problem>) {
        let read = fetched.as_ref().map(|f| (f.plain_len, f.sha256.as_str()));
        problems.extend(content_problem(entry, &self.location(key), read));
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
        fetched: Result<Streamed, ObjectError>,
        tally: &mut Tally<'_>,
    ) -> Result<Streamed, ObjectError> {
        tally.seen.insert(key.to_owned());
        tally.done.objects += 1;
        tally.done.bytes += size;
        tally.out.bytes += size;
        (tally.progress)(tally.done);
        let fetched = fetched?;
        let until = fetched
            .retain_until
            .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339());
        tally.out.objects.push(ObjectFacts {
            key: key.to_owned(),
            size,
            lock_mode: fetched.lock_mode.clone(),
            retain_until: until.clone(),
        });
        if let Some(days) = self.min_retention_days {
            // S3 keeps the date to the second.
            let floor = fetched
                .retained_from
                .map(|t| t + DAY * u32::try_from(days).unwrap_or(u32::MAX) - Duration::from_secs(1));
            let why = match (fetched.retain_until, floor) {
                (None, _) => Some("no Object Lock retention".to_owned()),
                (Some(u), Some(floor)) if u < floor => Some(format!(
                    "retained until {}, less than {days} days after its file was closed",
                    until.unwrap_or_default()
                )),
                _ => None,
            };
            if let Some(why) = why {
                tally.out.report.problems.push(Problem::ShortRetention {
                    at: self.location(key),
                    why,
                });
            }
        }
        Ok(fetched)
    }

    /// A manifest or head that could not be read is a problem of its own.
    fn readable(&self, key: &str, fetched: Result<Streamed, ObjectError>, tally: &mut Tally<'_>) -> Option<Streamed> {
        fetched
            .map_err(|e| {
                tally.out.report.problems.push(Problem::Unreadable {
                    at: self.location(key),
                    why: e.to_string(),
                })
            })
            .ok()
    }
}
