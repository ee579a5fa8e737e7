//! The signed, hash-chained manifest: the archive's proof of completeness. `entry` is the format
//! (one signed JSON line per closed file), `stage` the pipeline step that lists every closed file
//! before its sink sees it, and `verify` the offline check anyone with the public key can run.

pub mod entry;
pub mod head;
pub mod shred_record;
pub mod stage;
pub mod verify;

pub use entry::EntryBody;
pub use entry::{Entry, line_hash};
pub(crate) use entry::{MANIFEST_BASENAME, file_facts, is_manifest_name};
pub(crate) use stage::ManifestWriter;
