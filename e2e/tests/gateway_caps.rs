//! Two gateway replicas and two leader-elected controllers: many people clicking "node shell"
//! at the same moment never get more sessions than the policy's caps, and every refusal is a
//! 429 with the cap's code. One person cannot exhaust the cluster: a refused open creates no
//! object (caps and the open rate are checked before `create`).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use support::*;

const USERS: usize = 12;
const CLICKS_PER_USER: usize = 3;
const PER_USER: usize = 2;
const TOTAL: usize = 7;

fn world_options() -> WorldOptions {
    WorldOptions {
        controllers: 2,
        gateways: 2,
        ..WorldOptions::default()
    }
}

/// `count` opens of `node` through `api`, `in_flight` at a time; the answers.
async fn rapid_opens(
    api: &GatewayClient,
    node: &str,
    count: usize,
    in_flight: usize,
) -> anyhow::Result<Vec<Answer>> {
    futures::stream::iter(0..count)
        .map(|_| api.open(node, json!({})))
        .buffer_unordered(in_flight)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Answers by status and code, e.g. `{"201": 2, "429 E_CAP_USER": 980}`.
fn tally(answers: &[Answer]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for a in answers {
        let key = if a.status == 201 {
            "201".to_string()
        } else {
            format!("{} {}", a.status, a.code())
        };
        *out.entry(key).or_default() += 1;
    }
    out
}

/// NodeShellSession objects of the policy, as the apiserver lists them.
async fn objects_of(world: &GatewayWorld, policy: &str) -> anyhow::Result<Vec<Value>> {
    world.sessions_of(policy).await
}

#[tokio::test]
async fn a_thousand_rapid_opens_by_one_person_leave_at_most_the_cap_plus_a_handful()
-> anyhow::Result<()> {
    let world = GatewayWorld::shared_with(world_options()).await?;
    let scope = world
        .scope(
            "flood",
            1,
            json!({"limits": {"maxSessionsPerUser": PER_USER, "maxSessionsTotal": TOTAL}}),
        )
        .await?;
    let user = engineer(55);
    let api = world.gateway().client(&world.token(&user));
    let answers = rapid_opens(&api, &scope.nodes[0], 1000, 50).await?;
    let counts = tally(&answers);
    println!("1,000 opens: {counts:?}");
    for a in &answers {
        match (a.status, a.code()) {
            (201, _) | (429, "E_CAP_USER") => {}
            (429, "E_RATE_LIMITED") => {
                let after = a.body["retry_after"].as_u64().unwrap_or(0);
                assert!((1..=60).contains(&after), "{}", a.body);
            }
            other => panic!("unexpected answer {other:?}: {}", a.body),
        }
    }
    assert_eq!(counts.get("201"), Some(&PER_USER), "{counts:?}");
    let objects = objects_of(world, &scope.policy).await?;
    println!("objects left: {}", objects.len());
    assert!(
        objects.len() <= PER_USER + 3,
        "1,000 opens left {} NodeShellSession objects (cap {PER_USER})",
        objects.len()
    );
    world.cleanup(&scope).await
}

#[tokio::test]
async fn caps_are_checked_before_create_even_without_a_rate_limit() -> anyhow::Result<()> {
    let world = GatewayWorld::shared_with(world_options()).await?;
    let gateway = world
        .start_gateway(GatewayOptions {
            patch: json!({"opensPerMinute": 100_000}),
            ..GatewayOptions::named("caps-no-rate")
        })
        .await?;
    let scope = world
        .scope(
            "capsfirst",
            1,
            json!({"limits": {"maxSessionsPerUser": PER_USER, "maxSessionsTotal": TOTAL}}),
        )
        .await?;
    let api = gateway.client(&world.token(&engineer(56)));
    let answers = rapid_opens(&api, &scope.nodes[0], 300, 30).await?;
    let counts = tally(&answers);
    println!("300 opens without a rate limit: {counts:?}");
    assert_eq!(counts.get("201"), Some(&PER_USER), "{counts:?}");
    assert_eq!(
        counts.get("429 E_CAP_USER"),
        Some(&(300 - PER_USER)),
        "{counts:?}"
    );
    let objects = objects_of(world, &scope.policy).await?;
    assert!(
        objects.len() <= PER_USER + 3,
        "refused opens created {} objects",
        objects.len()
    );
    drop(gateway);
    world.cleanup(&scope).await
}

#[tokio::test]
async fn opens_beyond_the_rate_are_refused_with_retry_after() -> anyhow::Result<()> {
    let world = GatewayWorld::shared_with(world_options()).await?;
    let gateway = world
        .start_gateway(GatewayOptions {
            patch: json!({"opensPerMinute": 3}),
            ..GatewayOptions::named("rate-3")
        })
        .await?;
    let scope = world
        .scope(
            "rate",
            1,
            json!({"limits": {"maxSessionsPerUser": 10, "maxSessionsTotal": 20}}),
        )
        .await?;
    let node = &scope.nodes[0];
    let api = gateway.client(&world.token(&engineer(57)));
    for i in 0..3 {
        let answer = api.open(node, json!({})).await?;
        assert_eq!(answer.status, 201, "open {i}: {}", answer.body);
    }
    let refused = api.open(node, json!({})).await?;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.code(), "E_RATE_LIMITED", "{}", refused.body);
    let after = refused.body["retry_after"].as_u64().unwrap_or(0);
    assert!((1..=20).contains(&after), "{}", refused.body);
    assert!(
        refused.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("try again in")),
        "{}",
        refused.body
    );
    // Someone else is not held back by that person's rate.
    let other = gateway.client(&world.token(&engineer(58)));
    assert_eq!(other.open(node, json!({})).await?.status, 201);
    assert_eq!(objects_of(world, &scope.policy).await?.len(), 4);
    drop(gateway);
    world.cleanup(&scope).await
}

#[tokio::test]
async fn concurrent_opens_through_two_gateways_never_exceed_the_caps() -> anyhow::Result<()> {
    let world = GatewayWorld::shared_with(world_options()).await?;
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

#[tokio::test]
async fn a_burst_of_a_thousand_resizes_is_coalesced_and_the_last_size_wins() -> anyhow::Result<()> {
    const T: Duration = Duration::from_secs(30);
    let world = GatewayWorld::shared_with(world_options()).await?;
    let scope = world.scope("resizes", 1, json!({})).await?;
    let (opened, mut term, _) = world
        .attach_shell(world.gateway(), &scope, &engineer(54), T)
        .await?;
    let size = |i: u16| (60 + i % 100, 20 + i % 30);
    let burst = std::time::Instant::now();
    for i in 0..1000u16 {
        let (cols, rows) = size(i);
        term.resize(cols, rows).await?;
    }
    let burst_seconds = burst.elapsed().as_secs_f64();
    let (cols, rows) = size(999);
    let want = format!("{rows} {cols}");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let shown = term.run("stty size", T).await?;
        if shown.contains(&want) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stty size says {shown:?}, not the last size sent ({want})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The gateway handled the whole burst by now (frames arrive in order).
    let handled_seconds = burst.elapsed().as_secs_f64();
    term.close().await?;
    world.wait_closed(&opened.session, T).await?;
    let cast = String::from_utf8(gunzip(&secret_bytes(
        &transcript_secrets(world, &opened.session).await?,
    ))?)?;
    let resizes: Vec<Value> = cast
        .lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e[1] == "r")
        .collect();
    // At most one resize per 100 ms reaches the agent and the transcript while the burst is
    // handled, plus the first and the last.
    let bound = (2 + (handled_seconds * 10.0).ceil() as usize).min(100);
    println!(
        "1,000 resizes sent in {burst_seconds:.2} s, handled within {handled_seconds:.2} s: {} resize lines (bound {bound})",
        resizes.len()
    );
    assert!(
        resizes.len() <= bound,
        "{} resize lines for 1,000 resizes handled within {handled_seconds:.2} s",
        resizes.len()
    );
    assert_eq!(
        resizes.last().map(|e| e[2].clone()),
        Some(json!(format!("{cols}x{rows}"))),
        "the transcript's last resize is the last size sent"
    );
    world.cleanup(&scope).await
}
