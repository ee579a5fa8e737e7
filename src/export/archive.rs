//! Where an export reads from, a bucket or a directory, and what is there: the signed manifests read
//! through (their chains and heads checked as `verify` checks them), every listed file with its
//! entry, and every message file no entry lists. Files are then read chunk by chunk, decrypted in
//! memory when encrypted: no plaintext reaches the disk outside `--out`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt as _;

use super::ExportError;
use crate::decrypt::{Archive, MAX_KEPT, ObjectError, Opened, stream};
use crate::manifest::entry::{Entry, is_manifest_name};
use crate::manifest::head::is_head_record;
use crate::manifest::verify::{Chains, Listing, ObjectReader, Problem, ShredRecords, bot_tag, scan};
use crate::objects::keys::{ListedObjects, object_name};

/// The archive an export reads.
pub enum Place {
    Dir(PathBuf),
    Bucket {
        archive: Archive,
        s3: aws_sdk_s3::Client,
        kms: aws_sdk_kms::Client,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Manifest,
    Head,
    Messages,
    Attachment,
}

/// One file of the archive an export may read: where it is, how big it is stored, and the signed
/// entry that lists it (none for a message file no entry lists).
#[derive(Debug, Clone)]
pub struct Source {
    /// The object key, or the path.
    pub at: String,
    pub kind: Kind,
    pub stored: u64,
    pub entry: Option<Entry>,
    /// The public key (hex) whose chain holds the entry.
    pub signer: Option<String>,
}

/// A manifest or head record read while cataloguing, for the custody report.
#[derive(Debug, Clone)]
pub struct Read {
    pub source: Source,
    pub sha256: Option<String>,
    pub problem: Option<String>,
}

/// What the archive holds, as its signed manifests tell it.
#[derive(Debug, Default)]
pub struct Catalogue {
    pub records: Vec<Read>,
    /// Listed message files in manifest order, then unlisted ones in name order.
    pub messages: Vec<Source>,
    /// Listed attachments, by archived name.
    pub attachments: HashMap<String, Vec<Source>>,
    pub problems: Vec<Problem>,
    pub entries: usize,
    /// Files of periods crypto-shredded on purpose (`shred`): not read, reported in the custody
    /// report with the record that says so.
    pub shredded: Vec<(Source, String)>,
    /// With `--unsigned-source`: attachments no entry lists, by name.
    pub unsigned_attachments: HashMap<String, Vec<Source>>,
}

impl Place {
    pub(crate) fn describe(&self) -> String {
        match self {
            Place::Dir(dir) => dir.display().to_string(),
            Place::Bucket { archive, .. } => format!("s3://{}/{}", archive.bucket, archive.prefix),
        }
    }

    /// Reads the manifests and heads, and catalogues every file they list.
    /// With `unsigned_source`, files no entry lists are taken as they are (an archive the original
    /// bot wrote): not problems, and its attachments found by name.
    pub async fn catalogue(&self, keys: &[VerifyingKey], unsigned_source: bool) -> Result<Catalogue, ExportError> {
        let found = self.find().await?;
        let mut cat = Catalogue::default();
        if found.manifests.is_empty() && !unsigned_source {
            cat.problems.push(Problem::NothingToVerify {
                dir: PathBuf::from(self.describe()),
            });
        }
        let mut chains = Chains::new(keys);
        let shreds = self.shred_records(&found, keys, &mut cat.problems).await;
        let (manifests, head_records) = with_kept_copies(&found, &shreds);
        let listed_names = self
            .read_manifests(&mut cat, &mut chains, keys, &found, &shreds, &manifests)
            .await;
        self.read_heads(&mut cat, &chains, &shreds, &head_records).await;
        cat.entries = chains.entries;
        self.add_unlisted(&mut cat, &found, &shreds, &listed_names, unsigned_source);
        Ok(cat)
    }

    /// The signed records of the periods crypto-shredded on purpose (a bucket's; a directory has
    /// none), what is wrong with one added to `problems`. Apart from `catalogue` so that its
    /// phases read one by one.
    async fn shred_records(&self, found: &Found, keys: &[VerifyingKey], problems: &mut Vec<Problem>) -> ShredRecords {
        match self {
            Place::Bucket { archive, s3, kms } => {
                let reader = ObjectReader {
                    s3: s3.clone(),
                    kms: kms.clone(),
                    bucket: archive.bucket.clone(),
                };
                let listing = Listing::unversioned(&found.listed);
                ShredRecords::load(&reader, &archive.prefix, &listing, keys, problems).await
            }
            Place::Dir(_) => ShredRecords::default(),
        }
    }

    /// Reads the manifests in order (a shredded period's from the record that kept it), takes
    /// their entries into `chains` and catalogues every copy of the files they list. Returns the
    /// files listed. Apart from `catalogue` so that its phases read one by one.
    async fn read_manifests(
        &self,
        cat: &mut Catalogue,
        chains: &mut Chains<'_>,
        keys: &[VerifyingKey],
        found: &Found,
        shreds: &ShredRecords,
        manifests: &[Source],
    ) -> HashSet<String> {
        let mut listed_names = HashSet::new();
        let sizes: HashMap<&str, u64> = found.others.iter().map(|(at, n)| (at.as_str(), *n)).collect();
        for manifest in manifests {
            let (text, read) = match shreds.kept.get(&manifest.at) {
                // A shredded period's manifest: the signed record's copy (its entries are signed too).
                Some(kept) => Self::kept_copy(manifest, kept),
                None => self.read_small(manifest, Kind::Manifest).await,
            };
            cat.records.push(read);
            let Some(text) = text else { continue };
            for (entry, signer) in chains.take_all(&self.describe_file(&manifest.at), &text, &mut cat.problems) {
                if entry.is_discarded() {
                    continue;
                }
                let copies = found.copies(&entry, &bot_tag(&keys[signer]), &sizes);
                if copies.is_empty() && shreds.covering(&entry).is_none() {
                    cat.problems.push(Problem::Missing {
                        name: entry.body.name.clone(),
                        seq: entry.body.seq,
                    });
                }
                listed_names.extend(copies.iter().map(|(at, _)| at.clone()));
                add_listed(cat, shreds, &entry, &keys[signer], copies);
            }
        }
        listed_names
    }

    /// Reads the head records (a shredded period's from the record that kept it) and checks the
    /// chains against them, and that every key signed. Apart from `catalogue` so that its phases
    /// read one by one.
    async fn read_heads(
        &self,
        cat: &mut Catalogue,
        chains: &Chains<'_>,
        shreds: &ShredRecords,
        head_records: &[Source],
    ) {
        let mut heads = Vec::new();
        for head in head_records {
            let (text, read) = match shreds.kept.get(&head.at) {
                Some(kept) => Self::kept_copy(head, kept),
                None => self.read_small(head, Kind::Head).await,
            };
            let text = match (&text, &read.problem) {
                (Some(t), _) => Ok(String::from_utf8_lossy(t).into_owned()),
                (None, why) => Err(why.clone().unwrap_or_default()),
            };
            heads.push((self.describe_file(&head.at), text));
            cat.records.push(read);
        }
        chains.check_heads(heads, &mut cat.problems);
        chains.check_every_key_signed(&mut cat.problems);
    }

    /// Message files no entry lists (read too, their lines marked unverified) and, with
    /// `unsigned_source`, attachments no entry lists. Apart from `catalogue` so that its phases
    /// read one by one.
    fn add_unlisted(
        &self,
        cat: &mut Catalogue,
        found: &Found,
        shreds: &ShredRecords,
        listed_names: &HashSet<String>,
        unsigned_source: bool,
    ) {
        let mut unlisted: Vec<&(String, u64)> = found
            .others
            .iter()
            .filter(|(at, _)| {
                let name = object_name(at);
                !listed_names.contains(at) && !shreds.objects.contains(at) && may_be_message_file(name)
            })
            .collect();
        unlisted.sort();
        for (at, stored) in unlisted {
            if !unsigned_source {
                cat.problems.push(Problem::Unlisted {
                    path: PathBuf::from(self.describe_file(at)),
                });
            }
            cat.messages.push(Source {
                at: at.clone(),
                kind: Kind::Messages,
                stored: *stored,
                entry: None,
                signer: None,
            });
        }
        if unsigned_source {
            let attachments = found
                .others
                .iter()
                .filter(|(at, _)| !listed_names.contains(at) && object_name(at).starts_with("attachment_"));
            for (at, stored) in attachments {
                cat.unsigned_attachments
                    .entry(object_name(at).to_owned())
                    .or_default()
                    .push(Source {
                        at: at.clone(),
                        kind: Kind::Attachment,
                        stored: *stored,
                        entry: None,
                        signer: None,
                    });
            }
        }
    }

    /// Lists what is there: manifests (in order), heads, and every other file.
    async fn find(&self) -> Result<Found, ExportError> {
        let mut found = Found::default();
        match self {
            Place::Bucket { archive, s3, .. } => {
                found.listed = archive.list(s3).await?;
                for (key, size) in found.listed.clone() {
                    let name = object_name(&key);
                    let source = |kind| Source {
                        at: key.clone(),
                        kind,
                        stored: size,
                        entry: None,
                        signer: None,
                    };
                    if is_manifest_name(name) {
                        found.manifests.push(source(Kind::Manifest));
                    } else if is_head_record(name) {
                        found.heads.push(source(Kind::Head));
                    } else {
                        found.others.push((key, size));
                    }
                }
                found
                    .manifests
                    .sort_by(|a, b| object_name(&a.at).cmp(object_name(&b.at)));
                found.objects = Some(ListedObjects::new(found.others.iter().map(|(k, _)| k)));
            }
            Place::Dir(dir) => {
                let dir = dir.clone();
                let read_err = |error| ExportError::Read {
                    path: PathBuf::from(self.describe()),
                    error,
                };
                let scanned = tokio::task::spawn_blocking(move || {
                    let (manifests, files, heads) = scan(&dir)?;
                    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                    let source = |p: &Path, kind| Source {
                        at: p.display().to_string(),
                        kind,
                        stored: size(p),
                        entry: None,
                        signer: None,
                    };
                    let mut found = Found {
                        manifests: manifests.iter().map(|p| source(p, Kind::Manifest)).collect(),
                        heads: heads.iter().map(|p| source(p, Kind::Head)).collect(),
                        ..Found::default()
                    };
                    for (name, paths) in files {
                        for p in &paths {
                            found.others.push((p.display().to_string(), size(p)));
                        }
                        found.by_name.insert(name, paths);
                    }
                    Ok::<_, std::io::Error>(found)
                });
                found = scanned
                    .await
                    .map_err(|e| read_err(std::io::Error::other(e)))?
                    .map_err(read_err)?;
            }
        }
        Ok(found)
    }

    /// A shredded period's manifest or head, from the signed shredding record that kept it.
    fn kept_copy(source: &Source, text: &str) -> (Option<Vec<u8>>, Read) {
        let read = Read {
            source: source.clone(),
            sha256: Some(hex::encode(Sha256::digest(text.as_bytes()))),
            problem: None,
        };
        (Some(text.as_bytes().to_vec()), read)
    }

    /// A manifest or head record, whole (they are small; a planted big one is refused).
    async fn read_small(&self, source: &Source, kind: Kind) -> (Option<Vec<u8>>, Read) {
        let text = match self {
            Place::Bucket { archive, s3, kms } => stream(s3, kms, &archive.bucket, &source.at, true)
                .await
                .map(|s| s.text.unwrap_or_default()),
            Place::Dir(_) if source.stored > MAX_KEPT => Err(ObjectError::TooLarge {
                size: source.stored,
                limit: MAX_KEPT,
            }),
            Place::Dir(_) => tokio::fs::read(&source.at).await.map_err(|error| ObjectError::Io {
                path: PathBuf::from(&source.at),
                error,
            }),
        };
        let mut read = Read {
            source: Source { kind, ..source.clone() },
            sha256: None,
            problem: None,
        };
        match text {
            Ok(text) => {
                read.sha256 = Some(hex::encode(Sha256::digest(&text)));
                (Some(text), read)
            }
            Err(e) => {
                read.problem = Some(crate::error_chain::chain(&e));
                (None, read)
            }
        }
    }

    /// Opens a file of the archive for reading, chunk by chunk.
    pub async fn open(&self, source: &Source) -> Result<Reader, ObjectError> {
        match self {
            Place::Bucket { archive, s3, kms } => Ok(Reader::Object(Box::new(
                Opened::open(s3, kms, &archive.bucket, &source.at, None).await?,
            ))),
            Place::Dir(_) => {
                let path = PathBuf::from(&source.at);
                let io = |error| ObjectError::Io {
                    path: path.clone(),
                    error,
                };
                let file = crate::durable::open_regular(&path).map_err(io)?;
                Ok(Reader::File(tokio::fs::File::from_std(file), path))
            }
        }
    }
}

/// What a listing found.
#[derive(Default)]
struct Found {
    manifests: Vec<Source>,
    heads: Vec<Source>,
    /// Every other file: where, and its stored size.
    others: Vec<(String, u64)>,
    /// A bucket's whole listing.
    listed: Vec<(String, u64)>,
    /// A bucket's objects by the names they stand for.
    objects: Option<ListedObjects>,
    /// A directory's files by name.
    by_name: HashMap<String, Vec<PathBuf>>,
}

impl Found {
    /// Where the file an entry lists lies: in a bucket, its object (the signer's, if it has one);
    /// in a directory, every file of its name (one may be a forgery: each is read and checked).
    fn copies(&self, entry: &Entry, tag: &str, sizes: &HashMap<&str, u64>) -> Vec<(String, u64)> {
        let stored = |at: &str| sizes.get(at).copied().unwrap_or(0);
        match &self.objects {
            Some(objects) => objects
                .find(&entry.body.name, &entry.body.sha256, Some(tag))
                .map(|k| vec![(k.clone(), stored(k))])
                .unwrap_or_default(),
            None => {
                let mut paths: Vec<String> = self
                    .by_name
                    .get(&entry.body.name)
                    .into_iter()
                    .flatten()
                    .map(|p| p.display().to_string())
                    .collect();
                paths.sort();
                paths.into_iter().map(|p| (p.clone(), stored(&p))).collect()
            }
        }
    }
}

/// The manifests (in name order) and head records to read: those found, and the copies shredding
/// records kept. Apart from `Place::catalogue` so that its phases read one by one.
fn with_kept_copies(found: &Found, shreds: &ShredRecords) -> (Vec<Source>, Vec<Source>) {
    // A shredded period's manifests and heads whose objects are gone (a lifecycle rule deletes
    // shredded ciphertext): the records' copies keep the chains whole.
    let mut manifests = found.manifests.clone();
    let mut head_records = found.heads.clone();
    for key in shreds.kept.keys() {
        let (list, kind) = match object_name(key) {
            name if is_manifest_name(name) => (&mut manifests, Kind::Manifest),
            name if is_head_record(name) => (&mut head_records, Kind::Head),
            _ => continue,
        };
        if !list.iter().any(|s| &s.at == key) {
            list.push(Source {
                at: key.clone(),
                kind,
                stored: 0,
                entry: None,
                signer: None,
            });
        }
    }
    manifests.sort_by(|a, b| object_name(&a.at).cmp(object_name(&b.at)));
    (manifests, head_records)
}

/// Catalogues the copies of the file a signed entry lists (signed by `signer`): a message file or
/// an attachment, or a file of a period shredded on purpose. Apart from `Place::read_manifests`
/// to keep it short.
fn add_listed(
    cat: &mut Catalogue,
    shreds: &ShredRecords,
    entry: &Entry,
    signer: &VerifyingKey,
    copies: Vec<(String, u64)>,
) {
    let signer_hex = hex::encode(signer.as_bytes());
    for (at, stored) in copies {
        let shredded = shredded_by(shreds, &at);
        let source = Source {
            at,
            kind: if entry.body.kind == crate::spool::FileKind::Messages.as_str() {
                Kind::Messages
            } else {
                Kind::Attachment
            },
            stored,
            entry: Some(entry.clone()),
            signer: Some(signer_hex.clone()),
        };
        if let Some(why) = shredded {
            cat.shredded.push((source, why));
            continue;
        }
        match source.kind {
            Kind::Attachment => cat.attachments.entry(entry.body.name.clone()).or_default().push(source),
            _ => cat.messages.push(source),
        }
    }
}

/// Why a file is not read: the shredding record of the period it belongs to, if it was shredded on
/// purpose. Shared by the manifests' copies in `add_listed`.
fn shredded_by(shreds: &ShredRecords, at: &str) -> Option<String> {
    shreds
        .periods
        .iter()
        .find(|p| p.objects_listed.iter().any(|k| k == at))
        .map(|p| {
            format!(
                "SHREDDED: the period {} was destroyed on purpose ({})",
                p.period, p.record
            )
        })
}

/// A message file: the bot's closed files, or one the original bot may have written (how it names
/// its rotated files is not documented), so any `.txt` that is neither an attachment nor the bot's
/// public key. One no entry lists is read and its lines kept apart (or, with `--unsigned-source`,
/// taken); a line in it that is no message is reported, never exported.
fn may_be_message_file(name: &str) -> bool {
    name.ends_with(crate::spool::naming::CLOSED_SUFFIX) && !name.starts_with("attachment_") && name != "public_key.txt"
}

/// A file of the archive being read.
pub enum Reader {
    File(tokio::fs::File, PathBuf),
    Object(Box<Opened>),
}

/// Bytes read from a file at once.
const CHUNK: usize = 256 << 10;

impl Reader {
    /// The next chunk of plaintext; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, ObjectError> {
        match self {
            Reader::Object(object) => object.read().await,
            Reader::File(file, path) => {
                let mut buf = vec![0u8; CHUNK];
                let n = file.read(&mut buf).await.map_err(|error| ObjectError::Io {
                    path: path.clone(),
                    error,
                })?;
                buf.truncate(n);
                Ok((n > 0).then_some(buf))
            }
        }
    }

    /// Checks the GCM tag of an encrypted object: only then is what `next` returned authentic.
    pub fn finish(self) -> Result<(), ObjectError> {
        match self {
            Reader::Object(object) => object.plain.finish(),
            Reader::File(..) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_files_are_told_by_their_names() {
        assert!(may_be_message_file(
            "receivedMessages_20260101T000000123Z_0a1b2c3d4e5f_000001.txt"
        ));
        assert!(may_be_message_file(
            "msgs_20260101T000000123Z_0a1b2c3d4e5f_000001.suspect.txt"
        ));
        // The original bot's: names not documented.
        assert!(may_be_message_file("receivedMessages_1.txt"));
        assert!(!may_be_message_file("public_key.txt"));
        assert!(!may_be_message_file("attachment_20230804191058901_notes.txt"));
        assert!(!may_be_message_file(
            "receivedMessages_20260101T000000123Z_0a1b2c3d4e5f_000001.txt.open"
        ));
    }
}
