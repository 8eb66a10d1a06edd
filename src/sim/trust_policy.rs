//! IAM role trust policies as pure functions: a JSON policy document parsed into statements,
//! and evaluated against one `AssumeRoleWithWebIdentity` request the way IAM does (an explicit
//! `Deny` wins, otherwise an `Allow` must match, otherwise the request is implicitly denied).
//!
//! Sources (IAM user guide, `awsdocs/iam-user-guide`): "IAM JSON policy elements: Condition
//! operators" (string operators, `…IfExists`, `Null`, an absent key is false except for the
//! negated operators, where it is true), "Multivalued context keys" (`ForAnyValue`,
//! `ForAllValues`), "IAM policy elements: Variables and tags" (`${key}`, `${key, 'default'}`,
//! `${*}`/`${?}`/`${$}`, variables only under `Version` `2012-10-17`), "Policy evaluation
//! logic", and "IAM and AWS STS condition context keys" (`<provider>:aud`, `<provider>:sub`,
//! `sts:RoleSessionName`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// The only policy language version in which `${…}` is a variable.
const VARIABLES_VERSION: &str = "2012-10-17";

/// Why a policy document is refused (IAM answers `MalformedPolicyDocument`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed trust policy: {0}")]
pub struct PolicyError(pub String);

fn malformed(message: impl Into<String>) -> PolicyError {
    PolicyError(message.into())
}

/// `Allow` or `Deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Allow,
    Deny,
}

/// Who a statement names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Principals {
    /// `"*"` or `{"AWS": "*"}`.
    Anyone,
    /// The `Federated` entries (other principal types never match a web identity).
    Federated(Vec<String>),
}

/// The string comparison behind an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Equals,
    EqualsIgnoreCase,
    Like,
}

/// How the request's values of a key are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetQualifier {
    Single,
    ForAnyValue,
    ForAllValues,
}

/// One condition operator as written, e.g. `ForAnyValue:StringNotLikeIfExists`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Strings {
        comparison: Comparison,
        negated: bool,
        set: SetQualifier,
        if_exists: bool,
    },
    Null,
}

/// One `operator: {key: values}` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    operator: Operator,
    key: String,
    values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    effect: Effect,
    principals: Principals,
    /// The `Action` list, or with `not_action` the `NotAction` list.
    actions: Vec<String>,
    not_action: bool,
    conditions: Vec<Condition>,
}

/// A parsed trust policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustPolicy {
    variables: bool,
    statements: Vec<Statement>,
}

/// What a request presents to the trust policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustRequest {
    /// The federated principal: `arn:aws:iam::<account>:oidc-provider/<provider>`.
    pub principal: String,
    /// The action, `sts:AssumeRoleWithWebIdentity`.
    pub action: String,
    /// Condition context keys (names compared without case) and their values.
    pub context: BTreeMap<String, Vec<String>>,
}

/// The outcome of evaluating a trust policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustDecision {
    /// An `Allow` statement matched and no `Deny` did.
    Allowed,
    /// A `Deny` statement matched.
    ExplicitDeny,
    /// Nothing allowed the request.
    ImplicitDeny,
}

/// The provider name IAM uses in condition keys and the provider ARN: the issuer URL without
/// its scheme (and without a trailing `/`).
pub fn provider_name(issuer_url: &str) -> String {
    issuer_url
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// The ARN of the account's OIDC provider for an issuer.
pub fn provider_arn(account_id: &str, issuer_url: &str) -> String {
    format!(
        "arn:aws:iam::{account_id}:oidc-provider/{}",
        provider_name(issuer_url)
    )
}

/// The request context of one `AssumeRoleWithWebIdentity` call: `<provider>:aud`,
/// `<provider>:sub` and `sts:RoleSessionName`.
pub fn web_identity_request(
    account_id: &str,
    issuer_url: &str,
    audience: &str,
    subject: &str,
    role_session_name: &str,
) -> TrustRequest {
    let provider = provider_name(issuer_url);
    let context = BTreeMap::from([
        (format!("{provider}:aud"), vec![audience.to_string()]),
        (format!("{provider}:sub"), vec![subject.to_string()]),
        (
            "sts:RoleSessionName".to_string(),
            vec![role_session_name.to_string()],
        ),
    ]);
    TrustRequest {
        principal: provider_arn(account_id, issuer_url),
        action: "sts:AssumeRoleWithWebIdentity".to_string(),
        context: context
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
    }
}

/// The policy a simple role configuration stands for: allow the account's provider for this
/// issuer when `aud` equals `audience` and, with a list, `sub` is one of `subs`.
pub fn simple_policy(
    account_id: &str,
    issuer_url: &str,
    audience: &str,
    subs: Option<&[String]>,
) -> Value {
    let provider = provider_name(issuer_url);
    let mut equals = serde_json::Map::new();
    equals.insert(format!("{provider}:aud"), json!(audience));
    if let Some(subs) = subs {
        equals.insert(format!("{provider}:sub"), json!(subs));
    }
    json!({
        "Version": VARIABLES_VERSION,
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": provider_arn(account_id, issuer_url)},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": equals},
        }],
    })
}

// === impl TrustPolicy ===

impl TrustPolicy {
    /// Parses a policy document (a JSON object, or a string holding one). Elements the
    /// simulator does not evaluate (`NotPrincipal`, non-string operators) are refused rather
    /// than ignored, so a policy never means less here than in IAM.
    pub fn parse(document: &Value) -> Result<Self, PolicyError> {
        let parsed;
        let document = match document {
            Value::String(text) => {
                parsed = serde_json::from_str::<Value>(text)
                    .map_err(|e| malformed(format!("not JSON: {e}")))?;
                &parsed
            }
            other => other,
        };
        let doc = document
            .as_object()
            .ok_or_else(|| malformed("the document is not a JSON object"))?;
        for key in doc.keys() {
            if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
                return Err(malformed(format!("unknown element {key:?}")));
            }
        }
        let version = doc.get("Version").and_then(Value::as_str);
        if let Some(v) = version
            && v != VARIABLES_VERSION
            && v != "2008-10-17"
        {
            return Err(malformed(format!("unknown Version {v:?}")));
        }
        let statements = match doc.get("Statement") {
            Some(Value::Array(list)) => list.iter().map(parse_statement).collect(),
            Some(one @ Value::Object(_)) => vec![parse_statement(one)].into_iter().collect(),
            _ => Err(malformed(
                "Statement must be an object or a list of objects",
            )),
        }?;
        Ok(Self {
            variables: version == Some(VARIABLES_VERSION),
            statements,
        })
    }

    /// Evaluates the request: an explicit `Deny` wins, otherwise one matching `Allow` is
    /// needed.
    pub fn evaluate(&self, request: &TrustRequest) -> TrustDecision {
        let mut allowed = false;
        for statement in &self.statements {
            if !self.matches(statement, request) {
                continue;
            }
            match statement.effect {
                Effect::Deny => return TrustDecision::ExplicitDeny,
                Effect::Allow => allowed = true,
            }
        }
        if allowed {
            TrustDecision::Allowed
        } else {
            TrustDecision::ImplicitDeny
        }
    }

    fn matches(&self, statement: &Statement, request: &TrustRequest) -> bool {
        let principal = match &statement.principals {
            Principals::Anyone => true,
            Principals::Federated(list) => list.iter().any(|p| p == &request.principal),
        };
        let named = statement
            .actions
            .iter()
            .any(|a| glob_ignore_case(a, &request.action));
        principal
            && named != statement.not_action
            && statement
                .conditions
                .iter()
                .all(|c| self.condition_holds(c, &request.context))
    }

    fn condition_holds(
        &self,
        condition: &Condition,
        context: &BTreeMap<String, Vec<String>>,
    ) -> bool {
        // A key present with only empty values counts as absent.
        let present = context
            .get(&condition.key.to_ascii_lowercase())
            .filter(|values| values.iter().any(|v| !v.is_empty()));
        let Operator::Strings {
            comparison,
            negated,
            set,
            if_exists,
        } = condition.operator
        else {
            // Null: "true" asks for the key to be absent, "false" for it to be present.
            return condition
                .values
                .iter()
                .any(|v| v.eq_ignore_ascii_case("true") == present.is_none());
        };
        let Some(values) = present else {
            return if_exists
                || match set {
                    SetQualifier::Single => negated,
                    SetQualifier::ForAnyValue => false,
                    SetQualifier::ForAllValues => true,
                };
        };
        let patterns: Vec<Option<Vec<Token>>> = condition
            .values
            .iter()
            .map(|v| self.pattern(v, comparison, context))
            .collect();
        let matches_any = |value: &str| {
            patterns
                .iter()
                .flatten()
                .any(|p| token_match(p, value, comparison))
        };
        // A negated operator holds for a value that matches none of the policy's values.
        let holds = |value: &str| matches_any(value) != negated;
        match set {
            SetQualifier::Single | SetQualifier::ForAnyValue => values.iter().any(|v| holds(v)),
            SetQualifier::ForAllValues => values.iter().all(|v| holds(v)),
        }
    }

    /// A policy value as literal and wildcard tokens, with `${…}` variables resolved from the
    /// request (a variable's value is always literal); `None` when a variable has no value and
    /// no default, so that value matches nothing.
    fn pattern(
        &self,
        value: &str,
        comparison: Comparison,
        context: &BTreeMap<String, Vec<String>>,
    ) -> Option<Vec<Token>> {
        let mut tokens = Vec::new();
        let mut rest = value;
        while !rest.is_empty() {
            if self.variables
                && let Some(inner) = rest.strip_prefix("${")
                && let Some(end) = inner.find('}')
            {
                let body = inner.get(..end).unwrap_or_default();
                tokens.push(Token::Literal(resolve(body, context)?));
                rest = inner.get(end + 1..).unwrap_or_default();
                continue;
            }
            let mut chars = rest.chars();
            let c = chars.next().unwrap_or_default();
            tokens.push(match c {
                '*' if comparison == Comparison::Like => Token::AnyRun,
                '?' if comparison == Comparison::Like => Token::AnyOne,
                c => Token::Literal(c.to_string()),
            });
            rest = chars.as_str();
        }
        Some(tokens)
    }
}

/// The value of `${body}`: a context key, `key, 'default'`, or one of `*`, `?`, `$`.
fn resolve(body: &str, context: &BTreeMap<String, Vec<String>>) -> Option<String> {
    let (key, default) = match body.split_once(',') {
        Some((key, default)) => {
            let default = default.trim();
            let default = default
                .strip_prefix('\'')
                .and_then(|d| d.strip_suffix('\''))
                .unwrap_or(default);
            (key.trim(), Some(default.to_string()))
        }
        None => (body.trim(), None),
    };
    if matches!(key, "*" | "?" | "$") {
        return Some(key.to_string());
    }
    context
        .get(&key.to_ascii_lowercase())
        .and_then(|values| match values.as_slice() {
            [one] if !one.is_empty() => Some(one.clone()),
            _ => None,
        })
        .or(default)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    AnyRun,
    AnyOne,
}

fn token_match(pattern: &[Token], value: &str, comparison: Comparison) -> bool {
    match comparison {
        Comparison::Equals | Comparison::Like => wildcard_match(pattern, value, false),
        Comparison::EqualsIgnoreCase => wildcard_match(pattern, value, true),
    }
}

/// Matches `value` against tokens: literals exactly (or without case), `*` any run, `?` one
/// character.
fn wildcard_match(pattern: &[Token], value: &str, ignore_case: bool) -> bool {
    let mut expanded: Vec<Option<char>> = Vec::new();
    let mut any_run = Vec::new();
    for token in pattern {
        match token {
            Token::Literal(text) => {
                for c in text.chars() {
                    expanded.push(Some(c));
                    any_run.push(false);
                }
            }
            Token::AnyOne => {
                expanded.push(None);
                any_run.push(false);
            }
            Token::AnyRun => {
                expanded.push(None);
                any_run.push(true);
            }
        }
    }
    let value: Vec<char> = value.chars().collect();
    let same = |a: char, b: char| {
        if ignore_case {
            a.to_lowercase().eq(b.to_lowercase())
        } else {
            a == b
        }
    };
    // reachable[j]: the pattern so far can consume exactly value[..j].
    let mut reachable = vec![false; value.len() + 1];
    reachable[0] = true;
    for (slot, run) in expanded.iter().zip(&any_run) {
        let mut next = vec![false; value.len() + 1];
        for j in 0..=value.len() {
            if !reachable[j] {
                continue;
            }
            if *run {
                next[j..].iter_mut().for_each(|n| *n = true);
                break;
            }
            if let Some(&v) = value.get(j) {
                next[j + 1] |= slot.is_none_or(|c| same(c, v));
            }
        }
        reachable = next;
    }
    reachable[value.len()]
}

/// Action names compare without case and take `*` and `?` wildcards.
fn glob_ignore_case(pattern: &str, value: &str) -> bool {
    let tokens: Vec<Token> = pattern
        .chars()
        .map(|c| match c {
            '*' => Token::AnyRun,
            '?' => Token::AnyOne,
            c => Token::Literal(c.to_string()),
        })
        .collect();
    wildcard_match(&tokens, value, true)
}

fn string_list(value: &Value, what: &str) -> Result<Vec<String>, PolicyError> {
    match value {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(list) => list
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Bool(b) => Ok(b.to_string()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(malformed(format!("{what} must hold strings"))),
            })
            .collect(),
        Value::Bool(b) => Ok(vec![b.to_string()]),
        Value::Number(n) => Ok(vec![n.to_string()]),
        _ => Err(malformed(format!("{what} must be a string or a list"))),
    }
}

fn parse_statement(value: &Value) -> Result<Statement, PolicyError> {
    let s = value
        .as_object()
        .ok_or_else(|| malformed("a statement is not an object"))?;
    for key in s.keys() {
        match key.as_str() {
            "Sid" | "Effect" | "Principal" | "Action" | "NotAction" | "Condition" => {}
            "Resource" | "NotResource" => {
                return Err(malformed(format!(
                    "a trust policy has no {key} (the role is the resource)"
                )));
            }
            other => {
                return Err(malformed(format!(
                    "the simulator does not evaluate {other:?} in a statement"
                )));
            }
        }
    }
    let effect = match s.get("Effect").and_then(Value::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        other => {
            return Err(malformed(format!(
                "Effect must be Allow or Deny, not {other:?}"
            )));
        }
    };
    let principals = match s.get("Principal") {
        Some(Value::String(star)) if star == "*" => Principals::Anyone,
        Some(Value::Object(map)) => {
            if map.get("AWS").and_then(Value::as_str) == Some("*") {
                Principals::Anyone
            } else {
                let federated = match map.get("Federated") {
                    Some(v) => string_list(v, "Principal.Federated")?,
                    None => Vec::new(),
                };
                Principals::Federated(federated)
            }
        }
        _ => return Err(malformed("a trust policy statement needs a Principal")),
    };
    let (actions, not_action) = match (s.get("Action"), s.get("NotAction")) {
        (Some(a), None) => (string_list(a, "Action")?, false),
        (None, Some(a)) => (string_list(a, "NotAction")?, true),
        _ => {
            return Err(malformed(
                "a statement needs exactly one of Action and NotAction",
            ));
        }
    };
    let mut conditions = Vec::new();
    if let Some(block) = s.get("Condition") {
        let block = block
            .as_object()
            .ok_or_else(|| malformed("Condition must be an object"))?;
        for (name, keys) in block {
            let operator = parse_operator(name)?;
            let keys = keys
                .as_object()
                .ok_or_else(|| malformed(format!("{name} must map keys to values")))?;
            for (key, values) in keys {
                conditions.push(Condition {
                    operator,
                    key: key.clone(),
                    values: string_list(values, key)?,
                });
            }
        }
    }
    Ok(Statement {
        effect,
        principals,
        actions,
        not_action,
        conditions,
    })
}

fn parse_operator(name: &str) -> Result<Operator, PolicyError> {
    let (set, rest) = if let Some(rest) = name.strip_prefix("ForAnyValue:") {
        (SetQualifier::ForAnyValue, rest)
    } else if let Some(rest) = name.strip_prefix("ForAllValues:") {
        (SetQualifier::ForAllValues, rest)
    } else {
        (SetQualifier::Single, name)
    };
    if rest == "Null" && set == SetQualifier::Single {
        return Ok(Operator::Null);
    }
    let (base, if_exists) = match rest.strip_suffix("IfExists") {
        Some(base) => (base, true),
        None => (rest, false),
    };
    let (comparison, negated) = match base {
        "StringEquals" => (Comparison::Equals, false),
        "StringNotEquals" => (Comparison::Equals, true),
        "StringEqualsIgnoreCase" => (Comparison::EqualsIgnoreCase, false),
        "StringNotEqualsIgnoreCase" => (Comparison::EqualsIgnoreCase, true),
        "StringLike" => (Comparison::Like, false),
        "StringNotLike" => (Comparison::Like, true),
        _ => {
            return Err(malformed(format!(
                "the simulator evaluates only string operators and Null, not {name:?}"
            )));
        }
    };
    Ok(Operator::Strings {
        comparison,
        negated,
        set,
        if_exists,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use super::*;

    const ACCOUNT: &str = "123456789012";
    const ISSUER: &str = "https://idp.example.com/realms/ops";
    const P: &str = "idp.example.com/realms/ops";

    fn request(aud: &str, sub: &str, session: &str) -> TrustRequest {
        web_identity_request(ACCOUNT, ISSUER, aud, sub, session)
    }

    fn policy(doc: Value) -> TrustPolicy {
        TrustPolicy::parse(&doc).unwrap()
    }

    /// The policy docs/setup.md recommends: aud = the gateway's confidential client, the
    /// session name bound to `nodeshell-${sub}`.
    fn recommended() -> TrustPolicy {
        policy(json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Federated": format!("arn:aws:iam::{ACCOUNT}:oidc-provider/{P}")},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        format!("{P}:aud"): "nodeshell-gateway",
                        "sts:RoleSessionName": format!("nodeshell-${{{P}:sub}}"),
                    },
                },
            }],
        }))
    }

    #[test]
    fn provider_names_drop_the_scheme() {
        assert_eq!(provider_name("https://idp.example.com/"), "idp.example.com");
        assert_eq!(provider_name("http://127.0.0.1:4000"), "127.0.0.1:4000");
        assert_eq!(
            provider_arn(ACCOUNT, ISSUER),
            format!("arn:aws:iam::{ACCOUNT}:oidc-provider/{P}")
        );
    }

    #[test]
    fn the_recommended_policy_binds_aud_and_the_session_name() {
        let p = recommended();
        let ok = request("nodeshell-gateway", "alice", "nodeshell-alice");
        assert_eq!(p.evaluate(&ok), TrustDecision::Allowed);
        let wrong_aud = request("nodeshell-console", "alice", "nodeshell-alice");
        assert_eq!(p.evaluate(&wrong_aud), TrustDecision::ImplicitDeny);
        let other_name = request("nodeshell-gateway", "alice", "nodeshell-bob");
        assert_eq!(p.evaluate(&other_name), TrustDecision::ImplicitDeny);
        let no_prefix = request("nodeshell-gateway", "alice", "alice");
        assert_eq!(p.evaluate(&no_prefix), TrustDecision::ImplicitDeny);
        let mut foreign = ok.clone();
        foreign.principal = format!("arn:aws:iam::{ACCOUNT}:oidc-provider/other.example.com");
        assert_eq!(p.evaluate(&foreign), TrustDecision::ImplicitDeny);
        let mut other_action = ok;
        other_action.action = "sts:AssumeRole".into();
        assert_eq!(p.evaluate(&other_action), TrustDecision::ImplicitDeny);
    }

    #[test]
    fn an_explicit_deny_wins_over_an_allow() {
        let p = policy(json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": "*", "Action": "sts:*"},
                {"Effect": "Deny", "Principal": {"Federated": provider_arn(ACCOUNT, ISSUER)},
                 "Action": "sts:AssumeRoleWithWebIdentity",
                 "Condition": {"StringLike": {format!("{P}:sub"): "contractor-*"}}},
            ],
        }));
        assert_eq!(
            p.evaluate(&request("a", "alice", "n-alice")),
            TrustDecision::Allowed
        );
        assert_eq!(
            p.evaluate(&request("a", "contractor-7", "n-c")),
            TrustDecision::ExplicitDeny
        );
    }

    #[test]
    fn string_operators_values_and_absent_keys() {
        let p = |cond: Value| {
            policy(json!({
                "Version": "2012-10-17",
                "Statement": {"Effect": "Allow", "Principal": "*",
                              "Action": "sts:AssumeRoleWithWebIdentity", "Condition": cond},
            }))
        };
        let r = request("gw", "auth0|Alice", "ns-x");
        let allowed = |cond: Value| p(cond).evaluate(&r) == TrustDecision::Allowed;
        let sub = format!("{P}:sub");
        // Several values: any one matches. Several keys: all must hold.
        assert!(allowed(
            json!({"StringEquals": {&sub: ["bob", "auth0|Alice"]}})
        ));
        assert!(!allowed(
            json!({"StringEquals": {&sub: "auth0|Alice", format!("{P}:aud"): "other"}})
        ));
        assert!(!allowed(json!({"StringEquals": {&sub: "auth0|alice"}})));
        assert!(allowed(
            json!({"StringEqualsIgnoreCase": {&sub: "AUTH0|alice"}})
        ));
        assert!(allowed(json!({"StringLike": {&sub: "auth0|*"}})));
        assert!(allowed(json!({"StringLike": {&sub: "auth0|?lice"}})));
        assert!(!allowed(json!({"StringLike": {&sub: "auth0|?"}})));
        assert!(!allowed(json!({"StringEquals": {&sub: "auth0|*"}})));
        assert!(allowed(
            json!({"StringNotEquals": {&sub: ["bob", "carol"]}})
        ));
        assert!(!allowed(
            json!({"StringNotLike": {&sub: ["bob", "auth0|*"]}})
        ));
        // Condition keys compare without case; values do not.
        assert!(allowed(
            json!({"StringEquals": {sub.to_uppercase(): "auth0|Alice"}})
        ));
        // An absent key: false, except negated operators, IfExists and ForAllValues.
        assert!(!allowed(json!({"StringEquals": {"sts:ExternalId": "x"}})));
        assert!(allowed(json!({"StringNotEquals": {"sts:ExternalId": "x"}})));
        assert!(allowed(
            json!({"StringEqualsIfExists": {"sts:ExternalId": "x"}})
        ));
        assert!(!allowed(
            json!({"ForAnyValue:StringLike": {"sts:ExternalId": "*"}})
        ));
        assert!(allowed(
            json!({"ForAllValues:StringLike": {"sts:ExternalId": "x"}})
        ));
        assert!(allowed(json!({"Null": {"sts:ExternalId": "true"}})));
        assert!(!allowed(json!({"Null": {&sub: "true"}})));
        // Set operators over the request's values.
        assert!(allowed(
            json!({"ForAnyValue:StringLike": {format!("{P}:aud"): ["x", "g*"]}})
        ));
        assert!(!allowed(
            json!({"ForAnyValue:StringLike": {format!("{P}:aud"): "x*"}})
        ));
    }

    #[test]
    fn policy_variables_resolve_from_the_request_under_2012_10_17_only() {
        let doc = |version: &str, value: &str| {
            json!({
                "Version": version,
                "Statement": {"Effect": "Allow", "Principal": "*",
                              "Action": "sts:AssumeRoleWithWebIdentity",
                              "Condition": {"StringLike": {"sts:RoleSessionName": value}}},
            })
        };
        let allowed = |version: &str, value: &str, r: &TrustRequest| {
            policy(doc(version, value)).evaluate(r) == TrustDecision::Allowed
        };
        let var = format!("ns-${{{P}:sub}}");
        let r = request("gw", "alice", "ns-alice");
        assert!(allowed("2012-10-17", &var, &r));
        assert!(!allowed("2008-10-17", &var, &r));
        assert!(!allowed(
            "2012-10-17",
            &var,
            &request("gw", "bob", "ns-alice")
        ));
        // A variable's value is literal, never a wildcard.
        assert!(!allowed(
            "2012-10-17",
            &var,
            &request("gw", "*", "ns-alice")
        ));
        assert!(allowed("2012-10-17", &var, &request("gw", "*", "ns-*")));
        // `${*}` is a literal asterisk; a missing key falls back to its default or matches
        // nothing.
        assert!(!allowed("2012-10-17", "ns-${*}", &r));
        assert!(allowed("2012-10-17", "ns-${sts:ExternalId, 'alice'}", &r));
        assert!(!allowed("2012-10-17", "ns-${sts:ExternalId}", &r));
    }

    #[test]
    fn the_simple_role_config_is_the_policy_it_stands_for() {
        let subs = vec!["alice".to_string()];
        let p = policy(simple_policy(ACCOUNT, ISSUER, "nodeshell", Some(&subs)));
        assert_eq!(
            p.evaluate(&request("nodeshell", "alice", "any-name")),
            TrustDecision::Allowed
        );
        assert_eq!(
            p.evaluate(&request("nodeshell", "mallory", "any-name")),
            TrustDecision::ImplicitDeny
        );
        assert_eq!(
            p.evaluate(&request("other", "alice", "any-name")),
            TrustDecision::ImplicitDeny
        );
        let any_sub = policy(simple_policy(ACCOUNT, ISSUER, "nodeshell", None));
        assert_eq!(
            any_sub.evaluate(&request("nodeshell", "mallory", "x1")),
            TrustDecision::Allowed
        );
    }

    #[test]
    fn malformed_documents_are_refused() {
        let bad = [
            json!([]),
            json!({"Statement": {"Effect": "Maybe", "Principal": "*", "Action": "*"}}),
            json!({"Statement": {"Effect": "Allow", "Action": "*"}}),
            json!({"Statement": {"Effect": "Allow", "Principal": "*"}}),
            json!({"Statement": {"Effect": "Allow", "Principal": "*", "Action": "*",
                                 "Resource": "*"}}),
            json!({"Statement": {"Effect": "Allow", "NotPrincipal": {"AWS": "x"},
                                 "Action": "*"}}),
            json!({"Statement": {"Effect": "Allow", "Principal": "*", "Action": "*",
                                 "Condition": {"NumericLessThan": {"a": "1"}}}}),
            json!({"Version": "2020-01-01", "Statement": []}),
            json!("{not json"),
        ];
        for doc in bad {
            assert!(TrustPolicy::parse(&doc).is_err(), "{doc}");
        }
        // The same document as JSON text parses.
        let text = json!(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"sts:AssumeRoleWithWebIdentity"}]}"#
        );
        assert_eq!(
            TrustPolicy::parse(&text)
                .unwrap()
                .evaluate(&request("a", "b", "cd")),
            TrustDecision::Allowed
        );
    }
}
