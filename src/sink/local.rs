//! The local sink: closed files stay where the spool closed them.

use super::Sink;
use crate::spool::ClosedFile;

/// Keeps files on local disk (the original's behaviour when no bucket is configured).
#[derive(Debug, Default)]
pub(crate) struct LocalSink;

impl Sink for LocalSink {
    async fn deliver(&mut self, file: ClosedFile) {
        tracing::debug!(file = %file.path.display(), bytes = file.bytes, kind = file.kind.as_str(), "kept locally");
    }
}
