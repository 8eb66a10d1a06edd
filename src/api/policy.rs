//! `NodeShellPolicy`: who may open shells, on which nodes, with which limits. Kept in Git and
//! applied by platform teams; the controller reports whether each one is usable.
// kube's printcolumn(...) repeats keys such as `type_` per column, which clippy misreads as
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default SSM document: an interactive shell.
pub const DEFAULT_DOCUMENT_NAME: &str = "SSM-SessionManagerRunShell";
/// nodeshell's own shell document (`config/ssm/NodeShell-Shell.json`): its profile prints
/// the marks a command ledger is built from.
pub const LEDGER_DOCUMENT_NAME: &str = "NodeShell-Shell";

/// Who may open node shells, on which nodes, with which AWS role and limits.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "nodeshell.periscope.io",
    version = "v1alpha1",
    kind = "NodeShellPolicy",
    plural = "nodeshellpolicies",
    shortname = "nsp",
    category = "nodeshell",
    status = "NodeShellPolicyStatus",
    derive = "PartialEq",
    doc = "Who may open node shells, on which nodes, with which AWS role and limits. The highest-priority enabled policy that selects the node and allows the person's tier governs a session.",
    printcolumn(
        name = "Enabled",
        type_ = "boolean",
        json_path = ".spec.enabled",
        description = "Whether the policy lets anyone open shells"
    ),
    printcolumn(
        name = "Tiers",
        type_ = "string",
        json_path = ".spec.tiers",
        description = "Tiers allowed to open shells"
    ),
    printcolumn(
        name = "Active",
        type_ = "integer",
        json_path = ".status.activeSessions",
        description = "Live sessions governed by the policy"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the policy is valid"
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
        "rule": "self.aws.sessionDurationSeconds >= self.limits.maxDurationSeconds",
        "message": "aws.sessionDurationSeconds must be at least limits.maxDurationSeconds: the assumed-role credentials must outlive the longest session"
    }
]))]
pub struct NodeShellPolicySpec {
    /// Whether this policy lets anyone open shells. A disabled policy governs nothing.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Tiers (mapped by the gateway from the person's OIDC groups) allowed to open shells.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(min = 1, max = 128)))]
    pub tiers: Vec<String>,

    /// Nodes this policy applies to. Empty or absent selects every EC2-backed node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,

    /// When several enabled policies select a node and allow the tier, the highest priority
    /// governs; ties go to the alphabetically first name.
    #[serde(default)]
    #[schemars(range(min = -1000000, max = 1000000))]
    pub priority: i32,

    /// AWS identity and SSM settings used for sessions under this policy.
    #[serde(default)]
    pub aws: PolicyAws,

    /// Caps and timeouts for sessions under this policy.
    #[serde(default)]
    pub limits: PolicyLimits,

    /// Session recording.
    #[serde(default)]
    pub transcript: PolicyTranscript,

    /// How long ended sessions are kept.
    #[serde(default)]
    pub retention: PolicyRetention,
}

/// AWS settings of a policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAws {
    /// IAM role the person's id_token is exchanged for (AssumeRoleWithWebIdentity); its trust
    /// policy must accept the OIDC issuer and audience. Required for the policy to be Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 2048),
        regex(pattern = r"^arn:aws(-cn|-us-gov)?:iam::\d{12}:role/.+")
    )]
    pub role_arn: Option<String>,

    /// Audience (`aud`) the id_token must carry, i.e. the OIDC client id the role trusts.
    /// Required for the policy to be Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub oidc_audience: Option<String>,

    /// AWS region for STS and SSM calls. Required for the policy to be Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub region: Option<String>,

    /// Lifetime of the assumed-role credentials, in seconds (900 to 43200). Must be at least
    /// `limits.maxDurationSeconds`.
    #[serde(default = "default_session_duration_seconds")]
    #[schemars(range(min = 900, max = 43200))]
    pub session_duration_seconds: i32,

    /// SSM document started on the instance.
    #[serde(default = "default_document_name")]
    #[schemars(length(min = 1, max = 128))]
    pub document_name: String,
}

/// Caps and timeouts of a policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.idleWarningSeconds < self.idleSeconds",
        "message": "limits.idleWarningSeconds must be smaller than limits.idleSeconds"
    }
]))]
pub struct PolicyLimits {
    /// Live sessions (Admitted, Active, Closing) one person may hold under this policy.
    #[serde(default = "default_max_sessions_per_user")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_sessions_per_user: i32,

    /// Live sessions everyone together may hold under this policy.
    #[serde(default = "default_max_sessions_total")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_sessions_total: i32,

    /// A session without activity for this many seconds is closed (IdleTimeout).
    #[serde(default = "default_idle_seconds")]
    #[schemars(range(min = 60, max = 86400))]
    pub idle_seconds: i32,

    /// The browser is warned this many seconds before the idle cut.
    #[serde(default = "default_idle_warning_seconds")]
    #[schemars(range(min = 0, max = 3600))]
    pub idle_warning_seconds: i32,

    /// A session is closed this many seconds after it started (MaxDuration).
    #[serde(default = "default_max_duration_seconds")]
    #[schemars(range(min = 60, max = 43200))]
    pub max_duration_seconds: i32,

    /// What counts as activity for the idle clock.
    #[serde(default)]
    pub idle_activity: IdleActivity,
}

/// What resets the idle clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum IdleActivity {
    /// Keystrokes and output both count (a running `top` keeps the session alive).
    #[default]
    InputAndOutput,
    /// Only keystrokes count.
    InputOnly,
}

/// Session recording settings of a policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTranscript {
    /// Record what the node printed as an asciicast v2 transcript.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Terminal bytes recorded at most, resize and marker lines counted with them; the
    /// transcript is marked truncated beyond.
    #[serde(default = "default_transcript_max_bytes")]
    #[schemars(range(min = 1024, max = 67108864))]
    pub max_bytes: i64,

    /// Also record what the person typed (passwords typed at prompts end up in the transcript).
    #[serde(default)]
    pub capture_input: bool,

    /// Fail closed: refuse or end the session when the transcript cannot be stored.
    #[serde(default)]
    pub required: bool,

    /// Also copy the transcript to an S3 bucket with Object Lock (compliance mode), written
    /// by the gateway with its own pod identity. See docs/transcripts-and-audit.md, S3 sink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<PolicyTranscriptS3>,
}

/// The S3 copy of a policy's transcripts: every sealed chunk, the last chunk at the end and a
/// `session.json` at the start, each an object under Object Lock in compliance mode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTranscriptS3 {
    /// Bucket name; the bucket must have Object Lock enabled (it implies versioning).
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    )]
    pub bucket: String,

    /// Key prefix; objects are `<prefix>/<namespace>/<session>/...` (no leading slash).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 512), regex(pattern = r"^[^/].*$|^$"))]
    pub prefix: String,

    /// Region of the bucket; defaults to the session's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub region: Option<String>,

    /// KMS key (id, ARN or alias) for SSE-KMS; unset = the bucket's default encryption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub kms_key_id: Option<String>,

    /// Days each object is retained in Object Lock compliance mode: nobody, the bucket's
    /// owner included, can delete or overwrite that version before then.
    #[schemars(range(min = 1, max = 36500))]
    pub retention_days: i32,

    /// Fail closed on the sink too: refuse the session when its `session.json` cannot be
    /// written, and end it when a chunk cannot; otherwise a failed upload is counted
    /// (`nodeshell_gateway_live_s3_sink_failures_total`), noted in the session's close
    /// message and audit row, and the session continues.
    #[serde(default)]
    pub required: bool,
}

/// Retention settings of a policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRetention {
    /// Seconds a Closed session (and its transcript) is kept after it ended.
    #[serde(default = "default_closed_session_seconds")]
    #[schemars(range(min = 0, max = 31536000))]
    pub closed_session_seconds: i64,

    /// Seconds a Rejected session (an open the controller refused: caps, policy) is kept
    /// after it was decided. Short, so refused opens cannot pile up objects; they never ran a
    /// shell and hold no transcript.
    #[serde(default = "default_rejected_session_seconds")]
    #[schemars(range(min = 0, max = 31536000))]
    pub rejected_session_seconds: i64,
}

/// Observed state of a policy, written by the controller.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeShellPolicyStatus {
    /// The `metadata.generation` the controller last validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready is True when the policy is usable; when False its message says what to fix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Live sessions (Admitted, Active, Closing) governed by this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_sessions: Option<i32>,
}

fn default_true() -> bool {
    true
}
fn default_session_duration_seconds() -> i32 {
    3600
}
fn default_document_name() -> String {
    DEFAULT_DOCUMENT_NAME.to_string()
}
fn default_max_sessions_per_user() -> i32 {
    2
}
fn default_max_sessions_total() -> i32 {
    10
}
fn default_idle_seconds() -> i32 {
    600
}
fn default_idle_warning_seconds() -> i32 {
    30
}
fn default_max_duration_seconds() -> i32 {
    3600
}
fn default_transcript_max_bytes() -> i64 {
    1_048_576
}
fn default_closed_session_seconds() -> i64 {
    7 * 24 * 3600
}
/// One hour: long enough to see why an open was refused, short enough that refusals cannot
/// pile up.
fn default_rejected_session_seconds() -> i64 {
    3600
}

// === impl Default ===

impl Default for NodeShellPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            tiers: Vec::new(),
            node_selector: None,
            priority: 0,
            aws: PolicyAws::default(),
            limits: PolicyLimits::default(),
            transcript: PolicyTranscript::default(),
            retention: PolicyRetention::default(),
        }
    }
}

impl Default for PolicyAws {
    fn default() -> Self {
        Self {
            role_arn: None,
            oidc_audience: None,
            region: None,
            session_duration_seconds: default_session_duration_seconds(),
            document_name: default_document_name(),
        }
    }
}

impl Default for PolicyLimits {
    fn default() -> Self {
        Self {
            max_sessions_per_user: default_max_sessions_per_user(),
            max_sessions_total: default_max_sessions_total(),
            idle_seconds: default_idle_seconds(),
            idle_warning_seconds: default_idle_warning_seconds(),
            max_duration_seconds: default_max_duration_seconds(),
            idle_activity: IdleActivity::default(),
        }
    }
}

impl Default for PolicyTranscript {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: default_transcript_max_bytes(),
            capture_input: false,
            required: false,
            s3: None,
        }
    }
}

impl Default for PolicyRetention {
    fn default() -> Self {
        Self {
            closed_session_seconds: default_closed_session_seconds(),
            rejected_session_seconds: default_rejected_session_seconds(),
        }
    }
}
