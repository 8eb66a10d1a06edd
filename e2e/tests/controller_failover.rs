//! Leader failover: kill the leading controller process; the standby takes the lease within
//! the lease duration and admission continues. Every decision is written by whichever replica
//! held the lease at the time, never by two.

mod support;

use nodeshell::api::SessionPhase;
use serde_json::json;
use std::time::{Duration, Instant};
use support::{
    ControllerProcess, apply_policy, cluster, create_gateway_session, decided_by, lease_holder,
    status_managers, wait_for, wait_phase,
};

const LEASE: &str = "controller-failover";
const POLICY: &str = "failover";
/// What the test processes are started with (`--lease-duration 3s`).
const LEASE_DURATION: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_when_the_leader_dies() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    apply_policy(
        cluster,
        POLICY,
        json!({ "limits": { "maxSessionsPerUser": 5, "maxSessionsTotal": 100 } }),
    )
    .await?;
    let mut replicas = vec![
        ControllerProcess::start(cluster, "replica-a", LEASE, &[])?,
        ControllerProcess::start(cluster, "replica-b", LEASE, &[])?,
    ];
    let first = wait_for("a lease holder", Duration::from_secs(30), || {
        lease_holder(cluster, LEASE)
    })
    .await?;

    // Before the failure: the holder admits.
    for i in 0..3 {
        create_gateway_session(cluster, &format!("before-{i}"), &format!("u{i}"), POLICY).await?;
    }
    for i in 0..3 {
        let s = wait_phase(
            cluster,
            &format!("before-{i}"),
            SessionPhase::Admitted,
            None,
            Duration::from_secs(30),
        )
        .await?;
        assert_eq!(
            decided_by(&s).map(|d| d.0),
            Some(first.clone()),
            "admitted by the lease holder"
        );
    }

    // Kill the leader without letting it release the lease.
    let index = replicas
        .iter()
        .position(|r| r.identity == first)
        .ok_or_else(|| anyhow::anyhow!("holder {first} is not one of ours"))?;
    replicas[index].kill();
    let killed_at = Instant::now();
    let standby = replicas[1 - index].identity.clone();

    // Sessions created while nobody leads wait, then the standby admits them.
    for i in 0..3 {
        create_gateway_session(cluster, &format!("after-{i}"), &format!("u{i}"), POLICY).await?;
    }
    let second = wait_for(
        "the standby to take the lease",
        Duration::from_secs(30),
        || async { Ok(lease_holder(cluster, LEASE).await?.filter(|h| *h != first)) },
    )
    .await?;
    let takeover = killed_at.elapsed();
    eprintln!("standby took the lease {takeover:?} after the leader was killed");
    assert_eq!(second, standby);
    // The lease expires LEASE_DURATION after the last renewal; allow for the standby's polling.
    assert!(
        takeover <= LEASE_DURATION + Duration::from_secs(4),
        "takeover took {takeover:?}, lease duration is {LEASE_DURATION:?}"
    );
    for i in 0..3 {
        let s = wait_phase(
            cluster,
            &format!("after-{i}"),
            SessionPhase::Admitted,
            None,
            Duration::from_secs(30),
        )
        .await?;
        assert_eq!(
            decided_by(&s).map(|d| d.0),
            Some(standby.clone()),
            "admitted by the new holder"
        );
    }

    // A replacement replica joins as a standby; the holder keeps writing.
    replicas.push(ControllerProcess::start(cluster, "replica-c", LEASE, &[])?);
    tokio::time::sleep(LEASE_DURATION * 2).await;
    assert_eq!(
        lease_holder(cluster, LEASE).await?,
        Some(standby.clone()),
        "no flapping"
    );
    create_gateway_session(cluster, "later-0", "u9", POLICY).await?;
    let s = wait_phase(
        cluster,
        "later-0",
        SessionPhase::Admitted,
        None,
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(decided_by(&s).map(|d| d.0), Some(standby.clone()));

    // A graceful stop (SIGTERM) of the holder releases the lease: the remaining replica takes
    // over and keeps admitting.
    let holder = replicas
        .iter_mut()
        .find(|r| r.identity == standby)
        .ok_or_else(|| anyhow::anyhow!("holder {standby} is not one of ours"))?;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &holder.pid().to_string()])
        .status()?;
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while holder.is_running() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the holder did not exit on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let third = wait_for(
        "replica-c to take the lease",
        Duration::from_secs(30),
        || async {
            Ok(lease_holder(cluster, LEASE)
                .await?
                .filter(|h| h == "replica-c"))
        },
    )
    .await?;
    create_gateway_session(cluster, "later-1", "u8", POLICY).await?;
    let s = wait_phase(
        cluster,
        "later-1",
        SessionPhase::Admitted,
        None,
        Duration::from_secs(30),
    )
    .await?;
    assert_eq!(decided_by(&s).map(|d| d.0), Some(third));

    // Never two writers: each session's status has the controller's single field manager and
    // exactly one admission record.
    for name in [
        "before-0", "before-1", "before-2", "after-0", "after-1", "after-2", "later-0", "later-1",
    ] {
        let s = wait_phase(
            cluster,
            name,
            SessionPhase::Admitted,
            None,
            Duration::from_secs(5),
        )
        .await?;
        assert_eq!(status_managers(&s), ["nodeshell-controller"], "{name}");
        let admitted = s.status.as_ref().map(|st| {
            st.conditions
                .iter()
                .filter(|c| c.type_ == "Admitted")
                .count()
        });
        assert_eq!(admitted, Some(1), "{name}");
    }
    Ok(())
}
