//! The console signs in through the gateway (backend-for-frontend): the gateway is the
//! issuer's confidential client, the browser holds only an HttpOnly cookie, and no token a
//! person can obtain on their own (the issuer's public browser flow, anything the console's
//! pages can read) is accepted by STS under the role's trust policy, while the gateway's own
//! exchange opens a shell.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

const PROMPT_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn the_console_signs_in_through_the_gateway_and_opens_a_shell_with_its_cookie()
-> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let scope = world.scope("bff-open", 1, json!({})).await?;
    let gw = world
        .start_console_gateway("gw-bff-open", json!({}))
        .await?;
    let user = CONSOLE_USERS[0];
    let (browser, set_cookie) = ConsoleBrowser::sign_in(&gw.base, user).await?;
    // The cookie: HttpOnly, SameSite=Strict, Path=/; plain http here, so no Secure.
    for attribute in ["; HttpOnly", "; SameSite=Strict", "; Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(
        !holds_jwt(&set_cookie),
        "no token in the cookie: {set_cookie}"
    );

    let who = browser.get("/api/v1/whoami").await?;
    assert_eq!(who.status, 200, "{}", who.body);
    assert_eq!(who.body["sub"], user);
    assert_eq!(who.body["tier"], "engineer");
    let nodes = browser.get("/api/v1/nodes").await?;
    assert_eq!(nodes.status, 200, "{}", nodes.body);

    // A write without the CSRF header, or from another origin, is refused and opens nothing.
    let path = format!("/api/v1/nodes/{}/shell", scope.nodes[0]);
    let refused = browser
        .request(reqwest::Method::POST, &path, Some(json!({})), false)
        .await?;
    assert_eq!(
        (refused.status, refused.code()),
        (403, "E_CSRF"),
        "{}",
        refused.body
    );
    let forged = reqwest::Client::new()
        .post(format!("{}{path}", gw.base))
        .header("cookie", &browser.cookie)
        .header("origin", "https://evil.example")
        .header("x-nodeshell-csrf", "1")
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(forged.status(), 403);
    assert!(
        world.sessions_of(&scope.policy).await?.is_empty(),
        "nothing opened"
    );

    // The console's own page opens a shell; the gateway exchanges the id_token it keeps.
    let opened = browser.open_ok(&scope.nodes[0]).await?;
    assert!(!holds_jwt(&opened.body.to_string()), "{}", opened.body);
    let mut term = Terminal::connect(&opened.attach_url).await?;
    term.hello().await?;
    term.expect_output("$ ", PROMPT_TIMEOUT).await?;
    let out = term
        .run("echo through-the-$((6*7))-door", PROMPT_TIMEOUT)
        .await?;
    assert!(out.contains("through-the-42-door"), "{out}");
    let session = world.session(&opened.session).await?.unwrap_or_default();
    assert_eq!(session["spec"]["user"]["sub"], user);
    term.send_input(b"exit\n").await?;
    let closed = world.wait_closed(&opened.session, PROMPT_TIMEOUT).await?;
    assert_eq!(closed["status"]["reason"], "UserExit", "{closed}");

    // Everything the console's pages read stays free of tokens.
    for path in [
        "/api/v1/whoami",
        "/api/v1/nodes",
        "/api/v1/sessions",
        "/console/config.json",
    ] {
        let answer = browser.get(path).await?;
        let text = String::from_utf8_lossy(&answer.raw);
        assert!(!holds_jwt(&text), "{path} shows a token: {text}");
    }

    // Signing out ends the cookie's session.
    let out = browser.logout().await?;
    assert_eq!(out.status, 204, "{}", out.body);
    let after = browser.get("/api/v1/whoami").await?;
    assert_eq!(
        (after.status, after.code()),
        (401, "E_REAUTH_REQUIRED"),
        "{}",
        after.body
    );
    world.cleanup(&scope).await
}

#[tokio::test]
async fn tokens_a_person_can_get_on_their_own_are_refused_by_sts() -> anyhow::Result<()> {
    let world = GatewayWorld::shared().await?;
    let urls = world.sim.urls();
    let role = world.sim.default_role_arn();
    let user = CONSOLE_USERS[1];

    // The issuer's public browser flow: a token for the public client, which STS refuses
    // because the role trusts only the gateway's confidential client.
    let public = public_flow(&urls.issuer, PUBLIC_CLIENT, user).await?;
    assert_eq!(public.status, 200, "{}", public.body);
    let token = public.body["id_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(holds_jwt(&token));
    let (status, body) = assume_role(&urls.sts, &role, &token).await?;
    // The provider knows the client, the role's trust policy does not accept its audience.
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");
    assert!(!body.contains("AccessKeyId"), "{body}");
    assert!(
        public.body["refresh_token"].is_null(),
        "public clients get no refresh token"
    );

    // The same flow naming the gateway's client gets no token without its secret.
    let confidential = public_flow(&urls.issuer, "nodeshell", user).await?;
    assert_eq!(confidential.status, 401, "{}", confidential.body);
    assert_eq!(confidential.body["error"], "invalid_client");

    // What the browser holds after signing in through the gateway (its cookie) is no token.
    let gw = world.start_console_gateway("gw-bff-sts", json!({})).await?;
    let (browser, _) = ConsoleBrowser::sign_in(&gw.base, user).await?;
    let cookie_value = browser
        .cookie
        .split_once('=')
        .map(|(_, v)| v)
        .unwrap_or_default();
    let (status, body) = assume_role(&urls.sts, &role, cookie_value).await?;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("InvalidIdentityToken"), "{body}");

    // The gateway's own exchange works: a preflight's AssumeRole gate passes for this person.
    let scope = world.scope("bff-sts", 1, json!({})).await?;
    let pre = browser
        .get(&format!("/api/v1/nodes/{}/shell/preflight", scope.nodes[0]))
        .await?;
    assert_eq!(pre.status, 200, "{}", pre.body);
    let gates = pre.body["gates"].as_array().cloned().unwrap_or_default();
    let assume = gates
        .iter()
        .find(|g| g["name"] == "assumeRole")
        .cloned()
        .unwrap_or_default();
    assert_eq!(assume["status"], "pass", "{}", pre.body);
    world.cleanup(&scope).await
}

#[tokio::test]
async fn a_disabled_persons_live_shell_ends_as_identity_revoked_within_the_check_interval()
-> anyhow::Result<()> {
    const CHECK_SECONDS: u64 = 2;
    let world = GatewayWorld::shared().await?;
    let scope = world.scope("bff-revoke", 1, json!({})).await?;
    let gw = world
        .start_console_gateway(
            "gw-bff-revoke",
            json!({"identityCheckSeconds": CHECK_SECONDS}),
        )
        .await?;
    let user = CONSOLE_USERS[2];
    world.sim.set_user_disabled(user, false);
    let (browser, _) = ConsoleBrowser::sign_in(&gw.base, user).await?;
    let opened = browser.open_ok(&scope.nodes[0]).await?;
    let mut term = Terminal::connect(&opened.attach_url).await?;
    term.hello().await?;
    term.expect_output("$ ", PROMPT_TIMEOUT).await?;
    // Checked again while still valid: the shell goes on.
    tokio::time::sleep(Duration::from_secs(CHECK_SECONDS * 2 + 1)).await;
    let out = term.run("echo still-$((20+1))", PROMPT_TIMEOUT).await?;
    assert!(out.contains("still-21"), "{out}");

    world.sim.set_user_disabled(user, true);
    // The next check (within the interval and one poll tick) ends it; the rest of the wait is
    // the close sequence's own bound.
    let closed = term
        .control("closed", Duration::from_secs(CHECK_SECONDS + 1 + 10))
        .await;
    world.sim.set_user_disabled(user, false);
    let closed = closed?;
    assert_eq!(closed["reason"], "IdentityRevoked", "{closed}");
    let session = world.wait_closed(&opened.session, PROMPT_TIMEOUT).await?;
    assert_eq!(session["status"]["reason"], "IdentityRevoked", "{session}");
    let message = session["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("disabled"), "{message}");
    // The console session ended with it.
    let who = browser.get("/api/v1/whoami").await?;
    assert_eq!(
        (who.status, who.code()),
        (401, "E_REAUTH_REQUIRED"),
        "{}",
        who.body
    );
    world.cleanup(&scope).await
}

#[tokio::test]
async fn signing_out_ends_the_shells_opened_from_that_console_session() -> anyhow::Result<()> {
    const CHECK_SECONDS: u64 = 2;
    let world = GatewayWorld::shared().await?;
    let scope = world.scope("bff-signout", 1, json!({})).await?;
    let gw = world
        .start_console_gateway(
            "gw-bff-signout",
            json!({"identityCheckSeconds": CHECK_SECONDS}),
        )
        .await?;
    let (browser, _) = ConsoleBrowser::sign_in(&gw.base, CONSOLE_USERS[3]).await?;
    let opened = browser.open_ok(&scope.nodes[0]).await?;
    let mut term = Terminal::connect(&opened.attach_url).await?;
    term.hello().await?;
    term.expect_output("$ ", PROMPT_TIMEOUT).await?;
    let out = browser.logout().await?;
    assert_eq!(out.status, 204, "{}", out.body);
    let closed = term
        .control("closed", Duration::from_secs(CHECK_SECONDS + 1 + 10))
        .await?;
    assert_eq!(closed["reason"], "IdentityRevoked", "{closed}");
    let session = world.wait_closed(&opened.session, PROMPT_TIMEOUT).await?;
    let message = session["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("signed out"), "{message}");
    world.cleanup(&scope).await
}
