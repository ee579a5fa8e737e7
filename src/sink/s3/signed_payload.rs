//! The SigV4 payload hash of an upload request, taken from the reader instead of computed again.

use aws_runtime::auth::PayloadSigningOverride;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;

/// Signs a request with the SHA-256 the reader computed for its body, where the SDK would hash the
/// body again itself, on an async thread.
#[derive(Debug)]
pub(super) struct SignedPayload(pub(super) String);

impl Intercept for SignedPayload {
    fn name(&self) -> &'static str {
        "SignedPayload"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        config: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // Only over a body held in memory, the one the hash was taken of: a body the SDK streams
        // (aws-chunked, with a trailing checksum) is signed the way the SDK chose for it.
        if context.request().body().bytes().is_some() {
            config
                .interceptor_state()
                .store_put(PayloadSigningOverride::Precomputed(self.0.clone()));
        }
        Ok(())
    }
}
