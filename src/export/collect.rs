//! The lines an export keeps, and the order it writes them in.
//!
//! Files are read several at a time and in no order, and whether a line belongs in the export may
//! depend on lines read later (the message an edit refers to). So every line that may belong is
//! appended, as read, to a work file in the output directory, and only a small record of it stays in
//! memory (about 100 bytes); once every file is read, the records are resolved and sorted, and the
//! lines copied out in `msg_ts` order, with the edits, reactions and deletes of a selected message
//! right after it.
//!
//! Whether a participant is a member of a room may show in any file, whenever it was sent; so with
//! `--participant` the files are first read for that alone ([`Rooms::Finding`]: nothing kept but
//! the rooms), and only then for the lines, with the rooms known. Memory and the work file grow with
//! the lines an export keeps, never with the archive's size.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;
use std::num::NonZeroU64;
use std::sync::OnceLock;

use super::selection::{Judge, Verdict, read_line};

/// Each message's replies (by the message and their file's trust), in time order.
type Replies = HashMap<(Digest, Trust), Vec<u32>>;

/// A 64-bit digest standing for a string (an id, a room, a line), eight bytes a line in memory.
/// It is keyed at random for each run (SipHash), so no one can make two strings meet on purpose,
/// and where two meeting would lose a line (two lines taken for one) the bytes are compared.
type Digest = NonZeroU64;

fn digest(bytes: &[u8]) -> Digest {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    NonZeroU64::new(KEYS.get_or_init(RandomState::new).hash_one(bytes)).unwrap_or(NonZeroU64::MIN)
}

/// Why a line was kept, before every file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cond {
    Selected,
    /// Only an edit, reaction or delete in the period: kept if what it refers to is selected.
    IfReferred,
}

/// What memory holds of a kept line (56 bytes): its text is in the work file.
#[derive(Debug, Clone)]
struct Kept {
    /// `msg_ts` in microseconds (lines without one first).
    time: i64,
    /// The file's index and the line's number in it: ties in time keep the archive's order.
    order: (u32, u32),
    offset: u64,
    len: u32,
    cond: Cond,
    id: Option<Digest>,
    refers_to: Option<Digest>,
    line: Digest,
}

/// One line of a file, judged as it may belong in the export.
pub(crate) struct Judged {
    /// The line, without its newline.
    pub text: Vec<u8>,
    pub number: u32,
    cond: Cond,
    time: i64,
    id: Option<Digest>,
    refers_to: Option<Digest>,
}

/// What is known of the rooms a `--participant` is a member of.
pub(crate) enum Rooms {
    /// Being found: a line is read only for the room membership it shows, and never kept.
    Finding,
    /// Known, from files that checked out (so that no planted or altered file can bring a room's
    /// messages into the export).
    Known(HashSet<Digest>),
}

/// What one line is to the export.
pub(crate) enum Judgement {
    /// It may belong.
    Kept(Judged),
    /// It shows a participant is a member of this room (only while [`Rooms::Finding`]).
    Member(Digest),
    Dropped,
    /// Not a JSON object: no message line.
    NotJson,
}

/// Judges one line: whether it may belong in the export or, while the rooms are being found, what
/// it shows of room membership.
pub(crate) fn judge_line(judge: &Judge, rooms: &Rooms, text: &[u8], number: u32) -> Judgement {
    let Some(line) = read_line(text) else {
        return Judgement::NotJson;
    };
    let digest_of = |s: &Option<std::borrow::Cow<str>>| s.as_deref().map(|s| digest(s.as_bytes()));
    let known = match rooms {
        Rooms::Finding => {
            return match judge.shows_member(&line).then(|| digest_of(&line.room)).flatten() {
                Some(room) => Judgement::Member(room),
                None => Judgement::Dropped,
            };
        }
        Rooms::Known(known) => known,
    };
    let selected = match judge.judge(&line) {
        Verdict::Yes => true,
        Verdict::IfMember(room) => known.contains(&digest(room.as_bytes())),
        Verdict::No => false,
    };
    let cond = match selected {
        true => Cond::Selected,
        false if line.refers_to.is_some() && judge.in_period(&line) => Cond::IfReferred,
        false => return Judgement::Dropped,
    };
    // An id stands for a message within its room: an edit, reaction or delete refers to a message of
    // its own room, so a message in another room that takes the same id cannot take its history.
    let room = line.room.as_deref().unwrap_or_default();
    let scoped = |id: &Option<std::borrow::Cow<str>>| {
        id.as_deref()
            .map(|id| digest(&[room.as_bytes(), b"\0", id.as_bytes()].concat()))
    };
    let judged = Judged {
        text: text.to_vec(),
        number,
        cond,
        time: line.time.map_or(i64::MIN, |t| t.timestamp_micros()),
        id: scoped(&line.message_id),
        refers_to: scoped(&line.refers_to),
    };
    Judgement::Kept(judged)
}

/// The ids the lines of each trust level may refer to: built once for [`Collector::resolve`], apart
/// from it so that it stays short.
struct Targets {
    signed: HashSet<Digest>,
    unsigned: Option<HashSet<Digest>>,
    unverified: Option<HashSet<Digest>>,
}

impl Targets {
    fn new(kept: &[Kept], trust_of: &dyn Fn(&Kept) -> Trust) -> Targets {
        // A level no line is at has the same set as the level above it: only the others are built.
        let at = |t: Trust| {
            kept.iter()
                .any(|k| trust_of(k) == t)
                .then(|| reply_ids(kept, trust_of, t))
        };
        Targets {
            signed: reply_ids(kept, trust_of, Trust::Signed),
            unsigned: at(Trust::Unsigned),
            unverified: at(Trust::Unverified),
        }
    }

    /// The ids a line of a file trusted `t` may refer to.
    fn of(&self, t: Trust) -> &HashSet<Digest> {
        match t {
            Trust::Signed => &self.signed,
            Trust::Unsigned => self.unsigned.as_ref().unwrap_or(&self.signed),
            Trust::Unverified => self
                .unverified
                .as_ref()
                .or(self.unsigned.as_ref())
                .unwrap_or(&self.signed),
        }
    }

    /// Each selected message's replies, in time order, by the message and their file's trust; and
    /// the selected lines that reply to none, in time order (each the root of a tree).
    fn replies(&self, kept: &[Kept], trust_of: &dyn Fn(&Kept) -> Trust) -> (Replies, Vec<u32>) {
        let mut sorted: Vec<u32> = (0..kept.len() as u32).collect();
        sorted.sort_unstable_by_key(|i| (kept[*i as usize].time, kept[*i as usize].order));
        // Each selected message's replies, in time order, apart by their file's trust: a reply
        // follows only a message trusted at least as much, so that no line of a planted or altered
        // file (one that takes a signed message's id, say) can move a signed line.
        let mut replies: Replies = HashMap::new();
        let mut top = Vec::new();
        for &i in &sorted {
            let k = &kept[i as usize];
            let targets = self.of(trust_of(k));
            match k.refers_to.filter(|r| targets.contains(r) && Some(*r) != k.id) {
                Some(target) => replies.entry((target, trust_of(k))).or_default().push(i),
                None if k.cond == Cond::Selected => top.push(i),
                None => {}
            }
        }
        (replies, top)
    }
}

/// The ids of the selected messages of files trusted at least `at_least`, and of the lines of such
/// files that refer to them, and to those... Apart from [`Targets::new`], which builds it for each
/// level.
fn reply_ids(kept: &[Kept], trust_of: &dyn Fn(&Kept) -> Trust, at_least: Trust) -> HashSet<Digest> {
    let counted = |k: &&Kept| trust_of(k) >= at_least;
    let mut ids: HashSet<Digest> = kept
        .iter()
        .filter(counted)
        .filter(|k| k.cond == Cond::Selected)
        .filter_map(|k| k.id)
        .collect();
    loop {
        let before = ids.len();
        for k in kept.iter().filter(counted) {
            if let (Some(id), Some(target)) = (k.id, k.refers_to)
                && ids.contains(&target)
            {
                ids.insert(id);
            }
        }
        if ids.len() == before {
            return ids;
        }
    }
}

/// Puts the lines in their written order, tree by tree: what [`Collector::resolve`] carries from one
/// tree to the next, apart from it so that it stays short.
struct Emitter<'a> {
    kept: &'a [Kept],
    trust_of: &'a dyn Fn(&Kept) -> Trust,
    /// The lines that are the same line again: counted, not written.
    duplicate: Vec<bool>,
    emitted: Vec<bool>,
    out: Resolved,
}

impl Emitter<'_> {
    /// Writes the tree from `root`, taking each line's replies out of `replies`.
    fn emit_tree(&mut self, root: u32, replies: &mut HashMap<(Digest, Trust), Vec<u32>>) {
        let (kept, trust_of) = (self.kept, self.trust_of);
        // Depth first, each line's replies after it; a line is written once, so a cycle of
        // replies ends.
        let mut stack = vec![root];
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut self.emitted[i as usize], true) {
                continue;
            }
            let k = &kept[i as usize];
            if self.duplicate[i as usize] {
                self.out.duplicates += 1;
            } else {
                self.out.lines.push(OutLine {
                    offset: k.offset,
                    len: k.len,
                    trust: trust_of(k),
                    related: k.cond != Cond::Selected,
                });
            }
            if let Some(id) = k.id {
                let mut children = Vec::new();
                for t in [Trust::Unverified, Trust::Unsigned, Trust::Signed] {
                    if t <= trust_of(k) {
                        children.extend(replies.remove(&(id, t)).unwrap_or_default());
                    }
                }
                children.sort_unstable_by_key(|i| (kept[*i as usize].time, kept[*i as usize].order));
                stack.extend(children.into_iter().rev());
            }
        }
    }
}

/// The lines kept so far.
pub(crate) struct Collector {
    work: BufWriter<File>,
    work_path: PathBuf,
    written: u64,
    kept: Vec<Kept>,
}

/// What a file is to the export, least trusted first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Trust {
    /// It failed its check, or no signed entry lists it: its lines go to `unverified/`.
    Unverified = 0,
    /// No signed entry lists it, and `--unsigned-source` takes it: its lines are in the output,
    /// marked.
    Unsigned = 1,
    /// Its signed entry vouches for it.
    Signed = 2,
}

impl Trust {
    /// Whether its lines are in the main output.
    pub(crate) fn is_output(self) -> bool {
        self != Trust::Unverified
    }
}

/// A line to write: where it is in the work file, what its file is, and whether it is there only
/// for the selected message it refers to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutLine {
    pub offset: u64,
    pub len: u32,
    pub trust: Trust,
    pub related: bool,
}

/// The lines in the order they are written.
pub(crate) struct Resolved {
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
        })
    }

    /// Adds a kept line of file number `file`.
    pub fn add(&mut self, file: u32, judged: Judged) -> std::io::Result<()> {
        self.work.write_all(&judged.text)?;
        self.kept.push(Kept {
            time: judged.time,
            order: (file, judged.number),
            offset: self.written,
            len: u32::try_from(judged.text.len()).unwrap_or(u32::MAX),
            id: judged.id,
            refers_to: judged.refers_to,
            cond: judged.cond,
            line: digest(&judged.text),
        });
        self.written += judged.text.len() as u64;
        Ok(())
    }

    /// Decides every kept line and orders them. `trust(file)` says what a file is. What memory
    /// held of the lines is let go: the lines are read back from the work file.
    ///
    /// A line that refers to a selected message (an edit, a reaction, a delete, or an edit of an
    /// edit) is written right after it; a line is attached only to a message its file is trusted at
    /// least as much as, so an altered, planted or unsigned file cannot move or hide a signed line.
    pub fn resolve(&mut self, trust: &dyn Fn(u32) -> Trust) -> std::io::Result<Resolved> {
        self.work.flush()?;
        let kept = std::mem::take(&mut self.kept);
        let trust_of = |k: &Kept| trust(k.order.0);
        let targets = Targets::new(&kept, &trust_of);
        let (mut replies, top) = targets.replies(&kept, &trust_of);
        let duplicate = self.duplicates(&kept, &trust_of)?;
        let mut emitter = Emitter {
            kept: &kept,
            trust_of: &trust_of,
            duplicate,
            emitted: vec![false; kept.len()],
            out: Resolved {
                lines: Vec::new(),
                duplicates: 0,
            },
        };
        for i in top {
            emitter.emit_tree(i, &mut replies);
        }
        // Replies whose message was itself only a reply's reply already came out; any left (their
        // message is in no tree: a cycle) come out in time order.
        let mut left: Vec<u32> = replies.into_values().flatten().collect();
        left.sort_unstable_by_key(|i| (kept[*i as usize].time, kept[*i as usize].order));
        let mut none = HashMap::new();
        for i in left {
            emitter.emit_tree(i, &mut none);
        }
        Ok(emitter.out)
    }

    /// Which lines are the same line again (a producer re-sent it), of a file trusted the same: all
    /// but the first in the archive's order, which is the one written. Lines are grouped by digest
    /// and trust, and within a group compared byte for byte.
    fn duplicates(&self, kept: &[Kept], trust_of: &dyn Fn(&Kept) -> Trust) -> std::io::Result<Vec<bool>> {
        let mut duplicate = vec![false; kept.len()];
        let mut by_line: Vec<u32> = (0..kept.len() as u32).collect();
        by_line.sort_unstable_by_key(|i| {
            let k = &kept[*i as usize];
            (k.line, trust_of(k), k.time, k.order)
        });
        for group in by_line.chunk_by(|a, b| {
            let (a, b) = (&kept[*a as usize], &kept[*b as usize]);
            (a.line, trust_of(a)) == (b.line, trust_of(b))
        }) {
            if group.len() < 2 {
                continue;
            }
            let mut firsts: Vec<Vec<u8>> = Vec::new();
            for &i in group {
                let text = self.line(kept[i as usize].offset, kept[i as usize].len)?;
                match firsts.contains(&text) {
                    true => duplicate[i as usize] = true,
                    false => firsts.push(text),
                }
            }
        }
        Ok(duplicate)
    }

    /// The line at `offset`, `len` bytes long, of the work file.
    pub fn line(&self, offset: u64, len: u32) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        self.work.get_ref().read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    pub fn path(&self) -> &Path {
        &self.work_path
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
        // First the rooms, then the lines; read "in no order": the last line first.
        let mut rooms = HashSet::new();
        for text in lines {
            if let Judgement::Member(room) = judge_line(&judge, &Rooms::Finding, text.as_bytes(), 0) {
                rooms.insert(room);
            }
        }
        let rooms = Rooms::Known(rooms);
        for (i, text) in lines.iter().enumerate().rev() {
            match judge_line(&judge, &rooms, text.as_bytes(), i as u32) {
                Judgement::Kept(judged) => c.add(i as u32, judged).unwrap(),
                Judgement::Member(_) => unreachable!("rooms are known"),
                Judgement::Dropped | Judgement::NotJson => {}
            }
        }
        let trust = if verified { Trust::Signed } else { Trust::Unverified };
        let resolved = c.resolve(&|_| trust).unwrap();
        resolved
            .lines
            .iter()
            .map(|l| {
                assert_eq!(l.trust, trust);
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
            line("z", 99, "bob", r#","msgtype":9100,"edit":{"message_id":"b"}"#),
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
    fn a_message_brings_its_replies_thread_votes_and_thumbnail_along() {
        let lines = vec![
            line("q", 10, "alice", ""),
            line("r", 20, "bob", r#","reply_to":"q""#),
            line("t", 30, "carol", r#","thread_root":"q""#),
            line("v", 40, "dan", r#","poll":{"kind":"response","message_id":"q"}"#),
            line(
                "h",
                11,
                "alice",
                r#","msgtype":6000,"file":{"filename":"x.jpg","thumbnail_of":"q"}"#,
            ),
            line("o", 50, "bob", ""),
        ];
        let alice = Selection {
            sender: vec!["alice".into()],
            ..Selection::default()
        };
        assert_eq!(run(alice, &lines, true), ["q", "h", "r", "t", "v"]);
        // Present in the room when a message was sent: a participant in it.
        let lines = vec![
            line("p", 10, "alice", r#","room_members":["alice","Erin"]"#),
            line("n", 20, "alice", r#","vgroupid":"elsewhere""#),
        ];
        let erin = Selection {
            participant: vec!["erin".into()],
            ..Selection::default()
        };
        assert_eq!(run(erin, &lines, true), ["p"]);
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
    fn a_room_line_is_kept_only_once_its_room_is_known_to_be_a_participants() {
        let dan = Judge::new(&Selection {
            participant: vec!["dan".into()],
            ..Selection::default()
        })
        .unwrap();
        let (bobs, dans) = (line("q", 5, "bob", ""), line("a", 9, "dan", ""));
        let kept = |rooms: &Rooms, text: &str| match judge_line(&dan, rooms, text.as_bytes(), 0) {
            Judgement::Kept(_) => "kept",
            Judgement::Member(_) => "member",
            Judgement::Dropped => "dropped",
            Judgement::NotJson => "not json",
        };
        // While the rooms are found nothing is kept, whatever the line.
        assert_eq!(
            (kept(&Rooms::Finding, &bobs), kept(&Rooms::Finding, &dans)),
            ("dropped", "member")
        );
        // Then a room's line is kept only if the room is a participant's: memory and the work file
        // hold what is exported, not every line of every room.
        assert_eq!(kept(&Rooms::Known(HashSet::new()), &bobs), "dropped");
        assert_eq!(kept(&Rooms::Known(HashSet::from([digest(b"R")])), &bobs), "kept");
    }

    #[test]
    fn an_edit_of_an_edit_follows_it_and_a_cycle_of_replies_ends() {
        let lines = vec![
            line("a", 1, "x", ""),
            line("e1", 2, "y", r#","msgtype":9000,"edit":{"message_id":"a"}"#),
            line("e2", 3, "z", r#","msgtype":9000,"edit":{"message_id":"e1"}"#),
            line("p", 4, "x", r#","msgtype":9000,"edit":{"message_id":"q"}"#),
            line("q", 5, "x", r#","msgtype":9000,"edit":{"message_id":"p"}"#),
        ];
        let x = Selection {
            sender: vec!["x".into()],
            ..Selection::default()
        };
        // e1 and e2 are not x's but refer to what is (e2 through e1); p and q refer to each other.
        let got = run(x, &lines, true);
        assert_eq!(&got[..3], ["a", "e1", "e2"]);
        let mut rest = got[3..].to_vec();
        rest.sort();
        assert_eq!(rest, ["p", "q"]);
    }

    #[test]
    fn an_id_is_its_rooms_own_and_only_edits_reactions_and_deletes_refer() {
        let lines = vec![
            line("a", 10, "vic", ""),
            // The same id in another room, sent "earlier": it takes nothing of a's.
            line("a", 5, "eve", r#","vgroupid":"OTHER""#),
            line("e", 20, "vic", r#","msgtype":9000,"edit":{"message_id":"a"}"#),
            // A text line carrying an `edit`: a message of its own, not a's.
            line("t", 11, "eve", r#","edit":{"message_id":"a"}"#),
        ];
        let got = run(Selection::default(), &lines, true);
        assert_eq!(got, ["a", "a", "e", "t"]);
    }

    #[test]
    fn the_same_line_twice_is_written_once() {
        let lines = vec![line("a", 1, "x", ""), line("a", 1, "x", "")];
        assert_eq!(run(Selection::default(), &lines, true), ["a"]);
    }
}
