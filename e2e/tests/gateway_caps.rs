//! Two gateway replicas and two leader-elected controllers: many people clicking "node shell"
//! at the same moment never get more sessions than the policy's caps, and every refusal is a
//! 429 with the cap's code.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use support::*;

const USERS: usize = 12;
const CLICKS_PER_USER: usize = 3;
const PER_USER: usize = 2;
const TOTAL: usize = 7;

#[tokio::test]
async fn concurrent_opens_through_two_gateways_never_exceed_the_caps() -> anyhow::Result<()> {
    let world = GatewayWorld::shared_with(WorldOptions {
        controllers: 2,
        gateways: 2,
    })
    .await?;
    assert_eq!(world.gateways.len(), 2);
    let scope = world
        .scope(
            "caps2x2",
            2,
            json!({"limits": {"maxSessionsPerUser": PER_USER, "maxSessionsTotal": TOTAL}}),
        )
        .await?;
    for round in 0..2 {
        let mut clicks = Vec::new();
        for u in 0..USERS {
            let user = engineer(40 + u);
            for c in 0..CLICKS_PER_USER {
                let gw = &world.gateways[(u + c) % 2];
                let api = gw.client(&world.token(&user));
                let node = scope.nodes[c % scope.nodes.len()].clone();
                let user = user.clone();
                clicks.push(async move {
                    let answer = api.open(&node, json!({})).await;
                    (user, answer)
                });
            }
        }
        let answers = futures::future::join_all(clicks).await;
        let mut admitted: BTreeMap<String, usize> = BTreeMap::new();
        let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
        for (user, answer) in answers {
            let answer = answer?;
            match answer.status {
                201 => *admitted.entry(user).or_default() += 1,
                429 => {
                    assert!(
                        matches!(answer.code(), "E_CAP_USER" | "E_CAP_TOTAL"),
                        "{}",
                        answer.body
                    );
                    let limit = answer.body["limit"].as_u64().unwrap_or(0) as usize;
                    let want = if answer.code() == "E_CAP_USER" {
                        PER_USER
                    } else {
                        TOTAL
                    };
                    assert_eq!(limit, want, "{}", answer.body);
                    *refusals.entry(answer.code().to_string()).or_default() += 1;
                }
                other => panic!("round {round}: unexpected HTTP {other}: {}", answer.body),
            }
        }
        let total: usize = admitted.values().sum();
        println!("round {round}: admitted {admitted:?}, refused {refusals:?}");
        assert_eq!(
            total, TOTAL,
            "round {round}: exactly the total cap is admitted when more people ask"
        );
        assert!(
            admitted.values().all(|n| *n <= PER_USER),
            "round {round}: a person got more than {PER_USER}: {admitted:?}"
        );
        // The apiserver agrees: never more live sessions than the caps.
        let sessions = world.sessions_of(&scope.policy).await?;
        let live: Vec<_> = sessions
            .iter()
            .filter(|s| {
                matches!(
                    s["status"]["phase"].as_str(),
                    Some("Admitted" | "Active" | "Closing")
                )
            })
            .collect();
        assert_eq!(live.len(), TOTAL, "round {round}");
        let mut per_user: BTreeMap<String, usize> = BTreeMap::new();
        for s in &live {
            *per_user
                .entry(
                    s["spec"]["user"]["sub"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
                .or_default() += 1;
        }
        assert!(per_user.values().all(|n| *n <= PER_USER), "{per_user:?}");
        // End this round's sessions before the next.
        world.cleanup_sessions(&scope).await?;
        wait_for("no live sessions", Duration::from_secs(60), || async {
            let live = world
                .sessions_of(&scope.policy)
                .await?
                .iter()
                .filter(|s| !matches!(s["status"]["phase"].as_str(), Some("Closed" | "Rejected")))
                .count();
            Ok((live == 0).then_some(()))
        })
        .await?;
    }
    world.cleanup(&scope).await
}
