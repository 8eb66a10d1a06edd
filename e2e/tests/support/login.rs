//! The console's sign-in through the gateway as a browser does it, without a browser: follow
//! `/auth/login` to the simulator's issuer (picking a user), come back to `/auth/callback`
//! with the binding cookie, keep the session cookie, and call the API with it (same-origin
//! `Origin` and the CSRF header on writes). Also the issuer's public browser flow, which any
//! person can run on their own.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::http::{Answer, Opened};

/// A browser signed in to one gateway's console: its cookie and its origin.
#[derive(Clone, Debug)]
pub struct ConsoleBrowser {
    /// `http://127.0.0.1:PORT`, also the origin of the console's pages.
    pub base: String,
    /// `name=value` of the session cookie.
    pub cookie: String,
    http: reqwest::Client,
}

/// A client that follows no redirect (the test follows them) and trusts the shared
/// simulator's issuer, as a browser on a machine that trusts the issuer's CA does.
pub fn no_redirects() -> reqwest::Client {
    super::world::issuer_client()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// `name=value` of the cookie `name` among a response's `Set-Cookie` headers, and the whole
/// header.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(|c| {
            (
                c.split(';').next().unwrap_or_default().to_string(),
                c.to_string(),
            )
        })
}

/// The `Location` of a 302 answer; an error for any other.
pub fn location(response: &reqwest::Response) -> anyhow::Result<String> {
    anyhow::ensure!(
        response.status() == 302,
        "expected a 302, got {}",
        response.status()
    );
    Ok(response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow::anyhow!("302 without Location"))?
        .to_string())
}

/// Whether `text` holds something shaped like a JWT (three base64url parts, `eyJ…`).
pub fn holds_jwt(text: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .any(|word| {
            let parts: Vec<&str> = word.split('.').collect();
            word.starts_with("eyJ") && parts.len() == 3 && parts.iter().all(|p| !p.is_empty())
        })
}

impl ConsoleBrowser {
    /// Signs in to the console at `base` as `user` (the issuer's picker choice); returns the
    /// browser and the `Set-Cookie` header of the session cookie.
    pub async fn sign_in(base: &str, user: &str) -> anyhow::Result<(Self, String)> {
        let http = no_redirects();
        let login = http.get(format!("{base}/auth/login")).send().await?;
        let (binding, _) = set_cookie(&login, "nodeshell-login")
            .ok_or_else(|| anyhow::anyhow!("/auth/login set no binding cookie"))?;
        let authorize = format!("{}&sim_user={user}", location(&login)?);
        let back = location(&http.get(&authorize).send().await?)?;
        anyhow::ensure!(
            back.starts_with(&format!("{base}/auth/callback?")),
            "the issuer sent the browser to {back}"
        );
        let callback = http.get(&back).header("cookie", &binding).send().await?;
        let status = callback.status();
        let (cookie, header) = set_cookie(&callback, "nodeshell-session").ok_or_else(|| {
            anyhow::anyhow!("/auth/callback answered {status} without a session cookie")
        })?;
        anyhow::ensure!(
            location(&callback)? == "/?signed-in=1",
            "callback went elsewhere"
        );
        Ok((
            Self {
                base: base.to_string(),
                cookie,
                http,
            },
            header,
        ))
    }

    /// A request with the cookie; writes also carry the console's Origin and CSRF header
    /// unless `csrf` is false.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        csrf: bool,
    ) -> anyhow::Result<Answer> {
        let write = method != reqwest::Method::GET;
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("cookie", &self.cookie);
        if write && csrf {
            req = req
                .header("origin", &self.base)
                .header("x-nodeshell-csrf", "1");
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let raw = resp.bytes().await?.to_vec();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Ok(Answer { status, body, raw })
    }

    /// GET with the cookie.
    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.request(reqwest::Method::GET, path, None, true).await
    }

    /// Opens a shell on `node` as the console does; expects 201.
    pub async fn open_ok(&self, node: &str) -> anyhow::Result<Opened> {
        let answer = self
            .request(
                reqwest::Method::POST,
                &format!("/api/v1/nodes/{node}/shell"),
                Some(serde_json::json!({"cols": 100, "rows": 30})),
                true,
            )
            .await?;
        anyhow::ensure!(
            answer.status == 201,
            "open shell on {node}: HTTP {} {}",
            answer.status,
            String::from_utf8_lossy(&answer.raw)
        );
        Opened::from_body(&self.base, &answer.body)
    }

    /// Signs out.
    pub async fn logout(&self) -> anyhow::Result<Answer> {
        self.request(reqwest::Method::POST, "/auth/logout", None, true)
            .await
    }
}

/// The issuer's public browser flow (PKCE, no secret) as anyone can run it for `client_id`:
/// the token endpoint's JSON answer, or its refusal.
pub async fn public_flow(issuer: &str, client_id: &str, user: &str) -> anyhow::Result<Answer> {
    let http = no_redirects();
    let verifier = "a-verifier-of-forty-three-characters-at-least-0123";
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let redirect = "http://127.0.0.1:9/callback";
    let mut url = url::Url::parse(&format!("{issuer}/authorize"))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", "openid")
        .append_pair("state", "s")
        .append_pair("nonce", "n")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("sim_user", user);
    let back = location(&http.get(url.as_str()).send().await?)?;
    let query: HashMap<String, String> =
        url::Url::parse(&back)?.query_pairs().into_owned().collect();
    let code = query
        .get("code")
        .ok_or_else(|| anyhow::anyhow!("no code in {back}"))?;
    let resp = http
        .post(format!("{issuer}/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect),
            ("client_id", client_id),
            ("code_verifier", verifier),
        ])
        .send()
        .await?;
    let status = resp.status().as_u16();
    let raw = resp.bytes().await?.to_vec();
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    Ok(Answer { status, body, raw })
}

/// `sts:AssumeRoleWithWebIdentity` (unsigned) at `sts` with `token`: status and body.
pub async fn assume_role(sts: &str, role_arn: &str, token: &str) -> anyhow::Result<(u16, String)> {
    let resp = reqwest::Client::new()
        .post(sts)
        .form(&[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", role_arn),
            ("RoleSessionName", "chosen-by-me"),
            ("WebIdentityToken", token),
        ])
        .send()
        .await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}
