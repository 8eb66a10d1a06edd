//! What the control side hands the live side when a browser attaches: who the caller is,
//! the admitted session, its governing policy, and the id_token to exchange for AWS
//! credentials. Held in memory only; never serialised.

use std::fmt;

use crate::api::{NodeShellPolicy, NodeShellSession};

/// A person, as verified from their OIDC id_token and mapped to a tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub`: the stable identity that ends up in the role session name.
    pub sub: String,
    /// The token's `email`, when present.
    pub email: Option<String>,
    /// A display name (`name`, else `preferred_username`, else the email, else `sub`).
    pub name: String,
    /// Groups from the configured groups claim.
    pub groups: Vec<String>,
    /// The tier the groups map to (`groupTiers`), if any.
    pub tier: Option<String>,
}

/// The caller's OIDC id_token, kept only to call `sts:AssumeRoleWithWebIdentity`.
/// Its `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct IdToken(String);

impl IdToken {
    /// Wraps a raw compact JWT.
    pub fn new(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// The raw token, for the STS call only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdToken(<redacted>)")
    }
}

/// Everything the live side needs to run one admitted session for one browser.
#[derive(Clone, Debug)]
pub struct AttachGrant {
    /// Who attaches (the session's owner).
    pub caller: Caller,
    /// The caller's id_token, exchanged for AWS credentials at attach.
    pub id_token: IdToken,
    /// The session as last read (phase Admitted on first attach).
    pub session: NodeShellSession,
    /// The policy that governs it (`spec.policyName`).
    pub policy: NodeShellPolicy,
    /// Initial terminal size asked for at open.
    pub cols: u16,
    /// Initial terminal rows asked for at open.
    pub rows: u16,
}
