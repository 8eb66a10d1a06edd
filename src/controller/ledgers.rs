//! The ledger ConfigMaps (`nodeshell-admission-<policy>` in the controller's namespace): read
//! once, then written with compare-and-swap from the last version this replica saw. A
//! write from a stale version fails with 409 Conflict; the version is then read again. The
//! entries are the ConfigMap's `data`, the floor its [`FLOOR_ANNOTATION`].

use super::FIELD_MANAGER;
use super::ledger::{FLOOR_ANNOTATION, LEDGER_LABEL, Ledger, ledger_name};
use crate::api::{NodeShellPolicy, label_value};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};
use std::collections::{BTreeMap, HashMap};

/// A ledger as read: its content and the object it came from (`None`: it does not exist yet).
pub struct ReadLedger {
    /// The slots.
    pub ledger: Ledger,
    /// The ConfigMap, whose resourceVersion the next write is conditional on.
    pub object: Option<ConfigMap>,
}

/// The ledgers of every policy, with the last version this replica saw of each.
pub struct Ledgers {
    api: Api<ConfigMap>,
    seen: HashMap<String, ConfigMap>,
}

// === impl Ledgers ===

impl Ledgers {
    /// The ledgers in `namespace`.
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            seen: HashMap::new(),
        }
    }

    /// The ledger of `policy`: the version this replica last wrote or read, else a GET. It
    /// may be stale; the write that follows finds out.
    pub async fn read(&mut self, policy: &str) -> Result<ReadLedger, kube::Error> {
        let object = match self.seen.get(policy) {
            Some(object) => Some(object.clone()),
            None => {
                let got = self.api.get_opt(&ledger_name(policy)).await?;
                if let Some(object) = &got {
                    self.seen.insert(policy.to_string(), object.clone());
                }
                got
            }
        };
        Ok(ReadLedger {
            ledger: object.as_ref().map(ledger_of).unwrap_or_default(),
            object,
        })
    }

    /// The policies whose ledger, as this replica last saw it, holds entries (admissions a
    /// later pass may find confirmed and drop).
    pub fn with_entries(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter(|(_, object)| object.data.as_ref().is_some_and(|d| !d.is_empty()))
            .map(|(policy, _)| policy.clone())
            .collect()
    }

    /// Forgets the version seen of `policy`'s ledger, so the next read is a GET.
    pub fn forget(&mut self, policy: &str) {
        self.seen.remove(policy);
    }

    /// Writes `ledger` as `policy`'s ledger on condition that it is still `read.object`
    /// (or, when that is `None`, that it does not exist). A 409 means someone else wrote it
    /// first: the version seen is forgotten and the caller decides again.
    pub async fn write(
        &mut self,
        policy: &str,
        owner: Option<&NodeShellPolicy>,
        read: &ReadLedger,
        ledger: &Ledger,
    ) -> Result<(), kube::Error> {
        let data = ledger.to_data();
        let result = match &read.object {
            Some(object) => {
                let mut next = object.clone();
                next.data = Some(data);
                set_floor(&mut next.metadata, ledger.floor());
                self.api
                    .replace(&object.name_any(), &post_params(), &next)
                    .await
            }
            None => {
                let mut object = ConfigMap {
                    metadata: metadata(policy, owner),
                    data: Some(data),
                    ..ConfigMap::default()
                };
                set_floor(&mut object.metadata, ledger.floor());
                self.api.create(&post_params(), &object).await
            }
        };
        match result {
            Ok(written) => {
                self.seen.insert(policy.to_string(), written);
                Ok(())
            }
            Err(e) => {
                self.forget(policy);
                Err(e)
            }
        }
    }
}

/// The ledger a ConfigMap holds: its `data` and its floor annotation.
pub fn ledger_of(object: &ConfigMap) -> Ledger {
    let floor = object
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(FLOOR_ANNOTATION))
        .map(String::as_str);
    Ledger::from_data(object.data.as_ref(), floor)
}

/// Writes `floor` into the floor annotation (removing it for `None`).
fn set_floor(metadata: &mut ObjectMeta, floor: Option<&str>) {
    match floor {
        Some(floor) => {
            metadata
                .annotations
                .get_or_insert_default()
                .insert(FLOOR_ANNOTATION.to_string(), floor.to_string());
        }
        None => {
            if let Some(annotations) = metadata.annotations.as_mut() {
                annotations.remove(FLOOR_ANNOTATION);
            }
        }
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    }
}

/// A new ledger's metadata: its name, a label naming the policy, and the policy as owner so
/// the garbage collector removes the ledger with it.
fn metadata(policy: &str, owner: Option<&NodeShellPolicy>) -> ObjectMeta {
    let owner_references = owner.and_then(|p| {
        Some(vec![OwnerReference {
            api_version: NodeShellPolicy::api_version(&()).into_owned(),
            kind: NodeShellPolicy::kind(&()).into_owned(),
            name: p.name_any(),
            uid: p.metadata.uid.clone()?,
            ..OwnerReference::default()
        }])
    });
    ObjectMeta {
        name: Some(ledger_name(policy)),
        labels: Some(BTreeMap::from([(
            LEDGER_LABEL.to_string(),
            label_value(policy),
        )])),
        owner_references,
        ..ObjectMeta::default()
    }
}
