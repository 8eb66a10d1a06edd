//! `kms:GenerateDataKey` with one person's credentials, for KMS-encrypted Session Manager
//! sessions: the data channel asks through [`crate::ssm::handshake::DataKeySource`].

use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::primitives::Blob;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::{AwsEndpoints, TemporaryCredentials, behavior_version, describe};
use crate::ssm::handshake::{DataKey, DataKeyError, DataKeyRequest, DataKeySource};

/// KMS calls signed with one person's temporary credentials.
#[derive(Debug, Clone)]
pub struct KmsDataKeys {
    client: aws_sdk_kms::Client,
}

impl KmsDataKeys {
    /// A client for `credentials` (SigV4, service `kms`).
    pub fn new(endpoints: &AwsEndpoints, credentials: &TemporaryCredentials) -> Self {
        let mut config = aws_sdk_kms::Config::builder()
            .behavior_version(behavior_version())
            .region(aws_sdk_kms::config::Region::new(endpoints.region.clone()))
            .credentials_provider(credentials.to_sdk());
        if let Some(url) = &endpoints.kms_url {
            config = config.endpoint_url(url.clone());
        }
        Self::from_client(aws_sdk_kms::Client::from_conf(config.build()))
    }

    /// Data keys through `client` (the gateway's shared HTTP client, the person's credentials).
    pub fn from_client(client: aws_sdk_kms::Client) -> Self {
        Self { client }
    }

    /// `kms:GenerateDataKey` for `request`; `AccessDeniedException` becomes
    /// [`DataKeyError::Denied`].
    pub async fn generate(&self, request: DataKeyRequest) -> Result<DataKey, DataKeyError> {
        let out = self
            .client
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
