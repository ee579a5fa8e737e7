//! What the bots' signed manifests and heads say about a period before it is shredded: whether a
//! signed entry of the period names the key, whether a signed entry of another period names it by
//! any name, the texts the record keeps, which objects the bots' entries list, and whether every
//! bot's chain is whole up to its newest head with every file of the period it lists in the bucket.
//! A backlog (a file of the period still on a bot's disk) or a chain that cannot be proven whole
//! holds the shred back.
//!
//! The manifests and heads are read as `verify` reads them ([`take_manifest`], [`head_versions`]):
//! every version, oldest first, so a delete marker, a planted version or a copy of another manifest
//! or head over one changes nothing here.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use ed25519_dalek::VerifyingKey;

use crate::manifest::entry::{Entry, is_manifest_name};
use crate::manifest::head::{HeadRecord, is_head_record};
use crate::manifest::shred_record::KeptText;
use crate::manifest::verify::{
    Chains, Listing, ObjectReader, Problem, ShredRecords, bot_tag, head_of, head_versions, read_heads, take_manifest,
};
use crate::objects::keys::{ListedObjects, object_name};
use crate::period::{Period, name_time};

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
    /// The objects the bots' signed entries of the period list, and its manifests and heads (their
    /// first versions are the bots').
    pub listed: HashSet<String>,
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
    for manifest in keys_of(listing, earlier, is_manifest_name) {
        let entries = match earlier.kept.get(&manifest) {
            Some(kept) => chains.take_all(&reader.location(&manifest), kept.as_bytes(), &mut problems),
            None => {
                survey
                    .take(reader, listing, &manifest, &mut chains, &mut problems, period)
                    .await
            }
        };
        for (entry, signer) in entries {
            survey.note(&entry, period, key);
            if !in_period(period, &entry.body.name) || entry.is_discarded() {
                continue;
            }
            match objects.find(&entry.body.name, &entry.body.sha256, Some(&bot_tag(&bots[signer]))) {
                Some(object) => {
                    survey.listed.insert(object.clone());
                }
                None if earlier.covering(&entry).is_some() => {}
                None => survey.backlog.push(format!(
                    "{} (entry {} of bot {})",
                    entry.body.name,
                    entry.body.seq,
                    bot_tag(&bots[signer])
                )),
            }
        }
    }
    let mut heads = heads(reader, listing, earlier, bots, period, &mut survey).await;
    let extra = extra_heads.to_vec();
    let given = tokio::task::spawn_blocking(move || read_heads(&extra))
        .await
        .unwrap_or_default();
    survey.given_heads(&given, bots, &mut heads);
    let texts = heads.iter().map(|(at, text)| (at.clone(), Ok(text.clone()))).collect();
    chains.check_heads(texts, &mut problems);
    survey.head_per_chain(&chains, bots, &heads);
    survey
        .unproven
        .extend(problems.iter().filter(|p| breaks_chain(p)).map(ToString::to_string));
    // The period's manifests and heads are the bots' files too.
    let kept: Vec<String> = survey.kept.iter().map(|k| k.key.clone()).collect();
    survey.listed.extend(kept);
    survey
}

fn in_period(period: Period, name: &str) -> bool {
    name_time(name).is_some_and(|t| period.contains(t))
}

impl Survey {
    /// One manifest's versions into the chains; the bot's version kept when of the period, and a
    /// manifest none of whose versions could be read noted.
    async fn take(
        &mut self,
        reader: &ObjectReader,
        listing: &Listing,
        manifest: &str,
        chains: &mut Chains<'_>,
        problems: &mut Vec<Problem>,
        period: Period,
    ) -> Vec<(Entry, usize)> {
        let taken = take_manifest(reader, listing, manifest, chains, problems, true).await;
        match &taken.bots {
            Some((_, Some(text))) if in_period(period, object_name(manifest)) => self.kept.push(KeptText {
                key: manifest.to_owned(),
                text: String::from_utf8_lossy(text).into_owned(),
            }),
            Some(_) => {}
            None => {
                if let Some(e) = taken.reads.iter().find_map(|r| r.read.as_ref().err()) {
                    self.unreadable
                        .push((manifest.to_owned(), crate::error_chain::chain(&e)));
                }
            }
        }
        taken.entries
    }

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

    /// Heads given with `--head` join the bucket's; one that cannot be read, or that no bot
    /// signed, holds the shred back: an operator's slip must not pass for a check.
    fn given_heads(
        &mut self,
        given: &[(String, Result<String, String>)],
        bots: &[VerifyingKey],
        heads: &mut Vec<(String, String)>,
    ) {
        for (at, text) in given {
            let signed = text
                .as_ref()
                .ok()
                .and_then(|t| serde_json::from_str::<HeadRecord>(t.trim()).ok())
                .is_some_and(|h| bots.iter().any(|b| h.verify(b)));
            match text {
                Ok(text) if signed => heads.push((at.clone(), text.clone())),
                _ => self.unproven.push(format!(
                    "the chain head given as {at} cannot be read or is not signed by any of the bots' keys: {}",
                    text.as_ref().err().map_or("not a signed head record", String::as_str)
                )),
            }
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

/// Every head record the bots signed for the manifest its name says, each version of each (and
/// earlier shreds' copies); the period's bot versions go into the record.
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
            Some(kept) => head_of(&key, kept, bots).map(|_| kept.clone()).into_iter().collect(),
            None => head_versions(reader, listing, &key, bots)
                .await
                .0
                .into_iter()
                .map(|(_, text)| text)
                .collect(),
        };
        if let Some(first) = texts.first()
            && in_period(period, object_name(&key))
        {
            survey.kept.push(KeptText {
                key: key.clone(),
                text: first.clone(),
            });
        }
        out.extend(texts.into_iter().map(|text| (reader.location(&key), text)));
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
