//! What the simulator's STS handed out, for tests that must prove no credential leaked: the
//! exact access key ids, secret keys and session tokens, not just their shape.

use super::state::{Shared, lock};

/// One set of temporary credentials the simulator's STS issued
/// (`AssumeRoleWithWebIdentity`). Its `Debug` shows the access key id's first characters and
/// the principal only, so a failing assertion that prints it does not leak the secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCredentials {
    /// `ASIA…` access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// The session token.
    pub session_token: String,
    /// The assumed-role ARN the credentials act as.
    pub principal_arn: String,
}

impl std::fmt::Debug for IssuedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Eight characters of the key id tell sets apart in a test failure; ASIA + 4 random.
        let key_hint: String = self.access_key_id.chars().take(8).collect();
        f.debug_struct("IssuedCredentials")
            .field("access_key_id", &format_args!("{key_hint}…"))
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &"<redacted>")
            .field("principal_arn", &self.principal_arn)
            .finish()
    }
}

/// Every credential set STS issued since the simulator started (expired ones included; the
/// simulator never forgets one), ordered by access key id.
pub(super) fn issued_credentials(shared: &Shared) -> Vec<IssuedCredentials> {
    let mut all: Vec<IssuedCredentials> = lock(&shared.credentials)
        .iter()
        .map(|(access_key_id, c)| IssuedCredentials {
            access_key_id: access_key_id.clone(),
            secret_access_key: c.secret_access_key.clone(),
            session_token: c.session_token.clone(),
            principal_arn: c.principal_arn.clone(),
        })
        .collect();
    all.sort_by(|a, b| a.access_key_id.cmp(&b.access_key_id));
    all
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly on purpose
mod tests {
    use crate::sim::{SimConfig, SimHandle, Simulator};

    /// Calls the simulator's STS over HTTP, as a client would; returns the response body.
    async fn assume(sim: &SimHandle, token: &str) -> String {
        let form = [
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", &sim.default_role_arn()),
            ("RoleSessionName", "nodeshell-alice"),
            ("WebIdentityToken", token),
        ];
        let response = reqwest::Client::new()
            .post(&sim.urls().sts)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{:?}", response.status());
        response.text().await.unwrap()
    }

    /// The text of `<tag>…</tag>` in an STS answer.
    fn element<'a>(xml: &'a str, tag: &str) -> &'a str {
        let open = format!("<{tag}>");
        let start = xml.find(&open).unwrap() + open.len();
        let end = xml[start..].find(&format!("</{tag}>")).unwrap();
        &xml[start..start + end]
    }

    #[tokio::test]
    async fn lists_exactly_what_sts_handed_out_and_redacts_it_in_debug() {
        let sim = Simulator::start(SimConfig::for_tests()).await.unwrap();
        assert!(sim.issued_credentials().is_empty(), "nothing issued yet");
        let token = sim.mint_token("alice").unwrap();
        let first = assume(&sim, &token).await;
        let second = assume(&sim, &token).await;
        let issued = sim.issued_credentials();
        assert_eq!(issued.len(), 2, "one set per successful call");
        for answer in [&first, &second] {
            let akid = element(answer, "AccessKeyId");
            let set = issued
                .iter()
                .find(|c| c.access_key_id == akid)
                .expect("the answered key id is listed");
            assert_eq!(set.secret_access_key, element(answer, "SecretAccessKey"));
            assert_eq!(set.session_token, element(answer, "SessionToken"));
            assert_eq!(
                set.principal_arn,
                format!(
                    "arn:aws:sts::{}:assumed-role/nodeshell-user/nodeshell-alice",
                    sim.account_id()
                )
            );
        }
        assert!(
            issued
                .windows(2)
                .all(|w| w[0].access_key_id < w[1].access_key_id)
        );

        // A refused call issues nothing.
        let bad = sim
            .mint_bad_token("alice", crate::sim::BadToken::Expired)
            .unwrap();
        let refused = reqwest::Client::new()
            .post(&sim.urls().sts)
            .form(&[
                ("Action", "AssumeRoleWithWebIdentity"),
                ("RoleArn", &sim.default_role_arn()),
                ("RoleSessionName", "nodeshell-alice"),
                ("WebIdentityToken", &bad),
            ])
            .send()
            .await
            .unwrap();
        assert!(!refused.status().is_success());
        assert_eq!(sim.issued_credentials().len(), 2);

        // Debug shows which set it is, never the secrets.
        let shown = format!("{:?}", issued);
        for set in &issued {
            assert!(!shown.contains(&set.secret_access_key), "{shown}");
            assert!(!shown.contains(&set.session_token), "{shown}");
            assert!(!shown.contains(&set.access_key_id), "{shown}");
            assert!(shown.contains(&set.access_key_id[..8]), "{shown}");
        }
        sim.shutdown().await;
    }
}
