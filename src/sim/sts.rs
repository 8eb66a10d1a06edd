//! STS query API: AssumeRoleWithWebIdentity (unsigned), XML responses in AWS's shape.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use chrono::{SecondsFormat, Utc};
use quick_xml::escape::escape;
use sha2::{Digest, Sha256};

use super::ids::random_alnum;
use super::lifetimes::credential_expiry;
use super::state::{CallRecord, IssuedCredentials, Shared, lock, read};
use super::trust::{
    RegisteredIssuer, StsErrorCode, StsRejection, check_duration, check_role_session_name,
    check_trust_policy, parse_role_arn, role_trust_policy, validate_token,
};
use super::trust_policy::{provider_name, web_identity_request};

const XMLNS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// Routes of the STS endpoint.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().route("/", any(handle)).with_state(shared)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let mut params: HashMap<String, String> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    params.extend(form_urlencoded::parse(&body).into_owned());
    let request_id = uuid::Uuid::new_v4().to_string();
    let action = params.get("Action").cloned().unwrap_or_default();
    if action != "AssumeRoleWithWebIdentity" {
        let rejection = StsRejection {
            code: StsErrorCode::InvalidAction,
            message: format!("Could not find operation {action} for version 2011-06-15"),
        };
        return error_response(&rejection, &request_id);
    }
    let mut call = CallRecord::new("AssumeRoleWithWebIdentity");
    match assume(&shared, &params) {
        Ok(issued) => {
            call.principal_arn = Some(issued.credentials.principal_arn.clone());
            call.access_key_id = Some(issued.access_key_id.clone());
            shared.record(call);
            xml_ok(success_xml(&issued, &request_id))
        }
        Err(rejection) => {
            call.error_code = Some(rejection.code.as_str().to_string());
            shared.record(call);
            error_response(&rejection, &request_id)
        }
    }
}

struct Issued {
    access_key_id: String,
    credentials: IssuedCredentials,
    assumed_role_id: String,
    subject: String,
    audience: String,
    provider: String,
}

fn required<'a>(
    params: &'a HashMap<String, String>,
    name: &str,
    member: &str,
) -> Result<&'a str, StsRejection> {
    params.get(name).map(String::as_str).ok_or_else(|| StsRejection {
        code: StsErrorCode::ValidationError,
        message: format!(
            "1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"
        ),
    })
}

fn assume(shared: &Shared, params: &HashMap<String, String>) -> Result<Issued, StsRejection> {
    let role_arn = required(params, "RoleArn", "roleArn")?;
    let session_name = required(params, "RoleSessionName", "roleSessionName")?;
    let token = required(params, "WebIdentityToken", "webIdentityToken")?;
    check_role_session_name(session_name)?;
    if !(4..=20000).contains(&token.len()) {
        return Err(StsRejection {
            code: StsErrorCode::ValidationError,
            message: "1 validation error detected: Value at 'webIdentityToken' failed to satisfy constraint: Member must have length between 4 and 20000".to_string(),
        });
    }
    let denied = || StsRejection {
        code: StsErrorCode::AccessDenied,
        message: "Not authorized to perform sts:AssumeRoleWithWebIdentity".to_string(),
    };
    let (account, path, role_name) = parse_role_arn(role_arn).ok_or_else(|| StsRejection {
        code: StsErrorCode::ValidationError,
        message: format!("{role_arn} is invalid"),
    })?;
    if account != shared.config.account_id {
        return Err(denied());
    }
    // The ARN names a role by path and name: the right name under another path is no role.
    let role = shared
        .role(role_name)
        .filter(|r| r.path == path)
        .ok_or_else(denied)?;
    if shared
        .idp_unreachable
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return Err(StsRejection {
            code: StsErrorCode::IdpCommunicationError,
            message: "The request could not be fulfilled because the identity provider could not be reached; retry shortly".to_string(),
        });
    }
    let audiences = shared.accepted_audiences();
    let identity = {
        let keys = read(&shared.keys);
        let lookup = |kid: &str| keys.public_key_der(kid);
        let issuer = RegisteredIssuer {
            url: &shared.urls.issuer,
            audiences: &audiences,
            key: &lookup,
            allow_http: shared.config.issuer.allow_http_issuer,
        };
        let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
        validate_token(token, &issuer, now)?
    };
    let override_policy = lock(&shared.trust_policies).get(&role.name).cloned();
    let policy = match override_policy {
        Some(policy) => policy,
        // Checked at start, so a broken document cannot reach here; refuse if it did.
        None => role_trust_policy(role, &shared.config.account_id, &shared.urls.issuer)
            .map_err(|_| denied())?,
    };
    let request = web_identity_request(
        &shared.config.account_id,
        &shared.urls.issuer,
        identity
            .authorized_party
            .as_deref()
            .unwrap_or(&identity.audience),
        &identity.subject,
        session_name,
    );
    check_trust_policy(&policy, &request)?;
    let duration = check_duration(
        params.get("DurationSeconds").map(String::as_str),
        role.max_session_duration_seconds,
    )?;
    let access_key_id = format!("ASIA{}", random_alnum(16).to_ascii_uppercase());
    let credentials = IssuedCredentials {
        secret_access_key: random_alnum(40),
        session_token: format!("IQoJb3JpZ2luX2VjE{}", random_alnum(300)),
        expiration: credential_expiry(Utc::now(), duration, role.credential_lifetime_seconds),
        principal_arn: format!(
            "arn:aws:sts::{}:assumed-role/{}/{}",
            shared.config.account_id, role.name, session_name
        ),
        role_name: role.name.clone(),
        role_session_name: session_name.to_string(),
    };
    lock(&shared.credentials).insert(access_key_id.clone(), credentials.clone());
    let role_id_hash = hex::encode(Sha256::digest(role.name.as_bytes())).to_ascii_uppercase();
    let provider = provider_name(&shared.urls.issuer);
    Ok(Issued {
        access_key_id,
        credentials,
        assumed_role_id: format!("AROA{}:{session_name}", &role_id_hash[..17]),
        subject: identity.subject,
        audience: identity.audience,
        provider,
    })
}

fn success_xml(issued: &Issued, request_id: &str) -> String {
    let c = &issued.credentials;
    format!(
        r#"<AssumeRoleWithWebIdentityResponse xmlns="{XMLNS}">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>{subject}</SubjectFromWebIdentityToken>
    <Audience>{audience}</Audience>
    <AssumedRoleUser>
      <Arn>{arn}</Arn>
      <AssumedRoleId>{role_id}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>{token}</SessionToken>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <Expiration>{expiration}</Expiration>
      <AccessKeyId>{akid}</AccessKeyId>
    </Credentials>
    <Provider>{provider}</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>{request_id}</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>
"#,
        subject = escape(issued.subject.as_str()),
        audience = escape(issued.audience.as_str()),
        arn = escape(c.principal_arn.as_str()),
        role_id = escape(issued.assumed_role_id.as_str()),
        token = escape(c.session_token.as_str()),
        secret = escape(c.secret_access_key.as_str()),
        expiration = c.expiration.to_rfc3339_opts(SecondsFormat::Secs, true),
        akid = issued.access_key_id,
        provider = escape(issued.provider.as_str()),
    )
}

fn xml_ok(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

/// An AWS query-protocol error document.
fn error_response(rejection: &StsRejection, request_id: &str) -> Response {
    let body = format!(
        r#"<ErrorResponse xmlns="{XMLNS}">
  <Error>
    <Type>Sender</Type>
    <Code>{code}</Code>
    <Message>{message}</Message>
  </Error>
  <RequestId>{request_id}</RequestId>
</ErrorResponse>
"#,
        code = rejection.code.as_str(),
        message = escape(rejection.message.as_str()),
    );
    let status =
        StatusCode::from_u16(rejection.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        [
            (header::CONTENT_TYPE, "text/xml".to_string()),
            (
                header::HeaderName::from_static("x-amzn-requestid"),
                request_id.to_string(),
            ),
        ],
        body,
    )
        .into_response()
}
