//! The session handshake (PayloadTypes 5–9): its payloads and the client's decision
//! machine. Shell sessions without KMS skip it; the first output then marks readiness.
//!
//! KMS encryption (fact sheet §6.5), read from `aws/session-manager-plugin`
//! `src/datachannel/streaming.go` (`ProcessKMSEncryptionHandshakeAction`,
//! `handleEncryptionChallengeRequest`) and `src/encryption/{encrypter,kmsservice}.go`: the
//! client asks KMS for a 64-byte data key for the agent's key id with the encryption context
//! `{"aws:ssm:SessionId", "aws:ssm:TargetId"}`, answers with the ciphertext blob, re-seals the
//! agent's challenge, and from then on encrypts the terminal input it sends and decrypts the
//! output it receives ([`super::crypto`]). The KMS call itself is the caller's
//! ([`DataKeySource`]): this module makes no network call.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::crypto::{DATA_KEY_BYTES, SessionCipher, Side};
use super::message::PayloadType;
use super::payload::PayloadError;

/// The request for a data key a KMS-encrypted session needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKeyRequest {
    /// The key the agent named (`KMSKeyId`): an id, ARN or alias.
    pub key_id: String,
    /// Bytes asked for (always 64: two AES-256 keys).
    pub number_of_bytes: usize,
    /// `{"aws:ssm:SessionId": <session>, "aws:ssm:TargetId": <target>}`.
    pub encryption_context: BTreeMap<String, String>,
}

/// What `kms:GenerateDataKey` returned.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey {
    /// The wrapped key, sent to the agent.
    pub ciphertext_blob: Vec<u8>,
    /// The key itself (never logged).
    pub plaintext: Vec<u8>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// Why no data key came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataKeyError {
    /// KMS refused the caller (`AccessDeniedException`): a permission is missing.
    #[error("{0}")]
    Denied(String),
    /// Any other failure (unknown key, disabled key, KMS unreachable, …).
    #[error("{0}")]
    Failed(String),
}

/// Generates KMS data keys for a session (the gateway: `kms:GenerateDataKey` signed with the
/// person's own credentials).
pub trait DataKeySource: Send + Sync + 'static {
    /// Asks KMS for a data key.
    fn generate_data_key(
        &self,
        request: DataKeyRequest,
    ) -> BoxFuture<'static, Result<DataKey, DataKeyError>>;
}

/// What a channel needs to run a KMS-encrypted session.
#[derive(Clone)]
pub struct KmsOptions {
    /// The session's target (`aws:ssm:TargetId` of the encryption context).
    pub target_id: String,
    /// Where data keys come from.
    pub source: Arc<dyn DataKeySource>,
}

impl std::fmt::Debug for KmsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsOptions")
            .field("target_id", &self.target_id)
            .finish_non_exhaustive()
    }
}

/// `{"Challenge": base64}`: EncChallengeRequest and EncChallengeResponse alike.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChallengePayload {
    challenge: String,
}

/// `ActionType` asking the client to confirm the session type.
pub const ACTION_SESSION_TYPE: &str = "SessionType";
/// `ActionType` asking the client to set up KMS encryption.
pub const ACTION_KMS_ENCRYPTION: &str = "KMSEncryption";

/// One action the agent asks the client to perform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestedClientAction {
    /// `SessionType` or `KMSEncryption`.
    pub action_type: String,
    /// Action-specific JSON, kept as is.
    #[serde(default)]
    pub action_parameters: serde_json::Value,
}

/// Agent → client handshake request (PayloadType 5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HandshakeRequest {
    /// The agent's version string.
    #[serde(default)]
    pub agent_version: String,
    /// What the agent asks for.
    #[serde(default)]
    pub requested_client_actions: Vec<RequestedClientAction>,
}

impl HandshakeRequest {
    /// The request an agent sends for a plain (unencrypted) session of `session_type`.
    pub fn session_type(agent_version: &str, session_type: &str) -> Self {
        Self {
            agent_version: agent_version.into(),
            requested_client_actions: vec![RequestedClientAction {
                action_type: ACTION_SESSION_TYPE.into(),
                action_parameters: serde_json::json!({
                    "SessionType": session_type,
                    "Properties": null,
                }),
            }],
        }
    }

    /// The JSON payload.
    pub fn to_payload(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads a request payload.
    pub fn from_payload(bytes: &[u8]) -> Result<Self, PayloadError> {
        serde_json::from_slice(bytes).map_err(|source| PayloadError::Json {
            what: "handshake request",
            source,
        })
    }
}

/// Outcome of one action, as a JSON number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "u32", into = "u32")]
pub enum ActionStatus {
    /// 1.
    Success,
    /// 2.
    Failed,
    /// 3.
    Unsupported,
    /// Anything else (the official client sends 0 for unknown actions).
    Other(u32),
}

impl From<u32> for ActionStatus {
    fn from(value: u32) -> Self {
        match value {
            1 => Self::Success,
            2 => Self::Failed,
            3 => Self::Unsupported,
            other => Self::Other(other),
        }
    }
}

impl From<ActionStatus> for u32 {
    fn from(value: ActionStatus) -> Self {
        match value {
            ActionStatus::Success => 1,
            ActionStatus::Failed => 2,
            ActionStatus::Unsupported => 3,
            ActionStatus::Other(n) => n,
        }
    }
}

/// The client's answer to one requested action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProcessedClientAction {
    /// The action answered.
    pub action_type: String,
    /// Success, Failed or Unsupported.
    pub action_status: ActionStatus,
    /// Action result JSON (null for SessionType).
    #[serde(default)]
    pub action_result: serde_json::Value,
    /// Error text, empty on success.
    #[serde(default)]
    pub error: String,
}

/// Client → agent handshake response (PayloadType 6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HandshakeResponse {
    /// The plugin version the client claims compatibility with.
    pub client_version: String,
    /// One entry per requested action, in request order.
    pub processed_client_actions: Vec<ProcessedClientAction>,
    /// Error texts (null when none, as Go emits).
    pub errors: Option<Vec<String>>,
}

impl HandshakeResponse {
    /// The JSON payload.
    pub fn to_payload(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads a response payload.
    pub fn from_payload(bytes: &[u8]) -> Result<Self, PayloadError> {
        serde_json::from_slice(bytes).map_err(|source| PayloadError::Json {
            what: "handshake response",
            source,
        })
    }

    /// Whether every action succeeded (what the agent requires to go on).
    pub fn all_succeeded(&self) -> bool {
        self.processed_client_actions
            .iter()
            .all(|a| a.action_status == ActionStatus::Success)
    }
}

/// Agent → client handshake completion (PayloadType 7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HandshakeComplete {
    /// Handshake duration in nanoseconds (a Go Duration).
    #[serde(default)]
    pub handshake_time_to_complete: i64,
    /// Text to show the user, possibly empty.
    #[serde(default)]
    pub customer_message: String,
}

impl HandshakeComplete {
    /// The JSON payload.
    pub fn to_payload(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads a completion payload.
    pub fn from_payload(bytes: &[u8]) -> Result<Self, PayloadError> {
        serde_json::from_slice(bytes).map_err(|source| PayloadError::Json {
            what: "handshake complete",
            source,
        })
    }
}

/// Why the handshake cannot go on; the session must end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The session asks for KMS encryption but the channel was opened without a KMS client.
    #[error(
        "the session requires KMS encryption (key {key_id}) but this data channel has no KMS client"
    )]
    KmsUnavailable {
        /// The key the agent named.
        key_id: String,
    },
    /// KMS refused `kms:GenerateDataKey` on the session's key.
    #[error("KMS refused kms:GenerateDataKey on key {key_id}: {message}")]
    KmsDenied {
        /// The key the agent named.
        key_id: String,
        /// KMS's message.
        message: String,
    },
    /// `kms:GenerateDataKey` failed otherwise.
    #[error("kms:GenerateDataKey on key {key_id} failed: {message}")]
    KmsFailed {
        /// The key the agent named.
        key_id: String,
        /// What failed.
        message: String,
    },
    /// An encrypted payload or the challenge did not decrypt, or a data key was unusable.
    #[error("KMS session encryption failed: {0}")]
    Encryption(String),
    /// The document is not a shell (e.g. port forwarding).
    #[error(
        "session type {0:?} is not a shell; nodeshell only opens Standard_Stream, InteractiveCommands or NonInteractiveCommands sessions"
    )]
    UnsupportedSessionType(String),
    /// The agent asked for something unknown.
    #[error(
        "the agent requested unknown handshake action {0:?}; update nodeshell or use a plain shell document"
    )]
    UnknownAction(String),
    /// The agent sent malformed handshake JSON.
    #[error("malformed handshake message from the agent: {0}")]
    Malformed(String),
    /// The agent sent an encryption challenge without a KMS action before it.
    #[error("the agent sent an encryption challenge without asking for KMS encryption")]
    UnexpectedChallenge,
}

/// Where the client is in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeState {
    /// Nothing heard yet: only acks may be sent.
    Waiting,
    /// Request answered, waiting for HandshakeComplete.
    Responded,
    /// Input, resize and the session may proceed.
    Ready,
    /// The handshake failed; the session must end.
    Failed(HandshakeError),
}

/// The client's reply to a handshake request, plus whether the session can proceed.
#[derive(Debug, Clone, PartialEq)]
pub struct HandshakeReply {
    /// The response to send as PayloadType 6 (always sent, also on failure).
    pub response: HandshakeResponse,
    /// Error to surface after sending the response.
    pub error: Option<HandshakeError>,
    /// A data key to obtain first: send `response` only once [`ClientHandshake::on_data_key`]
    /// completed it.
    pub data_key: Option<DataKeyRequest>,
}

/// The client's handshake decisions; pure, driven by the channel task.
pub struct ClientHandshake {
    client_version: String,
    state: HandshakeState,
    session_type: Option<String>,
    customer_message: Option<String>,
    /// Session id and target of the KMS encryption context, when KMS can be used.
    kms_context: Option<(String, String)>,
    /// The response waiting for its data key, and the KMS action's index in it.
    pending: Option<(HandshakeResponse, usize, String)>,
    cipher: Option<SessionCipher>,
}

impl std::fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHandshake")
            .field("state", &self.state)
            .field("session_type", &self.session_type)
            .field("encrypted", &self.cipher.is_some())
            .finish_non_exhaustive()
    }
}

const SHELL_SESSION_TYPES: [&str; 3] = [
    "Standard_Stream",
    "InteractiveCommands",
    "NonInteractiveCommands",
];

impl ClientHandshake {
    /// A client that will answer as `client_version`.
    pub fn new(client_version: &str) -> Self {
        Self {
            client_version: client_version.into(),
            state: HandshakeState::Waiting,
            session_type: None,
            customer_message: None,
            kms_context: None,
            pending: None,
            cipher: None,
        }
    }

    /// Lets the handshake accept KMS encryption for `session_id` on `target_id` (the
    /// encryption context the agent decrypts the data key with).
    pub fn with_kms(mut self, session_id: &str, target_id: &str) -> Self {
        self.kms_context = Some((session_id.to_owned(), target_id.to_owned()));
        self
    }

    /// Whether payloads are encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    /// Current state.
    pub fn state(&self) -> &HandshakeState {
        &self.state
    }

    /// Whether input and resize may be sent.
    pub fn is_ready(&self) -> bool {
        self.state == HandshakeState::Ready
    }

    /// The negotiated session type (`Standard_Stream` when no handshake happened).
    pub fn session_type(&self) -> Option<&str> {
        self.session_type.as_deref()
    }

    /// The agent's message to show, if it sent one.
    pub fn customer_message(&self) -> Option<&str> {
        self.customer_message.as_deref()
    }

    /// Terminal output arrived; before any request it means a handshake-less shell.
    pub fn on_output(&mut self) {
        if self.state == HandshakeState::Waiting {
            self.session_type = Some("Standard_Stream".into());
            self.state = HandshakeState::Ready;
        }
    }

    /// Answers a HandshakeRequest payload.
    pub fn on_request(&mut self, payload: &[u8]) -> HandshakeReply {
        let request = match HandshakeRequest::from_payload(payload) {
            Ok(r) => r,
            Err(e) => {
                let error = HandshakeError::Malformed(e.to_string());
                self.state = HandshakeState::Failed(error.clone());
                return HandshakeReply {
                    response: self.response(Vec::new(), vec![error.to_string()]),
                    error: Some(error),
                    data_key: None,
                };
            }
        };
        let mut processed = Vec::new();
        let mut first_error = None;
        let mut data_key = None;
        for action in &request.requested_client_actions {
            let (status, error) = if action.action_type == ACTION_KMS_ENCRYPTION {
                match self.kms_request(action) {
                    Ok(request) => {
                        data_key = Some((processed.len(), request));
                        (ActionStatus::Success, None)
                    }
                    Err(e) => (ActionStatus::Failed, Some(e)),
                }
            } else {
                self.process(action)
            };
            if let Some(e) = &error {
                first_error.get_or_insert_with(|| e.clone());
            }
            processed.push(ProcessedClientAction {
                action_type: action.action_type.clone(),
                action_status: status,
                action_result: serde_json::Value::Null,
                error: error.as_ref().map(ToString::to_string).unwrap_or_default(),
            });
        }
        let errors = processed
            .iter()
            .filter(|a| !a.error.is_empty())
            .map(|a| a.error.clone())
            .collect();
        self.state = match &first_error {
            Some(e) => HandshakeState::Failed(e.clone()),
            None => HandshakeState::Responded,
        };
        let response = self.response(processed, errors);
        match data_key {
            Some((index, request)) if first_error.is_none() => {
                self.pending = Some((response.clone(), index, request.key_id.clone()));
                HandshakeReply {
                    response,
                    error: None,
                    data_key: Some(request),
                }
            }
            _ => HandshakeReply {
                response,
                error: first_error,
                data_key: None,
            },
        }
    }

    /// The data key a [`HandshakeReply::data_key`] asked for arrived (or did not): the
    /// completed response to send, and the error that ends the session on failure.
    pub fn on_data_key(&mut self, result: Result<DataKey, DataKeyError>) -> HandshakeReply {
        let Some((mut response, index, key_id)) = self.pending.take() else {
            let error = HandshakeError::Malformed("a data key arrived unasked".into());
            return HandshakeReply {
                response: self.response(Vec::new(), vec![error.to_string()]),
                error: Some(error),
                data_key: None,
            };
        };
        let outcome = match result {
            Ok(key) => SessionCipher::new(Side::Client, &key.plaintext)
                .map(|cipher| (cipher, key.ciphertext_blob))
                .map_err(|e| HandshakeError::Encryption(e.to_string())),
            Err(DataKeyError::Denied(message)) => Err(HandshakeError::KmsDenied {
                key_id: key_id.clone(),
                message,
            }),
            Err(DataKeyError::Failed(message)) => Err(HandshakeError::KmsFailed {
                key_id: key_id.clone(),
                message,
            }),
        };
        let error = match outcome {
            Ok((cipher, blob)) => {
                if let Some(action) = response.processed_client_actions.get_mut(index) {
                    action.action_result = serde_json::json!({
                        "KMSCipherTextKey": B64.encode(blob),
                        "KMSCipherTextHash": null,
                    });
                }
                self.cipher = Some(cipher);
                None
            }
            Err(error) => {
                if let Some(action) = response.processed_client_actions.get_mut(index) {
                    action.action_status = ActionStatus::Failed;
                    action.error = error.to_string();
                }
                response
                    .errors
                    .get_or_insert_with(Vec::new)
                    .push(error.to_string());
                self.state = HandshakeState::Failed(error.clone());
                Some(error)
            }
        };
        HandshakeReply {
            response,
            error,
            data_key: None,
        }
    }

    /// Answers an EncChallengeRequest: the agent's random bytes, opened with the agent's key
    /// half and sealed again with ours.
    pub fn on_challenge(&mut self, payload: &[u8]) -> Result<Bytes, HandshakeError> {
        let Some(cipher) = &self.cipher else {
            return Err(HandshakeError::UnexpectedChallenge);
        };
        let request: ChallengePayload = serde_json::from_slice(payload)
            .map_err(|e| HandshakeError::Malformed(e.to_string()))?;
        let sealed = B64
            .decode(request.challenge)
            .map_err(|e| HandshakeError::Malformed(e.to_string()))?;
        let challenge = cipher
            .decrypt(&sealed)
            .map_err(|e| HandshakeError::Encryption(e.to_string()))?;
        let answer = cipher
            .encrypt(&challenge)
            .map_err(|e| HandshakeError::Encryption(e.to_string()))?;
        let body = ChallengePayload {
            challenge: B64.encode(answer),
        };
        Ok(Bytes::from(serde_json::to_vec(&body).unwrap_or_default()))
    }

    /// An outgoing payload as it goes on the wire: terminal input (PayloadType 1) is sealed
    /// once the session is encrypted, everything else is sent as is (as the plugin does).
    pub fn seal(&self, payload_type: PayloadType, payload: Bytes) -> Result<Bytes, HandshakeError> {
        match &self.cipher {
            Some(cipher) if payload_type == PayloadType::Output => cipher
                .encrypt(&payload)
                .map(Bytes::from)
                .map_err(|e| HandshakeError::Encryption(e.to_string())),
            _ => Ok(payload),
        }
    }

    /// An incoming payload in the clear: the agent seals Output, StdErr and ExitCode once the
    /// session is encrypted.
    pub fn open(&self, payload_type: PayloadType, payload: Bytes) -> Result<Bytes, HandshakeError> {
        match &self.cipher {
            Some(cipher)
                if matches!(
                    payload_type,
                    PayloadType::Output | PayloadType::StdErr | PayloadType::ExitCode
                ) =>
            {
                cipher
                    .decrypt(&payload)
                    .map(Bytes::from)
                    .map_err(|e| HandshakeError::Encryption(e.to_string()))
            }
            _ => Ok(payload),
        }
    }

    fn kms_request(
        &mut self,
        action: &RequestedClientAction,
    ) -> Result<DataKeyRequest, HandshakeError> {
        let key_id = action
            .action_parameters
            .get("KMSKeyId")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let Some((session_id, target_id)) = &self.kms_context else {
            return Err(HandshakeError::KmsUnavailable { key_id });
        };
        Ok(DataKeyRequest {
            key_id,
            number_of_bytes: DATA_KEY_BYTES,
            encryption_context: BTreeMap::from([
                ("aws:ssm:SessionId".to_owned(), session_id.clone()),
                ("aws:ssm:TargetId".to_owned(), target_id.clone()),
            ]),
        })
    }

    /// A HandshakeComplete payload arrived: the session is ready unless it already failed.
    pub fn on_complete(&mut self, payload: &[u8]) -> Result<(), HandshakeError> {
        if let HandshakeState::Failed(e) = &self.state {
            return Err(e.clone());
        }
        let complete = HandshakeComplete::from_payload(payload)
            .map_err(|e| HandshakeError::Malformed(e.to_string()))?;
        if !complete.customer_message.is_empty() {
            self.customer_message = Some(complete.customer_message);
        }
        self.session_type
            .get_or_insert_with(|| "Standard_Stream".into());
        self.state = HandshakeState::Ready;
        Ok(())
    }

    fn process(
        &mut self,
        action: &RequestedClientAction,
    ) -> (ActionStatus, Option<HandshakeError>) {
        match action.action_type.as_str() {
            ACTION_SESSION_TYPE => {
                let session_type = action
                    .action_parameters
                    .get("SessionType")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if SHELL_SESSION_TYPES.contains(&session_type.as_str()) {
                    self.session_type = Some(session_type);
                    (ActionStatus::Success, None)
                } else {
                    (
                        ActionStatus::Unsupported,
                        Some(HandshakeError::UnsupportedSessionType(session_type)),
                    )
                }
            }
            other => (
                ActionStatus::Unsupported,
                Some(HandshakeError::UnknownAction(other.to_owned())),
            ),
        }
    }

    fn response(
        &self,
        actions: Vec<ProcessedClientAction>,
        errors: Vec<String>,
    ) -> HandshakeResponse {
        HandshakeResponse {
            client_version: self.client_version.clone(),
            processed_client_actions: actions,
            errors: if errors.is_empty() {
                None
            } else {
                Some(errors)
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;

    #[test]
    fn shell_without_handshake_is_ready_on_first_output() {
        let mut h = ClientHandshake::new("1.2.707.0");
        assert!(!h.is_ready());
        h.on_output();
        assert!(h.is_ready());
        assert_eq!(h.session_type(), Some("Standard_Stream"));
    }

    #[test]
    fn session_type_request_is_answered_with_success_then_completes() {
        let mut h = ClientHandshake::new("1.2.707.0");
        let req = HandshakeRequest::session_type("3.3.0.0", "Standard_Stream").to_payload();
        let reply = h.on_request(&req);
        assert_eq!(reply.error, None);
        assert_eq!(
            String::from_utf8(reply.response.to_payload().to_vec()).unwrap(),
            r#"{"ClientVersion":"1.2.707.0","ProcessedClientActions":[{"ActionType":"SessionType","ActionStatus":1,"ActionResult":null,"Error":""}],"Errors":null}"#
        );
        assert!(!h.is_ready());
        // output before HandshakeComplete does not short-circuit a started handshake
        h.on_output();
        assert!(!h.is_ready());
        h.on_complete(
            br#"{"HandshakeTimeToComplete":1000000,"CustomerMessage":"Handshake Complete"}"#,
        )
        .unwrap();
        assert!(h.is_ready());
        assert_eq!(h.customer_message(), Some("Handshake Complete"));
    }

    const KMS_REQUEST: &[u8] = br#"{"AgentVersion":"3.3.0.0","RequestedClientActions":[
            {"ActionType":"SessionType","ActionParameters":{"SessionType":"Standard_Stream","Properties":null}},
            {"ActionType":"KMSEncryption","ActionParameters":{"KMSKeyId":"arn:aws:kms:eu-west-1:1:key/k","Challenge":"3q2+7w=="}}]}"#;

    #[test]
    fn kms_request_without_a_kms_client_fails_with_a_typed_error() {
        let mut h = ClientHandshake::new("1.2.707.0");
        let reply = h.on_request(KMS_REQUEST);
        assert_eq!(
            reply.error,
            Some(HandshakeError::KmsUnavailable {
                key_id: "arn:aws:kms:eu-west-1:1:key/k".into()
            })
        );
        assert_eq!(reply.data_key, None);
        let actions = &reply.response.processed_client_actions;
        assert_eq!(actions[0].action_status, ActionStatus::Success);
        assert_eq!(actions[1].action_status, ActionStatus::Failed);
        assert!(!reply.response.all_succeeded());
        assert!(matches!(h.state(), HandshakeState::Failed(_)));
        assert!(h.on_complete(b"{}").is_err());
    }

    fn data_key() -> DataKey {
        DataKey {
            ciphertext_blob: b"wrapped".to_vec(),
            plaintext: (0..64u8).collect(),
        }
    }

    #[test]
    fn kms_request_asks_for_64_bytes_with_the_agents_context_then_answers_with_the_blob() {
        let mut h = ClientHandshake::new("1.2.707.0").with_kms("sess-1", "i-0123");
        let reply = h.on_request(KMS_REQUEST);
        assert_eq!(reply.error, None);
        let request = reply.data_key.unwrap();
        assert_eq!(request.key_id, "arn:aws:kms:eu-west-1:1:key/k");
        assert_eq!(request.number_of_bytes, 64);
        assert_eq!(
            serde_json::to_string(&request.encryption_context).unwrap(),
            r#"{"aws:ssm:SessionId":"sess-1","aws:ssm:TargetId":"i-0123"}"#
        );
        let reply = h.on_data_key(Ok(data_key()));
        assert_eq!(reply.error, None);
        assert!(reply.response.all_succeeded());
        assert_eq!(
            reply.response.processed_client_actions[1].action_result,
            serde_json::json!({"KMSCipherTextKey": B64.encode(b"wrapped"), "KMSCipherTextHash": null})
        );
        assert!(h.is_encrypted());
        // The challenge: sealed by the agent's half, answered with ours.
        let agent = SessionCipher::new(Side::Agent, &data_key().plaintext).unwrap();
        let challenge = agent.encrypt(&[7u8; 64]).unwrap();
        let request = serde_json::json!({"Challenge": B64.encode(challenge)}).to_string();
        let answer = h.on_challenge(request.as_bytes()).unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        let sealed = B64.decode(answer["Challenge"].as_str().unwrap()).unwrap();
        assert_eq!(agent.decrypt(&sealed).unwrap(), vec![7u8; 64]);
        h.on_complete(br#"{"HandshakeTimeToComplete":1,"CustomerMessage":"This session is encrypted using AWS KMS."}"#)
            .unwrap();
        assert!(h.is_ready());
        // Input is sealed (only PayloadType 1), output opened (1, 11, 12).
        let input = h
            .seal(PayloadType::Output, Bytes::from_static(b"ls\r"))
            .unwrap();
        assert_eq!(agent.decrypt(&input).unwrap(), b"ls\r");
        let size = h
            .seal(PayloadType::Size, Bytes::from_static(b"{}"))
            .unwrap();
        assert_eq!(&size[..], b"{}");
        let output = Bytes::from(agent.encrypt(b"$ ").unwrap());
        assert_eq!(
            &h.open(PayloadType::Output, output.clone()).unwrap()[..],
            b"$ "
        );
        assert!(matches!(
            h.open(
                PayloadType::Output,
                Bytes::from_static(b"not sealed by the agent")
            ),
            Err(HandshakeError::Encryption(_))
        ));
    }

    #[test]
    fn a_denied_data_key_fails_the_kms_action_with_kms_text() {
        let mut h = ClientHandshake::new("1.2.707.0").with_kms("sess-1", "i-0123");
        let _ = h.on_request(KMS_REQUEST);
        let reply = h.on_data_key(Err(DataKeyError::Denied(
            "User: x is not authorized".into(),
        )));
        assert_eq!(
            reply.error,
            Some(HandshakeError::KmsDenied {
                key_id: "arn:aws:kms:eu-west-1:1:key/k".into(),
                message: "User: x is not authorized".into()
            })
        );
        assert_eq!(
            reply.response.processed_client_actions[1].action_status,
            ActionStatus::Failed
        );
        assert!(!h.is_encrypted());
    }

    #[test]
    fn port_sessions_and_unknown_actions_are_unsupported() {
        let mut h = ClientHandshake::new("1.2.707.0");
        let reply = h.on_request(&HandshakeRequest::session_type("3", "Port").to_payload());
        assert_eq!(
            reply.error,
            Some(HandshakeError::UnsupportedSessionType("Port".into()))
        );
        let mut h = ClientHandshake::new("1.2.707.0");
        let reply = h.on_request(
            br#"{"AgentVersion":"3","RequestedClientActions":[{"ActionType":"Teleport"}]}"#,
        );
        assert_eq!(
            reply.error,
            Some(HandshakeError::UnknownAction("Teleport".into()))
        );
        let mut h = ClientHandshake::new("1.2.707.0");
        assert!(matches!(
            h.on_request(b"not json").error,
            Some(HandshakeError::Malformed(_))
        ));
    }

    #[test]
    fn handshake_fixture_keeps_raw_action_parameters() {
        let req = HandshakeRequest::from_payload(
            br#"{"AgentVersion":"3.0","RequestedClientActions":[{"ActionType":"SessionType","ActionParameters":{"name":"richard"}}]}"#,
        )
        .unwrap();
        assert_eq!(req.agent_version, "3.0");
        assert_eq!(
            req.requested_client_actions[0].action_parameters,
            serde_json::json!({"name": "richard"})
        );
        assert_eq!(serde_json::to_string(&ActionStatus::Success).unwrap(), "1");
    }
}
