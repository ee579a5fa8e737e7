//! The signed, hash-chained manifest: the archive's proof of completeness. `entry` is the format
//! (one signed JSON line per closed file), `stage` the pipeline step that lists every closed file
//! before its sink sees it, and `verify` the offline check anyone with the public key can run.

pub mod entry;
pub mod head;
mod sink;
pub mod stage;
pub mod verify;

pub use entry::{Entry, EntryBody, FileFacts, GENESIS, MANIFEST_BASENAME, file_facts, is_manifest_name, line_hash};
pub use sink::ManifestSink;
pub use stage::{ManifestError, ManifestWriter};
