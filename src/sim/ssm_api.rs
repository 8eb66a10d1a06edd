//! SSM JSON 1.1 API: SigV4-verified StartSession, ResumeSession, TerminateSession and
//! DescribeInstanceInformation, each recorded in the call log.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::agent_messages::AgentEvent;
use super::config::{PingStatus, RoleConfig, SimConfig};
use super::ids::{new_session_id, random_alnum};
use super::sigv4::{self, ReceivedRequest, SigV4Error};
use super::state::{CallRecord, SessionEntry, SessionMut, Shared, lock};

/// Shell document (the default).
pub const SHELL_DOCUMENT: &str = "SSM-SessionManagerRunShell";
/// Throughput document: emits `Parameters.bytes` deterministic bytes, then exits 0.
pub const FIREHOSE_DOCUMENT: &str = "NodeShell-Firehose";

/// An SSM error in the JSON protocol's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SsmError {
    pub code: &'static str,
    pub message: String,
    pub status: u16,
}

fn err(code: &'static str, message: impl Into<String>) -> SsmError {
    SsmError {
        code,
        message: message.into(),
        status: if code == "InternalServerError" {
            500
        } else {
            400
        },
    }
}

impl From<SigV4Error> for SsmError {
    fn from(e: SigV4Error) -> Self {
        let code = match e {
            SigV4Error::Missing => "MissingAuthenticationTokenException",
            SigV4Error::Incomplete(_) => "IncompleteSignatureException",
            SigV4Error::BadScope(_)
            | SigV4Error::Stale(_)
            | SigV4Error::Mismatch
            | SigV4Error::BodyMismatch => "InvalidSignatureException",
        };
        let status = if code == "MissingAuthenticationTokenException" {
            403
        } else {
            400
        };
        Self {
            code,
            message: e.to_string(),
            status,
        }
    }
}

impl IntoResponse for SsmError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        (
            status,
            [
                (
                    header::CONTENT_TYPE,
                    "application/x-amz-json-1.1".to_string(),
                ),
                (
                    header::HeaderName::from_static("x-amzn-requestid"),
                    uuid::Uuid::new_v4().to_string(),
                ),
            ],
            json!({"__type": self.code, "message": self.message}).to_string(),
        )
            .into_response()
    }
}

/// Routes of the SSM endpoint.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(any(handle)).with_state(shared)
}

/// The principal a SigV4-signed request came from.
pub(crate) struct Caller {
    pub principal_arn: String,
    pub access_key_id: String,
    pub role_name: String,
    pub role_session_name: String,
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let operation = json_operation(&headers, "AmazonSSM.");
    let mut call = CallRecord::new(&operation);
    let result = dispatch(
        &shared, &mut call, &operation, &method, &uri, &headers, &body,
    )
    .await;
    json_answer(&shared, call, result)
}

/// The operation a JSON 1.1 request names in `X-Amz-Target` (`<prefix><Operation>`).
pub(crate) fn json_operation(headers: &HeaderMap, prefix: &str) -> String {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    target.strip_prefix(prefix).unwrap_or(target).to_string()
}

/// Records `call` (with its error code, if any) and answers as a JSON 1.1 service does.
pub(crate) fn json_answer(
    shared: &Shared,
    mut call: CallRecord,
    result: Result<Value, SsmError>,
) -> Response {
    match result {
        Ok(value) => {
            shared.record(call);
            (
                [
                    (
                        header::CONTENT_TYPE,
                        "application/x-amz-json-1.1".to_string(),
                    ),
                    (
                        header::HeaderName::from_static("x-amzn-requestid"),
                        uuid::Uuid::new_v4().to_string(),
                    ),
                ],
                value.to_string(),
            )
                .into_response()
        }
        Err(e) => {
            call.error_code = Some(e.code.to_string());
            shared.record(call);
            e.into_response()
        }
    }
}

/// Verifies a request's SigV4 signature for `service` against the credentials STS issued.
pub(crate) fn authenticate(
    shared: &Shared,
    service: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Caller, SsmError> {
    let pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let req = ReceivedRequest {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or_default(),
        headers: &pairs,
        body,
    };
    let auth_header = req.header("authorization").ok_or(SigV4Error::Missing)?;
    let auth = sigv4::parse_authorization(auth_header)?;
    let invalid = || {
        err(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    };
    let creds = lock(&shared.credentials)
        .get(&auth.access_key_id)
        .cloned()
        .ok_or_else(invalid)?;
    if req.header("x-amz-security-token") != Some(creds.session_token.as_str()) {
        return Err(invalid());
    }
    if creds.expiration <= Utc::now() {
        return Err(err(
            "ExpiredTokenException",
            "The security token included in the request is expired",
        ));
    }
    sigv4::verify(
        &req,
        &auth,
        &creds.secret_access_key,
        service,
        &shared.config.region,
        Utc::now(),
    )?;
    Ok(Caller {
        principal_arn: creds.principal_arn,
        access_key_id: auth.access_key_id.clone(),
        role_name: creds.role_name,
        role_session_name: creds.role_session_name,
    })
}

async fn dispatch(
    shared: &Arc<Shared>,
    call: &mut CallRecord,
    operation: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, SsmError> {
    let caller = authenticate(shared, "ssm", method, uri, headers, body)?;
    call.principal_arn = Some(caller.principal_arn.clone());
    call.access_key_id = Some(caller.access_key_id.clone());
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|_| err("SerializationException", "Request body is not valid JSON"))?
    };
    let action = format!("ssm:{operation}");
    if !action_allowed(shared.role(&caller.role_name), &action) {
        let resource = resource_of(&shared.config, operation, &input);
        return Err(not_authorized(&caller.principal_arn, &action, &resource));
    }
    match operation {
        "StartSession" => start_session(shared, call, &caller, input),
        "ResumeSession" => resume_session(shared, call, &caller, &input),
        "TerminateSession" => terminate_session(shared, call, &caller, &input).await,
        "DescribeInstanceInformation" => describe_instances(shared, &input),
        other => Err(err(
            "UnknownOperationException",
            format!("Unknown operation {other}"),
        )),
    }
}

/// Whether the caller's role allows `action` (`ssm:<Operation>`): the role exists, its
/// policy allows the session calls, and `action` is not among its `denyActions`.
fn action_allowed(role: Option<&RoleConfig>, action: &str) -> bool {
    role.is_some_and(|r| r.ssm_allowed && !r.deny_actions.iter().any(|a| a == action))
}

/// The ARN IAM evaluates `operation` on: the target instance of StartSession, the session
/// of ResumeSession and TerminateSession, the account's SSM resources otherwise (and when
/// the request leaves the member out).
fn resource_of(config: &SimConfig, operation: &str, input: &Value) -> String {
    let (region, account) = (&config.region, &config.account_id);
    match operation {
        "StartSession" => input["Target"]
            .as_str()
            .map(|target| format!("arn:aws:ec2:{region}:{account}:instance/{target}")),
        "ResumeSession" | "TerminateSession" => input["SessionId"]
            .as_str()
            .map(|id| format!("arn:aws:ssm:{region}:{account}:session/{id}")),
        _ => None,
    }
    .unwrap_or_else(|| format!("arn:aws:ssm:{region}:{account}:*"))
}

/// A document's ARN: AWS-owned (`AWS-…`) documents have no account in it.
fn document_arn(config: &SimConfig, name: &str) -> String {
    let account = if name.starts_with("AWS-") {
        ""
    } else {
        config.account_id.as_str()
    };
    format!("arn:aws:ssm:{}:{account}:document/{name}", config.region)
}

/// IAM's implicit deny, as SSM returns it.
fn not_authorized(principal: &str, action: &str, resource: &str) -> SsmError {
    err(
        "AccessDeniedException",
        format!(
            "User: {principal} is not authorized to perform: {action} on resource: {resource} because no identity-based policy allows the {action} action"
        ),
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StartInput {
    target: Option<String>,
    document_name: Option<String>,
    reason: Option<String>,
    #[serde(default)]
    parameters: BTreeMap<String, Vec<String>>,
}

fn new_token() -> String {
    random_alnum(160)
}

fn stream_url(shared: &Shared, session_id: &str) -> String {
    format!(
        "{}/v1/data-channel/{session_id}?role=publish_subscribe",
        shared.urls.messages
    )
}

fn start_session(
    shared: &Arc<Shared>,
    call: &mut CallRecord,
    caller: &Caller,
    input: Value,
) -> Result<Value, SsmError> {
    let input: StartInput =
        serde_json::from_value(input).map_err(|e| err("ValidationException", e.to_string()))?;
    call.reason = input.reason.clone();
    // SessionReason: 1–256 characters of `^.{1,256}$`, so no line breaks either.
    if let Some(reason) = &input.reason {
        let length = reason.chars().count();
        if length == 0 || length > 256 {
            let constraint = if length == 0 {
                "Member must have length greater than or equal to 1"
            } else {
                "Member must have length less than or equal to 256"
            };
            return Err(validation_error("reason", reason, constraint));
        }
        if reason.contains(['\n', '\r']) {
            return Err(validation_error(
                "reason",
                reason,
                "Member must satisfy regular expression pattern: ^.{1,256}$",
            ));
        }
    }
    let target = input
        .target
        .ok_or_else(|| err("ValidationException", "1 validation error detected: Value null at 'target' failed to satisfy constraint: Member must not be null"))?;
    call.target = Some(target.clone());
    // StartSession is evaluated on the instance and on a document the request names; a
    // statement that names the instances only leaves the document denied. Without
    // `DocumentName` the default document runs with no document check (AWS: "Enforce a
    // session document permission check", unless `ssm:SessionDocumentAccessCheck`).
    let named = input.document_name.is_some();
    let document = input
        .document_name
        .unwrap_or_else(|| SHELL_DOCUMENT.to_string());
    if named
        && shared
            .role(&caller.role_name)
            .is_some_and(|r| r.denied_documents.contains(&document))
    {
        return Err(not_authorized(
            &caller.principal_arn,
            "ssm:StartSession",
            &document_arn(&shared.config, &document),
        ));
    }
    if document != SHELL_DOCUMENT
        && document != FIREHOSE_DOCUMENT
        && super::documents::known(&document).is_none()
    {
        return Err(err(
            "InvalidDocument",
            format!("Document with name {document} does not exist."),
        ));
    }
    let instance = lock(&shared.instances).get(&target).cloned();
    let Some(instance) = instance.filter(|i| i.ping_status == PingStatus::Online) else {
        return Err(err(
            "TargetNotConnected",
            format!("{target} is not connected."),
        ));
    };
    let id = new_session_id(&caller.role_session_name);
    let token = new_token();
    let ordinal = shared
        .ordinal
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let entry = SessionEntry {
        id: id.clone(),
        owner_arn: caller.principal_arn.clone(),
        target,
        document,
        parameters: input.parameters,
        ordinal,
        knobs: Mutex::new(instance.faults.clone()),
        limits: Mutex::new(shared.config.session_manager_preferences.limits()),
        recycle: Mutex::new(shared.config.data_channel.recycle()),
        state: Mutex::new(SessionMut {
            token: token.clone(),
            token_issued: std::time::Instant::now(),
            terminated: false,
            agent: None,
            closes_done: 0,
            exit_code: None,
            agent_resends: 0,
            agent_not_kept: 0,
            input_dropped: 0,
            acks_dropped: 0,
        }),
    };
    lock(&shared.sessions).insert(id.clone(), Arc::new(entry));
    call.session_id = Some(id.clone());
    Ok(json!({"SessionId": id, "TokenValue": token, "StreamUrl": stream_url(shared, &id)}))
}

fn owned_session(
    shared: &Shared,
    call: &mut CallRecord,
    caller: &Caller,
    input: &Value,
) -> Result<Arc<SessionEntry>, SsmError> {
    let id = input["SessionId"]
        .as_str()
        .ok_or_else(|| err("ValidationException", "1 validation error detected: Value null at 'sessionId' failed to satisfy constraint: Member must not be null"))?;
    call.session_id = Some(id.to_string());
    let session = shared.session(id).ok_or_else(|| {
        err(
            "DoesNotExistException",
            format!("Session Id {id} does not exist."),
        )
    })?;
    call.target = Some(session.target.clone());
    if session.owner_arn != caller.principal_arn {
        return Err(err(
            "AccessDeniedException",
            format!(
                "User: {} is not authorized to perform this operation on session {id}",
                caller.principal_arn
            ),
        ));
    }
    Ok(session)
}

fn resume_session(
    shared: &Shared,
    call: &mut CallRecord,
    caller: &Caller,
    input: &Value,
) -> Result<Value, SsmError> {
    let session = owned_session(shared, call, caller, input)?;
    let mut state = lock(&session.state);
    if state.terminated {
        return Err(err(
            "DoesNotExistException",
            format!("Session Id {} does not exist.", session.id),
        ));
    }
    state.token = new_token();
    state.token_issued = std::time::Instant::now();
    Ok(
        json!({"SessionId": session.id, "TokenValue": state.token, "StreamUrl": stream_url(shared, &session.id)}),
    )
}

async fn terminate_session(
    shared: &Shared,
    call: &mut CallRecord,
    caller: &Caller,
    input: &Value,
) -> Result<Value, SsmError> {
    let session = owned_session(shared, call, caller, input)?;
    let agent = {
        let mut state = lock(&session.state);
        state.terminated = true;
        state.agent.take()
    };
    if let Some(agent) = agent {
        let _ = agent.send(AgentEvent::Terminate).await;
    }
    Ok(json!({"SessionId": session.id}))
}

fn is_instance_id(id: &str) -> bool {
    let word = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match (id.strip_prefix("i-"), id.strip_prefix("mi-")) {
        (Some(rest), _) => (rest.len() == 8 || rest.len() == 17) && word(rest),
        (_, Some(rest)) => rest.len() == 17 && word(rest),
        _ => false,
    }
}

/// Keys of the legacy `InstanceInformationFilterList` (an enum in the service model).
const LEGACY_FILTER_KEYS: [&str; 8] = [
    "InstanceIds",
    "AgentVersion",
    "PingStatus",
    "PlatformTypes",
    "ActivationIds",
    "IamRole",
    "ResourceType",
    "AssociationStatus",
];

/// Keys of `Filters` besides `tag-key` and `tag:<name>` (the service model's documentation of
/// `InstanceInformationStringFilter.Key`).
const FILTER_KEYS: [&str; 10] = [
    "ActivationIds",
    "AgentVersion",
    "AssociationStatus",
    "IamRole",
    "InstanceIds",
    "PingStatus",
    "PlatformTypes",
    "ResourceType",
    "SourceIds",
    "SourceTypes",
];

/// `MaxResults` of DescribeInstanceInformation: the model's `MaxResultsEC2Compatible` range
/// and its documented default.
const MAX_RESULTS: std::ops::RangeInclusive<i64> = 5..=50;
const DEFAULT_MAX_RESULTS: i64 = 10;

/// A JSON 1.1 service's member-constraint refusal, worded as AWS words them.
fn validation_error(member: &str, value: &str, constraint: &str) -> SsmError {
    err(
        "ValidationException",
        format!(
            "1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: {constraint}"
        ),
    )
}

/// Filters of DescribeInstanceInformation, from either list form (not both: the API
/// reference says combining them raises an error).
fn filters(input: &Value) -> Result<Vec<(String, Vec<String>)>, SsmError> {
    let mut out = Vec::new();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let legacy = input["InstanceInformationFilterList"].as_array();
    let current = input["Filters"].as_array();
    if legacy.is_some_and(|l| !l.is_empty()) && current.is_some_and(|l| !l.is_empty()) {
        return Err(err(
            "InvalidInstanceInformationFilterValue",
            "InstanceInformationFilterList and Filters cannot be used together; use Filters.",
        ));
    }
    for f in legacy.into_iter().flatten() {
        let key = f["key"].as_str().unwrap_or_default().to_string();
        if !LEGACY_FILTER_KEYS.contains(&key.as_str()) {
            return Err(err(
                "InvalidFilterKey",
                format!("The filter key {key} is not valid."),
            ));
        }
        out.push((key, strings(&f["valueSet"])));
    }
    for f in current.into_iter().flatten() {
        let key = f["Key"].as_str().unwrap_or_default().to_string();
        let tag = key == "tag-key" || key.strip_prefix("tag:").is_some_and(|k| !k.is_empty());
        if !tag && !FILTER_KEYS.contains(&key.as_str()) {
            return Err(err(
                "InvalidFilterKey",
                format!("The filter key {key} is not valid."),
            ));
        }
        out.push((key, strings(&f["Values"])));
    }
    Ok(out)
}

/// The `NextToken` for a page starting at `offset`: opaque to the caller, refused when
/// altered or made up.
fn next_token(offset: usize) -> String {
    let check = &sigv4::sha256_hex(format!("sim-describe-page:{offset}").as_bytes())[..16];
    format!("{offset}.{check}")
}

fn page_offset(token: Option<&str>) -> Result<usize, SsmError> {
    let Some(token) = token else {
        return Ok(0);
    };
    token
        .split_once('.')
        .and_then(|(offset, _)| offset.parse::<usize>().ok())
        .filter(|offset| next_token(*offset) == token)
        .ok_or_else(|| err("InvalidNextToken", "The specified token isn't valid."))
}

fn describe_instances(shared: &Shared, input: &Value) -> Result<Value, SsmError> {
    let max_results = match &input["MaxResults"] {
        Value::Null => DEFAULT_MAX_RESULTS,
        v => match v.as_i64() {
            Some(n) if MAX_RESULTS.contains(&n) => n,
            Some(n) if n < *MAX_RESULTS.start() => {
                return Err(validation_error(
                    "maxResults",
                    &n.to_string(),
                    "Member must have value greater than or equal to 5",
                ));
            }
            _ => {
                return Err(validation_error(
                    "maxResults",
                    &v.to_string(),
                    "Member must have value less than or equal to 50",
                ));
            }
        },
    };
    let offset = page_offset(input["NextToken"].as_str())?;
    let filters = filters(input)?;
    for (key, values) in &filters {
        if key == "InstanceIds"
            && let Some(bad) = values.iter().find(|v| !is_instance_id(v))
        {
            return Err(err(
                "InvalidInstanceId",
                format!("Instance Id {bad} is not valid."),
            ));
        }
        if key == "PingStatus"
            && let Some(bad) = values
                .iter()
                .find(|v| !["Online", "ConnectionLost", "Inactive"].contains(&v.as_str()))
        {
            return Err(err(
                "InvalidInstanceInformationFilterValue",
                format!("PingStatus value {bad} is not valid."),
            ));
        }
    }
    let now = Utc::now().timestamp();
    let list: Vec<Value> = lock(&shared.instances)
        .values()
        .filter(|inst| {
            filters.iter().all(|(key, values)| match key.as_str() {
                "InstanceIds" => values.contains(&inst.id),
                "PingStatus" => values.iter().any(|v| v == inst.ping_status.as_str()),
                "PlatformTypes" => values.contains(&inst.platform),
                _ => true,
            })
        })
        .map(|inst| {
            json!({
                "InstanceId": inst.id,
                "PingStatus": inst.ping_status.as_str(),
                "LastPingDateTime": now,
                "AgentVersion": "3.3.1802.0",
                "IsLatestVersion": true,
                "PlatformType": inst.platform,
                "PlatformName": "Amazon Linux",
                "PlatformVersion": "2023",
                "ResourceType": "EC2Instance",
                "IPAddress": "10.0.1.23",
                "ComputerName": inst.name,
                "Name": inst.name,
                "SourceId": inst.id,
                "SourceType": "AWS::EC2::Instance",
            })
        })
        .collect();
    let size = usize::try_from(max_results).unwrap_or(10);
    let page: Vec<Value> = list.iter().skip(offset).take(size).cloned().collect();
    let mut answer = json!({"InstanceInformationList": page});
    if offset + size < list.len() {
        answer["NextToken"] = json!(next_token(offset + size));
    }
    Ok(answer)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;

    #[test]
    fn partial_iam_denies_only_the_listed_actions_with_awss_message() {
        let role = RoleConfig {
            deny_actions: vec!["ssm:TerminateSession".to_string()],
            ..RoleConfig::default()
        };
        assert!(action_allowed(Some(&role), "ssm:StartSession"));
        assert!(!action_allowed(Some(&role), "ssm:TerminateSession"));
        assert!(!action_allowed(None, "ssm:StartSession"));
        let config = SimConfig::default();
        let resource = resource_of(
            &config,
            "TerminateSession",
            &json!({"SessionId": "ns-alice-0abc"}),
        );
        assert_eq!(
            resource,
            "arn:aws:ssm:eu-west-1:123456789012:session/ns-alice-0abc"
        );
        assert_eq!(
            resource_of(&config, "StartSession", &json!({"Target": "i-1"})),
            "arn:aws:ec2:eu-west-1:123456789012:instance/i-1"
        );
        assert_eq!(
            resource_of(&config, "DescribeInstanceInformation", &json!({})),
            "arn:aws:ssm:eu-west-1:123456789012:*"
        );
        assert_eq!(
            document_arn(&config, "AWS-StartSSHSession"),
            "arn:aws:ssm:eu-west-1::document/AWS-StartSSHSession"
        );
        let e = not_authorized("arn:p", "ssm:TerminateSession", &resource);
        assert_eq!(e.code, "AccessDeniedException");
        assert_eq!(
            e.message,
            "User: arn:p is not authorized to perform: ssm:TerminateSession on resource: arn:aws:ssm:eu-west-1:123456789012:session/ns-alice-0abc because no identity-based policy allows the ssm:TerminateSession action"
        );
    }

    #[test]
    fn instance_id_pattern() {
        assert!(is_instance_id("i-0123456789abcdef0"));
        assert!(is_instance_id("i-01234567"));
        assert!(!is_instance_id("i-0123"));
        assert!(!is_instance_id("node-1"));
    }

    #[test]
    fn both_filter_lists_and_unknown_keys_are_refused() {
        let both = json!({
            "InstanceInformationFilterList": [{"key": "PingStatus", "valueSet": ["Online"]}],
            "Filters": [{"Key": "PingStatus", "Values": ["Online"]}],
        });
        assert_eq!(
            filters(&both).unwrap_err().code,
            "InvalidInstanceInformationFilterValue"
        );
        let unknown = json!({"Filters": [{"Key": "Colour", "Values": ["blue"]}]});
        assert_eq!(filters(&unknown).unwrap_err().code, "InvalidFilterKey");
        let tags = json!({"Filters": [
            {"Key": "tag:team", "Values": ["sre"]},
            {"Key": "tag-key", "Values": ["team"]},
        ]});
        assert_eq!(filters(&tags).unwrap().len(), 2);
        let empty_tag = json!({"Filters": [{"Key": "tag:", "Values": ["x"]}]});
        assert_eq!(filters(&empty_tag).unwrap_err().code, "InvalidFilterKey");
    }

    #[test]
    fn page_tokens_round_trip_and_made_up_ones_are_refused() {
        assert_eq!(page_offset(None).unwrap(), 0);
        assert_eq!(page_offset(Some(&next_token(20))).unwrap(), 20);
        for bogus in [
            "",
            "20",
            "20.0000000000000000",
            "abc.def",
            &next_token(20)[1..],
        ] {
            assert_eq!(
                page_offset(Some(bogus)).unwrap_err().code,
                "InvalidNextToken",
                "{bogus:?}"
            );
        }
    }

    #[test]
    fn filter_keys_are_checked() {
        assert!(
            filters(
                &json!({"InstanceInformationFilterList": [{"key": "Nope", "valueSet": ["x"]}]})
            )
            .is_err()
        );
        let f =
            filters(&json!({"Filters": [{"Key": "PingStatus", "Values": ["Online"]}]})).unwrap();
        assert_eq!(
            f,
            vec![("PingStatus".to_string(), vec!["Online".to_string()])]
        );
    }
}
