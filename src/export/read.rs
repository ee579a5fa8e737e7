//! Reading the planned files: each on a task of its own, a few at once (so parsing runs on every
//! core), each line judged as it streams and every line that may belong sent on at once to the one
//! collector, through a bounded channel: memory holds a few chunks per file being read and the
//! channel's lines, whatever the files' sizes.

use std::sync::Arc;

use futures_util::StreamExt as _;
use sha2::{Digest, Sha256};

use super::archive::{Place, Source};
use super::collect::{Judged, Judgement, Rooms, judge_line};
use super::selection::Judge;
use crate::decrypt::ObjectError;

/// Files read at once.
const AT_ONCE: usize = 4;
/// Lines waiting for the collector, at most.
const QUEUED_LINES: usize = 4096;
/// The longest line read: a longer one (no message is) is skipped and reported.
pub(crate) const MAX_LINE: usize = 64 << 20;

/// What a reader tells the collector.
pub enum Event {
    /// A line of file `file` that may belong in the export.
    Line(u32, Judged),
    /// File `file` was read through.
    Done(u32, Box<FileRead>),
}

/// What reading a file showed, once it ended.
#[derive(Default)]
pub(crate) struct FileRead {
    pub plain_len: u64,
    pub sha256: String,
    pub error: Option<ObjectError>,
    /// Lines over [`MAX_LINE`], skipped.
    pub long_lines: usize,
    /// Lines that are not JSON objects.
    pub not_json: usize,
    /// Rooms the file shows participants to be members of (read with [`Rooms::Finding`]).
    pub rooms: Vec<std::num::NonZeroU64>,
}

/// Channel capacity for [`read_all`]'s events.
pub fn channel() -> (flume::Sender<Event>, flume::Receiver<Event>) {
    flume::bounded(QUEUED_LINES)
}

/// Reads `to_read` (indices into `sources`) and sends what they hold on `events`; stops early when
/// the receiver is gone.
pub async fn read_all(
    place: Arc<Place>,
    judge: Arc<(Judge, Rooms)>,
    sources: Arc<[Source]>,
    to_read: Vec<usize>,
    events: flume::Sender<Event>,
) {
    let tasks = to_read.into_iter().map(|i| {
        let (place, judge, sources, events) = (place.clone(), judge.clone(), sources.clone(), events.clone());
        tokio::spawn(async move {
            let number = u32::try_from(i).unwrap_or(u32::MAX);
            let read = read_file(&place, &sources[i], &judge.0, &judge.1, number, &events).await;
            let _ = events.send_async(Event::Done(number, Box::new(read))).await;
        })
    });
    futures_util::stream::iter(tasks)
        .buffer_unordered(AT_ONCE)
        .for_each(|_| async {})
        .await;
}

/// Reads one file through: its lines judged and sent on, its plaintext hashed.
async fn read_file(
    place: &Place,
    source: &Source,
    judge: &Judge,
    rooms: &Rooms,
    file: u32,
    events: &flume::Sender<Event>,
) -> FileRead {
    let mut read = FileRead::default();
    let mut hasher = Sha256::new();
    let mut lines = Lines {
        carry: Vec::new(),
        number: 0,
        too_long: false,
    };
    let result: Result<(), ObjectError> = async {
        let mut reader = place.open(source).await?;
        while let Some(chunk) = reader.next().await? {
            hasher.update(&chunk);
            read.plain_len += chunk.len() as u64;
            for (number, line) in lines.split(&chunk, &mut read) {
                take(judge, rooms, &line, number, file, &mut read, events).await;
            }
            if events.is_disconnected() {
                return Ok(());
            }
        }
        reader.finish()
    }
    .await;
    if let Some((number, line)) = lines.rest(&mut read) {
        take(judge, rooms, &line, number, file, &mut read, events).await;
    }
    read.sha256 = hex::encode(hasher.finalize());
    read.error = result.err();
    read
}

async fn take(
    judge: &Judge,
    rooms: &Rooms,
    line: &[u8],
    number: u32,
    file: u32,
    read: &mut FileRead,
    events: &flume::Sender<Event>,
) {
    match judge_line(judge, rooms, line, number) {
        Judgement::Kept(judged) => {
            let _ = events.send_async(Event::Line(file, judged)).await;
        }
        Judgement::Member(room) => read.rooms.push(room),
        Judgement::Dropped => {}
        Judgement::NotJson => read.not_json += 1,
    }
}

/// A file's lines as its chunks arrive.
struct Lines {
    carry: Vec<u8>,
    number: u32,
    too_long: bool,
}

impl Lines {
    /// The whole lines `chunk` ends (numbered), keeping the part of the last for the next chunk.
    fn split(&mut self, chunk: &[u8], read: &mut FileRead) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            self.number += 1;
            if self.too_long {
                read.long_lines += 1;
            } else {
                self.carry.extend_from_slice(&rest[..end]);
                out.push((self.number, std::mem::take(&mut self.carry)));
            }
            self.carry.clear();
            self.too_long = false;
            rest = &rest[end + 1..];
        }
        if self.carry.len() + rest.len() > MAX_LINE {
            self.too_long = true;
            self.carry = Vec::new();
        } else if !self.too_long {
            self.carry.extend_from_slice(rest);
        }
        out
    }

    /// A last line without a newline.
    fn rest(&mut self, read: &mut FileRead) -> Option<(u32, Vec<u8>)> {
        if self.too_long {
            read.long_lines += 1;
            return None;
        }
        (!self.carry.is_empty()).then(|| (self.number + 1, std::mem::take(&mut self.carry)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_chunks_come_whole_and_numbered() {
        let mut lines = Lines {
            carry: Vec::new(),
            number: 0,
            too_long: false,
        };
        let mut read = FileRead::default();
        let mut got = lines.split(b"ab\ncd", &mut read);
        got.extend(lines.split(b"e\nf", &mut read));
        got.extend(lines.rest(&mut read));
        assert_eq!(got, [(1, b"ab".to_vec()), (2, b"cde".to_vec()), (3, b"f".to_vec())]);
    }
}
