//! `NodeShellSession`: one shell on one node for one person, created by the gateway, admitted
//! and expired by the controller, read by auditors.
// kube's printcolumn(...) repeats keys such as `type_` per column, which clippy misreads as
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the gateway asks for when a person opens a shell on a node. Written once at creation:
/// every field is immutable except `terminate`, which may only go from false to true.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "nodeshell.periscope.io",
    version = "v1alpha1",
    kind = "NodeShellSession",
    plural = "nodeshellsessions",
    shortname = "nss",
    category = "nodeshell",
    status = "NodeShellSessionStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "An audited shell on the EC2 host behind a Kubernetes node, opened through AWS SSM Session Manager with the person's own credentials.",
    printcolumn(
        name = "User",
        type_ = "string",
        json_path = ".spec.user.name",
        description = "Who opened the shell"
    ),
    printcolumn(
        name = "Node",
        type_ = "string",
        json_path = ".spec.nodeName",
        description = "Kubernetes node the shell runs on"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Lifecycle phase"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.reason",
        description = "Why the session is in its phase"
    ),
    printcolumn(
        name = "Exit",
        type_ = "integer",
        json_path = ".status.exitCode",
        description = "Exit code of the remote shell, when the agent reported one"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.terminate || !oldSelf.terminate",
        "message": "spec.terminate may only change from false to true"
    },
    {
        "rule": "has(self.reason) == has(oldSelf.reason)",
        "message": "spec.reason is immutable: it is written once at creation"
    }
]))]
pub struct NodeShellSessionSpec {
    /// Name of the Kubernetes node whose EC2 host the shell runs on. Immutable.
    #[schemars(length(min = 1, max = 253))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "spec.nodeName is immutable"}]))]
    pub node_name: String,

    /// EC2 instance id behind the node (from its `aws:///<zone>/<instance-id>` providerID). Immutable.
    #[schemars(length(min = 1, max = 64))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "spec.instanceId is immutable"}]))]
    pub instance_id: String,

    /// AWS region of the instance, where STS and SSM are called. Immutable.
    #[schemars(length(min = 1, max = 64))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "spec.region is immutable"}]))]
    pub region: String,

    /// Name of the NodeShellPolicy that governs this session (the highest-priority matching
    /// policy when it was created). Caps are counted per policy. Immutable.
    #[schemars(length(min = 1, max = 253))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "spec.policyName is immutable"}]))]
    pub policy_name: String,

    /// The person who asked for the shell, as their OIDC id_token identified them. Immutable.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "spec.user is immutable"}]))]
    pub user: SessionUser,

    /// IAM role assumed with the person's id_token (AssumeRoleWithWebIdentity). Immutable.
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^arn:aws(-cn|-us-gov)?:iam::\d{12}:role/.+")
    )]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "spec.roleArn is immutable"}]))]
    pub role_arn: String,

    /// Role session name used for AssumeRoleWithWebIdentity; it names the person in CloudTrail. Immutable.
    #[schemars(length(max = 64), regex(pattern = r"^[\w+=,.@-]{2,64}$"))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "spec.roleSessionName is immutable"}]))]
    pub role_session_name: String,

    /// SSM document started on the instance (usually SSM-SessionManagerRunShell). Immutable.
    #[schemars(length(min = 1, max = 128))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "spec.documentName is immutable"}]))]
    pub document_name: String,

    /// Optional justification the person gave for opening the shell. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "spec.reason is immutable"}]))]
    pub reason: Option<String>,

    /// Set to true to ask for the session to end (the owner or an admin tier asked). Once
    /// true it stays true.
    #[serde(default)]
    pub terminate: bool,
}

/// The person a session belongs to, from their verified OIDC id_token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionUser {
    /// OIDC subject (`sub` claim): the stable identity caps are counted by.
    #[schemars(length(min = 1, max = 512))]
    pub sub: String,

    /// E-mail address (`email` claim), when the issuer provides one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub email: Option<String>,

    /// Display name (preferred username, e-mail or subject), shown in the USER column.
    #[schemars(length(min = 1, max = 512))]
    pub name: String,

    /// Groups from the id_token, as the gateway saw them when mapping the tier.
    #[serde(default)]
    #[schemars(length(max = 256), inner(length(max = 512)))]
    pub groups: Vec<String>,

    /// Tier the person's groups mapped to; the governing policy must allow it.
    #[schemars(length(min = 1, max = 128))]
    pub tier: String,
}

/// Lifecycle phase of a session. A session without a phase is Pending.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum SessionPhase {
    /// Created by the gateway, waiting for the controller to admit or reject it.
    #[default]
    Pending,
    /// Counted against the caps; the gateway may attach and start the SSM session.
    Admitted,
    /// The SSM session is open and bridged to a browser.
    Active,
    /// Ending: the gateway terminates the SSM session and writes its transcript and audit rows.
    Closing,
    /// Ended. Kept for `retention.closedSessionSeconds`, then deleted.
    Closed,
    /// Refused at admission (caps or policy). Kept for `retention.rejectedSessionSeconds`.
    Rejected,
}

/// Observed state of a session, written by the controller (admission, expiry) and the
/// gateway (attach, activity, close).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(oldSelf.phase) || !(oldSelf.phase in ['Closed', 'Rejected']) || (has(self.phase) && self.phase == oldSelf.phase)",
        "message": "status.phase of a Closed or Rejected session cannot change: the session has ended; open a new one"
    }
]))]
pub struct NodeShellSessionStatus {
    /// Pending, Admitted, Active, Closing, Closed or Rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SessionPhase>,

    /// Machine-readable cause of the phase (CapPerUser, CapTotal, PolicyDenied, AttachTimeout,
    /// UserExit, IdleTimeout, MaxDuration, GatewayLost, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub reason: Option<String>,

    /// Human-readable explanation of the phase and what to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub message: Option<String>,

    /// SSM session id returned by StartSession.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssm_session_id: Option<String>,

    /// When the controller admitted the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_at: Option<Time>,

    /// When the SSM session started (the session became Active).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,

    /// Last terminal activity the gateway counted (input, or input and output, per the policy).
    /// Written at most once every [`ACTIVITY_WRITE_INTERVAL`] (and at the close), so it may lag
    /// the real last activity by up to [`ACTIVITY_STATUS_LAG`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity_at: Option<Time>,

    /// When the session ended (Closed) or was rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Time>,

    /// Seconds between startedAt and endedAt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,

    /// Exit code of the remote shell, when the agent reported one. Absent for
    /// `SSM-SessionManagerRunShell`: its agent never sends the shell's exit status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,

    /// Where `exitCode` came from: `Agent` (the agent reported it on the data channel) or
    /// `Shell` (the shell's own final mark, printed by the `NodeShell-Shell` document's
    /// profile; cooperative, see `status.ledger`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Agent", "Shell"]))]
    pub exit_code_source: Option<String>,

    /// Bytes typed by the person (browser to node). Exact at the close; while the session
    /// runs, as of the last activity write (at most once a minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<i64>,

    /// Bytes printed by the node (node to browser). Exact at the close; while the session
    /// runs, as of the last activity write (at most once a minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<i64>,

    /// The gateway replica that owns the live session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<SessionGateway>,

    /// Where the transcript of the session is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<SessionTranscript>,

    /// The command ledger's summary, for a session on the `NodeShell-Shell` document
    /// (absent on other documents: they print no marks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<SessionLedger>,

    /// Audit rows written for this session (open, close), as references into the audit log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["id"]))]
    pub audit: Vec<SessionAuditRecord>,

    /// Conditions of the session (Admitted, ...). One entry per type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The gateway replica that owns a live session and proves it is alive.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionGateway {
    /// Name of the gateway pod. Its liveness is the coordination Lease
    /// `nodeshell-gateway-<pod>` in the operator's namespace, renewed by that pod; when the
    /// Lease is gone or not renewed within its duration, the controller closes the session
    /// (GatewayLost).
    pub pod: String,

    /// Deprecated: the per-session heartbeat of gateways that predate the gateway Lease.
    /// Gateways no longer write it; the controller reads it only for a session whose pod has
    /// no Lease (a gateway of an older version during an upgrade), against its
    /// `--heartbeat-timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_at: Option<Time>,
}

// === impl SessionGateway ===

impl SessionGateway {
    /// The name of the coordination Lease this gateway pod renews.
    pub fn lease_name(&self) -> String {
        gateway_lease_name(&self.pod)
    }
}

/// The coordination Lease a gateway pod renews while it runs, in the operator's namespace:
/// `nodeshell-gateway-<pod>` (holder: the pod's name).
pub fn gateway_lease_name(pod: &str) -> String {
    format!("{GATEWAY_LEASE_PREFIX}{pod}")
}

/// The prefix of every gateway Lease's name.
pub const GATEWAY_LEASE_PREFIX: &str = "nodeshell-gateway-";

/// The label every gateway Lease carries (value `gateway`), so the controller watches only
/// those Leases.
pub const GATEWAY_LEASE_LABEL: &str = "nodeshell.periscope.io/lease";

/// A running session's status is written for activity at most this often
/// (`lastActivityAt`, with the byte counters); phase changes and the close are written at once.
pub const ACTIVITY_WRITE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// How far `status.lastActivityAt` may lag the real last activity while a session runs: the
/// value written may be up to one write interval and one status tick old when it is written,
/// and the next write waits up to another interval and tick (ticks are at most 30 s, the
/// gateway's `--heartbeat-interval` bound). The controller's idle backstop waits this much
/// longer.
pub const ACTIVITY_STATUS_LAG: std::time::Duration = std::time::Duration::from_secs(2 * (60 + 30));

/// Where a session's transcript is stored and how to check it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionTranscript {
    /// Where the transcript is stored: the name prefix of its Secrets in the operator's
    /// namespace (`<ref>-0`, `<ref>-1`, …, each a gzip member of the recording).
    #[serde(rename = "ref")]
    pub reference: String,

    /// Recording format, e.g. `asciicast-v2+gzip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,

    /// Terminal bytes recorded (before compression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,

    /// True when the recording stopped at the policy's `transcript.maxBytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,

    /// Hex SHA-256 of the whole recording, uncompressed (the asciicast v2 text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,

    /// Head of the chunks' hash chain (hex): each chunk Secret carries the link before it
    /// (annotation `nodeshell.periscope.io/transcript-chain-prev`), and this is the link
    /// after the last chunk stored. `nodeshell transcript verify` checks the stored chunks
    /// against it and names the first that differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_head: Option<String>,
}

/// `status.exitCodeSource` when the agent reported the exit code.
pub const EXIT_CODE_FROM_AGENT: &str = "Agent";
/// `status.exitCodeSource` when the shell's own final mark gave it.
pub const EXIT_CODE_FROM_SHELL: &str = "Shell";

/// The command ledger of a session: commands the shell reported through its marks
/// (cooperative: the transcript is the authoritative record).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionLedger {
    /// The Secret holding the ledger's records, in the operator's namespace
    /// (`<session>-ledger`).
    #[serde(rename = "ref")]
    pub reference: String,

    /// Commands the shell started.
    pub commands: i64,

    /// Commands that finished with a non-zero exit status.
    pub failed_commands: i64,

    /// Exit status of the last finished command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_status: Option<i32>,

    /// Mark-like sequences in the output without the session's nonce (printed by a program
    /// or a file, not by the profile): never commands.
    #[serde(default)]
    pub forged_marks: i64,

    /// True when more commands ran than the ledger keeps records of (800); the counts
    /// include them.
    #[serde(default)]
    pub truncated: bool,
}

/// One audit row written for a session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionAuditRecord {
    /// Unique id of the audit row.
    pub id: String,

    /// What happened: `ssm_session_open`, `ssm_session_close`, ...
    pub verb: String,

    /// When it happened.
    pub time: Time,
}

/// Machine-readable reasons a session is in its phase; written to `status.reason`.
///
/// The CRD keeps `reason` an open string so a newer gateway can add reasons without a schema
/// change; these are the ones this version writes or understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionReason {
    /// The person already has `maxSessionsPerUser` live sessions under the policy.
    CapPerUser,
    /// The policy already has `maxSessionsTotal` live sessions.
    CapTotal,
    /// The governing policy is missing, disabled, invalid or does not allow the tier.
    PolicyDenied,
    /// The node is not eligible (not EC2, or no policy selects it).
    NodeNotEligible,
    /// Admitted but never attached within the controller's `--attach-timeout`.
    AttachTimeout,
    /// The shell exited.
    UserExit,
    /// The browser went away and did not come back within the reattach window.
    ClientDisconnected,
    /// No activity for the policy's `idleSeconds`.
    IdleTimeout,
    /// Open for the policy's `maxDurationSeconds`.
    MaxDuration,
    /// `spec.terminate` was set (owner or an admin asked).
    AdminTerminated,
    /// The gateway shut down and closed its sessions.
    GatewayShutdown,
    /// The owning gateway stopped sending heartbeats.
    GatewayLost,
    /// STS refused AssumeRoleWithWebIdentity.
    AssumeRoleDenied,
    /// The SSM agent on the instance is offline.
    AgentOffline,
    /// StartSession or the data channel failed.
    StartFailed,
    /// The person closed the terminal.
    UserClosed,
    /// `transcript.required` and the transcript could not be stored.
    TranscriptFailed,
    /// The data channel failed and could not be resumed.
    ChannelLost,
    /// The person's identity no longer holds during the session: the identity provider
    /// refused to renew their sign-in (disabled, consent revoked), or their groups no longer
    /// map to a tier the session's policy allows.
    IdentityRevoked,
    /// Session Manager's own idle timeout (the account's `idleSessionTimeout` preference)
    /// closed the session.
    SsmIdleTimeout,
    /// Session Manager's maximum session duration (the account's `maxSessionDuration`
    /// preference) closed the session.
    SsmMaxDuration,
    /// Someone outside nodeshell called `ssm:TerminateSession` on the SSM session.
    SsmTerminated,
    /// The session's AWS credentials could not be renewed: a shell opened with a bearer token
    /// (which cannot be refreshed) ended a minute before they expire, or the data channel had
    /// to reconnect (Session Manager's hourly recycle, a network drop) after they expired and
    /// the identity provider refused the console's refresh.
    CredentialsExpired,
}

// === impl SessionReason ===

impl SessionReason {
    /// The string written to `status.reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CapPerUser => "CapPerUser",
            Self::CapTotal => "CapTotal",
            Self::PolicyDenied => "PolicyDenied",
            Self::NodeNotEligible => "NodeNotEligible",
            Self::AttachTimeout => "AttachTimeout",
            Self::UserExit => "UserExit",
            Self::ClientDisconnected => "ClientDisconnected",
            Self::IdleTimeout => "IdleTimeout",
            Self::MaxDuration => "MaxDuration",
            Self::AdminTerminated => "AdminTerminated",
            Self::GatewayShutdown => "GatewayShutdown",
            Self::GatewayLost => "GatewayLost",
            Self::AssumeRoleDenied => "AssumeRoleDenied",
            Self::AgentOffline => "AgentOffline",
            Self::StartFailed => "StartFailed",
            Self::UserClosed => "UserClosed",
            Self::TranscriptFailed => "TranscriptFailed",
            Self::ChannelLost => "ChannelLost",
            Self::IdentityRevoked => "IdentityRevoked",
            Self::SsmIdleTimeout => "SsmIdleTimeout",
            Self::SsmMaxDuration => "SsmMaxDuration",
            Self::SsmTerminated => "SsmTerminated",
            Self::CredentialsExpired => "CredentialsExpired",
        }
    }
}

impl std::fmt::Display for SessionReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl SessionPhase ===

impl SessionPhase {
    /// The string written to `status.phase`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Admitted => "Admitted",
            Self::Active => "Active",
            Self::Closing => "Closing",
            Self::Closed => "Closed",
            Self::Rejected => "Rejected",
        }
    }

    /// Live sessions count against the caps: Admitted, Active and Closing.
    pub fn is_live(self) -> bool {
        matches!(self, Self::Admitted | Self::Active | Self::Closing)
    }

    /// Terminal sessions only wait for retention: Closed and Rejected.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Closed | Self::Rejected)
    }
}

impl std::fmt::Display for SessionPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl NodeShellSession ===

impl NodeShellSession {
    /// The phase, Pending when no status has been written yet.
    pub fn phase(&self) -> SessionPhase {
        self.status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or_default()
    }
}
