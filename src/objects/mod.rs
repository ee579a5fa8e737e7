//! The bot's objects in S3 as every reader and the writer name them: a file's object key and the
//! bot's own object metadata. Below the sink, `decrypt`, `manifest::verify`, `shred` and `export`,
//! which all read what the sink wrote by these rules.

pub mod keys;
pub mod metadata;
