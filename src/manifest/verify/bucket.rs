//! `verify s3://BUCKET/PREFIX`: the archive checked where it lies, without restoring it. Objects are
//! listed, then streamed (and decrypted, when encrypted, in memory) and hashed as they arrive: no
//! plaintext touches the disk, and memory stays at a few chunks per object being checked, whatever the
//! objects' sizes (plus a few hundred bytes per object and entry for the listing and the chains). The
//! checks are the directory's (signatures, chains, heads, sizes, SHA-256, unlisted objects), plus each
//! object's Object Lock retention, which `--min-retention-days` holds to a floor.
//!
//! On a versioned bucket the proof is made from the bot's own versions, which a bucket writer
//! cannot remove under Object Lock: the version of each listed file whose content the signed entry
//! names, every version of the manifests and heads. A delete marker or a newer version over one of
//! them is named (`HIDDEN`, `REPLACED`), and the chains and `TRUNCATED` are computed as if it were
//! not there. Objects the bot reads whole (manifests, heads, shredding records) are refused unread
//! above the most the bot ever writes in them.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use futures_util::StreamExt as _;

use super::chain::Chains;
use super::own;
use super::shredded::{ShredRecords, over_problem};
use super::versions::{Listing, ObjectReader, Version};
use super::{Problem, Report};
use crate::aws::AwsFailure;
use crate::decrypt::{Archive, ObjectError, Streamed};
use crate::envelope::gcm::TAG_LEN;
use crate::manifest::entry::{Entry, is_manifest_name};
use crate::manifest::head::{is_head_record, manifest_of};
use crate::objects::keys::{ListedObjects, listed_name, object_name};

/// Objects checked at once.
const AT_ONCE: usize = 4;
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The signing bot's tag in its attachments' object names: the first 8 hex digits of its public key.
pub(crate) fn bot_tag(key: &VerifyingKey) -> String {
    hex::encode(&key.as_bytes()[..4])
}

/// What is wrong with a file (at `location`) read against the entry that lists it, given its
/// plaintext's length and SHA-256, or why it could not be read.
pub(crate) fn content_problem(
    entry: &Entry,
    location: &str,
    read: Result<(u64, &str), &ObjectError>,
) -> Option<Problem> {
    let (name, seq) = (format!("{} ({location})", entry.body.name), entry.body.seq);
    let altered = |why: String| Some(Problem::Altered { name, seq, why });
    match read {
        // The GCM tag or the stated length refuted the object: it was altered.
        Err(e @ (ObjectError::Cipher(_) | ObjectError::Truncated | ObjectError::Length { .. })) => {
            altered(format!("it does not decrypt: {e}", e = crate::error_chain::Chain(&e)))
        }
        Err(e) => Some(Problem::Unreadable {
            at: location.to_owned(),
            why: crate::error_chain::chain(&e),
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
    /// The version read, on a versioned bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
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
    /// The daemon's own check: what is still on its way to the bucket, and how far its chain goes.
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
    /// The entry the bucket's chain must reach: the bot's own chain head (its state directory),
    /// less the entries its local manifests still hold.
    pub reach: Option<u64>,
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

impl Tally<'_> {
    fn problem(&mut self, problem: Problem) {
        self.out.report.problems.push(problem);
    }

    fn problems(&mut self, problems: impl IntoIterator<Item = Problem>) {
        self.out.report.problems.extend(problems);
    }
}

impl BucketCheck<'_> {
    pub async fn run(&self, progress: &(dyn Fn(Progress) + Sync)) -> Result<BucketReport, AwsFailure> {
        let (s3, kms) = self.archive.clients().await;
        let listing = Listing::read(self.archive, &s3).await?;
        let reader = ObjectReader {
            s3,
            kms,
            bucket: self.archive.bucket.clone(),
        };
        let present = listing.present();
        let mut tally = Tally {
            out: BucketReport::default(),
            done: Progress {
                objects: 0,
                objects_total: present.len(),
                bytes: 0,
                bytes_total: present.iter().map(|(_, n)| n).sum(),
            },
            progress,
            seen: HashSet::new(),
        };
        tally.out.report.versioning = listing.versioning;
        let shreds = ShredRecords::load(
            &reader,
            &self.archive.prefix,
            &listing,
            self.keys,
            &mut tally.out.report.problems,
        )
        .await;
        tally.seen.extend(shreds.records.iter().cloned());
        tally.out.report.shredded.clone_from(&shreds.periods);
        let manifests = manifest_keys(&listing, &shreds);
        tally.out.report.manifests = manifests.len();
        // A running bot whose first manifest has not closed yet has nothing in the bucket to prove.
        if manifests.is_empty() && self.in_flight.is_none() {
            tally.problem(Problem::NothingToVerify {
                dir: PathBuf::from(self.location("")),
            });
            return Ok(tally.out);
        }
        let mut chains = Chains::new(self.keys);
        let to_check = self
            .read_manifests(&reader, &listing, &shreds, &manifests, &mut chains, &mut tally)
            .await;
        self.check_heads(&reader, &listing, &shreds, &mut chains, &mut tally)
            .await;
        tally.out.report.entries = chains.entries;
        tally.out.report.entries_by_key = chains.entries_by_key.clone();
        self.check_files(&reader, &listing, to_check, &mut tally).await;
        self.report_unlisted(&present, &shreds, &mut tally);
        Ok(tally.out)
    }

    /// The manifests, in order, one at a time (the chains are built in order): every version of
    /// each that the bots signed taken ([`own::take_manifest`]), and the files their entries list
    /// (with the object that holds each) returned for checking.
    async fn read_manifests(
        &self,
        reader: &ObjectReader,
        listing: &Listing,
        shreds: &ShredRecords,
        manifests: &[String],
        chains: &mut Chains<'_>,
        tally: &mut Tally<'_>,
    ) -> Vec<(Entry, String)> {
        let objects = ListedObjects::new(listing.with_data());
        let mut to_check = Vec::new();
        for manifest in manifests {
            let at = self.location(manifest);
            let entries = match shreds.kept.get(manifest) {
                // A shredded period's manifest: the record's copy (each entry is signed too).
                Some(kept) => {
                    tally.seen.insert(manifest.clone());
                    chains.take_all(&at, kept.as_bytes(), &mut tally.out.report.problems)
                }
                None => self.take_manifest(reader, listing, manifest, chains, tally).await,
            };
            for (entry, signer) in entries {
                if entry.is_discarded() {
                    continue;
                }
                let object = objects.find(&entry.body.name, &entry.body.sha256, Some(&bot_tag(&self.keys[signer])));
                match object {
                    Some(object) if shreds.objects.contains(object) || shreds.covering(&entry).is_some() => {
                        tally.seen.insert(object.clone());
                    }
                    Some(object) => to_check.push((entry, object.clone())),
                    // Destroyed on purpose, and gone since: expected.
                    None if shreds.covering(&entry).is_some() => {}
                    None if self.in_flight.is_some_and(|f| f.waiting(&entry.body.name)) => {}
                    None => tally.problem(Problem::Missing {
                        name: entry.body.name.clone(),
                        seq: entry.body.seq,
                    }),
                }
            }
        }
        to_check
    }

    /// One manifest's versions into the chains; its facts recorded, the bot's version held to the
    /// retention floor, and whatever stands over it named. A manifest none of whose versions the
    /// bots signed, hidden since (planted, and deleted), is left aside.
    async fn take_manifest(
        &self,
        reader: &ObjectReader,
        listing: &Listing,
        key: &str,
        chains: &mut Chains<'_>,
        tally: &mut Tally<'_>,
    ) -> Vec<(Entry, usize)> {
        let at = self.location(key);
        let taken = own::take_manifest(reader, listing, key, chains, &mut tally.out.report.problems, false).await;
        let bots = taken.bots.map(|(v, _)| v);
        let mut unread = None;
        for own::Read { version, read } in taken.reads {
            match self.facts(key, version, read, tally) {
                Ok(read) if Some(version) == bots => self.check_retention(key, &read, tally),
                Ok(_) => {}
                // A version the bot's came after, or none: what it held is unknown.
                Err(e) if bots.is_none_or(|b| b.modified >= version.modified) => {
                    unread.get_or_insert(e);
                }
                Err(_) => {}
            }
        }
        if let Some(version) = bots {
            tally.problems(over_problem(listing, key, version, &at));
        } else if listing.current(key).is_none() {
            // Nothing the bots signed, and deleted since: a planted file, gone from view.
            return taken.entries;
        }
        if let Some(e) = unread {
            tally.problem(Problem::Unreadable {
                at: at.clone(),
                why: crate::error_chain::chain(&e),
            });
        }
        tally.problems(own::piled(listing, key, &at));
        taken.entries
    }

    /// The heads, every version of each (a head whose manifest is still on its way up says nothing
    /// yet), and heads kept elsewhere, against the chains; then the running bot's own head.
    async fn check_heads(
        &self,
        reader: &ObjectReader,
        listing: &Listing,
        shreds: &ShredRecords,
        chains: &mut Chains<'_>,
        tally: &mut Tally<'_>,
    ) {
        let waiting = |k: &str| self.in_flight.is_some_and(|f| f.waiting(&manifest_of(object_name(k))));
        let mut keys: Vec<&String> = listing
            .with_data()
            .chain(shreds.kept.keys())
            .filter(|k| is_head_record(object_name(k)) && !waiting(k))
            .collect();
        keys.sort();
        keys.dedup();
        let mut texts = Vec::new();
        for key in keys {
            let at = self.location(key);
            if let Some(kept) = shreds.kept.get(key.as_str()) {
                tally.seen.insert(key.clone());
                texts.push((at, Ok(kept.clone())));
                continue;
            }
            texts.extend(self.head_versions(reader, listing, key, tally).await);
        }
        let extra = self.extra_heads.to_vec();
        texts.extend(
            tokio::task::spawn_blocking(move || super::read_heads(&extra))
                .await
                .unwrap_or_default(),
        );
        chains.check_heads(texts, &mut tally.out.report.problems);
        chains.check_every_key_signed(&mut tally.out.report.problems);
        if let Some(reach) = self.in_flight.and_then(|f| f.reach) {
            chains.check_reaches(
                0,
                reach,
                "the bot's own chain head (manifest_head.json in its state directory, less what waits on its disk)",
                &mut tally.out.report.problems,
            );
        }
    }

    /// A head record's texts that count ([`own::head_versions`]), or, when none does and it is in
    /// view, why: its newest version's text (a bad signature) or read error, or that it is another
    /// manifest's head; whatever stands over the bot's version is named.
    async fn head_versions(
        &self,
        reader: &ObjectReader,
        listing: &Listing,
        key: &str,
        tally: &mut Tally<'_>,
    ) -> Vec<(String, Result<String, String>)> {
        let at = self.location(key);
        let (valid, reads) = own::head_versions(reader, listing, key, self.keys).await;
        let bots = valid.first().map(|(v, _)| *v);
        let mut newest = None;
        for own::Read { version, read } in reads {
            match self.facts(key, version, read, tally) {
                Ok(read) if Some(version) == bots => self.check_retention(key, &read, tally),
                Ok(_) => newest = Some(Ok(())),
                Err(e) => newest = Some(Err(crate::error_chain::chain(&e))),
            }
        }
        tally.problems(own::piled(listing, key, &at));
        if let Some(version) = bots {
            tally.problems(over_problem(listing, key, version, &at));
            return valid.into_iter().map(|(_, text)| (at.clone(), Ok(text))).collect();
        }
        match (listing.current(key), newest) {
            // Not in view, and no version the bots signed: a planted head, deleted since.
            (None, _) | (_, None) => {}
            (Some(_), Some(Err(why))) => tally.problem(Problem::Unreadable { at, why }),
            (Some(_), Some(Ok(()))) => tally.problem(Problem::BadSignature { at }),
        }
        Vec::new()
    }

    /// The listed files, several at a time, each against its entry: the version whose content the
    /// entry names (trying those of the listed size, newest first), or the newest one's problem.
    async fn check_files(
        &self,
        reader: &ObjectReader,
        listing: &Listing,
        to_check: Vec<(Entry, String)>,
        tally: &mut Tally<'_>,
    ) {
        let mut checks = futures_util::stream::iter(to_check.into_iter().map(|(entry, key)| async move {
            let mut reads = Vec::new();
            for version in candidates(listing, &key, entry.body.size) {
                let read = reader.stream(&key, version, None).await;
                let intact = read
                    .as_ref()
                    .is_ok_and(|r| r.plain_len == entry.body.size && r.sha256 == entry.body.sha256);
                reads.push((version, read));
                if intact {
                    break;
                }
            }
            (entry, key, reads)
        }))
        .buffer_unordered(AT_ONCE);
        while let Some((entry, key, reads)) = checks.next().await {
            let at = self.location(&key);
            let mut problems = Vec::new();
            let mut judged = None;
            for (i, (version, read)) in reads.into_iter().enumerate() {
                let read = self.facts(&key, version, read, tally);
                let found = content_problem(&entry, &at, read.as_ref().map(|f| (f.plain_len, f.sha256.as_str())));
                match found {
                    None => {
                        problems = over_problem(listing, &key, version, &at).into_iter().collect();
                        judged = read.ok();
                        break;
                    }
                    // The oldest version's (the bot's) problem stands when no version is intact.
                    Some(problem) if i == 0 => {
                        problems.push(problem);
                        judged = read.ok();
                    }
                    Some(_) => {}
                }
            }
            if let Some(read) = judged {
                self.check_retention(&key, &read, tally);
            }
            tally.problems(problems);
            tally.problems(own::piled(listing, &key, &at));
        }
    }

    /// Objects a plain listing shows that no entry lists (and that are not on their way up).
    fn report_unlisted(&self, present: &[(String, u64)], shreds: &ShredRecords, tally: &mut Tally<'_>) {
        let in_flight = |key: &str| {
            self.in_flight.is_some_and(|f| f.listed_here(object_name(key)))
                || is_head_record(object_name(key))
                || shreds.objects.contains(key)
        };
        for (key, _) in present.iter().filter(|(k, _)| !tally.seen.contains(k) && !in_flight(k)) {
            tally.out.report.problems.push(Problem::Unlisted {
                path: PathBuf::from(self.location(key)),
            });
        }
    }

    fn location(&self, key: &str) -> String {
        if key.is_empty() {
            format!("s3://{}/{}", self.archive.bucket, self.archive.prefix)
        } else {
            format!("s3://{}/{key}", self.archive.bucket)
        }
    }

    /// Records an object's facts and progress, and hands the result on.
    fn facts(
        &self,
        key: &str,
        version: &Version,
        fetched: Result<Streamed, ObjectError>,
        tally: &mut Tally<'_>,
    ) -> Result<Streamed, ObjectError> {
        tally.seen.insert(key.to_owned());
        tally.done.objects += 1;
        tally.done.bytes += version.size;
        tally.out.bytes += version.size;
        (tally.progress)(tally.done);
        let fetched = fetched?;
        tally.out.objects.push(ObjectFacts {
            key: key.to_owned(),
            version: version.id.clone(),
            size: version.size,
            lock_mode: fetched.lock_mode.clone(),
            retain_until: fetched
                .retain_until
                .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339()),
        });
        Ok(fetched)
    }

    /// Holds the bot's version of an object (never one put over it) to `--min-retention-days`.
    fn check_retention(&self, key: &str, fetched: &Streamed, tally: &mut Tally<'_>) {
        let Some(days) = self.min_retention_days else { return };
        // S3 keeps the date to the second.
        let floor = fetched
            .retained_from
            .map(|t| t + DAY * u32::try_from(days).unwrap_or(u32::MAX) - Duration::from_secs(1));
        let until = fetched
            .retain_until
            .map(|t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339());
        let why = match (fetched.retain_until, floor) {
            (None, _) => Some("no Object Lock retention".to_owned()),
            (Some(u), Some(floor)) if u < floor => Some(format!(
                "retained until {}, less than {days} days after its file was closed",
                until.unwrap_or_default()
            )),
            _ => None,
        };
        if let Some(why) = why {
            tally.problem(Problem::ShortRetention {
                at: self.location(key),
                why,
            });
        }
    }
}

/// Every manifest with data in the bucket, and every one a shredding record kept (its object may
/// be gone), in name order (the order they were written).
fn manifest_keys(listing: &Listing, shreds: &ShredRecords) -> Vec<String> {
    let mut keys: Vec<String> = listing
        .with_data()
        .chain(shreds.kept.keys())
        .filter(|k| is_manifest_name(object_name(k)))
        .cloned()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    keys.sort_by(|a, b| object_name(a).cmp(object_name(b)).then(a.cmp(b)));
    keys
}

/// The versions of `key` that may hold a file of `size` bytes (plain, or encrypted with its tag),
/// oldest first (the bot's is the oldest); when none does, the oldest version (whose problem is then
/// reported).
fn candidates<'l>(listing: &'l Listing, key: &str, size: u64) -> Vec<&'l Version> {
    let fits = |v: &&Version| v.size == size || v.size == size + TAG_LEN as u64;
    let sized: Vec<&Version> = listing.data_versions(key).filter(fits).collect();
    if sized.is_empty() {
        listing.data_versions(key).take(1).collect()
    } else {
        sized
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_looked_for_in_the_versions_of_its_size_oldest_first() {
        let v = |id: &str, size: u64, marker: bool| Version {
            id: Some(id.into()),
            size,
            marker,
            modified: 0,
        };
        let mut listing = Listing::default();
        listing.keys.insert(
            "k".into(),
            super::super::versions::KeyVersions {
                newest: v("m", 0, true),
                data: vec![v("1", 100, false), v("2", 116, false), v("3", 7, false)],
                dropped: 0,
            },
        );
        let ids = |found: Vec<&Version>| found.iter().map(|v| v.label().to_owned()).collect::<Vec<_>>();
        assert_eq!(ids(candidates(&listing, "k", 100)), ["1", "2"]);
        assert_eq!(ids(candidates(&listing, "k", 5)), ["1"]);
        assert!(candidates(&listing, "none", 5).is_empty());
    }
}
