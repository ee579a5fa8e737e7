//! Building AWS clients and reading their errors, shared by the S3 sink and the `decrypt` tool.

use std::sync::OnceLock;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig, timeout::TimeoutConfig};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::config::AssumeRole;

/// The role every client assumes (`WICKRIO_ROLE_ARN`), set once at start-up.
static ROLE: OnceLock<AssumeRole> = OnceLock::new();
/// The configuration with the role's credentials (and their cache), shared by every client: one
/// role session, renewed once for all of them before it expires.
static ROLE_CONFIG: tokio::sync::OnceCell<SdkConfig> = tokio::sync::OnceCell::const_new();

/// From now on every client of [`sdk_config`] uses credentials from STS AssumeRole of `role`, on
/// top of the default chain. Set once, before any client is built.
pub fn assume_role(role: AssumeRole) {
    if ROLE.set(role).is_err() {
        tracing::warn!("the role to assume was already set; keeping the first");
    }
}

/// Loads credentials and endpoint settings the standard way (environment, profile, container or
/// instance role; `AWS_ENDPOINT_URL`; `AWS_USE_FIPS_ENDPOINT`) for one region; with a role to
/// assume, its temporary credentials, which the SDK's identity cache renews before they expire.
pub async fn sdk_config(region: &str) -> SdkConfig {
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
    let Some(role) = ROLE.get() else {
        return loader().load().await;
    };
    // One configuration carries the role's credentials for every client: a loader wraps a given
    // provider anew each time (a new cache partition, so a new role session per client), a copy of
    // one configuration keeps the same provider and cache.
    let shared = ROLE_CONFIG
        .get_or_init(|| async {
            let base = loader().load().await;
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

/// An S3 client. A custom endpoint (an S3-compatible store or a test server, often on an IP
/// address) gets path-style addressing, which every such server understands.
pub fn s3_client(config: &SdkConfig) -> aws_sdk_s3::Client {
    let custom_endpoint = config.endpoint_url().is_some();
    let s3 = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(custom_endpoint)
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}

/// How soon a failed call is worth trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Network trouble, throttling, a server error: it will likely pass.
    Soon,
    /// Refused (no such bucket or key, access denied, key disabled): it needs an operator.
    Slowly,
}

/// A failed AWS call, described for an operator.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AwsFailure {
    pub retry: Retry,
    pub message: String,
    /// The service's error code (`KMSInvalidStateException`, `NoSuchKey`), when it answered: what
    /// callers match on, never the message's text.
    pub code: Option<String>,
}

impl AwsFailure {
    pub fn new(retry: Retry, message: impl Into<String>) -> Self {
        Self {
            retry,
            message: message.into(),
            code: None,
        }
    }

    /// Whether the service answered with this error code.
    pub fn is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

/// Error codes that no retry will fix without a change of configuration or permissions.
const REFUSALS: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "NoSuchBucket",
    "InvalidBucketName",
    "NotFoundException",
    "DisabledException",
    "KMSInvalidStateException",
    "InvalidKeyUsageException",
    "IncorrectKeyException",
    "InvalidCiphertextException",
    "UnrecognizedClientException",
];

/// 4xx error codes that pass on their own (a slow client, throttling, a clock or token refresh).
const TRANSIENT_CLIENT_ERRORS: &[&str] = &[
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
    "ExpiredToken",
    "ExpiredTokenException",
    "LimitExceededException",
    // Two conditional writes to one key at once: S3 says to retry.
    "ConditionalRequestConflict",
];

/// Describes a failed call: `what` says what was attempted (`"upload s3://b/k"`).
pub fn failure<E>(what: &str, error: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> AwsFailure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = match error {
        SdkError::ServiceError(e) => e.err().code().map(str::to_owned),
        _ => None,
    };
    let retry = match error {
        SdkError::ServiceError(e) => {
            let code = e.err().code().unwrap_or_default();
            let status = e.raw().status().as_u16();
            // A client error is a refusal of this request as it is (a key S3 will not take, a
            // policy, a missing key): retrying it soon cannot help. 408, 429 and throttling can.
            let client_error = (400..500).contains(&status) && status != 408 && status != 429;
            if REFUSALS.contains(&code) || (client_error && !TRANSIENT_CLIENT_ERRORS.contains(&code)) {
                Retry::Slowly
            } else {
                Retry::Soon
            }
        }
        // The request could not even be built: most often no credentials were found.
        SdkError::ConstructionFailure(_) => Retry::Slowly,
        _ => Retry::Soon,
    };
    AwsFailure {
        code,
        ..AwsFailure::new(retry, format!("cannot {what}: {}", one_line(error)))
    }
}

/// An operator's line for a failed call: a service's answer as its code, message and HTTP status
/// (the SDK's own rendering dumps every field of the error metadata, over a kilobyte per call);
/// anything else (no connection, no credentials, a timeout) as the SDK's chain of causes.
pub fn one_line<E>(error: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match error {
        SdkError::ServiceError(e) => {
            let status = e.raw().status().as_u16();
            match (e.err().code(), e.err().message()) {
                (Some(code), Some(message)) => format!("{code}: {message} (HTTP {status})"),
                (Some(code), None) => format!("{code} (HTTP {status})"),
                (None, _) => format!("HTTP {status} without an error code"),
            }
        }
        _ => DisplayErrorContext(error).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::config::http::HttpResponse;
    use aws_sdk_s3::error::ErrorMetadata;
    use aws_sdk_s3::operation::put_object::PutObjectError;
    use aws_sdk_s3::primitives::SdkBody;

    fn answered(status: u16, code: &str, message: &str) -> SdkError<PutObjectError, HttpResponse> {
        let meta = ErrorMetadata::builder()
            .code(code)
            .message(message)
            .custom("s3_extended_request_id", "x".repeat(200))
            .build();
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::service_error(PutObjectError::generic(meta), raw)
    }

    #[test]
    fn a_service_answer_is_one_short_line_with_code_message_and_status() {
        let e = failure("upload s3://b/k", &answered(403, "AccessDenied", "Access Denied"));
        assert_eq!(
            e.message,
            "cannot upload s3://b/k: AccessDenied: Access Denied (HTTP 403)"
        );
        assert_eq!(e.retry, Retry::Slowly);
        assert!(e.is("AccessDenied") && !e.is("Access Denied"));
    }

    #[test]
    fn throttling_and_server_errors_are_retried_soon_any_other_4xx_is_a_refusal() {
        assert_eq!(
            failure("x", &answered(503, "SlowDown", "Reduce your request rate")).retry,
            Retry::Soon
        );
        assert_eq!(failure("x", &answered(500, "InternalError", "oops")).retry, Retry::Soon);
        assert_eq!(
            failure("x", &answered(400, "RequestTimeout", "slow")).retry,
            Retry::Soon
        );
        assert_eq!(
            failure("x", &answered(400, "InvalidArgument", "bad header")).retry,
            Retry::Slowly
        );
    }
}
