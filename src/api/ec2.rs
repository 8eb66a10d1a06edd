//! The EC2 instance behind a node, as its `spec.providerID` says, the region of an
//! availability zone, and a Node trimmed to those facts and its labels. Pure; the gateway's
//! eligibility and the controller's admission read the same facts here.

use k8s_openapi::api::core::v1::{Node, NodeSpec};

use super::is_region;

/// Drops all of a Node but its name, uid, resourceVersion, labels and providerID: what
/// eligibility and admission read (its status, images and conditions are most of its size,
/// and change every few seconds).
pub fn trim_node(node: &mut Node) {
    let meta = &mut node.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.owner_references = None;
    meta.finalizers = None;
    node.spec = Some(NodeSpec {
        provider_id: node.spec.take().and_then(|s| s.provider_id),
        ..NodeSpec::default()
    });
    node.status = None;
}

/// The EC2 instance behind a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Instance {
    /// `i-…`.
    pub instance_id: String,
    /// Availability zone, when the providerID names one.
    pub zone: Option<String>,
}

/// Parses `aws:///<zone>/<instance-id>` (also `aws:///<instance-id>`). Fargate and hybrid
/// nodes, and anything else, are not EC2.
pub fn parse_provider_id(provider_id: &str) -> Option<Ec2Instance> {
    let rest = provider_id.strip_prefix("aws://")?;
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let (&instance_id, before) = parts.split_last()?;
    if before.len() > 1 || !is_instance_id(instance_id) {
        return None;
    }
    Some(Ec2Instance {
        instance_id: instance_id.to_string(),
        zone: before.first().map(|z| z.to_string()),
    })
}

fn is_instance_id(id: &str) -> bool {
    id.strip_prefix("i-").is_some_and(|hex| {
        (8..=17).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit())
    })
}

/// The region of an availability zone (`eu-west-1a` → `eu-west-1`; local and wavelength
/// zones such as `us-west-2-lax-1a` → `us-west-2`).
pub fn region_of_zone(zone: &str) -> Option<String> {
    let parts: Vec<&str> = zone.split('-').collect();
    let number_at = parts
        .iter()
        .position(|p| p.starts_with(|c: char| c.is_ascii_digit()))?;
    let digits: String = parts[number_at]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let mut region: Vec<&str> = parts[..number_at].to_vec();
    region.push(&digits);
    let region = region.join("-");
    is_region(&region).then_some(region)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_ids() {
        assert_eq!(
            parse_provider_id("aws:///eu-west-1a/i-0123456789abcdef0"),
            Some(Ec2Instance {
                instance_id: "i-0123456789abcdef0".into(),
                zone: Some("eu-west-1a".into())
            })
        );
        assert_eq!(
            parse_provider_id("aws:///i-0123abcd").map(|i| i.zone),
            Some(None)
        );
        for bad in [
            "",
            "gce://p/z/n",
            "aws:///eu-west-1a/fargate-ip-10-0-1-2",
            "aws:///eu-west-1a/x/i-0123456789abcdef0",
            "aws:///eu-west-1a/i-xyz",
            "kind://docker/kind/kind-control-plane",
        ] {
            assert_eq!(parse_provider_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_trimmed_node_keeps_what_eligibility_reads() {
        use k8s_openapi::api::core::v1::{NodeStatus, NodeSystemInfo};
        use kube::api::ObjectMeta;
        use std::collections::BTreeMap;
        let labels = BTreeMap::from([("team".to_string(), "infra".to_string())]);
        let mut node = Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                labels: Some(labels.clone()),
                annotations: Some(BTreeMap::from([("a".to_string(), "b".repeat(4096))])),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                provider_id: Some("aws:///eu-west-1a/i-0123456789abcdef0".into()),
                pod_cidr: Some("10.0.0.0/24".into()),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                node_info: Some(NodeSystemInfo::default()),
                ..NodeStatus::default()
            }),
        };
        trim_node(&mut node);
        assert_eq!(node.metadata.name.as_deref(), Some("n1"));
        assert_eq!(node.metadata.labels, Some(labels));
        assert_eq!(node.metadata.annotations, None);
        let spec = node.spec.unwrap_or_default();
        assert_eq!(
            spec.provider_id.as_deref(),
            Some("aws:///eu-west-1a/i-0123456789abcdef0")
        );
        assert_eq!(spec.pod_cidr, None);
        assert!(node.status.is_none());
    }

    #[test]
    fn zones_to_regions() {
        assert_eq!(region_of_zone("eu-west-1a").as_deref(), Some("eu-west-1"));
        assert_eq!(
            region_of_zone("us-west-2-lax-1a").as_deref(),
            Some("us-west-2")
        );
        assert_eq!(
            region_of_zone("us-gov-west-1b").as_deref(),
            Some("us-gov-west-1")
        );
        assert_eq!(region_of_zone("nowhere"), None);
    }
}
