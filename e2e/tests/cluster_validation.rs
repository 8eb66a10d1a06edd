//! The apiserver itself enforces the CRDs' rules: an invalid NodeShellPolicy is refused, a
//! session's spec cannot change after creation, and `terminate` only goes false → true.

mod support;

use kube::api::{Api, Patch, PatchParams};
use nodeshell::api::NodeShellSession;
use nodeshell::localcluster::Identity;
use serde_json::json;
use support::{cluster, create_policy, create_session, message, policy_json, status_code};

#[tokio::test]
async fn a_valid_policy_is_accepted() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let created = create_policy(cluster, policy_json("valid-policy", json!({}))).await?;
    assert_eq!(created.spec.aws.session_duration_seconds, 3600);
    Ok(())
}

#[tokio::test]
async fn a_policy_with_a_bad_role_arn_is_rejected() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let policy = policy_json(
        "bad-arn",
        json!({ "spec": { "aws": { "roleArn": "arn:aws:iam::12345:user/not-a-role" } } }),
    );
    let error = create_policy(cluster, policy)
        .await
        .expect_err("the ARN pattern must refuse it");
    assert_eq!(status_code(&error), Some(422), "{error}");
    assert!(message(&error).contains("roleArn"), "{}", message(&error));
    Ok(())
}

#[tokio::test]
async fn a_policy_whose_credentials_expire_before_the_longest_session_is_rejected()
-> anyhow::Result<()> {
    let cluster = cluster().await?;
    let policy = policy_json(
        "short-credentials",
        json!({ "spec": {
            "aws": { "sessionDurationSeconds": 900 },
            "limits": { "maxDurationSeconds": 3600 }
        } }),
    );
    let error = create_policy(cluster, policy)
        .await
        .expect_err("CEL must refuse it");
    assert_eq!(status_code(&error), Some(422), "{error}");
    assert!(
        message(&error).contains("sessionDurationSeconds"),
        "{}",
        message(&error)
    );
    Ok(())
}

#[tokio::test]
async fn a_policy_with_an_out_of_range_duration_is_rejected() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let policy = policy_json(
        "too-short",
        json!({ "spec": {
            "aws": { "sessionDurationSeconds": 600 },
            "limits": { "maxDurationSeconds": 300 }
        } }),
    );
    let error = create_policy(cluster, policy)
        .await
        .expect_err("900 is the minimum");
    assert_eq!(status_code(&error), Some(422), "{error}");
    assert!(message(&error).contains("900"), "{}", message(&error));
    Ok(())
}

#[tokio::test]
async fn a_session_spec_cannot_be_changed() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    create_session(cluster, Identity::Admin, "immutable-spec", "carol").await?;
    let sessions: Api<NodeShellSession> = Api::all(cluster.client(Identity::Admin).await?);
    let params = PatchParams::default();
    for (patch, field) in [
        (
            json!({ "spec": { "nodeName": "ip-10-0-9-9.ec2.internal" } }),
            "nodeName",
        ),
        (json!({ "spec": { "user": { "name": "mallory" } } }), "user"),
        (
            json!({ "spec": { "roleArn": "arn:aws:iam::123456789012:role/admin" } }),
            "roleArn",
        ),
    ] {
        let error = sessions
            .patch("immutable-spec", &params, &Patch::Merge(&patch))
            .await
            .expect_err("spec fields are immutable");
        assert_eq!(status_code(&error), Some(422), "{error}");
        assert!(
            message(&error).contains(field),
            "{field}: {}",
            message(&error)
        );
        assert!(message(&error).contains("immutable"), "{}", message(&error));
    }
    let unchanged = sessions.get("immutable-spec").await?;
    assert_eq!(unchanged.spec.node_name, "ip-10-0-1-17.ec2.internal");
    assert_eq!(unchanged.spec.user.name, "carol");
    Ok(())
}

#[tokio::test]
async fn terminate_goes_from_false_to_true_and_stays() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    create_session(cluster, Identity::Admin, "terminate-once", "dave").await?;
    let sessions: Api<NodeShellSession> = Api::all(cluster.client(Identity::Admin).await?);
    let params = PatchParams::default();
    let terminated = sessions
        .patch(
            "terminate-once",
            &params,
            &Patch::Merge(&json!({ "spec": { "terminate": true } })),
        )
        .await?;
    assert!(terminated.spec.terminate);
    let error = sessions
        .patch(
            "terminate-once",
            &params,
            &Patch::Merge(&json!({ "spec": { "terminate": false } })),
        )
        .await
        .expect_err("terminate may not go back to false");
    assert_eq!(status_code(&error), Some(422), "{error}");
    assert!(message(&error).contains("terminate"), "{}", message(&error));
    assert!(sessions.get("terminate-once").await?.spec.terminate);
    Ok(())
}
