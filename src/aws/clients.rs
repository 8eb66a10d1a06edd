//! The AWS SDK pieces a gateway builds once and every person's calls share: one HTTPS client
//! (one connection pool, TLS roots loaded once) inside one `SdkConfig`. Each call still gets
//! its own STS or SSM client, which carries only that person's credentials and region.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_config::SdkConfig;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

use aws_credential_types::provider::SharedCredentialsProvider;

use super::credentials::TemporaryCredentials;
use super::renewal::RenewableCredentials;
use super::{AssumeRoleError, AwsEndpoints, WebIdentityRequest, behavior_version};

/// Idle connections the shared HTTP client keeps per host (STS, SSM, KMS, S3 of a region).
/// A burst of opens (200 at once in the bench) leaves one connection per concurrent call in
/// the pool, each with its TLS state and read buffer (about 60 KB), idle for 90 s; beyond
/// this many the pool closes a connection as it is handed back. 16 keep-alive connections
/// still carry a steady 16 calls in flight per host without new handshakes.
pub const IDLE_CONNECTIONS_PER_HOST: usize = 16;

/// One per gateway: the shared HTTP client and SDK configuration every STS and SSM client is
/// made from. Cheap to clone (clones share the client and its pool).
#[derive(Clone)]
pub struct AwsClients {
    config: SdkConfig,
    /// How many HTTP connectors (TLS setup and connection pool) the shared client has built.
    connectors: Arc<AtomicUsize>,
    /// How many SDK clients (STS, SSM, KMS) have been made from it.
    sdk_clients: Arc<AtomicUsize>,
}

impl std::fmt::Debug for AwsClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsClients")
            .field("connectors_built", &self.connectors_built())
            .field("sdk_clients_made", &self.sdk_clients_made())
            .finish_non_exhaustive()
    }
}

impl Default for AwsClients {
    fn default() -> Self {
        Self::new()
    }
}

impl AwsClients {
    /// The shared client: the SDK's default HTTPS stack (hyper 1, rustls with aws-lc, proxy
    /// from the environment, at most [`IDLE_CONNECTIONS_PER_HOST`] idle connections per
    /// host), built once. It keeps one connector per timeout setting, and
    /// every client made here uses the same settings, so one connector and one pool.
    pub fn new() -> Self {
        let connectors = Arc::new(AtomicUsize::new(0));
        let counter = connectors.clone();
        let http = Builder::new().build_with_connector_fn(move |settings, components| {
            counter.fetch_add(1, Ordering::Relaxed);
            let mut connector =
                ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
            connector.set_connector_settings(settings.cloned());
            if let Some(components) = components {
                connector.set_sleep_impl(components.sleep_impl());
            }
            connector.set_proxy_config(Some(ProxyConfig::from_env()));
            connector.set_pool_max_idle_per_host(Some(IDLE_CONNECTIONS_PER_HOST));
            connector.build()
        });
        let config = SdkConfig::builder()
            .behavior_version(behavior_version())
            .http_client(SharedHttpClient::new(BuiltOnce(http)))
            .build();
        Self {
            config,
            connectors,
            sdk_clients: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The shared SDK configuration (the one HTTP client), for clients made elsewhere (the
    /// S3 sink's, signed by the gateway's own identity).
    pub(crate) fn sdk_config(&self) -> SdkConfig {
        self.config.clone()
    }

    /// How many HTTP connectors the shared client has built so far (1 once any call was
    /// made, however many calls and people).
    pub fn connectors_built(&self) -> usize {
        self.connectors.load(Ordering::Relaxed)
    }

    /// How many SDK clients have been made so far: one per call, none for holding an
    /// [`SsmSessions`](super::SsmSessions) or a [`KmsDataKeys`](super::KmsDataKeys).
    pub fn sdk_clients_made(&self) -> usize {
        self.sdk_clients.load(Ordering::Relaxed)
    }

    /// `sts:AssumeRoleWithWebIdentity` with the person's token, on the shared HTTP client.
    pub async fn assume_role_with_web_identity(
        &self,
        endpoints: &AwsEndpoints,
        request: &WebIdentityRequest,
    ) -> Result<TemporaryCredentials, AssumeRoleError> {
        super::assume_role(self.sts(endpoints), request).await
    }

    /// An STS client for `endpoints`, without credentials (AssumeRoleWithWebIdentity is
    /// optional-auth, so it goes out unsigned).
    fn sts(&self, endpoints: &AwsEndpoints) -> aws_sdk_sts::Client {
        let mut config = aws_sdk_sts::config::Builder::from(&self.config)
            .region(aws_sdk_sts::config::Region::new(endpoints.region.clone()));
        if let Some(url) = &endpoints.sts_url {
            config = config.endpoint_url(url.clone());
        }
        self.sdk_clients.fetch_add(1, Ordering::Relaxed);
        aws_sdk_sts::Client::from_conf(config.build())
    }

    /// An SSM client for `endpoints` that asks `signer` for its credentials before each call.
    pub(crate) fn ssm_signed_by(
        &self,
        endpoints: &AwsEndpoints,
        signer: Signer,
    ) -> aws_sdk_ssm::Client {
        let mut config = aws_sdk_ssm::config::Builder::from(&self.config)
            .region(aws_sdk_ssm::config::Region::new(endpoints.region.clone()))
            .credentials_provider(signer.provider);
        if signer.renewing {
            // Each call asks the session's credentials, which renew themselves when due.
            config = config.identity_cache(aws_sdk_ssm::config::IdentityCache::no_cache());
        }
        if let Some(url) = &endpoints.ssm_url {
            config = config.endpoint_url(url.clone());
        }
        self.sdk_clients.fetch_add(1, Ordering::Relaxed);
        aws_sdk_ssm::Client::from_conf(config.build())
    }

    /// A KMS client for `endpoints` that asks `signer` for its credentials before each call.
    pub(crate) fn kms_signed_by(
        &self,
        endpoints: &AwsEndpoints,
        signer: Signer,
    ) -> aws_sdk_kms::Client {
        let mut config = aws_sdk_kms::config::Builder::from(&self.config)
            .region(aws_sdk_kms::config::Region::new(endpoints.region.clone()))
            .credentials_provider(signer.provider);
        if signer.renewing {
            config = config.identity_cache(aws_sdk_kms::config::IdentityCache::no_cache());
        }
        if let Some(url) = &endpoints.kms_url {
            config = config.endpoint_url(url.clone());
        }
        self.sdk_clients.fetch_add(1, Ordering::Relaxed);
        aws_sdk_kms::Client::from_conf(config.build())
    }
}

/// What one person's SSM and KMS calls are made with: the gateway's shared client, the
/// endpoints and the signer. Kept (behind an `Arc`) instead of SDK clients, which hold their
/// whole runtime configuration (about 15 KB each); each call makes its own.
#[derive(Debug)]
pub(crate) struct SignedCalls {
    aws: AwsClients,
    endpoints: AwsEndpoints,
    signer: Signer,
}

impl SignedCalls {
    /// Calls to `endpoints` on `aws`, signed by `signer`.
    pub(crate) fn new(aws: &AwsClients, endpoints: &AwsEndpoints, signer: Signer) -> Arc<Self> {
        Arc::new(Self {
            aws: aws.clone(),
            endpoints: endpoints.clone(),
            signer,
        })
    }

    /// An SSM client for one call.
    pub(crate) fn ssm(&self) -> aws_sdk_ssm::Client {
        self.aws.ssm_signed_by(&self.endpoints, self.signer.clone())
    }

    /// A KMS client for one call.
    pub(crate) fn kms(&self) -> aws_sdk_kms::Client {
        self.aws.kms_signed_by(&self.endpoints, self.signer.clone())
    }
}

/// Where an SSM or KMS client takes its credentials from.
#[derive(Clone, Debug)]
pub(crate) struct Signer {
    provider: SharedCredentialsProvider,
    renewing: bool,
}

impl Signer {
    /// Fixed credentials.
    pub(crate) fn fixed(credentials: &TemporaryCredentials) -> Self {
        Self {
            provider: SharedCredentialsProvider::new(credentials.to_sdk()),
            renewing: false,
        }
    }

    /// A session's credentials, renewed when due.
    pub(crate) fn renewing(credentials: &RenewableCredentials) -> Self {
        Self {
            provider: SharedCredentialsProvider::new(credentials.clone()),
            renewing: true,
        }
    }
}

/// The shared client as every per-call SDK client sees it. The SDK's own client builds a
/// throwaway connector (loading the TLS roots again) each time an SDK client is made from it,
/// to fail early; made once per gateway, it is checked by its first call instead.
#[derive(Debug)]
struct BuiltOnce(SharedHttpClient);

impl HttpClient for BuiltOnce {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::{AgentPing, SsmSessions, WebIdentityRequest};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    const STS_OK: &str = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <AccessKeyId>ASIAEXAMPLE</AccessKeyId>
      <SecretAccessKey>secret</SecretAccessKey>
      <SessionToken>token</SessionToken>
      <Expiration>2030-01-01T00:00:00Z</Expiration>
    </Credentials>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/shell/nodeshell-alice</Arn>
      <AssumedRoleId>AROAEXAMPLE:nodeshell-alice</AssumedRoleId>
    </AssumedRoleUser>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#;

    /// A keep-alive HTTP/1.1 endpoint that answers STS (XML) and SSM (JSON) and counts the
    /// TCP connections it accepts.
    async fn stub_aws() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    loop {
                        let (mut length, mut ssm) = (0usize, false);
                        loop {
                            let mut line = String::new();
                            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let lower = line.to_ascii_lowercase();
                            if let Some(v) = lower.strip_prefix("content-length:") {
                                length = v.trim().parse().unwrap();
                            }
                            ssm |= lower.starts_with("x-amz-target:");
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut body = vec![0; length];
                        stream.read_exact(&mut body).await.unwrap();
                        let (kind, answer) = if ssm {
                            (
                                "application/x-amz-json-1.1",
                                r#"{"InstanceInformationList":[]}"#,
                            )
                        } else {
                            ("text/xml", STS_OK)
                        };
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n\r\n{answer}",
                            answer.len()
                        );
                        stream
                            .get_mut()
                            .write_all(response.as_bytes())
                            .await
                            .unwrap();
                    }
                });
            }
        });
        (url, accepted)
    }

    /// STS and SSM both at the test's stub.
    fn stub_endpoints(url: String) -> AwsEndpoints {
        AwsEndpoints {
            region: "eu-west-1".into(),
            sts_url: Some(url.clone()),
            ssm_url: Some(url),
            kms_url: None,
            s3_url: None,
        }
    }

    fn request() -> WebIdentityRequest {
        WebIdentityRequest {
            role_arn: "arn:aws:iam::123456789012:role/shell".into(),
            role_session_name: "nodeshell-alice".into(),
            web_identity_token: "id-token".into(),
            duration_seconds: None,
        }
    }

    #[tokio::test]
    async fn every_call_shares_one_connector_and_one_connection() {
        let (url, accepted) = stub_aws().await;
        let endpoints = stub_endpoints(url);
        let clients = AwsClients::new();
        // Two people's sessions: each assumes its role and asks SSM with its own credentials.
        for _ in 0..2 {
            let creds = clients
                .assume_role_with_web_identity(&endpoints, &request())
                .await
                .unwrap();
            let ping = SsmSessions::on(&clients, &endpoints, &creds)
                .describe_instance_ping_status("i-0123456789abcdef0")
                .await
                .unwrap();
            assert_eq!(ping, AgentPing::NotManaged);
        }
        assert_eq!(clients.connectors_built(), 1);
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one pooled connection");

        // What each session paid before: its own client, its own connector and connection.
        let before = accepted.load(Ordering::SeqCst);
        for _ in 0..2 {
            let own = AwsClients::new();
            own.assume_role_with_web_identity(&endpoints, &request())
                .await
                .unwrap();
            assert_eq!(own.connectors_built(), 1);
        }
        assert_eq!(accepted.load(Ordering::SeqCst) - before, 2);
    }

    #[tokio::test]
    async fn a_sessions_aws_handle_makes_its_sdk_clients_only_for_a_call() {
        let (url, _) = stub_aws().await;
        let endpoints = stub_endpoints(url);
        let clients = AwsClients::new();
        let creds = clients
            .assume_role_with_web_identity(&endpoints, &request())
            .await
            .unwrap();
        assert_eq!(clients.sdk_clients_made(), 1, "the STS call's");
        // What a live session keeps for its whole life: no SDK client (about 15 KB each for
        // SSM and KMS), only what makes one.
        let ssm = SsmSessions::on(&clients, &endpoints, &creds);
        let _kms = ssm.kms_options("i-0123456789abcdef0");
        assert_eq!(clients.sdk_clients_made(), 1);
        for _ in 0..2 {
            ssm.describe_instance_ping_status("i-0123456789abcdef0")
                .await
                .unwrap();
        }
        assert_eq!(clients.sdk_clients_made(), 3, "one for each SSM call");
    }

    #[tokio::test]
    async fn a_burst_of_calls_leaves_a_bounded_number_of_idle_connections() {
        const BURST: usize = 3 * IDLE_CONNECTIONS_PER_HOST;
        let (url, open) = crate::testing::server_answering_bursts(BURST, "text/xml", STS_OK).await;
        let endpoints = stub_endpoints(url);
        let clients = AwsClients::new();
        let calls = (0..BURST).map(|_| {
            let (clients, endpoints) = (clients.clone(), endpoints.clone());
            tokio::spawn(async move {
                clients
                    .assume_role_with_web_identity(&endpoints, &request())
                    .await
                    .unwrap()
            })
        });
        for call in calls.collect::<Vec<_>>() {
            call.await.unwrap();
        }
        // Every call of the burst had its own connection; the pool keeps only its bound of
        // them (the rest close as they come back), not all of them for the idle timeout.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while open.load(Ordering::SeqCst) > IDLE_CONNECTIONS_PER_HOST
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(open.load(Ordering::SeqCst), IDLE_CONNECTIONS_PER_HOST);
    }

    /// Resident memory of this process.
    fn rss_bytes() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kib: usize = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib * 1024
    }

    /// What each live session's SSM client (kept for resume and terminate) costs, after one
    /// call, with its own HTTP client and with the shared one. A measurement for
    /// docs/benchmarks.md, run by hand:
    /// `cargo test --release --lib aws::clients -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement, not a check"]
    async fn memory_per_live_session_client() {
        const SESSIONS: usize = 200;
        let (url, _) = stub_aws().await;
        let endpoints = stub_endpoints(url);
        let creds = AwsClients::new()
            .assume_role_with_web_identity(&endpoints, &request())
            .await
            .unwrap();
        let clients = AwsClients::new();
        let mut kept = Vec::new();
        for (label, shared) in [("shared", true), ("own", false)] {
            let before = rss_bytes();
            for _ in 0..SESSIONS {
                let ssm = if shared {
                    SsmSessions::on(&clients, &endpoints, &creds)
                } else {
                    SsmSessions::new(&endpoints, &creds)
                };
                ssm.describe_instance_ping_status("i-0123456789abcdef0")
                    .await
                    .unwrap();
                kept.push(ssm);
            }
            let per_session = (rss_bytes().saturating_sub(before)) / SESSIONS;
            println!("{label}: {per_session} bytes of RSS per live session's SSM client");
        }
    }
}
