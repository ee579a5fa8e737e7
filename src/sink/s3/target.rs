//! Where an object goes and what it says about itself: what the upload and its create-only check
//! (`create_only.rs`) both take, so that neither needs the other for it.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_s3::Client;

use crate::config::ObjectLock;
use crate::metrics::Metrics;

/// Where an object goes and what it says about itself.
pub struct Target<'a> {
    pub client: &'a Client,
    pub bucket: &'a str,
    pub key: &'a str,
    pub metadata: HashMap<String, String>,
    /// Counts every part (or single object) S3 accepts: the watchdog's measure of progress.
    pub metrics: &'a Arc<Metrics>,
    /// Object Lock retention, counted from when the file was closed (its last modification).
    pub lock: Option<ObjectLock>,
}
