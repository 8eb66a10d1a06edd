//! Server-side apply of multi-document YAML, whatever the kinds, through discovery.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::Value;

use super::Error;

/// Field manager of everything the harness applies.
pub const FIELD_MANAGER: &str = "nodeshell-localcluster";

// How long a new CRD may take to be served; the apiserver usually needs well under a second.
const CRD_ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// Splits multi-document YAML into JSON objects, skipping empty documents.
pub fn parse_documents(yaml: &str) -> Result<Vec<Value>, Error> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(yaml).map_err(|e| Error::Manifest {
        message: format!("the YAML does not parse: {e}"),
    })?;
    Ok(documents
        .into_iter()
        .filter(|d| d.as_object().is_some_and(|o| !o.is_empty()))
        .collect())
}

/// Applies every document in order with a forced server-side apply and returns
/// `kind/name` of each. A CRD is waited on until it is Established, so later documents
/// may use its kind.
pub async fn apply_documents(
    client: &kube::Client,
    documents: &[Value],
) -> Result<Vec<String>, Error> {
    let mut applied = Vec::with_capacity(documents.len());
    for document in documents {
        applied.push(apply_one(client, document).await?);
    }
    Ok(applied)
}

async fn apply_one(client: &kube::Client, document: &Value) -> Result<String, Error> {
    let object: DynamicObject =
        serde_json::from_value(document.clone()).map_err(|e| Error::Manifest {
            message: format!("a document is not a Kubernetes object: {e}"),
        })?;
    let types = object.types.clone().ok_or_else(|| Error::Manifest {
        message: "a document has no apiVersion/kind".to_owned(),
    })?;
    let name = object
        .metadata
        .name
        .clone()
        .ok_or_else(|| Error::Manifest {
            message: format!("a {} has no metadata.name", types.kind),
        })?;
    let gvk = GroupVersionKind::try_from(&types).map_err(|e| Error::Manifest {
        message: format!("bad apiVersion {}: {e}", types.api_version),
    })?;
    let (resource, capabilities) = pinned_kind_with_retry(client, &gvk).await?;
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Cluster => Api::all_with(client.clone(), &resource),
        Scope::Namespaced => {
            let namespace = object.metadata.namespace.as_deref().unwrap_or("default");
            Api::namespaced_with(client.clone(), namespace, &resource)
        }
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(document))
        .await
        .map_err(|source| Error::Apply {
            object: format!("{}/{name}", gvk.kind),
            source,
        })?;
    if gvk.group == "apiextensions.k8s.io" && gvk.kind == "CustomResourceDefinition" {
        wait_crd_established(client, &name).await?;
    }
    Ok(format!("{}/{name}", gvk.kind))
}

// Discovery lags a freshly established CRD by a moment; retry briefly before giving up.
async fn pinned_kind_with_retry(
    client: &kube::Client,
    gvk: &GroupVersionKind,
) -> Result<
    (
        kube::discovery::ApiResource,
        kube::discovery::ApiCapabilities,
    ),
    Error,
> {
    let mut attempts = 0;
    loop {
        match discovery::pinned_kind(client, gvk).await {
            Ok(found) => return Ok(found),
            Err(_) if attempts < 20 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(source) => {
                return Err(Error::Discovery {
                    kind: format!("{}/{} {}", gvk.group, gvk.version, gvk.kind),
                    source,
                });
            }
        }
    }
}

/// Waits until the named CRD reports the Established condition.
pub async fn wait_crd_established(client: &kube::Client, name: &str) -> Result<(), Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let established = await_condition(crds, name, conditions::is_crd_established());
    match tokio::time::timeout(CRD_ESTABLISH_TIMEOUT, established).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Error::CrdNotEstablished {
            name: name.to_owned(),
            detail: e.to_string(),
        }),
        Err(_) => Err(Error::CrdNotEstablished {
            name: name.to_owned(),
            detail: format!("not Established after {}s", CRD_ESTABLISH_TIMEOUT.as_secs()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_skips_empty_ones() {
        let yaml = "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: b\n";
        let documents = parse_documents(yaml).expect("parse");
        assert_eq!(documents.len(), 2);
        assert_eq!(documents[1]["metadata"]["name"], "b");
    }
}
