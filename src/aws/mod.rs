//! Building AWS clients and reading their errors, shared by the S3 sink, the sources, the reports
//! and the tools.

mod failure;

use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig, timeout::TimeoutConfig};

pub use failure::{AwsFailure, Retry, ServiceAnswer, failure};

/// The role every client assumes (`WICKRIO_ROLE_ARN`): STS AssumeRole on top of the default chain,
/// for writing to another account's bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRole {
    pub arn: String,
    /// Shown in the other account's CloudTrail.
    pub session_name: String,
    /// What the role's trust policy may require (`sts:ExternalId`).
    pub external_id: Option<String>,
}

/// How this process reaches AWS: built once at start-up and handed to whoever builds clients, so
/// that every client shares one credential chain (one role session, when a role is assumed).
#[derive(Debug, Clone, Default)]
pub struct Aws {
    role: Option<AssumeRole>,
    /// The configuration loaded once, with its credentials provider and cache, shared by every
    /// client: credentials are fetched (or the role assumed) once for all of them, and renewed once
    /// before they expire.
    shared: Arc<tokio::sync::OnceCell<SdkConfig>>,
}

impl Aws {
    /// Clients with the default credential chain, or the given role's on top of it.
    pub fn new(role: Option<AssumeRole>) -> Self {
        Self {
            role,
            shared: Arc::default(),
        }
    }

    /// Loads credentials and endpoint settings the standard way (environment, profile, container or
    /// instance role; `AWS_ENDPOINT_URL`; `AWS_USE_FIPS_ENDPOINT`) once, and gives that configuration
    /// for one region; with a role to assume, its temporary credentials, which the SDK's identity
    /// cache renews before they expire.
    pub async fn sdk_config(&self, region: &str) -> SdkConfig {
        let loader = || {
            aws_config::defaults(BehaviorVersion::latest())
                .region(Region::new(region.to_owned()))
                .timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(Duration::from_secs(10))
                        // One attempt of one request: a part of at most a few MiB, or a small call.
                        .operation_attempt_timeout(Duration::from_secs(300))
                        .build(),
                )
        };
        // A copy of one configuration keeps the same provider and cache; a loader would wrap a
        // provider anew each time (a new cache partition: new credentials, a new role session).
        let shared = self
            .shared
            .get_or_init(|| async {
                let base = loader().load().await;
                let Some(role) = &self.role else {
                    return base;
                };
                let mut assume = aws_config::sts::AssumeRoleProvider::builder(&role.arn)
                    .session_name(&role.session_name)
                    .region(Region::new(region.to_owned()));
                if let Some(id) = &role.external_id {
                    assume = assume.external_id(id);
                }
                let provider = assume.configure(&base).build().await;
                loader().credentials_provider(provider).load().await
            })
            .await;
        shared.to_builder().region(Region::new(region.to_owned())).build()
    }

    /// An S3 client for one region.
    pub async fn s3(&self, region: &str) -> aws_sdk_s3::Client {
        s3_client(&self.sdk_config(region).await)
    }
}

/// An S3 client. A custom endpoint (an S3-compatible store or a test server, often on an IP
/// address) gets path-style addressing, which every such server understands.
pub(crate) fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    let custom_endpoint = config.endpoint_url().is_some();
    let s3 = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(custom_endpoint)
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}
