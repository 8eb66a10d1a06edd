//! The session handshake (PayloadTypes 5, 6, 7): its payloads and the client's decision
//! machine. Shell sessions without KMS skip it; the first output then marks readiness.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::payload::PayloadError;

/// `ActionType` asking the client to confirm the session type.
pub const ACTION_SESSION_TYPE: &str = "SessionType";
/// `ActionType` asking the client to set up KMS encryption (unsupported here).
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
    /// The session's preferences ask for KMS encryption.
    #[error(
        "the session requires KMS encryption (key {key_id}), which nodeshell does not support; \
         remove the KMS key from the Session Manager preferences or use another document"
    )]
    KmsEncryptionUnsupported {
        /// The key the agent named.
        key_id: String,
    },
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
    /// The agent started an encryption challenge (only follows KMS, which we refuse).
    #[error("the agent sent an encryption challenge; KMS-encrypted sessions are not supported")]
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
}

/// The client's handshake decisions; pure, driven by the channel task.
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    client_version: String,
    state: HandshakeState,
    session_type: Option<String>,
    customer_message: Option<String>,
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
        }
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
                };
            }
        };
        let mut processed = Vec::new();
        let mut first_error = None;
        for action in &request.requested_client_actions {
            let (status, error) = self.process(action);
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
        HandshakeReply {
            response: self.response(processed, errors),
            error: first_error,
        }
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
            ACTION_KMS_ENCRYPTION => {
                let key_id = action
                    .action_parameters
                    .get("KMSKeyId")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                (
                    ActionStatus::Unsupported,
                    Some(HandshakeError::KmsEncryptionUnsupported { key_id }),
                )
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

    #[test]
    fn kms_request_is_refused_with_unsupported_and_a_typed_error() {
        let mut h = ClientHandshake::new("1.2.707.0");
        let req = br#"{"AgentVersion":"3.3.0.0","RequestedClientActions":[
            {"ActionType":"SessionType","ActionParameters":{"SessionType":"Standard_Stream","Properties":null}},
            {"ActionType":"KMSEncryption","ActionParameters":{"KMSKeyId":"arn:aws:kms:eu-west-1:1:key/k","Challenge":"3q2+7w=="}}]}"#;
        let reply = h.on_request(req);
        assert_eq!(
            reply.error,
            Some(HandshakeError::KmsEncryptionUnsupported {
                key_id: "arn:aws:kms:eu-west-1:1:key/k".into()
            })
        );
        let actions = &reply.response.processed_client_actions;
        assert_eq!(actions[0].action_status, ActionStatus::Success);
        assert_eq!(actions[1].action_status, ActionStatus::Unsupported);
        assert!(!reply.response.all_succeeded());
        assert_eq!(reply.response.errors.as_ref().map(Vec::len), Some(1));
        assert!(matches!(h.state(), HandshakeState::Failed(_)));
        assert!(h.on_complete(b"{}").is_err());
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
