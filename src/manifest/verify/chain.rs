//! The chains of the bots whose keys `verify` was given, built entry by entry as the manifests are
//! read in order, wherever they lie (a directory, a bucket), and checked against the signed heads.

use std::collections::HashMap;

use ed25519_dalek::VerifyingKey;

use super::Problem;
use crate::manifest::entry::{Entry, GENESIS, line_hash};
use crate::manifest::head::HeadRecord;

/// Problems named one by one from a single manifest; the rest are counted.
const PROBLEMS_PER_MANIFEST: usize = 20;

pub(crate) struct Chains<'k> {
    keys: &'k [VerifyingKey],
    /// Each key's last entry: its chain so far.
    previous: Vec<Option<(u64, String)>>,
    /// Each key's entry hashes by sequence number, for the heads.
    hashes: Vec<HashMap<u64, String>>,
    pub entries: usize,
    pub entries_by_key: Vec<usize>,
}

impl<'k> Chains<'k> {
    pub fn new(keys: &'k [VerifyingKey]) -> Self {
        Self {
            keys,
            previous: vec![None; keys.len()],
            hashes: vec![HashMap::new(); keys.len()],
            entries: 0,
            entries_by_key: vec![0; keys.len()],
        }
    }

    /// The keys whose chains these are.
    pub fn keys(&self) -> &'k [VerifyingKey] {
        self.keys
    }

    /// Takes the next manifest line (`at` says where it is). Returns the entry, and which key signed
    /// it, when it is a signed one whose file is to be checked; anything wrong with the line is added
    /// to `problems`.
    pub fn take(&mut self, at: String, line: &[u8], problems: &mut Vec<Problem>) -> Option<(Entry, usize)> {
        let line = match std::str::from_utf8(line) {
            Ok(l) if l.trim().is_empty() => return None,
            Ok(l) => l,
            Err(e) => {
                problems.push(Problem::Unreadable {
                    at,
                    why: format!("not UTF-8 ({e})", e = crate::error_chain::Chain(&e)),
                });
                return None;
            }
        };
        let entry: Entry = match serde_json::from_str(line) {
            Ok(e) => e,
            Err(e) => {
                problems.push(Problem::Unreadable {
                    at,
                    why: crate::error_chain::chain(&e),
                });
                return None;
            }
        };
        // The same entry again, byte for byte: a manifest append that failed was written again into
        // the next manifest, and the failed one kept it after all. Nothing is hidden by it.
        let hash = line_hash(line);
        if self.previous.iter().flatten().any(|(_, h)| *h == hash) {
            return None;
        }
        let Some(signer) = self.keys.iter().position(|key| entry.verify(key)) else {
            self.entries += 1;
            problems.push(Problem::BadSignature { at });
            return None;
        };
        let seq = entry.body.seq;
        // An entry already taken, read again (from another version of a manifest, or a copy of
        // the bot's lines under another name): it adds nothing and hides nothing.
        if self.hashes[signer].get(&seq) == Some(&hash) {
            return None;
        }
        self.entries += 1;
        self.entries_by_key[signer] += 1;
        let (expected_seq, expected_prev) = match &self.previous[signer] {
            Some((s, h)) => (s + 1, h.as_str()),
            None => (1, GENESIS),
        };
        if seq != expected_seq || entry.body.prev != expected_prev {
            problems.push(Problem::ChainBroken { at, seq, expected_seq });
        }
        self.hashes[signer].insert(seq, hash.clone());
        self.previous[signer] = Some((seq, hash));
        Some((entry, signer))
    }

    /// Takes every line of one manifest (`at` says where it is), in order: its signed entries,
    /// each with the key that signed it. A planted manifest of many bad lines is reported by its
    /// first few and a count, not a problem per line.
    pub(crate) fn take_all(&mut self, at: &str, text: &[u8], problems: &mut Vec<Problem>) -> Vec<(Entry, usize)> {
        let mut mine = Vec::new();
        let mut taken = Vec::new();
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            taken.extend(self.take(format!("{at}:{}", i + 1), line, &mut mine));
        }
        let more = mine.len().saturating_sub(PROBLEMS_PER_MANIFEST);
        mine.truncate(PROBLEMS_PER_MANIFEST);
        problems.extend(mine);
        if more > 0 {
            problems.push(Problem::Unreadable {
                at: at.to_owned(),
                why: format!("{more} more bad line(s) (the first {PROBLEMS_PER_MANIFEST} are named above)"),
            });
        }
        taken
    }

    /// The sequence number of the last entry `signer`'s chain holds (0: none).
    pub(crate) fn last_seq(&self, signer: usize) -> u64 {
        self.previous[signer].as_ref().map_or(0, |(s, _)| *s)
    }

    /// The chain of `signer` must reach entry `seq`, which `what` says exists (the running bot's own
    /// chain head, less what it has not uploaded yet): `TRUNCATED` otherwise.
    pub(crate) fn check_reaches(&self, signer: usize, seq: u64, what: &str, problems: &mut Vec<Problem>) {
        let last_seq = self.last_seq(signer);
        if seq > last_seq {
            problems.push(Problem::Truncated {
                head: what.to_owned(),
                last_seq,
                head_seq: seq,
            });
        }
    }

    /// With several keys, each must have signed something: a key with no entry at all is a bot whose
    /// whole archive is missing (or a key given by mistake).
    pub(crate) fn check_every_key_signed(&self, problems: &mut Vec<Problem>) {
        if self.keys.len() < 2 {
            return;
        }
        for (key, n) in self.keys.iter().zip(&self.entries_by_key) {
            if *n == 0 {
                problems.push(Problem::NoEntries {
                    key: hex::encode(key.as_bytes()),
                });
            }
        }
    }

    /// Checks each key's chain against the heads it signed (`(where, its text or why it could not
    /// be read)`): the newest must not lie beyond the chain's end, and every head must name an entry
    /// the chain holds as it is.
    pub(crate) fn check_heads(&self, heads: Vec<(String, Result<String, String>)>, problems: &mut Vec<Problem>) {
        // Per key: the newest head, and where it is.
        let mut newest: Vec<Option<(u64, String)>> = vec![None; self.keys.len()];
        for (at, text) in heads {
            let record = text.and_then(|text| {
                serde_json::from_str::<HeadRecord>(text.trim()).map_err(|e| crate::error_chain::chain(&e))
            });
            let record = match record {
                Ok(r) => r,
                Err(why) => {
                    problems.push(Problem::Unreadable { at, why });
                    continue;
                }
            };
            let Some(signer) = self.keys.iter().position(|key| record.verify(key)) else {
                problems.push(Problem::BadSignature { at });
                continue;
            };
            let seq = record.body.seq;
            if self.hashes[signer]
                .get(&seq)
                .is_some_and(|hash| *hash != record.body.hash)
            {
                problems.push(Problem::HeadMismatch { head: at.clone(), seq });
            }
            if newest[signer].as_ref().is_none_or(|(s, _)| seq > *s) {
                newest[signer] = Some((seq, at));
            }
        }
        for (signer, head) in newest.into_iter().enumerate() {
            if let Some((head_seq, head)) = head {
                self.check_reaches(signer, head_seq, &format!("the signed chain head {head}"), problems);
            }
        }
    }
}
