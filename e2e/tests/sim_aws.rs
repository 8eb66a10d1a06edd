//! Through `nodeshell::aws`: a token from the simulator's issuer → AssumeRoleWithWebIdentity →
//! StartSession (SigV4 verified) → the recorded principal is the assumed-role ARN; and every
//! way the chain can be refused, with its AWS error code.
#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::collections::HashMap;
use std::time::Duration;

use nodeshell::aws::{
    AgentPing, AssumeRoleError, AwsEndpoints, SsmCallError, SsmSessions, TemporaryCredentials,
    WebIdentityRequest, assume_role_with_web_identity,
};
use nodeshell::sim::{
    BadToken, InstanceConfig, PingStatus, RoleConfig, SimConfig, SimHandle, Simulator,
};

const INSTANCE: &str = "i-0123456789abcdef0";

fn endpoints(sim: &SimHandle) -> AwsEndpoints {
    sim.aws_endpoints()
}

fn request(sim: &SimHandle, role: &str, token: String) -> WebIdentityRequest {
    WebIdentityRequest {
        role_arn: sim.role_arn(role),
        role_session_name: "ns-alice".to_string(),
        web_identity_token: token,
        duration_seconds: Some(900),
    }
}

async fn start() -> SimHandle {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut config = SimConfig::for_tests();
    config.roles.push(RoleConfig {
        name: "only-bob".to_string(),
        allowed_subs: Some(vec!["bob".to_string()]),
        ..RoleConfig::default()
    });
    config.roles.push(RoleConfig {
        name: "other-aud".to_string(),
        audience: "another-client".to_string(),
        ..RoleConfig::default()
    });
    config.roles.push(RoleConfig {
        name: "no-ssm".to_string(),
        ssm_allowed: false,
        ..RoleConfig::default()
    });
    // Partial IAM: the setup mistakes of the troubleshooting table.
    config.roles.push(RoleConfig {
        name: "instances-only".to_string(),
        denied_documents: vec!["SSM-SessionManagerRunShell".to_string()],
        ..RoleConfig::default()
    });
    for (name, action) in [
        ("no-terminate", "ssm:TerminateSession"),
        ("no-resume", "ssm:ResumeSession"),
        ("no-describe", "ssm:DescribeInstanceInformation"),
    ] {
        config.roles.push(RoleConfig {
            name: name.to_string(),
            deny_actions: vec![action.to_string()],
            ..RoleConfig::default()
        });
    }
    // Credentials that expire two seconds after they are issued (the knob; AWS's floor is 900).
    config.roles.push(RoleConfig {
        name: "short-lived".to_string(),
        credential_lifetime_seconds: Some(2),
        ..RoleConfig::default()
    });
    config.instances.push(InstanceConfig {
        id: "i-0aaaaaaaaaaaaaaa1".to_string(),
        ping_status: PingStatus::ConnectionLost,
        ..InstanceConfig::default()
    });
    Simulator::start(config).await.expect("simulator starts")
}

async fn assume(sim: &SimHandle, role: &str) -> TemporaryCredentials {
    let token = sim.mint_token("alice").expect("token");
    assume_role_with_web_identity(&endpoints(sim), &request(sim, role, token))
        .await
        .expect("assume role")
}

#[tokio::test]
async fn web_identity_to_start_session_is_attributed_to_the_assumed_role() {
    let sim = start().await;
    let creds = assume(&sim, "nodeshell-user").await;
    assert!(creds.access_key_id.starts_with("ASIA"));
    let arn = "arn:aws:sts::123456789012:assumed-role/nodeshell-user/ns-alice";
    assert_eq!(creds.assumed_role_arn, arn);
    assert!(!format!("{creds:?}").contains(creds.secret_access_key()));

    let ssm = SsmSessions::new(&endpoints(&sim), &creds);
    assert_eq!(
        ssm.describe_instance_ping_status(INSTANCE).await.unwrap(),
        AgentPing::Online
    );
    assert_eq!(
        ssm.describe_instance_ping_status("i-0aaaaaaaaaaaaaaa1")
            .await
            .unwrap(),
        AgentPing::ConnectionLost
    );
    assert_eq!(
        ssm.describe_instance_ping_status("i-0fffffffffffffff1")
            .await
            .unwrap(),
        AgentPing::NotManaged
    );
    let stream = ssm
        .start_session(INSTANCE, None, Some("debug disk pressure"), HashMap::new())
        .await
        .expect("start session");
    let suffix = stream
        .session_id
        .strip_prefix("ns-alice-")
        .expect("session id prefix");
    assert_eq!(suffix.len(), 26);
    assert!(
        suffix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    );
    assert!(stream.stream_url.starts_with(&format!(
        "{}/v1/data-channel/{}",
        sim.urls().messages,
        stream.session_id
    )));
    assert!(stream.stream_url.ends_with("?role=publish_subscribe"));

    let resumed = ssm
        .resume_session(&stream.session_id)
        .await
        .expect("resume");
    assert_ne!(resumed.token_value, stream.token_value);
    ssm.terminate_session(&stream.session_id)
        .await
        .expect("terminate");
    assert!(matches!(
        ssm.resume_session(&stream.session_id).await,
        Err(SsmCallError::DoesNotExist(_))
    ));
    assert!(matches!(
        ssm.start_session("i-0aaaaaaaaaaaaaaa1", None, None, HashMap::new())
            .await,
        Err(SsmCallError::TargetNotConnected(_))
    ));

    let calls = sim.calls();
    let start = calls
        .iter()
        .find(|c| c.operation == "StartSession" && c.error_code.is_none())
        .expect("StartSession recorded");
    assert_eq!(start.principal_arn.as_deref(), Some(arn));
    assert_eq!(
        start.session_id.as_deref(),
        Some(stream.session_id.as_str())
    );
    assert_eq!(start.target.as_deref(), Some(INSTANCE));
    assert_eq!(start.reason.as_deref(), Some("debug disk pressure"));
    assert!(calls.iter().any(|c| c.operation == "TerminateSession"
        && c.principal_arn.as_deref() == Some(arn)
        && c.error_code.is_none()));
    assert!(
        calls
            .iter()
            .any(|c| c.operation == "AssumeRoleWithWebIdentity"
                && c.principal_arn.as_deref() == Some(arn))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_tokens_and_trust_conditions_are_refused_with_aws_codes() {
    let sim = start().await;
    let eps = endpoints(&sim);
    let try_token = |token: String, role: &'static str| {
        let req = request(&sim, role, token);
        let eps = eps.clone();
        async move { assume_role_with_web_identity(&eps, &req).await }
    };
    let bad = |kind| sim.mint_bad_token("alice", kind).expect("bad token");
    assert!(matches!(
        try_token(bad(BadToken::Expired), "nodeshell-user").await,
        Err(AssumeRoleError::ExpiredToken(_))
    ));
    for kind in [
        BadToken::WrongIssuer,
        BadToken::WrongAudience,
        BadToken::UnknownKid,
        BadToken::AlgNone,
        BadToken::Hs256,
        BadToken::ForgedSignature,
    ] {
        let result = try_token(bad(kind), "nodeshell-user").await;
        assert!(
            matches!(result, Err(AssumeRoleError::InvalidIdentityToken(_))),
            "{kind:?}: {result:?}"
        );
    }
    // Trust policy: sub not listed, aud condition of another client.
    let good = sim.mint_token("alice").unwrap();
    assert!(matches!(
        try_token(good.clone(), "only-bob").await,
        Err(AssumeRoleError::AccessDenied(_))
    ));
    assert!(matches!(
        try_token(good.clone(), "other-aud").await,
        Err(AssumeRoleError::AccessDenied(_))
    ));
    assert!(matches!(
        try_token(good.clone(), "no-such-role").await,
        Err(AssumeRoleError::AccessDenied(_))
    ));
    // Parameter rules.
    let mut req = request(&sim, "nodeshell-user", good.clone());
    req.role_session_name = "has space".to_string();
    assert!(matches!(
        assume_role_with_web_identity(&eps, &req).await,
        Err(AssumeRoleError::Validation(_))
    ));
    let mut req = request(&sim, "nodeshell-user", good.clone());
    req.duration_seconds = Some(60);
    assert!(matches!(
        assume_role_with_web_identity(&eps, &req).await,
        Err(AssumeRoleError::Validation(_))
    ));

    // Key rotation: tokens from the old key keep working during the overlap.
    let old = sim.mint_token("alice").unwrap();
    sim.rotate_keys(Duration::from_secs(60)).unwrap();
    let new = sim.mint_token("alice").unwrap();
    assert!(try_token(old, "nodeshell-user").await.is_ok());
    assert!(try_token(new, "nodeshell-user").await.is_ok());
    let failures: Vec<_> = sim
        .calls()
        .into_iter()
        .filter_map(|c| c.error_code)
        .collect();
    assert!(failures.contains(&"ExpiredTokenException".to_string()));
    assert!(failures.contains(&"InvalidIdentityToken".to_string()));
    sim.shutdown().await;
}

#[tokio::test]
async fn ssm_refuses_forged_signatures_expired_and_unknown_credentials() {
    let sim = start().await;
    let eps = endpoints(&sim);
    let creds = assume(&sim, "nodeshell-user").await;

    // A wrong secret with a real access key id and session token: the signature differs.
    let forged = TemporaryCredentials::new(
        creds.access_key_id.clone(),
        "not-the-secret-at-all-0123456789abcdefgh".to_string(),
        creds.session_token().to_string(),
        creds.expiration,
        creds.assumed_role_arn.clone(),
        creds.assumed_role_id.clone(),
    );
    let result = SsmSessions::new(&eps, &forged)
        .start_session(INSTANCE, None, None, HashMap::new())
        .await;
    assert!(
        matches!(result, Err(SsmCallError::InvalidSignature(_))),
        "{result:?}"
    );

    // Unknown access key.
    let unknown = TemporaryCredentials::new(
        "ASIAUNKNOWNUNKNOWN00".to_string(),
        creds.secret_access_key().to_string(),
        creds.session_token().to_string(),
        creds.expiration,
        creds.assumed_role_arn.clone(),
        creds.assumed_role_id.clone(),
    );
    let result = SsmSessions::new(&eps, &unknown)
        .start_session(INSTANCE, None, None, HashMap::new())
        .await;
    assert!(
        matches!(result, Err(SsmCallError::UnrecognizedClient(_))),
        "{result:?}"
    );

    // A role without SSM permissions.
    let no_ssm = assume(&sim, "no-ssm").await;
    let result = SsmSessions::new(&eps, &no_ssm)
        .start_session(INSTANCE, None, None, HashMap::new())
        .await;
    assert!(
        matches!(result, Err(SsmCallError::AccessDenied(_))),
        "{result:?}"
    );

    // Expired temporary credentials.
    sim.expire_credentials(&creds.access_key_id).unwrap();
    let result = SsmSessions::new(&eps, &creds)
        .start_session(INSTANCE, None, None, HashMap::new())
        .await;
    assert!(
        matches!(result, Err(SsmCallError::ExpiredCredentials(_))),
        "{result:?}"
    );

    let codes: Vec<_> = sim
        .calls()
        .into_iter()
        .filter(|c| c.operation == "StartSession")
        .filter_map(|c| c.error_code)
        .collect();
    assert!(
        codes.contains(&"InvalidSignatureException".to_string()),
        "{codes:?}"
    );
    assert!(
        codes.contains(&"ExpiredTokenException".to_string()),
        "{codes:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn issuer_tokens_verify_with_jsonwebtoken_against_the_published_jwks() {
    let sim = start().await;
    // The tests' issuer is https, as every issuer IAM can register is.
    assert!(sim.urls().issuer.starts_with("https://127.0.0.1:"));
    let http = sim.issuer_client().build().unwrap();
    let discovery: serde_json::Value = http
        .get(format!(
            "{}/.well-known/openid-configuration",
            sim.urls().issuer
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], sim.urls().issuer.as_str());
    let jwks_uri = discovery["jwks_uri"].as_str().unwrap().to_string();
    let verify = |token: &str, jwks: &serde_json::Value| {
        let header = jsonwebtoken::decode_header(token)?;
        let kid = header.kid.unwrap_or_default();
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid.as_str())
            .cloned()
            .ok_or(jsonwebtoken::errors::ErrorKind::InvalidKeyFormat)?;
        let key = jsonwebtoken::DecodingKey::from_rsa_components(
            jwk["n"].as_str().unwrap(),
            jwk["e"].as_str().unwrap(),
        )?;
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&["nodeshell"]);
        validation.set_issuer(&[sim.urls().issuer.as_str()]);
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map(|d| d.claims)
    };
    // Minted in process: the token endpoint's password grant is a knob, off by default.
    let refused = http
        .post(format!("{}/token", sim.urls().issuer))
        .form(&[("sub", "alice")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::BAD_REQUEST);
    let token = sim.mint_token("alice").unwrap();
    let jwks: serde_json::Value = http
        .get(&jwks_uri)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let claims = verify(&token, &jwks).unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["groups"][0], "sre");
    for kind in [
        BadToken::Expired,
        BadToken::WrongAudience,
        BadToken::WrongIssuer,
        BadToken::UnknownKid,
        BadToken::ForgedSignature,
    ] {
        assert!(
            verify(&sim.mint_bad_token("alice", kind).unwrap(), &jwks).is_err(),
            "{kind:?}"
        );
    }
    // Rotation: both keys listed during the overlap, new tokens carry the new kid.
    let new_kid = sim.rotate_keys(Duration::from_secs(60)).unwrap();
    let jwks: serde_json::Value = http
        .get(&jwks_uri)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    let fresh = sim.mint_token("alice").unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&fresh).unwrap().kid.as_deref(),
        Some(new_kid.as_str())
    );
    assert!(verify(&fresh, &jwks).is_ok());
    assert!(verify(&token, &jwks).is_ok());

    // STS also answers the GET form of the query API.
    let url = format!(
        "{}/?Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={}&RoleSessionName=ns-get&WebIdentityToken={}",
        sim.urls().sts,
        sim.default_role_arn(),
        fresh
    );
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("<Arn>arn:aws:sts::123456789012:assumed-role/nodeshell-user/ns-get</Arn>"),
        "{body}"
    );
    assert!(body.contains("<AccessKeyId>ASIA"), "{body}");
    // … and its errors are AWS XML error documents.
    let response = http
        .post(&sim.urls().sts)
        .form(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("RoleArn", sim.default_role_arn().as_str()),
            ("RoleSessionName", "ns-x"),
            ("WebIdentityToken", "garbage-token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("<Code>InvalidIdentityToken</Code>") && body.contains("<ErrorResponse"),
        "{body}"
    );
    sim.shutdown().await;
}

/// An SSM client of AWS's own SDK, signing with credentials the simulator's STS issued.
fn sdk_ssm(sim: &SimHandle, creds: &TemporaryCredentials) -> aws_sdk_ssm::Client {
    let endpoints = endpoints(sim);
    let config = aws_sdk_ssm::Config::builder()
        .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
        .region(aws_sdk_ssm::config::Region::new(endpoints.region.clone()))
        .endpoint_url(endpoints.ssm_url.clone().expect("the simulator's SSM url"))
        .credentials_provider(aws_credential_types::Credentials::new(
            creds.access_key_id.clone(),
            creds.secret_access_key().to_string(),
            Some(creds.session_token().to_string()),
            None,
            "simulator",
        ))
        .build();
    aws_sdk_ssm::Client::from_conf(config)
}

fn code_of<E, R>(e: &aws_sdk_ssm::error::SdkError<E, R>) -> String
where
    E: aws_sdk_ssm::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|s| s.code())
        .unwrap_or("not a service error")
        .to_string()
}

#[tokio::test]
async fn describe_instance_information_checks_its_members_and_pages_as_aws_does() {
    let sim = start().await;
    for n in 0..12 {
        sim.add_instance(InstanceConfig {
            id: format!("i-0bbbbbbbbbbbbbb{n:02x}"),
            ..InstanceConfig::default()
        });
    }
    let creds = assume(&sim, "nodeshell-user").await;
    let ssm = sdk_ssm(&sim, &creds);
    // MaxResults outside 5–50.
    for bad in [4, 51] {
        let e = ssm
            .describe_instance_information()
            .max_results(bad)
            .send()
            .await
            .unwrap_err();
        assert_eq!(code_of(&e), "ValidationException", "MaxResults {bad}");
    }
    // Pages of five, with a NextToken until the last.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = ssm
            .describe_instance_information()
            .max_results(5)
            .set_next_token(token.clone())
            .send()
            .await
            .unwrap();
        assert!(page.instance_information_list().len() <= 5);
        seen.extend(
            page.instance_information_list()
                .iter()
                .filter_map(|i| i.instance_id().map(str::to_string)),
        );
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no instance twice across pages");
    assert_eq!(seen.len(), 14, "two configured instances and twelve added");
    // The default page is ten.
    let first = ssm.describe_instance_information().send().await.unwrap();
    assert_eq!(first.instance_information_list().len(), 10);
    assert!(first.next_token().is_some());
    // A made-up token, both filter lists, an unknown key.
    let e = ssm
        .describe_instance_information()
        .next_token("not-a-token")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "InvalidNextToken");
    let legacy = aws_sdk_ssm::types::InstanceInformationFilter::builder()
        .key(aws_sdk_ssm::types::InstanceInformationFilterKey::PingStatus)
        .value_set("Online")
        .build()
        .unwrap();
    let current = aws_sdk_ssm::types::InstanceInformationStringFilter::builder()
        .key("PingStatus")
        .values("Online")
        .build()
        .unwrap();
    let e = ssm
        .describe_instance_information()
        .instance_information_filter_list(legacy)
        .filters(current)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "InvalidInstanceInformationFilterValue");
    let unknown = aws_sdk_ssm::types::InstanceInformationStringFilter::builder()
        .key("Colour")
        .values("blue")
        .build()
        .unwrap();
    let e = ssm
        .describe_instance_information()
        .filters(unknown)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "InvalidFilterKey");
}

#[tokio::test]
async fn start_session_checks_the_reason_as_aws_does() {
    let sim = start().await;
    let creds = assume(&sim, "nodeshell-user").await;
    let ssm = SsmSessions::new(&endpoints(&sim), &creds);
    for reason in [String::new(), "x".repeat(257), "two\nlines".to_string()] {
        let e = ssm
            .start_session(INSTANCE, None, Some(&reason), HashMap::new())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, SsmCallError::Other { code, message }
                if code == "ValidationException" && message.contains("'reason'")),
            "{reason:?}: {e}"
        );
    }
    let fine = "é".repeat(256);
    assert!(
        ssm.start_session(INSTANCE, None, Some(&fine), HashMap::new())
            .await
            .is_ok(),
        "256 characters (not bytes) are allowed"
    );
}

#[tokio::test]
async fn sts_matches_the_role_path_and_can_report_the_issuer_unreachable() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut config = SimConfig::for_tests();
    config.roles.push(RoleConfig {
        name: "pathed".to_string(),
        path: "/ops/".to_string(),
        ..RoleConfig::default()
    });
    let sim = Simulator::start(config).await.expect("simulator starts");
    let arn = sim.role_arn("pathed");
    assert!(arn.ends_with(":role/ops/pathed"), "{arn}");
    let token = || sim.mint_token("alice").expect("token");
    let with_arn = |role_arn: &str| WebIdentityRequest {
        role_arn: role_arn.to_string(),
        role_session_name: "ns-alice".to_string(),
        web_identity_token: token(),
        duration_seconds: Some(900),
    };
    assert!(
        assume_role_with_web_identity(&endpoints(&sim), &with_arn(&arn))
            .await
            .is_ok()
    );
    let no_path = "arn:aws:iam::123456789012:role/pathed";
    assert!(matches!(
        assume_role_with_web_identity(&endpoints(&sim), &with_arn(no_path)).await,
        Err(AssumeRoleError::AccessDenied(_))
    ));
    sim.set_idp_unreachable(true);
    assert!(matches!(
        assume_role_with_web_identity(&endpoints(&sim), &with_arn(&arn)).await,
        Err(AssumeRoleError::IdpCommunication(_))
    ));
    sim.set_idp_unreachable(false);
    assert!(
        assume_role_with_web_identity(&endpoints(&sim), &with_arn(&arn))
            .await
            .is_ok()
    );
}

/// The trust policy docs/setup.md recommends, for the simulator's provider: `aud` is the
/// gateway's confidential client and the role session name is bound to `nodeshell-${sub}`.
fn recommended_trust_policy(sim: &SimHandle) -> serde_json::Value {
    let provider = sim.provider_name();
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": sim.provider_arn()},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {
                "StringEquals": {
                    format!("{provider}:aud"): "nodeshell-gateway",
                    "sts:RoleSessionName": format!("nodeshell-${{{provider}:sub}}"),
                },
            },
        }],
    })
}

/// AssumeRoleWithWebIdentity through AWS's own STS client, unsigned as the SDK sends it;
/// the error's code and HTTP status when refused.
async fn sdk_assume(
    sim: &SimHandle,
    token: &str,
    session_name: &str,
) -> Result<String, (String, u16)> {
    let endpoints = endpoints(sim);
    let config = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new(endpoints.region.clone()))
        .endpoint_url(endpoints.sts_url.clone().expect("the simulator's STS url"))
        .build();
    let out = aws_sdk_sts::Client::from_conf(config)
        .assume_role_with_web_identity()
        .role_arn(sim.role_arn("nodeshell-user"))
        .role_session_name(session_name)
        .web_identity_token(token)
        .send()
        .await;
    match out {
        Ok(out) => Ok(out.assumed_role_user().unwrap().arn().to_string()),
        Err(e) => {
            use aws_sdk_sts::error::ProvideErrorMetadata;
            let status = e.raw_response().map_or(0, |r| r.status().as_u16());
            Err((e.code().unwrap_or("no code").to_string(), status))
        }
    }
}

/// AWS's STS client against a simulator whose issuer is plain http: refused as IAM refuses a
/// token whose `iss` no registered (https-only) provider matches, unless the knob allows it.
#[tokio::test]
async fn sts_refuses_a_token_from_an_http_issuer_unless_the_knob_allows_it() {
    use aws_sdk_sts::error::ProvideErrorMetadata;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    for allow in [false, true] {
        let mut config = SimConfig::for_tests();
        config.issuer.https = false;
        config.issuer.allow_http_issuer = allow;
        let sim = Simulator::start(config).await.expect("simulator starts");
        let issuer = sim.urls().issuer.clone();
        assert!(issuer.starts_with("http://"), "{issuer}");
        let token = sim.mint_token("alice").expect("token");
        let endpoints = endpoints(&sim);
        let sdk = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::Config::builder()
                .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
                .region(aws_sdk_sts::config::Region::new(endpoints.region.clone()))
                .endpoint_url(endpoints.sts_url.clone().expect("the simulator's STS url"))
                .build(),
        );
        let out = sdk
            .assume_role_with_web_identity()
            .role_arn(sim.role_arn("nodeshell-user"))
            .role_session_name("ns-alice")
            .web_identity_token(token)
            .send()
            .await;
        if allow {
            let out = out.expect("the knob accepts the http issuer");
            assert_eq!(
                out.assumed_role_user().unwrap().arn(),
                "arn:aws:sts::123456789012:assumed-role/nodeshell-user/ns-alice"
            );
        } else {
            let e = out.expect_err("an http issuer matches no provider");
            assert_eq!(e.raw_response().map(|r| r.status().as_u16()), Some(400));
            assert_eq!(e.code(), Some("InvalidIdentityToken"));
            assert_eq!(
                e.message(),
                Some(
                    format!("No OpenIDConnect provider found in your account for {issuer}")
                        .as_str()
                )
            );
        }
        sim.shutdown().await;
    }
}

/// An id_token through the issuer's browser login, as a person (public client, no secret) or
/// the gateway (confidential client, its secret) would get one: /authorize with PKCE (the
/// auto-login user answers at once), then the code at /token.
async fn login(sim: &SimHandle, client_id: &str, secret: Option<&str>) -> String {
    use base64::Engine;
    use sha2::Digest;
    let verifier = "a-verifier-of-at-least-forty-three-characters-long";
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let callback = "http://127.0.0.1:9/callback";
    let http = sim
        .issuer_client()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let authorize = http
        .get(format!("{}/authorize", sim.urls().issuer))
        .query(&[
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", callback),
            ("scope", "openid"),
            ("state", "s"),
            ("nonce", "n"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    let location = authorize.headers()["location"]
        .to_str()
        .unwrap()
        .to_string();
    let code = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no code in {location}"));
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", callback),
        ("client_id", client_id),
        ("code_verifier", verifier),
    ];
    if let Some(secret) = secret {
        form.push(("client_secret", secret));
    }
    let answer: serde_json::Value = http
        .post(format!("{}/token", sim.urls().issuer))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["id_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no id_token: {answer}"))
        .to_string()
}

#[tokio::test]
async fn the_recommended_trust_policy_refuses_wrong_aud_sub_and_session_name() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut config = SimConfig::for_tests();
    // The gateway's confidential client, and the public client a person can sign in to.
    config
        .issuer
        .clients
        .push(nodeshell::sim::ClientRegistration {
            client_id: "nodeshell-gateway".to_string(),
            client_secret: Some("gateway-secret".to_string()),
        });
    config
        .issuer
        .clients
        .push(nodeshell::sim::ClientRegistration {
            client_id: "nodeshell-console".to_string(),
            client_secret: None,
        });
    config.users.push(nodeshell::sim::TestUser {
        sub: "bob".to_string(),
        email: "bob@example.com".to_string(),
        ..nodeshell::sim::TestUser::default()
    });
    config.issuer.auto_login = Some("alice".to_string());
    let sim = Simulator::start(config).await.expect("simulator starts");
    sim.set_trust_policy("nodeshell-user", &recommended_trust_policy(&sim))
        .unwrap();
    let gateway_token = |sub: &str| {
        sim.mint_token_with(sub, "nodeshell-gateway", 900)
            .expect("token")
    };
    // The gateway's own exchange: its confidential client's code flow, the name
    // `<prefix>-<sub>`.
    let alice = login(&sim, "nodeshell-gateway", Some("gateway-secret")).await;
    assert_eq!(
        sdk_assume(&sim, &alice, "nodeshell-alice").await,
        Ok("arn:aws:sts::123456789012:assumed-role/nodeshell-user/nodeshell-alice".to_string())
    );
    let denied = Err(("AccessDenied".to_string(), 403));
    // What a person obtains on their own: the public client's login, no secret needed.
    let public = login(&sim, "nodeshell-console", None).await;
    assert_eq!(sdk_assume(&sim, &public, "nodeshell-alice").await, denied);
    // Someone else's sub under alice's name, and alice's token under a name of her choosing.
    let bob = gateway_token("bob");
    assert_eq!(sdk_assume(&sim, &bob, "nodeshell-alice").await, denied);
    for name in [
        "nodeshell-bob",
        "alice",
        "nodeshell-alice2",
        "Nodeshell-alice",
    ] {
        assert_eq!(sdk_assume(&sim, &alice, name).await, denied, "{name}");
    }
    assert!(sdk_assume(&sim, &bob, "nodeshell-bob").await.is_ok());

    // Without the policy the role's simple config (aud `nodeshell` only) still applies, and
    // a document the simulator cannot evaluate is refused up front.
    let unparsable = serde_json::json!({"Statement": {"Effect": "Allow", "Principal": "*",
        "Action": "*", "Condition": {"DateLessThan": {"aws:CurrentTime": "2030-01-01"}}}});
    assert!(sim.set_trust_policy("nodeshell-user", &unparsable).is_err());
    assert!(
        sim.set_trust_policy("no-such-role", &recommended_trust_policy(&sim))
            .is_err()
    );
    let failures: Vec<_> = sim
        .calls()
        .into_iter()
        .filter(|c| c.operation == "AssumeRoleWithWebIdentity")
        .filter_map(|c| c.error_code)
        .collect();
    assert_eq!(failures.len(), 6, "{failures:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_configured_trust_policy_document_is_evaluated() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // A fixed issuer port, so the document can name the provider before start.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let provider = format!("127.0.0.1:{port}");
    let mut config = SimConfig::for_tests();
    config.ports.oidc = port;
    config.roles[0].trust_policy = Some(serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow",
             "Principal": {"Federated": format!("arn:aws:iam::123456789012:oidc-provider/{provider}")},
             "Action": "sts:AssumeRoleWithWebIdentity",
             "Condition": {"ForAnyValue:StringLike": {format!("{provider}:aud"): "nodeshell*"}}},
            {"Effect": "Deny", "Principal": "*", "Action": "sts:*",
             "Condition": {"StringLike": {"sts:RoleSessionName": "*-blocked"}}},
        ],
    }));
    let sim = Simulator::start(config).await.expect("simulator starts");
    let token = sim.mint_token("alice").unwrap();
    assert!(sdk_assume(&sim, &token, "ns-alice").await.is_ok());
    assert_eq!(
        sdk_assume(&sim, &token, "ns-blocked").await,
        Err(("AccessDenied".to_string(), 403)),
        "an explicit Deny wins over the Allow"
    );
    sim.shutdown().await;

    let mut config = SimConfig::for_tests();
    config.roles[0].trust_policy = Some(serde_json::json!({"Statement": [{"Effect": "Allow"}]}));
    let Err(err) = Simulator::start(config).await else {
        panic!("a trust policy without Principal and Action must be refused at start");
    };
    assert!(err.to_string().contains("nodeshell-user"), "{err}");
}

fn message_of<E, R>(e: &aws_sdk_ssm::error::SdkError<E, R>) -> String
where
    E: aws_sdk_ssm::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|s| s.message())
        .unwrap_or("no message")
        .to_string()
}

/// IAM's implicit deny as SSM words it, for `action` on `resource`.
fn implicit_deny(creds: &TemporaryCredentials, action: &str, resource: &str) -> String {
    format!(
        "User: {} is not authorized to perform: {action} on resource: {resource} because no identity-based policy allows the {action} action",
        creds.assumed_role_arn
    )
}

#[tokio::test]
async fn a_start_session_statement_naming_only_instances_is_refused_on_the_document() {
    let sim = start().await;
    let creds = assume(&sim, "instances-only").await;
    let ssm = sdk_ssm(&sim, &creds);
    let e = ssm
        .start_session()
        .target(INSTANCE)
        .document_name("SSM-SessionManagerRunShell")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "AccessDeniedException");
    let config = SimConfig::for_tests();
    let document = format!(
        "arn:aws:ssm:{}:{}:document/SSM-SessionManagerRunShell",
        config.region, config.account_id
    );
    assert_eq!(
        message_of(&e),
        implicit_deny(&creds, "ssm:StartSession", &document)
    );
    // The instance itself is allowed: without DocumentName the default document runs
    // with no document check, as AWS does unless ssm:SessionDocumentAccessCheck is set.
    assert!(ssm.start_session().target(INSTANCE).send().await.is_ok());
}

#[tokio::test]
async fn a_role_without_terminate_session_cannot_end_its_own_session() {
    let sim = start().await;
    let creds = assume(&sim, "no-terminate").await;
    let ssm = sdk_ssm(&sim, &creds);
    let started = ssm.start_session().target(INSTANCE).send().await.unwrap();
    let id = started.session_id().unwrap().to_string();
    let e = ssm
        .terminate_session()
        .session_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "AccessDeniedException");
    let config = SimConfig::for_tests();
    let session = format!(
        "arn:aws:ssm:{}:{}:session/{id}",
        config.region, config.account_id
    );
    assert_eq!(
        message_of(&e),
        implicit_deny(&creds, "ssm:TerminateSession", &session)
    );
    // Only that action is missing: the session is still there to resume.
    assert!(ssm.resume_session().session_id(&id).send().await.is_ok());
}

#[tokio::test]
async fn a_role_without_resume_session_cannot_reconnect_to_its_own_session() {
    let sim = start().await;
    let creds = assume(&sim, "no-resume").await;
    let ssm = sdk_ssm(&sim, &creds);
    let started = ssm.start_session().target(INSTANCE).send().await.unwrap();
    let id = started.session_id().unwrap().to_string();
    let e = ssm
        .resume_session()
        .session_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "AccessDeniedException");
    let config = SimConfig::for_tests();
    let session = format!(
        "arn:aws:ssm:{}:{}:session/{id}",
        config.region, config.account_id
    );
    assert_eq!(
        message_of(&e),
        implicit_deny(&creds, "ssm:ResumeSession", &session)
    );
    assert!(ssm.terminate_session().session_id(&id).send().await.is_ok());
}

#[tokio::test]
async fn a_role_without_describe_instance_information_cannot_look_up_the_node() {
    let sim = start().await;
    let creds = assume(&sim, "no-describe").await;
    let ssm = sdk_ssm(&sim, &creds);
    let e = ssm
        .describe_instance_information()
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "AccessDeniedException");
    let config = SimConfig::for_tests();
    let account = format!("arn:aws:ssm:{}:{}:*", config.region, config.account_id);
    assert_eq!(
        message_of(&e),
        implicit_deny(&creds, "ssm:DescribeInstanceInformation", &account)
    );
    assert!(ssm.start_session().target(INSTANCE).send().await.is_ok());
}

#[tokio::test]
async fn resume_session_with_expired_credentials_is_refused_as_aws_refuses_it() {
    let sim = start().await;
    let creds = assume(&sim, "short-lived").await;
    let left = creds.expiration - chrono::Utc::now();
    assert!(
        left <= chrono::Duration::seconds(2),
        "the answer's Expiration says the capped lifetime: {left:?} left"
    );
    let ssm = sdk_ssm(&sim, &creds);
    let started = ssm.start_session().target(INSTANCE).send().await.unwrap();
    let id = started.session_id().unwrap().to_string();
    assert!(ssm.resume_session().session_id(&id).send().await.is_ok());
    // Past the Expiration STS gave: the same credentials are refused, at the credential level.
    let wait = (creds.expiration - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    let e = ssm
        .resume_session()
        .session_id(&id)
        .send()
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "ExpiredTokenException");
    assert_eq!(
        message_of(&e),
        "The security token included in the request is expired"
    );
    let status = e.raw_response().map(|r| r.status().as_u16());
    assert_eq!(status, Some(400));
    // Fresh credentials (a new AssumeRoleWithWebIdentity) resume the same session.
    let renewed = assume(&sim, "short-lived").await;
    assert_ne!(renewed.access_key_id, creds.access_key_id);
    let resumed = sdk_ssm(&sim, &renewed)
        .resume_session()
        .session_id(&id)
        .send()
        .await
        .unwrap();
    assert!(resumed.token_value().is_some_and(|t| !t.is_empty()));
    sim.shutdown().await;
}
