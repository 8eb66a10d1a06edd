//! The control side: who the caller is ([`auth`]), which tier they hold ([`tiers`]), whether
//! a node is eligible ([`eligibility`]), who may do what with a session ([`sessions`]), the
//! Kubernetes calls ([`cluster`]), the open use case ([`open`]) and attach tickets
//! ([`tickets`]). No HTTP here: the routes in `http` ask, [`Access`] answers; the live side
//! is never used from here.

pub mod auth;
pub mod cli_login;
pub mod cluster;
pub mod console_sessions;
pub mod eligibility;
pub mod identity;
pub mod login;
pub mod minted;
pub mod open;
pub mod open_rate;
pub mod renewal;
pub mod sessions;
pub mod sign_in;
pub mod tickets;
pub mod tiers;

use std::sync::Arc;
use std::time::Instant;

use crate::api::NodeShellSession;
use crate::gateway::config::GatewayConfig;
use crate::gateway::error::{ApiError, ErrorCode};
use crate::gateway::handover::AttachGrant;

use auth::{Authenticated, Authenticator};
use cluster::Cluster;
use identity::IdentityWatch;
use open::OpenRequest;
use sign_in::ConsoleLogin;
use tickets::{TicketBook, TicketGrant, TicketOffer};

/// What every route asks: the configuration, token verification, this replica's tickets and
/// the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Access {
    /// Resolved configuration.
    pub config: Arc<GatewayConfig>,
    /// Token verification.
    pub auth: Authenticator,
    /// This replica's attach tickets.
    pub tickets: TicketBook,
    /// The Kubernetes API.
    pub cluster: Cluster,
    /// This replica's bounds on each person's opens.
    pub opens: open::OpenLimits,
    /// Credentials minted by this replica's opens, waiting for their session's first attach.
    pub minted: minted::MintedStore,
    /// The console's sign-in through the gateway, when configured.
    pub console: Option<ConsoleLogin>,
    /// Live shells opened from console sessions, for the identity re-check.
    pub identity: IdentityWatch,
    /// The gateway's one HTTP client for STS and SSM (each call brings the person's
    /// credentials).
    pub aws: crate::aws::AwsClients,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

// === impl Access ===

impl Access {
    /// Verifies an `Authorization` header value.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Authenticated, ApiError> {
        self.auth.authenticate(header).await
    }

    /// Whether the caller holds an admin tier.
    pub fn is_admin(&self, auth: &Authenticated) -> bool {
        self.auth.tiers().is_admin(auth.caller.tier.as_deref())
    }

    /// Session `name`, when the caller owns it or holds an admin tier.
    pub async fn managed_session(
        &self,
        auth: &Authenticated,
        name: &str,
    ) -> Result<NodeShellSession, ApiError> {
        let session = self.cluster.session(name).await?;
        if !sessions::may_manage(self.auth.tiers(), &auth.caller, &session) {
            return Err(sessions::not_yours(self.auth.tiers(), &auth.caller, name));
        }
        Ok(session)
    }

    /// The sessions the caller may list, newest first.
    pub async fn visible_sessions(
        &self,
        auth: &Authenticated,
    ) -> Result<Vec<NodeShellSession>, ApiError> {
        let all = self.cluster.sessions().await?;
        Ok(sessions::visible(self.is_admin(auth), &auth.caller, all))
    }

    /// Asks for the end of a session the caller may manage (`spec.terminate`); returns it.
    pub async fn terminate(
        &self,
        auth: &Authenticated,
        name: &str,
    ) -> Result<NodeShellSession, ApiError> {
        let session = self.managed_session(auth, name).await?;
        if sessions::needs_terminate(&session) {
            self.cluster.request_terminate(name).await?;
        }
        tracing::info!(
            session = name,
            by = auth.caller.sub,
            "termination requested"
        );
        Ok(session)
    }

    /// A reattach ticket for the caller's own live session.
    pub async fn reticket(
        &self,
        auth: &Authenticated,
        name: &str,
        request: &OpenRequest,
    ) -> Result<TicketOffer, ApiError> {
        let session = self.cluster.session(name).await?;
        if let Some(e) = sessions::ticket_refusal(&auth.caller, &session) {
            return Err(e);
        }
        let (cols, rows) = request.size();
        self.tickets
            .offer(auth, name, &session.spec.policy_name, cols, rows, true)
    }

    /// Checks an attach's `Origin` and redeems its ticket for session `name`.
    pub fn admit_attach(
        &self,
        name: &str,
        origin: Option<&str>,
        ticket: Option<String>,
    ) -> Result<TicketGrant, ApiError> {
        if !self.config.origin_allowed(origin) {
            tracing::warn!(session = name, origin, "attach from an origin not allowed");
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "origin {} may not attach; the gateway's allowedOrigins must list it",
                    origin.unwrap_or("(none)")
                ),
            ));
        }
        let ticket = ticket.filter(|t| !t.is_empty()).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Auth,
                "attach needs ?ticket=<ticket> from POST /api/v1/nodes/{node}/shell or POST /api/v1/sessions/{name}/ticket",
            )
        })?;
        self.tickets
            .redeem(&ticket, name, Instant::now())
            .map_err(|e| ApiError::new(ErrorCode::Auth, e.to_string()))
    }

    /// What the live side gets for a redeemed ticket: the session as it is now and its
    /// governing policy.
    pub async fn attach_grant(
        &self,
        name: &str,
        grant: TicketGrant,
    ) -> Result<AttachGrant, ApiError> {
        // Both at once: the session's policy is almost always the one the ticket names.
        let (session, named) = tokio::try_join!(
            self.cluster.session(name),
            self.cluster.policy(&grant.policy)
        )?;
        if let Some(e) = sessions::attach_refusal(&grant.caller.sub, &session) {
            return Err(e);
        }
        let policy = if session.spec.policy_name == grant.policy {
            named
        } else {
            self.cluster.policy(&session.spec.policy_name).await?
        };
        let policy = policy.ok_or_else(|| {
            ApiError::new(
                ErrorCode::NodeShellDisabled,
                format!(
                    "policy {} that governs session {name} no longer exists",
                    session.spec.policy_name
                ),
            )
        })?;
        // Only the attach that redeemed this session's ticket, by its owner, gets what the
        // open minted; only a first attach (Admitted) uses them, any other drops them.
        let minted = session
            .metadata
            .uid
            .as_deref()
            .and_then(|uid| self.minted.take(uid, Instant::now()))
            .filter(|_| session.phase() == crate::api::SessionPhase::Admitted);
        let console_key = self.console_session_of(&grant.id_token);
        if let Some(key) = &console_key {
            self.identity.watch(
                name,
                key,
                &session.spec.policy_name,
                &policy.spec.tiers,
                Instant::now(),
            );
        }
        Ok(AttachGrant {
            caller: grant.caller,
            id_token: grant.id_token,
            refresh: console_key.map(|key| renewal::console_tokens(self, key)),
            session,
            policy,
            cols: grant.cols,
            rows: grant.rows,
            client: Default::default(),
            minted,
        })
    }

    /// What keeps this replica from serving, if anything (for `/readyz`): one fixed phrase
    /// per failing check, since the answer may reach whoever can probe the pod; the cause
    /// goes to the log.
    pub async fn readiness_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.auth.keys().is_loaded() {
            let cause = self.auth.keys().last_error();
            tracing::warn!(
                cause = cause.as_deref().unwrap_or("not fetched yet"),
                "not ready: the issuer's keys are not loaded"
            );
            problems.push("issuer keys not loaded".to_string());
        }
        if !self.cluster.reachable().await {
            tracing::warn!("not ready: the Kubernetes API did not answer within 3 s");
            problems.push("Kubernetes API unreachable".to_string());
        }
        problems
    }
}
