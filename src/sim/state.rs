//! The simulator's shared in-memory state: issued credentials, sessions, instances, the call
//! log, and the issuer's keys.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::agent_messages::AgentEvent;
use super::clients::RefreshBook;
use super::config::{InstanceConfig, RoleConfig, SimConfig};
use super::faults::FaultKnobs;
use super::jwt::KeyRing;
use super::login::CodeBook;
use super::service_limits::ServiceLimits;
use super::trust_policy::TrustPolicy;

/// The URLs the simulator serves on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimUrls {
    /// OIDC issuer (the `iss` of its tokens), e.g. `http://127.0.0.1:41234`.
    pub issuer: String,
    /// STS endpoint.
    pub sts: String,
    /// SSM endpoint.
    pub ssm: String,
    /// Base of the `ssmmessages` data channel, e.g. `ws://127.0.0.1:41237`.
    pub messages: String,
    /// KMS endpoint.
    pub kms: String,
}

/// One API call as the simulator saw it: the tests' CloudTrail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    /// `AssumeRoleWithWebIdentity`, `StartSession`, …
    pub operation: String,
    /// The calling principal: the assumed-role ARN (for STS, the ARN issued).
    pub principal_arn: Option<String>,
    /// The access key id the call was signed with (for STS, the one issued), as CloudTrail
    /// records it; not a secret.
    pub access_key_id: Option<String>,
    /// SSM session id involved.
    pub session_id: Option<String>,
    /// Target instance.
    pub target: Option<String>,
    /// StartSession `Reason`.
    pub reason: Option<String>,
    /// Error code returned, if the call failed.
    pub error_code: Option<String>,
    /// When the call arrived.
    pub time: DateTime<Utc>,
}

impl CallRecord {
    pub(crate) fn new(operation: &str) -> Self {
        Self {
            operation: operation.to_string(),
            principal_arn: None,
            access_key_id: None,
            session_id: None,
            target: None,
            reason: None,
            error_code: None,
            time: Utc::now(),
        }
    }
}

/// Temporary credentials the STS handed out (secrets stay inside the simulator).
#[derive(Clone)]
pub(crate) struct IssuedCredentials {
    pub secret_access_key: String,
    pub session_token: String,
    pub expiration: DateTime<Utc>,
    pub principal_arn: String,
    pub role_name: String,
    pub role_session_name: String,
}

/// Mutable part of a session.
pub(crate) struct SessionMut {
    /// The token that currently opens the data channel.
    pub token: String,
    /// When `token` was issued (it opens a connection for `dataChannel.streamTokenSeconds`).
    pub token_issued: std::time::Instant,
    pub terminated: bool,
    pub agent: Option<mpsc::Sender<AgentEvent>>,
    /// How many times the close-socket knob fired.
    pub closes_done: u32,
    /// The shell's real exit status (never sent to the client: the PTY path has no EXIT_CODE).
    pub exit_code: Option<i32>,
    /// Messages the agent's resend loop put on the wire again.
    pub agent_resends: u64,
    /// Messages that found the agent's outgoing buffer full (sent once, never resent).
    pub agent_not_kept: u64,
    /// Input frames from the client lost by the `inputDrop` knob.
    pub input_dropped: u64,
    /// Acknowledgements (either direction) lost by the `ackDrop` knob.
    pub acks_dropped: u64,
}

/// One SSM session.
pub(crate) struct SessionEntry {
    pub id: String,
    pub owner_arn: String,
    pub target: String,
    pub document: String,
    pub parameters: BTreeMap<String, Vec<String>>,
    pub ordinal: u64,
    pub knobs: Mutex<FaultKnobs>,
    /// Session Manager's own limits on this session (the account's preferences when it
    /// started; tests may change them on a live session).
    pub limits: Mutex<ServiceLimits>,
    /// How old a data-channel connection gets before the service closes it with `1000 Bye`
    /// (`dataChannel.recycleSeconds` when the session started; tests may change it).
    pub recycle: Mutex<std::time::Duration>,
    pub state: Mutex<SessionMut>,
}

/// Everything the handlers share.
pub(crate) struct Shared {
    pub config: SimConfig,
    pub urls: SimUrls,
    pub keys: RwLock<KeyRing>,
    pub credentials: Mutex<HashMap<String, IssuedCredentials>>,
    pub instances: Mutex<BTreeMap<String, InstanceConfig>>,
    pub sessions: Mutex<HashMap<String, Arc<SessionEntry>>>,
    pub calls: Mutex<Vec<CallRecord>>,
    pub ordinal: AtomicU64,
    pub shutdown: CancellationToken,
    /// Authorization codes of the browser login.
    pub codes: Mutex<CodeBook>,
    /// Refresh tokens issued to confidential clients.
    pub refresh_tokens: Mutex<RefreshBook>,
    /// Users the identity provider has disabled (knob).
    pub disabled_users: Mutex<HashSet<String>>,
    /// Fault knob: STS cannot reach the identity provider (answers IDPCommunicationError).
    pub idp_unreachable: AtomicBool,
    /// Trust policies set after start (`SimHandle::set_trust_policy`), by role name; they
    /// replace the role's configured one.
    pub trust_policies: Mutex<HashMap<String, TrustPolicy>>,
    /// The account's KMS keys and their key material.
    pub kms: super::kms::KmsKeys,
    /// The account's Session Manager preferences (from the config; a knob at run time).
    pub preferences: Mutex<super::config::SessionManagerPreferences>,
}

/// Locks a mutex, recovering the data if a holder panicked (state stays usable for tests).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub fn role(&self, name: &str) -> Option<&RoleConfig> {
        self.config.roles.iter().find(|r| r.name == name)
    }

    pub fn record(&self, call: CallRecord) {
        lock(&self.calls).push(call);
    }

    /// The provider's client-id list: the issuer's client id, extras, the registered
    /// confidential clients, every role's audience.
    pub fn accepted_audiences(&self) -> Vec<String> {
        let mut auds = vec![self.config.issuer.client_id.clone()];
        auds.extend(self.config.issuer.extra_audiences.iter().cloned());
        auds.extend(
            self.config
                .issuer
                .clients
                .iter()
                .map(|c| c.client_id.clone()),
        );
        auds.extend(self.config.roles.iter().map(|r| r.audience.clone()));
        auds
    }

    pub fn session(&self, id: &str) -> Option<Arc<SessionEntry>> {
        lock(&self.sessions).get(id).cloned()
    }
}
