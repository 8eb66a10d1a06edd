//! Admission under contention: 100 sessions of 10 users created at once, two controller
//! processes running, caps 2 per user and 10 in total. Exactly the sessions the caps allow are
//! admitted and every other one is Rejected with the right reason, round after round.
//!
//! Then the same without leader election: two controllers that both believe they lead (a
//! stale leader next to its successor) decide the same sessions at once, each from its own
//! watch cache; the per-policy ledger's compare-and-swap still keeps every cap.
//!
//! And the ledger stays small: once the controller's cache has seen 50 admissions, the
//! ledger holds at most a couple of entries, not one per live session.

mod support;

use futures::future::join_all;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use nodeshell::api::{NodeShellSession, SessionPhase};
use nodeshell::localcluster::{Identity, SYSTEM_NAMESPACE};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use support::{
    ControllerProcess, apply_policy, cluster, decided_by, ensure_session_node, gateway_session,
    http_get, lease_holder, sessions_with_prefix, status_managers, wait_for,
};

const LEASE: &str = "controller-contention";
const POLICY: &str = "contention";
const USERS: usize = 10;
const SESSIONS: usize = 100;
const PER_USER: i64 = 2;
const TOTAL: i64 = 10;
const ROUNDS: usize = 3;

/// The two tests share one cluster and their controllers decide every session in it: one at
/// a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_never_admit_more_than_the_caps() -> anyhow::Result<()> {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = cluster().await?;
    ensure_session_node(cluster).await?;
    apply_policy(
        cluster,
        POLICY,
        json!({ "limits": { "maxSessionsPerUser": PER_USER, "maxSessionsTotal": TOTAL } }),
    )
    .await?;
    let a = ControllerProcess::start(cluster, "replica-a", LEASE, &[])?;
    let b = ControllerProcess::start(cluster, "replica-b", LEASE, &[])?;
    wait_for("a lease holder", Duration::from_secs(30), || {
        lease_holder(cluster, LEASE)
    })
    .await?;

    // The admin server answers on both replicas.
    for replica in [&a, &b] {
        let addr = replica.admin_addr().await?;
        assert_eq!(http_get(&addr, "/healthz").await?.0, 200);
        wait_for("readyz", Duration::from_secs(30), || {
            let addr = addr.clone();
            async move { Ok((http_get(&addr, "/readyz").await?.0 == 200).then_some(())) }
        })
        .await?;
    }

    let gateway: Api<NodeShellSession> = Api::all(cluster.client(Identity::Gateway).await?);
    let admin: Api<NodeShellSession> = Api::all(cluster.client(Identity::Admin).await?);
    for round in 0..ROUNDS {
        let prefix = format!("r{round}-");
        let creates = (0..SESSIONS).map(|i| {
            let gateway = gateway.clone();
            let prefix = prefix.clone();
            async move {
                let s = gateway_session(
                    &format!("{prefix}s{i:03}"),
                    &format!("user{}", i % USERS),
                    POLICY,
                )?;
                gateway.create(&PostParams::default(), &s).await?;
                anyhow::Ok(())
            }
        });
        for result in join_all(creates).await {
            result?;
        }
        let sessions = wait_for("every session decided", Duration::from_secs(90), || {
            let prefix = prefix.clone();
            async move {
                let all = sessions_with_prefix(cluster, &prefix).await?;
                let decided =
                    all.len() == SESSIONS && all.iter().all(|s| s.phase() != SessionPhase::Pending);
                Ok(decided.then_some(all))
            }
        })
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "round {round}: {e}\nreplica-a:\n{}\nreplica-b:\n{}",
                a.log_text(),
                b.log_text()
            )
        })?;

        check_round(round, &sessions)?;

        let deletes = sessions.iter().map(|s| {
            let admin = admin.clone();
            let name = s.name_any();
            async move {
                admin
                    .delete(&name, &DeleteParams::default())
                    .await
                    .map(|_| ())
            }
        });
        for result in join_all(deletes).await {
            result?;
        }
        wait_for("round cleaned up", Duration::from_secs(30), || {
            let prefix = prefix.clone();
            async move {
                Ok(sessions_with_prefix(cluster, &prefix)
                    .await?
                    .is_empty()
                    .then_some(()))
            }
        })
        .await?;
    }
    Ok(())
}

/// Checks one round: the caps hold, and replaying the decisions in the order the controller
/// made them (its sequence numbers) gives exactly the same outcome for every session.
fn check_round(round: usize, sessions: &[NodeShellSession]) -> anyhow::Result<()> {
    let mut per_user: HashMap<String, i64> = HashMap::new();
    let mut admitted = 0;
    for s in sessions {
        let managers = status_managers(s);
        assert_eq!(
            managers,
            ["nodeshell-controller"],
            "round {round}: {} status written by {managers:?}",
            s.name_any()
        );
        if s.phase() == SessionPhase::Admitted {
            admitted += 1;
            *per_user.entry(s.spec.user.sub.clone()).or_default() += 1;
        } else {
            assert_eq!(
                s.phase(),
                SessionPhase::Rejected,
                "round {round}: {}",
                s.name_any()
            );
        }
    }
    assert_eq!(admitted, TOTAL, "round {round}: admitted {admitted}");
    assert!(
        per_user.values().all(|n| *n <= PER_USER),
        "round {round}: per user {per_user:?}"
    );

    let mut decisions: Vec<(String, u64, &NodeShellSession)> = sessions
        .iter()
        .map(|s| {
            let (replica, seq) = decided_by(s)
                .ok_or_else(|| anyhow::anyhow!("{} has no decision record", s.name_any()))?;
            Ok((replica, seq, s))
        })
        .collect::<anyhow::Result<_>>()?;
    let replicas: std::collections::BTreeSet<&str> =
        decisions.iter().map(|(r, _, _)| r.as_str()).collect();
    assert_eq!(
        replicas.len(),
        1,
        "round {round}: one writer expected, saw {replicas:?}"
    );
    decisions.sort_by_key(|(_, seq, _)| *seq);
    let mut mine: HashMap<&str, i64> = HashMap::new();
    let mut total = 0;
    for (_, seq, s) in decisions {
        let user = s.spec.user.sub.as_str();
        let expected = if mine.get(user).copied().unwrap_or_default() >= PER_USER {
            Some("CapPerUser")
        } else if total >= TOTAL {
            Some("CapTotal")
        } else {
            None
        };
        let got = match s.phase() {
            SessionPhase::Admitted => None,
            _ => s.status.as_ref().and_then(|st| st.reason.as_deref()),
        };
        assert_eq!(
            got,
            expected,
            "round {round}: decision {seq} on {}",
            s.name_any()
        );
        if got.is_none() {
            *mine.entry(user).or_default() += 1;
            total += 1;
        }
    }
    Ok(())
}

const RACE_POLICY: &str = "contention-race";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_deciding_at_once_never_exceed_the_caps() -> anyhow::Result<()> {
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = cluster().await?;
    ensure_session_node(cluster).await?;
    apply_policy(
        cluster,
        RACE_POLICY,
        json!({ "limits": { "maxSessionsPerUser": PER_USER, "maxSessionsTotal": TOTAL } }),
    )
    .await?;
    // No election: both write whenever their own cache shows a waiting session.
    let flags = ["--no-leader-election"];
    let a = ControllerProcess::start(cluster, "racer-a", "unused-a", &flags)?;
    let b = ControllerProcess::start(cluster, "racer-b", "unused-b", &flags)?;
    for replica in [&a, &b] {
        let addr = replica.admin_addr().await?;
        wait_for("readyz", Duration::from_secs(30), || {
            let addr = addr.clone();
            async move { Ok((http_get(&addr, "/readyz").await?.0 == 200).then_some(())) }
        })
        .await?;
    }
    let gateway: Api<NodeShellSession> = Api::all(cluster.client(Identity::Gateway).await?);
    let admin: Api<NodeShellSession> = Api::all(cluster.client(Identity::Admin).await?);
    let mut writers = std::collections::BTreeSet::new();
    for round in 0..ROUNDS {
        let prefix = format!("race{round}-");
        let creates = (0..SESSIONS).map(|i| {
            let gateway = gateway.clone();
            let prefix = prefix.clone();
            async move {
                let s = gateway_session(
                    &format!("{prefix}s{i:03}"),
                    &format!("user{}", i % USERS),
                    RACE_POLICY,
                )?;
                gateway.create(&PostParams::default(), &s).await?;
                anyhow::Ok(())
            }
        });
        for result in join_all(creates).await {
            result?;
        }
        let sessions = wait_for("every session decided", Duration::from_secs(90), || {
            let prefix = prefix.clone();
            async move {
                let all = sessions_with_prefix(cluster, &prefix).await?;
                let decided =
                    all.len() == SESSIONS && all.iter().all(|s| s.phase() != SessionPhase::Pending);
                Ok(decided.then_some(all))
            }
        })
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "round {round}: {e}\nracer-a:\n{}\nracer-b:\n{}",
                a.log_text(),
                b.log_text()
            )
        })?;
        // Nothing in this test ends a session, and every status write carries the version it
        // was decided from, so the admitted count at the end is the most there ever were.
        let mut per_user: HashMap<String, i64> = HashMap::new();
        for s in &sessions {
            writers.extend(decided_by(s).map(|(replica, _)| replica));
            match s.phase() {
                SessionPhase::Admitted => {
                    *per_user.entry(s.spec.user.sub.clone()).or_default() += 1;
                }
                SessionPhase::Rejected => {
                    let reason = s.status.as_ref().and_then(|st| st.reason.as_deref());
                    assert!(
                        matches!(reason, Some("CapPerUser" | "CapTotal")),
                        "round {round}: {} rejected with {reason:?}",
                        s.name_any()
                    );
                }
                other => panic!("round {round}: {} is {other:?}", s.name_any()),
            }
        }
        let admitted: i64 = per_user.values().sum();
        assert!(
            per_user.values().all(|n| *n <= PER_USER),
            "round {round}: per user {per_user:?}"
        );
        // Exactly the total: deleted sessions of earlier rounds free their slots, and no
        // slot is lost to a race either.
        assert_eq!(admitted, TOTAL, "round {round}: admitted {admitted}");

        let deletes = sessions.iter().map(|s| {
            let admin = admin.clone();
            let name = s.name_any();
            async move {
                admin
                    .delete(&name, &DeleteParams::default())
                    .await
                    .map(|_| ())
            }
        });
        for result in join_all(deletes).await {
            result?;
        }
        wait_for("round cleaned up", Duration::from_secs(30), || {
            let prefix = prefix.clone();
            async move {
                Ok(sessions_with_prefix(cluster, &prefix)
                    .await?
                    .is_empty()
                    .then_some(()))
            }
        })
        .await?;
    }
    eprintln!("decisions written by {writers:?}");
    Ok(())
}

const SMALL_POLICY: &str = "contention-small-ledger";
const CONFIRMED: usize = 50;
/// The most entries the ledger may keep once every admission is confirmed.
const LEDGER_BOUND: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_keeps_only_unconfirmed_admissions_however_many_are_live() -> anyhow::Result<()>
{
    let _serial = ONE_AT_A_TIME.lock().await;
    let cluster = cluster().await?;
    ensure_session_node(cluster).await?;
    apply_policy(
        cluster,
        SMALL_POLICY,
        json!({ "limits": { "maxSessionsPerUser": 100, "maxSessionsTotal": 100 } }),
    )
    .await?;
    let controller = ControllerProcess::start(cluster, "small-ledger", "small-ledger", &[])?;
    let gateway: Api<NodeShellSession> = Api::all(cluster.client(Identity::Gateway).await?);
    let admin_client = cluster.client(Identity::Admin).await?;
    let admin: Api<NodeShellSession> = Api::all(admin_client.clone());
    let configmaps: Api<ConfigMap> = Api::namespaced(admin_client, SYSTEM_NAMESPACE);
    let ledger = format!("nodeshell-admission-{SMALL_POLICY}");

    // Half at once (one pass records them all), then half one by one.
    let prefix = "small-";
    let create = |i: usize| {
        let gateway = gateway.clone();
        async move {
            let s = gateway_session(
                &format!("{prefix}s{i:03}"),
                &format!("user{i}"),
                SMALL_POLICY,
            )?;
            gateway.create(&PostParams::default(), &s).await?;
            anyhow::Ok(())
        }
    };
    for result in join_all((0..CONFIRMED / 2).map(create)).await {
        result?;
    }
    for i in CONFIRMED / 2..CONFIRMED {
        create(i).await?;
    }
    let sessions = wait_for(
        "every session admitted",
        Duration::from_secs(90),
        || async move {
            let all = sessions_with_prefix(cluster, prefix).await?;
            let admitted =
                all.len() == CONFIRMED && all.iter().all(|s| s.phase() == SessionPhase::Admitted);
            Ok(admitted.then_some(all))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\ncontroller:\n{}", controller.log_text()))?;

    // The controller's cache sees every admission; its passes drop them from the ledger.
    let entries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
    let settled = wait_for("the ledger to shrink", Duration::from_secs(30), || {
        let configmaps = configmaps.clone();
        let ledger = ledger.clone();
        let entries = entries.clone();
        async move {
            let cm = configmaps.get(&ledger).await?;
            let n = cm.data.as_ref().map_or(0, |d| d.len());
            entries.store(n, std::sync::atomic::Ordering::Relaxed);
            Ok((n <= LEDGER_BOUND).then_some(cm))
        }
    })
    .await;
    let entries = entries.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        settled.is_ok(),
        "{CONFIRMED} live, confirmed sessions: the ledger still holds {entries} entries (at most \
         {LEDGER_BOUND} expected)"
    );
    let cm = settled?;
    let floor = cm
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("nodeshell.periscope.io/admission-floor"));
    assert!(floor.is_some(), "the ledger records its floor: {cm:?}");

    for s in &sessions {
        admin
            .delete(&s.name_any(), &DeleteParams::default())
            .await?;
    }
    wait_for("cleaned up", Duration::from_secs(30), || async move {
        Ok(sessions_with_prefix(cluster, prefix)
            .await?
            .is_empty()
            .then_some(()))
    })
    .await?;
    Ok(())
}
