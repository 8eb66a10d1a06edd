//! KMS JSON 1.1 API (`X-Amz-Target: TrentService.*`), SigV4-verified as service `kms`:
//! `GenerateDataKey` and `Decrypt`, the two calls a KMS-encrypted Session Manager session
//! makes (the client generates the data key, the agent decrypts it). Keys belong to the
//! simulated account; a key policy can deny roles (knob `kmsKeys[].denyRoles`).
//!
//! The ciphertext blob binds the encryption context as AES-GCM additional data, so a
//! `Decrypt` with another context fails with `InvalidCiphertextException`, as KMS's does.
//! Shapes and error codes read from the KMS model as generated into `aws-sdk-kms` 1.129.0
//! (`src/operation/{generate_data_key,decrypt}.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use axum::routing::any;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::{KmsKeyConfig, SimConfig};
use super::ssm_api::{SsmError, authenticate, json_answer, json_operation};
use super::state::{CallRecord, Shared};
use crate::ssm::crypto::random_bytes;

/// Prefix of every ciphertext blob this KMS issues (version 1 of its private format).
const BLOB_MAGIC: &[u8] = b"nsk1";

/// A KMS error in the JSON protocol's shape (`__type`, `message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KmsError {
    /// `NotFoundException`, `AccessDeniedException`, …
    pub code: &'static str,
    /// Human text.
    pub message: String,
}

fn kms_err(code: &'static str, message: impl Into<String>) -> KmsError {
    KmsError {
        code,
        message: message.into(),
    }
}

impl From<KmsError> for SsmError {
    fn from(e: KmsError) -> Self {
        SsmError {
            code: e.code,
            message: e.message,
            status: if e.code == "KMSInternalException" {
                500
            } else {
                400
            },
        }
    }
}

/// One key with its material.
struct Key {
    config: KmsKeyConfig,
    /// The key policy's denied roles (starts as `config.deny_roles`; a knob at run time).
    deny_roles: std::sync::Mutex<Vec<String>>,
    arn: String,
    alias_arn: Option<String>,
    material: LessSafeKey,
}

/// The account's keys.
pub(crate) struct KmsKeys {
    keys: Vec<Key>,
}

/// Who calls: the role name the key policy is checked against, the actions the role's own
/// permission policy does not allow (its `denyActions`), and the ARN errors name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KmsCaller<'a> {
    pub role_name: &'a str,
    pub principal_arn: &'a str,
    pub denied_actions: &'a [String],
}

/// What `GenerateDataKey` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DataKey {
    pub ciphertext_blob: Vec<u8>,
    pub plaintext: Vec<u8>,
    pub key_arn: String,
}

fn aad(context: &BTreeMap<String, String>) -> Vec<u8> {
    serde_json::to_vec(context).unwrap_or_default()
}

impl KmsKeys {
    /// Key material for every configured key, fresh for this run.
    pub fn generate(config: &SimConfig) -> Result<Self, KmsError> {
        let mut keys = Vec::new();
        for key in &config.kms_keys {
            let material = random_bytes(32)
                .ok()
                .and_then(|m| UnboundKey::new(&AES_256_GCM, &m).ok())
                .map(LessSafeKey::new)
                .ok_or_else(|| kms_err("KMSInternalException", "no key material"))?;
            let prefix = format!("arn:aws:kms:{}:{}", config.region, config.account_id);
            keys.push(Key {
                arn: format!("{prefix}:key/{}", key.id),
                alias_arn: key.alias.as_ref().map(|a| format!("{prefix}:alias/{a}")),
                deny_roles: std::sync::Mutex::new(key.deny_roles.clone()),
                config: key.clone(),
                material,
            });
        }
        Ok(Self { keys })
    }

    /// The key a `KeyId` names: key id, key ARN, `alias/<name>` or alias ARN.
    fn resolve(&self, key_ref: &str) -> Result<&Key, KmsError> {
        let found = self.keys.iter().find(|k| {
            key_ref == k.config.id
                || key_ref == k.arn
                || k.config
                    .alias
                    .as_ref()
                    .is_some_and(|a| key_ref.strip_prefix("alias/") == Some(a.as_str()))
                || k.alias_arn.as_deref() == Some(key_ref)
        });
        found.ok_or_else(|| {
            if key_ref.starts_with("alias/") || key_ref.contains(":alias/") {
                kms_err(
                    "NotFoundException",
                    format!("Alias {key_ref} is not found."),
                )
            } else {
                kms_err(
                    "NotFoundException",
                    format!("Key '{key_ref}' does not exist"),
                )
            }
        })
    }

    /// The key policy, then the caller's own permission policy, as IAM evaluates them for a
    /// caller in the key's account: an explicit deny in the key policy wins; otherwise the
    /// (default) key policy delegates to IAM, and a role whose permission policy does not
    /// allow `kms:<action>` on the key gets the implicit deny.
    fn check_policy(key: &Key, caller: KmsCaller<'_>, action: &str) -> Result<(), KmsError> {
        if super::state::lock(&key.deny_roles)
            .iter()
            .any(|r| r == caller.role_name)
        {
            return Err(kms_err(
                "AccessDeniedException",
                format!(
                    "User: {} is not authorized to perform: kms:{action} on resource: {} with an explicit deny in a resource-based policy",
                    caller.principal_arn, key.arn
                ),
            ));
        }
        let action = format!("kms:{action}");
        if caller.denied_actions.contains(&action) {
            return Err(kms_err(
                "AccessDeniedException",
                format!(
                    "User: {} is not authorized to perform: {action} on resource: {} because no identity-based policy allows the {action} action",
                    caller.principal_arn, key.arn
                ),
            ));
        }
        Ok(())
    }

    /// Replaces the roles the key policy of `key_ref` denies (knob).
    pub fn set_deny_roles(&self, key_ref: &str, roles: Vec<String>) -> Result<(), KmsError> {
        let key = self.resolve(key_ref)?;
        *super::state::lock(&key.deny_roles) = roles;
        Ok(())
    }

    /// `GenerateDataKey`: `number_of_bytes` random bytes, and the blob that wraps them under
    /// the key with `context` bound in.
    pub fn generate_data_key(
        &self,
        caller: KmsCaller<'_>,
        key_ref: &str,
        number_of_bytes: usize,
        context: &BTreeMap<String, String>,
    ) -> Result<DataKey, KmsError> {
        let key = self.resolve(key_ref)?;
        Self::check_policy(key, caller, "GenerateDataKey")?;
        let plaintext = random_bytes(number_of_bytes)
            .map_err(|e| kms_err("KMSInternalException", e.to_string()))?;
        let nonce =
            random_bytes(NONCE_LEN).map_err(|e| kms_err("KMSInternalException", e.to_string()))?;
        let mut body = plaintext.clone();
        let sealed = Nonce::try_assume_unique_for_key(&nonce).ok().and_then(|n| {
            key.material
                .seal_in_place_append_tag(n, Aad::from(aad(context)), &mut body)
                .ok()
        });
        if sealed.is_none() {
            return Err(kms_err("KMSInternalException", "sealing failed"));
        }
        let id = key.config.id.as_bytes();
        let mut blob = Vec::with_capacity(BLOB_MAGIC.len() + 1 + id.len() + NONCE_LEN + body.len());
        blob.extend_from_slice(BLOB_MAGIC);
        blob.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
        blob.extend_from_slice(id);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&body);
        Ok(DataKey {
            ciphertext_blob: blob,
            plaintext,
            key_arn: key.arn.clone(),
        })
    }

    /// `Decrypt`: the plaintext a blob wraps, only with the context it was made with.
    /// `caller` is `None` for the simulated agent (its instance role is the key's user).
    pub fn decrypt(
        &self,
        caller: Option<KmsCaller<'_>>,
        blob: &[u8],
        context: &BTreeMap<String, String>,
        key_ref: Option<&str>,
    ) -> Result<(Vec<u8>, String), KmsError> {
        let invalid = || kms_err("InvalidCiphertextException", "");
        let rest = blob.strip_prefix(BLOB_MAGIC).ok_or_else(invalid)?;
        let (&id_len, rest) = rest.split_first().ok_or_else(invalid)?;
        let id_len = usize::from(id_len);
        if rest.len() < id_len + NONCE_LEN + 16 {
            return Err(invalid());
        }
        let (id, rest) = rest.split_at(id_len);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let id = std::str::from_utf8(id).map_err(|_| invalid())?;
        let key = self
            .keys
            .iter()
            .find(|k| k.config.id == id)
            .ok_or_else(invalid)?;
        if let Some(key_ref) = key_ref {
            let named = self.resolve(key_ref)?;
            if named.arn != key.arn {
                return Err(kms_err(
                    "IncorrectKeyException",
                    "The key ID in the request does not identify a CMK that can perform this operation.",
                ));
            }
        }
        if let Some(caller) = caller {
            Self::check_policy(key, caller, "Decrypt")?;
        }
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| invalid())?;
        let mut body = sealed.to_vec();
        let plain = key
            .material
            .open_in_place(nonce, Aad::from(aad(context)), &mut body)
            .map_err(|_| invalid())?;
        Ok((plain.to_vec(), key.arn.clone()))
    }
}

/// Routes of the KMS endpoint.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(any(handle)).with_state(shared)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let operation = json_operation(&headers, "TrentService.");
    let mut call = CallRecord::new(&operation);
    let result = dispatch(
        &shared, &mut call, &operation, &method, &uri, &headers, &body,
    );
    json_answer(&shared, call, result)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateInput {
    key_id: Option<String>,
    number_of_bytes: Option<i64>,
    key_spec: Option<String>,
    #[serde(default)]
    encryption_context: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DecryptInput {
    ciphertext_blob: Option<String>,
    key_id: Option<String>,
    #[serde(default)]
    encryption_context: BTreeMap<String, String>,
}

fn validation(message: impl Into<String>) -> SsmError {
    kms_err("ValidationException", message).into()
}

fn dispatch(
    shared: &Arc<Shared>,
    call: &mut CallRecord,
    operation: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, SsmError> {
    let caller = authenticate(shared, "kms", method, uri, headers, body)?;
    call.principal_arn = Some(caller.principal_arn.clone());
    let denied_actions = shared
        .role(&caller.role_name)
        .map(|r| r.deny_actions.as_slice())
        .unwrap_or_default();
    call.access_key_id = Some(caller.access_key_id.clone());
    let kms_caller = KmsCaller {
        role_name: &caller.role_name,
        principal_arn: &caller.principal_arn,
        denied_actions,
    };
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|_| SsmError::from(kms_err("SerializationException", "")))?
    };
    match operation {
        "GenerateDataKey" => {
            let input: GenerateInput =
                serde_json::from_value(input).map_err(|e| validation(e.to_string()))?;
            let key_id = input.key_id.ok_or_else(|| {
                validation("1 validation error detected: Value null at 'keyId' failed to satisfy constraint: Member must not be null")
            })?;
            let bytes = match (input.number_of_bytes, input.key_spec.as_deref()) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(validation(
                        "Please specify either number of bytes or key spec.",
                    ));
                }
                (Some(n), None) if !(1..=1024).contains(&n) => {
                    let bound = if n < 1 {
                        "greater than or equal to 1"
                    } else {
                        "less than or equal to 1024"
                    };
                    return Err(validation(format!(
                        "1 validation error detected: Value '{n}' at 'numberOfBytes' failed to satisfy constraint: Member must have value {bound}"
                    )));
                }
                (Some(n), None) => usize::try_from(n).unwrap_or(64),
                (None, Some("AES_256")) => 32,
                (None, Some("AES_128")) => 16,
                (None, Some(other)) => {
                    return Err(validation(format!(
                        "1 validation error detected: Value '{other}' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set: [AES_256, AES_128]"
                    )));
                }
            };
            let key = shared.kms.generate_data_key(
                kms_caller,
                &key_id,
                bytes,
                &input.encryption_context,
            )?;
            Ok(json!({
                "CiphertextBlob": B64.encode(&key.ciphertext_blob),
                "Plaintext": B64.encode(&key.plaintext),
                "KeyId": key.key_arn,
            }))
        }
        "Decrypt" => {
            let input: DecryptInput =
                serde_json::from_value(input).map_err(|e| validation(e.to_string()))?;
            let blob = input.ciphertext_blob.ok_or_else(|| {
                validation("1 validation error detected: Value null at 'ciphertextBlob' failed to satisfy constraint: Member must not be null")
            })?;
            let blob = B64
                .decode(blob)
                .map_err(|_| SsmError::from(kms_err("SerializationException", "")))?;
            let (plain, arn) = shared.kms.decrypt(
                Some(kms_caller),
                &blob,
                &input.encryption_context,
                input.key_id.as_deref(),
            )?;
            Ok(json!({
                "KeyId": arn,
                "Plaintext": B64.encode(plain),
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            }))
        }
        other => Err(kms_err(
            "UnknownOperationException",
            format!("Unknown operation {other}"),
        )
        .into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;

    fn keys(deny: &[&str]) -> KmsKeys {
        let config = SimConfig {
            kms_keys: vec![KmsKeyConfig {
                deny_roles: deny.iter().map(|s| s.to_string()).collect(),
                ..KmsKeyConfig::default()
            }],
            ..SimConfig::for_tests()
        };
        KmsKeys::generate(&config).unwrap()
    }

    fn context(session: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("aws:ssm:SessionId".to_string(), session.to_string()),
            ("aws:ssm:TargetId".to_string(), "i-0123".to_string()),
        ])
    }

    const ALICE: KmsCaller<'static> = KmsCaller {
        role_name: "nodeshell-user",
        principal_arn: "arn:aws:sts::123456789012:assumed-role/nodeshell-user/alice",
        denied_actions: &[],
    };

    #[test]
    fn a_data_key_decrypts_only_with_its_own_context() {
        let kms = keys(&[]);
        let key = kms
            .generate_data_key(ALICE, "alias/nodeshell-sessions", 64, &context("s-1"))
            .unwrap();
        assert_eq!(key.plaintext.len(), 64);
        assert_eq!(
            key.key_arn,
            "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        );
        let (plain, arn) = kms
            .decrypt(None, &key.ciphertext_blob, &context("s-1"), None)
            .unwrap();
        assert_eq!(plain, key.plaintext);
        assert_eq!(arn, key.key_arn);
        let other = kms
            .decrypt(None, &key.ciphertext_blob, &context("s-2"), None)
            .unwrap_err();
        assert_eq!(other.code, "InvalidCiphertextException");
        let none = kms
            .decrypt(None, &key.ciphertext_blob, &BTreeMap::new(), None)
            .unwrap_err();
        assert_eq!(none.code, "InvalidCiphertextException");
        let mut changed = key.ciphertext_blob.clone();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        assert_eq!(
            kms.decrypt(None, &changed, &context("s-1"), None)
                .unwrap_err()
                .code,
            "InvalidCiphertextException"
        );
    }

    #[test]
    fn every_spelling_of_a_key_resolves_and_unknown_ones_are_not_found() {
        let kms = keys(&[]);
        let ctx = context("s");
        for name in [
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "alias/nodeshell-sessions",
            "arn:aws:kms:eu-west-1:123456789012:alias/nodeshell-sessions",
        ] {
            assert!(
                kms.generate_data_key(ALICE, name, 64, &ctx).is_ok(),
                "{name}"
            );
        }
        let missing = kms
            .generate_data_key(ALICE, "alias/other", 64, &ctx)
            .unwrap_err();
        assert_eq!(missing.code, "NotFoundException");
        assert_eq!(missing.message, "Alias alias/other is not found.");
        let missing = kms.generate_data_key(ALICE, "0000", 64, &ctx).unwrap_err();
        assert_eq!(missing.message, "Key '0000' does not exist");
    }

    #[test]
    fn the_key_policy_denies_a_named_role_both_calls_but_not_the_agent() {
        let kms = keys(&["nodeshell-user"]);
        let ctx = context("s");
        let denied = kms
            .generate_data_key(ALICE, "alias/nodeshell-sessions", 64, &ctx)
            .unwrap_err();
        assert_eq!(denied.code, "AccessDeniedException");
        assert!(
            denied.message.contains("kms:GenerateDataKey"),
            "{}",
            denied.message
        );
        assert!(denied.message.contains(ALICE.principal_arn));
        let other = KmsCaller {
            role_name: "admin",
            principal_arn: "arn:aws:sts::123456789012:assumed-role/admin/x",
            denied_actions: &[],
        };
        let key = kms
            .generate_data_key(other, "alias/nodeshell-sessions", 64, &ctx)
            .unwrap();
        let denied = kms
            .decrypt(Some(ALICE), &key.ciphertext_blob, &ctx, None)
            .unwrap_err();
        assert_eq!(denied.code, "AccessDeniedException");
        assert!(kms.decrypt(None, &key.ciphertext_blob, &ctx, None).is_ok());
    }

    #[test]
    fn a_role_whose_permission_policy_lacks_the_action_gets_iams_implicit_deny() {
        let kms = keys(&[]);
        let ctx = context("s");
        let no_generate = ["kms:GenerateDataKey".to_string()];
        let caller = KmsCaller {
            denied_actions: &no_generate,
            ..ALICE
        };
        let denied = kms
            .generate_data_key(caller, "alias/nodeshell-sessions", 64, &ctx)
            .unwrap_err();
        assert_eq!(denied.code, "AccessDeniedException");
        assert_eq!(
            denied.message,
            "User: arn:aws:sts::123456789012:assumed-role/nodeshell-user/alice is not authorized \
             to perform: kms:GenerateDataKey on resource: \
             arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab \
             because no identity-based policy allows the kms:GenerateDataKey action"
        );
        // Only the named action: Decrypt is still allowed to this caller.
        let key = kms
            .generate_data_key(ALICE, "alias/nodeshell-sessions", 64, &ctx)
            .unwrap();
        assert!(
            kms.decrypt(Some(caller), &key.ciphertext_blob, &ctx, None)
                .is_ok()
        );
        // The key policy's explicit deny wins over (and is reported instead of) the missing
        // permission.
        let kms = keys(&["nodeshell-user"]);
        let denied = kms
            .generate_data_key(caller, "alias/nodeshell-sessions", 64, &ctx)
            .unwrap_err();
        assert!(
            denied
                .message
                .ends_with("with an explicit deny in a resource-based policy")
        );
    }

    #[test]
    fn a_blob_that_is_not_ours_is_invalid_ciphertext() {
        let kms = keys(&[]);
        let err = kms
            .decrypt(None, b"not a blob at all", &context("s"), None)
            .unwrap_err();
        assert_eq!(err.code, "InvalidCiphertextException");
    }
}
