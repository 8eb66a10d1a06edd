//! The agent's side of the session handshake when the account's Session Manager preferences
//! name a KMS key (fact sheet §6): HandshakeRequest with the `SessionType` and `KMSEncryption`
//! actions, the client's data key decrypted through the simulated KMS with the context
//! `{"aws:ssm:SessionId", "aws:ssm:TargetId"}`, the encryption challenge, HandshakeComplete,
//! then payloads encrypted as the agent encrypts them.
//!
//! Read from `aws/amazon-ssm-agent` `agent/session/datachannel/datachannel.go`
//! (`PerformHandshake`, `handleHandshakeResponse`, `finalizeKMSEncryption`,
//! `handleEncryptionChallengeResponse`, `processStreamDataMessage`: 15 s per wait, stream
//! data ignored until the handshake completes, only Output decrypted) and
//! `agent/session/crypto/blockcipher.go` (context keys, key split, 16-byte random challenge).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::kms::KmsKeys;
use crate::ssm::crypto::{SessionCipher, Side, random_bytes};
use crate::ssm::handshake::{
    ACTION_KMS_ENCRYPTION, ACTION_SESSION_TYPE, HandshakeComplete, HandshakeRequest,
    HandshakeResponse, RequestedClientAction,
};
use crate::ssm::message::PayloadType;

/// How long the agent waits for the HandshakeResponse, and then for the challenge answer.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// The agent version the simulated agent reports.
const AGENT_VERSION: &str = "3.3.1611.0";
/// What the agent tells the person once the session is encrypted.
pub(crate) const ENCRYPTED_MESSAGE: &str = "This session is encrypted using AWS KMS.";

/// Where the agent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitResponse,
    AwaitChallenge,
    Complete,
}

/// `{"Challenge": base64}`: EncChallengeRequest and EncChallengeResponse alike.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChallengePayload {
    challenge: String,
}

/// The client's KMSEncryption action result.
#[derive(Deserialize)]
struct KmsEncryptionResult {
    #[serde(rename = "KMSCipherTextKey")]
    cipher_text_key: String,
    #[serde(rename = "ChallengeAcknowledgement", default)]
    challenge_acknowledgement: bool,
}

/// What an inbound stream message becomes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inbound {
    /// Goes to the shell (decrypted if it was Output).
    Deliver(Bytes),
    /// A handshake reply for the agent to send.
    Reply(PayloadType, Bytes),
    /// Acknowledged but ignored (stream data before HandshakeComplete).
    Ignore,
}

/// The agent's handshake and, once complete, its payload cipher.
pub(crate) struct AgentHandshake {
    session_id: String,
    target: String,
    random_challenge: String,
    phase: Phase,
    started: Instant,
    deadline: Instant,
    challenge: Vec<u8>,
    cipher: Option<SessionCipher>,
    failure: Option<String>,
}

fn fail(reason: impl std::fmt::Display) -> String {
    format!("Encountered error while initiating handshake. {reason}")
}

impl AgentHandshake {
    /// Starts a KMS handshake for `key_id`; returns it and the HandshakeRequest payload.
    pub fn start(
        key_id: &str,
        session_id: &str,
        target: &str,
        now: Instant,
    ) -> Result<(Self, Bytes), String> {
        let random_challenge = B64.encode(random_bytes(16).map_err(fail)?);
        let mut request = HandshakeRequest::session_type(AGENT_VERSION, "Standard_Stream");
        request
            .requested_client_actions
            .push(RequestedClientAction {
                action_type: ACTION_KMS_ENCRYPTION.into(),
                action_parameters: serde_json::json!({
                    "KMSKeyId": key_id,
                    "Challenge": random_challenge,
                }),
            });
        let handshake = Self {
            session_id: session_id.into(),
            target: target.into(),
            random_challenge,
            phase: Phase::AwaitResponse,
            started: now,
            deadline: now + HANDSHAKE_TIMEOUT,
            challenge: Vec::new(),
            cipher: None,
            failure: None,
        };
        Ok((handshake, request.to_payload()))
    }

    /// Whether the shell may start talking.
    pub fn is_complete(&self) -> bool {
        self.phase == Phase::Complete
    }

    /// Why the session must end, once the handshake failed.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// When the current wait times out (none once complete or failed).
    pub fn deadline(&self) -> Option<Instant> {
        (self.phase != Phase::Complete && self.failure.is_none()).then_some(self.deadline)
    }

    /// The wait timed out: the session fails with the agent's text.
    pub fn on_timeout(&mut self) {
        let reason = match self.phase {
            Phase::AwaitResponse => {
                "Handshake timed out. Please ensure that you have the latest version of the session manager plugin."
            }
            _ => "Timed out waiting for encryption challenge.",
        };
        self.failure = Some(fail(reason));
    }

    /// Encrypts what the agent sends when encryption is on (Output, StdErr, ExitCode).
    pub fn seal(&self, payload_type: PayloadType, payload: Bytes) -> Bytes {
        match (&self.cipher, payload_type) {
            (Some(cipher), PayloadType::Output | PayloadType::StdErr | PayloadType::ExitCode) => {
                cipher
                    .encrypt(&payload)
                    .map(Bytes::from)
                    .unwrap_or_default()
            }
            _ => payload,
        }
    }

    /// An inbound stream message, in order.
    pub fn on_inbound(
        &mut self,
        payload_type: PayloadType,
        payload: &[u8],
        kms: &KmsKeys,
        now: Instant,
    ) -> Inbound {
        if self.failure.is_some() {
            return Inbound::Ignore;
        }
        let mut payload = Bytes::copy_from_slice(payload);
        if payload_type == PayloadType::Output
            && let Some(cipher) = &self.cipher
        {
            match cipher.decrypt(&payload) {
                Ok(plain) => payload = Bytes::from(plain),
                Err(e) => {
                    self.failure = Some(format!("Error decrypting stream data message: {e}"));
                    return Inbound::Ignore;
                }
            }
        }
        match payload_type {
            PayloadType::HandshakeResponse if self.phase == Phase::AwaitResponse => {
                match self.on_response(&payload, kms, now) {
                    Ok(reply) => Inbound::Reply(PayloadType::EncChallengeRequest, reply),
                    Err(e) => {
                        self.failure = Some(fail(e));
                        Inbound::Ignore
                    }
                }
            }
            PayloadType::EncChallengeResponse if self.phase == Phase::AwaitChallenge => {
                match self.on_challenge_response(&payload, now) {
                    Ok(reply) => Inbound::Reply(PayloadType::HandshakeComplete, reply),
                    Err(e) => {
                        self.failure = Some(fail(e));
                        Inbound::Ignore
                    }
                }
            }
            _ if self.phase != Phase::Complete => Inbound::Ignore,
            _ => Inbound::Deliver(payload),
        }
    }

    fn on_response(
        &mut self,
        payload: &[u8],
        kms: &KmsKeys,
        now: Instant,
    ) -> Result<Bytes, String> {
        let response = HandshakeResponse::from_payload(payload)
            .map_err(|e| format!("Unmarshalling of HandshakeResponse message failed, {e}"))?;
        let mut cipher = None;
        for action in &response.processed_client_actions {
            if action.action_status != crate::ssm::handshake::ActionStatus::Success {
                return Err(format!(
                    "{} failed on client with status {} error: {}",
                    action.action_type,
                    u32::from(action.action_status),
                    action.error
                ));
            }
            if action.action_type == ACTION_KMS_ENCRYPTION {
                cipher = Some(self.finalize_kms(&action.action_result, kms)?);
            } else if action.action_type != ACTION_SESSION_TYPE {
                tracing::debug!(action = %action.action_type, "unknown handshake client action");
            }
        }
        let cipher = cipher.ok_or("KMSEncryption was not answered by the client")?;
        let challenge = random_bytes(64).map_err(|e| e.to_string())?;
        let sealed = cipher.encrypt(&challenge).map_err(|e| e.to_string())?;
        self.challenge = challenge;
        self.cipher = Some(cipher);
        self.phase = Phase::AwaitChallenge;
        self.deadline = now + HANDSHAKE_TIMEOUT;
        let body = ChallengePayload {
            challenge: B64.encode(sealed),
        };
        Ok(Bytes::from(serde_json::to_vec(&body).unwrap_or_default()))
    }

    fn finalize_kms(
        &self,
        result: &serde_json::Value,
        kms: &KmsKeys,
    ) -> Result<SessionCipher, String> {
        let result: KmsEncryptionResult =
            serde_json::from_value(result.clone()).map_err(|e| e.to_string())?;
        let blob = B64
            .decode(&result.cipher_text_key)
            .map_err(|e| format!("Fetching data key failed: {e}"))?;
        let mut context = BTreeMap::from([
            ("aws:ssm:SessionId".to_string(), self.session_id.clone()),
            ("aws:ssm:TargetId".to_string(), self.target.clone()),
        ]);
        if result.challenge_acknowledgement {
            context.insert(
                "aws:ssm:RandomChallenge".to_string(),
                self.random_challenge.clone(),
            );
        }
        let (plain, _) = kms
            .decrypt(None, &blob, &context, None)
            .map_err(|e| format!("Fetching data key failed: {}: {}", e.code, e.message))?;
        SessionCipher::new(Side::Agent, &plain).map_err(|e| e.to_string())
    }

    fn on_challenge_response(&mut self, payload: &[u8], now: Instant) -> Result<Bytes, String> {
        let body: ChallengePayload = serde_json::from_slice(payload).map_err(|e| {
            format!("Unmarshalling of EncryptionChallengeResponse message failed, {e}")
        })?;
        let sealed = B64.decode(body.challenge).map_err(|e| e.to_string())?;
        let cipher = self.cipher.as_ref().ok_or("no cipher")?;
        let answer = cipher.decrypt(&sealed).map_err(|e| e.to_string())?;
        if answer != self.challenge {
            return Err("Encryption challenge does not match!".into());
        }
        self.phase = Phase::Complete;
        let took = now.saturating_duration_since(self.started);
        let complete = HandshakeComplete {
            handshake_time_to_complete: i64::try_from(took.as_nanos()).unwrap_or(i64::MAX),
            customer_message: ENCRYPTED_MESSAGE.into(),
        };
        Ok(complete.to_payload())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;
    use crate::sim::config::{KmsKeyConfig, SimConfig};
    use crate::sim::kms::KmsCaller;
    use crate::ssm::handshake::{ActionStatus, ProcessedClientAction};

    const SESSION: &str = "alice-0123456789abcdef0";
    const TARGET: &str = "i-0123456789abcdef0";

    fn kms() -> KmsKeys {
        KmsKeys::generate(&SimConfig {
            kms_keys: vec![KmsKeyConfig::default()],
            ..SimConfig::for_tests()
        })
        .unwrap()
    }

    fn client_key(kms: &KmsKeys, session: &str) -> (String, Vec<u8>) {
        let context = BTreeMap::from([
            ("aws:ssm:SessionId".to_string(), session.to_string()),
            ("aws:ssm:TargetId".to_string(), TARGET.to_string()),
        ]);
        let caller = KmsCaller {
            role_name: "nodeshell-user",
            principal_arn: "arn:aws:sts::1:assumed-role/nodeshell-user/alice",
            denied_actions: &[],
        };
        let key = kms
            .generate_data_key(caller, "alias/nodeshell-sessions", 64, &context)
            .unwrap();
        (B64.encode(key.ciphertext_blob), key.plaintext)
    }

    fn response(blob: &str) -> Bytes {
        HandshakeResponse {
            client_version: "1.2.707.0".into(),
            processed_client_actions: vec![
                ProcessedClientAction {
                    action_type: ACTION_SESSION_TYPE.into(),
                    action_status: ActionStatus::Success,
                    action_result: serde_json::Value::Null,
                    error: String::new(),
                },
                ProcessedClientAction {
                    action_type: ACTION_KMS_ENCRYPTION.into(),
                    action_status: ActionStatus::Success,
                    action_result: serde_json::json!({"KMSCipherTextKey": blob, "KMSCipherTextHash": null}),
                    error: String::new(),
                },
            ],
            errors: None,
        }
        .to_payload()
    }

    #[test]
    fn the_full_handshake_then_encrypted_payloads_both_ways() {
        let kms = kms();
        let now = Instant::now();
        let (mut agent, request) =
            AgentHandshake::start("alias/nodeshell-sessions", SESSION, TARGET, now).unwrap();
        let request = HandshakeRequest::from_payload(&request).unwrap();
        assert_eq!(request.requested_client_actions.len(), 2);
        let kms_action = &request.requested_client_actions[1];
        assert_eq!(kms_action.action_type, "KMSEncryption");
        assert_eq!(
            kms_action.action_parameters["KMSKeyId"],
            "alias/nodeshell-sessions"
        );
        let challenge = kms_action.action_parameters["Challenge"].as_str().unwrap();
        assert_eq!(B64.decode(challenge).unwrap().len(), 16);
        // Input before the handshake completes is ignored.
        assert_eq!(
            agent.on_inbound(PayloadType::Output, b"early", &kms, now),
            Inbound::Ignore
        );
        let (blob, data_key) = client_key(&kms, SESSION);
        let client = SessionCipher::new(Side::Client, &data_key).unwrap();
        let Inbound::Reply(PayloadType::EncChallengeRequest, challenge) =
            agent.on_inbound(PayloadType::HandshakeResponse, &response(&blob), &kms, now)
        else {
            panic!("no challenge");
        };
        assert!(!agent.is_complete());
        let body: ChallengePayload = serde_json::from_slice(&challenge).unwrap();
        let plain = client
            .decrypt(&B64.decode(body.challenge).unwrap())
            .unwrap();
        assert_eq!(plain.len(), 64);
        let answer = serde_json::to_vec(&ChallengePayload {
            challenge: B64.encode(client.encrypt(&plain).unwrap()),
        })
        .unwrap();
        let Inbound::Reply(PayloadType::HandshakeComplete, complete) =
            agent.on_inbound(PayloadType::EncChallengeResponse, &answer, &kms, now)
        else {
            panic!("no completion");
        };
        let complete = HandshakeComplete::from_payload(&complete).unwrap();
        assert_eq!(complete.customer_message, ENCRYPTED_MESSAGE);
        assert!(agent.is_complete());
        assert_eq!(agent.deadline(), None);
        let sealed = agent.seal(PayloadType::Output, Bytes::from_static(b"$ "));
        assert_ne!(&sealed[..], b"$ ");
        assert_eq!(client.decrypt(&sealed).unwrap(), b"$ ");
        let input = client.encrypt(b"ls\r").unwrap();
        assert_eq!(
            agent.on_inbound(PayloadType::Output, &input, &kms, now),
            Inbound::Deliver(Bytes::from_static(b"ls\r"))
        );
        // Size messages stay plaintext, as the agent decrypts only Output.
        assert_eq!(
            agent.on_inbound(PayloadType::Size, br#"{"cols":80,"rows":24}"#, &kms, now),
            Inbound::Deliver(Bytes::from_static(br#"{"cols":80,"rows":24}"#))
        );
    }

    #[test]
    fn a_key_made_for_another_session_fails_the_handshake() {
        let kms = kms();
        let now = Instant::now();
        let (mut agent, _) =
            AgentHandshake::start("alias/nodeshell-sessions", SESSION, TARGET, now).unwrap();
        let (blob, _) = client_key(&kms, "someone-else-0000");
        assert_eq!(
            agent.on_inbound(PayloadType::HandshakeResponse, &response(&blob), &kms, now),
            Inbound::Ignore
        );
        let failure = agent.failure().unwrap();
        assert!(failure.contains("InvalidCiphertextException"), "{failure}");
    }

    #[test]
    fn a_failed_client_action_or_silence_fails_with_the_agents_text() {
        let kms = kms();
        let now = Instant::now();
        let (mut agent, _) = AgentHandshake::start("k", SESSION, TARGET, now).unwrap();
        let refused = br#"{"ClientVersion":"1","ProcessedClientActions":[{"ActionType":"KMSEncryption","ActionStatus":3,"ActionResult":null,"Error":"no"}],"Errors":null}"#;
        agent.on_inbound(PayloadType::HandshakeResponse, refused, &kms, now);
        assert_eq!(
            agent.failure(),
            Some(
                "Encountered error while initiating handshake. KMSEncryption failed on client with status 3 error: no"
            )
        );
        let (mut agent, _) = AgentHandshake::start("k", SESSION, TARGET, now).unwrap();
        assert_eq!(agent.deadline(), Some(now + Duration::from_secs(15)));
        agent.on_timeout();
        assert!(agent.failure().unwrap().contains("Handshake timed out"));
        assert_eq!(agent.deadline(), None);
    }
}
