//! The lines an export keeps, and the order it writes them in.
//!
//! Files are read several at a time and in no order, and whether a line belongs in the export may
//! depend on lines read later (the message an edit refers to; whether a participant is a member of a
//! room). So every line that may belong is appended, as read, to a work file in the output directory,
//! and only a small record of it stays in memory (about 100 bytes); once every file is read, the
//! records are resolved and sorted, and the lines copied out in `msg_ts` order, with the edits,
//! reactions and deletes of a selected message right after it. Memory grows with the number of lines
//! kept, never with the archive's size.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::selection::{Judge, Line, Verdict, read_line};

/// A 128-bit digest standing for a string (an id, a room, a line): compact, and never colliding in
/// practice.
type Digest128 = u128;

fn digest(bytes: &[u8]) -> Digest128 {
    let d = Sha256::digest(bytes);
    u128::from_be_bytes(d[..16].try_into().unwrap_or_default())
}

/// Why a line was kept, before every file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cond {
    Selected,
    /// Selected if a participant is a member of this room.
    IfMember(Digest128),
    /// Only an edit, reaction or delete in the period: kept if what it refers to is selected.
    IfReferred,
}

#[derive(Debug, Clone)]
struct Kept {
    /// `msg_ts` in microseconds (lines without one first).
    time: i64,
    /// The file's index and the line's number in it: ties in time keep the archive's order.
    order: (u32, u32),
    offset: u64,
    len: u32,
    id: Option<Digest128>,
    refers_to: Option<Digest128>,
    cond: Cond,
    line: Digest128,
}

/// One line of a file, judged.
pub struct Judged {
    /// The line, without its newline.
    pub text: Vec<u8>,
    pub number: u32,
    cond: Option<Cond>,
    time: i64,
    id: Option<Digest128>,
    refers_to: Option<Digest128>,
    /// A room a participant was seen to be a member of.
    pub member_of: Option<Digest128>,
}

/// Judges one line: whether it may belong in the export, and what it shows of room membership.
pub fn judge_line(judge: &Judge, text: &[u8], number: u32) -> Option<Judged> {
    let line: Line = read_line(text)?;
    let digest_of = |s: &Option<std::borrow::Cow<str>>| s.as_deref().map(|s| digest(s.as_bytes()));
    let member_of = judge.shows_member(&line).then(|| digest_of(&line.room)).flatten();
    let cond = match judge.judge(&line) {
        Verdict::Yes => Some(Cond::Selected),
        Verdict::IfMember(room) => Some(Cond::IfMember(digest(room.as_bytes()))),
        Verdict::No if line.refers_to.is_some() && judge.in_period(&line) => Some(Cond::IfReferred),
        Verdict::No => None,
    };
    if cond.is_none() && member_of.is_none() {
        return None;
    }
    Some(Judged {
        text: if cond.is_some() { text.to_vec() } else { Vec::new() },
        number,
        cond,
        time: line.time.map_or(i64::MIN, |t| t.timestamp_micros()),
        id: digest_of(&line.message_id),
        refers_to: digest_of(&line.refers_to),
        member_of,
    })
}

/// The lines kept so far, and the rooms participants were seen in.
pub struct Collector {
    work: BufWriter<File>,
    work_path: PathBuf,
    written: u64,
    kept: Vec<Kept>,
    rooms: HashSet<Digest128>,
}

/// A line to write: where it is in the work file, whether its file checked out, and whether it is
/// there only for the selected message it refers to.
#[derive(Debug, Clone, Copy)]
pub struct OutLine {
    pub offset: u64,
    pub len: u32,
    pub verified: bool,
    pub related: bool,
}

/// The lines in the order they are written.
pub struct Resolved {
    pub lines: Vec<OutLine>,
    pub duplicates: usize,
}

impl Collector {
    pub fn new(work_path: &Path) -> std::io::Result<Collector> {
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(work_path)?;
        Ok(Collector {
            work: BufWriter::with_capacity(1 << 20, file),
            work_path: work_path.to_owned(),
            written: 0,
            kept: Vec::new(),
            rooms: HashSet::new(),
        })
    }

    /// Adds the judged lines of file number `file`.
    pub fn add(&mut self, file: u32, lines: Vec<Judged>) -> std::io::Result<()> {
        for judged in lines {
            if let Some(room) = judged.member_of {
                self.rooms.insert(room);
            }
            let Some(cond) = judged.cond else { continue };
            self.work.write_all(&judged.text)?;
            self.kept.push(Kept {
                time: judged.time,
                order: (file, judged.number),
                offset: self.written,
                len: u32::try_from(judged.text.len()).unwrap_or(u32::MAX),
                id: judged.id,
                refers_to: judged.refers_to,
                cond,
                line: digest(&judged.text),
            });
            self.written += judged.text.len() as u64;
        }
        Ok(())
    }

    /// Decides every kept line and orders them. `verified(file)` says whether a file checked out.
    pub fn resolve(&mut self, verified: &dyn Fn(u32) -> bool) -> std::io::Result<Resolved> {
        self.work.flush()?;
        let selected = |k: &Kept| match k.cond {
            Cond::Selected => true,
            Cond::IfMember(room) => self.rooms.contains(&room),
            Cond::IfReferred => false,
        };
        let mut sorted: Vec<&Kept> = self.kept.iter().collect();
        sorted.sort_by_key(|k| (k.time, k.order));
        let selected_ids: HashSet<Digest128> = sorted.iter().filter(|k| selected(k)).filter_map(|k| k.id).collect();
        // Each selected message's edits, reactions and deletes, in time order.
        let mut replies: HashMap<Digest128, Vec<&Kept>> = HashMap::new();
        let mut out = Resolved {
            lines: Vec::new(),
            duplicates: 0,
        };
        let mut top = Vec::new();
        for k in sorted {
            match k.refers_to.filter(|r| selected_ids.contains(r) && Some(*r) != k.id) {
                Some(target) => replies.entry(target).or_default().push(k),
                None if selected(k) => top.push(k),
                None => {}
            }
        }
        let mut seen = HashSet::new();
        let mut emit = |k: &Kept, out: &mut Resolved| {
            let verified = verified(k.order.0);
            if !seen.insert((k.line, verified)) {
                out.duplicates += 1;
                return;
            }
            out.lines.push(OutLine {
                offset: k.offset,
                len: k.len,
                verified,
                related: !selected(k),
            });
        };
        for k in top {
            emit(k, &mut out);
            for reply in k.id.and_then(|id| replies.remove(&id)).unwrap_or_default() {
                emit(reply, &mut out);
            }
        }
        Ok(out)
    }

    /// The line at `offset`, `len` bytes long, of the work file.
    pub fn line(&self, offset: u64, len: u32) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        self.work.get_ref().read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Removes the work file.
    pub fn remove(self) -> std::io::Result<()> {
        drop(self.work);
        std::fs::remove_file(&self.work_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::selection::Selection;

    fn line(id: &str, ts: u32, sender: &str, extra: &str) -> String {
        format!(r#"{{"message_id":"{id}","msg_ts":"{ts}.0","msgtype":1000,"sender":"{sender}","vgroupid":"R"{extra}}}"#)
    }

    fn run(selection: Selection, lines: &[String], verified: bool) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Collector::new(&dir.path().join("work")).unwrap();
        let judge = Judge::new(&selection).unwrap();
        // Read "in no order": the last line first.
        for (i, text) in lines.iter().enumerate().rev() {
            let judged = judge_line(&judge, text.as_bytes(), i as u32).into_iter().collect();
            c.add(i as u32, judged).unwrap();
        }
        let resolved = c.resolve(&|_| verified).unwrap();
        resolved
            .lines
            .iter()
            .map(|l| {
                assert_eq!(l.verified, verified);
                let text = String::from_utf8(c.line(l.offset, l.len).unwrap()).unwrap();
                serde_json::from_str::<serde_json::Value>(&text).unwrap()["message_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn selected_lines_come_in_time_order_with_their_replies_next_to_them() {
        let lines = vec![
            line("b", 20, "bob", ""),
            line("a", 10, "alice", ""),
            line(
                "e",
                30,
                "bob",
                r#","msgtype":9000,"edit":{"message_id":"a","message":"x"}"#,
            ),
            line("c", 15, "alice", ""),
            line("z", 99, "bob", r#","edit":{"message_id":"b"}"#),
        ];
        let alice = Selection {
            sender: vec!["alice".into()],
            ..Selection::default()
        };
        // bob's edit of alice's message comes with it; bob's own messages do not.
        assert_eq!(run(alice, &lines, true), ["a", "e", "c"]);
        assert_eq!(run(Selection::default(), &lines, false), ["a", "e", "c", "b", "z"]);
    }

    #[test]
    fn a_participant_is_a_member_of_a_room_they_were_seen_in() {
        let lines = vec![
            line("q", 5, "bob", ""),
            line("w", 6, "carol", r#","vgroupid":"other""#),
            line("a", 9, "dan", ""),
        ];
        let dan = Selection {
            participant: vec!["DAN".into()],
            ..Selection::default()
        };
        assert_eq!(run(dan, &lines, true), ["q", "a"]);
    }

    #[test]
    fn the_same_line_twice_is_written_once() {
        let lines = vec![line("a", 1, "x", ""), line("a", 1, "x", "")];
        assert_eq!(run(Selection::default(), &lines, true), ["a"]);
    }
}
