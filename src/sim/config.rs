//! What the simulator is told at start: account, region, test users, roles, instances, ports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::faults::FaultKnobs;
use super::lifetimes::DataChannelService;

/// The whole configuration of one simulator (YAML for `nodeshell sim --config`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SimConfig {
    /// AWS account id used in ARNs.
    pub account_id: String,
    /// Region reported in URLs and accepted in SigV4 scopes.
    pub region: String,
    /// Ports to bind on 127.0.0.1 (0 = chosen by the OS).
    pub ports: PortsConfig,
    /// The built-in OIDC issuer.
    pub issuer: IssuerConfig,
    /// Test users the token endpoint mints id_tokens for.
    pub users: Vec<TestUser>,
    /// IAM roles that trust the issuer (AssumeRoleWithWebIdentity targets).
    pub roles: Vec<RoleConfig>,
    /// Managed instances known to SSM.
    pub instances: Vec<InstanceConfig>,
    /// Seed of every random choice the fault knobs make (reproducible runs).
    pub seed: u64,
    /// Delay before the agent's shell output starts flowing, in milliseconds (the official
    /// agent waits one second after starting the shell).
    pub agent_start_delay_ms: u64,
    /// The account's Session Manager preferences: the service's own idle timeout and maximum
    /// session duration, and the KMS key that encrypts sessions.
    pub session_manager_preferences: SessionManagerPreferences,
    /// The account's KMS keys (symmetric, `SYMMETRIC_DEFAULT`).
    pub kms_keys: Vec<KmsKeyConfig>,
    /// The data-channel service's timings: its hourly recycle and the stream token's lifetime.
    pub data_channel: DataChannelService,
}

/// Session Manager preferences of the simulated account (the inputs of its
/// `SSM-SessionManagerRunShell` document). Times are in minutes, as AWS takes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SessionManagerPreferences {
    /// Minutes without input before the service closes a session (AWS: 1–60, default 20).
    pub idle_session_timeout: u32,
    /// Minutes after which the service closes any session (AWS: 1–1440; none by default).
    pub max_session_duration: Option<u32>,
    /// `kmsKeyId`: when set, every session runs the handshake with a `KMSEncryption` action
    /// naming this key (an id, key ARN, `alias/<name>` or alias ARN of a `kmsKeys` entry) and
    /// its payloads are encrypted. Off (absent) by default, as in a new account.
    pub kms_key_id: Option<String>,
}

impl Default for SessionManagerPreferences {
    fn default() -> Self {
        Self {
            idle_session_timeout: 20,
            max_session_duration: None,
            kms_key_id: None,
        }
    }
}

impl SessionManagerPreferences {
    /// The limits every new session of the account gets.
    pub fn limits(&self) -> super::service_limits::ServiceLimits {
        let minutes = |m: u32| std::time::Duration::from_secs(u64::from(m) * 60);
        super::service_limits::ServiceLimits {
            idle: minutes(self.idle_session_timeout),
            max: self.max_session_duration.map(minutes),
        }
    }
}

/// One KMS key of the account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct KmsKeyConfig {
    /// Key id (a UUID); the key's ARN is `arn:aws:kms:<region>:<account>:key/<id>`.
    pub id: String,
    /// Alias name without the `alias/` prefix, if any.
    pub alias: Option<String>,
    /// Knob (empty by default): names of roles the key policy denies every `kms:` action to
    /// (an explicit `Deny` statement for their assumed-role sessions).
    pub deny_roles: Vec<String>,
}

impl Default for KmsKeyConfig {
    fn default() -> Self {
        Self {
            id: "1234abcd-12ab-34cd-56ef-1234567890ab".to_string(),
            alias: Some("nodeshell-sessions".to_string()),
            deny_roles: Vec::new(),
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            account_id: "123456789012".to_string(),
            region: "eu-west-1".to_string(),
            ports: PortsConfig::default(),
            issuer: IssuerConfig::default(),
            users: vec![TestUser::default()],
            roles: vec![RoleConfig::default()],
            instances: vec![InstanceConfig::default()],
            seed: 1,
            agent_start_delay_ms: 1000,
            session_manager_preferences: SessionManagerPreferences::default(),
            kms_keys: Vec::new(),
            data_channel: DataChannelService::default(),
        }
    }
}

/// Loopback ports of the four endpoints; 0 lets the OS choose.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PortsConfig {
    /// OIDC issuer (discovery, JWKS, token endpoint).
    pub oidc: u16,
    /// STS query API.
    pub sts: u16,
    /// SSM JSON 1.1 API.
    pub ssm: u16,
    /// `ssmmessages` data-channel websockets.
    pub messages: u16,
    /// KMS JSON 1.1 API.
    pub kms: u16,
}

/// Settings of the built-in OIDC issuer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct IssuerConfig {
    /// Default `aud` of minted tokens (the gateway's client id).
    pub client_id: String,
    /// Lifetime of minted id_tokens, in seconds.
    pub token_ttl_seconds: u64,
    /// Extra audiences the registered OIDC provider accepts (its "client id list");
    /// every role's audience is accepted as well.
    pub extra_audiences: Vec<String>,
    /// Signs this user in at once when a browser reaches `/authorize` (the demo user of
    /// `nodeshell dev`); without it `/authorize` shows a page to pick a configured user.
    pub auto_login: Option<String>,
    /// Redirect URIs `/authorize` accepts; empty accepts any loopback `http` URI.
    pub redirect_uris: Vec<String>,
    /// Registered clients. One with a secret is confidential: it must prove the secret at
    /// `/token` (client_secret_basic or client_secret_post) and gets refresh tokens. One
    /// without is public (PKCE only, no secret, no refresh token), as is every other accepted
    /// audience: the kind of client whose tokens any person can obtain, for negative tests.
    pub clients: Vec<ClientRegistration>,
    /// Knob (off by default): `/token` without `grant_type`, or with `grant_type=password`,
    /// mints an id_token for any configured user and any audience with no secret and no
    /// login. No real issuer does this; tests in the same process use
    /// `SimHandle::mint_token` instead.
    pub test_password_grant: bool,
    /// Knob (off by default): `/token` answers cross-origin requests
    /// (`Access-Control-Allow-Origin: *`), so a page script can exchange a code and read the
    /// tokens. Discovery and JWKS are public documents and always answer cross-origin.
    pub cross_origin_token: bool,
    /// Serve the issuer over https with a throw-away CA (`SimHandle::issuer_ca_pem`), as a
    /// corporate issuer with an internal CA does; the gateway trusts it through
    /// `oidc.caFile`. Off by default (a bare `nodeshell sim`); `SimConfig::for_tests()`
    /// turns it on, since STS refuses an http issuer unless `allow_http_issuer`.
    pub https: bool,
    /// Knob (off by default): STS accepts tokens of this issuer even when it is served over
    /// plain http. IAM registers only https providers, so AWS answers such a token with
    /// `InvalidIdentityToken` ("No OpenIDConnect provider found in your account for <iss>");
    /// `nodeshell dev` turns this on to keep an http issuer for a laptop's browser.
    pub allow_http_issuer: bool,
}

/// A confidential OAuth client of the issuer.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ClientRegistration {
    /// Its client id (also an audience the provider accepts).
    pub client_id: String,
    /// Its secret; empty or absent makes the client public.
    pub client_secret: Option<String>,
}

impl std::fmt::Debug for ClientRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRegistration")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Default for IssuerConfig {
    fn default() -> Self {
        Self {
            client_id: "nodeshell".to_string(),
            token_ttl_seconds: 3600,
            extra_audiences: Vec::new(),
            auto_login: None,
            redirect_uris: Vec::new(),
            clients: Vec::new(),
            test_password_grant: false,
            cross_origin_token: false,
            https: false,
            allow_http_issuer: false,
        }
    }
}

/// A person the issuer can mint an id_token for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TestUser {
    /// `sub` claim.
    pub sub: String,
    /// `email` claim.
    pub email: String,
    /// `name` claim.
    pub name: String,
    /// `groups` claim.
    pub groups: Vec<String>,
}

impl Default for TestUser {
    fn default() -> Self {
        Self {
            sub: "alice".to_string(),
            email: "alice@example.com".to_string(),
            name: "Alice Example".to_string(),
            groups: vec!["sre".to_string()],
        }
    }
}

/// An IAM role whose trust policy names the issuer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RoleConfig {
    /// Role name (the last part of `arn:aws:iam::<acct>:role/<path><name>`).
    pub name: String,
    /// IAM path, `/` or `/<segments>/`: STS takes the role's ARN with it, and an ARN that
    /// leaves it out (or names another) does not name this role.
    pub path: String,
    /// The trust policy's `aud` condition (also an audience the provider accepts). Without
    /// `trustPolicy`, the role trusts the issuer's provider when `aud` equals it.
    pub audience: String,
    /// The trust policy's optional `sub` condition (any `sub` when absent; ignored when
    /// `trustPolicy` is set).
    pub allowed_subs: Option<Vec<String>>,
    /// A real IAM trust-policy document (JSON, as a YAML map or a JSON string), evaluated as
    /// IAM does; when absent, the role's trust policy is the one `audience` and
    /// `allowedSubs` stand for. The provider is named by the issuer URL without its scheme,
    /// so with an OS-chosen issuer port set it after start with `SimHandle::set_trust_policy`.
    pub trust_policy: Option<serde_json::Value>,
    /// The role's maximum session duration, in seconds (3600–43200 in IAM).
    pub max_session_duration_seconds: u32,
    /// Whether the role's permission policy allows the SSM session calls.
    pub ssm_allowed: bool,
    /// Knob (empty by default): actions the role's permission policy does not allow although
    /// `ssmAllowed` is set, e.g. `ssm:TerminateSession`, `ssm:ResumeSession`,
    /// `ssm:DescribeInstanceInformation`, `ssm:StartSession`, `kms:GenerateDataKey` or
    /// `kms:Decrypt`; SSM (or KMS, on the key's ARN) answers `AccessDeniedException` as IAM's
    /// implicit deny does.
    pub deny_actions: Vec<String>,
    /// Knob (empty by default): Session Manager documents the role's `ssm:StartSession`
    /// statement does not name (it names the instances only); starting a session with one of
    /// them is refused on the document's ARN.
    pub denied_documents: Vec<String>,
    /// Knob (none by default): caps the lifetime of the credentials STS issues for this role
    /// at this many seconds, below the 900 s floor of `DurationSeconds`, so a test can cross
    /// their expiry in seconds. The answer's `Expiration` says the capped time and SSM and
    /// KMS refuse them after it with `ExpiredTokenException`, as AWS does at expiry.
    pub credential_lifetime_seconds: Option<u32>,
}

impl Default for RoleConfig {
    fn default() -> Self {
        Self {
            name: "nodeshell-user".to_string(),
            path: "/".to_string(),
            audience: "nodeshell".to_string(),
            allowed_subs: None,
            trust_policy: None,
            max_session_duration_seconds: 43200,
            ssm_allowed: true,
            deny_actions: Vec::new(),
            denied_documents: Vec::new(),
            credential_lifetime_seconds: None,
        }
    }
}

/// Agent connectivity as DescribeInstanceInformation reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PingStatus {
    /// The agent is connected.
    Online,
    /// The agent stopped pinging.
    ConnectionLost,
    /// The instance is stopped or deregistered.
    Inactive,
}

impl PingStatus {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "Online",
            Self::ConnectionLost => "ConnectionLost",
            Self::Inactive => "Inactive",
        }
    }
}

/// A managed instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct InstanceConfig {
    /// `i-…` id.
    pub id: String,
    /// Agent connectivity.
    pub ping_status: PingStatus,
    /// `Linux`, `Windows` or `MacOS`.
    pub platform: String,
    /// `Name` reported by DescribeInstanceInformation.
    pub name: String,
    /// Misbehaviour of this instance's agent and of the relay in front of it.
    pub faults: FaultKnobs,
    /// Extra environment for the shell.
    pub env: BTreeMap<String, String>,
}

impl Default for InstanceConfig {
    fn default() -> Self {
        Self {
            id: "i-0123456789abcdef0".to_string(),
            ping_status: PingStatus::Online,
            platform: "Linux".to_string(),
            name: "ip-10-0-1-23.eu-west-1.compute.internal".to_string(),
            faults: FaultKnobs::default(),
            env: BTreeMap::new(),
        }
    }
}

impl SimConfig {
    /// A configuration for tests: defaults plus no start delay for the agent, and the issuer
    /// over https (STS refuses the default http issuer's tokens, as AWS does).
    pub fn for_tests() -> Self {
        let mut config = Self {
            agent_start_delay_ms: 0,
            ..Self::default()
        };
        // As a real issuer: https, which STS requires; clients trust its CA
        // (`SimHandle::issuer_client`, `SimHandle::write_issuer_ca` for `oidc.caFile`).
        config.issuer.https = true;
        config
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../config/sim.example.yaml");
        let config: SimConfig = serde_saphyr::from_str(text).unwrap();
        assert_eq!(config.users.len(), 2);
        assert_eq!(config.issuer.auto_login, None);
        assert!(config.issuer.redirect_uris.is_empty());
        assert_eq!(config.issuer.clients.len(), 2);
        assert!(config.issuer.clients[1].client_secret.is_none());
        assert!(!config.issuer.test_password_grant);
        assert!(!config.issuer.cross_origin_token);
        assert_eq!(
            config.roles[1].allowed_subs.as_deref(),
            Some(&["alice".to_string()][..])
        );
        assert_eq!(config.instances[1].ping_status, PingStatus::ConnectionLost);
        assert_eq!(
            config.session_manager_preferences,
            SessionManagerPreferences::default()
        );
        assert_eq!(config.data_channel, DataChannelService::default());
        assert!(
            config
                .roles
                .iter()
                .all(|r| r.credential_lifetime_seconds.is_none())
        );
        assert_eq!(
            config.session_manager_preferences.limits(),
            super::super::service_limits::ServiceLimits::default()
        );
        assert!((config.instances[2].faults.drop - 0.001).abs() < 1e-12);
        assert_eq!(
            config.instances[2].env.get("NODE_ROLE").map(String::as_str),
            Some("worker")
        );
        assert_eq!(
            config.kms_keys[0].alias.as_deref(),
            Some("nodeshell-sessions")
        );
        assert_eq!(config.session_manager_preferences.kms_key_id, None);
    }

    #[test]
    fn a_trust_policy_document_reads_from_yaml_or_json_text() {
        let yaml = "roles:\n  - name: r\n    trustPolicy:\n      Version: \"2012-10-17\"\n      Statement:\n        - Effect: Allow\n          Principal: \"*\"\n          Action: sts:AssumeRoleWithWebIdentity\n  - name: s\n    trustPolicy: '{\"Statement\": []}'\n";
        let config: SimConfig = serde_saphyr::from_str(yaml).unwrap();
        let doc = config.roles[0].trust_policy.as_ref().unwrap();
        assert_eq!(doc["Statement"][0]["Effect"], "Allow");
        assert!(super::super::trust_policy::TrustPolicy::parse(doc).is_ok());
        let text = config.roles[1].trust_policy.as_ref().unwrap();
        assert!(super::super::trust_policy::TrustPolicy::parse(text).is_ok());
    }

    #[test]
    fn empty_config_is_the_default() {
        let config: SimConfig = serde_saphyr::from_str("{}").unwrap();
        assert_eq!(config.region, "eu-west-1");
        assert_eq!(config.instances.len(), 1);
    }
}
