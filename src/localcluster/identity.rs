//! The people and components the local control plane knows, each with a client
//! certificate (CN = user, O = groups) and a bearer token.

/// Namespace the operator's components live in, as in the Helm chart.
pub const SYSTEM_NAMESPACE: &str = "nodeshell-system";

/// One identity of the local control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    /// Cluster administrator (`system:masters`): installs CRDs and manifests.
    Admin,
    /// The controller's service account `nodeshell-system/nodeshell-controller`.
    Controller,
    /// The gateway's service account `nodeshell-system/nodeshell-gateway`.
    Gateway,
    /// A read-only auditor (group `nodeshell:auditors`).
    Auditor,
    /// An on-call engineer who may terminate sessions (group `nodeshell:session-admins`).
    SessionAdmin,
    /// A plain authenticated user with no nodeshell role.
    Alice,
}

// Service-account usernames and groups exactly as the apiserver would give them to a
// token of that account, so the RBAC bindings to ServiceAccount subjects apply unchanged.
const CONTROLLER_USER: &str = "system:serviceaccount:nodeshell-system:nodeshell-controller";
const GATEWAY_USER: &str = "system:serviceaccount:nodeshell-system:nodeshell-gateway";
const SERVICE_ACCOUNT_GROUPS: &[&str] = &[
    "system:serviceaccounts",
    "system:serviceaccounts:nodeshell-system",
];

impl Identity {
    /// Every identity, in a stable order.
    pub const ALL: [Identity; 6] = [
        Identity::Admin,
        Identity::Controller,
        Identity::Gateway,
        Identity::Auditor,
        Identity::SessionAdmin,
        Identity::Alice,
    ];

    /// Short name used for file names and kubeconfig contexts.
    pub fn slug(self) -> &'static str {
        match self {
            Identity::Admin => "admin",
            Identity::Controller => "nodeshell-controller",
            Identity::Gateway => "nodeshell-gateway",
            Identity::Auditor => "auditor",
            Identity::SessionAdmin => "session-admin",
            Identity::Alice => "alice",
        }
    }

    /// The user name the apiserver sees (what RBAC subjects and `auth can-i --as` use).
    pub fn user_name(self) -> &'static str {
        match self {
            Identity::Admin => "admin",
            Identity::Controller => CONTROLLER_USER,
            Identity::Gateway => GATEWAY_USER,
            Identity::Auditor => "auditor",
            Identity::SessionAdmin => "oncall",
            Identity::Alice => "alice",
        }
    }

    /// Groups the apiserver sees besides `system:authenticated`.
    pub fn groups(self) -> &'static [&'static str] {
        match self {
            Identity::Admin => &["system:masters"],
            Identity::Controller | Identity::Gateway => SERVICE_ACCOUNT_GROUPS,
            Identity::Auditor => &["nodeshell:auditors"],
            Identity::SessionAdmin => &["nodeshell:session-admins"],
            Identity::Alice => &[],
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.slug())
    }
}
