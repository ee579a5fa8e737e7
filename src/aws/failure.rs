//! A failed AWS call, typed: what was attempted, the service's error code and HTTP status when it
//! answered, and whether trying again soon can help. Callers match on the code, never on text.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// How soon a failed call is worth trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Network trouble, throttling, a server error: it will likely pass.
    Soon,
    /// Refused (no such bucket or key, access denied, key disabled): it needs an operator.
    Slowly,
}

/// A failed AWS call. Its message says what was attempted; the cause (the service's answer, or
/// the SDK's error when no answer came) is its `source()`, printed by whoever reports the chain.
#[derive(Clone)]
pub struct AwsFailure {
    /// What was attempted, as an operator reads it: `upload s3://b/k`.
    pub operation: String,
    /// The service's error code (`KMSInvalidStateException`, `NoSuchKey`), when it answered.
    pub code: Option<String>,
    /// The HTTP status of the service's answer, when it answered.
    pub status: Option<u16>,
    pub retry: Retry,
    /// Shared, so that a failure can be cloned (one failed key lookup answers every file waiting on it).
    cause: Arc<dyn Error + Send + Sync>,
}

/// By hand: the SDK's error may hold the raw HTTP response (its body too, when it could not be
/// parsed: a secret's value, a data key), which a derived `Debug` would print. This shows what the
/// operator's line shows, and the typed fields.
impl fmt::Debug for AwsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsFailure")
            .field("operation", &self.operation)
            .field("code", &self.code)
            .field("status", &self.status)
            .field("retry", &self.retry)
            .field("chain", &crate::error_chain::chain(self))
            .finish()
    }
}

impl fmt::Display for AwsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot {}", self.operation)
    }
}

/// By hand rather than derived: the cause is the error inside the `Arc`, so that callers can
/// downcast it (`ServiceAnswer`, the SDK's error).
impl Error for AwsFailure {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.cause as &(dyn Error + 'static))
    }
}

/// What the service answered: its code, message and status. The SDK's own error is kept with it
/// (`sdk_error`) but not chained: its `Display` chain repeats the code and dumps every field of the
/// error metadata, over a kilobyte a call.
pub struct ServiceAnswer {
    pub code: Option<String>,
    pub message: Option<String>,
    pub status: u16,
    sdk: Box<dyn Error + Send + Sync>,
}

impl ServiceAnswer {
    /// The SDK's error, for whoever needs more than code, message and status.
    pub fn sdk_error(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.sdk
    }
}

/// By hand, for the reason `AwsFailure`'s is: the SDK's error holds the raw response.
impl fmt::Debug for ServiceAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAnswer")
            .field("code", &self.code)
            .field("message", &self.message)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ServiceAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.status;
        match (&self.code, &self.message) {
            (Some(code), Some(message)) => write!(f, "{code}: {message} (HTTP {status})"),
            (Some(code), None) => write!(f, "{code} (HTTP {status})"),
            (None, _) => write!(f, "HTTP {status} without an error code"),
        }
    }
}

impl Error for ServiceAnswer {}

/// Why a call that AWS did not refuse still failed (an answer without what it must hold).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unexpected(String);

impl AwsFailure {
    /// A failure the bot found in an answer (or before sending), not one the SDK reported: `why`
    /// becomes its cause.
    pub fn new(retry: Retry, operation: impl Into<String>, why: impl Into<String>) -> Self {
        Self::caused_by(retry, operation, Unexpected(why.into()))
    }

    /// A failure with a given cause.
    pub(crate) fn caused_by(
        retry: Retry,
        operation: impl Into<String>,
        cause: impl Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            operation: operation.into(),
            code: None,
            status: None,
            retry,
            cause: Arc::new(cause),
        }
    }

    /// The same failure with a service code of the bot's own (see `envelope::PERIOD_KEY_UNUSABLE`),
    /// for callers that match on codes.
    pub(crate) fn with_code(mut self, code: &str) -> Self {
        self.code = Some(code.to_owned());
        self
    }

    /// The same failure, to be retried as the caller knows best (it knows what the call was for).
    pub(crate) fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// The same failure, its operation told more fully (`…; do it by hand NOW`).
    pub(crate) fn with_operation(mut self, operation: impl Into<String>) -> Self {
        self.operation = operation.into();
        self
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

/// Whether a service's answer is worth retrying soon: a client error is a refusal of this request as
/// it is (a key S3 will not take, a policy, a missing key) and retrying it soon cannot help; 408,
/// 429 and throttling can.
fn retry_for(code: Option<&str>, status: u16) -> Retry {
    let code = code.unwrap_or_default();
    let client_error = (400..500).contains(&status) && status != 408 && status != 429;
    if REFUSALS.contains(&code) || (client_error && !TRANSIENT_CLIENT_ERRORS.contains(&code)) {
        Retry::Slowly
    } else {
        Retry::Soon
    }
}

/// Describes a failed call: `operation` says what was attempted (`"upload s3://b/k"`).
pub fn failure<E>(operation: &str, error: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> AwsFailure
where
    E: ProvideErrorMetadata + Error + Send + Sync + 'static,
{
    match error {
        SdkError::ServiceError(e) => {
            let status = e.raw().status().as_u16();
            let code = e.err().code().map(str::to_owned);
            let message = e.err().message().map(str::to_owned);
            AwsFailure {
                operation: operation.to_owned(),
                retry: retry_for(code.as_deref(), status),
                status: Some(status),
                cause: Arc::new(ServiceAnswer {
                    code: code.clone(),
                    message,
                    status,
                    sdk: Box::new(e.into_err()),
                }),
                code,
            }
        }
        other => AwsFailure {
            operation: operation.to_owned(),
            // The request could not even be built: most often no credentials were found.
            retry: if matches!(other, SdkError::ConstructionFailure(_)) {
                Retry::Slowly
            } else {
                Retry::Soon
            },
            code: None,
            status: None,
            cause: Arc::new(other),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_chain::Chain;
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
    fn a_service_answer_keeps_operation_code_status_and_the_sdk_error_and_reads_as_one_short_line() {
        let e = failure("upload s3://b/k", answered(403, "AccessDenied", "Access Denied"));
        assert_eq!(e.to_string(), "cannot upload s3://b/k");
        assert_eq!(
            Chain(&e).to_string(),
            "cannot upload s3://b/k: AccessDenied: Access Denied (HTTP 403)"
        );
        assert_eq!(
            (e.code.as_deref(), e.status, e.retry),
            (Some("AccessDenied"), Some(403), Retry::Slowly)
        );
        assert!(e.is("AccessDenied") && !e.is("Access Denied"));
        let answer = e.source().and_then(|s| s.downcast_ref::<ServiceAnswer>()).unwrap();
        assert!(answer.sdk_error().downcast_ref::<PutObjectError>().is_some());
    }

    #[test]
    fn no_answer_chains_the_sdk_error() {
        let e = failure(
            "list s3://b",
            SdkError::<PutObjectError, HttpResponse>::construction_failure(Unexpected("no credentials".into())),
        );
        assert_eq!((e.code.as_deref(), e.status, e.retry), (None, None, Retry::Slowly));
        assert!(
            e.source()
                .unwrap()
                .downcast_ref::<SdkError<PutObjectError, HttpResponse>>()
                .is_some()
        );
        let text = Chain(&e).to_string();
        assert!(
            text.starts_with("cannot list s3://b: ") && text.ends_with("no credentials"),
            "{text}"
        );
    }

    #[test]
    fn debug_output_never_shows_the_raw_response_a_secret_may_be_in() {
        let secret = "SecretString-hunter2";
        let raw = || HttpResponse::new(200.try_into().unwrap(), SdkBody::from(secret));
        let unparsed = failure(
            "read secret \"s\"",
            SdkError::<PutObjectError, HttpResponse>::response_error(Unexpected("cannot parse".into()), raw()),
        );
        let meta = ErrorMetadata::builder().code("Oops").build();
        let answered = failure("x", SdkError::service_error(PutObjectError::generic(meta), raw()));
        for e in [unparsed, answered] {
            let shown = format!("{e:?} {e:#?} {}", Chain(&e));
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.contains("cannot "), "{shown}");
        }
    }

    #[test]
    fn throttling_and_server_errors_are_retried_soon_any_other_4xx_is_a_refusal() {
        let retry = |status, code| failure("x", answered(status, code, "m")).retry;
        assert_eq!(retry(503, "SlowDown"), Retry::Soon);
        assert_eq!(retry(500, "InternalError"), Retry::Soon);
        assert_eq!(retry(400, "RequestTimeout"), Retry::Soon);
        assert_eq!(retry(429, "Whatever"), Retry::Soon);
        assert_eq!(retry(400, "InvalidArgument"), Retry::Slowly);
        assert_eq!(retry(500, "KMSInvalidStateException"), Retry::Slowly);
    }
}
