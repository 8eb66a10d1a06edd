//! `kms:GenerateDataKey` with one person's credentials, for KMS-encrypted Session Manager
//! sessions: the data channel asks through [`crate::ssm::handshake::DataKeySource`].

use std::sync::Arc;

use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::primitives::Blob;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::clients::SignedCalls;
use super::describe;
use crate::ssm::handshake::{DataKey, DataKeyError, DataKeyRequest, DataKeySource};

/// KMS calls signed with one person's temporary credentials. It keeps what a call needs and
/// makes the SDK client for each call: a live session keeps its key source for its whole
/// life and asks it only at a handshake, and an SDK client holds about 15 KB.
#[derive(Debug, Clone)]
pub struct KmsDataKeys {
    calls: Arc<SignedCalls>,
}

impl KmsDataKeys {
    /// Data keys through an SDK client made for each call from `calls` (the gateway's
    /// shared HTTP client, the person's credentials).
    pub(crate) fn on_call(calls: Arc<SignedCalls>) -> Self {
        Self { calls }
    }

    /// The SDK client for one call.
    fn client(&self) -> aws_sdk_kms::Client {
        self.calls.kms()
    }

    /// `kms:GenerateDataKey` for `request`; `AccessDeniedException` becomes
    /// [`DataKeyError::Denied`].
    pub async fn generate(&self, request: DataKeyRequest) -> Result<DataKey, DataKeyError> {
        let out = self
            .client()
            .generate_data_key()
            .key_id(request.key_id)
            .number_of_bytes(i32::try_from(request.number_of_bytes).unwrap_or(64))
            .set_encryption_context(Some(request.encryption_context.into_iter().collect()))
            .send()
            .await
            .map_err(|e| {
                let text = e.message().map_or_else(|| describe(&e), str::to_string);
                match e.code() {
                    Some("AccessDeniedException") => DataKeyError::Denied(text),
                    Some(code) => DataKeyError::Failed(format!("{code}: {text}")),
                    None => DataKeyError::Failed(text),
                }
            })?;
        Ok(DataKey {
            ciphertext_blob: out
                .ciphertext_blob()
                .map(Blob::as_ref)
                .unwrap_or_default()
                .to_vec(),
            plaintext: out
                .plaintext()
                .map(Blob::as_ref)
                .unwrap_or_default()
                .to_vec(),
        })
    }
}

impl DataKeySource for KmsDataKeys {
    fn generate_data_key(
        &self,
        request: DataKeyRequest,
    ) -> BoxFuture<'static, Result<DataKey, DataKeyError>> {
        let this = self.clone();
        async move { this.generate(request).await }.boxed()
    }
}
