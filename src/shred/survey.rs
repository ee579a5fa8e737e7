//! What the bots' signed manifests and heads say about a period before it is shredded: whether a
//! signed entry of the period names the key, whether a signed entry of another period names it by
//! any name, the texts the record keeps, and whether every bot's chain is whole up to its newest
//! head with every file of the period it lists in the bucket. A backlog (a file of the period still
//! on a bot's disk) or a chain that cannot be proven whole holds the shred back.
//!
//! The manifests are read as `verify` reads them: every version, the bot's own chosen, so a delete
//! marker or a planted version over a manifest changes nothing here.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ed25519_dalek::VerifyingKey;

use super::record::KeptText;
use crate::manifest::entry::{Entry, MAX_MANIFEST, is_manifest_name};
use crate::manifest::head::{HeadRecord, MAX_HEAD_RECORD, is_head_record};
use crate::manifest::verify::{
    Chains, Listing, ObjectReader, Problem, ShredRecords, bot_tag, bots_version, read_heads,
};
use crate::period::{Period, name_time};
use crate::sink::s3::keys::{ListedObjects, object_name};

/// What the manifests and heads say.
#[derive(Debug, Default)]
pub(super) struct Survey {
    /// The period's manifests and heads, as the bot wrote them.
    pub kept: Vec<KeptText>,
    /// A signed entry of the period names the key.
    pub signed_naming_key: bool,
    /// Key names (other than the key's ARN) that other periods' signed entries give: one of their
    /// files for each, and its period.
    pub named_elsewhere: BTreeMap<String, (String, String)>,
    /// An entry of another period names the key's ARN itself: one file and its period.
    pub shares_key: Option<(String, String)>,
    /// Manifests none of whose versions could be read.
    pub unreadable: Vec<(String, String)>,
    /// Why a bot's chain cannot be proven whole.
    pub unproven: Vec<String>,
    /// Files of the period the chains list that are not in the bucket.
    pub backlog: Vec<String>,
}

/// Reads the manifests (and the copies earlier shreds kept) and the heads, for `period` and `key`.
pub(super) async fn survey(
    reader: &ObjectReader,
    listing: &Listing,
    earlier: &ShredRecords,
    bots: &[VerifyingKey],
    extra_heads: &[PathBuf],
    period: Period,
    key: &str,
) -> Survey {
    let mut survey = Survey::default();
    let mut chains = Chains::new(bots);
    let mut problems = Vec::new();
    let objects = ListedObjects::new(listing.with_data());
    let in_period = |name: &str| name_time(name).is_some_and(|t| period.contains(t));
    for manifest in keys_of(listing, earlier, is_manifest_name) {
        let Some(text) = manifest_text(reader, listing, earlier, &manifest, bots, &mut survey).await else {
            continue;
        };
        if in_period(object_name(&manifest)) {
            survey.kept.push(KeptText {
                key: manifest.clone(),
                text: String::from_utf8_lossy(&text).into_owned(),
            });
        }
        for (entry, signer) in chains.take_all(&reader.location(&manifest), &text, &mut problems) {
            survey.note(&entry, period, key);
            let of_period = in_period(&entry.body.name);
            let found = objects.find(&entry.body.name, &entry.body.sha256, Some(&bot_tag(&bots[signer])));
            if of_period && found.is_none() && !entry.is_discarded() && earlier.covering(&entry).is_none() {
                survey.backlog.push(format!(
                    "{} (entry {} of bot {})",
                    entry.body.name,
                    entry.body.seq,
                    bot_tag(&bots[signer])
                ));
            }
        }
    }
    let mut heads = heads(reader, listing, earlier, bots, period, &mut survey).await;
    let given = read_heads(extra_heads);
    heads.extend(
        given
            .iter()
            .filter_map(|(at, text)| Some((at.clone(), text.clone().ok()?))),
    );
    // A head given that cannot be read, or that no bot signed, holds the shred back: an operator's
    // slip must not pass for a check.
    for (at, text) in &given {
        let signed = text
            .as_ref()
            .ok()
            .and_then(|t| serde_json::from_str::<HeadRecord>(t.trim()).ok())
            .is_some_and(|h| bots.iter().any(|b| h.verify(b)));
        if !signed {
            survey.unproven.push(format!(
                "the chain head given as {at} cannot be read or is not signed by any of the bots' keys: {}",
                text.as_ref().err().map_or("not a signed head record", String::as_str)
            ));
        }
    }
    let texts = heads.iter().map(|(at, text)| (at.clone(), Ok(text.clone()))).collect();
    chains.check_heads(texts, &mut problems);
    survey.head_per_chain(&chains, bots, &heads);
    survey
        .unproven
        .extend(problems.iter().filter(|p| breaks_chain(p)).map(ToString::to_string));
    survey
}

impl Survey {
    /// What one signed entry says about the key.
    fn note(&mut self, entry: &Entry, period: Period, key: &str) {
        let time = name_time(&entry.body.name);
        let Some(named) = entry.body.kms_key.clone() else {
            return;
        };
        if time.is_some_and(|t| period.contains(t)) {
            self.signed_naming_key |= named == key;
            return;
        }
        let other = time.map_or("unknown".to_owned(), |t| period.granularity().period_of(t).to_string());
        if named == key {
            self.shares_key.get_or_insert((entry.body.name.clone(), other));
        } else {
            self.named_elsewhere
                .entry(named)
                .or_insert((entry.body.name.clone(), other));
        }
    }

    /// Each bot's chain must end where its newest head (in the bucket, or given) says: a chain that
    /// goes past it had the head of its last manifest go missing, so where it really ends cannot be
    /// told.
    fn head_per_chain(&mut self, chains: &Chains<'_>, bots: &[VerifyingKey], heads: &[(String, String)]) {
        for (signer, bot) in bots.iter().enumerate() {
            let last = chains.last_seq(signer);
            if last == 0 {
                continue;
            }
            let newest = heads
                .iter()
                .filter_map(|(_, text)| serde_json::from_str::<HeadRecord>(text.trim()).ok())
                .filter(|h| h.verify(bot))
                .map(|h| h.body.seq)
                .max();
            if newest.is_none_or(|seq| seq < last) {
                self.unproven.push(format!(
                    "bot {}'s chain reaches entry {last}, but no chain head record in the bucket names it (newest: {}): the head of its last manifest is missing, so whether the chain goes further cannot be told; pass a later head with --head, or wait for the bot's next manifest",
                    bot_tag(bot),
                    newest.map_or("none".to_owned(), |s| format!("entry {s}"))
                ));
            }
        }
    }
}

/// Keys with data (or kept by an earlier shred) whose name passes `is`, in name order.
fn keys_of(listing: &Listing, earlier: &ShredRecords, is: fn(&str) -> bool) -> Vec<String> {
    let mut keys: Vec<String> = listing
        .with_data()
        .chain(earlier.kept.keys())
        .filter(|k| is(object_name(k)))
        .cloned()
        .collect();
    keys.sort_by(|a, b| object_name(a).cmp(object_name(b)).then(a.cmp(b)));
    keys.dedup();
    keys
}

/// The bot's version of a manifest (or an earlier shred's copy); `None` when none could be read.
async fn manifest_text(
    reader: &ObjectReader,
    listing: &Listing,
    earlier: &ShredRecords,
    manifest: &str,
    bots: &[VerifyingKey],
    survey: &mut Survey,
) -> Option<Vec<u8>> {
    if let Some(kept) = earlier.kept.get(manifest) {
        return Some(kept.clone().into_bytes());
    }
    let mut texts = Vec::new();
    let mut failed = None;
    for (version, read) in reader.read_versions(listing, manifest, MAX_MANIFEST).await {
        match read {
            Ok(read) => texts.push((version, read.text.unwrap_or_default())),
            Err(e) => {
                failed.get_or_insert(e.to_string());
            }
        }
    }
    match bots_version(&texts, bots) {
        Some((i, _)) => Some(texts.swap_remove(i).1),
        None => {
            survey.unreadable.push((
                manifest.to_owned(),
                failed.unwrap_or_else(|| "no version holds data".into()),
            ));
            None
        }
    }
}

/// Every signed head record, each version of each (and earlier shreds' copies); the period's go
/// into the record.
async fn heads(
    reader: &ObjectReader,
    listing: &Listing,
    earlier: &ShredRecords,
    bots: &[VerifyingKey],
    period: Period,
    survey: &mut Survey,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for key in keys_of(listing, earlier, is_head_record) {
        let texts: Vec<String> = match earlier.kept.get(&key) {
            Some(kept) => vec![kept.clone()],
            None => reader
                .read_versions(listing, &key, MAX_HEAD_RECORD)
                .await
                .into_iter()
                .filter_map(|(_, read)| read.ok())
                .map(|read| String::from_utf8_lossy(&read.text.unwrap_or_default()).into_owned())
                .collect(),
        };
        let signed =
            |t: &String| serde_json::from_str::<HeadRecord>(t.trim()).is_ok_and(|h| bots.iter().any(|b| h.verify(b)));
        for text in texts.into_iter().filter(signed) {
            if name_time(object_name(&key)).is_some_and(|t| period.contains(t))
                && !survey.kept.iter().any(|k| k.key == key)
            {
                survey.kept.push(KeptText {
                    key: key.clone(),
                    text: text.clone(),
                });
            }
            out.push((reader.location(&key), text));
        }
    }
    out
}

/// Problems that leave a chain unproven: what it lists beyond them is unknown.
fn breaks_chain(problem: &Problem) -> bool {
    matches!(
        problem,
        Problem::ChainBroken { .. } | Problem::HeadMismatch { .. } | Problem::Truncated { .. }
    )
}
