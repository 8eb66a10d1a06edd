//! How a component reaches its Kubernetes API: an explicit kubeconfig file when one is
//! given, else what kube infers (`KUBECONFIG`, `~/.kube/config`, or the in-cluster service
//! account).

use std::path::Path;

use kube::Client;
use kube::config::{InferConfigError, KubeConfigOptions, Kubeconfig, KubeconfigError};

/// A client for `kubeconfig` (its current context), or for the inferred configuration.
pub async fn client<E>(kubeconfig: Option<&Path>) -> Result<Client, E>
where
    E: From<KubeconfigError> + From<InferConfigError> + From<kube::Error>,
{
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}
