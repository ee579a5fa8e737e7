//! Bounds on what a multipart parser buffers whole. multer searches for the first boundary and for
//! the end of each part's headers by buffering until it finds them, so a body that never sends one
//! (`Content-Type: multipart/form-data; boundary=x`, then 300 MiB of anything) would be held whole.
//! This follows the body as it streams past and refuses it once a preamble or a part's headers run
//! past [`MAX_FRAMING`] bytes; part contents are not limited here (the handlers limit those).
//! Written by hand because no multipart crate bounds its preamble and header buffering.

use memchr::memmem::Finder;

/// Largest preamble (before the first boundary) and largest headers of one part.
pub const MAX_FRAMING: usize = 16 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before the first boundary.
    Preamble,
    /// After a boundary, until the blank line that ends the part's headers.
    Headers,
    /// A part's content, until the next boundary.
    Content,
}

pub struct Framing {
    first: Finder<'static>,
    headers_end: Finder<'static>,
    next: Finder<'static>,
    stage: Stage,
    /// Bytes seen in the current preamble or headers.
    since: usize,
    /// The last bytes of the previous chunk, for a marker split across two chunks.
    carry: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
#[error("the multipart body has more than {MAX_FRAMING} bytes of {0} (is its boundary right?)")]
pub struct FramingError(&'static str);

impl Framing {
    pub fn new(boundary: &str) -> Self {
        Self {
            first: Finder::new(format!("--{boundary}").as_bytes()).into_owned(),
            headers_end: Finder::new(b"\r\n\r\n").into_owned(),
            next: Finder::new(format!("\r\n--{boundary}").as_bytes()).into_owned(),
            stage: Stage::Preamble,
            since: 0,
            carry: Vec::new(),
        }
    }

    /// Follows the next chunk of the body.
    pub fn follow(&mut self, chunk: &[u8]) -> Result<(), FramingError> {
        let mut rest = chunk;
        while let Some(end) = self.find(rest) {
            self.stage = match self.stage {
                Stage::Preamble | Stage::Content => Stage::Headers,
                Stage::Headers => Stage::Content,
            };
            self.since = 0;
            self.carry.clear();
            rest = &rest[end..];
        }
        if self.stage != Stage::Content {
            self.since += rest.len();
            if self.since > MAX_FRAMING {
                return Err(FramingError(match self.stage {
                    Stage::Preamble => "preamble before the first boundary",
                    _ => "part headers",
                }));
            }
        }
        self.keep_tail(rest);
        Ok(())
    }

    fn finder(&self) -> &Finder<'static> {
        match self.stage {
            Stage::Preamble => &self.first,
            Stage::Headers => &self.headers_end,
            Stage::Content => &self.next,
        }
    }

    /// Where in `chunk` the current stage's marker ends, counting one that began in the carry.
    fn find(&self, chunk: &[u8]) -> Option<usize> {
        let finder = self.finder();
        let n = finder.needle().len();
        if !self.carry.is_empty() {
            let head = &chunk[..chunk.len().min(n - 1)];
            let mut window = self.carry.clone();
            window.extend_from_slice(head);
            if let Some(i) = finder.find(&window) {
                return Some(i + n - self.carry.len());
            }
        }
        finder.find(chunk).map(|i| i + n)
    }

    fn keep_tail(&mut self, rest: &[u8]) {
        let keep = self.finder().needle().len() - 1;
        self.carry.extend_from_slice(rest);
        let drop = self.carry.len().saturating_sub(keep);
        self.carry.drain(..drop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follow_in(pieces: &[&[u8]]) -> Result<Stage, FramingError> {
        let mut f = Framing::new("XyZ");
        for p in pieces {
            f.follow(p)?;
        }
        Ok(f.stage)
    }

    #[test]
    fn a_normal_body_passes_in_any_cut() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"message\"\r\n\r\n{}\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n".to_vec();
        let mut content = body.clone();
        content.extend(vec![7u8; 100_000]);
        content.extend_from_slice(b"\r\n--XyZ--\r\n");
        for cut in [1, 2, 3, 5, 7, 64, 4096] {
            let pieces: Vec<&[u8]> = content.chunks(cut).collect();
            assert_eq!(follow_in(&pieces).unwrap(), Stage::Headers, "cut {cut}");
        }
    }

    #[test]
    fn a_body_without_its_boundary_is_refused_early() {
        let junk = vec![b'a'; MAX_FRAMING + 1];
        assert!(follow_in(&[&junk]).unwrap_err().to_string().contains("preamble"));
        let mut endless_headers = b"--XyZ\r\n".to_vec();
        endless_headers.extend(vec![b'h'; MAX_FRAMING + 1]);
        assert!(
            follow_in(&[&endless_headers])
                .unwrap_err()
                .to_string()
                .contains("headers")
        );
    }
}
